"""Activation-aware weight quantization (``quant.awq``): per input channel, move a searched scale from
the preceding norm (or Linear) into the weights of the Linears that read it, then round to nearest.

Block by block on calibration data: for each scale group of a Llama-style block (q/k/v after
``input_layernorm``, gate/up after ``post_attention_layernorm``, down after ``up_proj``, o after ``v_proj``
when widths match), ``α`` is chosen on a grid to minimise the group's Linear output error after RTN
(see :mod:`slimkit.quantize.awq_math`). The inverse scale is folded into the preceding module, so the
float function is unchanged; then every targeted Linear is quantized with RTN (optionally on a clipped
range, searched per group on the Hessian of its folded inputs) and carries a :class:`QuantRecord` like
RTN's.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from slimkit.calib.layer_method import LayerSequentialMethod
from slimkit.calib.sequential import LayerContext
from slimkit.calib.stats import InputStats
from slimkit.method import register
from slimkit.models.arch import ATTENTION_SCORE_LINEARS, ScaleGroup, scale_groups
from slimkit.quantize.awq_math import clipped_grid, folded_hessian, search_scale
from slimkit.quantize.folding import fold_scale
from slimkit.quantize.gptq import GroupQuantConfig
from slimkit.quantize.primitives import dequantize, quantize, quantize_dequantize
from slimkit.quantize.record import QuantRecord, set_quant_record
from slimkit.targets import Target

CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(20))  # 1.0 (no clipping) down to 0.525


class AWQConfig(GroupQuantConfig):
    """AWQ: ``grid`` is the number of steps of the scale exponent ``α`` between 0 and 1; ``clip_search``
    also shrinks each group's range by the ratio in [0.5, 1] that minimises its output error
    (not for q/k projections)."""

    method: Literal["quant.awq"] = "quant.awq"
    grid: int = Field(20, ge=1, le=100)
    clip_search: bool = True

    needs_calibration = True


@register(AWQConfig)
class AWQMethod(LayerSequentialMethod[AWQConfig]):
    """Sequential AWQ over the model's Llama-style blocks: per block, search and fold the scale groups, then
    round each targeted Linear to nearest (on a searched clipping range)."""

    label = "AWQ"

    def __init__(self, config: AWQConfig) -> None:
        super().__init__(config)
        self._alphas: list[float] = []
        self._error = self._rtn_error = 0.0
        self._params = 0
        self._folded: dict[str, Tensor] = {}  # Linear name -> scale folded into its input columns (this block)

    def compress_block(self, ctx: LayerContext) -> None:
        self._folded.clear()
        for group in scale_groups(ctx.layer):
            self._scale_group(ctx, group)
        super().compress_block(ctx)

    def _scale_group(self, ctx: LayerContext, group: ScaleGroup) -> None:
        names = [f"{ctx.prefix}.{n}" for n in group.linears]
        if any(n not in ctx.stats for n in names):
            return  # a Linear of the group is not targeted: leave the group's scale alone
        linears = [m for m in (ctx.targets[n].module for n in names) if isinstance(m, nn.Linear)]
        stats = ctx.stats[names[0]]  # every Linear of a group reads the same input
        w = torch.cat([lin.weight.detach() for lin in linears])  # (sum of outs, in)
        found = search_scale(w, stats.hessian(), stats.mean_abs(), self.config.scheme(), self.config.grid)
        fold_scale(ctx.layer.get_submodule(group.previous), linears, found.scale)
        self._folded.update(dict.fromkeys(names, found.scale))
        self._alphas.append(found.alpha)
        self._error += found.error
        self._rtn_error += found.rtn_error

    def compress_linear(self, target: Target, stats: InputStats) -> None:
        name, weight, scheme = target.module_name, target.param, self.config.scheme()
        if self.config.clip_search and not name.endswith(ATTENTION_SCORE_LINEARS):
            h = stats.hessian()  # of the inputs seen before folding
            if name in self._folded:
                h = folded_hessian(h, self._folded[name])
            scale, zero = clipped_grid(weight.data, h, scheme, CLIP_RATIOS)
            w_hat = dequantize(quantize(weight.data, scale, zero, scheme), scale, zero, scheme)
        else:
            w_hat, scale, zero = quantize_dequantize(weight.data, scheme)
        with torch.no_grad():
            weight.copy_(w_hat)
        set_quant_record(target.module, target.param_name, QuantRecord(scheme, scale, zero))
        self._params += weight.numel()

    def summary(self) -> dict[str, Any]:
        return {"quantized_params": self._params, "scale_groups": len(self._alphas),
                "mean_alpha": round(sum(self._alphas) / max(len(self._alphas), 1), 3),
                "output_error_vs_rtn": round(self._error / max(self._rtn_error, 1e-30), 4)}
