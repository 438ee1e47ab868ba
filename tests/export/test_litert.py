"""The ``litert`` export: full-integer int8 ``.tflite`` files run in the real ai-edge-litert interpreter."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

import slimkit
from slimkit.export import litert
from slimkit.export.formats import export_model
from slimkit.models.torch_io import torch_bundle
from slimkit.models.zoo import build_architecture

pytest.importorskip("tensorflow", reason="the litert extra is not installed")
pytest.importorskip("ai_edge_litert", reason="the litert extra is not installed")


def _trained_digits_mlp() -> slimkit.ModelBundle:
    """An MLP trained for about a second on scikit-learn's 8×8 digits (~95% test accuracy)."""
    from slimkit.data.images import digits

    torch.manual_seed(0)
    kwargs = {"in_features": 64, "hidden": [32], "classes": 10}
    model = build_architecture("mlp", kwargs)
    x, y = digits("train")
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return torch_bundle(model.eval(), "mlp", kwargs)


@pytest.fixture(scope="module")
def digits_mlp() -> slimkit.ModelBundle:
    return _trained_digits_mlp()


def test_a_trained_classifier_exports_int8_within_one_point_of_pytorch_in_litert(digits_mlp, tmp_path):
    result = export_model(digits_mlp, "litert", tmp_path / "mlp.tflite", {"data": "digits"})
    (check,) = result.checks
    assert check.runtime == "ai-edge-litert" and check.passed
    assert "accuracy PyTorch fp32 0.9" in check.detail  # trained: the accuracy comparison means something


def test_a_pruned_cnn_exports_its_smaller_int8_layers(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    torch.manual_seed(0)
    kwargs = {"widths": [8, 16], "image_size": 8}
    bundle = torch_bundle(build_architecture("small-cnn", kwargs).eval(), "small-cnn", kwargs)
    slimkit.apply(bundle.model, slimkit.StructuredPruneConfig(fraction=0.25))
    export_model(bundle, "litert", tmp_path / "cnn.tflite")
    interpreter = Interpreter(model_path=str(tmp_path / "cnn.tflite"))
    types = {d["dtype"] for d in interpreter.get_tensor_details() if len(d["shape"]) == 4 and d["shape"][0] != 1}
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert types == {np.int8}  # conv kernels (out, kh, kw, in): int8, no float weights left
    kernels = [d["shape"] for d in interpreter.get_tensor_details() if len(d["shape"]) == 4 and d["shape"][0] != 1]
    assert sorted(int(k[0]) for k in kernels) == [6, 12]  # the pruned widths (8, 16 less a quarter)


def test_a_file_that_computes_something_else_is_an_error(digits_mlp, tmp_path, monkeypatch):
    other = copy.deepcopy(digits_mlp)
    with torch.no_grad():
        for p in other.model.parameters():
            p.copy_(torch.randn_like(p))
    real = litert.convert_int8
    stranger = real(litert.keras_rebuild_of(other), np.random.default_rng(0).random((8, 64), np.float32))
    monkeypatch.setattr(litert, "convert_int8", lambda model, calib: stranger)
    with pytest.raises(ValueError, match=r"litert export does not match the PyTorch model|points below PyTorch"):
        export_model(digits_mlp, "litert", tmp_path / "mlp.tflite", {"data": "digits"})
    assert not (tmp_path / "mlp.tflite").exists()


def test_a_corrupt_tflite_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.tflite"
    path.write_bytes(b"TFL3" + bytes(60))
    with pytest.raises(ValueError, match=r"broken\.tflite: LiteRT cannot read this file"):
        litert.litert_runner(path)


def test_a_layer_without_a_litert_counterpart_is_named(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Hardswish(), nn.Linear(8, 3))
    bundle = torch_bundle(model, "mlp", {"in_features": 64, "hidden": [8], "classes": 3})
    with pytest.raises(ValueError, match=r"^.*2: Hardswish is not supported by the LiteRT export"):
        export_model(bundle, "litert", tmp_path / "m.tflite")


def test_a_missing_package_names_the_pip_command(digits_mlp, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "ai_edge_litert" else real(n, *a))
    with pytest.raises(ImportError, match=r"needs ai-edge-litert: pip install 'ai-edge-litert'"):
        export_model(digits_mlp, "litert", tmp_path / "mlp.tflite")
