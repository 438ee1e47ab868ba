"""Benchmark: compressing models larger than RAM (issue 22): streamed vs in-memory peak memory, a 7B-shaped
model on this 24 GiB machine, and a killed streamed run resumed.

Run ``flock /tmp/slimkit-heavy.lock python benchmarks/memory.py`` (about 2 hours on 2 cores with the
defaults; ``--sections`` runs a part). Every measured job is a fresh ``slimkit compress`` process that writes
its own ``VmHWM`` (peak resident set of its address space) when it exits. Not ``ru_maxrss`` from ``wait4``:
Linux folds the parent's high-water mark into the child's at ``exec``, and a smoke run measured a 1.1 GB job
at 2.6 GB because this script had just loaded two models. Writes ``benchmarks/results/memory.json`` and
``.md``, every row with its run date and commit.

* ``smollm2``: SmolLM2-135M (the packaged Q4_1 GGUF dequantized to float32) saved as a Hugging Face
  safetensors directory, GPTQ int4 group 128 symmetric on ``--calib-samples`` pydoc windows, once in memory
  (``--no-calib-guard``: a streamed run has no guard, so both do the same work) and once with ``--stream``.
  Reported: peak RSS beside the estimate the report printed, wall time, the perplexity of both saved
  outputs re-measured here on the same windows, and whether every stored tensor is identical. Target:
  streamed peak ≤ 50% of the in-memory one.
* ``synthetic``: a 7B-shaped Llama with random weights (6.74B parameters, 27 GB in float32, stored as 13.5 GB
  of bfloat16 shards: ``_synthetic_llama.py``), RTN int4 g128 streamed, then GPTQ int4 g128 on the first
  ``--layers`` decoder layers (RTN int4 g128 on the others, for time) on 4 × 512 calibration tokens; plus
  what ``compress`` decides for it without ``--stream`` (the memory guard's plan, from headers only).
  The checkpoint is deleted at the end unless ``--keep``.
* ``resume``: the smollm2 streamed job killed (SIGKILL) once half its layers are checkpointed, then rerun:
  its ``slimkit.safetensors`` and ``slimkit.json`` must equal the uninterrupted run's byte for byte.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from _common import (
    RESULTS,
    SMOLLM2_BASELINE,
    fmt,
    markdown_table,
    provenance,
    resumed_rows,
    run_metadata,
    write_results,
)
from _synthetic_llama import SEVEN_B, write_synthetic_llama

NAME = "memory"
SECTIONS = ("smollm2", "synthetic", "resume")
GB = 1e9
INT4_G128 = {"bits": 4, "symmetric": True, "granularity": "group", "group_size": 128}


# Runs the slimkit command line and, at exit, writes this process's own peak resident set to argv[1].
CHILD = """
import atexit, runpy, sys
from pathlib import Path
peak_file = Path(sys.argv.pop(1))
def record_peak():
    status = Path("/proc/self/status").read_text().splitlines()
    peak_file.write_text(next(line.split()[1] for line in status if line.startswith("VmHWM")))
atexit.register(record_peak)
sys.argv[0] = "slimkit"
runpy.run_module("slimkit", run_name="__main__")
"""


def compress_command(model: Path, recipe: Path, out: Path, extra: list[str], peak: Path) -> list[str]:
    return [sys.executable, "-c", CHILD, str(peak), "compress", str(model), "--recipe", str(recipe), "--out", str(out),
            *extra]


def run_compress(model: Path, recipe: Path, out: Path, extra: list[str], log: Path) -> dict[str, Any]:
    """One ``slimkit compress`` in a fresh process: its wall time and its own peak RSS (VmHWM at exit)."""
    peak = log.with_suffix(".peak")
    args = compress_command(model, recipe, out, extra, peak)
    start = time.perf_counter()
    with log.open("w") as sink:
        child = subprocess.run(args, stdout=sink, stderr=subprocess.STDOUT)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({child.returncode}); last lines of {log}:\n"
                           + "\n".join(log.read_text().splitlines()[-15:]))
    report = json.loads((out / "report.json").read_text())
    note = next((n for n in report["notes"] if n.startswith("memory estimate")), "")
    estimate = re.search(r"about ([0-9.]+) GB", note)
    peak_gb = int(peak.read_text()) * 1024 / GB
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_gb": round(peak_gb, 3),
            "estimate_gb": float(estimate.group(1)) if estimate else None,
            "perplexity_report_after": report["after"]["value"], "perplexity_report_before": report["before"]["value"],
            "output_bytes": report["after"]["size_bytes"]}


def write_recipe(path: Path, steps: list[dict[str, Any]], windows: int) -> Path:
    recipe = {"version": 1, "steps": steps, "eval": {"data": "pydoc", "windows": windows, "seq_len": 512,
                                                      "latency": {"enabled": False}}}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def save_smollm2(directory: Path) -> None:
    """SmolLM2 as slimkit loads it, saved with save_pretrained (in a child process, so this one stays small)."""
    if (directory / "config.json").is_file():
        return
    code = ("import sys, slimkit; b = slimkit.load_model('smollm2-135m'); "
            "b.model.save_pretrained(sys.argv[1], safe_serialization=True); b.tokenizer.save_pretrained(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(directory)], check=True)


def compare_outputs(a: Path, b: Path, windows: int) -> dict[str, Any]:
    """Whether two slimkit outputs store the same tensors, and both models' perplexity measured here alike."""
    import torch
    from safetensors.torch import load_file

    import slimkit
    from slimkit.data.spec import parse_data_spec
    from slimkit.data.text import documents, token_windows
    from slimkit.eval.metrics import perplexity

    sa, sb = load_file(str(a / "slimkit.safetensors")), load_file(str(b / "slimkit.safetensors"))
    same = sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    packed = sum(1 for k in sa if k.endswith(".qdata"))
    del sa, sb
    values = []
    for out in (a, b):
        bundle = slimkit.load(str(out))
        ids = token_windows(bundle.tokenizer, documents(parse_data_spec("pydoc"), "eval"), 512, windows)
        values.append(round(perplexity(bundle.model, ids, batch_size=4), 4))
        del bundle
    return {"identical_tensors": same, "packed_weights": packed, "perplexity": values}


