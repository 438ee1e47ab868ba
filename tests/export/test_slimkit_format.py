"""The slimkit checkpoint: compress → save → load gives the same outputs; bad files give clear errors."""

import json

import pytest
import torch

import slimkit
from slimkit.atomic import directory_bytes
from slimkit.export.codecs import compress_state_dict, decompress_state_dict
from slimkit.export.slimkit_format import WEIGHTS_FILE, load_slimkit_dir, save
from slimkit.models.bundle import ModelBundle
from slimkit.quantize.record import quant_records
from tests._models import lenet_bundle, tiny_llama, token_batches


def llama_bundle(model=None):
    return ModelBundle(model or tiny_llama(), "causal-lm", "tiny-llama")


@pytest.mark.parametrize("config", [
    slimkit.RTNConfig(bits=8),
    slimkit.RTNConfig(bits=4, granularity="group", group_size=24),  # 64 = 24 + 24 + 16: ragged
    slimkit.RTNConfig(bits=3, symmetric=False, granularity="group", group_size=32),
    slimkit.RTNConfig(bits=2, granularity="tensor"),
], ids=["int8-channel", "int4-g24-ragged", "int3-affine-g32", "int2-tensor"])
def test_quantized_llama_round_trips_exactly(tmp_path, config):
    bundle = llama_bundle()
    slimkit.apply(bundle.model, config)
    ids = token_batches(n=2)
    with torch.no_grad():
        expected = bundle.model(input_ids=ids).logits
    save(bundle, tmp_path / "out")
    loaded = load_slimkit_dir(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, expected)
    assert set(quant_records(loaded.model)) == set(quant_records(bundle.model))
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight  # tie survives


def test_quantized_artifact_is_really_smaller(tmp_path):
    dense = llama_bundle(tiny_llama(seed=1))
    quant = llama_bundle(tiny_llama(seed=1))
    slimkit.apply(quant.model, slimkit.RTNConfig(bits=4, granularity="group", group_size=32))
    save(dense, tmp_path / "dense")
    save(quant, tmp_path / "int4")
    header = json.loads((tmp_path / "int4" / "slimkit.json").read_text())
    entry = header["tensors"]["model.layers.0.mlp.up_proj.weight"]
    assert entry["codec"] == "int" and entry["bits"] == 4
    saved_dense = directory_bytes(tmp_path / "dense" / WEIGHTS_FILE)
    saved_int4 = directory_bytes(tmp_path / "int4" / WEIGHTS_FILE)
    linear_bytes = sum(p.numel() for n, p in dense.model.named_parameters() if "layers" in n and "proj" in n) * 4
    # int4 + fp32 scale per 32 weights = 5 bits/weight instead of 32
    assert saved_dense - saved_int4 > 0.8 * linear_bytes * (1 - 5 / 32)


def test_codecs_store_tied_tensors_once():
    model = tiny_llama()
    tensors, header = compress_state_dict(model.state_dict(), {})
    assert header["lm_head.weight"] == {"codec": "alias", "of": "model.embed_tokens.weight"}
    assert "lm_head.weight" not in tensors
    state, records = decompress_state_dict(tensors, header)
    assert state["lm_head.weight"] is state["model.embed_tokens.weight"] and not records


def test_torch_zoo_model_round_trips(tmp_path):
    bundle = lenet_bundle()
    slimkit.apply(bundle.model, slimkit.MagnitudePruneConfig(sparsity=0.5))
    x = torch.rand(5, 1, 28, 28)
    expected = bundle.model(x)
    save(bundle, tmp_path / "lenet")
    loaded = load_slimkit_dir(tmp_path / "lenet")
    assert loaded.kind == "torch" and torch.equal(loaded.model(x), expected)


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    save(lenet_bundle(), tmp_path / "m")
    weights = tmp_path / "m" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="missing, truncated or corrupt"):
        load_slimkit_dir(tmp_path / "m")


def test_header_problems_are_clear_errors(tmp_path):
    save(lenet_bundle(), tmp_path / "m")
    header = tmp_path / "m" / "slimkit.json"
    header.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the slimkit header"):
        load_slimkit_dir(tmp_path / "m")
    header.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a slimkit header"):
        load_slimkit_dir(tmp_path / "m")


def test_save_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "m"
    save(lenet_bundle(), out)
    with pytest.raises(FileExistsError):
        save(lenet_bundle(), out)
    broken = lenet_bundle()
    broken.kind = "causal-lm"  # no HF config to write: saving fails midway
    with pytest.raises(AttributeError):
        save(broken, tmp_path / "partial")
    assert not (tmp_path / "partial").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_state_dict_files_load_safely_for_registered_architectures(tmp_path):
    from slimkit.models import load_model

    bundle = lenet_bundle()
    torch.save({"state_dict": bundle.model.state_dict(), "epoch": 3}, tmp_path / "w.pt")
    loaded = load_model(f"lenet-300-100={tmp_path / 'w.pt'}")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded.model(x), bundle.model(x)) and loaded.arch["name"] == "lenet-300-100"
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a pickled module, not tensors
    with pytest.raises(ValueError, match="weights_only"):
        load_model(f"lenet-300-100={tmp_path / 'pickled.pt'}")
    with pytest.raises(ValueError, match="ARCH="):
        load_model(str(tmp_path / "w.pt"))


def test_unregistered_torch_module_needs_a_skeleton(tmp_path):
    from slimkit.models import torch_bundle

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    slimkit.apply(model, slimkit.RTNConfig(bits=8))
    save(torch_bundle(model), tmp_path / "m")
    with pytest.raises(ValueError, match="skeleton"):
        load_slimkit_dir(tmp_path / "m")
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    assert torch.equal(load_slimkit_dir(tmp_path / "m", skeleton=fresh).model(x), model(x))
