"""Pure importance scores and unit selection for structured pruning.

A *unit* is what gets removed as a whole: an MLP neuron, a conv channel, an FFN intermediate channel,
an attention head or a KV group. Scores arrive per channel and are summed into units of equal width.
Sources (all higher = more important):

* weight norm: L1 or L2 norm of every weight that belongs to the unit (producer rows and consumer
  columns together, the same quantity group lasso shrinks);
* activation: mean ``|x|`` of the unit's output as the next layer sees it, over calibration data;
* Taylor (Molchanov et al., 2017): ``Σ_samples |Σ_positions x · ∂L/∂x|``, the first-order estimate of
  the loss change when the unit's output is set to zero.
"""

from __future__ import annotations

import torch
from torch import Tensor


def unit_norms(views: list[Tensor], p: int) -> Tensor:
    """Norm of each unit's weights across several tensors.

    Args:
        views: tensors shaped (units, k_i): row ``u`` holds unit ``u``'s weights in that tensor.
        p: 1 for the L1 norm, 2 for the L2 norm.

    Returns:
        (units,) float64 norms.
    """
    if p == 1:
        return sum(v.detach().double().abs().sum(dim=1) for v in views)  # type: ignore[return-value]
    squares = sum(v.detach().double().pow(2).sum(dim=1) for v in views)  # (units,)
    return squares.sqrt()  # type: ignore[union-attr]


def channels_to_units(channel_scores: Tensor, width: int) -> Tensor:
    """Sum per-channel scores (C,) into units of ``width`` consecutive channels: (C / width,)."""
    if channel_scores.numel() % width:
        raise ValueError(f"{channel_scores.numel()} channels do not split into units of {width}")
    return channel_scores.reshape(-1, width).sum(dim=1)


def mean_abs_per_channel(x: Tensor, channel_dim: int) -> tuple[Tensor, int]:
    """Sum of ``|x|`` per channel (C,) and how many values each channel sum covers."""
    moved = x.detach().double().abs().movedim(channel_dim, -1)  # (..., C)
    flat = moved.reshape(-1, moved.shape[-1])  # (N, C)
    return flat.sum(dim=0), flat.shape[0]


def taylor_per_channel(x: Tensor, grad: Tensor, channel_dim: int) -> Tensor:
    """``Σ_samples |Σ_positions x · g|`` per channel (C,); dim 0 of ``x`` is the sample dimension."""
    prod = (x.detach().double() * grad.detach().double()).movedim(channel_dim, -1)  # (B, ..., C)
    per_sample = prod.reshape(prod.shape[0], -1, prod.shape[-1]).sum(dim=1)  # (B, C)
    return per_sample.abs().sum(dim=0)


def kept_count(units: int, fraction: float, multiple_of: int = 1) -> int:
    """How many of ``units`` survive removing ``fraction``, rounded to a multiple (at least one)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    kept = units - int(round(fraction * units))
    if multiple_of > 1:
        kept = min(units, max(multiple_of, int(round(kept / multiple_of)) * multiple_of))
    return max(kept, 1)


def top_units(scores: Tensor, keep: int, blocks: int = 1) -> Tensor:
    """Sorted indices of the ``keep`` highest-scoring units (ties broken by position).

    With ``blocks > 1`` the units form ``blocks`` equal contiguous blocks (query heads of each KV group)
    and every block keeps the same number, ``keep / blocks``.
    """
    if keep % blocks:
        raise ValueError(f"cannot keep {keep} units evenly over {blocks} blocks")
    per_block = scores.reshape(blocks, -1)  # (blocks, units per block)
    order = torch.argsort(-per_block, dim=1, stable=True)[:, : keep // blocks]
    offsets = torch.arange(blocks)[:, None] * per_block.shape[1]
    return torch.sort((order + offsets).reshape(-1)).values


def units_above(scores: Tensor, threshold: float) -> Tensor:
    """Sorted indices of units whose score is at least ``threshold`` (at least the best one)."""
    keep = torch.nonzero(scores >= threshold).reshape(-1)
    return keep if keep.numel() else scores.argmax().reshape(1)
