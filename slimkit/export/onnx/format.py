"""The ``onnx`` export format: trace, optionally quantize, then check the file in real runtimes.

``slimkit export MODEL --format onnx --out model.onnx [--option precision=int4] [--option check=[onnxruntime,
openvino]]`` (or a recipe's ``export: {format: onnx, options: {...}}``). Precisions:

* ``fp32``: the traced float graph (quantized slimkit weights appear dequantized);
* ``int8-dynamic`` / ``int8-static``: :mod:`~slimkit.export.onnx.int8` (``int8-static`` needs ``calib``);
* ``int4``: every 4-bit slimkit weight (GPTQ / AWQ / RTN, fake-quantized or packed) as ``MatMulNBits`` holding
  slimkit's own integers and scales (:mod:`~slimkit.export.onnx.nbits`); other weights stay float.

Every runtime in ``check`` (ONNX Runtime always; ``openvino``, ``tvm``) runs the file on sample inputs and is
compared with the PyTorch float reference (:func:`~slimkit.export.onnx.graph.float_reference`): for a causal
LM a prefill and one decode step fed with the cache, so the KV-cache path is checked too; a calibrated
(int8-static) file on held-out examples of its calibration data spec (random inputs would leave its ranges).
The tolerance is relative to the largest reference output: 1e-4 for fp32 and int4 (the same weights; 2e-2
with ``accuracy_level`` 4, which quantizes activations to int8 inside the op) and 0.25 for the int8 forms,
whose activations are quantized (a coarse guard against a broken graph: their fidelity is measured by the
benchmark, e.g. the mean cosine of embeddings); ``tolerance`` overrides it. ``keep_float`` globs leave
matching Linears float in the int8 forms.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from slimkit.config import FrozenModel
from slimkit.export.formats import ExportFormat, ExportResult, RuntimeCheck, register_export_format
from slimkit.export.int_weights import IntWeight, integer_weights
from slimkit.export.onnx.graph import GraphSpec, empty_past, float_reference, graph_spec, text_feed, trace
from slimkit.export.onnx.runtimes import RUNNERS, RUNTIME_PACKAGES, differences, round_robin_ms
from slimkit.models.bundle import ModelBundle

Precision = Literal["fp32", "int8-dynamic", "int8-static", "int4"]
Runtime = Literal["onnxruntime", "openvino", "tvm"]
_RELATIVE_TOLERANCE = {"fp32": 1e-4, "int4": 1e-4, "int8-dynamic": 0.25, "int8-static": 0.25}


class OnnxOptions(FrozenModel):
    """Options of the ``onnx`` export format."""

    precision: Precision = "fp32"
    check: tuple[Runtime, ...] = ("onnxruntime",)
    calib: str | None = None  # data spec whose calibration split sets int8-static activation ranges
    calib_samples: int = Field(32, ge=1)
    keep_float: tuple[str, ...] = ()  # globs of Linear paths left float (int8 forms)
    accuracy_level: Literal[0, 1, 2, 3, 4] = 0  # MatMulNBits' compute type for A (4: int8), int4 only
    tolerance: float | None = Field(None, gt=0)  # absolute max |diff| allowed; default relative (see module)

    @field_validator("check")
    @classmethod
    def _onnxruntime_checks(cls, check: tuple[str, ...]) -> tuple[str, ...]:
        if "onnxruntime" not in check:
            raise ValueError("must include onnxruntime: every ONNX export is checked in ONNX Runtime")
        for runtime in check:
            module, pip = RUNTIME_PACKAGES[runtime]
            if importlib.util.find_spec(module) is None:
                raise ImportError(f"the onnx export's check {runtime!r} needs {pip}: pip install '{pip}'")
        return tuple(dict.fromkeys(check))

    @model_validator(mode="after")
    def _options_fit_the_precision(self) -> OnnxOptions:
        if (self.precision == "int8-static") != (self.calib is not None):
            raise ValueError("calib (a data spec) is required by precision int8-static and used by nothing else")
        if self.keep_float and not self.precision.startswith("int8"):
            raise ValueError("keep_float applies to the int8 precisions only")
        if self.accuracy_level and self.precision != "int4":
            raise ValueError("accuracy_level applies to precision int4 (MatMulNBits) only")
        return self

    def relative_tolerance(self) -> float:
        return 2e-2 if self.precision == "int4" and self.accuracy_level == 4 else _RELATIVE_TOLERANCE[self.precision]


def _reference(spec: GraphSpec, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = spec.module(*spec.torch_inputs(feed))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def check_feeds(bundle: ModelBundle, spec: GraphSpec, model: torch.nn.Module) -> list[dict[str, np.ndarray]]:
    """The inputs a check runs: the example, another batch / length, and for LMs a decode step on the cache."""
    if bundle.kind == "torch":
        return [spec.example, {"input": spec.example["input"][:1]}]
    if bundle.kind != "causal-lm":
        texts = ["A short sentence.", "Exported models are checked by the runtime that reads them, not by us."]
        return [text_feed(bundle, model, texts, 3, 11, seed=1), spec.example]
    config: Any = model.config
    ids = np.random.default_rng(1).integers(0, int(config.vocab_size), (1, 8), dtype=np.int64)
    prefill = {"input_ids": ids, **empty_past(model, 1)}
    outputs = _reference(spec, prefill)
    following = outputs[0][:, -1:].argmax(-1).astype(np.int64)  # (1, 1): the greedy next token
    decode = {"input_ids": following, **dict(zip(spec.input_names[1:], outputs[1:], strict=True))}
    return [prefill, decode]


def compare(runtime: str, path: Path, spec: GraphSpec, feeds: list[dict[str, np.ndarray]], relative: float,
            absolute: float | None) -> RuntimeCheck:
    """Run ``path`` in ``runtime`` on ``feeds`` and compare every output with the PyTorch reference."""
    run = RUNNERS[runtime].load(path)
    worst, mean_sum, scale = 0.0, 0.0, 0.0
    for i, feed in enumerate(feeds):
        d_max, d_mean, s = differences(_reference(spec, feed), run(feed), f"{path.name} in {runtime}, input {i}")
        worst, mean_sum, scale = max(worst, d_max), mean_sum + d_mean, max(scale, s)
    runtime_ms, torch_ms = round_robin_ms([lambda: run(feeds[0]), lambda: _reference(spec, feeds[0])])
    tolerance = absolute if absolute is not None else relative * max(scale, 1e-6)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds[0].items() if not k.startswith("past_key"))
    return RuntimeCheck(runtime, worst, mean_sum / len(feeds), tolerance, runtime_ms, torch_ms,
                        detail=f"{len(feeds)} inputs; latency on {shapes}; PyTorch fp32 eager reference")


def _kept(keep_float: tuple[str, ...]) -> str:
    return f"; Linears matching {', '.join(keep_float)} kept float" if keep_float else ""


def int4_weights(bundle: ModelBundle) -> dict[str, IntWeight]:
    """slimkit's 4-bit Linear weights of ``bundle``; none is an error (before anything is traced)."""
    weights = {p: w for p, w in integer_weights(bundle.model).items() if w.bits == 4}
    if not weights:
        raise ValueError(f"{bundle.source}: precision int4 writes slimkit's own 4-bit integers, and this model has "
                         "none; quantize it first (e.g. quant.gptq / quant.awq / quant.rtn with bits: 4)")
    return weights


