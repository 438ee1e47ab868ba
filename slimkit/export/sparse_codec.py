"""Bitmask storage for sparse tensors: one bit per entry plus the nonzero values, exact round trip.

A tensor with a fraction ``z`` of zeros takes ``numel/8 + (1 − z)·numel·itemsize`` bytes instead of
``numel·itemsize`` (float32 at 90% zeros: 13.6% of dense). Zeros of either sign count as zero (masking
by multiplication leaves ``-0.0`` behind): decoding restores every value exactly, with ``-0.0`` coming
back as ``+0.0`` (equal under ``==``); NaNs are kept as values. The slimkit format
uses this codec (registered here as ``bitmask``, whatever made the tensor sparse) for floating-point
tensors with more than :data:`MIN_ZERO_FRACTION` zeros.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from slimkit.export.registry import Codec, Entry, FormatError, entry_shape, register_codec, stored_tensor

#: Store a tensor as a bitmask when more than this fraction of its entries are zero.
MIN_ZERO_FRACTION = 0.3
#: Tensors smaller than this stay dense (the header entry would outweigh the saving).
MIN_NUMEL = 256

_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def nonzero_entries(t: Tensor) -> Tensor:
    """Flat bool (numel,), True where the entry is not ``±0`` (NaN counts as nonzero)."""
    return t.detach().reshape(-1) != 0


def pack_mask(mask: Tensor) -> Tensor:
    """Pack a flat bool mask (n,) into uint8 bytes (ceil(n / 8),), bit ``i % 8`` of byte ``i // 8``."""
    padded = torch.zeros(-(-mask.numel() // 8) * 8, dtype=torch.uint8)
    padded[: mask.numel()] = mask.to(torch.uint8)
    return (padded.reshape(-1, 8) * _BIT_WEIGHTS).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_mask`: flat bool mask (n,)."""
    bits = (packed[:, None] & _BIT_WEIGHTS) != 0  # (bytes, 8)
    return bits.reshape(-1)[:n]


def encode_bitmask(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(packed mask uint8 (ceil(numel/8),), nonzero values (nnz,) in t's dtype)``."""
    keep = nonzero_entries(t)
    return pack_mask(keep), t.detach().contiguous().reshape(-1)[keep].clone()


def decode_bitmask(packed: Tensor, values: Tensor, shape: list[int] | tuple[int, ...]) -> Tensor:
    """Dense tensor of ``shape`` (dtype of ``values``) from :func:`encode_bitmask`'s output."""
    n = int(torch.tensor(shape, dtype=torch.int64).prod()) if len(shape) else 1
    keep = unpack_mask(packed, n)
    dense = torch.zeros(n, dtype=values.dtype)
    dense[keep] = values
    return dense.reshape(shape)


def worth_bitmask(t: Tensor, min_zero_fraction: float = MIN_ZERO_FRACTION) -> bool:
    """Whether ``t`` is a floating tensor large and sparse enough for the bitmask codec."""
    if not t.is_floating_point() or t.numel() < MIN_NUMEL:
        return False
    zeros = 1.0 - float(nonzero_entries(t).sum()) / t.numel()
    return zeros > min_zero_fraction


class BitmaskCodec(Codec):
    """``NAME.bitmask`` and ``NAME.values``; the header entry records the shape."""

    name = "bitmask"

    def encode(self, name: str, tensor: Tensor, note: Any, out: dict[str, Tensor]) -> Entry:
        out[f"{name}.bitmask"], out[f"{name}.values"] = encode_bitmask(tensor)
        return {"codec": self.name, "shape": list(tensor.shape)}

    def decode(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> tuple[Tensor, None]:
        return decode_bitmask(tensors[f"{name}.bitmask"], tensors[f"{name}.values"], entry["shape"]), None

    def check_entry(self, entry: Entry, where: str) -> None:
        entry_shape(entry, where)

    def check_stored(self, name: str, entry: Entry, tensors: dict[str, Tensor], where: str) -> None:
        numel = math.prod(entry["shape"])
        mask = stored_tensor(tensors, f"{name}.bitmask", where)
        values = stored_tensor(tensors, f"{name}.values", where)
        if mask.dtype != torch.uint8 or mask.dim() != 1 or mask.numel() != -(-numel // 8):
            raise FormatError(f"{where}: bitmask holds {mask.numel()} {mask.dtype} bytes, shape {entry['shape']} "
                              f"needs {-(-numel // 8)} uint8")
        kept = int(unpack_mask(mask, numel).sum())
        if values.dim() != 1 or values.numel() != kept:
            raise FormatError(f"{where}: the bitmask keeps {kept} entries but {values.numel()} values are stored")

    def breakdown(self, name: str, entry: Entry, tensors: dict[str, Tensor]) -> dict[str, int]:
        mask, values = tensors[f"{name}.bitmask"], tensors[f"{name}.values"]
        return {"positions": mask.numel(), "values": values.numel() * values.element_size()}


BITMASK = register_codec(BitmaskCodec())
