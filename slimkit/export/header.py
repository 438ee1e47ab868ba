"""``slimkit.json`` and ``slimkit.safetensors``: read them and check every field before anything is built.

A slimkit directory can be edited, truncated or corrupted by hand or by a full disk. Everything read
from it is checked here first, so that a bad file ends in one :class:`FormatError` naming the file and
the entry (``format_version``, ``tensors.fc1.weight.bits`` ...) instead of a ``TypeError`` deep in torch.
Checks cover the header's types and ranges and the agreement of every entry with the stored tensors
(names, sizes of packed data, scales, bitmasks), before any tensor is decoded or any memory allocated
for it. The format checks its own fields; each entry's codec and each module section's restorer, as
registered in :mod:`slimkit.export.registry`, check theirs, so a codec or section nobody registered is a
:class:`FormatError` too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from slimkit.export.registry import ALIAS, FormatError, codec_named, section_restorer
from slimkit.models.bundle import MODEL_KINDS

FORMAT = "slimkit"
FORMAT_VERSION = 1
HEADER_FILE = "slimkit.json"
WEIGHTS_FILE = "slimkit.safetensors"
#: The header's own fields; any other top-level key is a section a registered module restorer reads.
FORMAT_FIELDS = ("format", "format_version", "kind", "source", "origin", "arch", "applied", "tensors", "files")

__all__ = ["FORMAT", "FORMAT_FIELDS", "FORMAT_VERSION", "HEADER_FILE", "WEIGHTS_FILE", "FormatError", "check_tensors",
           "read_header", "read_tensors"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    """The header's descriptive fields (source, origin, arch, applied, files) and its module sections."""
    for key in ("source", "origin"):
        if header.get(key) is not None and not isinstance(header[key], str):
            raise FormatError(f"{file}: '{key}' must be a string, got {header[key]!r}")
    arch = header.get("arch")
    if arch is not None and not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
                                 and isinstance(arch.get("kwargs") or {}, dict)):
        raise FormatError(f"{file}: 'arch' must be {{name: str, kwargs: mapping}}, got {arch!r}")
    if not isinstance(header.get("applied", []), list):
        raise FormatError(f"{file}: 'applied' must be a list of steps, got {header['applied']!r}")
    files = header.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise FormatError(f"{file}: 'files' must be a list of file names, got {files!r}")
    for key in sorted(set(header) - set(FORMAT_FIELDS)):  # module layouts a family described (e.g. 'packed')
        restorer = section_restorer(key, str(file))
        assert restorer.check_spec is not None
        restorer.check_spec(header[key], f"{file}: '{key}'")


def _check_entry(name: Any, entry: Any, entries: dict[str, Any], where: str) -> None:
    if not isinstance(entry, dict):
        raise FormatError(f"{where}: an entry must be a mapping with a 'codec', got {entry!r}")
    if entry.get("codec") == ALIAS:
        target = entry.get("of")
        if not isinstance(target, str) or target == name or not isinstance(entries.get(target), dict) \
                or entries[target].get("codec") == ALIAS:
            raise FormatError(f"{where}: 'of' must name another, non-alias tensor of the header, got {target!r}")
    else:
        codec_named(entry.get("codec"), where).check_entry(entry, where)


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
        if entry["codec"] != ALIAS:
            where = f"{file}: tensor {name!r}"
            codec_named(entry["codec"], where).check_stored(name, entry, tensors, where)
