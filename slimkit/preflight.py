"""Checks ``slimkit compress`` runs before any expensive work.

Loading SmolLM2 and calibrating it take minutes, so a mistyped ``--calib`` path, a recipe error, a
read-only or occupied ``--out`` or a nearly full disk must be reported in a second, not after that.
Everything here only looks at names, paths and file headers: no weights are loaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from slimkit.atomic import directory_bytes
from slimkit.data.images import FASHION_MNIST_DIR
from slimkit.data.mix import parse_mix
from slimkit.data.spec import DataSpec, parse_data_spec
from slimkit.export.slimkit_format import check_output, is_slimkit_dir, read_header
from slimkit.models.bundle import ModelBundle

MB = 1024 * 1024
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte")


def check_model_spec(spec: str) -> int | None:
    """Check that ``spec`` names a model that can be loaded; returns the bytes of its files if known.

    Mirrors the order of :func:`slimkit.models.load_model` without reading any weights.
    """
    from slimkit.models.packaged import PACKAGED_MODELS, packaged_model_path
    from slimkit.models.zoo import architecture_names

    if spec in PACKAGED_MODELS:
        return directory_bytes(packaged_model_path(spec))
    path = Path(spec).expanduser()
    if path.exists():
        if is_slimkit_dir(path):
            read_header(path)
        return directory_bytes(path)
    if "=" in spec:
        from slimkit.models.torch_io import parse_arch_spec

        arch, _, file = parse_arch_spec(spec)  # ARCH=WEIGHTS or ARCH[key=value,...]=WEIGHTS
        if arch not in architecture_names():
            raise ValueError(f"{spec}: unknown architecture {arch!r} (registered: {', '.join(architecture_names())})")
        if not file.is_file():
            raise FileNotFoundError(f"{spec}: no weights file at {file}")
        return file.stat().st_size
    return None  # nothing here under this name: load_model explains why (hub id, typo) without loading anything


def check_data_spec(text: str) -> DataSpec:
    """Parse a data spec and check that what it names exists here (files, data sets, packages)."""
    spec = parse_data_spec(text)
    if spec.kind == "text":
        assert spec.arg is not None
        path = Path(spec.arg).expanduser()
        if path.is_dir():
            if not any(p.suffix in (".txt", ".jsonl") for p in path.rglob("*")):
                raise FileNotFoundError(f"{text}: no .txt or .jsonl files in the directory {path}")
        elif not path.is_file():
            raise FileNotFoundError(f"{text}: text data {path} does not exist")
    elif spec.kind == "fashion-mnist":
        _check_fashion_mnist(Path(spec.arg).expanduser() if spec.arg else FASHION_MNIST_DIR)
    elif spec.kind == "hf" and importlib.util.find_spec("datasets") is None:
        raise ImportError(f"{text}: hf: data needs the 'datasets' package: pip install datasets")
    elif spec.kind == "digits" and importlib.util.find_spec("sklearn") is None:
        raise ImportError(f"{text}: the digits data set comes with scikit-learn: pip install scikit-learn")
    return spec


def _check_fashion_mnist(root: Path) -> None:
    for stem in FASHION_MNIST_FILES:
        if not any((root / name).is_file() for name in (f"{stem}.gz", stem)):
            raise FileNotFoundError(f"{root}: no {stem}[.gz]. Install Fashion-MNIST with "
                                    "`apt-get install dataset-fashion-mnist` or pass fashion-mnist:DIR")


def check_output_space(out: Path, needed_bytes: int | None) -> None:
    """Check that ``out`` can be created and that its file system has room for about ``needed_bytes``."""
    out = Path(out)
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the output's missing parents are created when it is written
    if not parent.is_dir():
        raise NotADirectoryError(f"{out}: cannot create the output, {parent} is not a directory")
    try:  # os.access ignores read-only mounts and is always true for root: try it for real
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PermissionError(f"{out}: cannot write in {parent} ({err.strerror})") from None
    free = shutil.disk_usage(parent).free
    if needed_bytes is not None and free < needed_bytes:
        raise OSError(f"{out}: the output needs about {needed_bytes / MB:.0f} MB (the size of the model's files) "
                      f"but only {free / MB:.0f} MB are free in {parent}; free some space or choose another --out")


def check_compress(model: str | ModelBundle, out: Path, *, data_specs: Iterable[str | None], calib_samples: int,
                   overwrite: bool, calib: Sequence[str] = ()) -> None:
    """Everything ``compress`` can check before loading ``model``: output, model, data specs, disk space.

    Args:
        model: the model spec, or an already loaded bundle (its parameter bytes estimate the output size).
        out: the output directory.
        data_specs: every data spec the run will read (``None`` entries are skipped).
        calib_samples: the number of calibration samples asked for.
        calib: the parts of the calibration mix (``SPEC`` or ``SPEC@WEIGHT`` each).
        overwrite: whether an existing slimkit output at ``out`` may be replaced.
    """
    if calib_samples < 1:
        raise ValueError(f"calib_samples must be at least 1, got {calib_samples}")
    check_output(out, overwrite)
    if isinstance(model, str):
        size = check_model_spec(model)
    else:
        size = sum(t.numel() * t.element_size() for t in model.model.state_dict().values())
    for text in data_specs:
        if text is not None:
            check_data_spec(text)
    if calib:
        for part in parse_mix(calib):  # the weights, and text and images not mixed
            check_data_spec(str(part.spec))
    check_output_space(out, size)
