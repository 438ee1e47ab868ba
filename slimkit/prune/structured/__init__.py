"""Structured pruning: score whole units (neurons, channels, FFN channels, attention heads) and remove
them physically, leaving a smaller dense model. ``importance`` is pure maths, ``groups`` knows which
modules share a unit, ``surgery`` slices modules, ``method`` orchestrates ``prune.structured``."""
