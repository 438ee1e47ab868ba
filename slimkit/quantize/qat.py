"""Quantization-aware training (``quant.qat``): train through fake-quantized weights (and optionally
activations), then bake the integers in.

``slimkit.prepare(model, QATConfig(...))`` attaches to every targeted weight a parametrization that
fake-quantizes it with the straight-through estimator (STE), or with LSQ (Esser et al. 2020) when
``learnable_scales``: the per-group step is then an ``nn.Parameter`` inside the parametrization. With
``activation_bits`` each targeted Linear also gets an ``input_fake_quant`` submodule (moving-average
min-max ranges updated by every forward pass until frozen, or an LSQ step) called by a pre-hook.
All of these live inside the model, so **create the optimizer after** ``prepare``:
``torch.optim.Adam(model.parameters())`` then sees the learnable steps. ``ctl.step(progress)`` freezes
ranges and steps once ``progress >= freeze_at``;
``ctl.finalize()`` bakes the quantized weights, attaches QuantRecords (the exporter stores integers)
and turns activation-quantized Linears into :class:`StaticQuantLinear` with the learned ranges.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from slimkit.method import ForwardLoop, Method, register
from slimkit.quantize.activation import swap_to_static
from slimkit.quantize.fake_quant import (
    fake_quantize,
    lsq_fake_quantize,
    lsq_grad_scale,
    lsq_init_step,
    straight_through,
)
from slimkit.quantize.observers import ActivationGrid, batch_range, range_to_qparams
from slimkit.quantize.primitives import (
    QuantScheme,
    as_matrix,
    broadcast_qparams,
    compute_qparams,
    dequantize,
    numel_per_qparam,
    quantize,
    quantize_dequantize,
)
from slimkit.quantize.record import QuantRecord, set_quant_record
from slimkit.quantize.rtn import WeightGridFields
from slimkit.targets import Target, resolve_targets

INPUT_QUANTIZER = "input_fake_quant"


class QATConfig(WeightGridFields):
    """Quantization-aware training on the weight grid of :class:`WeightGridFields`.

    ``learnable_scales`` learns the weight steps (and activation steps) with LSQ (symmetric int grids
    only). ``activation_bits`` also fake-quantizes every targeted Linear's input: signed when
    ``activation_symmetric``, otherwise affine (with LSQ: unsigned from 0, for non-negative inputs such
    as ReLU outputs). ``freeze_at`` is the training progress after which ranges and steps stop changing.
    """

    method: Literal["quant.qat"] = "quant.qat"
    learnable_scales: bool = False
    activation_bits: int | None = Field(None, ge=2, le=8)
    activation_symmetric: bool = False
    activation_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    freeze_at: float = Field(1.0, ge=0.0, le=1.0)

    needs_training = True

    @model_validator(mode="after")
    def _lsq_needs_symmetric_int(self) -> QATConfig:
        if self.learnable_scales and (self.scheme != "int" or not self.symmetric):
            raise ValueError("learnable_scales (LSQ) needs scheme 'int' with symmetric: true")
        return self

    def activation_grid(self) -> ActivationGrid:
        assert self.activation_bits is not None
        return ActivationGrid(self.activation_bits, self.activation_symmetric, per_channel=False)


class WeightFakeQuant(nn.Module):
    """Parametrization: weight → fake-quantized weight (STE), with a learnable LSQ step if asked."""

    def __init__(self, weight: Tensor, scheme: QuantScheme, learnable: bool) -> None:
        super().__init__()
        self.scheme = scheme
        matrix = as_matrix(weight.detach())  # (rows, cols)
        scale, zero = compute_qparams(matrix, scheme)  # (rows, n_groups): min-max start
        self.step = nn.Parameter(scale) if learnable else None
        rows, cols = matrix.shape
        self.grad_scale = lsq_grad_scale(numel_per_qparam((rows, cols), scheme), scheme.qmax)
        self.frozen: tuple[Tensor, Tensor] | None = None

    def qparams(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """Current (scale, zero), each (rows, n_groups)."""
        if self.step is not None:
            return self.step.detach().abs().clamp_min(1e-12), torch.zeros_like(self.step.detach())
        if self.frozen is not None:
            return self.frozen
        if self.scheme.kind != "int":
            _, scale, zero = quantize_dequantize(as_matrix(weight.detach()), self.scheme)
            return scale, zero
        return compute_qparams(as_matrix(weight.detach()), self.scheme)

    def freeze(self, weight: Tensor) -> None:
        """Stop the range from following the weights (LSQ: stop learning the step)."""
        if self.step is not None:
            self.step.requires_grad_(False)
        elif self.scheme.kind == "int":
            self.frozen = self.qparams(weight)

    def forward(self, weight: Tensor) -> Tensor:
        w = as_matrix(weight)  # (rows, cols)
        s = self.scheme
        if self.step is not None:
            step = broadcast_qparams(self.step.abs().clamp_min(1e-12), s, w.shape[1])  # (rows, cols)
            return lsq_fake_quantize(w, step, s.qmin, s.qmax, self.grad_scale).reshape(weight.shape)
        if s.kind != "int":
            return straight_through(w, quantize_dequantize(w.detach(), s)[0]).reshape(weight.shape)
        scale, zero = self.qparams(weight)
        w_hat = fake_quantize(w, broadcast_qparams(scale, s, w.shape[1]), broadcast_qparams(zero, s, w.shape[1]),
                              s.qmin, s.qmax)
        return w_hat.reshape(weight.shape)


class InputFakeQuant(nn.Module):
    """Fake-quantizes a Linear's input per tensor: moving-average min-max ranges, or an LSQ step."""

    lo: Tensor
    hi: Tensor
    seen: Tensor

    def __init__(self, grid: ActivationGrid, learnable: bool, momentum: float) -> None:
        super().__init__()
        self.grid, self.momentum, self.frozen = grid, momentum, False
        self.step = nn.Parameter(torch.ones(1)) if learnable else None
        self.register_buffer("lo", torch.zeros(1))
        self.register_buffer("hi", torch.zeros(1))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def _observe(self, x: Tensor) -> None:
        lo, hi = batch_range(x, per_channel=False)  # (1,), (1,)
        first = int(self.seen) == 0
        self.lo.copy_(lo if first else self.momentum * self.lo + (1 - self.momentum) * lo)
        self.hi.copy_(hi if first else self.momentum * self.hi + (1 - self.momentum) * hi)
        if first and self.step is not None:
            self.step.data.copy_(lsq_init_step(x, self.grid.qmax).reshape(1))
        self.seen += 1

    def qparams(self) -> tuple[Tensor, Tensor]:
        """(scale, zero), each (1,)."""
        if int(self.seen) == 0:
            raise RuntimeError("quant.qat: an input quantizer saw no data; train (or pass a forward_loop to "
                               "slimkit.apply) before finalize")
        if self.step is not None:
            step = self.step.detach().abs().clamp_min(1e-12)
            return step, torch.zeros_like(step)
        return range_to_qparams(self.lo, self.hi, self.grid)

    def forward(self, x: Tensor) -> Tensor:
        if not self.frozen or int(self.seen) == 0:
            self._observe(x)
        if self.step is not None:
            grad_scale = lsq_grad_scale(x[0].numel(), self.grid.qmax)
            return lsq_fake_quantize(x, self.step.abs().clamp_min(1e-12), self.grid.qmin, self.grid.qmax, grad_scale)
        scale, zero = self.qparams()
        return fake_quantize(x, scale.to(x.dtype), zero.to(x.dtype), self.grid.qmin, self.grid.qmax)

    def freeze(self) -> None:
        self.frozen = True
        if self.step is not None:
            self.step.requires_grad_(False)


