"""SparseGPT one-shot pruning (``prune.sparsegpt``): prune each transformer block's Linears to an exact
sparsity or an N:M pattern with OBS-style error compensation from calibration Hessians, one block at a
time (Frantar & Alistarh, 2023, see :mod:`slimkit.prune.sparsegpt_math`). Also defines the sparsity-pattern
config fields and the statistics shared with Wanda. Like every
:class:`~slimkit.calib.layer_method.LayerSequentialMethod`, the weights are pruned during ``calibrate``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from slimkit.calib.layer_method import LayerSequentialMethod
from slimkit.calib.stats import InputStats
from slimkit.config import BaseConfig
from slimkit.method import register
from slimkit.prune.sparsegpt_math import SparsityPattern, sparsegpt_prune
from slimkit.targets import Target


class CalibratedPruneConfig(BaseConfig):
    """Sparsity pattern of a calibrated pruner: give ``sparsity`` (exact fraction) or both ``n`` and ``m``
    (keep ``n`` of every ``m`` consecutive input weights of a row, e.g. 2:4)."""

    method: str
    sparsity: float | None = Field(None, ge=0.0, lt=1.0)
    n: int | None = Field(None, ge=0)
    m: int | None = Field(None, ge=2)

    needs_calibration = True

    @model_validator(mode="after")
    def _one_pattern(self) -> CalibratedPruneConfig:
        if (self.n is None) != (self.m is None):
            raise ValueError("give both 'n' and 'm' for an N:M pattern")
        if (self.sparsity is None) == (self.m is None):
            raise ValueError("give exactly one of 'sparsity' or 'n' and 'm'")
        if self.m is not None and self.n is not None and self.n >= self.m:
            raise ValueError(f"N:M keeps n of every m weights: need n < m, got {self.n}:{self.m}")
        return self

    def pattern(self) -> SparsityPattern:
        return SparsityPattern(self.sparsity, self.n, self.m)


P = TypeVar("P", bound=CalibratedPruneConfig)


class SparseGPTConfig(CalibratedPruneConfig):
    """SparseGPT: ``damp`` is the Hessian dampening (fraction of its mean diagonal), ``block_size`` the
    number of columns per adaptive-mask block (a multiple of ``m`` for N:M)."""

    method: Literal["prune.sparsegpt"] = "prune.sparsegpt"
    damp: float = Field(0.01, gt=0.0, le=1.0)
    block_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _block_holds_groups(self) -> SparseGPTConfig:
        if self.m is not None and self.block_size % self.m:
            raise ValueError(f"block_size ({self.block_size}) must be a multiple of m ({self.m})")
        return self


class CalibratedPruneMethod(LayerSequentialMethod[P]):
    """The shared half of SparseGPT and Wanda: both count the zeros they leave and report the same statistics."""

    def __init__(self, config: P) -> None:
        super().__init__(config)
        self._zeros = self._total = 0

    def count(self, keep: Tensor) -> None:
        """Add one pruned weight's keep-mask (rows, cols) to the totals."""
        self._zeros += int((~keep).sum())
        self._total += keep.numel()

    def summary(self) -> dict[str, Any]:
        return {"pruned_params": self._zeros, "target_params": self._total,
                "sparsity": round(self._zeros / max(self._total, 1), 6)}


@register(SparseGPTConfig)
class SparseGPTMethod(CalibratedPruneMethod[SparseGPTConfig]):
    """Sequential SparseGPT over the model's transformer blocks: prune and compensate with each block's Hessian."""

    label = "SparseGPT"

    def compress_linear(self, target: Target, stats: InputStats) -> None:
        cfg, weight = self.config, target.param
        pruned = sparsegpt_prune(weight.data, stats.hessian(), cfg.pattern(), damp=cfg.damp, block_size=cfg.block_size)
        with torch.no_grad():
            weight.copy_(pruned.to(weight.dtype))
        self.count(pruned != 0)
