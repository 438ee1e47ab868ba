"""Before/after bar charts for the compression report (``report.png``).

Each panel is one quantity (quality metric, bytes on disk, latency), original beside compressed, so
the trade-off is visible at a glance next to the table in ``report.md``.
"""

from __future__ import annotations

from pathlib import Path

from slimkit.report.report import Report


def _panels(report: Report) -> list[tuple[str, float, float]]:
    b, a = report.before, report.after
    panels = [(b.metric, b.value, a.value)]
    if b.size_bytes and a.size_bytes:
        panels.append(("size on disk (MB)", b.size_bytes / 1e6, a.size_bytes / 1e6))
    for key, tb in b.latency.items():
        if key in a.latency:
            panels.append((f"latency {key} (ms)", tb.median_ms, a.latency[key].median_ms))
    return panels


def plot_before_after(report: Report, path: Path) -> Path:
    """Write a PNG with one before/after bar pair per quantity; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(report)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, before, after) in zip(axes[0], panels, strict=True):
        bars = ax.bar(["original", "compressed"], [before, after], color=["#8c8c8c", "#2a7ab0"])
        ax.bar_label(bars, fmt="%.3g")
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    fig.suptitle(report.model, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
