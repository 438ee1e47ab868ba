"""The plug-in points of the slimkit format: tensor codecs and module restorers, registered by each family.

The format itself (:mod:`slimkit.export.slimkit_format`) knows no method family. A family that stores
tensors its own way registers a :class:`Codec` (quantization registers ``int``: packed integers plus
scales, for tensors that carry a ``QuantRecord``); a family whose modules cannot be rebuilt from a plain
architecture registers a module restorer (quantization registers its static-quant Linears, implied by
their saved ``input_scale`` buffers, and its packed layers, described by a ``packed`` header section
that the restorer also writes). The format itself registers ``dense`` and ``bitmask``; ``alias`` (a
tensor sharing another's storage) is structural and belongs to the format. This module imports nothing
from slimkit, so any family may import it without depending on the rest of ``export``; the built-in
families are imported once, by :mod:`slimkit.builtin_methods`, whenever ``slimkit`` is imported.
A name the registry does not know, read from a file, is a :class:`FormatError` listing the known ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

#: The header codec of a tensor stored as another entry (tied weights): handled by the format itself.
ALIAS = "alias"
#: Float dtypes a codec may store scales, codebooks or values in (checked when a header is read).
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")

Entry = dict[str, Any]


class FormatError(ValueError):
    """A slimkit directory whose header or weights cannot be used; the message names the file and entry."""


class Codec(ABC):
    """One way of storing a tensor in ``slimkit.safetensors``, chosen by its header entry's ``codec``.

    A codec whose tensors carry side information in the model (a note: e.g. a ``QuantRecord``) sets
    :attr:`note_type`, finds the notes with :meth:`notes` when saving and gives them back with
    :meth:`attach` after loading.
    """

    name: ClassVar[str]
    #: Tensors whose note is of this type are stored with this codec; ``None``: the format picks it.
    note_type: ClassVar[type | None] = None

    def notes(self, model: nn.Module) -> dict[str, Any]:
        """The notes of ``model``'s tensors stored with this codec, by full tensor name."""
        return {}

    def attach(self, model: nn.Module, name: str, note: Any) -> None:  # noqa: B027 - codecs without notes
        """Give the loaded ``model`` back the note of its tensor ``name``; the default has none."""

    @abstractmethod
    def encode(self, name: str, tensor: Tensor, note: Any, out: dict[str, Tensor]) -> Entry:
        """Put the stored tensors of ``name`` into ``out`` and return its header entry (with ``codec``)."""

    @abstractmethod
    def decode(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> tuple[Tensor, Any]:
        """The tensor ``name`` and its note (``None`` for codecs without notes)."""

    def check_entry(self, entry: Entry, where: str) -> None:  # noqa: B027 - codecs without fields
        """Check the entry's own fields before anything is read; raise :class:`FormatError` naming ``where``."""

    def check_stored(self, name: str, entry: Entry, tensors: dict[str, Tensor], where: str) -> None:  # noqa: B027
        """Check that the stored tensors of ``name`` agree with ``entry``, before any is decoded."""

    def breakdown(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> dict[str, int]:
        """Bytes of the stored tensors of ``name`` by part (``values``, ``positions``, ``codebook``, ``tables``),
        for the report; the default counts every stored tensor of ``name`` (``NAME``, ``NAME.*``) as values."""
        return {"values": sum(t.numel() * t.element_size() for key, t in tensors.items()
                              if key == name or key.startswith(f"{name}."))}


_CODECS: dict[str, Codec] = {}


def _origin(obj: Any) -> str:
    # Where a class or function is defined: registering it again (a module reloaded) is no clash.
    return f"{obj.__module__}.{obj.__qualname__}"


def register_codec(codec: Codec) -> Codec:
    """Make ``codec`` the one for header entries named ``codec.name``; returns it."""
    taken = _CODECS.get(codec.name)
    if codec.name == ALIAS or (taken is not None and _origin(type(taken)) != _origin(type(codec))):
        raise ValueError(f"codec {codec.name!r} is registered twice ({type(codec).__name__})")
    _CODECS[codec.name] = codec
    return codec


def codec_names() -> list[str]:
    """Every codec a header may name, ``alias`` included, sorted."""
    return sorted([*_CODECS, ALIAS])


def codec_named(name: Any, where: str) -> Codec:
    """The registered codec ``name`` as read from a header (``alias`` is not one: the format handles it)."""
    if not isinstance(name, str) or name not in _CODECS:
        raise FormatError(f"{where}: unknown codec {name!r} (known: {', '.join(codec_names())})")
    return _CODECS[name]


def codec_for_note(note: Any) -> Codec:
    """The codec that stores tensors carrying ``note``."""
    for codec in _CODECS.values():
        if codec.note_type is not None and isinstance(note, codec.note_type):
            return codec
    raise TypeError(f"no codec stores tensors noted with a {type(note).__name__}")


def collect_notes(model: nn.Module) -> dict[str, Any]:
    """Every note of ``model`` that a registered codec stores, by full tensor name."""
    return {name: note for codec in _CODECS.values() for name, note in codec.notes(model).items()}


def entry_shape(entry: Entry, where: str) -> list[int]:
    """The entry's ``shape``, checked to be a list of non-negative integers."""
    value = entry.get("shape")
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise FormatError(f"{where}: 'shape' must be a list of non-negative integers, got {value!r}")
    return value


def stored_tensor(tensors: dict[str, Tensor], key: str, where: str) -> Tensor:
    """``tensors[key]``, or a :class:`FormatError` saying the header names a tensor the file lacks."""
    if key not in tensors:
        raise FormatError(f"{where}: '{key}' named in the header is missing from the weights file")
    return tensors[key]


@dataclass(frozen=True)
class ModuleRestorer:
    """Turns a freshly built float skeleton's modules into a family's own modules before the state is loaded.

    ``restore(model, state, spec)`` runs on every load when ``header_spec`` is ``None`` (the saved state
    implies the modules, ``spec`` is ``None``), else only when the header holds a section named ``kind``,
    which ``header_spec(model)`` wrote when saving (``None``: no section) and ``check_spec(spec, where)``
    checks before anything is built.
    """

    kind: str
    restore: Callable[[nn.Module, dict[str, Tensor], Any], None]
    header_spec: Callable[[nn.Module], Any] | None = None
    check_spec: Callable[[Any, str], None] | None = None


_RESTORERS: dict[str, ModuleRestorer] = {}


def register_module_restorer(kind: str, restore: Callable[[nn.Module, dict[str, Tensor], Any], None], *,
                             header_spec: Callable[[nn.Module], Any] | None = None,
                             check_spec: Callable[[Any, str], None] | None = None) -> ModuleRestorer:
    """Register how modules of ``kind`` are restored on load (and, with ``header_spec``, described on save).

    Restorers without a header section run first, then those with one (which may replace whole modules
    and convert dtypes), each group in registration order; restorers must touch disjoint modules.
    """
    if (header_spec is None) != (check_spec is None):
        raise ValueError(f"module restorer {kind!r}: a header section needs both header_spec and check_spec")
    restorer = ModuleRestorer(kind, restore, header_spec, check_spec)
    taken = _RESTORERS.get(kind)
    if taken is not None and _origin(taken.restore) != _origin(restore):
        raise ValueError(f"module restorer {kind!r} is registered twice")
    _RESTORERS[kind] = restorer
    return restorer


def module_restorers() -> list[ModuleRestorer]:
    """The registered restorers in the order they run on load (see :func:`register_module_restorer`)."""
    restorers = list(_RESTORERS.values())
    return [r for r in restorers if r.header_spec is None] + [r for r in restorers if r.header_spec is not None]


def section_restorer(key: str, where: str) -> ModuleRestorer:
    """The restorer that reads the header section ``key``."""
    restorer = _RESTORERS.get(key)
    if restorer is None or restorer.header_spec is None:
        known = sorted(k for k, r in _RESTORERS.items() if r.header_spec is not None)
        raise FormatError(f"{where}: unknown header section {key!r}: no registered module kind restores it "
                          f"(known sections: {', '.join(known) or 'none'})")
    return restorer
