"""Pure evaluation metrics: perplexity, accuracy, embedding fidelity, parameter count, sparsity."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.config import Targets
from slimkit.targets import iter_targets

Progress = Callable[[int], None]


@torch.no_grad()
def perplexity(model: nn.Module, windows: Tensor, batch_size: int = 1, progress: Progress | None = None) -> float:
    """Perplexity of a causal LM over token ``windows`` (n, T): exp of the mean next-token NLL.

    Every window is scored independently (no context carried over), on its T-1 predicted tokens.
    """
    total_nll, total_tokens = 0.0, 0
    for batch in windows.split(batch_size):
        logits = model(input_ids=batch).logits[:, :-1]  # (B, T-1, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1),
                              reduction="sum")
        total_nll += float(nll)
        total_tokens += batch[:, 1:].numel()
        if progress:
            progress(len(batch))
    try:
        return math.exp(total_nll / total_tokens)  # NaN stays NaN; see non_finite_warning
    except OverflowError:  # mean NLL above ~709 nats: the model is hopeless, not the arithmetic
        return math.inf


def non_finite_warning(metric: str, value: float) -> str | None:
    """A report warning when ``metric`` came out NaN or infinite, else ``None``.

    A NaN perplexity compares as neither better nor worse than any number, so without this line a
    model that produces NaN logits would pass through a report unremarked.
    """
    if math.isfinite(value):
        return None
    return (f"{metric} is {value}: the model's outputs are not finite numbers on the evaluation data "
            "(NaN/Inf weights or activations, or an overflow), so this measurement says nothing about its quality")


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of a classifier on inputs ``x`` with labels ``y``."""
    correct = 0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        correct += int((model(xb).argmax(dim=-1) == yb).sum())
    return correct / max(len(y), 1)


def mean_cosine(reference: Tensor, candidate: Tensor) -> float:
    """Mean cosine similarity between matching rows of two (N, D) embedding matrices."""
    if reference.shape != candidate.shape:
        raise ValueError(f"embedding shapes differ: {tuple(reference.shape)} vs {tuple(candidate.shape)}")
    return float(F.cosine_similarity(reference.double(), candidate.double(), dim=-1).mean())


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (tied tensors counted once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        seen[id(p)] = p.numel()
    return sum(seen.values())


def weight_sparsity(model: nn.Module, targets: Targets | None = None) -> float:
    """Fraction of exact zeros among the weights of Linear/Conv layers (default targets)."""
    zeros, total = 0, 0
    for t in iter_targets(model, targets or Targets(exclude=())):
        zeros += int((t.param == 0).sum())
        total += t.param.numel()
    return zeros / max(total, 1)
