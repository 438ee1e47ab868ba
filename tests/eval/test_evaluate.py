"""Evaluation of torch models refuses data of the wrong input size, naming both shapes (issue 21, item 7)."""

import json

import pytest
from typer.testing import CliRunner

from slimkit.cli import app
from slimkit.eval.evaluate import EvalConfig, Evaluation
from slimkit.export.slimkit_format import save
from slimkit.models.bundle import ModelBundle
from tests._models import lenet_bundle

NO_LATENCY = {"enabled": False}


def test_a_64_input_model_is_refused_on_28x28_images_and_evaluated_on_8x8_digits():
    bundle = lenet_bundle(in_features=64)
    with pytest.raises(ValueError, match=r"lenet-300-100 takes inputs of shape \(64,\), but the fashion-mnist "
                                         r"images are \(1, 28, 28\).*--data"):
        Evaluation(bundle, EvalConfig(latency=NO_LATENCY))
    measurement = Evaluation(bundle, EvalConfig(data="digits", latency=NO_LATENCY)).measure(bundle)
    assert measurement.metric == "accuracy" and 0.0 <= measurement.value <= 1.0


def test_a_model_of_unknown_input_shape_is_tried_on_the_data_as_before():
    import torch

    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(128, 10))
    bundle = ModelBundle(conv, "torch", "conv")
    assert Evaluation(bundle, EvalConfig(data="digits", latency=NO_LATENCY)).measure(bundle).metric == "accuracy"


def test_eval_cli_explains_the_mismatch_and_runs_on_fitting_data(tmp_path):
    saved = save(lenet_bundle(in_features=64), tmp_path / "lenet64")
    result = CliRunner().invoke(app, ["eval", str(saved), "--json", "--no-latency"])
    assert result.exit_code == 2 and "takes inputs of shape (64,)" in result.output
    result = CliRunner().invoke(app, ["eval", str(saved), "--data", "digits", "--json", "--no-latency"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metric"] == "accuracy"
