"""Benchmark: does mixing general text into GPTQ's calibration set make it robust out of domain?

Run ``python benchmarks/calib_mix.py`` (about 40 minutes on 2 cores; needs Debian's ``fortunes`` package:
``apt-get install fortunes``). SmolLM2-135M is quantized to int4 g128 symmetric (a grid the Q4_1 baseline does
not flatter) by RTN and by GPTQ calibrated on four sets of 64 × 512 tokens:

* ``pydoc``: Python documentation, the default calibration text;
* ``pydoc + general``: half pydoc, half general English (fortune categories people, politics, science,
  wisdom, work, men-women, miscellaneous, education), interleaved (``--calib pydoc --calib text:general``);
* ``general``: general English only;
* ``literature`` (in-domain reference): the calibration split of the literature text evaluated below.

Each model is evaluated on two disjoint evaluation splits: pydoc (in domain for the default calibration) and
"literature" (fortune categories literature and songs-poems, a domain no calibration set above contains,
except the in-domain reference). The table gives perplexity, its ratio to fp32, and whether the calibration
guard of ``slimkit compress`` would warn (GPTQ worse than RTN on the same grid).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    SMOLLM2_BASELINE,
    PeakRSS,
    fmt,
    markdown_table,
    release_memory,
    resumed_rows,
    run_metadata,
    write_results,
)
from _common import provenance as row_provenance
from _llm_sweep import SEQ_LEN

import slimkit
from slimkit.data.loops import calibration_loop
from slimkit.data.mix import parse_mix
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.metrics import perplexity
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig

NAME = "calib_mix"
FORTUNES = Path("/usr/share/games/fortunes")
LITERATURE = ("literature", "songs-poems")
GENERAL = ("people", "politics", "science", "wisdom", "work", "men-women", "miscellaneous", "education")
GRID = "int4 g128 symmetric"


def write_fortunes(categories: tuple[str, ...], out: Path) -> Path:
    """One JSONL record per fortune of ``categories`` (so the 1/4 eval split takes every 4th fortune)."""
    records = []
    for name in categories:
        path = FORTUNES / name
        if not path.is_file():
            raise SystemExit(f"{path} is missing: apt-get install fortunes")
        text = path.read_text(encoding="utf-8", errors="replace")
        records += [" ".join(f.split()) for f in text.split("\n%\n") if len(f.split()) >= 5]
    out.write_text("".join(json.dumps({"text": r}) + "\n" for r in records))
    return out


def calibrations(general: Path, literature: Path) -> dict[str, list[str]]:
    return {"pydoc": ["pydoc"], "pydoc + general": ["pydoc", f"text:{general}"], "general": [f"text:{general}"],
            "literature (in-domain reference)": [f"text:{literature}"]}


def measure(bundle: Any, windows: dict[str, Any]) -> dict[str, float]:
    return {domain: round(perplexity(bundle.model, w, batch_size=4), 3) for domain, w in windows.items()}


def run(calib_samples: int, eval_windows: int, done: list[dict[str, Any]], write: Any) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="slimkit-calib-mix-"))
    general = write_fortunes(GENERAL, tmp / "general.jsonl")
    literature = write_fortunes(LITERATURE, tmp / "literature.jsonl")
    bundle = slimkit.load_model("smollm2-135m")
    original = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    windows = {domain: token_windows(bundle.tokenizer, documents(parse_data_spec(spec), "eval"), SEQ_LEN,
                                        eval_windows)
               for domain, spec in (("pydoc", "pydoc"), ("literature", f"text:{literature}"))}
    plan: list[tuple[str, str, Any, list[str]]] = [("fp32", "none", None, []),
                                                   ("rtn", "none", RTNConfig(bits=4, granularity="group",
                                                                             group_size=128), [])]
    plan += [("gptq", name, GPTQConfig(bits=4, group_size=128), parts)
             for name, parts in calibrations(general, literature).items()]
    rows = list(done)
    for method, calib, step, parts in plan:
        if any(r["method"] == method and r["calibration"] == calib for r in rows):
            continue
        bundle.model.load_state_dict(original)
        release_memory()
        start = time.perf_counter()
        with PeakRSS() as peak:
            if step is not None:
                mix = parse_mix(parts) if parts else None
                loop = calibration_loop(bundle, mix, calib_samples, SEQ_LEN, batch_size=4) if mix else None
                slimkit.apply(bundle.model, step, loop)
        seconds = time.perf_counter() - start
        ppl = {f"ppl_{d}": v for d, v in measure(bundle, windows).items()}
        rows.append({"method": method, "calibration": calib, "calib_specs": [p.split("/")[-1] for p in parts],
                     "calib_windows": calib_samples if parts else 0, **ppl,
                     "eval_tokens": {d: int(w.numel()) for d, w in windows.items()}, "seconds": round(seconds, 1),
                     "peak_rss_gb": round(peak.peak, 2), **row_provenance()})
        print(rows[-1], flush=True)
        write(rows)
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Perplexity / fp32's per domain, and whether GPTQ is worse than RTN there (the guard's warning)."""
    fp32 = next((r for r in rows if r["method"] == "fp32"), None)
    rtn = next((r for r in rows if r["method"] == "rtn"), None)
    for r in rows:
        for domain in ("pydoc", "literature"):
            if fp32:
                r[f"ratio_fp32_{domain}"] = round(r[f"ppl_{domain}"] / fp32[f"ppl_{domain}"], 4)
            if rtn and r["method"] == "gptq":
                r[f"guard_warns_{domain}"] = r[f"ppl_{domain}"] > rtn[f"ppl_{domain}"]


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """What the rows say about the question, in numbers (no target was set in advance)."""
    def row(calib: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["method"] == "gptq" and r["calibration"] == calib), None)

    rtn, pydoc, mixed = next((r for r in rows if r["method"] == "rtn"), None), row("pydoc"), row("pydoc + general")
    out = []
    if rtn and pydoc:
        worse = pydoc["ppl_literature"] > rtn["ppl_literature"]
        out.append(f"GPTQ calibrated on pydoc, on literature: {pydoc['ppl_literature']:.2f} vs RTN "
                   f"{rtn['ppl_literature']:.2f} ({'worse: the guard would warn' if worse else 'better'})")
    if pydoc and mixed:
        change = mixed["ppl_literature"] / pydoc["ppl_literature"] - 1
        cost = mixed["ppl_pydoc"] / pydoc["ppl_pydoc"] - 1
        out.append(f"mixing general text into the calibration changes literature perplexity by {change:+.1%} and "
                   f"pydoc perplexity by {cost:+.1%} (vs pydoc-only calibration)")
    return out


