"""The report's distillation table: teacher, the student without distillation, and the distilled student.

A distilled student is only worth its training if it beats the same student trained the same way on
its own loss, so the control is measured on the same evaluation (``train.distill.control: true``) and
shown beside the teacher and the distilled student: metric, bytes on disk, parameters and latency.
"""

from __future__ import annotations

from typing import Any

from slimkit.eval.evaluate import Measurement

#: Column order of the table, keyed as in ``Report.distillation``.
COLUMNS = (("teacher", "teacher"), ("without_distillation", "student without distillation"),
           ("distilled", "distilled student"))


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def distillation_rows(models: dict[str, Measurement]) -> list[tuple[str, ...]]:
    """Rows ``(quantity, teacher, without distillation, distilled)``."""
    ms = [models[key] for key, _ in COLUMNS]
    rows = [(ms[0].metric, *(f"{m.value:.4f}" for m in ms)),
            ("size on disk", *(_bytes(m.size_bytes) for m in ms)),
            ("parameters", *(f"{m.params:,}" for m in ms))]
    for key in ms[0].latency:
        if all(key in m.latency for m in ms):
            rows.append((f"latency {key} (median)", *(f"{m.latency[key].median_ms:.1f} ms" for m in ms)))
    return rows


def distillation_lines(models: dict[str, Measurement] | None) -> list[str]:
    """Markdown lines of the table (none when the run had no control)."""
    if not models:
        return []
    lines = ["", "## Distillation", "", "| quantity | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in distillation_rows(models)]
    d, w = models["distilled"], models["without_distillation"]
    better = d.value > w.value if d.higher_is_better else d.value < w.value
    lines += ["", f"Distillation {'helped' if better else 'did NOT help'}: the distilled student scores "
              f"{models['distilled'].value:.4f} against {models['without_distillation'].value:.4f} for the same "
              "student trained on its own loss with the same data, steps and seed."]
    return lines


def distillation_dict(models: dict[str, Measurement] | None) -> dict[str, Any] | None:
    return {key: m.to_dict() for key, m in models.items()} if models else None
