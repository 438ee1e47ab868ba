"""Registry of plain PyTorch architectures that slimkit can rebuild from a name and kwargs.

A saved torch model is a state dict plus ``{"name", "kwargs"}``; loading rebuilds the module from
this registry (no pickle). Users add their own with ``@register_architecture("my-net")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(**kwargs) -> nn.Module`` under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not builder:
            raise ValueError(f"architecture {name!r} is already registered")
        _ARCHITECTURES[name] = builder
        return builder

    return wrap


def build_architecture(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build a registered architecture; unknown names list the known ones."""
    if name not in _ARCHITECTURES:
        known = ", ".join(sorted(_ARCHITECTURES)) or "none"
        raise KeyError(f"unknown architecture {name!r} (registered: {known}); "
                       "register it with slimkit.models.register_architecture")
    return _ARCHITECTURES[name](**(kwargs or {}))


def architecture_names() -> list[str]:
    return sorted(_ARCHITECTURES)


@register_architecture("mlp")
def mlp(in_features: int = 784, hidden: tuple[int, ...] | list[int] = (300, 100), classes: int = 10) -> nn.Module:
    """A ReLU multilayer perceptron over flattened inputs (LeNet-300-100 by default)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


@register_architecture("lenet-300-100")
def lenet_300_100(in_features: int = 784, classes: int = 10) -> nn.Module:
    """LeNet-300-100 (LeCun et al.), the classic pruning benchmark MLP."""
    return mlp(in_features, (300, 100), classes)


@register_architecture("small-cnn")
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
