# The decoding cores of the integer codecs (frame-of-reference bit-packing,
# delta, delta-of-delta), shared by the codec kernels (codecs_int's
# for_unpack, delta_unpack, dod_unpack) and the column chunk reader
# (chunkread), so that both decode every layout the same way.
#
# Each writes n integers of w bytes (2, 4 or 8) at out, little-endian,
# unaligned, and returns -1 when done, or the position of the first value that
# does not fit w bytes (out is then written up to there). The caller
# guarantees that the packed block at p holds nb >= packed_len(fields, width)
# bytes, width is 0..64, and out holds n * w bytes.

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from _bitio cimport fast_count, get_packed, get_packed_fast, width_mask, orochi_unpack_add


cdef inline Py_ssize_t packed_len(Py_ssize_t count, int width) noexcept nogil:
    """Bytes of a packed block of count fields of width bits."""
    return (count * width + 7) >> 3


cdef inline bint store_int(uint8_t* out, Py_ssize_t i, int w, int64_t v) noexcept nogil:
    """out[i] = v as a w-byte integer; False if v does not fit."""
    cdef int16_t v16
    cdef int32_t v32
    if w == 8:
        memcpy(out + 8 * i, &v, 8)
    elif w == 4:
        if v < -2147483648 or v > 2147483647:
            return False
        v32 = <int32_t>v
        memcpy(out + 4 * i, &v32, 4)
    else:
        if v < -32768 or v > 32767:
            return False
        v16 = <int16_t>v
        memcpy(out + 2 * i, &v16, 2)
    return True


cdef inline uint64_t packed_field(const uint8_t* p, Py_ssize_t size, Py_ssize_t j, int width, uint64_t mask,
                                  Py_ssize_t fast) noexcept nogil:
    """Field j of a block of width-bit fields, size bytes long, that holds it
    (fast: how many leading fields get_packed_fast may read, fast_count)."""
    if j < fast:
        return get_packed_fast(p, j, width, mask)
    if width == 0:
        return 0
    return get_packed(p, size, j, width, mask)


cdef inline Py_ssize_t unpack_for(const uint8_t* p, Py_ssize_t nb, Py_ssize_t n, int width, int64_t base,
                                  int w, uint8_t* out) noexcept nogil:
    """Frame of reference: value i = base + field i (mod 2**64)."""
    cdef uint64_t mask = width_mask(width)
    cdef uint64_t tmp[512]
    cdef Py_ssize_t fast = fast_count(n, nb, width), start = 0, i, j, m
    cdef int64_t lo = -32768, hi = 32767
    cdef bint checked
    if w == 4:
        lo = -2147483648
        hi = 2147483647
    # every value base..base+mask fits the output: no check per value
    checked = w != 8 and not (width < 63 and lo <= base and base <= hi and <int64_t>mask <= hi - base)
    if w == 8 and (<size_t>out) % 8 == 0:
        # 64-bit values into an aligned output: unpacked straight into it
        orochi_unpack_add(p, 0, fast, width, mask, <uint64_t>base, <uint64_t*>out)
        start = fast
    while start < fast:
        # blocks of fields unpacked at once (a loop per width), then narrowed
        m = fast - start if fast - start < 512 else 512
        orochi_unpack_add(p, start, m, width, mask, <uint64_t>base, tmp)
        if w == 8:
            memcpy(out + 8 * start, tmp, <size_t>(8 * m))
        elif checked:
            for j in range(m):
                if not store_int(out, start + j, w, <int64_t>tmp[j]):
                    return start + j
        elif w == 4:
            for j in range(m):
                (<int32_t*>out)[start + j] = <int32_t><int64_t>tmp[j]
        else:
            for j in range(m):
                (<int16_t*>out)[start + j] = <int16_t><int64_t>tmp[j]
        start += m
    for i in range(start, n):
        if not store_int(out, i, w, <int64_t>(<uint64_t>base + packed_field(p, nb, i, width, mask, 0))):
            return i
    return -1


cdef inline Py_ssize_t _unpack_sums(const uint8_t* p, Py_ssize_t nb, Py_ssize_t n, Py_ssize_t lead, uint64_t acc,
                                    uint64_t d, bint twice, int width, int64_t base, int w,
                                    uint8_t* out) noexcept nogil:
    """Values lead..n-1 (those before stored by the caller, the last of
    them acc): field i - lead plus base added to acc (``twice``: to the
    running delta d, then d to acc)."""
    cdef uint64_t mask = width_mask(width), ubase = <uint64_t>base, v
    cdef uint64_t tmp[512]
    cdef Py_ssize_t fast = fast_count(n - lead, nb, width) if n > lead else 0, i, j, m, start = 0
    while start < fast:
        # blocks of fields unpacked at once (base added), then summed
        m = fast - start if fast - start < 512 else 512
        orochi_unpack_add(p, start, m, width, mask, ubase, tmp)
        if twice:
            for j in range(m):
                d += tmp[j]
                acc += d
                tmp[j] = acc
        else:
            for j in range(m):
                acc += tmp[j]
                tmp[j] = acc
        if w == 8:
            memcpy(out + 8 * (start + lead), tmp, <size_t>(8 * m))
        else:
            for j in range(m):
                if not store_int(out, start + j + lead, w, <int64_t>tmp[j]):
                    return start + j + lead
        start += m
    for i in range(start + lead, n):
        v = ubase + packed_field(p, nb, i - lead, width, mask, 0)
        if twice:
            d += v
            acc += d
        else:
            acc += v
        if not store_int(out, i, w, <int64_t>acc):
            return i
    return -1


cdef inline Py_ssize_t unpack_delta(const uint8_t* p, Py_ssize_t nb, Py_ssize_t n, int64_t first, int width,
                                    int64_t base, int w, uint8_t* out) noexcept nogil:
    """Delta: value 0 = first, value i = value i-1 + base + field i-1."""
    if n < 1:
        return -1
    if not store_int(out, 0, w, first):
        return 0
    return _unpack_sums(p, nb, n, 1, <uint64_t>first, 0, False, width, base, w, out)


cdef inline Py_ssize_t unpack_dod(const uint8_t* p, Py_ssize_t nb, Py_ssize_t n, int64_t first,
                                  int64_t first_delta, int width, int64_t base, int w,
                                  uint8_t* out) noexcept nogil:
    """Delta-of-delta: value 0 = first, value 1 = first + first_delta, then
    each delta = the delta before + base + field i-2."""
    cdef uint64_t acc = <uint64_t>first + <uint64_t>first_delta
    if n < 1:
        return -1
    if not store_int(out, 0, w, first):
        return 0
    if n < 2:
        return -1
    if not store_int(out, 1, w, <int64_t>acc):
        return 1
    return _unpack_sums(p, nb, n, 2, acc, <uint64_t>first_delta, True, width, base, w, out)
