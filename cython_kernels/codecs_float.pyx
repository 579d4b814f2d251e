# Floating-point codec kernels: Gorilla XOR compression.
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

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from _typedefs cimport fbits_t
from _bitio cimport (BitWriter, BitReader, bw_init, bw_write, bw_finish,
                     br_init, br_read, br_read1, orochi_clz64, orochi_ctz64)

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
