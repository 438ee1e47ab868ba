"""llama.cpp as a runtime of ``slimkit generate`` / ``bench`` / ``eval``, through ``llama-cpp-python`` when installed.

``llama-cpp-python`` compiles llama.cpp from source (about 10 minutes on 2 cores), so it is never installed
by slimkit's setup (``pip install 'slimkit[llama-cpp]'`` names it): it is for users and benchmarks that want
llama.cpp's own numbers on a GGUF file ``slimkit export --format gguf`` wrote. Without it, every entry point
raises an ``ImportError`` that names the pip command.

The measurements mirror slimkit's PyTorch path so the two sit side by side: :meth:`LlamaCppRunner.greedy_run`
is one prefill of the prompt's token ids and a greedy loop of one ``eval`` per new token (the same loop as
:func:`slimkit.eval.generation.timed_greedy_run`), and :func:`llama_cpp_perplexity` scores the same token
windows as :func:`slimkit.eval.metrics.perplexity` from llama.cpp's logits of every position (``logits_all``).
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from slimkit.eval.generation import GenerationTiming
from slimkit.eval.speed import Speed, benchmark_prompt, speeds_of
from slimkit.models.hf import load_gguf_tokenizer

PIP_COMMAND = "pip install llama-cpp-python  (or: pip install 'slimkit[llama-cpp]')"


def require_llama_cpp() -> None:
    """Raise ``ImportError`` with the pip command when ``llama-cpp-python`` is not installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(f"--runtime llama.cpp needs llama-cpp-python (it compiles llama.cpp, ~10 minutes): "
                          f"{PIP_COMMAND}")


def check_gguf_path(path: Path) -> None:
    """A clear error unless ``path`` is an existing ``.gguf`` file (llama.cpp runs nothing else)."""
    if path.suffix != ".gguf" or not path.is_file():
        raise ValueError(f"{path}: --runtime llama.cpp runs a .gguf file (write one with slimkit export --format gguf)")


def _threads(threads: int | None) -> int:
    return threads or torch.get_num_threads() or os.cpu_count() or 1


