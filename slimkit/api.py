"""The public verbs: ``apply`` for one-shot methods, ``prepare`` for training-time methods.

``apply(model, config, forward_loop)`` runs a method's whole lifecycle at once;
``prepare(model, config)`` returns a :class:`Controller` the user drives from their own training
loop (``step(progress)`` then ``finalize()``). slimkit never owns the user's data loop: methods that
need data receive a ``forward_loop(model)`` callable that pushes calibration batches through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from slimkit.config import BaseConfig
from slimkit.method import ForwardLoop, Method, StepReport, method_for, method_name
from slimkit.numerics import check_finite_weights


class Controller:
    """Drives one method on one model: calibrate → step(progress)… → finalize."""

    def __init__(self, model: nn.Module, method: Method[Any]) -> None:
        self.model = model
        self.method = method
        self._start = time.perf_counter()
        self._finalized = False

    def calibrate(self, forward_loop: ForwardLoop) -> None:
        """Push calibration data through the model with the method's observers attached."""
        self.method.calibrate(self.model, forward_loop)

    def step(self, progress: float) -> None:
        """Advance the method's schedule to ``progress`` (0 = start of training, 1 = end)."""
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must lie in [0, 1], got {progress}")
        self.method.step(progress)

    def finalize(self) -> StepReport:
        """Bake the method into the model and report what it did."""
        if self._finalized:
            raise RuntimeError("finalize() was already called on this controller")
        stats = self.method.finalize(self.model)
        self.method.hooks.remove_all()
        self._finalized = True
        config = self.method.config
        check_finite_weights(self.model, config.targets, f"after {method_name(type(config))}")
        return StepReport(method_name(type(config)), config.describe(),
                          time.perf_counter() - self._start, stats)


def prepare(model: nn.Module, config: BaseConfig) -> Controller:
    """Attach ``config``'s method to ``model`` and return its controller (training-time use)."""
    method = method_for(config)
    # Every method's weights pass here: a NaN would otherwise spread through scales, masks and Hessians.
    check_finite_weights(model, config.targets, method_name(type(config)))
    method.prepare(model)
    return Controller(model, method)


def _check_calibration(config: BaseConfig, forward_loop: ForwardLoop | None) -> None:
    if config.needs_calibration and forward_loop is None:
        raise ValueError(f"{method_name(type(config))} needs calibration data: pass forward_loop=")


def apply(model: nn.Module, config: BaseConfig, forward_loop: ForwardLoop | None = None) -> StepReport:
    """Apply one compression method to ``model`` in place and report what it did.

    Args:
        model: the model to compress (modified in place).
        config: a registered method config, e.g. ``RTNConfig(bits=8)``.
        forward_loop: ``fn(model)`` that runs calibration batches; required by data-driven methods.

    Returns:
        A :class:`StepReport` with the config, time taken and the method's statistics.
    """
    _check_calibration(config, forward_loop)
    ctl = prepare(model, config)
    if forward_loop is not None:
        ctl.calibrate(forward_loop)
    ctl.step(1.0)
    return ctl.finalize()


def apply_with_training(model: nn.Module, configs: Sequence[BaseConfig],
                        train: Callable[[nn.Module, Callable[[float], None]], list[float]],
                        forward_loop: ForwardLoop | None = None) -> list[StepReport]:
    """Apply training-time methods (QAT, gradual pruning) around ONE training run, then finalize each.

    Every config is prepared (and calibrated when it needs data) first; ``train(model, on_step)``
    trains ``model`` in place, calls ``on_step(progress)`` after every optimizer step (which advances
    every method's schedule) and returns its losses. If it stops early (a time budget), schedules are
    moved to their end before ``finalize`` so each method's final state (e.g. final sparsity) is reached.
    """
    controllers = []
    for config in configs:
        _check_calibration(config, forward_loop)
        ctl = prepare(model, config)
        if config.needs_calibration and forward_loop is not None:
            ctl.calibrate(forward_loop)
        controllers.append(ctl)
    reached = 0.0

    def on_step(progress: float) -> None:
        nonlocal reached
        reached = progress
        for ctl in controllers:
            ctl.step(progress)

    losses = train(model, on_step)
    training = {"train_steps": len(losses), "train_progress_reached": round(reached, 4),
                "train_loss_first": round(losses[0], 4) if losses else None,
                "train_loss_last": round(losses[-1], 4) if losses else None,
                **getattr(losses, "stats", {})}  # e.g. validation and resume facts of slimkit's own loop
    reports = []
    for ctl in controllers:
        ctl.step(1.0)
        report = ctl.finalize()
        report.stats = {**report.stats, **training}
        reports.append(report)
    return reports
