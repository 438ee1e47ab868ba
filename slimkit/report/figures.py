"""The figures of ``report.html``, each rendered by matplotlib to PNG bytes (embedded as base64, no files).

* per-layer sensitivity heatmap: layer groups × tried settings, colour = the probe's score (log scale);
* metric-vs-size Pareto frontier of the search's trials, the original and the chosen point marked, the
  budget drawn as lines;
* per-layer bars: bits per weight on disk and the fraction of zeros of every Linear/Conv weight.

Each function returns ``None`` when the report holds nothing to draw (no search, no layers).
"""

from __future__ import annotations

import io
import math
from typing import Any

_BLUE, _GREY, _ORANGE, _GREEN = "#2a7ab0", "#9a9a9a", "#e07b24", "#2f9e44"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()


def sensitivity_heatmap(search: dict[str, Any] | None) -> bytes | None:
    """Layer groups (rows) × settings (columns), coloured by log10 of the sensitivity score."""
    if not search:
        return None
    from matplotlib.colors import LogNorm

    sens = search["sensitivity"]
    groups, settings = [g["name"] for g in sens["groups"]], sens["settings"]
    values = [[max(sens["scores"][g][s], 1e-9) for s in settings] for g in groups]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(settings), 1.2 + 0.28 * len(groups)))
    image = ax.imshow(values, aspect="auto", cmap="magma_r", norm=LogNorm())
    ax.set_xticks(range(len(settings)), [s.replace(",", "\n") for s in settings], fontsize=8)
    ax.set_yticks(range(len(groups)), groups, fontsize=7 if len(groups) > 20 else 9)
    fig.colorbar(image, ax=ax, label=f"{sens['metric']} (log)")
    ax.set_title("sensitivity: one group at a time, the rest untouched", fontsize=10)
    return _png(fig)


def _frontier(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats in both size (smaller) and metric, sorted by size."""
    best = -math.inf
    front: list[tuple[float, float]] = []
    for size, metric in sorted(points, key=lambda p: (p[0], -p[1] if higher_is_better else p[1])):
        score = metric if higher_is_better else -metric
        if not front or score > best:
            front.append((size, metric))
            best = max(best, score)
    return front


def pareto_plot(search: dict[str, Any] | None, metric: str, higher_is_better: bool) -> bytes | None:
    """Trials as metric vs saved size, the Pareto frontier drawn, the original and the chosen trial marked."""
    if not search or not search["trials"]:
        return None
    trials, original, budget = search["trials"], search["original"], search["budget"]
    points = [(t["size_bytes"] / 1e6, t["metric"]) for t in trials]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    front = _frontier([*points, (original["size_bytes"] / 1e6, original["metric"])], higher_is_better)
    ax.plot([p[0] for p in front], [p[1] for p in front], color=_GREY, lw=1, ls="--", label="Pareto frontier")
    colours = [_BLUE if t["meets"] else _ORANGE for t in trials]
    ax.scatter([p[0] for p in points], [p[1] for p in points], c=colours, s=36, zorder=3, label="trials")
    ax.scatter([original["size_bytes"] / 1e6], [original["metric"]], marker="s", color="black", s=40, zorder=3,
               label="original")
    chosen = next(t for t in trials if t["point"] == search["chosen_point"])
    ax.scatter([chosen["size_bytes"] / 1e6], [chosen["metric"]], marker="*", s=260, color=_GREEN, zorder=4,
               edgecolor="black", label="chosen")
    if budget["target_bytes"]:
        ax.axvline(budget["target_bytes"] / 1e6, color=_ORANGE, lw=1, label="target size")
    if budget["max_loss"] is not None:
        limit = original["metric"] * (1 - budget["max_loss"] if higher_is_better else 1 + budget["max_loss"])
        ax.axhline(limit, color=_ORANGE, lw=1, ls=":", label="loss limit")
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def layer_bars(layers: list[dict[str, Any]] | None) -> bytes | None:
    """Two panels over the Linear/Conv weights: bits per weight on disk, and the fraction of zeros."""
    if not layers:
        return None
    names = [row["name"] for row in layers]
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.4, 0.16 * len(names) + 2), 4.6), sharex=True)
    top.bar(range(len(names)), [row["bits_per_weight"] for row in layers], color=_BLUE)
    top.axhline(32, color=_GREY, lw=0.8, ls="--")
    top.set_ylabel("bits / weight on disk")
    bottom.bar(range(len(names)), [100 * row["sparsity"] for row in layers], color=_ORANGE)
    bottom.set_ylabel("zeros (%)")
    bottom.set_ylim(0, 100)
    step = max(1, len(names) // 40)  # a readable number of tick labels on a 200-layer LLM
    bottom.set_xticks(range(0, len(names), step), names[::step], rotation=90, fontsize=7)
    for ax in (top, bottom):
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)
