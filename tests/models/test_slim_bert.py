"""slimkit_bert: BERT with pruned heads / per-layer widths saves with save_pretrained and reloads with
from_pretrained (locally registered, and as remote code in a process without slimkit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import slimkit
from slimkit.models.bundle import ModelBundle
from slimkit.models.hf import register_slim_bert
from slimkit.models.slim_bert import SlimBertConfig, SlimBertModel, layer_sizes, to_slim_bert
from slimkit.prune.structured.method import StructuredPruneConfig
from tests._models import tiny_bert, token_batches


def tiny_bert_classifier(seed: int = 0) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128,
                        architectures=["BertForSequenceClassification"])
    config.num_labels = 3
    return BertForSequenceClassification(config).eval()


def _outputs(model: Any, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _kill_heads(model: Any, dead: list[list[int]], dead_ffn: list[int] | None = None) -> None:
    """Zero heads ``dead[i]`` (and the first ``dead_ffn[i]`` FFN channels) of layer ``i`` so a weight-norm
    threshold removes different counts per layer."""
    with torch.no_grad():
        for i, layer in enumerate(model.encoder.layer):
            s = layer.attention.self
            for h in dead[i]:
                rows = slice(h * 16, (h + 1) * 16)
                for proj in (s.query, s.key, s.value):
                    proj.weight[rows] = 0.0
                    proj.bias[rows] = 0.0
                layer.attention.output.dense.weight[:, rows] = 0.0
            if dead_ffn:
                layer.intermediate.dense.weight[: dead_ffn[i]] = 0.0
                layer.intermediate.dense.bias[: dead_ffn[i]] = 0.0
                layer.output.dense.weight[:, : dead_ffn[i]] = 0.0


def _uneven_bert() -> Any:
    """Layer 0 keeps 3 heads and 86 FFN channels, layer 1 keeps 1 head and 66 channels."""
    model: Any = tiny_bert()
    _kill_heads(model, [[1], [0, 2, 3]], [10, 30])
    for structure in ("heads", "ffn"):
        report = slimkit.apply(model, StructuredPruneConfig(structure=structure, threshold=1e-8))
        assert report.stats["config_updated"] is True
    assert layer_sizes(model) == (16, [3, 1], [86, 66])
    return model


def test_halved_heads_reload_with_auto_model(tmp_path: Path) -> None:
    from transformers import AutoModel

    model: Any = tiny_bert()
    report = slimkit.apply(model, StructuredPruneConfig(structure="heads", fraction=0.5))
    assert report.stats["config_updated"] is True and report.stats["kept_per_group"] == [2, 2]
    assert type(model) is SlimBertModel
    ids = token_batches(n=2, seq_len=10)
    expected = _outputs(model, ids)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "slimkit_bert" and saved["auto_map"]["AutoModel"] == "slim_bert.SlimBertModel"
    assert (saved["num_attention_heads"], saved["attention_head_size"], saved["heads_per_layer"]) == (2, 16, None)
    assert (tmp_path / "slim_bert.py").is_file()
    again = AutoModel.from_pretrained(tmp_path).eval()
    assert type(again) is SlimBertModel
    assert torch.equal(_outputs(again, ids), expected)


def test_uneven_heads_and_ffn_widths_reload_with_auto_model(tmp_path: Path) -> None:
    from transformers import AutoModel

    model = _uneven_bert()
    config = model.config
    assert isinstance(config, SlimBertConfig)
    assert (config.heads_per_layer, config.intermediate_size_per_layer) == ([3, 1], [86, 66])
    ids = token_batches(n=2, seq_len=10)
    expected = _outputs(model, ids)
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path).eval()
    assert layer_sizes(again) == (16, [3, 1], [86, 66])
    assert torch.equal(_outputs(again, ids), expected)


def test_classifier_with_halved_heads_reloads(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = tiny_bert_classifier()
    bundle = ModelBundle(model, "seq-cls", "tiny-bert-cls")
    report = slimkit.apply(model, StructuredPruneConfig(structure="heads", fraction=0.5))
    assert report.stats["config_updated"] is True
    assert type(model).__name__ == "SlimBertForSequenceClassification"
    ids = token_batches(n=2, seq_len=10)
    expected = _outputs(model, ids)
    model.save_pretrained(tmp_path / "hf")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert torch.equal(_outputs(again, ids), expected)
    loaded = slimkit.load(str(tmp_path / "hf"))  # slimkit's HF loader: no trust_remote_code
    assert loaded.kind == "seq-cls" and torch.equal(_outputs(loaded.model, ids), expected)
    through_slimkit = slimkit.load_dir(slimkit.save(bundle, tmp_path / "slimkit"))
    assert torch.equal(_outputs(through_slimkit.model, ids), expected)


def test_uniform_ffn_pruning_keeps_a_plain_bert() -> None:
    model: Any = tiny_bert()
    report = slimkit.apply(model, StructuredPruneConfig(structure="ffn", fraction=0.5))
    assert report.stats["config_updated"] is True
    assert type(model).__name__ == "BertModel" and model.config.intermediate_size == 48


def test_partly_targeted_ffn_pruning_records_each_layer() -> None:
    model: Any = tiny_bert()
    targets = {"include": ["encoder.layer.0.*"]}
    slimkit.apply(model, StructuredPruneConfig(structure="ffn", fraction=0.5, targets=targets))
    assert model.config.intermediate_size_per_layer == [48, 96]


def test_slim_config_validates_its_layout() -> None:
    config = SlimBertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=96, heads_per_layer=[2])
    with pytest.raises(ValueError, match="heads_per_layer has 1 entries for 2 layers"):
        SlimBertModel(config)


def test_non_bert_is_refused() -> None:
    with pytest.raises(TypeError, match="only BertModel"):
        to_slim_bert(nn.Sequential(nn.Linear(2, 2)))


_REMOTE_LOAD = textwrap.dedent("""
    import sys
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoModelForSequenceClassification

    ids = load_file("ids.safetensors")["ids"]
    encoder = AutoModel.from_pretrained("encoder", trust_remote_code=True).eval()
    classifier = AutoModelForSequenceClassification.from_pretrained("classifier", trust_remote_code=True).eval()
    assert "slimkit" not in sys.modules, "the saved slim_bert.py must not import slimkit"
    save_file({"encoder": encoder(input_ids=ids).last_hidden_state.contiguous(),
               "classifier": classifier(input_ids=ids).logits.contiguous()}, "outputs.safetensors")
    print(type(encoder).__module__)
