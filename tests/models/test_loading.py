"""Loading Hugging Face directories of each kind and saving them back through the slimkit format."""

import pytest
import torch

import slimkit
from slimkit.export.slimkit_format import load_slimkit_dir, save
from slimkit.models import load_model
from slimkit.models.hf import hf_kind
from tests._models import tiny_bert, tiny_llama, token_batches


def test_encoder_directory_loads_compresses_and_round_trips(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "bert")
    bundle = load_model(str(tmp_path / "bert"))
    assert bundle.kind == "encoder" and bundle.tokenizer is None
    slimkit.apply(bundle.model, slimkit.RTNConfig(bits=4, granularity="group", group_size=32))
    ids = token_batches(n=2, seq_len=12)
    expected = bundle.model(input_ids=ids).last_hidden_state
    save(bundle, tmp_path / "out")
    again = load_slimkit_dir(tmp_path / "out")
    assert torch.equal(again.model(input_ids=ids).last_hidden_state, expected)


def test_causal_lm_directory_kind(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "llama")
    bundle = load_model(str(tmp_path / "llama"))
    assert bundle.kind == "causal-lm" and bundle.is_language_model


def test_sequence_classifier_kind(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                        num_attention_heads=2, num_labels=3, architectures=["BertForSequenceClassification"])
    BertForSequenceClassification(config).save_pretrained(tmp_path / "cls")
    bundle = load_model(str(tmp_path / "cls"))
    assert bundle.kind == "seq-cls" and bundle.model(input_ids=token_batches(64, 1, 8)).logits.shape == (1, 3)
    assert hf_kind(type("C", (), {"architectures": None})()) == "encoder"


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a model directory"):
        load_model(str(tmp_path))
