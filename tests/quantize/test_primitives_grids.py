"""Extended quantization grids: 1-bit affine, codes ↔ levels for packing, broadcast helpers, odd shapes."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from slimkit.quantize.packing import pack_bits, unpack_bits
from slimkit.quantize.primitives import (
    QuantScheme,
    broadcast_qparams,
    compute_qparams,
    dequantize,
    numel_per_qparam,
    quantize,
)

int_schemes = st.one_of(
    st.builds(QuantScheme, bits=st.integers(1, 8), symmetric=st.just(False),
              granularity=st.sampled_from(["tensor", "channel", "group"]), group_size=st.sampled_from([7, 16, 45])),
    st.builds(QuantScheme, bits=st.integers(2, 8), symmetric=st.just(True),
              granularity=st.sampled_from(["tensor", "channel", "group"]), group_size=st.sampled_from([7, 16, 45])),
)


@settings(max_examples=80, deadline=None)
@given(scheme=int_schemes, seed=st.integers(0, 10_000), spread=st.floats(1e-2, 1e2))
def test_error_is_at_most_half_a_step_on_83x45(scheme, seed, spread):
    w = torch.randn(83, 45, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * spread
    scale, zero = compute_qparams(w, scheme)
    q = quantize(w, scale, zero, scheme)
    assert scheme.qmin <= int(q.min()) and int(q.max()) <= scheme.qmax
    step = broadcast_qparams(scale.double(), scheme, 45)  # (83, 45)
    err = (dequantize(q, scale, zero, scheme).double() - w).abs()
    assert torch.all(err <= step / 2 * (1 + 1e-5) + 1e-6 * spread)  # float32 dequantized values


@settings(max_examples=40, deadline=None)
@given(scheme=int_schemes, seed=st.integers(0, 10_000))
def test_codes_pack_and_come_back_as_the_same_levels(scheme, seed):
    w = torch.randn(31, 45, generator=torch.Generator().manual_seed(seed))
    scale, zero = compute_qparams(w, scheme)
    q = quantize(w, scale, zero, scheme)
    codes = scheme.codes(q)
    assert int(codes.min()) >= 0 and int(codes.max()) < 2**scheme.bits
    back = scheme.levels(unpack_bits(pack_bits(codes, scheme.bits), scheme.bits, q.numel()).reshape(q.shape))
    assert torch.equal(back, q)


def test_one_bit_affine_keeps_zero_and_one_other_level():
    w = torch.rand(12, 20) + 0.1  # positive weights: levels {0, max}
    scheme = QuantScheme(1, symmetric=False)
    scale, zero = compute_qparams(w, scheme)
    w_hat = dequantize(quantize(w, scale, zero, scheme), scale, zero, scheme)
    for row, top in zip(w_hat, w.amax(dim=1), strict=True):
        others = [v for v in row.unique().tolist() if v != 0.0]
        assert others == [pytest.approx(float(top), rel=1e-6)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bits": 1, "symmetric": True}, "binary"),
    ({"bits": 2, "kind": "binary"}, "binary weights"),
    ({"bits": 2, "symmetric": False, "kind": "ternary"}, "ternary weights"),
], ids=["symmetric-1-bit", "binary-2-bits", "affine-ternary"])
def test_invalid_schemes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantScheme(**kwargs)


@pytest.mark.parametrize(("scheme", "expected"), [
    (QuantScheme(4, granularity="tensor"), 83 * 45),
    (QuantScheme(4, granularity="channel"), 45),
    (QuantScheme(4, granularity="group", group_size=16), 16),
], ids=["tensor", "channel", "group"])
def test_numel_per_qparam(scheme, expected):
    assert numel_per_qparam((83, 45), scheme) == expected
