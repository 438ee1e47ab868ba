"""The calibration guard: is the calibrated result really better than plain rounding on YOUR data?

Error-compensating methods (GPTQ, AWQ, SparseGPT, Wanda) fit their calibration text. Calibrated on Python
documentation and evaluated on a novel, a well-known tool's GPTQ int4 came out worse than round-to-nearest on
the same grid, and its SparseGPT worse than Wanda. So after a recipe with such steps, ``compress`` also
applies the calibration-free counterpart of every calibrated step (RTN on the same grid for GPTQ/AWQ,
magnitude pruning at the same sparsity or N:M pattern for SparseGPT/Wanda, unweighted k-means with the same
codebook size for activation-weighted k-means) to a copy of the original, measures
it on the same evaluation data, and warns when the calibrated model is worse.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from slimkit.api import apply
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.config import BaseConfig
from slimkit.eval.evaluate import Evaluation
from slimkit.models.bundle import ModelBundle
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.prune.nm_prune import NMPruneConfig
from slimkit.prune.sparsegpt import CalibratedPruneConfig
from slimkit.quantize.gptq import GroupQuantConfig
from slimkit.quantize.rtn import RTNConfig


def data_free_counterpart(step: BaseConfig) -> BaseConfig | None:
    """The calibration-free method on the same grid or pattern as ``step``, or None if it has none."""
    if isinstance(step, GroupQuantConfig):
        return RTNConfig(bits=step.bits, symmetric=step.symmetric, granularity=step.granularity,
                         group_size=step.group_size, targets=step.targets)
    if isinstance(step, KMeansClusterConfig) and step.weighting == "activation":
        return step.model_copy(update={"weighting": "none"})  # the same codebooks, every weight pulling alike
    if isinstance(step, CalibratedPruneConfig):
        if step.sparsity is not None:
            return MagnitudePruneConfig(sparsity=step.sparsity, targets=step.targets)
        return NMPruneConfig(n=step.n, m=step.m, targets=step.targets)
    return None


def calibration_free_steps(steps: tuple[BaseConfig, ...]) -> tuple[BaseConfig, ...] | None:
    """``steps`` with every calibrated step replaced by its counterpart, or None when the guard does not apply
    (no step has a counterpart, or some step trains or calibrates without one)."""
    out, replaced = [], False
    for step in steps:
        counterpart = data_free_counterpart(step)
        if counterpart is not None:
            out.append(counterpart)
            replaced = True
        elif step.needs_calibration or step.needs_training:
            return None
        else:
            out.append(step)
    return tuple(out) if replaced else None


@dataclass
class GuardResult:
    """The calibration-free baseline's metric beside the calibrated model's."""

    baseline_steps: list[str]
    metric: str
    baseline_value: float
    calibrated_value: float
    higher_is_better: bool
    calibration_data: str
    eval_data: str

    @property
    def calibrated_is_worse(self) -> bool:
        if self.higher_is_better:
            return self.calibrated_value < self.baseline_value
        return self.calibrated_value > self.baseline_value

    def warning(self) -> str | None:
        if not self.calibrated_is_worse:
            return None
        return (f"the calibrated model ({self.metric} {self.calibrated_value:.4g}) is WORSE than the calibration-free "
                f"baseline on the same grid ({' → '.join(self.baseline_steps)}: {self.baseline_value:.4g}) on "
                f"{self.eval_data}. Calibrated methods fit their calibration data ({self.calibration_data}); "
                "calibrate on data like your evaluation data (--calib, or a mix: --calib A --calib B), or use the "
                "calibration-free method")

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_steps": self.baseline_steps, "metric": self.metric, "baseline_value": self.baseline_value,
                "calibrated_value": self.calibrated_value, "calibrated_is_worse": self.calibrated_is_worse,
                "calibration_data": self.calibration_data, "eval_data": self.eval_data}


def run_calibration_guard(original: ModelBundle, steps: tuple[BaseConfig, ...], evaluation: Evaluation,
                          calibrated_value: float, calibration_data: str) -> GuardResult | None:
    """Apply the calibration-free counterpart of ``steps`` to a copy of ``original`` and compare.

    Args:
        original: the uncompressed model (left untouched; a copy is compressed).
        steps: the recipe's steps as applied to the calibrated model.
        evaluation: the evaluation the calibrated model was measured with (same inputs).
        calibrated_value: the calibrated model's metric on those inputs.
        calibration_data: the calibration data spec, for the warning.

    Returns:
        The comparison, or None when no step has a calibration-free counterpart.
    """
    baseline_steps = calibration_free_steps(steps)
    if baseline_steps is None:
        return None
    baseline = copy.copy(original)
    baseline.model = copy.deepcopy(original.model)
    for step in baseline_steps:
        apply(baseline.model, step)
    value = evaluation.quality(baseline)
    return GuardResult([s.method for s in baseline_steps], evaluation.metric_name, value, calibrated_value,
                       evaluation.metric_name != "perplexity", calibration_data, str(evaluation.spec))
