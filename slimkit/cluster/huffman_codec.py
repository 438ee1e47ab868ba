"""The ``huffman`` codec of the slimkit format: Deep Compression's last stage, entropy-coded indices and positions.

A weight carrying a :class:`~slimkit.cluster.record.HuffmanRecord` is stored with canonical Huffman codes
(:mod:`slimkit.cluster.huffman`) in the layout that is smaller for it:

* ``sparse``: the relative positions of the kept entries (:mod:`slimkit.cluster.streams`, the width
  ``position_bits`` chosen per tensor for the shortest coded stream) in ``NAME.positions``, and their
  codebook indices in ``NAME.indices``; a weight without a codebook (only pruned) stores its kept values
  as they are in ``NAME.values`` instead;
* ``dense`` (clustered weights only): one coded index per entry, symbol ``K`` for an exact zero.

``NAME.tables`` holds the code lengths of the index alphabet then of the position alphabet (one byte
per symbol: the whole canonical table) and the 32-bit little-endian starting bit of every
:data:`~slimkit.cluster.huffman.BLOCK_SYMBOLS`-symbol block of each stream (indices first), so blocks
decode in parallel. Decoding is exact; a stream that does not end where its blocks say is a
:class:`~slimkit.export.registry.FormatError`. Registered with the format's registry on import.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slimkit.cluster import huffman
from slimkit.cluster.codebook_codec import (
    ShareNoteCodec,
    check_bytes,
    check_codebook,
    check_common_entry,
    check_int_fields,
    dtype_name,
    sparse_scatter,
    weight_with,
)
from slimkit.cluster.record import HuffmanRecord, codebook_indices
from slimkit.cluster.streams import best_position_bits, gaps, position_symbols, positions_from_symbols
from slimkit.export.registry import Entry, FormatError, register_codec, stored_tensor

BLOCK = huffman.BLOCK_SYMBOLS


def _lengths(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    return huffman.code_lengths(np.bincount(symbols, minlength=alphabet))


def coded_cost(symbols: np.ndarray, alphabet: int) -> int:
    """Bits a stream of ``symbols`` takes coded, with its table and block offsets."""
    lengths = _lengths(symbols, alphabet)
    return huffman.stream_bits(symbols, lengths) + 8 * alphabet + 32 * -(-symbols.size // BLOCK)


class HuffmanCodec(ShareNoteCodec):
    """Huffman-coded positions and indices (or raw kept values) of every weight carrying a HuffmanRecord."""

    name = "huffman"
    note_type = HuffmanRecord

    def encode(self, name: str, tensor: Tensor, note: Any, out: dict[str, Tensor]) -> Entry:
        book: Tensor | None = note.codebook
        if book is not None:
            index_t, kept_t = codebook_indices(name, tensor, book)
            index, kept = index_t.reshape(-1).numpy(), kept_t.reshape(-1).numpy()
            out[f"{name}.codebook"] = book.detach().contiguous()
        else:
            kept = (tensor.detach().reshape(-1) != 0).numpy()
        numel, nnz = kept.size, int(kept.sum())
        entry: Entry = {"codec": self.name, "shape": list(tensor.shape), "dtype": dtype_name(tensor), "kept": nnz,
                        "block": BLOCK}
        positions = np.flatnonzero(kept)
        p = best_position_bits(gaps(positions), lambda symbols, b: coded_cost(symbols, 2**b))
        pos_symbols = position_symbols(positions, p)
        if book is None:
            out[f"{name}.values"] = tensor.detach().reshape(-1)[torch.from_numpy(positions)].contiguous()
            return self._write(name, entry | {"layout": "sparse"}, None, 0, pos_symbols, p, out)
        k = book.shape[1]
        dense_symbols = np.where(kept, index, k)
        dense_alphabet = k + (nnz < numel)
        sparse_cost = coded_cost(index[positions], k) + coded_cost(pos_symbols, 2**p)
        if nnz < numel and sparse_cost < coded_cost(dense_symbols, dense_alphabet):
            return self._write(name, entry | {"layout": "sparse"}, index[positions], k, pos_symbols, p, out)
        return self._write(name, entry | {"layout": "dense"}, dense_symbols, dense_alphabet, None, 0, out)

    def _write(self, name: str, entry: Entry, indices: np.ndarray | None, alphabet: int,
               pos_symbols: np.ndarray | None, p: int, out: dict[str, Tensor]) -> Entry:
        tables, offsets = [], []
        for key, symbols, size in (("indices", indices, alphabet), ("positions", pos_symbols, 2**p)):
            if symbols is None:
                continue
            lengths = _lengths(symbols, size)
            coded = huffman.encode(symbols, lengths, BLOCK)
            out[f"{name}.{key}"] = torch.from_numpy(coded.data)
            entry[f"{key}_stream_bits"] = coded.bits
            tables.append(lengths)
            offsets.append(coded.block_offsets.astype("<u4").view(np.uint8))
        if indices is not None:
            entry["alphabet"] = alphabet
        if pos_symbols is not None:
            entry |= {"position_bits": p, "position_symbols": int(pos_symbols.size)}
        out[f"{name}.tables"] = torch.from_numpy(np.concatenate(tables + offsets).astype(np.uint8))
        return entry

    def _streams(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> dict[str, np.ndarray]:
        """Decoded symbol streams ``indices`` / ``positions`` of the entry."""
        tables = tensors[f"{name}.tables"].numpy()
        sizes = self._stream_sizes(entry)
        at, lengths = 0, {}
        for key, (alphabet, _) in sizes.items():
            lengths[key], at = tables[at: at + alphabet], at + alphabet
        streams = {}
        for key, (_, count) in sizes.items():
            blocks = -(-count // entry["block"])
            offsets = tables[at: at + 4 * blocks].view("<u4")
            at += 4 * blocks
            try:
                streams[key] = huffman.decode(tensors[f"{name}.{key}"].numpy(), entry[f"{key}_stream_bits"], count,
                                              lengths[key], offsets, entry["block"])
            except ValueError as err:
                raise FormatError(f"tensor {name!r}: the Huffman-coded {key} do not decode ({err})") from None
        return streams

    def _stream_sizes(self, entry: Entry) -> dict[str, tuple[int, int]]:
        """(alphabet, symbol count) of each stored stream, in storage order."""
        sizes = {}
        if "alphabet" in entry:
            count = entry["kept"] if entry["layout"] == "sparse" else math.prod(entry["shape"])
            sizes["indices"] = (entry["alphabet"], count)
        if entry["layout"] == "sparse":
            sizes["positions"] = (2 ** entry["position_bits"], entry["position_symbols"])
        return sizes

    def decode(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> tuple[Tensor, HuffmanRecord]:
        streams = self._streams(name, entry, tensors)
        numel = math.prod(entry["shape"])
        book = tensors.get(f"{name}.codebook")
        if entry["layout"] == "dense":
            assert book is not None  # check_stored demands it
            kept = streams["indices"] < book.shape[1]
            return weight_with(np.where(kept, streams["indices"], 0), kept, book, entry, name), HuffmanRecord(book)
        try:
            positions = positions_from_symbols(streams["positions"], entry["position_bits"], numel)
        except ValueError as err:
            raise FormatError(f"tensor {name!r}: corrupt positions ({err})") from None
        if positions.size != entry["kept"]:
            raise FormatError(f"tensor {name!r}: the positions name {positions.size} kept entries, the header "
                              f"{entry['kept']}")
        if book is None:
            values = tensors[f"{name}.values"]
            flat = torch.zeros(numel, dtype=values.dtype)
            flat[torch.from_numpy(positions)] = values
            return flat.reshape(entry["shape"]), HuffmanRecord(None)
        index, kept = sparse_scatter(numel, positions, streams["indices"])
        return weight_with(index, kept, book, entry, name), HuffmanRecord(book)

    def check_entry(self, entry: Entry, where: str) -> None:
        _, numel = check_common_entry(entry, where)
        check_int_fields(entry, where, {"block": (1, 2**20)})
        if "alphabet" in entry:
            check_int_fields(entry, where, {"alphabet": (1, 2**16 + 1), "indices_stream_bits": (0, 16 * numel)})
        elif entry["layout"] == "dense":
            raise FormatError(f"{where}: a dense Huffman entry needs an index 'alphabet'")
        if entry["layout"] == "sparse":
            check_int_fields(entry, where, {"positions_stream_bits": (0, 32 * numel)})

    def check_stored(self, name: str, entry: Entry, tensors: dict[str, Tensor], where: str) -> None:
        shape = entry["shape"]
        if "alphabet" in entry:
            book = check_codebook(tensors, name, shape, where)
            if entry["alphabet"] not in (book.shape[1], book.shape[1] + 1):
                raise FormatError(f"{where}: an index alphabet of {entry['alphabet']} symbols does not fit a "
                                  f"codebook of {book.shape[1]} values")
        else:
            values = stored_tensor(tensors, f"{name}.values", where)
            if values.dim() != 1 or values.numel() != entry["kept"] or str(values.dtype) != f"torch.{entry['dtype']}":
                raise FormatError(f"{where}: {values.numel()} {values.dtype} values are stored, the header says "
                                  f"{entry['kept']} {entry['dtype']}")
        sizes = self._stream_sizes(entry)
        for key in sizes:
            check_bytes(stored_tensor(tensors, f"{name}.{key}", where), -(-entry[f"{key}_stream_bits"] // 8),
                        f"the {key} stream", where)
        needed = sum(alphabet + 4 * -(-count // entry["block"]) for alphabet, count in sizes.values())
        check_bytes(stored_tensor(tensors, f"{name}.tables", where), needed, "the Huffman tables", where)

    def breakdown(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> dict[str, int]:
        def size(key: str) -> int:
            t = tensors.get(f"{name}.{key}")
            return 0 if t is None else t.numel() * t.element_size()

        return {"values": size("indices") + size("values"), "positions": size("positions"),
                "codebook": size("codebook"), "tables": size("tables")}


register_codec(HuffmanCodec())
