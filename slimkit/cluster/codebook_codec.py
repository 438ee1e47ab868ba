"""The ``codebook`` codec of the slimkit format: a clustered weight as fixed-width indices plus its codebook.

A weight carrying a :class:`~slimkit.cluster.record.CodebookRecord` is stored as ``NAME.codebook`` (groups,
K) in the codebook's dtype and ``NAME.indices``, bit-packed at ``index_bits`` bits each, in one of two
layouts, whichever is smaller for the tensor:

* ``dense``: one index per entry and, if the weight holds exact zeros (pruned, or a few that happen to
  be zero), ``NAME.positions``: where the zeros are, so a nearly dense weight keeps ``ceil(log2 K)``-bit
  indices instead of paying a bit for a zero symbol on every entry;
* ``sparse``: indices of the kept entries only, plus ``NAME.positions``: where the kept entries are.

Positions are Deep Compression's relative positions (:mod:`slimkit.cluster.streams`) at ``position_bits``
bits each, the width chosen per tensor for the shortest stream.

Decoding gives back exactly the saved values and the record, so a reloaded model re-saves the same way.
The weight-sharing family registers this codec with the format's registry when this module is imported.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slimkit.cluster.record import (
    CodebookRecord,
    clustered_values,
    codebook_indices,
    matrix_shape,
    set_share_note,
    share_notes,
)
from slimkit.cluster.streams import (
    best_position_bits,
    gaps,
    pack_fixed,
    packed_bytes,
    position_symbols,
    positions_from_symbols,
    unpack_fixed,
)
from slimkit.export.registry import (
    FLOAT_DTYPES,
    Codec,
    Entry,
    FormatError,
    entry_shape,
    register_codec,
    stored_tensor,
)

LAYOUTS = ("dense", "sparse")


def index_width(symbols: int) -> int:
    """Bits that index ``symbols`` distinct symbols (at least 1)."""
    return max(1, (symbols - 1).bit_length())


def dtype_name(tensor: Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def check_int_fields(entry: Entry, where: str, fields: dict[str, tuple[int, int]]) -> None:
    """Each of ``fields`` is an integer within its (low, high) bounds."""
    for key, (low, high) in fields.items():
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise FormatError(f"{where}: '{key}' must be an integer from {low} to {high}, got {value!r}")


def check_common_entry(entry: Entry, where: str) -> tuple[list[int], int]:
    """Shape, dtype and layout of a codebook or Huffman entry; returns (shape, numel)."""
    shape = entry_shape(entry, where)
    if entry.get("dtype") not in FLOAT_DTYPES:
        raise FormatError(f"{where}: 'dtype' must be one of {', '.join(FLOAT_DTYPES)}, got {entry.get('dtype')!r}")
    if entry.get("layout") not in LAYOUTS:
        raise FormatError(f"{where}: 'layout' must be one of {', '.join(LAYOUTS)}, got {entry.get('layout')!r}")
    numel = math.prod(shape)
    check_int_fields(entry, where, {"kept": (0, numel)})
    if entry["layout"] == "sparse" or "position_bits" in entry:  # dense codebook entries: the zeros' positions
        listed = entry["kept"] if entry["layout"] == "sparse" else numel - entry["kept"]
        check_int_fields(entry, where, {"position_bits": (1, 8), "position_symbols": (listed, numel)})
    return shape, numel


def check_codebook(tensors: dict[str, Tensor], name: str, shape: list[int], where: str) -> Tensor:
    """The stored codebook of ``name``: floating, (1 or rows, K) with 1 <= K <= 2^16."""
    book = stored_tensor(tensors, f"{name}.codebook", where)
    rows = matrix_shape(shape)[0]
    if not book.is_floating_point() or book.dim() != 2 or book.shape[0] not in (1, rows) \
            or not 1 <= book.shape[1] <= 2**16:
        raise FormatError(f"{where}: the codebook has shape {tuple(book.shape)} ({book.dtype}); shape {shape} needs "
                          f"a float (1 or {rows}, K) codebook with 1 <= K <= 65536")
    return book


def check_bytes(tensor: Tensor, needed: int, what: str, where: str) -> None:
    if tensor.dtype != torch.uint8 or tensor.dim() != 1 or tensor.numel() != needed:
        raise FormatError(f"{where}: {what} holds {tensor.numel()} {tensor.dtype} values, the header implies "
                          f"{needed} uint8")


def weight_with(index: np.ndarray, kept: np.ndarray, codebook: Tensor, entry: Entry, name: str) -> Tensor:
    """The decoded weight of ``entry``'s shape and dtype from flat ``index`` and ``kept`` arrays."""
    if index.size and (int(index.min()) < 0 or int(index.max()) >= codebook.shape[1]):
        raise FormatError(f"tensor {name!r}: a stored index lies outside its codebook of {codebook.shape[1]} values")
    rows, cols = matrix_shape(entry["shape"])
    index_t = torch.from_numpy(index.reshape(rows, cols))
    kept_t = torch.from_numpy(kept.reshape(rows, cols))
    weight = clustered_values(index_t, kept_t, codebook, getattr(torch, entry["dtype"]))
    return weight.reshape(entry["shape"])


