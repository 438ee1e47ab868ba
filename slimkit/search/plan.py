"""The search path: from the untouched model to the smallest one, cheapest sensitivity per byte saved first.

Pure arithmetic over a table of ``(bytes, cost)`` per layer group and option. Starting with every group
untouched, each step moves one group to a smaller option, choosing the move with the least cost added per
byte saved (a jump past an intermediate option is allowed, so a group follows the lower convex hull of its
options, as in the Lagrangian view of mixed-precision allocation: HAWQ-V3, Dong et al. 2020). Costs are the
sensitivity scores: slightly negative ones (noise) count as zero. Every point of the path is a complete
assignment, smaller than the one before; the budget search tries points of it on real data.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Added to every step's cost so that, among free moves, the one saving more bytes goes first.
_TIE = 1e-12


@dataclass(frozen=True)
class Option:
    """One way to store one group: a setting key (``""`` for untouched), its bytes and its sensitivity cost."""

    key: str
    bytes: int
    cost: float


@dataclass(frozen=True)
class PathPoint:
    """A complete assignment (group -> option key) with its estimated total bytes and summed cost."""

    choice: dict[str, str]
    bytes: int
    cost: float


def _best_move(current: dict[str, Option], options: dict[str, list[Option]]) -> tuple[str, Option] | None:
    best: tuple[float, int, str, Option] | None = None
    for group, now in current.items():
        for option in options[group]:
            saved = now.bytes - option.bytes
            if saved <= 0:
                continue
            slope = (max(option.cost - now.cost, 0.0) + _TIE) / saved
            if best is None or (slope, -saved) < (best[0], -best[1]):
                best = (slope, saved, group, option)
    return None if best is None else (best[2], best[3])


def search_path(options: dict[str, list[Option]], fixed_bytes: int = 0) -> list[PathPoint]:
    """The greedy path over ``options`` (group -> its options; each must include the untouched one, key ``""``).

    Args:
        options: per group, every option it may take.
        fixed_bytes: bytes of everything outside the groups (other tensors, headers), added to each point.

    Returns:
        Points from the untouched model (first) to the smallest reachable one (last), strictly shrinking.
    """
    current = {}
    for group, opts in options.items():
        untouched = [o for o in opts if o.key == ""]
        if not untouched:
            raise ValueError(f"group {group!r}: the options must include the untouched one (key '')")
        current[group] = untouched[0]

    def point() -> PathPoint:
        return PathPoint({g: o.key for g, o in current.items()}, fixed_bytes + sum(o.bytes for o in current.values()),
                         sum(max(o.cost, 0.0) for o in current.values()))

    path = [point()]
    while (move := _best_move(current, options)) is not None:
        current[move[0]] = move[1]
        path.append(point())
    return path


def first_within(path: list[PathPoint], max_bytes: float) -> int | None:
    """Index of the first (least costly) point whose estimated bytes are at most ``max_bytes``."""
    return next((i for i, p in enumerate(path) if p.bytes <= max_bytes), None)