def _write_precision(bundle: ModelBundle, spec: GraphSpec, model: torch.nn.Module, float_path: Path, path: Path,
                     opts: OnnxOptions, weights: dict[str, IntWeight]) -> list[str]:
    """Write ``path`` from the traced float graph in the chosen precision; returns notes."""
    import onnx

    from slimkit.export.onnx import int8, nbits

    if opts.precision == "fp32":
        float_path.replace(path)
        return []
    if opts.precision == "int8-dynamic":
        int8.quantize_dynamic_int8(float_path, path, opts.keep_float)
        return ["int8 dynamic: MatMul/Gemm weights int8 per channel, activations quantized per call"
                + _kept(opts.keep_float)]
    if opts.precision == "int8-static":
        assert opts.calib is not None
        feeds = int8.calibration_feeds(bundle, spec, model, opts.calib, opts.calib_samples)
        int8.quantize_static_int8(float_path, path, feeds, opts.keep_float)
        return [f"int8 static QDQ: activation ranges min-max on {opts.calib} ({opts.calib_samples} samples)"
                + _kept(opts.keep_float)]
    graph = onnx.load(str(float_path))
    done = nbits.to_matmul_nbits(graph, weights, opts.accuracy_level)
    onnx.save(graph, str(path))
    return [f"{len(done)} Linear layers as MatMulNBits with slimkit's own 4-bit integers and scales "
            f"(accuracy_level {opts.accuracy_level}); other weights float32"]


def write_onnx(bundle: ModelBundle, path: Path, opts: OnnxOptions) -> ExportResult:
    """Trace ``bundle`` to ONNX at ``path`` in ``opts.precision`` and check it in each runtime of ``opts.check``."""
    weights = int4_weights(bundle) if opts.precision == "int4" else {}
    model = float_reference(bundle.model)
    spec = graph_spec(bundle, model)
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=path.parent) as scratch:
        float_path = Path(scratch) / "float.onnx"
        trace(spec, float_path)
        notes = _write_precision(bundle, spec, model, float_path, path, opts, weights)
    if opts.calib is not None:  # calibrated ranges are checked on held-out data of the same kind
        from slimkit.export.onnx.int8 import calibration_feeds

        feeds = calibration_feeds(bundle, spec, model, opts.calib, 16, held_out=True)[:2]
    else:
        feeds = check_feeds(bundle, spec, model)
    checks = [compare(r, path, spec, feeds, opts.relative_tolerance(), opts.tolerance) for r in opts.check]
    return ExportResult("onnx", path, checks=checks, notes=notes)


ONNX_FORMAT = register_export_format(ExportFormat(
    "onnx", ".onnx", write_onnx, OnnxOptions,
    requires=(("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime")),
    description="ONNX (opset 18) for classifiers, encoders and causal LMs with KV cache; fp32, int8 dynamic/QDQ, "
                "int4 MatMulNBits from slimkit's own integers; checked in ONNX Runtime (and OpenVINO)"))
