"""Calibration mixes: several data specs sampled in proportion (``--calib pydoc --calib text:my.txt@0.3``).

Calibrated methods fit their calibration data; mixing the user's own domain with general text is the usual
hedge. A part is a data spec with an optional ``@WEIGHT`` suffix (a positive number, default 1); sample counts
are split in proportion to the weights by largest remainder, so they always add up to the requested total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from slimkit.data.spec import DataSpec, parse_data_spec


@dataclass(frozen=True)
class MixPart:
    """One data spec of a calibration mix and its relative weight."""

    spec: DataSpec
    weight: float = 1.0

    def __str__(self) -> str:
        return str(self.spec) if self.weight == 1.0 else f"{self.spec}@{self.weight:g}"


def parse_mix_part(text: str) -> MixPart:
    """``SPEC`` or ``SPEC@WEIGHT``; a suffix after ``@`` that is not a number belongs to the spec (a path)."""
    head, sep, tail = text.rpartition("@")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            return MixPart(parse_data_spec(text))
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"calibration mix part {text!r}: the weight after '@' must be a positive number")
        return MixPart(parse_data_spec(head), weight)
    return MixPart(parse_data_spec(text))


def parse_mix(texts: Sequence[str]) -> list[MixPart]:
    """Parse every part of a mix; all parts must be text or all images (one model reads them all)."""
    if not texts:
        raise ValueError("a calibration mix needs at least one data spec")
    parts = [parse_mix_part(t) for t in texts]
    if len({p.spec.is_text for p in parts}) > 1:
        raise ValueError(f"calibration mix {', '.join(texts)} mixes text and image data; a model reads one kind")
    return parts


def split_counts(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` samples in proportion to ``weights`` (largest remainder); the counts sum to ``total``."""
    if total < 0 or not weights or any(w <= 0 for w in weights):
        raise ValueError(f"cannot split {total} samples by weights {list(weights)}")
    shares = [total * w / sum(weights) for w in weights]
    counts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts
