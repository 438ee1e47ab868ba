"""Benchmark: do packed quantized models really run faster on this CPU, and what do they cost?

Run ``flock /tmp/slimkit-heavy.lock python benchmarks/quant_speed.py``. On SmolLM2-135M, all variants in
one run: fp32, bf16, int8 dynamic (fbgemm), int8 weight-only, int4 weight-only g64 (bf16 model, and
float32 model with bf16 casts at each packed layer), int4 g128 (ragged on 576, run exactly with kernel
group 64) and unpacked RTN int4 g64 for reference. For each: bytes of the saved slimkit artifact,
whether save → load reproduces the outputs bit-exactly, 512-token prefill tok/s and 128-token greedy
decode tok/s at batch 1 (:func:`slimkit.eval.generation.measure_generation`), and perplexity on pydoc
eval windows. On all-MiniLM-L6-v2: int8 dynamic embedding cosine vs the original on held-out pydoc
sentences and latency at batch 1 and 32. Writes ``benchmarks/results/quant_speed.json`` and ``.md``;
every row carries the date and commit it was built at (the timing rounds run once, side by side, for all
rows). Perplexity uses every window of the eval split unless ``--windows`` caps it. Targets: packed int4
artifact ≤ 35% of fp32; int4 and int8-dynamic decode ≥ 1.5× fp32; MiniLM int8-dynamic mean cosine ≥ 0.99.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import SMOLLM2_BASELINE, provenance, run_metadata
from _common import write_results as write_files
from torch import nn

import slimkit
from slimkit.atomic import directory_bytes
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.eval.generation import measure_generation_side_by_side
from slimkit.eval.latency import time_workload
from slimkit.eval.metrics import mean_cosine, perplexity
from slimkit.export.slimkit_format import WEIGHTS_FILE, load_slimkit_dir, save
from slimkit.models.bundle import ModelBundle
from slimkit.quantize.pack_method import PackConfig
from slimkit.quantize.packed import packed_modules

SEQ_LEN = 512
EVERY_LINEAR = slimkit.Targets(module_types=("Linear",), exclude=())  # lm_head too (unties it)
LM_HEAD = slimkit.Targets(include=("lm_head",), exclude=())


def rtn4(group: int) -> slimkit.RTNConfig:
    return slimkit.RTNConfig(bits=4, granularity="group", group_size=group)


def steps(*configs: Any) -> Callable[[nn.Module], None]:
    def run(model: nn.Module) -> None:
        for config in configs:
            slimkit.apply(model, config)
    return run


def to_bf16(model: nn.Module) -> None:
    model.to(torch.bfloat16)


def lm_variants() -> list[tuple[str, Callable[[nn.Module], None]]]:
    return [
        ("fp32", steps()),
        ("bf16", to_bf16),
        ("int8 dynamic (fp32 model)", steps(PackConfig(kernel="int8-dynamic"))),
        ("int8 dynamic incl. lm_head (fp32 model)", steps(PackConfig(kernel="int8-dynamic", targets=EVERY_LINEAR))),
        ("int8 weight-only (bf16 model)", steps(slimkit.RTNConfig(bits=8), PackConfig(kernel="int8-weight"))),
        ("int4 g64 weight-only (bf16 model)", steps(rtn4(64), PackConfig())),
        ("int4 g64 + int8 lm_head weight-only (bf16 model)",
         steps(rtn4(64), slimkit.RTNConfig(bits=8, targets=LM_HEAD), PackConfig(targets=EVERY_LINEAR))),
        ("int4 g64 weight-only (fp32 model, bf16 casts)", steps(rtn4(64), PackConfig(activation_dtype="float32"))),
        ("int4 g128 ragged weight-only (bf16 model)", steps(rtn4(128), PackConfig())),
        ("int4 g64 RTN unpacked (simulated, fp32)", steps(rtn4(64))),
    ]


def embedding_storage(header: dict[str, Any], tensors_file: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(tensors_file), "pt") as f:
        dtype = f.get_slice("model.embed_tokens.weight").get_dtype()
    return f"{dtype} ({header['tensors']['model.embed_tokens.weight']['codec']})"


def save_and_reload(bundle: ModelBundle, probe: torch.Tensor, tmp: Path) -> dict[str, Any]:
    out = tmp / "artifact"
    save(bundle, out, overwrite=True)
    header = json.loads((out / "slimkit.json").read_text())
    with torch.inference_mode():
        expected = bundle.model(input_ids=probe).logits
        loaded = load_slimkit_dir(out)
        exact = torch.equal(loaded.model(input_ids=probe).logits, expected)
    row = {"artifact_bytes": directory_bytes(out), "weights_bytes": directory_bytes(out / WEIGHTS_FILE),
           "reload_bit_exact": exact, "reloaded_packed_modules": len(packed_modules(loaded.model)),
           "embedding_on_disk": embedding_storage(header, out / WEIGHTS_FILE)}
    del loaded
    gc.collect()
    return row


def run_lm(windows: int, new_tokens: int, rounds: int, meta: dict[str, Any]) -> list[dict[str, Any]]:
    base = slimkit.load_model("smollm2-135m")
    docs = documents(parse_data_spec("pydoc"), "eval")
    ppl_windows = token_windows(base.tokenizer, docs, SEQ_LEN, windows or 10**9)
    meta["eval_tokens"] = ppl_windows.numel()
    prompt = ppl_windows[:1]  # (1, 512)
    rows: list[dict[str, Any]] = []
    models: list[nn.Module] = []
    for name, build in lm_variants():
        model = copy.deepcopy(base.model)
        start = time.perf_counter()
        build(model)
        row: dict[str, Any] = {"variant": name, "build_seconds": round(time.perf_counter() - start, 1),
                               **provenance()}
        kernels = sorted({m.kernel for m in packed_modules(model).values()})
        row["kernels"] = kernels
        with tempfile.TemporaryDirectory(prefix="quant-speed-") as tmp:
            row.update(save_and_reload(ModelBundle(model, "causal-lm", "smollm2-135m", base.tokenizer),
                                       prompt[:, :32], Path(tmp)))
        row["perplexity"] = round(perplexity(model, ppl_windows, batch_size=4), 3)
        rows.append(row)
        models.append(model)
        print(row, flush=True)
    # All variants stay in memory (~4 GB) so that their speed is measured round-robin, under the same load.
    for row, timing in zip(rows, measure_generation_side_by_side(models, prompt, new_tokens, rounds), strict=True):
        row.update({k: round(v, 2) for k, v in timing.to_dict().items()})
    add_ratios(rows)
    write_results(rows, [], meta)
    del models
    gc.collect()
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    fp32 = rows[0]
    for r in rows:
        r["size_vs_fp32"] = round(r["artifact_bytes"] / fp32["artifact_bytes"], 3)
        r["prefill_speedup"] = round(r["prefill_tokens_per_s"] / fp32["prefill_tokens_per_s"], 2)
        r["decode_speedup"] = round(r["decode_tokens_per_s"] / fp32["decode_tokens_per_s"], 2)
        r["perplexity_vs_fp32"] = round(r["perplexity"] / fp32["perplexity"], 4)


def encode_latency_ms(model: nn.Module, texts: list[str], batch: int) -> float:
    chunk = (texts * batch)[:batch]
    with torch.inference_mode():
        return time_workload(lambda: model.encode(chunk, batch_size=batch), batch).median_ms  # type: ignore[operator]


def run_minilm(samples: int) -> list[dict[str, Any]]:
    base = slimkit.load_model("minilm-l6")
    texts = sentences(documents(parse_data_spec("pydoc"), "eval"), samples)
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    for name, configs in (("fp32", ()), ("int8 dynamic", (PackConfig(kernel="int8-dynamic"),))):
        model = copy.deepcopy(base.model)
        steps(*configs)(model)
        with torch.inference_mode():
            emb = model.encode(texts, convert_to_tensor=True, batch_size=32)  # type: ignore[operator]
        reference = emb if reference is None else reference
        row: dict[str, Any] = {"variant": name, "sentences": len(texts),
                               "mean_cosine": round(mean_cosine(reference, emb), 5), **provenance()}
        for batch in (1, 32):
            row[f"latency_b{batch}_ms"] = round(encode_latency_ms(model, texts, batch), 2)
        with tempfile.TemporaryDirectory(prefix="quant-speed-") as tmp:
            save(ModelBundle(model, "sentence-transformer", "minilm-l6", base.tokenizer), Path(tmp) / "a")
            row["artifact_bytes"] = directory_bytes(Path(tmp) / "a" / WEIGHTS_FILE)
        rows.append(row)
        print(row, flush=True)
    for r in rows:
        for batch in (1, 32):
            r[f"speedup_b{batch}"] = round(rows[0][f"latency_b{batch}_ms"] / r[f"latency_b{batch}_ms"], 2)
    return rows


def verdicts(lm: list[dict[str, Any]], st: list[dict[str, Any]]) -> list[str]:
    by = {r["variant"]: r for r in lm}
    out = []
    int4 = by.get("int4 g64 weight-only (bf16 model)")
    int4_head = by.get("int4 g64 + int8 lm_head weight-only (bf16 model)")
    dyn = by.get("int8 dynamic (fp32 model)")
    dyn_head = by.get("int8 dynamic incl. lm_head (fp32 model)")
    if int4:
        out.append(f"packed int4 g64 artifact {int4['size_vs_fp32']:.1%} of fp32 (target ≤ 35%): "
                   f"{'met' if int4['size_vs_fp32'] <= 0.35 else 'MISSED'}")
        out.append(f"packed int4 g64 decode {int4['decode_speedup']}× fp32 (target ≥ 1.5×): "
                   f"{'met' if int4['decode_speedup'] >= 1.5 else 'MISSED'}")
    if int4_head:
        out.append(f"packed int4 g64 + int8 lm_head decode {int4_head['decode_speedup']}× fp32 (target ≥ 1.5×): "
                   f"{'met' if int4_head['decode_speedup'] >= 1.5 else 'MISSED'}; artifact "
                   f"{int4_head['size_vs_fp32']:.1%} of fp32")
    if dyn:
        out.append(f"int8 dynamic decode {dyn['decode_speedup']}× fp32 (target ≥ 1.5×): "
                   f"{'met' if dyn['decode_speedup'] >= 1.5 else 'MISSED'}")
    if dyn_head:
        out.append(f"int8 dynamic incl. lm_head decode {dyn_head['decode_speedup']}× fp32 (target ≥ 1.5×): "
                   f"{'met' if dyn_head['decode_speedup'] >= 1.5 else 'MISSED'}")
    if len(st) > 1:
        cos = st[1]["mean_cosine"]
        out.append(f"MiniLM int8 dynamic mean cosine {cos} (target ≥ 0.99): {'met' if cos >= 0.99 else 'MISSED'}")
    return out


def markdown(lm: list[dict[str, Any]], st: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    tokens = meta.get("eval_tokens", 0)
    lines = ["# Packed quantized kernels: size, speed and accuracy on this CPU", "",
             f"SmolLM2-135M. Baseline: {SMOLLM2_BASELINE}. Batch 1: prefill of a {SEQ_LEN}-token pydoc prompt, "
             f"greedy decode of {meta['new_tokens']} tokens (plain KV-cache loop; all variants timed round-robin "
             f"in one run, best of {meta.get('rounds')} rounds), perplexity on {tokens} tokens "
             f"({tokens // SEQ_LEN} × {SEQ_LEN}-token windows) of the pydoc eval split. Decoder Linears are packed; "
             "the tied embedding / lm_head stays float (bf16 in the bf16 models), except in the `incl. lm_head` row, "
             "where the head is untied and packed too while the embedding table stays float (in the `+ int8 lm_head` "
             "row the tied table holds the int8 head's values in bf16). int8 dynamic quantizes activations per "
             "token; weight-only rows compute in bf16. int4 rows are RTN on symmetric grids using all 16 levels. "
             "Artifact = whole slimkit directory.", "",
             "| variant | artifact MB | × fp32 | embedding on disk | reload exact | prefill tok/s | × | "
             "decode tok/s | × | perplexity | × fp32 | run date | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in lm:
        lines.append(f"| {r['variant']} | {r['artifact_bytes'] / 1e6:.1f} | {r.get('size_vs_fp32', '')} | "
                     f"{r['embedding_on_disk']} | {r['reload_bit_exact']} | {r['prefill_tokens_per_s']:.0f} | "
                     f"{r.get('prefill_speedup', '')} | {r['decode_tokens_per_s']:.1f} | "
                     f"{r.get('decode_speedup', '')} | {r['perplexity']:.3f} | {r.get('perplexity_vs_fp32', '')} | "
                     f"{r['date']} | {r['commit']} |")
    if st:
        lines += ["", f"all-MiniLM-L6-v2 on {st[0]['sentences']} held-out pydoc sentences (eval split):", "",
                  "| variant | mean cosine vs fp32 | weights MB | b1 ms | b1 × | b32 ms | b32 × | run date | commit |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['mean_cosine']} | {r['artifact_bytes'] / 1e6:.1f} | "
                  f"{r['latency_b1_ms']} | {r['speedup_b1']} | {r['latency_b32_ms']} | {r['speedup_b32']} | "
                  f"{r['date']} | {r['commit']} |" for r in st]
    lines += ["", "## Targets", ""] + [f"- {v}" for v in verdicts(lm, st)]
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads; 1-minute load average at the start of each "
              "row is in the JSON (ratios measured side by side are the signal; absolute numbers are rough)."]
    return "\n".join(lines) + "\n"


def write_results(lm: list[dict[str, Any]], st: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    write_files("quant_speed", {"meta": meta, "smollm2": lm, "minilm": st, "targets": verdicts(lm, st)},
                markdown(lm, st, meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=0, help="cap on perplexity windows of 512 tokens (0: all)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="round-robin timing rounds (best of each kept)")
    args = parser.parse_args()
    meta = run_metadata(windows=args.windows, new_tokens=args.new_tokens, rounds=args.rounds)
    lm = run_lm(args.windows, args.new_tokens, args.rounds, meta)
    st = run_minilm(args.sentences)
    write_results(lm, st, meta)
    print(markdown(lm, st, meta))


if __name__ == "__main__":
    main()
