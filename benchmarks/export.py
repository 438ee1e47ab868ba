"""Benchmark: slimkit's ONNX exports run in ONNX Runtime, OpenVINO and TVM beside PyTorch (issue 17's numbers).

Run ``python benchmarks/export.py`` (estimated 50-60 minutes on 2 idle cores: SmolLM2's two GPTQ runs and
three traces take most of it; ``--sections minilm`` about 5, ``classifier`` about 8; the tiny smoke runs took
about three times as long on a machine at load 10). Every file is written by ``slimkit.export`` (so each also
passed the format's own check) into a scratch directory and deleted after its row.

* ``minilm`` (``minilm-l6``): ONNX fp32 / int8-dynamic / int8-static (QDQ calibrated on the pydoc calibration
  split, the six FFN output projections kept float: see slimkit/export/onnx/int8.py) in ONNX Runtime and
  OpenVINO vs PyTorch fp32 on the same pydoc evaluation sentences: mean cosine with the PyTorch fp32
  embeddings, and latency at batch 1 and batch 32 (the same token ids; tokenizing is not timed), timed
  round-robin with the PyTorch pipeline. Targets: int8 cosine >= 0.99; ONNX Runtime int8 faster than PyTorch
  fp32 at both batch sizes.
* ``smollm2`` (``smollm2-135m``): ONNX with KV cache, fp32 and int4 ``MatMulNBits`` written from slimkit's own
  GPTQ integers (g32 and g64, calibrated on ``--calib-windows`` pydoc windows). Perplexity in ONNX Runtime on
  ``--eval-windows`` windows of the pydoc evaluation split (each window one prefill) vs slimkit's own model of
  the same weights; greedy decode tok/s at batch 1 (``--prompt``-token prompt, ``--new-tokens`` tokens) of the
  ONNX Runtime loop, slimkit's packed model and PyTorch fp32, round-robin. Target: perplexity within 0.5%.

* ``classifier``: LeNet-5 trained here on Fashion-MNIST (``--epochs``), exported fp32 and int8-static (QDQ
  calibrated on 256 training images), run in ONNX Runtime, OpenVINO and TVM: test accuracy in each runtime
  beside PyTorch fp32 (batches of 250), the check's max |diff|, and latency at batch 1 and 250 round-robin with
  PyTorch. Targets: fp32 accuracy equal in every runtime; int8 within 1 point.
* ``litert`` (LiteRT int8 of LeNet-5 / the small CNN) and ``keras`` (a Keras CNN converted and pruned by slimkit):
  see ``benchmarks/_export_tf.py``.

Writes ``benchmarks/results/export.json`` and ``.md`` after every row; each row carries its run date and
commit. A run of some ``--sections`` keeps the other sections' rows of the last results file; ``--resume`` also
keeps the rows of the sections it runs and skips what they cover.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _common import (
    RESULTS,
    SMOLLM2_BASELINE,
    fmt,
    latencies_round_robin,
    markdown_table,
    provenance,
    release_memory,
    run_metadata,
    write_results,
)
from _export_tf import keras_rows, litert_rows, tables
from _export_tf import verdicts as tf_verdicts

import slimkit
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.eval.metrics import perplexity
from slimkit.export.formats import export_model
from slimkit.export.onnx.graph import past_names
from slimkit.export.onnx.runtimes import onnxruntime_session, openvino_model, tvm_module
from slimkit.models.loading import load_model
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.pack_method import PackConfig

RUNTIMES = {"onnxruntime": onnxruntime_session, "openvino": openvino_model}
MINILM_PRECISIONS = ("fp32", "int8-dynamic", "int8-static")
SEQ_LEN = 512


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return row["section"], row["variant"]


# --- MiniLM ------------------------------------------------------------------------------------------------

def _feed(tokenizer: Any, texts: list[str]) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, return_tensors="np", padding=True, truncation=True, max_length=128)
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def _embed(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Embeddings one sentence at a time (no padding, as the PyTorch reference encodes them)."""
    return torch.tensor(np.concatenate([run(_feed(tokenizer, [t]))[0] for t in texts]))


def _runtime_call(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], feed: dict[str, np.ndarray]
                  ) -> Callable[[], object]:
    return lambda: run(feed)


def _torch_forward(model: Any, feed: dict[str, np.ndarray]) -> Callable[[], object]:
    """The sentence-transformers pipeline on the same token ids the runtimes get (tokenizing is not timed)."""
    features = {k: torch.from_numpy(v) for k, v in feed.items()}

    def forward() -> object:
        with torch.no_grad():
            return model(dict(features))["sentence_embedding"]

    return forward