def _guard_cell(r: dict[str, Any]) -> str:
    if r["method"] != "gptq":
        return ""
    return " / ".join("yes" if r.get(f"guard_warns_{d}") else "no" for d in ("pydoc", "literature"))


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    tokens = rows[0]["eval_tokens"] if rows else {}
    windows = "every window" if meta["eval_windows"] >= 10**9 else f"at most {meta['eval_windows']} windows"
    columns = [("method", lambda r: r["method"]), ("calibration", lambda r: r["calibration"]),
               ("ppl pydoc", lambda r: fmt(r["ppl_pydoc"], ".2f")),
               ("× fp32 pydoc", lambda r: fmt(r.get("ratio_fp32_pydoc"), ".3f")),
               ("ppl literature", lambda r: fmt(r["ppl_literature"], ".2f")),
               ("× fp32 literature", lambda r: fmt(r.get("ratio_fp32_literature"), ".3f")),
               ("worse than RTN (pydoc / literature)", _guard_cell),
               ("seconds", lambda r: r["seconds"]), ("run date", lambda r: r["date"]),
               ("commit", lambda r: r["commit"])]
    lines = ["# Calibration mixes: GPTQ int4 g128 in and out of its calibration domain", "",
             f"Baseline: {SMOLLM2_BASELINE}. Grid: {GRID} (decoder Linears; embeddings / lm_head fp32). "
             f"GPTQ calibration: {meta['calib_samples']} × {SEQ_LEN} tokens of the named text's calibration split "
             f"(a mix samples its parts equally, interleaved). Perplexity on {windows} of two disjoint "
             f"evaluation splits: pydoc ({tokens.get('pydoc', 0)} tokens) and literature, Debian `fortunes` "
             f"categories {', '.join(LITERATURE)} ({tokens.get('literature', 0)} tokens). General text: fortune "
             f"categories {', '.join(GENERAL)} (no literature or songs-poems). Nothing was tuned on either "
             "evaluation split.", ""]
    lines += markdown_table(columns, rows)
    lines += ["", "## Findings", ""] + [f"- {f}" for f in findings(rows)]
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads; each row carries its own run date and commit."]
    return "\n".join(lines) + "\n"


def write(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    add_ratios(rows)
    write_results(NAME, {"meta": meta, "rows": rows, "findings": findings(rows)}, markdown(rows, meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-windows", type=int, default=10**9,
                        help="cap the evaluation windows per domain (smoke runs; the table states tokens)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the results file")
    args = parser.parse_args()
    meta = run_metadata(calib_samples=args.calib_samples, eval_windows=args.eval_windows, grid=GRID)
    done = resumed_rows(RESULTS / f"{NAME}.json", args.resume)
    rows = run(args.calib_samples, args.eval_windows, done, lambda r: write(r, meta))
    write(rows, meta)
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
