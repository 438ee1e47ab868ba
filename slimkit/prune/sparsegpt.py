"""SparseGPT one-shot pruning (``prune.sparsegpt``): prune each transformer block's Linears to an exact
sparsity or an N:M pattern with OBS-style error compensation from calibration Hessians, one block at a
time. Also defines the sparsity-pattern config fields shared with Wanda.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from slimkit.calib.sequential import LayerContext, run_sequential
from slimkit.config import BaseConfig
from slimkit.method import ForwardLoop, Method, register
from slimkit.prune.sparsegpt_math import SparsityPattern, sparsegpt_prune


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


def sparsity_stats(linears: int, zeros: int, total: int) -> dict[str, Any]:
    """The statistics both calibrated pruners report."""
    return {"linears": linears, "pruned_params": zeros, "target_params": total,
            "sparsity": round(zeros / max(total, 1), 6)}


@register(SparseGPTConfig)
class SparseGPTMethod(Method[SparseGPTConfig]):
    """Sequential SparseGPT over the model's transformer blocks."""

    def __init__(self, config: SparseGPTConfig) -> None:
        super().__init__(config)
        self._stats: dict[str, Any] | None = None
        self._zeros = self._total = 0

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:
        linears = run_sequential(model, forward_loop, self.config.targets, self._prune_block,
                                 with_hessian=True, description="SparseGPT")
        self._stats = sparsity_stats(linears, self._zeros, self._total)

    def _prune_block(self, ctx: LayerContext) -> None:
        cfg = self.config
        for name, target in ctx.targets.items():
            weight = target.param
            pruned = sparsegpt_prune(weight.data, ctx.stats[name].hessian(), cfg.pattern(), damp=cfg.damp,
                                     block_size=cfg.block_size)
            with torch.no_grad():
                weight.copy_(pruned.to(weight.dtype))
            self._zeros += int((pruned == 0).sum())
            self._total += pruned.numel()

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if self._stats is None:
            raise RuntimeError("prune.sparsegpt needs calibration: use slimkit.apply(model, config, forward_loop)")
        return self._stats
