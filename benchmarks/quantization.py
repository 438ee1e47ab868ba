"""Benchmark: weight quantization of SmolLM2-135M: RTN vs GPTQ vs AWQ, side by side.

Run ``python benchmarks/quantization.py`` (about an hour on 2 cores). Calibration and evaluation use
disjoint splits of the pydoc corpus; perplexity is measured on the whole evaluation split. Writes
``benchmarks/results/quantization.json`` and ``.md``: the perplexity of every variant and its ratio to fp32,
the share of RTN's perplexity gap over fp32 that GPTQ/AWQ close at the same grid (target for GPTQ int4
g128: at least 2/3), and the wall time and peak resident memory of each calibrated run (targets for GPTQ:
under 10 minutes and 2.5 GB). SmolLM2 ships as Q4_1 (g32 asymmetric),
so int4 is judged symmetric at g128/g64; 576 = 4.5 × 128 makes g128 ragged.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import RESULTS, SMOLLM2_BASELINE, fmt, markdown_table, resumed_rows, run_metadata, write_results
from _llm_sweep import SEQ_LEN, Variant, add_ratios, run_sweep

from slimkit.quantize.awq import AWQConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig

NAME = "quantization"


def rtn(bits: int, group: int | None, **extra: Any) -> RTNConfig:
    if group is None:
        return RTNConfig(bits=bits, granularity="channel", group_size=None, **extra)
    return RTNConfig(bits=bits, granularity="group", group_size=group, **extra)


def variants(calib_samples: int) -> list[Variant]:
    """Most important first (results are written after every row): GPTQ g128 (act_order, the default) right
    after fp32 so its memory peak is measured early, then the comparisons at each grid, GPTQ g128 again with
    128 calibration windows for the time/memory targets, then extras."""
    def gptq(bits: int, group: int, act_order: bool = True) -> GPTQConfig:
        return GPTQConfig(bits=bits, group_size=group, act_order=act_order)

    n = calib_samples
    return [
        Variant("fp32", "fp32", None),
        Variant("int4 g128", "gptq", gptq(4, 128), n),
        Variant("int4 g128", "rtn", rtn(4, 128)),
        Variant("int4 g128", "awq", AWQConfig(bits=4, group_size=128), n),
        Variant("int4 g128", "gptq without act_order", gptq(4, 128, act_order=False), n),
        Variant("int8 channel", "rtn", rtn(8, None)),
        Variant("int4 g64", "rtn", rtn(4, 64)),
        Variant("int4 g64", "gptq", gptq(4, 64), n),
        Variant("int3 g128", "rtn", rtn(3, 128)),
        Variant("int3 g128", "gptq", gptq(3, 128), n),
        Variant("int4 g32", "rtn", rtn(4, 32)),
        Variant("int4 g32", "gptq", gptq(4, 32), n),
        Variant("int4 g128", "gptq (128 calib windows)", gptq(4, 128), 128),
        Variant("int4 g128", "awq no clip", AWQConfig(bits=4, group_size=128, clip_search=False), n),
    ]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    tokens = rows[0]["eval_tokens"] if rows else 0
    columns = [("grid", lambda r: r["group"]), ("method", lambda r: r["method"]),
               ("calib windows", lambda r: r["calib_windows"]), ("perplexity", lambda r: fmt(r["perplexity"], ".2f")),
               ("× fp32", lambda r: fmt(r.get("ppl_ratio_fp32"), ".3f")),
               ("gap closed vs RTN", lambda r: fmt(r.get("gap_closed_vs_rtn"), ".2f")),
               ("seconds", lambda r: r["seconds"]), ("peak RSS GB", lambda r: r["peak_rss_gb"]),
               ("run date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
    lines = ["# Weight quantization of SmolLM2-135M", "",
             f"Baseline: {SMOLLM2_BASELINE}. Calibration: {meta['calib_samples']} × {SEQ_LEN} tokens of pydoc "
             f"(calib split); perplexity on all {tokens} tokens ({tokens // SEQ_LEN} × {SEQ_LEN}-token windows) "
             "of the disjoint eval split. Symmetric grids on all 2^b levels; decoder Linears only (tied "
             "embedding / lm_head stay fp32). `× fp32` = perplexity / fp32's; `gap closed` = (ppl_RTN − ppl) / "
             "(ppl_RTN − ppl_fp32) on the same grid — read it beside `× fp32`, since a gap closed against a "
             "collapsed RTN (int3) says little. RSS is the whole process, which also holds a 540 MB copy of the "
             "baseline weights to reset between variants.", ""]
    lines += markdown_table(columns, rows)
    lines += ["", "## Targets", ""] + [f"- {v}" for v in verdicts(rows)]
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads; each row carries its own run date and commit."]
    return "\n".join(lines) + "\n"


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One line per issue target that the rows so far can judge: the number, the target, met or MISSED."""
    def row(grid: str, method: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["group"] == grid and r["method"] == method), None)

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


def write(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    add_ratios(rows, "rtn")
    write_results(NAME, {"meta": meta, "rows": rows, "targets": verdicts(rows)}, markdown(rows, meta))


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
