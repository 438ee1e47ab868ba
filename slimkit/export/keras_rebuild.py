"""Rebuild a torch classifier (a chain of standard layers) as a Keras model with the same weights.

The LiteRT export (:mod:`slimkit.export.litert`) hands TensorFlow's own ``TFLiteConverter`` a SavedModel, and
this is how a torch model becomes one. ``litert-torch`` (torch → LiteRT directly) was tried first: it keeps
torch 2.13, but its ``xdsl`` pins ``typing-extensions<4.13``, which ``apache-tvm-ffi`` (the ``[tvm]`` extra)
refuses and which would also downgrade pydantic; ``onnx2tf`` needs Python ≥ 3.12 for its current releases and
older ones downgrade numpy, onnx and TensorFlow. So the chain is rebuilt here, layer by layer, and the rebuild
is checked against the torch model in float before anything is quantized (:func:`check_rebuild`).

Supported: ``nn.Sequential`` (nested ones flattened) of Conv2d (zero padding as a ZeroPadding2D),
ZeroPad2d, BatchNorm1d/2d, ReLU/ReLU6/Sigmoid/Tanh/GELU/ELU/LeakyReLU/Softmax (last axis), MaxPool2d/AvgPool2d
without padding, AdaptiveAvgPool2d(1), Flatten, Linear, Dropout/Identity. Images stay channels-first at the
model's input, as the torch model takes them: a transpose to channels-last comes first, and a flatten of a
channels-last map transposes back first, so the dense layer after it reads the columns in torch's order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

_NHWC_TO_NCHW = (3, 1, 2)


def chain_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf modules of ``model``, a (possibly nested) ``nn.Sequential``, in order, with their paths."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"{type(model).__name__}: the LiteRT export reads classifiers built as an nn.Sequential of "
                         "standard layers (the zoo's mlp / lenet / small-cnn, models converted from Keras)")
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        out += [(f"{name}.{n}", m) for n, m in chain_modules(child)] if isinstance(child, nn.Sequential) \
            else [(name, child)]
    return out


def _numpy(t: Any) -> np.ndarray:
    return t.detach().float().numpy()


Built = list[tuple[Any, list[np.ndarray] | None]]  # Keras layers and the weights each gets once built


def _conv(layers: Any, name: str, m: nn.Conv2d) -> Built:
    if isinstance(m.padding, str) or m.padding_mode != "zeros":
        raise ValueError(f"{name}: Conv2d with padding {m.padding!r} / mode {m.padding_mode!r} is not supported")
    out: Built = []
    ph, pw = m.padding
    if ph or pw:
        out.append((layers.ZeroPadding2D(((ph, ph), (pw, pw))), None))
    conv = layers.Conv2D(m.out_channels, m.kernel_size, strides=m.stride, padding="valid", dilation_rate=m.dilation,
                         groups=m.groups, use_bias=m.bias is not None)
    weights = [_numpy(m.weight).transpose(2, 3, 1, 0)]  # (out, in/g, kh, kw) -> (kh, kw, in/g, out)
    return out + [(conv, weights + ([_numpy(m.bias)] if m.bias is not None else []))]


def _norm(layers: Any, m: nn.modules.batchnorm._BatchNorm) -> Built:
    # Keras adds its own epsilon; fold the torch one into the variance so that var + eps is unchanged
    keras_eps = 1e-3
    var = _numpy(m.running_var) + m.eps - keras_eps if m.running_var is not None else None
    if var is None or m.running_mean is None:
        raise ValueError(f"{type(m).__name__} without running statistics is not supported")
    norm = layers.BatchNormalization(axis=-1, epsilon=keras_eps)
    weight = _numpy(m.weight) if m.weight is not None else np.ones(m.num_features, np.float32)
    bias = _numpy(m.bias) if m.bias is not None else np.zeros(m.num_features, np.float32)
    return [(norm, [weight, bias, _numpy(m.running_mean), var])]


def _pool(layers: Any, name: str, m: nn.MaxPool2d | nn.AvgPool2d) -> Any:
    kernel, stride = m.kernel_size, m.stride
    if m.padding not in (0, (0, 0)) or m.ceil_mode or getattr(m, "dilation", 1) not in (1, (1, 1)):
        raise ValueError(f"{name}: {type(m).__name__} with padding, ceil_mode or dilation is not supported")
    cls = layers.MaxPooling2D if isinstance(m, nn.MaxPool2d) else layers.AveragePooling2D
    return cls(pool_size=kernel, strides=stride or kernel, padding="valid")


def _activation(layers: Any, name: str, m: nn.Module, rank: int) -> Any:
    simple = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.GELU: "gelu"}
    for cls, fn in simple.items():
        if type(m) is cls:
            return layers.Activation(fn)
    if isinstance(m, nn.ReLU6):
        return layers.ReLU(max_value=6.0)
    if isinstance(m, nn.LeakyReLU):
        return layers.LeakyReLU(negative_slope=m.negative_slope)
    if isinstance(m, nn.ELU):
        return layers.ELU(alpha=m.alpha)
    if isinstance(m, nn.Softmax) and m.dim in (-1, rank - 1, None):
        return layers.Softmax(axis=-1)
    raise ValueError(f"{name}: {type(m).__name__} is not supported by the LiteRT export (supported: Conv2d, "
                     "ZeroPad2d, BatchNorm, ReLU/ReLU6/Sigmoid/Tanh/GELU/ELU/LeakyReLU/Softmax, MaxPool2d, "
                     "AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Linear, Dropout, Identity)")


def _layers_for(layers: Any, name: str, m: nn.Module, rank: int) -> tuple[Built, int]:
    """Keras layers standing for torch module ``m`` reading a value of ``rank``, and the rank they produce."""
    if isinstance(m, nn.Dropout | nn.Identity):
        return [], rank
    if isinstance(m, nn.Conv2d):
        return _conv(layers, name, m), rank
    if isinstance(m, nn.ZeroPad2d):
        left, right, top, bottom = m.padding
        return [(layers.ZeroPadding2D(((top, bottom), (left, right))), None)], rank
    if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        return _norm(layers, m), rank
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        return [(_pool(layers, name, m), None)], rank
    if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
        return [(layers.GlobalAveragePooling2D(keepdims=True), None)], rank
    if isinstance(m, nn.Flatten):
        if rank == 2:
            return [], 2
        return ([(layers.Permute(_NHWC_TO_NCHW), None)] if rank == 4 else []) + [(layers.Flatten(), None)], 2
    if isinstance(m, nn.Linear):
        dense = layers.Dense(m.out_features, use_bias=m.bias is not None)
        return [(dense, [_numpy(m.weight).T] + ([_numpy(m.bias)] if m.bias is not None else []))], rank
    return [(_activation(layers, name, m, rank), None)], rank


def keras_rebuild(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """A Keras model computing what torch ``model`` computes on inputs of ``input_shape`` (one sample, torch
    layout: channels first for images)."""
    import keras

    layers = keras.layers
    inputs = keras.Input(input_shape, batch_size=None, dtype="float32")
    x, rank = inputs, len(input_shape) + 1
    if rank == 4:
        x = layers.Permute((2, 3, 1))(x)  # channels-first input -> channels-last for Keras' layers
    built: Built = []
    for name, module in chain_modules(model):
        new, rank = _layers_for(layers, name, module, rank)
        for layer, weights in new:
            x = layer(x)  # builds the layer for its input shape, so its weights can be set
            built.append((layer, weights))
    for layer, weights in built:
        if weights is not None:
            layer.set_weights(weights)
    return keras.Model(inputs, x)
