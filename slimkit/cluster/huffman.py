"""Canonical, length-limited Huffman coding of small-alphabet symbol streams, vectorised with numpy.

Deep Compression's last stage (Han, Mao & Dally 2016, section 4) Huffman-codes the cluster indices and
the relative positions of the surviving weights: both are far from uniform, and the paper saves another
20–30% with it. A code is described by one length per symbol (``uint8``, 0 for symbols that never
occur); codes are *canonical* (assigned in order of length, then symbol), so the lengths are the whole
table on disk. Lengths are capped at :data:`MAX_CODE_BITS` with the JPEG standard's adjustment
(ITU T.81 annex K.3), which keeps decoding a single lookup in a ``2^16``-entry table.

Encoding scatters every code's bits with one numpy operation per bit position. Decoding first looks up,
for *every* bit offset of the stream, the symbol and length a code starting there would have; the stream
is split into blocks of ``block`` symbols whose starting bit offsets are stored, so all blocks are then
followed in parallel, one symbol per step. A stream that does not decode to exactly the stored blocks
(a flipped bit, a damaged table) raises ``ValueError``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

#: Longest code; decoding builds a lookup table of 2^MAX_CODE_BITS entries.
MAX_CODE_BITS = 16
#: Symbols per independently decodable block (one stored 32-bit offset each).
BLOCK_SYMBOLS = 4096


def _huffman_depths(freqs: dict[int, int]) -> dict[int, int]:
    """Unlimited Huffman code length of each symbol of ``freqs`` (at least two symbols)."""
    heap: list[tuple[int, int, list[int]]] = [(f, s, [s]) for s, f in freqs.items()]
    heapq.heapify(heap)
    depth = dict.fromkeys(freqs, 0)
    while len(heap) > 1:
        f1, t1, a = heapq.heappop(heap)
        f2, t2, b = heapq.heappop(heap)
        for s in a + b:
            depth[s] += 1
        heapq.heappush(heap, (f1 + f2, min(t1, t2), a + b))
    return depth


def _limit_counts(counts: list[int], max_len: int) -> list[int]:
    """JPEG annex K.3: move codes longer than ``max_len`` up the tree; ``counts[l]`` = codes of length l."""
    counts = counts + [0] * max(0, max_len + 1 - len(counts))
    for i in range(len(counts) - 1, max_len, -1):
        while counts[i] > 0:
            j = i - 2
            while counts[j] == 0:
                j -= 1
            counts[i] -= 2
            counts[i - 1] += 1
            counts[j + 1] += 2
            counts[j] -= 1
    return counts[: max_len + 1]


def code_lengths(freqs: np.ndarray, max_len: int = MAX_CODE_BITS) -> np.ndarray:
    """Length-limited Huffman code lengths (uint8, one per symbol, 0 if the symbol never occurs)."""
    used = {int(s): int(f) for s, f in enumerate(freqs) if f > 0}
    lengths = np.zeros(len(freqs), dtype=np.uint8)
    if len(used) == 1:
        lengths[next(iter(used))] = 1
    if len(used) <= 1:
        return lengths
    if len(used) > 2**max_len:
        raise ValueError(f"{len(used)} symbols do not fit codes of at most {max_len} bits")
    depth = _huffman_depths(used)
    counts = [0] * (max(depth.values()) + 1)
    for d in depth.values():
        counts[d] += 1
    counts = _limit_counts(counts, max_len)
    by_frequency = sorted(used, key=lambda s: (-used[s], depth[s], s))  # most frequent get the shortest codes
    pos = 0
    for length, n in enumerate(counts):
        for s in by_frequency[pos: pos + n]:
            lengths[s] = length
        pos += n
    return lengths


def check_lengths(lengths: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``lengths`` describe a prefix code (Kraft sum ≤ 1, lengths ≤ the cap)."""
    if lengths.size and int(lengths.max()) > MAX_CODE_BITS:
        raise ValueError(f"a code length exceeds {MAX_CODE_BITS} bits")
    kraft = sum(2.0 ** (MAX_CODE_BITS - int(n)) for n in lengths if n) / 2.0**MAX_CODE_BITS
    if kraft > 1.0:
        raise ValueError(f"the code lengths are not a prefix code (Kraft sum {kraft:.4f} > 1)")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code (int64) of every symbol with a non-zero length."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, previous = 0, 0
    for s in sorted((s for s in range(len(lengths)) if lengths[s]), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        codes[s], previous = code, int(lengths[s])
        code += 1
    return codes


def stream_bits(symbols: np.ndarray, lengths: np.ndarray) -> int:
    """Bits the coded ``symbols`` take: Σ length(symbol)."""
    return int(lengths.astype(np.int64)[symbols].sum())


@dataclass
class Coded:
    """A coded stream: packed bits (uint8), its exact bit count, and the starting bit of every block."""

    data: np.ndarray
    bits: int
    block_offsets: np.ndarray  # uint32 (ceil(n / block),)


def encode(symbols: np.ndarray, lengths: np.ndarray, block: int = BLOCK_SYMBOLS) -> Coded:
    """Huffman-code ``symbols`` (int, each with a non-zero length) with the canonical code of ``lengths``."""
    sym = symbols.astype(np.int64)
    n_len = lengths.astype(np.int64)[sym]  # (n,)
    if sym.size and int(n_len.min()) == 0:
        raise ValueError("a symbol to encode has no code (its length is 0)")
    codes = canonical_codes(lengths)[sym]
    ends = np.cumsum(n_len)
    starts = ends - n_len
    total = int(ends[-1]) if sym.size else 0
    bits = np.zeros(total, dtype=np.uint8)
    for b in range(int(n_len.max()) if sym.size else 0):  # scatter bit b of every code at once
        sel = n_len > b
        bits[starts[sel] + b] = (codes[sel] >> (n_len[sel] - 1 - b)) & 1
    offsets = starts[::block].astype(np.uint32)
    return Coded(np.packbits(bits), total, offsets)


def _lookup_tables(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(symbol, length) for every ``width``-bit window value; length 0 where no code matches."""
    width = max(int(lengths.max()), 1)
    sym_of = np.zeros(2**width, dtype=np.int64)
    len_of = np.zeros(2**width, dtype=np.int64)
    codes = canonical_codes(lengths)
    for s in np.nonzero(lengths)[0]:
        span = width - int(lengths[s])
        lo = int(codes[s]) << span
        sym_of[lo: lo + (1 << span)] = s
        len_of[lo: lo + (1 << span)] = lengths[s]
    return sym_of, len_of, width


def decode(data: np.ndarray, bits: int, count: int, lengths: np.ndarray, block_offsets: np.ndarray,
           block: int = BLOCK_SYMBOLS) -> np.ndarray:
    """The ``count`` symbols (int64) of a stream made by :func:`encode`; ``ValueError`` if it is inconsistent."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    check_lengths(lengths)
    if not lengths.any() or len(block_offsets) != -(-count // block) or data.size * 8 < bits:
        raise ValueError("the coded stream does not match its table or block count")
    sym_of, len_of, width = _lookup_tables(lengths)
    stream = np.concatenate([np.unpackbits(data)[:bits], np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    window = np.zeros(bits + 1, dtype=np.int64)  # the `width` bits starting at each offset
    for b in range(width):
        window = (window << 1) | stream[b: b + bits + 1]
    symbol_at, length_at = sym_of[window], len_of[window]  # (bits + 1,)
    ptr = block_offsets.astype(np.int64)
    if bool((ptr > bits).any()) or bool((np.diff(ptr) <= 0).any()) or (ptr.size and ptr[0] != 0):
        raise ValueError("the coded stream's block offsets are out of order or out of range")
    steps = min(block, count)
    active_steps = np.full(len(ptr), steps)
    active_steps[-1] = count - (len(ptr) - 1) * steps  # symbols in the last block
    out = np.zeros((len(ptr), steps), dtype=np.int64)  # (blocks, block)
    end = ptr.copy()
    bad = np.zeros(len(ptr), dtype=bool)
    for i in range(steps):
        active = i < active_steps
        out[:, i] = symbol_at[ptr]
        step = np.where(active, length_at[ptr], 0)
        bad |= active & (step == 0)
        end += step
        ptr = np.minimum(ptr + step, bits)
    if bool(bad.any()) or not np.array_equal(end, np.concatenate([block_offsets[1:].astype(np.int64), [bits]])):
        raise ValueError("the coded stream is corrupt: its codes do not end where its blocks do")
    return out.reshape(-1)[:count]
