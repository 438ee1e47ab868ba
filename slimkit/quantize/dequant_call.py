"""Dequantize a packed layer's weight on every call, fast enough that prefill can use it.

Why: the integer kernels are built for few rows (decoding); with hundreds of rows (prefill) a float GEMM
can win, but keeping a float copy of every weight would undo the memory saving. Rebuilding the float
weight from the packed bytes costs a few elementwise passes over ``out · in`` values, small beside an
``M · out · in`` GEMM when ``M`` is large. The arithmetic is the record's own (``(level - zero) · scale``
in float32, one rounding), so the float32 route computes exactly the weights ``primitives.dequantize`` gives.

Groups are expressed with the largest width ``g`` dividing both the record's group width and ``in``
(a ragged last group repeats its scale), so the weight is one ``(out, in / g, g)`` broadcast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from slimkit.quantize.primitives import QuantScheme


@dataclass(frozen=True)
class DequantLayout:
    """What per-call dequantization needs besides the packed bytes: (out, in / width, 1) scale and offset."""

    out_features: int
    in_features: int
    bits: int
    width: int
    scale: Tensor  # (out, in / width, 1) float32
    shift: Tensor  # (out, in / width, 1) float32: qmin - zero, so w = (code + shift) · scale


def supports_per_call(scheme: QuantScheme, out_features: int, in_features: int) -> bool:
    """Whether :func:`dequantize_per_call` can read this layout (4- or 8-bit integer codes, whole bytes)."""
    return scheme.kind == "int" and (scheme.bits == 8 or (scheme.bits == 4 and out_features * in_features % 2 == 0))


def dequant_layout(scale: Tensor, zero: Tensor, scheme: QuantScheme, out_features: int,
                   in_features: int) -> DequantLayout:
    """The broadcast form of a record's ``scale`` and ``zero`` (out, n_groups) for per-call dequantization."""
    group = scheme.group_width(in_features) if scale.shape[1] > 1 else in_features
    width = math.gcd(group, in_features)
    n = in_features // width
    s = scale.float().repeat_interleave(group // width, dim=1)[:, :n]  # (out, n)
    z = zero.float().repeat_interleave(group // width, dim=1)[:, :n]
    return DequantLayout(out_features, in_features, scheme.bits, width, s[..., None].contiguous(),
                         (scheme.qmin - z)[..., None].contiguous())


def codes_from_bytes(qdata: Tensor, bits: int, out_features: int, in_features: int) -> Tensor:
    """Unsigned codes (out, in) uint8 from packed bytes (4-bit: high nibble first, as ``pack_bits`` writes)."""
    if bits == 8:
        return qdata.view(out_features, in_features)
    return torch.stack((qdata >> 4, qdata & 15), dim=-1).view(out_features, in_features)


def dequantize_per_call(qdata: Tensor, layout: DequantLayout, dtype: torch.dtype) -> Tensor:
    """The float weight (out, in) in ``dtype``, rebuilt from the packed bytes (computed in float32)."""
    codes = codes_from_bytes(qdata, layout.bits, layout.out_features, layout.in_features)
    grouped = codes.view(layout.out_features, -1, layout.width).float()  # (out, in / width, width)
    # (code + qmin - zero) is an exact integer, so one rounding, the same as primitives.dequantize's
    return grouped.add_(layout.shift).mul_(layout.scale).view(layout.out_features, -1).to(dtype)
