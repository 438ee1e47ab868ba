"""Benchmark: weight quantization of SmolLM2-135M: RTN vs GPTQ vs AWQ, side by side.

Run ``flock /tmp/slimkit-heavy.lock python benchmarks/quantization.py``. Calibration and evaluation use
disjoint splits of the pydoc corpus. Writes ``benchmarks/results/quantization.json`` and ``.md``: the
perplexity of every variant, the share of RTN's perplexity gap over fp32 that GPTQ/AWQ close at the same
grid (target for GPTQ int4 g128: at least 2/3), and the wall time and peak resident memory of each
calibrated run (targets for GPTQ: under 10 minutes and 2.5 GB). SmolLM2 ships as Q4_1 (g32 asymmetric),
so int4 is judged symmetric at g128/g64; 576 = 4.5 × 128 makes g128 ragged.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import threading
import time
from pathlib import Path
from typing import Any

from _common import resumed_rows, run_metadata

import slimkit
from slimkit.config import BaseConfig
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.metrics import perplexity
from slimkit.quantize.awq import AWQConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig

RESULTS = Path(__file__).parent / "results"
SEQ_LEN = 512


def rtn(bits: int, group: int | None) -> RTNConfig:
    if group is None:
        return RTNConfig(bits=bits, granularity="channel")
    return RTNConfig(bits=bits, granularity="group", group_size=group)


def variants(calib_samples: int) -> list[tuple[str, str, BaseConfig | None, int]]:
    """(grid, method, config, calibration windows), most important first (results are written after every
    row): GPTQ g128 (act_order, the default) right after fp32 so its memory peak is measured early, then the
    comparisons at each grid, GPTQ g128 again with 128 calibration windows for the time/memory targets, then
    extras."""
    def gptq(bits: int, group: int, act_order: bool = True) -> GPTQConfig:
        return GPTQConfig(bits=bits, group_size=group, act_order=act_order)

    rows: list[tuple[str, str, BaseConfig | None, int]] = [
        ("fp32", "fp32", None, 0),
        ("int4 g128", "gptq", gptq(4, 128), calib_samples),
        ("int4 g128", "rtn", rtn(4, 128), 0),
        ("int4 g128", "awq", AWQConfig(bits=4, group_size=128), calib_samples),
        ("int4 g128", "gptq without act_order", gptq(4, 128, act_order=False), calib_samples),
        ("int8 channel", "rtn", rtn(8, None), 0),
        ("int4 g64", "rtn", rtn(4, 64), 0),
        ("int4 g64", "gptq", gptq(4, 64), calib_samples),
        ("int3 g128", "rtn", rtn(3, 128), 0),
        ("int3 g128", "gptq", gptq(3, 128), calib_samples),
        ("int4 g32", "rtn", rtn(4, 32), 0),
        ("int4 g32", "gptq", gptq(4, 32), calib_samples),
        ("int4 g128", "gptq (128 calib windows)", gptq(4, 128), 128),
        ("int4 g128", "awq no clip", AWQConfig(bits=4, group_size=128, clip_search=False), calib_samples),
    ]
    return rows


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


class PeakRSS:
    """Samples the resident set size every 50 ms while a block runs."""

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
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap (e.g. GGUF decoding buffers) back to the OS


def run(calib_samples: int, eval_windows: int, meta: dict[str, Any],
        done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bundle = slimkit.load_model("smollm2-135m")
    model = bundle.model
    original = {k: v.clone() for k, v in model.state_dict().items()}
    spec = parse_data_spec("pydoc")
    windows = token_windows(bundle.tokenizer, documents(spec, "eval"), SEQ_LEN, eval_windows)
    rows = list(done)
    for grid, method, config, samples in variants(calib_samples):
        if any(r["grid"] == grid and r["method"] == method for r in done):
            continue
        loop = calibration_loop(bundle, spec, max(samples, 1), SEQ_LEN, batch_size=4)
        model.load_state_dict(original)
        release_memory()
        before, start = rss_gb(), time.perf_counter()
        with PeakRSS() as peak:
            if config is not None:
                slimkit.apply(model, config, loop if config.needs_calibration else None)
        seconds = time.perf_counter() - start
        ppl = perplexity(model, windows, batch_size=4)
        rows.append({"grid": grid, "method": method, "calib_windows": samples, "perplexity": round(ppl, 3),
                     "seconds": round(seconds, 1), "rss_before_gb": round(before, 2),
                     "peak_rss_gb": round(peak.peak, 2)})
        print(rows[-1], flush=True)
        write_results(rows, meta)  # after every row, so an interrupted run still leaves its numbers
    return rows


def gap_closed(rows: list[dict[str, Any]]) -> None:
    """Add the share of RTN's perplexity gap over fp32 that each calibrated method closes on its grid."""
    fp32 = next(r["perplexity"] for r in rows if r["method"] == "fp32")
    for r in rows:
        base = next((x["perplexity"] for x in rows if x["grid"] == r["grid"] and x["method"] == "rtn"), None)
        if base is not None and r["method"] not in ("rtn", "fp32") and base > fp32:
            r["gap_closed_vs_rtn"] = round((base - r["perplexity"]) / (base - fp32), 3)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Weight quantization of SmolLM2-135M", "",
             f"Calibration: {meta['calib_samples']} × {SEQ_LEN} tokens of pydoc (calib split); perplexity on "
             f"{meta['eval_windows']} × {SEQ_LEN}-token windows of the disjoint eval split. Symmetric grids; "
             "decoder Linears only (tied embedding / lm_head stay fp32). `gap closed` = (ppl_RTN − ppl) / "
             "(ppl_RTN − ppl_fp32) on the same grid. RSS is the whole process, which also holds a "
             "540 MB copy of the original weights to reset between variants.", "",
             "| grid | method | calib windows | perplexity | gap closed | seconds | RSS before GB | peak RSS GB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        closed = r.get("gap_closed_vs_rtn")
        lines.append(f"| {r['grid']} | {r['method']} | {r['calib_windows']} | {r['perplexity']:.2f} | "
                     f"{'' if closed is None else f'{closed:.2f}'} | {r['seconds']} | {r['rss_before_gb']} | "
                     f"{r['peak_rss_gb']} |")
    lines += ["", "## Targets", ""] + [f"- {v}" for v in verdicts(rows)]
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads, run at {meta['date']}."]
    return "\n".join(lines) + "\n"


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One line per issue target that the rows so far can judge: the number, the target, met or MISSED."""
    def row(grid: str, method: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["grid"] == grid and r["method"] == method), None)

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    out, fp32 = [], row("fp32", "fp32")
    int8, rtn128 = row("int8 channel", "rtn"), row("int4 g128", "rtn")
    if fp32 and int8:
        rise = int8["perplexity"] / fp32["perplexity"] - 1
        out.append(f"int8 per-channel perplexity {rise:+.2%} vs fp32 (target ≤ +0.5%): {mark(rise <= 0.005)}")
    for method in ("gptq", "gptq (128 calib windows)"):
        r = row("int4 g128", method)
        if r and "gap_closed_vs_rtn" in r:
            closed = r["gap_closed_vs_rtn"]
            out.append(f"GPTQ int4 g128 ({r['calib_windows']} windows) closes {closed:.0%} of RTN's gap "
                       f"(target ≥ 67%): {mark(closed >= 2 / 3)}")
    awq = row("int4 g128", "awq")
    if awq and rtn128:
        out.append(f"AWQ int4 g128 {awq['perplexity']:.2f} vs RTN {rtn128['perplexity']:.2f} (target: lower): "
                   f"{mark(awq['perplexity'] < rtn128['perplexity'])}")
    big = row("int4 g128", "gptq (128 calib windows)")
    if big:
        out.append(f"GPTQ with 128 × {SEQ_LEN} calibration tokens: {big['seconds']:.0f} s (target < 600 s): "
                   f"{mark(big['seconds'] < 600)}; peak RSS {big['peak_rss_gb']} GB (target < 2.5 GB): "
                   f"{mark(big['peak_rss_gb'] < 2.5)}")
    return out


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    gap_closed(rows)
    RESULTS.mkdir(exist_ok=True)
    payload = {"meta": meta, "rows": rows, "targets": verdicts(rows)}
    (RESULTS / "quantization.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "quantization.md").write_text(markdown(rows, meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the results file")
    args = parser.parse_args()
    done = resumed_rows(RESULTS / "quantization.json", args.resume)
    meta = run_metadata(calib_samples=args.calib_samples, eval_windows=args.eval_windows)
    rows = run(args.calib_samples, args.eval_windows, meta, done)
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
