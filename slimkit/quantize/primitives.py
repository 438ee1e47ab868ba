"""Pure quantization math: quantization parameters, quantize, dequantize, fake-quantize.

All functions work on 2-D weights ``(rows, cols)``: a row is one output channel, and groups run
along ``cols`` (the input dimension). A group size that does not divide ``cols`` leaves a shorter
last group ("ragged"), which is how hidden sizes like 576 are quantized at group 128.

Integer grids:
* symmetric, b bits: q ∈ [-2^(b-1), 2^(b-1) - 1], x ≈ q · scale, scale = absmax / (2^(b-1) - 1);
* affine,    b bits: q ∈ [0, 2^b - 1],             x ≈ (q - zero) · scale; the range always contains 0
  so that zero is exactly representable (padding and pruned weights stay zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Granularity = Literal["tensor", "channel", "group"]
_EPS = 1e-12


@dataclass(frozen=True)
class QuantScheme:
    """How a weight is quantized: bit width, symmetry and the granularity of its parameters."""

    bits: int
    symmetric: bool = True
    granularity: Granularity = "channel"
    group_size: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be between 1 and 8, got {self.bits}")
        if self.symmetric and self.bits < 2:
            raise ValueError("symmetric 1-bit has no zero-centred grid; use binary weights instead")
        if self.granularity == "group" and (self.group_size is None or self.group_size < 1):
            raise ValueError("granularity 'group' needs a positive group_size")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def group_width(self, cols: int) -> int:
        """Number of columns that share one scale."""
        if self.granularity == "group":
            assert self.group_size is not None
            return min(self.group_size, cols)
        return cols


def _grouped(w: Tensor, width: int) -> Tensor:
    """View ``w`` (rows, cols) as (rows, n_groups, width), zero-padding a ragged last group."""
    rows, cols = w.shape
    n_groups = math.ceil(cols / width)
    pad = n_groups * width - cols
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(rows, n_groups, width)


def _expand(p: Tensor, width: int, cols: int) -> Tensor:
    """Broadcast per-group parameters (rows, n_groups) back to (rows, cols)."""
    return p.repeat_interleave(width, dim=1)[:, :cols]


def compute_qparams(w: Tensor, scheme: QuantScheme) -> tuple[Tensor, Tensor]:
    """Min-max quantization parameters for ``w``.

    Args:
        w: weights, shape (rows, cols).
        scheme: the quantization scheme.

    Returns:
        ``(scale, zero_point)``, each (rows, n_groups) (a single group for per-channel; per-tensor is
        broadcast to every row). ``zero_point`` is integer-valued float, zero for symmetric schemes.
    """
    if w.dim() != 2:
        raise ValueError(f"compute_qparams expects a 2-D (rows, cols) weight, got shape {tuple(w.shape)}")
    w = w.detach().float()
    g = _grouped(w, scheme.group_width(w.shape[1]))  # (rows, n_groups, width)
    if scheme.granularity == "tensor":
        g = g.reshape(1, 1, -1)
    if scheme.symmetric:
        scale = g.abs().amax(dim=-1).clamp_min(_EPS) / scheme.qmax
        zero = torch.zeros_like(scale)
    else:
        lo = g.amin(dim=-1).clamp_max(0.0)
        hi = g.amax(dim=-1).clamp_min(0.0)
        scale = ((hi - lo) / scheme.qmax).clamp_min(_EPS)
        zero = torch.round(-lo / scale).clamp(scheme.qmin, scheme.qmax)
    if scheme.granularity == "tensor":
        scale, zero = scale.expand(w.shape[0], 1).contiguous(), zero.expand(w.shape[0], 1).contiguous()
    return scale, zero


def quantize(w: Tensor, scale: Tensor, zero: Tensor, scheme: QuantScheme) -> Tensor:
    """Map ``w`` (rows, cols) to integers on the scheme's grid (int16 tensor, same shape)."""
    width = scheme.group_width(w.shape[1]) if scale.shape[1] > 1 else w.shape[1]
    s, z = _expand(scale, width, w.shape[1]), _expand(zero, width, w.shape[1])
    q = torch.round(w.float() / s + z).clamp(scheme.qmin, scheme.qmax)
    return q.to(torch.int16)


def dequantize(q: Tensor, scale: Tensor, zero: Tensor, scheme: QuantScheme) -> Tensor:
    """Inverse of :func:`quantize`: float32 (rows, cols)."""
    width = scheme.group_width(q.shape[1]) if scale.shape[1] > 1 else q.shape[1]
    s, z = _expand(scale, width, q.shape[1]), _expand(zero, width, q.shape[1])
    return (q.float() - z) * s


def quantize_dequantize(w: Tensor, scheme: QuantScheme) -> tuple[Tensor, Tensor, Tensor]:
    """Round-to-nearest: ``(w_hat, scale, zero)`` with ``w_hat`` the dequantized weights."""
    scale, zero = compute_qparams(w, scheme)
    return dequantize(quantize(w, scale, zero, scheme), scale, zero, scheme).to(w.dtype), scale, zero


def as_matrix(w: Tensor) -> Tensor:
    """View a Linear (out, in) or Conv (out, in, *k) weight as (out, in·prod(k))."""
    return w.reshape(w.shape[0], -1)
