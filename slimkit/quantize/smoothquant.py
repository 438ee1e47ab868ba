"""SmoothQuant (``quant.smoothquant``, Xiao et al. 2023): move activation outliers into the weights, then
quantize W8A8 as ``quant.static`` does.

Per input channel j of the Linears that read one activation X, the smoothing factor is
``s_j = max|X_j|^α / max|W_j|^(1-α)`` (max over calibration tokens and over the rows of all those
Linears). ``X · W = (X / s) · (s · W)``: the weights' columns are multiplied by ``s`` and the input is
divided by it, which flattens outlier channels for the activation quantizer at the price of larger
weight columns (``α`` sets the trade-off).

The published method only smooths where the division folds into the module that produces X, so the
float model is unchanged and costs nothing at run time: a norm that feeds nothing else
(``input_layernorm → q/k/v``, ``post_attention_layernorm → gate/up``) or a Linear (``v_proj → o_proj``
when their widths match, i.e. no grouped-query repetition; ``up_proj → down_proj``, whose product with
the gate is linear in up's output); the reference code folds into a norm or a Linear likewise. Other
Linears are quantized unsmoothed: o_proj under grouped-query attention, and every BERT Linear, whose
post-LayerNorms also feed the residual stream. This is the default.

``smooth_unfoldable: true`` is slimkit's extension, not in the paper: those other Linears are smoothed
too, the division carried by the activation quantizer itself (``StaticQuantLinear.input_smooth``, an
element-wise divide fused into the quantize step, one extra pass over the input per call). On SmolLM2
(grouped-query attention) it took W8A8 perplexity from 25.6 to 17.7 at α = 0.5 (fp32 15.1) when only
norms were folded (``benchmarks/results/activation_quant.md``).

Lifecycle: ``calibrate`` runs the whole model twice (activation maxima, then activation ranges of the
smoothed model) and already folds the factors into the weights, which keeps the float function;
``finalize`` quantizes. It is not a :class:`~slimkit.calib.layer_method.LayerSequentialMethod`: nothing is
compensated block by block, the factors come from the float model's own activations, and the activation
ranges must be observed over full forwards of the smoothed model, as ``quant.static`` observes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from slimkit.method import ForwardLoop, Method, register
from slimkit.models.arch import decoder_layers, layer_prefix, scale_groups
from slimkit.quantize.folding import fold_scale
from slimkit.quantize.static import ActivationQuantFields, calibrate_inputs, finalize_w8a8, target_linears

_MIN_FACTOR = 1e-5


def smoothing_factors(act_absmax: Tensor, weight_absmax: Tensor, alpha: float) -> Tensor:
    """``s = act_absmax^α / weight_absmax^(1-α)`` per input channel (in,); 1 where a channel is all zero."""
    act, w = act_absmax.double(), weight_absmax.double()
    s = act.pow(alpha) / w.clamp_min(1e-12).pow(1.0 - alpha)
    s = torch.where((act > 0) & (w > 0), s, torch.ones_like(s))
    return s.clamp_min(_MIN_FACTOR).float()


class SmoothQuantConfig(ActivationQuantFields):
    """SmoothQuant W8A8: ``alpha`` is the migration strength (0.5 in the paper); activation and weight
    grids and observers as for ``quant.static``. By default the published method: factors folded into the
    preceding norm or Linear only. ``smooth_unfoldable: true`` (slimkit's extension, not in the paper) also
    smooths Linears with nothing foldable in front, dividing their input by ``s`` at run time inside the
    activation quantizer."""

    method: Literal["quant.smoothquant"] = "quant.smoothquant"
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    smooth_unfoldable: bool = False


@dataclass(frozen=True)
class SmoothGroup:
    """Targeted Linears that read one activation; ``previous`` is the norm or Linear to fold ``1/s`` into,
    or ``None`` when the division runs in the activation quantizer (slimkit's extension)."""

    linears: tuple[str, ...]
    previous: nn.Module | None


def smooth_groups(model: nn.Module, linears: dict[str, nn.Linear], unfoldable: bool) -> list[SmoothGroup]:
    """Foldable groups of Llama-style blocks (norm or Linear in front, see :func:`scale_groups`), then, if
    ``unfoldable``, every other targeted Linear on its own."""
    groups: list[SmoothGroup] = []
    try:
        layers = decoder_layers(model)
        for i, layer in enumerate(layers):
            prefix = layer_prefix(model, layers, i)
            for g in scale_groups(layer):
                names = tuple(f"{prefix}.{n}" for n in g.linears)
                if all(n in linears for n in names):
                    groups.append(SmoothGroup(names, layer.get_submodule(g.previous)))
    except ValueError:
        pass  # not Llama-style (e.g. BERT): nothing can be folded without changing the function
    if unfoldable:
        folded = {n for g in groups for n in g.linears}
        groups += [SmoothGroup((n,), None) for n in linears if n not in folded]
    if not groups:
        raise ValueError("quant.smoothquant: no Linear can be smoothed by folding here (no Llama-style norm or "
                         "Linear in front of the targets); set smooth_unfoldable: true for slimkit's run-time "
                         "smoothing through the activation quantizer, or use quant.static")
    return groups


def _absmax_hook(store: dict[str, Tensor], name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0].detach()
        m = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).float()  # (in,)
        store[name] = torch.maximum(store[name], m) if name in store else m

    return hook


def _divide_hook(s: Tensor) -> Callable[[nn.Module, tuple[Tensor, ...]], tuple[Tensor, ...]]:
    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (args[0] / s.to(args[0].dtype), *args[1:])

    return hook


@register(SmoothQuantConfig)
class SmoothQuantMethod(Method[SmoothQuantConfig]):
    """Collect per-channel activation maxima, smooth, calibrate activation ranges, quantize W8A8."""

    def __init__(self, config: SmoothQuantConfig) -> None:
        super().__init__(config)
        self._qparams: dict[str, tuple[Tensor, Tensor]] | None = None
        self._smooth: dict[str, Tensor] = {}
        self._stats: dict[str, Any] = {}

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:
        linears = target_linears(model, self.config, "quant.smoothquant")
        absmax: dict[str, Tensor] = {}
        for name, linear in linears.items():
            self.hooks.forward_pre_hook(linear, _absmax_hook(absmax, name))
        try:
            forward_loop(model)
        finally:
            self.hooks.remove_hooks()
        groups = smooth_groups(model, linears, self.config.smooth_unfoldable)
        factors = [self._smooth_group(g, linears, absmax) for g in groups]
        self._attach_divisions(linears)  # before the observers, so they see x / s
        self._qparams = calibrate_inputs(model, linears, self.config, self, forward_loop)
        self._attach_divisions(linears)  # until finalize moves s into StaticQuantLinear: float function intact
        all_s = torch.cat(factors)
        self._stats = {"smoothed_groups": len(groups), "folded_groups": sum(g.previous is not None for g in groups),
                       "max_smoothing_factor": round(float(all_s.max()), 4),
                       "min_smoothing_factor": round(float(all_s.min()), 6)}

    def _attach_divisions(self, linears: dict[str, nn.Linear]) -> None:
        for name, s in self._smooth.items():
            self.hooks.forward_pre_hook(linears[name], _divide_hook(s))

    def _smooth_group(self, group: SmoothGroup, linears: dict[str, nn.Linear], absmax: dict[str, Tensor]) -> Tensor:
        members = [linears[n] for n in group.linears]
        act = torch.stack([absmax[n] for n in group.linears]).amax(dim=0)  # (in,)
        w_max = torch.cat([m.weight.detach() for m in members]).abs().amax(dim=0).float()  # (in,)
        s = smoothing_factors(act, w_max, self.config.alpha)
        if group.previous is not None:
            fold_scale(group.previous, list(members), s)  # norm weight (or Linear rows) / s, Linear columns · s
        else:
            with torch.no_grad():
                members[0].weight.mul_(s[None, :].to(members[0].weight.dtype))  # (out, in): scale the columns
            self._smooth[group.linears[0]] = s
        return s

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if self._qparams is None:
            raise RuntimeError("quant.smoothquant needs calibration: use slimkit.apply(model, config, forward_loop)")
        self.hooks.remove_hooks()
        linears = target_linears(model, self.config, "quant.smoothquant")
        stats = finalize_w8a8(model, linears, self._qparams, self.config.weight_scheme(),
                              self.config.activation_grid(), self._smooth)
        return {**stats, **self._stats, "alpha": self.config.alpha}
