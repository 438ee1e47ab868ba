"""ONNX export of slimkit models (``slimkit export MODEL --format onnx``), checked in ONNX Runtime and OpenVINO.

:mod:`~slimkit.export.onnx.graph` traces classifiers, encoders / sentence-transformers and causal LMs (with
KV-cache inputs and outputs) to ONNX; :mod:`~slimkit.export.int_weights` reads slimkit's own quantized
integers through the format registry; :mod:`~slimkit.export.onnx.nbits` writes them as ONNX Runtime's
``MatMulNBits``; :mod:`~slimkit.export.onnx.int8` makes int8 dynamic / static QDQ files with
``onnxruntime.quantization``; :mod:`~slimkit.export.onnx.runtimes` runs a file in a runtime and compares it
with PyTorch; :mod:`~slimkit.export.onnx.format` registers the ``onnx`` export format.
"""
