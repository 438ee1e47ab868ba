"""Benchmark: activation quantization (W8A8) of SmolLM2-135M: static PTQ vs SmoothQuant, side by side.

Run ``flock /tmp/slimkit-heavy.lock python benchmarks/activation_quant.py``. Calibration and evaluation
use disjoint splits of the pydoc corpus. Every variant starts from a fresh copy of the fp32 model; int8
weights per output channel (symmetric) and int8 activations per tensor (affine) at every decoder Linear
input, simulated in float. Writes ``benchmarks/results/activation_quant.json`` and ``.md`` after every row.
Target: SmoothQuant W8A8 better (lower perplexity) than plain static W8A8 with min-max ranges.

A second table times one forward pass (batch 1 × 512 tokens, median of repeats) of fp32, the simulated
W8A8 model, and the same W8A8 model executed as real uint8 × int8 GEMMs through oneDNN
(``to_int8_execution``), whose perplexity is also measured to show it matches the simulation.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import time
from pathlib import Path
from typing import Any

import torch

import slimkit
from slimkit.config import BaseConfig
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.metrics import perplexity
from slimkit.quantize.rtn import RTNConfig
from slimkit.quantize.smoothquant import SmoothQuantConfig
from slimkit.quantize.static import StaticQuantConfig, to_int8_execution

RESULTS = Path(__file__).parent / "results"
SEQ_LEN = 512
SPEED_VARIANT = "SmoothQuant W8A8 α=0.5, min-max"


def variants() -> list[tuple[str, BaseConfig | None]]:
    """(name, config), most important first: results are written after every row."""
    return [
        ("fp32", None),
        ("static W8A8, min-max", StaticQuantConfig()),
        (SPEED_VARIANT, SmoothQuantConfig(alpha=0.5)),
        ("static W8A8, percentile 99.99", StaticQuantConfig(observer="percentile")),
        ("SmoothQuant W8A8 α=0.3, min-max", SmoothQuantConfig(alpha=0.3)),
        ("SmoothQuant W8A8 α=0.65, min-max", SmoothQuantConfig(alpha=0.65)),
        ("SmoothQuant W8A8 α=0.8, min-max", SmoothQuantConfig(alpha=0.8)),
        ("SmoothQuant W8A8 α=0.5, norms only (paper)", SmoothQuantConfig(alpha=0.5, smooth_unfoldable=False)),
        ("SmoothQuant W8A8 α=0.5, percentile 99.99", SmoothQuantConfig(alpha=0.5, observer="percentile")),
        ("static W8A8, MSE", StaticQuantConfig(observer="mse")),
        ("W8 only (RTN int8 per channel)", RTNConfig(bits=8)),
    ]


def run(calib_samples: int, eval_windows: int, meta: dict[str, Any]) -> list[dict[str, Any]]:
    bundle = slimkit.load_model("smollm2-135m")
    original = bundle.model
    spec = parse_data_spec("pydoc")
    windows = token_windows(bundle.tokenizer, documents(spec, "eval"), SEQ_LEN, eval_windows)
    loop = calibration_loop(bundle, spec, calib_samples, SEQ_LEN, batch_size=4)
    rows: list[dict[str, Any]] = []
    for name, config in variants():
        model = copy.deepcopy(original)
        start = time.perf_counter()
        stats: dict[str, Any] = {}
        if config is not None:
            stats = slimkit.apply(model, config, loop if config.needs_calibration else None).stats
        seconds = time.perf_counter() - start
        ppl = perplexity(model, windows, batch_size=4)
        rows.append({"variant": name, "method": config.method if config else "fp32", "perplexity": round(ppl, 3),
                     "calibration_seconds": round(seconds, 1), "config": config.describe() if config else None,
                     "stats": stats})
        print({k: rows[-1][k] for k in ("variant", "perplexity", "calibration_seconds")}, flush=True)
        time_executions(model, windows[:1], windows, name, meta)
        write_results(rows, meta)
        del model
        gc.collect()
    return rows


def forward_ms(model: torch.nn.Module, ids: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of one forward pass in milliseconds (after one warm-up)."""
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(input_ids=ids)
            times.append(time.perf_counter() - start)
    return round(1e3 * sorted(times[1:])[len(times[1:]) // 2], 1)


def time_executions(model: torch.nn.Module, ids: torch.Tensor, windows: torch.Tensor, name: str,
                    meta: dict[str, Any]) -> None:
    """Speed table: fp32 forward time; for the SmoothQuant α=0.5 model the simulated forward time, then the
    same model converted to oneDNN int8 GEMMs (forward time and perplexity)."""
    speed = meta.setdefault("speed", [])
    if name == "fp32":
        speed.append({"execution": "fp32", "forward_ms": forward_ms(model, ids)})
    elif name == SPEED_VARIANT:
        speed.append({"execution": "W8A8 simulated (float32)", "forward_ms": forward_ms(model, ids)})
        swapped = to_int8_execution(model)
        speed.append({"execution": f"W8A8 oneDNN int8 GEMM ({swapped} Linears)", "forward_ms": forward_ms(model, ids),
                      "perplexity": round(perplexity(model, windows, batch_size=4), 3)})
        print(speed[-2:], flush=True)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    fp32 = next((r["perplexity"] for r in rows if r["method"] == "fp32"), float("nan"))
    lines = ["# Activation quantization (W8A8) of SmolLM2-135M", "",
             f"Calibration: {meta['calib_samples']} × {SEQ_LEN} tokens of pydoc (calib split); perplexity on "
             f"{meta['eval_windows']} × {SEQ_LEN}-token windows of the disjoint eval split. Weights int8 "
             "symmetric per output channel; activations int8 affine per tensor at every decoder Linear input "
             "(210 Linears; lm_head and embeddings stay fp32), simulated in float32 (`StaticQuantLinear`). "
             "SmoothQuant folds 1/s into input_layernorm / post_attention_layernorm for q/k/v and gate/up and "
             "(unless 'norms only') divides o_proj/down_proj inputs by s inside their activation quantizer.", "",
             "| variant | perplexity | Δ vs fp32 | calibration s |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['perplexity']:.3f} | {r['perplexity'] - fp32:+.3f} | "
                     f"{r['calibration_seconds']} |")
    if meta.get("speed"):
        lines += ["", "## Execution: one forward of 1 × 512 tokens (median), SmoothQuant α=0.5 model", "",
                  "| execution | forward ms | perplexity |", "|---|---|---|"]
        for r in meta["speed"]:
            lines.append(f"| {r['execution']} | {r['forward_ms']} | {r.get('perplexity', '')} |")
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads, run at {meta['date']}."]
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "activation_quant.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (RESULTS / "activation_quant.md").write_text(markdown(rows, meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--eval-windows", type=int, default=16)
    args = parser.parse_args()
    meta = {"calib_samples": args.calib_samples, "eval_windows": args.eval_windows, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    rows = run(args.calib_samples, args.eval_windows, meta)
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
