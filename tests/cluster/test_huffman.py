"""Huffman coding: exact round trips on random and skewed streams, length limits, and corrupt streams refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.cluster import huffman


def _round_trip(symbols: np.ndarray, alphabet: int, block: int) -> huffman.Coded:
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
    huffman.check_lengths(lengths)
    coded = huffman.encode(symbols, lengths, block)
    decoded = huffman.decode(coded.data, coded.bits, symbols.size, lengths, coded.block_offsets, block)
    assert np.array_equal(decoded, symbols)
    return coded


@settings(max_examples=80, deadline=None)
@given(data=st.data(), alphabet=st.integers(1, 256), n=st.integers(0, 3000), block=st.sampled_from([1, 7, 64, 4096]))
def test_random_streams_round_trip_exactly(data, alphabet, n, block):
    seed = data.draw(st.integers(0, 2**32 - 1))
    symbols = np.random.default_rng(seed).integers(0, alphabet, n)
    _round_trip(symbols, alphabet, block)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.floats(0.01, 0.99), n=st.integers(1, 5000), alphabet=st.integers(2, 256))
def test_skewed_streams_round_trip_and_approach_the_entropy(seed, p, n, alphabet):
    symbols = np.random.default_rng(seed).geometric(p, n) % alphabet  # one symbol dominates
    coded = _round_trip(symbols, alphabet, 256)
    freqs = np.bincount(symbols, minlength=alphabet)
    probs = freqs[freqs > 0] / n
    entropy = float(-(probs * np.log2(probs)).sum())
    assert coded.bits <= n * (entropy + 1) + 1e-9  # Huffman is within one bit per symbol of the entropy


def test_lengths_are_capped_and_still_a_prefix_code():
    freqs = np.array([2**i for i in range(40)])  # Fibonacci-like skew: unlimited depth would reach 39
    lengths = huffman.code_lengths(freqs)
    assert int(lengths.max()) == huffman.MAX_CODE_BITS
    assert sum(2.0 ** -int(n) for n in lengths) <= 1.0
    _round_trip(np.repeat(np.arange(40), 3), 40, 64)


def test_single_symbol_and_empty_streams():
    coded = _round_trip(np.zeros(100, dtype=np.int64), 5, 64)
    assert coded.bits == 100
    assert _round_trip(np.zeros(0, dtype=np.int64), 5, 64).bits == 0


def test_corrupt_streams_and_tables_are_refused():
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.4, 2000) - 1, 9)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=10))
    coded = huffman.encode(symbols, lengths, 256)
    flipped = coded.data.copy()
    flipped[len(flipped) // 3] ^= 0b00100000
    with pytest.raises(ValueError, match="corrupt"):
        huffman.decode(flipped, coded.bits, symbols.size, lengths, coded.block_offsets, 256)
    bad_table = lengths.copy()
    bad_table[bad_table.argmax()] = 1
    with pytest.raises(ValueError, match="Kraft|corrupt"):
        huffman.decode(coded.data, coded.bits, symbols.size, bad_table, coded.block_offsets, 256)
    with pytest.raises(ValueError, match="block"):
        huffman.decode(coded.data, coded.bits, symbols.size, lengths, coded.block_offsets[::-1].copy(), 256)


def test_a_lenet_sized_stream_codes_in_well_under_a_second():
    import time

    symbols = np.random.default_rng(1).geometric(0.15, 300_000) % 32
    start = time.perf_counter()
    coded = _round_trip(symbols, 32, huffman.BLOCK_SYMBOLS)
    assert time.perf_counter() - start < 5.0  # measured ~0.1 s; generous for a loaded machine
    assert coded.bits < math.ceil(math.log2(32)) * symbols.size
