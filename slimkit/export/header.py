"""``slimkit.json`` and ``slimkit.safetensors``: read them and check every field before anything is built.

A slimkit directory can be edited, truncated or corrupted by hand or by a full disk. Everything read
from it is checked here first, so that a bad file ends in one :class:`FormatError` naming the file and
the entry (``format_version``, ``tensors.fc1.weight.bits`` ...) instead of a ``TypeError`` deep in torch.
Checks cover the header's types and ranges and the agreement of every entry with the stored tensors
(names, sizes of packed data, scales, bitmasks), before any tensor is decoded or any memory allocated
for it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, get_args

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from slimkit.models.bundle import MODEL_KINDS
from slimkit.quantize.packing import packed_nbytes
from slimkit.quantize.primitives import Granularity, GridKind, QuantScheme

FORMAT = "slimkit"
FORMAT_VERSION = 1
HEADER_FILE = "slimkit.json"
WEIGHTS_FILE = "slimkit.safetensors"
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


class FormatError(ValueError):
    """A slimkit directory whose header or weights cannot be used; the message names the file and entry."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(_is_int(d) and d >= 0 for d in value):
        raise FormatError(f"{where}: 'shape' must be a list of non-negative integers, got {value!r}")
    return value


def read_header(path: Path) -> dict[str, Any]:
    """Parse ``slimkit.json`` of the directory ``path`` and check its fields (not yet the tensors)."""
    file = Path(path) / HEADER_FILE
    try:
        header = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise FormatError(f"{file}: cannot read the slimkit header ({err.strerror})") from None
    except (ValueError, RecursionError) as err:  # JSON syntax, bad UTF-8, absurd nesting
        raise FormatError(f"{file}: cannot read the slimkit header ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("kind") not in MODEL_KINDS:
        got = header if not isinstance(header, dict) else {k: header.get(k) for k in ("format", "kind")}
        raise FormatError(f"{file}: not a slimkit header ({got!r}); expected format {FORMAT!r} and a kind "
                          f"among {', '.join(MODEL_KINDS)}")
    _check_version(header.get("format_version"), file)
    _check_fields(header, file)
    tensors = header.get("tensors")
    if not isinstance(tensors, dict) or not tensors:
        raise FormatError(f"{file}: 'tensors' must be a non-empty mapping of tensor names to codec entries")
    for name, entry in tensors.items():
        _check_entry(name, entry, tensors, f"{file}: tensors.{name}")
    return header


def _check_version(version: Any, file: Path) -> None:
    if _is_int(version) and version > FORMAT_VERSION:
        raise FormatError(f"{file}: written by a newer slimkit (format_version {version}, this slimkit reads up "
                          f"to {FORMAT_VERSION}); upgrade slimkit")
    if not _is_int(version) or version < 1:
        raise FormatError(f"{file}: 'format_version' must be an integer from 1 to {FORMAT_VERSION}, got {version!r}")


def _check_fields(header: dict[str, Any], file: Path) -> None:
    """The header's descriptive fields: source, origin, arch, applied, packed, files."""
    for key in ("source", "origin"):
        if header.get(key) is not None and not isinstance(header[key], str):
            raise FormatError(f"{file}: '{key}' must be a string, got {header[key]!r}")
    arch = header.get("arch")
    if arch is not None and not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
                                 and isinstance(arch.get("kwargs") or {}, dict)):
        raise FormatError(f"{file}: 'arch' must be {{name: str, kwargs: mapping}}, got {arch!r}")
    if not isinstance(header.get("applied", []), list):
        raise FormatError(f"{file}: 'applied' must be a list of steps, got {header['applied']!r}")
    packed = header.get("packed")
    if packed is not None and not (isinstance(packed, dict) and isinstance(packed.get("float_dtype"), str)
                                   and isinstance(packed.get("modules"), dict)
                                   and all(isinstance(s, dict) for s in packed["modules"].values())):
        raise FormatError(f"{file}: 'packed' must be {{float_dtype: str, modules: {{path: spec}}}}, got {packed!r}")
    files = header.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise FormatError(f"{file}: 'files' must be a list of file names, got {files!r}")


def _check_entry(name: Any, entry: Any, entries: dict[str, Any], where: str) -> None:
    if not isinstance(entry, dict):
        raise FormatError(f"{where}: an entry must be a mapping with a 'codec', got {entry!r}")
    codec = entry.get("codec")
    if codec == "alias":
        target = entry.get("of")
        if not isinstance(target, str) or target == name or not isinstance(entries.get(target), dict) \
                or entries[target].get("codec") == "alias":
            raise FormatError(f"{where}: 'of' must name another, non-alias tensor of the header, got {target!r}")
    elif codec == "int":
        _shape(entry.get("shape"), where)
        if not entry["shape"]:
            raise FormatError(f"{where}: a quantized weight needs at least one dimension")
        if entry.get("dtype") not in FLOAT_DTYPES:
            raise FormatError(f"{where}: 'dtype' must be one of {', '.join(FLOAT_DTYPES)}, got {entry.get('dtype')!r}")
        scheme_of(entry, where)
    elif codec == "bitmask":
        _shape(entry.get("shape"), where)
    elif codec != "dense":
        raise FormatError(f"{where}: unknown codec {codec!r} (known: dense, alias, int, bitmask)")


