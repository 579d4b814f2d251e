"""Helpers of the vector tests: data sets and loading them."""

from __future__ import annotations

import numpy as np


def random_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)


def clustered_vectors(n: int, d: int, seed: int = 0, clusters: int = 100, spread: float = 0.35) -> np.ndarray:
    """Points around ``clusters`` Gaussian centres (a stand-in for embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    return (centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def text(v) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def load(conn, table: str, X: np.ndarray, cats: np.ndarray | None = None, first_id: int = 0) -> None:
    """COPY rows (id, cat, e) into ``table``."""
    with conn.cursor().copy(f"COPY {table} (id, cat, e) FROM STDIN") as cp:
        for i, v in enumerate(X):
            cp.write_row((first_id + i, None if cats is None else int(cats[i]), text(v)))


def recall(got: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(t)) / max(1, len(t)) for g, t in zip(got, truth)]))
