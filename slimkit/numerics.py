"""One guard against non-finite numbers (NaN, ±Inf) in weights, activations, Hessians and losses.

A single NaN weight spreads silently: RTN turns its whole row's scale into NaN, magnitude pruning ranks
it as the largest weight, GPTQ's Cholesky fails with a message about positive definiteness, and a
diverging training run saves an all-NaN model. Every such path calls :func:`check_finite` with a name
for what it checks (``layer model.layers.3.mlp.up_proj.weight``, ``training step 12: loss``) and stops
with a :class:`NonFiniteError`, a ``ValueError`` so the CLI prints it as one paragraph.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from slimkit.config import Targets
from slimkit.targets import iter_targets


class NonFiniteError(ValueError):
    """A weight, activation, statistic or loss holds NaN or infinite values."""


def check_finite(tensor: Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` if ``tensor`` holds NaN or ±Inf.

    Args:
        tensor: any tensor; integer tensors are always finite.
        what: what the tensor is, as the message should name it (layer, block, step).
    """
    t = tensor.detach()
    if not t.is_floating_point() or bool(torch.isfinite(t).all()):
        return
    nans, infs = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    raise NonFiniteError(f"{what} holds {nans} NaN and {infs} infinite values (of {t.numel()}); "
                         "slimkit stops rather than carry them into the result")


def check_finite_loss(loss: float, step: int) -> None:
    """Raise :class:`NonFiniteError` if training ``step`` (1-based) produced a NaN or infinite loss."""
    if not math.isfinite(loss):
        raise NonFiniteError(f"training step {step}: the loss is {loss}, so the run diverged (try a lower "
                             "learning rate); stopping before its weights are used or saved")


def check_finite_weights(model: nn.Module, targets: Targets, context: str) -> None:
    """Check every parameter ``targets`` selects in ``model``; the error names ``context`` and the layer."""
    for t in iter_targets(model, targets):
        check_finite(t.param, f"{context}: weight {t.fqn}")