class LlamaCppRunner:
    """One GGUF file loaded by llama.cpp once; timed and scored the way slimkit times and scores its own models.

    ``n_ctx`` bounds prompt + generated tokens (a window, for perplexity); ``logits_all`` keeps the logits of
    every position (perplexity needs them; greedy decoding needs only the last).
    """

    def __init__(self, path: Path, n_ctx: int, threads: int | None = None, logits_all: bool = False) -> None:
        require_llama_cpp()
        check_gguf_path(path)
        from llama_cpp import Llama

        self.path = path
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                         n_threads=_threads(threads), n_threads_batch=_threads(threads), logits_all=logits_all,
                         verbose=False)

    def _last_logits(self) -> np.ndarray:
        """The logits after the last evaluated token, straight from llama.cpp's context (llama-cpp-python
        fills its ``scores`` array only with ``logits_all``; sampling otherwise happens inside llama.cpp)."""
        import llama_cpp

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),))

    def greedy_run(self, input_ids: Tensor, new_tokens: int) -> GenerationTiming:
        """Prefill ``input_ids`` (1, P), then ``new_tokens - 1`` greedy decode steps; the first new token comes
        from the prefill, as in :func:`slimkit.eval.generation.timed_greedy_run`."""
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise ValueError(f"llama.cpp greedy run expects input_ids of shape (1, P), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] + new_tokens > self.llm.n_ctx():
            raise ValueError(f"{input_ids.shape[1]} prompt + {new_tokens} new tokens exceed the context of "
                             f"{self.llm.n_ctx()} this runner was opened with")
        self.llm.reset()  # nothing of an earlier run is reused
        start = time.perf_counter()
        self.llm.eval(input_ids[0].tolist())
        token = int(np.argmax(self._last_logits()))
        prefill_ms = (time.perf_counter() - start) * 1000.0
        generated = [token]
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            self.llm.eval([token])
            token = int(np.argmax(self._last_logits()))
            generated.append(token)
        decode_ms = (time.perf_counter() - start) * 1000.0
        return GenerationTiming(input_ids.shape[1], max(new_tokens - 1, 1), prefill_ms, decode_ms,
                                torch.tensor([generated]))

    def window_nll(self, window: Tensor) -> float:
        """Summed next-token negative log-likelihood of one token window (T,) over its T-1 predicted tokens."""
        ids = window.tolist()
        self.llm.reset()
        self.llm.eval(ids)
        logits = torch.from_numpy(np.array(self.llm.scores[: len(ids) - 1], dtype=np.float32))  # (T-1, V)
        return float(torch.nn.functional.cross_entropy(logits, window[1:].long(), reduction="sum"))


def llama_cpp_perplexity(path: Path, windows: Tensor, threads: int | None = None,
                         progress: Callable[[int], Any] | None = None) -> float:
    """Perplexity of the GGUF file ``path`` run by llama.cpp over token ``windows`` (n, T): exp of the mean
    next-token NLL, every window scored independently, exactly as :func:`slimkit.eval.metrics.perplexity`."""
    runner = LlamaCppRunner(path, n_ctx=windows.shape[1], threads=threads, logits_all=True)
    total = 0.0
    for window in windows:
        total += runner.window_nll(window)
        if progress:
            progress(1)
    try:
        return math.exp(total / (windows.shape[0] * (windows.shape[1] - 1)))
    except OverflowError:
        return math.inf


def gguf_file_of(spec: str) -> Path | None:
    """The GGUF file behind a model spec: a ``.gguf`` path, or a packaged model shipped as one; else ``None``."""
    from slimkit.models.packaged import PACKAGED_MODELS, packaged_model_path

    path = packaged_model_path(spec) if spec in PACKAGED_MODELS else Path(spec)
    return path if path.suffix == ".gguf" and path.is_file() else None


def gguf_params(path: Path) -> int:
    """Number of weights stored in a GGUF file, from its tensor headers (``gguf`` reader; nothing dequantized)."""
    from gguf import GGUFReader

    return sum(int(t.n_elements) for t in GGUFReader(path).tensors)


def measure_speeds_llama_cpp(specs: list[str], prompt_len: int, new_tokens: int,
                             rounds: int = 3) -> list[list[Speed]]:
    """Prefill and greedy-decode tok/s of each model at batch 1: a GGUF file (or a packaged model shipped as
    one) is run by llama.cpp, any other model by slimkit's PyTorch loop. All are timed round-robin on one
    pydoc prompt of ``prompt_len`` tokens, the fastest of ``rounds`` runs each kept, as ``slimkit bench``
    times PyTorch models (:func:`slimkit.eval.speed.measure_speeds`)."""
    from slimkit.eval.generation import fastest_round_robin, timed_greedy_run
    from slimkit.models.loading import load_model

    models: list[LlamaCppRunner | torch.nn.Module] = []
    tokenizer = None
    for spec in specs:
        gguf = gguf_file_of(spec)
        if gguf is not None:
            models.append(LlamaCppRunner(gguf, n_ctx=prompt_len + new_tokens + 8))
            tokenizer = tokenizer or load_gguf_tokenizer(gguf)
            continue
        bundle = load_model(spec)
        if bundle.kind != "causal-lm":
            raise ValueError(f"{spec}: llama.cpp compares causal language models, not a {bundle.kind} model")
        models.append(bundle.model.eval())
        tokenizer = tokenizer or bundle.tokenizer
    prompt = benchmark_prompt(tokenizer, prompt_len)
    runs: list[Callable[[], GenerationTiming]] = [
        partial(m.greedy_run, prompt, new_tokens) if isinstance(m, LlamaCppRunner)
        else partial(timed_greedy_run, m, prompt, new_tokens) for m in models]
    for run in runs:  # warm-up: allocators, llama.cpp's graph, torch's kernel choice
        run()
    return [speeds_of(t) for t in fastest_round_robin(runs, rounds)]


def evaluate_llama_cpp(spec: str, data: str | None, windows: int, latency: bool) -> dict[str, Any]:
    """``slimkit eval --runtime llama.cpp``: perplexity computed by llama.cpp on the evaluation split of ``data``
    (pydoc by default) in 512-token windows, the file's bytes and weights, and its prefill/decode speed."""
    from slimkit.data.spec import parse_data_spec
    from slimkit.data.text import documents, token_windows

    path = gguf_file_of(spec)
    if path is None:
        raise ValueError(f"{spec}: --runtime llama.cpp runs a .gguf file (write one with slimkit export --format gguf)")
    require_llama_cpp()
    text = parse_data_spec(data or "pydoc")
    if text.kind not in ("pydoc", "text", "hf"):
        raise ValueError(f"{text}: llama.cpp evaluates language models on text, not {text.kind} data")
    ids = token_windows(load_gguf_tokenizer(path), documents(text, "eval"), 512, windows)
    payload: dict[str, Any] = {"model": spec, "runtime": "llama.cpp", "data": str(text), "metric": "perplexity",
                               "value": llama_cpp_perplexity(path, ids), "windows": int(ids.shape[0]),
                               "eval_tokens": int(ids.numel()), "size_bytes": path.stat().st_size,
                               "params": gguf_params(path)}
    if latency:
        payload["speed"] = {s.name: {"value": s.value, "unit": s.unit}
                            for s in measure_speeds_llama_cpp([spec], 512, 128, rounds=1)[0]}
    return payload


def stream_llama_cpp(path: Path, prompt: str, max_new_tokens: int, write: Callable[[str], None],
                     threads: int | None = None) -> GenerationTiming:
    """Greedy text from the GGUF file ``path`` run by llama.cpp, each piece handed to ``write`` as it comes.

    Returns:
        The timing: prefill (until the first piece), decode (the rest), token counts from llama.cpp.
    """
    require_llama_cpp()
    check_gguf_path(path)
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_threads=_threads(threads), n_ctx=4096, verbose=False)
    prompt_tokens = len(llm.tokenize(prompt.encode("utf-8")))
    start = time.perf_counter()
    first = None
    pieces = 0
    chunks = cast(Iterator[dict[str, Any]],  # stream=True: an iterator of completion chunks
                  llm(prompt, max_tokens=max_new_tokens, temperature=0.0, top_k=1, stream=True))
    for chunk in chunks:
        first = first or time.perf_counter()
        pieces += 1
        write(chunk["choices"][0]["text"])
    end = time.perf_counter()
    first = first or end
    return GenerationTiming(prompt_tokens, max(pieces - 1, 1), (first - start) * 1000.0, (end - first) * 1000.0,
                            torch.zeros(1, pieces, dtype=torch.long))
