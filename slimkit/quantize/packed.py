"""Packed quantized linear layers: integer weights in memory and on disk, computed by real CPU kernels.

Every packed layer keeps the same portable state (saved by ``slimkit.save``): ``qdata``, the weight's
integers bit-packed with :mod:`slimkit.quantize.packing` (``scheme.codes(q)``, ``bits`` bits each), ``scale``
(out, n_groups) float32, ``zero`` (out, n_groups) uint8 for affine schemes, and an optional float
``bias``. From that state each class derives its kernel's own layout when built or loaded:

* :class:`Int4WeightLinear`, chosen for 4-bit records whose groups the int4 kernel can express
  (out % 16 == 0, in % 2 == 0, a kernel group of 32/64/128/256 dividing both the record group and
  ``in``; per-channel and ragged groups map onto smaller kernel groups exactly). Runs in bf16.
* :class:`Int8WeightLinear`, chosen for 8-bit symmetric per-channel / per-tensor records with
  ``in % 16 == 0`` when the model runs in bf16. Runs in bf16.
* :class:`Int8DynamicLinear`, int8 per-channel weights with activations quantized per call (fbgemm);
  runs in float32, fast at every batch size.
* :class:`DequantLinear`, the fallback for everything else (2/3/5..7-bit, binary, ternary, shapes the kernels
  refuse): dequantizes once into a cached float weight and uses ``F.linear``; it saves disk, not RAM
  or time.

The integers are exactly the record's. The bf16 kernels take bf16 scales and zeros, so their weights
equal the record's up to bf16 rounding of the scales (relative 2^-9), the same order as bf16
activation rounding. Packed layers are CPU modules; ``.to(dtype)`` keeps their integers and scales
exact and only converts ``bias``.

Each module records the path it really computes with in ``compute`` (also in its header spec): a
kernel's own words ("int4 weights, bf16 compute", "int8 dynamic: int8 activations and weights,
fbgemm"), or a dequantize-then-matmul fallback when the kernel is missing on the machine that built or
loaded it (a file saved with int4 kernels and loaded where torch has none still runs, and says so).

The slimkit format learns of packed layers from this module: it registers the ``packed`` module restorer
(:func:`packed_header` on save, :func:`install_packed` on load) with :mod:`slimkit.export.registry`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.export.registry import FormatError, register_module_restorer
from slimkit.quantize import kernel_probe, kernels
from slimkit.quantize.dequant_call import DequantLayout, dequant_layout, dequantize_per_call, supports_per_call
from slimkit.quantize.packing import pack_bits, packed_nbytes, unpack_bits
from slimkit.quantize.primitives import QuantScheme, dequantize

_EXACT_BUFFERS = ("qdata", "scale", "zero")


def _n_groups(scheme: QuantScheme, in_features: int) -> int:
    return math.ceil(in_features / scheme.group_width(in_features)) if scheme.granularity == "group" else 1


class PackedLinear(nn.Module, ABC):
    """Base of the packed layers: portable integer state plus a kernel-specific layout derived from it."""

    kernel: ClassVar[str]
    qdata: Tensor  # (ceil(out · in · bits / 8),) uint8
    scale: Tensor  # (out, n_groups) float32

    def __init__(self, in_features: int, out_features: int, scheme: QuantScheme, has_bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        rows, groups = out_features, _n_groups(scheme, in_features)
        self.register_buffer("qdata", torch.zeros(packed_nbytes(rows * in_features, scheme.bits), dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(rows, groups))
        self.zero: Tensor | None
        if scheme.symmetric:
            self.zero = None
        else:
            self.register_buffer("zero", torch.zeros(rows, groups, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(rows), requires_grad=False) if has_bias else None
        self.compute = ""  # the path build_kernel chose, in words
        self._fallback_weight: Tensor | None = None  # (out, in) when no kernel runs this layer here
        self.routes = kernel_probe.LayerRoutes()  # which calls use the kernel, which dequantize per call
        self._dequant: DequantLayout | None = None

    @classmethod
    def supports(cls, scheme: QuantScheme, out_features: int, in_features: int) -> bool:
        """Whether this kernel can run a weight of this scheme and shape exactly."""
        return True

    @classmethod
    def from_integers(cls, q: Tensor, scale: Tensor, zero: Tensor, scheme: QuantScheme, bias: Tensor | None,
                      **kwargs: Any) -> PackedLinear:
        """Build from integers ``q`` (out, in) on the scheme's grid and their ``scale``/``zero`` (out, n_groups)."""
        out_features, in_features = q.shape
        if not cls.supports(scheme, out_features, in_features):
            raise ValueError(f"{cls.kernel} cannot run a {out_features}×{in_features} weight with {scheme}")
        module = cls(in_features, out_features, scheme, bias is not None, **kwargs)
        with torch.no_grad():
            module.qdata.copy_(pack_bits(scheme.codes(q), scheme.bits))
            module.scale.copy_(scale)
            if module.zero is not None:
                module.zero.copy_(zero.to(torch.uint8))
            if module.bias is not None and bias is not None:
                module.bias.copy_(bias)
        module.rebuild()
        return module

    def integers(self) -> Tensor:
        """The weight's integers (out, in) on the scheme's grid, int16."""
        numel = self.out_features * self.in_features
        u = unpack_bits(self.qdata, self.scheme.bits, numel).reshape(self.out_features, self.in_features)
        return self.scheme.levels(u)

    def zero_point(self) -> Tensor:
        """Zero points (out, n_groups) as float (zeros for symmetric schemes)."""
        return self.zero.float() if self.zero is not None else torch.zeros_like(self.scale)

    def dequantized_weight(self) -> Tensor:
        """The weight the integers and scales stand for, float32 (out, in), exactly as the QuantRecord gives it."""
        return dequantize(self.integers(), self.scale, self.zero_point(), self.scheme)

    def spec(self) -> dict[str, Any]:
        """JSON description from which :func:`packed_from_spec` rebuilds an empty module of this layout."""
        s = self.scheme
        return {"kernel": self.kernel, "in_features": self.in_features, "out_features": self.out_features,
                "bits": s.bits, "symmetric": s.symmetric, "granularity": s.granularity,
                "group_size": s.group_size, "kind": s.kind, "bias": self.bias is not None,
                "compute": self.compute}

    @property
    def falls_back(self) -> bool:
        """Whether this layer computes by dequantize-then-matmul instead of an integer kernel."""
        return self._fallback_weight is not None

    def build_fallback(self, dtype: torch.dtype, why: str) -> None:
        """Compute as ``F.linear`` on the weight dequantized once to ``dtype`` (no integer kernel)."""
        self._fallback_weight = self.dequantized_weight().to(dtype)  # (out, in)
        name = self.scheme.kind if self.scheme.kind != "int" else f"{self.scheme.bits}-bit"
        self.compute = f"{name} weights dequantized to {str(dtype).removeprefix('torch.')}, then matmul ({why})"

    def rebuild(self) -> None:
        """Derive the kernel's layout, then measure (once per shape) which calls should dequantize instead."""
        self.build_kernel()
        self.routes, self._dequant = kernel_probe.LayerRoutes(), None
        s, out, n_in = self.scheme, self.out_features, self.in_features
        if self.falls_back or not kernel_probe.probe_enabled() or not supports_per_call(s, out, n_in):
            return
        self._dequant = dequant_layout(self.scale, self.zero_point(), s, out, n_in)
        self.routes = kernel_probe.cached_routes((self.kernel, s, out, n_in), self._route_paths, n_in, out)
        if {self.routes.few_rows, self.routes.many_rows} == {kernel_probe.KERNEL}:
            self._dequant = None
        if self.routes.describe():
            self.compute += f"; {self.routes.describe()}"

    def _route_paths(self) -> dict[str, Any]:
        paths: dict[str, Any] = {kernel_probe.KERNEL: self.matmul}
        for dtype in (torch.float32, torch.bfloat16) if kernels.cpu_has_native_bf16() else (torch.float32,):
            paths[f"dequant-{str(dtype).removeprefix('torch.')}"] = lambda x, dt=dtype: self._dequant_matmul(x, dt)
        return paths

    def _dequant_matmul(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        assert self._dequant is not None
        return F.linear(x.to(dtype), dequantize_per_call(self.qdata, self._dequant, dtype))

    @abstractmethod
    def build_kernel(self) -> None:
        """Derive the kernel's layout from the portable state (after construction, loading or ``.to``)."""

    @abstractmethod
    def matmul(self, x: Tensor) -> Tensor:
        """``x`` (M, in) times the weight, (M, out), in the kernel's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)  # (M, in)
        route = self.routes.route(rows.shape[0])
        if self._fallback_weight is not None:
            y = F.linear(rows.to(self._fallback_weight.dtype), self._fallback_weight).to(x.dtype)  # (M, out)
        elif route == kernel_probe.KERNEL:
            y = self.matmul(rows).to(x.dtype)  # (M, out)
        else:  # "dequant-float32" / "dequant-bfloat16": the probe found it faster here
            y = self._dequant_matmul(rows, getattr(torch, route.removeprefix("dequant-"))).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn: Any, recurse: bool = True) -> PackedLinear:
        exact = {name: self._buffers[name] for name in _EXACT_BUFFERS if self._buffers.get(name) is not None}
        super()._apply(fn, recurse)
        self._buffers.update(exact)  # integers and scales never change dtype
        self.rebuild()
        return self

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.rebuild()

    def extra_repr(self) -> str:
        s = self.scheme
        group = f", group_size={s.group_size}" if s.granularity == "group" else f", {s.granularity}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={s.bits}, "
                f"{'symmetric' if s.symmetric else 'affine'}{group}, bias={self.bias is not None}")


class Int4WeightLinear(PackedLinear):
    """4-bit weights on the int4 CPU kernel; activations run in bf16 (cast in and out if needed)."""

    kernel = "int4-weight"

    @classmethod
    def supports(cls, scheme: QuantScheme, out_features: int, in_features: int) -> bool:
        return (scheme.kind == "int" and scheme.bits == 4
                and cls.kernel_group(scheme, out_features, in_features) is not None)

    @staticmethod
    def kernel_group(scheme: QuantScheme, out_features: int, in_features: int) -> int | None:
        width = scheme.group_width(in_features) if scheme.granularity == "group" else in_features
        return kernels.int4_kernel_group(out_features, in_features, width)

    def build_kernel(self) -> None:
        s = self.scheme
        group = self.kernel_group(s, self.out_features, self.in_features)
        if group is None:  # e.g. loaded where torch has no int4 CPU kernel
            self.build_fallback(kernels.KERNEL_DTYPE, "no int4 kernel for this layer on this machine")
            return
        self._fallback_weight, self.compute = None, "int4 weights, bf16 compute (int4 kernel)"
        width = s.group_width(self.in_features) if s.granularity == "group" else self.in_features
        # The kernel computes (u - 8) · scale + zero with u = q - qmin, so zero = (8 + qmin - z) · scale.
        offset = (8 + s.qmin - self.zero_point()) * self.scale  # (out, n_groups)
        repeat, n_kernel_groups = width // group, self.in_features // group
        scale_k = self.scale.repeat_interleave(repeat, dim=1)[:, :n_kernel_groups]  # (out, in/group)
        offset_k = offset.repeat_interleave(repeat, dim=1)[:, :n_kernel_groups]
        self._group = group
        self._scale_zero = torch.stack([scale_k.t(), offset_k.t()], dim=-1).to(kernels.KERNEL_DTYPE).contiguous()
        self._packed = kernels.pack_int4_weight(self.integers() - s.qmin)  # (out, in/2) uint8

    def matmul(self, x: Tensor) -> Tensor:
        return kernels.int4_weight_mm(x, self._packed, self._group, self._scale_zero)


def _per_channel_int8(scheme: QuantScheme) -> bool:
    per_channel = scheme.granularity in ("channel", "tensor")
    return scheme.kind == "int" and scheme.bits == 8 and scheme.symmetric and per_channel


class Int8WeightLinear(PackedLinear):
    """8-bit symmetric per-channel weights on the int8 weight-only kernel; activations run in bf16."""

    kernel = "int8-weight"

    @classmethod
    def supports(cls, scheme: QuantScheme, out_features: int, in_features: int) -> bool:
        return _per_channel_int8(scheme) and kernels.int8_weight_kernel_fits(in_features)

    def build_kernel(self) -> None:
        if not kernels.int8_weight_kernel_fits(self.in_features):
            self.build_fallback(kernels.KERNEL_DTYPE, "no int8 weight-only kernel for this layer on this machine")
            return
        self._fallback_weight, self.compute = None, "int8 weights, bf16 compute (int8 weight-only kernel)"
        self._weight = self.integers().to(torch.int8).contiguous()  # (out, in)
        self._scales = self.scale[:, 0].to(kernels.KERNEL_DTYPE).contiguous()  # (out,)

    def matmul(self, x: Tensor) -> Tensor:
        return kernels.int8_weight_mm(x, self._weight, self._scales)


class Int8DynamicLinear(PackedLinear):
    """8-bit symmetric per-channel weights on fbgemm; float32 activations quantized to int8 per call."""

    kernel = "int8-dynamic"

    @classmethod
    def supports(cls, scheme: QuantScheme, out_features: int, in_features: int) -> bool:
        return _per_channel_int8(scheme) and kernels.dynamic_int8_available()

    def build_kernel(self) -> None:
        if not kernels.dynamic_int8_available():
            self.build_fallback(torch.float32, "no fbgemm/x86 quantized engine on this machine")
            return
        self._packed = kernels.prepack_dynamic_int8(self.integers(), self.scale[:, 0])
        self._handle = kernels.register_prepacked(self, self._packed)
        self.reduce_range = kernels.dynamic_int8_reduce_range()  # decided on the CPU that runs it, not saved
        activations = "7-bit activations (no VNNI)" if self.reduce_range else "int8 activations"
        self._fallback_weight, self.compute = None, f"int8 dynamic: {activations} and int8 weights, fbgemm"

    def matmul(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # the same fbgemm call, as an op dynamo keeps in the graph
            return torch.ops.slimkit.dynamic_int8_linear(x, self._handle, self.out_features, self.reduce_range)
        return kernels.dynamic_int8_mm(x, self._packed, self.reduce_range)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_packed" in state:  # a copy (copy.deepcopy, pickle) needs its own handle
            self._handle = kernels.register_prepacked(self, self._packed)


class DequantLinear(PackedLinear):
    """Any bit width and shape: a float weight dequantized once (in ``compute_dtype``), then ``F.linear``."""

    kernel = "dequant"

    def __init__(self, in_features: int, out_features: int, scheme: QuantScheme, has_bias: bool,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(in_features, out_features, scheme, has_bias)
        self.compute_dtype = compute_dtype

    def build_kernel(self) -> None:
        self.build_fallback(self.compute_dtype, "no integer kernel for this grid or shape")

    def matmul(self, x: Tensor) -> Tensor:
        assert self._fallback_weight is not None
        return F.linear(x.to(self.compute_dtype), self._fallback_weight)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "compute_dtype": str(self.compute_dtype).removeprefix("torch.")}


PACKED_KERNELS: dict[str, type[PackedLinear]] = {
    cls.kernel: cls for cls in (Int4WeightLinear, Int8WeightLinear, Int8DynamicLinear, DequantLinear)
}


def packed_from_spec(spec: dict[str, Any]) -> PackedLinear:
    """An empty packed module (zero state) of the layout ``spec`` describes; ``load_state_dict`` fills it."""
    try:
        cls = PACKED_KERNELS[spec["kernel"]]
    except KeyError:
        raise ValueError(f"unknown packed kernel {spec.get('kernel')!r}; known: {sorted(PACKED_KERNELS)}") from None
    scheme = QuantScheme(spec["bits"], spec["symmetric"], spec["granularity"], spec["group_size"],
                         spec.get("kind", "int"))
    extra = {"compute_dtype": getattr(torch, spec["compute_dtype"])} if "compute_dtype" in spec else {}
    module = cls(spec["in_features"], spec["out_features"], scheme, spec["bias"], **extra)
    module.rebuild()
    return module


def packed_modules(model: nn.Module) -> dict[str, PackedLinear]:
    """Every packed module of ``model`` by its path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PackedLinear)}


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path`` (dotted module name) inside ``model``."""
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s float parameters outside packed modules (float32 if it has none)."""
    inside = {id(p) for m in packed_modules(model).values() for p in m.parameters()}
    for p in model.parameters():
        if p.is_floating_point() and id(p) not in inside:
            return p.dtype
    return torch.float32


