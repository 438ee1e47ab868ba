"""Folding a per-input-channel scale through a Linear's input: the function-preserving rewrite that AWQ and
SmoothQuant share.

``X · Wᵀ = (X / s) · (W · diag(s))ᵀ``: the Linears that read ``X`` get their columns multiplied by ``s``
and the module that produces ``X`` (a norm, or a Linear whose output is ``X``) gets its output channels
divided by ``s``, so the float model computes the same function. AWQ picks ``s`` to protect salient
weights from rounding, SmoothQuant to flatten activation outliers; the fold is the same.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def fold_scale(previous: nn.Module, linears: list[nn.Linear], s: Tensor) -> None:
    """Divide ``previous``'s output channels by ``s`` (in,) and multiply the ``linears``' inputs by it."""
    with torch.no_grad():
        if isinstance(previous, nn.Linear):
            previous.weight.div_(s[:, None].to(previous.weight.dtype))  # (out, in): scale the rows
        else:
            norm_weight = previous.get_parameter("weight")
            norm_weight.div_(s.to(norm_weight.dtype))  # norm weight (features,)
        bias = getattr(previous, "bias", None)
        if isinstance(bias, Tensor):
            bias.div_(s.to(bias.dtype))
        for linear in linears:
            linear.weight.mul_(s[None, :].to(linear.weight.dtype))  # (out, in): scale the columns
