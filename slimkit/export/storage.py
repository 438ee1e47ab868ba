"""Where the bytes of a slimkit directory go: per tensor, by part (values, positions, codebook, tables).

The compress report counts true bytes on disk; this breaks them down the way Deep Compression's tables
do. Each stored tensor's codec says which of its stored tensors are values (or cluster indices),
positions, codebook or Huffman tables (:meth:`~slimkit.export.registry.Codec.breakdown`); whatever the
tensors do not account for (``slimkit.json``, the safetensors header, config and tokenizer files) is
``overhead``, so the parts add up to the directory's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.atomic import directory_bytes
from slimkit.export.header import read_header, read_tensors
from slimkit.export.registry import ALIAS, codec_named
from slimkit.export.slimkit_format import REPORT_FILES  # written beside the model: not part of its size


@dataclass
class TensorBytes:
    """The stored bytes of one tensor of the state dict, by part."""

    codec: str
    shape: list[int] | None
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


@dataclass
class StorageBreakdown:
    """Bytes per tensor plus the format's overhead; ``total`` is the model's bytes on disk."""

    tensors: dict[str, TensorBytes] = field(default_factory=dict)
    overhead: int = 0

    @property
    def total(self) -> int:
        return self.overhead + sum(t.total for t in self.tensors.values())

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total, "overhead_bytes": self.overhead,
                "tensors": {name: {"codec": t.codec, "shape": t.shape, **t.parts} for name, t in self.tensors.items()}}


def storage_breakdown(path: Path, exclude: tuple[str, ...] = ()) -> StorageBreakdown:
    """The bytes of the slimkit directory ``path`` per tensor and part (report files and the names in
    ``exclude``, e.g. a file exported beside the model, left out)."""
    path = Path(path)
    header = read_header(path)
    tensors = read_tensors(path)
    result = StorageBreakdown()
    for name, entry in header["tensors"].items():
        if entry["codec"] == ALIAS:
            continue
        parts = codec_named(entry["codec"], name).breakdown(name, entry, tensors)
        shape = entry.get("shape") or (list(tensors[name].shape) if name in tensors else None)
        result.tensors[name] = TensorBytes(entry["codec"], shape, parts)
    files = sum(directory_bytes(p) for p in path.iterdir() if p.name not in REPORT_FILES and p.name not in exclude)
    result.overhead = files - sum(t.total for t in result.tensors.values())
    return result
