"""The CPU kernel wrappers: which shapes the int4 kernel takes, and that each kernel computes x · Wᵀ."""

import pytest
import torch

from slimkit.quantize import kernels


@pytest.mark.parametrize(("out", "inp", "width", "expected"), [
    (64, 576, 64, 64),      # SmolLM2 hidden 576 at group 64
    (64, 576, 128, 64),     # ragged g128 on 576 = 4 × 128 + 64: expressed exactly with kernel group 64
    (64, 576, 576, 64),     # per-channel: the largest kernel group dividing 576
    (32, 1536, 256, 256),
    (40, 64, 64, None),     # out not a multiple of 16
    (48, 545, 545, None),   # odd in_features
    (48, 80, 80, None),     # no kernel group divides 80 and 80 (80 % 32 != 0)
    (48, 96, 48, None),     # no kernel group divides a record group of 48
], ids=["576-g64", "576-g128-ragged", "576-channel", "1536-g256", "out40", "in545", "in80", "g48"])
def test_int4_kernel_group(out, inp, width, expected):
    assert kernels.int4_kernel_group(out, inp, width) == expected


def test_int4_weight_mm_matches_float_reference():
    torch.manual_seed(0)
    out, inp, group = 32, 128, 64
    u = torch.randint(0, 16, (out, inp))
    scale = torch.rand(inp // group, out) * 0.1 + 0.01  # (n_groups, out)
    zero = torch.randn(inp // group, out) * 0.05
    sz = torch.stack([scale, zero], dim=-1).to(torch.bfloat16)
    x = torch.randn(5, inp)
    y = kernels.int4_weight_mm(x, kernels.pack_int4_weight(u), group, sz)
    s, z = sz[..., 0].float().t().repeat_interleave(group, 1), sz[..., 1].float().t().repeat_interleave(group, 1)
    w = (u.float() - 8) * s + z  # (out, in)
    ref = x.bfloat16().double() @ w.double().t()
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.double(), ref, rtol=2e-2, atol=2e-2)


def test_int8_weight_mm_matches_float_reference():
    torch.manual_seed(0)
    w = torch.randint(-128, 128, (48, 80), dtype=torch.int8)
    scales = (torch.rand(48) * 0.01).bfloat16()
    x = torch.randn(3, 80)
    y = kernels.int8_weight_mm(x, w, scales)
    ref = x.bfloat16().double() @ (w.double() * scales.double()[:, None]).t()
    assert torch.allclose(y.double(), ref, rtol=2e-2, atol=2e-2)


# Without VNNI the u8 × s8 products saturate int16 (the reason reduce_range exists): full 8-bit activations
# are only accurate on CPUs that have it.
NEEDS_VNNI = pytest.mark.skipif(not kernels.cpu_has_vnni(), reason="8-bit activations saturate without VNNI")


def _sqnr_db(y, ref):
    return float(10 * torch.log10(ref.pow(2).sum() / (y.double() - ref).pow(2).sum()))


@pytest.mark.parametrize(("reduce_range", "min_db"), [pytest.param(False, 35, marks=NEEDS_VNNI), (True, 29)],
                         ids=["8-bit-vnni", "7-bit-no-vnni"])
@pytest.mark.parametrize("rows", [1, 7], ids=["decode", "batch"])
def test_dynamic_int8_is_close_to_float(reduce_range, min_db, rows):
    torch.manual_seed(0)
    w = torch.randint(-128, 128, (96, 200), dtype=torch.int8)  # the full grid, -128 included
    scales = torch.rand(96) * 0.01 + 0.001
    x = torch.randn(rows, 200)
    y = kernels.dynamic_int8_mm(x, kernels.prepack_dynamic_int8(w, scales), reduce_range)
    ref = x.double() @ (w.double() * scales.double()[:, None]).t()
    assert y.dtype == torch.float32 and _sqnr_db(y, ref) > min_db  # measured ~44 dB with 8 bits, ~38 with 7


@NEEDS_VNNI
def test_reduce_range_really_drops_a_bit_of_activation_precision():
    torch.manual_seed(1)
    w = torch.randint(-128, 128, (64, 256), dtype=torch.int8)
    packed = kernels.prepack_dynamic_int8(w, torch.full((64,), 0.01))
    x = torch.randn(16, 256)
    ref = x.double() @ (w.double() * 0.01).t()
    full, reduced = (_sqnr_db(kernels.dynamic_int8_mm(x, packed, r), ref) for r in (False, True))
    assert full > reduced + 3  # one bit fewer: ~6 dB


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx512_vnni": True}, True), ({"avx_vnni": True}, True), ({"amx_int8": True}, True),
    ({"avx512_f": True, "avx2": True}, False), ({}, False),
], ids=["avx512-vnni", "avx-vnni", "amx", "avx512-without-vnni", "nothing"])
def test_vnni_detection_reads_the_feature_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    assert kernels.cpu_has_vnni() is expected
    assert kernels.dynamic_int8_reduce_range() is not expected


def test_vnni_detection_agrees_with_proc_cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this machine")
    assert kernels.cpu_has_vnni() == bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def test_dynamic_int8_scales_each_token_so_a_loud_token_does_not_flatten_the_others():
    torch.manual_seed(0)
    w = torch.randint(-127, 128, (64, 128), dtype=torch.int8)
    scales = torch.full((64,), 0.01)
    packed = kernels.prepack_dynamic_int8(w, scales)
    x = torch.randn(6, 128)
    x[0] *= 1000.0  # an attention-sink-like token
    reduce_range = kernels.dynamic_int8_reduce_range()  # this CPU's choice: 8 bits with VNNI, 7 without
    tolerance = 0.04 if reduce_range else 0.02
    y = kernels.dynamic_int8_mm(x, packed, reduce_range)
    ref = x.double() @ (w.double() * scales.double()[:, None]).t()
    for row in range(6):  # every row keeps the precision of its own range (per tensor, rows 1..5 would be ~0)
        rel = (y[row].double() - ref[row]).norm() / ref[row].norm()
        assert rel < tolerance
    alone = torch.cat([kernels.dynamic_int8_mm(x[i:i + 1], packed, reduce_range) for i in range(6)])  # M = 1
    assert ((y - alone).norm(dim=1) / alone.norm(dim=1)).max() < tolerance


def test_int8_weight_kernel_refuses_widths_that_would_crash_it():
    assert kernels.int8_weight_kernel_fits(576) and not kernels.int8_weight_kernel_fits(72)
    with pytest.raises(ValueError, match="in_features % 16"):
        kernels.int8_weight_mm(torch.randn(1, 72), torch.zeros(8, 72, dtype=torch.int8), torch.ones(8).bfloat16())
