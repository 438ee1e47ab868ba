"""int8 ONNX files made by ``onnxruntime.quantization`` from the traced float graph.

* ``int8-dynamic``: weights int8 per output channel, activations quantized per call
  (``DynamicQuantizeLinear`` + ``MatMulInteger``), for MatMul / Gemm with a constant weight only (attention's
  activation-by-activation products stay float).
* ``int8-static``: QDQ (``QuantizeLinear`` / ``DequantizeLinear`` pairs) around MatMul, Gemm and Conv, int8
  per-channel weights and uint8 activations whose ranges are calibrated min-max (slimkit's own observer) on
  the calibration split of a slimkit data spec (``calib: pydoc``, ``fashion-mnist``, ...). Classifiers and
  encoders only: a causal LM's calibration would have to cover every cache length.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from slimkit.data.images import image_data
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences
from slimkit.export.onnx.graph import GraphSpec, text_feed
from slimkit.models.bundle import ModelBundle

QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]


def quantize_dynamic_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], extra_options={"MatMulConstBOnly": True})


def calibration_feeds(bundle: ModelBundle, spec: GraphSpec, model: torch.nn.Module, calib: str, samples: int,
                      batch: int = 8, held_out: bool = False) -> list[dict[str, np.ndarray]]:
    """Feeds of ``samples`` examples of the data spec ``calib``: its calibration split, or with ``held_out`` its
    evaluation split (the check of a calibrated file runs on data like the calibration's, never the same)."""
    data = parse_data_spec(calib)
    if bundle.kind == "torch":
        if data.is_text:
            raise ValueError(f"int8-static calibration of a classifier needs images, not {data}")
        x, _ = image_data(data.kind, data.arg, "test" if held_out else "train")
        x = x[:samples].numpy().astype(np.float32)
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


def quantize_static_int8(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ,  # type: ignore[arg-type]
                    op_types_to_quantize=QUANTIZED_OPS, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
