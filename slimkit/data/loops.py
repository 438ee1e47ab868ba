"""Build ``forward_loop(model)`` callables from a data spec, for methods that need calibration.

slimkit never owns the user's data loop; the CLI and recipes use these builders to turn a data
spec into the loop that API users would write themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimkit.data.images import image_data
from slimkit.data.spec import DataSpec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.models.bundle import ModelBundle

ForwardLoop = Callable[[nn.Module], None]


def calibration_loop(bundle: ModelBundle, spec: DataSpec, samples: int = 32, seq_len: int = 512,
                     batch_size: int = 1) -> ForwardLoop:
    """A forward loop over ``samples`` calibration examples of ``spec`` (its calibration split)."""
    if bundle.kind == "causal-lm":
        if not spec.is_text:
            raise ValueError(f"a language model calibrates on text, not {spec}")
        windows = token_windows(bundle.tokenizer, documents(spec, "calib"), seq_len, samples)
        return _batched_loop(list(windows.split(batch_size)), lambda m, b: m(input_ids=b))
    if bundle.kind == "sentence-transformer":
        texts = sentences(documents(spec, "calib"), samples)
        batches = [texts[i: i + batch_size] for i in range(0, len(texts), batch_size)]
        return _batched_loop(batches, lambda m, b: m.encode(b, convert_to_tensor=True))  # type: ignore[operator]
    if bundle.kind in ("encoder", "seq-cls"):
        texts = sentences(documents(spec, "calib"), samples)
        tok = bundle.tokenizer

        def run(m: nn.Module, b: list[str]) -> None:
            m(**tok(b, return_tensors="pt", padding=True, truncation=True, max_length=seq_len))

        return _batched_loop([texts[i: i + batch_size] for i in range(0, len(texts), batch_size)], run)
    x, _ = image_data(spec.kind, spec.arg, "train")
    return _batched_loop(list(x[:samples].split(max(batch_size, 32))), lambda m, b: m(b))


def _batched_loop(batches: list[Any], run: Callable[[nn.Module, Any], object]) -> ForwardLoop:
    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for batch in batches:
                run(model, batch)

    return loop
