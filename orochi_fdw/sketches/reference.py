"""Plain Python / numpy reference implementations of the sketch kernels, for
tests: XXH64, HyperLogLog register updates, t-digest compression."""

from __future__ import annotations

import math

import numpy as np

_M = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * P2) & _M
    return (_rotl(acc, 31) * P1) & _M


def _merge(acc: int, val: int) -> int:
    acc ^= _round(0, val)
    return (acc * P1 + P4) & _M


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64 of data, as specified by the xxHash project."""
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & _M, (seed + P2) & _M, seed & _M, (seed - P1) & _M]
        while i + 32 <= n:
            for j in range(4):
                v[j] = _round(v[j], int.from_bytes(data[i + 8 * j:i + 8 * j + 8], "little"))
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
        for j in range(4):
            h = _merge(h, v[j])
    else:
        h = (seed + P5) & _M
    h = (h + n) & _M
    while i + 8 <= n:
        h ^= _round(0, int.from_bytes(data[i:i + 8], "little"))
        h = (_rotl(h, 27) * P1 + P4) & _M
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i:i + 4], "little") * P1) & _M
        h = (_rotl(h, 23) * P2 + P3) & _M
        i += 4
    while i < n:
        h ^= (data[i] * P5) & _M
        h = (_rotl(h, 11) * P1) & _M
        i += 1
    h ^= h >> 33
    h = (h * P2) & _M
    h ^= h >> 29
    h = (h * P3) & _M
    h ^= h >> 32
    return h


def hll_registers(hashes: np.ndarray, p: int) -> np.ndarray:
    """Dense registers of precision p from hashes, with numpy."""
    h = np.asarray(hashes, dtype=np.uint64)
    idx = (h >> np.uint64(64 - p)).astype(np.int64)
    rest = h << np.uint64(p)
    rho = np.full(len(h), 64 - p + 1, dtype=np.uint8)
    nz = rest != 0
    # leading zeros of a 64-bit value: 63 - floor(log2(x)), computed exactly
    r = rest[nz]
    lz = np.zeros(len(r), dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        small = r < (np.uint64(1) << np.uint64(64 - shift))
        lz[small] += shift
        r = np.where(small, r << np.uint64(shift), r)
    rho[nz] = (lz + 1).astype(np.uint8)
    out = np.zeros(1 << p, dtype=np.uint8)
    np.maximum.at(out, idx, rho)
    return out


def hll_estimate_raw(registers: np.ndarray, p: int) -> float:
    """The original HyperLogLog estimate with linear counting below 2.5 m
    (Flajolet et al. 2007), for comparison."""
    m = 1 << p
    alpha = 0.7213 / (1 + 1.079 / m)
    e = alpha * m * m / float(np.sum(2.0 ** -registers.astype(np.float64)))
    zeros = int(np.count_nonzero(registers == 0))
    if e <= 2.5 * m and zeros:
        return m * math.log(m / zeros)
    return e


def sort_finite(values: np.ndarray) -> np.ndarray:
    """The finite values sorted, -0.0 as 0.0 (the kernel sort_finite_float64)."""
    v = np.asarray(values, dtype=np.float64)
    return np.sort(v[np.isfinite(v)]) + 0.0


def distinct_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values as their distinct values and how many times each comes
    (uint32; the kernel distinct_counts_float64)."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return v[:0], np.zeros(0, dtype="<u4")
    firsts = np.flatnonzero(np.concatenate([[True], v[1:] != v[:-1]]))
    return v[firsts], np.diff(firsts, append=len(v)).astype("<u4")


def tdigest_compress(means: np.ndarray, weights: np.ndarray, compression: float) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's one-pass merge of sorted centroids, in Python."""
    n = len(means)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    total = float(np.sum(weights))
    norm = compression / (2 * math.pi)

    def limit_after(so_far: float) -> float:
        kq = norm * math.asin(2 * min(so_far / total, 1.0) - 1) + 1
        if kq >= norm * math.pi / 2:
            return total
        return total * (math.sin(kq / norm) + 1) / 2

    out_m, out_w = [], []
    so_far = 0.0
    cur_m, cur_w = float(means[0]), float(weights[0])
    limit = limit_after(0.0)
    for i in range(1, n):
        w = float(weights[i])
        if so_far + cur_w + w <= limit:
            cur_w += w
            cur_m += (float(means[i]) - cur_m) * w / cur_w
        else:
            out_m.append(cur_m)
            out_w.append(cur_w)
            so_far += cur_w
            limit = limit_after(so_far)
            cur_m, cur_w = float(means[i]), w
    out_m.append(cur_m)
    out_w.append(cur_w)
    return np.array(out_m), np.array(out_w)
