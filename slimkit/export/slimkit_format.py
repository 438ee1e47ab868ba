"""The slimkit checkpoint: a self-describing directory that slimkit loads back and runs.

Layout::

    slimkit.json          format version, model kind, source, applied steps, per-tensor codec header
    slimkit.safetensors   the encoded tensors (packed integers, scales, dense floats)
    config.json, tokenizer files, sentence-transformers module files   (whatever the kind needs)

Loading never unpickles: the header is JSON, tensors come from safetensors, and the module is rebuilt
from its config (HF), its module files (sentence-transformers) or the architecture registry (torch).
This module knows no method family: tensors are encoded by the codecs and modules rebuilt by the module
restorers the families registered (:mod:`slimkit.export.registry`). It registers itself with
:func:`slimkit.models.loading.load_model` as the loader of directories holding ``slimkit.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from slimkit.atomic import atomic_directory, check_replaceable
from slimkit.export.codecs import compress_state_dict, decompress_state_dict
from slimkit.export.header import (
    FORMAT,
    FORMAT_VERSION,
    HEADER_FILE,
    WEIGHTS_FILE,
    FormatError,
    check_tensors,
    read_header,
    read_tensors,
)
from slimkit.export.registry import codec_for_note, collect_notes, module_restorers
from slimkit.method import config_class
from slimkit.models import hf
from slimkit.models.bundle import ModelBundle
from slimkit.models.loading import register_loader
from slimkit.models.zoo import build_architecture

__all__ = ["FORMAT", "FORMAT_VERSION", "HEADER_FILE", "WEIGHTS_FILE", "REPORT_FILES", "FormatError", "check_output",
           "is_slimkit_dir", "load_slimkit_dir", "read_header", "save", "saved_size", "write_into"]

#: Files ``slimkit compress`` adds beside the model; an output holding only these and the files its
#: header lists may be replaced with ``--overwrite``.
REPORT_FILES = ("recipe.yaml", "report.json", "report.md", "report.png", "report.html")


def is_slimkit_dir(path: Path) -> bool:
    return (Path(path) / HEADER_FILE).is_file()


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output location whose replacement could lose a user's data.

    ``out`` may be new, or (with ``overwrite``) a slimkit output holding only the files slimkit wrote
    there: those its header lists plus :data:`REPORT_FILES`. A file, a link, any other directory, or a
    slimkit output with other files added is refused with the reason, never deleted.
    """
    out = Path(out)
    check_replaceable(out, overwrite)
    if not out.exists() or not any(out.iterdir()):
        return
    if not is_slimkit_dir(out):
        raise FileExistsError(f"{out} is not a slimkit output (it has no {HEADER_FILE}); slimkit replaces only a "
                              "directory it wrote. Choose another --out or remove it yourself")
    try:
        written = set(read_header(out).get("files", [])) | {HEADER_FILE, WEIGHTS_FILE, *REPORT_FILES}
    except FormatError as err:
        raise FileExistsError(f"{out}: will not replace it, its header is unreadable ({err})") from None
    foreign = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if not p.is_dir() and p.relative_to(out).as_posix() not in written)
    if foreign:
        raise FileExistsError(f"{out} holds files slimkit did not write ({', '.join(foreign[:5])}"
                              f"{', ...' if len(foreign) > 5 else ''}); replacing it would delete them. Move them "
                              "away or choose another --out")


def save(bundle: ModelBundle, out: Path, *, overwrite: bool = False) -> Path:
    """Write ``bundle`` to ``out`` atomically in the slimkit format; returns ``out``.

    ``overwrite`` replaces an existing slimkit output only (see :func:`check_output`).
    """
    out = Path(out)
    check_output(out, overwrite)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_into(bundle, tmp)
    return out


def write_into(bundle: ModelBundle, directory: Path) -> None:
    """Write ``bundle`` into an existing, empty ``directory`` (callers make it atomic)."""
    tensors, codecs = compress_state_dict(bundle.model.state_dict(), collect_notes(bundle.model))
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": bundle.kind,
              "source": bundle.source, "origin": bundle.root_source, "arch": bundle.arch,
              "applied": [compact_step(step) for step in bundle.applied], "tensors": codecs}
    for restorer in module_restorers():  # e.g. 'packed': which modules are packed, with which kernel
        spec = restorer.header_spec(bundle.model) if restorer.header_spec else None
        if spec:
            header[restorer.kind] = spec
    if bundle.kind == "sentence-transformer":
        hf.save_st_skeleton(bundle, directory)
    elif bundle.kind != "torch":
        hf.save_hf_skeleton(bundle, directory)
    weights = directory / WEIGHTS_FILE
    try:
        save_file(tensors, str(weights), metadata={"format": FORMAT})
    except SafetensorError as err:  # a full disk surfaces here as a SafetensorError, not an OSError
        raise OSError(f"{weights}: cannot write the weights ({err})") from None
    # Which files slimkit wrote: `--overwrite` may later replace these, and nothing else.
    header["files"] = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    # compact: on a Deep-Compressed LeNet the header is a sizeable share of the bytes on disk
    (directory / HEADER_FILE).write_text(json.dumps(header, separators=(",", ":")))


