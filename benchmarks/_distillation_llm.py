"""SmolLM2 and MiniLM sections of ``distillation.py``: recovery after FFN pruning, a 20-layer student, a 3-layer
MiniLM. Every row is measured on the pydoc evaluation split; the learning rate is chosen on the val split.

* ``recovery``: ``smollm2-135m`` with 30% of its FFN channels removed (activation importance), recovered by
  plain next-token fine-tuning and by distillation from the dense original (``--kd-candidates``: alpha, the
  weight of the soft targets against pydoc's next tokens, and temperature T) with the same windows, steps and
  learning rate; beside the same plain fine-tune applied to the dense model (the control: what fine-tuning on
  pydoc alone does) and the pruned model without recovery. The learning rate is the candidate (``--lm-lrs``)
  whose plain fine-tune of the pruned model has the lowest val perplexity, so the choice favours the
  undistilled row if anything; the distillation setting is the candidate with the lowest val perplexity.
  Target: distillation below plain fine-tuning.
* ``depth``: every third decoder layer dropped (30 → 20, kept layers initialised from the teacher; which third,
  by the untrained students' val perplexity: dropping the last layer is far worse), then ``--budget`` seconds
  of training with and without distillation (alpha 0.5, T = 2; ``--depth-epochs`` over the training windows
  so the budget, not the data, ends both runs) at the learning rate the recovery section chose: perplexity,
  parameters, greedy decode tokens/s at batch 1.
* ``minilm``: ``minilm-l6`` → every other encoder layer (3), trained to the teacher's sentence embeddings on
  ``--sentences`` pydoc sentences (cosine loss, ``--minilm-epochs``), learning rate (``--minilm-lrs``) chosen
  by the cosine on val sentences; target: mean cosine with the teacher's embeddings ≥ 0.90 on the evaluation
  sentences; size and latency ratios (latency timed round-robin, 32 sentences per call).
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch
from _common import SMOLLM2_BASELINE, latencies_round_robin, markdown_table, provenance, release_memory

import slimkit
from slimkit.api import apply, apply_with_training
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.distill.depth import DropLayersConfig
from slimkit.distill.section import DistillSection
from slimkit.eval.metrics import count_params, mean_cosine, perplexity
from slimkit.eval.speed import measure_speeds
from slimkit.export.slimkit_format import saved_size
from slimkit.models.bundle import ModelBundle
from slimkit.prune.structured.method import StructuredPruneConfig
from slimkit.train.finetune import FinetuneConfig
from slimkit.train.recipe_training import TrainSection, build_trainer
from slimkit.train.teachers import frozen_copy

PYDOC = parse_data_spec("pydoc")
MINILM_TARGET = 0.90


def _copy(bundle: ModelBundle) -> ModelBundle:
    out = copy.copy(bundle)
    out.model = copy.deepcopy(bundle.model)
    out.applied = []
    return out


def _train(bundle: ModelBundle, section: TrainSection, teacher: ModelBundle | None) -> dict[str, Any]:
    """Train ``bundle`` in place through ``train.finetune``; returns the step's statistics."""
    trainer = build_trainer(bundle, section, "pydoc", 512, teacher=teacher)
    start = time.perf_counter()
    stats = apply_with_training(bundle.model, [FinetuneConfig()], trainer)[0].stats
    return {"train_steps": stats["train_steps"], "train_seconds": round(time.perf_counter() - start, 1)}


def _lm_section(args: argparse.Namespace, lr: float, distill: DistillSection | None, **extra: Any) -> TrainSection:
    return TrainSection(data="pydoc", samples=args.train_windows, batch_size=4, lr=lr, seed=0, distill=distill,
                        **extra)


