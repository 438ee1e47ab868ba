"""Gradual magnitude pruning (``prune.gradual``) driven from the user's fine-tuning loop.

``prepare`` wraps every targeted weight in a :class:`MaskParametrization` (all ones); each
``step(progress)`` that crosses a scheduled update recomputes the masks so the targeted weights reach
the cubic schedule's sparsity (:mod:`slimkit.prune.schedule`). Between updates the masks are fixed, so
pruned weights stay exactly zero through optimizer steps (their gradient is masked too). Masks rank
the *masked* weights, so a pruned weight never comes back. ``finalize`` bakes the masks into plain
weights. Per-layer schedules: several configs with disjoint targets, each with its own controller.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.prune.masks import global_magnitude_masks, magnitude_mask
from slimkit.prune.schedule import CubicSchedule
from slimkit.targets import Target, resolve_targets


class MaskParametrization(nn.Module):
    """``weight = original * mask`` with a fixed bool mask buffer that methods overwrite in place."""

    mask: Tensor

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask.to(weight.dtype)


def attach_masks(method: Method[Any], targets: list[Target]) -> list[MaskParametrization]:
    """Wrap each target's weight in a fresh all-ones mask (owned by ``method.hooks``).

    A weight that already carries a parametrization is no longer a plain ``weight`` parameter, so
    :func:`~slimkit.targets.iter_targets` never selects it twice: overlapping steps fail to resolve.
    """
    masks = []
    for t in targets:
        mask = MaskParametrization(t.param.shape)
        method.hooks.parametrize(t.module, t.param_name, mask)
        masks.append(mask)
    return masks


def original_weight(t: Target) -> Tensor:
    """The unmasked tensor under a parametrized target (what the optimizer updates)."""
    parametrizations: Any = t.module.parametrizations
    return parametrizations[t.param_name].original  # type: ignore[no-any-return]


def set_masks(targets: list[Target], masks: list[MaskParametrization], keep: list[Tensor]) -> None:
    """Install new keep-masks and zero the pruned entries of the underlying weights."""
    with torch.no_grad():
        for t, m, k in zip(targets, masks, keep, strict=True):
            m.mask.copy_(k)
            original_weight(t).mul_(k.to(original_weight(t).dtype))


def mask_stats(masks: list[MaskParametrization]) -> dict[str, Any]:
    """Layer count, pruned and total entries and overall sparsity of ``masks``."""
    zeros = sum(int((~m.mask).sum()) for m in masks)
    total = sum(m.mask.numel() for m in masks)
    return {"layers": len(masks), "pruned_params": zeros, "target_params": total,
            "sparsity": round(zeros / max(total, 1), 6)}


class GradualPruneConfig(BaseConfig):
    """Zhu & Gupta cubic schedule from ``initial_sparsity`` to ``final_sparsity``.

    ``start``, ``end`` and ``frequency`` are training-progress fractions in [0, 1] (what
    ``ctl.step(progress)`` receives) unless ``total_steps`` is set: then they count optimizer steps and
    progress is converted with ``step = round(progress · total_steps)``. ``scope: global`` ranks all
    targeted weights together at every update.
    """

    method: Literal["prune.gradual"] = "prune.gradual"
    initial_sparsity: float = Field(0.0, ge=0.0, le=1.0)
    final_sparsity: float = Field(ge=0.0, le=1.0)
    start: float = Field(0.0, ge=0.0)
    end: float = Field(0.75, ge=0.0)
    frequency: float = Field(0.05, gt=0.0)
    total_steps: int | None = Field(None, ge=1)
    scope: Literal["layer", "global"] = "layer"

    needs_training = True

    @model_validator(mode="after")
    def _consistent(self) -> GradualPruneConfig:
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError("initial_sparsity must not exceed final_sparsity")
        if self.end < self.start:
            raise ValueError("end must not come before start")
        if self.total_steps is None and self.end > 1.0:
            raise ValueError("without total_steps, start and end are progress fractions in [0, 1]")
        return self

    def schedule(self) -> CubicSchedule:
        return CubicSchedule(self.initial_sparsity, self.final_sparsity, self.start, self.end, self.frequency)


@register(GradualPruneConfig)
class GradualPruneMethod(Method[GradualPruneConfig]):
    """Masks as parametrizations, recomputed at each scheduled update, baked at ``finalize``."""

    def __init__(self, config: GradualPruneConfig) -> None:
        super().__init__(config)
        self._targets: list[Target] = []
        self._masks: list[MaskParametrization] = []
        self._applied: float | None = None  # sparsity of the last update

    def prepare(self, model: nn.Module) -> None:
        self._targets = resolve_targets(model, self.config.targets, "prune.gradual")
        self._masks = attach_masks(self, self._targets)

    def step(self, progress: float) -> None:
        t = progress * self.config.total_steps if self.config.total_steps else progress
        if self.config.total_steps:
            t = round(t)
        sparsity = self.config.schedule().sparsity_at(t)
        if sparsity is None or sparsity == self._applied:
            return
        set_masks(self._targets, self._masks, self._keep_masks(sparsity))
        self._applied = sparsity

    def _keep_masks(self, sparsity: float) -> list[Tensor]:
        masked = [original_weight(t).detach() * m.mask for t, m in zip(self._targets, self._masks, strict=True)]
        if self.config.scope == "global":
            return global_magnitude_masks(masked, sparsity)
        return [magnitude_mask(w, sparsity) for w in masked]

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if not self._masks:
            raise RuntimeError("prune.gradual: finalize() before prepare()")
        stats = mask_stats(self._masks)
        self.hooks.bake_all()
        return stats
