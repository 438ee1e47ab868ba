"""``layer-chain``: a torch classifier described as a JSON list of standard layers, rebuilt without pickle.

Models converted from other frameworks (Keras / TensorFlow, :mod:`slimkit.models.keras_in`) arrive as a chain
of standard layers: convolutions, batch norms, activations, pools, a flatten and dense layers. Each becomes a
plain torch module in one ``nn.Sequential``, and the chain is registered as the architecture ``layer-chain``
whose arguments are the layer list and the input shape: a slimkit output of such a model stores them in its
header (JSON) and :func:`~slimkit.models.zoo.build_architecture` rebuilds the skeleton on load, as for the
zoo's own ``small-cnn``. Being an ``nn.Sequential`` of Linear / Conv2d / BatchNorm layers, it is what
``prune.structured`` (``sequential``) removes channels from, and the slimkit loader resizes those layers to
the pruned shapes it finds in the weights, so the stored layer list keeps the original widths.

Layer entries (``type`` plus fields; sizes are the unpruned ones)::

    {"type": "conv2d", "in": 1, "out": 32, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
     "dilation": [1, 1], "groups": 1, "bias": true}
    {"type": "pad2d", "padding": [left, right, top, bottom]}          # zero padding (asymmetric 'same')
    {"type": "batchnorm2d" | "batchnorm1d", "features": 32, "eps": 1e-3}
    {"type": "maxpool2d" | "avgpool2d", "kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "ceil_mode": false}
    {"type": "global_avgpool2d"}  {"type": "flatten"}  {"type": "linear", "in": 800, "out": 10, "bias": true}
    {"type": "relu" | "sigmoid" | "tanh" | "softmax" | "gelu" | "elu" | "leaky_relu" | "relu6", "alpha": 0.01}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from slimkit.models.zoo import register_architecture

ARCHITECTURE = "layer-chain"
Layer = dict[str, Any]


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, list | tuple) else (int(value), int(value))


def _four(value: Any) -> tuple[int, int, int, int]:
    left, right, top, bottom = (int(v) for v in value)
    return left, right, top, bottom


def _conv(e: Layer) -> nn.Module:
    return nn.Conv2d(int(e["in"]), int(e["out"]), _pair(e["kernel"]), _pair(e.get("stride", 1)),
                     _pair(e.get("padding", 0)), _pair(e.get("dilation", 1)), int(e.get("groups", 1)),
                     bool(e.get("bias", True)))


def _pool(e: Layer) -> nn.Module:
    args = (_pair(e["kernel"]), _pair(e.get("stride", e["kernel"])), _pair(e.get("padding", 0)))
    if e["type"] == "maxpool2d":
        return nn.MaxPool2d(*args, ceil_mode=bool(e.get("ceil_mode", False)))
    return nn.AvgPool2d(*args, ceil_mode=bool(e.get("ceil_mode", False)), count_include_pad=False)


_BUILDERS: dict[str, Callable[[Layer], nn.Module]] = {
    "conv2d": _conv,
    "pad2d": lambda e: nn.ZeroPad2d(_four(e["padding"])),
    "batchnorm2d": lambda e: nn.BatchNorm2d(int(e["features"]), eps=float(e.get("eps", 1e-5))),
    "batchnorm1d": lambda e: nn.BatchNorm1d(int(e["features"]), eps=float(e.get("eps", 1e-5))),
    "maxpool2d": _pool,
    "avgpool2d": _pool,
    "global_avgpool2d": lambda e: nn.AdaptiveAvgPool2d(1),
    "flatten": lambda e: nn.Flatten(),
    "linear": lambda e: nn.Linear(int(e["in"]), int(e["out"]), bool(e.get("bias", True))),
    "relu": lambda e: nn.ReLU(),
    "relu6": lambda e: nn.ReLU6(),
    "sigmoid": lambda e: nn.Sigmoid(),
    "tanh": lambda e: nn.Tanh(),
    "gelu": lambda e: nn.GELU(),
    "elu": lambda e: nn.ELU(float(e.get("alpha", 1.0))),
    "leaky_relu": lambda e: nn.LeakyReLU(float(e.get("alpha", 0.01))),
    "softmax": lambda e: nn.Softmax(dim=int(e.get("dim", -1))),
}
LAYER_TYPES = tuple(sorted(_BUILDERS))


def build_layer(entry: Layer) -> nn.Module:
    """One torch module from a layer entry; an unknown type or a missing field names the entry."""
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind not in _BUILDERS:
        raise ValueError(f"layer {entry!r}: unknown type {kind!r} (known: {', '.join(LAYER_TYPES)})")
    try:
        return _BUILDERS[kind](entry)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"layer {entry!r}: cannot build it ({type(err).__name__}: {err})") from None


def _input_shape(layers: list[Layer], input_shape: list[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in input_shape)


@register_architecture(ARCHITECTURE, input_shape=_input_shape)
def layer_chain(layers: list[Layer], input_shape: list[int]) -> nn.Module:
    """An ``nn.Sequential`` of the standard layers ``layers`` (see the module docstring) reading inputs of
    ``input_shape`` (one sample, channels first for images)."""
    if not isinstance(layers, list) or not layers:
        raise ValueError("layers must be a non-empty list of layer entries")
    if not isinstance(input_shape, list | tuple) or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must be a list of positive integers, got {input_shape!r}")
    return nn.Sequential(*[build_layer(entry) for entry in layers])
