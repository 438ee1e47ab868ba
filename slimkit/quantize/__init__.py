"""Quantization: primitives (pure math), records and quantization methods."""
