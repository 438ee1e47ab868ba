"""Safetensors files read a tensor at a time and written a tensor at a time, for models larger than RAM.

A safetensors file is an 8-byte little-endian header length, a JSON header (per tensor its dtype, shape
and byte range in the data section) and the data. :class:`SafetensorsIndex` parses only the headers of a
Hugging Face checkpoint (``model.safetensors`` or the shards ``model.safetensors.index.json`` names), so
shapes and sizes are known without touching a weight: the memory estimate and the checks before a
streamed run read nothing more. :meth:`SafetensorsIndex.read` brings in the named tensors through
``safetensors.safe_open``, one file opening per call, so the memory map of a file is released after each
decoder layer instead of accumulating the whole checkpoint's pages in the process.
:func:`write_safetensors` writes a file from tensors in memory and byte ranges of other safetensors
files, copied in chunks, so an output larger than RAM is never held at once. Its files load with
``safetensors.torch.load_file``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

#: safetensors dtype names and the torch dtypes they hold.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
#: A header above this size is a damaged file, not a checkpoint (safetensors itself stops at 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024
INDEX_FILE = "model.safetensors.index.json"
_COPY_CHUNK = 64 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: its file, safetensors dtype name, shape and absolute byte range in the file."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(file: Path) -> tuple[dict[str, TensorInfo], bytes]:
    """The tensors a safetensors file declares, and its raw header bytes; no tensor data is read.

    Raises:
        ValueError: the header is missing, too large, not JSON, or declares an unknown dtype or a bad range.
    """
    file = Path(file)
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{file}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{file}: not a safetensors file (declares a {length}-byte header)")
        raw = f.read(length)
    if len(raw) < length:
        raise ValueError(f"{file}: the safetensors header is cut short ({len(raw)} of {length} bytes)")
    try:
        header = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"{file}: the safetensors header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{file}: the safetensors header is not a JSON object")
    base = 8 + length
    return {name: _tensor_info(file, name, entry, base) for name, entry in header.items()
            if name != "__metadata__"}, raw


def _tensor_info(file: Path, name: str, entry: object, base: int) -> TensorInfo:
    where = f"{file}: tensor {name!r}"
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
        raise ValueError(f"{where}: needs a dtype among {', '.join(DTYPES)}, got {entry!r}")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) \
            or not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets):
        raise ValueError(f"{where}: needs integer 'shape' and 'data_offsets' [start, end], got {entry!r}")
    info = TensorInfo(file, entry["dtype"], tuple(shape), base + offsets[0], base + offsets[1])
    if info.nbytes != info.numel * DTYPES[info.dtype].itemsize:
        raise ValueError(f"{where}: byte range {offsets} does not hold {info.numel} {info.dtype} values")
    return info


class SafetensorsIndex:
    """Every tensor of a Hugging Face safetensors checkpoint by name, known from the file headers alone."""

    def __init__(self, directory: Path, files: list[Path]) -> None:
        self.directory = Path(directory)
        self.files = files
        self.tensors: dict[str, TensorInfo] = {}
        self._headers: dict[Path, bytes] = {}
        for file in files:
            infos, raw = read_header(file)
            self._headers[file] = raw
            for name, info in infos.items():
                if name in self.tensors:
                    raise ValueError(f"{file}: tensor {name!r} is also stored in {self.tensors[name].file}")
                self.tensors[name] = info

    @classmethod
    def from_directory(cls, directory: Path) -> SafetensorsIndex:
        """The checkpoint in ``directory``: the shards its index file names, else every ``*.safetensors`` file.

        Raises:
            ValueError: no safetensors file, or an index file naming a shard that is not there.
        """
        directory = Path(directory)
        index = directory / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted(set(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise ValueError(f"{index}: not a safetensors index (no 'weight_map': {err})") from None
            missing = [n for n in names if not (directory / n).is_file()]
            if missing:
                raise ValueError(f"{index}: names shards that are missing: {', '.join(missing[:5])}")
            files = [directory / n for n in names]
        else:
            files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise ValueError(f"{directory}: no safetensors weights (model.safetensors or shards with {INDEX_FILE})")
        return cls(directory, files)

    def read(self, names: Iterable[str], dtype: torch.dtype | None = None) -> dict[str, Tensor]:
        """The named tensors, converted to ``dtype`` when given; each file is opened (mapped) once per call
        and closed before returning, so its mapped pages leave the process."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.tensors[name].file, []).append(name)
        out: dict[str, Tensor] = {}
        for file, members in by_file.items():
            with safe_open(str(file), framework="pt") as f:
                for name in members:
                    t = f.get_tensor(name)
                    out[name] = t if dtype is None or t.dtype == dtype else t.to(dtype)
        return out

    def total_bytes(self) -> int:
        """Bytes of tensor data in the checkpoint."""
        return sum(info.nbytes for info in self.tensors.values())

    def fingerprint(self) -> str:
        """A hash of the checkpoint's headers, file sizes and modification times (not its data: hashing a
        13 GB checkpoint would take minutes); rewriting any file changes it."""
        digest = hashlib.sha256()
        for file in self.files:
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}:".encode())
            digest.update(self._headers[file])
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class StoredBytes:
    """A tensor to copy byte for byte from another safetensors file into the one being written."""

    info: TensorInfo


Source = Tensor | StoredBytes


def _entry(source: Source) -> tuple[str, list[int], int]:
    if isinstance(source, StoredBytes):
        return source.info.dtype, list(source.info.shape), source.info.nbytes
    if source.dtype not in DTYPE_NAMES:
        raise TypeError(f"safetensors cannot store {source.dtype}")
    return DTYPE_NAMES[source.dtype], list(source.shape), source.numel() * source.element_size()


def write_safetensors(path: Path, tensors: Mapping[str, Source], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (in memory, or ranges of other safetensors files) to ``path`` one after another.

    The header (sorted by name, padded to 8 bytes as safetensors pads it) comes first, then each tensor's
    bytes in the same order; copied tensors move in 64 MB chunks.
    """
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    order = sorted(tensors)
    for name in order:
        dtype, shape, nbytes = _entry(tensors[name])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    with Path(path).open("wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        for name in order:
            _write_one(out, tensors[name])
        out.flush()
        os.fsync(out.fileno())


def _write_one(out: BinaryIO, source: Source) -> None:
    write = out.write
    if isinstance(source, Tensor):
        t = source.detach().contiguous()
        if t.numel():
            write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return
    info = source.info
    with info.file.open("rb") as f:
        f.seek(info.start)
        left = info.nbytes
        while left:
            chunk = f.read(min(left, _COPY_CHUNK))
            if not chunk:
                raise ValueError(f"{info.file}: ends before the bytes its header declares")
            write(chunk)
            left -= len(chunk)
