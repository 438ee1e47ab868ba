"""A recipe's steps applied to one decoder layer at a time, with the same result as on the whole model.

A streamed run applies every step to layer ``i`` before it reads layer ``i + 1``. For a recipe with at
most one calibrated (layer-sequential) step this is exactly what the in-memory run computes: data-free
steps (RTN) act on each weight alone; the calibrated step sees, at layer ``i``, the inputs the already
finished layers produce, and the calibration batches move on through layer ``i`` right after it (before
any later data-free step), as :func:`slimkit.calib.sequential.run_sequential` moves them. Two calibrated
steps would calibrate the second on inputs the in-memory run never produces, so they are refused
(:mod:`slimkit.stream.support`). :class:`LayerSteps` also keeps what each step reports, summed over the
layers, and its running totals in a form a checkpoint can store and a resumed run restore.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from slimkit.api import apply
from slimkit.calib.layer_method import LayerSequentialMethod
from slimkit.calib.sequential import BlockInput, LayerContext, check_calibration_numbers, collect_stats
from slimkit.config import BaseConfig
from slimkit.method import StepReport, method_for, method_name
from slimkit.numerics import check_finite_weights
from slimkit.targets import Target, iter_targets

#: Statistics of data-free steps that count things; they are summed over the layers.
COUNT_KEYS = ("layers", "quantized_params", "pruned_params", "target_params", "linears")


def merge_stats(total: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Fold one layer's statistics into the run's: counts add up, a value equal in every layer stays, and a
    value that differs between layers becomes its ``[min, max]`` range over the layers."""
    if not total:
        return dict(layer)
    merged = dict(total)
    for key, value in layer.items():
        old = total.get(key)
        if key in COUNT_KEYS and isinstance(value, int):
            merged[key] = (old or 0) + value
        elif isinstance(old, list) and isinstance(value, (int, float)):
            merged[key] = [min(old[0], value), max(old[1], value)]
        elif old != value and isinstance(old, (int, float)) and isinstance(value, (int, float)):
            merged[key] = [min(old, value), max(old, value)]
    return merged


def linear_targets(view: nn.Module, config: BaseConfig) -> dict[str, Target]:
    """The ``nn.Linear`` weights ``config`` targets in a layer view, by module name, in module order."""
    return {t.module_name: t for t in iter_targets(view, config.targets) if isinstance(t.module, nn.Linear)}


class LayerSteps:
    """The recipe's steps, each applied to one layer at a time; at most one of them calibrated."""

    def __init__(self, steps: Iterable[BaseConfig]) -> None:
        self.steps = tuple(steps)
        self.methods = [method_for(s) for s in self.steps]
        calibrated = [k for k, m in enumerate(self.methods) if isinstance(m, LayerSequentialMethod)]
        if len(calibrated) > 1:
            raise ValueError("a streamed run applies at most one calibrated step (GPTQ, AWQ, SparseGPT, Wanda)")
        self.calibrated = calibrated[0] if calibrated else None
        self.stats: list[dict[str, Any]] = [{} for _ in self.steps]  # data-free steps, merged over layers
        self.seconds = [0.0] * len(self.steps)
        self.linears = 0  # Linears the calibrated step compressed

    def apply(self, index: int, prefix: str, layer: nn.Module, view: nn.Module, calibration: Iterable[BlockInput],
              after_calibration: Callable[[], None]) -> None:
        """Apply every step to layer ``index``; ``after_calibration`` moves the calibration batches on through
        the layer right after the calibrated step (and is not called without one)."""
        for k, (config, method) in enumerate(zip(self.steps, self.methods, strict=True)):
            start = time.perf_counter()
            if isinstance(method, LayerSequentialMethod):
                self._calibrate(method, config, index, prefix, layer, view, calibration)
                self.seconds[k] += time.perf_counter() - start
                after_calibration()
                continue
            if any(True for _ in iter_targets(view, config.targets)):
                self.stats[k] = merge_stats(self.stats[k], apply(view, config).stats)
            self.seconds[k] += time.perf_counter() - start

    def _calibrate(self, method: LayerSequentialMethod[Any], config: BaseConfig, index: int, prefix: str,
                   layer: nn.Module, view: nn.Module, calibration: Iterable[BlockInput]) -> None:
        """What :func:`~slimkit.calib.sequential.run_sequential` does for one block, on a streamed layer."""
        block = linear_targets(view, config)
        if not block:
            return
        check_finite_weights(view, config.targets, method_name(type(config)))
        stats = collect_stats(layer, block, calibration, method.with_hessian)
        check_calibration_numbers(prefix, calibration, stats, method.with_hessian, method.label)
        method.compress_block(LayerContext(index, prefix, layer, block, stats))
        check_finite_weights(view, config.targets, f"after {method_name(type(config))}")
        self.linears += len(block)

    def reports(self) -> list[StepReport]:
        """One report per step, as :func:`slimkit.apply` would give it for the whole model."""
        out = []
        for k, (config, method) in enumerate(zip(self.steps, self.methods, strict=True)):
            if isinstance(method, LayerSequentialMethod):
                method.record_calibration(self.linears)
                stats = method.finalize(nn.Module())
            else:
                stats = self.stats[k]
            out.append(StepReport(method_name(type(config)), config.describe(), self.seconds[k], dict(stats)))
        return out

    def state(self) -> dict[str, Any]:
        """Everything :meth:`restore` needs to continue after the layers finished so far (JSON-ready)."""
        methods = [m.resume_state() if isinstance(m, LayerSequentialMethod) else None for m in self.methods]
        return {"stats": self.stats, "seconds": self.seconds, "linears": self.linears, "methods": methods}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` as a checkpoint stored it."""
        self.stats, self.seconds, self.linears = state["stats"], state["seconds"], state["linears"]
        for method, saved in zip(self.methods, state["methods"], strict=True):
            if isinstance(method, LayerSequentialMethod):
                method.restore_state(saved)