def compact_step(step: dict[str, Any]) -> dict[str, Any]:
    """An applied step as the header stores it: its config reduced to the fields that differ from the
    defaults of its (method, version), which imply the rest. On a Deep-Compressed LeNet the full configs
    were ~10% of the bytes on disk. Steps of unregistered methods (e.g. ``train``) are kept as they are."""
    config = step.get("config")
    try:
        cls = config_class(str(step.get("method")))
        parsed = cls.model_validate(config)
    except (KeyError, ValueError, TypeError):
        return step
    changed = parsed.model_dump(mode="json", exclude_defaults=True)
    return {**step, "config": {"method": parsed.method, "version": parsed.version, **changed}}


def saved_size(bundle: ModelBundle) -> int:
    """Bytes ``bundle`` takes on disk in the slimkit format (written to a temporary directory)."""
    import tempfile

    from slimkit.atomic import directory_bytes

    with tempfile.TemporaryDirectory(prefix="slimkit-size-") as tmp:
        write_into(bundle, Path(tmp))
        return directory_bytes(Path(tmp))


def load_slimkit_dir(path: Path, skeleton: nn.Module | None = None) -> ModelBundle:
    """Load a directory written by :func:`save` back into a runnable :class:`ModelBundle`.

    Every field of the header and its agreement with the stored tensors is checked first
    (:mod:`slimkit.export.header`); problems raise :class:`FormatError` naming the file and entry.

    Args:
        path: the slimkit directory.
        skeleton: for torch models saved without a registered architecture, a freshly built module of
            the same class to load the weights into.
    """
    path = Path(path)
    header = read_header(path)
    tensors = read_tensors(path)
    check_tensors(header, tensors, path)
    state, notes = decompress_state_dict(tensors, header["tensors"])
    model, tokenizer = _skeleton(path, header, skeleton)
    try:
        resize_modules_to_state(model, state)
        _restore_modules(model, state, header)
        result = model.load_state_dict(state, strict=False)
    except (ValueError, RuntimeError, KeyError) as err:  # shapes or packed specs that do not fit the model
        raise FormatError(f"{path / HEADER_FILE}: the stored tensors do not fit the {header['kind']} model "
                          f"({err})") from None
    if result.missing_keys or result.unexpected_keys:
        raise FormatError(f"{path}: weights do not fit the architecture (missing {result.missing_keys[:5]}, "
                          f"unexpected {result.unexpected_keys[:5]})")
    for name, note in notes.items():  # e.g. a QuantRecord, so the loaded model re-saves packed
        codec_for_note(note).attach(model, name, note)
    return ModelBundle(model.eval(), header["kind"], str(path), tokenizer, header.get("arch"),
                       list(header.get("applied", [])), header.get("origin"))


def _restore_modules(model: nn.Module, state: dict[str, Any], header: dict[str, Any]) -> None:
    """Give the skeleton the modules the families registered: those the state implies (W8A8 Linears with
    their activation buffers), then those a header section describes (packed layers)."""
    for restorer in module_restorers():
        if restorer.header_spec is None:
            restorer.restore(model, state, None)
        elif header.get(restorer.kind):
            restorer.restore(model, state, header[restorer.kind])


def _skeleton(path: Path, header: dict[str, Any], skeleton: nn.Module | None) -> tuple[nn.Module, Any]:
    """The freshly built module (and tokenizer) that the saved tensors are loaded into."""
    kind = header["kind"]
    if kind == "torch":
        arch: dict[str, Any] = header.get("arch") or {}
        if skeleton is not None:
            return skeleton, None
        if not arch:
            raise FormatError(f"{path}: this torch model was saved without a registered architecture; load it "
                              "with load_slimkit_dir(path, skeleton=YourModule())")
        try:
            return build_architecture(arch["name"], arch.get("kwargs")), None
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise FormatError(f"{path / HEADER_FILE}: 'arch' {arch!r} cannot be built ({err})") from None
    needed = "modules.json" if kind == "sentence-transformer" else "config.json"
    if not (path / needed).is_file():
        raise FormatError(f"{path}: a {kind} model needs its {needed} beside {HEADER_FILE}; it is missing")
    if kind == "sentence-transformer":
        model = hf.rebuild_sentence_transformer(path)
        return model, model.tokenizer  # type: ignore[union-attr]
    return hf.rebuild_hf(path, kind)


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
        if saved.dim() != module.weight.dim():
            raise ValueError(f"'{name}.weight' is stored with shape {tuple(saved.shape)}, which does not fit a "
                             f"{type(module).__name__} (weight shape {tuple(module.weight.shape)})")
        for key, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            new = state.get(f"{name}.{key}")
            if new is not None and tensor.dim() > 0:
                blank = torch.empty(new.shape, dtype=tensor.dtype)
                setattr(module, key, nn.Parameter(blank, tensor.requires_grad) if key in module._parameters else blank)
        setattr(module, attrs[0], saved.shape[0])
        if attrs[1]:
            setattr(module, attrs[1], saved.shape[1])


def _load_output(path: Path, source: str) -> ModelBundle:
    return load_slimkit_dir(path)  # the bundle's source is the directory itself


register_loader(is_slimkit_dir, _load_output, what=f"a slimkit output ({HEADER_FILE})")
