"""Differentiable fake quantization: straight-through estimator (STE) and learned step size (LSQ).

Fake quantization rounds a float tensor onto an integer grid and maps it straight back to floats, so a
model trains or runs with quantization error while staying in floating point. Rounding has zero
gradient almost everywhere; the straight-through estimator (Bengio et al. 2013) passes the incoming
gradient unchanged where the input lies inside the clipping range and zeroes it outside.

LSQ (Esser et al. 2020, "Learned Step Size Quantization") also learns the step ``s``:
with ``v = x / s``, ``∂x̂/∂s = -v + round(v)`` inside the range, ``qmin`` below it and ``qmax`` above it,
and the step's gradient is scaled by ``g = 1 / sqrt(numel_per_step · qmax)`` so that steps and weights
learn at comparable rates. Every function here is pure tensor math.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class _FakeQuantizeSTE(torch.autograd.Function):
    """Affine fake quantization whose backward is the clipped straight-through estimator."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero: Tensor, qmin: int, qmax: int) -> Tensor:  # type: ignore[override]
        v = x / scale + zero
        inside = (v >= qmin) & (v <= qmax)
        ctx.save_for_backward(inside)
        return (torch.round(v).clamp(qmin, qmax) - zero) * scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: Tensor, scale: Tensor, zero: Tensor, qmin: int, qmax: int) -> Tensor:
    """Quantize-dequantize ``x`` with broadcastable ``scale``/``zero``; gradient by the clipped STE.

    Args:
        x: any shape.
        scale: broadcastable to ``x`` (e.g. (1,) per tensor, (C,) per last-dim channel, (rows, 1) per row).
        zero: integer-valued zero point, broadcastable like ``scale`` (zeros for symmetric grids).
        qmin, qmax: the integer grid.

    Returns:
        ``(clamp(round(x / scale + zero), qmin, qmax) - zero) * scale``, same shape as ``x``; its gradient
        with respect to ``x`` is 1 where ``qmin <= x / scale + zero <= qmax`` and 0 elsewhere.
    """
    return _FakeQuantizeSTE.apply(x, scale, zero, qmin, qmax)


def straight_through(x: Tensor, x_hat: Tensor) -> Tensor:
    """``x_hat`` in the forward pass, identity gradient to ``x`` in the backward pass (unclipped STE)."""
    return x + (x_hat - x).detach()


def lsq_grad_scale(numel_per_step: int, qmax: int) -> float:
    """LSQ's gradient scale ``1 / sqrt(N · Q_P)`` for a step shared by ``numel_per_step`` values."""
    return 1.0 / math.sqrt(max(numel_per_step, 1) * max(qmax, 1))


def lsq_init_step(x: Tensor, qmax: int, dim: tuple[int, ...] | None = None) -> Tensor:
    """LSQ's initial step ``2 · mean|x| / sqrt(Q_P)``, reduced over ``dim`` (all dims if None)."""
    mean_abs = x.detach().abs().mean() if dim is None else x.detach().abs().mean(dim=dim, keepdim=True)
    return (2 * mean_abs / math.sqrt(max(qmax, 1))).clamp_min(1e-8)


def lsq_fake_quantize(x: Tensor, step: Tensor, qmin: int, qmax: int, grad_scale: float) -> Tensor:
    """LSQ fake quantization with a learnable ``step`` (symmetric grid, zero point 0).

    Args:
        x: any shape.
        step: positive step, broadcastable to ``x``; receives LSQ's gradient times ``grad_scale``.
        qmin, qmax: the integer grid, e.g. -8, 7 for signed 4 bits or 0, 15 for unsigned activations.
        grad_scale: usually :func:`lsq_grad_scale`.

    Returns:
        ``clamp(round(x / step), qmin, qmax) * step``, same shape as ``x``.
    """
    # Forward value is step; backward gradient is grad_scale times the true gradient.
    s = step * grad_scale + (step - step * grad_scale).detach()
    v = (x / s).clamp(qmin, qmax)
    v_rounded = v + (torch.round(v) - v).detach()  # round with an identity gradient
    return v_rounded * s