def minilm_rows(args: argparse.Namespace, done: set[tuple[str, str]], scratch: Path) -> Iterator[dict[str, Any]]:
    bundle = load_model("minilm-l6")
    texts = sentences(documents(parse_data_spec("pydoc"), "eval"), args.sentences)
    with torch.no_grad():
        reference = bundle.model.encode(texts, convert_to_tensor=True)
    batch32 = _feed(bundle.tokenizer, texts[:32])
    batch1 = _feed(bundle.tokenizer, texts[:1])
    for precision in MINILM_PRECISIONS:
        if ("minilm", precision) in done:
            continue
        options: dict[str, Any] = {"precision": precision, "check": list(RUNTIMES)}
        if precision == "int8-static":  # the FFN output projections stay float (see slimkit/export/onnx/int8.py)
            options |= {"calib": "pydoc", "keep_float": ["*[0-9].output.dense"]}
        path = scratch / f"minilm-{precision}.onnx"
        result = export_model(bundle, "onnx", path, options, overwrite=True)
        row: dict[str, Any] = {"section": "minilm", "variant": precision, "bytes": result.bytes,
                               "sentences": len(texts), **provenance()}
        for runtime, load in RUNTIMES.items():
            run = load(path)
            embeddings = _embed(run, bundle.tokenizer, texts)
            row[f"{runtime}_cosine"] = float(F.cosine_similarity(embeddings, reference).mean())
            for batch, feed in (("b1", batch1), ("b32", batch32)):
                ms = latencies_round_robin([_runtime_call(run, feed), _torch_forward(bundle.model, feed)],
                                           items=1, rounds=3, repeats=5)
                row[f"{runtime}_{batch}_ms"] = ms[0]
                row.setdefault(f"torch_{batch}_ms", ms[1])  # PyTorch as timed beside ONNX Runtime
        path.unlink(missing_ok=True)
        yield row


# --- SmolLM2 -----------------------------------------------------------------------------------------------

def onnx_perplexity(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], windows: torch.Tensor,
                    empty: dict[str, np.ndarray]) -> float:
    """Perplexity of an ONNX causal LM over ``windows`` (n, T), each one prefill with an empty cache."""
    nll, count = 0.0, 0
    for window in windows:
        logits = torch.from_numpy(run({"input_ids": window[None].numpy(), **empty})[0])[0, :-1]  # (T-1, V)
        nll += float(F.cross_entropy(logits.float(), window[1:], reduction="sum"))
        count += window.numel() - 1
    return math.exp(nll / count)


def onnx_greedy(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], prompt: np.ndarray, new_tokens: int,
                empty: dict[str, np.ndarray]) -> tuple[float, list[int]]:
    """Decode tok/s of a greedy loop feeding the presents back, and the tokens it chose."""
    names = list(empty)
    logits, *presents = run({"input_ids": prompt, **empty})
    tokens = [int(logits[0, -1].argmax())]
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        logits, *presents = run({"input_ids": np.array([[tokens[-1]]], np.int64),
                                 **dict(zip(names, presents, strict=True))})
        tokens.append(int(logits[0, -1].argmax()))
    return (new_tokens - 1) / (time.perf_counter() - start), tokens


def torch_greedy_tok_s(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    from slimkit.eval.generation import timed_greedy_run

    return timed_greedy_run(model, prompt, new_tokens).decode_tokens_per_s


def _onnx_decode(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], prompt: torch.Tensor, new_tokens: int,
                 empty: dict[str, np.ndarray]) -> Callable[[], float]:
    return lambda: onnx_greedy(run, prompt.numpy(), new_tokens, empty)[0]


