"""GGUF tensor data from slimkit's own integers: which block type a quantized weight fits, and its bytes.

A weight that slimkit quantized carries a :class:`~slimkit.quantize.record.QuantRecord` (integers come from
:func:`~slimkit.quantize.record.record_integers`, scales and zero points from the record). When its grid is
one of llama.cpp's legacy block grids (:mod:`slimkit.quantize.gguf_grid`: 32 weights of a row per group,
fp16 scales, and for the affine types an fp16 ``-zero · scale``), :func:`pack_blocks` lays the integers out
byte for byte as ggml-quants.c's ``block_q4_0`` / ``block_q4_1`` / ``block_q5_0`` / ``block_q5_1`` /
``block_q8_0`` structs, so the gguf package's dequantizer gives back slimkit's values exactly (tested per
type on odd shapes). Anything else is converted from floats by the gguf package's own quantizer
(:func:`float_data`), which is what llama.cpp's converter does too.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from torch import Tensor

from slimkit.quantize.gguf_grid import GGUF_BLOCK, gguf_grid_name
from slimkit.quantize.record import QuantRecord

Q = GGMLQuantizationType
#: GGUF type of each type name users write (``--option unquantized=q4_0``).
GGUF_TYPES: dict[str, GGMLQuantizationType] = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q5_1": Q.Q5_1,
                                               "q5_0": Q.Q5_0, "q4_1": Q.Q4_1, "q4_0": Q.Q4_0}
BLOCK_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)


def record_block_type(record: QuantRecord, shape: tuple[int, int]) -> tuple[GGMLQuantizationType | None, str]:
    """The block type that holds ``record``'s weight (rows, cols) exactly, or ``None`` and the reason it cannot."""
    s = record.scheme
    name = gguf_grid_name(s.bits, s.symmetric) if s.kind == "int" else None
    if name is None:
        kind = s.kind if s.kind != "int" else f"{s.bits}-bit {'symmetric' if s.symmetric else 'affine'}"
        return None, f"{kind} has no GGUF block type"
    rows, cols = shape
    if cols % GGUF_BLOCK or s.group_width(cols) != GGUF_BLOCK or s.granularity == "tensor":
        return None, f"GGUF blocks are {GGUF_BLOCK} weights of a row; this grid has {s.granularity} granularity " \
                     f"(group {s.group_size}) over {cols} columns"
    scale = record.scale.float()
    if tuple(scale.shape) != (rows, cols // GGUF_BLOCK) or not _is_fp16(scale):
        return None, "its scales are not fp16 numbers (quantize with gguf: " + name + " to keep the block type)"
    if not s.symmetric and not _is_fp16(-record.zero.float() * scale):
        return None, "its minimums (-zero * scale) are not fp16 numbers (quantize with gguf: " + name + ")"
    return Q[name.upper()], ""


def _is_fp16(x: Tensor) -> bool:
    return bool(torch.equal(x.half().float(), x)) and bool(torch.isfinite(x.half()).all())


def pack_blocks(q: Tensor, scale: Tensor, zero: Tensor, qtype: GGMLQuantizationType) -> np.ndarray:
    """ggml blocks of integers ``q`` (rows, cols) on the grid ``scale``/``zero`` (rows, cols/32): uint8 (rows, bytes).

    ``q`` are slimkit's levels: ``[-2^(b-1), 2^(b-1))`` for the symmetric types, ``[0, 2^b)`` for the affine.
    """
    rows, cols = q.shape
    n = rows * cols // GGUF_BLOCK
    codes = q.to(torch.int32).reshape(n, GGUF_BLOCK).numpy()  # (blocks, 32)
    d = scale.float().reshape(n, 1).numpy().astype(np.float16).view(np.uint8)  # (blocks, 2)
    if qtype == Q.Q8_0:
        parts = [d, codes.astype(np.int8).view(np.uint8)]
    else:
        bits = 4 if qtype in (Q.Q4_0, Q.Q4_1) else 5
        if qtype in (Q.Q4_0, Q.Q5_0):
            codes = codes + 2 ** (bits - 1)
            parts = [d]
        else:
            m = (-zero.float() * scale.float()).reshape(n, 1).numpy().astype(np.float16).view(np.uint8)
            parts = [d, m]
        codes = codes.astype(np.uint8)
        if bits == 5:  # qh: bit j of a little-endian uint32 is the fifth bit of weight j
            parts.append(np.packbits(codes >> 4, axis=-1, bitorder="little"))
        half = GGUF_BLOCK // 2
        parts.append((codes[:, :half] & 0x0F) | ((codes[:, half:] & 0x0F) << 4))  # weights j and j + 16 share a byte
    blocks = np.concatenate(parts, axis=1)  # (blocks, type_size)
    assert blocks.shape[1] == GGML_QUANT_SIZES[qtype][1]
    return blocks.reshape(rows, -1)


def float_data(w: Tensor, qtype: GGMLQuantizationType) -> np.ndarray:
    """``w`` (rows, cols) or (n,) converted by the gguf package's own quantizer (llama.cpp's reference rules)."""
    return gguf_quantize(w.detach().float().contiguous().numpy(), qtype)


def decode(data: np.ndarray, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> Tensor:
    """Float32 values of GGUF tensor data (as the gguf reader returns it) in torch ``shape``."""
    return torch.from_numpy(np.array(gguf_dequantize(data, qtype), dtype=np.float32)).reshape(shape)  # a writable copy


def fits_blocks(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> bool:
    """Whether a tensor of ``shape`` can be stored as ``qtype`` (rows of whole blocks)."""
    return GGML_QUANT_SIZES[qtype][0] == 1 or (len(shape) == 2 and shape[-1] % GGML_QUANT_SIZES[qtype][0] == 0)