def run_smollm2(args: argparse.Namespace, rows: list[dict[str, Any]], write: Any) -> None:
    work = args.work
    model = work / "smollm2-hf"
    save_smollm2(model)
    recipe = write_recipe(work / "gptq.yaml", [{"method": "quant.gptq", **INT4_G128}], args.eval_windows)
    for mode, extra in (("in memory", ["--no-calib-guard"]), ("streamed", ["--stream"])):
        if any(r["section"] == "smollm2" and r["run"] == mode for r in rows):
            continue
        out = work / f"smollm2-{mode.replace(' ', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        result = run_compress(model, recipe, out, ["--calib-samples", str(args.calib_samples), *extra],
                              work / f"smollm2-{mode.replace(' ', '-')}.log")
        rows.append({"section": "smollm2", "run": mode, "method": "GPTQ int4 g128 sym",
                     "calib_windows": args.calib_samples, **result, **provenance()})
        write(rows)
    if not any(r["section"] == "smollm2" and r["run"] == "comparison" for r in rows):
        rows.append({"section": "smollm2", "run": "comparison", **compare_outputs(
            work / "smollm2-in-memory", work / "smollm2-streamed", args.eval_windows), **provenance()})
        write(rows)


def _kill_at(model: Path, recipe: Path, out: Path, layer: int, extra: list[str], log: Path) -> None:
    args = compress_command(model, recipe, out, extra, log.with_suffix(".peak"))
    state = out.parent / f"{out.name}.stream" / f"layer-{layer:05d}" / "state.json"
    with log.open("w") as sink:
        child = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
        while not state.is_file() and child.poll() is None:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the run ended ({child.returncode}) before layer {layer} was checkpointed: see {log}")


