"""Keras / TensorFlow models in: a ``.keras`` file or a SavedModel directory becomes a slimkit torch model.

``slimkit compress model.keras ...`` (or a SavedModel directory, one holding ``saved_model.pb``) reads the model
with TensorFlow itself (``keras.saving.load_model`` / ``tf.saved_model.load``, its ``serving_default``
signature), converts it to ONNX with ``tf2onnx`` (images channels-first, ``inputs_as_nchw``, as slimkit's
image data and torch models are) and reads that graph into a ``layer-chain`` ``nn.Sequential``
(:mod:`slimkit.models.onnx_chain`; ``onnx2torch`` cannot be imported beside this torch, see there). Every
slimkit method then applies; ``prune.structured`` removes channels physically, and the model saves and
reloads like the zoo's own classifiers (its layer list is the architecture's arguments in the header).

The conversion is checked twice by the real readers: on load, the torch model and the TensorFlow model
run on the same random batch and a difference beyond ``1e-4`` of the output scale is an error; and
``compress`` compares them on its evaluation data before compressing (:func:`compare_with_original`:
max / mean output difference, and both accuracies when the data has labels) and writes that into the
report. Measured on the tests' tiny CNNs: max difference ~1e-7 on softmax outputs.
A missing package is an ``ImportError`` naming ``pip install 'slimkit[tensorflow]'``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimkit.models.bundle import ModelBundle
from slimkit.models.layer_chain import ARCHITECTURE
from slimkit.models.onnx_chain import read_chain
from slimkit.models.torch_io import torch_bundle

#: (module, pip package) pairs the import needs; the extra ``slimkit[tensorflow]`` installs them.
TENSORFLOW_PACKAGES = (("tensorflow", "tensorflow-cpu"), ("tf2onnx", "tf2onnx"), ("onnx", "onnx"),
                       ("onnxruntime", "onnxruntime"))
OPSET = 18
#: largest max |diff| between the converted and the original model, relative to the largest original output
RELATIVE_TOLERANCE = 1e-4


def is_tensorflow_model(path: Path) -> bool:
    """A ``.keras`` file or a SavedModel directory (``saved_model.pb`` inside)."""
    path = Path(path)
    return (path.is_file() and path.suffix == ".keras") or (path.is_dir() and (path / "saved_model.pb").is_file())


def require_tensorflow(what: str) -> None:
    """Raise ``ImportError`` naming the pip command when a package the import needs is missing."""
    missing = [pip for module, pip in TENSORFLOW_PACKAGES if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"reading {what} needs {', '.join(missing)}: pip install 'slimkit[tensorflow]'")


def _tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up banner, not errors
    import tensorflow as tf

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf


@dataclass
class TensorFlowOriginal:
    """The TensorFlow model a slimkit model was converted from, run on inputs in the torch model's layout."""

    name: str
    call: Callable[[Any], Any]  # tf.Tensor -> tf.Tensor, channels-last images
    input_shape: tuple[int, ...]  # one sample as the original takes it (channels last)

    def run(self, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Outputs of the original on ``inputs`` in the torch layout: channels-first images are moved to
        channels-last, other inputs reshaped to the original's sample shape (e.g. (1, 28, 28) -> (784,))."""
        tf = _tensorflow()
        if len(self.input_shape) == 3 and inputs.ndim == 4:
            inputs = inputs.transpose(0, 2, 3, 1)
        x = np.ascontiguousarray(inputs.reshape(len(inputs), *self.input_shape), np.float32)
        return np.concatenate([np.asarray(self.call(tf.constant(x[i:i + batch_size])))
                               for i in range(0, len(x), batch_size)])


def _keras_function(path: Path) -> tuple[Callable[[Any], Any], Any]:
    import keras

    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as err:  # noqa: BLE001 - Keras raises many types for a bad archive
        raise ValueError(f"{path}: Keras cannot read this file ({type(err).__name__}: {err})") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"{path}: the Keras model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "slimkit reads models with one input and one output")
    spec = model.inputs[0]
    return (lambda x: model(x, training=False)), (tuple(spec.shape), spec.dtype)


def _saved_model_function(path: Path) -> tuple[Callable[[Any], Any], Any]:
    tf = _tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:  # noqa: BLE001 - TensorFlow raises many types for a bad directory
        raise ValueError(f"{path}: TensorFlow cannot read this SavedModel ({type(err).__name__}: {err})") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ValueError(f"{path}: the SavedModel has no 'serving_default' signature (it has "
                         f"{', '.join(loaded.signatures) or 'none'})")
    args, kwargs = signature.structured_input_signature
    outputs = signature.structured_outputs
    if args or len(kwargs) != 1 or len(outputs) != 1:
        raise ValueError(f"{path}: 'serving_default' takes {sorted(kwargs)} and returns {sorted(outputs)}; slimkit "
                         "reads models with one input and one output")
    (name, spec), (output,) = next(iter(kwargs.items())), outputs

    def call(x: Any) -> Any:  # through ``loaded``: the signature needs the loaded object's variables alive
        return loaded.signatures["serving_default"](**{name: x})[output]

    return call, (tuple(spec.shape), spec.dtype)


def _to_onnx(call: Callable[[Any], Any], shape: tuple[Any, ...], where: str) -> Any:
    """``call`` as an ONNX model taking ``input`` (batch first; channels first for images)."""
    tf = _tensorflow()
    import tf2onnx

    spec = tf.TensorSpec((None, *shape[1:]), tf.float32, name="input")
    function = tf.function(call, autograph=False)
    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=(spec,), opset=OPSET,
                                                 inputs_as_nchw=["input:0"] if len(shape) == 4 else None)
    except Exception as err:  # noqa: BLE001 - tf2onnx raises many types for graphs it cannot convert
        raise ValueError(f"{where}: tf2onnx cannot convert the model ({type(err).__name__}: {err})") from None
    return proto


