"""Export: on-disk formats (slimkit packed checkpoint; later ONNX and other runtimes)."""
