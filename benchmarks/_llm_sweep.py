"""One-shot sweeps over SmolLM2-135M: reset to the baseline, apply one variant, measure perplexity.

Shared by ``quantization.py`` and ``pruning_llm.py``. Every variant starts from the same baseline weights;
perplexity is measured on every 512-token window of the pydoc evaluation split (not a sample of it),
calibration uses the disjoint calibration split. Each row records perplexity, its ratio to fp32, the share
of its group's reference gap it closes, wall time, peak RSS, and the date and commit it was measured at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _common import PeakRSS, provenance, release_memory, rss_gb
from torch import nn

import slimkit
from slimkit.config import BaseConfig
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.quantize.record import clear_quant_records

SEQ_LEN = 512
ALL_WINDOWS = 10**9  # token_windows caps at what the split holds


@dataclass(frozen=True)
class Variant:
    """One row: its group (a grid or a sparsity pattern), a method label and what to apply."""

    group: str
    method: str
    step: BaseConfig | Callable[[nn.Module], None] | None
    calib_windows: int = 0


@dataclass
class SweepModel:
    """The loaded baseline, its weights to reset to, and the evaluation windows."""

    bundle: Any
    original: dict[str, Any]
    eval_windows: Any

    def reset(self) -> None:
        """Back to the baseline: its weights, and no quantization records of an earlier variant (an export
        would otherwise read the stale integers)."""
        self.bundle.model.load_state_dict(self.original)
        clear_quant_records(self.bundle.model)
        release_memory()

    @property
    def eval_tokens(self) -> int:
        return int(self.eval_windows.numel())


def load_sweep_model(eval_windows: int = ALL_WINDOWS) -> SweepModel:
    bundle = slimkit.load_model("smollm2-135m")
    windows = token_windows(bundle.tokenizer, documents(parse_data_spec("pydoc"), "eval"), SEQ_LEN, eval_windows)
    return SweepModel(bundle, {k: v.clone() for k, v in bundle.model.state_dict().items()}, windows)


def apply_variant(sm: SweepModel, variant: Variant, batch_size: int = 4) -> dict[str, Any]:
    """Reset the model, apply ``variant`` and return its timing and memory (perplexity measured separately)."""
    from slimkit.config import Targets
    from slimkit.eval.metrics import perplexity, weight_sparsity

    model = sm.bundle.model
    sm.reset()
    step = variant.step
    loop = None
    if isinstance(step, BaseConfig) and step.needs_calibration:
        loop = calibration_loop(sm.bundle, parse_data_spec("pydoc"), variant.calib_windows, SEQ_LEN,
                                batch_size=batch_size)
    before, start = rss_gb(), time.perf_counter()
    with PeakRSS() as peak:
        if isinstance(step, BaseConfig):
            slimkit.apply(model, step, loop)
        elif step is not None:
            step(model)
    seconds = time.perf_counter() - start
    ppl = perplexity(model, sm.eval_windows, batch_size=batch_size)
    return {"group": variant.group, "method": variant.method, "calib_windows": variant.calib_windows,
            "perplexity": round(ppl, 3), "eval_tokens": sm.eval_tokens,
            "sparsity": round(weight_sparsity(model, Targets()), 4), "seconds": round(seconds, 1),
            "rss_before_gb": round(before, 2), "peak_rss_gb": round(peak.peak, 2), **provenance()}


def run_sweep(variants: list[Variant], done: list[dict[str, Any]],
              write: Callable[[list[dict[str, Any]]], None], eval_windows: int = ALL_WINDOWS) -> list[dict[str, Any]]:
    """Run every variant not already in ``done`` (matched by group and method), writing after each row."""
    sm = load_sweep_model(eval_windows)
    rows = list(done)
    for variant in variants:
        if any(r["group"] == variant.group and r["method"] == variant.method for r in rows):
            continue
        rows.append(apply_variant(sm, variant))
        print(rows[-1], flush=True)
        write(rows)  # after every row, so an interrupted run still leaves its numbers
    return rows


def add_ratios(rows: list[dict[str, Any]], reference_method: str) -> None:
    """Add ``ppl_ratio_fp32`` to every row and, for other methods, the share of the gap between fp32 and
    ``reference_method`` (on the same group) that the row closes."""
    fp32 = next((r["perplexity"] for r in rows if r["method"] == "fp32"), None)
    if fp32 is None:
        return
    for r in rows:
        r["ppl_ratio_fp32"] = round(r["perplexity"] / fp32, 4)
        ref = next((x["perplexity"] for x in rows if x["group"] == r["group"] and x["method"] == reference_method),
                   None)
        if ref is not None and r["method"] not in (reference_method, "fp32") and ref > fp32:
            r[f"gap_closed_vs_{reference_method}"] = round((ref - r["perplexity"]) / (ref - fp32), 3)
