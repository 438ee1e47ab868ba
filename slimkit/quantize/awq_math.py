"""Pure math of activation-aware weight quantization (Lin et al., 2023, "AWQ: Activation-aware Weight
Quantization for LLM Compression and Acceleration").

Input channels that carry large activations matter most, so their weights are scaled up by
``s = mean|x|^α`` before round-to-nearest quantization and the inputs scaled down by ``1/s``, which
leaves the float function unchanged but gives salient weights a finer relative grid. ``α`` is searched
on a grid in [0, 1] (``α = 0`` is plain RTN) to minimise the output error of the Linears that share the
input, measured exactly through their input Hessian: ``‖X(W − Ŵ)ᵀ‖² / n = tr(Δ H Δᵀ) / 2`` with
``H = 2 XᵀX / n``. Optionally the range of each group is then clipped (searched shrink ratio). The clip
search runs on the folded weights ``W·diag(s)``, which read the folded inputs ``X·diag(1/s)``: their
Hessian is ``diag(1/s)·H·diag(1/s)`` (:func:`folded_hessian`), as llm-awq clips on the input features
it has already divided by the scales.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from slimkit.quantize.primitives import QuantScheme, quantize_dequantize, searched_qparams


@dataclass
class ScaleSearch:
    """The chosen per-input-channel scale (in,), its exponent and the output errors it gives vs RTN."""

    scale: Tensor
    alpha: float
    error: float
    rtn_error: float


def output_error(w: Tensor, w_hat: Tensor, h: Tensor) -> float:
    """Mean squared output error ``tr((W−Ŵ) H (W−Ŵ)ᵀ) / 2`` for weights (rows, in) and Hessian (in, in)."""
    delta = (w - w_hat).float()  # (rows, in)
    return float(((delta @ h.float()) * delta).sum()) / 2


def activation_scale(mean_abs: Tensor, alpha: float) -> Tensor:
    """``s = mean|x|^α``, normalised so that ``max(s) · min(s) = 1`` (keeps the grid well centred), (in,)."""
    s = mean_abs.float().clamp_min(1e-4).pow(alpha)
    return s / (s.max() * s.min()).sqrt()


def quantize_scaled(w: Tensor, s: Tensor, scheme: QuantScheme) -> Tensor:
    """Quantize ``w · diag(s)`` with RTN and fold ``1/s`` back: the effective float weights (rows, in)."""
    w_hat, _, _ = quantize_dequantize(w.float() * s[None, :], scheme)
    return w_hat / s[None, :]


def search_scale(w: Tensor, h: Tensor, mean_abs: Tensor, scheme: QuantScheme, grid: int = 20) -> ScaleSearch:
    """Grid-search ``α ∈ {0, 1/grid, …, 1}`` for the scale minimising the output error of ``w``.

    Args:
        w: the weights of every Linear sharing the input, stacked by rows (rows, in).
        h: Hessian ``2 XᵀX / n`` of that input (in, in).
        mean_abs: mean ``|x_j|`` per input channel (in,).
        scheme: the RTN grid the weights will be quantized to.
        grid: number of steps of ``α`` between 0 and 1.

    Returns:
        The best :class:`ScaleSearch`; ``α = 0`` (plain RTN) wins ties, so AWQ never does worse than RTN
        on this error.
    """
    best: ScaleSearch | None = None
    rtn_error = 0.0
    for step in range(grid + 1):
        alpha = step / grid
        s = activation_scale(mean_abs, alpha)
        error = output_error(w, quantize_scaled(w, s, scheme), h)
        if step == 0:
            rtn_error = error
        if best is None or error < best.error:
            best = ScaleSearch(s, alpha, error, rtn_error)
    assert best is not None
    best.rtn_error = rtn_error
    return best


def folded_hessian(h: Tensor, s: Tensor) -> Tensor:
    """Hessian of the inputs ``X·diag(1/s)`` given that of ``X``: ``diag(1/s)·H·diag(1/s)``, (in, in)."""
    inv = 1.0 / s.to(h.dtype)  # (in,)
    return h * inv[:, None] * inv[None, :]


def clipped_grid(w: Tensor, h: Tensor, scheme: QuantScheme, ratios: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    """AWQ's weight clipping: per (row, group), shrink the min-max range by the ratio that minimises the
    group's output error ``δ_g H_gg δ_gᵀ`` (cross-group terms ignored, as in AWQ).

    Shrinking ``lo`` and ``hi`` by the same ratio multiplies the scale and keeps the zero point, so the
    result is an ordinary grid for :func:`quantize` (which clamps the clipped weights).

    Args:
        w: weights (rows, cols).
        h: Hessian of the inputs (cols, cols) the weights read (see :func:`folded_hessian`).
        scheme: the RTN grid (channel or group granularity).
        ratios: candidate range ratios in (0, 1]; include 1.0 to allow no clipping.

    Returns:
        ``(scale, zero)``, each (rows, n_groups).
    """
    return searched_qparams(w, scheme, ratios, hessian=h)