def packed_header(model: nn.Module) -> dict[str, Any] | None:
    """The ``packed`` section of the slimkit header: the float dtype and each packed module's spec.

    ``None`` for a float32 model without packed modules (a bf16 model records its dtype so that it
    loads back as bf16).
    """
    modules, dtype = packed_modules(model), float_dtype(model)
    if not modules and dtype == torch.float32:
        return None
    return {"float_dtype": str(dtype).removeprefix("torch."),
            "modules": {name: m.spec() for name, m in modules.items()}}


def check_packed_section(section: Any, where: str) -> None:
    """The ``packed`` header section's shape, before anything is built from it."""
    modules = section.get("modules") if isinstance(section, dict) else None
    if not (isinstance(section, dict) and isinstance(section.get("float_dtype"), str) and isinstance(modules, dict)
            and all(isinstance(spec, dict) for spec in modules.values())):
        raise FormatError(f"{where} must be {{float_dtype: str, modules: {{path: spec}}}}, got {section!r}")


def install_packed(model: nn.Module, section: dict[str, Any]) -> None:
    """Turn a freshly built float skeleton into the saved packed layout, ready for ``load_state_dict``.

    The float parts are converted to the recorded dtype first, then each recorded path gets an empty
    packed module of the recorded kernel (no pickle: everything comes from the JSON ``section``).
    """
    dtype = getattr(torch, str(section["float_dtype"]), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"packed section: {section['float_dtype']!r} is not a float dtype")
    model.to(dtype)
    for path, spec in section["modules"].items():
        # .to(dtype) converts only the bias, as packing did before saving (integers and scales stay exact)
        replace_module(model, path, packed_from_spec(spec).to(dtype))


def _restore_packed(model: nn.Module, state: dict[str, Tensor], section: dict[str, Any]) -> None:
    install_packed(model, section)


# The slimkit format saves packed_header(model) as the header's 'packed' section and calls install_packed on load.
register_module_restorer("packed", _restore_packed, header_spec=packed_header, check_spec=check_packed_section)
