"""Round-to-nearest math: error bounds, grids, ragged groups and bit packing (property tests)."""

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from slimkit.quantize.packing import pack_bits, packed_nbytes, unpack_bits
from slimkit.quantize.primitives import (
    QuantScheme,
    compute_qparams,
    dequantize,
    quantize,
    quantize_dequantize,
)

shapes = st.tuples(st.integers(1, 40), st.integers(1, 90))
schemes = st.builds(
    QuantScheme,
    bits=st.integers(2, 8),
    symmetric=st.booleans(),
    granularity=st.sampled_from(["tensor", "channel", "group"]),
    group_size=st.sampled_from([1, 7, 16, 32, 64]),
)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, scheme=schemes, seed=st.integers(0, 10_000), spread=st.floats(1e-3, 1e3))
def test_dequantized_error_is_at_most_half_a_step(shape, scheme, seed, spread):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * spread
    scale, zero = compute_qparams(w, scheme)
    q = quantize(w, scale, zero, scheme)
    assert int(q.min()) >= scheme.qmin and int(q.max()) <= scheme.qmax
    width = scheme.group_width(shape[1])
    step = scale.double().repeat_interleave(width, dim=1)[:, : shape[1]] if scale.shape[1] > 1 else scale.double()
    err = (dequantize(q, scale, zero, scheme).double() - w).abs()
    assert torch.all(err <= step / 2 * (1 + 1e-5) + 1e-6 * spread)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, scheme=schemes, seed=st.integers(0, 10_000))
def test_quantize_is_idempotent_on_the_grid(shape, scheme, seed):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    w_hat, scale, zero = quantize_dequantize(w, scheme)
    again = dequantize(quantize(w_hat, scale, zero, scheme), scale, zero, scheme)
    assert torch.allclose(again, w_hat, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_zero_is_exact_in_affine_and_symmetric(bits):
    w = torch.randn(13, 29)
    w[:, ::3] = 0.0
    for symmetric in (True, False):
        w_hat, _, _ = quantize_dequantize(w, QuantScheme(bits, symmetric, "group", 8))
        assert torch.all(w_hat[:, ::3] == 0)


def test_ragged_last_group_gets_its_own_scale():
    w = torch.ones(2, 576)
    w[:, 512:] = 100.0  # the ragged last group (64 columns at group 128)
    scale, _ = compute_qparams(w, QuantScheme(4, True, "group", 128))
    assert scale.shape == (2, math.ceil(576 / 128))
    assert torch.allclose(scale[:, :4], torch.full((2, 4), 1 / 7))
    assert torch.allclose(scale[:, 4], torch.full((2,), 100 / 7))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="2-D"):
        compute_qparams(torch.randn(3, 4, 5), QuantScheme(8))
    with pytest.raises(ValueError, match="bits"):
        QuantScheme(9)
    with pytest.raises(ValueError, match="group_size"):
        QuantScheme(4, granularity="group")


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(0, 3000), seed=st.integers(0, 1000))
def test_bit_packing_round_trips_exactly(bits, n, seed):
    values = torch.randint(0, 2**bits, (n,), generator=torch.Generator().manual_seed(seed))
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(n, bits)
    assert torch.equal(unpack_bits(packed, bits, n).long(), values)


def test_packing_an_odd_matrix_and_rejecting_out_of_range():
    values = torch.randint(0, 16, (830, 545))
    assert torch.equal(unpack_bits(pack_bits(values, 4), 4, values.numel()).reshape(830, 545).long(), values)
    with pytest.raises(ValueError, match="out of range"):
        pack_bits(torch.tensor([16]), 4)
    with pytest.raises(ValueError, match="expected"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 4, 100)
