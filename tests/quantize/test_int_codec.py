"""The int codec stores a quantized weight's own integers, and says so when a weight has left its grid."""

import warnings

import pytest
import torch

import slimkit
from slimkit.export.codecs import compress_state_dict, decompress_state_dict
from slimkit.quantize.record import OffGridWeightWarning, quant_records
from tests._models import tiny_llama

UP = "model.layers.0.mlp.up_proj.weight"


def _quantized_llama(dtype=torch.float32):
    model = tiny_llama()
    slimkit.apply(model, slimkit.RTNConfig(bits=4, granularity="group", group_size=32))
    return model.to(dtype)


def _round_trip(model):
    tensors, header = compress_state_dict(model.state_dict(), quant_records(model))
    return decompress_state_dict(tensors, header)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16-after-quantization"])
def test_weights_on_their_grid_are_stored_bit_exactly_without_a_warning(dtype):
    model = _quantized_llama(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OffGridWeightWarning)
        state = _round_trip(model)
    for name in quant_records(model):
        assert torch.equal(state[name], model.get_parameter(name).data)


def test_a_weight_changed_after_quantization_is_requantized_with_a_warning_naming_it_and_the_error():
    model = _quantized_llama()
    weight = model.get_parameter(UP)
    torch.manual_seed(0)
    with torch.no_grad():  # a fine-tuning step after quantization
        weight.add_(torch.randn_like(weight) * 0.3 * quant_records(model)[UP].scale.mean())
    tuned = weight.detach().clone()
    with pytest.warns(OffGridWeightWarning) as caught:
        state = _round_trip(model)
    assert len(caught) == 1  # only the changed layer
    message = str(caught[0].message)
    delta = (state[UP] - tuned).double()
    relative, largest = float(delta.norm() / tuned.double().norm()), float(delta.abs().max())
    assert UP in message and f"relative RMS error {relative:.3g}" in message
    assert f"max abs change {largest:.3g}" in message
    rec = quant_records(model)[UP]
    on_grid = torch.round(state[UP] / rec.scale.repeat_interleave(32, dim=1))
    assert torch.equal(state[UP], on_grid * rec.scale.repeat_interleave(32, dim=1))  # stored on the grid
