"""Packed layers hold the record's exact integers, compute x · Wᵀ with it, and rebuild bit-exactly from state."""

import copy

import pytest
import torch
import torch.nn.functional as F

from slimkit.quantize.packed import (
    DequantLinear,
    Int4WeightLinear,
    Int8DynamicLinear,
    Int8WeightLinear,
    packed_from_spec,
)
from slimkit.quantize.primitives import QuantScheme, compute_qparams, dequantize, quantize

CASES = [
    (Int4WeightLinear, QuantScheme(4, True, "group", 64), (64, 576)),
    (Int4WeightLinear, QuantScheme(4, False, "group", 128), (48, 576)),   # ragged last group, affine
    (Int4WeightLinear, QuantScheme(4, True, "channel"), (32, 96)),
    (Int8WeightLinear, QuantScheme(8, True, "channel"), (40, 80)),
    (Int8DynamicLinear, QuantScheme(8, True, "channel"), (40, 72)),
    (DequantLinear, QuantScheme(3, False, "group", 100), (830, 545)),     # odd shape, ragged, 3-bit
    (DequantLinear, QuantScheme(2, True, "tensor"), (17, 33)),
    (DequantLinear, QuantScheme(1, False, "channel"), (16, 30)),           # 1-bit affine
    (DequantLinear, QuantScheme(1, True, "channel", kind="binary"), (16, 30)),  # ±1 · scale
]
IDS = ["int4-g64", "int4-affine-g128-ragged", "int4-channel", "int8-weight", "int8-dynamic",
       "dequant-3bit-830x545", "dequant-2bit-tensor", "dequant-1bit-affine", "dequant-binary"]
# bf16 kernels round activations and scales to bf16 (~2^-8 relative); dynamic int8 quantizes activations.
TOLERANCE = {"int4-weight": 1.5e-2, "int8-weight": 1.5e-2, "int8-dynamic": 2e-2, "dequant": 1e-6}


def quantized(shape, scheme, seed=0):
    torch.manual_seed(seed)
    w = torch.randn(*shape)
    scale, zero = compute_qparams(w, scheme)
    return quantize(w, scale, zero, scheme), scale, zero


@pytest.mark.parametrize(("cls", "scheme", "shape"), CASES, ids=IDS)
def test_packed_layer_computes_the_records_weight(cls, scheme, shape):
    q, scale, zero = quantized(shape, scheme)
    if scheme.kind == "int" and scheme.symmetric and scheme.granularity != "tensor":
        assert int(q.min()) == scheme.qmin  # the whole grid: the kernels must handle -8 / -128 too
    bias = torch.randn(shape[0])
    layer = cls.from_integers(q, scale, zero, scheme, bias)
    assert torch.equal(layer.integers(), q)
    w_hat = dequantize(q, scale, zero, scheme)  # (out, in): exactly what the QuantRecord stands for
    assert torch.equal(layer.dequantized_weight(), w_hat)
    x = torch.randn(2, 3, shape[1])
    ref = F.linear(x.double(), w_hat.double(), bias.double())
    y = layer(x)
    assert y.shape == (2, 3, shape[0]) and y.dtype == torch.float32
    rel = (y.double() - ref).norm() / ref.norm()
    assert rel < TOLERANCE[cls.kernel]


@pytest.mark.parametrize(("cls", "scheme", "shape"), CASES, ids=IDS)
def test_packed_layer_rebuilds_bit_exactly_from_spec_and_state(cls, scheme, shape):
    layer = cls.from_integers(*quantized(shape, scheme), scheme, None)
    rebuilt = packed_from_spec(layer.spec())
    rebuilt.load_state_dict(layer.state_dict())
    x = torch.randn(4, shape[1])
    assert torch.equal(rebuilt(x), layer(x))
    assert set(layer.state_dict()) == {"qdata", "scale"} | ({"zero"} if not scheme.symmetric else set())


def test_packed_state_is_bit_packed_integers():
    scheme = QuantScheme(3, False, "group", 100)
    layer = DequantLinear.from_integers(*quantized((830, 545), scheme), scheme, None)
    assert layer.qdata.dtype == torch.uint8 and layer.qdata.numel() == (830 * 545 * 3 + 7) // 8
    assert layer.scale.shape == (830, 6) and layer.zero.dtype == torch.uint8


def test_to_bf16_keeps_integers_and_scales_exact():
    scheme = QuantScheme(4, True, "group", 64)
    q, scale, zero = quantized((64, 128), scheme)
    layer = Int4WeightLinear.from_integers(q, scale, zero, scheme, torch.randn(64))
    x = torch.randn(3, 128)
    before = layer(x.bfloat16())
    layer.to(torch.bfloat16)
    assert layer.scale.dtype == torch.float32 and torch.equal(layer.scale, scale)
    assert layer.bias.dtype == torch.bfloat16
    assert torch.allclose(layer(x.bfloat16()).float(), before.float(), atol=0.1)


def test_dequant_layer_runs_in_its_compute_dtype():
    scheme = QuantScheme(2, True, "channel")
    layer = DequantLinear.from_integers(*quantized((16, 24), scheme), scheme, None, compute_dtype=torch.bfloat16)
    assert layer._fallback_weight is not None and layer._fallback_weight.dtype == torch.bfloat16
    assert layer.compute.startswith("2-bit weights dequantized to bfloat16, then matmul (no integer kernel")
    assert layer(torch.randn(2, 24)).dtype == torch.float32  # output follows the input's dtype
    assert packed_from_spec(layer.spec()).compute_dtype == torch.bfloat16


