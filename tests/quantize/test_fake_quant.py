"""Fake quantization: the clipped straight-through estimator and LSQ's step gradient."""

import hypothesis.strategies as st
import torch
from hypothesis import given, settings

from slimkit.quantize.fake_quant import (
    fake_quantize,
    lsq_fake_quantize,
    lsq_grad_scale,
    lsq_init_step,
    straight_through,
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(2, 8))
def test_ste_passes_gradient_inside_the_range_and_blocks_it_outside(seed, bits):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(37, 11, generator=g, dtype=torch.float64) * 3).requires_grad_()
    scale, zero = torch.tensor(0.05, dtype=torch.float64), torch.tensor(float(2 ** (bits - 1)), dtype=torch.float64)
    qmin, qmax = 0, 2**bits - 1
    y = fake_quantize(x, scale, zero, qmin, qmax)
    upstream = torch.randn(37, 11, generator=g, dtype=torch.float64)
    y.backward(upstream)
    v = x.detach() / scale + zero
    inside = (v >= qmin) & (v <= qmax)
    assert torch.equal(x.grad, upstream * inside)
    expected = (torch.round(v).clamp(qmin, qmax) - zero) * scale
    assert torch.allclose(y.detach(), expected)


def test_straight_through_is_identity_backward():
    x = torch.randn(5, 7, requires_grad=True)
    x_hat = torch.sign(x.detach())
    y = straight_through(x, x_hat)
    y.sum().backward()
    assert torch.equal(y.detach(), x_hat) and torch.equal(x.grad, torch.ones(5, 7))


def _lsq_step_grad_reference(x, s, qmin, qmax):
    """LSQ's ∂x̂/∂s per element (float64): -v + round(v) inside, qmin/qmax at the clipped ends."""
    v = x / s
    return torch.where(v <= qmin, torch.full_like(v, qmin), torch.where(v >= qmax, torch.full_like(v, qmax),
                                                                         torch.round(v) - v))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(2, 8))
def test_lsq_gradients_match_the_paper(seed, bits):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(23, 9, generator=g, dtype=torch.float64) * 2).requires_grad_()
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    step = (lsq_init_step(x, qmax) * 0.7).requires_grad_()
    grad_scale = lsq_grad_scale(x.numel(), qmax)
    upstream = torch.randn(23, 9, generator=g, dtype=torch.float64)
    lsq_fake_quantize(x, step, qmin, qmax, grad_scale).backward(upstream)
    ref = (upstream * _lsq_step_grad_reference(x.detach(), step.detach(), qmin, qmax)).sum() * grad_scale
    assert torch.allclose(step.grad, ref, rtol=1e-10)
    v = x.detach() / step.detach()
    assert torch.allclose(x.grad, upstream * ((v >= qmin) & (v <= qmax)), rtol=1e-12, atol=0)


def test_lsq_step_gradient_matches_finite_differences_of_its_surrogate():
    # LSQ differentiates s · (clamp(x/s) + c) with the rounding offset c = round(v) - v held fixed at s0
    # (the straight-through estimator of round); central differences of that surrogate must agree.
    x = torch.tensor([0.13, -0.71, 0.42, 1.9, -2.6, 0.05], dtype=torch.float64)
    s0 = torch.tensor(0.2, dtype=torch.float64)
    step = s0.clone().requires_grad_()
    lsq_fake_quantize(x, step, -4, 3, 1.0).sum().backward()
    v0 = (x / s0).clamp(-4, 3)
    offset = torch.round(v0) - v0

    def surrogate(s):
        return (s * ((x / s).clamp(-4, 3) + offset)).sum()

    eps = 1e-6
    assert torch.allclose(step.grad, (surrogate(s0 + eps) - surrogate(s0 - eps)) / (2 * eps), rtol=1e-6)


def test_per_channel_lsq_steps_get_their_own_gradients():
    x = torch.randn(6, 10, dtype=torch.float64)
    step = torch.full((6, 1), 0.3, dtype=torch.float64, requires_grad=True)
    lsq_fake_quantize(x, step, -8, 7, 1.0).sum().backward()
    ref = _lsq_step_grad_reference(x, step.detach(), -8, 7).sum(dim=1, keepdim=True)
    assert torch.allclose(step.grad, ref)
