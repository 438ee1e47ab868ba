"""Pure sparsity schedules for gradual pruning, as functions of training time.

Zhu & Gupta (2017, "To prune, or not to prune") raise sparsity from ``s_i`` to ``s_f`` over ``n``
pruning updates spaced ``Δt`` apart, starting at ``t0``:

    s_t = s_f + (s_i − s_f) · (1 − (t − t0) / (n·Δt))³      for t in {t0, t0 + Δt, …, t0 + n·Δt}

Pruning fast early (while redundant weights abound) and slowly near the end. Time is any monotone
unit (training progress in [0, 1] or optimizer steps); the schedule is held constant between updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def cubic_sparsity(t: float, initial: float, final: float, start: float, end: float) -> float:
    """Zhu & Gupta's cubic sparsity at time ``t`` (continuous form, clamped outside [start, end]).

    Args:
        t: current time.
        initial: sparsity ``s_i`` at ``start``.
        final: sparsity ``s_f`` reached at ``end``.
        start: ``t0``, the first pruning update.
        end: ``t0 + n·Δt``, the last pruning update.

    Returns:
        The sparsity: ``initial`` at or before ``start``, ``final`` at or after ``end``.
    """
    if end <= start:
        return final if t >= end else initial
    frac = min(max((t - start) / (end - start), 0.0), 1.0)
    return final + (initial - final) * (1.0 - frac) ** 3


@dataclass(frozen=True)
class CubicSchedule:
    """A cubic schedule sampled at discrete update times ``start, start + frequency, …, end``."""

    initial: float
    final: float
    start: float
    end: float
    frequency: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.initial <= self.final <= 1.0:
            raise ValueError(f"need 0 <= initial <= final <= 1, got {self.initial}, {self.final}")
        if self.end < self.start or self.frequency <= 0:
            raise ValueError(f"need start <= end and frequency > 0, got {self.start}, {self.end}, {self.frequency}")

    def last_update(self, t: float) -> float | None:
        """The most recent update time at or before ``t``, or ``None`` before ``start``."""
        if t < self.start:
            return None
        if t >= self.end:
            return self.end
        # A small tolerance keeps t = start + k·frequency on update k despite float rounding.
        k = math.floor((t - self.start) / self.frequency + 1e-9)
        return min(self.start + k * self.frequency, self.end)

    def sparsity_at(self, t: float) -> float | None:
        """Target sparsity in force at time ``t`` (held between updates), ``None`` before ``start``."""
        update = self.last_update(t)
        if update is None:
            return None
        return cubic_sparsity(update, self.initial, self.final, self.start, self.end)
