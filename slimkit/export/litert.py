"""The ``litert`` export format: a full-integer int8 ``.tflite`` of a torch classifier, checked in LiteRT.

``slimkit export MODEL --format litert --out model.tflite [--option data=fashion-mnist]`` (or a recipe's
``export: {format: litert, options: {...}}``). The classifier (an ``nn.Sequential`` of standard layers: the
zoo's mlp / LeNets / small-cnn, models converted from Keras; pruned ones with their smaller shapes, quantized
ones with the weights their integers stand for) is rebuilt as a Keras model
(:mod:`slimkit.export.keras_rebuild`, checked against PyTorch in float), saved as a SavedModel and converted
by TensorFlow's own ``TFLiteConverter`` with full-integer quantization: int8 weights (per channel), int8
activations calibrated on ``calib_samples`` inputs, int8 input and output tensors (their scale and zero point
are in the file). The input keeps the torch model's layout (channels first for images).

The file is then run in the ``ai-edge-litert`` interpreter against the PyTorch float model on
``eval_samples`` inputs: with ``data`` (a labelled image data spec) it calibrates on the training split, and
an accuracy on the test split more than ``max_accuracy_drop`` below PyTorch's is an error; without it,
calibration and the check use uniform random inputs and only the outputs are compared. Either way the
largest output difference must stay within ``tolerance`` (default 0.25 of the largest PyTorch output, as
for ONNX's int8 forms: a guard against a broken file, the accuracy being the measure).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from slimkit.config import FrozenModel
from slimkit.export.formats import ExportFormat, ExportResult, RuntimeCheck, register_export_format
from slimkit.export.onnx.graph import float_reference
from slimkit.export.onnx.runtimes import round_robin_ms
from slimkit.models.arch import torch_input_shape
from slimkit.models.bundle import ModelBundle

RELATIVE_TOLERANCE = 0.25
#: float rebuild (Keras) vs PyTorch, relative to the largest output, before anything is quantized
REBUILD_TOLERANCE = 1e-4


class LiteRTOptions(FrozenModel):
    """Options of the ``litert`` export format."""

    data: str | None = None  # labelled image data spec: calibrate on its train split, check accuracy on its test split
    calib_samples: int = Field(256, ge=1)
    eval_samples: int = Field(1000, ge=1)
    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0)  # 0.01: one point of top-1 accuracy
    tolerance: float | None = Field(None, gt=0)  # absolute max |diff| allowed; default relative (see module)


def _samples(opts: LiteRTOptions, shape: tuple[int, ...], source: str) -> tuple[np.ndarray, np.ndarray,
                                                                              np.ndarray | None]:
    """Calibration inputs, check inputs and (with ``data``) the check's labels, in the model's input shape."""
    if opts.data is None:
        rng = np.random.default_rng(0)
        return (rng.random((opts.calib_samples, *shape), dtype=np.float32),
                rng.random((min(opts.eval_samples, 64), *shape), dtype=np.float32), None)
    from slimkit.data.images import image_data
    from slimkit.data.spec import parse_data_spec

    spec = parse_data_spec(opts.data)
    if spec.is_text:
        raise ValueError(f"the litert export calibrates a classifier on images; {opts.data} is text")
    train, _ = image_data(spec.kind, spec.arg, "train")
    test, labels = image_data(spec.kind, spec.arg, "test")
    if int(np.prod(train.shape[1:])) != int(np.prod(shape)):
        raise ValueError(f"{source} takes inputs of shape {shape}, the {opts.data} images are {tuple(train.shape[1:])}")
    picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:opts.calib_samples]
    calib = train[picked].reshape(-1, *shape).numpy()
    return calib, test[:opts.eval_samples].reshape(-1, *shape).numpy(), labels[:opts.eval_samples].numpy()


def _torch_outputs(model: torch.nn.Module, x: np.ndarray, batch: int = 250) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()


def check_rebuild(keras_model: Any, model: torch.nn.Module, x: np.ndarray, source: str) -> None:
    """The float Keras rebuild must compute what PyTorch computes before it is quantized."""
    expected, got = _torch_outputs(model, x), np.asarray(keras_model(x[:64], training=False))
    expected = expected[:64]
    worst, scale = float(np.abs(expected - got).max()), float(np.abs(expected).max())
    if worst > REBUILD_TOLERANCE * max(scale, 1e-6):
        raise ValueError(f"{source}: the Keras rebuild differs from PyTorch by max |diff| {worst:.3g} (outputs up to "
                         f"{scale:.3g}) before quantization; the layer mapping is wrong, please report it")


def convert_int8(keras_model: Any, calib: np.ndarray) -> bytes:
    """TensorFlow's TFLiteConverter on a SavedModel of ``keras_model``: full-integer int8, int8 input and output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    def representative() -> Iterator[list[np.ndarray]]:
        for row in calib:
            yield [row[None]]

    with tempfile.TemporaryDirectory(prefix="slimkit-savedmodel-") as saved:
        keras_model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return bytes(converter.convert())


