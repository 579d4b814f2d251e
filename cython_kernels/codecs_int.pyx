# Integer and fixed-width codec kernels: frame-of-reference bit-packing,
# delta and delta-of-delta (with bit-packing), run-length and bitmaps.
#
# Conventions (see docs/FORMAT.md for the byte layouts these produce):
# * bit streams are LSB-first (bit i is bit i % 8 of byte i // 8);
# * a "packed" block holds `count` fields of `width` bits (0..64) storing
#   (value - base) modulo 2**64; its size is ceil(count * width / 8) bytes;
# * integer arithmetic on deltas wraps modulo 2**64, so every int64 sequence,
#   including INT64_MIN next to INT64_MAX, round-trips exactly;
# * kernels take const memoryviews in and write into caller-allocated `out`
#   arrays; sizes are validated before the nogil section; a decoder that finds
#   bad data inside its loop leaves the loop and raises CorruptDataError.

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from _typedefs cimport int_t, uint_t
from _bitio cimport BitWriter, bw_init, bw_write, bw_finish, width_mask, orochi_popcount64
from _intdecode cimport packed_len, unpack_delta, unpack_dod, unpack_for

from orochi_fdw.errors import CorruptDataError


def packed_size(Py_ssize_t count, int width):
    """Bytes needed for `count` fields of `width` bits."""
    if count < 0 or width < 0 or width > 64:
        raise ValueError("invalid count or width")
    return packed_len(count, width)


cdef int _check_pack_args(Py_ssize_t count, int width, Py_ssize_t out_len) except -1:
    if width < 0 or width > 64:
        raise ValueError(f"bit width {width} out of range 0..64")
    if out_len < packed_len(count, width):
        raise ValueError("output buffer too small for packed data")
    return 0


cdef int _check_unpack_args(Py_ssize_t count, int width, Py_ssize_t nbytes) except -1:
    if width < 0 or width > 64:
        raise CorruptDataError(f"bit width {width} out of range 0..64")
    if nbytes < packed_len(count, width):
        raise CorruptDataError(
            f"packed block truncated: {nbytes} bytes for {count} x {width} bits")
    return 0


cdef inline const uint8_t* _ptr(const uint8_t[::1] buf) noexcept nogil:
    if buf.shape[0] == 0:
        return NULL
    return &buf[0]


# ---------------------------------------------------------------- statistics

def int_stats(const int_t[::1] values):
    """One pass over a non-empty integer array, for codec selection.

    Returns (min, max, delta_min, delta_max, dod_min, dod_max, runs,
    run_min, run_max). Deltas and delta-of-deltas are computed modulo 2**64
    and read as signed 64-bit numbers, exactly as the delta encoders do;
    they are 0 when there are too few values to have any.
    """
    cdef Py_ssize_t n = values.shape[0], i, runs = 1, run_len = 1
    cdef Py_ssize_t run_min, run_max
    cdef int64_t vmin, vmax, dmin = 0, dmax = 0, ddmin = 0, ddmax = 0
    cdef int64_t v, prev, d, prevd = 0, dd
    if n == 0:
        raise ValueError("int_stats needs at least one value")
    with nogil:
        vmin = vmax = prev = <int64_t>values[0]
        run_min = n
        run_max = 0
        for i in range(1, n):
            v = <int64_t>values[i]
            if v < vmin:
                vmin = v
            if v > vmax:
                vmax = v
            d = <int64_t>(<uint64_t>v - <uint64_t>prev)
            if i == 1:
                dmin = dmax = d
            else:
                if d < dmin:
                    dmin = d
                if d > dmax:
                    dmax = d
                dd = <int64_t>(<uint64_t>d - <uint64_t>prevd)
                if i == 2:
                    ddmin = ddmax = dd
                else:
                    if dd < ddmin:
                        ddmin = dd
                    if dd > ddmax:
                        ddmax = dd
            if v == prev:
                run_len += 1
            else:
                runs += 1
                if run_len < run_min:
                    run_min = run_len
                if run_len > run_max:
                    run_max = run_len
                run_len = 1
            prevd = d
            prev = v
        if run_len < run_min:
            run_min = run_len
        if run_len > run_max:
            run_max = run_len
    return (vmin, vmax, dmin, dmax, ddmin, ddmax, runs, run_min, run_max)


# --------------------------------------------------- frame-of-reference packing

