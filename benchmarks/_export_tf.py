"""The TensorFlow sections of ``benchmarks/export.py``: LiteRT int8 out, Keras models in (issue 17's numbers).

* ``litert``: LeNet-5 and the zoo's small CNN trained here on Fashion-MNIST (``--epochs``), exported with
  ``--format litert`` (full-integer int8, activations calibrated on 256 training images) and run in the
  ai-edge-litert interpreter on the whole test split beside PyTorch fp32: accuracy of each, file size beside
  the fp32 slimkit output, and latency at batch 1 (LiteRT and PyTorch both on one thread, round-robin).
  Target: LiteRT int8 accuracy within 1 point of PyTorch fp32.
* ``keras``: a small Keras CNN (conv 32 - pool - conv 64 - pool - dense 128 - dense 10) trained in Keras on
  Fashion-MNIST (``--keras-epochs``), saved as ``.keras``, read by slimkit (TensorFlow → tf2onnx → layer-chain):
  output difference and accuracy against Keras on the test split; then 50% of the channels of every
  conv / hidden dense layer removed by ``prune.structured`` (L2, physically), accuracy before and after, also
  after ``--finetune-epochs`` of fine-tuning the smaller model, and latency at batch 1 and 250 (PyTorch,
  two threads, round-robin) and the pruned model's LiteRT int8 file.

``--sections litert keras`` took 6 minutes at the defaults (2026-12-03, load ~2): LeNet-5 and the small CNN
train 3 epochs each, the Keras CNN 5 epochs (62 s in Keras), the pruned model one epoch of fine-tuning.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import fmt, latencies_round_robin, markdown_table, provenance

import slimkit
from slimkit.data.images import fashion_mnist
from slimkit.eval.metrics import accuracy
from slimkit.export.formats import export_model
from slimkit.export.litert import litert_runner
from slimkit.export.slimkit_format import saved_size


def _torch_call(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return model(x)

    return call


def _litert(bundle: slimkit.ModelBundle, path: Path, x: torch.Tensor, y: torch.Tensor
            ) -> tuple[dict[str, Any], Callable[[np.ndarray], np.ndarray]]:
    """Export ``bundle`` to LiteRT int8 (the export's own check on 1,000 test images, its accuracy limit lifted so
    that a miss is recorded, not raised), then both accuracies on the whole test split."""
    options = {"data": "fashion-mnist", "calib_samples": 256, "eval_samples": 1000, "max_accuracy_drop": 1.0}
    result = export_model(bundle, "litert", path, options, overwrite=True)
    run = litert_runner(path)
    outputs = np.concatenate([run(x[i:i + 500].numpy()) for i in range(0, len(x), 500)])
    with torch.no_grad():
        ours = accuracy(bundle.model, x, y)
    return ({"litert_bytes": result.bytes, "torch_accuracy": ours,
             "litert_accuracy": float((outputs.argmax(-1) == y.numpy()).mean()),
             "litert_max_abs_diff": result.checks[0].max_abs_diff}, run)


def _one_thread_b1_ms(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray], x: torch.Tensor
                      ) -> tuple[float, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the interpreter runs on one thread: compare like with like
    try:
        one = x[:1]
        ms = latencies_round_robin([lambda: run(one.numpy()), _torch_call(model, one)], items=1, rounds=5, repeats=20)
    finally:
        torch.set_num_threads(threads)
    return ms[0], ms[1]


def litert_rows(args: argparse.Namespace, done: set[tuple[str, str]], scratch: Path) -> Iterator[dict[str, Any]]:
    from slimkit.train.baseline import train_architecture
    from slimkit.train.classifier import TrainConfig

    x, y = fashion_mnist("test")
    for arch in ("lenet-5", "small-cnn"):
        if ("litert", arch) in done:
            continue
        config = TrainConfig(epochs=args.epochs, max_seconds=args.train_seconds)
        bundle, _ = train_architecture(arch, "fashion-mnist", config)
        numbers, run = _litert(bundle, scratch / f"{arch}.tflite", x, y)
        litert_ms, torch_ms = _one_thread_b1_ms(bundle.model, run, x)
        yield {"section": "litert", "variant": arch, "epochs": args.epochs, "fp32_bytes": saved_size(bundle),
               **numbers, "litert_b1_ms": litert_ms, "torch_b1_ms": torch_ms, **provenance()}


def train_keras_cnn(epochs: int, path: Path) -> float:
    """Train the small Keras CNN on Fashion-MNIST in Keras, save it at ``path``; returns the training seconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    x, y = fashion_mnist("train")
    layers = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
                              layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
                              layers.Dense(128, activation="relu"), layers.Dense(10)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(x.permute(0, 2, 3, 1).numpy(), y.numpy(), batch_size=128, epochs=epochs, verbose=0)
    model.save(path)
    return time.perf_counter() - start


def _timings(models: list[torch.nn.Module], x: torch.Tensor) -> list[dict[str, float]]:
    per_batch = {b: latencies_round_robin([_torch_call(m, x[:b]) for m in models], items=1, rounds=5, repeats=10)
                 for b in (1, 250)}
    return [{"b1_ms": per_batch[1][i], "b250_ms": per_batch[250][i]} for i in range(len(models))]


