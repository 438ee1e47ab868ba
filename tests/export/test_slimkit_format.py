"""The slimkit checkpoint: compress → save → load gives the same outputs; bad files give clear errors."""

import json

import pytest
import torch

import slimkit
from slimkit.atomic import directory_bytes
from slimkit.export.codecs import compress_state_dict, decompress_state_dict
from slimkit.export.slimkit_format import WEIGHTS_FILE, FormatError, load_slimkit_dir, save
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


@pytest.fixture
def quantized_dir(tmp_path):
    """A LeNet (Sequential 1, 3, 5) with int8 layers 1 and 3 and a 60%-pruned (bitmask) layer 5, saved."""
    bundle = lenet_bundle()
    slimkit.apply(bundle.model, slimkit.RTNConfig(bits=8, targets={"include": ["1", "3"]}))
    slimkit.apply(bundle.model, slimkit.MagnitudePruneConfig(sparsity=0.6, targets={"include": ["5"]}))
    return save(bundle, tmp_path / "m")


def edit_header(directory, edit):
    file = directory / "slimkit.json"
    header = json.loads(file.read_text())
    edit(header)
    file.write_text(json.dumps(header))


def entry(header, codec):
    return next(e for e in header["tensors"].values() if e["codec"] == codec)


@pytest.mark.parametrize("edit, fragment", [
    (lambda h: h.update(format_version="two"), "'format_version' must be an integer from 1 to 1, got 'two'"),
    (lambda h: h.update(format_version=-1), "'format_version' must be an integer from 1 to 1, got -1"),
    (lambda h: h.update(format_version=True), "'format_version' must be an integer"),
    (lambda h: h.pop("format_version"), "'format_version' must be an integer"),
    (lambda h: h.update(format_version=7), "newer slimkit"),
    (lambda h: entry(h, "int").update(dtype="float99"), "'dtype' must be one of float32"),
    (lambda h: entry(h, "int").update(bits="8"), "needs integer 'bits'"),
    (lambda h: entry(h, "int").update(bits=12), "bits must be between 1 and 8"),
    (lambda h: entry(h, "int").update(granularity="row"), "'granularity' in"),
    (lambda h: entry(h, "int").update(shape=[100, 300]), "packed data holds"),
    (lambda h: entry(h, "int").update(shape=[300 * 784]), "scale has shape"),
    (lambda h: entry(h, "int").update(shape=[300, -784]), "non-negative integers"),
    (lambda h: entry(h, "int").update(shape="300x784"), "non-negative integers"),
    (lambda h: entry(h, "bitmask").update(shape=[5, 100]), "bitmask holds"),
    (lambda h: entry(h, "dense").update(codec="zstd"), "unknown codec 'zstd'"),
    (lambda h: h["tensors"].update({"fc9.weight": {"codec": "dense"}}), "'fc9.weight' named in the header is missing"),
    (lambda h: h["tensors"].update({"x": {"codec": "alias", "of": "nope"}}), "'of' must name another"),
    (lambda h: h.update(tensors=[]), "'tensors' must be a non-empty mapping"),
    (lambda h: h.update(kind="causal-lm"), "needs its config.json"),
    (lambda h: h.update(arch={"name": "lenet-300-100", "kwargs": {"in_features": "many"}}), "cannot be built"),
    (lambda h: h.update(arch="lenet"), "'arch' must be"),
], ids=["version-word", "version-negative", "version-bool", "version-missing", "version-newer", "unknown-dtype",
        "bits-string", "bits-range", "granularity", "shape-rows", "shape-flat", "shape-negative", "shape-string",
        "bitmask-shape", "unknown-codec", "missing-tensor", "alias-target", "tensors-list", "kind-without-config",
        "arch-kwargs", "arch-type"])
def test_edited_headers_are_format_errors_naming_the_file(quantized_dir, edit, fragment):
    edit_header(quantized_dir, edit)
    with pytest.raises(FormatError) as err:
        load_slimkit_dir(quantized_dir)
    assert str(quantized_dir) in str(err.value) and fragment in str(err.value)


def test_a_swapped_weight_shape_names_the_file_not_a_torch_error(quantized_dir):
    # (300, 784) read as (784, 300): same packed size and a per-tensor-looking scale would pass the
    # codec checks, so the module check has to catch it.
    def swap(header):
        e = header["tensors"]["1.weight"]
        e.update(shape=[e["shape"][1], e["shape"][0]], granularity="tensor")
    edit_header(quantized_dir, swap)
    with pytest.raises(FormatError, match=str(quantized_dir)):
        load_slimkit_dir(quantized_dir)


def test_the_header_records_which_files_slimkit_wrote(quantized_dir):
    header = json.loads((quantized_dir / "slimkit.json").read_text())
    assert header["files"] == ["slimkit.safetensors"]
    loaded = load_slimkit_dir(quantized_dir)  # the edits above are the only way to fail
    assert loaded.kind == "torch"


def test_overwrite_replaces_a_slimkit_output_with_its_report_files(tmp_path):
    out = save(lenet_bundle(), tmp_path / "m")
    (out / "report.md").write_text("# report")
    save(lenet_bundle(seed=1), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["slimkit.json", "slimkit.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("setup, fragment", [
    (lambda out: (out.mkdir(), (out / "thesis.tex").write_text("years of work")), "is not a slimkit output"),
    (lambda out: (save(lenet_bundle(), out), (out / "notes.txt").write_text("mine")), "notes.txt"),
    (lambda out: out.write_text("a file"), "not a directory"),
], ids=["user-folder", "output-with-user-file", "plain-file"])
def test_overwrite_never_deletes_what_slimkit_did_not_write(tmp_path, setup, fragment):
    out = tmp_path / "out"
    setup(out)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(FileExistsError, match=fragment):
        save(lenet_bundle(), out, overwrite=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_a_full_disk_while_writing_weights_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import slimkit.export.slimkit_format as fmt

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(fmt, "save_file", full)
    with pytest.raises(OSError, match="slimkit.safetensors: cannot write the weights.*No space left"):
        save(lenet_bundle(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_the_header_stores_applied_configs_compactly_and_they_rebuild_the_same_config(tmp_path):
    from slimkit.method import config_class
    from slimkit.prune.gradual import GradualPruneConfig

    bundle = lenet_bundle(in_features=64)
    config = GradualPruneConfig(final_sparsity=0.92, end=0.6, targets={"include": ["1"]})
    bundle.applied = [{"method": "prune.gradual", "config": config.describe(), "stats": {"sparsity": 0.92}},
                      {"method": "train", "config": {"epochs": 1}, "stats": {}}]
    save(bundle, tmp_path / "out")
    applied = json.loads((tmp_path / "out" / "slimkit.json").read_text())["applied"]
    stored = applied[0]["config"]
    assert stored == {"method": "prune.gradual", "version": 1, "targets": {"include": ["1"]}, "final_sparsity": 0.92,
                      "end": 0.6}  # defaults (start, frequency, scope, module types ...) are implied
    assert config_class("prune.gradual").model_validate(stored) == config
    assert applied[0]["stats"] == {"sparsity": 0.92} and applied[1] == bundle.applied[1]  # unregistered: as is
    assert load_slimkit_dir(tmp_path / "out").applied == applied
