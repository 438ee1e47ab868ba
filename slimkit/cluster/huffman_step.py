"""``cluster.huffman``: mark clustered or pruned weights to be stored Huffman-coded (Deep Compression's stage 3).

The step changes no value: it replaces each targeted weight's note with a
:class:`~slimkit.cluster.record.HuffmanRecord`, so the ``huffman`` codec
(:mod:`slimkit.cluster.huffman_codec`) stores it with canonical Huffman codes for its cluster indices and
its relative positions. A weight clustered by ``cluster.kmeans`` keeps its codebook; a weight that is only
pruned keeps its surviving float values as they are and has its positions coded. A target that is
neither clustered nor sparse has nothing to code and is refused, naming it.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from slimkit.cluster.record import HuffmanRecord, get_share_note, set_share_note
from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.targets import Target, resolve_targets


class HuffmanConfig(BaseConfig):
    """Store the targeted clustered or pruned weights Huffman-coded (indices and relative positions)."""

    method: Literal["cluster.huffman"] = "cluster.huffman"


@register(HuffmanConfig)
class HuffmanMethod(Method[HuffmanConfig]):
    """Attach HuffmanRecords in ``finalize``; the weights themselves are untouched."""

    def __init__(self, config: HuffmanConfig) -> None:
        super().__init__(config)
        self._targets: list[Target] = []

    def prepare(self, model: nn.Module) -> None:
        self._targets = resolve_targets(model, self.config.targets, "cluster.huffman")

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if not self._targets:
            raise RuntimeError("cluster.huffman: finalize() before prepare()")
        records = []
        for t in self._targets:
            note = get_share_note(t.module, t.param_name)
            book = note.codebook if note is not None else None
            if book is None and not bool((t.param == 0).any()):
                raise ValueError(f"cluster.huffman: {t.fqn} is neither clustered nor pruned, so there is nothing to "
                                 "code; apply cluster.kmeans or pruning to it first, or leave it out with "
                                 "targets.exclude")
            records.append(HuffmanRecord(book))
        for t, record in zip(self._targets, records, strict=True):
            set_share_note(t.module, t.param_name, record)
        clustered = sum(r.codebook is not None for r in records)
        return {"layers": len(records), "clustered": clustered, "sparse_only": len(records) - clustered}
