"""The kernel probe: per-call dequantization computes the record's weight, the probe keeps the faster path
(measured), and a packed layer's routes change speed, never the weights it stands for."""

import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.quantize import kernel_probe
from slimkit.quantize.dequant_call import dequant_layout, dequantize_per_call, supports_per_call
from slimkit.quantize.kernel_probe import KERNEL, LayerRoutes, best_times, probe_routes
from slimkit.quantize.packed import Int4WeightLinear, Int8DynamicLinear, Int8WeightLinear
from slimkit.quantize.packing import pack_bits
from slimkit.quantize.primitives import QuantScheme, compute_qparams, dequantize, quantize

LAYERS = [
    (Int4WeightLinear, QuantScheme(4, True, "group", 64), (256, 576)),
    (Int4WeightLinear, QuantScheme(4, False, "group", 128), (192, 576)),  # ragged last group, affine
    (Int8WeightLinear, QuantScheme(8, True, "channel"), (256, 512)),
    (Int8DynamicLinear, QuantScheme(8, True, "channel"), (256, 512)),
]
IDS = ["int4-g64", "int4-affine-g128-ragged", "int8-weight", "int8-dynamic"]


def quantized(shape, scheme, seed=0):
    torch.manual_seed(seed)
    w = torch.randn(*shape)
    scale, zero = compute_qparams(w, scheme)
    return quantize(w, scale, zero, scheme), scale, zero


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([4, 8]), symmetric=st.booleans(), out=st.integers(1, 24), cols=st.integers(1, 150),
       granularity=st.sampled_from(["group", "channel", "tensor"]), group=st.sampled_from([8, 32, 48, 64, 128]))
def test_per_call_dequantization_is_the_records_float32_weight_exactly(bits, symmetric, out, cols, granularity,
                                                                       group):
    scheme = QuantScheme(bits, symmetric, granularity, group if granularity == "group" else None)
    if not supports_per_call(scheme, out, cols):
        assert bits == 4 and out * cols % 2  # only an odd count of 4-bit codes leaves a half byte
        return
    q, scale, zero = quantized((out, cols), scheme)
    layout = dequant_layout(scale, zero.float(), scheme, out, cols)
    got = dequantize_per_call(pack_bits(scheme.codes(q), bits), layout, torch.float32)
    assert torch.equal(got, dequantize(q, scale, zero.float(), scheme))


@pytest.mark.parametrize(("times", "expected"), [
    ({KERNEL: 1.0, "dequant-float32": 0.5, "float": 0.4}, "dequant-float32"),
    ({KERNEL: 1.0, "dequant-float32": 0.95, "float": 0.4}, KERNEL),  # within the margin: keep the kernel
    ({KERNEL: 0.3, "dequant-float32": 0.5, "float": 0.4}, KERNEL),
    ({KERNEL: 1.0, "dequant-float32": 0.8, "dequant-bfloat16": 0.5, "float": 0.4}, "dequant-bfloat16"),
], ids=["dequant-faster", "near-tie", "kernel-faster", "bf16-fastest"])
def test_the_choice_leaves_the_kernel_only_for_a_clearly_faster_path(times, expected):
    assert kernel_probe._fastest(times) == expected


def test_probe_routes_measures_which_path_is_faster():
    def slow(x):
        time.sleep(2e-3)
        return x

    routes = probe_routes({KERNEL: slow, "dequant-float32": lambda x: x}, in_features=8, out_features=8)
    assert (routes.few_rows, routes.many_rows) == ("dequant-float32", "dequant-float32")
    assert routes.ms["few"][KERNEL] >= 2.0 and routes.ms["few"]["dequant-float32"] < 1.0
    routes = probe_routes({KERNEL: lambda x: x, "dequant-float32": slow}, in_features=8, out_features=8)
    assert (routes.few_rows, routes.many_rows) == (KERNEL, KERNEL)
    assert routes.route(1) == KERNEL and routes.float_ratio("few") is not None


@pytest.mark.parametrize(("cls", "scheme", "shape"), LAYERS, ids=IDS)
def test_every_route_computes_the_same_layer(cls, scheme, shape):
    q, scale, zero = quantized(shape, scheme)
    layer = cls.from_integers(q, scale, zero, scheme, torch.randn(shape[0]))
    layer._dequant = dequant_layout(layer.scale, layer.zero_point(), scheme, *shape)
    x = torch.randn(kernel_probe.MANY_ROWS_FROM, shape[1])
    reference = F.linear(x, layer.dequantized_weight(), layer.bias)
    kernel_rows, kernel_row = layer(x), layer(x[:1])  # the kernel: bf16 compute or int8 activations
    assert (kernel_rows - reference).norm() / reference.norm() < 2e-2
    layer.routes = LayerRoutes(few_rows=KERNEL, many_rows="dequant-float32")
    torch.testing.assert_close(layer(x), reference, rtol=1e-5, atol=1e-5)  # the record's weight in float32
    assert torch.equal(layer(x[:1]), kernel_row)  # one row still takes the kernel


@pytest.mark.kernel_probe
@pytest.mark.parametrize(("cls", "scheme", "shape"), LAYERS, ids=IDS)
def test_the_probe_never_keeps_a_kernel_slower_than_the_float_path(cls, scheme, shape):
    """Timed: after the probe, the chosen path is re-measured against dequantize-to-float32 + GEMM."""
    q, scale, zero = quantized(shape, scheme)
    layer = cls.from_integers(q, scale, zero, scheme, None)
    assert layer.routes.ms, "the probe ran when the layer was built"
    dequant = dequant_layout(layer.scale, layer.zero_point(), scheme, *shape)
    float_path = {"float": lambda x: F.linear(x, dequantize_per_call(layer.qdata, dequant, torch.float32))}
    for rows in (1, kernel_probe.MANY_ROWS):
        times = best_times({"chosen": layer, **float_path}, torch.randn(rows, shape[1]))
        # margin 1.1 plus timing noise of a shared 2-core machine
        assert times["chosen"] <= 1.5 * times["float"], (rows, layer.routes, times)


@pytest.mark.kernel_probe
def test_the_probe_runs_once_per_shape_and_says_what_it_chose():
    scheme, shape = QuantScheme(4, True, "group", 64), (128, 256)
    first = Int4WeightLinear.from_integers(*quantized(shape, scheme), scheme, None)
    second = Int4WeightLinear.from_integers(*quantized(shape, scheme, seed=1), scheme, None)
    assert second.routes is first.routes  # cached: the same shape is not timed twice in a process
    assert set(first.routes.ms) == {"few", "many"} and "float" in first.routes.ms["many"]
    assert set(first.routes.summary()) == {"1 row", f"{kernel_probe.MANY_ROWS} rows"}
    if first.routes.describe():
        assert first.compute.endswith(first.routes.describe())


def test_with_the_probe_off_every_call_takes_the_kernel():
    scheme, shape = QuantScheme(4, True, "group", 64), (128, 256)
    layer = Int4WeightLinear.from_integers(*quantized(shape, scheme), scheme, None)
    assert layer.routes == LayerRoutes() and layer.compute == "int4 weights, bf16 compute (int4 kernel)"
