"""Resolve a :class:`~slimkit.config.Targets` spec against a model.

Every method finds its parameters through :func:`iter_targets`, so "which layers does this touch"
has one answer across pruning, quantization and clustering.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from slimkit.config import Targets


@dataclass(frozen=True)
class Target:
    """One selected parameter: its full name, its owning module and the parameter's attribute name."""

    fqn: str
    module_name: str
    module: nn.Module
    param_name: str

    @property
    def param(self) -> nn.Parameter:
        return getattr(self.module, self.param_name)


def _matches(patterns: tuple[str, ...], fqn: str, module_name: str) -> bool:
    return any(fnmatchcase(fqn, p) or fnmatchcase(module_name, p) for p in patterns)


def iter_targets(model: nn.Module, targets: Targets) -> Iterator[Target]:
    """Yield the parameters of ``model`` selected by ``targets``, in module order.

    A tensor shared by several modules (tied embeddings) is yielded once, under its first name.
    """
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if targets.module_types and type(module).__name__ not in targets.module_types:
            continue
        for param_name in targets.params:
            param = module._parameters.get(param_name)
            if param is None:
                continue
            fqn = f"{module_name}.{param_name}" if module_name else param_name
            if not _matches(targets.include, fqn, module_name):
                continue
            if _matches(targets.exclude, fqn, module_name) or id(param) in seen:
                continue
            seen.add(id(param))
            yield Target(fqn, module_name, module, param_name)


def resolve_targets(model: nn.Module, targets: Targets, method: str) -> list[Target]:
    """Like :func:`iter_targets` but as a list, with a clear error when nothing matches."""
    found = list(iter_targets(model, targets))
    if not found:
        raise ValueError(
            f"{method}: the targets matched no parameter (include={list(targets.include)}, "
            f"exclude={list(targets.exclude)}, module_types={list(targets.module_types)}, "
            f"params={list(targets.params)}). Check the globs against model.named_parameters()."
        )
    return found
