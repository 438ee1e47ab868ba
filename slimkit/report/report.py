"""The compression report: what was applied, and what it cost and gained, before vs after.

Written as ``report.json`` (machine-readable) and ``report.md`` (a before/after table a person reads).
When the compressed model is slower or worse than the original, the report says so in a warning line.
When tensors are stored other than densely, a per-tensor table says where the bytes on disk go
(values or cluster indices, positions, codebook, Huffman tables), as Deep Compression's tables do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from slimkit.config import Targets
from slimkit.eval.calibration_guard import GuardResult
from slimkit.eval.evaluate import Measurement
from slimkit.method import StepReport
from slimkit.report.distillation import distillation_dict, distillation_lines

_DEFAULT_TARGETS = Targets().model_dump(mode="json")
#: Median latency ratios within this band are run-to-run noise on a shared CPU, not a slowdown.
SLOWER_TOLERANCE = 1.10
#: Beyond this many coded tensors, report.md sums the bytes table per codec (report.json keeps every tensor).
MAX_TENSOR_ROWS = 24


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _ratio(before: float | None, after: float | None) -> str:
    if not before or after is None:
        return ""
    return f"{after / before:.3f}×"


@dataclass
class Report:
    """Before/after measurements of one compression run."""

    model: str
    steps: list[StepReport]
    before: Measurement
    after: Measurement
    output: str | None = None
    notes: list[str] = field(default_factory=list)
    guard: GuardResult | None = None
    #: Bytes on disk per tensor and part (:meth:`slimkit.export.storage.StorageBreakdown.to_dict`).
    storage: dict[str, Any] | None = None
    #: The file written in the recipe's export format and its runtime checks (:class:`ExportResult`).
    export: dict[str, Any] | None = None
    #: What the budget search measured: sensitivity, trials, the chosen point (``slimkit.search.run``).
    search: dict[str, Any] | None = None
    #: Per Linear/Conv weight: params, bits per weight on disk, sparsity (``slimkit.eval.layer_groups``).
    layers: list[dict[str, Any]] | None = None
    #: Teacher, student without distillation and distilled student (``train.distill.control``).
    distillation: dict[str, Measurement] | None = None

    def warnings(self) -> list[str]:
        """Honest warnings: slower than the original, quality loss, no size gain."""
        out = []
        for key, t_after in self.after.latency.items():
            t_before = self.before.latency.get(key)
            if t_before and t_after.median_ms > t_before.median_ms * SLOWER_TOLERANCE:
                out.append(f"compressed model is SLOWER than the original at {key}: "
                           f"{t_after.median_ms:.1f} ms vs {t_before.median_ms:.1f} ms on this machine")
        b, a = self.before, self.after
        out += [f"original model: {w}" for w in b.warnings] + [f"compressed model: {w}" for w in a.warnings]
        if b.size_bytes and a.size_bytes and a.size_bytes >= b.size_bytes:
            out.append("the saved artifact is not smaller than the original's")
        worse = a.value < b.value if b.higher_is_better else a.value > b.value
        if worse:
            change = (a.value - b.value) / b.value * 100 if b.value else float("inf")
            out.append(f"{b.metric} changed by {change:+.2f}% ({b.value:.4g} → {a.value:.4g})")
        guard_warning = self.guard.warning() if self.guard else None
        if guard_warning:
            out.append(guard_warning)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "output": self.output,
                "steps": [vars(s) for s in self.steps],
                "before": self.before.to_dict(), "after": self.after.to_dict(),
                "calibration_guard": self.guard.to_dict() if self.guard else None,
                "warnings": self.warnings(), "notes": self.notes, "storage": self.storage,
                "export": self.export, "search": self.search, "layers": self.layers,
                "distillation": distillation_dict(self.distillation)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def table_rows(self) -> list[tuple[str, str, str, str]]:
        """(quantity, before, after, after/before) rows of the before/after table."""
        b, a = self.before, self.after
        rows = [(b.metric, f"{b.value:.4f}", f"{a.value:.4f}", _ratio(b.value, a.value))]
        if self.guard:
            g = self.guard
            rows.append((f"{b.metric}, calibration-free baseline ({' → '.join(g.baseline_steps)})", "",
                         f"{g.baseline_value:.4f}", _ratio(b.value, g.baseline_value)))
        rows += [("size on disk", _fmt_bytes(b.size_bytes), _fmt_bytes(a.size_bytes),
                  _ratio(b.size_bytes, a.size_bytes)),
                 ("parameters", f"{b.params:,}", f"{a.params:,}", _ratio(b.params, a.params)),
                 ("weight sparsity", f"{b.sparsity:.2%}", f"{a.sparsity:.2%}", "")]
        for key, tb in b.latency.items():
            ta = a.latency.get(key)
            if ta is None:
                continue
            rows.append((f"latency {key} (median)", f"{tb.median_ms:.1f} ms", f"{ta.median_ms:.1f} ms",
                         _ratio(tb.median_ms, ta.median_ms)))
            rows.append((f"throughput {key}", f"{tb.throughput:.1f}/s", f"{ta.throughput:.1f}/s",
                         _ratio(tb.throughput, ta.throughput)))
        return rows

    def to_markdown(self) -> str:
        lines = [f"# slimkit report: {self.model}", ""]
        if self.output:
            lines += [f"Output: `{self.output}`", ""]
        lines += ["## Steps", ""]
        for s in self.steps:
            cfg = {k: v for k, v in s.config.items() if k not in ("method", "version")
                   and not (k == "targets" and v == _DEFAULT_TARGETS)}
            lines.append(f"- **{s.method}** ({s.seconds:.1f} s): `{json.dumps(cfg)}` → {json.dumps(s.stats)}")
        lines += ["", "## Before / after", "", "| quantity | before | after | after/before |",
                  "|---|---|---|---|"]
        lines += [f"| {q} | {b} | {a} | {r} |" for q, b, a, r in self.table_rows()]
        lines += self.storage_lines() + self.export_lines() + self.search_lines()
        lines += distillation_lines(self.distillation)
        warnings = self.warnings()
        if warnings or self.notes:
            lines += ["", "## Warnings and notes", ""]
            lines += [f"- WARNING: {w}" for w in warnings] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def search_lines(self) -> list[str]:
        """The budget search's trials (the kept one in bold), when a search chose the recipe."""
        if not self.search:
            return []
        s = self.search
        sens = s["sensitivity"]
        lines = ["", "## Budget search", "", f"Budget: {s['budget']['text']}. Sensitivity of "
                 f"{len(sens['groups'])} layer groups × {len(sens['settings'])} settings ({sens['metric']} on "
                 f"held-out data, {sens['evaluations']} evaluations this run); search path of {len(s['path'])} "
                 "points.", "", "| trial | point | estimated bytes | saved bytes | metric | loss | meets budget |",
                 "|---|---|---|---|---|---|---|"]
        for i, t in enumerate(s["trials"], 1):
            mark = "**" if t["point"] == s["chosen_point"] else ""
            lines.append(f"| {mark}{i}{mark} | {t['point']} | {t['estimated_bytes']:,} | {t['size_bytes']:,} | "
                         f"{t['metric']:.4f} | {t['loss']:+.2%} | {'yes' if t['meets'] else 'no'} |")
        return lines

    def export_lines(self) -> list[str]:
        """The file written in the recipe's export format and what its real reader measured."""
        if not self.export:
            return []
        e = self.export
        lines = ["", f"## Export: {e['format']}", "", f"`{e['path']}`: {_fmt_bytes(e['bytes'])}", ""]
        if e["checks"]:
            lines += ["| runtime | max abs diff | mean abs diff | tolerance | latency | PyTorch latency |",
                      "|---|---|---|---|---|---|"]
            for c in e["checks"]:
                lat = f"{c['latency_ms']:.2f} ms" if c["latency_ms"] is not None else ""
                ref = f"{c['torch_latency_ms']:.2f} ms" if c["torch_latency_ms"] is not None else ""
                lines.append(f"| {c['runtime']} | {c['max_abs_diff']:.3g} | {c['mean_abs_diff']:.3g} | "
                             f"{c['tolerance']:.3g} | {lat} | {ref} |")
        lines += [f"- {n}" for n in e["notes"]]
        return lines

    def storage_lines(self) -> list[str]:
        """The per-tensor bytes table, for tensors stored other than densely (none: no table)."""
        tensors = (self.storage or {}).get("tensors", {})
        coded = {name: t for name, t in tensors.items() if t["codec"] not in ("dense", "alias")}
        if not coded:
            return []
        parts = ("values", "positions", "codebook", "tables")
        lines = ["", "## Bytes on disk per tensor", "", "| tensor | codec | shape | values / indices | positions | "
                 "codebook | tables | total |", "|---|---|---|---|---|---|---|---|"]
        if len(coded) > MAX_TENSOR_ROWS:  # an LLM has hundreds: one row per codec here, every tensor in report.json
            by_codec: dict[str, list[dict[str, Any]]] = {}
            for t in coded.values():
                by_codec.setdefault(t["codec"], []).append(t)
            rows = [(f"{len(ts)} tensors", codec, "", [sum(t.get(p, 0) for t in ts) for p in parts])
                    for codec, ts in by_codec.items()]
        else:
            rows = [(name, t["codec"], t.get("shape") or "", [t.get(p, "") for p in parts])
                    for name, t in coded.items()]
        for name, codec, shape, cells in rows:
            total = sum(c for c in cells if isinstance(c, int))
            lines.append(f"| {name} | {codec} | {shape} | {' | '.join(str(c) for c in cells)} | {total} |")
        dense = sum(sum(v for k, v in t.items() if k in parts) for n, t in tensors.items() if n not in coded)
        assert self.storage is not None
        lines += [f"| other tensors ({len(tensors) - len(coded)}, dense) | | | {dense} | | | | {dense} |",
                  f"| headers and other files | | | | | | | {self.storage['overhead_bytes']} |",
                  f"| **total** | | | | | | | **{self.storage['total_bytes']}** |"]
        return lines