def _torch_decode(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> Callable[[], float]:
    return lambda: torch_greedy_tok_s(model, prompt, new_tokens)


def _decode_side_by_side(runs: list[Callable[[], float]], rounds: int = 3) -> list[float]:
    """Best tok/s of each decode loop, run in turn for ``rounds`` rounds after one warm-up round."""
    best = [0.0] * len(runs)
    for r in range(rounds + 1):
        for i, fn in enumerate(runs):
            tok_s = fn()
            if r:
                best[i] = max(best[i], tok_s)
    return best


def smollm2_rows(args: argparse.Namespace, done: set[tuple[str, str]], scratch: Path) -> Iterator[dict[str, Any]]:
    bundle = load_model("smollm2-135m")
    fp32_model = copy.deepcopy(bundle.model)
    windows = token_windows(bundle.tokenizer, documents(parse_data_spec("pydoc"), "eval"), SEQ_LEN, args.eval_windows)
    prompt = windows[0, : args.prompt][None]
    layers = bundle.model.config.num_hidden_layers
    config = bundle.model.config
    kv, hd = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    empty = {n: np.zeros((1, kv, 0, hd), np.float32) for n in past_names(layers)}
    for group in [None, *args.groups]:
        variant = "fp32" if group is None else f"int4 GPTQ g{group}"
        if ("smollm2", variant) in done:
            continue
        model = copy.deepcopy(fp32_model)
        start = time.perf_counter()
        if group is not None:
            loop = calibration_loop(bundle, parse_data_spec("pydoc"), args.calib_windows, SEQ_LEN)
            slimkit.apply(model, GPTQConfig(bits=4, group_size=group), forward_loop=loop)
        quantize_s = time.perf_counter() - start
        case = copy.copy(bundle)
        case.model = model
        path = scratch / "smollm2.onnx"
        options = {"precision": "fp32" if group is None else "int4", "check": ["onnxruntime"]}
        result = export_model(case, "onnx", path, options, overwrite=True)
        with torch.no_grad():
            slimkit_ppl = perplexity(model, windows)
        run = onnxruntime_session(path)
        ort_ppl = onnx_perplexity(run, windows, empty)
        packed = copy.deepcopy(model)
        if group is not None:
            slimkit.apply(packed, PackConfig())
        with torch.no_grad():
            speeds = _decode_side_by_side([_onnx_decode(run, prompt, args.new_tokens, empty),
                                           _torch_decode(packed, prompt, args.new_tokens),
                                           _torch_decode(fp32_model, prompt, args.new_tokens)])
        row = {"section": "smollm2", "variant": variant, "bytes": result.bytes, "quantize_s": quantize_s,
               "calib_windows": args.calib_windows if group else 0, "eval_tokens": int(windows.numel()),
               "slimkit_ppl": slimkit_ppl, "onnxruntime_ppl": ort_ppl,
               "ppl_diff_pct": 100 * (ort_ppl / slimkit_ppl - 1),
               "check_max_abs_diff": result.checks[0].max_abs_diff, "ort_decode_tok_s": speeds[0],
               "slimkit_decode_tok_s": speeds[1], "torch_fp32_decode_tok_s": speeds[2],
               "slimkit_compute": "float32" if group is None else "packed int4 (quant.pack)", **provenance()}
        path.unlink(missing_ok=True)
        del model, packed, run
        release_memory()
        yield row


# --- LeNet-5 ------------------------------------------------------------------------------------------------

def _runtime_accuracy(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], x: torch.Tensor, y: torch.Tensor,
                      batch: int = 250) -> float:
    correct = 0
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        correct += int((torch.from_numpy(run({"input": xb.numpy()})[0]).argmax(-1) == yb).sum())
    return correct / len(y)


def classifier_rows(args: argparse.Namespace, done: set[tuple[str, str]], scratch: Path) -> Iterator[dict[str, Any]]:
    from slimkit.data.images import image_data
    from slimkit.eval.metrics import accuracy
    from slimkit.train.baseline import train_architecture
    from slimkit.train.classifier import TrainConfig

    config = TrainConfig(epochs=args.epochs, max_seconds=args.train_seconds)
    bundle, _ = train_architecture("lenet-5", "fashion-mnist", config)
    x, y = image_data("fashion-mnist", None, "test")
    with torch.no_grad():
        torch_accuracy = accuracy(bundle.model, x, y)
    runtimes = ["onnxruntime", "openvino", "tvm"]
    loaders = {"onnxruntime": onnxruntime_session, "openvino": openvino_model, "tvm": tvm_module}
    for precision in ("fp32", "int8-static"):
        if ("classifier", precision) in done:
            continue
        options: dict[str, Any] = {"precision": precision, "check": runtimes}
        if precision == "int8-static":
            options |= {"calib": "fashion-mnist", "calib_samples": 256}
        path = scratch / f"lenet5-{precision}.onnx"
        result = export_model(bundle, "onnx", path, options, overwrite=True)
        row: dict[str, Any] = {"section": "classifier", "variant": precision, "bytes": result.bytes,
                               "epochs": args.epochs, "torch_accuracy": torch_accuracy, **provenance()}
        for check in result.checks:
            run = loaders[check.runtime](path)
            row[f"{check.runtime}_max_abs_diff"] = check.max_abs_diff
            row[f"{check.runtime}_accuracy"] = _runtime_accuracy(run, x, y)
            for batch in (1, 250):
                feed = {"input": x[:batch].numpy()}
                torch_in = x[:batch]

                def torch_call(t: torch.Tensor = torch_in) -> object:
                    with torch.no_grad():
                        return bundle.model(t)

                ms = latencies_round_robin([_runtime_call(run, feed), torch_call], items=1, rounds=3, repeats=5)
                row[f"{check.runtime}_b{batch}_ms"] = ms[0]
                row.setdefault(f"torch_b{batch}_ms", ms[1])
        path.unlink(missing_ok=True)
        yield row