def for_pack(const int_t[::1] values, int64_t base, int width, uint8_t[::1] out):
    """Pack (values[i] - base) mod 2**64 as `width`-bit fields into out.

    Raises ValueError if a value does not fit in `width` bits above `base`.
    Returns the number of bytes written.
    """
    cdef Py_ssize_t n = values.shape[0], i, written = 0
    cdef uint64_t mask = width_mask(width), u, spill = 0
    cdef BitWriter w
    _check_pack_args(n, width, out.shape[0])
    if n == 0 or width == 0:
        for i in range(n):
            if <int64_t>values[i] != base:
                raise ValueError("value does not fit in 0 bits")
        return 0
    with nogil:
        bw_init(&w, &out[0], out.shape[0])
        for i in range(n):
            u = <uint64_t><int64_t>values[i] - <uint64_t>base
            spill |= u & ~mask
            bw_write(&w, u & mask, width)
        written = bw_finish(&w)
    if spill or w.overflow:
        raise ValueError(f"values do not fit in {width} bits above base")
    return written


def for_unpack(const uint8_t[::1] packed, int64_t base, int width, int_t[::1] out):
    """Inverse of for_pack: out[i] = base + field i (mod 2**64).

    Raises CorruptDataError if the block is too short or a decoded value does
    not fit the output dtype.
    """
    cdef Py_ssize_t n = out.shape[0], nb = packed.shape[0], bad = -1
    _check_unpack_args(n, width, nb)
    if n:
        with nogil:
            bad = unpack_for(_ptr(packed), nb, n, width, base, sizeof(int_t), <uint8_t*>&out[0])
    if bad >= 0:
        raise CorruptDataError(f"decoded value out of range at position {bad}")


# ------------------------------------------------------------------- delta

def delta_pack(const int_t[::1] values, int64_t base, int width, uint8_t[::1] out):
    """Pack the n-1 deltas values[i] - values[i-1] (mod 2**64), minus base."""
    cdef Py_ssize_t n = values.shape[0], i, written = 0
    cdef uint64_t mask = width_mask(width), u, spill = 0
    cdef BitWriter w
    if n < 2:
        return 0
    _check_pack_args(n - 1, width, out.shape[0])
    if width == 0:
        for i in range(1, n):
            if <int64_t>(<uint64_t><int64_t>values[i] - <uint64_t><int64_t>values[i - 1]) != base:
                raise ValueError("delta does not fit in 0 bits")
        return 0
    with nogil:
        bw_init(&w, &out[0], out.shape[0])
        for i in range(1, n):
            u = (<uint64_t><int64_t>values[i] - <uint64_t><int64_t>values[i - 1]
                 - <uint64_t>base)
            spill |= u & ~mask
            bw_write(&w, u & mask, width)
        written = bw_finish(&w)
    if spill or w.overflow:
        raise ValueError(f"deltas do not fit in {width} bits above base")
    return written


def delta_unpack(const uint8_t[::1] packed, int64_t first, int64_t base, int width,
                 int_t[::1] out):
    """out[0] = first; out[i] = out[i-1] + base + field (i-1), mod 2**64."""
    cdef Py_ssize_t n = out.shape[0], nb = packed.shape[0], bad = -1
    if n == 0:
        return
    _check_unpack_args(n - 1, width, nb)
    with nogil:
        bad = unpack_delta(_ptr(packed), nb, n, first, width, base, sizeof(int_t), <uint8_t*>&out[0])
    if bad >= 0:
        raise CorruptDataError(f"decoded value out of range at position {bad}")


# ---------------------------------------------------------- delta-of-delta

def dod_pack(const int_t[::1] values, int64_t base, int width, uint8_t[::1] out):
    """Pack the n-2 delta-of-deltas d[i] - d[i-1] (mod 2**64), minus base,
    where d[i] = values[i] - values[i-1]."""
    cdef Py_ssize_t n = values.shape[0], i, written = 0
    cdef uint64_t mask = width_mask(width), u, spill = 0, d, prevd
    cdef BitWriter w
    if n < 3:
        return 0
    _check_pack_args(n - 2, width, out.shape[0])
    with nogil:
        if width > 0:
            bw_init(&w, &out[0], out.shape[0])
        prevd = <uint64_t><int64_t>values[1] - <uint64_t><int64_t>values[0]
        for i in range(2, n):
            d = <uint64_t><int64_t>values[i] - <uint64_t><int64_t>values[i - 1]
            u = d - prevd - <uint64_t>base
            spill |= u & ~mask
            if width > 0:
                bw_write(&w, u & mask, width)
            prevd = d
        if width > 0:
            written = bw_finish(&w)
    if spill or (width > 0 and w.overflow):
        raise ValueError(f"delta-of-deltas do not fit in {width} bits above base")
    return written


