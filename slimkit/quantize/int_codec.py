"""The ``int`` codec of the slimkit format: a quantized weight stored as its bit-packed integers plus scales.

A weight that carries a :class:`~slimkit.quantize.record.QuantRecord` is written as ``NAME.qdata`` (its
integers, ``bits`` bits each, :mod:`slimkit.quantize.packing`), ``NAME.scale`` (float32, (rows, n_groups))
and, for affine grids, ``NAME.zero`` (uint8); its header entry records the scheme, shape and float dtype.
Loading dequantizes it to that dtype and attaches the record again, so a reloaded model re-saves packed.
The quantization family registers this codec with the format's registry
(:mod:`slimkit.export.registry`) when this module is imported.
"""

from __future__ import annotations

import math
from typing import Any, get_args

import torch
from torch import Tensor, nn

from slimkit.export.registry import FLOAT_DTYPES, Codec, Entry, FormatError, entry_shape, register_codec, stored_tensor
from slimkit.quantize.packing import pack_bits, packed_nbytes, unpack_bits
from slimkit.quantize.primitives import Granularity, GridKind, QuantScheme, dequantize
from slimkit.quantize.record import QuantRecord, quant_records, record_integers, set_quant_record

_SCHEME_KEYS = ("bits", "symmetric", "granularity", "group_size")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def scheme_of(entry: Entry, where: str) -> QuantScheme:
    """The quantization scheme an ``int`` entry describes, with each field's type checked."""
    missing = [k for k in _SCHEME_KEYS if k not in entry]
    if missing:
        raise FormatError(f"{where}: a quantized entry needs {', '.join(repr(k) for k in missing)}")
    fields = {k: entry[k] for k in _SCHEME_KEYS}
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


class IntCodec(Codec):
    """Packed integers plus scales (and zero points) for every weight carrying a QuantRecord."""

    name = "int"
    note_type = QuantRecord

    def notes(self, model: nn.Module) -> dict[str, Any]:
        return dict(quant_records(model))

    def attach(self, model: nn.Module, name: str, note: Any) -> None:
        module_name, _, param_name = name.rpartition(".")
        set_quant_record(model.get_submodule(module_name), param_name, note)

    def encode(self, name: str, tensor: Tensor, note: Any, out: dict[str, Tensor]) -> Entry:
        rec: QuantRecord = note
        s = rec.scheme
        q = record_integers(name, tensor, rec)  # (rows, cols); warns if the weight left its grid after quantization
        out[f"{name}.qdata"] = pack_bits(s.codes(q), s.bits)
        out[f"{name}.scale"] = rec.scale.float().contiguous()
        if not s.symmetric:
            out[f"{name}.zero"] = rec.zero.to(torch.uint8).contiguous()
        return {"codec": "int", "bits": s.bits, "symmetric": s.symmetric, "granularity": s.granularity,
                "group_size": s.group_size, "kind": s.kind, "shape": list(tensor.shape),
                "dtype": str(tensor.dtype).removeprefix("torch.")}

    def decode(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> tuple[Tensor, QuantRecord]:
        scheme = QuantScheme(entry["bits"], entry["symmetric"], entry["granularity"], entry["group_size"],
                             entry.get("kind", "int"))
        shape = entry["shape"]
        rows, cols = shape[0], math.prod(shape[1:])
        scale = tensors[f"{name}.scale"]
        zero = tensors[f"{name}.zero"].float() if not scheme.symmetric else torch.zeros_like(scale)
        q = scheme.levels(unpack_bits(tensors[f"{name}.qdata"], scheme.bits, rows * cols).reshape(rows, cols))
        w = dequantize(q, scale, zero, scheme).reshape(shape).to(getattr(torch, entry["dtype"]))
        return w, QuantRecord(scheme, scale, zero)

    def check_entry(self, entry: Entry, where: str) -> None:
        if not entry_shape(entry, where):
            raise FormatError(f"{where}: a quantized weight needs at least one dimension")
        if entry.get("dtype") not in FLOAT_DTYPES:
            raise FormatError(f"{where}: 'dtype' must be one of {', '.join(FLOAT_DTYPES)}, got {entry.get('dtype')!r}")
        scheme_of(entry, where)

    def check_stored(self, name: str, entry: Entry, tensors: dict[str, Tensor], where: str) -> None:
        scheme = scheme_of(entry, where)
        rows, cols = entry["shape"][0], math.prod(entry["shape"][1:])
        qdata = stored_tensor(tensors, f"{name}.qdata", where)
        needed = packed_nbytes(rows * cols, scheme.bits)
        if qdata.dtype != torch.uint8 or qdata.numel() != needed:
            raise FormatError(f"{where}: packed data holds {qdata.numel()} {qdata.dtype} values, but shape "
                              f"{entry['shape']} at {scheme.bits} bits needs {needed} uint8")
        groups = math.ceil(cols / scheme.group_width(cols)) if cols else 1
        scale = stored_tensor(tensors, f"{name}.scale", where)
        allowed = {(rows, 1), (rows, groups), (1, 1)}
        if not scale.is_floating_point() or tuple(scale.shape) not in allowed:
            raise FormatError(f"{where}: scale has shape {tuple(scale.shape)} ({scale.dtype}); shape "
                              f"{entry['shape']} with {scheme.granularity} granularity needs float {sorted(allowed)}")
        if not scheme.symmetric and tuple(stored_tensor(tensors, f"{name}.zero", where).shape) != tuple(scale.shape):
            raise FormatError(f"{where}: zero points and scales differ in shape")


register_codec(IntCodec())
