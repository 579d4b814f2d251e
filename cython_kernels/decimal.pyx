# Fixed-point numeric kernels: numeric(p, s) with p <= 18 as scaled int64.
"""Text forms of ``numeric(p, s)`` values stored as scaled int64 (the value
times 10^s, DuckDB's DECIMAL layout), and back.

* ``format_decimal64``: the text PostgreSQL's ``numeric_out`` prints for a
  value of display scale ``s`` (``150`` at scale 2 is ``1.50``, ``-5`` at
  scale 3 is ``-0.005``); the NaN sentinel (int64 max) is ``NaN``; NULL
  rows are empty.
* ``parse_decimal64``: the text of a numeric (``[+-]digits[.digits]``, or
  ``NaN``, as ``numeric_out`` prints it) as a scaled int64 at scale ``s``,
  rounding half away from zero as ``numeric(p, s)``'s type modifier does,
  checking the precision ``p``. Returns ``(status, row)``: 0 = every row
  parsed, 1 = row is no such text, 2 = row does not fit ``numeric(p, s)``.

:mod:`orochi_fdw.storage.decimal` holds the pure-Python reference the tests
compare these with.
"""

import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint64_t

#: the stored value of numeric NaN: above every number, as Postgres sorts it
DEC64_NAN = 0x7FFFFFFFFFFFFFFF

cdef int64_t _NAN = 0x7FFFFFFFFFFFFFFF
cdef uint64_t[19] _POW10
_POW10[0] = 1
for _i in range(1, 19):
    _POW10[_i] = _POW10[_i - 1] * 10


def format_decimal64(const int64_t[::1] values, const uint8_t[::1] validity, int scale):
    """(offsets int64[n + 1], data uint8) of the values' text at ``scale``
    (0..18); ``validity`` None or nonzero where a value is present."""
    if scale < 0 or scale > 18:
        raise ValueError("format_decimal64: scale must be 0..18")
    cdef Py_ssize_t n = values.shape[0]
    if validity is not None and validity.shape[0] < n:
        raise ValueError("format_decimal64: validity shorter than values")
    out_arr = np.empty(n * 24 + 1, dtype=np.uint8)
    offs_arr = np.empty(n + 1, dtype=np.int64)
    cdef uint8_t[::1] out = out_arr
    cdef int64_t[::1] offsets = offs_arr
    cdef bint has_validity = validity is not None
    cdef Py_ssize_t i, j, k
    cdef int64_t pos = 0
    cdef int64_t v
    cdef uint64_t u
    cdef uint8_t buf[24]
    with nogil:
        offsets[0] = 0
        for i in range(n):
            if has_validity and validity[i] == 0:
                offsets[i + 1] = pos
                continue
            v = values[i]
            if v == _NAN:
                out[pos] = 78; out[pos + 1] = 97; out[pos + 2] = 78  # NaN
                pos += 3
                offsets[i + 1] = pos
                continue
            if v < 0:
                out[pos] = 45  # '-'
                pos += 1
                u = <uint64_t>(-(v + 1)) + 1
            else:
                u = <uint64_t>v
            # digits, least significant first, at least scale + 1 of them
            k = 0
            while u != 0 or k <= scale:
                buf[k] = <uint8_t>(48 + u % 10)
                u //= 10
                k += 1
            for j in range(k - 1, -1, -1):
                out[pos] = buf[j]
                pos += 1
                if j == scale and scale > 0:
                    out[pos] = 46  # '.'
                    pos += 1
            offsets[i + 1] = pos
    return offs_arr, out_arr[:pos]


def parse_decimal64(const int64_t[::1] offsets, const uint8_t[::1] data, const uint8_t[::1] validity,
                    int scale, int precision, int64_t[::1] out):
    """Parse each present row's text into ``out`` as a scaled int64 (NULL
    rows get 0). Returns ``(status, row)`` as the module says."""
    if scale < 0 or scale > 18 or precision < 1 or precision > 18 or scale > precision:
        raise ValueError("parse_decimal64: needs 0 <= scale <= precision <= 18")
    cdef Py_ssize_t n = offsets.shape[0] - 1
    if out.shape[0] < n or (validity is not None and validity.shape[0] < n):
        raise ValueError("parse_decimal64: out / validity shorter than the rows")
    cdef bint has_validity = validity is not None
    cdef Py_ssize_t i
    cdef int64_t p, end, start
    cdef int status = 0
    cdef Py_ssize_t bad = -1
    cdef bint neg, seen_digit, round_up
    cdef uint64_t acc, limit = _POW10[precision]
    cdef int int_digits, frac_digits
    cdef uint8_t c
    if n > 0 and (offsets[0] < 0 or offsets[n] > data.shape[0]):
        raise ValueError("parse_decimal64: offsets outside the data")
    with nogil:
        for i in range(n):
            out[i] = 0
            if has_validity and validity[i] == 0:
                continue
            p = offsets[i]
            end = offsets[i + 1]
            if end < p or end > data.shape[0]:
                status = 1; bad = i
                break
            # NaN (any case), as numeric_in takes it
            if end - p == 3 and (data[p] | 32) == 110 and (data[p + 1] | 32) == 97 and (data[p + 2] | 32) == 110:
                out[i] = _NAN
                continue
            neg = False
            if p < end and (data[p] == 45 or data[p] == 43):
                neg = data[p] == 45
                p += 1
            acc = 0
            int_digits = 0
            frac_digits = 0
            seen_digit = False
            round_up = False
            # integer part (too many digits: an overflow, once the text is
            # known to be a number)
            while p < end and 48 <= data[p] <= 57:
                seen_digit = True
                if acc != 0 or data[p] != 48 or int_digits > 0:
                    int_digits += 1
                    if int_digits <= precision - scale:
                        acc = acc * 10 + (data[p] - 48)
                p += 1
            if p < end and data[p] == 46:
                p += 1
                while p < end and 48 <= data[p] <= 57:
                    seen_digit = True
                    if frac_digits < scale:
                        acc = acc * 10 + (data[p] - 48)
                    elif frac_digits == scale:
                        round_up = data[p] >= 53
                    frac_digits += 1
                    p += 1
            if p != end or not seen_digit:
                status = 1; bad = i
                break
            if int_digits > precision - scale:
                status = 2; bad = i
                break
            while frac_digits < scale:
                acc *= 10
                frac_digits += 1
            if round_up:
                acc += 1
            if acc >= limit:
                status = 2; bad = i
                break
            out[i] = -<int64_t>acc if neg else <int64_t>acc
    return status, bad
