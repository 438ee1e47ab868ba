"""Benchmark: the pruning suite side by side — gradual / N:M / one-shot magnitude on LeNet-300-100,
channel removal on a CNN, FFN-channel removal on SmolLM2-135M.

Run ``python benchmarks/pruning.py`` (2 threads; ~40 minutes). Fashion-MNIST models train in-tool on the
train split and are evaluated on the test split. SmolLM2 is scored on every pydoc "eval" window;
importance and recovery fine-tuning use the disjoint "calib" split, and the importance criterion whose
model is fine-tuned is chosen on the "val" split, never on "eval". Every fine-tuned row has a control: the
dense model fine-tuned the same way (same data, epochs or steps, learning rate and seed), and losses are
stated against that control as well as against the dense model. Writes ``benchmarks/results/pruning.json``
and ``pruning.md``; every row carries its run date and commit. Unstructured sparsity is reported for
accuracy and bytes on disk (it does not speed up dense CPU kernels); structured removal for speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import (
    RESULTS,
    SMOLLM2_BASELINE,
    latencies_round_robin,
    markdown_table,
    provenance,
    run_metadata,
    write_results,
)
from torch import Tensor, nn

import slimkit
from slimkit.data.images import fashion_mnist
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.generation import measure_generation_side_by_side
from slimkit.eval.metrics import accuracy, count_params, perplexity, weight_sparsity
from slimkit.export.slimkit_format import saved_size
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.prune.gradual import GradualPruneConfig
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.prune.nm_prune import NMPruneConfig
from slimkit.prune.structured.method import StructuredPruneConfig
from slimkit.train.causal_lm import finetune_causal_lm
from slimkit.train.classifier import TrainConfig, train_classifier
from slimkit.train.gradient_loops import causal_lm_loss_loop, classifier_loss_loop

Data = tuple[Tensor, Tensor, Tensor, Tensor]  # x_train, y_train, x_test, y_test


def _add_latency(rows: list[dict[str, Any]], models: list[nn.Module], x: Tensor) -> None:
    for row, ms in zip(rows, latencies_round_robin([lambda m=m: m(x) for m in models], len(x)), strict=True):
        row["latency_b64_ms"] = round(ms, 3)


def _bundle(model: nn.Module, name: str, kwargs: dict[str, Any]) -> ModelBundle:
    return ModelBundle(model, "torch", name, arch={"name": name, "kwargs": kwargs})


# ---------------------------------------------------------------- LeNet-300-100: unstructured sparsity
def _lenet_row(label: str, model: nn.Module, data: Data, dense_acc: float, dense_bytes: int | None) -> dict[str, Any]:
    acc = accuracy(model, data[2], data[3])
    size = saved_size(_bundle(model, "lenet-300-100", {}))
    return {"variant": label, "accuracy": round(acc * 100, 2), "delta_points": round((acc - dense_acc) * 100, 2),
            "sparsity": round(weight_sparsity(model), 4), "bytes_on_disk": size,
            "bytes_vs_dense": round(size / dense_bytes, 4) if dense_bytes else 1.0, **provenance()}


def _finetuned(dense: nn.Module, data: Data, epochs: int, config: Any | None) -> nn.Module:
    model = copy.deepcopy(dense)
    ctl = slimkit.prepare(model, config) if config is not None else None
    # lr 1e-3 (cosine to 0): at 3e-4 the survivors of 90% pruning recovered 1.5 points less in 10 epochs.
    train_classifier(model, data[0], data[1], TrainConfig(epochs=epochs, lr=1e-3, seed=1),
                     on_step=ctl.step if ctl is not None else None)
    if ctl is not None:
        ctl.finalize()
    return model


def _against_control(rows: list[dict[str, Any]], control: dict[str, Any], metric: str, key: str,
                     ratio: bool = False) -> None:
    """Give every fine-tuned row its difference (or ratio) to the control fine-tuned the same way."""
    for r in rows:
        if r.get("fine_tuned") and r is not control:
            r[key] = round(r[metric] / control[metric] if ratio else r[metric] - control[metric], 3)


def lenet_rows(data: Data, epochs: int, ft_epochs: int) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    dense = build_architecture("lenet-300-100")
    train_classifier(dense, data[0], data[1], TrainConfig(epochs=epochs, lr=1e-3))
    dense_acc = accuracy(dense, data[2], data[3])
    dense_bytes = saved_size(_bundle(dense, "lenet-300-100", {}))
    rows, models = [_lenet_row("dense", dense, data, dense_acc, dense_bytes)], [dense]
    oneshot = copy.deepcopy(dense)
    slimkit.apply(oneshot, MagnitudePruneConfig(sparsity=0.9, scope="global"))
    rows.append(_lenet_row("magnitude 90% global, one-shot, no fine-tuning", oneshot, data, dense_acc, dense_bytes))
    models.append(oneshot)
    variants: list[tuple[str, Any]] = [
        (f"dense + {ft_epochs} ep (control)", None),
        (f"gradual 90% layer-wise + {ft_epochs} ep", GradualPruneConfig(final_sparsity=0.9, end=0.5, frequency=0.05)),
        (f"gradual 90% global + {ft_epochs} ep",
         GradualPruneConfig(final_sparsity=0.9, end=0.5, frequency=0.05, scope="global")),
        (f"2:4 magnitude + {ft_epochs} ep", NMPruneConfig(n=2, m=4)),
    ]
    for label, config in variants:
        models.append(_finetuned(dense, data, ft_epochs, config))
        rows.append({**_lenet_row(label, models[-1], data, dense_acc, dense_bytes), "fine_tuned": True})
        print(rows[-1], flush=True)
    _add_latency(rows, models, data[2][:64])
    _against_control(rows, rows[2], "accuracy", "delta_vs_control")
    return rows


# ---------------------------------------------------------------- CNN: channel removal for speed
def _forward_loop(x: Tensor) -> Callable[[nn.Module], None]:
    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for xb in x.split(256):
                model(xb)
    return loop


def _cnn_row(label: str, model: nn.Module, data: Data, pruned_acc: float | None) -> dict[str, Any]:
    acc = accuracy(model, data[2], data[3])
    return {"variant": label, "params": count_params(model), "accuracy": round(acc * 100, 2),
            "accuracy_pruned": None if pruned_acc is None else round(pruned_acc * 100, 2), **provenance()}


def cnn_rows(data: Data, widths: list[int], epochs: int) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    kwargs = {"widths": widths}
    dense = build_architecture("small-cnn", kwargs)
    train_classifier(dense, data[0], data[1], TrainConfig(epochs=epochs, lr=2e-3))
    x64, calib = data[2][:64], (data[0][:2048], data[1][:2048])
    rows, models = [_cnn_row(f"dense small-cnn {widths}", dense, data, None)], [dense]
    control = copy.deepcopy(dense)
    train_classifier(control, data[0], data[1], TrainConfig(epochs=1, lr=5e-4, seed=1))
    rows.append({**_cnn_row("dense + 1 epoch (control)", control, data, None), "fine_tuned": True})
    models.append(control)
    for importance in ("l2", "activation", "taylor"):
        model = copy.deepcopy(dense)
        loop = classifier_loss_loop(*calib) if importance == "taylor" else _forward_loop(calib[0])
        slimkit.apply(model, StructuredPruneConfig(fraction=0.5, importance=importance), loop)
        pruned_acc = accuracy(model, data[2], data[3])
        train_classifier(model, data[0], data[1], TrainConfig(epochs=1, lr=5e-4, seed=1))
        rows.append({**_cnn_row(f"50% channels removed by {importance} + 1 epoch", model, data, pruned_acc),
                     "fine_tuned": True})
        models.append(model)
        print(rows[-1], flush=True)
    _add_latency(rows, models, x64)
    for r in rows:
        r["speedup_b64"] = round(rows[0]["latency_b64_ms"] / r["latency_b64_ms"], 2)
        r["delta_points"] = round(r["accuracy"] - rows[0]["accuracy"], 2)
    _against_control(rows, rows[1], "accuracy", "delta_vs_control")
    return rows


# ---------------------------------------------------------------- SmolLM2-135M: FFN channel removal
def _llm_row(label: str, model: nn.Module, eval_windows: Tensor, val_windows: Tensor) -> dict[str, Any]:
    return {"variant": label, "perplexity": round(perplexity(model, eval_windows, batch_size=4), 3),
            "val_perplexity": round(perplexity(model, val_windows, batch_size=4), 3),
            "params": count_params(model), "intermediate_size": model.config.intermediate_size, **provenance()}


def _add_speed(rows: list[dict[str, Any]], models: list[nn.Module], prompt: Tensor, rounds: int) -> None:
    for row, t in zip(rows, measure_generation_side_by_side(models, prompt, 128, rounds), strict=True):
        row["prefill_tokens_per_s"] = round(t.prefill_tokens_per_s, 1)
        row["decode_tokens_per_s"] = round(t.decode_tokens_per_s, 2)
    for r in rows:
        r["decode_speedup"] = round(r["decode_tokens_per_s"] / rows[0]["decode_tokens_per_s"], 3)
        r["prefill_speedup"] = round(r["prefill_tokens_per_s"] / rows[0]["prefill_tokens_per_s"], 3)


def llm_rows(importance_count: int, ft_steps: int, rounds: int) -> list[dict[str, Any]]:
    """Dense, FFN −30% by two importance criteria, the one better on the val split fine-tuned for
    ``ft_steps`` steps, and the dense model fine-tuned identically (the control)."""
    bundle = slimkit.load_model("smollm2-135m")
    spec = parse_data_spec("pydoc")
    eval_windows = token_windows(bundle.tokenizer, documents(spec, "eval"), 512, 10**9)
    val_windows = token_windows(bundle.tokenizer, documents(spec, "val"), 512, 10**9)
    calib = token_windows(bundle.tokenizer, documents(spec, "calib"), 512, 10**9)
    rows = [_llm_row("fp32 dense", bundle.model, eval_windows, val_windows)]
    models = [bundle.model]
    print(rows[-1], flush=True)
    for importance in ("activation", "taylor"):
        model = copy.deepcopy(bundle.model)
        windows = calib[:importance_count]
        loop = causal_lm_loss_loop(windows) if importance == "taylor" else _lm_forward_loop(windows)
        start = time.perf_counter()
        slimkit.apply(model, StructuredPruneConfig(structure="ffn", fraction=0.3, multiple_of=8,
                                                   importance=importance), loop)
        rows.append(_llm_row(f"FFN −30% by {importance}", model, eval_windows, val_windows))
        rows[-1]["prune_seconds"] = round(time.perf_counter() - start, 1)
        models.append(model)
        print(rows[-1], flush=True)
    best = min(range(1, len(rows)), key=lambda i: rows[i]["val_perplexity"])  # chosen on val, never on eval
    importance = rows[best]["variant"].rsplit(" ", 1)[-1]
    for label, source in ((f"FFN −30% by {importance} + {ft_steps}-step recovery", models[best]),
                          (f"fp32 dense + {ft_steps}-step fine-tune (control)", bundle.model)):
        model = copy.deepcopy(source)
        losses = finetune_causal_lm(model, calib[importance_count:], steps=ft_steps, lr=5e-5, seed=1)
        rows.append({**_llm_row(label, model, eval_windows, val_windows), "fine_tuned": True,
                     "train_steps": len(losses)})
        models.append(model)
        print(rows[-1], flush=True)
    _against_control(rows, rows[-1], "perplexity", "ppl_ratio_control", ratio=True)
    for r in rows:
        r["ppl_ratio_fp32"] = round(r["perplexity"] / rows[0]["perplexity"], 4)
    _add_speed(rows, models, eval_windows[:1], rounds)
    return rows


def _lm_forward_loop(windows: Tensor) -> Callable[[nn.Module], None]:
    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for w in windows.split(4):
                model(input_ids=w)
    return loop


# ---------------------------------------------------------------- report
def _columns(*keys: str) -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    return [(k, (lambda r, k=k: r.get(k))) for k in (*keys, "date", "commit")]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = ["# Pruning suite benchmark", "",
           f"torch {meta['torch']}, {meta['threads']} threads; every row carries its own run date and commit. "
           "`delta_vs_control` / `ppl_ratio_control`: against the dense model fine-tuned exactly like the "
           "pruned one (same data, epochs or steps, learning rate, seed).", ""]
    if "lenet" in results:
        out += ["## LeNet-300-100 on Fashion-MNIST (unstructured)", "",
                "Accuracy on the 10k test split; `delta_points` vs the dense model, `delta_vs_control` vs the "
                "dense model trained the same extra epochs; bytes in the slimkit format (bitmask codec for sparse "
                "tensors). Targets: gradual 90% loses ≤ 0.5 points (judged against the control); 90% artifact "
                "≤ 20% of dense. Latency (round-robin) shows that unstructured sparsity does not speed up dense "
                "kernels.", ""]
        out += markdown_table(_columns("variant", "accuracy", "delta_points", "delta_vs_control", "sparsity",
                                       "bytes_on_disk", "bytes_vs_dense", "latency_b64_ms"), results["lenet"]) + [""]
    if "cnn" in results:
        out += ["## CNN channel removal (structured)", "",
                "50% of the channels of every conv layer removed (BatchNorm entries and the next layer's "
                "inputs with them), then 1 recovery epoch; the control is the dense model trained the same "
                "epoch. Latency at batch 64, all models timed round-robin. Target: ≥ 1.6× faster.", ""]
        out += markdown_table(_columns("variant", "accuracy_pruned", "accuracy", "delta_points", "delta_vs_control",
                                       "params", "latency_b64_ms", "speedup_b64"), results["cnn"]) + [""]
    if "llm" in results:
        rows = results["llm"]
        tokens = meta["args"].get("eval_tokens", "all")
        out += ["## SmolLM2-135M: 30% of FFN channels removed", "",
                f"Baseline: {SMOLLM2_BASELINE}. Perplexity on every pydoc eval window ({tokens} tokens); "
                "`val_perplexity` on the disjoint val split, which alone chooses the importance criterion to "
                f"fine-tune; importance from {meta['args']['importance_windows']} calib windows; recovery "
                "fine-tuning on the other calib windows, and the control is the dense model fine-tuned with the "
                "same windows, steps, learning rate and seed. Prefill 512 tokens, greedy decode 128 tokens, batch 1 "
                f"(all models timed round-robin, best of {meta['args'].get('timing_rounds')} rounds). "
                "Target: decode ≥ 1.2× faster.", ""]
        out += markdown_table(_columns("variant", "perplexity", "ppl_ratio_fp32", "ppl_ratio_control",
                                       "val_perplexity", "params", "intermediate_size", "prefill_speedup",
                                       "decode_tokens_per_s", "decode_speedup"), rows) + [""]
    out += ["## Targets", ""] + [f"- {v}" for v in verdicts(results)] + [""]
    return "\n".join(out)


def verdicts(results: dict[str, Any]) -> list[str]:
    """One line per issue target the sections run so far can judge: the number, the target, met or MISSED."""
    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    out = []
    for r in results.get("lenet", []):
        if r["variant"].startswith("gradual 90% global"):
            loss, size = r["delta_vs_control"], r["bytes_vs_dense"]
            out.append(f"LeNet {r['variant']}: {loss:+.2f} points vs the control ({r['delta_points']:+.2f} vs "
                       f"dense) (target ≥ −0.5): {mark(loss >= -0.5)}; artifact {size:.1%} of dense "
                       f"(target ≤ 20%): {mark(size <= 0.2)}")
    for r in results.get("cnn", []):
        if "removed" in r["variant"]:
            out.append(f"CNN {r['variant']}: {r['speedup_b64']}× at batch 64 (target ≥ 1.6×): "
                       f"{mark(r['speedup_b64'] >= 1.6)}, {r['delta_vs_control']:+.2f} points vs the control")
    for r in results.get("llm", []):
        if "FFN" in r["variant"]:
            control = f", {r['ppl_ratio_control']}× the control's perplexity" if "ppl_ratio_control" in r else ""
            out.append(f"SmolLM2 {r['variant']}: decode {r['decode_speedup']}× (target ≥ 1.2×): "
                       f"{mark(r['decode_speedup'] >= 1.2)}, perplexity {r['perplexity']} "
                       f"({r['ppl_ratio_fp32']}× fp32{control})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sections", default="lenet,cnn,llm")
    parser.add_argument("--lenet-epochs", type=int, default=12)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--cnn-epochs", type=int, default=3)
    parser.add_argument("--cnn-widths", default="32,64")
    parser.add_argument("--importance-windows", type=int, default=16)
    parser.add_argument("--recovery-steps", type=int, default=60)
    parser.add_argument("--timing-rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    sections = args.sections.split(",")
    saved = RESULTS / "pruning.json"
    # A run of some sections keeps the other sections of the last results file (each row has its own date).
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    results.pop("targets", None)
    for section in sections:  # rows of a section being re-run are replaced, never mixed with the new ones
        results.pop(section, None)
    results["meta"] = run_metadata(args=vars(args))
    if "lenet" in sections or "cnn" in sections:
        x, y = fashion_mnist("train")
        data = (x, y, *fashion_mnist("test"))
    if "lenet" in sections:
        results["lenet"] = lenet_rows(data, args.lenet_epochs, args.finetune_epochs)
        write(results)
    if "cnn" in sections:
        results["cnn"] = cnn_rows(data, [int(w) for w in args.cnn_widths.split(",")], args.cnn_epochs)
        write(results)
    if "llm" in sections:
        results["llm"] = llm_rows(args.importance_windows, args.recovery_steps, args.timing_rounds)
        write(results)
    print(markdown(results))


def write(results: dict[str, Any]) -> None:
    write_results("pruning", {**results, "targets": verdicts(results)}, markdown(results))


if __name__ == "__main__":
    main()