def scheme_of(entry: dict[str, Any], where: str) -> QuantScheme:
    """The quantization scheme an ``int`` entry describes, with each field's type checked."""
    missing = [k for k in ("bits", "symmetric", "granularity", "group_size") if k not in entry]
    if missing:
        raise FormatError(f"{where}: a quantized entry needs {', '.join(repr(k) for k in missing)}")
    fields = {k: entry[k] for k in ("bits", "symmetric", "granularity", "group_size")}
    bits, symmetric, granularity, group_size = fields.values()
    kind = entry.get("kind", "int")
    if not _is_int(bits) or not isinstance(symmetric, bool) or granularity not in get_args(Granularity) \
            or not (group_size is None or _is_int(group_size)) or kind not in get_args(GridKind):
        raise FormatError(f"{where}: needs integer 'bits', boolean 'symmetric', 'granularity' in "
                          f"{get_args(Granularity)}, integer or null 'group_size' and 'kind' in "
                          f"{get_args(GridKind)}; got {fields | {'kind': kind}!r}")
    try:
        return QuantScheme(bits, symmetric, granularity, group_size, kind)
    except ValueError as err:
        raise FormatError(f"{where}: {err}") from None


def read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of ``slimkit.safetensors``; never unpickles."""
    file = Path(path) / WEIGHTS_FILE
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise FormatError(f"{file}: the weights file is missing, truncated or corrupt ({err}). "
                          "Re-create it with `slimkit compress`.") from None


def check_tensors(header: dict[str, Any], tensors: dict[str, Tensor], path: Path) -> None:
    """Check that every header entry has the stored tensors it needs, of the sizes it implies."""
    file = Path(path) / WEIGHTS_FILE
    for name, entry in header["tensors"].items():
        where = f"{file}: tensor {name!r}"
        codec = entry["codec"]
        if codec == "dense":
            _stored(tensors, name, where)
        elif codec == "int":
            _check_int(name, entry, tensors, where)
        elif codec == "bitmask":
            _check_bitmask(name, entry, tensors, where)


def _stored(tensors: dict[str, Tensor], key: str, where: str) -> Tensor:
    if key not in tensors:
        raise FormatError(f"{where}: '{key}' named in the header is missing from the weights file")
    return tensors[key]


def _check_int(name: str, entry: dict[str, Any], tensors: dict[str, Tensor], where: str) -> None:
    scheme = scheme_of(entry, where)
    rows, cols = entry["shape"][0], math.prod(entry["shape"][1:])
    qdata = _stored(tensors, f"{name}.qdata", where)
    needed = packed_nbytes(rows * cols, scheme.bits)
    if qdata.dtype != torch.uint8 or qdata.numel() != needed:
        raise FormatError(f"{where}: packed data holds {qdata.numel()} {qdata.dtype} values, but shape "
                          f"{entry['shape']} at {scheme.bits} bits needs {needed} uint8")
    groups = math.ceil(cols / scheme.group_width(cols)) if cols else 1
    scale = _stored(tensors, f"{name}.scale", where)
    allowed = {(rows, 1), (rows, groups), (1, 1)}
    if not scale.is_floating_point() or tuple(scale.shape) not in allowed:
        raise FormatError(f"{where}: scale has shape {tuple(scale.shape)} ({scale.dtype}); shape "
                          f"{entry['shape']} with {scheme.granularity} granularity needs float {sorted(allowed)}")
    if not scheme.symmetric and tuple(_stored(tensors, f"{name}.zero", where).shape) != tuple(scale.shape):
        raise FormatError(f"{where}: zero points and scales differ in shape")


def _check_bitmask(name: str, entry: dict[str, Any], tensors: dict[str, Tensor], where: str) -> None:
    numel = math.prod(entry["shape"])
    mask = _stored(tensors, f"{name}.bitmask", where)
    values = _stored(tensors, f"{name}.values", where)
    if mask.dtype != torch.uint8 or mask.dim() != 1 or mask.numel() != -(-numel // 8):
        raise FormatError(f"{where}: bitmask holds {mask.numel()} {mask.dtype} bytes, shape {entry['shape']} "
                          f"needs {-(-numel // 8)} uint8")
    from slimkit.export.sparse_codec import unpack_mask

    kept = int(unpack_mask(mask, numel).sum())
    if values.dim() != 1 or values.numel() != kept:
        raise FormatError(f"{where}: the bitmask keeps {kept} entries but {values.numel()} values are stored")
