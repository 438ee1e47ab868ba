"""Symbol streams of a sparse or clustered weight: fixed-width bit packing and relative positions.

Deep Compression stores a pruned layer in compressed sparse form with *relative* indices: each kept
weight records how many zeros precede it since the previous kept one, in ``p`` bits (8 for conv and 5
for fully connected layers in the paper); a gap too long for ``p`` bits is bridged with *filler*
entries. Here the position stream uses the alphabet ``0 .. 2^p − 1``: a symbol ``s < 2^p − 1`` means
"skip ``s`` zeros, then the next kept weight", the symbol ``2^p − 1`` means "skip ``2^p − 1`` zeros" and
carries no weight (so no value slot is wasted on a filler). Trailing zeros need no symbol: the tensor's
size is known. :func:`best_position_bits` picks ``p`` per tensor for the smallest stream. Fixed-width
packing writes values of 1–16 bits most significant bit first, back to back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Position widths tried per tensor.
POSITION_BITS = range(1, 9)


def packed_bytes(count: int, bits: int) -> int:
    """Bytes that ``count`` values of ``bits`` bits take packed."""
    return (count * bits + 7) // 8


def pack_fixed(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned integers ``0 <= v < 2^bits`` (bits in 1..16) into uint8, MSB first."""
    if not 1 <= bits <= 16:
        raise ValueError(f"fixed-width packing takes 1 to 16 bits, got {bits}")
    v = values.astype(np.int64).reshape(-1)
    if v.size and (int(v.min()) < 0 or int(v.max()) >= 2**bits):
        raise ValueError(f"values out of range for {bits}-bit packing")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return np.packbits(((v[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1))


def unpack_fixed(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_fixed`: ``count`` values (int64)."""
    if data.size != packed_bytes(count, bits):
        raise ValueError(f"{data.size} bytes cannot hold exactly {count} values of {bits} bits "
                         f"({packed_bytes(count, bits)} bytes)")
    planes = np.unpackbits(data)[: count * bits].reshape(count, bits).astype(np.int64)
    return planes @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))


def gaps(positions: np.ndarray) -> np.ndarray:
    """Zeros before each kept entry since the previous one, from sorted flat ``positions`` (int64)."""
    return np.diff(positions.astype(np.int64), prepend=-1) - 1


def position_symbols(positions: np.ndarray, bits: int) -> np.ndarray:
    """The relative-position stream (int64) of sorted flat ``positions``, with fillers for long gaps."""
    filler = 2**bits - 1
    d = gaps(positions)
    fillers, rest = np.divmod(d, filler)
    count = fillers + 1  # symbols per kept entry: its fillers, then itself
    out = np.full(int(count.sum()), filler, dtype=np.int64)
    out[np.cumsum(count) - 1] = rest
    return out


def positions_from_symbols(symbols: np.ndarray, bits: int, numel: int) -> np.ndarray:
    """Inverse of :func:`position_symbols`: the flat positions (int64); ``ValueError`` if they leave ``numel``."""
    filler = 2**bits - 1
    if symbols.size and (int(symbols.min()) < 0 or int(symbols.max()) > filler):
        raise ValueError(f"position symbols out of range for {bits}-bit positions")
    is_value = symbols < filler
    advance = np.where(is_value, symbols + 1, filler)
    positions = np.cumsum(advance)[is_value] - 1
    if positions.size and int(positions[-1]) >= numel:
        raise ValueError(f"the positions run past the end of the tensor ({int(positions[-1])} >= {numel})")
    return positions


def symbol_count(gap_values: np.ndarray, bits: int) -> int:
    """Symbols the position stream of these gaps takes at ``bits`` bits (kept entries plus fillers)."""
    return int(gap_values.size + (gap_values // (2**bits - 1)).sum())


def best_position_bits(gap_values: np.ndarray, cost: Callable[[np.ndarray, int], int]) -> int:
    """The position width in :data:`POSITION_BITS` whose stream ``cost(symbols, bits)`` (in bits) is least."""
    positions = np.cumsum(gap_values + 1) - 1
    return min(POSITION_BITS, key=lambda b: (cost(position_symbols(positions, b), b), b))