def _original(target: Target) -> Tensor:
    """The unquantized weight behind a parametrized target."""
    return getattr(target.module.parametrizations, target.param_name).original  # type: ignore[no-any-return]


def _input_hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    quantizer = getattr(module, INPUT_QUANTIZER)
    return (quantizer(args[0]), *args[1:])


@register(QATConfig)
class QATMethod(Method[QATConfig]):
    """Fake-quant parametrizations (and input quantizers) during training; integers at finalize."""

    def __init__(self, config: QATConfig) -> None:
        super().__init__(config)
        self._targets: list[Target] = []
        self._weight_quant: dict[str, WeightFakeQuant] = {}
        self._input_quant: dict[str, nn.Linear] = {}
        self._frozen = False

    def prepare(self, model: nn.Module) -> None:
        cfg, scheme = self.config, self.config.quant_scheme()
        self._targets = resolve_targets(model, cfg.targets, "quant.qat")
        for t in self._targets:
            quantizer = WeightFakeQuant(t.param, scheme, cfg.learnable_scales)
            self._weight_quant[t.fqn] = quantizer
            self.hooks.parametrize(t.module, t.param_name, quantizer)
            if cfg.activation_bits is not None and isinstance(t.module, nn.Linear) and t.param_name == "weight":
                t.module.add_module(INPUT_QUANTIZER, InputFakeQuant(cfg.activation_grid(), cfg.learnable_scales,
                                                                    cfg.activation_momentum))
                self.hooks.forward_pre_hook(t.module, _input_hook)
                self._input_quant[t.module_name] = t.module

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:
        """Observe activation ranges without training (QAT settings used as plain PTQ)."""
        forward_loop(model)

    def step(self, progress: float) -> None:
        if progress >= self.config.freeze_at and not self._frozen:
            for t in self._targets:
                self._weight_quant[t.fqn].freeze(_original(t))
            for linear in self._input_quant.values():
                getattr(linear, INPUT_QUANTIZER).freeze()
            self._frozen = True

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        records = {t.fqn: self._weight_quant[t.fqn].qparams(_original(t))
                   for t in self._targets}
        self.hooks.bake_all()  # weights become their fake-quantized values; the input pre-hooks go
        scheme = self.config.quant_scheme()
        for t in self._targets:
            scale, zero = records[t.fqn]
            w = t.param.data
            # STE arithmetic (x + (q - x).detach()) leaves last-ulp noise: snap exactly onto the grid
            w.copy_(dequantize(quantize(as_matrix(w), scale, zero, scheme), scale, zero, scheme).reshape(w.shape))
            set_quant_record(t.module, t.param_name, QuantRecord(scheme, scale, zero))
        grid = self.config.activation_grid() if self.config.activation_bits else None
        for name, linear in self._input_quant.items():
            scale, zero = getattr(linear, INPUT_QUANTIZER).qparams()
            delattr(linear, INPUT_QUANTIZER)
            assert grid is not None
            parent_name, _, child = name.rpartition(".")
            swap_to_static(model.get_submodule(parent_name) if parent_name else model, child, scale, zero,
                           (grid.qmin, grid.qmax))
        return {"layers": len(self._targets), "quantized_params": sum(t.param.numel() for t in self._targets),
                "bits": scheme.bits, "activation_bits": self.config.activation_bits,
                "learnable_scales": self.config.learnable_scales, "frozen": self._frozen}
