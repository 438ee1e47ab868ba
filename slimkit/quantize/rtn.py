"""Round-to-nearest (RTN) weight quantization: the data-free baseline every other method must beat."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.quantize.primitives import QuantScheme, as_matrix, quantize_dequantize
from slimkit.quantize.record import QuantRecord, set_quant_record
from slimkit.targets import resolve_targets


class RTNConfig(BaseConfig):
    """Round-to-nearest weight quantization.

    ``granularity`` picks one scale per tensor, per output channel, or per ``group_size`` input
    columns (a ragged last group is allowed).
    """

    method: Literal["quant.rtn"] = "quant.rtn"
    bits: int = Field(8, ge=2, le=8)
    symmetric: bool = True
    granularity: Literal["tensor", "channel", "group"] = "channel"
    group_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _group_needs_size(self) -> RTNConfig:
        if (self.granularity == "group") != (self.group_size is not None):
            raise ValueError("group_size is required with granularity 'group' and only allowed with it")
        return self

    def scheme(self) -> QuantScheme:
        return QuantScheme(self.bits, self.symmetric, self.granularity, self.group_size)


@register(RTNConfig)
class RTNMethod(Method[RTNConfig]):
    """Quantize each targeted weight to the nearest grid point; no data needed."""

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        scheme = self.config.scheme()
        targets = resolve_targets(model, self.config.targets, "quant.rtn")
        sq_err, sq_ref, count = 0.0, 0.0, 0
        for t in targets:
            w = t.param.data
            w_hat, scale, zero = quantize_dequantize(as_matrix(w), scheme)
            sq_err += float((w_hat - as_matrix(w)).double().pow(2).sum())
            sq_ref += float(w.double().pow(2).sum())
            count += w.numel()
            with torch.no_grad():
                w.copy_(w_hat.reshape(w.shape))
            set_quant_record(t.module, t.param_name, QuantRecord(scheme, scale, zero))
        sqnr = 10 * torch.log10(torch.tensor(sq_ref / max(sq_err, 1e-30))).item()
        return {"layers": len(targets), "quantized_params": count, "weight_sqnr_db": round(sqnr, 2)}