def litert_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """``path`` in the ai-edge-litert interpreter as float inputs -> float outputs (quantized and dequantized
    with the scale and zero point the file records)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: LiteRT cannot read this file ({err})") from None
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (in_scale, in_zero), (out_scale, out_zero) = source["quantization"], target["quantization"]

    def run(x: np.ndarray) -> np.ndarray:
        if tuple(interpreter.get_input_details()[0]["shape"]) != x.shape:
            interpreter.resize_tensor_input(source["index"], list(x.shape))
            interpreter.allocate_tensors()
        q = np.clip(np.round(x / in_scale) + in_zero, -128, 127).astype(np.int8) if in_scale else x
        interpreter.set_tensor(source["index"], q)
        interpreter.invoke()
        out = interpreter.get_tensor(target["index"])
        return (out.astype(np.float32) - out_zero) * out_scale if out_scale else out.astype(np.float32)

    interpreter.allocate_tensors()
    return run


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(-1) == labels).mean())


def compare(path: Path, model: torch.nn.Module, x: np.ndarray, labels: np.ndarray | None, opts: LiteRTOptions,
            source: str) -> RuntimeCheck:
    """Run ``path`` in LiteRT on ``x`` beside PyTorch: differences, agreement, accuracies and batch-1 latency."""
    run = litert_runner(path)
    got = np.concatenate([run(x[i:i + 100]) for i in range(0, len(x), 100)])
    expected = _torch_outputs(model, x)
    diff = np.abs(expected - got)
    tolerance = opts.tolerance or RELATIVE_TOLERANCE * max(float(np.abs(expected).max()), 1e-6)
    detail = f"{len(x)} inputs; top-1 agreement {float((got.argmax(-1) == expected.argmax(-1)).mean()):.4f}"
    if labels is not None:
        ours, theirs = _accuracy(expected, labels), _accuracy(got, labels)
        detail += f"; accuracy PyTorch fp32 {ours:.4f}, LiteRT int8 {theirs:.4f} on {opts.data} test"
        if ours - theirs > opts.max_accuracy_drop:
            raise ValueError(f"{source}: the LiteRT int8 file's accuracy {theirs:.4f} is {100 * (ours - theirs):.2f} "
                             f"points below PyTorch's {ours:.4f} (allowed: {100 * opts.max_accuracy_drop:.2f})")
    one = x[:1]
    litert_ms, torch_ms = round_robin_ms([lambda: run(one), lambda: _torch_outputs(model, one)])
    return RuntimeCheck("ai-edge-litert", float(diff.max()), float(diff.mean()), tolerance, litert_ms, torch_ms,
                        detail=detail + "; latency at batch 1, one thread; PyTorch fp32 eager reference")


def _float_model(bundle: ModelBundle) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The float32 reference of ``bundle`` (packed layers as the weights they stand for) and its input shape."""
    if bundle.kind != "torch":
        raise ValueError(f"{bundle.source}: the litert export writes classifiers (torch models); this is a "
                         f"{bundle.kind} model")
    model = float_reference(bundle.model)
    shape = torch_input_shape(model, bundle.arch)
    if shape is None:
        raise ValueError(f"{bundle.source}: the input shape is unknown; register the architecture with an input_shape")
    return model, shape


def keras_rebuild_of(bundle: ModelBundle) -> Any:
    """The float Keras model the export quantizes (:mod:`slimkit.export.keras_rebuild`)."""
    from slimkit.export.keras_rebuild import keras_rebuild

    return keras_rebuild(*_float_model(bundle))


def write_litert(bundle: ModelBundle, path: Path, opts: LiteRTOptions) -> ExportResult:
    """Write ``bundle`` as a full-integer int8 ``.tflite`` at ``path`` and check it in LiteRT."""
    from slimkit.export.keras_rebuild import keras_rebuild

    model, shape = _float_model(bundle)
    calib, x, labels = _samples(opts, shape, bundle.source)
    keras_model = keras_rebuild(model, shape)
    check_rebuild(keras_model, model, x, bundle.source)
    path.write_bytes(convert_int8(keras_model, calib))
    check = compare(path, model, x, labels, opts, bundle.source)
    notes = [f"full-integer int8 (weights per channel, activations calibrated on {len(calib)} "
             f"{opts.data + ' training images' if opts.data else 'uniform random inputs'}), int8 input and output; "
             f"input layout as PyTorch's {tuple(shape)}", check.detail]
    return ExportResult("litert", path, checks=[check], notes=notes)


LITERT_FORMAT = register_export_format(ExportFormat(
    "litert", ".tflite", write_litert, LiteRTOptions,
    requires=(("tensorflow", "tensorflow-cpu"), ("ai_edge_litert", "ai-edge-litert")),
    description="LiteRT (TFLite) full-integer int8 for torch classifiers, converted by TensorFlow's TFLiteConverter "
                "and checked in the ai-edge-litert interpreter (accuracy on labelled data with data=SPEC)"))
