"""Evaluation: metrics, latency, and before/after measurement."""
