"""GGUF tensor data from slimkit's own integers: which block type a quantized weight fits, and its bytes.

A weight that slimkit quantized reaches the format as an :class:`~slimkit.export.int_weights.IntWeight`
(codes, scales and zero points exactly as the slimkit format stores them, read through the codec registry, so
the format knows no method family). When its grid is one of llama.cpp's legacy block grids (``gguf: q4_0`` and
friends in the quantize family: 32 weights of a row per group, fp16 scales, the zero point at the grid's middle
for Q4_0/Q5_0/Q8_0 and an fp16 ``-zero · scale`` for Q4_1/Q5_1), :func:`pack_blocks` lays the integers out
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

from slimkit.export.int_weights import IntWeight

Q = GGMLQuantizationType
#: GGUF type of each type name users write (``--option unquantized=q4_0``).
GGUF_TYPES: dict[str, GGMLQuantizationType] = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q5_1": Q.Q5_1,
                                               "q5_0": Q.Q5_0, "q4_1": Q.Q4_1, "q4_0": Q.Q4_0}
BLOCK_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)


GGUF_BLOCK = 32
_SYMMETRIC = {4: Q.Q4_0, 5: Q.Q5_0, 8: Q.Q8_0}  # zero point at 2^(b-1) codes: (code - 2^(b-1)) · d
_AFFINE = {4: Q.Q4_1, 5: Q.Q5_1}  # code · d + m


def block_type(weight: IntWeight) -> tuple[GGMLQuantizationType | None, str]:
    """The block type that holds ``weight`` exactly, or ``None`` and the reason it cannot."""
    rows, cols = weight.codes.shape
    symmetric = bool((weight.zero == 2 ** (weight.bits - 1)).all())
    qtype = (_SYMMETRIC if symmetric else _AFFINE).get(weight.bits)
    if qtype is None:
        return None, f"{weight.bits}-bit {'symmetric' if symmetric else 'affine'} has no GGUF block type"
    hint = f" (quantize with gguf: {qtype.name.lower()} to keep the block type)"
    if cols % GGUF_BLOCK or weight.group_width != GGUF_BLOCK:
        return None, f"GGUF blocks are {GGUF_BLOCK} weights of a row; this grid has {weight.group_width} " \
                     f"over {cols} columns{hint}"
    if not _is_fp16(weight.scale):
        return None, "its scales are not fp16 numbers" + hint
    if not symmetric and not _is_fp16(-weight.zero * weight.scale):
        return None, "its minimums (-zero * scale) are not fp16 numbers" + hint
    return qtype, ""


def _is_fp16(x: Tensor) -> bool:
    return bool(torch.equal(x.half().float(), x)) and bool(torch.isfinite(x.half()).all())


def pack_blocks(weight: IntWeight, qtype: GGMLQuantizationType, order: Tensor | None = None) -> np.ndarray:
    """ggml blocks of ``weight`` (rows, cols) as ``qtype`` (from :func:`block_type`): uint8 (rows, bytes).

    ``order`` permutes the rows first (llama.cpp's q/k layout).
    """
    codes, scale, zero = weight.codes, weight.scale, weight.zero
    if order is not None:
        codes, scale, zero = codes[order], scale[order], zero[order]
    rows, cols = codes.shape
    n = rows * cols // GGUF_BLOCK
    c = codes.to(torch.int32).reshape(n, GGUF_BLOCK).numpy()  # (blocks, 32) codes in [0, 2^b)
    d = scale.float().reshape(n, 1).numpy().astype(np.float16).view(np.uint8)  # (blocks, 2)
    if qtype == Q.Q8_0:
        parts = [d, (c - 128).astype(np.int8).view(np.uint8)]
    else:
        parts = [d]
        if qtype in (Q.Q4_1, Q.Q5_1):
            parts.append((-zero.float() * scale.float()).reshape(n, 1).numpy().astype(np.float16).view(np.uint8))
        c = c.astype(np.uint8)
        if qtype in (Q.Q5_0, Q.Q5_1):  # qh: bit j of a little-endian uint32 is the fifth bit of weight j
            parts.append(np.packbits(c >> 4, axis=-1, bitorder="little"))
        half = GGUF_BLOCK // 2
        pair = (c[:, :half] & 0x0F) | ((c[:, half:] & 0x0F) << 4)  # weights j and j + 16 share a byte
        parts.append(pair.astype(np.uint8))
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
