"""Numpy reference of the vector kernels (``orochi_fdw.kernels.vector``).

The same arithmetic in the same order: each element's term in double
precision, summed per lane (element i in lane i % 8, sequentially), lanes
added pairwise ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``, then the tail (the
elements past the last multiple of 8, summed in order). Tests hold the
kernels to these results bit for bit.
"""

from __future__ import annotations

import numpy as np

METRICS = {"l2": 0, "negative_inner_product": 1, "cosine": 2, "inner_product": 3}


def _lane_sum(terms: np.ndarray) -> np.ndarray:
    """Row sums of ``terms`` (n x d, float64) in the kernels' order."""
    n, d = terms.shape
    full = (d // 8) * 8
    acc = np.zeros((n, 8))
    for i in range(0, full, 8):
        acc += terms[:, i:i + 8]          # lane j += term[i + j], in order of i
    lanes = ((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])) + ((acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7]))
    tail = np.zeros(n)
    for i in range(full, d):
        tail += terms[:, i]
    return lanes + tail


def distances(X: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Distances of the rows of ``X`` (n x d float32) to ``q`` (d float32)."""
    X = np.asarray(X, dtype=np.float32).astype(np.float64)
    q = np.asarray(q, dtype=np.float32).astype(np.float64)
    if metric == "l2":
        return np.sqrt(_lane_sum((X - q) ** 2))
    dot = _lane_sum(X * q)
    if metric == "negative_inner_product":
        return -dot
    if metric == "inner_product":
        return dot
    if metric != "cosine":
        raise ValueError(f"unknown metric {metric!r}")
    xx = _lane_sum(X * X)
    qq = _lane_sum(q[None, :] * q[None, :])[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = dot / (np.sqrt(xx) * np.sqrt(qq))
    sim = np.clip(sim, -1.0, 1.0)
    out = 1.0 - sim
    out[(xx == 0) | (qq == 0)] = np.nan
    return out


def knn(X: np.ndarray, q: np.ndarray, k: int, metric: str, ids: np.ndarray | None = None) -> np.ndarray:
    """Positions (or ``ids``) of the k nearest rows: by distance, NaN last,
    ties by position (id)."""
    dist = distances(X, q, metric)
    ids = np.arange(len(dist)) if ids is None else np.asarray(ids)
    key = np.where(np.isnan(dist), np.inf, dist)
    nan = np.isnan(dist)
    order = np.lexsort((ids, key, nan))
    return ids[order[:k]]
