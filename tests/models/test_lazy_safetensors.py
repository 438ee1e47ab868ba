"""Safetensors read from headers first and a tensor at a time, and written a tensor at a time: what they hold is
exactly what safetensors itself reads and writes."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from slimkit.models.lazy_safetensors import SafetensorsIndex, StoredBytes, read_header, write_safetensors

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.uint8, torch.int64, torch.bool]


def _tensor(dtype, shape, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    return torch.randint(0, 100, shape, generator=g).to(dtype)


def test_a_sharded_checkpoint_is_indexed_from_headers_and_read_exactly(tmp_path):
    from tests._models import tiny_llama

    model = tiny_llama(layers=2).to(torch.bfloat16)
    model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
    index = SafetensorsIndex.from_directory(tmp_path)
    assert len(index.files) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: stored once
    assert set(index.tensors) == set(state)
    assert index.tensors["model.norm.weight"].dtype == "BF16" and index.total_bytes() == sum(
        t.numel() * 2 for t in state.values())
    read = index.read(["model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight"], torch.float32)
    for name, t in read.items():
        assert t.dtype == torch.float32 and torch.equal(t, state[name].float())


def test_the_fingerprint_changes_when_a_file_is_rewritten(tmp_path):
    save_file({"w": torch.ones(3)}, str(tmp_path / "model.safetensors"))
    before = SafetensorsIndex.from_directory(tmp_path).fingerprint()
    assert SafetensorsIndex.from_directory(tmp_path).fingerprint() == before
    save_file({"w": torch.zeros(3)}, str(tmp_path / "model.safetensors"))  # same header, new data and mtime
    assert SafetensorsIndex.from_directory(tmp_path).fingerprint() != before


@pytest.mark.parametrize("content, message", [
    (b"\x01\x00", "shorter than its 8-byte header length"),
    ((10**12).to_bytes(8, "little"), "declares a"),
    ((20).to_bytes(8, "little") + b"{not json", "cut short"),
    ((9).to_bytes(8, "little") + b"{not json", "not JSON"),
    (len(b'{"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}').to_bytes(8, "little")
     + b'{"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}', "needs a dtype"),
    (len(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}').to_bytes(8, "little")
     + b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', "does not hold 2 F32 values"),
], ids=["tiny", "huge-header", "cut-short", "not-json", "dtype", "range"])
def test_a_damaged_header_names_the_file(tmp_path, content, message):
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        SafetensorsIndex.from_directory(tmp_path)
    assert "model.safetensors" in str(err.value)


def test_an_index_naming_a_missing_shard_is_refused(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-1.safetensors"}}))
    with pytest.raises(ValueError, match="missing: model-1.safetensors"):
        SafetensorsIndex.from_directory(tmp_path)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 5), max_size=3), st.booleans()),
                min_size=1, max_size=6))
def test_written_files_hold_exactly_the_tensors_and_copied_ranges(tmp_path_factory, specs):
    tmp = tmp_path_factory.mktemp("w")
    tensors = {f"t{i}": _tensor(dtype, shape, i) for i, (dtype, shape, _) in enumerate(specs)}
    save_file({f"src.{k}": v for k, v in tensors.items()}, str(tmp / "src.safetensors"))
    infos, _ = read_header(tmp / "src.safetensors")
    sources = {k: StoredBytes(infos[f"src.{k}"]) if copy else v
               for (k, v), (_, _, copy) in zip(tensors.items(), specs, strict=True)}
    write_safetensors(tmp / "out.safetensors", sources, {"format": "slimkit"})
    back = load_file(str(tmp / "out.safetensors"))
    assert set(back) == set(tensors)
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in tensors.items())
    assert (tmp / "out.safetensors").read_bytes()[8:].split(b"}}")[0].count(b'"format":"slimkit"') == 1
