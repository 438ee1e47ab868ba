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


# --- issue 21: documented specs that failed, and files that leaked tracebacks ---------------------------


def _save_mlp(path, **kwargs):
    from slimkit.models.zoo import build_architecture

    model = build_architecture("mlp", kwargs)
    torch.save(model.state_dict(), path)
    return model


def test_arch_spec_takes_architecture_arguments(tmp_path):
    saved = _save_mlp(tmp_path / "w.pt", in_features=64, hidden=[32, 16], classes=3)
    bundle = load_model(f"mlp[in_features=64,hidden=[32, 16],classes=3]={tmp_path / 'w.pt'}")
    assert bundle.arch == {"name": "mlp", "kwargs": {"in_features": 64, "hidden": [32, 16], "classes": 3}}
    x = torch.randn(5, 64)
    assert torch.equal(bundle.model(x), saved.eval()(x))
    one_layer = _save_mlp(tmp_path / "one.pt", in_features=64, hidden=24)  # a single width needs no brackets
    assert load_model(f"mlp[in_features=64,hidden=24]={tmp_path / 'one.pt'}").model[1].out_features == 24
    assert one_layer[1].out_features == 24


def test_a_size_mismatch_names_the_tensor_both_shapes_and_the_arguments(tmp_path):
    _save_mlp(tmp_path / "w.pt", in_features=64, hidden=[32], classes=3)
    with pytest.raises(ValueError, match=r"tensor '1\.weight' has shape \(32, 64\) in the file but \(300, 784\) "
                                         r"in mlp \(defaults\).*mlp\[key=value,\.\.\.\].*mlp takes: in_features=784"):
        load_model(f"mlp={tmp_path / 'w.pt'}")
    with pytest.raises(ValueError, match=r"tensor '3\.weight' has shape \(3, 32\) in the file but \(10, 32\) in "
                                         r"mlp\[in_features=64, hidden=\[32\]\]"):
        load_model(f"mlp[in_features=64,hidden=[32]]={tmp_path / 'w.pt'}")


@pytest.mark.parametrize(("spec", "message"), [
    ("mlp[depth=3]=w.pt", r"architecture 'mlp' does not take \{'depth': 3\}.*it takes: in_features=784"),
    ("mlp[hidden]=w.pt", r"architecture argument 'hidden' is not KEY=VALUE"),
    ("mlp[hidden=[1,]=w.pt", r"cannot read the value of architecture argument 'hidden'"),
    ("mlp[hidden=wide]=w.pt", r"architecture 'mlp' cannot be built with \{'hidden': 'wide'\}"),
    ("no-such-net=w.pt", r"unknown architecture 'no-such-net'"),
], ids=["unknown-argument", "no-value", "bad-yaml", "wrong-type", "unknown-arch"])
def test_bad_arch_specs_are_explained(tmp_path, spec, message):
    _save_mlp(tmp_path / "w.pt")
    with pytest.raises((ValueError, KeyError), match=message):
        load_model(spec.replace("w.pt", str(tmp_path / "w.pt")))


def test_a_bare_hub_name_gets_the_offline_explanation_and_a_missing_file_does_not(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'gpt2' is not a file.*never downloads models"):
        load_model("gpt2")
    with pytest.raises(FileNotFoundError, match=r"never downloads models"):
        load_model("HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(FileNotFoundError, match=r"no model at 'missing\.gguf'"):
        load_model("missing.gguf")


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "JSONDecodeError"), ("[1, 2]", "not a JSON object"), ('{"a": 1}', "model_type"),
], ids=["invalid-json", "not-an-object", "no-model-type"])
def test_a_broken_config_json_is_a_value_error_naming_the_file(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'}: not a usable transformers config.*{message}"):
        load_model(str(tmp_path))


class _RunsCode:
    """Unpickling this creates a marker file: proof that a loader unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_weights(path, marker):
    import pickle

    (path / "pytorch_model.bin").write_bytes(pickle.dumps(_RunsCode(marker)))


def test_pickle_only_weights_are_refused_unread_with_a_conversion_command(tmp_path):
    tiny_llama().config.save_pretrained(tmp_path / "llama")
    _pickle_weights(tmp_path / "llama", tmp_path / "unpickled")
    with pytest.raises(ValueError, match=r"pickle files \(pytorch_model\.bin\).*safetensors only.*"
                                         r"from transformers import AutoModelForCausalLM as M"):
        load_model(str(tmp_path / "llama"))
    assert not (tmp_path / "unpickled").exists()


def test_safetensors_are_used_and_a_pickle_beside_them_is_never_opened(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "llama")
    _pickle_weights(tmp_path / "llama", tmp_path / "unpickled")
    assert load_model(str(tmp_path / "llama")).kind == "causal-lm"
    assert not (tmp_path / "unpickled").exists()


def test_corrupt_or_missing_safetensors_name_the_directory(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "llama")
    (tmp_path / "llama" / "model.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{garbage}" + b"x" * 64)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'llama'}: transformers cannot load these weights"):
        load_model(str(tmp_path / "llama"))
    (tmp_path / "llama" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no weights found"):
        load_model(str(tmp_path / "llama"))
