"""llama.cpp as a runtime for ``slimkit generate --runtime llama.cpp``, through ``llama-cpp-python`` when installed.

``llama-cpp-python`` compiles llama.cpp from source (about 10 minutes on 2 cores), so it is never installed
by slimkit's setup: it is for users and benchmarks that want llama.cpp's own speed on a GGUF file that
``slimkit export --format gguf`` wrote. Without it, :func:`stream_llama_cpp` raises an ``ImportError`` that
names the pip command.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from slimkit.eval.generation import GenerationTiming

PIP_COMMAND = "pip install llama-cpp-python"


def require_llama_cpp() -> None:
    """Raise ``ImportError`` with the pip command when ``llama-cpp-python`` is not installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(f"--runtime llama.cpp needs llama-cpp-python (it compiles llama.cpp, ~10 minutes): "
                          f"{PIP_COMMAND}")


def stream_llama_cpp(path: Path, prompt: str, max_new_tokens: int, write: Callable[[str], None],
                     threads: int | None = None) -> GenerationTiming:
    """Greedy text from the GGUF file ``path`` run by llama.cpp, each piece handed to ``write`` as it comes.

    Returns:
        The timing: prefill (until the first piece), decode (the rest), token counts from llama.cpp.
    """
    require_llama_cpp()
    if path.suffix != ".gguf" or not path.is_file():
        raise ValueError(f"{path}: --runtime llama.cpp runs a .gguf file (write one with slimkit export --format gguf)")
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_threads=threads or os.cpu_count() or 1, n_ctx=4096, verbose=False)
    prompt_tokens = len(llm.tokenize(prompt.encode("utf-8")))
    start = time.perf_counter()
    first = None
    pieces = 0
    for chunk in llm(prompt, max_tokens=max_new_tokens, temperature=0.0, top_k=1, stream=True):
        first = first or time.perf_counter()
        pieces += 1
        write(chunk["choices"][0]["text"])
    end = time.perf_counter()
    first = first or end
    return GenerationTiming(prompt_tokens, max(pieces - 1, 1), (first - start) * 1000.0, (end - first) * 1000.0,
                            torch.zeros(1, pieces, dtype=torch.long))
