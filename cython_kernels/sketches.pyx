# Sketch kernels: xxHash64, HyperLogLog register updates, t-digest compression.
"""Kernels for Orochi's mergeable sketches (docs/sketches.md).

* ``xxh64`` / ``hash_int64`` / ``hash_varlen``: XXH64 (seed 0) of a value's
  canonical bytes: 8 little-endian bytes for fixed-width values, the raw
  bytes (UTF-8 for text) for variable-width ones.
* ``hll_update``: fold 64-bit hashes into dense HyperLogLog registers.
* ``tdigest_compress``: merge centroids sorted by mean into a merging
  t-digest with the k1 (arcsine) scale function.

Validation happens in Python before ``with nogil:``; the Python side in
:mod:`orochi_fdw.sketches` is the public API.
"""

from libc.stdint cimport uint8_t, uint64_t, int64_t
from libc.string cimport memcpy
from libc.math cimport asin, sin, M_PI

import numpy as np

from _interrupt cimport INTERRUPT_MASK, bind_interrupt_flag, interrupted, raise_interrupt

bind_interrupt_flag()

cdef uint64_t P1 = 0x9E3779B185EBCA87ULL
cdef uint64_t P2 = 0xC2B2AE3D27D4EB4FULL
cdef uint64_t P3 = 0x165667B19E3779F9ULL
cdef uint64_t P4 = 0x85EBCA77C2B2AE63ULL
cdef uint64_t P5 = 0x27D4EB2F165667C5ULL


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _read64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)  # little-endian hosts only (x86-64, aarch64)
    return v


cdef inline uint64_t _read32(const uint8_t* p) noexcept nogil:
    cdef unsigned int v
    memcpy(&v, p, 4)
    return <uint64_t>v


cdef inline uint64_t _round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc = acc + lane * P2
    acc = _rotl(acc, 31)
    return acc * P1


cdef inline uint64_t _merge_round(uint64_t acc, uint64_t val) noexcept nogil:
    acc = acc ^ _round(0, val)
    return acc * P1 + P4


