"""Activation quantization at Linear inputs: observer hooks, fake-quant hooks and the module that
carries calibrated activation parameters after ``finalize``.

While a method calibrates, observers and fake-quant are forward pre-hooks owned by its ``HookSet`` and
are always removed. A finalized W8A8 model keeps its activation quantization explicitly, not as a hook:
each targeted ``nn.Linear`` is replaced by a :class:`StaticQuantLinear` (same weight and bias
Parameters, same state-dict names) with three more buffers, ``input_scale``, ``input_zero`` and
``input_qrange`` (qmin, qmax), plus ``input_smooth`` when SmoothQuant divides the input per channel
inside the quantizer. Those buffers are saved like any buffer; :func:`restore_static_quant_linears`
rebuilds the modules from a state dict before loading it, registered here as the slimkit format's
``static-quant-linear`` module restorer (:mod:`slimkit.export.registry`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.export.registry import register_module_restorer
from slimkit.hooks import HookSet
from slimkit.quantize.fake_quant import fake_quantize
from slimkit.quantize.observers import ActivationObserver
from slimkit.quantize.record import _ATTR as _RECORD_ATTR

INPUT_BUFFERS = ("input_scale", "input_zero", "input_qrange")


class StaticQuantLinear(nn.Linear):
    """A Linear whose input is fake-quantized with calibrated, static parameters (W8A8 semantics).

    ``forward(x) = linear(fake_quant(x / input_smooth))``; the weight is expected to hold dequantized
    integer values already (with a QuantRecord for the exporter). ``input_scale``/``input_zero`` are
    (1,) per tensor or (in_features,) per channel.
    """

    input_scale: Tensor
    input_zero: Tensor
    input_qrange: Tensor
    input_smooth: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool, qparam_size: int = 1,
                 smooth: bool = False) -> None:
        super().__init__(in_features, out_features, bias, device="meta")
        self.register_buffer("input_scale", torch.ones(qparam_size))
        self.register_buffer("input_zero", torch.zeros(qparam_size))
        self.register_buffer("input_qrange", torch.tensor([-128, 127]))
        self.register_buffer("input_smooth", torch.ones(in_features) if smooth else None)

    def quantize_input(self, x: Tensor) -> Tensor:
        """The fake-quantized (and smoothed) input, (..., in_features)."""
        if self.input_smooth is not None:
            x = x / self.input_smooth.to(x.dtype)
        qmin, qmax = (int(v) for v in self.input_qrange)
        return fake_quantize(x, self.input_scale.to(x.dtype), self.input_zero.to(x.dtype), qmin, qmax)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantize_input(x), self.weight, self.bias)


def swap_to_static(parent: nn.Module, child_name: str, scale: Tensor, zero: Tensor, qrange: tuple[int, int],
                   smooth: Tensor | None = None) -> StaticQuantLinear:
    """Replace ``parent.<child_name>`` (an ``nn.Linear``) by a :class:`StaticQuantLinear` sharing its
    Parameters and QuantRecords, with the given activation parameters."""
    linear = getattr(parent, child_name)
    new = StaticQuantLinear(linear.in_features, linear.out_features, linear.bias is not None, scale.numel(),
                            smooth is not None)
    new.weight, new.bias = linear.weight, linear.bias
    new.input_scale, new.input_zero = scale.detach().float().clone(), zero.detach().float().clone()
    new.input_qrange = torch.tensor(qrange)
    if smooth is not None:
        new.input_smooth = smooth.detach().float().clone()
    if _RECORD_ATTR in linear.__dict__:
        new.__dict__[_RECORD_ATTR] = linear.__dict__[_RECORD_ATTR]
    setattr(parent, child_name, new.train(linear.training))
    return new


def restore_static_quant_linears(model: nn.Module, state: dict[str, Tensor]) -> int:
    """Before ``model.load_state_dict(state)``: turn every Linear whose saved entries include
    ``input_scale`` into a :class:`StaticQuantLinear` of the saved shapes. Returns how many."""
    count = 0
    for name, module in list(model.named_modules()):
        key = f"{name}.input_scale" if name else "input_scale"
        if type(module) is not nn.Linear or key not in state:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        qrange = state[f"{name}.input_qrange"]
        smooth = state.get(f"{name}.input_smooth")
        swap_to_static(parent, child, state[key], state[f"{name}.input_zero"], (int(qrange[0]), int(qrange[1])),
                       smooth)
        count += 1
    return count


def _restore_static(model: nn.Module, state: dict[str, Tensor], section: None) -> None:
    restore_static_quant_linears(model, state)


register_module_restorer("static-quant-linear", _restore_static)


def observe_inputs(hooks: HookSet, linears: dict[str, nn.Module],
                   make_observer: Callable[[], ActivationObserver]) -> dict[str, ActivationObserver]:
    """Attach a fresh observer as a pre-hook to each of ``linears`` (name → module); returns them by name."""
    observers = {name: make_observer() for name in linears}
    for name, module in linears.items():
        hooks.forward_pre_hook(module, _observe_hook(observers[name]))
    return observers


def _observe_hook(observer: ActivationObserver) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        observer.update(args[0])

    return hook
