"""Registry of plain PyTorch architectures that slimkit can rebuild from a name and kwargs.

A saved torch model is a state dict plus ``{"name", "kwargs"}``; loading rebuilds the module from
this registry (no pickle). Users add their own with ``@register_architecture("my-net")``, optionally
with ``input_shape=fn(**kwargs)`` giving the shape of one input sample, so ``bench`` and ``eval`` can
build inputs that fit the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

Builder = Callable[..., nn.Module]
InputShape = Callable[..., tuple[int, ...]]
_ARCHITECTURES: dict[str, Builder] = {}
_INPUT_SHAPES: dict[str, InputShape] = {}


def register_architecture(name: str, input_shape: InputShape | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register a builder ``fn(**kwargs) -> nn.Module`` under ``name``.

    Args:
        name: the architecture's name in specs (``name=weights.pt``) and saved headers.
        input_shape: ``fn(**kwargs) -> shape`` of one input sample (no batch dimension), called with the
            builder's arguments after defaults are filled in.
    """

    def wrap(builder: Builder) -> Builder:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not builder:
            raise ValueError(f"architecture {name!r} is already registered")
        _ARCHITECTURES[name] = builder
        if input_shape is not None:
            _INPUT_SHAPES[name] = input_shape
        return builder

    return wrap


def _builder(name: str) -> Builder:
    if name not in _ARCHITECTURES:
        known = ", ".join(sorted(_ARCHITECTURES)) or "none"
        raise KeyError(f"unknown architecture {name!r} (registered: {known}); "
                       "register it with slimkit.models.register_architecture")
    return _ARCHITECTURES[name]


def architecture_arguments(name: str) -> str:
    """The builder's arguments with their defaults, as a user would write them: ``in_features=784, ...``."""
    params = inspect.signature(_builder(name)).parameters.values()
    return ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)


def _bound_arguments(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` checked against the builder's signature, with its defaults filled in."""
    try:
        bound = inspect.signature(_builder(name)).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"architecture {name!r} does not take {kwargs} ({err}); "
                         f"it takes: {architecture_arguments(name)}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def build_architecture(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build a registered architecture; unknown names list the known ones, wrong arguments the accepted ones."""
    arguments = _bound_arguments(name, kwargs or {})
    try:
        return _builder(name)(**arguments)
    except (TypeError, ValueError, RuntimeError) as err:  # a value of the wrong type or size
        raise ValueError(f"architecture {name!r} cannot be built with {kwargs or {}} ({err}); "
                         f"it takes: {architecture_arguments(name)}") from None


def architecture_input_shape(name: str, kwargs: dict[str, Any] | None = None) -> tuple[int, ...] | None:
    """Shape of one input sample of architecture ``name`` built with ``kwargs``; None if not registered."""
    shape_of = _INPUT_SHAPES.get(name)
    return tuple(shape_of(**_bound_arguments(name, kwargs or {}))) if shape_of else None


def architecture_names() -> list[str]:
    return sorted(_ARCHITECTURES)


def _flat_input(in_features: int, **_: Any) -> tuple[int, ...]:
    return (in_features,)


def _image_input(in_channels: int, image_size: int, **_: Any) -> tuple[int, ...]:
    return (in_channels, image_size, image_size)


@register_architecture("mlp", input_shape=_flat_input)
def mlp(in_features: int = 784, hidden: int | tuple[int, ...] | list[int] = (300, 100),
        classes: int = 10) -> nn.Module:
    """A ReLU multilayer perceptron over flattened inputs (LeNet-300-100 by default); ``hidden`` is one width
    or a list of them."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in [hidden] if isinstance(hidden, int) else hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


@register_architecture("lenet-300-100", input_shape=_flat_input)
def lenet_300_100(in_features: int = 784, classes: int = 10) -> nn.Module:
    """LeNet-300-100 (LeCun et al.), the classic pruning benchmark MLP."""
    return mlp(in_features, (300, 100), classes)


@register_architecture("small-cnn", input_shape=_image_input)
def small_cnn(in_channels: int = 1, widths: tuple[int, ...] | list[int] = (32, 64), classes: int = 10,
              image_size: int = 28) -> nn.Module:
    """Conv-BN-ReLU-pool blocks then a linear classifier; a channel-pruning test bed."""
    layers: list[nn.Module] = []
    ch, size = in_channels, image_size
    for w in widths:
        layers += [nn.Conv2d(ch, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
        ch, size = w, size // 2
    layers += [nn.Flatten(), nn.Linear(ch * size * size, classes)]
    return nn.Sequential(*layers)


@register_architecture("lenet-5", input_shape=_image_input)
def lenet_5(in_channels: int = 1, classes: int = 10, image_size: int = 28) -> nn.Module:
    """LeNet-5 as in Caffe's example and Deep Compression's Table 2 (431k parameters at 28×28): conv 5×5 ×20,
    max-pool, conv 5×5 ×50, max-pool, fully connected 500, fully connected ``classes``; ReLU after each
    hidden layer (Caffe's has one only after the first fully connected layer)."""
    size = ((image_size - 4) // 2 - 4) // 2
    return nn.Sequential(nn.Conv2d(in_channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(50 * size * size, 500), nn.ReLU(),
                         nn.Linear(500, classes))
