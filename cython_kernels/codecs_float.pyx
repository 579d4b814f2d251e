# Floating-point codec kernels: Gorilla XOR compression and decimal scaling.
#
# Values are handled as their raw bit patterns (uint32 for float32, uint64 for
# float64), so every value round-trips bit for bit: NaN payloads, -0.0 and
# infinities included.
#
# Stream (LSB-first bits, fields LSB-first; W = 32 or 64, L = 5 or 6):
#   first value: W bits
#   then per value, with x = bits ^ previous bits:
#     x == 0                  -> 1 bit  0
#     fits the last window    -> 2 bits 1,0 then (x >> trail) in W-lead-trail bits
#     otherwise               -> 2 bits 1,1, lead in L bits, (sig - 1) in L bits,
#                                then (x >> trail) in sig bits; this sets the window
#   zero padding to the next byte.
# "lead"/"trail" count leading/trailing zero bits of x within W bits and
# sig = W - lead - trail. A window is the (lead, trail) pair last written.

from libc.math cimport rint, fabs
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from _typedefs cimport fbits_t, float_t
from _bitio cimport (BitWriter, BitReader, bw_init, bw_write, bw_finish,
                     br_init, br_read, br_read1, orochi_clz64, orochi_ctz64,
                     fast_count, get_packed, width_mask)
from _decunpack cimport orochi_decimal_unpack_f64, orochi_decimal_unpack_f32

from orochi_fdw.errors import CorruptDataError


def gorilla_max_size(Py_ssize_t n, int width):
    """Worst-case encoded size in bytes of n values of `width` (32 or 64) bits."""
    cdef int lbits
    if width not in (32, 64) or n < 0:
        raise ValueError("width must be 32 or 64")
    if n == 0:
        return 0
    lbits = 5 if width == 32 else 6
    return (width + (n - 1) * (2 + 2 * lbits + width) + 7) // 8


def gorilla_encode(const fbits_t[::1] bits, uint8_t[::1] out):
    """Encode raw float bit patterns; return the number of bytes written.

    out must hold gorilla_max_size(len(bits), W) bytes.
    """
    cdef Py_ssize_t n = bits.shape[0], i, written = 0
    cdef int W, L, lead, trail, plead = 0, ptrail = 0, sig
    cdef bint window = False
    cdef uint64_t x, prev, cur
    cdef BitWriter w
    if fbits_t is uint32_t:
        W = 32
        L = 5
    else:
        W = 64
        L = 6
    if n == 0:
        return 0
    if out.shape[0] < gorilla_max_size(n, W):
        raise ValueError("output buffer too small for gorilla stream")
    with nogil:
        bw_init(&w, &out[0], out.shape[0])
        prev = <uint64_t>bits[0]
        bw_write(&w, prev, W)
        for i in range(1, n):
            cur = <uint64_t>bits[i]
            x = cur ^ prev
            if x == 0:
                bw_write(&w, 0, 1)
            else:
                lead = orochi_clz64(x) - (64 - W)
                trail = orochi_ctz64(x)
                if window and lead >= plead and trail >= ptrail:
                    bw_write(&w, 1, 2)
                    bw_write(&w, x >> ptrail, W - plead - ptrail)
                else:
                    sig = W - lead - trail
                    bw_write(&w, 3, 2)
                    bw_write(&w, <uint64_t>lead, L)
                    bw_write(&w, <uint64_t>(sig - 1), L)
                    bw_write(&w, x >> trail, sig)
                    plead = lead
                    ptrail = trail
                    window = True
            prev = cur
        written = bw_finish(&w)
    if w.overflow:
        raise ValueError("gorilla output overflow")
    return written


def gorilla_decode(const uint8_t[::1] buf, fbits_t[::1] out):
    """Decode len(out) values; return the number of bytes consumed.

    Raises CorruptDataError if the stream ends early, uses a window before
    one was set, describes a field wider than the value, or has non-zero
    padding bits.
    """
    cdef Py_ssize_t n = out.shape[0], i
    cdef int W, L, lead, trail, plead = 0, ptrail = 0, sig, c, err = 0
    cdef bint window = False
    cdef uint64_t v, prev, lv, sv
    cdef BitReader r
    if fbits_t is uint32_t:
        W = 32
        L = 5
    else:
        W = 64
        L = 6
    if n == 0:
        return 0
    if buf.shape[0] == 0:
        raise CorruptDataError("gorilla stream is empty")
    with nogil:
        br_init(&r, &buf[0], buf.shape[0])
        if br_read(&r, W, &prev) < 0:
            err = 1
        else:
            out[0] = <fbits_t>prev
            for i in range(1, n):
                c = br_read1(&r)
                if c < 0:
                    err = 1
                    break
                if c == 1:
                    c = br_read1(&r)
                    if c < 0:
                        err = 1
                        break
                    if c == 0:
                        if not window:
                            err = 2
                            break
                        if br_read(&r, W - plead - ptrail, &v) < 0:
                            err = 1
                            break
                        prev ^= v << ptrail
                    else:
                        if br_read(&r, L, &lv) < 0 or br_read(&r, L, &sv) < 0:
                            err = 1
                            break
                        lead = <int>lv
                        sig = <int>sv + 1
                        if lead + sig > W:
                            err = 3
                            break
                        trail = W - lead - sig
                        if br_read(&r, sig, &v) < 0:
                            err = 1
                            break
                        prev ^= v << trail
                        plead = lead
                        ptrail = trail
                        window = True
                out[i] = <fbits_t>prev
        if err == 0 and (r.bitpos & 7) != 0:
            if (r.buf[r.bitpos >> 3] >> (r.bitpos & 7)) != 0:
                err = 4
    if err == 1:
        raise CorruptDataError("gorilla stream truncated")
    if err == 2:
        raise CorruptDataError("gorilla stream reuses a window before setting one")
    if err == 3:
        raise CorruptDataError("gorilla field wider than the value")
    if err == 4:
        raise CorruptDataError("gorilla stream has non-zero padding bits")
    return (r.bitpos + 7) >> 3


# ------------------------------------------------------------- decimal scaling
#
# Many float columns hold decimal numbers (21.37, 0.5, 1234.125). Scaled by
# 10**e they become integers that the integer codecs store in a few bits. A
# value is representable with exponent e when, with i = rint(v * 10**e) and
# |i| <= 2**53, the decoder's exact computation (float_t)((double)i / 10**e)
# gives back v bit for bit; -0.0, NaN and infinities never are and are kept
# aside as exceptions.

cdef double _POW10[23]

cdef void _init_pow10() noexcept:
    cdef int e
    cdef double p = 1.0
    for e in range(23):
        _POW10[e] = p          # 10**e is exact in binary64 up to 10**22
        p *= 10.0

_init_pow10()

DECIMAL_MAX_EXPONENT = 18


def decimal_encode(const float_t[::1] values, int exponent, int64_t[::1] out,
                   int64_t[::1] exceptions):
    """Scale values by 10**exponent into integers.

    A value that does not round-trip exactly is an *exception*: its index is
    appended to `exceptions` and out[i] repeats the previous integer (0 at the
    start) so that deltas stay small. Returns the number of exceptions, or -1
    as soon as there are more than len(exceptions).
    """
    cdef Py_ssize_t n = values.shape[0], i, nx = 0, cap = exceptions.shape[0]
    cdef double p, x, r, back
    cdef int64_t ir, last = 0
    cdef float fb
    cdef bint bad
    if exponent < 0 or exponent > DECIMAL_MAX_EXPONENT:
        raise ValueError("exponent out of range")
    if out.shape[0] < n:
        raise ValueError("out too small")
    p = _POW10[exponent]
    with nogil:
        for i in range(n):
            x = <double>values[i] * p
            r = rint(x)
            bad = not (fabs(r) <= 9007199254740992.0)      # also rejects NaN
            if not bad:
                ir = <int64_t>r
                back = <double>ir / p
                if float_t is float:
                    fb = <float>back
                    bad = _bits_differ32(&fb, &values[i])
                else:
                    bad = _bits_differ64(&back, &values[i])
            if bad:
                if nx >= cap:
                    nx = -1
                    break
                exceptions[nx] = i
                nx += 1
                out[i] = last
            else:
                out[i] = ir
                last = ir
    return nx


