"""Structured pruning by contribution (``prune.structured``): score units, remove the weakest physically.

Scores come from weight norms (data-free), mean activation magnitude (a ``forward_loop`` of calibration
batches) or first-order Taylor ``|x · ∂L/∂x|`` (a ``forward_loop`` that computes a loss and calls
``backward()`` itself, e.g. :func:`slimkit.train.gradient_loops.causal_lm_loss_loop` for the causal LM
loss or :func:`~slimkit.train.gradient_loops.classifier_loss_loop` for cross-entropy). ``fraction``
removes the same share of units in every group; ``threshold`` removes units whose weight norm fell
below it (after group-lasso training, see :mod:`slimkit.prune.regularizers`). The result is a smaller
dense model; Hugging Face configs are updated when they can express the new sizes.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from slimkit.config import BaseConfig
from slimkit.eval.metrics import count_params
from slimkit.method import ForwardLoop, Method, register
from slimkit.prune.structured import importance as imp
from slimkit.prune.structured.groups import Structure, UnitGroup, find_groups
from slimkit.prune.structured.surgery import keep_units, unit_views, update_hf_config

Importance = Literal["l1", "l2", "activation", "taylor"]


class StructuredPruneConfig(BaseConfig):
    """Remove whole units of ``structure`` ranked by ``importance``.

    Give exactly one of ``fraction`` (share of units removed in every group) or ``threshold`` (remove
    units whose ``l1``/``l2`` weight norm is below it). ``multiple_of`` rounds kept counts (e.g. 8 for
    SIMD-friendly widths). Groups are selected by ``targets.include``/``exclude`` globs on the group's
    name or any of its module names (``model.layers.*``, ``0``); module types are not consulted.
    """

    method: Literal["prune.structured"] = "prune.structured"
    structure: Structure = "sequential"
    importance: Importance = "l2"
    fraction: float | None = Field(None, ge=0.0, lt=1.0)
    threshold: float | None = Field(None, ge=0.0)
    multiple_of: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_criterion(self) -> StructuredPruneConfig:
        if (self.fraction is None) == (self.threshold is None):
            raise ValueError("give exactly one of 'fraction' or 'threshold'")
        if self.threshold is not None and self.importance not in ("l1", "l2"):
            raise ValueError("'threshold' compares weight norms: use importance 'l1' or 'l2'")
        if self.threshold is not None and self.structure == "query_heads":
            raise ValueError("'query_heads' keeps equal counts per KV group: use 'fraction'")
        return self

    @property
    def needs_calibration(self) -> bool:  # type: ignore[override]
        return self.importance in ("activation", "taylor")


def _selected(group: UnitGroup, cfg: StructuredPruneConfig) -> bool:
    names = (group.name, *(p.module for p in group.parts))
    hit = any(fnmatchcase(n, pat) for n in names for pat in cfg.targets.include)
    return hit and not any(fnmatchcase(n, pat) for n in names for pat in cfg.targets.exclude)


class _ChannelStats:
    """Accumulates activation or Taylor scores per input channel of one consumer module."""

    def __init__(self, taylor: bool) -> None:
        self.taylor, self.count = taylor, 0
        self.total: Tensor | None = None

    def _add(self, value: Tensor, count: int) -> None:
        self.total = value if self.total is None else self.total + value
        self.count += count

    def hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        dim = 1 if isinstance(module, nn.Conv2d) else -1
        if not self.taylor:
            self._add(*imp.mean_abs_per_channel(x, dim))
        elif x.requires_grad:
            x.register_hook(lambda g: self._add(imp.taylor_per_channel(x, g, dim), x.shape[0]))


@register(StructuredPruneConfig)
class StructuredPruneMethod(Method[StructuredPruneConfig]):
    """Find the unit groups, score them, keep the best units of every group."""

    def __init__(self, config: StructuredPruneConfig) -> None:
        super().__init__(config)
        self._groups: list[UnitGroup] = []
        self._stats: dict[str, _ChannelStats] = {}

    def prepare(self, model: nn.Module) -> None:
        self._groups = [g for g in find_groups(model, self.config.structure) if _selected(g, self.config)]
        if not self._groups:
            raise ValueError(f"prune.structured: no {self.config.structure} unit group matched the targets")

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:
        if not self.config.needs_calibration:
            return
        taylor = self.config.importance == "taylor"
        for g in self._groups:
            self._stats[g.name] = _ChannelStats(taylor)
            self.hooks.forward_pre_hook(model.get_submodule(g.consumer), self._stats[g.name].hook)
        forward_loop(model)
        self.hooks.remove_hooks()
        if any(s.total is None for s in self._stats.values()):
            raise RuntimeError("prune.structured: no activations (or, for 'taylor', no gradients) reached "
                               "the pruned layers; a Taylor forward_loop must call loss.backward()")

    def _scores(self, model: nn.Module, group: UnitGroup) -> Tensor:
        importance = self.config.importance
        if importance in ("l1", "l2"):
            return imp.unit_norms(unit_views(model, group), 1 if importance == "l1" else 2)
        stats = self._stats.get(group.name)
        if stats is None or stats.total is None:
            raise RuntimeError(f"prune.structured: importance {importance!r} needs calibration data: use "
                               "slimkit.apply(model, config, forward_loop)")
        return imp.channels_to_units(stats.total, group.consumer_part().width) / max(stats.count, 1)

    def _keep(self, scores: Tensor, group: UnitGroup) -> Tensor:
        cfg = self.config
        if cfg.threshold is not None:
            return imp.units_above(scores, cfg.threshold)
        assert cfg.fraction is not None
        multiple = cfg.multiple_of * group.blocks
        return imp.top_units(scores, imp.kept_count(group.units, cfg.fraction, multiple), group.blocks)

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        params_before = count_params(model)
        with torch.no_grad():
            keeps = [self._keep(self._scores(model, g), g) for g in self._groups]
        for group, keep in zip(self._groups, keeps, strict=True):
            keep_units(model, group, keep)
        kept = [len(k) for k in keeps]
        return {"structure": self.config.structure, "groups": len(self._groups),
                "units_before": sum(g.units for g in self._groups), "units_after": sum(kept),
                "kept_per_group": kept, "params_before": params_before, "params_after": count_params(model),
                "config_updated": update_hf_config(model, self.config.structure, self._groups, kept)}
