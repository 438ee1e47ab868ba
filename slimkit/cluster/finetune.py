"""Shared-centroid fine-tuning (``cluster.finetune``): train the codebooks, not the weights.

Deep Compression (Han, Mao & Dally 2016, section 3.3 and Figure 3): after k-means, the gradient of
every weight is grouped by its cluster and summed, and the sum updates that cluster's centroid, so each
layer keeps exactly its ``2^bits`` shared values while the network recovers. Here every targeted weight
(which must carry a codebook from ``cluster.kmeans``) is replaced by a :class:`SharedCentroids`
parametrization: an ``nn.Parameter`` codebook plus a fixed index buffer and a fixed keep-mask. Its
forward is ``codebook[index] · keep``, whose backward scatter-adds the weights' gradients into their
centroids: the paper's rule, by autograd. Pruned entries are multiplied by an exact zero, so they stay
zero and send no gradient. Driven like the other training methods (``slimkit.prepare`` then
``step``/``finalize``, or a recipe's ``train:`` section); create the optimizer after ``prepare``.
Parameters outside the targets (biases, unclustered layers) train as usual. ``finalize`` rounds each
codebook to its recorded dtype, bakes ``codebook[index]`` into the weight and records the new codebook.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from slimkit.cluster.record import CodebookRecord, HuffmanRecord, codebook_indices, get_share_note, set_share_note
from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.targets import Target, resolve_targets


class CentroidFinetuneConfig(BaseConfig):
    """Fine-tune the centroids of clustered weights inside a training run (every target needs a codebook)."""

    method: Literal["cluster.finetune"] = "cluster.finetune"

    needs_training = True


class SharedCentroids(nn.Module):
    """Parametrization: weight = ``codebook[index] · keep``, the codebook (groups, K) learnable."""

    index: Tensor
    keep: Tensor

    def __init__(self, codebook: Tensor, index: Tensor, keep: Tensor, shape: torch.Size) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook.clone())  # (groups, K) in the weight's dtype
        small = torch.uint8 if codebook.shape[1] <= 256 else torch.int32
        self.register_buffer("index", index.to(small))  # (rows, cols)
        self.register_buffer("keep", keep)  # (rows, cols) bool
        self.shape = shape

    def forward(self, original: Tensor) -> Tensor:
        index = self.index.long()
        book = self.codebook.expand(index.shape[0], -1) if self.codebook.shape[0] == 1 else self.codebook
        values = book.gather(1, index)  # (rows, cols); backward sums each cluster's gradients into its centroid
        return (values * self.keep.to(values.dtype)).reshape(self.shape)


def recorded_codebook(t: Target) -> Tensor:
    """The codebook ``t`` carries, or a ValueError telling the user to cluster it first."""
    note = get_share_note(t.module, t.param_name)
    if note is None or note.codebook is None:
        raise ValueError(f"cluster.finetune: {t.fqn} has no codebook; apply cluster.kmeans to it first, or leave it "
                         "out with targets.exclude")
    return note.codebook


@register(CentroidFinetuneConfig)
class CentroidFinetuneMethod(Method[CentroidFinetuneConfig]):
    """SharedCentroids parametrizations during training; baked weights and new codebooks at finalize."""

    def __init__(self, config: CentroidFinetuneConfig) -> None:
        super().__init__(config)
        self._targets: list[Target] = []
        self._shared: list[SharedCentroids] = []
        self._before: list[Tensor] = []

    def prepare(self, model: nn.Module) -> None:
        self._targets = resolve_targets(model, self.config.targets, "cluster.finetune")
        books = [recorded_codebook(t) for t in self._targets]  # every target checked before any is changed
        for t, book in zip(self._targets, books, strict=True):
            index, keep = codebook_indices(t.fqn, t.param, book)
            shared = SharedCentroids(book.to(t.param.dtype), index, keep, t.param.shape)
            self.hooks.parametrize(t.module, t.param_name, shared)
            self._shared.append(shared)
            self._before.append(book.clone())

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if not self._shared:
            raise RuntimeError("cluster.finetune: finalize() before prepare()")
        shift = scale = 0.0
        books = []
        with torch.no_grad():
            for shared, before in zip(self._shared, self._before, strict=True):
                book = shared.codebook.detach().to(before.dtype)  # round to the recorded codebook dtype
                shared.codebook.copy_(book.to(shared.codebook.dtype))
                books.append(book.clone())
                shift += float((book.double() - before.double()).pow(2).sum())
                scale += float(before.double().pow(2).sum())
        self.hooks.bake_all()  # weights become codebook[index] · keep exactly
        for t, book in zip(self._targets, books, strict=True):
            old = get_share_note(t.module, t.param_name)
            set_share_note(t.module, t.param_name,
                           HuffmanRecord(book) if isinstance(old, HuffmanRecord) else CodebookRecord(book))
        return {"layers": len(self._targets), "centroids": sum(b.numel() for b in books),
                "centroid_shift_rms": round((shift / max(scale, 1e-300)) ** 0.5, 6)}