def keras_rows(args: argparse.Namespace, done: set[tuple[str, str]], scratch: Path) -> Iterator[dict[str, Any]]:
    from slimkit.models.keras_in import compare_with_original
    from slimkit.train.classifier import TrainConfig, train_classifier

    if {("keras", v) for v in ("converted", "pruned-50", "pruned-50+finetune")} <= done:
        return
    x, y = fashion_mnist("test")
    path = scratch / "fashion-cnn.keras"
    seconds = train_keras_cnn(args.keras_epochs, path)
    converted = slimkit.load(str(path))
    conversion = compare_with_original(converted, x, y)
    pruned = copy.copy(converted)  # the TensorFlow original is not copied: only the converted model runs
    pruned.model, pruned.original = copy.deepcopy(converted.model), None
    slimkit.apply(pruned.model, slimkit.StructuredPruneConfig(fraction=0.5))
    tuned = copy.copy(pruned)
    tuned.model = copy.deepcopy(pruned.model)
    x_train, y_train = fashion_mnist("train")
    train_classifier(tuned.model.train(), x_train, y_train, TrainConfig(epochs=args.finetune_epochs))
    tuned.model.eval()
    bundles = {"converted": converted, "pruned-50": pruned, "pruned-50+finetune": tuned}
    timings = _timings([b.model for b in bundles.values()], x)
    for (variant, bundle), timing in zip(bundles.items(), timings, strict=True):
        with torch.no_grad():
            row: dict[str, Any] = {"section": "keras", "variant": variant, "keras_epochs": args.keras_epochs,
                                   "keras_train_s": seconds, "accuracy": accuracy(bundle.model, x, y),
                                   "params": sum(p.numel() for p in bundle.model.parameters()),
                                   "bytes": saved_size(bundle), **timing}
        if variant == "converted":
            row |= {"keras_accuracy": conversion["accuracy_original"], "max_abs_diff": conversion["max_abs_diff"],
                    "mean_abs_diff": conversion["mean_abs_diff"]}
        if variant == "pruned-50+finetune":
            row["finetune_epochs"] = args.finetune_epochs
            row |= _litert(bundle, scratch / "pruned.tflite", x, y)[0]
        yield row | provenance()


def tables(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown for the litert and keras rows (none: nothing)."""
    md: list[str] = []
    litert = [r for r in rows if r["section"] == "litert"]
    keras = [r for r in rows if r["section"] == "keras"]
    if litert:
        cols = [("model", lambda r: r["variant"]),
                ("PyTorch fp32 acc", lambda r: fmt(100 * r["torch_accuracy"], ".2f")),
                ("LiteRT int8 acc", lambda r: fmt(100 * r["litert_accuracy"], ".2f")),
                ("fp32 KB (slimkit)", lambda r: fmt(r["fp32_bytes"] / 1e3, ".0f")),
                ("int8 .tflite KB", lambda r: fmt(r["litert_bytes"] / 1e3, ".0f")),
                ("LiteRT b1 ms", lambda r: fmt(r["litert_b1_ms"], ".3f")),
                ("PyTorch b1 ms", lambda r: fmt(r["torch_b1_ms"], ".3f")),
                ("date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
        md += ["## LiteRT int8 on Fashion-MNIST (test split, 10,000 images; latency on one thread)", "",
               *markdown_table(cols, litert), ""]
    if keras:
        cols = [("model", lambda r: r["variant"]), ("accuracy", lambda r: fmt(100 * r["accuracy"], ".2f")),
                ("params", lambda r: f"{r['params']:,}"), ("KB", lambda r: fmt(r["bytes"] / 1e3, ".0f")),
                ("b1 ms", lambda r: fmt(r["b1_ms"], ".3f")), ("b250 ms", lambda r: fmt(r["b250_ms"], ".1f")),
                ("LiteRT int8 acc", lambda r: fmt(100 * r["litert_accuracy"], ".2f") if "litert_accuracy" in r else ""),
                ("date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
        first = next((r for r in keras if r["variant"] == "converted"), None)
        md += ["## A Keras CNN trained in Keras on Fashion-MNIST, converted and pruned by slimkit (test split)", ""]
        if first:
            md += [f"Keras accuracy {100 * first['keras_accuracy']:.2f}% ({first['keras_epochs']} epochs, "
                   f"{first['keras_train_s']:.0f} s); converted model: max |logit diff| {first['max_abs_diff']:.2g}, "
                   f"mean {first['mean_abs_diff']:.2g}. Latency: PyTorch, two threads, round-robin.", ""]
        md += [*markdown_table(cols, keras), ""]
    return md


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        if r["section"] == "litert" or r["section"] == "keras" and "litert_accuracy" in r:
            drop = r["torch_accuracy"] - r["litert_accuracy"]
            lines.append(f"- LiteRT int8 {r['variant']}: {100 * drop:+.2f} points below PyTorch fp32 (target <= 1): "
                         f"{'met' if drop <= 0.01 else 'MISSED'}")
        if r["section"] == "keras" and r["variant"] == "converted":
            same = abs(r["accuracy"] - r["keras_accuracy"]) <= 1e-4
            lines.append(f"- Keras CNN converted: accuracy {'equal to' if same else 'DIFFERENT from'} Keras's")
    return lines
