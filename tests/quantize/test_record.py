"""QuantRecords: weights on their record's grid pack bit-exactly; a weight changed after quantization is
re-quantized with a warning naming it, and the compress report says so."""

import warnings

import pytest
import torch

import slimkit
from slimkit.export.int_weights import integer_weights
from slimkit.models.bundle import ModelBundle
from slimkit.pipeline import _notes
from slimkit.quantize.pack_method import PackConfig
from slimkit.quantize.packed import packed_modules
from slimkit.quantize.record import (
    OffGridWeightWarning,
    clear_quant_records,
    off_grid_weights,
    quant_records,
    requantize_with_record,
)
from tests._models import tiny_llama

UP = "model.layers.1.mlp.up_proj"


def _int4_llama():
    model = tiny_llama()
    slimkit.apply(model, slimkit.RTNConfig(bits=4, granularity="group", group_size=32))
    return model


def _nudge(model, name, fraction=0.3):
    """A fine-tuning step after quantization: move the weight by ``fraction`` of a step (std)."""
    weight = model.get_parameter(f"{name}.weight")
    torch.manual_seed(0)
    with torch.no_grad():
        weight.add_(torch.randn_like(weight) * fraction * quant_records(model)[f"{name}.weight"].scale.mean())


def test_packing_weights_on_their_grid_is_bit_exact_and_silent():
    model = _int4_llama()
    weights = {name: model.get_parameter(name).detach().clone() for name in quant_records(model)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", OffGridWeightWarning)
        slimkit.apply(model, PackConfig(activation_dtype="float32"))
    for path, module in packed_modules(model).items():
        assert torch.equal(module.dequantized_weight(), weights[f"{path}.weight"])


def test_packing_a_changed_weight_requantizes_it_and_names_the_layer():
    model = _int4_llama()
    _nudge(model, UP)
    record = quant_records(model)[f"{UP}.weight"]
    tuned = model.get_parameter(f"{UP}.weight").detach().clone()
    with pytest.warns(OffGridWeightWarning, match=rf"{UP}.weight: .*relative RMS error") as caught:
        slimkit.apply(model, PackConfig(activation_dtype="float32"))
    assert len(caught) == 1
    packed = packed_modules(model)[UP].dequantized_weight()
    q, drift = requantize_with_record(tuned, record)
    assert drift is not None and drift.changed > 0
    assert drift.relative_rms == pytest.approx(float((packed - tuned).double().norm() / tuned.double().norm()))
    assert drift.max_abs == pytest.approx(float((packed - tuned).abs().max()))


def test_tiny_float_noise_is_on_the_grid_but_a_real_change_is_not():
    model = _int4_llama()
    name = f"{UP}.weight"
    record = quant_records(model)[name]
    w = model.get_parameter(name).detach()
    assert requantize_with_record(w * (1 + 1e-7), record)[1] is None  # last-ulp noise: still on the grid
    changed = w.clone()
    changed[0, 0] += 0.2 * float(record.scale[0, 0])  # one value moved by a fifth of a step
    drift = requantize_with_record(changed, record)[1]
    assert drift is not None and drift.changed == 1 and drift.max_abs == pytest.approx(0.2 * float(record.scale[0, 0]))


def test_the_compress_report_notes_weights_that_left_their_grid():
    model = _int4_llama()
    assert not off_grid_weights(model)
    assert not any("re-quantized" in note for note in _notes(ModelBundle(model, "causal-lm", "t")))
    _nudge(model, UP)
    notes = _notes(ModelBundle(model, "causal-lm", "t"))
    assert set(off_grid_weights(model)) == {f"{UP}.weight"}
    assert any("1 quantized weights changed after quantization" in n and f"{UP}.weight" in n for n in notes)


def test_restoring_float_weights_and_clearing_records_leaves_no_stale_integers():
    """load_state_dict replaces values only: without clearing, an export would still read the old grids."""
    model = tiny_llama()
    floats = {k: v.clone() for k, v in model.state_dict().items()}
    slimkit.apply(model, slimkit.RTNConfig(bits=4, granularity="group", group_size=32))
    recorded = len(quant_records(model))
    assert recorded > 0
    model.load_state_dict(floats)
    assert len(integer_weights(model)) == recorded  # stale: these integers are no longer the weights
    assert clear_quant_records(model) == recorded
    assert quant_records(model) == {} and integer_weights(model) == {}
