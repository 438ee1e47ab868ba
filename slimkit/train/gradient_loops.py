"""Forward loops that compute a loss and call ``backward()``, for gradient-based importance scores.

First-order Taylor scoring (``prune.structured`` with ``importance: taylor``) reads the gradient of a
loss with respect to each unit's output, so its ``forward_loop`` must run backward passes. These loops
use the model's own training loss: next-token cross-entropy for causal LMs (``labels=input_ids``) and
cross-entropy against labels for classifiers. Parameter gradients are cleared afterwards; the model's
weights are never changed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

ForwardLoop = Callable[[nn.Module], None]


def causal_lm_loss_loop(windows: Tensor, batch_size: int = 1) -> ForwardLoop:
    """Loop over token ``windows`` (n, T) calling ``backward()`` on the mean next-token NLL of each batch."""

    def loop(model: nn.Module) -> None:
        for batch in windows.split(batch_size):
            model(input_ids=batch, labels=batch).loss.backward()
        model.zero_grad(set_to_none=True)

    return loop


def classifier_loss_loop(x: Tensor, y: Tensor, batch_size: int = 256) -> ForwardLoop:
    """Loop over images/features ``x`` with labels ``y`` calling ``backward()`` on the cross-entropy."""

    def loop(model: nn.Module) -> None:
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            F.cross_entropy(model(xb), yb).backward()
        model.zero_grad(set_to_none=True)

    return loop
