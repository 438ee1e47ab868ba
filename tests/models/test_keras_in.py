"""Keras / TensorFlow models in: tiny Keras models built and saved here, read by slimkit, checked against Keras
itself (the real reader), compressed with real methods, saved and reloaded."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

import slimkit
from slimkit.models import keras_in
from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict

keras = pytest.importorskip("keras", reason="the tensorflow extra is not installed")
pytest.importorskip("tf2onnx", reason="the tensorflow extra is not installed")


def _randomise(model) -> None:
    """Weights, biases and batch-norm statistics away from their initial values (ones, zeros), so that a
    dropped bias or a mis-ordered flatten shows in the outputs."""
    rng = np.random.default_rng(1)
    for weight in model.weights:
        offset = 1.0 if "variance" in weight.path else 0.0
        weight.assign((rng.normal(size=weight.shape) * 0.3 + offset).astype(np.float32))


def _cnn(size: int = 12, channels: int = 1):
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((size, size, channels)), layers.Conv2D(6, 3, padding="same", activation="relu"),
        layers.BatchNormalization(), layers.MaxPooling2D(),
        layers.Conv2D(8, 3, strides=2, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.Flatten(), layers.Dense(16, activation="relu"), layers.Dropout(0.3),
        layers.Dense(10, activation="softmax")])
    _randomise(model)
    return model


@pytest.fixture(scope="module")
def keras_cnn(tmp_path_factory):
    model = _cnn()
    path = tmp_path_factory.mktemp("keras") / "cnn.keras"
    model.save(path)
    return model, path


def _outputs(bundle, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return bundle.model(torch.from_numpy(x)).numpy()


def test_a_keras_cnn_loads_as_a_layer_chain_with_the_outputs_of_keras(keras_cnn):
    model, path = keras_cnn
    bundle = slimkit.load(str(path))
    x = np.random.default_rng(2).random((5, 1, 12, 12), dtype=np.float32)  # channels first, as slimkit's images
    expected = model(x.transpose(0, 2, 3, 1), training=False).numpy()
    assert bundle.kind == "torch" and bundle.arch["name"] == "layer-chain"
    assert bundle.arch["kwargs"]["input_shape"] == [1, 12, 12]
    np.testing.assert_allclose(_outputs(bundle, x), expected, atol=1e-5)
    assert expected.argmax(-1).tolist() == _outputs(bundle, x).argmax(-1).tolist()


def test_a_saved_model_directory_loads_with_the_outputs_of_tensorflow(tmp_path):
    model = _cnn(size=10, channels=3)
    model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
    bundle = slimkit.load(str(tmp_path / "saved"))
    x = np.random.default_rng(3).random((4, 3, 10, 10), dtype=np.float32)
    np.testing.assert_allclose(_outputs(bundle, x), model(x.transpose(0, 2, 3, 1), training=False).numpy(),
                               atol=1e-5)
    assert bundle.original.name == "TensorFlow saved"


def test_a_flat_input_mlp_reads_images_and_is_compared_on_labelled_data(tmp_path):
    layers = keras.layers
    model = keras.Sequential([keras.Input((64,)), layers.Dense(16, activation="tanh"), layers.Dense(10)])
    _randomise(model)
    model.save(tmp_path / "mlp.keras")
    bundle = slimkit.load(str(tmp_path / "mlp.keras"))
    images = torch.rand(40, 1, 8, 8)  # as slimkit's digits data: 8×8 images for a 64-input model
    labels = torch.from_numpy(model(images.reshape(40, 64).numpy()).numpy().argmax(-1))
    result = keras_in.compare_with_original(bundle, images, labels)
    assert result["samples"] == 40 and result["max_abs_diff"] < 1e-5
    assert result["accuracy_original"] == result["accuracy_converted"] == 1.0
    assert "accuracy 1.0000 in TensorFlow, 1.0000 converted" in keras_in.comparison_note(result)


def test_structured_pruning_removes_channels_and_the_output_reloads_exactly(keras_cnn, tmp_path):
    bundle = slimkit.load(str(keras_cnn[1]))
    slimkit.apply(bundle.model, slimkit.StructuredPruneConfig(fraction=0.5))
    convs = [m for m in bundle.model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [3, 4]  # physically smaller; the last layer keeps its 10 classes
    slimkit.apply(bundle.model, slimkit.RTNConfig(bits=8))
    x = np.random.default_rng(4).random((3, 1, 12, 12), dtype=np.float32)
    slimkit.save(bundle, tmp_path / "out")
    header = json.loads((tmp_path / "out" / "slimkit.json").read_text())
    assert header["arch"]["name"] == "layer-chain"
    again = slimkit.load(str(tmp_path / "out"))
    np.testing.assert_array_equal(_outputs(again, x), _outputs(bundle, x))


def test_compress_reports_the_conversion_against_keras_before_compressing(tmp_path):
    layers = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                              layers.Dense(10)])
    _randomise(model)
    model.save(tmp_path / "digits.keras")
    recipe = recipe_from_dict({"version": 1, "steps": [{"method": "prune.structured", "fraction": 0.5}],
                               "eval": {"data": "digits", "latency": {"enabled": False}}}, "test.yaml")
    report = compress(str(tmp_path / "digits.keras"), recipe, tmp_path / "out")
    note = next(n for n in report.notes if n.startswith("Converted from Keras digits.keras"))
    assert "compared on the 360 evaluation inputs" in note and "accuracy" in note
    assert report.after.params < report.before.params
    assert slimkit.load(str(tmp_path / "out")).arch["name"] == "layer-chain"


def test_a_branching_model_is_refused_naming_the_node(tmp_path):
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8)(inputs)
    model = keras.Model(inputs, keras.layers.Add()([hidden, inputs]))
    model.save(tmp_path / "residual.keras")
    with pytest.raises(ValueError, match=r"\(Add\) joins two branches"):
        slimkit.load(str(tmp_path / "residual.keras"))


def test_a_corrupt_keras_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(ValueError, match=r"broken\.keras: Keras cannot read this file"):
        slimkit.load(str(path))


def test_a_missing_package_names_the_pip_command(keras_cnn, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(ImportError, match=r"needs tf2onnx: pip install 'slimkit\[tensorflow\]'"):
        slimkit.load(str(keras_cnn[1]))
