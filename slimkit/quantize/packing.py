"""Bit packing of small unsigned integers into bytes, so b-bit weights take b bits on disk.

Values are laid out as one little bit-stream: value i occupies bits [i·b, (i+1)·b), most significant
bit first. 8-bit values are stored as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` values of ``bits`` bits occupy once packed."""
    return (numel * bits + 7) // 8


def pack_bits(values: Tensor, bits: int) -> Tensor:
    """Pack unsigned integers ``0 <= v < 2**bits`` (any shape) into a flat uint8 tensor."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    v = values.reshape(-1).to(torch.int64)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 2**bits):
        raise ValueError(f"values out of range for {bits}-bit packing")
    arr = v.numpy().astype(np.uint8)
    if bits == 8:
        return torch.from_numpy(arr.copy())
    bitplanes = np.unpackbits(arr[:, None], axis=1)[:, 8 - bits:]  # (n, bits), MSB first
    return torch.from_numpy(np.packbits(bitplanes.reshape(-1)))


def unpack_bits(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_bits`: ``numel`` values as an int16 tensor."""
    arr = packed.reshape(-1).numpy().astype(np.uint8)
    if arr.size != packed_nbytes(numel, bits):
        raise ValueError(f"packed data has {arr.size} bytes, expected {packed_nbytes(numel, bits)} "
                         f"for {numel} values of {bits} bits")
    if bits == 8:
        return torch.from_numpy(arr.astype(np.int16))
    stream = np.unpackbits(arr)[: numel * bits].reshape(numel, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int16)
    return torch.from_numpy((stream.astype(np.int16) * weights).sum(axis=1).astype(np.int16))
