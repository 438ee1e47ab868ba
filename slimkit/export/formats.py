"""Export formats for other runtimes (ONNX, GGUF, compressed-tensors, LiteRT...): one registry, one verb.

Each format is one registered :class:`ExportFormat`: a name, the file suffix it writes, the optional
packages it needs (a missing one is an ``ImportError`` naming the pip command), a frozen options class
(unknown keys are errors, as everywhere in slimkit) and a ``write`` function. ``write`` produces the file
*and checks it with the format's real reader* (onnxruntime, the gguf package, ...), returning what it
measured; a file that does not match the PyTorch model within the format's tolerance must raise, never
warn. :func:`export_model` wraps every writer so the file appears atomically: a stopped or failed export
leaves no partial file and never touches an existing one unless asked to replace it.

``slimkit export SRC --format NAME --out FILE`` and a recipe's ``export:`` section both go through here.
The slimkit packed directory itself is not in this registry: it is what ``compress`` always writes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from slimkit.atomic import atomic_directory, atomic_file, directory_bytes
from slimkit.config import FrozenModel
from slimkit.models.bundle import ModelBundle


class NoOptions(FrozenModel):
    """Options of a format that takes none (any key is an error)."""


@dataclass(frozen=True)
class RuntimeCheck:
    """The exported file run by a real reader on sample inputs, compared with the PyTorch model."""

    runtime: str
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float
    latency_ms: float | None = None
    torch_latency_ms: float | None = None
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "tolerance": self.tolerance, "passed": self.passed, "latency_ms": self.latency_ms,
                "torch_latency_ms": self.torch_latency_ms, "detail": self.detail}


@dataclass
class ExportResult:
    """What an export wrote and what its checks measured; ``notes`` say what changed (e.g. a wider type)."""

    format: str
    path: Path
    bytes: int = 0
    checks: list[RuntimeCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "path": str(self.path), "bytes": self.bytes,
                "checks": [c.to_dict() for c in self.checks], "notes": self.notes}


#: ``write(bundle, path, options) -> ExportResult``: writes ``path`` (a temporary file, or an empty temporary
#: directory for directory formats; the caller publishes it) and checks it with the format's reader.
Writer = Callable[[ModelBundle, Path, Any], ExportResult]


@dataclass(frozen=True)
class ExportFormat:
    """One registered export format.

    Attributes:
        name: what users write after ``--format`` and in ``export.format``.
        suffix: file suffix of the written file, e.g. ``.onnx``.
        write: the writer (see :data:`Writer`).
        options: frozen pydantic class of the format's options.
        requires: ``(module, pip requirement)`` pairs the writer needs, checked before anything is loaded.
        description: one line for ``--help`` and errors.
        directory: the format is a directory of files (e.g. compressed-tensors), published atomically as one.
    """

    name: str
    suffix: str
    write: Writer
    options: type[FrozenModel] = NoOptions
    requires: tuple[tuple[str, str], ...] = ()
    description: str = ""
    directory: bool = False


_FORMATS: dict[str, ExportFormat] = {}


def register_export_format(fmt: ExportFormat) -> ExportFormat:
    """Register ``fmt`` under its name; a second format of the same name is a programming error."""
    if fmt.name in _FORMATS or fmt.name == "slimkit":
        raise ValueError(f"export format {fmt.name!r} is already registered")
    _FORMATS[fmt.name] = fmt
    return fmt


def export_formats() -> dict[str, ExportFormat]:
    """The registered formats by name (the slimkit directory format is always available besides these)."""
    return dict(_FORMATS)


def export_format(name: str) -> ExportFormat:
    """The format called ``name``; an unknown name is an error listing the known ones."""
    try:
        return _FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(_FORMATS)) or "none registered"
        raise ValueError(f"unknown export format {name!r}; known formats: {known}") from None


def check_requirements(fmt: ExportFormat) -> None:
    """Raise ``ImportError`` with the pip command when a package the format needs is not installed."""
    missing = [pip for module, pip in fmt.requires if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"export format {fmt.name!r} needs {', '.join(missing)}: pip install "
                          + " ".join(f"'{m}'" for m in missing))


def parse_options(fmt: ExportFormat, options: dict[str, Any] | FrozenModel | None) -> FrozenModel:
    """Validate ``options`` against the format's options class; the error names the format and key."""
    if isinstance(options, fmt.options):
        return options
    raw = options.model_dump() if isinstance(options, FrozenModel) else dict(options or {})
    try:
        return fmt.options(**raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}"
                             for e in err.errors())
        raise ValueError(f"export format {fmt.name!r} options: {problems}") from None


def check_export(name: str, out: Path, options: dict[str, Any] | FrozenModel | None, *, overwrite: bool
                 ) -> FrozenModel:
    """Everything about an export that can be wrong before a model is loaded: the format, its options, its
    packages and the output location. Returns the validated options."""
    fmt = export_format(name)
    opts = parse_options(fmt, options)
    check_requirements(fmt)
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    return opts


def write_checked(bundle: ModelBundle, name: str, path: Path, options: dict[str, Any] | FrozenModel | None = None
                  ) -> ExportResult:
    """Write ``bundle`` to ``path`` in format ``name`` (no atomicity: ``path`` is inside a temporary output).

    Raises:
        ValueError: unknown format, bad options, or a file whose check against PyTorch failed.
        ImportError: a package the format needs is missing (the message names the pip command).
    """
    fmt = export_format(name)
    check_requirements(fmt)
    opts = parse_options(fmt, options)
    if fmt.directory:
        path.mkdir(parents=True, exist_ok=True)
    result = fmt.write(bundle, path, opts)
    failed = [c for c in result.checks if not c.passed]
    if failed:
        raise ValueError(f"the {name} export does not match the PyTorch model: "
                         + "; ".join(f"{c.runtime} max |diff| {c.max_abs_diff:.3g} > {c.tolerance:.3g}"
                                     for c in failed))
    result.bytes = directory_bytes(path)
    return result


def export_model(bundle: ModelBundle, name: str, out: Path, options: dict[str, Any] | FrozenModel | None = None,
                 *, overwrite: bool = False) -> ExportResult:
    """Write ``bundle`` to ``out`` in format ``name`` atomically, after the format checked the file.

    Raises:
        ValueError: unknown format, bad options, or a file whose check against PyTorch failed.
        ImportError: a package the format needs is missing (the message names the pip command).
    """
    opts = check_export(name, out, options, overwrite=overwrite)  # before anything is written
    publish = atomic_directory if export_format(name).directory else atomic_file
    with publish(Path(out), overwrite=overwrite) as tmp:
        try:
            result = write_checked(bundle, name, tmp, opts)
        except ValueError as err:
            raise ValueError(f"{out}: {err}") from None
    result.path = Path(out)
    return result