def run_resume(args: argparse.Namespace, rows: list[dict[str, Any]], write: Any) -> None:
    if any(r["section"] == "resume" for r in rows):
        return
    work, model, recipe = args.work, args.work / "smollm2-hf", args.work / "gptq.yaml"
    straight = work / "smollm2-streamed"
    extra = ["--calib-samples", str(args.calib_samples), "--stream"]
    if not (straight / "slimkit.json").is_file():
        save_smollm2(model)
        write_recipe(recipe, [{"method": "quant.gptq", **INT4_G128}], args.eval_windows)
        run_compress(model, recipe, straight, extra, work / "straight.log")
    out = work / "smollm2-resumed"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "smollm2-resumed.stream", ignore_errors=True)
    layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    start = time.perf_counter()
    _kill_at(model, recipe, out, layers // 2 - 1, extra, work / "killed.log")
    killed_after = time.perf_counter() - start
    finished = len(list((work / "smollm2-resumed.stream").glob("layer-*")))
    result = run_compress(model, recipe, out, extra, work / "resumed.log")
    same = {name: (out / name).read_bytes() == (straight / name).read_bytes()
            for name in ("slimkit.safetensors", "slimkit.json")}
    rows.append({"section": "resume", "run": "killed at ~50%, rerun", "layers": layers,
                 "finished_when_killed": finished, "killed_after_seconds": round(killed_after, 1),
                 "resumed_seconds": result["seconds"],
                 "resumed_peak_rss_gb": result["peak_rss_gb"], "bytes_identical": same, **provenance()})
    write(rows)


def run_synthetic(args: argparse.Namespace, rows: list[dict[str, Any]], write: Any) -> None:
    from slimkit.memory import plan_memory
    from slimkit.recipe import load_recipe

    work, model = args.work, args.work / "synthetic-llama-7b"
    if not (model / "model.safetensors.index.json").is_file():
        shutil.rmtree(model, ignore_errors=True)
        start = time.perf_counter()
        size = write_synthetic_llama(model)
        print(f"wrote {model}: {size / GB:.2f} GB in {time.perf_counter() - start:.0f} s", flush=True)
    rtn = write_recipe(work / "rtn7b.yaml", [{"method": "quant.rtn", **INT4_G128}], 1)
    first = [f"model.layers.{i}.*" for i in range(args.layers)]
    gptq = write_recipe(work / "gptq7b.yaml", [
        {"method": "quant.rtn", **INT4_G128, "targets": {"include": ["model.layers.*"], "exclude": first}},
        {"method": "quant.gptq", **INT4_G128, "targets": {"include": first}}], 1)
    if not any(r["section"] == "synthetic" and r["run"] == "plan without --stream" for r in rows):
        plan = plan_memory(str(model), load_recipe(gptq), calib_samples=4, eval_config=load_recipe(gptq).eval,
                           stream=False, max_memory=None)
        assert plan.in_memory is not None and plan.estimate is not None
        rows.append({"section": "synthetic", "run": "plan without --stream", "streams": plan.stream,
                     "in_memory_estimate_gb": round(plan.in_memory.total / GB, 2),
                     "estimate_gb": round(plan.estimate.total / GB, 2), "limit_gb": round(plan.limit / GB, 2),
                     "reason": plan.reason, **provenance()})
        write(rows)
    for label, recipe, extra in (("RTN int4 g128 (all 32 layers)", rtn, []),
                                 (f"GPTQ int4 g128 on layers 0-{args.layers - 1}, RTN int4 g128 on the rest", gptq,
                                  ["--calib-samples", "4"])):
        if any(r["section"] == "synthetic" and r.get("method") == label for r in rows):
            continue
        out = work / "synthetic-out"
        shutil.rmtree(out, ignore_errors=True)
        result = run_compress(model, recipe, out, ["--stream", *extra], work / "synthetic.log")
        rows.append({"section": "synthetic", "run": "streamed", "method": label, "gptq_layers": args.layers
                     if "GPTQ" in label else 0, "params": 6_738_415_616, "source_bytes": sum(
                         f.stat().st_size for f in model.glob("*.safetensors")), **result, **provenance()})
        shutil.rmtree(out, ignore_errors=True)
        write(rows)
    if not args.keep:
        shutil.rmtree(model, ignore_errors=True)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Each target the rows so far can judge: the number, the target, met or MISSED."""
    def row(section: str, run: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["section"] == section and r["run"] == run), None)

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    out = []
    mem, streamed, comparison = row("smollm2", "in memory"), row("smollm2", "streamed"), row("smollm2", "comparison")
    if mem and streamed:
        share = streamed["peak_rss_gb"] / mem["peak_rss_gb"]
        out.append(f"SmolLM2 GPTQ streamed peak RSS {streamed['peak_rss_gb']:.2f} GB = {share:.0%} of in memory "
                   f"({mem['peak_rss_gb']:.2f} GB) (target ≤ 50%): {mark(share <= 0.5)}")
    if comparison:
        ppl = comparison["perplexity"]
        out.append(f"saved tensors identical: {mark(comparison['identical_tensors'])}; perplexity {ppl[0]} vs "
                   f"{ppl[1]} (target: identical): {mark(ppl[0] == ppl[1])}")
    for r in rows:
        if r["section"] == "synthetic" and r["run"] == "streamed":
            out.append(f"7B-shaped {r['method']}: peak RSS {r['peak_rss_gb']:.2f} GB in {r['seconds'] / 60:.1f} min "
                       f"(target: fits this 24 GiB machine): {mark(r['peak_rss_gb'] * GB < 24 * 2**30)}")
    resume = row("resume", "killed at ~50%, rerun")
    if resume:
        out.append(f"killed after {resume['finished_when_killed']} of {resume['layers']} layers and rerun: bytes "
                   f"identical to the uninterrupted run: {mark(all(resume['bytes_identical'].values()))}")
    return out


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def pick(section: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["section"] == section and r["run"] in ("in memory", "streamed")]

    runs = [("run", lambda r: r["run"]), ("method", lambda r: r["method"]),
            ("peak RSS GB", lambda r: fmt(r["peak_rss_gb"], ".2f")), ("estimate GB", lambda r: r.get("estimate_gb")),
            ("minutes", lambda r: fmt(r["seconds"] / 60, ".1f")),
            ("perplexity before → after (report)", lambda r: f"{r['perplexity_report_before']:.3f} → "
                                                              f"{r['perplexity_report_after']:.3f}"),
            ("output MB", lambda r: fmt(r["output_bytes"] / 1e6, ".0f")), ("load", lambda r: r.get("load_1min")),
            ("run date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
    lines = ["# Compressing models larger than RAM", "",
             "Peak RSS is each `slimkit compress` process's own peak resident set (`VmHWM`, written as it exits), "
             "in GB of 10^9 bytes; `estimate` is what the memory guard predicted before the job started "
             "(printed in the job's report). Each job ran in a fresh process; `load` is the machine's 1-minute load "
             "average when its row was written (2 cores: above 2, other work shared the CPU and the minutes are "
             "slower than this job alone would take; memory is unaffected).", "",
             f"## SmolLM2-135M, GPTQ int4 g128 symmetric ({meta['calib_samples']} × 512 calibration tokens)", "",
             f"Baseline: {SMOLLM2_BASELINE}, saved as a Hugging Face safetensors directory. In memory with "
             "`--no-calib-guard` (the streamed run has no guard); report perplexities on "
             f"{meta['eval_windows']} × 512 pydoc eval tokens.", ""]
    lines += markdown_table(runs, pick("smollm2"))
    comparison = next((r for r in rows if r["run"] == "comparison"), None)
    if comparison:
        lines += ["", f"Both outputs reloaded and measured here on the same {meta['eval_windows']} windows: "
                  f"perplexity {comparison['perplexity'][0]} (in memory) vs {comparison['perplexity'][1]} (streamed); "
                  f"every stored tensor identical: {comparison['identical_tensors']} "
                  f"({comparison['packed_weights']} packed weights)."]
    plan = next((r for r in rows if r["run"] == "plan without --stream"), None)
    lines += ["", f"## A 7B-shaped Llama with random weights ({SEVEN_B['num_hidden_layers']} layers, hidden "
              f"{SEVEN_B['hidden_size']}, FFN {SEVEN_B['intermediate_size']}, vocabulary {SEVEN_B['vocab_size']}: "
              "6.74B parameters, 27 GB in float32), stored as 13.5 GB of bfloat16 shards, streamed on this 24 GiB "
              "machine",
              "", "Perplexities of random weights mean nothing; they show that the evaluation pass ran.", ""]
    lines += markdown_table(runs, pick("synthetic"))
    if plan:
        lines += ["", f"Without `--stream`, the memory guard estimates {plan['in_memory_estimate_gb']} GB in memory "
                  f"against a {plan['limit_gb']} GB limit (this machine's RAM) and streams by itself "
                  f"({plan['estimate_gb']} GB estimated): {plan['streams']}."]
    resume = next((r for r in rows if r["section"] == "resume"), None)
    if resume:
        lines += ["", "## Killed and resumed", "", f"The streamed SmolLM2 job above, SIGKILLed after "
                  f"{resume['killed_after_seconds']} s with {resume['finished_when_killed']} of {resume['layers']} "
                  f"layers checkpointed, then rerun: the rerun took {resume['resumed_seconds']} s (peak RSS "
                  f"{resume['resumed_peak_rss_gb']} GB); bytes identical to the uninterrupted run: "
                  f"{resume['bytes_identical']} ({resume['date']}, {resume['commit']})."]
    lines += ["", "## Targets", ""] + [f"- {v}" for v in verdicts(rows)]
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads; each row carries its own run date and commit."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--calib-samples", type=int, default=64, help="SmolLM2 calibration windows of 512 tokens")
    parser.add_argument("--eval-windows", type=int, default=16, help="SmolLM2 evaluation windows of 512 tokens")
    parser.add_argument("--layers", type=int, default=4, help="7B: decoder layers GPTQ quantizes (RTN the rest)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/slimkit-memory-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the synthetic 7B checkpoint")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the results file")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = resumed_rows(RESULTS / f"{NAME}.json", args.resume)
    meta = run_metadata(calib_samples=args.calib_samples, eval_windows=args.eval_windows, layers=args.layers)

    def write(rows: list[dict[str, Any]]) -> None:
        write_results(NAME, {"meta": meta, "rows": rows, "targets": verdicts(rows)}, markdown(rows, meta))

    for section, run in (("smollm2", run_smollm2), ("resume", run_resume), ("synthetic", run_synthetic)):
        if section in args.sections:
            run(args, rows, write)
    write(rows)
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