# --- results -----------------------------------------------------------------------------------------------

def _minilm_table(rows: list[dict[str, Any]]) -> list[str]:
    cols = [("precision", lambda r: r["variant"]), ("MB", lambda r: fmt(r["bytes"] / 1e6, ".1f")),
            ("ORT cosine", lambda r: fmt(r["onnxruntime_cosine"], ".4f")),
            ("OpenVINO cosine", lambda r: fmt(r["openvino_cosine"], ".4f")),
            ("ORT b1 ms", lambda r: fmt(r["onnxruntime_b1_ms"], ".2f")),
            ("OpenVINO b1 ms", lambda r: fmt(r["openvino_b1_ms"], ".2f")),
            ("PyTorch b1 ms", lambda r: fmt(r["torch_b1_ms"], ".2f")),
            ("ORT b32 ms", lambda r: fmt(r["onnxruntime_b32_ms"], ".1f")),
            ("OpenVINO b32 ms", lambda r: fmt(r["openvino_b32_ms"], ".1f")),
            ("PyTorch b32 ms", lambda r: fmt(r["torch_b32_ms"], ".1f")),
            ("date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
    return markdown_table(cols, rows)


def _smollm2_table(rows: list[dict[str, Any]]) -> list[str]:
    cols = [("weights", lambda r: r["variant"]), ("MB", lambda r: fmt(r["bytes"] / 1e6, ".0f")),
            ("slimkit ppl", lambda r: fmt(r["slimkit_ppl"], ".3f")),
            ("ORT ppl", lambda r: fmt(r["onnxruntime_ppl"], ".3f")),
            ("diff %", lambda r: fmt(r["ppl_diff_pct"], "+.3f")),
            ("ORT decode tok/s", lambda r: fmt(r["ort_decode_tok_s"], ".1f")),
            ("slimkit decode tok/s", lambda r: fmt(r["slimkit_decode_tok_s"], ".1f")),
            ("PyTorch fp32 decode tok/s", lambda r: fmt(r["torch_fp32_decode_tok_s"], ".1f")),
            ("date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
    return markdown_table(cols, rows)


def _classifier_table(rows: list[dict[str, Any]]) -> list[str]:
    cols = [("precision", lambda r: r["variant"]), ("KB", lambda r: fmt(r["bytes"] / 1e3, ".0f")),
            ("PyTorch fp32 acc", lambda r: fmt(100 * r["torch_accuracy"], ".2f"))]
    for rt, label in (("onnxruntime", "ORT"), ("openvino", "OpenVINO"), ("tvm", "TVM")):
        cols += [(f"{label} acc", lambda r, rt=rt: fmt(100 * r[f"{rt}_accuracy"], ".2f")),
                 (f"{label} max diff", lambda r, rt=rt: fmt(r[f"{rt}_max_abs_diff"], ".2g")),
                 (f"{label} b1 / b250 ms", lambda r, rt=rt: f"{r[f'{rt}_b1_ms']:.2f} / {r[f'{rt}_b250_ms']:.1f}")]
    cols += [("PyTorch b1 / b250 ms", lambda r: f"{r['torch_b1_ms']:.2f} / {r['torch_b250_ms']:.1f}"),
             ("date", lambda r: r["date"]), ("commit", lambda r: r["commit"])]
    return markdown_table(cols, rows)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        if r["section"] == "minilm" and r["variant"] != "fp32":
            cos = min(r["onnxruntime_cosine"], r["openvino_cosine"])
            faster = r["onnxruntime_b1_ms"] < r["torch_b1_ms"] and r["onnxruntime_b32_ms"] < r["torch_b32_ms"]
            lines.append(f"- MiniLM {r['variant']}: cosine {cos:.4f} (target >= 0.99): "
                         f"{'met' if cos >= 0.99 else 'MISSED'}; ORT faster than PyTorch fp32 at batch 1 and 32: "
                         f"{'met' if faster else 'MISSED'}")
        if r["section"] == "classifier":
            worst = max(abs(r[f"{rt}_accuracy"] - r["torch_accuracy"]) for rt in ("onnxruntime", "openvino", "tvm"))
            limit = 0.0005 if r["variant"] == "fp32" else 0.01
            lines.append(f"- LeNet-5 {r['variant']}: largest accuracy change {100 * worst:.2f} points (target "
                         f"<= {100 * limit:.2f}): {'met' if worst <= limit else 'MISSED'}")
        if r["section"] == "smollm2":
            ok = abs(r["ppl_diff_pct"]) <= 0.5
            lines.append(f"- SmolLM2 {r['variant']}: ORT perplexity {r['ppl_diff_pct']:+.3f}% from slimkit's "
                         f"(target within 0.5%): {'met' if ok else 'MISSED'}")
    return lines


def write(name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    minilm = [r for r in rows if r["section"] == "minilm"]
    smollm2 = [r for r in rows if r["section"] == "smollm2"]
    classifier = [r for r in rows if r["section"] == "classifier"]
    md = ["# ONNX export: ONNX Runtime and OpenVINO beside PyTorch", "",
          f"Settings: {meta}. Latencies are medians, each runtime timed round-robin with PyTorch.", ""]
    if minilm:
        md += ["## MiniLM-L6 (sentence embeddings, pydoc evaluation sentences)", "", *_minilm_table(minilm), ""]
    if smollm2:
        md += ["## SmolLM2-135M with KV cache (pydoc evaluation split)", "", f"Baseline: {SMOLLM2_BASELINE}.", "",
               "slimkit ppl: slimkit's own fake-quantized float32 model (the same integers as the ONNX file); "
               "slimkit decode: its packed int4 model (bf16 int4 kernel) for int4 rows, float32 for fp32.", "",
               *_smollm2_table(smollm2), ""]
    if classifier:
        md += ["## LeNet-5 on Fashion-MNIST (test split)", "", *_classifier_table(classifier), ""]
    md += [*tables(rows), "## Targets", "", *verdicts(rows), *tf_verdicts(rows), ""]
    write_results(name, {"meta": meta, "rows": rows}, "\n".join(md))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sections = {"minilm": minilm_rows, "classifier": classifier_rows, "smollm2": smollm2_rows, "litert": litert_rows,
                "keras": keras_rows}
    parser.add_argument("--sections", nargs="+", default=list(sections), choices=list(sections))
    parser.add_argument("--keras-epochs", type=int, default=5, help="Keras CNN training epochs (keras section)")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning of the pruned Keras CNN")
    parser.add_argument("--epochs", type=int, default=3, help="LeNet-5 training epochs on Fashion-MNIST")
    parser.add_argument("--train-seconds", type=float, default=None, help="stop LeNet-5 training early (smoke runs)")
    parser.add_argument("--sentences", type=int, default=256, help="pydoc evaluation sentences for MiniLM cosine")
    parser.add_argument("--groups", type=int, nargs="+", default=[32, 64], help="GPTQ group sizes")
    parser.add_argument("--calib-windows", type=int, default=64, help="GPTQ calibration windows of 512 tokens")
    parser.add_argument("--eval-windows", type=int, default=32, help="perplexity windows of 512 tokens")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens before greedy decoding")
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy tokens per decode run")
    parser.add_argument("--resume", action="store_true", help="keep rows of an earlier run and skip them")
    parser.add_argument("--results-name", default="export", help="name of the results files (tiny smoke runs)")
    args = parser.parse_args()
    saved = RESULTS / f"{args.results_name}.json"
    rows = [r for r in (json.loads(saved.read_text())["rows"] if saved.exists() else [])
            if args.resume or r["section"] not in args.sections]  # other sections' rows are kept as they were
    done = {_key(r) for r in rows if r["section"] in args.sections}
    meta = run_metadata(**{k: v for k, v in vars(args).items() if k != "resume"})
    with tempfile.TemporaryDirectory(prefix="slimkit-export-bench-") as scratch:
        for section in args.sections:
            for row in sections[section](args, done, Path(scratch)):
                print(row, flush=True)
                rows.append(row)
                write(args.results_name, rows, meta)
    write(args.results_name, rows, meta)


if __name__ == "__main__":
    main()
