"""HookSet: the single owner of every hook and parametrization a method attaches to a model.

Methods never leave stray hooks behind: whatever they add goes through a HookSet, and
``remove_all`` (or ``bake_all`` for parametrizations that should become the new weights) cleans up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle


class HookSet:
    """Tracks forward hooks and parametrizations so they can be removed or baked in together."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []
        self._parametrized: list[tuple[nn.Module, str]] = []

    def __len__(self) -> int:
        return len(self._handles) + len(self._parametrized)

    def forward_hook(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = False) -> None:
        """Register a forward hook on ``module`` that this set will remove."""
        self._handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def forward_pre_hook(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        """Register a forward pre-hook on ``module`` that this set will remove."""
        self._handles.append(module.register_forward_pre_hook(fn))

    def parametrize(self, module: nn.Module, name: str, parametrization: nn.Module) -> None:
        """Attach ``parametrization`` to ``module.<name>`` (e.g. a mask or fake-quant)."""
        parametrize.register_parametrization(module, name, parametrization, unsafe=True)
        self._parametrized.append((module, name))

    def remove_hooks(self) -> None:
        """Remove forward hooks only (parametrizations stay)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def bake_all(self) -> None:
        """Make every parametrization's output the new plain parameter, and drop hooks."""
        self._drop_parametrizations(leave_parametrized=True)
        self.remove_hooks()

    def remove_all(self) -> None:
        """Restore the original parameters (discard parametrizations) and drop hooks."""
        self._drop_parametrizations(leave_parametrized=False)
        self.remove_hooks()

    def _drop_parametrizations(self, *, leave_parametrized: bool) -> None:
        for module, name in self._parametrized:
            if parametrize.is_parametrized(module, name):
                parametrize.remove_parametrizations(module, name, leave_parametrized=leave_parametrized)
        self._parametrized.clear()
