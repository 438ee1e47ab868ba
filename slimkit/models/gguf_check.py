"""Check a GGUF file's structure before transformers reads it, so a bad file gets one clear error.

transformers' GGUF reader trusts the counts and lengths in the header: a file with the right magic and
garbage after it fails with ``struct.error``, ``UnicodeDecodeError``, ``ZeroDivisionError`` or a huge
allocation, and a truncated file fails only when a tensor is read. :func:`check_gguf_file` walks the
header (version, metadata, tensor table) the way the GGUF specification lays it out
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), checks every length against the bytes
that are really there, and checks that every tensor's data lies inside the file. Tensor data itself is
not read.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

GGUF_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS
# Fixed-width metadata value types: uint8, int8, uint16, int16, uint32, int32, float32, bool, uint64, int64, float64.
_WIDTH = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_UINT_FORMAT = {4: "<I", 10: "<Q"}


class GGUFFormatError(ValueError):
    """A GGUF file whose header is malformed or truncated."""


class _Cursor:
    """Reads little-endian values from a buffer, refusing to read past its end."""

    def __init__(self, buffer: mmap.mmap | bytes, path: Path) -> None:
        self.buffer, self.path, self.pos = buffer, path, 0

    def fail(self, message: str) -> GGUFFormatError:
        return GGUFFormatError(f"{self.path}: not a valid GGUF file: {message}")

    def need(self, size: int, what: str) -> None:
        left = len(self.buffer) - self.pos
        if size > left:
            raise self.fail(f"{what} at byte {self.pos} needs {size} bytes, but the file has {left} left "
                            "(truncated or corrupt)")

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        self.need(struct.calcsize(fmt), what)
        values = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def string(self, what: str) -> str:
        (length,) = self.unpack("<Q", f"the length of {what}")
        self.need(length, what)
        raw = bytes(self.buffer[self.pos: self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at byte {self.pos - length} is not UTF-8 text") from None


def _skip_value(cur: _Cursor, value_type: int, key: str) -> int | None:
    """Move past one metadata value; returns it when it is an unsigned integer (for ``general.alignment``)."""
    if value_type in _WIDTH:
        if value_type in _UINT_FORMAT:
            return cur.unpack(_UINT_FORMAT[value_type], f"the value of {key!r}")[0]
        cur.need(_WIDTH[value_type], f"the value of {key!r}")
        cur.pos += _WIDTH[value_type]
        return None
    if value_type == _STRING:
        cur.string(f"the value of {key!r}")
        return None
    if value_type != _ARRAY:
        raise cur.fail(f"metadata key {key!r} has value type {value_type}, which GGUF does not define")
    item_type, count = cur.unpack("<IQ", f"the array header of {key!r}")
    if item_type in _WIDTH:
        cur.need(count * _WIDTH[item_type], f"the array {key!r} ({count} items)")
        cur.pos += count * _WIDTH[item_type]
    elif item_type == _STRING:
        cur.need(count * 8, f"the array {key!r} ({count} strings)")  # each string has at least its length
        for i in range(count):
            cur.string(f"item {i} of {key!r}")
    else:
        raise cur.fail(f"metadata key {key!r} is an array of type {item_type}, which slimkit cannot read")
    return None


def _tensor_bytes(cur: _Cursor, name: str, dims: tuple[int, ...], ggml_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise cur.fail(f"tensor {name!r} has ggml type {ggml_type}, which is not a known type") from None
    elements = 1
    for d in dims:
        elements *= d
    if dims and dims[0] % block:
        raise cur.fail(f"tensor {name!r} rows of {dims[0]} values do not fill whole blocks of {block}")
    return elements // block * block_bytes


def check_gguf_file(path: Path) -> None:
    """Raise :class:`GGUFFormatError` naming ``path`` and the broken field unless the header is well formed.

    Checks the magic, the version (2 or 3), every metadata key and value length, ``general.architecture``
    and ``general.alignment``, every tensor's dimensions and type, and that each tensor's data lies
    inside the file.
    """
    with path.open("rb") as fh:
        if path.stat().st_size < 24:
            raise GGUFFormatError(f"{path}: not a valid GGUF file: {path.stat().st_size} bytes is shorter than "
                                  "the 24-byte GGUF header")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            _check_layout(_Cursor(buffer, path))


def _check_layout(cur: _Cursor) -> None:
    if bytes(cur.buffer[:4]) != GGUF_MAGIC:
        raise cur.fail("it does not start with the magic bytes 'GGUF'")
    cur.pos = 4
    version, tensor_count, kv_count = cur.unpack("<IQQ", "the header")
    if version not in _VERSIONS:
        raise cur.fail(f"version {version}; slimkit reads GGUF versions 2 and 3")
    keys, alignment = set(), 32  # llama.cpp's default alignment
    for i in range(kv_count):
        key = cur.string(f"metadata key {i}")
        (value_type,) = cur.unpack("<I", f"the value type of {key!r}")
        value = _skip_value(cur, value_type, key)
        keys.add(key)
        if key == "general.alignment":
            if value is None or value <= 0 or value & (value - 1):
                raise cur.fail(f"general.alignment must be a power of two, got {value}")
            alignment = value
    if "general.architecture" not in keys:
        raise cur.fail("its metadata has no general.architecture")
    extents = []
    for i in range(tensor_count):
        name = cur.string(f"the name of tensor {i}")
        (n_dims,) = cur.unpack("<I", f"the dimension count of tensor {name!r}")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions; GGUF allows 1 to {_MAX_DIMS}")
        dims = cur.unpack(f"<{n_dims}Q", f"the dimensions of tensor {name!r}")
        ggml_type, offset = cur.unpack("<IQ", f"the type and offset of tensor {name!r}")
        extents.append((name, offset, _tensor_bytes(cur, name, dims, ggml_type)))
    data_start = -(-cur.pos // alignment) * alignment
    data_bytes = len(cur.buffer) - data_start
    for name, offset, size in extents:
        if offset + size > data_bytes:
            raise cur.fail(f"tensor {name!r} needs bytes {offset}..{offset + size} of the data section, which "
                           f"holds only {max(data_bytes, 0)} (truncated file)")
