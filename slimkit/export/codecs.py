"""Pure ``state_dict -> (tensors, header)`` compressors for the slimkit on-disk format.

Each tensor is stored with one codec recorded in the JSON header:
* ``dense``: as it is;
* ``alias``: the same storage as another entry (tied embeddings are written once);
* ``int``: a quantized weight as bit-packed integers plus scales (and zero points if affine);
* ``bitmask``: a sparse float tensor as a bitmask plus its nonzero values (``sparse_codec``).
Decompression gives back the float state dict and the quantization records.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slimkit.export.sparse_codec import decode_bitmask_entry, encode_bitmask_entry, worth_bitmask
from slimkit.quantize.packing import pack_bits, unpack_bits
from slimkit.quantize.primitives import QuantScheme, dequantize
from slimkit.quantize.record import QuantRecord, record_integers

Header = dict[str, dict[str, Any]]


def _alias_map(state: dict[str, Tensor]) -> dict[str, str]:
    """Map each name whose tensor shares storage and shape with an earlier one to that name."""
    first: dict[tuple[int, tuple[int, ...], int], str] = {}
    aliases: dict[str, str] = {}
    for name, t in state.items():
        if t.numel() == 0:
            continue
        key = (int(t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size()), tuple(t.shape),
               t.element_size())
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def _encode_int(name: str, t: Tensor, rec: QuantRecord, out: dict[str, Tensor]) -> dict[str, Any]:
    s = rec.scheme
    q = record_integers(name, t, rec)  # (rows, cols); warns if the weight left its grid after quantization
    out[f"{name}.qdata"] = pack_bits(s.codes(q), s.bits)
    out[f"{name}.scale"] = rec.scale.float().contiguous()
    if not s.symmetric:
        out[f"{name}.zero"] = rec.zero.to(torch.uint8).contiguous()
    return {"codec": "int", "bits": s.bits, "symmetric": s.symmetric, "granularity": s.granularity,
            "group_size": s.group_size, "kind": s.kind, "shape": list(t.shape),
            "dtype": str(t.dtype).removeprefix("torch.")}


def compress_state_dict(
    state: dict[str, Tensor], records: dict[str, QuantRecord]
) -> tuple[dict[str, Tensor], Header]:
    """Encode ``state`` for disk; ``records`` names the quantized weights.

    Returns:
        ``(tensors, header)``: the tensors to write with safetensors and the per-entry codec header.
    """
    aliases = _alias_map(state)
    records = {aliases.get(n, n): r for n, r in records.items()}  # a quantized tied lm_head: pack it once
    tensors: dict[str, Tensor] = {}
    header: Header = {}
    for name, t in state.items():
        if name in aliases:
            header[name] = {"codec": "alias", "of": aliases[name]}
        elif name in records:
            header[name] = _encode_int(name, t.detach(), records[name], tensors)
        elif worth_bitmask(t):
            header[name] = encode_bitmask_entry(name, t, tensors)
        else:
            tensors[name] = t.detach().contiguous()
            header[name] = {"codec": "dense"}
    return tensors, header


def _decode_int(name: str, entry: dict[str, Any], tensors: dict[str, Tensor]) -> tuple[Tensor, QuantRecord]:
    scheme = QuantScheme(entry["bits"], entry["symmetric"], entry["granularity"], entry["group_size"],
                         entry.get("kind", "int"))
    shape = entry["shape"]
    rows, cols = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
    scale = tensors[f"{name}.scale"]
    zero = tensors[f"{name}.zero"].float() if not scheme.symmetric else torch.zeros_like(scale)
    q = scheme.levels(unpack_bits(tensors[f"{name}.qdata"], scheme.bits, rows * cols).reshape(rows, cols))
    w = dequantize(q, scale, zero, scheme).reshape(shape).to(getattr(torch, entry["dtype"]))
    return w, QuantRecord(scheme, scale, zero)


def decompress_state_dict(
    tensors: dict[str, Tensor], header: Header
) -> tuple[dict[str, Tensor], dict[str, QuantRecord]]:
    """Inverse of :func:`compress_state_dict`: float state dict plus quantization records."""
    state: dict[str, Tensor] = {}
    records: dict[str, QuantRecord] = {}
    for name, entry in header.items():
        codec = entry.get("codec")
        if codec == "dense":
            state[name] = tensors[name]
        elif codec == "int":
            state[name], records[name] = _decode_int(name, entry, tensors)
        elif codec == "bitmask":
            state[name] = decode_bitmask_entry(name, entry, tensors)
        elif codec != "alias":
            raise ValueError(f"{name}: unknown codec {codec!r} in the slimkit header")
    for name, entry in header.items():
        if entry.get("codec") == "alias":
            state[name] = state[entry["of"]]
    return state, records
