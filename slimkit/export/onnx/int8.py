"""int8 ONNX files made by ``onnxruntime.quantization`` from the traced float graph.

* ``int8-dynamic``: weights int8 per output channel, activations quantized per call
  (``DynamicQuantizeLinear`` + ``MatMulInteger``), for MatMul / Gemm with a constant weight only (attention's
  activation-by-activation products stay float).
* ``int8-static``: QDQ (``QuantizeLinear`` / ``DequantizeLinear`` pairs) around MatMul (with a constant
  weight: attention's products stay float), Gemm and Conv, int8
  per-channel weights and uint8 activations whose ranges are calibrated min-max (slimkit's own observer) on
  the calibration split of a slimkit data spec (``calib: pydoc``, ``fashion-mnist``, ...). Classifiers and
  encoders only: a causal LM's calibration would have to cover every cache length.

``keep_float`` globs (on Linear module paths, e.g. ``*[0-9].output.dense``) keep those layers float in either
form. Measured on MiniLM-L6 (64 pydoc sentences, mean cosine with PyTorch fp32): int8-dynamic 0.9935;
int8-static 0.937 with every Linear quantized (per-tensor min-max ranges cannot hold the outliers entering
the FFN output projection, and 99.999-percentile ranges gave the same 0.937), 0.991 with the six FFN output
projections kept float.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch

from slimkit.data.images import image_data
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences
from slimkit.export.onnx.graph import GraphSpec, node_module, text_feed
from slimkit.models.bundle import ModelBundle

QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]


def float_nodes(src: Path, keep_float: Sequence[str]) -> list[str]:
    """Names of the nodes traced from Linears whose path matches a ``keep_float`` glob; a glob that matches no
    Linear is an error (it would do nothing)."""
    import onnx

    nodes = [(n.name, node_module(n)) for n in onnx.load(str(src)).graph.node]
    linears = [(name, path) for name, path in nodes if path is not None]
    for pattern in keep_float:
        if not any(fnmatch(path, pattern) for _, path in linears):
            some = ", ".join(sorted({p for _, p in linears})[:6])
            raise ValueError(f"keep_float: {pattern!r} matches no Linear of the graph (e.g. {some})")
    return [name for name, path in linears if any(fnmatch(path, p) for p in keep_float)]


def quantize_dynamic_int8(src: Path, dst: Path, keep_float: Sequence[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=float_nodes(src, keep_float),
                     extra_options={"MatMulConstBOnly": True})


def calibration_feeds(bundle: ModelBundle, spec: GraphSpec, model: torch.nn.Module, calib: str, samples: int,
                      batch: int = 8, held_out: bool = False) -> list[dict[str, np.ndarray]]:
    """Feeds of ``samples`` examples of the data spec ``calib``: its calibration split, or with ``held_out`` its
    evaluation split (the check of a calibrated file runs on data like the calibration's, never the same)."""
    data = parse_data_spec(calib)
    if bundle.kind == "torch":
        if data.is_text:
            raise ValueError(f"int8-static calibration of a classifier needs images, not {data}")
        images, _ = image_data(data.kind, data.arg, "test" if held_out else "train")
        x = images[:samples].numpy().astype(np.float32)
        return [{"input": x[i: i + batch]} for i in range(0, len(x), batch)]
    if bundle.kind not in ("encoder", "sentence-transformer"):
        raise ValueError(f"int8-static supports classifiers and encoders, not {bundle.kind} models; "
                         "use precision int8-dynamic or int4 for causal LMs")
    if not data.is_text:
        raise ValueError(f"int8-static calibration of an encoder needs text, not {data}")
    texts = sentences(documents(data, "eval" if held_out else "calib"), samples)
    if not texts:
        raise ValueError(f"{data}: no calibration sentences")
    return [text_feed(bundle, model, texts[i: i + batch], 0, 128) for i in range(0, len(texts), batch)]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_static_int8(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], keep_float: Sequence[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ,  # type: ignore[arg-type]
                    op_types_to_quantize=QUANTIZED_OPS, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=float_nodes(src, keep_float), extra_options={"MatMulConstBOnly": True})
