"""The calibration guard: counterparts on the same grid, and a comparison that warns only when it should."""

from __future__ import annotations

import copy

import pytest
import torch

import slimkit
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.eval.calibration_guard import (
    GuardResult,
    calibration_free_steps,
    data_free_counterpart,
    run_calibration_guard,
)
from slimkit.eval.evaluate import EvalConfig, Evaluation, LatencyConfig
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.prune.nm_prune import NMPruneConfig
from slimkit.prune.sparsegpt import SparseGPTConfig
from slimkit.prune.wanda import WandaConfig
from slimkit.quantize.awq import AWQConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig
from slimkit.quantize.smoothquant import SmoothQuantConfig
from tests._models import lenet_bundle


@pytest.mark.parametrize("step, expected", [
    (GPTQConfig(bits=4, group_size=64), RTNConfig(bits=4, granularity="group", group_size=64)),
    (GPTQConfig(bits=3, granularity="channel", group_size=None, symmetric=False),
     RTNConfig(bits=3, granularity="channel", symmetric=False)),
    (AWQConfig(bits=4, group_size=128), RTNConfig(bits=4, granularity="group", group_size=128)),
    (SparseGPTConfig(sparsity=0.6), MagnitudePruneConfig(sparsity=0.6)),
    (WandaConfig(n=2, m=4), NMPruneConfig(n=2, m=4)),
    (KMeansClusterConfig(bits=4, granularity="channel", weighting="activation", codebook_dtype="float16"),
     KMeansClusterConfig(bits=4, granularity="channel", codebook_dtype="float16")),
], ids=["gptq-g64", "gptq-channel-affine", "awq", "sparsegpt-60", "wanda-2:4", "kmeans-activation-weighted"])
def test_counterpart_keeps_the_grid_or_pattern(step, expected):
    assert data_free_counterpart(step) == expected


def test_counterpart_keeps_the_targets():
    targets = {"include": ["*.mlp.*"], "exclude": ["lm_head"]}
    assert data_free_counterpart(GPTQConfig(targets=targets)).targets == GPTQConfig(targets=targets).targets


def test_guard_applies_only_when_every_calibrated_step_has_a_counterpart():
    assert calibration_free_steps((RTNConfig(bits=8),)) is None  # nothing calibrated
    assert calibration_free_steps((SmoothQuantConfig(), GPTQConfig())) is None  # SmoothQuant has none
    steps = calibration_free_steps((SparseGPTConfig(sparsity=0.5), GPTQConfig(bits=4, group_size=64)))
    assert steps == (MagnitudePruneConfig(sparsity=0.5), RTNConfig(bits=4, granularity="group", group_size=64))


def _result(calibrated: float, baseline: float, higher_is_better: bool) -> GuardResult:
    return GuardResult(["quant.rtn"], "m", baseline, calibrated, higher_is_better, "pydoc", "text:novel.txt")


@pytest.mark.parametrize("calibrated, baseline, higher, worse", [
    (16.0, 15.0, False, True), (14.0, 15.0, False, False), (0.80, 0.85, True, True), (0.90, 0.85, True, False),
], ids=["ppl-worse", "ppl-better", "acc-worse", "acc-better"])
def test_warning_only_when_calibrated_is_worse(calibrated, baseline, higher, worse):
    result = _result(calibrated, baseline, higher)
    assert result.calibrated_is_worse is worse
    warning = result.warning()
    assert (warning is not None) is worse
    if worse:
        assert "WORSE" in warning and "--calib" in warning and "text:novel.txt" in warning


def test_guard_measures_the_counterpart_on_a_copy_of_the_original():
    original = lenet_bundle(in_features=64)
    before = copy.deepcopy(original.model.state_dict())
    evaluation = Evaluation(original, EvalConfig(data="digits", latency=LatencyConfig(enabled=False)))
    result = run_calibration_guard(original, (WandaConfig(sparsity=0.7),), evaluation, calibrated_value=0.0,
                                   calibration_data="digits")
    assert result is not None and result.baseline_steps == ["prune.magnitude"]
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(tensor, before[name]), f"the guard changed the original's {name}"
    pruned = copy.deepcopy(original.model)
    slimkit.apply(pruned, MagnitudePruneConfig(sparsity=0.7))
    expected = evaluation.quality(type(original)(pruned, "torch", "x", arch=original.arch))
    assert result.baseline_value == pytest.approx(expected)
    assert result.calibrated_is_worse == (expected > 0.0)