cdef inline bint _bits_differ32(const float* a, const float* b) noexcept nogil:
    cdef uint32_t x, y
    memcpy(&x, a, 4)
    memcpy(&y, b, 4)
    return x != y


cdef inline bint _bits_differ64(const double* a, const double* b) noexcept nogil:
    cdef uint64_t x, y
    memcpy(&x, a, 8)
    memcpy(&y, b, 8)
    return x != y


def decimal_decode(const int64_t[::1] ints, int exponent, float_t[::1] out):
    """out[i] = (float_t)((double)ints[i] / 10**exponent)."""
    cdef Py_ssize_t n = ints.shape[0], i
    cdef double p
    if exponent < 0 or exponent > DECIMAL_MAX_EXPONENT:
        raise CorruptDataError(f"decimal exponent {exponent} out of range")
    if out.shape[0] != n:
        raise ValueError("out must have len(ints) entries")
    p = _POW10[exponent]
    with nogil:
        for i in range(n):
            out[i] = <float_t>(<double>ints[i] / p)


# ------------------------------------------------- fused decimal unpacking
#
# DECIMAL over a BITPACK block decoded in one pass: each field unpacked, its
# frame of reference added and the integer divided by 10**e, straight into the
# output column (no int64 array in between). The result is bit for bit that of
# for_unpack followed by decimal_decode: the same correctly rounded division
# of the same double. The integer becomes that double exactly by the
# magic-number conversion (v + bits(2**52 + 2**51), read as a double, minus
# 2**52 + 2**51: exact for -2**51 <= v < 2**51, checked for the whole block
# first), which, unlike int64 -> double, the compiler turns into vector code;
# so is the division (a vector divide rounds each lane as the scalar one does).
# Blocks outside that range, or of widths above 56, take the scalar path.
# Widths 1..32 have an unpacking loop each (eight fields at constant byte
# offsets and shifts), the others a loop computing them.

#: the integers the magic-number conversion takes exactly: -2**51 <= v < 2**51
cdef int64_t _MAGIC_LIMIT = (<int64_t>1) << 51


def decimal_unpack(const uint8_t[::1] packed, int64_t base, int width, int exponent,
                   float_t[::1] out):
    """out[i] = (float_t)((double)v / 10**exponent) with v = base + field i
    (mod 2**64) of a bit-packed block: codecs_int.for_unpack into int64 then
    decimal_decode, fused, with the same result bit for bit.

    Raises CorruptDataError for a bit width outside 0..64, a block shorter
    than len(out) fields, or an exponent outside 0..DECIMAL_MAX_EXPONENT.
    """
    cdef Py_ssize_t n = out.shape[0], nb = packed.shape[0], i, fast = 0
    cdef uint64_t mask
    cdef const uint8_t* p = NULL
    cdef double pw
    cdef int64_t v
    if exponent < 0 or exponent > DECIMAL_MAX_EXPONENT:
        raise CorruptDataError(f"decimal exponent {exponent} out of range")
    if width < 0 or width > 64:
        raise CorruptDataError(f"bit width {width} out of range 0..64")
    if nb < (n * width + 7) >> 3:
        raise CorruptDataError(f"packed block truncated: {nb} bytes for {n} x {width} bits")
    if nb > 0:
        p = &packed[0]
    pw = _POW10[exponent]
    mask = width_mask(width)
    if 1 <= width <= 56 and -_MAGIC_LIMIT <= base <= _MAGIC_LIMIT - 1 - <int64_t>mask:
        fast = fast_count(n, nb, width)   # fields whose 8-byte window is in the block
    with nogil:
        if fast > 0:
            if float_t is double:
                orochi_decimal_unpack_f64(p, fast, width, base, pw, &out[0])
            else:
                orochi_decimal_unpack_f32(p, fast, width, base, pw, &out[0])
        for i in range(fast, n):
            if width == 0:
                v = base
            else:
                v = <int64_t>(<uint64_t>base + get_packed(p, nb, i, width, mask))
            out[i] = <float_t>(<double>v / pw)
