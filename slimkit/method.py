"""The Method lifecycle and the explicit registry that maps config classes to methods.

Every compression step is a :class:`Method` with the same four phases, borrowed from
``torch.ao.pruning``'s prepare → step → squash:

* ``prepare(model)``: attach parametrizations / hooks, no weights change yet;
* ``calibrate(model, forward_loop)``: run calibration data (only methods that need it);
* ``step(progress)``: update masks / schedules; ``progress`` runs from 0 to 1 over training;
* ``finalize(model)``: bake what is still simulated into the model and return statistics.

What ``calibrate`` may do depends on the family, and the docstrings say so:

* Observing methods (``quant.static``, ``quant.qat``, ``prune.structured``) only record statistics in
  ``calibrate``; ``finalize`` rewrites.
* Layer-sequential one-shot methods (GPTQ, AWQ, SparseGPT, Wanda, all built on
  :class:`slimkit.calib.layer_method.LayerSequentialMethod`) rewrite the weights in ``calibrate``, block
  by block, because each block must be calibrated on the inputs produced by the already-compressed
  blocks before it; their ``finalize`` bakes nothing and only returns the statistics.
* SmoothQuant folds its smoothing factors into the weights in ``calibrate`` (the float function is
  unchanged) and quantizes in ``finalize``.

Methods register with ``@register(ConfigClass)``; nothing is discovered by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from torch import nn

from slimkit.config import BaseConfig
from slimkit.hooks import HookSet

C = TypeVar("C", bound=BaseConfig)
ForwardLoop = Callable[[nn.Module], None]


@dataclass
class StepReport:
    """What one applied step did: its config, how long it took and what it measured."""

    method: str
    config: dict[str, Any]
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


class Method(ABC, Generic[C]):
    """Base class of every compression method; one instance per application to one model."""

    config_cls: ClassVar[type[BaseConfig]]

    def __init__(self, config: C) -> None:
        self.config = config
        self.hooks = HookSet()

    def prepare(self, model: nn.Module) -> None:  # noqa: B027 - optional phase
        """Attach whatever the method needs; the default attaches nothing."""

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:  # noqa: B027
        """Run calibration data through ``model`` (see the module docstring for which methods rewrite weights
        here); the default ignores it (data-free methods)."""

    def step(self, progress: float) -> None:  # noqa: B027 - optional phase
        """Advance a schedule; ``progress`` in [0, 1]. The default does nothing."""

    @abstractmethod
    def finalize(self, model: nn.Module) -> dict[str, Any]:
        """Bake what the method still simulates into ``model`` and return statistics for the report."""


_REGISTRY: dict[type[BaseConfig], type[Method[Any]]] = {}


def register(config_cls: type[BaseConfig]) -> Callable[[type[Method[Any]]], type[Method[Any]]]:
    """Class decorator: make ``method_cls`` the implementation of ``config_cls``."""

    def wrap(method_cls: type[Method[Any]]) -> type[Method[Any]]:
        name = method_name(config_cls)
        clash = [c for c in _REGISTRY if method_name(c) == name and c is not config_cls]
        if clash:
            raise ValueError(f"method name {name!r} is registered twice ({clash[0].__name__})")
        method_cls.config_cls = config_cls
        _REGISTRY[config_cls] = method_cls
        return method_cls

    return wrap


def method_name(config_cls: type[BaseConfig]) -> str:
    """The registered ``method`` name of a config class (its ``method`` field default)."""
    default = config_cls.model_fields["method"].default
    if not isinstance(default, str):
        raise TypeError(f"{config_cls.__name__}.method needs a string default")
    return default


def method_for(config: BaseConfig) -> Method[Any]:
    """Instantiate the method registered for ``config``'s class."""
    try:
        return _REGISTRY[type(config)](config)
    except KeyError:
        raise KeyError(f"no method is registered for {type(config).__name__}") from None


def config_class(name: str) -> type[BaseConfig]:
    """The config class registered under method name ``name`` (as written in a recipe)."""
    for cls in _REGISTRY:
        if method_name(cls) == name:
            return cls
    raise KeyError(f"unknown method {name!r}; known methods: {', '.join(registered_names())}")


def registered_names() -> list[str]:
    """All registered method names, sorted."""
    return sorted(method_name(c) for c in _REGISTRY)


def registered_configs() -> list[type[BaseConfig]]:
    """All registered config classes, sorted by method name."""
    return sorted(_REGISTRY, key=method_name)
