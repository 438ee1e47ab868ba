"""Benchmark: one-shot pruning of SmolLM2-135M, magnitude vs SparseGPT vs Wanda, side by side.

Run ``python benchmarks/pruning_llm.py`` (about an hour on 2 cores). Calibration windows come from the
pydoc "calib" split, perplexity from every window of the disjoint "eval" split. Writes
``benchmarks/results/pruning_llm.json`` and ``.md``. For each sparsity pattern it reports the perplexity,
its ratio to fp32, and the share of magnitude pruning's perplexity gap over fp32 that each calibrated
method closes (target at 50%: at least half).
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import torch
from _common import RESULTS, SMOLLM2_BASELINE, fmt, markdown_table, resumed_rows, run_metadata, write_results
from _llm_sweep import SEQ_LEN, Variant, add_ratios, run_sweep
from torch import nn

from slimkit.config import Targets
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.prune.nm import nm_mask
from slimkit.prune.sparsegpt import SparseGPTConfig
from slimkit.prune.wanda import WandaConfig
from slimkit.targets import iter_targets

NAME = "pruning_llm"


def magnitude_n_m(model: nn.Module, *, n: int, m: int) -> None:
    """Magnitude N:M baseline: keep the n largest |w| of every m inputs (no data)."""
    with torch.no_grad():
        for t in iter_targets(model, Targets()):
            t.param.mul_(nm_mask(t.param.abs(), n, m).to(t.param.dtype))


def variants(calib_samples: int) -> list[Variant]:
    """In the order they run: the dense baseline, then magnitude / SparseGPT / Wanda per pattern."""
    rows = [Variant("dense", "fp32", None)]
    for s in (0.5, 0.6, 0.7):
        label = f"{int(s * 100)}%"
        rows += [Variant(label, "magnitude", MagnitudePruneConfig(sparsity=s)),
                 Variant(label, "sparsegpt", SparseGPTConfig(sparsity=s), calib_samples),
                 Variant(label, "wanda", WandaConfig(sparsity=s), calib_samples)]
    for n, m in ((2, 4), (4, 8)):
        label = f"{n}:{m}"
        rows += [Variant(label, "magnitude", partial(magnitude_n_m, n=n, m=m)),
                 Variant(label, "sparsegpt", SparseGPTConfig(n=n, m=m), calib_samples),
                 Variant(label, "wanda", WandaConfig(n=n, m=m), calib_samples)]
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    tokens = rows[0]["eval_tokens"] if rows else 0
    columns = [("pattern", lambda r: r["group"]), ("method", lambda r: r["method"]),
               ("perplexity", lambda r: fmt(r["perplexity"], ".2f")),
               ("× fp32", lambda r: fmt(r.get("ppl_ratio_fp32"), ".3f")),
               ("gap closed vs magnitude", lambda r: fmt(r.get("gap_closed_vs_magnitude"), ".2f")),
               ("sparsity", lambda r: fmt(r["sparsity"], ".4f")),
               ("seconds", lambda r: r["seconds"]), ("peak RSS GB", lambda r: r["peak_rss_gb"]),
               ("run date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
    lines = ["# One-shot pruning of SmolLM2-135M", "",
             f"Baseline: {SMOLLM2_BASELINE}. Calibration: {meta['calib_samples']} × {SEQ_LEN} tokens of pydoc "
             f"(calib split); perplexity on all {tokens} tokens ({tokens // SEQ_LEN} × {SEQ_LEN}-token windows) "
             "of the disjoint eval split. Only the decoder Linears are pruned (embeddings / lm_head stay dense); "
             "`sparsity` is measured over them. `× fp32` = perplexity / fp32's; "
             "`gap closed` = (ppl_magnitude − ppl) / (ppl_magnitude − ppl_fp32) on the same pattern — read it "
             "beside `× fp32`: closing most of a gap to a collapsed magnitude baseline (70%, 2:4) can still "
             "leave a model several times worse than fp32.", ""]
    lines += markdown_table(columns, rows)
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads; each row carries its own run date and commit."]
    return "\n".join(lines) + "\n"


def write(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    add_ratios(rows, "magnitude")
    write_results(NAME, {"meta": meta, "rows": rows}, markdown(rows, meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the results file")
    args = parser.parse_args()
    done = resumed_rows(RESULTS / f"{NAME}.json", args.resume)
    meta = run_metadata(calib_samples=args.calib_samples)
    rows = run_sweep(variants(args.calib_samples), done, lambda rows: write(rows, meta))
    write(rows, meta)
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
