"""QuantRecord: the quantization parameters that a quantized weight carries until it is saved.

A quantization method leaves the weight as dequantized floats (so the model runs unchanged) and
attaches a record with the scheme, scales and zero points. The slimkit exporter uses the record to
store the integers instead of floats; the loader attaches it again, so a reloaded model can be
re-saved packed.

A weight changed after quantization (fine-tuned, pruned) is no longer on its record's grid; storing or
packing it re-quantizes it with the record's scales. :func:`record_integers` does that with an
:class:`OffGridWeightWarning` that names the layer and the error introduced, instead of silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimkit.quantize.primitives import QuantScheme, as_matrix, broadcast_qparams, dequantize, quantize

#: A weight is on its grid when requantizing moves no value by more than this fraction of its step
#: (dequantized values cast back to the weight's dtype, e.g. bf16, come back exactly).
ON_GRID_TOLERANCE = 1e-3

_ATTR = "_slimkit_quant"


@dataclass
class QuantRecord:
    """Scheme plus per-group parameters of one quantized weight (scale, zero: (rows, n_groups))."""

    scheme: QuantScheme
    scale: Tensor
    zero: Tensor


def set_quant_record(module: nn.Module, param_name: str, record: QuantRecord) -> None:
    """Attach ``record`` to ``module.<param_name>``."""
    records = module.__dict__.setdefault(_ATTR, {})
    records[param_name] = record


def get_quant_record(module: nn.Module, param_name: str) -> QuantRecord | None:
    return module.__dict__.get(_ATTR, {}).get(param_name)


def clear_quant_records(model: nn.Module) -> int:
    """Forget every record in ``model`` (returns how many): for when its weights are restored to floats, e.g.
    by ``load_state_dict``, which replaces the values but would leave their stale grids behind for export."""
    count = 0
    for module in model.modules():
        count += len(module.__dict__.pop(_ATTR, {}))
    return count


def quant_records(model: nn.Module) -> dict[str, QuantRecord]:
    """All records in ``model``, keyed by the parameter's full name."""
    found: dict[str, QuantRecord] = {}
    for module_name, module in model.named_modules():
        for param_name, record in module.__dict__.get(_ATTR, {}).items():
            found[f"{module_name}.{param_name}" if module_name else param_name] = record
    return found


class OffGridWeightWarning(UserWarning):
    """A quantized weight was not on its record's grid and was re-quantized with the record's scales."""


@dataclass(frozen=True)
class GridDrift:
    """How far re-quantizing a weight with its record's scales moves it."""

    changed: int  # values moved by more than the tolerance
    numel: int
    relative_rms: float  # ‖Ŵ − W‖ / ‖W‖
    max_abs: float  # max |Ŵ − W|

    def describe(self, name: str) -> str:
        return (f"{name}: the weight is no longer on its quantization grid (changed after quantization?); "
                f"re-quantized with its stored scales: {self.changed} of {self.numel} values change, relative "
                f"RMS error {self.relative_rms:.3g}, max abs change {self.max_abs:.3g}")


def requantize_with_record(weight: Tensor, record: QuantRecord) -> tuple[Tensor, GridDrift | None]:
    """Integers (rows, cols) of ``weight`` on ``record``'s grid and, if the weight was not on it, the drift."""
    w = as_matrix(weight.detach()).float()  # (rows, cols)
    s = record.scheme
    q = quantize(w, record.scale, record.zero, s)
    w_new = dequantize(q, record.scale, record.zero, s).to(weight.dtype).float()  # as it would be loaded
    step = broadcast_qparams(record.scale.float().abs(), s, w.shape[1])  # (rows, cols)
    moved = (w_new - w).abs() > ON_GRID_TOLERANCE * step
    if not bool(moved.any()):
        return q, None
    delta = (w_new - w).double()
    drift = GridDrift(int(moved.sum()), w.numel(), float(delta.norm() / w.double().norm().clamp_min(1e-30)),
                      float(delta.abs().max()))
    return q, drift


def record_integers(name: str, weight: Tensor, record: QuantRecord) -> Tensor:
    """The integers (rows, cols) to store for ``weight``: exactly its own when it is on the record's grid,
    else re-quantized with the record's scales and an :class:`OffGridWeightWarning` naming ``name``."""
    q, drift = requantize_with_record(weight, record)
    if drift is not None:
        warnings.warn(drift.describe(name), OffGridWeightWarning, stacklevel=2)
    return q


def off_grid_weights(model: nn.Module) -> dict[str, GridDrift]:
    """Every recorded weight of ``model`` that saving or packing would re-quantize, with its drift."""
    found = {}
    with torch.no_grad():
        for name, record in quant_records(model).items():
            _, drift = requantize_with_record(model.get_parameter(name), record)
            if drift is not None:
                found[name] = drift
    return found
