"""``quant.pack``: swap quantized Linear layers for packed layers that run real low-bit CPU kernels.

Quantization methods (RTN, GPTQ, AWQ) leave dequantized float weights plus a QuantRecord; this step
turns each targeted ``nn.Linear`` that carries a record into the packed module built from the record's
own integers (see :mod:`slimkit.quantize.packed` for when each kernel is chosen). Recipe::

    steps:
      - {method: quant.rtn, bits: 4, granularity: group, group_size: 64}
      - {method: quant.pack, kernel: auto}

``kernel: int8-dynamic`` also packs Linear layers without a record (quantizing their float weights
per channel to int8, like ``torch.ao.quantization.quantize_dynamic``); other kernels leave them float.
A record it cannot run (anything but 8-bit symmetric per-channel, e.g. int4) is refused with the
layer, its grid and the kernels that fit it: re-quantizing it to int8 would silently throw the
record's grid away.

The step's stats count the modules by kernel (``packed``) and by the path each one really computes
with (``compute``), dequantize-then-matmul fallbacks included.

The int4 and int8 weight-only kernels compute in bf16, so on a CPU with native bf16 (AVX512-BF16, AMX)
``activation_dtype: auto`` converts the rest of the model (embeddings, norms, attention, ``lm_head``) to
bf16 when it packs any weight-only layer. Elsewhere torch emulates bf16 (SmolLM2's bf16 prefill ran 6×
slower than float32 on an AVX2 CPU), so ``auto`` keeps the model's dtype and the packed layers cast their
inputs to bf16 and back; ``float32``/``bfloat16`` force either.

Each packed layer shape is also timed once (:mod:`slimkit.quantize.kernel_probe`): calls where
dequantizing the packed weight per call beats the kernel take that path. ``stats["probe"]`` gives, per
shape, the chosen path for one row and for many, and its speed relative to float32.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from slimkit.config import BaseConfig, Targets
from slimkit.method import Method, register
from slimkit.quantize.kernels import cpu_has_native_bf16
from slimkit.quantize.packed import PACKED_KERNELS, PackedLinear, float_dtype, replace_module
from slimkit.quantize.primitives import QuantScheme, compute_qparams, quantize
from slimkit.quantize.record import QuantRecord, get_quant_record, record_integers
from slimkit.targets import resolve_targets

Kernel = Literal["auto", "int8-dynamic", "int4-weight", "int8-weight", "dequant"]
_WEIGHT_ONLY = ("int4-weight", "int8-weight")
_INT8_CHANNEL = QuantScheme(8, True, "channel")


class PackConfig(BaseConfig):
    """Replace quantized Linear layers by packed integer layers running CPU kernels.

    ``kernel: auto`` picks int4-weight for 4-bit records the int4 kernel can run, int8-weight (bf16
    model) or int8-dynamic (float32 model) for 8-bit per-channel symmetric records, and the dequant
    fallback for everything else. An explicit int4-weight or int8-weight falls back to dequant for
    layers it cannot run (counted in the step's stats); an explicit int8-dynamic refuses records it
    cannot run. ``activation_dtype: auto`` runs the model in bf16 when any weight-only kernel is used and
    the CPU computes bf16 natively, else keeps its dtype.
    """

    method: Literal["quant.pack"] = "quant.pack"
    kernel: Kernel = "auto"
    activation_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    targets: Targets = Field(default_factory=lambda: Targets(module_types=("Linear",)))


def kernels_that_fit(scheme: QuantScheme, out_features: int, in_features: int) -> list[str]:
    """Every packed kernel that runs a record of ``scheme`` on an ``out × in`` weight exactly."""
    return [name for name, cls in PACKED_KERNELS.items() if cls.supports(scheme, out_features, in_features)]


def choose_kernel(requested: Kernel, scheme: QuantScheme | None, out_features: int, in_features: int,
                  activation_dtype: str, layer: str = "this layer") -> str | None:
    """The kernel one layer gets, or ``None`` to leave it float (no record, and not int8-dynamic).

    Raises:
        ValueError: ``int8-dynamic`` was asked for a record it cannot run (it would re-quantize it).
    """
    if scheme is None:
        return "int8-dynamic" if requested == "int8-dynamic" else None
    if requested == "auto":
        int8 = "int8-dynamic" if activation_dtype == "float32" else "int8-weight"
        candidates = ["int4-weight", int8]
    elif requested == "int8-dynamic":
        if PACKED_KERNELS["int8-dynamic"].supports(scheme, out_features, in_features):
            return "int8-dynamic"
        grid = f"{scheme.bits}-bit {'symmetric' if scheme.symmetric else 'affine'} {scheme.kind} ({scheme.granularity}"
        grid += f" {scheme.group_size})" if scheme.granularity == "group" else ")"
        raise ValueError(f"quant.pack: kernel int8-dynamic runs 8-bit symmetric per-channel weights, but {layer} "
                         f"is quantized {grid}; packing it would re-quantize it to int8. Kernels that fit it: "
                         f"{', '.join(kernels_that_fit(scheme, out_features, in_features))} (or kernel: auto)")
    else:
        candidates = [requested]
    for name in candidates:
        if PACKED_KERNELS[name].supports(scheme, out_features, in_features):
            return name
    return "dequant"


def pack_linear(name: str, linear: nn.Linear, record: QuantRecord | None, kernel: str,
                compute_dtype: torch.dtype = torch.float32) -> PackedLinear:
    """The packed module of ``kernel`` for the Linear ``name``, from ``record``'s integers when the kernel can
    use them (a weight that left the record's grid is re-quantized with a warning naming ``name``).

    Without a usable record (int8-dynamic only) the float weight is quantized per channel to int8.
    """
    cls = PACKED_KERNELS[kernel]
    w = linear.weight.detach().float()  # (out, in)
    if record is not None and cls.supports(record.scheme, *w.shape):
        scheme, scale, zero = record.scheme, record.scale, record.zero
        q = record_integers(f"{name}.weight", linear.weight, record)  # (out, in): exactly the record's integers
    elif kernel == "int8-dynamic":
        scheme = _INT8_CHANNEL
        scale, zero = compute_qparams(w, scheme)
        q = quantize(w, scale, zero, scheme)
    else:
        raise ValueError(f"{kernel} needs a QuantRecord it can run (got {record.scheme if record else None})")
    kwargs: dict[str, Any] = {"compute_dtype": compute_dtype} if kernel == "dequant" else {}
    bias = linear.bias.detach().float() if linear.bias is not None else None
    return cls.from_integers(q, scale, zero, scheme, bias, **kwargs)


@register(PackConfig)
class PackMethod(Method[PackConfig]):
    """Swap every targeted, quantized ``nn.Linear`` for its packed module; convert the rest if asked."""

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        cfg = self.config
        plan: list[tuple[str, nn.Linear, QuantRecord | None, str]] = []
        skipped = 0
        for t in resolve_targets(model, cfg.targets, "quant.pack"):
            record = get_quant_record(t.module, "weight")
            linear, kernel = t.module, None
            if isinstance(linear, nn.Linear) and t.param_name == "weight":
                scheme = record.scheme if record else None
                kernel = choose_kernel(cfg.kernel, scheme, linear.out_features, linear.in_features,
                                       cfg.activation_dtype, t.module_name)
            if kernel is None or not isinstance(linear, nn.Linear):
                skipped += 1
            else:
                plan.append((t.module_name, linear, record, kernel))
        dtype = self._activation_dtype(model, [k for *_, k in plan])
        packed = [pack_linear(name, linear, record, kernel, dtype) for name, linear, record, kernel in plan]
        for (name, *_), module in zip(plan, packed, strict=True):
            replace_module(model, name, module)
        if float_dtype(model) != dtype:
            model.to(dtype)  # packed modules keep their integers and scales exact
        counts = Counter(m.kernel for m in packed)
        fallback = sum(m.falls_back for m in packed) if cfg.kernel != "dequant" else 0
        probe = {f"{m.kernel} {m.out_features}×{m.in_features}": m.routes.summary() for m in packed if m.routes.ms}
        return {"packed": dict(sorted(counts.items())), "compute": dict(Counter(m.compute for m in packed)),
                "dequant_fallback": fallback, "left_float": skipped,
                "activation_dtype": str(dtype).removeprefix("torch."), "probe": probe}

    def _activation_dtype(self, model: nn.Module, kernels: list[str]) -> torch.dtype:
        if self.config.activation_dtype != "auto":
            return getattr(torch, self.config.activation_dtype)
        if any(k in _WEIGHT_ONLY for k in kernels) and cpu_has_native_bf16():
            return torch.bfloat16
        return float_dtype(model)
