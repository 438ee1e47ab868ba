"""Round-to-nearest (RTN) weight quantization: the data-free baseline every other method must beat.

Besides integer grids (1–8 bits affine, 2–8 symmetric) it offers binary weights (sign × per-channel
mean |w|, 1 bit on disk) and TWN ternary weights ({-α, 0, +α}, 2 bits on disk) via ``scheme``.
``scale_search: mse`` picks each group's scale among shrunk min-max scales by the least squared error
against the original weights (data-free, like llama.cpp's searched quants; AWQ's clipping is the
activation-weighted version).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.quantize.gguf_grid import GGUFGrid, apply_gguf_grid
from slimkit.quantize.primitives import (
    MSE_SEARCH_RATIOS,
    GridKind,
    QuantScheme,
    as_matrix,
    dequantize,
    quantize,
    quantize_dequantize,
    searched_qparams,
)
from slimkit.quantize.record import QuantRecord, set_quant_record
from slimkit.targets import resolve_targets

_GRID_BITS = {"binary": 1, "ternary": 2}


class WeightGridFields(BaseConfig):
    """Weight grid fields shared by ``quant.rtn`` and ``quant.qat``.

    ``granularity`` picks one scale per tensor, per output channel, or per ``group_size`` input
    columns (a ragged last group is allowed). ``scheme`` picks the grid: ``int`` (``bits`` 1–8 affine,
    2–8 symmetric; 8 when left out), ``binary`` (±α, α = mean |w|) or ``ternary`` (TWN {-α, 0, +α});
    binary and ternary fix the bit width themselves (1 and 2 bits on disk), so ``bits`` and
    ``symmetric`` must be left out for them.
    """

    scheme: GridKind = "int"
    bits: int | None = Field(None, ge=1, le=8)
    symmetric: bool = True
    granularity: Literal["tensor", "channel", "group"] = "channel"
    group_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_grid(self) -> WeightGridFields:
        if (self.granularity == "group") != (self.group_size is not None):
            raise ValueError("group_size is required with granularity 'group' and only allowed with it")
        if self.scheme != "int" and (self.bits is not None or not self.symmetric):
            raise ValueError(f"scheme '{self.scheme}' fixes its own grid: leave out bits and symmetric")
        if self.scheme == "int" and self.symmetric and self.bits == 1:
            raise ValueError("1-bit needs symmetric: false (affine) or scheme: binary")
        return self

    def quant_scheme(self) -> QuantScheme:
        """The :class:`QuantScheme` this config describes."""
        bits = _GRID_BITS.get(self.scheme, self.bits if self.bits is not None else 8)
        return QuantScheme(bits, self.symmetric, self.granularity, self.group_size, self.scheme)


class RTNConfig(WeightGridFields):
    """Round-to-nearest weight quantization on the grid described by :class:`WeightGridFields`.

    ``scale_search``: ``none`` uses min-max scales; ``mse`` shrinks each group's scale by the ratio in
    :data:`~slimkit.quantize.primitives.MSE_SEARCH_RATIOS` (1.0 down to 0.3) with the least squared error
    against the original weights (integer grids only). Weight error is not model error: on SmolLM2 int4
    g64 it raised weight SQNR from 19.8 to 20.35 dB but perplexity from 25.5 to 27.8 (fp32 18.6; 8 × 256
    pydoc tokens), since clipping a group's largest weights hurts more than rounding the rest; on
    Gaussian weights it cuts the error 26% at g128. Measure it on your model before keeping it.

    ``gguf`` (``q4_0``, ``q4_1``, ``q5_0``, ``q5_1``, ``q8_0``) quantizes onto that llama.cpp block type
    exactly (group 32, fp16 scales by llama.cpp's rule, :mod:`slimkit.quantize.gguf_grid`): it fixes
    ``bits``/``symmetric``/``granularity``/``group_size``, and the GGUF export keeps every value.
    """

    method: Literal["quant.rtn"] = "quant.rtn"
    scale_search: Literal["none", "mse"] = "none"
    gguf: GGUFGrid | None = None

    _gguf_fixes_grid = model_validator(mode="before")(apply_gguf_grid)

    @model_validator(mode="after")
    def _search_needs_int(self) -> RTNConfig:
        if self.scale_search != "none" and self.scheme != "int":
            raise ValueError(f"scale_search: {self.scale_search} needs scheme 'int' ({self.scheme} fixes its scale)")
        return self

    def quant_scheme(self) -> QuantScheme:
        return replace(super().quant_scheme(), gguf=self.gguf is not None)


def round_to_grid(w: Tensor, scheme: QuantScheme, scale_search: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(w_hat, scale, zero)`` for ``w`` (rows, cols): min-max RTN, or with searched scales (``mse``)."""
    if scale_search == "none":
        return quantize_dequantize(w, scheme)
    scale, zero = searched_qparams(w, scheme, MSE_SEARCH_RATIOS)
    return dequantize(quantize(w, scale, zero, scheme), scale, zero, scheme).to(w.dtype), scale, zero


@register(RTNConfig)
class RTNMethod(Method[RTNConfig]):
    """Quantize each targeted weight to the nearest grid point; no data needed."""

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        scheme = self.config.quant_scheme()
        targets = resolve_targets(model, self.config.targets, "quant.rtn")
        sq_err, sq_ref, count = 0.0, 0.0, 0
        for t in targets:
            w = t.param.data
            w_hat, scale, zero = round_to_grid(as_matrix(w), scheme, self.config.scale_search)
            sq_err += float((w_hat - as_matrix(w)).double().pow(2).sum())
            sq_ref += float(w.double().pow(2).sum())
            count += w.numel()
            with torch.no_grad():
                w.copy_(w_hat.reshape(w.shape))
            set_quant_record(t.module, t.param_name, QuantRecord(scheme, scale, zero))
        sqnr = 10 * torch.log10(torch.tensor(sq_ref / max(sq_err, 1e-30))).item()
        return {"layers": len(targets), "quantized_params": count, "bits": scheme.bits,
                "weight_sqnr_db": round(sqnr, 2)}
