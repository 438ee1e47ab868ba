"""A measured choice, per packed layer shape, between its integer kernel and per-call dequantization.

Why measure instead of a capability table: the weight-only kernels compute in bf16, native only with
AVX512-BF16 or AMX (elsewhere emulated, 3-6× slower than float32 GEMMs in prefill on the AVX2 machine
of ``facts.md``); fbgemm's int8 loses its edge without VNNI; and every kernel that wins on one row
(decoding) can lose on hundreds (prefill). So when a packed layer is built (packing, loading, ``.to``),
each distinct (kernel, grid, shape, threads) is timed once in this process, on one row and on
:data:`MANY_ROWS` rows, for each way it can compute:

* ``kernel``: the layer's integer kernel;
* ``dequant-float32`` (and ``dequant-bfloat16`` where the CPU has native bf16): rebuild the float weight
  from the packed bytes on every call (:mod:`slimkit.quantize.dequant_call`), then one GEMM; no float
  copy is kept, so memory stays packed.

Calls with fewer than :data:`MANY_ROWS_FROM` rows take the one-row winner, the others the many-rows
winner. The kernel is left only for a path :data:`MARGIN` faster, so near-ties do not flip between runs.
The float layer of the same shape (``F.linear`` on a float32 weight) is timed beside them, so each
choice carries its ratio to float: where no path reaches float's speed, the layer says so.
``SLIMKIT_KERNEL_PROBE=0`` turns the probe off (every call uses the kernel, as before the probe).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

#: Rows of the prefill-like probe call, and the row count from which a call counts as "many rows".
MANY_ROWS = 256
MANY_ROWS_FROM = 16
#: A path must be this much faster than the kernel to replace it.
MARGIN = 1.1
KERNEL = "kernel"


@dataclass(frozen=True)
class LayerRoutes:
    """How one packed layer computes few-row and many-row calls, and the timings behind the choice."""

    few_rows: str = KERNEL
    many_rows: str = KERNEL
    ms: dict[str, dict[str, float]] = field(default_factory=dict)  # "few"/"many" -> path or "float" -> ms

    def route(self, rows: int) -> str:
        """The path a call with ``rows`` rows takes."""
        return self.many_rows if rows >= MANY_ROWS_FROM else self.few_rows

    def chosen(self, regime: str) -> str:
        """The path of the ``"few"`` or ``"many"`` rows regime."""
        return self.few_rows if regime == "few" else self.many_rows

    def float_ratio(self, regime: str) -> float | None:
        """Float32 ``F.linear`` time over the chosen path's time (> 1: faster than float), if measured."""
        times, chosen = self.ms.get(regime, {}), self.chosen(regime)
        return times["float"] / times[chosen] if "float" in times and chosen in times else None

    def describe(self) -> str:
        """The calls that leave the kernel, in words ("" when every call uses it)."""
        if self.many_rows == self.few_rows:
            return "" if self.few_rows == KERNEL else f"every call: {self.few_rows} (measured faster here)"
        if self.few_rows == KERNEL:
            return f"from {MANY_ROWS_FROM} rows: {self.many_rows} (measured faster here)"
        return f"below {MANY_ROWS_FROM} rows: {self.few_rows} (measured faster here)"

    def summary(self) -> dict[str, str]:
        """Per regime, the chosen path and its measured speed relative to float32 ``F.linear``."""
        out = {}
        for regime, rows in (("few", "1 row"), ("many", f"{MANY_ROWS} rows")):
            ratio = self.float_ratio(regime)
            out[rows] = f"{self.chosen(regime)}, {ratio:.2f}× float32 speed" if ratio else self.chosen(regime)
        return out


def probe_enabled() -> bool:
    """Whether packed layers are probed (``SLIMKIT_KERNEL_PROBE=0`` turns it off)."""
    return os.environ.get("SLIMKIT_KERNEL_PROBE", "1") != "0"


_ROUTES: dict[tuple[object, ...], LayerRoutes] = {}


def cached_routes(key: tuple[object, ...], paths: Callable[[], dict[str, Callable[[Tensor], Tensor]]],
                  in_features: int, out_features: int) -> LayerRoutes:
    """The routes of ``key`` (kernel, grid, shape), probed with ``paths()`` the first time this process sees it."""
    key = (*key, torch.get_num_threads())
    if key not in _ROUTES:
        _ROUTES[key] = probe_routes(paths(), in_features, out_features)
    return _ROUTES[key]


def probe_routes(paths: dict[str, Callable[[Tensor], Tensor]], in_features: int, out_features: int) -> LayerRoutes:
    """Time every path (and float32 ``F.linear``) on 1 and :data:`MANY_ROWS` rows; keep the fastest of each."""
    weight = torch.randn(out_features, in_features) / in_features**0.5  # (out, in)
    candidates = {**paths, "float": lambda x: F.linear(x, weight)}
    ms = {regime: best_times(candidates, torch.randn(rows, in_features))
          for regime, rows in (("few", 1), ("many", MANY_ROWS))}
    return LayerRoutes(_fastest(ms["few"]), _fastest(ms["many"]), ms)


def _fastest(times: dict[str, float]) -> str:
    paths = {k: v for k, v in times.items() if k != "float"}
    best = min(paths, key=paths.__getitem__)
    return best if KERNEL not in paths or paths[KERNEL] > MARGIN * paths[best] else KERNEL


def best_times(candidates: dict[str, Callable[[Tensor], Tensor]], x: Tensor, rounds: int = 5,
               round_seconds: float = 2e-3) -> dict[str, float]:
    """Best-of-``rounds`` milliseconds per call of each candidate, timed round-robin (load drifts hit all alike)."""
    with torch.no_grad():
        reps = {}
        for name, fn in candidates.items():  # warm up once, and size each round to ~round_seconds
            start = time.perf_counter()
            fn(x)
            reps[name] = max(1, min(50, int(round_seconds / max(time.perf_counter() - start, 1e-6))))
        best = dict.fromkeys(candidates, float("inf"))
        for _ in range(rounds):
            for name, fn in candidates.items():
                start = time.perf_counter()
                for _ in range(reps[name]):
                    fn(x)
                best[name] = min(best[name], (time.perf_counter() - start) / reps[name] * 1e3)
    return best
