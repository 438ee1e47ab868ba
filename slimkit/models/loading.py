"""One entry point to load any model a user names: ``load_model(spec)``.

A spec is a packaged short name (``smollm2-135m``), a slimkit output directory, a Hugging Face or
sentence-transformers directory, a ``.gguf`` file, a Keras ``.keras`` file or TensorFlow SavedModel directory
(converted, :mod:`slimkit.models.keras_in`), or ``ARCH=WEIGHTS`` for a state-dict file of a
registered torch architecture (``lenet-300-100=weights.pt``, with arguments
``mlp[in_features=64,hidden=[32]]=weights.pt``). Hub ids are refused with a plain explanation,
because slimkit never downloads at run time. Formats defined above ``models`` (the slimkit output
directory) plug in with :func:`register_loader`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slimkit.models.bundle import ModelBundle
from slimkit.models.packaged import PACKAGED_MODELS, packaged_model_path

# A hub id is ``org/name`` or a bare ``name`` (``gpt2``, ``bert-base-uncased``); names ending like a weights
# or config file are missing files, not hub ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = (".gguf", ".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".json", ".yaml", ".yml")


@dataclass(frozen=True)
class PathLoader:
    """A loader another part of slimkit registered: ``claims(path)`` says whether ``load(path, source)`` reads it."""

    claims: Callable[[Path], bool]
    load: Callable[[Path, str], ModelBundle]
    what: str  # named in the error for a path no loader reads, e.g. "a slimkit output (slimkit.json)"


_LOADERS: list[PathLoader] = []


def register_loader(claims: Callable[[Path], bool], load: Callable[[Path, str], ModelBundle], *, what: str) -> None:
    """Let :func:`load_model` read the paths ``claims`` accepts with ``load(path, source)``.

    Registered loaders are asked before the built-in ones, in registration order: a slimkit output of
    a Hugging Face model also holds a ``config.json`` and must not be read as a plain HF directory. The
    slimkit format registers itself this way, so ``models`` never imports ``export``.
    """
    if any(loader.what == what for loader in _LOADERS):
        return  # the registering module was imported again
    _LOADERS.append(PathLoader(claims, load, what))


def load_model(spec: str) -> ModelBundle:
    """Load the model named by ``spec`` (see module docstring) in float32 on the CPU."""
    if spec in PACKAGED_MODELS:
        return _load_path(packaged_model_path(spec), spec)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_path(path, spec)
    if "=" in spec:
        from slimkit.models.torch_io import load_torch_spec

        return load_torch_spec(spec)
    packaged = ", ".join(PACKAGED_MODELS)
    if _HUB_ID.match(spec) and not spec.lower().endswith(_FILE_SUFFIXES):
        raise FileNotFoundError(
            f"{spec!r} is not a file or directory here, nor a packaged model ({packaged}); if it is a Hugging "
            f"Face hub id: slimkit works offline and never downloads models. Download it elsewhere (e.g. "
            f"`huggingface-cli download {spec} --local-dir DIR`) and pass the local directory, or use a "
            f"packaged model."
        )
    raise FileNotFoundError(f"no model at {spec!r}: not a file or directory, and not one of the packaged "
                            f"models ({packaged}).")


def _load_path(path: Path, source: str) -> ModelBundle:
    from slimkit.models import hf, keras_in

    for loader in _LOADERS:
        if loader.claims(path):
            return loader.load(path, source)
    if keras_in.is_tensorflow_model(path):  # a .keras file or a SavedModel directory
        return keras_in.load_tensorflow_model(path, source)
    if path.is_file():
        if path.suffix == ".gguf":
            return hf.load_gguf_file(path, source)
        raise ValueError(f"{path}: a bare weights file cannot be loaded without its architecture; name it as "
                         f"ARCH={path} with a registered architecture, or pass a model directory, a .gguf file, "
                         "a .keras file or a slimkit output directory")
    if (path / "modules.json").exists():
        return hf.load_sentence_transformer(path, source)
    if (path / "config.json").exists():
        return hf.load_hf_directory(path, source)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return hf.load_gguf_file(ggufs[0], source)
    known = [loader.what for loader in _LOADERS] + ["a sentence-transformers directory (modules.json)",
                                                     "a Hugging Face directory (config.json)", "a single .gguf file",
                                                     "a TensorFlow SavedModel directory (saved_model.pb)"]
    raise ValueError(f"{path}: not a model directory; slimkit reads {', '.join(known)}")
