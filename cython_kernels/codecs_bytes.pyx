# Variable-width (text, bytea, numeric-as-text, jsonb-as-text ...) kernels.
#
# A column of n variable-width values is two arrays: int64 offsets[n + 1] and a
# uint8 data buffer; value i is data[offsets[i]:offsets[i + 1]]. No kernel here
# creates a Python object per value.
#
# Offsets passed to these kernels must have been checked with var_check first
# (non-decreasing, non-negative, last offset within the data buffer); kernels
# that write also re-check their output capacity.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp, memcpy, memset

from _bitio cimport load_le64

from orochi_fdw.errors import CorruptDataError


def var_check(const int64_t[::1] offsets, Py_ssize_t data_len):
    """Return -1 if offsets are valid for a data buffer of data_len bytes,
    else the index of the first offending offset."""
    cdef Py_ssize_t n = offsets.shape[0], i, bad = -1
    if n == 0:
        return 0
    with nogil:
        if offsets[0] < 0 or offsets[0] > data_len:
            bad = 0
        else:
            for i in range(1, n):
                if offsets[i] < offsets[i - 1] or offsets[i] > data_len:
                    bad = i
                    break
    return bad


def var_compact_size(const int64_t[::1] offsets, const uint8_t[::1] valid):
    """(count, total bytes) of the rows whose validity byte is non-zero."""
    cdef Py_ssize_t n = valid.shape[0], i, count = 0
    cdef int64_t total = 0
    if offsets.shape[0] != n + 1:
        raise ValueError("offsets must have len(valid) + 1 entries")
    with nogil:
        for i in range(n):
            if valid[i]:
                count += 1
                total += offsets[i + 1] - offsets[i]
    return count, total


def var_compact(const int64_t[::1] offsets, const uint8_t[::1] data,
                const uint8_t[::1] valid, int64_t[::1] out_offsets,
                uint8_t[::1] out_data):
    """Copy the valid rows into (out_offsets, out_data), starting at offset 0."""
    cdef Py_ssize_t n = valid.shape[0], i, k = 0, cap = out_data.shape[0]
    cdef int64_t pos = 0, length
    cdef bint overflow = False
    if offsets.shape[0] != n + 1:
        raise ValueError("offsets must have len(valid) + 1 entries")
    if out_offsets.shape[0] < 1:
        raise ValueError("out_offsets too small")
    with nogil:
        out_offsets[0] = 0
        for i in range(n):
            if valid[i]:
                length = offsets[i + 1] - offsets[i]
                if k + 1 >= out_offsets.shape[0] or pos + length > cap:
                    overflow = True
                    break
                if length > 0:
                    memcpy(&out_data[pos], &data[offsets[i]], <size_t>length)
                pos += length
                k += 1
                out_offsets[k] = pos
    if overflow:
        raise ValueError("output arrays too small for compacted values")
    return k


def var_expand_offsets(const int64_t[::1] compact_offsets, const uint8_t[::1] valid,
                       int64_t[::1] out_offsets):
    """Offsets for n rows where invalid rows are empty and valid rows take the
    next compacted value; the data buffer is shared unchanged."""
    cdef Py_ssize_t n = valid.shape[0], m = compact_offsets.shape[0] - 1, i, k = 0
    cdef bint overflow = False
    if m < 0:
        raise ValueError("compact_offsets must not be empty")
    if out_offsets.shape[0] != n + 1:
        raise ValueError("out_offsets must have len(valid) + 1 entries")
    with nogil:
        out_offsets[0] = compact_offsets[0]
        for i in range(n):
            if valid[i]:
                if k >= m:
                    overflow = True
                    break
                k += 1
            out_offsets[i + 1] = compact_offsets[k]
    if overflow or k != m:
        raise CorruptDataError("validity bitmap does not match the number of values")


def var_gather_size(const int64_t[::1] offsets, const int32_t[::1] idx):
    """Total bytes of values offsets-indexed by idx; raises CorruptDataError
    if an index is outside the value range."""
    cdef Py_ssize_t n = idx.shape[0], d = offsets.shape[0] - 1, i, bad = -1
    cdef int32_t j
    cdef int64_t total = 0
    with nogil:
        for i in range(n):
            j = idx[i]
            if j < 0 or j >= d:
                bad = i
                break
            total += offsets[j + 1] - offsets[j]
    if bad >= 0:
        raise CorruptDataError(f"index {idx[bad]} at position {bad} outside 0..{d - 1}")
    return total


def var_gather(const int64_t[::1] offsets, const uint8_t[::1] data,
               const int32_t[::1] idx, int64_t[::1] out_offsets, uint8_t[::1] out_data):
    """out value i = value idx[i]; out arrays sized with var_gather_size."""
    cdef Py_ssize_t n = idx.shape[0], d = offsets.shape[0] - 1, i, cap = out_data.shape[0]
    cdef int32_t j
    cdef int64_t pos = 0, length, src
    cdef int err = 0
    cdef const uint8_t* dp = &data[0] if data.shape[0] > 0 else NULL
    if out_offsets.shape[0] != n + 1:
        raise ValueError("out_offsets must have len(idx) + 1 entries")
    with nogil:
        out_offsets[0] = 0
        for i in range(n):
            j = idx[i]
            if j < 0 or j >= d:
                err = 1
                break
            src = offsets[j]
            length = offsets[j + 1] - src
            if pos + length > cap:
                err = 2
                break
            if length <= 16 and src + 16 <= data.shape[0] and pos + 16 <= cap:
                # Short values (the common dictionary case): one fixed copy.
                memcpy(&out_data[pos], dp + src, 16)
            elif length > 0:
                memcpy(&out_data[pos], dp + src, <size_t>length)
            pos += length
            out_offsets[i + 1] = pos
    if err == 1:
        raise CorruptDataError("index outside the value range")
    if err == 2:
        raise ValueError("out_data too small")


