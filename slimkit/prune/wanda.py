"""Wanda one-shot pruning (``prune.wanda``): drop the weights with the lowest ``|W_ij| · ‖X_j‖₂`` in every
output row (or per N:M group), with input norms from calibration data and no weight update. Runs block
by block, so each block's norms are measured on the outputs of the already-pruned blocks before it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from slimkit.calib.sequential import LayerContext, run_sequential
from slimkit.method import ForwardLoop, Method, register
from slimkit.prune.sparsegpt import CalibratedPruneConfig, sparsity_stats
from slimkit.prune.sparsegpt_math import wanda_mask


class WandaConfig(CalibratedPruneConfig):
    """Wanda: prune by weight magnitude times input-activation norm, per output row."""

    method: Literal["prune.wanda"] = "prune.wanda"


@register(WandaConfig)
class WandaMethod(Method[WandaConfig]):
    """Sequential Wanda over the model's transformer blocks."""

    def __init__(self, config: WandaConfig) -> None:
        super().__init__(config)
        self._stats: dict[str, Any] | None = None
        self._zeros = self._total = 0

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:
        linears = run_sequential(model, forward_loop, self.config.targets, self._prune_block,
                                 with_hessian=False, description="Wanda")
        self._stats = sparsity_stats(linears, self._zeros, self._total)

    def _prune_block(self, ctx: LayerContext) -> None:
        for name, target in ctx.targets.items():
            weight = target.param
            keep = wanda_mask(weight.data, ctx.stats[name].column_norms(), self.config.pattern())
            with torch.no_grad():
                weight.mul_(keep.to(weight.dtype))
            self._zeros += int((~keep).sum())
            self._total += keep.numel()

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if self._stats is None:
            raise RuntimeError("prune.wanda needs calibration: use slimkit.apply(model, config, forward_loop)")
        return self._stats
