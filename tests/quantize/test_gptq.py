"""quant.gptq end to end on a tiny Llama: apply with a forward loop, records that export packed
integers, a recipe round trip (compress → save → load → same logits) and config validation."""

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import slimkit
from slimkit.export.slimkit_format import load_slimkit_dir, save
from slimkit.models.bundle import ModelBundle
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.primitives import dequantize, quantize
from slimkit.quantize.record import quant_records
from slimkit.quantize.rtn import RTNConfig
from slimkit.recipe import load_recipe
from tests._models import tiny_llama, token_batches

ROOT = Path(__file__).resolve().parents[2]


def loop_over(ids):
    def loop(model):
        for batch in ids.split(2):
            model(input_ids=batch)
    return loop


def logits_error(model, reference, ids):
    with torch.no_grad():
        return float((model(input_ids=ids).logits - reference(input_ids=ids).logits).pow(2).mean())


def test_apply_quantizes_every_decoder_linear_with_exact_records():
    model, ids = tiny_llama(), token_batches(n=8)
    report = slimkit.apply(model, GPTQConfig(bits=4, group_size=24), loop_over(ids))  # 64, 96: ragged
    records = quant_records(model)
    assert report.stats["linears"] == 14 and len(records) == 14
    assert "lm_head.weight" not in records
    for name, rec in records.items():
        w = model.get_parameter(name).data
        assert torch.equal(dequantize(quantize(w, rec.scale, rec.zero, rec.scheme), rec.scale, rec.zero, rec.scheme), w)


def test_gptq_model_is_closer_to_float_than_rtn_on_calibration_text():
    ids = token_batches(n=8, seq_len=48)
    reference, gptq, rtn = tiny_llama(), tiny_llama(), tiny_llama()
    slimkit.apply(gptq, GPTQConfig(bits=3, group_size=32), loop_over(ids))
    slimkit.apply(rtn, RTNConfig(bits=3, granularity="group", group_size=32))
    assert logits_error(gptq, reference, ids) < logits_error(rtn, reference, ids)


def test_recipe_round_trip_gives_the_same_logits(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "gptq-int4-g64.yaml")
    bundle, ids = ModelBundle(tiny_llama(), "causal-lm", "tiny-llama"), token_batches(n=4)
    for step in recipe.steps:
        slimkit.apply(bundle.model, step, loop_over(ids))
    with torch.no_grad():
        expected = bundle.model(input_ids=ids).logits
    save(bundle, tmp_path / "out")
    loaded = load_slimkit_dir(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, expected)
    assert set(quant_records(loaded.model)) == set(quant_records(bundle.model))


def test_needs_a_forward_loop():
    with pytest.raises(ValueError, match="needs calibration data"):
        slimkit.apply(tiny_llama(), GPTQConfig())


@pytest.mark.parametrize("fields", [{"granularity": "channel"}, {"bits": 9}, {"damp": 0.0}, {"act_order": "maybe"}],
                         ids=["channel-with-group-size", "bits-9", "no-damp", "bad-bool"])
def test_invalid_configs_are_refused(fields):
    with pytest.raises(ValidationError):
        GPTQConfig(**fields)
