"""Streaming greedy text (``stream_text``, ``slimkit generate``): the streamed pieces are transformers' own greedy
continuation, and the command streams from original and compressed models and names what it is missing."""

import importlib.util

import torch
from typer.testing import CliRunner

import slimkit
from slimkit.cli import app
from slimkit.eval.generation import stream_text
from slimkit.export.slimkit_format import save
from slimkit.quantize.rtn import RTNConfig
from tests._models import tiny_llama_bundle

runner = CliRunner()
PROMPT = "The for statement is used to iterate over"


def test_streamed_pieces_are_transformers_greedy_continuation():
    bundle = tiny_llama_bundle()
    pieces: list[str] = []
    timing = stream_text(bundle.model, bundle.tokenizer, PROMPT, 20, pieces.append)
    ids = bundle.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = bundle.model.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1]:]
    assert timing.tokens[0].tolist() == expected.tolist()
    assert "".join(pieces) == bundle.tokenizer.decode(expected, skip_special_tokens=True).rstrip("\ufffd")
    assert len(pieces) > 1 and timing.prompt_tokens == ids.shape[1] and timing.new_tokens == 19
    assert timing.prefill_ms > 0 and timing.decode_tokens_per_s > 0


def test_compiled_streaming_writes_the_same_text():
    bundle = tiny_llama_bundle()
    eager: list[str] = []
    compiled: list[str] = []
    expected = stream_text(bundle.model, bundle.tokenizer, PROMPT, 16, eager.append)
    timing = stream_text(bundle.model, bundle.tokenizer, PROMPT, 16, compiled.append, compiled=True, backend="eager")
    assert torch.equal(timing.tokens, expected.tokens) and compiled == eager


def test_generation_stops_at_the_end_of_sequence_token():
    bundle = tiny_llama_bundle()
    first = stream_text(bundle.model, bundle.tokenizer, PROMPT, 5, lambda _: None).tokens[0, 2].item()
    bundle.tokenizer.eos_token = bundle.tokenizer.convert_ids_to_tokens(first)
    timing = stream_text(bundle.model, bundle.tokenizer, PROMPT, 50, lambda _: None)
    assert timing.tokens[0, -1].item() == first and timing.tokens.shape[1] <= 3


def test_cli_generate_streams_from_an_original_and_a_compressed_model(tmp_path):
    original = tiny_llama_bundle()
    save(original, tmp_path / "orig")
    slimkit.apply(original.model, RTNConfig(bits=4, granularity="group", group_size=32))
    save(original, tmp_path / "int4")
    for name in ("orig", "int4"):
        result = runner.invoke(app, ["generate", str(tmp_path / name), "--prompt", PROMPT, "--max-new-tokens", "12"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(PROMPT) and len(result.output.splitlines()[0]) > len(PROMPT)
        assert "[torch] 12 new tokens; prefill" in result.output and "decode" in result.output
        assert result.output.rstrip().endswith("tok/s")


def test_cli_generate_names_what_is_missing(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp"
                        else real_find_spec(name, *a))
    result = runner.invoke(app, ["generate", str(tmp_path / "m.gguf"), "--prompt", "x", "--runtime", "llama.cpp"])
    assert result.exit_code == 2 and "pip install llama-cpp-python" in result.output
    result = runner.invoke(app, ["generate", str(tmp_path / "m.gguf"), "--prompt", "x", "--runtime", "llama.cpp",
                                 "--compile"])
    assert result.exit_code == 2 and "--compile applies to --runtime torch" in result.output
    result = runner.invoke(app, ["generate", "x", "--prompt", "x", "--runtime", "onnx"])
    assert result.exit_code == 2 and "--runtime must be 'torch' or 'llama.cpp'" in result.output
