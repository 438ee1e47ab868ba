"""The slimkit checkpoint: a self-describing directory that slimkit loads back and runs.

Layout::

    slimkit.json          format version, model kind, source, applied steps, per-tensor codec header
    slimkit.safetensors   the encoded tensors (packed integers, scales, dense floats)
    config.json, tokenizer files, sentence-transformers module files   (whatever the kind needs)

Loading never unpickles: the header is JSON, tensors come from safetensors, and the module is rebuilt
from its config (HF), its module files (sentence-transformers) or the architecture registry (torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slimkit.atomic import atomic_directory
from slimkit.export.codecs import compress_state_dict, decompress_state_dict
from slimkit.models import hf
from slimkit.models.bundle import MODEL_KINDS, ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.quantize.activation import restore_static_quant_linears
from slimkit.quantize.packed import install_packed, packed_header
from slimkit.quantize.record import quant_records, set_quant_record

FORMAT = "slimkit"
FORMAT_VERSION = 1
HEADER_FILE = "slimkit.json"
WEIGHTS_FILE = "slimkit.safetensors"


def is_slimkit_dir(path: Path) -> bool:
    return (Path(path) / HEADER_FILE).is_file()


def save(bundle: ModelBundle, out: Path, *, overwrite: bool = False) -> Path:
    """Write ``bundle`` to ``out`` atomically in the slimkit format; returns ``out``."""
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_into(bundle, tmp)
    return out


def write_into(bundle: ModelBundle, directory: Path) -> None:
    """Write ``bundle`` into an existing, empty ``directory`` (callers make it atomic)."""
    tensors, codecs = compress_state_dict(bundle.model.state_dict(), quant_records(bundle.model))
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": bundle.kind,
              "source": bundle.source, "origin": bundle.root_source, "arch": bundle.arch,
              "applied": bundle.applied, "tensors": codecs}
    packed = packed_header(bundle.model)
    if packed:
        header["packed"] = packed  # which modules are packed, with which kernel; rebuilt on load
    if bundle.kind == "sentence-transformer":
        hf.save_st_skeleton(bundle, directory)
    elif bundle.kind != "torch":
        hf.save_hf_skeleton(bundle, directory)
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
    (directory / HEADER_FILE).write_text(json.dumps(header, indent=1))


def saved_size(bundle: ModelBundle) -> int:
    """Bytes ``bundle`` takes on disk in the slimkit format (written to a temporary directory)."""
    import tempfile

    from slimkit.atomic import directory_bytes

    with tempfile.TemporaryDirectory(prefix="slimkit-size-") as tmp:
        write_into(bundle, Path(tmp))
        return directory_bytes(Path(tmp))


def read_header(path: Path) -> dict[str, Any]:
    """Parse and check ``slimkit.json``; errors name the file and the problem."""
    file = Path(path) / HEADER_FILE
    try:
        header = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: cannot read the slimkit header ({err})") from None
    if header.get("format") != FORMAT or header.get("kind") not in MODEL_KINDS:
        raise ValueError(f"{file}: not a slimkit header (format={header.get('format')!r}, "
                         f"kind={header.get('kind')!r})")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{file}: written by a newer slimkit (format {header['format_version']}); upgrade slimkit")
    return header


def _read_tensors(path: Path) -> dict[str, Any]:
    file = Path(path) / WEIGHTS_FILE
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{file}: the weights file is missing, truncated or corrupt ({err}). "
                         "Re-create it with `slimkit compress`.") from None


def load_slimkit_dir(path: Path, skeleton: nn.Module | None = None) -> ModelBundle:
    """Load a directory written by :func:`save` back into a runnable :class:`ModelBundle`.

    Args:
        path: the slimkit directory.
        skeleton: for torch models saved without a registered architecture, a freshly built module of
            the same class to load the weights into.
    """
    path = Path(path)
    header = read_header(path)
    try:
        state, records = decompress_state_dict(_read_tensors(path), header["tensors"])
    except KeyError as err:
        raise ValueError(f"{path / WEIGHTS_FILE}: tensor {err} named in the header is missing") from None
    kind = header["kind"]
    tokenizer = None
    if kind == "torch":
        arch: dict[str, Any] = header.get("arch") or {}
        if skeleton is None and not arch:
            raise ValueError(f"{path}: this torch model was saved without a registered architecture; load it "
                             "with load_slimkit_dir(path, skeleton=YourModule())")
        model = skeleton if skeleton is not None else build_architecture(arch["name"], arch.get("kwargs"))
    elif kind == "sentence-transformer":
        model = hf.rebuild_sentence_transformer(path)
        tokenizer = model.tokenizer  # type: ignore[union-attr]
    else:
        model, tokenizer = hf.rebuild_hf(path, kind)
    resize_modules_to_state(model, state)
    restore_static_quant_linears(model, state)  # W8A8 Linears carry activation qparams as buffers
    if header.get("packed"):
        install_packed(model, header["packed"])
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit the architecture (missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]})")
    modules = dict(model.named_modules())
    for fqn, record in records.items():
        module_name, _, param_name = fqn.rpartition(".")
        set_quant_record(modules[module_name], param_name, record)
    return ModelBundle(model.eval(), kind, str(path), tokenizer, header.get("arch"),
                       list(header.get("applied", [])), header.get("origin"))


_SIZE_ATTRIBUTES = {nn.Linear: ("out_features", "in_features"), nn.Conv2d: ("out_channels", "in_channels"),
                    nn.BatchNorm1d: ("num_features", None), nn.BatchNorm2d: ("num_features", None)}


def resize_modules_to_state(model: nn.Module, state: dict[str, Any]) -> None:
    """Give Linear/Conv2d/BatchNorm modules the shapes saved in ``state`` (structured pruning shrinks them).

    A freshly rebuilt skeleton has the original sizes; each module whose saved weight differs gets
    uninitialised tensors of the saved shapes (filled by ``load_state_dict`` next) and updated size
    attributes. Modules whose shapes match are left untouched.
    """
    import torch

    for name, module in model.named_modules():
        attrs = _SIZE_ATTRIBUTES.get(type(module))
        saved = state.get(f"{name}.weight" if name else "weight")
        if attrs is None or saved is None or tuple(saved.shape) == tuple(module.weight.shape):
            continue
        for key, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            new = state.get(f"{name}.{key}")
            if new is not None and tensor.dim() > 0:
                blank = torch.empty(new.shape, dtype=tensor.dtype)
                setattr(module, key, nn.Parameter(blank, tensor.requires_grad) if key in module._parameters else blank)
        setattr(module, attrs[0], saved.shape[0])
        if attrs[1]:
            setattr(module, attrs[1], saved.shape[1])
