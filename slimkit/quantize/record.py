"""QuantRecord: the quantization parameters that a quantized weight carries until it is saved.

A quantization method leaves the weight as dequantized floats (so the model runs unchanged) and
attaches a record with the scheme, scales and zero points. The slimkit exporter uses the record to
store the integers instead of floats; the loader attaches it again, so a reloaded model can be
re-saved packed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from slimkit.quantize.primitives import QuantScheme

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


def quant_records(model: nn.Module) -> dict[str, QuantRecord]:
    """All records in ``model``, keyed by the parameter's full name."""
    found: dict[str, QuantRecord] = {}
    for module_name, module in model.named_modules():
        for param_name, record in module.__dict__.get(_ATTR, {}).items():
            found[f"{module_name}.{param_name}" if module_name else param_name] = record
    return found
