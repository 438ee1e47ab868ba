"""quant.static: W8A8 with calibrated activation ranges, carried by StaticQuantLinear through save/load."""

import pytest
import torch
from torch import nn

import slimkit
from slimkit.export.codecs import compress_state_dict, decompress_state_dict
from slimkit.export.slimkit_format import load_slimkit_dir, save
from slimkit.models.bundle import ModelBundle
from slimkit.quantize.activation import StaticQuantLinear, restore_static_quant_linears
from slimkit.quantize.kernels import cpu_has_vnni
from slimkit.quantize.primitives import QuantScheme, quantize_dequantize
from slimkit.quantize.record import quant_records
from slimkit.quantize.static import OneDNNInt8Linear, StaticQuantConfig, to_int8_execution
from tests._models import tiny_llama, token_batches
from tests.quantize._single_thread import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def _loop(ids):
    def loop(model):
        with torch.no_grad():
            for row in ids:
                model(input_ids=row[None])

    return loop


def _relative_error(out, ref):
    return float((out - ref).double().pow(2).mean() / ref.double().pow(2).mean())


def test_single_linear_matches_a_float64_w8a8_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(45, 83))
    x = torch.randn(16, 45) * 3
    slimkit.apply(model, StaticQuantConfig(activation_symmetric=True), lambda m: m(x))
    linear = model[0]
    assert isinstance(linear, StaticQuantLinear)
    scale = x.abs().max().double() / 127  # per-tensor symmetric min-max of the only batch
    assert torch.allclose(linear.input_scale.double(), scale.reshape(1), rtol=1e-6)
    x_q = torch.round(x.double() / scale).clamp(-128, 127) * scale
    w_q, _, _ = quantize_dequantize(linear.weight.data.double(), QuantScheme(8))
    ref = x_q @ w_q.T + linear.bias.double()
    assert torch.allclose(model(x).double(), ref, atol=1e-5)


@pytest.mark.parametrize("observer", ["minmax", "moving_average", "percentile", "mse"])
def test_w8a8_llama_stays_close_to_float_and_leaves_no_hooks(observer):
    model, ids = tiny_llama(), token_batches()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    report = slimkit.apply(model, StaticQuantConfig(observer=observer), _loop(ids))
    assert report.stats["linears"] == 14
    assert all(not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert _relative_error(model(input_ids=ids).logits, ref) < 2e-3
    assert sum(isinstance(m, StaticQuantLinear) for m in model.modules()) == 14
    assert len(quant_records(model)) == 14


def test_fewer_activation_bits_cost_more_error():
    ids = token_batches()
    errors = []
    for bits in (8, 4):
        model = tiny_llama()
        with torch.no_grad():
            ref = model(input_ids=ids).logits
        slimkit.apply(model, StaticQuantConfig(activation_bits=bits), _loop(ids))
        with torch.no_grad():
            errors.append(_relative_error(model(input_ids=ids).logits, ref))
    assert errors[1] > 4 * errors[0]


def test_state_dict_round_trip_rebuilds_the_w8a8_modules():
    model, ids = tiny_llama(), token_batches()
    slimkit.apply(model, StaticQuantConfig(observer="percentile"), _loop(ids))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    tensors, header = compress_state_dict(model.state_dict(), quant_records(model))
    assert header["model.layers.0.self_attn.q_proj.weight"]["bits"] == 8
    state, records = decompress_state_dict(tensors, header)
    fresh = tiny_llama(seed=1)
    assert restore_static_quant_linears(fresh, state) == 14
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, expected)


def test_slimkit_checkpoint_saves_and_loads_w8a8(tmp_path):
    bundle = ModelBundle(tiny_llama(), "causal-lm", "tiny-llama")
    ids = token_batches()
    slimkit.apply(bundle.model, StaticQuantConfig(), _loop(ids))
    with torch.no_grad():
        expected = bundle.model(input_ids=ids).logits
    save(bundle, tmp_path / "w8a8")
    loaded = load_slimkit_dir(tmp_path / "w8a8")
    assert isinstance(loaded.model.model.layers[1].mlp.down_proj, StaticQuantLinear)
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, expected)


def test_static_without_calibration_explains_itself():
    with pytest.raises(ValueError, match="needs calibration"):
        slimkit.apply(tiny_llama(), StaticQuantConfig())


@pytest.mark.parametrize("config", [StaticQuantConfig(), StaticQuantConfig(activation_symmetric=True)],
                         ids=["uint8-affine", "int8-symmetric"])
def test_onednn_int8_execution_matches_the_simulation(config):
    model, ids = tiny_llama(), token_batches()
    slimkit.apply(model, config, _loop(ids))
    simulated = {n: m for n, m in model.named_modules() if isinstance(m, StaticQuantLinear)}
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda _, a, n=n: inputs.__setitem__(n, a[0])) for n, m in simulated.items()]
    with torch.no_grad():
        simulated_logits = model(input_ids=ids).logits
    for h in hooks:
        h.remove()
    if not cpu_has_vnni():  # 8-bit activations would saturate int16 there: nothing is swapped, nothing changes
        assert to_int8_execution(model) == 0
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, simulated_logits)
        return
    assert to_int8_execution(model) == 14
    assert isinstance(model.model.layers[0].self_attn.q_proj, OneDNNInt8Linear)
    with torch.no_grad():
        for name, sim in simulated.items():  # each layer: the same integers, exact up to float32 summation order
            torch.testing.assert_close(model.get_submodule(name)(inputs[name]), sim(inputs[name]), rtol=0, atol=1e-5)
        # Through the whole model a 1e-7 difference can flip the rounding of a later activation by one step.
        assert _relative_error(model(input_ids=ids).logits, simulated_logits) < 1e-4


def test_per_channel_activation_ranges_round_trip():
    model, ids = tiny_llama(), token_batches()
    slimkit.apply(model, StaticQuantConfig(activation_per_channel=True, observer="mse"), _loop(ids))
    q_proj = model.model.layers[0].self_attn.q_proj
    assert q_proj.input_scale.shape == (64,)
    tensors, header = compress_state_dict(model.state_dict(), quant_records(model))
    state, _ = decompress_state_dict(tensors, header)
    fresh = tiny_llama(seed=3)
    restore_static_quant_linears(fresh, state)
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, model(input_ids=ids).logits)
    assert to_int8_execution(model) == 0  # per-channel activations cannot feed an int8 GEMM
