"""The memory guard: a job's peak is estimated from file headers alone, an impossible job is refused before a
weight is read, and a job that only fits streamed is streamed."""

from __future__ import annotations

import json
import struct

import pytest
import safetensors
from transformers import LlamaConfig

from slimkit.eval.evaluate import EvalConfig
from slimkit.memory import GB, estimate, model_shapes, parse_memory, plan_memory
from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict
from slimkit.stream.skeleton import build_skeleton
from tests.stream.test_pipeline import EVAL, STEPS, save_model

LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
            "architectures": ["LlamaForCausalLM"]}
GPTQ = recipe_from_dict({"version": 1, "steps": [{"method": "quant.gptq", "bits": 4, "group_size": 128}],
                         "eval": {"windows": 1, "seq_len": 512, "latency": {"enabled": False}}})


def headers_only_checkpoint(directory, **config):
    """A Hugging Face directory whose safetensors file declares every bf16 tensor of the model but stops right
    after its header: any attempt to read a weight fails."""
    directory.mkdir()
    cfg = LlamaConfig(**config)
    cfg.save_pretrained(directory)
    header, offset = {}, 0
    for name, t in build_skeleton(cfg).state_dict().items():
        nbytes = t.numel() * 2
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return directory, sum(t.numel() for t in build_skeleton(cfg).state_dict().values())


@pytest.fixture(scope="module")
def llama_7b(tmp_path_factory):
    return headers_only_checkpoint(tmp_path_factory.mktemp("7b") / "llama-7b", **LLAMA_7B)


def test_a_7b_checkpoint_is_sized_from_its_headers(llama_7b):
    directory, params = llama_7b
    shapes = model_shapes(str(directory))
    assert shapes is not None and shapes.params == params == 6_738_415_616
    assert len(shapes.layer_params) == 32 and shapes.hidden == 4096 and shapes.vocab == 32000
    cfg = EvalConfig(windows=1, seq_len=512)
    whole = estimate(shapes, GPTQ, calib_samples=4, eval_config=cfg, streamed=False)
    assert whole.parts["weights"] == params * 4 * 2 + params * 2  # float32, the guard's copy, the mapped file
    streamed = estimate(shapes, GPTQ, calib_samples=4, eval_config=cfg, streamed=True)
    layer = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    assert streamed.parts["weights"] == (2 * 32000 * 4096 + 4096) * 4 + 2 * layer * 4
    # float64 XᵀX: q/k/v share one input, gate/up another; o and down have their own
    assert streamed.parts["Hessians"] == (3 * 4096 ** 2 + 11008 ** 2) * 8
    assert 5 * GB < streamed.total < 16 * GB < 60 * GB < whole.total


def test_an_impossible_job_is_refused_before_any_weight_is_read(llama_7b, tmp_path, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("a weight was read")

    monkeypatch.setattr(safetensors, "safe_open", no_reading)
    monkeypatch.setattr("slimkit.pipeline.load_model", no_reading)
    with pytest.raises(ValueError, match=r"even streamed .* needs about .* GB .* more than the 4.00 GB limit"):
        compress(str(llama_7b[0]), GPTQ, tmp_path / "out", max_memory=4 * 10**9)
    with pytest.raises(ValueError, match=r"needs about .* in memory .* more than the 20.00 GB limit"):
        plan_memory(str(llama_7b[0]), recipe_from_dict({"version": 1, "steps": [{"method": "prune.magnitude",
                                                                                  "sparsity": 0.5}]}),
                    calib_samples=4, eval_config=GPTQ.eval, stream=False, max_memory=20 * 10**9)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.stream").exists()


def test_without_stream_a_job_too_large_in_memory_streams_when_that_fits(llama_7b, tmp_path):
    plan = plan_memory(str(llama_7b[0]), GPTQ, calib_samples=4, eval_config=GPTQ.eval, stream=False,
                       max_memory=24 * 2**30)
    assert plan.stream and not plan.spill and plan.in_memory is not None and plan.in_memory.total > 24 * 2**30
    assert "more than the 25.77 GB limit" in plan.reason
    # 2000 calibration windows of 512 tokens hold 16.8 GB of hidden states: only on disk does the job fit
    spilled = plan_memory(str(llama_7b[0]), GPTQ, calib_samples=2000, eval_config=GPTQ.eval, stream=True,
                          max_memory=24 * 2**30)
    assert spilled.stream and spilled.spill and spilled.estimate.mode == "streamed, activations on disk"
    model_dir = save_model(tmp_path / "tiny")
    recipe = recipe_from_dict({"version": 1, "steps": STEPS["gptq"], "eval": EVAL})
    tiny = plan_memory(str(model_dir), recipe, calib_samples=4, eval_config=recipe.eval, stream=False, max_memory=None)
    assert not tiny.stream and tiny.in_memory is not None
    streamed = plan_memory(str(model_dir), recipe, calib_samples=4, eval_config=recipe.eval, stream=True,
                           max_memory=None)
    between = (tiny.in_memory.total + streamed.estimate.total) // 2
    report = compress(str(model_dir), recipe, tmp_path / "out", calib_samples=4, max_memory=between)
    assert any(n.startswith("Streaming was chosen because in memory it needs") for n in report.notes)


def test_a_job_that_cannot_stream_says_why_when_it_does_not_fit(tmp_path):
    from tests._models import tiny_bert

    tiny_bert().save_pretrained(tmp_path / "bert", safe_serialization=True)
    with pytest.raises(ValueError, match="more than the 0.10 GB limit .* cannot stream instead: .*causal LMs"):
        plan_memory(str(tmp_path / "bert"), GPTQ, calib_samples=4, eval_config=GPTQ.eval, stream=False,
                    max_memory=10**8)


def test_max_memory_is_refused_for_a_model_without_an_estimate(tmp_path):
    from slimkit.export.slimkit_format import save
    from tests._models import tiny_llama_bundle

    save(tiny_llama_bundle(), tmp_path / "out")  # a slimkit output: no safetensors headers to estimate from
    with pytest.raises(ValueError, match="--max-memory: .* could not be honoured"):
        plan_memory(str(tmp_path / "out"), GPTQ, calib_samples=4, eval_config=GPTQ.eval, stream=False,
                    max_memory=10**8)
    plan = plan_memory(str(tmp_path / "out"), GPTQ, calib_samples=4, eval_config=GPTQ.eval, stream=False,
                       max_memory=None)  # without a limit it runs, and the report says there was no estimate
    assert plan.estimate is None and not plan.stream


@pytest.mark.parametrize("text, expected", [("16GB", 16 * 10**9), ("12GiB", 12 * 2**30), ("500MB", 5 * 10**8)])
def test_max_memory_sizes(text, expected):
    assert parse_memory(text) == expected
    with pytest.raises(ValueError, match="--max-memory"):
        parse_memory("lots")
