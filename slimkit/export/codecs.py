"""Pure ``state_dict -> (tensors, header)`` compression for the slimkit on-disk format, through the codec registry.

Each tensor is stored with one codec recorded in its JSON header entry:
* ``alias``: the same storage as another entry (tied embeddings are written once), the format's own;
* a tensor carrying a note (e.g. a quantized weight's ``QuantRecord``): the codec registered for that
  note's type (``int``, registered by the quantization family: bit-packed integers plus scales);
* otherwise ``bitmask`` when the tensor is sparse enough (:mod:`slimkit.export.sparse_codec`), else
  ``dense``: as it is. Both are the format's own and registered here.
Decompression asks the registry for the codec each entry names and gives back the float state dict and
the notes (records) to attach to the loaded model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from slimkit.export.registry import ALIAS, Codec, Entry, codec_for_note, codec_named, register_codec, stored_tensor
from slimkit.export.sparse_codec import BITMASK, worth_bitmask

Header = dict[str, Entry]


class DenseCodec(Codec):
    """The tensor as it is, under its own name."""

    name = "dense"

    def encode(self, name: str, tensor: Tensor, note: Any, out: dict[str, Tensor]) -> Entry:
        out[name] = tensor.detach().contiguous()
        return {"codec": self.name}

    def decode(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> tuple[Tensor, None]:
        return tensors[name], None

    def check_stored(self, name: str, entry: Entry, tensors: dict[str, Tensor], where: str) -> None:
        stored_tensor(tensors, name, where)


DENSE = register_codec(DenseCodec())


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


def _codec_for(tensor: Tensor, note: Any) -> Codec:
    if note is not None:
        return codec_for_note(note)
    return BITMASK if worth_bitmask(tensor) else DENSE


def compress_state_dict(state: dict[str, Tensor], notes: Mapping[str, Any]) -> tuple[dict[str, Tensor], Header]:
    """Encode ``state`` for disk; ``notes`` maps tensor names to what their codec needs (QuantRecords).

    Returns:
        ``(tensors, header)``: the tensors to write with safetensors and the per-entry codec header.
    """
    aliases = _alias_map(state)
    notes = {aliases.get(n, n): note for n, note in notes.items()}  # a quantized tied lm_head: pack it once
    tensors: dict[str, Tensor] = {}
    header: Header = {}
    for name, t in state.items():
        if name in aliases:
            header[name] = {"codec": ALIAS, "of": aliases[name]}
        else:
            header[name] = _codec_for(t, notes.get(name)).encode(name, t.detach(), notes.get(name), tensors)
    return tensors, header


def decompress_state_dict(tensors: dict[str, Tensor], header: Header) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Inverse of :func:`compress_state_dict`: float state dict plus the notes of the tensors that had one.

    Raises:
        FormatError: an entry names a codec no family registered (the message lists the known ones).
    """
    state: dict[str, Tensor] = {}
    notes: dict[str, Any] = {}
    for name, entry in header.items():
        if entry.get("codec") == ALIAS:
            continue
        state[name], note = codec_named(entry.get("codec"), f"tensor {name!r}").decode(name, entry, tensors)
        if note is not None:
            notes[name] = note
    for name, entry in header.items():
        if entry.get("codec") == ALIAS:
            state[name] = state[entry["of"]]
    return state, notes
