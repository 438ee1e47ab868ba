"""Real pretrained models shipped in PyPI packages: the acceptance paths a user runs."""

import json
import subprocess
import sys

import pytest
import torch

import slimkit
from slimkit.data.spec import DataSpec
from slimkit.data.text import documents, sentences
from slimkit.export.slimkit_format import load_slimkit_dir, save
from slimkit.models import load_model

pytestmark = pytest.mark.real_model


def run_cli(*args):
    result = subprocess.run([sys.executable, "-m", "slimkit", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_smollm2_int8_cli_compress_then_eval(tmp_path):
    out = tmp_path / "int8"
    run_cli("compress", "smollm2-135m", "--recipe", "recipes/int8-rtn.yaml", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    before, after = report["before"], report["after"]
    assert after["value"] == pytest.approx(before["value"], rel=0.01)
    assert after["size_bytes"] < 0.45 * before["size_bytes"]  # int8 decoder Linears, fp32 embeddings
    evaluated = json.loads(run_cli("eval", str(out), "--data", "pydoc", "--json", "--no-latency").splitlines()[-1])
    assert evaluated["metric"] == "perplexity"
    assert evaluated["value"] == pytest.approx(before["value"], rel=0.01)
    assert evaluated["size_bytes"] < before["size_bytes"] and evaluated["params"] == before["params"]


def test_smollm2_reload_gives_identical_logits(tmp_path):
    bundle = load_model("smollm2-135m")
    slimkit.apply(bundle.model, slimkit.RTNConfig(bits=4, granularity="group", group_size=128))  # ragged 576
    ids = bundle.tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = bundle.model(input_ids=ids).logits
    save(bundle, tmp_path / "int4")
    loaded = load_slimkit_dir(tmp_path / "int4")
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, expected)
    assert loaded.tokenizer("fox")["input_ids"] == bundle.tokenizer("fox")["input_ids"]


def test_minilm_int8_keeps_embeddings_and_round_trips(tmp_path):
    bundle = load_model("minilm-l6")
    texts = sentences(documents(DataSpec("pydoc"), "eval"), 64)
    reference = bundle.model.encode(texts, convert_to_tensor=True)
    slimkit.apply(bundle.model, slimkit.RTNConfig(bits=8))
    quantized = bundle.model.encode(texts, convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(reference, quantized).mean()
    assert cosine > 0.99
    save(bundle, tmp_path / "minilm")
    loaded = load_slimkit_dir(tmp_path / "minilm")
    assert loaded.kind == "sentence-transformer"
    assert torch.equal(loaded.model.encode(texts, convert_to_tensor=True), quantized)


def test_smollm2_qat_recipe_trains_on_text_and_stays_close(tmp_path):
    recipe = tmp_path / "qat.yaml"
    recipe.write_text("version: 1\nsteps:\n  - {method: quant.qat, bits: 8, targets: {include: ['*.mlp.*']}}\n"
                      "train: {samples: 4, batch_size: 2, lr: 1.0e-5}\n"
                      "eval: {windows: 2, seq_len: 128, latency: {enabled: false}}\n")
    out = tmp_path / "qat"
    run_cli("compress", "smollm2-135m", "--recipe", str(recipe), "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    stats = report["steps"][0]["stats"]
    assert stats["train_steps"] == 2 and stats["train_progress_reached"] == 1.0 and stats["layers"] == 90
    assert report["after"]["value"] == pytest.approx(report["before"]["value"], rel=0.05)
    assert report["after"]["size_bytes"] < report["before"]["size_bytes"]
