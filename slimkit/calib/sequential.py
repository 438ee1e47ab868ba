"""The sequential layer runner behind GPTQ, AWQ, SparseGPT and Wanda.

The user's ``forward_loop`` is run once, only up to the first transformer block: a pre-hook records
that block's inputs (hidden states plus keyword arguments such as the attention mask and rotary
position embeddings) and stops the forward with a private exception, which a thin wrapper around the
model swallows so the loop goes on to its next batch. Then, block by block: hooks on the targeted
Linears of the block accumulate :class:`InputStats`, the block runs on every captured input, the
method rewrites the block's weights, and the *modified* block runs again to produce the next block's
inputs, so later blocks calibrate on the errors of earlier ones. Peak memory is one block plus its
calibration activations; the rest of the model never runs after the first capture.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from slimkit.calib.stats import InputStats
from slimkit.config import Targets
from slimkit.method import ForwardLoop
from slimkit.models.arch import decoder_layers, layer_prefix
from slimkit.numerics import check_finite
from slimkit.progress import progress_bar
from slimkit.targets import Target, iter_targets

# (hidden_states, other positional args, keyword args) of one calibration batch at one block.
BlockInput = tuple[Tensor, tuple[Any, ...], dict[str, Any]]


@dataclass
class LayerContext:
    """What a method sees of one block: its targeted Linears and their input statistics."""

    index: int
    prefix: str
    layer: nn.Module
    targets: dict[str, Target]  # module name -> targeted Linear weight inside this block
    stats: dict[str, InputStats]  # module name -> statistics of that Linear's inputs


class _FirstBlockReached(Exception):
    """Raised by the capture hook to stop a forward once block 0's inputs are recorded."""


def _swallowing_stop(fn: Callable[..., Any]) -> Callable[..., None]:
    def call(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except _FirstBlockReached:
            pass
    return call


class _StopAtFirstBlock(nn.Module):
    """Calls the model and swallows :class:`_FirstBlockReached`, so ``forward_loop`` keeps looping.

    Other methods the loop calls (a sentence-transformers ``model.encode(...)``) are the model's own,
    wrapped the same way; they return None during the capture.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> None:
        _swallowing_stop(self.model)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # this wrapper's own submodule: the model
        except AttributeError:
            attr = getattr(self.model, name)
            return _swallowing_stop(attr) if inspect.ismethod(attr) else attr


def _without_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    # A KV cache captured from the model would grow on every re-run of the block.
    kept = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "past_key_value")}
    if "use_cache" in kept:
        kept["use_cache"] = False
    return kept


def capture_block_inputs(model: nn.Module, forward_loop: ForwardLoop, first: nn.Module,
                         keep: Callable[[BlockInput], None] | None = None) -> list[BlockInput]:
    """Run ``forward_loop`` only as far as block ``first`` and return its inputs, one per batch.

    ``keep``, when given, receives each batch's inputs instead of the returned list (which then stays
    empty), so a streamed run can write them to disk as they come.
    """
    captured: list[BlockInput] = []
    count = [0]

    def record(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        (keep or captured.append)((hidden.detach(), tuple(args[1:]), _without_cache(kwargs)))
        count[0] += 1
        raise _FirstBlockReached

    handle = first.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            forward_loop(_StopAtFirstBlock(model))
    finally:
        handle.remove()
    if not count[0]:
        raise RuntimeError("forward_loop never reached the first transformer block: it must call the model "
                           "it is given, e.g. `for batch in data: model(input_ids=batch)`")
    return captured


def run_block(layer: nn.Module, block_input: BlockInput) -> Tensor:
    """The hidden states ``layer`` outputs for one batch's inputs."""
    hidden, args, kwargs = block_input
    out = layer(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def collect_stats(layer: nn.Module, targets: dict[str, Target], inputs: Iterable[BlockInput],
                  with_hessian: bool) -> dict[str, InputStats]:
    """Run ``layer`` on ``inputs`` and accumulate input statistics of each targeted Linear."""
    stats: dict[str, InputStats] = {}
    last: list[Any] = [None, None]  # (input tensor, its accumulator): q/k/v read the same tensor

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            if name not in stats:
                stats[name] = last[1] if last[0] is x else InputStats(x.shape[-1], with_hessian=with_hessian)
            if last[0] is not x or last[1] is not stats[name]:
                stats[name].add(x)
            last[0], last[1] = x, stats[name]
        return hook

    handles = [t.module.register_forward_pre_hook(hook_for(name)) for name, t in targets.items()]
    try:
        with torch.no_grad():
            for block_input in inputs:
                run_block(layer, block_input)
                last[0] = last[1] = None
    finally:
        for h in handles:
            h.remove()
    return stats


def check_calibration_numbers(prefix: str, inputs: Iterable[BlockInput], stats: dict[str, InputStats],
                              with_hessian: bool, description: str) -> None:
    """Stop on NaN/Inf in a block's calibration inputs or in its Linears' input statistics (an overflow
    inside the block), naming the block or Linear, before they reach a Hessian inverse or a scale search."""
    for i, (hidden, _, _) in enumerate(inputs):
        check_finite(hidden, f"{description}: calibration activations entering {prefix} (batch {i})")
    for name, st in stats.items():
        what = f"{description}: calibration activations entering {name}"
        check_finite(st.column_norms(), what)
        if with_hessian:
            check_finite(st.hessian(), f"{what} (their Hessian XᵀX)")


def _block_targets(model: nn.Module, targets: Targets) -> list[Target]:
    return [t for t in iter_targets(model, targets) if isinstance(t.module, nn.Linear)]


def run_sequential(model: nn.Module, forward_loop: ForwardLoop, targets: Targets,
                   compress_block: Callable[[LayerContext], None], *, with_hessian: bool,
                   description: str) -> int:
    """Compress ``model`` block by block on calibration data.

    Args:
        model: a model whose blocks :func:`slimkit.models.arch.decoder_layers` can find.
        forward_loop: the user's ``fn(model)`` that runs calibration batches through the model.
        targets: which parameters may change; only ``nn.Linear`` weights inside the blocks are visited.
        compress_block: called once per block with its :class:`LayerContext`; rewrites the weights.
        with_hessian: also accumulate ``XᵀX`` (GPTQ, SparseGPT, AWQ) besides norms and means.
        description: label of the progress bar.

    Returns:
        The number of targeted Linear weights visited.

    Raises:
        ValueError: no targeted ``nn.Linear`` lies inside the blocks.
    """
    layers = decoder_layers(model)
    selected = _block_targets(model, targets)
    inside = {id(m) for m in layers.modules()}
    if not any(id(t.module) in inside for t in selected):
        raise ValueError(f"{description}: the targets matched no nn.Linear inside the transformer blocks "
                         f"(include={list(targets.include)}, exclude={list(targets.exclude)})")
    inputs = capture_block_inputs(model, forward_loop, layers[0])
    visited = 0
    with progress_bar(description, total=len(layers)) as advance:
        for index, layer in enumerate(layers):
            members = {id(m) for m in layer.modules()}
            block = {t.module_name: t for t in selected if id(t.module) in members}
            if block:
                prefix = layer_prefix(model, layers, index)
                stats = collect_stats(layer, block, inputs, with_hessian)
                check_calibration_numbers(prefix, inputs, stats, with_hessian, description)
                compress_block(LayerContext(index, prefix, layer, block, stats))
                visited += len(block)
            with torch.no_grad():
                inputs = [(run_block(layer, b), b[1], b[2]) for b in inputs]
            advance(1)
    return visited
