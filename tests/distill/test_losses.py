"""Distillation losses against float64 references written out by hand, and Hinton's T² scaling."""

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from slimkit.distill.losses import (
    attention_kl,
    causal_lm_ce,
    causal_lm_kd,
    cosine_loss,
    feature_mse,
    hard_ce,
    kd_kl,
    learned_projection,
    mix,
    teacher_argmax,
)


def _reference_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> float:
    """T² · mean over rows of Σ_c p_c (log p_c − log q_c), written with plain float64 loops."""
    total = 0.0
    for row_s, row_t in zip(s.double().tolist(), t.double().tolist(), strict=True):
        zs = [v / temperature for v in row_s]
        zt = [v / temperature for v in row_t]
        ls = math.log(sum(math.exp(v - max(zs)) for v in zs)) + max(zs)
        lt = math.log(sum(math.exp(v - max(zt)) for v in zt)) + max(zt)
        total += sum(math.exp(b - lt) * ((b - lt) - (a - ls)) for a, b in zip(zs, zt, strict=True))
    return temperature**2 * total / len(s)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), classes=st.integers(2, 12), temperature=st.floats(0.5, 8.0), seed=st.integers(0, 999))
def test_kd_loss_equals_a_float64_reference(rows, classes, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(rows, classes, generator=g) * 3, torch.randn(rows, classes, generator=g) * 3
    got = kd_kl(s.double(), t.double(), temperature)
    assert float(got) == pytest.approx(_reference_kd(s, t, temperature), rel=1e-9, abs=1e-12)
    assert float(kd_kl(s, t, temperature)) == pytest.approx(_reference_kd(s, t, temperature), rel=1e-4, abs=1e-6)


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    z = torch.randn(4, 7)
    assert float(kd_kl(z, z, 3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_kl(z, z + torch.randn(4, 7), 3.0)) > 0


def test_t_squared_keeps_the_soft_gradient_the_same_size_at_any_high_temperature():
    # Hinton et al. 2015 section 2.1: for zero-mean logits and T >> |z|, d(soft loss)/dz_s ≈ (z_s − z_t) / (N T²);
    # the T² factor makes the gradient ≈ (z_s − z_t) / N, whatever T.
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(1, 10, generator=g, dtype=torch.float64), torch.randn(1, 10, generator=g, dtype=torch.float64)
    zs, zt = zs - zs.mean(), zt - zt.mean()
    grads = {}
    for temperature in (200.0, 400.0, 800.0):
        s = zs.clone().requires_grad_(True)
        kd_kl(s, zt, temperature).backward()
        grads[temperature] = s.grad[0]
    expected = (zs - zt)[0] / 10
    for grad in grads.values():
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-3)  # second-order terms ~ z² / (N T)
    # without T² the gradient would shrink fourfold per doubling of T
    assert float(grads[800.0].norm() / grads[200.0].norm()) == pytest.approx(1.0, abs=0.02)


def test_kd_loss_sends_no_gradient_into_the_teacher():
    s, t = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    kd_kl(s, t, 2.0).backward()
    assert s.grad is not None and t.grad is None


def test_mask_counts_only_the_named_positions():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    expected = kd_kl(s[mask], t[mask], 2.0)
    torch.testing.assert_close(kd_kl(s, t, 2.0, mask), expected)


def test_hard_targets_from_labels_or_teacher_and_the_mix():
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    reference = -torch.log_softmax(s.double(), -1)[torch.arange(6), y].mean()
    torch.testing.assert_close(hard_ce(s, y).double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hard_ce(s, teacher_argmax(t)), hard_ce(s, t.argmax(-1)))
    soft, hard = kd_kl(s, t, 2.0), hard_ce(s, y)
    torch.testing.assert_close(mix(soft, hard, 0.25), 0.25 * soft + 0.75 * hard)
    with pytest.raises(ValueError, match="alpha"):
        mix(soft, hard, 1.5)


def test_causal_lm_kd_uses_the_shifted_positions_and_skips_padding():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[1, 3:] = -100  # padding: positions 2 and 3 of row 1 predict nothing
    rows = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    picked_s = torch.stack([s[b, p] for b, p in rows])
    picked_t = torch.stack([t[b, p] for b, p in rows])
    torch.testing.assert_close(causal_lm_kd(s, t, labels, 2.0), kd_kl(picked_s, picked_t, 2.0))
    # the hard term is the LM loss transformers computes
    targets = torch.stack([labels[b, p + 1] for b, p in rows])
    torch.testing.assert_close(causal_lm_ce(s, labels), hard_ce(picked_s, targets))
    torch.testing.assert_close(causal_lm_ce(s, labels, t), hard_ce(picked_s, picked_t.argmax(-1)))


def test_feature_mse_through_a_projection_when_widths_differ():
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 6)
    with pytest.raises(ValueError, match="projection"):
        feature_mse(s, t)
    proj = learned_projection(4, 6)
    assert proj is not None and learned_projection(6, 6) is None
    expected = ((proj(s).double() - t.double()) ** 2).mean()
    torch.testing.assert_close(feature_mse(s, t, proj).double(), expected, rtol=1e-5, atol=1e-6)
    feature_mse(s, t, proj).backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_cosine_loss_is_one_minus_the_mean_cosine():
    a, b = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    torch.testing.assert_close(cosine_loss(a, b), (1 - cos).mean())
    assert float(cosine_loss(a, 3 * a)) == pytest.approx(0.0, abs=1e-12)


def test_attention_kl_against_a_reference_and_with_different_head_counts():
    g = torch.Generator().manual_seed(2)
    s = torch.softmax(torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64), -1)
    t = torch.softmax(torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64), -1)
    reference = (t * (t.log() - s.log())).sum(-1).mean()
    torch.testing.assert_close(attention_kl(s, t), reference)
    assert float(attention_kl(t, t)) == pytest.approx(0.0, abs=1e-12)
    fewer_heads = s[:, :2]
    s_mean, t_mean = fewer_heads.mean(1), t.mean(1)
    torch.testing.assert_close(attention_kl(fewer_heads, t), (t_mean * (t_mean.log() - s_mean.log())).sum(-1).mean())