cdef inline uint64_t _hash_bytes(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # MurmurHash64A-style mixing, 8 bytes at a time.
    cdef uint64_t m = <uint64_t>0xc6a4a7935bd1e995ULL
    cdef int r = 47
    cdef uint64_t h = <uint64_t>0x9E3779B97F4A7C15ULL ^ (<uint64_t>n * m)
    cdef uint64_t k
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        k = load_le64(p + i, 8)
        k *= m
        k ^= k >> r
        k *= m
        h ^= k
        h *= m
        i += 8
    if i < n:
        k = load_le64(p + i, n - i)
        h ^= k
        h *= m
    h ^= h >> r
    h *= m
    h ^= h >> r
    return h


def dict_build(const int64_t[::1] offsets, const uint8_t[::1] data,
               int32_t[::1] codes, int32_t[::1] first_rows, Py_ssize_t max_entries):
    """Assign each value a dictionary code in order of first appearance.

    codes[i] receives the code of value i; first_rows[e] receives the row where
    entry e first appears. Returns the number of entries, or -1 as soon as more
    than max_entries distinct values are seen (codes are then incomplete).
    """
    cdef Py_ssize_t n = offsets.shape[0] - 1, i, cap, slot, e, entries = 0
    cdef int64_t start, length
    cdef uint64_t h, mask
    cdef int32_t* table
    cdef uint64_t* hashes
    cdef const uint8_t* dp = &data[0] if data.shape[0] > 0 else NULL
    cdef int32_t row
    if n < 0:
        raise ValueError("offsets must not be empty")
    if codes.shape[0] < n:
        raise ValueError("codes too small")
    if max_entries > first_rows.shape[0]:
        max_entries = first_rows.shape[0]
    if max_entries > 0x7FFFFFFF:
        max_entries = 0x7FFFFFFF
    cap = 16
    while cap < 2 * max_entries + 2:
        cap <<= 1
    table = <int32_t*>malloc(cap * sizeof(int32_t))
    hashes = <uint64_t*>malloc((max_entries + 1) * sizeof(uint64_t))
    if table == NULL or hashes == NULL:
        free(table)
        free(hashes)
        raise MemoryError()
    mask = <uint64_t>(cap - 1)
    try:
        with nogil:
            memset(table, 0xFF, cap * sizeof(int32_t))
            for i in range(n):
                start = offsets[i]
                length = offsets[i + 1] - start
                h = _hash_bytes(dp + start, length)
                slot = <Py_ssize_t>(h & mask)
                while True:
                    e = table[slot]
                    if e < 0:
                        if entries >= max_entries:
                            entries = -1
                            break
                        table[slot] = <int32_t>entries
                        hashes[entries] = h
                        first_rows[entries] = <int32_t>i
                        codes[i] = <int32_t>entries
                        entries += 1
                        break
                    if hashes[e] == h:
                        row = first_rows[e]
                        if (offsets[row + 1] - offsets[row] == length
                                and (length == 0
                                     or memcmp(dp + offsets[row], dp + start,
                                               <size_t>length) == 0)):
                            codes[i] = <int32_t>e
                            break
                    slot = <Py_ssize_t>((slot + 1) & mask)
                if entries < 0:
                    break
    finally:
        free(table)
        free(hashes)
    return entries


cdef inline int _cmp_bytes(const uint8_t* a, int64_t alen,
                           const uint8_t* b, int64_t blen) noexcept nogil:
    cdef int64_t k = alen if alen < blen else blen
    cdef int c = 0
    if k > 0:
        c = memcmp(a, b, <size_t>k)
    if c != 0:
        return c
    if alen < blen:
        return -1
    if alen > blen:
        return 1
    return 0


def var_minmax(const int64_t[::1] offsets, const uint8_t[::1] data):
    """(index of the smallest, index of the largest) value in bytewise order
    (memcmp, then shorter first). Needs at least one value."""
    cdef Py_ssize_t n = offsets.shape[0] - 1, i, imin = 0, imax = 0
    cdef const uint8_t* dp = &data[0] if data.shape[0] > 0 else NULL
    if n < 1:
        raise ValueError("var_minmax needs at least one value")
    with nogil:
        for i in range(1, n):
            if _cmp_bytes(dp + offsets[i], offsets[i + 1] - offsets[i],
                          dp + offsets[imin], offsets[imin + 1] - offsets[imin]) < 0:
                imin = i
            elif _cmp_bytes(dp + offsets[i], offsets[i + 1] - offsets[i],
                            dp + offsets[imax], offsets[imax + 1] - offsets[imax]) > 0:
                imax = i
    return imin, imax
