"""Thin, capability-checked wrappers around the low-bit matmul kernels that torch ships for x86 CPUs.

Three kernels are used, each with the constraints measured on torch 2.13 (see ``facts.md``):

* int4 weight-only (``aten._weight_int4pack_mm_for_cpu``): unsigned 4-bit weights, per-group
  ``(scale, zero)`` with ``w = (u - 8) · scale + zero``; output features divisible by 16, input features
  even and divisible by the kernel group (32, 64, 128 or 256). Fast only with bf16 activations, so
  :func:`int4_weight_mm` always runs it in bf16.
* int8 weight-only (``aten._weight_int8pack_mm``): signed int8 weights, one scale per output channel,
  input features divisible by 16 (other widths crash the process, so they are refused); fast only
  with bf16 activations, so :func:`int8_weight_mm` always runs it in bf16.
* int8 dynamic (``quantized.linear_dynamic``, fbgemm / x86 engine): int8 per-channel weights, float32
  activations quantized per call. The packed weight is an opaque fbgemm object, rebuilt after loading.
  fbgemm picks one activation scale for the whole input; :func:`dynamic_int8_mm` makes it per token.
  Without VNNI, x86 multiplies u8 × s8 pairs into int16 (``vpmaddubsw``), which saturates on full-range
  activations: there the activations are quantized to 7 bits (``reduce_range``), as torch.ao does.

Each wrapper takes and returns 2-D tensors; reshaping and dtype policy belong to the packed modules.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import Tensor

#: Group sizes the int4 CPU kernel accepts, largest first (the largest exact one is preferred).
INT4_KERNEL_GROUPS = (256, 128, 64, 32)
KERNEL_DTYPE = torch.bfloat16


def int4_kernel_available() -> bool:
    """Whether this torch build has the int4 weight-only CPU kernel."""
    aten = torch.ops.aten
    return hasattr(aten, "_weight_int4pack_mm_for_cpu") and hasattr(aten, "_convert_weight_to_int4pack_for_cpu")


def int8_weight_kernel_fits(in_features: int) -> bool:
    """Whether the int8 weight-only kernel exists here and takes this input width.

    torch 2.13's CPU kernel reads past the end of rows whose length is not a multiple of 16 and
    crashes the process (segmentation fault), so such layers are refused here, never attempted.
    """
    return hasattr(torch.ops.aten, "_weight_int8pack_mm") and in_features % 16 == 0


def dynamic_int8_available() -> bool:
    """Whether the fbgemm/x86 dynamic int8 linear is usable (needs the x86 or fbgemm engine)."""
    engines = torch.backends.quantized.supported_engines
    return hasattr(torch.ops.quantized, "linear_dynamic") and ("x86" in engines or "fbgemm" in engines)


#: CPU features that multiply u8 × s8 straight into int32 accumulators, so 8-bit activations cannot saturate.
VNNI_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_has_vnni() -> bool:
    """Whether this CPU has AVX512-VNNI, AVX-VNNI or AMX-INT8 (``torch.cpu.get_capabilities``).

    ``torch.backends.cpu.get_cpu_capability()`` only names the vector width ("AVX512" here, also on
    AVX-512 CPUs without VNNI), so the feature flags are read instead; unknown means no VNNI (the safe side).
    """
    return _cpu_has_any(VNNI_FEATURES)


def _cpu_has_any(features: tuple[str, ...]) -> bool:
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return False
    capabilities = get_capabilities()
    return any(bool(capabilities.get(feature, False)) for feature in features)


#: CPU features that compute bf16 products in hardware; without them torch emulates bf16 through float32.
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16; unknown means no)."""
    return _cpu_has_any(NATIVE_BF16_FEATURES)


def dynamic_int8_reduce_range() -> bool:
    """Whether dynamic int8 must quantize activations to 7 bits on this CPU (no VNNI: int16 saturation)."""
    return not cpu_has_vnni()


def int4_kernel_group(out_features: int, in_features: int, record_group_width: int) -> int | None:
    """The int4 kernel group that reproduces a record's groups exactly, or ``None`` if none does.

    A record group of width W (ragged last group allowed) is expressed exactly by any kernel group g
    that divides both W and ``in_features``: each record scale is repeated W/g times.
    """
    if not int4_kernel_available() or out_features % 16 or in_features % 2:
        return None
    for g in INT4_KERNEL_GROUPS:
        if record_group_width % g == 0 and in_features % g == 0:
            return g
    return None