def test_kernels_refuse_what_they_cannot_run_exactly():
    with pytest.raises(ValueError, match="int4-weight cannot run"):
        Int4WeightLinear.from_integers(*quantized((40, 64), QuantScheme(4)), QuantScheme(4), None)
    assert not Int8WeightLinear.supports(QuantScheme(8, False, "channel"), 16, 16)
    assert not Int8WeightLinear.supports(QuantScheme(8, True, "channel"), 16, 72)  # 72 % 16: kernel would crash
    assert not Int8DynamicLinear.supports(QuantScheme(8, True, "group", 32), 16, 64)
    with pytest.raises(ValueError, match="unknown packed kernel"):
        packed_from_spec({"kernel": "int5-magic"})


def test_install_packed_refuses_a_bad_float_dtype():
    from torch import nn

    from slimkit.quantize.packed import install_packed

    with pytest.raises(ValueError, match="not a float dtype"):
        install_packed(nn.Linear(4, 4), {"float_dtype": "int8", "modules": {}})


@pytest.mark.parametrize("vnni", [True, False], ids=["vnni", "no-vnni"])
def test_int8_dynamic_layer_uses_reduce_range_only_without_vnni(monkeypatch, vnni):
    from slimkit.quantize import kernels

    saturates = not kernels.cpu_has_vnni() and vnni  # 8-bit activations on a CPU without VNNI: int16 overflow
    monkeypatch.setattr(kernels, "cpu_has_vnni", lambda: vnni)
    scheme = QuantScheme(8, True, "channel")
    q, scale, zero = quantized((40, 72), scheme)
    layer = Int8DynamicLinear.from_integers(q, scale, zero, scheme, None)
    assert layer.reduce_range is (not vnni)
    x = torch.randn(5, 72)
    y = layer(x)
    assert torch.equal(y, kernels.dynamic_int8_mm(x, layer._packed, not vnni))  # the branch really taken
    assert not torch.equal(y, kernels.dynamic_int8_mm(x, layer._packed, vnni))
    ref = F.linear(x.double(), dequantize(q, scale, zero, scheme).double())
    error = (y.double() - ref).norm() / ref.norm()
    assert (error > TOLERANCE["int8-dynamic"]) if saturates else (error < TOLERANCE["int8-dynamic"])


@pytest.mark.parametrize(("cls", "scheme", "shape", "missing", "compute"), [
    (Int4WeightLinear, QuantScheme(4, True, "group", 64), (64, 128), "int4_kernel_available",
     "4-bit weights dequantized to bfloat16, then matmul (no int4 kernel for this layer on this machine)"),
    (Int8DynamicLinear, QuantScheme(8, True, "channel"), (40, 72), "dynamic_int8_available",
     "8-bit weights dequantized to float32, then matmul (no fbgemm/x86 quantized engine on this machine)"),
], ids=["int4-without-kernel", "int8-dynamic-without-fbgemm"])
def test_a_file_loaded_where_the_kernel_is_missing_runs_the_fallback_and_says_so(monkeypatch, cls, scheme, shape,
                                                                                 missing, compute):
    from slimkit.quantize import kernels

    q, scale, zero = quantized(shape, scheme)
    saved = cls.from_integers(q, scale, zero, scheme, None)
    assert not saved.falls_back and saved.spec()["compute"] == saved.compute
    monkeypatch.setattr(kernels, missing, lambda: False)  # the machine that loads the file
    loaded = packed_from_spec(saved.spec())
    loaded.load_state_dict(saved.state_dict())
    assert loaded.falls_back and loaded.compute == compute and loaded.spec()["kernel"] == cls.kernel
    x = torch.randn(3, shape[1])
    ref = F.linear(x.double(), dequantize(q, scale, zero, scheme).double())
    assert (loaded(x).double() - ref).norm() / ref.norm() < TOLERANCE["int4-weight"]


@pytest.mark.parametrize(("cls", "scheme", "shape", "compute"), [
    (Int4WeightLinear, QuantScheme(4, True, "group", 64), (64, 128), "int4 weights, bf16 compute (int4 kernel)"),
    (Int8WeightLinear, QuantScheme(8, True, "channel"), (40, 80),
     "int8 weights, bf16 compute (int8 weight-only kernel)"),
    (Int8DynamicLinear, QuantScheme(8, True, "channel"), (40, 72),
     "int8 dynamic: int8 activations and int8 weights, fbgemm"),
], ids=["int4", "int8-weight", "int8-dynamic"])
def test_kernels_name_the_path_they_compute_with(monkeypatch, cls, scheme, shape, compute):
    from slimkit.quantize import kernels

    monkeypatch.setattr(kernels, "cpu_has_vnni", lambda: True)
    layer = cls.from_integers(*quantized(shape, scheme), scheme, None)
    assert layer.compute == compute and not layer.falls_back



def test_a_compiled_dynamic_int8_layer_is_one_graph_calling_the_same_fbgemm_kernel():
    from torch._dynamo.utils import counters

    scheme = QuantScheme(8, True, "channel")
    layer = Int8DynamicLinear.from_integers(*quantized((40, 72), scheme), scheme, torch.randn(40))
    torch._dynamo.reset()
    counters.clear()
    copied = copy.deepcopy(layer)
    compiled = torch.compile(copied, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
    del layer  # the copy names its own packed weight, not the original's
    for rows in (1, 5):
        x = torch.randn(rows, 72)
        assert torch.equal(compiled(x), copied(x))
    assert not counters["graph_break"]
