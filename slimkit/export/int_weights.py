"""slimkit's own quantized integers and scales of a model, read through the format registry.

Every runtime exporter (ONNX ``MatMulNBits``, GGUF blocks, compressed-tensors) must not re-quantize: the
file has to hold exactly the integers that GPTQ / AWQ / RTN chose. They come from the two places slimkit
keeps them, both reached through :mod:`slimkit.export.registry` so that the format knows no method family:

* a fake-quantized weight carries a note that a registered codec stores; the ``int`` codec's
  :meth:`~slimkit.export.registry.Codec.encode` gives the stored integers (``NAME.qdata``), scales and zero
  points exactly as ``slimkit.save`` writes them;
* a packed layer is described by the ``packed`` header section (its module restorer's ``header_spec``) and
  holds the same ``qdata`` / ``scale`` / ``zero`` buffers.

``qdata`` is the slimkit format's bit stream (value i in bits [i·b, (i+1)·b), most significant bit first) of
unsigned codes ``q - qmin``; :class:`IntWeight` keeps the codes with the zero point in code units, so the
weight is ``(code - zero) · scale`` for symmetric and affine grids alike (symmetric: zero = 2^(b-1)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slimkit.export.registry import codec_for_note, collect_notes, module_restorers


@dataclass(frozen=True)
class IntWeight:
    """One quantized Linear weight: codes (out, in) uint8, scale and zero (out, n_groups) float32."""

    codes: Tensor  # (N, K) uint8 in [0, 2^bits)
    scale: Tensor  # (N, n_groups) float32
    zero: Tensor  # (N, n_groups) float32, integer-valued, in code units
    bits: int
    group_width: int  # columns sharing one scale (K for per-channel); the last group may be shorter

    def dequantized(self) -> Tensor:
        """The float32 weight (N, K) these integers stand for."""
        cols = self.codes.shape[1]
        scale = self.scale.repeat_interleave(self.group_width, dim=1)[:, :cols]
        zero = self.zero.repeat_interleave(self.group_width, dim=1)[:, :cols]
        return (self.codes.float() - zero) * scale


def unpack_codes(qdata: Tensor, bits: int, numel: int) -> Tensor:
    """The slimkit format's MSB-first bit stream of ``bits``-bit codes, as ``numel`` uint8 values."""
    arr = qdata.reshape(-1).cpu().numpy().astype(np.uint8)
    if bits == 8:
        return torch.from_numpy(arr[:numel].copy())
    stream = np.unpackbits(arr)[: numel * bits].reshape(numel, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint8)
    return torch.from_numpy((stream * weights).sum(axis=1).astype(np.uint8))


def _int_weight(where: str, qdata: Tensor, scale: Tensor, zero: Tensor | None, spec: dict, shape: tuple[int, int]
                ) -> IntWeight:
    rows, cols = shape
    bits, symmetric = int(spec["bits"]), bool(spec["symmetric"])
    width = min(int(spec["group_size"]), cols) if spec["granularity"] == "group" else cols
    groups = math.ceil(cols / width)
    scale = scale.float().expand(rows, -1) if scale.shape[0] == 1 else scale.float()
    if scale.shape[1] == 1 and groups > 1:  # one scale per tensor or channel, spread over the groups
        scale = scale.expand(rows, groups)
    if tuple(scale.shape) != (rows, groups):
        raise ValueError(f"{where}: scale has shape {tuple(scale.shape)}, expected ({rows}, {groups})")
    if symmetric:
        zero_codes = torch.full_like(scale, float(2 ** (bits - 1)))
    else:
        assert zero is not None
        zero_codes = zero.float().expand_as(scale)
    codes = unpack_codes(qdata, bits, rows * cols).reshape(rows, cols)
    return IntWeight(codes, scale.contiguous(), zero_codes.contiguous(), bits, width)


def _from_records(model: nn.Module) -> dict[str, IntWeight]:
    found: dict[str, IntWeight] = {}
    for name, note in collect_notes(model).items():
        tensor = model.get_parameter(name)
        stored: dict[str, Tensor] = {}
        entry = codec_for_note(note).encode(name, tensor.detach(), note, stored)
        if entry.get("codec") != "int" or entry.get("kind", "int") != "int" or tensor.dim() != 2:
            continue  # codebooks, binary/ternary grids and conv kernels stay float in ONNX
        module_name = name.rpartition(".")[0]
        found[module_name] = _int_weight(name, stored[f"{name}.qdata"], stored[f"{name}.scale"],
                                         stored.get(f"{name}.zero"), entry, (tensor.shape[0], tensor.shape[1]))
    return found


def packed_weights(model: nn.Module) -> dict[str, IntWeight]:
    """The integer-grid weights of ``model``'s packed layers, by module path."""
    found: dict[str, IntWeight] = {}
    for restorer in module_restorers():
        if restorer.kind != "packed" or restorer.header_spec is None:
            continue
        section = restorer.header_spec(model) or {"modules": {}}
        for path, spec in section["modules"].items():
            if spec.get("kind", "int") != "int":
                continue
            m: Any = model.get_submodule(path)  # a packed layer (quantize family): read by duck typing
            shape = (int(spec["out_features"]), int(spec["in_features"]))
            found[path] = _int_weight(path, m.qdata, m.scale, getattr(m, "zero", None), spec, shape)
    return found


def packed_paths(model: nn.Module) -> dict[str, dict]:
    """The packed layers of ``model`` by path, with their header spec (empty without packed layers)."""
    for restorer in module_restorers():
        if restorer.kind == "packed" and restorer.header_spec is not None:
            section = restorer.header_spec(model)
            return dict(section["modules"]) if section else {}
    return {}


def integer_weights(model: nn.Module) -> dict[str, IntWeight]:
    """Every integer-grid quantized Linear weight of ``model`` (fake-quantized or packed), by module path."""
    return {**_from_records(model), **packed_weights(model)}