def pack_int4_weight(unsigned: Tensor) -> Tensor:
    """Convert unsigned 4-bit values (out, in) in [0, 15] to the kernel's packed uint8 layout (out, in/2)."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned.to(torch.int32).contiguous(), 8)


def int4_weight_mm(x: Tensor, packed: Tensor, group: int, scale_zero: Tensor) -> Tensor:
    """``x`` (M, in) times the packed int4 weight; ``scale_zero`` (in/group, out, 2) bf16. Returns (M, out) bf16."""
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(KERNEL_DTYPE).contiguous(), packed, group, scale_zero)


def int8_weight_mm(x: Tensor, weight: Tensor, scales: Tensor) -> Tensor:
    """``x`` (M, in) times int8 ``weight`` (out, in) with per-channel bf16 ``scales`` (out,). Returns (M, out) bf16."""
    if not int8_weight_kernel_fits(weight.shape[1]):
        raise ValueError(f"the int8 weight-only kernel needs in_features % 16 == 0, got {weight.shape[1]}")
    return torch.ops.aten._weight_int8pack_mm(x.to(KERNEL_DTYPE).contiguous(), weight, scales)


def prepack_dynamic_int8(weight: Tensor, scales: Tensor) -> object:
    """fbgemm-prepack int8 ``weight`` (out, in) with per-channel ``scales`` (out,) (symmetric, zero point 0)."""
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # torch 2.13 deprecates quantized tensor creation; fbgemm's prepack still needs one.
        warnings.simplefilter("ignore", UserWarning)
        qweight = torch._make_per_channel_quantized_tensor(weight.to(torch.int8), scales.double(), zero_points, 0)
        return torch.ops.quantized.linear_prepack(qweight, None)


def dynamic_int8_mm(x: Tensor, packed: object, reduce_range: bool) -> Tensor:
    """``x`` (M, in) float32, quantized per call to 8 bits per token (7 with ``reduce_range``, see
    :func:`dynamic_int8_reduce_range`), times the prepacked weight. Returns (M, out).

    fbgemm quantizes the whole input with one scale, so one loud token (an LLM's first token is often
    100× the others) flattens every other row onto a few levels: on SmolLM2 that alone took perplexity
    from 15.2 to 24.7. Dividing each row by its max |x| first (and multiplying the output back, exact
    because the product is linear per row) gives every token the full 8-bit range: 15.6. A single row
    (decoding) is already per token and skips the two extra passes.
    """
    x = x.float().contiguous()
    if x.shape[0] <= 1:
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range)
    row_max = x.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)  # (M, 1)
    return torch.ops.quantized.linear_dynamic(x / row_max, packed, reduce_range) * row_max


# torch.compile traces the two aten kernels above as they are, but not fbgemm's packed weight (a TorchScript
# object): each call broke the compiled decode step into one graph per layer, slower than eager. Behind a
# custom op that names the packed weight by a handle, the step stays one graph and inductor calls fbgemm.
_PREPACKED: dict[int, object] = {}


def register_prepacked(owner: object, packed: object) -> int:
    """Make ``packed`` reachable by :func:`dynamic_int8_linear` under a handle, forgotten when ``owner`` dies."""
    handle = id(owner)
    if handle not in _PREPACKED:
        weakref.finalize(owner, _PREPACKED.pop, handle, None)
    _PREPACKED[handle] = packed
    return handle


@torch.library.custom_op("slimkit::dynamic_int8_linear", mutates_args=())
def dynamic_int8_linear(x: Tensor, handle: int, out_features: int, reduce_range: bool) -> Tensor:
    """:func:`dynamic_int8_mm` with the weight registered under ``handle``; (M, out_features) float32."""
    return dynamic_int8_mm(x, _PREPACKED[handle], reduce_range)


@dynamic_int8_linear.register_fake
def _dynamic_int8_linear_shape(x: Tensor, handle: int, out_features: int, reduce_range: bool) -> Tensor:
    return x.new_empty(x.shape[0], out_features, dtype=torch.float32)
