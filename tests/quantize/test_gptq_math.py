"""GPTQ math on small random layers: lower output error than RTN on the same weights and inputs, the
stored grid reproduces the GPTQ weights exactly, activation ordering, dead columns and every bit width."""

import pytest
import torch

from slimkit.quantize.gptq_math import gptq_quantize
from slimkit.quantize.primitives import QuantScheme, dequantize, quantize, quantize_dequantize


def layer(rows, cols, tokens=1024, seed=0):
    """Weights (rows, cols) and correlated, uneven inputs (tokens, cols) like real activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5
    x = torch.randn(tokens, cols, generator=g, dtype=torch.float64) @ mix
    x = x * torch.rand(cols, generator=g, dtype=torch.float64).mul(3).exp()  # per-channel energy spread
    w = torch.randn(rows, cols, generator=g)
    return w, x


def output_error(x, w, w_hat):
    return float((x @ (w.double() - w_hat.double()).T).pow(2).sum())


def hessian(x):
    return 2 * x.T @ x / x.shape[0]


SCHEMES = [
    ((32, 96), QuantScheme(4, True, "group", 32)),
    ((48, 100), QuantScheme(4, True, "group", 32)),  # ragged: 100 = 3·32 + 4
    ((40, 200), QuantScheme(3, False, "group", 64)),  # ragged affine
    ((24, 130), QuantScheme(4, True, "channel")),
    ((24, 64), QuantScheme(8, True, "tensor")),
    ((64, 576), QuantScheme(4, True, "group", 128)),  # SmolLM2's 4.5 groups
]
IDS = ["int4-g32", "int4-g32-ragged", "int3-affine-g64-ragged", "int4-channel", "int8-tensor", "int4-g128-576"]


@pytest.mark.parametrize("shape, scheme", SCHEMES, ids=IDS)
@pytest.mark.parametrize("act_order", [False, True], ids=["natural", "act-order"])
def test_gptq_beats_rtn_output_error(shape, scheme, act_order):
    w, x = layer(*shape)
    result = gptq_quantize(w, hessian(x), scheme, block_size=32, act_order=act_order)
    rtn, _, _ = quantize_dequantize(w, scheme)
    assert output_error(x, w, result.weight) < 0.8 * output_error(x, w, rtn)


@pytest.mark.parametrize("shape, scheme", SCHEMES, ids=IDS)
@pytest.mark.parametrize("act_order", [False, True], ids=["natural", "act-order"])
def test_stored_grid_reproduces_gptq_weights_exactly(shape, scheme, act_order):
    w, x = layer(*shape, seed=1)
    r = gptq_quantize(w, hessian(x), scheme, block_size=32, act_order=act_order)
    q = quantize(r.weight, r.scale, r.zero, scheme)
    assert int(q.min()) >= scheme.qmin and int(q.max()) <= scheme.qmax
    if scheme.symmetric and scheme.granularity != "tensor":
        assert int(q.min()) == scheme.qmin  # GPTQ's groups take primitives' whole grid too
    assert torch.equal(dequantize(q, r.scale, r.zero, scheme), r.weight)


def test_block_size_does_not_change_the_result():
    w, x = layer(16, 100, seed=2)
    scheme = QuantScheme(4, True, "group", 16)
    a = gptq_quantize(w, hessian(x), scheme, block_size=100).weight
    b = gptq_quantize(w, hessian(x), scheme, block_size=7).weight
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_dead_columns_quantize_to_zero():
    w, x = layer(16, 64, seed=3)
    x[:, [5, 40]] = 0.0  # these inputs never fire
    r = gptq_quantize(w, hessian(x), QuantScheme(4, True, "group", 16), act_order=True)
    assert torch.all(r.weight[:, [5, 40]] == 0)
    assert torch.isfinite(r.weight).all()


@pytest.mark.parametrize("bits", range(3, 9))
def test_every_bit_width_from_3_beats_rtn(bits):
    w, x = layer(24, 64, seed=bits)
    scheme = QuantScheme(bits, True, "group", 32)
    r = gptq_quantize(w, hessian(x), scheme)
    rtn, _, _ = quantize_dequantize(w, scheme)
    assert output_error(x, w, r.weight) < output_error(x, w, rtn)


def test_identity_hessian_is_plain_rounding_for_per_channel_grids():
    # With H = I no column informs another, so GPTQ must reduce to round-to-nearest.
    w, _ = layer(8, 32, seed=4)
    scheme = QuantScheme(4, True, "channel")
    r = gptq_quantize(w, torch.eye(32, dtype=torch.float64), scheme, damp=1e-6)
    torch.testing.assert_close(r.weight, quantize_dequantize(w, scheme)[0])


def test_two_bit_grid_is_exact_and_finite():
    # At 2 bits (grid {-2, -1, 0, 1}) greedy compensation is not guaranteed to beat RTN; it must stay valid.
    w, x = layer(24, 64, seed=2)
    scheme = QuantScheme(2, True, "group", 32)
    r = gptq_quantize(w, hessian(x), scheme)
    assert torch.isfinite(r.weight).all()
    assert torch.equal(dequantize(quantize(r.weight, r.scale, r.zero, scheme), r.scale, r.zero, scheme), r.weight)
