"""GPTQ weight quantization (``quant.gptq``): RTN's integer grid, with each column's rounding error
compensated on the remaining columns using calibration-data Hessians, one transformer block at a time.

The method leaves dequantized float weights and a :class:`QuantRecord` on every quantized Linear, just
like RTN, so the slimkit exporter stores packed integers; the record's scale and zero point reproduce
the GPTQ weights exactly. Like every :class:`~slimkit.calib.layer_method.LayerSequentialMethod`, the
weights are rewritten during ``calibrate``; ``finalize`` only reports.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from slimkit.calib.layer_method import LayerSequentialMethod
from slimkit.calib.stats import InputStats
from slimkit.config import BaseConfig
from slimkit.method import register
from slimkit.quantize.gguf_grid import GGUFGrid, apply_gguf_grid
from slimkit.quantize.gptq_math import gptq_quantize
from slimkit.quantize.primitives import QuantScheme
from slimkit.quantize.record import QuantRecord, set_quant_record
from slimkit.targets import Target


class GroupQuantConfig(BaseConfig):
    """Integer grid fields shared by the calibrated weight quantizers (same meaning as RTNConfig's).

    ``granularity`` picks one scale per tensor, per output channel, or per ``group_size`` input
    columns (a ragged last group is allowed). ``gguf`` (``q4_0``, ``q4_1``, ``q5_0``, ``q5_1``, ``q8_0``)
    quantizes onto that llama.cpp block type exactly (group 32, fp16 scales by llama.cpp's rule); it fixes
    the four grid fields, and the GGUF export keeps every value.
    """

    method: str
    bits: int = Field(4, ge=2, le=8)
    symmetric: bool = True
    granularity: Literal["tensor", "channel", "group"] = "group"
    group_size: int | None = Field(128, ge=1)
    gguf: GGUFGrid | None = None

    _gguf_fixes_grid = model_validator(mode="before")(apply_gguf_grid)

    @model_validator(mode="after")
    def _group_needs_size(self) -> GroupQuantConfig:
        if (self.granularity == "group") != (self.group_size is not None):
            raise ValueError("group_size is required with granularity 'group' and only allowed with it "
                             "(write group_size: null for 'channel' or 'tensor')")
        return self

    def scheme(self) -> QuantScheme:
        return QuantScheme(self.bits, self.symmetric, self.granularity, self.group_size, gguf=self.gguf is not None)


class GPTQConfig(GroupQuantConfig):
    """GPTQ: calibrated, error-compensating weight quantization.

    ``damp`` is the Hessian dampening as a fraction of its mean diagonal; ``block_size`` the number of
    columns per lazy-batch update; ``act_order`` quantizes columns with large activations first (on by
    default: on SmolLM2 int4 g128 it closed 71% of RTN's perplexity gap instead of 57%; groups stay
    contiguous, so the stored format is the same).
    """

    method: Literal["quant.gptq"] = "quant.gptq"
    damp: float = Field(0.01, gt=0.0, le=1.0)
    block_size: int = Field(128, ge=1)
    act_order: bool = True

    needs_calibration = True


@register(GPTQConfig)
class GPTQMethod(LayerSequentialMethod[GPTQConfig]):
    """Sequential GPTQ over the model's transformer blocks: each Linear is quantized with its block's Hessian."""

    label = "GPTQ"

    def __init__(self, config: GPTQConfig) -> None:
        super().__init__(config)
        self._loss = 0.0
        self._params = 0

    def compress_linear(self, target: Target, stats: InputStats) -> None:
        cfg, scheme, weight = self.config, self.config.scheme(), target.param
        result = gptq_quantize(weight.data, stats.hessian(), scheme, damp=cfg.damp, block_size=cfg.block_size,
                               act_order=cfg.act_order)
        with torch.no_grad():
            weight.copy_(result.weight.to(weight.dtype))
        set_quant_record(target.module, target.param_name, QuantRecord(scheme, result.scale, result.zero))
        self._loss += result.loss
        self._params += weight.numel()

    def summary(self) -> dict[str, Any]:
        return {"quantized_params": self._params, "gptq_loss": round(self._loss, 4)}
