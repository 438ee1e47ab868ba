"""``compress`` with calibrated steps: the calibration guard and calibration mixes, on a tiny Llama with a real
tokenizer (calibrated on pydoc, evaluated on pydoc's eval split)."""

from __future__ import annotations

import copy
import json

import pytest

import slimkit
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.eval.evaluate import EvalConfig, Evaluation, LatencyConfig
from slimkit.pipeline import compress
from slimkit.quantize.rtn import RTNConfig
from slimkit.recipe import recipe_from_dict
from tests._models import tiny_llama_bundle

EVAL = {"data": "pydoc", "windows": 4, "seq_len": 64, "latency": {"enabled": False}}


@pytest.fixture(scope="module")
def bundle():
    return tiny_llama_bundle()


def _recipe(step: dict) -> slimkit.Recipe:
    return recipe_from_dict({"version": 1, "steps": [step], "eval": EVAL}, "test.yaml")


def test_gptq_report_carries_rtn_on_the_same_grid_measured_on_the_eval_data(tmp_path, bundle):
    step = {"method": "quant.gptq", "bits": 3, "granularity": "group", "group_size": 32}
    report = compress(copy.deepcopy(bundle), _recipe(step), tmp_path / "out", calib=["pydoc@2", "pydoc"],
                      calib_samples=4)
    guard = report.guard
    assert guard is not None and guard.baseline_steps == ["quant.rtn"]
    assert guard.calibration_data == "pydoc@2, pydoc" and guard.calibrated_value == report.after.value
    reference = copy.deepcopy(bundle)  # independently: RTN int3 g32 on the original, same eval windows
    evaluation = Evaluation(reference, EvalConfig(**{**EVAL, "latency": LatencyConfig(enabled=False)}))
    slimkit.apply(reference.model, RTNConfig(bits=3, granularity="group", group_size=32))
    assert guard.baseline_value == pytest.approx(evaluation.quality(reference), rel=1e-6)
    assert guard.baseline_value != pytest.approx(report.after.value, rel=1e-6)  # GPTQ ran on the other model
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["calibration_guard"]["baseline_value"] == guard.baseline_value
    assert "perplexity, calibration-free baseline (quant.rtn)" in (tmp_path / "out" / "report.md").read_text()
    warned = any("WORSE than the calibration-free baseline" in w for w in saved["warnings"])
    assert warned == (guard.calibrated_value > guard.baseline_value)


def test_a_worse_calibrated_model_gets_a_warning_with_advice(tmp_path, bundle, monkeypatch):
    import slimkit.eval.calibration_guard as guard_module

    real = guard_module.run_calibration_guard

    def pretend_rtn_is_better(original, steps, evaluation, calibrated_value, calibration_data):
        result = real(original, steps, evaluation, calibrated_value, calibration_data)
        result.baseline_value = calibrated_value * 0.5  # the data-free model scored half the perplexity
        return result

    monkeypatch.setattr("slimkit.pipeline.run_calibration_guard", pretend_rtn_is_better)
    step = {"method": "prune.wanda", "sparsity": 0.5}
    report = compress(copy.deepcopy(bundle), _recipe(step), tmp_path / "out", calib="pydoc", calib_samples=4)
    assert report.guard.baseline_steps == ["prune.magnitude"]
    warning = next(w for w in report.warnings() if "WORSE" in w)
    assert "prune.magnitude" in warning and "calibrate on data like your evaluation data" in warning


def test_the_guard_can_be_turned_off_and_is_skipped_for_data_free_recipes(tmp_path, bundle):
    step = {"method": "quant.gptq", "bits": 4, "group_size": 32}
    off = compress(copy.deepcopy(bundle), _recipe(step), tmp_path / "a", calib="pydoc", calib_samples=4,
                   calib_guard=False)
    assert off.guard is None and json.loads((tmp_path / "a" / "report.json").read_text())["calibration_guard"] is None
    rtn_step = {"method": "quant.rtn", "bits": 4, "granularity": "group", "group_size": 32}
    rtn = compress(copy.deepcopy(bundle), _recipe(rtn_step), tmp_path / "b")
    assert rtn.guard is None


def test_activation_weighted_kmeans_is_guarded_by_unweighted_kmeans(tmp_path, bundle):
    step = {"method": "cluster.kmeans", "bits": 3, "granularity": "channel", "weighting": "activation"}
    report = compress(copy.deepcopy(bundle), _recipe(step), tmp_path / "out", calib="pydoc", calib_samples=4)
    assert report.guard is not None and report.guard.baseline_steps == ["cluster.kmeans"]
    reference = copy.deepcopy(bundle)
    evaluation = Evaluation(reference, EvalConfig(**{**EVAL, "latency": LatencyConfig(enabled=False)}))
    slimkit.apply(reference.model, KMeansClusterConfig(bits=3, granularity="channel"))
    assert report.guard.baseline_value == pytest.approx(evaluation.quality(reference), rel=1e-6)