def dod_unpack(const uint8_t[::1] packed, int64_t first, int64_t first_delta,
               int64_t base, int width, int_t[::1] out):
    """Inverse of dod_pack given the first value and the first delta."""
    cdef Py_ssize_t n = out.shape[0], nb = packed.shape[0], bad = -1
    if n == 0:
        return
    _check_unpack_args(n - 2 if n > 2 else 0, width, nb)
    with nogil:
        bad = unpack_dod(_ptr(packed), nb, n, first, first_delta, width, base, sizeof(int_t),
                         <uint8_t*>&out[0])
    if bad >= 0:
        raise CorruptDataError(f"decoded value out of range at position {bad}")


# -------------------------------------------------------------- run-length

def rle_count(const uint_t[::1] values):
    """Number of runs of equal (bit-identical) values."""
    cdef Py_ssize_t n = values.shape[0], i, runs = 0
    if n == 0:
        return 0
    with nogil:
        runs = 1
        for i in range(1, n):
            if values[i] != values[i - 1]:
                runs += 1
    return runs


def rle_encode(const uint_t[::1] values, uint_t[::1] run_values, int64_t[::1] run_lengths):
    """Write each run's value and length; return the number of runs.

    run_values and run_lengths must hold at least rle_count(values) items.
    """
    cdef Py_ssize_t n = values.shape[0], i, r = 0, cap
    cdef int64_t length
    cdef bint full = False
    cap = min(run_values.shape[0], run_lengths.shape[0])
    if n == 0:
        return 0
    with nogil:
        length = 1
        for i in range(1, n + 1):
            if i == n or values[i] != values[i - 1]:
                if r >= cap:
                    full = True
                    break
                run_values[r] = values[i - 1]
                run_lengths[r] = length
                r += 1
                length = 1
            else:
                length += 1
    if full:
        raise ValueError("run arrays too small")
    return r


def rle_decode(const uint_t[::1] run_values, const int64_t[::1] run_lengths, uint_t[::1] out):
    """Expand runs into out; lengths must be >= 1 and sum to len(out)."""
    cdef Py_ssize_t r = run_values.shape[0], n = out.shape[0], i, j, pos = 0, bad = -1
    cdef int64_t length
    cdef uint_t v
    if run_lengths.shape[0] != r:
        raise CorruptDataError("run value and run length counts differ")
    with nogil:
        for i in range(r):
            length = run_lengths[i]
            if length < 1 or length > n - pos:
                bad = i
                break
            v = run_values[i]
            for j in range(pos, pos + length):
                out[j] = v
            pos += length
    if bad >= 0:
        raise CorruptDataError(f"run {bad} has an invalid length")
    if pos != n:
        raise CorruptDataError(f"runs cover {pos} values, expected {n}")


def rle_count_wide(const uint8_t[:, ::1] values):
    """rle_count for rows of any width (for example 16-byte uuid/interval)."""
    cdef Py_ssize_t n = values.shape[0], w = values.shape[1], i, runs = 0
    if n == 0:
        return 0
    if w == 0:
        return 1
    with nogil:
        runs = 1
        for i in range(1, n):
            if memcmp(&values[i, 0], &values[i - 1, 0], <size_t>w) != 0:
                runs += 1
    return runs


def rle_encode_wide(const uint8_t[:, ::1] values, uint8_t[:, ::1] run_values,
                    int64_t[::1] run_lengths):
    """rle_encode for rows of any width; returns the number of runs."""
    cdef Py_ssize_t n = values.shape[0], w = values.shape[1], i, r = 0, cap
    cdef int64_t length
    cdef bint full = False
    if run_values.shape[1] != w:
        raise ValueError("run_values width differs from values width")
    if n == 0:
        return 0
    if w == 0:
        raise ValueError("zero-width rows")
    cap = min(run_values.shape[0], run_lengths.shape[0])
    with nogil:
        length = 1
        for i in range(1, n + 1):
            if i == n or memcmp(&values[i, 0], &values[i - 1, 0], <size_t>w) != 0:
                if r >= cap:
                    full = True
                    break
                memcpy(&run_values[r, 0], &values[i - 1, 0], <size_t>w)
                run_lengths[r] = length
                r += 1
                length = 1
            else:
                length += 1
    if full:
        raise ValueError("run arrays too small")
    return r


