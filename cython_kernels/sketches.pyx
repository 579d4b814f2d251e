# Sketch kernels: xxHash64, HyperLogLog register updates, t-digest compression.
"""Kernels for Orochi's mergeable sketches (docs/sketches.md).

* ``xxh64`` / ``hash_int64`` / ``hash_varlen``: XXH64 (seed 0) of a value's
  canonical bytes: 8 little-endian bytes for fixed-width values, the raw
  bytes (UTF-8 for text) for variable-width ones.
* ``hll_update``: fold 64-bit hashes into dense HyperLogLog registers.
* ``tdigest_compress``: merge centroids sorted by mean into a merging
  t-digest with the k1 (arcsine) scale function.
* ``sort_finite_float64``: the finite values of an array sorted ascending,
  -0.0 as 0.0 (a t-digest is built from them), by an LSD radix sort.
* ``merge_runs_float64``: runs of sorted values, held apart, merged into
  one sorted array (no copy joining them first; three at once).
* ``distinct_counts_float64``: sorted values as their distinct values and
  how many times each comes (a t-digest state ships repeating values so).
* ``tdigest_compress_sorted``: ``tdigest_compress`` of sorted values of
  weight 1, the centroids' means computed several at a time.
* ``check_sorted_finite``: whether values are as ``sort_finite_float64``
  writes them.

Validation happens in Python before ``with nogil:``; the Python side in
:mod:`orochi_fdw.sketches` is the public API.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from libc.math cimport asin, floor, sin, M_PI

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


cdef enum:
    RADIX_BITS = 11
    RADIX_BUCKETS = 2048
    RADIX_PASSES = 6  # 6 x 11 bits cover 64
cdef uint64_t SIGN = 0x8000000000000000ULL
cdef uint64_t EXP_MASK = 0x7FF0000000000000ULL


cdef enum:
    MSD_BITS = 16
    MSD_BUCKETS = 65536
    MSD_MIN = 65536     # fewer values: LSD passes alone (they fit in cache)
    SEG_BITS = 8        # LSD digits within an MSD bucket
    SEG_INSERTION = 32  # buckets this small: insertion sort


cdef inline double _key_value(uint64_t key) noexcept nogil:
    cdef uint64_t bits = (key & ~SIGN) if (key & SIGN) else (~key)
    cdef double v
    memcpy(&v, &bits, 8)
    return v


cdef bint _scatter(const uint64_t *src, uint64_t *dst, Py_ssize_t n, int shift, uint64_t mask,
                   Py_ssize_t *counts) noexcept nogil:
    """One radix pass: counts[d] (how many keys have digit d) become the
    bucket starts, each key goes to its bucket in order, and counts[d] ends
    as the end of bucket d. Returns False if interrupted."""
    cdef Py_ssize_t i, total = 0, c
    cdef uint64_t d, key
    for d in range(mask + 1):
        c = counts[d]
        counts[d] = total
        total += c
    for i in range(n):
        if (i & INTERRUPT_MASK) == 0 and interrupted():
            return False
        key = src[i]
        d = (key >> shift) & mask
        dst[counts[d]] = key
        counts[d] += 1
    return True


cdef bint _lsd_sort(uint64_t *src, uint64_t *scratch, Py_ssize_t n, int low_bits, int bits,
                    Py_ssize_t *counts, double *out) noexcept nogil:
    """Sort keys that share every bit from ``low_bits`` up by LSD passes of
    ``bits`` bits (a pass skipped when every key has the same digit), and
    write their values to out; ``counts`` holds ceil(low_bits / bits) <<
    bits entries, ``scratch`` n keys. Returns False if interrupted."""
    cdef Py_ssize_t i, j
    cdef uint64_t key, mask = (1ULL << bits) - 1
    cdef uint64_t *swap
    cdef int p, passes = (low_bits + bits - 1) // bits
    if n <= SEG_INSERTION or low_bits == 0:
        if low_bits:
            for i in range(1, n):
                key = src[i]
                j = i
                while j > 0 and src[j - 1] > key:
                    src[j] = src[j - 1]
                    j -= 1
                src[j] = key
    else:
        memset(counts, 0, (<Py_ssize_t> passes << bits) * sizeof(Py_ssize_t))
        for i in range(n):
            key = src[i]
            for p in range(passes):
                counts[(<Py_ssize_t> p << bits) + ((key >> (p * bits)) & mask)] += 1
        for p in range(passes):
            if counts[(<Py_ssize_t> p << bits) + ((src[0] >> (p * bits)) & mask)] == n:
                continue  # every key has this digit: the pass keeps the order
            if not _scatter(src, scratch, n, p * bits, mask, counts + (<Py_ssize_t> p << bits)):
                return False
            swap = src
            src = scratch
            scratch = swap
    for i in range(n):
        out[i] = _key_value(src[i])
    return True


def sort_finite_float64(const double[::1] values, double[::1] out, const double[::1] more=None) -> int:
    """Write the finite values of ``values`` (and of ``more``, as if they
    followed: two buffers sorted together without being joined first) to
    ``out`` sorted ascending,
    -0.0 written as 0.0; returns how many were written. NaN and infinities
    are left out. The result is numpy's ``np.sort(v[np.isfinite(v)]) + 0.0``
    (orochi_fdw.sketches.reference.sort_finite), made by a radix sort of the
    values' bits mapped to unsigned keys that order as the numbers. Fewer
    than MSD_MIN values: LSD, 6 passes of 11 bits, a pass skipped when every
    key has the same digit. More: one MSD pass on the 16 bits below the bits
    all keys share (a bucket then fits in cache), each bucket sorted by LSD
    passes of 8 bits on the bits below."""
    cdef Py_ssize_t n1 = values.shape[0]
    cdef Py_ssize_t i, n = n1 + (0 if more is None else more.shape[0]), m = 0, start, c, ncounts
    cdef uint64_t bits, key, kmin = 0xFFFFFFFFFFFFFFFFULL, kmax = 0
    cdef uint64_t *keys
    cdef uint64_t *tmp
    cdef Py_ssize_t *counts
    cdef int d, shift, top
    cdef double v
    cdef double *dest
    cdef const double *src1 = &values[0] if n1 else NULL
    cdef const double *src2 = &more[0] if n > n1 else NULL
    cdef bint stopped = False
    cdef bint msd = n >= MSD_MIN
    if out.shape[0] < n:
        raise ValueError("out is shorter than the input")
    if n == 0:
        return 0
    ncounts = MSD_BUCKETS + (6 << SEG_BITS) if msd else RADIX_PASSES * RADIX_BUCKETS
    keys = <uint64_t *> malloc(n * sizeof(uint64_t))
    tmp = <uint64_t *> malloc(n * sizeof(uint64_t))
    counts = <Py_ssize_t *> malloc(ncounts * sizeof(Py_ssize_t))
    if keys == NULL or tmp == NULL or counts == NULL:
        free(keys)
        free(tmp)
        free(counts)
        raise MemoryError()
    dest = &out[0]
    with nogil:
        for i in range(n):
            if (i & INTERRUPT_MASK) == 0 and interrupted():
                stopped = True
                break
            v = src1[i] if i < n1 else src2[i - n1]
            memcpy(&bits, &v, 8)
            if (bits & EXP_MASK) == EXP_MASK:
                continue  # NaN, +-Infinity
            if v == 0.0:
                bits = 0  # -0.0 is 0.0
            key = (~bits) if (bits & SIGN) else (bits | SIGN)
            keys[m] = key
            m += 1
            if key < kmin:
                kmin = key
            if key > kmax:
                kmax = key
        if not stopped and m and not msd:
            stopped = not _lsd_sort(keys, tmp, m, 64, RADIX_BITS, counts, dest)
        elif not stopped and m:
            # every key lies in [kmin, kmax]: they share the bits above the
            # highest bit in which kmin and kmax differ
            top = 63 - __builtin_clzll(kmin ^ kmax) if kmin != kmax else 0
            shift = top - MSD_BITS + 1 if top >= MSD_BITS else 0
            memset(counts, 0, MSD_BUCKETS * sizeof(Py_ssize_t))
            for i in range(m):
                counts[(keys[i] >> shift) & (MSD_BUCKETS - 1)] += 1
            stopped = not _scatter(keys, tmp, m, shift, MSD_BUCKETS - 1, counts)
            # counts[d] is now the end of bucket d; keys is scratch space
            start = 0
            d = 0
            while not stopped and d < MSD_BUCKETS:
                c = counts[d] - start
                if c:
                    stopped = not _lsd_sort(tmp + start, keys + start, c, shift, SEG_BITS,
                                            counts + MSD_BUCKETS, dest + start)
                start = counts[d]
                d += 1
    free(keys)
    free(tmp)
    free(counts)
    if stopped:
        raise_interrupt()
    return m


cdef inline void _merge2(const double *a, Py_ssize_t na, const double *b, Py_ssize_t nb,
                         double *out) noexcept nogil:
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef double x, y
    cdef int t
    while i < na and j < nb:
        # no branch on the comparison (it cannot be predicted)
        x = a[i]
        y = b[j]
        t = y < x
        out[k] = y if t else x
        j += t
        i += 1 - t
        k += 1
    if i < na:
        memcpy(out + k, a + i, (na - i) * sizeof(double))
    elif j < nb:
        memcpy(out + k, b + j, (nb - j) * sizeof(double))


cdef inline void _merge3(const double *a, Py_ssize_t na, const double *b, Py_ssize_t nb,
                         const double *c, Py_ssize_t nc, double *out) noexcept nogil:
    """Three sorted runs merged into out, no buffer; once one is used up,
    the other two by _merge2."""
    cdef Py_ssize_t i = 0, j = 0, l = 0, k = 0
    cdef double x, y, z, m
    cdef int t1, t2
    while i < na and j < nb and l < nc:
        # no branch on the comparisons (they cannot be predicted)
        x = a[i]
        y = b[j]
        z = c[l]
        t1 = y < x
        m = y if t1 else x
        t2 = z < m
        out[k] = z if t2 else m
        l += t2
        j += (1 - t2) & t1
        i += (1 - t2) & (1 - t1)
        k += 1
    if i == na:
        _merge2(b + j, nb - j, c + l, nc - l, out + k)
    elif j == nb:
        _merge2(a + i, na - i, c + l, nc - l, out + k)
    else:
        _merge2(a + i, na - i, b + j, nb - j, out + k)


def distinct_counts_float64(const double[::1] values, double[::1] out_values,
                            uint32_t[::1] out_counts) -> int:
    """Sorted ``values`` as their distinct values (``out_values``) and how
    many times each comes (``out_counts``), in one pass; returns how many
    distinct values there are, or -1 once there are more than the outputs
    hold (the pass stops there)."""
    cdef Py_ssize_t n = values.shape[0], d = 0, i, first = 0
    cdef Py_ssize_t cap = min(out_values.shape[0], out_counts.shape[0])
    cdef bint stopped = False
    if n > 0xFFFFFFFF:
        raise ValueError("too many values for 32-bit counts")
    if n == 0:
        return 0
    if cap == 0:
        return -1
    with nogil:
        out_values[0] = values[0]
        for i in range(1, n):
            if (i & INTERRUPT_MASK) == 0 and interrupted():
                stopped = True
                break
            if values[i] != values[i - 1]:
                out_counts[d] = <uint32_t> (i - first)
                d += 1
                if d == cap:
                    d = -1
                    break
                out_values[d] = values[i]
                first = i
        if d >= 0 and not stopped:
            out_counts[d] = <uint32_t> (n - first)
            d += 1
    if stopped:
        raise_interrupt()
    return d


def merge_runs_float64(runs, double[::1] out):
    """Merge the sorted runs (a sequence of float64 arrays, each sorted
    ascending, no NaN) into ``out``, without joining them first: the two
    shortest merged into a buffer while more than three are left, the last
    three (or two) into ``out`` at once (a parallel aggregate's two or three
    runs: one pass, no buffer)."""
    cdef Py_ssize_t k = len(runs), n = 0, i, a, b, na
    cdef const double[::1] view
    cdef const double **ptr
    cdef Py_ssize_t *length
    cdef bint *owned
    cdef double *buf
    cdef bint stopped = False, failed = False
    views = []
    for r in runs:
        view = r
        views.append(view)  # held for the call
        n += view.shape[0]
    if out.shape[0] != n:
        raise ValueError("out must have the total length of the runs")
    if n == 0:
        return
    ptr = <const double **> malloc((k + 1) * sizeof(double *))
    length = <Py_ssize_t *> malloc((k + 1) * sizeof(Py_ssize_t))
    owned = <bint *> malloc((k + 1) * sizeof(bint))
    if ptr == NULL or length == NULL or owned == NULL:
        free(ptr)
        free(length)
        free(owned)
        raise MemoryError()
    na = 0
    for i in range(k):
        view = views[i]
        if view.shape[0]:
            ptr[na] = &view[0]
            length[na] = view.shape[0]
            owned[na] = False
            na += 1
    with nogil:
        while na > 3:
            if interrupted():
                stopped = True
                break
            # the two shortest, a < b
            a = 0 if length[0] <= length[1] else 1
            b = 1 - a
            for i in range(2, na):
                if length[i] < length[a]:
                    b = a
                    a = i
                elif length[i] < length[b]:
                    b = i
            if a > b:
                a, b = b, a
            buf = <double *> malloc((length[a] + length[b]) * sizeof(double))
            if buf == NULL:
                failed = True
                break
            _merge2(ptr[a], length[a], ptr[b], length[b], buf)
            if owned[a]:
                free(<void *> ptr[a])
            if owned[b]:
                free(<void *> ptr[b])
            ptr[a] = buf
            length[a] += length[b]
            owned[a] = True
            na -= 1
            ptr[b] = ptr[na]
            length[b] = length[na]
            owned[b] = owned[na]
        if not stopped and not failed:
            if na == 1:
                memcpy(&out[0], ptr[0], length[0] * sizeof(double))
            elif na == 2:
                _merge2(ptr[0], length[0], ptr[1], length[1], &out[0])
            else:
                _merge3(ptr[0], length[0], ptr[1], length[1], ptr[2], length[2], &out[0])
        for i in range(na):
            if owned[i]:
                free(<void *> ptr[i])
    free(ptr)
    free(length)
    free(owned)
    if failed:
        raise MemoryError()
    if stopped:
        raise_interrupt()


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


def check_sorted_finite(const double[::1] values) -> bool:
    """Whether ``values`` is as sort_finite_float64 writes them: finite,
    non-decreasing, no -0.0 (one pass, no temporary arrays)."""
    cdef Py_ssize_t i, n = values.shape[0]
    cdef uint64_t bits
    cdef double v, prev
    cdef bint ok = True
    if n == 0:
        return True
    with nogil:
        prev = values[0]
        for i in range(n):
            v = values[i]
            memcpy(&bits, &v, 8)
            if (bits & EXP_MASK) == EXP_MASK or bits == SIGN or v < prev:
                ok = False
                break
            prev = v
    return ok


cdef enum:
    LANES = 4


cdef inline bint _lane_next(int l, Py_ssize_t k, const Py_ssize_t *lane, const double *om,
                            const double *ow, const double *x, Py_ssize_t *cur, Py_ssize_t *nxt,
                            Py_ssize_t *p, Py_ssize_t *e, double *m, double *w) noexcept nogil:
    """Start lane l on its next centroid, nxt[l] (om holds its start, ow its
    size), and find the one after; False when it has none left."""
    cur[l] = nxt[l]
    if cur[l] >= k:
        return False
    p[l] = <Py_ssize_t> om[cur[l]]
    e[l] = p[l] + <Py_ssize_t> ow[cur[l]]
    m[l] = x[p[l]]
    w[l] = 1.0
    p[l] += 1
    nxt[l] += 1
    while nxt[l] < k and lane[nxt[l]] != l:
        nxt[l] += 1
    return True


def tdigest_compress_sorted(const double[::1] values, double compression, double[::1] out_means,
                            double[::1] out_weights) -> int:
    """``tdigest_compress(values, ones)`` of sorted values (each of weight
    1), bit for bit, faster: with unit weights where a centroid ends depends
    only on counts, so the centroids' bounds are found first (one step per
    centroid), then their means, each the same running mean over its values
    (m += (x - m) / w), LANES centroids at a time so that their divisions
    overlap. Returns how many centroids were written."""
    cdef Py_ssize_t n = values.shape[0], cap = out_means.shape[0], k = 0, pos = 0, i, j, c, steps
    cdef double total, so_far = 0.0, limit, kq, f
    cdef double norm = compression / (2.0 * M_PI)
    cdef const double *x
    cdef double *om
    cdef double *ow
    cdef double load[LANES]
    cdef Py_ssize_t nxt[LANES]
    cdef Py_ssize_t cur[LANES]
    cdef Py_ssize_t p[LANES]
    cdef Py_ssize_t e[LANES]
    cdef double m[LANES]
    cdef double w[LANES]
    cdef Py_ssize_t *lane
    cdef int l, best, active
    cdef double m0, m1, m2, m3, w0, w1, w2, w3
    cdef Py_ssize_t p0, p1, p2, p3
    cdef bint stopped = False
    if out_weights.shape[0] != cap:
        raise ValueError("arrays of different lengths")
    if cap < n:
        raise ValueError("out is shorter than the input")
    if n == 0:
        return 0
    lane = <Py_ssize_t *> malloc(n * sizeof(Py_ssize_t))
    if lane == NULL:
        raise MemoryError()
    x = &values[0]
    om = &out_means[0]
    ow = &out_weights[0]
    with nogil:
        total = 0.0
        for i in range(n):
            total += 1.0
        # bounds: tdigest_compress adds value i to the current centroid
        # while so_far + cur_w + 1 <= limit (integers, exact in a double):
        # the centroid takes max(1, floor(limit) - so_far) values
        kq = norm * asin(-1.0) + 1.0
        limit = total * (sin(kq / norm) + 1.0) / 2.0
        while pos < n:
            c = 1
            f = floor(limit) - so_far
            if f > 1.0:
                c = <Py_ssize_t> f if f < <double> (n - pos) else n - pos
            om[k] = <double> pos   # the centroid's start until its mean is known
            ow[k] = <double> c
            k += 1
            pos += c
            if pos < n:
                so_far += <double> c
                kq = norm * asin(2.0 * min(so_far / total, 1.0) - 1.0) + 1.0
                if kq >= norm * M_PI / 2.0:
                    limit = total
                else:
                    limit = total * (sin(kq / norm) + 1.0) / 2.0
        # lanes: each centroid to the least loaded lane, in order
        for l in range(LANES):
            load[l] = 0.0
        for j in range(k):
            best = 0
            for l in range(1, LANES):
                if load[l] < load[best]:
                    best = l
            lane[j] = best
            load[best] += ow[j]
        # each lane's first centroid
        active = 0
        for l in range(LANES):
            nxt[l] = 0
            while nxt[l] < k and lane[nxt[l]] != l:
                nxt[l] += 1
        for l in range(LANES):
            if _lane_next(l, k, lane, om, ow, x, cur, nxt, p, e, m, w):
                active += 1
            else:
                p[l] = e[l] = 0
        while active and not stopped:
            if interrupted():
                stopped = True
                break
            if active == LANES:
                # every lane has a centroid: LANES running means side by side
                steps = e[0] - p[0]
                for l in range(1, LANES):
                    if e[l] - p[l] < steps:
                        steps = e[l] - p[l]
                m0, m1, m2, m3 = m[0], m[1], m[2], m[3]
                w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
                p0, p1, p2, p3 = p[0], p[1], p[2], p[3]
                for i in range(steps):
                    w0 += 1.0
                    w1 += 1.0
                    w2 += 1.0
                    w3 += 1.0
                    m0 += (x[p0 + i] - m0) / w0
                    m1 += (x[p1 + i] - m1) / w1
                    m2 += (x[p2 + i] - m2) / w2
                    m3 += (x[p3 + i] - m3) / w3
                m[0], m[1], m[2], m[3] = m0, m1, m2, m3
                w[0], w[1], w[2], w[3] = w0, w1, w2, w3
                p[0], p[1], p[2], p[3] = p0 + steps, p1 + steps, p2 + steps, p3 + steps
            else:
                # fewer centroids left than lanes: one lane to its centroid's end
                for l in range(LANES):
                    if cur[l] < k:
                        while p[l] < e[l]:
                            w[l] += 1.0
                            m[l] += (x[p[l]] - m[l]) / w[l]
                            p[l] += 1
                        break
            # lanes at their centroid's end: its mean, then the lane's next
            for l in range(LANES):
                if cur[l] < k and p[l] == e[l]:
                    om[cur[l]] = m[l]
                    if not _lane_next(l, k, lane, om, ow, x, cur, nxt, p, e, m, w):
                        active -= 1
    free(lane)
    if stopped:
        raise_interrupt()
    return k
