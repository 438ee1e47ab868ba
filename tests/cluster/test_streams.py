"""Relative positions with fillers and fixed-width packing round-trip exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.cluster.streams import (
    best_position_bits,
    gaps,
    pack_fixed,
    position_symbols,
    positions_from_symbols,
    symbol_count,
    unpack_fixed,
)


@settings(max_examples=80, deadline=None)
@given(numel=st.integers(1, 4000), density=st.floats(0.0, 1.0), bits=st.integers(1, 8), seed=st.integers(0, 99))
def test_positions_round_trip_with_fillers(numel, density, bits, seed):
    kept = np.random.default_rng(seed).random(numel) < density
    positions = np.flatnonzero(kept)
    symbols = position_symbols(positions, bits)
    assert symbols.size == symbol_count(gaps(positions), bits)
    assert int(symbols.max(initial=0)) < 2**bits
    assert np.array_equal(positions_from_symbols(symbols, bits, numel), positions)


def test_fillers_bridge_long_gaps_as_in_the_paper():
    symbols = position_symbols(np.array([1, 20]), 3)  # 3 bits: symbols 0..6 carry a value, 7 skips 7 zeros
    assert symbols.tolist() == [1, 7, 7, 4]
    with pytest.raises(ValueError, match="past the end"):
        positions_from_symbols(symbols, 3, 20)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 16), n=st.integers(0, 500), seed=st.integers(0, 99))
def test_fixed_width_round_trip(bits, n, seed):
    values = np.random.default_rng(seed).integers(0, 2**bits, n)
    packed = pack_fixed(values, bits)
    assert packed.size == (n * bits + 7) // 8
    assert np.array_equal(unpack_fixed(packed, bits, n), values)


def test_the_cheapest_width_is_chosen():
    gap_values = np.full(100, 2)  # every third entry kept: 2 bits hold gap 2 without fillers
    assert best_position_bits(gap_values, lambda s, b: s.size * b) == 2
