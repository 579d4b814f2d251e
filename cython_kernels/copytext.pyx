# COPY text kernels: numbers written as the text Postgres reads back exactly.
"""Text forms of fixed-width columns for COPY ... FROM STDIN (the cluster
layer's routed inserts, :mod:`orochi_fdw.cluster.copyformat`).

* ``format_int``: decimal text of int16 / int32 / int64 values;
* ``format_float64``: the shortest text that reads back as the same double
  (CPython's ``repr``: ``PyOS_double_to_string`` in mode 'r'), ``NaN``,
  ``Infinity``, ``-Infinity`` for the special values.

Both write into a caller-allocated ``out`` buffer (21 / 32 bytes per value
are enough) and fill ``offsets`` (values + 1); they return the bytes used.
The numpy path of copyformat is their reference in the tests.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, strlen
from cpython.mem cimport PyMem_Free

from _typedefs cimport int_t

cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* type) except NULL


def format_int(const int_t[:] values, uint8_t[:] out, int64_t[:] offsets):
    """Decimal text of each value into ``out``; returns the bytes written."""
    cdef Py_ssize_t n = values.shape[0]
    if offsets.shape[0] < n + 1 or out.shape[0] < n * 21:
        raise ValueError("format_int: out needs 21 bytes per value and offsets one more entry than values")
    cdef Py_ssize_t i, j, k
    cdef int64_t pos = 0
    cdef int64_t v
    cdef uint64_t u
    cdef uint8_t buf[24]
    with nogil:
        offsets[0] = 0
        for i in range(n):
            v = values[i]
            if v < 0:
                out[pos] = 45  # '-'
                pos += 1
                u = <uint64_t>(-(v + 1)) + 1
            else:
                u = <uint64_t>v
            k = 0
            while True:
                buf[k] = <uint8_t>(48 + u % 10)
                u //= 10
                k += 1
                if u == 0:
                    break
            for j in range(k):
                out[pos + j] = buf[k - 1 - j]
            pos += k
            offsets[i + 1] = pos
    return pos


def format_float64(const double[:] values, uint8_t[:] out, int64_t[:] offsets):
    """Shortest round-trip text of each double into ``out``; returns the
    bytes written."""
    cdef Py_ssize_t n = values.shape[0]
    if offsets.shape[0] < n + 1 or out.shape[0] < n * 32:
        raise ValueError("format_float64: out needs 32 bytes per value and offsets one more entry than values")
    cdef Py_ssize_t i
    cdef int64_t pos = 0
    cdef double v
    cdef char* text
    cdef size_t length
    offsets[0] = 0
    for i in range(n):
        v = values[i]
        if v != v:
            memcpy(&out[pos], b"NaN", 3)
            pos += 3
        elif v == float("inf"):
            memcpy(&out[pos], b"Infinity", 8)
            pos += 8
        elif v == -float("inf"):
            memcpy(&out[pos], b"-Infinity", 9)
            pos += 9
        else:
            text = PyOS_double_to_string(v, b'r', 0, 0, NULL)
            length = strlen(text)
            memcpy(&out[pos], text, length)
            PyMem_Free(text)
            pos += length
        offsets[i + 1] = pos
    return pos


cdef int64_t _DAY_US = 86400000000LL
cdef int64_t _HOUR_US = 3600000000LL
cdef int64_t _MINUTE_US = 60000000LL
cdef int64_t _SECOND_US = 1000000LL


cdef inline void _civil(int64_t days, int64_t* y, int* m, int* d) noexcept nogil:
    # days since 2000-01-01 -> proleptic Gregorian date (H. Hinnant's
    # algorithm, written for C's truncating division, which cdivision gives)
    cdef int64_t z = days + 10957 + 719468
    cdef int64_t era = (z if z >= 0 else z - 146096) // 146097
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    d[0] = <int>(doy - (153 * mp + 2) // 5 + 1)
    m[0] = <int>(mp + 3 if mp < 10 else mp - 9)
    y[0] = yoe + era * 400 + (1 if m[0] <= 2 else 0)


cdef inline int64_t _digits(uint8_t[:] out, int64_t pos, int64_t v, int width) noexcept nogil:
    cdef int i
    for i in range(width - 1, -1, -1):
        out[pos + i] = <uint8_t>(48 + v % 10)
        v //= 10
    return pos + width


def format_timestamp(const int64_t[:] values, uint8_t[:] out, int64_t[:] offsets, bint with_zone):
    """'YYYY-MM-DD HH:MM:SS.ffffff' (+ '+00' when ``with_zone``) of
    microseconds since 2000-01-01, for years 1 to 9999 only (the caller
    checks the range)."""
    cdef Py_ssize_t n = values.shape[0]
    if offsets.shape[0] < n + 1 or out.shape[0] < n * 29:
        raise ValueError("format_timestamp: out needs 29 bytes per value")
    cdef Py_ssize_t i
    cdef int64_t pos = 0, us, days, rest, y
    cdef int m, d
    with nogil:
        offsets[0] = 0
        for i in range(n):
            us = values[i]
            days = us // _DAY_US  # C division (cdivision): truncates toward zero
            rest = us - days * _DAY_US
            if rest < 0:
                rest += _DAY_US
                days -= 1
            _civil(days, &y, &m, &d)
            pos = _digits(out, pos, y, 4)
            out[pos] = 45
            pos = _digits(out, pos + 1, m, 2)
            out[pos] = 45
            pos = _digits(out, pos + 1, d, 2)
            out[pos] = 32
            pos = _digits(out, pos + 1, rest // _HOUR_US, 2)
            out[pos] = 58
            pos = _digits(out, pos + 1, (rest // _MINUTE_US) % 60, 2)
            out[pos] = 58
            pos = _digits(out, pos + 1, (rest // _SECOND_US) % 60, 2)
            out[pos] = 46
            pos = _digits(out, pos + 1, rest % _SECOND_US, 6)
            if with_zone:
                out[pos] = 43
                out[pos + 1] = 48
                out[pos + 2] = 48
                pos += 3
            offsets[i + 1] = pos
    return pos


def format_date(const int32_t[:] values, uint8_t[:] out, int64_t[:] offsets):
    """'YYYY-MM-DD' of days since 2000-01-01, years 1 to 9999 only."""
    cdef Py_ssize_t n = values.shape[0]
    if offsets.shape[0] < n + 1 or out.shape[0] < n * 10:
        raise ValueError("format_date: out needs 10 bytes per value")
    cdef Py_ssize_t i
    cdef int64_t pos = 0, y
    cdef int m, d
    with nogil:
        offsets[0] = 0
        for i in range(n):
            _civil(values[i], &y, &m, &d)
            pos = _digits(out, pos, y, 4)
            out[pos] = 45
            pos = _digits(out, pos + 1, m, 2)
            out[pos] = 45
            pos = _digits(out, pos + 1, d, 2)
            offsets[i + 1] = pos
    return pos
