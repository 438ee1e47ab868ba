"""Budgets and the trial loop of the budget search: which points of the search path to try, and which to keep.

A :class:`Budget` is a size on disk (``--target-size 40MB``), a relative metric loss (``--max-metric-loss 1%``),
or both, plus the number of trials allowed. :func:`choose_point` walks the search path
(:mod:`slimkit.search.plan`) with a caller's ``try_point(i)`` that really compresses, saves and evaluates
point ``i``: for a size, it starts at the first point whose estimate fits and tightens by the estimate's
measured error until the saved artifact fits; for a loss, it bisects the path (loss grows along it) for the
smallest model within the limit. Only measured trials decide: the kept trial meets every budget on the
evaluation data, or the search fails naming what it tried.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from slimkit.search.plan import PathPoint, first_within

_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_size(text: str) -> int:
    """Bytes in ``40MB``, ``1.5 GB``, ``300KiB`` or ``123456`` (decimal units, as the report prints them)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"--target-size {text!r}: expected a size such as 40MB, 1.5GB, 300KiB or a byte count")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"--target-size {text!r}: the size must be positive")
    return size


def parse_loss(text: str) -> float:
    """The fraction in ``1%`` or ``0.01`` (a relative metric loss, 0 ≤ loss < 1)."""
    body = text.strip()
    try:
        value = float(body.removesuffix("%")) / (100 if body.endswith("%") else 1)
    except ValueError:
        raise ValueError(f"--max-metric-loss {text!r}: expected a percentage such as 1% or a fraction such as 0.01") \
            from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"--max-metric-loss {text!r}: the loss must be at least 0 and below 100%")
    return value


@dataclass(frozen=True)
class Budget:
    """What the searched model must meet, and how many compress-and-evaluate trials the search may run."""

    target_bytes: int | None = None
    max_loss: float | None = None  # relative to the original's metric; positive is worse
    max_trials: int = 8

    def __post_init__(self) -> None:
        if self.target_bytes is None and self.max_loss is None:
            raise ValueError("a budget needs --target-size, --max-metric-loss or both")
        if self.max_trials < 1:
            raise ValueError(f"--max-trials must be at least 1, got {self.max_trials}")

    def describe(self) -> str:
        parts = [f"size ≤ {self.target_bytes:,} bytes" if self.target_bytes else "",
                 f"metric loss ≤ {self.max_loss:.2%}" if self.max_loss is not None else ""]
        return " and ".join(p for p in parts if p)


@dataclass
class Trial:
    """One point of the path, really compressed, saved and evaluated."""

    point: int
    estimated_bytes: int
    size_bytes: int
    metric: float
    loss: float  # relative to the original, positive is worse
    seconds: float
    meets_size: bool = True
    meets_loss: bool = True

    @property
    def meets(self) -> bool:
        return self.meets_size and self.meets_loss

    def judge(self, budget: Budget) -> Trial:
        """Set ``meets_size`` / ``meets_loss`` against ``budget``; returns self."""
        self.meets_size = budget.target_bytes is None or self.size_bytes <= budget.target_bytes
        self.meets_loss = budget.max_loss is None or self.loss <= budget.max_loss
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meets": self.meets}


def relative_loss(before: float, after: float, higher_is_better: bool) -> float:
    """How much worse ``after`` is than ``before``, as a fraction of ``before`` (negative: better)."""
    change = (after - before) / abs(before) if before else after - before
    return -change if higher_is_better else change


class _Trials:
    """The trials run so far, at most ``budget.max_trials`` of them, each run once per point."""

    def __init__(self, budget: Budget, try_point: Callable[[int], Trial]) -> None:
        self.budget, self.try_point = budget, try_point
        self.done: dict[int, Trial] = {}

    def run(self, index: int) -> Trial | None:
        if index not in self.done and len(self.done) < self.budget.max_trials:
            self.done[index] = self.try_point(index).judge(self.budget)
        return self.done.get(index)


def _fit_size(path: list[PathPoint], trials: _Trials, target: int) -> int | None:
    """Tighten from the first point estimated within ``target`` until a saved artifact fits; its index."""
    index = first_within(path, target)
    if index is None:
        raise ValueError(f"no searched configuration fits {target:,} bytes: the smallest is estimated at "
                         f"{path[-1].bytes:,} bytes; allow lower bits, codebooks or more sparsity (--try)")
    index = max(index, 1)  # point 0 is the untouched model
    while (trial := trials.run(index)) is not None and not trial.meets_size:
        error = trial.size_bytes - path[index].bytes  # headers and codec details the estimate leaves out
        better = first_within(path, target - error)
        index = better if better is not None and better > index else index + 1
        if index >= len(path):
            return None
    return index if trial is not None else None


def _bisect_loss(trials: _Trials, good: int, bad: int) -> int:
    """The last point within the loss limit between ``good`` (passes, or 0: untouched) and ``bad`` (fails)."""
    while bad - good > 1:
        mid = (good + bad) // 2
        trial = trials.run(mid)
        if trial is None:
            break
        good, bad = (mid, bad) if trial.meets_loss else (good, mid)
    return good


def choose_point(path: list[PathPoint], budget: Budget, try_point: Callable[[int], Trial]) -> tuple[Trial, list[Trial]]:
    """Try points of ``path`` until the budget holds; returns ``(kept trial, all trials in the order run)``.

    Raises:
        ValueError: no tried point meets every budget (the message lists the trials).
    """
    if len(path) < 2:
        raise ValueError("the search path holds no compressed configuration; allow some settings with --try")
    trials = _Trials(budget, try_point)
    start = 0
    if budget.target_bytes is not None:
        fitted = _fit_size(path, trials, budget.target_bytes)
        start = fitted if fitted is not None and trials.done[fitted].meets else 0
        if budget.max_loss is not None and fitted is not None and not trials.done[fitted].meets_loss:
            start = -1  # the smallest loss at this size already exceeds the limit: nothing smaller will do
    if budget.max_loss is not None and start >= 0 and (budget.target_bytes is None or start > 0):
        _bisect_loss(trials, start, len(path))
    done = list(trials.done.values())
    passing = [t for t in done if t.meets]
    if not passing:
        tried = "; ".join(f"point {t.point}: {t.size_bytes:,} bytes, loss {t.loss:+.2%}" for t in done)
        raise ValueError(f"no configuration met the budget ({budget.describe()}) in {len(done)} trial(s): {tried}")
    if budget.max_loss is None:
        return min(passing, key=lambda t: (t.loss, t.size_bytes)), done
    return min(passing, key=lambda t: (t.size_bytes, t.loss)), done
