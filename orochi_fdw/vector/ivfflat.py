"""IVFFlat index files: k-means lists of a stripe's vectors, stored in list
order so that a search reads only the lists it probes (memory-mapped).

File layout (little-endian)::

    magic "OROCIVF1", u32 lists L, u32 dimensions d, u64 vectors n
    float32[L, d]  centroids
    int64[L + 1]   list offsets into the rows below
    float32[n, d]  the vectors, list by list
    int64[n]       each vector's row offset in the stripe

The distances a search returns are the kernels' exact ones (no re-ranking
needed); the probes recorded per file are the fewest at which a build-time
check found :data:`~orochi_fdw.vector.indexes.TARGET_RECALL` (0: search
exactly).
"""

from __future__ import annotations

import struct

import numpy as np

from orochi_fdw.errors import CorruptDataError
from orochi_fdw.kernels import vector as kernels
from orochi_fdw.vector.reference import METRICS

MAGIC = b"OROCIVF1"
_HEAD = struct.Struct("<8sIIQ")
KMEANS_ITERATIONS = 8
_BLOCK = 65_536


def _normalized(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms == 0, 1, norms)


def _assign(X: np.ndarray, C: np.ndarray, distance_type: str) -> np.ndarray:
    out = np.empty(len(X), dtype=np.int64)
    cc = (C * C).sum(1)
    for s in range(0, len(X), _BLOCK):
        B = X[s:s + _BLOCK]
        if distance_type == "inner_product":
            out[s:s + _BLOCK] = np.argmax(B @ C.T, axis=1)
        else:
            out[s:s + _BLOCK] = np.argmin(cc[None, :] - 2 * (B @ C.T), axis=1)
    return out


class IvfLists:
    """An IVFFlat index of one stripe."""

    def __init__(self, centroids: np.ndarray, offsets: np.ndarray, vectors: np.ndarray, rows: np.ndarray,
                 distance_type: str | None = None):
        self.centroids = centroids
        self.offsets = offsets
        self.vectors = vectors
        self.rows = rows
        self.distance_type = distance_type

    def save(self, path: str) -> None:
        L, d = self.centroids.shape
        with open(path, "wb") as f:
            f.write(_HEAD.pack(MAGIC, L, d, len(self.rows)))
            for arr, dtype in ((self.centroids, "<f4"), (self.offsets, "<i8"), (self.vectors, "<f4"),
                               (self.rows, "<i8")):
                f.write(np.ascontiguousarray(arr, dtype=dtype).tobytes())

    @classmethod
    def open(cls, path: str) -> "IvfLists":
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        if len(raw) < _HEAD.size:
            raise CorruptDataError(f"{path}: too short for an IVFFlat index")
        magic, L, d, n = _HEAD.unpack(raw[:_HEAD.size].tobytes())
        sizes = [L * d * 4, (L + 1) * 8, n * d * 4, n * 8]
        if magic != MAGIC or L < 1 or d < 1 or _HEAD.size + sum(sizes) != len(raw):
            raise CorruptDataError(f"{path}: not an IVFFlat index file of this version")
        pos = _HEAD.size
        parts = []
        for size in sizes:
            parts.append(raw[pos:pos + size])
            pos += size
        offsets = parts[1].view("<i8")
        if offsets[0] != 0 or offsets[-1] != n or (np.diff(offsets) < 0).any():
            raise CorruptDataError(f"{path}: IVFFlat list offsets out of order")
        return cls(parts[0].view("<f4").reshape(L, d), offsets, parts[2].view("<f4").reshape(n, d),
                   parts[3].view("<i8"))

    def probe_order(self, q: np.ndarray, distance_type: str) -> np.ndarray:
        C = np.asarray(self.centroids)
        if distance_type == "inner_product":
            return np.argsort(-(C @ q))
        if distance_type == "cosine":
            q = q / (np.linalg.norm(q) or 1)
        return np.argsort(((C - q) ** 2).sum(1))

    def search(self, q: np.ndarray, probes: int, distance_type: str) -> tuple[np.ndarray, np.ndarray]:
        """(stripe row offsets, exact distances) of the vectors in the
        ``probes`` lists nearest to q."""
        lists = self.probe_order(q, distance_type)[:max(1, probes)]
        positions = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in lists])
        positions = np.sort(positions).astype(np.int64)
        out = np.empty(len(positions), dtype=np.float64)
        kernels.distances_rows(np.asarray(self.vectors), positions, q, _metric(distance_type), out)
        return np.asarray(self.rows)[positions], out


