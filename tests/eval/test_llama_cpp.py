"""llama.cpp as a runtime of ``slimkit eval`` / ``bench``: the same numbers as slimkit's PyTorch path on the same
weights, and clear errors without llama-cpp-python (an optional extra that compiles llama.cpp: the tests that
run llama.cpp are skipped where it is not installed, e.g. in CI)."""

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

import slimkit
from slimkit.cli import app
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.generation import timed_greedy_run
from slimkit.eval.metrics import perplexity
from slimkit.export.formats import export_model
from slimkit.quantize.rtn import RTNConfig
from tests._models import tiny_llama_bundle

runner = CliRunner()
needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (optional extra)")


def _exported(tmp_path, gguf: str | None):
    bundle = tiny_llama_bundle()
    if gguf:
        slimkit.apply(bundle.model, RTNConfig(gguf=gguf))
    export_model(bundle, "gguf", tmp_path / "m.gguf", {"unquantized": "f32", "embedding": "f32"})
    return bundle, tmp_path / "m.gguf"


def _windows(bundle, n=3, length=64):
    return token_windows(bundle.tokenizer, documents(parse_data_spec("pydoc"), "eval"), length, n)


@needs_llama_cpp
def test_llama_cpp_perplexity_and_greedy_tokens_match_pytorch_on_float_weights(tmp_path):
    from slimkit.eval.llama_cpp import LlamaCppRunner, llama_cpp_perplexity

    bundle, path = _exported(tmp_path, None)
    windows = _windows(bundle)
    with torch.no_grad():
        ours = perplexity(bundle.model, windows)
    theirs = llama_cpp_perplexity(path, windows, threads=1)
    assert abs(theirs / ours - 1) < 1e-3, (theirs, ours)
    prompt = windows[:1, :32]
    run = LlamaCppRunner(path, n_ctx=64, threads=1).greedy_run(prompt, 12)
    assert torch.equal(run.tokens, timed_greedy_run(bundle.model, prompt, 12).tokens)
    assert run.prompt_tokens == 32 and run.new_tokens == 11 and run.decode_tokens_per_s > 0


@needs_llama_cpp
def test_a_q8_0_file_scores_close_to_its_dequantized_weights(tmp_path):
    """llama.cpp multiplies Q8_0 weights with 8-bit activations, so a little of its perplexity differs."""
    from slimkit.eval.llama_cpp import llama_cpp_perplexity

    bundle, path = _exported(tmp_path, "q8_0")
    windows = _windows(bundle)
    with torch.no_grad():
        ours = perplexity(bundle.model, windows)
    assert abs(llama_cpp_perplexity(path, windows, threads=1) / ours - 1) < 0.01


@needs_llama_cpp
def test_cli_eval_and_bench_run_a_gguf_file_in_llama_cpp_beside_torch(tmp_path):
    bundle, path = _exported(tmp_path, "q8_0")
    slimkit.save(bundle, tmp_path / "torch-model")
    result = runner.invoke(app, ["eval", str(path), "--runtime", "llama.cpp", "--windows", "2", "--no-latency",
                                 "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["runtime"] == "llama.cpp" and payload["metric"] == "perplexity" and payload["value"] > 1
    assert payload["size_bytes"] == path.stat().st_size and payload["windows"] == 2
    assert payload["params"] == sum(p.numel() for p in bundle.model.parameters())
    assert "speed" not in payload
    result = runner.invoke(app, ["bench", str(path), "--runtime", "llama.cpp", "--compare",
                                 str(tmp_path / "torch-model"), "--prompt-len", "32", "--new-tokens", "8", "--json"])
    assert result.exit_code == 0, result.output
    models = json.loads(result.output.strip().splitlines()[-1])["models"]
    assert list(models) == [str(path), str(tmp_path / "torch-model")]
    assert all(s["value"] > 0 for m in models.values() for s in m.values())


def test_llama_cpp_runtime_errors_name_the_problem(tmp_path, monkeypatch):
    bundle = tiny_llama_bundle()
    slimkit.save(bundle, tmp_path / "torch-model")
    result = runner.invoke(app, ["eval", str(tmp_path / "torch-model"), "--runtime", "llama.cpp"])
    assert result.exit_code == 2 and "--runtime llama.cpp runs a .gguf file" in result.output
    result = runner.invoke(app, ["bench", str(tmp_path / "torch-model"), "--runtime", "onnx"])
    assert result.exit_code == 2 and "--runtime must be 'torch' or 'llama.cpp'" in result.output
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp"
                        else real_find_spec(name, *a))
    for command in (["eval", str(tmp_path / "m.gguf")], ["bench", str(tmp_path / "m.gguf")]):
        result = runner.invoke(app, [*command, "--runtime", "llama.cpp"])
        assert result.exit_code == 2 and "pip install llama-cpp-python" in result.output, result.output