def load_tensorflow_model(path: Path, source: str) -> ModelBundle:
    """Read the ``.keras`` file or SavedModel directory at ``path`` into a torch ``layer-chain`` bundle.

    Raises:
        ImportError: TensorFlow, tf2onnx, onnx or onnxruntime is missing (the message names the pip command).
        ValueError: the file cannot be read, a layer cannot be converted, or the converted model's outputs
            differ from the original's beyond the tolerance.
    """
    path = Path(path)
    what = "a Keras model" if path.suffix == ".keras" else "a TensorFlow SavedModel"
    require_tensorflow(what)
    _tensorflow()
    call, (shape, dtype) = _keras_function(path) if path.suffix == ".keras" else _saved_model_function(path)
    if any(d is None for d in shape[1:]) or "float" not in str(dtype):
        raise ValueError(f"{path}: the input is {dtype} of shape {shape}; slimkit converts models with a float input "
                         "of fixed size (only the batch may vary)")
    torch_shape = (shape[3], shape[1], shape[2]) if len(shape) == 4 else tuple(shape[1:])
    sample = np.random.default_rng(0).random((4, *torch_shape), dtype=np.float32)
    chain = read_chain(_to_onnx(call, shape, str(path)), sample)
    if len(shape) == 3 and chain.layers[0]["type"] == "flatten":  # (H, W) images flattened: take (1, H, W) too
        chain.input_shape = [1, *chain.input_shape]
    model = chain.build()
    original = TensorFlowOriginal(f"{'Keras' if path.suffix == '.keras' else 'TensorFlow'} {path.name}", call,
                                  tuple(int(d) for d in shape[1:]))
    worst, _, scale = _differences(original.run(sample), _torch_outputs(model, sample))
    if worst > RELATIVE_TOLERANCE * max(scale, 1e-6):
        raise ValueError(f"{path}: the converted torch model differs from the original by max |diff| {worst:.3g} "
                         f"(outputs up to {scale:.3g}) on a random batch; the conversion is wrong, please report it")
    bundle = torch_bundle(model, ARCHITECTURE, chain.arch["kwargs"], source=source)
    bundle.original = original
    return bundle


def _torch_outputs(model: torch.nn.Module, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(inputs[i:i + batch_size]))
                          for i in range(0, len(inputs), batch_size)]).numpy()


def _differences(expected: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    if expected.shape != got.shape:
        raise ValueError(f"the converted model's outputs have shape {got.shape}, the original's {expected.shape}")
    diff = np.abs(expected.astype(np.float64) - got)
    return float(diff.max()), float(diff.mean()), float(np.abs(expected).max())


def compare_with_original(bundle: ModelBundle, inputs: torch.Tensor, labels: torch.Tensor | None = None
                          ) -> dict[str, Any]:
    """The converted model against the model it was converted from, on the same ``inputs``.

    Returns:
        ``original`` (its name), ``samples``, ``max_abs_diff``, ``mean_abs_diff``, and with ``labels`` the
        top-1 ``accuracy_original`` and ``accuracy_converted``.
    """
    if bundle.original is None:
        raise ValueError(f"{bundle.source} was not converted from another framework")
    x = inputs.numpy().astype(np.float32)
    expected, got = bundle.original.run(x), _torch_outputs(bundle.model, x)
    worst, mean, _ = _differences(expected, got)
    result: dict[str, Any] = {"original": bundle.original.name, "samples": len(x), "max_abs_diff": worst,
                              "mean_abs_diff": mean}
    if labels is not None:
        y = labels.numpy()
        result["accuracy_original"] = float((expected.argmax(-1) == y).mean())
        result["accuracy_converted"] = float((got.argmax(-1) == y).mean())
    return result


def comparison_note(result: dict[str, Any]) -> str:
    """One report line for :func:`compare_with_original`'s result."""
    line = (f"Converted from {result['original']} (TensorFlow → tf2onnx → slimkit layer-chain), compared on the "
            f"{result['samples']} evaluation inputs before compressing: max |output diff| "
            f"{result['max_abs_diff']:.3g}, mean {result['mean_abs_diff']:.3g}")
    if "accuracy_original" in result:
        line += (f"; accuracy {result['accuracy_original']:.4f} in TensorFlow, {result['accuracy_converted']:.4f} "
                 "converted")
    return line + "."