def _metric(distance_type: str) -> int:
    return {"l2": METRICS["l2"], "cosine": METRICS["cosine"],
            "inner_product": METRICS["negative_inner_product"]}[distance_type]


def build(X: np.ndarray, rows: np.ndarray, distance_type: str, lists: int = 0, seed: int = 0) -> IvfLists:
    """k-means (``lists`` centroids; 0: n / 1000, at least 1) and the vectors
    grouped by their nearest centroid."""
    n, d = X.shape
    L = int(lists) if lists else max(1, n // 1000)
    L = min(L, n)
    rng = np.random.default_rng(seed)
    train = _normalized(X) if distance_type == "cosine" else X
    sample = train[rng.choice(n, min(n, max(L * 64, 10_000)), replace=False)]
    C = sample[rng.choice(len(sample), L, replace=False)].copy()
    for _ in range(KMEANS_ITERATIONS):
        a = _assign(sample, C, distance_type)
        for j in range(L):
            members = sample[a == j]
            if len(members):
                C[j] = members.mean(0)
        if distance_type == "cosine":
            C = _normalized(C)
    assign = _assign(train, C, distance_type)
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=L)
    offsets = np.zeros(L + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return IvfLists(C.astype(np.float32), offsets, np.ascontiguousarray(X[order]), rows[order].astype(np.int64))


def calibrate_probes(ivf: IvfLists, X: np.ndarray, distance_type: str, seed: int = 0) -> int:
    """The fewest probes (1, 2, 4 ...) reaching the target recall@10 on
    queries made like the data; 0 when only about half the lists would."""
    from orochi_fdw.vector.indexes import CHECK_QUERIES, TARGET_RECALL, _exact_topk

    n, d = X.shape
    L = len(ivf.offsets) - 1
    rng = np.random.default_rng(seed)
    nq = min(CHECK_QUERIES, n)
    dist = np.empty(n, dtype=np.float64)
    queries, truth = [], []
    for a in rng.choice(n, nq, replace=False):
        kernels.distances(X, X[a], METRICS["l2"], dist)
        dist[a] = np.inf
        radius = float(np.min(dist)) if n > 1 else 1.0
        q = (X[a] + rng.normal(0.0, max(radius, 1e-6) / np.sqrt(d), d)).astype(np.float32)
        queries.append(q)
        truth.append(set(_rows_of(ivf, X, q, distance_type)))
    probes = 1
    while probes * 2 <= L or probes == 1 and L == 1:
        recall = np.mean([len(truth[i] & set(_topk_rows(ivf, queries[i], probes, distance_type))) / len(truth[i])
                          for i in range(nq)])
        if recall >= TARGET_RECALL:
            return probes
        if L == 1:
            break
        probes *= 2
    return 0


def _rows_of(ivf: IvfLists, X: np.ndarray, q: np.ndarray, distance_type: str) -> list[int]:
    """Row offsets of the true 10 nearest neighbours (X is in row order of
    ``sorted(ivf.rows)``)."""
    from orochi_fdw.vector.indexes import _exact_topk

    rows_sorted = np.sort(np.asarray(ivf.rows))
    return rows_sorted[_exact_topk(X, q, _metric(distance_type), 10)].tolist()


def _topk_rows(ivf: IvfLists, q: np.ndarray, probes: int, distance_type: str) -> list[int]:
    rows, dist = ivf.search(q, probes, distance_type)
    k = min(10, len(rows))
    if k == 0:
        return []
    dist = np.where(np.isnan(dist), np.inf, dist)
    return rows[np.argpartition(dist, k - 1)[:k]].tolist()