""")


def test_saved_code_loads_without_slimkit(tmp_path: Path) -> None:
    encoder, classifier = _uneven_bert(), tiny_bert_classifier()
    slimkit.apply(classifier, StructuredPruneConfig(structure="heads", fraction=0.5))
    encoder.save_pretrained(tmp_path / "encoder")
    classifier.save_pretrained(tmp_path / "classifier")
    ids = token_batches(n=2, seq_len=10)
    save_file({"ids": ids}, str(tmp_path / "ids.safetensors"))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", _REMOTE_LOAD], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().startswith("transformers_modules.")  # the copied file, not slimkit's
    outputs = load_file(str(tmp_path / "outputs.safetensors"))
    assert torch.equal(outputs["encoder"], _outputs(encoder, ids))
    assert torch.equal(outputs["classifier"], _outputs(classifier, ids))


def _tiny_sentence_transformer(directory: Path) -> Any:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertTokenizer

    directory.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(123)]
    (directory / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizer(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    bert: Any = tiny_bert()
    bert.save_pretrained(directory)
    return SentenceTransformer(modules=[Transformer(str(directory)), Pooling(64)], device="cpu").eval()


def test_sentence_transformer_with_pruned_heads_reloads(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    st = _tiny_sentence_transformer(tmp_path / "base")
    inner = st[0].auto_model
    _kill_heads(inner, [[1], [0, 2, 3]])
    slimkit.apply(inner, StructuredPruneConfig(structure="heads", threshold=1e-8))
    assert to_slim_bert(st) is st[0].auto_model and type(st[0].auto_model) is SlimBertModel
    texts = ["w1 w2 w3", "w7 w8 w9 w10 w11"]
    expected = st.encode(texts, convert_to_tensor=True)
    st.save(str(tmp_path / "st"))
    register_slim_bert()
    plain = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    torch.testing.assert_close(plain.encode(texts, convert_to_tensor=True), expected, rtol=0, atol=1e-6)
    bundle = slimkit.load(str(tmp_path / "st"))
    loaded: Any = bundle.model
    torch.testing.assert_close(loaded.encode(texts, convert_to_tensor=True), expected, rtol=0, atol=1e-6)
    again: Any = slimkit.load_dir(slimkit.save(bundle, tmp_path / "slimkit")).model
    torch.testing.assert_close(again.encode(texts, convert_to_tensor=True), expected, rtol=0, atol=1e-6)
