"""The bodies of ``slimkit eval``, ``slimkit bench`` and ``slimkit generate``: what they measure and print, on
PyTorch or (``--runtime llama.cpp``) on llama.cpp.

Kept beside :mod:`slimkit.cli` (which only declares the commands), as :mod:`slimkit.cli_export` is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markdown import Markdown
from rich.text import Text

from slimkit.progress import console


def run_eval(model: str, data: str | None, windows: int, latency: bool, as_json: bool, runtime: str) -> None:
    from slimkit.atomic import directory_bytes
    from slimkit.eval.evaluate import EvalConfig, Evaluation, LatencyConfig
    from slimkit.export.slimkit_format import REPORT_FILES, is_slimkit_dir
    from slimkit.models.loading import load_model
    from slimkit.preflight import check_data_spec

    if data is not None:
        check_data_spec(data)
    if _check_runtime(runtime) == "llama.cpp":
        from slimkit.eval.llama_cpp import evaluate_llama_cpp

        _print_json(evaluate_llama_cpp(model, data, windows, latency), as_json)
        return
    bundle = load_model(model)
    cfg = EvalConfig(data=data, windows=windows, latency=LatencyConfig(enabled=latency))
    evaluation = Evaluation(bundle, cfg)
    if evaluation.metric_name == "embedding_cosine" and bundle.origin and bundle.origin != bundle.source:
        evaluation.quality(load_model(bundle.origin))  # the original's embeddings are the reference
    path = Path(model)
    if is_slimkit_dir(path):
        size: int | None = sum(directory_bytes(p) for p in path.iterdir() if p.name not in REPORT_FILES)
    else:
        size = directory_bytes(path) if path.exists() else _packaged_size(model)
    result = evaluation.measure(bundle, size)
    payload: dict[str, Any] = {"model": model, "data": str(evaluation.spec), **result.to_dict()}
    payload["size_bytes"] = size
    _print_json(payload, as_json)


def _print_json(payload: dict[str, Any], plain: bool) -> None:
    """One JSON object on stdout (``--json``), or pretty-printed."""
    if plain:
        print(json.dumps(payload))
    else:
        console.print_json(json.dumps(payload))


def _packaged_size(name: str) -> int | None:
    from slimkit.atomic import directory_bytes
    from slimkit.models.packaged import PACKAGED_MODELS, packaged_model_path

    return directory_bytes(packaged_model_path(name)) if name in PACKAGED_MODELS else None


RUNTIMES = ("torch", "llama.cpp")


def _check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime must be 'torch' or 'llama.cpp', not {runtime!r}")
    return runtime


def run_bench(model: str, compare: str | None, prompt_len: int, new_tokens: int, as_json: bool, runtime: str) -> None:
    from slimkit.eval.speed import measure_speeds, slower_warnings, speed_table
    from slimkit.models.loading import load_model

    names = [model] + ([compare] if compare else [])
    if _check_runtime(runtime) == "llama.cpp":
        from slimkit.eval.llama_cpp import measure_speeds_llama_cpp

        runs = measure_speeds_llama_cpp(names, prompt_len, new_tokens)
    else:
        runs = measure_speeds([load_model(name) for name in names], prompt_len, new_tokens)
    warnings = slower_warnings(model, runs[0], compare, runs[1]) if compare else []
    if as_json:
        print(json.dumps({"models": {n: {s.name: {"value": s.value, "unit": s.unit} for s in run}
                                     for n, run in zip(names, runs, strict=True)}, "warnings": warnings}))
        return
    console.print(Markdown("\n".join(speed_table(names, runs))))
    for line in warnings:
        console.print(Text.assemble(("WARNING: ", "bold yellow"), line), highlight=False, soft_wrap=True)


def run_generate(model: str, prompt: str, max_new_tokens: int, runtime: str, compiled: bool) -> None:
    def write(piece: str) -> None:
        console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)

    if runtime == "llama.cpp":
        from slimkit.eval.llama_cpp import stream_llama_cpp

        if compiled:
            raise ValueError("--compile applies to --runtime torch (llama.cpp is compiled already)")

        console.print(prompt, end="", markup=False, highlight=False, soft_wrap=True)
        timing = stream_llama_cpp(Path(model), prompt, max_new_tokens, write)
    elif runtime == "torch":
        from slimkit.eval.generation import stream_text
        from slimkit.models.loading import load_model

        bundle = load_model(model)
        if not bundle.is_language_model or bundle.tokenizer is None:
            raise ValueError(f"{model}: slimkit generate needs a causal language model with a tokenizer, "
                             f"not a {bundle.kind} model")
        console.print(prompt, end="", markup=False, highlight=False, soft_wrap=True)
        timing = stream_text(bundle.model.eval(), bundle.tokenizer, prompt, max_new_tokens, write, compiled=compiled)
    else:
        raise ValueError(f"--runtime must be 'torch' or 'llama.cpp', not {runtime!r}")
    console.print()
    label = f"{runtime}, compiled" if compiled else runtime
    console.print(Text(f"[{label}] {timing.new_tokens + 1} new tokens; prefill {timing.prompt_tokens} tokens "
                       f"{timing.prefill_tokens_per_s:.1f} tok/s, decode {timing.decode_tokens_per_s:.1f} tok/s"),
                  highlight=False)
