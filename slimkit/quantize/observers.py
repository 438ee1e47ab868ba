"""Activation observers: running statistics of calibration activations → ``(scale, zero)`` for a grid.

Four ways to pick the clipping range ``[lo, hi]`` of an activation tensor, per tensor or per channel
(the last dimension):
* ``minmax``: the extremes seen over all batches;
* ``moving_average``: an exponential moving average of each batch's extremes (robust to one odd batch);
* ``percentile``: the ``p``-th and ``(100 - p)``-th percentiles of a bounded random sample of values;
* ``mse``: the shrink ratio of the min-max range that minimises the mean squared quantization error
  of that sample (a grid search).
:func:`range_to_qparams` turns a range into the scale and zero point of a symmetric or affine grid; the
range always contains 0 so that zero stays exactly representable. A symmetric grid takes the smallest step
that covers the range, ``max(lo / qmin, hi / qmax)``: a range whose negative end dominates uses the level
-128, which ``absmax / qmax`` never did (the ``covering`` scale of
:func:`slimkit.quantize.primitives.symmetric_scale`; an observer keeps no values to compare the other on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from slimkit.quantize.fake_quant import fake_quantize

ObserverKind = Literal["minmax", "moving_average", "percentile", "mse"]
_EPS = 1e-12
MSE_RATIOS = tuple(0.93**i for i in range(100))  # 1.0 down to ~8e-4, geometric: heavy tails need small ratios


@dataclass(frozen=True)
class ActivationGrid:
    """An activation grid: bit width, symmetric or affine, one range per tensor or per channel."""

    bits: int = 8
    symmetric: bool = False
    per_channel: bool = False

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1


def range_to_qparams(lo: Tensor, hi: Tensor, grid: ActivationGrid) -> tuple[Tensor, Tensor]:
    """Scale and integer-valued zero point for the clipping range ``[lo, hi]`` (same shapes as ``lo``)."""
    lo, hi = lo.float().clamp_max(0.0), hi.float().clamp_min(0.0)
    if grid.symmetric:
        scale = torch.maximum(lo / grid.qmin, hi / grid.qmax).clamp_min(_EPS)
        return scale, torch.zeros_like(scale)
    scale = ((hi - lo) / (grid.qmax - grid.qmin)).clamp_min(_EPS)
    zero = torch.round(grid.qmin - lo / scale).clamp(grid.qmin, grid.qmax)
    return scale, zero


def as_rows(x: Tensor) -> Tensor:
    """View activations (..., C) as (N, C)."""
    return x.detach().reshape(-1, x.shape[-1]).float()


def batch_range(x: Tensor, per_channel: bool) -> tuple[Tensor, Tensor]:
    """Min and max of ``x`` (..., C): shapes (C,) per channel, (1,) per tensor."""
    rows = as_rows(x)  # (N, C)
    if per_channel:
        return rows.amin(dim=0), rows.amax(dim=0)
    return rows.min().reshape(1), rows.max().reshape(1)


def percentile_range(sample: Tensor, percentile: float, per_channel: bool) -> tuple[Tensor, Tensor]:
    """The ``(100 - p, p)`` percentiles of ``sample`` (N, C), per channel (C,) or per tensor (1,)."""
    q = torch.tensor([1.0 - percentile / 100.0, percentile / 100.0])
    if per_channel:
        bounds = torch.quantile(sample, q, dim=0)  # (2, C)
        return bounds[0], bounds[1]
    bounds = torch.quantile(sample.reshape(-1), q)  # (2,)
    return bounds[:1], bounds[1:]


def quantization_mse(sample: Tensor, lo: Tensor, hi: Tensor, grid: ActivationGrid) -> Tensor:
    """Mean squared error of fake-quantizing ``sample`` (N, C) on ``[lo, hi]``: (C,) or (1,)."""
    scale, zero = range_to_qparams(lo, hi, grid)
    err = (fake_quantize(sample, scale, zero, grid.qmin, grid.qmax) - sample).pow(2)  # (N, C)
    return err.mean(dim=0) if grid.per_channel else err.mean().reshape(1)


@torch.no_grad()
def mse_range(sample: Tensor, lo: Tensor, hi: Tensor, grid: ActivationGrid,
              ratios: tuple[float, ...] = MSE_RATIOS) -> tuple[Tensor, Tensor]:
    """Shrink ``[lo, hi]`` by the ratio in ``ratios`` that minimises the quantization MSE of ``sample``.

    Args:
        sample: observed values (N, C).
        lo, hi: the min-max range, (C,) per channel or (1,) per tensor.
        grid: the activation grid (its ``per_channel`` picks one ratio per channel or one overall).
        ratios: candidate shrink ratios in (0, 1].

    Returns:
        The best ``(lo, hi)``, shapes as given.
    """
    candidates = torch.tensor(ratios, dtype=sample.dtype)  # (R,)
    errors = []
    for chunk in candidates.split(8):  # bounded memory: (8, N, C) at a time
        r = chunk.reshape(-1, 1, 1)  # (r, 1, 1)
        scale, zero = range_to_qparams(lo * r, hi * r, grid)  # (r, 1, C) or (r, 1, 1)
        x_hat = (torch.round(sample / scale + zero).clamp(grid.qmin, grid.qmax) - zero) * scale  # (r, N, C)
        err = (x_hat - sample).pow(2).mean(dim=1)  # (r, C)
        errors.append(err if grid.per_channel else err.mean(dim=1, keepdim=True))
    best = candidates[torch.cat(errors).argmin(dim=0)]  # (C,) or (1,): the first best ratio wins ties
    return lo * best, hi * best


class ActivationObserver:
    """Accumulates statistics of the activations it is shown and turns them into ``(scale, zero)``.

    Args:
        kind: how the clipping range is chosen (see the module docstring).
        grid: the activation grid.
        percentile: for ``percentile``, the upper percentile (e.g. 99.99).
        momentum: for ``moving_average``, the weight of the previous average.
        max_sample_values: ``percentile`` and ``mse`` keep a uniform random sample of at most this many
            values (per channel: whole rows, i.e. tokens, of the (N, C) activations).
    """

    def __init__(self, kind: ObserverKind, grid: ActivationGrid, percentile: float = 99.99,
                 momentum: float = 0.9, max_sample_values: int = 2**17, seed: int = 0) -> None:
        self.kind, self.grid = kind, grid
        self.percentile, self.momentum, self.max_sample_values = percentile, momentum, max_sample_values
        self.lo: Tensor | None = None
        self.hi: Tensor | None = None
        self._sample: Tensor | None = None  # (n, C) per channel, (n, 1) per tensor
        self._seen_rows = 0
        self._generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Observe one batch of activations (..., C)."""
        lo, hi = batch_range(x, self.grid.per_channel)
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
        elif self.kind == "moving_average":
            m = self.momentum
            self.lo, self.hi = m * self.lo + (1 - m) * lo, m * self.hi + (1 - m) * hi
        else:
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        if self.kind in ("percentile", "mse"):
            self._add_to_sample(as_rows(x))

    def _add_to_sample(self, rows: Tensor) -> None:
        """Keep a uniform random sample of all rows seen so far; per tensor a row is one value."""
        if not self.grid.per_channel:
            rows = rows.reshape(-1, 1)
        limit = max(1, self.max_sample_values // rows.shape[1])
        self._seen_rows += rows.shape[0]
        old = 0 if self._sample is None else self._sample.shape[0]
        keep = min(limit, old + rows.shape[0])
        take_new = min(rows.shape[0], max(keep - old, round(keep * rows.shape[0] / self._seen_rows)))
        new = rows[torch.randperm(rows.shape[0], generator=self._generator)[:take_new]]
        if self._sample is None:
            self._sample = new
            return
        kept = self._sample[torch.randperm(old, generator=self._generator)[: keep - take_new]]
        self._sample = torch.cat([kept, new])

    @torch.no_grad()
    def qparams(self) -> tuple[Tensor, Tensor]:
        """``(scale, zero)``: shapes (C,) per channel or (1,) per tensor."""
        if self.lo is None or self.hi is None:
            raise RuntimeError("the observer saw no activations: did the forward loop reach this layer?")
        lo, hi = self.lo, self.hi
        if self.kind == "percentile":
            assert self._sample is not None
            lo, hi = percentile_range(self._sample, self.percentile, self.grid.per_channel)
        elif self.kind == "mse":
            assert self._sample is not None
            lo, hi = mse_range(self._sample, lo, hi, self.grid)
        return range_to_qparams(lo, hi, self.grid)
