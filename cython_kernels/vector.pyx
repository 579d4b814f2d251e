# Vector kernels: exact distances between a query and many float32 vectors.
"""Distances of one query vector to the rows of a contiguous n x d float32
array (a stripe's vector column as decoded), for exact k-nearest-neighbour
search and for re-ranking what an index found.

The sums run in double precision over eight lanes (element i goes to lane
i % 8, the lanes are added pairwise, then the tail) - the order of the
orochi.vector operators in pgext/vector.c - so that a distance computed here
is, bit for bit, the float8 that ``embedding <-> q`` returns in SQL.

Metrics (``METRIC_*``): 0 L2 distance (``<->``), 1 negative inner product
(``<#>``), 2 cosine distance (``<=>``, NaN against a zero vector), 3 inner
product.  ``orochi_fdw.vector.reference`` is the numpy reference the tests
hold these to.
"""

from libc.math cimport sqrt, NAN
from libc.stdint cimport int64_t

import numpy as np

METRIC_L2 = 0
METRIC_NEGATIVE_INNER_PRODUCT = 1
METRIC_COSINE = 2
METRIC_INNER_PRODUCT = 3


cdef inline double _lanes(const double* acc) noexcept nogil:
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline double _squared_l2(const float* a, const float* b, Py_ssize_t n) noexcept nogil:
    cdef double acc[8]
    cdef double tail = 0, d
    cdef Py_ssize_t i = 0, j
    for j in range(8):
        acc[j] = 0
    while i + 8 <= n:
        for j in range(8):
            d = <double> a[i + j] - <double> b[i + j]
            acc[j] += d * d
        i += 8
    while i < n:
        d = <double> a[i] - <double> b[i]
        tail += d * d
        i += 1
    return _lanes(acc) + tail


cdef inline double _dot(const float* a, const float* b, Py_ssize_t n) noexcept nogil:
    cdef double acc[8]
    cdef double tail = 0
    cdef Py_ssize_t i = 0, j
    for j in range(8):
        acc[j] = 0
    while i + 8 <= n:
        for j in range(8):
            acc[j] += <double> a[i + j] * <double> b[i + j]
        i += 8
    while i < n:
        tail += <double> a[i] * <double> b[i]
        i += 1
    return _lanes(acc) + tail


cdef inline double _distance(const float* x, const float* q, Py_ssize_t d, int metric,
                             double qq) noexcept nogil:
    cdef double ab, aa, sim
    if metric == 0:
        return sqrt(_squared_l2(x, q, d))
    if metric == 1:
        return -_dot(x, q, d)
    if metric == 3:
        return _dot(x, q, d)
    ab = _dot(x, q, d)
    aa = _dot(x, x, d)
    if aa == 0 or qq == 0:
        return NAN
    sim = ab / (sqrt(aa) * sqrt(qq))
    if sim > 1:
        sim = 1
    elif sim < -1:
        sim = -1
    return 1 - sim


cdef int _check(Py_ssize_t rows, Py_ssize_t width, Py_ssize_t dims, int metric) except -1:
    # the typed views fix the number of dimensions; their shapes are read
    # as they are (an ndarray made of each view cost microseconds a call,
    # more than the distances of an index's few candidates)
    if width != dims:
        raise ValueError(f"shapes ({rows}, {width}) and ({dims},) do not match")
    if not 0 <= metric <= 3:
        raise ValueError(f"unknown metric {metric}")
    return 0


def distances(const float[:, ::1] X, const float[::1] q, int metric, double[::1] out):
    """out[i] = distance(X[i], q) for every row of X."""
    _check(X.shape[0], X.shape[1], q.shape[0], metric)
    if out.shape[0] != X.shape[0]:
        raise ValueError("out must have one entry per row")
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], i
    cdef double qq = 0
    with nogil:
        if d > 0 and metric == 2:
            qq = _dot(&q[0], &q[0], d)
        for i in range(n):
            out[i] = _distance(&X[i, 0], &q[0], d, metric, qq) if d > 0 else 0.0


def distances_rows(const float[:, ::1] X, const int64_t[::1] rows, const float[::1] q, int metric,
                   double[::1] out):
    """out[j] = distance(X[rows[j]], q): only the rows a filter kept, or the
    candidates an index found."""
    _check(X.shape[0], X.shape[1], q.shape[0], metric)
    if out.shape[0] != rows.shape[0]:
        raise ValueError("out must have one entry per row index")
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = rows.shape[0], j
    cdef int64_t r
    cdef double qq = 0
    for j in range(m):
        if rows[j] < 0 or rows[j] >= n:
            raise IndexError(f"row {rows[j]} outside 0..{n - 1}")
    with nogil:
        if d > 0 and metric == 2:
            qq = _dot(&q[0], &q[0], d)
        for j in range(m):
            r = rows[j]
            out[j] = _distance(&X[r, 0], &q[0], d, metric, qq) if d > 0 else 0.0
