"""The notes a clustered weight carries until it is saved: its codebook, and whether to Huffman-code it.

``cluster.kmeans`` leaves each targeted weight holding only values of its codebook (plus exact zeros
where it was pruned) and attaches a :class:`CodebookRecord`; the ``codebook`` codec stores the indices
instead of the floats. ``cluster.huffman`` replaces the note with a :class:`HuffmanRecord` (the codebook,
or ``None`` for a weight that is only sparse) and the ``huffman`` codec entropy-codes it. Saving finds
each weight's indices again by matching its values to the codebook (:func:`codebook_indices`): a weight
changed after clustering is snapped to its nearest centroids with a :class:`CodebookDriftWarning` naming
it, never stored silently different. Weights are viewed as matrices: (out, everything else) for two or
more dimensions, one row for a vector (a bias).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_ATTR = "_slimkit_share"


@dataclass
class CodebookRecord:
    """Shared values of one weight: ``codebook`` (groups, K), groups 1 (per tensor) or rows (per channel)."""

    codebook: Tensor


@dataclass
class HuffmanRecord:
    """A weight to store Huffman-coded: its codebook (groups, K), or ``None`` if it is only sparse."""

    codebook: Tensor | None


ShareNote = CodebookRecord | HuffmanRecord


def matrix_shape(shape: tuple[int, ...] | list[int]) -> tuple[int, int]:
    """(rows, cols) a weight of ``shape`` is clustered as: (out, rest) for 2+ dims, (1, n) for a vector."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def set_share_note(module: nn.Module, param_name: str, note: ShareNote) -> None:
    """Attach ``note`` to ``module.<param_name>`` (replacing an earlier one)."""
    module.__dict__.setdefault(_ATTR, {})[param_name] = note


def get_share_note(module: nn.Module, param_name: str) -> ShareNote | None:
    return module.__dict__.get(_ATTR, {}).get(param_name)  # type: ignore[no-any-return]


def share_notes(model: nn.Module) -> dict[str, ShareNote]:
    """Every note in ``model``, keyed by the parameter's full name."""
    found: dict[str, ShareNote] = {}
    for module_name, module in model.named_modules():
        for param_name, note in module.__dict__.get(_ATTR, {}).items():
            found[f"{module_name}.{param_name}" if module_name else param_name] = note
    return found


class CodebookDriftWarning(UserWarning):
    """A clustered weight held values outside its codebook and was snapped to the nearest centroids."""


def nearest_centroid(matrix: Tensor, codebook: Tensor) -> Tensor:
    """Index (rows, cols) of the nearest entry of each value's codebook row (``codebook`` (groups, K))."""
    rows = matrix.shape[0]
    book = codebook.double().expand(rows, -1) if codebook.shape[0] == 1 else codebook.double()
    ordered, order = book.sort(dim=1)
    midpoints = ((ordered[:, 1:] + ordered[:, :-1]) / 2).contiguous()
    return order.gather(1, torch.searchsorted(midpoints, matrix.double().contiguous()))


def codebook_indices(name: str, weight: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """``(index (rows, cols) int64, kept (rows, cols) bool)`` of a clustered ``weight``.

    Zeros (either sign) are pruned entries, not codebook values. A kept value that is not exactly its
    nearest codebook entry (in the weight's dtype) is snapped to it, with a :class:`CodebookDriftWarning`
    naming ``name`` and the error introduced.
    """
    rows, cols = matrix_shape(tuple(weight.shape))
    w = weight.detach().reshape(rows, cols)
    kept = w != 0
    index = nearest_centroid(w, codebook)
    book = codebook.to(w.dtype)
    snapped = book.expand(rows, -1).gather(1, index) if codebook.shape[0] == 1 else book.gather(1, index)
    moved = kept & (snapped != w)
    if bool(moved.any()):
        delta = (snapped - w).double()[moved]
        rel = float(delta.norm() / w.double().norm().clamp_min(1e-30))
        warnings.warn(f"{name}: {int(moved.sum())} of {w.numel()} values are not in the weight's codebook "
                      f"(changed after clustering?); stored as their nearest centroids: relative RMS error "
                      f"{rel:.3g}, max abs change {float(delta.abs().max()):.3g}", CodebookDriftWarning, stacklevel=2)
    return index, kept


def clustered_values(index: Tensor, kept: Tensor, codebook: Tensor, dtype: torch.dtype) -> Tensor:
    """The weight (rows, cols) in ``dtype``: its codebook entries where kept, exact zeros elsewhere."""
    book = codebook.to(dtype)
    values = book.expand(index.shape[0], -1).gather(1, index) if codebook.shape[0] == 1 else book.gather(1, index)
    return torch.where(kept, values, torch.zeros((), dtype=dtype))
