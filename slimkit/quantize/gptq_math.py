"""Pure GPTQ math (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers"): quantize a weight column by column, spreading each column's rounding error
over the not-yet-quantized columns through the Cholesky factor of the inverse layer Hessian.

The layer Hessian ``H = 2 XᵀX / n`` of the reconstruction loss ``‖XWᵀ − XŴᵀ‖²`` is given. Columns are
processed in blocks (lazy batch updates): inside a block the update is applied column by column,
the rest of the matrix is updated once per block. Group parameters (scale, zero point) are computed
when the first column of a group is reached, from the group's *current* (error-compensated) weights;
with activation ordering the columns are visited by decreasing ``H_jj`` but groups stay contiguous in
the original column order, so the result is an ordinary grouped :class:`QuantScheme` tensor that the
exporter packs like RTN's. The inverse-Hessian helpers it shares with SparseGPT live in
:mod:`slimkit.calib.hessian`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from slimkit.calib.hessian import inverse_hessian_factor, one_thread, prepare_hessian
from slimkit.quantize.primitives import QuantScheme, compute_qparams


@dataclass
class GPTQResult:
    """Dequantized weights (rows, cols), their grid parameters (rows, n_groups) and the proxy loss."""

    weight: Tensor
    scale: Tensor
    zero: Tensor
    loss: float


def _grid(w: Tensor, scheme: QuantScheme) -> tuple[Tensor, Tensor]:
    """Min-max (scale, zero) of the columns ``w`` (rows, k) as one group: each (rows,)."""
    scale, zero = compute_qparams(w, QuantScheme(scheme.bits, scheme.symmetric, "channel", gguf=scheme.gguf))
    return scale[:, 0], zero[:, 0]


class _Columns:
    """Reads the current (error-compensated) value of any column during the lazy-batch sweep."""

    def __init__(self, w: Tensor, u: Tensor) -> None:
        self.w, self.u = w, u  # (rows, cols) permuted weights, (cols, cols) inverse-Hessian factor
        self.block = torch.empty(0)
        self.err = torch.empty(0)
        self.start = 0

    def current(self, positions: Tensor, done: int) -> Tensor:
        """Columns at permuted ``positions`` (none quantized yet) after ``done`` columns of the block."""
        end = self.start + self.block.shape[1]
        inside = positions < end
        out = torch.empty(self.w.shape[0], positions.numel())  # (rows, k)
        out[:, inside] = self.block[:, positions[inside] - self.start]
        later = positions[~inside]
        pending = self.err[:, :done] @ self.u[self.start:self.start + done][:, later]  # (rows, k_later)
        out[:, ~inside] = self.w[:, later] - pending
        return out


@one_thread()
def gptq_quantize(w: Tensor, h: Tensor, scheme: QuantScheme, *, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False) -> GPTQResult:
    """GPTQ-quantize one weight matrix.

    Args:
        w: weights (rows, cols); a row is one output channel.
        h: layer Hessian ``2 XᵀX / n`` (cols, cols) of the inputs the weight sees.
        scheme: bits, symmetry and granularity; a group size that does not divide ``cols`` is ragged.
        damp: dampening as a fraction of the mean Hessian diagonal.
        block_size: columns per lazy-batch block.
        act_order: visit columns by decreasing ``H_jj`` (groups stay contiguous in the original order).

    Returns:
        :class:`GPTQResult` with ``weight == dequantize(quantize(weight, scale, zero))`` exactly.
    """
    rows, cols = w.shape
    w, h = prepare_hessian(w, h)
    perm = torch.argsort(torch.diagonal(h), descending=True, stable=True) if act_order else torch.arange(cols)
    w, h = w[:, perm], h[perm][:, perm]
    u = inverse_hessian_factor(h, damp).float()  # (cols, cols) upper
    width = scheme.group_width(cols) if scheme.granularity != "tensor" else cols
    n_groups = math.ceil(cols / width)
    group_of = perm // width  # (cols,) group of each permuted position
    scale, zero = torch.zeros(rows, n_groups), torch.zeros(rows, n_groups)
    if scheme.granularity == "tensor":
        s, z = compute_qparams(w, scheme)
        scale, zero = s.clone(), z.clone()
    ready = torch.zeros(n_groups, dtype=torch.bool) | (scheme.granularity == "tensor")
    inverse = torch.argsort(perm)
    q_all = torch.zeros_like(w)
    cols_view = _Columns(w, u)
    loss = 0.0
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        cols_view.block, cols_view.start = w[:, start:end].clone(), start  # (rows, B)
        cols_view.err = torch.zeros(rows, end - start)  # (rows, B) scaled errors
        for i in range(end - start):
            g = int(group_of[start + i])
            if not ready[g]:
                members = inverse[g * width: min((g + 1) * width, cols)]  # permuted positions of group g
                scale[:, g], zero[:, g] = _grid(cols_view.current(members, i), scheme)
                ready[g] = True
            col = cols_view.block[:, i]  # (rows,)
            q = torch.round(col / scale[:, g] + zero[:, g]).clamp(scheme.qmin, scheme.qmax)
            col_hat = (q - zero[:, g]) * scale[:, g]
            q_all[:, start + i] = col_hat
            d = u[start + i, start + i]
            err = (col - col_hat) / d  # (rows,)
            loss += float(err.pow(2).sum()) / 2
            cols_view.block[:, i:] -= err[:, None] * u[start + i, start + i:end][None, :]
            cols_view.err[:, i] = err
        w[:, end:] -= cols_view.err @ u[start:end, end:]
    return GPTQResult(q_all[:, inverse], scale, zero, loss)
