"""``report.html``: the compression report as one self-contained page (CSS inline, figures as base64 PNGs).

It opens with no network and no other file: headline cards (metric, size, latency, before → after),
warnings, the before/after table with the before/after chart, the budget search (trials, Pareto frontier,
sensitivity heatmap) when a search chose the recipe, per-layer bits and sparsity, the steps with their
statistics, and the notes. Every piece of text from the run is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from slimkit.report.figures import layer_bars, pareto_plot, sensitivity_heatmap
from slimkit.report.report import Report, _fmt_bytes

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --accent:#2a7ab0; --bg:#f7f9fb; --warn:#b44d12; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1100px; margin:0 auto; padding:32px 24px 64px; }
header h1 { font-size:26px; margin:0 0 4px; }
header p { margin:0; color:var(--muted); }
h2 { font-size:19px; margin:36px 0 12px; padding-bottom:6px; border-bottom:2px solid var(--line); }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(200px, 1fr)); gap:14px; margin-top:22px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }
.card .value { font-size:22px; font-weight:600; margin-top:2px; }
.card .sub { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); border-radius:8px;
  overflow:hidden; font-size:14px; }
th, td { padding:7px 12px; text-align:left; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef2f6; font-weight:600; }
tr:last-child td { border-bottom:none; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.chosen td { background:#eaf6ec; font-weight:600; }
figure { margin:16px 0; background:#fff; border:1px solid var(--line); border-radius:10px; padding:12px; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; text-align:center; }
.warn { background:#fff4e6; border-left:4px solid var(--warn); padding:10px 14px; border-radius:6px; margin:8px 0; }
.note { color:var(--muted); }
code { background:#eef2f6; padding:1px 5px; border-radius:4px; font-size:13px; word-break:break-word; }
.scroll { max-height:420px; overflow:auto; }
"""


def _img(png: bytes | None, alt: str, caption: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None,
           classes: list[str] | None = None) -> str:
    numeric = numeric or set()
    cells = "".join(f'<th class="num">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
                    for i, h in enumerate(head))
    body = []
    for r, row in enumerate(rows):
        css = f' class="{classes[r]}"' if classes and classes[r] else ""
        tds = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{css}>{tds}</tr>")
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _card(label: str, value: str, sub: str) -> str:
    return (f'<div class="card"><div class="label">{escape(label)}</div><div class="value">{escape(value)}</div>'
            f'<div class="sub">{escape(sub)}</div></div>')


def _cards(report: Report) -> str:
    b, a = report.before, report.after
    cards = [_card(b.metric, f"{a.value:.4g}", f"was {b.value:.4g}")]
    if b.size_bytes and a.size_bytes:
        cards.append(_card("size on disk", _fmt_bytes(a.size_bytes),
                           f"was {_fmt_bytes(b.size_bytes)}, {b.size_bytes / a.size_bytes:.1f}× smaller"))
    for key, tb in b.latency.items():
        if key in a.latency:
            ta = a.latency[key]
            cards.append(_card(f"latency {key}", f"{ta.median_ms:.2f} ms",
                               f"was {tb.median_ms:.2f} ms ({tb.median_ms / ta.median_ms:.2f}× speed)"))
    cards.append(_card("weight sparsity", f"{a.sparsity:.1%}", f"was {b.sparsity:.1%}"))
    return f'<div class="cards">{"".join(cards)}</div>'


def _steps(report: Report) -> str:
    rows = []
    for s in report.steps:
        config = {k: v for k, v in s.config.items() if k not in ("method", "version")}
        rows.append([f"<b>{escape(s.method)}</b>", f"{s.seconds:.1f} s", f"<code>{escape(json.dumps(config))}</code>",
                     f"<code>{escape(json.dumps(s.stats))}</code>"])
    return "<h2>Steps</h2>" + _table(["method", "time", "config", "statistics"], rows, {1})


def _search(report: Report) -> str:
    s = report.search
    if not s:
        return ""
    sens = s["sensitivity"]
    intro = (f"<p>Budget: <b>{escape(s['budget']['text'])}</b>. Sensitivity of {len(sens['groups'])} layer groups × "
             f"{len(sens['settings'])} settings, scored by {escape(sens['metric'])} on held-out inputs "
             f"({sens['evaluations']} model evaluations in this run, the rest from the cache); a search path of "
             f"{len(s['path'])} points, {len(s['trials'])} of them tried on the evaluation data.</p>")
    rows = [[str(i), str(t["point"]), f"{t['estimated_bytes']:,}", f"{t['size_bytes']:,}", f"{t['metric']:.4f}",
             f"{t['loss']:+.2%}", "yes" if t["meets"] else "no", f"{t['seconds']:.1f} s"]
            for i, t in enumerate(s["trials"], 1)]
    classes = ["chosen" if t["point"] == s["chosen_point"] else "" for t in s["trials"]]
    table = _table(["trial", "point", "estimated bytes", "saved bytes", report.before.metric, "loss", "meets budget",
                    "time"], rows, {1, 2, 3, 4, 5, 7}, classes)
    choice = [[escape(g), escape(k or "untouched")] for g, k in s["choice"].items()]
    pareto = pareto_plot(s, report.before.metric, report.before.higher_is_better)
    return ("<h2>Budget search</h2>" + intro + table
            + _img(pareto, "Pareto frontier", "metric vs bytes on disk of every trial; the star is the chosen model")
            + _img(sensitivity_heatmap(s), "sensitivity heatmap", "score of each setting applied to one group alone")
            + '<h3>Chosen setting per group</h3><div class="scroll">' + _table(["group", "setting"], choice) + "</div>")


def _layers(report: Report) -> str:
    if not report.layers:
        return ""
    rows = [[escape(r["name"]), f"{r['params']:,}", f"{r['bits_per_weight']:.2f}", f"{r['sparsity']:.1%}"]
            for r in report.layers]
    return ("<h2>Per layer</h2>" + _img(layer_bars(report.layers), "per-layer bits and sparsity",
                                         "bits per weight as stored on disk, and zeros, per Linear/Conv weight")
            + '<div class="scroll">' + _table(["layer", "parameters", "bits / weight", "zeros"], rows, {1, 2, 3})
            + "</div>")


def report_html(report: Report, before_after_png: Path | None = None) -> str:
    """The whole page for ``report``; ``before_after_png`` is embedded beside the before/after table."""
    warnings = "".join(f'<div class="warn">{escape(w)}</div>' for w in report.warnings())
    table = _table(["quantity", "before", "after", "after / before"],
                   [[escape(c) for c in row] for row in report.table_rows()], {1, 2, 3})
    chart = _img(before_after_png.read_bytes() if before_after_png and before_after_png.exists() else None,
                 "before and after", "original vs compressed: metric, size on disk, latency")
    notes = "".join(f'<li class="note">{escape(n)}</li>' for n in report.notes)
    output = f"<p>Output: <code>{escape(report.output)}</code></p>" if report.output else ""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>slimkit report: {escape(report.model)}</title><style>{_CSS}</style></head><body><main>"
            f"<header><h1>slimkit report: {escape(report.model)}</h1>{output}</header>"
            f"{_cards(report)}{warnings}<h2>Before / after</h2>{table}{chart}"
            f"{_search(report)}{_layers(report)}{_steps(report)}"
            + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "") + "</main></body></html>\n")
