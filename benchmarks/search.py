"""Benchmark: sensitivity-guided budget search (issue 20) against uniform settings.

``python benchmarks/search.py --sections smollm2 lenet300 minilm`` (2 threads). Every choice is made on a
validation split and only scored on the test / evaluation split: the sensitivity probe reads the validation
part of the data (pydoc ``val`` documents; the last training images, which are Fashion-MNIST's validation
split here), and every search trial is compressed, saved and scored on the validation split; the kept model
is then scored once on the evaluation split (pydoc ``eval`` windows, the 10k Fashion-MNIST test images, pydoc
``eval`` sentences). Sections:

* ``smollm2``: SmolLM2-135M; uniform RTN int4 g128, GPTQ int4 g128 and RTN int8 per channel; a search at the
  bytes on disk of uniform GPTQ int4 g128 (GPTQ trials, bits 3–8 at group 128 mixed per attention / FFN group),
  target: lower perplexity than uniform GPTQ int4 g128; a search with ``--max-metric-loss 2%``, target: smaller
  than uniform int8; and the proxy check: Spearman correlation between the KL scores of sampled (group,
  setting) pairs and the perplexity change they cause on the evaluation windows.
* ``lenet300``: LeNet-300-100 trained in-tool on Fashion-MNIST (last ``--val-size`` training images held out),
  searched with ``--max-metric-loss 0.5%`` over int grids, k-means codebooks, sparsity and their pairs, every
  trial fine-tuned ``--lenet-finetune-epochs`` after its pruning (``compress --finetune-epochs``) on the
  training images only; target: a pruned + quantized model at least 20× smaller than the fp32 state dict.
  Control: the dense model fine-tuned the same way (same epochs, data and seed); the loss against it is
  reported beside the loss against the model the search started from.
* ``minilm``: all-MiniLM-L6-v2 with ``--max-metric-loss 1%`` of embedding cosine (vs the original): size and
  latency of the chosen model.

Writes ``results/search.{json,md}`` (or ``--results-dir``); every row carries its run date and commit;
``--resume`` keeps the rows of sections not run now; results are written after every section.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from _common import (
    RESULTS,
    SMOLLM2_BASELINE,
    fmt,
    markdown_table,
    provenance,
    release_memory,
    resumed_rows,
    run_metadata,
)
from scipy.stats import spearmanr

from slimkit.config import BaseConfig
from slimkit.data.images import fashion_mnist
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.eval.evaluate import EvalConfig, Evaluation, LatencyConfig
from slimkit.eval.sensitivity import UNTOUCHED, SensitivityConfig, analyze_sensitivity, perturbed
from slimkit.eval.settings import Setting, parse_tries
from slimkit.export.slimkit_format import saved_size
from slimkit.models.bundle import ModelBundle
from slimkit.models.loading import load_model
from slimkit.models.zoo import build_architecture
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig
from slimkit.recipe import Recipe
from slimkit.search.budget import Budget, Trial, choose_point, relative_loss
from slimkit.search.plan import search_path
from slimkit.search.run import compressed_copy, lazy_recipes, path_options, sensitivity_for_search, trial_runner
from slimkit.train.classifier import TrainConfig, train_classifier
from slimkit.train.finetune import FinetuneConfig
from slimkit.train.recipe_training import TrainSection

SECTIONS = ("smollm2", "lenet300", "minilm")


def evaluations(bundle: ModelBundle, cfg: EvalConfig, val_count: int) -> tuple[Evaluation, Evaluation]:
    """(test, val): the same metric on the evaluation split and on the validation split (the search's)."""
    test, val = Evaluation(bundle, cfg), Evaluation(bundle, cfg)
    spec = parse_data_spec(cfg.data or "pydoc")
    if bundle.kind == "causal-lm":
        val.windows = token_windows(bundle.tokenizer, documents(spec, "val"), cfg.seq_len, val_count)
    elif bundle.kind == "torch":
        x, y = fashion_mnist("train", spec.arg)
        val.images, val.labels = x[-val_count:], y[-val_count:]
    else:
        val.sentences = sentences(documents(spec, "val"), val_count)
    return test, val


def run_search(bundle: ModelBundle, data: str, settings: list[Setting], budget: Budget, val: Evaluation,
               probe: SensitivityConfig, calib: Any, args: argparse.Namespace,
               finetune: TrainSection | None = None) -> tuple[ModelBundle, dict[str, Any]]:
    """Sensitivity (cached), path, trials on ``val``; returns the kept model and what the search measured."""
    table = sensitivity_for_search(bundle, EvalConfig(data=data), settings, probe, args.cache_dir, finetune)
    before = val.quality(bundle)
    fixed = saved_size(bundle) - sum(table.bytes[g.name][UNTOUCHED] for g in table.groups)
    path = search_path(path_options(table, settings), fixed)
    recipes = lazy_recipes(path, table.groups, calib is not None, EvalConfig(data=data), finetune)
    models: dict[int, ModelBundle] = {}  # compressed copies of the trials within budget (GPTQ is not run twice)

    def keep(trial: Trial, model: ModelBundle) -> None:
        if trial.judge(budget).meets:
            models[trial.point] = model

    kept, trials = choose_point(path, budget, trial_runner(bundle, path, recipes, val, before, calib, keep))
    choice = Counter(Setting.from_key(k).label if k else "fp32" for k in path[kept.point].choice.values())
    info = {"budget": budget.describe(), "trials": [t.to_dict() for t in trials], "path_points": len(path),
            "sensitivity_evaluations": table.evaluations, "val_before": before, "val_after": kept.metric,
            "val_loss": kept.loss, "choice": dict(choice.most_common()),
            "recipe_steps": [s.describe() for s in recipes[kept.point].steps]}
    return models[kept.point], info


def model_row(section: str, name: str, bundle: ModelBundle, test: Evaluation, base: dict[str, Any] | None,
              **extra: Any) -> dict[str, Any]:
    measured = test.measure(bundle, saved_size(bundle))
    row = {"section": section, "table": "models", "model": name, "metric": measured.metric,
           "value": round(measured.value, 5), "bytes_on_disk": measured.size_bytes,
           "latency_ms": {k: round(t.median_ms, 3) for k, t in measured.latency.items()}, **extra, **provenance()}
    if base is not None:
        row["loss_vs_fp32"] = round(relative_loss(base["value"], measured.value, measured.higher_is_better), 5)
        row["size_ratio"] = round(base["fp32_bytes"] / measured.size_bytes, 2)
    print({k: v for k, v in row.items() if k not in ("trials", "recipe_steps")}, flush=True)
    return row


def uniform(bundle: ModelBundle, step: BaseConfig, calib: Any = None) -> ModelBundle:
    return compressed_copy(bundle, Recipe(steps=(step,)), calib if step.needs_calibration else None)


def fp32_bytes(bundle: ModelBundle) -> int:
    return sum(t.numel() * 4 for t in bundle.model.state_dict().values() if t.is_floating_point())


def smollm2_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    bundle = load_model("smollm2-135m")
    cfg = EvalConfig(data="pydoc", windows=args.eval_windows, batch_size=1, latency=LatencyConfig(enabled=False))
    test, val = evaluations(bundle, cfg, args.val_windows)
    calib = calibration_loop(bundle, parse_data_spec("pydoc"), args.calib_windows, 512)
    fp32 = model_row("smollm2", "fp32", bundle, test, None, fp32_bytes=fp32_bytes(bundle))
    base = {"value": fp32["value"], "fp32_bytes": fp32["fp32_bytes"]}
    rows = [fp32]
    g128 = {"bits": 4, "granularity": "group", "group_size": 128}
    uniforms = {"uniform RTN int4 g128": RTNConfig(**g128), "uniform GPTQ int4 g128": GPTQConfig(**g128),
                "uniform RTN int8 per channel": RTNConfig(bits=8)}
    for name, step in uniforms.items():
        rows.append(model_row("smollm2", name, uniform(bundle, step, calib), test, base))
        release_memory()
    settings = parse_tries(args.smollm2_tries)
    probe = SensitivityConfig(windows=args.probe_windows, seq_len=args.probe_seq_len)
    gptq_bytes = rows[2]["bytes_on_disk"]
    for name, budget in (("searched at GPTQ int4 g128 bytes", Budget(target_bytes=gptq_bytes,
                                                                      max_trials=args.max_trials)),
                         ("searched, max loss 2%", Budget(max_loss=0.02, max_trials=args.max_trials))):
        model, info = run_search(bundle, "pydoc", settings, budget, val, probe, calib, args)
        rows.append(model_row("smollm2", name, model, test, base, **info))
        del model
        release_memory()
    if args.proxy_pairs:
        rows.append(proxy_row(bundle, settings, probe, test, args))
    return rows


def proxy_row(bundle: ModelBundle, settings: list[Setting], probe: SensitivityConfig, test: Evaluation,
              args: argparse.Namespace) -> dict[str, Any]:
    """Spearman between cached KL scores and the perplexity change on the evaluation windows, over sampled pairs."""
    table = analyze_sensitivity(bundle, "pydoc", settings, probe, args.cache_dir)  # cached by the searches
    pairs = [(g, s) for g in table.groups for s in settings]
    step = max(1, len(pairs) // args.proxy_pairs)
    sample = pairs[::step][: args.proxy_pairs]
    test.windows = test.windows[: args.proxy_windows]
    base = test.quality(bundle)
    kl, change = [], []
    for group, setting in sample:
        with perturbed(bundle, group, setting):
            change.append(test.quality(bundle) / base - 1)
        kl.append(table.scores[group.name][setting.key])
    rho = spearmanr(kl, change).statistic
    return {"section": "smollm2", "table": "proxy", "pairs": len(sample), "windows": args.proxy_windows,
            "spearman": round(float(rho), 3), "kl": kl, "ppl_change": change, **provenance()}


def lenet_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    x, y = fashion_mnist("train")
    torch.manual_seed(0)
    model = build_architecture("lenet-300-100", {})
    train_classifier(model, x[: -args.val_size], y[: -args.val_size], TrainConfig(epochs=args.lenet_epochs, seed=0))
    bundle = ModelBundle(model.eval(), "torch", "lenet-300-100", arch={"name": "lenet-300-100", "kwargs": {}})
    test, val = evaluations(bundle, EvalConfig(data="fashion-mnist"), args.val_size)
    fp32 = model_row("lenet300", "fp32", bundle, test, None, fp32_bytes=fp32_bytes(bundle))
    base = {"value": fp32["value"], "fp32_bytes": fp32["fp32_bytes"]}
    probe = SensitivityConfig(samples=min(args.val_size, 2000))
    budget = Budget(max_loss=0.005, max_trials=args.max_trials)
    # Fine-tuning reads the first len(x) - val_size training images only: the search's val images stay unseen.
    finetune = TrainSection(epochs=args.lenet_finetune_epochs, samples=len(y) - args.val_size, seed=1)
    control = compressed_copy(bundle, Recipe(steps=(FinetuneConfig(),), train=finetune,
                                             eval=EvalConfig(data="fashion-mnist")), None)
    control_row = model_row("lenet300", f"fp32 + {args.lenet_finetune_epochs} epochs (control)", control, test, base)
    chosen, info = run_search(bundle, "fashion-mnist", parse_tries(args.lenet_tries), budget, val, probe, None, args,
                              finetune)
    searched = model_row("lenet300", "searched, max loss 0.5%", chosen, test, base, **info)
    searched["loss_vs_control"] = round(relative_loss(control_row["value"], searched["value"], True), 5)
    return [fp32, control_row, searched]


def minilm_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    bundle = load_model("minilm-l6")
    cfg = EvalConfig(data="pydoc", samples=args.sentences, latency=LatencyConfig(batch_sizes=(1, 32)))
    test, val = evaluations(bundle, cfg, args.sentences)
    fp32 = model_row("minilm", "fp32", bundle, test, None, fp32_bytes=fp32_bytes(bundle))  # sets the reference
    val.quality(bundle)
    base = {"value": fp32["value"], "fp32_bytes": fp32["fp32_bytes"]}
    probe = SensitivityConfig(samples=args.sentences)
    budget = Budget(max_loss=0.01, max_trials=args.max_trials)
    chosen, info = run_search(bundle, "pydoc", parse_tries(args.minilm_tries), budget, val, probe, None, args)
    return [fp32, model_row("minilm", "searched, max loss 1% (cosine)", chosen, test, base, **info)]


def _columns(*keys: str) -> list[tuple[str, Any]]:
    return [(k, (lambda r, k=k: r.get(k))) for k in (*keys, "date", "commit")]


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    models = {(r["section"], r["model"]): r for r in rows if r["table"] == "models"}
    out = []
    gptq, at_bytes = models.get(("smollm2", "uniform GPTQ int4 g128")), models.get(("smollm2",
                                                                                   "searched at GPTQ int4 g128 bytes"))
    if gptq and at_bytes:
        ok = at_bytes["value"] < gptq["value"] and at_bytes["bytes_on_disk"] <= gptq["bytes_on_disk"]
        out.append(f"- SmolLM2 at GPTQ int4 g128 bytes: **{'MET' if ok else 'MISSED'}**, perplexity "
                   f"{at_bytes['value']:.3f} vs {gptq['value']:.3f} at {at_bytes['bytes_on_disk']:,} vs "
                   f"{gptq['bytes_on_disk']:,} bytes")
    int8, loss2 = models.get(("smollm2", "uniform RTN int8 per channel")), models.get(("smollm2",
                                                                                       "searched, max loss 2%"))
    if int8 and loss2:
        ok = loss2["bytes_on_disk"] < int8["bytes_on_disk"]
        out.append(f"- SmolLM2 max loss 2%: **{'MET' if ok else 'MISSED'}**, {loss2['bytes_on_disk']:,} bytes vs int8 "
                   f"{int8['bytes_on_disk']:,}; loss {loss2['val_loss']:+.2%} on val (chosen there), "
                   f"{loss2['loss_vs_fp32']:+.2%} on the evaluation windows")
    lenet = models.get(("lenet300", "searched, max loss 0.5%"))
    if lenet:
        pruned_quantized = any("%" in k and ("cb" in k or "int" in k) for k in lenet["choice"])
        ok = lenet["size_ratio"] >= 20 and pruned_quantized
        out.append(f"- LeNet-300-100 max loss 0.5%: **{'MET' if ok else 'MISSED'}**, {lenet['size_ratio']}× smaller "
                   f"than the fp32 state dict (target ≥ 20×, pruned + quantized: {pruned_quantized}); loss "
                   f"{lenet['val_loss']:+.2%} on val, {lenet['loss_vs_fp32']:+.2%} on test, "
                   f"{lenet.get('loss_vs_control', float('nan')):+.2%} against the dense model fine-tuned the same way")
    return out


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = ["# Budget search benchmark", "", f"torch {meta['torch']}, {meta['threads']} threads. Loss = relative "
           "metric loss vs fp32 (positive is worse); size ratio = fp32 state-dict bytes / bytes of the slimkit "
           "directory on disk. Searches choose on the validation split; `value` is on the evaluation split. "
           f"SmolLM2: {SMOLLM2_BASELINE}.", "", "## Verdicts", "", *verdicts(rows), "", "## Models", ""]
    pct = lambda key: (lambda r: fmt(r.get(key), "+.2%"))  # noqa: E731 - a column's cell function
    model_columns = [("section", lambda r: r["section"]), ("model", lambda r: r["model"]),
                     ("metric", lambda r: r["metric"]), ("value", lambda r: fmt(r["value"], ".4f")),
                     ("loss vs fp32", pct("loss_vs_fp32")), ("loss vs control", pct("loss_vs_control")),
                     ("bytes on disk", lambda r: fmt(r["bytes_on_disk"], ",")),
                     ("size ratio", lambda r: r.get("size_ratio")), ("latency ms", lambda r: r.get("latency_ms")),
                     ("val loss", pct("val_loss")), ("choice (groups per setting)", lambda r: r.get("choice")),
                     *_columns()]
    out += markdown_table(model_columns, [r for r in rows if r["table"] == "models"]) + [""]
    out += ["## Trials (validation split)", ""]
    trial_rows = [{"section": r["section"], "model": r["model"], **t, "date": r["date"], "commit": r["commit"]}
                  for r in rows if r["table"] == "models" for t in r.get("trials", [])]
    trial_columns = [("section", lambda r: r["section"]), ("model", lambda r: r["model"]),
                     ("point", lambda r: r["point"]), ("estimated bytes", lambda r: fmt(r["estimated_bytes"], ",")),
                     ("saved bytes", lambda r: fmt(r["size_bytes"], ",")),
                     ("val metric", lambda r: fmt(r["metric"], ".4f")),
                     ("val loss", pct("loss")), ("meets", lambda r: r["meets"]),
                     ("seconds", lambda r: fmt(r["seconds"], ".1f")), *_columns()]
    out += markdown_table(trial_columns, trial_rows) + [""]
    proxy = [r for r in rows if r["table"] == "proxy"]
    if proxy:
        out += ["## Proxy check (SmolLM2): KL vs perplexity change, sampled (group, setting) pairs", ""]
        out += markdown_table(_columns("pairs", "windows", "spearman"), proxy) + [""]
    return "\n".join(out) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--eval-windows", type=int, default=10**9, help="SmolLM2 pydoc eval windows (default: all)")
    p.add_argument("--val-windows", type=int, default=16, help="SmolLM2 pydoc val windows scoring each trial")
    p.add_argument("--calib-windows", type=int, default=32, help="GPTQ calibration windows of 512 tokens")
    p.add_argument("--probe-windows", type=int, default=4, help="sensitivity probe windows (SmolLM2)")
    p.add_argument("--probe-seq-len", type=int, default=256)
    p.add_argument("--smollm2-tries", nargs="+", default=["bits=3,4,5,6,8", "group_size=128"],
                   help="5 settings x 60 groups at ~5 s a pair on 2 cores: 25 min of sensitivity")
    p.add_argument("--proxy-pairs", type=int, default=16, help="(group, setting) pairs of the proxy check; 0 skips")
    p.add_argument("--proxy-windows", type=int, default=8, help="eval windows scoring each proxy pair")
    p.add_argument("--lenet-epochs", type=int, default=10)
    p.add_argument("--val-size", type=int, default=10_000, help="Fashion-MNIST training images held out")
    p.add_argument("--lenet-finetune-epochs", type=int, default=3, help="fine-tuning of every LeNet trial")
    p.add_argument("--lenet-tries", nargs="+",
                   default=["bits=2,3,4,8", "codebook=2,3,4,5", "sparsity=0.5,0.7,0.8,0.9,0.95"])
    p.add_argument("--sentences", type=int, default=256, help="MiniLM val and eval sentences")
    p.add_argument("--minilm-tries", nargs="+", default=["bits=3,4,8", "group_size=64,channel"])
    p.add_argument("--max-trials", type=int, default=6)
    p.add_argument("--cache-dir", type=Path, default=None, help="sensitivity cache (default ~/.cache/slimkit)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--resume", action="store_true", help="keep the saved rows of sections not run now")
    return p.parse_args()


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    meta = run_metadata(**{k: str(v) for k, v in vars(args).items() if k != "results_dir"})
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "search.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str)
                                                  + "\n")
    (args.results_dir / "search.md").write_text(markdown(rows, meta))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(2)
    rows = [r for r in resumed_rows(args.results_dir / "search.json", args.resume) if r["section"] not in args.sections]
    runners = {"smollm2": smollm2_rows, "lenet300": lenet_rows, "minilm": minilm_rows}
    for section in args.sections:
        rows = [r for r in rows if r["section"] != section] + runners[section](args)
        write(rows, args)  # after every section, so a long run keeps what it measured
    print(markdown(rows, run_metadata()))


if __name__ == "__main__":
    main()
