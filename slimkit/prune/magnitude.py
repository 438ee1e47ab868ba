"""One-shot magnitude pruning: by absolute threshold or by target sparsity, layer-wise or global."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.prune.masks import global_magnitude_masks, magnitude_mask, threshold_mask
from slimkit.targets import Target, resolve_targets


class MagnitudePruneConfig(BaseConfig):
    """Zero the smallest-magnitude weights.

    Give exactly one of ``sparsity`` (fraction to remove) or ``threshold`` (remove ``|w| < threshold``).
    ``scope: layer`` gives every targeted tensor the same sparsity; ``scope: global`` ranks all
    targeted weights together, so sensitive layers with larger weights keep more.
    """

    method: Literal["prune.magnitude"] = "prune.magnitude"
    sparsity: float | None = Field(None, ge=0.0, le=1.0)
    threshold: float | None = Field(None, ge=0.0)
    scope: Literal["layer", "global"] = "layer"

    @model_validator(mode="after")
    def _one_criterion(self) -> MagnitudePruneConfig:
        if (self.sparsity is None) == (self.threshold is None):
            raise ValueError("give exactly one of 'sparsity' or 'threshold'")
        if self.threshold is not None and self.scope == "global":
            raise ValueError("an absolute threshold is the same in every layer; scope 'global' needs 'sparsity'")
        return self


@register(MagnitudePruneConfig)
class MagnitudePruneMethod(Method[MagnitudePruneConfig]):
    """Compute masks from current magnitudes and zero the pruned weights."""

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        targets = resolve_targets(model, self.config.targets, "prune.magnitude")
        masks = self._masks(targets)
        zeros, total = 0, 0
        with torch.no_grad():
            for t, mask in zip(targets, masks, strict=True):
                t.param.mul_(mask.to(t.param.dtype))
                zeros += int((~mask).sum())
                total += mask.numel()
        return {"layers": len(targets), "pruned_params": zeros, "target_params": total,
                "sparsity": round(zeros / max(total, 1), 6)}

    def _masks(self, targets: list[Target]) -> list[torch.Tensor]:
        cfg = self.config
        weights = [t.param.data for t in targets]
        if cfg.threshold is not None:
            return [threshold_mask(w, cfg.threshold) for w in weights]
        assert cfg.sparsity is not None
        if cfg.scope == "global":
            return global_magnitude_masks(weights, cfg.sparsity)
        return [magnitude_mask(w, cfg.sparsity) for w in weights]
