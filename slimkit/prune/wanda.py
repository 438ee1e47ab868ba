"""Wanda one-shot pruning (``prune.wanda``): drop the weights with the lowest ``|W_ij| · ‖X_j‖₂`` in every
output row (or per N:M group), with input norms from calibration data and no weight update. Runs block
by block, so each block's norms are measured on the outputs of the already-pruned blocks before it (Sun et
al., 2023, "A Simple and Effective Pruning Approach for Large Language Models"); as for every
:class:`~slimkit.calib.layer_method.LayerSequentialMethod`, the weights are pruned during ``calibrate``.
"""

from __future__ import annotations

from typing import Literal

import torch

from slimkit.calib.stats import InputStats
from slimkit.method import register
from slimkit.prune.sparsegpt import CalibratedPruneConfig, CalibratedPruneMethod
from slimkit.prune.sparsegpt_math import wanda_mask
from slimkit.targets import Target


class WandaConfig(CalibratedPruneConfig):
    """Wanda: prune by weight magnitude times input-activation norm, per output row."""

    method: Literal["prune.wanda"] = "prune.wanda"


@register(WandaConfig)
class WandaMethod(CalibratedPruneMethod[WandaConfig]):
    """Sequential Wanda over the model's transformer blocks (input norms only, no Hessian, no weight update)."""

    label = "Wanda"
    with_hessian = False

    def compress_linear(self, target: Target, stats: InputStats) -> None:
        weight = target.param
        keep = wanda_mask(weight.data, stats.column_norms(), self.config.pattern())
        with torch.no_grad():
            weight.mul_(keep.to(weight.dtype))
        self.count(keep)