cdef inline uint64_t _avalanche(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= P2
    h ^= h >> 29
    h *= P3
    h ^= h >> 32
    return h


cdef uint64_t _xxh64(const uint8_t* p, Py_ssize_t n, uint64_t seed) noexcept nogil:
    cdef const uint8_t* end = p + n
    cdef uint64_t v1, v2, v3, v4, h
    if n >= 32:
        v1 = seed + P1 + P2
        v2 = seed + P2
        v3 = seed
        v4 = seed - P1
        while p + 32 <= end:
            v1 = _round(v1, _read64(p))
            v2 = _round(v2, _read64(p + 8))
            v3 = _round(v3, _read64(p + 16))
            v4 = _round(v4, _read64(p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge_round(h, v1)
        h = _merge_round(h, v2)
        h = _merge_round(h, v3)
        h = _merge_round(h, v4)
    else:
        h = seed + P5
    h += <uint64_t>n
    while p + 8 <= end:
        h ^= _round(0, _read64(p))
        h = _rotl(h, 27) * P1 + P4
        p += 8
    if p + 4 <= end:
        h ^= _read32(p) * P1
        h = _rotl(h, 23) * P2 + P3
        p += 4
    while p < end:
        h ^= (<uint64_t>p[0]) * P5
        h = _rotl(h, 11) * P1
        p += 1
    return _avalanche(h)


cdef inline uint64_t _xxh64_u64(uint64_t v) noexcept nogil:
    """XXH64 (seed 0) of the 8 little-endian bytes of v."""
    cdef uint64_t h = P5 + 8
    h ^= _round(0, v)
    h = _rotl(h, 27) * P1 + P4
    return _avalanche(h)


def xxh64(const uint8_t[::1] data, uint64_t seed=0) -> int:
    """XXH64 of a byte buffer."""
    cdef Py_ssize_t n = data.shape[0]
    cdef uint8_t empty = 0
    cdef uint64_t h
    with nogil:
        if n == 0:
            h = _xxh64(&empty, 0, seed)
        else:
            h = _xxh64(&data[0], n, seed)
    return h


def hash_int64(const int64_t[::1] values, uint64_t[::1] out):
    """out[i] = XXH64 of the 8 little-endian bytes of values[i]."""
    cdef Py_ssize_t i, n = values.shape[0]
    cdef bint stopped = False
    if out.shape[0] != n:
        raise ValueError("out has the wrong length")
    with nogil:
        for i in range(n):
            if (i & INTERRUPT_MASK) == 0 and interrupted():
                stopped = True
                break
            out[i] = _xxh64_u64(<uint64_t>values[i])
    if stopped:
        raise_interrupt()


def hash_varlen(const int64_t[::1] offsets, const uint8_t[::1] data, uint64_t[::1] out):
    """out[i] = XXH64 of data[offsets[i]:offsets[i + 1]]."""
    cdef Py_ssize_t i, n = offsets.shape[0] - 1
    cdef uint8_t empty = 0
    cdef const uint8_t* base = &empty
    cdef bint stopped = False
    if n < 0 or out.shape[0] != n:
        raise ValueError("out has the wrong length")
    if n > 0 and (offsets[0] < 0 or offsets[n] > data.shape[0]):
        raise ValueError("offsets out of range")
    for i in range(n):
        if offsets[i + 1] < offsets[i]:
            raise ValueError("offsets are not non-decreasing")
    if data.shape[0] > 0:
        base = &data[0]
    with nogil:
        for i in range(n):
            if (i & INTERRUPT_MASK) == 0 and interrupted():
                stopped = True
                break
            out[i] = _xxh64(base + offsets[i], offsets[i + 1] - offsets[i], 0)
    if stopped:
        raise_interrupt()


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


def hll_update(uint8_t[::1] registers, const uint64_t[::1] hashes, int p):
    """Fold hashes into 2**p dense registers: index = top p bits, value =
    max(value, leading zeros of the remaining 64 - p bits + 1)."""
    cdef Py_ssize_t i, n = hashes.shape[0]
    cdef uint64_t h, rest
    cdef Py_ssize_t idx
    cdef uint8_t rho
    cdef int q = 64 - p
    cdef bint stopped = False
    if not 4 <= p <= 18 or registers.shape[0] != (1 << p):
        raise ValueError("registers must have 2**p entries, 4 <= p <= 18")
    with nogil:
        for i in range(n):
            if (i & INTERRUPT_MASK) == 0 and interrupted():
                stopped = True
                break
            h = hashes[i]
            idx = <Py_ssize_t>(h >> q)
            rest = h << p
            if rest == 0:
                rho = q + 1
            else:
                rho = __builtin_clzll(rest) + 1
            if rho > registers[idx]:
                registers[idx] = rho
    if stopped:
        raise_interrupt()


def tdigest_compress(const double[::1] means, const double[::1] weights, double compression,
                     double[::1] out_means, double[::1] out_weights) -> int:
    """Merge centroids (sorted by mean, weights > 0) into at most
    len(out_means) centroids under the k1 scale function
    k(q) = compression / (2 pi) * asin(2q - 1): a centroid spans at most one
    unit of k. Returns how many centroids were written."""
    cdef Py_ssize_t i, n = means.shape[0], k = 0, cap = out_means.shape[0]
    cdef double total = 0.0, so_far = 0.0, limit, cur_m, cur_w, w, kq
    cdef double norm = compression / (2.0 * M_PI)
    if weights.shape[0] != n or out_weights.shape[0] != cap:
        raise ValueError("arrays of different lengths")
    if cap < n:
        raise ValueError("out is shorter than the input")
    if n == 0:
        return 0
    with nogil:
        for i in range(n):
            total += weights[i]
        cur_m = means[0]
        cur_w = weights[0]
        kq = norm * asin(-1.0) + 1.0
        limit = total * (sin(kq / norm) + 1.0) / 2.0
        for i in range(1, n):
            w = weights[i]
            if so_far + cur_w + w <= limit:
                cur_w += w
                cur_m += (means[i] - cur_m) * w / cur_w
            else:
                out_means[k] = cur_m
                out_weights[k] = cur_w
                k += 1
                so_far += cur_w
                kq = norm * asin(2.0 * min(so_far / total, 1.0) - 1.0) + 1.0
                if kq >= norm * M_PI / 2.0:
                    limit = total
                else:
                    limit = total * (sin(kq / norm) + 1.0) / 2.0
                cur_m = means[i]
                cur_w = w
        out_means[k] = cur_m
        out_weights[k] = cur_w
        k += 1
    return k


def hll_update_int64(uint8_t[::1] registers, const int64_t[::1] values, int p):
    """hll_update of the XXH64 hashes of int64 values (hash_int64), fused:
    no hash array is written."""
    cdef Py_ssize_t i, n = values.shape[0]
    cdef uint64_t h, rest
    cdef Py_ssize_t idx
    cdef uint8_t rho
    cdef int q = 64 - p
    cdef bint stopped = False
    if not 4 <= p <= 18 or registers.shape[0] != (1 << p):
        raise ValueError("registers must have 2**p entries, 4 <= p <= 18")
    with nogil:
        for i in range(n):
            if (i & INTERRUPT_MASK) == 0 and interrupted():
                stopped = True
                break
            h = _xxh64_u64(<uint64_t>values[i])
            idx = <Py_ssize_t>(h >> q)
            rest = h << p
            if rest == 0:
                rho = q + 1
            else:
                rho = __builtin_clzll(rest) + 1
            if rho > registers[idx]:
                registers[idx] = rho
    if stopped:
        raise_interrupt()