def sparse_scatter(numel: int, positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat (index, kept) arrays with ``values`` at ``positions`` and index 0 elsewhere."""
    index = np.zeros(numel, dtype=np.int64)
    kept = np.zeros(numel, dtype=bool)
    index[positions], kept[positions] = values, True
    return index, kept


def _positions_stream(listed: np.ndarray) -> tuple[int, np.ndarray, int]:
    """(width, symbols, bytes) of the cheapest fixed-width relative-position stream of flat ``listed``."""
    p = best_position_bits(gaps(listed), lambda symbols, b: symbols.size * b)
    symbols = position_symbols(listed, p)
    return p, symbols, packed_bytes(symbols.size, p)


class ShareNoteCodec(Codec):
    """A codec of the weight-sharing family: its notes are the share notes of type :attr:`note_type`
    (a CodebookRecord or a HuffmanRecord) that the cluster methods attach to modules."""

    def notes(self, model: nn.Module) -> dict[str, Any]:
        assert self.note_type is not None
        return {k: v for k, v in share_notes(model).items() if isinstance(v, self.note_type)}

    def attach(self, model: nn.Module, name: str, note: Any) -> None:
        module_name, _, param_name = name.rpartition(".")
        set_share_note(model.get_submodule(module_name), param_name, note)


class CodebookCodec(ShareNoteCodec):
    """Bit-packed indices (and positions) plus the codebook of every weight carrying a CodebookRecord."""

    name = "codebook"
    note_type = CodebookRecord

    def encode(self, name: str, tensor: Tensor, note: Any, out: dict[str, Tensor]) -> Entry:
        book: Tensor = note.codebook
        index_t, kept_t = codebook_indices(name, tensor, book)
        index, kept = index_t.reshape(-1).numpy(), kept_t.reshape(-1).numpy()
        numel, nnz, bits = index.size, int(kept.sum()), index_width(book.shape[1])
        dense = _positions_stream(np.flatnonzero(~kept))  # the zeros, if any
        sparse = _positions_stream(np.flatnonzero(kept))
        is_sparse = nnz < numel and packed_bytes(nnz, bits) + sparse[2] < packed_bytes(numel, bits) + dense[2]
        p, symbols, _ = sparse if is_sparse else dense
        out[f"{name}.codebook"] = book.detach().contiguous()
        out[f"{name}.indices"] = torch.from_numpy(pack_fixed(index[kept] if is_sparse else index, bits))
        entry: Entry = {"codec": self.name, "shape": list(tensor.shape), "dtype": dtype_name(tensor), "kept": nnz,
                        "index_bits": bits, "layout": "sparse" if is_sparse else "dense"}
        if is_sparse or nnz < numel:
            out[f"{name}.positions"] = torch.from_numpy(pack_fixed(symbols, p))
            entry |= {"position_bits": p, "position_symbols": int(symbols.size)}
        return entry

    def _positions(self, name: str, entry: Entry, tensors: dict[str, Tensor], count: int) -> np.ndarray:
        """The flat positions the entry lists (kept entries if sparse, zeros if dense), ``count`` of them."""
        if "position_bits" not in entry:
            return np.zeros(0, dtype=np.int64)
        p, numel = entry["position_bits"], math.prod(entry["shape"])
        try:
            positions = positions_from_symbols(
                unpack_fixed(tensors[f"{name}.positions"].numpy(), p, entry["position_symbols"]), p, numel)
        except ValueError as err:
            raise FormatError(f"tensor {name!r}: corrupt positions ({err})") from None
        if positions.size != count:
            raise FormatError(f"tensor {name!r}: the positions name {positions.size} entries, the header implies "
                              f"{count}")
        return positions

    def decode(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> tuple[Tensor, CodebookRecord]:
        book = tensors[f"{name}.codebook"]
        numel, bits, nnz = math.prod(entry["shape"]), entry["index_bits"], entry["kept"]
        if entry["layout"] == "dense":
            index = unpack_fixed(tensors[f"{name}.indices"].numpy(), bits, numel)
            kept = np.ones(numel, dtype=bool)
            kept[self._positions(name, entry, tensors, numel - nnz)] = False
        else:
            positions = self._positions(name, entry, tensors, nnz)
            index, kept = sparse_scatter(numel, positions, unpack_fixed(tensors[f"{name}.indices"].numpy(), bits, nnz))
        return weight_with(index, kept, book, entry, name), CodebookRecord(book)

    def check_entry(self, entry: Entry, where: str) -> None:
        _, numel = check_common_entry(entry, where)
        check_int_fields(entry, where, {"index_bits": (1, 16)})
        if entry["layout"] == "dense" and entry["kept"] < numel and "position_bits" not in entry:
            raise FormatError(f"{where}: a dense entry with {numel - entry['kept']} zeros needs their positions "
                              "('position_bits', 'position_symbols')")

    def check_stored(self, name: str, entry: Entry, tensors: dict[str, Tensor], where: str) -> None:
        shape, numel = entry["shape"], math.prod(entry["shape"])
        book = check_codebook(tensors, name, shape, where)
        if 2 ** entry["index_bits"] < book.shape[1]:
            raise FormatError(f"{where}: {entry['index_bits']}-bit indices cannot address {book.shape[1]} centroids")
        count = entry["kept"] if entry["layout"] == "sparse" else numel
        check_bytes(stored_tensor(tensors, f"{name}.indices", where), packed_bytes(count, entry["index_bits"]),
                    "the index stream", where)
        if "position_bits" in entry:
            check_bytes(stored_tensor(tensors, f"{name}.positions", where),
                        packed_bytes(entry["position_symbols"], entry["position_bits"]), "the position stream", where)

    def breakdown(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> dict[str, int]:
        book = tensors[f"{name}.codebook"]
        parts = {"values": tensors[f"{name}.indices"].numel(), "codebook": book.numel() * book.element_size()}
        if f"{name}.positions" in tensors:
            parts["positions"] = tensors[f"{name}.positions"].numel()
        return parts


register_codec(CodebookCodec())