def recovery_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = slimkit.load_model("smollm2-135m")
    teacher = frozen_copy(base)
    windows = token_windows(base.tokenizer, documents(PYDOC, "eval"), 512, args.eval_windows)
    val = token_windows(base.tokenizer, documents(PYDOC, "val"), 512, args.val_windows)
    pruned = _copy(base)
    apply(pruned.model, StructuredPruneConfig(structure="ffn", importance="activation", fraction=0.3, multiple_of=8),
          calibration_loop(base, PYDOC, 32, 512))
    rows: list[dict[str, Any]] = []

    def row(label: str, model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
        r = {"section": "recovery", "table": "recovery", "variant": label, "perplexity": round(
            perplexity(model, windows, batch_size=4), 3), "val_perplexity": round(perplexity(model, val, 4), 3),
             "params": count_params(model), "eval_tokens": int(windows.numel()), **extra, **provenance()}
        print(r, flush=True)
        return r

    rows.append(row("dense (fp32)", base.model))
    rows.append(row("FFN -30%, no recovery", pruned.model))
    plain: dict[float, tuple[ModelBundle, dict[str, Any]]] = {}
    for lr in args.lm_lrs:  # chosen on val by the plain fine-tune: the control's best learning rate
        candidate = _copy(pruned)
        plain[lr] = candidate, _train(candidate, _lm_section(args, lr, None), None)
    lr = min(plain, key=lambda c: perplexity(plain[c][0].model, val, 4))
    for candidate_lr, (model, stats) in plain.items():
        rows.append(row("FFN -30% + next-token fine-tune", model.model, lr=candidate_lr, chosen=candidate_lr == lr,
                        **stats))
    distilled: dict[tuple[float, float], tuple[ModelBundle, dict[str, Any]]] = {}
    for alpha, temperature in args.kd_candidates:  # chosen on val, as the plain fine-tune's learning rate
        candidate = _copy(pruned)
        section = _lm_section(args, lr, DistillSection(alpha=alpha, temperature=temperature))
        distilled[alpha, temperature] = candidate, _train(candidate, section, teacher)
    best = min(distilled, key=lambda c: perplexity(distilled[c][0].model, val, 4))
    for (alpha, temperature), (model, stats) in distilled.items():
        rows.append(row(f"FFN -30% + distillation (alpha {alpha}, T={temperature:g})", model.model, lr=lr,
                        alpha=alpha, temperature=temperature, chosen=(alpha, temperature) == best, **stats))
    dense_ft = _copy(base)
    stats = _train(dense_ft, _lm_section(args, lr, None), None)
    rows.append(row("dense + next-token fine-tune (control)", dense_ft.model, lr=lr, chosen=True, **stats))
    release_memory()
    return rows


def _chosen_lr(args: argparse.Namespace, rows: list[dict[str, Any]]) -> float:
    return next((r["lr"] for r in rows if r.get("section") == "recovery" and r.get("chosen")), args.lm_lrs[0])


def drop_candidates(layers: int, every: int = 3) -> dict[int, DropLayersConfig]:
    """Every way to drop every ``every``-th layer, by the offset of the first dropped one (offset
    ``every - 1`` is ``drop_every``; offset 1 keeps both the first and the last layer)."""
    return {offset: DropLayersConfig(keep=tuple(i for i in range(layers) if i % every != offset))
            for offset in range(every)}


def depth_rows(args: argparse.Namespace, earlier: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    base = slimkit.load_model("smollm2-135m")
    teacher = frozen_copy(base)
    windows = token_windows(base.tokenizer, documents(PYDOC, "eval"), 512, args.eval_windows)
    val = token_windows(base.tokenizer, documents(PYDOC, "val"), 512, args.val_windows)
    lr = _chosen_lr(args, earlier or [])
    n = base.model.config.num_hidden_layers
    untrained: dict[int, tuple[ModelBundle, float]] = {}
    dropped: dict[int, list[int]] = {}
    for offset, config in drop_candidates(n).items():  # which third to drop: the untrained val perplexity
        student = _copy(base)
        apply(student.model, config)
        untrained[offset] = student, perplexity(student.model, val, 4)
        dropped[offset] = [i for i in range(n) if i not in config.kept_layers(n)]
    offset = min(untrained, key=lambda o: untrained[o][1])
    student = untrained[offset][0]
    plain, distilled = _copy(student), _copy(student)
    budget = {"max_seconds": args.budget, "epochs": args.depth_epochs}  # more steps than fit: the budget stops
    stats = {"plain": _train(plain, _lm_section(args, lr, None, **budget), None),
             "distilled": _train(distilled, _lm_section(args, lr, DistillSection(alpha=0.5, temperature=2.0),
                                                        **budget), teacher)}
    bundles = [("teacher (30 layers)", base, {"dropped": []}),
               *((f"{n - len(dropped[o])} layers (dropped {', '.join(map(str, dropped[o]))}), untrained", b,
                  {"val_perplexity": round(v, 3), "chosen": o == offset, "dropped": dropped[o]})
                 for o, (b, v) in untrained.items()),
               ("20 layers + next-token fine-tune", plain, {**stats["plain"], "dropped": dropped[offset]}),
               ("20 layers + distillation (T=2, alpha 0.5)", distilled,
                {**stats["distilled"], "dropped": dropped[offset]})]
    timed = [b for label, b, extra in bundles if extra.get("chosen", True)]
    speeds = dict(zip(map(id, timed), measure_speeds(timed, prompt_len=128, new_tokens=64, rounds=2), strict=True))
    rows = []
    for label, bundle, extra in bundles:
        speed = speeds.get(id(bundle))
        rows.append({"section": "depth", "table": "depth", "variant": label,
                     "layers": bundle.model.config.num_hidden_layers,
                     "perplexity": round(perplexity(bundle.model, windows, batch_size=4), 3),
                     "params": count_params(bundle.model),
                     "decode_tok_s": None if speed is None else round(speed[1].value, 1), "lr": lr,
                     "budget_s": args.budget, **extra, **provenance()})
        print(rows[-1], flush=True)
    release_memory()
    return rows


def _encode(model: torch.nn.Module, texts: list[str]) -> torch.Tensor:
    with torch.inference_mode():
        return model.encode(texts, convert_to_tensor=True, batch_size=32)  # type: ignore[operator]


def minilm_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = slimkit.load_model("minilm-l6")
    teacher = frozen_copy(base)
    texts = sentences(documents(PYDOC, "eval"), args.eval_sentences)
    val = sentences(documents(PYDOC, "val"), args.eval_sentences // 2)
    reference, val_reference = _encode(base.model, texts), _encode(base.model, val)
    student = _copy(base)
    apply(student.model, DropLayersConfig(keep_every=2))
    trained = {}
    for lr in args.minilm_lrs:
        candidate = _copy(student)
        section = TrainSection(data="pydoc", samples=args.sentences, epochs=args.minilm_epochs, batch_size=32, lr=lr,
                               seed=0, distill=DistillSection())
        trained[lr] = candidate, _train(candidate, section, teacher)
    lr = max(trained, key=lambda c: mean_cosine(val_reference, _encode(trained[c][0].model, val)))
    variants = [("teacher (6 layers)", base, {}), ("3 layers, untrained", student, {}),
                *((f"3 layers, distilled (lr {c})", b, {**s, "lr": c, "epochs": args.minilm_epochs, "chosen": c == lr})
                  for c, (b, s) in trained.items())]
    latencies = latencies_round_robin([lambda b=b: _encode(b.model, texts[:32]) for _, b, _ in variants], 32,
                                      rounds=3, repeats=5)
    dense_bytes, dense_ms = saved_size(base), latencies[0]
    rows = []
    for (label, bundle, extra), ms in zip(variants, latencies, strict=True):
        size = saved_size(bundle)
        rows.append({"section": "minilm", "table": "minilm", "variant": label, "sentences": len(texts),
                     "mean_cosine": round(mean_cosine(reference, _encode(bundle.model, texts)), 4),
                     "val_cosine": round(mean_cosine(val_reference, _encode(bundle.model, val)), 4),
                     "bytes_on_disk": size, "size_ratio": round(dense_bytes / size, 2),
                     "latency_ms_32": round(ms, 1), "speedup": round(dense_ms / ms, 2), **extra, **provenance()})
        print(rows[-1], flush=True)
    return rows


def llm_markdown(rows: list[dict[str, Any]], columns: Any) -> list[str]:
    out: list[str] = []
    rec = [r for r in rows if r["section"] == "recovery"]
    if rec:
        out += ["## SmolLM2-135M, 30% of FFN channels removed: recovery", "", f"Baseline: {SMOLLM2_BASELINE}. "
                "Perplexity on the pydoc eval split; the learning rate (`chosen`) by the plain fine-tune's val "
                "perplexity.", ""]
        out += markdown_table(columns("variant", "perplexity", "val_perplexity", "params", "lr", "alpha",
                                      "temperature", "chosen", "train_steps", "train_seconds", "eval_tokens"),
                              rec) + [""]
        by = {r["variant"]: r for r in rec if r.get("chosen", True)}
        kd = next(r for v, r in by.items() if "distillation" in v)
        ft = next(r for v, r in by.items() if v.startswith("FFN -30% + next-token"))
        ok = kd["perplexity"] < ft["perplexity"]
        out += [f"**{'MET' if ok else 'MISSED'}**: distillation {kd['perplexity']} vs next-token fine-tune "
                f"{ft['perplexity']} (target: lower).", ""]
    dep = [r for r in rows if r["section"] == "depth"]
    if dep:
        out += ["## SmolLM2-135M → 20-layer student (every third layer dropped)", ""]
        out += ["Which third is dropped (`chosen`): the untrained students' val perplexity. Both students train "
                "for the same wall-clock budget, so distillation's teacher forward costs it steps.", ""]
        out += markdown_table(columns("variant", "layers", "perplexity", "val_perplexity", "chosen", "params",
                                      "decode_tok_s", "lr", "budget_s", "train_steps", "train_seconds"), dep) + [""]
        kd, ft = dep[-1], dep[-2]
        out += [f"**{'MET' if kd['perplexity'] < ft['perplexity'] else 'MISSED'}**: distilled {kd['perplexity']} vs "
                f"undistilled {ft['perplexity']} within {kd['budget_s']:.0f} s of training each.", ""]
    mini = [r for r in rows if r["section"] == "minilm"]
    if mini:
        out += ["## MiniLM-L6 → 3-layer student (every other layer)", ""]
        out += markdown_table(columns("variant", "mean_cosine", "val_cosine", "bytes_on_disk", "size_ratio",
                                      "latency_ms_32", "speedup", "lr", "epochs", "chosen", "train_steps",
                                      "train_seconds"), mini) + [""]
        chosen = next(r for r in mini if r.get("chosen"))
        out += [f"**{'MET' if chosen['mean_cosine'] >= MINILM_TARGET else 'MISSED'}**: mean cosine "
                f"{chosen['mean_cosine']} (target ≥ {MINILM_TARGET}), {chosen['size_ratio']}× smaller, "
                f"{chosen['speedup']}× faster.", ""]
    return out
