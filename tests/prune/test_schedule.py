"""The cubic (Zhu & Gupta) schedule: exact values at start, midpoint and end; held between updates."""

from __future__ import annotations

import pytest

from slimkit.prune.schedule import CubicSchedule, cubic_sparsity


def test_cubic_values_at_start_midpoint_end() -> None:
    assert cubic_sparsity(0.1, 0.0, 0.9, 0.1, 0.9) == pytest.approx(0.0)
    # midpoint: s_f + (s_i - s_f) * (1/2)^3 = 0.9 - 0.9/8
    assert cubic_sparsity(0.5, 0.0, 0.9, 0.1, 0.9) == pytest.approx(0.7875)
    assert cubic_sparsity(0.9, 0.0, 0.9, 0.1, 0.9) == pytest.approx(0.9)
    assert cubic_sparsity(1.0, 0.2, 0.9, 0.1, 0.9) == pytest.approx(0.9)
    assert cubic_sparsity(0.0, 0.2, 0.9, 0.1, 0.9) == pytest.approx(0.2)


def test_schedule_holds_between_updates_and_is_silent_before_start() -> None:
    s = CubicSchedule(initial=0.0, final=0.8, start=10, end=50, frequency=10)
    assert s.sparsity_at(9) is None
    assert s.sparsity_at(10) == pytest.approx(0.0)
    assert s.sparsity_at(19) == s.sparsity_at(10)
    assert s.sparsity_at(20) == pytest.approx(0.8 - 0.8 * 0.75**3)
    assert s.sparsity_at(30) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert s.sparsity_at(50) == pytest.approx(0.8) and s.sparsity_at(1000) == pytest.approx(0.8)


def test_schedule_is_monotone() -> None:
    s = CubicSchedule(0.1, 0.95, 0.0, 0.7, 0.05)
    values = [s.sparsity_at(i / 100) for i in range(101)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))  # type: ignore[operator]


def test_invalid_schedules_are_refused() -> None:
    with pytest.raises(ValueError):
        CubicSchedule(0.5, 0.2, 0.0, 1.0, 0.1)
    with pytest.raises(ValueError):
        CubicSchedule(0.0, 0.5, 0.5, 0.2, 0.1)
