"""Run an ONNX file in a real runtime (ONNX Runtime, OpenVINO, TVM) and compare it with the PyTorch reference.

Each runtime is one :class:`Runner`: ``load(path)`` gives a callable from a feed (numpy arrays by input
name) to the list of outputs. :func:`compare` runs the runtime and PyTorch on the same feeds, and returns a
:class:`~slimkit.export.formats.RuntimeCheck` with the largest and mean absolute difference over all outputs
and the median latency of each (timed round-robin, one call of each per round, so that a busy machine
slows both alike). OpenVINO's CPU plugin is asked for f32 inference: on CPUs with bf16 it would otherwise
compute in bf16 by default, and the check would measure that instead of the file. TVM (``apache-tvm``, Relax
ONNX frontend, target ``llvm``) compiles for concrete input shapes; its frontend cannot infer a Reshape whose
target shape torch's exporter computes from ``Shape`` ops (every transformer graph), so each input shape gets
a copy of the file with those shapes fixed and folded to constants by ONNX Runtime's basic optimizer (pure
ONNX rewrites, no contrib ops) before TVM reads it.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Feed = dict[str, np.ndarray]
Run = Callable[[Feed], list[np.ndarray]]


def onnxruntime_session(path: Path, threads: int | None = None) -> Run:
    """An ONNX Runtime CPU session of ``path`` as a feed -> outputs callable."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)


def openvino_model(path: Path, threads: int | None = None) -> Run:
    """``path`` read and compiled by OpenVINO's CPU plugin (f32 inference) as a feed -> outputs callable."""
    import openvino as ov

    # f32 throughout: no bf16 inference, no int8 quantization of activations in front of compressed weights
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    outputs = compiled.outputs

    def run(feed: Feed) -> list[np.ndarray]:
        result = request.infer(feed)
        return [np.asarray(result[o]) for o in outputs]

    return run


def tvm_module(path: Path, threads: int | None = None) -> Run:
    """``path`` imported by TVM's Relax ONNX frontend and compiled for ``llvm`` (the CPU), as a feed -> outputs
    callable. Relax compiles for concrete shapes: each new set of input shapes is compiled once, on first use."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(path))
    names = [i.name for i in model.graph.input]
    machines: dict[tuple, object] = {}

    def compiled(feed: Feed) -> object:
        key = tuple(feed[n].shape for n in names)
        if key not in machines:
            try:
                static = _shapes_folded(model, {n: feed[n].shape for n in names})
                mod = from_onnx(static, shape_dict={n: list(feed[n].shape) for n in names},
                                dtype_dict={n: str(feed[n].dtype) for n in names})
                executable = tvm.compile(relax.get_pipeline("zero")(mod), target="llvm")
            except Exception as err:  # noqa: BLE001 - TVM raises its own error types from C++
                first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                raise ValueError(f"TVM (Relax ONNX frontend, target llvm) cannot compile {path.name}: "
                                 f"{first}") from None
            machines[key] = relax.VirtualMachine(executable, tvm.cpu())
        return machines[key]

    def run(feed: Feed) -> list[np.ndarray]:
        out = compiled(feed)["main"](*[tvm.runtime.tensor(feed[n]) for n in names])  # type: ignore[index]
        return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]

    return run


def _shapes_folded(model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """A copy of ``model`` with its inputs fixed to ``shapes`` and the shape arithmetic folded to constants
    by ONNX Runtime's basic graph optimizations (constant folding and ONNX-level eliminations only)."""
    import onnx
    import onnxruntime as ort

    static = copy.deepcopy(model)
    for graph_input in static.graph.input:
        for dim, size in zip(graph_input.type.tensor_type.shape.dim, shapes[graph_input.name], strict=True):
            dim.Clear()
            dim.dim_value = int(size)
    with tempfile.TemporaryDirectory(prefix="slimkit-tvm-") as work:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(work) / "folded.onnx")
        ort.InferenceSession(static.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


@dataclass(frozen=True)
class Runner:
    name: str
    load: Callable[[Path], Run]


RUNNERS: dict[str, Runner] = {
    "onnxruntime": Runner("onnxruntime", onnxruntime_session),
    "openvino": Runner("openvino", openvino_model),
    "tvm": Runner("tvm", tvm_module),
}
#: the pip requirement of each runtime, for the error that names a missing one
RUNTIME_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino"),
                    "tvm": ("tvm", "apache-tvm")}


def round_robin_ms(fns: Sequence[Callable[[], object]], rounds: int = 7, warmup: int = 2) -> list[float]:
    """Median milliseconds of each of ``fns``, called in turn each round after ``warmup`` rounds."""
    times: list[list[float]] = [[] for _ in fns]
    for r in range(warmup + rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            if r >= warmup:
                times[i].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def differences(expected: Sequence[np.ndarray], got: Sequence[np.ndarray], where: str) -> tuple[float, float, float]:
    """(max |diff|, mean |diff|, max |expected|) over every output; shapes must agree."""
    if len(expected) != len(got):
        raise ValueError(f"{where}: the runtime returned {len(got)} outputs, PyTorch {len(expected)}")
    worst, total, count, scale = 0.0, 0.0, 0, 0.0
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        if e.shape != g.shape:
            raise ValueError(f"{where}: output {i} has shape {g.shape}, PyTorch gives {e.shape}")
        d = np.abs(e.astype(np.float64) - g.astype(np.float64))
        worst = max(worst, float(d.max()) if d.size else 0.0)
        total, count = total + float(d.sum()), count + d.size
        scale = max(scale, float(np.abs(e).max()) if e.size else 0.0)
    if not np.isfinite(worst):
        worst = float("inf")
    return worst, total / max(count, 1), scale
