"""Post-training static quantization (``quant.static``): W8A8 = int8 weights per output channel plus int8
activations at every targeted Linear's input with ranges calibrated once, ahead of time.

Calibration attaches one :class:`~slimkit.quantize.observers.ActivationObserver` per Linear input
(a pre-hook owned by the method's HookSet, removed after the forward loop). ``finalize`` rounds the
weights to nearest (a QuantRecord lets the exporter store integers) and replaces each Linear by a
:class:`~slimkit.quantize.activation.StaticQuantLinear` carrying the activation scale and zero point as
buffers, so the finalized model runs W8A8 semantics (simulated in float) and saves/loads them.

:func:`to_int8_execution` then optionally swaps those modules for :class:`OneDNNInt8Linear`, which runs the
same arithmetic as real uint8 × int8 GEMMs through oneDNN's x86 kernels (a runtime conversion: the
prepacked weights are not saved; save the simulated model and convert after loading).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from slimkit.config import BaseConfig
from slimkit.method import ForwardLoop, Method, register
from slimkit.quantize.activation import StaticQuantLinear, observe_inputs, swap_to_static
from slimkit.quantize.kernels import cpu_has_vnni
from slimkit.quantize.observers import ActivationGrid, ActivationObserver, ObserverKind
from slimkit.quantize.primitives import QuantScheme, quantize, quantize_dequantize
from slimkit.quantize.record import QuantRecord, get_quant_record, set_quant_record
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


class OneDNNInt8Linear(nn.Module):
    """Executes a W8A8 :class:`StaticQuantLinear` as a real uint8 × int8 GEMM with float32 output (oneDNN).

    The input is smoothed, quantized to uint8 with the calibrated scale/zero (a signed int8 grid is shifted
    by 128, the same levels), multiplied by the prepacked int8 weights and rescaled per output channel.
    """

    def __init__(self, source: StaticQuantLinear, record: QuantRecord) -> None:
        super().__init__()
        q = quantize(source.weight.data, record.scale, record.zero, record.scheme).to(torch.int8)  # (out, in)
        self.packed = torch.ops.onednn.qlinear_prepack(q, None)
        self.weight_scale = record.scale[:, 0].float().contiguous()  # (out,)
        self.weight_zero = torch.zeros(q.shape[0], dtype=torch.long)
        self.bias = None if source.bias is None else source.bias.detach().float()
        self.smooth = source.input_smooth
        self.qmin, self.qmax = int(source.input_qrange[0]), int(source.input_qrange[1])
        self.input_scale, self.input_zero = source.input_scale.float(), source.input_zero.float()  # (1,)
        self.x_scale = float(source.input_scale)
        self.x_zero = int(source.input_zero) - self.qmin  # shift a signed grid onto uint8

    def forward(self, x: Tensor) -> Tensor:
        if self.smooth is not None:
            x = x / self.smooth
        # The simulation's exact integers: shifting by -qmin before rounding would round v + 128 in float32,
        # which moves values just below a .5 tie onto it.
        v = torch.round(x / self.input_scale + self.input_zero).clamp(self.qmin, self.qmax)  # (..., in)
        xq = (v - self.qmin).to(torch.uint8)
        return torch.ops.onednn.qlinear_pointwise(xq, self.x_scale, self.x_zero, self.packed, self.weight_scale,
                                                  self.weight_zero, self.bias, 1.0, 0, torch.float32, "none", [],
                                                  "")


def _int8_executable(module: nn.Module) -> QuantRecord | None:
    """The weight record of a StaticQuantLinear that oneDNN can run exactly (8-bit per-channel symmetric
    weights, per-tensor activations of at most 8 bits, 7 on a CPU without VNNI), else None.

    Without VNNI, x86 adds pairs of u8 × s8 products into int16 (``vpmaddubsw``), which saturates with full
    8-bit activations: measured on an AVX2-only EPYC, 8% of a tiny Llama's outputs were off by up to 0.19.
    """
    if not isinstance(module, StaticQuantLinear) or module.input_scale.numel() != 1:
        return None
    record = get_quant_record(module, "weight")
    s = record.scheme if record else None
    ok = s is not None and (s.bits, s.symmetric, s.granularity, s.kind) == (8, True, "channel", "int")
    levels = int(module.input_qrange[1]) - int(module.input_qrange[0])
    return record if ok and levels <= (255 if cpu_has_vnni() else 127) else None


def to_int8_execution(model: nn.Module) -> int:
    """Swap every int8-executable :class:`StaticQuantLinear` in ``model`` for a :class:`OneDNNInt8Linear`.

    Returns:
        How many modules now run real int8 GEMMs (x86 CPUs with oneDNN; inference only). The others keep
        their exact simulation (see :func:`_int8_executable`).
    """
    swapped = 0
    for name, module in list(model.named_modules()):
        record = _int8_executable(module)
        if record is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child,
                OneDNNInt8Linear(module, record))  # type: ignore[arg-type]
        swapped += 1
    return swapped
