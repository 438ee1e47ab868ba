"""Prefill and greedy-decode speed of a causal LM at batch 1, the numbers LLM users compare, and the
streaming greedy text of ``slimkit generate``.

A plain greedy loop over the model's own KV cache (one prefill forward, then one forward per new
token) measures the model rather than ``generate()``'s bookkeeping, so ratios between a float and a
compressed model reflect what compression changed. :func:`stream_text` runs the same loop and hands each
new piece of text to a callback as soon as its bytes form whole characters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class GenerationTiming:
    """Speed of one prefill + greedy decode run (the fastest of the timed repeats)."""

    prompt_tokens: int
    new_tokens: int
    prefill_ms: float
    decode_ms: float
    tokens: Tensor  # (1, new_tokens) generated ids

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / (self.prefill_ms / 1000.0)

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / (self.decode_ms / 1000.0)

    @property
    def decode_ms_per_token(self) -> float:
        return self.decode_ms / max(self.new_tokens, 1)

    def to_dict(self) -> dict[str, float]:
        return {"prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
                "prefill_ms": self.prefill_ms, "prefill_tokens_per_s": self.prefill_tokens_per_s,
                "decode_tokens_per_s": self.decode_tokens_per_s,
                "decode_ms_per_token": self.decode_ms_per_token}


@torch.inference_mode()
def _greedy_run(model: nn.Module, input_ids: Tensor, new_tokens: int) -> GenerationTiming:
    start = time.perf_counter()
    out = model(input_ids=input_ids, use_cache=True)
    prefill_ms = (time.perf_counter() - start) * 1000.0
    past = out["cache"]
    token = out.logits[:, -1:].argmax(dim=-1)  # (1, 1)
    generated = [token]
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, cache=past, use_cache=True)
        past = out["cache"]
        token = out.logits[:, -1:].argmax(dim=-1)
        generated.append(token)
    decode_ms = (time.perf_counter() - start) * 1000.0
    # The first new token comes from the prefill; decode speed counts the tokens of the loop.
    return GenerationTiming(input_ids.shape[1], max(new_tokens - 1, 1), prefill_ms, decode_ms,
                            torch.cat(generated, dim=1))


def timed_greedy_run(model: nn.Module, input_ids: Tensor, new_tokens: int) -> GenerationTiming:
    """One timed prefill of ``input_ids`` (1, P) and greedy decode of ``new_tokens`` tokens (for callers that
    interleave it with other runtimes' timings)."""
    return _greedy_run(model, input_ids, new_tokens)


def measure_generation(model: nn.Module, input_ids: Tensor, new_tokens: int = 128, warmup: int = 1,
                       repeats: int = 1) -> GenerationTiming:
    """Time prefill of ``input_ids`` (1, P) and greedy decoding of ``new_tokens`` tokens.

    Args:
        model: a transformers (>= 5) causal LM returning ``logits`` and its KV ``cache``.
        input_ids: the prompt, shape (1, P).
        new_tokens: tokens to generate (≥ 2).
        warmup: untimed runs first (short ones: 8 new tokens).
        repeats: timed runs; the fastest is reported (least disturbed by other load).
    """
    return measure_generation_side_by_side([model], input_ids, new_tokens, rounds=repeats, warmup=warmup)[0]


def measure_generation_side_by_side(models: list[nn.Module], input_ids: Tensor, new_tokens: int = 128,
                                    rounds: int = 3, warmup: int = 1) -> list[GenerationTiming]:
    """Time several models on the same prompt round-robin; the fastest run of each model is returned.

    Comparing models timed one after another on a shared CPU measures the background load as much
    as the models; interleaving the runs puts every model under the same load, so the ratios hold.
    Each model first gets ``warmup`` short untimed runs (allocator, kernel selection).
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"measure_generation expects input_ids of shape (1, P), got {tuple(input_ids.shape)}")
    if new_tokens < 2:
        raise ValueError("new_tokens must be at least 2")
    for model in models:
        for _ in range(warmup):
            _greedy_run(model, input_ids, min(new_tokens, 8))
    return fastest_round_robin([partial(_greedy_run, model, input_ids, new_tokens) for model in models], rounds)


def fastest_round_robin(runs: list[Callable[[], GenerationTiming]], rounds: int = 3) -> list[GenerationTiming]:
    """Call each run in turn, ``rounds`` times; the fastest result of each run, so load on a shared CPU hits
    all alike (any runtime: a torch model, llama.cpp). Warm-up is the caller's."""
    timings: list[list[GenerationTiming]] = [[] for _ in runs]
    for _ in range(max(rounds, 1)):
        for run, out in zip(runs, timings, strict=True):
            out.append(run())
    return [min(t, key=lambda r: r.prefill_ms + r.decode_ms) for t in timings]


def eager_greedy_tokens(model: nn.Module, input_ids: Tensor) -> Iterator[Tensor]:
    """Greedy next tokens (1, 1) after ``input_ids`` (1, P), one forward over the growing KV cache each."""
    out = model(input_ids=input_ids, use_cache=True)
    while True:
        token = out.logits[:, -1:].argmax(dim=-1)  # (1, 1)
        yield token
        out = model(input_ids=token, cache=out["cache"], use_cache=True)


@torch.inference_mode()
def stream_text(model: nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int, write: Callable[[str], None],
                compiled: bool = False, backend: str = "inductor") -> GenerationTiming:
    """Greedy-decode up to ``max_new_tokens`` tokens after ``prompt``, calling ``write`` with each new piece of text.

    Stops early at the tokenizer's end-of-sequence token. A piece is written once it decodes to whole
    characters (a multi-byte character split over tokens waits for its last byte). ``compiled`` decodes
    with a static KV cache and the step compiled by ``torch.compile`` (:mod:`slimkit.eval.compiled_decode`;
    the first call compiles).

    Returns:
        The timing: prefill (prompt forward and first token), decode (every later token).
    """
    if max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]  # (1, P)
    if input_ids.shape[1] == 0:
        raise ValueError("the prompt is empty after tokenization; give some text")
    if compiled:
        from slimkit.eval.compiled_decode import CompiledGreedy

        tokens = CompiledGreedy(model, input_ids.shape[1] + max_new_tokens, backend).tokens(input_ids)
    else:
        tokens = eager_greedy_tokens(model, input_ids)
    eos = getattr(tokenizer, "eos_token_id", None)
    generated: list[int] = []
    written = ""
    start = time.perf_counter()
    prefill_ms = 0.0
    for token in tokens:
        if not generated:
            prefill_ms = (time.perf_counter() - start) * 1000.0
            start = time.perf_counter()
        generated.append(int(token))
        if int(token) == eos:
            break
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if not text.endswith("\ufffd") and len(text) > len(written):  # U+FFFD: an incomplete UTF-8 sequence
            write(text[len(written):])
            written = text
        if len(generated) >= max_new_tokens:
            break
    decode_ms = (time.perf_counter() - start) * 1000.0
    return GenerationTiming(input_ids.shape[1], max(len(generated) - 1, 1), prefill_ms, decode_ms,
                            torch.tensor([generated]))
