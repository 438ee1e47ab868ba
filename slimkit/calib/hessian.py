"""The layer-Hessian helpers shared by the error-compensating one-shot methods (GPTQ and SparseGPT).

Both sweep a weight column by column and spread each column's error over the columns not yet visited
through the upper Cholesky factor of the inverse layer Hessian ``H = 2 XᵀX / n`` (accumulated by
:class:`slimkit.calib.stats.InputStats`). This module prepares that Hessian (dead input channels),
factors its dampened inverse, and pins the sweep to one thread. It lives in ``calib`` so that neither
quantization nor pruning borrows it from the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from slimkit.numerics import check_finite


@contextmanager
def one_thread() -> Iterator[None]:
    """Run a column sweep on one thread.

    The sweep is thousands of tiny tensor ops; OpenMP hand-offs between threads cost more than they
    save, and on a shared machine with oversubscribed cores the sweep ran ~15× slower with two threads.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_hessian(w: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Zero the columns of ``w`` that never see input (``H_jj = 0``) and make those ``H_jj = 1``.

    Returns:
        ``(w, h)``: float32 copy of the weight (rows, cols) and float64 copy of the Hessian (cols, cols).
    """
    w, h = w.detach().float().clone(), h.detach().double().clone()
    dead = torch.diagonal(h) == 0  # (cols,)
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    return w, h


def inverse_hessian_factor(h: Tensor, damp: float) -> Tensor:
    """Upper Cholesky factor ``U`` of ``(H + λI)⁻¹`` with ``λ = damp · mean(diag H)``, float64 (cols, cols).

    If the dampened Hessian is still not positive definite, ``λ`` grows tenfold until it is.

    Raises:
        NonFiniteError: ``h`` holds NaN or infinite values (dampening cannot mend them).
        ValueError: eight tenfold increases of ``λ`` still leave it indefinite.
    """
    check_finite(h, "the layer Hessian (from the calibration activations)")
    cols = h.shape[0]
    lam = damp * float(torch.diagonal(h).mean())
    eye = torch.eye(cols, dtype=h.dtype)
    for _ in range(8):
        chol, info = torch.linalg.cholesky_ex(h + lam * eye)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True)
        lam = max(lam * 10.0, 1e-8)
    raise ValueError("the Hessian is not positive definite even after heavy dampening")
