"""Bitmask sparse codec: exact round trips on odd shapes and dtypes, and bytes on disk falling with sparsity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import slimkit
from slimkit.atomic import directory_bytes
from slimkit.export.codecs import compress_state_dict, decompress_state_dict
from slimkit.export.sparse_codec import decode_bitmask, encode_bitmask, pack_mask, unpack_mask, worth_bitmask
from slimkit.prune.magnitude import MagnitudePruneConfig
from tests._models import lenet_bundle


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=["fp32", "fp16", "bf16", "fp64"])
@pytest.mark.parametrize("shape", [(830, 545), (7,), (3, 5, 7, 11), (1, 1)], ids=["830x545", "7", "3x5x7x11", "1x1"])
def test_round_trip_is_exact(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(shape, generator=g).to(dtype)
    t[torch.rand(shape, generator=g) < 0.7] = 0.0
    t.reshape(-1)[0] = -0.0  # comes back as +0.0
    if t.numel() > 1:
        t.reshape(-1)[-1] = float("nan")  # kept as a value, bit for bit
    packed, values = encode_bitmask(t)
    back = decode_bitmask(packed, values, list(shape))
    assert back.dtype == dtype and back.shape == t.shape
    assert torch.equal(_bits(back.reshape(-1)[1:]), _bits(t.reshape(-1)[1:]))
    assert back.reshape(-1)[0] == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), min_size=0, max_size=100))
def test_mask_packing_round_trip(bits: list[bool]) -> None:
    mask = torch.tensor(bits, dtype=torch.bool)
    assert torch.equal(unpack_mask(pack_mask(mask), len(bits)), mask)


def test_codec_is_chosen_only_when_sparse_enough() -> None:
    dense = torch.randn(40, 40)
    sparse = dense * (torch.rand(40, 40) > 0.5)
    state = {"dense": dense, "sparse": sparse, "ints": torch.zeros(400, dtype=torch.int64), "tiny": torch.zeros(3)}
    tensors, header = compress_state_dict(state, {})
    assert {k: v["codec"] for k, v in header.items()} == {"dense": "dense", "sparse": "bitmask", "ints": "dense",
                                                          "tiny": "dense"}
    restored, _ = decompress_state_dict(tensors, header)
    assert all(torch.equal(restored[k], state[k]) for k in state)
    assert not worth_bitmask(torch.zeros(10, 10, dtype=torch.int32))


def test_bytes_on_disk_fall_with_sparsity(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sizes = {}
    for sparsity in (0.0, 0.5, 0.9):
        bundle = lenet_bundle()
        if sparsity:
            slimkit.apply(bundle.model, MagnitudePruneConfig(sparsity=sparsity, targets={"exclude": []}))
        out = slimkit.save(bundle, tmp_path / f"s{sparsity}")
        sizes[sparsity] = directory_bytes(out)
        loaded = slimkit.load_dir(out)
        for k, v in bundle.model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[k], v)
    assert sizes[0.9] < 0.2 * sizes[0.0] and sizes[0.5] < 0.6 * sizes[0.0]
