"""Streamed compression (one decoder layer in memory at a time) writes exactly what the in-memory run writes:
the same stored integers, masks and scales, the same codec entries, the same logits after loading; and
what it cannot do is refused before a weight is read."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import slimkit
from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict
from tests._models import pydoc_tokenizer, tiny_llama

EVAL = {"data": "pydoc", "windows": 2, "seq_len": 64, "latency": {"enabled": False}}
STEPS = {
    "gptq": [{"method": "quant.gptq", "bits": 4, "group_size": 32}],
    "rtn": [{"method": "quant.rtn", "bits": 4, "granularity": "group", "group_size": 16}],
    "awq": [{"method": "quant.awq", "bits": 4, "group_size": 32, "grid": 4, "clip_search": False}],
    "sparsegpt": [{"method": "prune.sparsegpt", "sparsity": 0.5}],
    "wanda+rtn": [{"method": "prune.wanda", "n": 2, "m": 4},
                  {"method": "quant.rtn", "bits": 8, "targets": {"include": ["*.mlp.*"]}}],
}


def recipe(steps):
    return recipe_from_dict({"version": 1, "steps": steps, "eval": EVAL}, "stream.yaml")


def save_model(directory, layers=3, dtype=torch.float32, seed=0):
    tokenizer = pydoc_tokenizer()
    model = tiny_llama(seed=seed, layers=layers, vocab=len(tokenizer)).to(dtype)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("tiny") / "model")


def assert_same_output(a, b):
    """Both outputs store the same tensors bit for bit, with the same codec entries, and load to the same logits."""
    sa, sb = load_file(str(a / "slimkit.safetensors")), load_file(str(b / "slimkit.safetensors"))
    assert sorted(sa) == sorted(sb)
    assert [k for k in sa if not torch.equal(sa[k], sb[k])] == []
    ha, hb = (json.loads((d / "slimkit.json").read_text()) for d in (a, b))
    assert list(ha["tensors"].items()) == list(hb["tensors"].items())
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb = (slimkit.load(str(d)).model(input_ids=ids).logits for d in (a, b))
    assert torch.equal(la, lb)
    return ha


@pytest.mark.parametrize("method", list(STEPS))
def test_streamed_output_is_bit_identical_to_the_in_memory_one(model_dir, tmp_path, method):
    r = recipe(STEPS[method])
    in_memory = compress(str(model_dir), r, tmp_path / "mem", calib_samples=4, calib_guard=False)
    streamed = compress(str(model_dir), r, tmp_path / "stream", calib_samples=4, stream=True)
    header = assert_same_output(tmp_path / "mem", tmp_path / "stream")
    codecs = {e["codec"] for e in header["tensors"].values()}
    assert codecs & {"int", "bitmask"}, "the recipe must have left packed or sparse tensors to compare"
    assert [s.method for s in streamed.steps] == [s.method for s in in_memory.steps]
    # stats summed over the layers agree with the whole-model run's
    for a, b in zip(in_memory.steps, streamed.steps, strict=True):
        for key in ("linears", "quantized_params", "pruned_params", "target_params", "layers"):
            assert a.stats.get(key) == b.stats.get(key), key
    assert streamed.before.value == pytest.approx(in_memory.before.value, rel=1e-5)
    assert streamed.after.value == pytest.approx(in_memory.after.value, rel=1e-5)
    assert streamed.after.sparsity == pytest.approx(in_memory.after.sparsity)
    assert any("Streamed: 3 decoder layers" in n for n in streamed.notes)
    assert not (tmp_path / "stream.stream").exists()  # the work directory is gone once the output is written


def test_activations_spilled_to_disk_and_a_bf16_checkpoint_give_the_same_output(tmp_path):
    model_dir = save_model(tmp_path / "bf16", dtype=torch.bfloat16)
    r = recipe(STEPS["gptq"])
    compress(str(model_dir), r, tmp_path / "mem", calib_samples=3, calib_guard=False)
    report = compress(str(model_dir), r, tmp_path / "spill", calib_samples=3, stream=True, spill=True)
    assert_same_output(tmp_path / "mem", tmp_path / "spill")
    assert any("kept on disk" in n for n in report.notes)


def test_the_report_has_the_memory_estimate_beside_the_measured_peak(model_dir, tmp_path):
    report = compress(str(model_dir), recipe(STEPS["rtn"]), tmp_path / "out", stream=True)
    line = next(n for n in report.notes if n.startswith("memory estimate"))
    assert "streamed" in line and "measured peak RSS" in line
    assert "memory estimate" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("steps, message", [
    ([{"method": "quant.gptq"}, {"method": "prune.wanda", "sparsity": 0.5}], "one calibrated step"),
    ([{"method": "prune.magnitude", "sparsity": 0.5}], "prune.magnitude cannot be streamed"),
    ([{"method": "quant.rtn", "bits": 8, "targets": {"exclude": []}}], "lm_head.weight outside the decoder layers"),
], ids=["two-calibrated-steps", "unsupported-method", "targets-the-head"])
def test_what_cannot_stream_is_refused_before_the_layers_are_read(model_dir, tmp_path, steps, message):
    with pytest.raises(ValueError, match=message):
        compress(str(model_dir), recipe(steps), tmp_path / "out", stream=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.stream").exists()


def test_a_training_recipe_and_a_non_llm_are_refused(tmp_path):
    from tests._models import tiny_bert

    train = recipe_from_dict({"version": 1, "steps": [{"method": "quant.qat", "bits": 8}], "train": {"epochs": 1}})
    with pytest.raises(ValueError, match="training steps .* whole model"):
        compress(str(save_model(tmp_path / "llm", layers=1)), train, tmp_path / "a", stream=True)
    tiny_bert().save_pretrained(tmp_path / "bert", safe_serialization=True)
    with pytest.raises(ValueError, match="streaming compresses causal LMs"):
        compress(str(tmp_path / "bert"), recipe(STEPS["rtn"]), tmp_path / "b", stream=True)
    with pytest.raises(ValueError, match="packaged model stored as GGUF cannot be streamed"):
        compress("smollm2-135m", recipe(STEPS["rtn"]), tmp_path / "c", stream=True)


def test_the_command_line_streams_and_refuses_a_job_over_max_memory(model_dir, tmp_path):
    from typer.testing import CliRunner

    from slimkit.cli import app

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(json.dumps({"version": 1, "steps": STEPS["rtn"], "eval": EVAL}))
    base = ["compress", str(model_dir), "--recipe", str(recipe_file), "--calib-samples", "2", "--stream"]
    refused = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a"), "--max-memory", "100MB"])
    assert refused.exit_code == 2 and "even streamed" in refused.output and "0.10 GB limit" in refused.output
    assert not (tmp_path / "a").exists()
    done = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b")])
    assert done.exit_code == 0, done.output
    assert "Streamed: 3 decoder layers" in (tmp_path / "b" / "report.md").read_text()


def test_a_step_whose_targets_match_nothing_is_refused_as_in_memory(model_dir, tmp_path):
    steps = [{"method": "quant.gptq", "targets": {"include": ["model.layers.9.*"]}}]
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        compress(str(model_dir), recipe(steps), tmp_path / "a", calib_samples=2, stream=True)
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        compress(str(model_dir), recipe(steps), tmp_path / "b", calib_samples=2, calib_guard=False)
