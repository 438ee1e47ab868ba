"""Post-training static quantization (``quant.static``): W8A8 = int8 weights per output channel plus int8
activations at every targeted Linear's input with ranges calibrated once, ahead of time.

Calibration attaches one :class:`~slimkit.quantize.observers.ActivationObserver` per Linear input
(a pre-hook owned by the method's HookSet, removed after the forward loop). ``finalize`` rounds the
weights to nearest (a QuantRecord lets the exporter store integers) and replaces each Linear by a
:class:`~slimkit.quantize.activation.StaticQuantLinear` carrying the activation scale and zero point as
buffers, so the finalized model runs W8A8 semantics (simulated in float) and saves/loads them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from slimkit.config import BaseConfig
from slimkit.method import ForwardLoop, Method, register
from slimkit.quantize.activation import observe_inputs, swap_to_static
from slimkit.quantize.observers import ActivationGrid, ActivationObserver, ObserverKind
from slimkit.quantize.primitives import QuantScheme, quantize_dequantize
from slimkit.quantize.record import QuantRecord, set_quant_record
from slimkit.targets import resolve_targets


class ActivationQuantFields(BaseConfig):
    """Weight and activation grid fields shared by ``quant.static`` and ``quant.smoothquant``.

    ``observer`` picks how activation ranges are calibrated: ``minmax``, ``moving_average`` (EMA with
    ``momentum``), ``percentile`` (``percentile``-th, e.g. 99.99) or ``mse`` (range shrink minimising the
    quantization MSE). Activations are per tensor unless ``activation_per_channel`` (last dim; simulated
    only, an int8 GEMM cannot use it).
    """

    weight_bits: int = Field(8, ge=2, le=8)
    activation_bits: int = Field(8, ge=2, le=8)
    activation_symmetric: bool = False
    activation_per_channel: bool = False
    observer: ObserverKind = "minmax"
    percentile: float = Field(99.99, gt=50.0, le=100.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)

    needs_calibration = True

    def activation_grid(self) -> ActivationGrid:
        return ActivationGrid(self.activation_bits, self.activation_symmetric, self.activation_per_channel)

    def weight_scheme(self) -> QuantScheme:
        return QuantScheme(self.weight_bits, True, "channel")

    def make_observer(self) -> ActivationObserver:
        return ActivationObserver(self.observer, self.activation_grid(), self.percentile, self.momentum)


class StaticQuantConfig(ActivationQuantFields):
    """Static W8A8 post-training quantization of the targeted Linears (see the module docstring)."""

    method: Literal["quant.static"] = "quant.static"


def target_linears(model: nn.Module, config: BaseConfig, method: str) -> dict[str, nn.Linear]:
    """The targeted ``nn.Linear`` modules by name (other module types are not activation-quantized)."""
    found = {t.module_name: t.module for t in resolve_targets(model, config.targets, method)
             if isinstance(t.module, nn.Linear) and t.param_name == "weight"}
    if not found:
        raise ValueError(f"{method}: the targets select no nn.Linear weight")
    return found  # type: ignore[return-value]


def calibrate_inputs(model: nn.Module, linears: dict[str, nn.Linear], config: ActivationQuantFields,
                     method: Method[Any], forward_loop: ForwardLoop) -> dict[str, tuple[Tensor, Tensor]]:
    """Run ``forward_loop`` with observers on the inputs of ``linears``; returns ``(scale, zero)`` by name."""
    observers = observe_inputs(method.hooks, dict(linears), config.make_observer)
    try:
        forward_loop(model)
    finally:
        method.hooks.remove_hooks()
    return {name: obs.qparams() for name, obs in observers.items()}


def finalize_w8a8(model: nn.Module, linears: dict[str, nn.Linear], qparams: dict[str, tuple[Tensor, Tensor]],
                  weight_scheme: QuantScheme, grid: ActivationGrid,
                  smooth: dict[str, Tensor] | None = None) -> dict[str, Any]:
    """Round the weights of ``linears`` to ``weight_scheme`` and swap them for StaticQuantLinears."""
    quantized = 0
    for name, linear in linears.items():
        w_hat, scale, zero = quantize_dequantize(linear.weight.data, weight_scheme)
        with torch.no_grad():
            linear.weight.copy_(w_hat)
        set_quant_record(linear, "weight", QuantRecord(weight_scheme, scale, zero))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        swap_to_static(parent, child, *qparams[name], (grid.qmin, grid.qmax), (smooth or {}).get(name))
        quantized += linear.weight.numel()
    scales = torch.cat([qparams[n][0].reshape(-1) for n in linears])
    return {"linears": len(linears), "quantized_params": quantized, "weight_bits": weight_scheme.bits,
            "activation_bits": grid.bits, "median_activation_scale": round(float(scales.median()), 6)}


@register(StaticQuantConfig)
class StaticQuantMethod(Method[StaticQuantConfig]):
    """Calibrate activation ranges at Linear inputs, then quantize weights and carry the ranges."""

    def __init__(self, config: StaticQuantConfig) -> None:
        super().__init__(config)
        self._qparams: dict[str, tuple[Tensor, Tensor]] | None = None

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:
        linears = target_linears(model, self.config, "quant.static")
        self._qparams = calibrate_inputs(model, linears, self.config, self, forward_loop)

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if self._qparams is None:
            raise RuntimeError("quant.static needs calibration: use slimkit.apply(model, config, forward_loop)")
        linears = target_linears(model, self.config, "quant.static")
        return finalize_w8a8(model, linears, self._qparams, self.config.weight_scheme(),
                             self.config.activation_grid())
