"""CPU latency and throughput: warm-up, repeated timed runs, median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Median and spread of repeated runs of one workload."""

    median_ms: float
    min_ms: float
    max_ms: float
    items: int  # tokens, sentences or images per run

    @property
    def throughput(self) -> float:
        """Items per second at the median latency."""
        return self.items / (self.median_ms / 1000.0)


@torch.no_grad()
def time_workload(fn: Callable[[], object], items: int, warmup: int = 2, repeats: int = 5,
                  min_seconds: float = 0.5, max_repeats: int = 500) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then at least ``repeats`` times timed.

    Short workloads repeat until ``min_seconds`` of timed runs have accumulated (at most
    ``max_repeats``), so a millisecond-scale median is not decided by a single scheduler hiccup.
    """
    for _ in range(warmup):
        fn()
    runs: list[float] = []
    while len(runs) < max(repeats, 1) or (sum(runs) < min_seconds * 1000.0 and len(runs) < max_repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000.0)
    return Timing(statistics.median(runs), min(runs), max(runs), items)
