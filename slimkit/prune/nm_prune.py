"""N:M magnitude pruning (``prune.nm``): keep the ``n`` largest of every ``m`` consecutive input weights.

``prepare`` computes the N:M masks from the current magnitudes (:mod:`slimkit.prune.nm`) and attaches
them as parametrizations, so a user who fine-tunes between ``prepare`` and ``finalize`` keeps the
pattern intact; ``finalize`` bakes them. ``slimkit.apply`` does all of it at once (one-shot).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from torch import nn

from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.prune.gradual import MaskParametrization, attach_masks, mask_stats, set_masks
from slimkit.prune.nm import magnitude_nm_mask
from slimkit.targets import resolve_targets


class NMPruneConfig(BaseConfig):
    """Keep ``n`` of every ``m`` consecutive weights along each row's input dimension (2:4, 4:8, …)."""

    method: Literal["prune.nm"] = "prune.nm"
    n: int = Field(2, ge=0)
    m: int = Field(4, ge=2)

    @model_validator(mode="after")
    def _n_below_m(self) -> NMPruneConfig:
        if self.n >= self.m:
            raise ValueError(f"N:M keeps n of every m weights: need n < m, got {self.n}:{self.m}")
        return self


@register(NMPruneConfig)
class NMPruneMethod(Method[NMPruneConfig]):
    """Fixed N:M masks from the magnitudes at ``prepare`` time."""

    def __init__(self, config: NMPruneConfig) -> None:
        super().__init__(config)
        self._masks: list[MaskParametrization] = []

    def prepare(self, model: nn.Module) -> None:
        cfg = self.config
        targets = resolve_targets(model, cfg.targets, "prune.nm")
        keep = [magnitude_nm_mask(t.param, cfg.n, cfg.m) for t in targets]  # raises on a bad width first
        self._masks = attach_masks(self, targets)
        set_masks(targets, self._masks, keep)

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if not self._masks:
            raise RuntimeError("prune.nm: finalize() before prepare()")
        stats = {"pattern": f"{self.config.n}:{self.config.m}", **mask_stats(self._masks)}
        self.hooks.bake_all()
        return stats
