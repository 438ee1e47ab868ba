"""The language-model sections of ``deep_compression.py``: 4-bit k-means codebooks on SmolLM2-135M and MiniLM.

SmolLM2: every decoder Linear gets one 16-value codebook per output channel (float16 centroids), plain or
weighted by the calibration inputs' mean squares, against RTN and GPTQ int4 (symmetric, float32 scales)
per channel and per 64 columns, which bracket the codebook's bits per weight (4 + 256/in_features: 4.44 on
576-wide rows, 4.17 on 1536-wide ones; int4 per channel ≈ 4.06, g64 = 4.5). Bits per weight are measured
from the saved archive (every byte of the quantized tensors, codebooks and scales included). Perplexity on
every window of the pydoc evaluation split; calibration windows come from the disjoint calibration split.
MiniLM (sentence-transformers all-MiniLM-L6-v2): size ratio and mean cosine of the embeddings of pydoc
evaluation sentences against the fp32 model's; its word embeddings hold half the parameters, so a variant
also clusters them (per row, unweighted).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import SMOLLM2_BASELINE, markdown_table, provenance, release_memory

import slimkit
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.config import BaseConfig, Targets
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.eval.metrics import mean_cosine, perplexity
from slimkit.export.slimkit_format import write_into
from slimkit.export.storage import storage_breakdown
from slimkit.models.bundle import ModelBundle
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig

PYDOC = parse_data_spec("pydoc")
STORED = ("int", "codebook", "huffman")  # codecs of the compressed tensors whose bits per weight are counted


def kmeans4(weighting: str, **targets: Any) -> KMeansClusterConfig:
    return KMeansClusterConfig(bits=4, granularity="channel", codebook_dtype="float16", weighting=weighting,
                               targets=Targets(**targets) if targets else Targets())


def archive(bundle: ModelBundle, model: torch.nn.Module) -> dict[str, Any]:
    """Bytes on disk, and bits per weight of the compressed tensors (everything they store)."""
    saved = copy.copy(bundle)
    saved.model = model
    with tempfile.TemporaryDirectory(prefix="deep-compression-llm-") as tmp:
        write_into(saved, Path(tmp))
        breakdown = storage_breakdown(Path(tmp)).to_dict()
    coded = [t for t in breakdown["tensors"].values() if t["codec"] in STORED]
    numel = sum(int(torch.tensor(t["shape"]).prod()) for t in coded)
    stored = sum(v for t in coded for k, v in t.items() if k in ("values", "positions", "codebook", "tables"))
    return {"bytes_on_disk": breakdown["total_bytes"], "bits_per_weight": round(8 * stored / numel, 3) if numel else
            None, "compressed_params": numel}


def apply_steps(model: torch.nn.Module, steps: list[BaseConfig], loop: Callable[[torch.nn.Module], None]) -> float:
    start = time.perf_counter()
    for step in steps:
        slimkit.apply(model, step, loop if step.needs_calibration else None)
    return round(time.perf_counter() - start, 1)


def smollm2_rows(eval_windows: int, calib_windows: int) -> list[dict[str, Any]]:
    base = slimkit.load_model("smollm2-135m")
    windows = token_windows(base.tokenizer, documents(PYDOC, "eval"), 512, eval_windows)
    loop = calibration_loop(base, PYDOC, calib_windows, 512)
    variants: list[tuple[str, list[BaseConfig]]] = [
        ("fp32", []),
        ("RTN int4 per channel", [RTNConfig(bits=4, granularity="channel")]),
        ("GPTQ int4 per channel", [GPTQConfig(bits=4, granularity="channel", group_size=None)]),
        ("k-means 4-bit per channel", [kmeans4("none")]),
        ("k-means 4-bit per channel, activation-weighted", [kmeans4("activation")]),
        ("RTN int4 g64", [RTNConfig(bits=4, granularity="group", group_size=64)]),
        ("GPTQ int4 g64", [GPTQConfig(bits=4, group_size=64)]),
    ]
    rows: list[dict[str, Any]] = []
    for label, steps in variants:
        model = copy.deepcopy(base.model)
        seconds = apply_steps(model, steps, loop)
        ppl = perplexity(model, windows, batch_size=4)
        rows.append({"section": "smollm2", "table": "llm", "variant": label, "perplexity": round(ppl, 3),
                     "eval_tokens": int(windows.numel()), "calib_windows": calib_windows if any(
                         s.needs_calibration for s in steps) else None, "seconds": seconds,
                     **archive(base, model), **provenance()})
        rows[-1]["ppl_ratio_fp32"] = round(ppl / rows[0]["perplexity"], 4)
        print(rows[-1], flush=True)
        del model
        release_memory()
    return rows


def minilm_rows(count: int) -> list[dict[str, Any]]:
    base = slimkit.load_model("minilm-l6")
    texts = sentences(documents(PYDOC, "eval"), count)
    loop = calibration_loop(base, PYDOC, 64)
    dense = sum(t.numel() * 4 for t in base.model.state_dict().values())
    reference: torch.Tensor | None = None
    variants: list[tuple[str, list[BaseConfig]]] = [
        ("fp32", []),
        ("RTN int4 g64 (Linears)", [RTNConfig(bits=4, granularity="group", group_size=64)]),
        ("k-means 4-bit per channel (Linears), activation-weighted", [kmeans4("activation")]),
        ("k-means 4-bit per channel, Linears activation-weighted + word embeddings",
         [kmeans4("activation"), kmeans4("none", include=("*word_embeddings*",), module_types=("Embedding",))]),
    ]
    rows: list[dict[str, Any]] = []
    for label, steps in variants:
        model = copy.deepcopy(base.model)
        seconds = apply_steps(model, steps, loop)
        with torch.inference_mode():
            emb = model.encode(texts, convert_to_tensor=True, batch_size=32)  # type: ignore[operator]
        reference = emb if reference is None else reference
        stored = archive(base, model)
        rows.append({"section": "minilm", "table": "st", "variant": label, "sentences": len(texts),
                     "mean_cosine": round(mean_cosine(reference, emb), 5), "seconds": seconds, **stored,
                     "size_ratio": round(dense / stored["bytes_on_disk"], 2), **provenance()})
        print(rows[-1], flush=True)
    return rows


def llm_markdown(rows: list[dict[str, Any]], columns: Callable[..., Any]) -> list[str]:
    out: list[str] = []
    lm = [r for r in rows if r["section"] == "smollm2"]
    if lm:
        out += ["## SmolLM2-135M: 4-bit k-means codebooks vs RTN / GPTQ int4", "", f"{SMOLLM2_BASELINE}. Perplexity "
                "on the pydoc evaluation split; `bits_per_weight` counts every stored byte of the compressed "
                "tensors (codebooks and scales included). Target: the codebook beats RTN at the same bits.", ""]
        out += markdown_table(columns("variant", "perplexity", "ppl_ratio_fp32", "bits_per_weight", "bytes_on_disk",
                                      "calib_windows", "seconds"), lm) + [""]
    st = [r for r in rows if r["section"] == "minilm"]
    if st:
        out += ["## MiniLM-L6 (all-MiniLM-L6-v2): 4-bit codebooks", "", "Mean cosine of the embeddings of pydoc "
                "evaluation sentences against the fp32 model's; size ratio = fp32 state-dict bytes / bytes on "
                "disk.", ""]
        out += markdown_table(columns("variant", "mean_cosine", "size_ratio", "bits_per_weight", "bytes_on_disk",
                                      "seconds"), st) + [""]
    return out
