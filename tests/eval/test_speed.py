"""``slimkit bench``: speed of one model or two side by side, with a warning wherever the model is slower."""

import json

import pytest
import torch
from typer.testing import CliRunner

import slimkit
from slimkit.cli import app
from slimkit.eval.speed import Speed, measure_speed, slower_warnings, speed_table
from slimkit.export.slimkit_format import save
from slimkit.models.bundle import ModelBundle
from slimkit.quantize.pack_method import PackConfig
from tests._models import lenet_bundle, tiny_llama


class ByteTokenizer:
    """Maps each character to an id below the tiny model's vocabulary."""

    def __call__(self, text, return_tensors="pt", add_special_tokens=False):
        return {"input_ids": torch.tensor([[ord(c) % 128 for c in text]])}


def test_slower_quantities_become_warnings_beyond_the_noise_band():
    reference = [Speed("decode", 20.0, "tok/s", True), Speed("latency batch1", 10.0, "ms", False)]
    measured = [Speed("decode", 15.0, "tok/s", True), Speed("latency batch1", 10.5, "ms", False)]
    warnings = slower_warnings("int4", measured, "fp32", reference)
    assert warnings == ["int4 is SLOWER than fp32 at decode: 15.0 vs 20.0 tok/s (1.33× slower) on this machine"]
    assert slower_warnings("x", reference, "y", reference) == []


def test_speed_table_puts_models_side_by_side_with_the_speedup():
    runs = [[Speed("decode", 30.0, "tok/s", True)], [Speed("decode", 20.0, "tok/s", True)]]
    lines = speed_table(["packed", "fp32"], runs)
    assert lines[0] == "| quantity | packed | fp32 | speedup |"
    assert lines[2] == "| decode | 30.0 tok/s | 20.0 tok/s | 1.50× |"


def test_causal_lm_speed_is_prefill_and_decode_tokens_per_second():
    bundle = ModelBundle(tiny_llama(), "causal-lm", "tiny", ByteTokenizer())
    speeds = measure_speed(bundle, prompt_len=16, new_tokens=4)
    assert [s.name for s in speeds] == ["prefill 16 tokens", "greedy decode 3 tokens"]
    assert all(s.value > 0 and s.higher_is_faster for s in speeds)


def test_bench_cli_compares_a_packed_model_with_its_original(tmp_path):
    original = save(lenet_bundle(), tmp_path / "fp32")
    packed = lenet_bundle()
    slimkit.apply(packed.model, PackConfig(kernel="int8-dynamic"))
    save(packed, tmp_path / "int8")
    result = CliRunner().invoke(app, ["bench", str(tmp_path / "int8"), "--compare", str(original), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload["models"]) == {str(tmp_path / "int8"), str(original)}
    assert set(payload["models"][str(original)]) == {"latency batch1", "latency batch8", "latency batch32"}
    assert isinstance(payload["warnings"], list)


def test_side_by_side_generation_times_every_model_and_keeps_its_greedy_tokens():
    from slimkit.eval.generation import measure_generation, measure_generation_side_by_side

    small, other = tiny_llama(), tiny_llama(layers=1, hidden=32)
    prompt = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(0))
    timings = measure_generation_side_by_side([small, other], prompt, new_tokens=6, rounds=2)
    assert len(timings) == 2 and all(t.decode_tokens_per_s > 0 and t.prompt_tokens == 12 for t in timings)
    for model, timing in zip([small, other], timings, strict=True):  # each timing belongs to its own model
        assert torch.equal(timing.tokens, measure_generation(model, prompt, new_tokens=6).tokens)


# --- issue 21 item 7: bench builds inputs from the model's own input shape -----------------------------


def test_bench_cli_times_a_64_input_mlp_on_inputs_of_its_own_width(tmp_path):
    from slimkit.models.zoo import build_architecture

    torch.save(build_architecture("mlp", {"in_features": 64, "hidden": [32], "classes": 3}).state_dict(),
               tmp_path / "w.pt")
    saved = save(lenet_bundle(in_features=64), tmp_path / "lenet64")
    for spec in (f"mlp[in_features=64,hidden=[32],classes=3]={tmp_path / 'w.pt'}", str(saved)):
        result = CliRunner().invoke(app, ["bench", spec, "--json"])
        assert result.exit_code == 0, result.output
        assert set(json.loads(result.stdout)["models"][spec]) == {"latency batch1", "latency batch8", "latency batch32"}


def test_bench_input_shapes_come_from_the_registry_or_the_first_linear():
    from slimkit.eval.speed import torch_benchmark_input
    from slimkit.models import torch_bundle
    from slimkit.models.zoo import build_architecture

    cnn = torch_bundle(build_architecture("small-cnn", {"in_channels": 3, "widths": [4], "image_size": 12}),
                       "small-cnn", {"in_channels": 3, "widths": [4], "image_size": 12})
    assert torch_benchmark_input(cnn, 8).shape == (8, 3, 12, 12)
    assert len(measure_speed(cnn)) == 3
    plain = torch_bundle(torch.nn.Sequential(torch.nn.Linear(12, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))
    assert torch_benchmark_input(plain, 2).shape == (2, 12)


def test_bench_of_a_convolution_without_a_known_image_size_is_a_clear_error():
    from slimkit.models import torch_bundle

    conv = torch_bundle(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()))
    with pytest.raises(ValueError, match=r"Sequential: cannot tell the input shape.*register_architecture"):
        measure_speed(conv)
