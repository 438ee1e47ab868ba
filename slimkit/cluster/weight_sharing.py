"""k-means weight sharing (``cluster.kmeans``): each targeted weight keeps only ``2^bits`` shared values.

Deep Compression (Han, Mao & Dally, ICLR 2016, section 3): the surviving weights of every layer are
clustered with k-means (:mod:`slimkit.cluster.kmeans`) and replaced by their centroids, so a layer
stores a small codebook plus a ``bits``-bit index per weight. Pruned weights (exact zeros) take no part
in the clustering and stay exactly zero: the codecs store them as positions, not as a centroid. One
codebook per layer (``granularity: tensor``, the paper's choice) or per output channel (``channel``,
for LLM Linears, where a 4-bit non-uniform grid per row competes with uniform int4 groups). Bits per
layer come from recipe targets: one step per target set (e.g. 8 for conv, 5 for fully connected).

``weighting: activation`` weights each entry's pull on its centroid by the mean square of the input it
multiplies (the diagonal of GPTQ's Hessian ``XᵀX``), collected in ``calibrate``: the output error
``Σ_j x_j² (w_j − ŵ_j)²`` is what k-means then minimises. ``codebook_dtype`` rounds the centroids to a
narrower float (half the codebook bytes of a per-channel codebook); the weights then hold exactly the
rounded values. ``finalize`` writes the clustered values into the weights and attaches a
:class:`~slimkit.cluster.record.CodebookRecord`, so the ``codebook`` codec stores indices.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from slimkit.cluster.kmeans import kmeans
from slimkit.cluster.record import CodebookRecord, clustered_values, matrix_shape, nearest_centroid, set_share_note
from slimkit.config import BaseConfig
from slimkit.method import ForwardLoop, Method, register
from slimkit.targets import Target, resolve_targets

CodebookDtype = Literal["weight", "float32", "float16", "bfloat16"]


class KMeansClusterConfig(BaseConfig):
    """Cluster every targeted weight into ``2^bits`` shared values (pruned zeros stay exact zeros).

    ``granularity``: one codebook per tensor or per output channel. ``init``: linear (the paper's best),
    density or random centroids. ``weighting: activation`` needs calibration data and weights entries by
    their input's mean square. ``iterations`` bounds Lloyd's iterations (they stop once no assignment
    changes). ``codebook_dtype``: ``weight`` keeps the weight's dtype; a narrower float halves codebook bytes.
    """

    method: Literal["cluster.kmeans"] = "cluster.kmeans"
    bits: int = Field(ge=1, le=8)
    granularity: Literal["tensor", "channel"] = "tensor"
    init: Literal["linear", "density", "random"] = "linear"
    weighting: Literal["none", "activation"] = "none"
    iterations: int = Field(30, ge=1, le=1000)
    codebook_dtype: CodebookDtype = "weight"

    @property
    def needs_calibration(self) -> bool:  # type: ignore[override]
        return self.weighting == "activation"


class InputSquares:
    """Running Σ x² per input channel of one module (Linear: last dim; convolutions: dim 1)."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        channel_dim = 1 if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) else x.dim() - 1
        per_channel = x.double().pow(2).transpose(channel_dim, -1).reshape(-1, x.shape[channel_dim])  # (n, C)
        self.total = per_channel.sum(0) if self.total is None else self.total + per_channel.sum(0)
        self.count += per_channel.shape[0]

    def mean(self) -> Tensor:
        assert self.total is not None
        return self.total / max(self.count, 1)


def entry_importance(target: Target, mean_square: Tensor) -> Tensor:
    """Importance (rows, cols) of each entry of ``target``'s matrix view: its input channel's mean square."""
    module, weight = target.module, target.param
    rows, cols = matrix_shape(tuple(weight.shape))
    if target.param_name != "weight":
        return torch.ones(rows, cols, dtype=torch.float64)  # a bias multiplies no input
    if isinstance(module, nn.Linear):
        per_column = mean_square  # (in,)
    elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups == 1:
        per_column = mean_square.repeat_interleave(math.prod(weight.shape[2:]))  # (in · kernel,)
    elif type(module).__name__ == "Conv1D":  # GPT-2's transposed Linear: weight (in, out), one row per input
        return mean_square[:, None].expand(rows, cols).clone()
    else:
        raise ValueError(f"cluster.kmeans: weighting 'activation' supports Linear and ungrouped convolution weights, "
                         f"not {target.fqn} ({type(module).__name__}); use weighting: none for it")
    # A channel that never fired would give its weights no pull at all and collapse its row's centroids.
    per_column = per_column.clamp_min(1e-6 * float(per_column.mean().clamp_min(1e-30)))
    return per_column[None, :].expand(rows, cols).clone()


def codebook_dtype(config: KMeansClusterConfig, weight: Tensor) -> torch.dtype:
    return weight.dtype if config.codebook_dtype == "weight" else getattr(torch, config.codebook_dtype)


def cluster_weight(weight: Tensor, importance: Tensor, config: KMeansClusterConfig) -> tuple[Tensor, Tensor]:
    """``(clustered weight of weight's shape and dtype, codebook (groups, 2^bits))``; zeros stay zeros."""
    rows, cols = matrix_shape(tuple(weight.shape))
    matrix = weight.detach().reshape(rows, cols)
    kept = matrix != 0
    pull = importance * kept  # (rows, cols); pruned entries pull nothing
    if config.granularity == "tensor":
        values, pull = matrix.reshape(1, -1), pull.reshape(1, -1)
    else:
        values = matrix
    result = kmeans(values, pull, 2**config.bits, init=config.init, iterations=config.iterations)
    book = result.centroids.to(codebook_dtype(config, weight))  # (groups, K), rounded
    index = nearest_centroid(matrix, book)  # assignment to the rounded centroids
    return clustered_values(index, kept, book, weight.dtype).reshape(weight.shape), book


@register(KMeansClusterConfig)
class KMeansClusterMethod(Method[KMeansClusterConfig]):
    """Collect input mean squares (if weighted), then cluster and record every target in ``finalize``."""

    def __init__(self, config: KMeansClusterConfig) -> None:
        super().__init__(config)
        self._targets: list[Target] = []
        self._squares: dict[str, InputSquares] = {}

    def prepare(self, model: nn.Module) -> None:
        self._targets = resolve_targets(model, self.config.targets, "cluster.kmeans")

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:
        if not self.config.needs_calibration:
            return
        for t in self._targets:
            if t.module_name not in self._squares:
                self._squares[t.module_name] = InputSquares()
                self.hooks.forward_pre_hook(t.module, self._squares[t.module_name].hook)
        forward_loop(model)
        self.hooks.remove_hooks()
        silent = [name for name, s in self._squares.items() if s.total is None]
        if silent:
            raise RuntimeError(f"cluster.kmeans: no calibration input reached {', '.join(silent[:5])}")

    def _importance(self, t: Target) -> Tensor:
        if not self.config.needs_calibration:
            return torch.ones(matrix_shape(tuple(t.param.shape)), dtype=torch.float64)
        if t.module_name not in self._squares:
            raise RuntimeError("cluster.kmeans: weighting 'activation' needs calibrate() before finalize()")
        return entry_importance(t, self._squares[t.module_name].mean())

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if not self._targets:
            raise RuntimeError("cluster.kmeans: finalize() before prepare()")
        signal = noise = 0.0
        kept = 0
        with torch.no_grad():
            for t in self._targets:
                weight = t.param.data
                new, book = cluster_weight(weight, self._importance(t), self.config)
                signal += float(weight.double().pow(2).sum())
                noise += float((weight.double() - new.double()).pow(2).sum())
                weight.copy_(new)
                kept += int((weight != 0).sum())
                set_share_note(t.module, t.param_name, CodebookRecord(book))
        total = sum(t.param.numel() for t in self._targets)
        sqnr = 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None
        return {"layers": len(self._targets), "clustered_params": total, "kept_params": kept, "bits": self.config.bits,
                "granularity": self.config.granularity, "weight_sqnr_db": None if sqnr is None else round(sqnr, 2)}
