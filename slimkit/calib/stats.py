"""Running statistics of the inputs of one Linear layer over calibration tokens.

GPTQ and SparseGPT need the layer Hessian ``H = 2 XᵀX / n``, Wanda the input column norms ``‖X_j‖₂``,
AWQ the mean absolute activation per input channel. One accumulator collects all of them in a single
pass; Linears that read the very same input tensor (q/k/v, gate/up) share one accumulator.
"""

from __future__ import annotations

import torch
from torch import Tensor


class InputStats:
    """Accumulates ``XᵀX`` (optional), ``Σ x_j²`` and ``Σ |x_j|`` over rows ``x`` of a Linear's input."""

    def __init__(self, features: int, *, with_hessian: bool) -> None:
        self.features = features
        self.tokens = 0
        self._xtx = torch.zeros(features, features, dtype=torch.float64) if with_hessian else None  # (in, in)
        self._sq_sum = torch.zeros(features, dtype=torch.float64)  # (in,)
        self._abs_sum = torch.zeros(features, dtype=torch.float64)  # (in,)

    def add(self, x: Tensor) -> None:
        """Add a batch of inputs ``x`` (..., in): every leading position counts as one token."""
        rows = x.detach().reshape(-1, self.features).float()  # (n, in)
        if self._xtx is not None:
            self._xtx += (rows.T @ rows).double()  # float32 GEMM per batch, float64 running sum
        self._sq_sum += rows.pow(2).sum(0).double()
        self._abs_sum += rows.abs().sum(0).double()
        self.tokens += rows.shape[0]

    def hessian(self) -> Tensor:
        """``H = 2 XᵀX / n`` in float64, (in, in)."""
        if self._xtx is None:
            raise RuntimeError("these statistics were collected without the Hessian")
        return self._xtx * (2.0 / max(self.tokens, 1))

    def column_norms(self) -> Tensor:
        """``‖X_j‖₂`` over all tokens, float64 (in,)."""
        return self._sq_sum.sqrt()

    def mean_abs(self) -> Tensor:
        """Mean ``|x_j|`` per input channel, float64 (in,)."""
        return self._abs_sum / max(self.tokens, 1)
