"""Pure N:M sparsity masks: keep the ``n`` highest-scoring of every ``m`` consecutive input weights.

An N:M mask groups each output row's input weights into runs of ``m`` consecutive entries and keeps
exactly ``n`` per run (2:4 is the pattern sparse tensor cores accelerate). Linear weights (out, in)
group along ``in``; Conv2d weights (out, in, kh, kw) group along ``in`` at every kernel position, the
layout NVIDIA's ASP uses. Ties are broken by position, so masks are deterministic. Other methods
(SparseGPT, Wanda) pass their own scores to :func:`nm_mask`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_nm(n: int, m: int, cols: int) -> None:
    """Raise ``ValueError`` unless ``0 <= n < m`` and ``m`` divides the grouped width ``cols``."""
    if not 0 <= n < m:
        raise ValueError(f"N:M keeps n of every m weights: need 0 <= n < m, got {n}:{m}")
    if cols % m:
        raise ValueError(f"{n}:{m} sparsity needs the input width ({cols}) to be a multiple of {m}")


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Bool mask (rows, cols) keeping the ``n`` highest ``scores`` in every group of ``m`` columns.

    Args:
        scores: importance per weight (rows, cols), e.g. ``|W|``; groups run along ``cols``.
        n: weights kept per group.
        m: group length; must divide ``cols``.

    Returns:
        Bool tensor of ``scores``' shape, True where the weight is kept; exactly ``n`` per group.
    """
    rows, cols = scores.shape
    check_nm(n, m, cols)
    grouped = scores.reshape(rows, cols // m, m)  # (rows, groups, m)
    order = torch.argsort(grouped, dim=2, stable=True)  # ascending: the first m - n go
    keep = torch.ones_like(grouped, dtype=torch.bool)
    keep.scatter_(2, order[..., : m - n], False)
    return keep.reshape(rows, cols)


def nm_mask_for_weight(scores: Tensor, n: int, m: int) -> Tensor:
    """N:M mask for a Linear (out, in) or Conv (out, in, *kernel) score tensor, grouped along ``in``.

    Conv scores are moved to (out, *kernel, in) so each group holds ``m`` input channels at one
    kernel position, then the mask is moved back to the weight's layout.
    """
    if scores.dim() == 2:
        return nm_mask(scores, n, m)
    if scores.dim() < 2:
        raise ValueError(f"N:M needs a weight with an input dimension, got shape {tuple(scores.shape)}")
    moved = scores.movedim(1, -1)  # (out, *kernel, in)
    keep = nm_mask(moved.reshape(-1, moved.shape[-1]), n, m)  # (out·kernel, in)
    return keep.reshape(moved.shape).movedim(-1, 1)


def magnitude_nm_mask(w: Tensor, n: int, m: int) -> Tensor:
    """N:M mask of weight ``w`` by absolute magnitude (see :func:`nm_mask_for_weight`)."""
    return nm_mask_for_weight(w.detach().abs(), n, m)


def is_nm_sparse(w: Tensor, n: int, m: int) -> bool:
    """Whether every group of ``m`` input weights of ``w`` has at most ``n`` nonzeros."""
    moved = w.movedim(1, -1) if w.dim() > 2 else w  # (..., in)
    groups = moved.reshape(-1, m)  # (groups, m)
    return bool(((groups != 0).sum(dim=1) <= n).all())
