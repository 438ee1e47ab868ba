"""Speed comparison behind ``slimkit bench``: one model, or a model against a reference, side by side.

Causal LMs are measured the way LLM users compare runtimes: prefill tokens/s of one prompt and greedy
decode tokens/s at batch 1 (:func:`slimkit.eval.generation.measure_generation`). Other kinds are
measured by median latency per batch size (:meth:`slimkit.eval.evaluate.Evaluation.latency`; torch models
on random inputs of their own input shape, :func:`torch_benchmark_input`). When a
reference is given, every quantity where the model is slower than the reference beyond the noise band
of :data:`slimkit.report.report.SLOWER_TOLERANCE` becomes a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.evaluate import EvalConfig, Evaluation, LatencyConfig
from slimkit.eval.generation import GenerationTiming, measure_generation_side_by_side
from slimkit.eval.latency import time_workload
from slimkit.models.arch import torch_input_shape
from slimkit.models.bundle import ModelBundle
from slimkit.report.report import SLOWER_TOLERANCE

LATENCY_BATCH_SIZES = (1, 8, 32)


@dataclass(frozen=True)
class Speed:
    """One measured quantity: its value and whether higher is faster (throughput) or slower (latency)."""

    name: str
    value: float
    unit: str
    higher_is_faster: bool


def measure_speed(bundle: ModelBundle, prompt_len: int = 512, new_tokens: int = 128) -> list[Speed]:
    """Prefill and decode tokens/s at batch 1 for causal LMs; median latency per batch size otherwise."""
    return measure_speeds([bundle], prompt_len, new_tokens, rounds=1)[0]


def measure_speeds(bundles: list[ModelBundle], prompt_len: int = 512, new_tokens: int = 128,
                   rounds: int = 3) -> list[list[Speed]]:
    """:func:`measure_speed` of several models of one kind, in the same order.

    Causal LMs are timed round-robin on the same prompt (``rounds`` runs each, the fastest kept; see
    :func:`slimkit.eval.generation.measure_generation_side_by_side`), so background load on a shared
    CPU hits every model alike. Other kinds are timed one after the other per model.
    """
    kinds = sorted({b.kind for b in bundles})
    if len(kinds) > 1:
        raise ValueError(f"cannot compare the speed of models of different kinds ({', '.join(kinds)})")
    if bundles[0].kind != "causal-lm":
        return [_latencies(b) for b in bundles]
    prompt = benchmark_prompt(bundles[0].tokenizer, prompt_len, bundles[0].source)
    timings = measure_generation_side_by_side([b.model for b in bundles], prompt, new_tokens, rounds=rounds)
    return [speeds_of(t) for t in timings]


def benchmark_prompt(tokenizer: Any, prompt_len: int, source: str = "the model") -> Tensor:
    """The benchmark prompt: the first ``prompt_len`` tokens of the pydoc evaluation split, shape (1, P)."""
    if tokenizer is None:
        raise ValueError(f"{source}: a tokenizer is needed to build the benchmark prompt")
    return token_windows(tokenizer, documents(parse_data_spec("pydoc"), "eval"), prompt_len, 1)


def speeds_of(timing: GenerationTiming) -> list[Speed]:
    """Prefill and decode throughput of one greedy run, as ``slimkit bench`` reports them."""
    return [Speed(f"prefill {timing.prompt_tokens} tokens", timing.prefill_tokens_per_s, "tok/s", True),
            Speed(f"greedy decode {timing.new_tokens} tokens", timing.decode_tokens_per_s, "tok/s", True)]


def _latencies(bundle: ModelBundle) -> list[Speed]:
    if bundle.kind == "torch":
        return _torch_latencies(bundle)
    config = EvalConfig(windows=1, samples=max(LATENCY_BATCH_SIZES),
                        latency=LatencyConfig(batch_sizes=LATENCY_BATCH_SIZES))
    timings = Evaluation(bundle, config).latency(bundle)
    return [Speed(f"latency {key}", t.median_ms, "ms", False) for key, t in timings.items()]


def torch_benchmark_input(bundle: ModelBundle, batch: int) -> Tensor:
    """Random inputs (batch, *sample shape) that fit a torch model, from :func:`torch_input_shape`.

    Raises:
        ValueError: the input shape cannot be told (a convolutional model without a registered ``input_shape``).
    """
    shape = torch_input_shape(bundle.model, bundle.arch)
    if shape is None:
        raise ValueError(f"{bundle.source}: cannot tell the input shape of this torch model (its first layer is a "
                         "convolution, whose weights do not fix the image size, or it has no Linear layer); "
                         "register its architecture with slimkit.models.register_architecture(name, input_shape=...)")
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))


def _torch_latencies(bundle: ModelBundle) -> list[Speed]:
    """Median latency per batch size on random inputs of the model's own input shape (no data set needed)."""
    lc, speeds = LatencyConfig(), []
    for batch in LATENCY_BATCH_SIZES:
        x = torch_benchmark_input(bundle, batch)
        t = time_workload(partial(bundle.model, x), batch, lc.warmup, lc.repeats)
        speeds.append(Speed(f"latency batch{batch}", t.median_ms, "ms", False))
    return speeds


def slower_warnings(model: str, measured: list[Speed], reference_name: str, reference: list[Speed]) -> list[str]:
    """One line per quantity where ``measured`` is slower than ``reference`` beyond the noise band."""
    by_name = {s.name: s for s in reference}
    out = []
    for s in measured:
        ref = by_name.get(s.name)
        if ref is None or not ref.value or not s.value:
            continue
        slowdown = ref.value / s.value if s.higher_is_faster else s.value / ref.value
        if slowdown > SLOWER_TOLERANCE:
            out.append(f"{model} is SLOWER than {reference_name} at {s.name}: {s.value:.1f} vs "
                       f"{ref.value:.1f} {s.unit} ({slowdown:.2f}× slower) on this machine")
    return out


def speed_table(names: list[str], runs: list[list[Speed]]) -> list[str]:
    """Markdown rows: one quantity per row, one column per model, then the ratio of the first to the second."""
    header = "| quantity | " + " | ".join(names) + (" | speedup |" if len(runs) > 1 else "")
    lines = [header, "|---" * (len(names) + 1 + (len(runs) > 1)) + "|"]
    for i, s in enumerate(runs[0]):
        cells = [f"{run[i].value:.1f} {run[i].unit}" for run in runs]
        row = f"| {s.name} | " + " | ".join(cells)
        if len(runs) > 1:
            ref = runs[1][i].value
            ratio = s.value / ref if s.higher_is_faster else ref / s.value
            row += f" | {ratio:.2f}×"
        lines.append(row + " |")
    return lines
