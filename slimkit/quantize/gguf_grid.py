"""The GGUF block grids (llama.cpp's Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) as slimkit scale rules: pure tensor maths.

A GGUF legacy block holds 32 consecutive weights of a row with fp16 parameters (ggml-quants.c,
``quantize_row_q4_0_ref`` and friends; ``gguf.quants`` in Python):

* Q4_0 / Q5_0: ``x = (c - 2^(b-1)) · d``, codes ``c`` in ``[0, 2^b)``; llama.cpp sets ``d = m / -2^(b-1)``
  with ``m`` the block's weight of largest magnitude *with its sign*, so the extreme lands exactly on the
  level ``-2^(b-1)`` (``d`` is negative when that weight is positive). slimkit's symmetric grid is the same
  levels ``q = c - 2^(b-1)`` in ``[-2^(b-1), 2^(b-1))``, so a scale ``d`` that is an fp16 number makes a
  slimkit group a GGUF block bit for bit.
* Q8_0: ``x = q · d``, ``q`` int8, ``d = max|x| / 127``: slimkit's symmetric 8-bit grid with that scale.
* Q4_1 / Q5_1: ``x = c · d + m`` (fp16 ``d`` and ``m``). slimkit's affine grid computes ``(q - z) · s``
  with an integer zero point ``z``; the two agree exactly in float32 when ``s`` and ``m = -z · s`` are both
  fp16 numbers. That holds when ``s`` has at most ``11 - b`` significant bits (``z < 2^b``, fp16 has 11), so
  the rule keeps scales at that precision (≤ 0.8% coarser at 4 bits) and the range containing 0, as
  slimkit's affine grid always does; llama.cpp's own Q4_1 takes the block minimum as ``m`` instead, which
  this grid cannot hold exactly (on Gaussian blocks its error is 2% lower).

Q4_0/Q5_0/Q8_0 give llama.cpp's values except where llama.cpp rounded against the float32 scale before
storing it as fp16 (10 of 30,720 Gaussian weights at Q4_0, 201 at Q8_0; same error).

Quantizing onto these rules (``gguf: q4_0`` on ``quant.rtn`` / ``quant.gptq`` / ``quant.awq``) gives weights
that :mod:`slimkit.export.gguf_export` writes block by block with zero value change. The integer rounding is
slimkit's (nearest, ties to even), which may differ from llama.cpp's round-half-up on exact ties only.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

GGUFGrid = Literal["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
#: bits and symmetry of each GGUF block type slimkit quantizes onto.
GGUF_GRIDS: dict[str, tuple[int, bool]] = {"q4_0": (4, True), "q4_1": (4, False), "q5_0": (5, True),
                                            "q5_1": (5, False), "q8_0": (8, True)}
GGUF_BLOCK = 32
_FP16_MAX = 65504.0
_FP16_TINY = 2.0**-24  # smallest fp16 subnormal: the scale of an all-zero block (any scale gives zeros)


def gguf_grid_name(bits: int, symmetric: bool) -> str | None:
    """The GGUF block type of a ``bits``/``symmetric`` grid at group 32, or ``None``."""
    return next((name for name, grid in GGUF_GRIDS.items() if grid == (bits, symmetric)), None)


def apply_gguf_grid(data: Any) -> Any:
    """Config pre-validator: ``gguf: q4_0`` fills bits/symmetric/granularity/group_size, a clash is an error."""
    if not isinstance(data, dict) or not isinstance(data.get("gguf"), str) or data["gguf"] not in GGUF_GRIDS:
        return data  # no gguf grid, or an unknown name that the field's Literal reports
    bits, symmetric = GGUF_GRIDS[data["gguf"]]
    fixed = {"bits": bits, "symmetric": symmetric, "granularity": "group", "group_size": GGUF_BLOCK}
    clash = {k: data[k] for k in fixed if k in data and data[k] != fixed[k]}
    if clash:
        raise ValueError(f"gguf: {data['gguf']} fixes the grid ({', '.join(f'{k}={v}' for k, v in fixed.items())}); "
                         f"leave out {', '.join(f'{k}={v!r}' for k, v in clash.items())}")
    return {**data, **fixed}


def to_fp16_values(x: Tensor) -> Tensor:
    """``x`` rounded to the nearest fp16 number (saturating at ±65504), as float32."""
    return x.float().clamp(-_FP16_MAX, _FP16_MAX).half().float()


def round_up_significant(x: Tensor, bits: int) -> Tensor:
    """Positive ``x`` rounded up to a number ``k · 2^e`` with ``k < 2^bits`` and ``e ≥ -24`` (fp16's finest step)."""
    _, exponent = torch.frexp(x)  # x = mantissa · 2^exponent, mantissa in [0.5, 1)
    step = torch.exp2((exponent - bits).clamp_min(-24).float())
    return torch.ceil(x / step) * step


def gguf_symmetric_scale(g: Tensor, bits: int) -> Tensor:
    """Scale of each group of ``g`` (rows, n_groups, width) on Q4_0/Q5_0 (``bits`` 4/5) or Q8_0 (8): (rows, n_groups).

    Q4_0/Q5_0: ``d = m / -2^(bits-1)`` with ``m`` the signed weight of largest magnitude; Q8_0:
    ``d = max|x| / 127``; both as fp16 numbers. An all-zero group gets the smallest fp16 step.
    """
    index = g.abs().argmax(dim=-1, keepdim=True)
    extreme = torch.gather(g, -1, index)[..., 0]  # (rows, n_groups), signed
    d = extreme.abs() / 127 if bits == 8 else extreme / -(2 ** (bits - 1))
    d = to_fp16_values(d)
    return torch.where(d == 0, torch.full_like(d, _FP16_TINY), d)


def gguf_affine_qparams(g: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """``(scale, zero)`` of each group of ``g`` (rows, n_groups, width) on Q4_1/Q5_1: each (rows, n_groups).

    Scales have ``11 - bits`` significant bits, so that both they and ``-zero · scale`` are fp16 numbers, and
    the range ``[min(lo, 0), max(hi, 0)]`` keeps 0 on the grid (integer ``zero`` in ``[0, 2^bits)``). Per group,
    the lowest squared error of three candidates: the min-max step rounded up with the zero point rounded,
    and, for the zero points just below and above ``-lo / step``, the smallest step covering the range. On
    Gaussian 32-blocks this is within 2% of the error of llama.cpp's Q4_1 (which need not hold 0).
    """
    qmax = 2**bits - 1
    lo = g.amin(dim=-1).clamp_max(0.0)
    hi = g.amax(dim=-1).clamp_min(0.0)
    step = ((hi - lo) / qmax).clamp_min(_FP16_TINY)
    best_scale = round_up_significant(step, 11 - bits)
    best_zero = torch.round(-lo / best_scale).clamp(0, qmax)
    best_err = _affine_error(g, best_scale, best_zero, qmax)
    for zero in (torch.floor(-lo / step).clamp(1, qmax - 1), torch.ceil(-lo / step).clamp(1, qmax - 1)):
        scale = round_up_significant(torch.maximum(-lo / zero, hi / (qmax - zero)).clamp_min(_FP16_TINY), 11 - bits)
        err = _affine_error(g, scale, zero, qmax)
        better = err < best_err
        best_scale, best_zero = torch.where(better, scale, best_scale), torch.where(better, zero, best_zero)
        best_err = torch.minimum(err, best_err)
    return best_scale, best_zero


def _affine_error(g: Tensor, scale: Tensor, zero: Tensor, qmax: int) -> Tensor:
    """Squared rounding error per group of ``g`` (rows, n_groups, width) on an affine grid: (rows, n_groups)."""
    s, z = scale[..., None], zero[..., None]
    return ((torch.round(g / s + z).clamp(0, qmax) - z) * s - g).pow(2).sum(dim=-1)


def snap_gguf_scale(scale: Tensor, bits: int, symmetric: bool) -> Tensor:
    """A searched (shrunk) scale moved onto the GGUF grid again: fp16, or fp16 with ``11 - bits`` significant
    bits for the affine types (the zero point is kept)."""
    if symmetric:
        d = to_fp16_values(scale)
        return torch.where(d == 0, torch.full_like(d, _FP16_TINY), d)
    return round_up_significant(scale.abs().clamp_min(_FP16_TINY), 11 - bits)
