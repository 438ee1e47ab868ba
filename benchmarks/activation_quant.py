"""Benchmark: activation quantization (W8A8) of SmolLM2-135M: static PTQ vs SmoothQuant, side by side.

Run ``python benchmarks/activation_quant.py`` (about 50 minutes on 2 cores). Weights int8 symmetric per
output channel, activations int8 affine per tensor at every decoder Linear input, simulated in float32.
Calibration uses the pydoc calib split; SmoothQuant's migration strength α is chosen on the disjoint val
split (lowest perplexity), separately for the published method (factors folded into the preceding norm or
Linear only) and for slimkit's extension (``smooth_unfoldable: true``: inputs that cannot be folded are
divided at run time); every row is then scored on every window of the eval split, which chose nothing.
Writes ``benchmarks/results/activation_quant.json`` and ``.md`` after every row; each row carries its run
date and commit. Target: SmoothQuant W8A8 (published, α chosen on val) better than static W8A8 with
min-max ranges.

A second table times one forward pass (1 × 512 tokens) of fp32, the simulated W8A8 model and the same model
executed as real uint8 × int8 GEMMs through oneDNN (``to_int8_execution``), round-robin, and checks that the
oneDNN model's perplexity matches the simulation.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
from _common import (
    RESULTS,
    SMOLLM2_BASELINE,
    fmt,
    latencies_round_robin,
    markdown_table,
    provenance,
    release_memory,
    resumed_rows,
    run_metadata,
    write_results,
)
from _llm_sweep import SEQ_LEN

import slimkit
from slimkit.config import BaseConfig
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.metrics import perplexity
from slimkit.quantize.rtn import RTNConfig
from slimkit.quantize.smoothquant import SmoothQuantConfig
from slimkit.quantize.static import StaticQuantConfig, to_int8_execution

NAME = "activation_quant"
ALPHAS = (0.3, 0.5, 0.65, 0.8)
PUBLISHED, EXTENSION = "SmoothQuant (published)", "SmoothQuant + run-time division (slimkit extension)"


def variants() -> list[tuple[str, str, BaseConfig | None]]:
    """(family, label, config), most important first: results are written after every row."""
    out: list[tuple[str, str, BaseConfig | None]] = [
        ("fp32", "fp32", None),
        ("static W8A8", "min-max", StaticQuantConfig()),
    ]
    out += [(PUBLISHED, f"α={a}", SmoothQuantConfig(alpha=a)) for a in ALPHAS]
    out += [(EXTENSION, f"α={a}", SmoothQuantConfig(alpha=a, smooth_unfoldable=True)) for a in ALPHAS]
    out += [("static W8A8", "percentile 99.99", StaticQuantConfig(observer="percentile")),
            ("static W8A8", "MSE", StaticQuantConfig(observer="mse")),
            ("W8 only", "RTN int8 per channel", RTNConfig(bits=8))]
    return out


def run(calib_samples: int, max_windows: int, done: list[dict[str, Any]],
        write: Any) -> tuple[list[dict[str, Any]], Any]:
    bundle = slimkit.load_model("smollm2-135m")
    original = bundle.model
    spec = parse_data_spec("pydoc")
    windows = {split: token_windows(bundle.tokenizer, documents(spec, split), SEQ_LEN, max_windows)
               for split in ("val", "eval")}
    loop = calibration_loop(bundle, spec, calib_samples, SEQ_LEN, batch_size=4)
    rows = list(done)
    for family, label, config in variants():
        if any(r["family"] == family and r["variant"] == label for r in rows):
            continue
        model = copy.deepcopy(original)
        stats = slimkit.apply(model, config, loop if config.needs_calibration else None).stats if config else {}
        ppl = {f"ppl_{s}": round(perplexity(model, w, batch_size=4), 3) for s, w in windows.items()}
        rows.append({"family": family, "variant": label, **ppl, "config": config.describe() if config else None,
                     "stats": stats, "eval_tokens": int(windows["eval"].numel()),
                     "val_tokens": int(windows["val"].numel()), **provenance()})
        print({k: rows[-1][k] for k in ("family", "variant", "ppl_val", "ppl_eval")}, flush=True)
        write(rows)
        del model
        release_memory()
    return rows, (original, windows["eval"], loop)


def choose_on_val(rows: list[dict[str, Any]]) -> None:
    """Mark, per SmoothQuant family, the α with the lowest validation perplexity (eval is not looked at)."""
    for family in (PUBLISHED, EXTENSION):
        candidates = [r for r in rows if r["family"] == family]
        best = min(candidates, key=lambda r: r["ppl_val"], default=None)
        for r in candidates:
            r["chosen_on_val"] = r is best


def speed_rows(original: torch.nn.Module, windows: torch.Tensor, loop: Any, alpha: float) -> list[dict[str, Any]]:
    """fp32, simulated W8A8 and oneDNN int8 forward time, timed round-robin on one 512-token window."""
    simulated = copy.deepcopy(original)
    slimkit.apply(simulated, SmoothQuantConfig(alpha=alpha), loop)
    executed = copy.deepcopy(simulated)
    swapped = to_int8_execution(executed)
    ids = windows[:1]
    models = [original, simulated, executed]
    with torch.no_grad():
        ms = latencies_round_robin([lambda m=m: m(input_ids=ids) for m in models], items=1, rounds=3, repeats=3,
                                   warmup=1)
    names = ["fp32", f"W8A8 simulated in float32 (SmoothQuant published α={alpha})",
             f"W8A8 oneDNN uint8 × int8 GEMM ({swapped} Linears)"]
    out = [{"execution": n, "forward_ms": round(t, 1), "ratio_fp32": round(t / ms[0], 3), **provenance()}
           for n, t in zip(names, ms, strict=True)]
    for row, model in zip(out[1:], models[1:], strict=True):
        row["ppl_eval"] = round(perplexity(model, windows, batch_size=4), 3)
    return out


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    fp32 = next((r for r in rows if r["family"] == "fp32"), None)
    tokens, val_tokens = (rows[0]["eval_tokens"], rows[0]["val_tokens"]) if rows else (0, 0)

    def ratio(r: dict[str, Any]) -> str | None:
        return fmt(r["ppl_eval"] / fp32["ppl_eval"], ".4f") if fp32 else None

    columns = [("method", lambda r: r["family"]), ("variant", lambda r: r["variant"]),
               ("val perplexity", lambda r: fmt(r["ppl_val"], ".3f")),
               ("chosen on val", lambda r: "yes" if r.get("chosen_on_val") else ""),
               ("eval perplexity", lambda r: fmt(r["ppl_eval"], ".3f")), ("× fp32", ratio),
               ("run date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
    lines = ["# Activation quantization (W8A8) of SmolLM2-135M", "",
             f"Baseline: {SMOLLM2_BASELINE}. Calibration: {meta['calib_samples']} × {SEQ_LEN} tokens of pydoc "
             f"(calib split). SmoothQuant's α is chosen per method on the val split ({val_tokens} tokens); every "
             f"row is scored on all {tokens} tokens of the eval split, which chose nothing. Weights int8 symmetric "
             "per output channel; activations int8 affine per tensor at every decoder Linear input (lm_head and "
             "embeddings stay fp32), simulated in float32. Published SmoothQuant folds 1/s into the norm or Linear "
             "in front (input_layernorm → q/k/v, post_attention_layernorm → gate/up, up_proj → down_proj; "
             "v_proj → o_proj is not foldable under grouped-query attention, so o_proj is not smoothed); the "
             "extension also divides o_proj's input by s inside its activation quantizer at run time.", ""]
    lines += markdown_table(columns, rows)
    lines += ["", "## Target", ""] + [f"- {v}" for v in verdicts(rows)]
    if meta.get("speed"):
        lines += ["", "## Execution: one forward of 1 × 512 tokens, round-robin (best of 3 rounds)", ""]
        lines += markdown_table([("execution", lambda r: r["execution"]), ("forward ms", lambda r: r["forward_ms"]),
                                 ("× fp32 time", lambda r: r["ratio_fp32"]),
                                 ("eval perplexity", lambda r: fmt(r.get("ppl_eval"), ".3f")),
                                 ("run date", lambda r: r["date"]), ("commit", lambda r: r["commit"])],
                                meta["speed"])
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads; each row carries its own run date and commit."]
    return "\n".join(lines) + "\n"


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    static = next((r for r in rows if r["family"] == "static W8A8" and r["variant"] == "min-max"), None)
    chosen = next((r for r in rows if r["family"] == PUBLISHED and r.get("chosen_on_val")), None)
    if not (static and chosen):
        return []
    ok = chosen["ppl_eval"] < static["ppl_eval"]
    return [f"SmoothQuant published ({chosen['variant']}, chosen on val) {chosen['ppl_eval']:.3f} vs static min-max "
            f"{static['ppl_eval']:.3f} on eval (target: lower): {'met' if ok else 'MISSED'}"]


def write(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    choose_on_val(rows)
    write_results(NAME, {"meta": meta, "rows": rows, "targets": verdicts(rows)}, markdown(rows, meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--max-windows", type=int, default=10**9,
                        help="cap the val and eval windows (smoke runs; the table states tokens)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the results file")
    args = parser.parse_args()
    meta = run_metadata(calib_samples=args.calib_samples)
    done = resumed_rows(RESULTS / f"{NAME}.json", args.resume)
    rows, (original, eval_windows, loop) = run(args.calib_samples, args.max_windows, done, lambda r: write(r, meta))
    choose_on_val(rows)
    chosen = next(r for r in rows if r["family"] == PUBLISHED and r["chosen_on_val"])
    meta["speed"] = speed_rows(original, eval_windows, loop, float(chosen["variant"].removeprefix("α=")))
    write(rows, meta)
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
