"""Benchmark: one-shot pruning of SmolLM2-135M, magnitude vs SparseGPT vs Wanda, side by side.

Run ``flock /tmp/slimkit-heavy.lock python benchmarks/pruning_llm.py``. Calibration and evaluation use
disjoint splits of the pydoc corpus (calibration windows from the "calib" split, perplexity windows
from the "eval" split). Writes ``benchmarks/results/pruning_llm.json`` and ``.md``. For each sparsity
pattern it reports the perplexity and the share of magnitude pruning's perplexity gap over fp32 that
each calibrated method closes (target at 50%: at least half).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from _common import resumed_rows, run_metadata
from torch import nn

import slimkit
from slimkit.config import BaseConfig, Targets
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.metrics import perplexity, weight_sparsity
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.prune.nm import nm_mask
from slimkit.prune.sparsegpt import SparseGPTConfig
from slimkit.prune.wanda import WandaConfig
from slimkit.targets import iter_targets

RESULTS = Path(__file__).parent / "results"
SEQ_LEN = 512


def magnitude_n_m(model: nn.Module, *, n: int, m: int) -> None:
    """Magnitude N:M baseline: keep the n largest |w| of every m inputs (no data)."""
    with torch.no_grad():
        for t in iter_targets(model, Targets()):
            t.param.mul_(nm_mask(t.param.abs(), n, m).to(t.param.dtype))


def variants() -> list[tuple[str, str, BaseConfig | Callable[[nn.Module], None] | None]]:
    """(pattern, method, config or data-free function) in the order they run."""
    rows: list[tuple[str, str, BaseConfig | Callable[[nn.Module], None] | None]] = [("dense", "fp32", None)]
    for s in (0.5, 0.6, 0.7):
        label = f"{int(s * 100)}%"
        rows += [(label, "magnitude", MagnitudePruneConfig(sparsity=s)),
                 (label, "sparsegpt", SparseGPTConfig(sparsity=s)), (label, "wanda", WandaConfig(sparsity=s))]
    for n, m in ((2, 4), (4, 8)):
        label = f"{n}:{m}"
        rows += [(label, "magnitude", partial(magnitude_n_m, n=n, m=m)),
                 (label, "sparsegpt", SparseGPTConfig(n=n, m=m)), (label, "wanda", WandaConfig(n=n, m=m))]
    return rows


def run(calib_samples: int, eval_windows: int, meta: dict[str, Any],
        done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bundle = slimkit.load_model("smollm2-135m")
    model = bundle.model
    original = {k: v.clone() for k, v in model.state_dict().items()}
    spec = parse_data_spec("pydoc")
    windows = token_windows(bundle.tokenizer, documents(spec, "eval"), SEQ_LEN, eval_windows)
    loop = calibration_loop(bundle, spec, calib_samples, SEQ_LEN, batch_size=4)
    rows = list(done)
    for pattern, method, step in variants():
        if any(r["pattern"] == pattern and r["method"] == method for r in done):
            continue
        model.load_state_dict(original)
        start = time.perf_counter()
        if isinstance(step, BaseConfig):
            slimkit.apply(model, step, loop if step.needs_calibration else None)
        elif step is not None:
            step(model)
        seconds = time.perf_counter() - start
        ppl = perplexity(model, windows, batch_size=4)
        rows.append({"pattern": pattern, "method": method, "perplexity": round(ppl, 3),
                     "sparsity": round(weight_sparsity(model, Targets()), 4), "seconds": round(seconds, 1),
                     "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)})
        print(rows[-1], flush=True)
        write_results(rows, meta)  # after every row, so an interrupted run still leaves its numbers
    return rows


def gap_closed(rows: list[dict[str, Any]]) -> None:
    """Add, per pattern, the share of magnitude's perplexity gap over fp32 that each method closes."""
    fp32 = next(r["perplexity"] for r in rows if r["method"] == "fp32")
    for r in rows:
        mag = next((x["perplexity"] for x in rows if x["pattern"] == r["pattern"] and x["method"] == "magnitude"),
                   None)
        if mag is not None and r["method"] != "magnitude" and mag > fp32:
            r["gap_closed_vs_magnitude"] = round((mag - r["perplexity"]) / (mag - fp32), 3)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# One-shot pruning of SmolLM2-135M", "",
             f"Calibration: {meta['calib_samples']} × {SEQ_LEN} tokens of pydoc (calib split); "
             f"perplexity on {meta['eval_windows']} × {SEQ_LEN}-token windows of the disjoint eval split. "
             "Only the decoder Linears are pruned (embeddings / lm_head stay dense). "
             "`gap closed` = (ppl_magnitude − ppl) / (ppl_magnitude − ppl_fp32).", "",
             "| pattern | method | perplexity | gap closed | sparsity | seconds | peak RSS GB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        closed = r.get("gap_closed_vs_magnitude")
        lines.append(f"| {r['pattern']} | {r['method']} | {r['perplexity']:.2f} | "
                     f"{'' if closed is None else f'{closed:.2f}'} | {r['sparsity']:.4f} | {r['seconds']} | "
                     f"{r['peak_rss_gb']} |")
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads, run at {meta['date']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the results file")
    args = parser.parse_args()
    done = resumed_rows(RESULTS / "pruning_llm.json", args.resume)
    meta = run_metadata(calib_samples=args.calib_samples, eval_windows=args.eval_windows)
    rows = run(args.calib_samples, args.eval_windows, meta, done)
    print(markdown(rows, meta))


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    gap_closed(rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pruning_llm.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (RESULTS / "pruning_llm.md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
