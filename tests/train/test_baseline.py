"""``slimkit train``: a registered architecture trained from nothing, saved so slimkit loads and compresses it."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

import slimkit
from slimkit.cli import app
from slimkit.data.images import digits
from slimkit.eval.metrics import accuracy

runner = CliRunner()


def _train(*args: str):
    return runner.invoke(app, ["train", *args])


def test_train_saves_a_model_slimkit_loads_and_the_seed_repeats_it(tmp_path):
    result = _train("lenet-300-100[in_features=64]", "--data", "digits", "--out", str(tmp_path / "a"), "--epochs", "6",
                    "--lr", "0.003")
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    bundle = slimkit.load(str(tmp_path / "a"))
    x, y = digits("test")
    with torch.no_grad():
        assert accuracy(bundle.model, x, y) > 0.85  # trained, not chance (0.1)
    assert bundle.applied[0]["method"] == "train" and bundle.applied[0]["config"]["seed"] == 0
    again = _train("lenet-300-100[in_features=64]", "--data", "digits", "--out", str(tmp_path / "b"), "--epochs", "6",
                   "--lr", "0.003")
    assert again.exit_code == 0
    weights = "slimkit.safetensors"
    assert (tmp_path / "a" / weights).read_bytes() == (tmp_path / "b" / weights).read_bytes()


def test_mistakes_are_found_before_training_with_one_paragraph_and_exit_2(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    cases = [
        (["lenet-300-100", "--data", "digits"],
         "takes inputs of shape (784,), but digits has samples of shape (1, 8, 8)"),
        (["lenet-301", "--data", "digits"],
         "unknown architecture 'lenet-301'; registered: layer-chain, lenet-300-100, lenet-5, mlp, small-cnn"),
        (["lenet-5", "--data", "pydoc"], "trains image classifiers; pydoc is text"),
        (["lenet-5", "--data", "fashion-mnist:/nowhere"], "/nowhere: no train-images-idx3-ubyte"),
        (["lenet-5", "--data", "digits", "--lr", "0"], "--lr must be a positive number"),
    ]
    for args, message in cases:
        result = _train(*args, "--out", str(tmp_path / "new"))
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    taken = _train("lenet-5", "--data", "digits", "--out", str(tmp_path / "taken"), "--overwrite")
    assert taken.exit_code == 2 and "is not a slimkit output" in taken.output
    assert not (tmp_path / "new").exists()
