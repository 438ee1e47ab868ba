"""Weighted one-dimensional k-means, batched over rows: the pure maths of weight sharing.

Deep Compression (Han, Mao & Dally, ICLR 2016, section 3) clusters each layer's surviving weights into
``2^bits`` shared values with k-means and compares three initialisations: *linear* (centroids evenly
spaced between the smallest and largest weight: the best there, because it keeps the rare large
weights that matter), *density* (evenly spaced on the weights' CDF) and *random* (Forgy: k weights
drawn at random). Here every row of ``values`` (G, n) is clustered on its own (G = 1 for a codebook per
layer, G = rows for one per output channel); entries with weight 0 (pruned ones) neither pull a
centroid nor are assigned to anything that matters. Each entry may carry an importance weight (e.g. the
mean square of the input it multiplies, the diagonal of GPTQ's Hessian), so important weights pull the
centroids towards them. Lloyd's iterations alternate nearest-centroid assignment (a ``searchsorted``
against the midpoints of the sorted centroids, exact in one dimension) and the weighted mean per
cluster; neither step can increase the weighted within-cluster squared error, which the tests check.
Sums run in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Init = Literal["linear", "density", "random"]


@dataclass
class KMeansResult:
    """Centroids (G, k), the index of each entry's centroid (G, n) and, when tracked, the weighted
    within-cluster squared error after the initial assignment and after every iteration (``sse[0]``)."""

    centroids: Tensor
    index: Tensor
    sse: list[float] = field(default_factory=list)


def init_centroids(values: Tensor, weights: Tensor, k: int, method: Init, seed: int = 0) -> Tensor:
    """Initial centroids (G, k) float64 of the entries of ``values`` (G, n) whose ``weights`` are positive.

    Rows without such entries get zeros (their centroids are never used).
    """
    v = values.double()
    valid = weights > 0  # (G, n)
    if method == "linear":
        lo = torch.where(valid, v, torch.inf).amin(dim=1, keepdim=True)  # (G, 1)
        hi = torch.where(valid, v, -torch.inf).amax(dim=1, keepdim=True)
        steps = torch.linspace(0.0, 1.0, k, dtype=torch.float64)  # (k,)
        out = lo + (hi - lo) * steps
    elif method == "density":
        ordered = torch.where(valid, v, torch.inf).sort(dim=1).values  # valid entries first, ascending
        count = valid.sum(dim=1, keepdim=True)  # (G, 1)
        quantile = (torch.arange(k, dtype=torch.float64) + 0.5) / k  # (k,)
        at = (quantile * count).long().clamp(max=max(v.shape[1] - 1, 0))  # (G, k)
        out = ordered.gather(1, at)
    elif method == "random":
        g = torch.Generator().manual_seed(seed)
        scores = torch.where(valid, torch.rand(v.shape, generator=g, dtype=torch.float64), -1.0)
        top = scores.topk(min(k, v.shape[1]), dim=1)  # (G, min(k, n)); k > valid entries picks invalid ones
        out = torch.where(top.values >= 0, v.gather(1, top.indices), v.gather(1, top.indices[:, :1]))
        if out.shape[1] < k:  # fewer entries than clusters: repeat the first pick
            out = torch.cat([out, out[:, :1].expand(-1, k - out.shape[1])], dim=1)
    else:
        raise ValueError(f"unknown k-means initialisation {method!r}; use linear, density or random")
    return torch.where(valid.any(dim=1, keepdim=True) & out.isfinite(), out, 0.0)


def assign(values: Tensor, centroids: Tensor) -> Tensor:
    """Index (G, n) of the nearest centroid of each entry of ``values`` (G, n) in its row of ``centroids`` (G, k)."""
    ordered, order = centroids.double().sort(dim=1)  # (G, k)
    midpoints = ((ordered[:, 1:] + ordered[:, :-1]) / 2).contiguous()  # (G, k - 1)
    slot = torch.searchsorted(midpoints, values.double().contiguous())  # (G, n) in [0, k)
    return order.gather(1, slot)


def weighted_sse(values: Tensor, weights: Tensor, centroids: Tensor, index: Tensor) -> float:
    """Σ weight · (value − its centroid)² over all rows, in float64."""
    diff = values.double() - centroids.double().gather(1, index)
    return float((weights.double() * diff * diff).sum())


def update(values: Tensor, weights: Tensor, index: Tensor, centroids: Tensor) -> Tensor:
    """Weighted mean of each cluster's entries (G, k); a cluster nobody joined keeps its centroid."""
    w = weights.double()
    mass = torch.zeros_like(centroids, dtype=torch.float64).scatter_add_(1, index, w)  # (G, k)
    moment = torch.zeros_like(mass).scatter_add_(1, index, w * values.double())
    return torch.where(mass > 0, moment / mass.clamp_min(1e-300), centroids.double())


def kmeans(values: Tensor, weights: Tensor, k: int, *, init: Init = "linear", iterations: int = 30,
           seed: int = 0, track_error: bool = False) -> KMeansResult:
    """Cluster every row of ``values`` (G, n) into ``k`` centroids with weighted Lloyd's iterations.

    Args:
        values: the entries to cluster, one independent problem per row.
        weights: non-negative importance (G, n) of each entry; 0 excludes it (pruned weights).
        k: clusters per row.
        init: centroid initialisation (``linear``, ``density`` or ``random``).
        iterations: at most this many Lloyd's iterations; stops earlier when no assignment changes.
        seed: seed of the ``random`` initialisation.
        track_error: record the weighted error after every iteration in ``sse`` (costs a third more time).

    Returns:
        The float64 centroids, the assignment and (if tracked) the error history.
    """
    if k < 1:
        raise ValueError(f"k-means needs at least one cluster, got k={k}")
    v, w = values.double(), weights.double()  # converted once: every step below works in float64
    centroids = init_centroids(v, w, k, init, seed)
    index = assign(v, centroids)
    result = KMeansResult(centroids, index, [weighted_sse(v, w, centroids, index)] if track_error else [])
    for _ in range(iterations):
        centroids = update(v, w, index, centroids)
        new_index = assign(v, centroids)
        if track_error:
            result.sse.append(weighted_sse(v, w, centroids, new_index))
        settled = bool(torch.equal(new_index, index))
        index = new_index
        if settled:
            break
    result.centroids, result.index = centroids, index
    return result
