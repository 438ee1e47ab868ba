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
def time_workload(fn: Callable[[], object], items: int, warmup: int = 2, repeats: int = 5) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000.0)
    return Timing(statistics.median(runs), min(runs), max(runs), items)
