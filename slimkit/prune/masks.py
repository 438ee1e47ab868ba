"""Pure mask math for unstructured pruning.

A mask is a bool tensor of the weight's shape, True where the weight is kept. Masks built from a
target sparsity hit it exactly: ties in the score are broken by position, never by chance.
"""

from __future__ import annotations

import torch
from torch import Tensor


def prune_count(numel: int, sparsity: float) -> int:
    """How many of ``numel`` entries a ``sparsity`` fraction removes (rounded to nearest)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must lie in [0, 1], got {sparsity}")
    return int(round(sparsity * numel))


def lowest_k_mask(scores: Tensor, k: int) -> Tensor:
    """Mask that drops exactly the ``k`` lowest ``scores`` (ties broken by position)."""
    flat = scores.reshape(-1)
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.argsort(flat, stable=True)
        keep[order[:k]] = False
    return keep.reshape(scores.shape)


def magnitude_mask(w: Tensor, sparsity: float) -> Tensor:
    """Keep the largest-magnitude weights so that exactly ``sparsity`` of them are zeroed."""
    return lowest_k_mask(w.detach().abs(), prune_count(w.numel(), sparsity))


def threshold_mask(w: Tensor, threshold: float) -> Tensor:
    """Keep weights with ``|w| >= threshold`` ("set |w| < threshold to zero")."""
    if threshold < 0:
        raise ValueError(f"threshold must be non-negative, got {threshold}")
    return w.detach().abs() >= threshold


def global_magnitude_masks(weights: list[Tensor], sparsity: float) -> list[Tensor]:
    """One sparsity budget over all ``weights``: drops the globally smallest magnitudes.

    Layers end up with different sparsities; the total over all of them is exactly ``sparsity``.
    """
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    keep = lowest_k_mask(flat, prune_count(flat.numel(), sparsity))
    return [m.reshape(w.shape) for m, w in zip(keep.split([w.numel() for w in weights]), weights, strict=True)]