def rle_decode_wide(const uint8_t[:, ::1] run_values, const int64_t[::1] run_lengths,
                    uint8_t[:, ::1] out):
    """rle_decode for rows of any width."""
    cdef Py_ssize_t r = run_values.shape[0], n = out.shape[0], w = out.shape[1]
    cdef Py_ssize_t i, j, pos = 0, bad = -1
    cdef int64_t length
    if run_lengths.shape[0] != r:
        raise CorruptDataError("run value and run length counts differ")
    if run_values.shape[1] != w:
        raise ValueError("run_values width differs from out width")
    if w == 0:
        raise ValueError("zero-width rows")
    with nogil:
        for i in range(r):
            length = run_lengths[i]
            if length < 1 or length > n - pos:
                bad = i
                break
            for j in range(pos, pos + length):
                memcpy(&out[j, 0], &run_values[i, 0], <size_t>w)
            pos += length
    if bad >= 0:
        raise CorruptDataError(f"run {bad} has an invalid length")
    if pos != n:
        raise CorruptDataError(f"runs cover {pos} values, expected {n}")


# ------------------------------------------------------------------ bitmaps

def bitmap_pack(const uint8_t[::1] flags, uint8_t[::1] out):
    """Pack bytes (non-zero = 1) into an LSB-first bitmap of ceil(n/8) bytes.

    Unused high bits of the last byte are zero. Returns the number of set bits.
    """
    cdef Py_ssize_t n = flags.shape[0], nbytes = (n + 7) >> 3, i, j, base, ones = 0
    cdef uint8_t b
    cdef uint64_t word
    if out.shape[0] < nbytes:
        raise ValueError("output buffer too small for bitmap")
    with nogil:
        for i in range(n >> 3):
            base = i << 3
            memcpy(&word, &flags[base], 8)
            # Normalise each byte to 0/1, then gather bit 0 of every byte.
            word = (word | (word >> 1) | (word >> 2) | (word >> 3)
                    | (word >> 4) | (word >> 5) | (word >> 6) | (word >> 7))
            word &= <uint64_t>0x0101010101010101
            b = <uint8_t>((word * <uint64_t>0x0102040810204080) >> 56)
            out[i] = b
            ones += orochi_popcount64(word)
        if n & 7:
            b = 0
            base = (n >> 3) << 3
            for j in range(n - base):
                if flags[base + j] != 0:
                    b |= <uint8_t>(1 << j)
                    ones += 1
            out[n >> 3] = b
    return ones


cdef uint64_t _EXPAND[256]

cdef void _init_expand() noexcept:
    cdef int b, j
    cdef uint64_t v
    for b in range(256):
        v = 0
        for j in range(8):
            if b & (1 << j):
                v |= (<uint64_t>1) << (8 * j)
        _EXPAND[b] = v

_init_expand()


def bitmap_unpack(const uint8_t[::1] packed, uint8_t[::1] out):
    """Expand an LSB-first bitmap into len(out) bytes of 0/1.

    The bitmap must be exactly ceil(len(out)/8) bytes with zero padding bits;
    otherwise CorruptDataError. Returns the number of set bits.
    """
    cdef Py_ssize_t n = out.shape[0], nbytes = (n + 7) >> 3, i, j, ones = 0, rem
    cdef uint64_t word
    cdef uint8_t last
    if packed.shape[0] != nbytes:
        raise CorruptDataError(
            f"bitmap is {packed.shape[0]} bytes, expected {nbytes} for {n} bits")
    rem = n & 7
    if rem and (packed[nbytes - 1] >> rem) != 0:
        raise CorruptDataError("bitmap has non-zero padding bits")
    with nogil:
        for i in range(n >> 3):
            word = _EXPAND[packed[i]]
            memcpy(&out[i << 3], &word, 8)
            ones += orochi_popcount64(packed[i])
        if rem:
            last = packed[n >> 3]
            for j in range(rem):
                out[((n >> 3) << 3) + j] = (last >> j) & 1
            ones += orochi_popcount64(last)
    return ones


def bitmap_count(const uint8_t[::1] packed):
    """Number of set bits in a bitmap."""
    cdef Py_ssize_t n = packed.shape[0], i, ones = 0
    with nogil:
        for i in range(n):
            ones += orochi_popcount64(packed[i])
    return ones
