"""Pure pruning math for the calibrated one-shot pruners: SparseGPT and Wanda.

SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot") sweeps the columns of a weight like GPTQ; at the start of every block (unstructured) or
every group of ``m`` columns (N:M) it picks the weights with the lowest OBS saliency
``w² / [H⁻¹]_jj²`` (through the Cholesky factor), zeroes them and spreads the error over the remaining
columns of each row. Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for LLMs")
only scores ``|W_ij| · ‖X_j‖₂`` and drops the lowest per output row, without any weight update.

Sparsity patterns: ``sparsity`` (a fraction, exact) or N:M (``n`` kept out of every ``m`` consecutive
input columns of a row, the convention of :mod:`slimkit.prune.nm`, whose ``nm_mask`` both use).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from slimkit.calib.hessian import inverse_hessian_factor, one_thread, prepare_hessian
from slimkit.prune.masks import lowest_k_mask, prune_count
from slimkit.prune.nm import check_nm, nm_mask


@dataclass(frozen=True)
class SparsityPattern:
    """Either an exact fraction ``sparsity`` or an N:M pattern (``n`` kept per ``m`` inputs)."""

    sparsity: float | None = None
    n: int | None = None
    m: int | None = None

    def __post_init__(self) -> None:
        if (self.sparsity is None) == (self.m is None):
            raise ValueError("give exactly one of sparsity or n:m")
        if self.m is not None and (self.n is None or not 0 <= self.n < self.m):
            raise ValueError(f"n:m needs 0 <= n < m, got {self.n}:{self.m}")

    def check_columns(self, cols: int) -> None:
        if self.m is not None:
            assert self.n is not None
            check_nm(self.n, self.m, cols)


def lowest_per_row_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask (rows, cols), False at the ``k`` lowest ``scores`` of every row (ties by position)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        order = torch.argsort(scores, dim=1, stable=True)  # (rows, cols)
        keep.scatter_(1, order[:, :k], False)
    return keep


def wanda_mask(w: Tensor, column_norms: Tensor, pattern: SparsityPattern) -> Tensor:
    """Wanda's keep-mask for ``w`` (rows, cols) given input norms ``‖X_j‖₂`` (cols,).

    Unstructured sparsity is exact in every output row: ``round(sparsity · cols)`` zeros per row.
    """
    pattern.check_columns(w.shape[1])
    scores = w.detach().double().abs() * column_norms.double()[None, :]  # (rows, cols)
    if pattern.m is not None:
        assert pattern.n is not None
        return nm_mask(scores, pattern.n, pattern.m)
    assert pattern.sparsity is not None
    return lowest_per_row_mask(scores, prune_count(w.shape[1], pattern.sparsity))


def _block_prune_counts(rows: int, cols: int, block_size: int, sparsity: float) -> list[int]:
    # Cumulative rounding: each block drops its share, and the total is exactly round(sparsity·numel).
    counts, done = [], 0
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        target = prune_count(rows * end, sparsity)
        counts.append(target - done)
        done = target
    return counts


@one_thread()
def sparsegpt_prune(w: Tensor, h: Tensor, pattern: SparsityPattern, *, damp: float = 0.01,
                    block_size: int = 128) -> Tensor:
    """SparseGPT-prune one weight matrix and update the kept weights to compensate.

    Args:
        w: weights (rows, cols); a row is one output channel.
        h: layer Hessian ``2 XᵀX / n`` (cols, cols).
        pattern: exact fraction (chosen adaptively per block of columns) or N:M along the input dim.
        damp: dampening as a fraction of the mean Hessian diagonal.
        block_size: columns per mask-selection and lazy-update block (a multiple of ``m`` for N:M).

    Returns:
        The pruned, updated weights (rows, cols), float32, with exactly the requested zeros.
    """
    rows, cols = w.shape
    pattern.check_columns(cols)
    if pattern.m is not None and block_size % pattern.m:
        raise ValueError(f"block_size {block_size} must be a multiple of m={pattern.m}")
    w, h = prepare_hessian(w, h)
    u = inverse_hessian_factor(h, damp).float()  # (cols, cols) upper
    counts = _block_prune_counts(rows, cols, block_size, pattern.sparsity or 0.0)
    keep_all = torch.ones(rows, cols, dtype=torch.bool)
    for b, start in enumerate(range(0, cols, block_size)):
        end = min(start + block_size, cols)
        block = w[:, start:end].clone()  # (rows, B)
        diag = torch.diagonal(u)[start:end]  # (B,)
        err_block = torch.zeros_like(block)
        keep = torch.ones_like(block, dtype=torch.bool)
        if pattern.sparsity is not None:
            saliency = block.pow(2) / diag.pow(2)[None, :]  # (rows, B)
            keep = lowest_k_mask(saliency, counts[b])
        for i in range(end - start):
            if pattern.m is not None and i % pattern.m == 0:
                assert pattern.n is not None
                cols_i = slice(i, i + pattern.m)
                saliency = block[:, cols_i].pow(2) / diag[cols_i].pow(2)[None, :]  # (rows, m)
                keep[:, cols_i] = nm_mask(saliency, pattern.n, pattern.m)
            col = block[:, i]
            col_hat = col * keep[:, i]
            err = (col - col_hat) / u[start + i, start + i]  # (rows,)
            block[:, i:] -= err[:, None] * u[start + i, start + i:end][None, :]
            block[:, i] = col_hat
            err_block[:, i] = err
        w[:, start:end] = block
        w[:, end:] -= err_block @ u[start:end, end:]
        keep_all[:, start:end] = keep
    return w * keep_all

