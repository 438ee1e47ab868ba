"""Build ``forward_loop(model)`` callables from a data spec, for methods that need calibration.

slimkit never owns the user's data loop; the CLI and recipes use these builders to turn a data
spec into the loop that API users would write themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from slimkit.data.images import image_data
from slimkit.data.mix import MixPart, split_counts
from slimkit.data.spec import DataSpec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.models.bundle import ModelBundle

ForwardLoop = Callable[[nn.Module], None]


def calibration_loop(bundle: ModelBundle, data: DataSpec | Sequence[MixPart], samples: int = 32, seq_len: int = 512,
                     batch_size: int = 1) -> ForwardLoop:
    """A forward loop over ``samples`` calibration examples of ``data`` (the calibration split of one spec,
    or of every part of a mix, sampled in proportion to the parts' weights and interleaved)."""
    parts = [MixPart(data)] if isinstance(data, DataSpec) else list(data)
    counts = split_counts(samples, [p.weight for p in parts])
    chunks = [_examples(bundle, p.spec, n, seq_len) for p, n in zip(parts, counts, strict=True) if n > 0]
    examples = _interleave(chunks)
    if bundle.kind == "causal-lm":
        windows = torch.stack(examples)  # (n, T)
        return _batched_loop(list(windows.split(batch_size)), lambda m, b: m(input_ids=b))
    if bundle.kind == "sentence-transformer":
        batches = [examples[i: i + batch_size] for i in range(0, len(examples), batch_size)]
        return _batched_loop(batches, lambda m, b: m.encode(b, convert_to_tensor=True))  # type: ignore[operator]
    if bundle.kind in ("encoder", "seq-cls"):
        tok = bundle.tokenizer

        def run(m: nn.Module, b: list[str]) -> None:
            m(**tok(b, return_tensors="pt", padding=True, truncation=True, max_length=seq_len))

        return _batched_loop([examples[i: i + batch_size] for i in range(0, len(examples), batch_size)], run)
    images = torch.stack(examples)
    return _batched_loop(list(images.split(max(batch_size, 32))), lambda m, b: m(b))


def _examples(bundle: ModelBundle, spec: DataSpec, n: int, seq_len: int) -> list[Any]:
    """``n`` calibration examples of one spec: token windows, sentences or images."""
    if bundle.kind == "torch":
        if spec.is_text:
            raise ValueError(f"a torch classifier calibrates on images, not {spec}")
        x, _ = image_data(spec.kind, spec.arg, "train")
        return list(x[:n])
    if not spec.is_text:
        raise ValueError(f"a {bundle.kind} model calibrates on text, not {spec}")
    if bundle.kind == "causal-lm":
        return list(token_windows(bundle.tokenizer, documents(spec, "calib"), seq_len, n))
    return sentences(documents(spec, "calib"), n)


def _interleave(chunks: list[list[Any]]) -> list[Any]:
    """Spread every part evenly over the sequence (example j of a part of n sits at (j + ½)/n), so each
    batch of a mix holds the parts in proportion; one part keeps its order."""
    keyed = [((j + 0.5) / len(chunk), k, x) for k, chunk in enumerate(chunks) for j, x in enumerate(chunk)]
    return [x for _, _, x in sorted(keyed, key=lambda t: (t[0], t[1]))]


def _batched_loop(batches: list[Any], run: Callable[[nn.Module, Any], object]) -> ForwardLoop:
    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for batch in batches:
                run(model, batch)

    return loop
