"""The codebook and Huffman codecs: archives load back to identical outputs, bytes shrink, damage is a FormatError."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import slimkit
from slimkit.cluster.huffman_step import HuffmanConfig
from slimkit.cluster.record import CodebookDriftWarning, CodebookRecord, HuffmanRecord, get_share_note
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.export.registry import FormatError
from slimkit.export.slimkit_format import load_slimkit_dir, save, saved_size
from slimkit.export.storage import storage_breakdown
from slimkit.models.bundle import ModelBundle
from slimkit.prune.magnitude import MagnitudePruneConfig
from tests._models import lenet_bundle


def _conv_bundle() -> ModelBundle:
    from slimkit.models.zoo import build_architecture

    torch.manual_seed(0)
    model = build_architecture("small-cnn", {"widths": [6, 10], "image_size": 12}).eval()
    return ModelBundle(model, "torch", "small-cnn", arch={"name": "small-cnn", "kwargs": {"widths": [6, 10],
                                                                                         "image_size": 12}})


CASES = {
    "dense per-tensor 4 bits": (lenet_bundle, None, {"bits": 4}, False),
    "pruned 90% per-tensor 5 bits": (lenet_bundle, 0.9, {"bits": 5}, False),
    "pruned 90% Huffman": (lenet_bundle, 0.9, {"bits": 5}, True),
    "per-channel fp16 codebook Huffman": (lenet_bundle, 0.5, {"bits": 3, "granularity": "channel",
                                                               "codebook_dtype": "float16"}, True),
    "conv 8 bits pruned 60% Huffman": (_conv_bundle, 0.6, {"bits": 8}, True),
}


def _inputs(bundle: ModelBundle) -> torch.Tensor:
    return torch.randn(4, 1, 12, 12) if bundle.source == "small-cnn" else torch.randn(4, 784)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_archive_loads_back_to_identical_outputs(tmp_path, case):
    make, sparsity, cluster, coded = CASES[case]
    bundle = make()
    if sparsity:
        slimkit.apply(bundle.model, MagnitudePruneConfig(sparsity=sparsity))
    slimkit.apply(bundle.model, KMeansClusterConfig(**cluster))
    if coded:
        slimkit.apply(bundle.model, HuffmanConfig())
    x = _inputs(bundle)
    with torch.no_grad():
        expected = bundle.model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on-codebook weights store silently
        save(bundle, tmp_path / "out")
    loaded = load_slimkit_dir(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(loaded.model(x), expected)
    for name, p in bundle.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], p)
    first = "0" if bundle.source == "small-cnn" else "1"
    note = get_share_note(loaded.model.get_submodule(first), "weight")
    assert isinstance(note, HuffmanRecord if coded else CodebookRecord)
    resaved = tmp_path / "again"
    save(loaded, resaved)  # the reloaded model carries its notes: it re-saves in the same bytes
    assert (resaved / "slimkit.safetensors").read_bytes() == (tmp_path / "out" / "slimkit.safetensors").read_bytes()


def test_each_stage_shrinks_the_archive_and_the_breakdown_adds_up(tmp_path):
    bundle = lenet_bundle()
    dense = saved_size(bundle)
    slimkit.apply(bundle.model, MagnitudePruneConfig(sparsity=0.92))
    pruned = saved_size(bundle)
    slimkit.apply(bundle.model, KMeansClusterConfig(bits=5))
    clustered = saved_size(bundle)
    slimkit.apply(bundle.model, HuffmanConfig())
    save(bundle, tmp_path / "out")
    coded = sum(p.stat().st_size for p in (tmp_path / "out").iterdir())
    assert dense > 3 * pruned and pruned > 2 * clustered and clustered > 1.15 * coded
    assert dense / coded > 35  # measured 45x on untrained weights
    breakdown = storage_breakdown(tmp_path / "out")
    assert breakdown.total == coded
    first = breakdown.tensors["1.weight"]
    assert first.codec == "huffman" and set(first.parts) == {"values", "positions", "codebook", "tables"}
    assert first.parts["codebook"] == 32 * 4 and first.parts["positions"] > first.parts["values"] > 0


def test_a_weight_changed_after_clustering_is_snapped_with_a_warning(tmp_path):
    bundle = lenet_bundle()
    slimkit.apply(bundle.model, KMeansClusterConfig(bits=2))
    with torch.no_grad():
        bundle.model[1].weight[0, :3] += 0.001
    with pytest.warns(CodebookDriftWarning, match=r"1.weight: 3 of 235200 values are not in the weight's codebook"):
        save(bundle, tmp_path / "out")
    loaded = load_slimkit_dir(tmp_path / "out")
    assert int(loaded.model[1].weight.unique().numel()) <= 4


def test_a_sparse_only_weight_can_be_huffman_coded(tmp_path):
    bundle = lenet_bundle()
    slimkit.apply(bundle.model, MagnitudePruneConfig(sparsity=0.9))
    slimkit.apply(bundle.model, HuffmanConfig())
    save(bundle, tmp_path / "out")
    loaded = load_slimkit_dir(tmp_path / "out")
    assert torch.equal(loaded.model[1].weight, bundle.model[1].weight)
    assert get_share_note(loaded.model[1], "weight").codebook is None
    with pytest.raises(ValueError, match="0.weight is neither clustered nor pruned"):
        slimkit.apply(nn.Sequential(nn.Linear(3, 3)), HuffmanConfig())


def _saved_huffman(tmp_path):
    bundle = lenet_bundle()
    slimkit.apply(bundle.model, MagnitudePruneConfig(sparsity=0.9))
    slimkit.apply(bundle.model, KMeansClusterConfig(bits=4))
    slimkit.apply(bundle.model, HuffmanConfig())
    return save(bundle, tmp_path / "out")


def _damage_tensor(out, key, fn):
    tensors = load_file(str(out / "slimkit.safetensors"))
    tensors[key] = fn(tensors[key].clone())
    save_file(tensors, str(out / "slimkit.safetensors"), metadata={"format": "slimkit"})


def _flip(t: torch.Tensor) -> torch.Tensor:
    t[t.numel() // 2] ^= 0x10
    return t


@pytest.mark.parametrize(("key", "damage", "message"), [
    ("1.weight.positions", _flip, r"'1.weight'.*(Huffman-coded positions do not decode|corrupt positions|names)"),
    ("1.weight.indices", lambda t: t[:-1], r"'1.weight'.*the indices stream holds"),
    ("1.weight.tables", _flip, r"'1.weight'.*(Huffman-coded|Kraft|corrupt)"),
    ("1.weight.codebook", lambda t: t[:, :3], r"'1.weight'.*alphabet of 16 symbols does not fit a codebook of 3"),
], ids=["flipped position bit", "truncated index stream", "damaged table", "cut codebook"])
def test_a_corrupt_archive_is_a_format_error_naming_the_tensor(tmp_path, key, damage, message):
    out = _saved_huffman(tmp_path)
    _damage_tensor(out, key, damage)
    with pytest.raises(FormatError, match=message):
        load_slimkit_dir(out)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("layout", "zigzag", "'layout' must be one of dense, sparse"),
    ("position_bits", 12, "'position_bits' must be an integer from 1 to 8"),
    ("kept", -1, "'kept' must be an integer"),
    ("indices_stream_bits", "many", "'indices_stream_bits' must be an integer"),
])
def test_a_damaged_header_entry_is_a_format_error(tmp_path, field, value, message):
    out = _saved_huffman(tmp_path)
    header = json.loads((out / "slimkit.json").read_text())
    header["tensors"]["1.weight"][field] = value
    (out / "slimkit.json").write_text(json.dumps(header))
    with pytest.raises(FormatError, match=rf"tensors.1.weight: {message}"):
        load_slimkit_dir(out)


def test_a_few_exact_zeros_cost_their_positions_not_a_bit_on_every_entry(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 64))
    with torch.no_grad():
        model[0].weight[3, 10:15] = 0.0  # e.g. weights that were exactly zero in a dequantized GGUF
    slimkit.apply(model, KMeansClusterConfig(bits=4, granularity="channel"))
    save(ModelBundle(model, "torch", "probe"), tmp_path / "out")
    entry = json.loads((tmp_path / "out" / "slimkit.json").read_text())["tensors"]["0.weight"]
    assert entry["layout"] == "dense" and entry["index_bits"] == 4 and entry["kept"] == 64 * 256 - 5
    stored = load_file(str(tmp_path / "out" / "slimkit.safetensors"))
    assert stored["0.weight.indices"].numel() == 64 * 256 // 2 and stored["0.weight.positions"].numel() <= 8
    loaded = load_slimkit_dir(tmp_path / "out", skeleton=nn.Sequential(nn.Linear(256, 64)))
    assert torch.equal(loaded.model[0].weight, model[0].weight)
    assert int((loaded.model[0].weight == 0).sum()) == 5
