# Little-endian, LSB-first bit I/O shared by the codec kernels.
#
# Bit i of a stream is bit (i % 8) of byte (i // 8); a multi-bit field is stored
# with its least significant bit first. Every function here is nogil and never
# reads or writes outside [buf, buf + nbytes): callers validate sizes before
# entering the nogil section, and these helpers re-check what they cannot
# know in advance.

from libc.stdint cimport uint8_t, uint64_t, int64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #include <stdint.h>
    static inline int orochi_clz64(uint64_t x) { return x ? __builtin_clzll(x) : 64; }
    static inline int orochi_ctz64(uint64_t x) { return x ? __builtin_ctzll(x) : 64; }
    static inline int orochi_popcount64(uint64_t x) { return __builtin_popcountll(x); }
    """
    int orochi_clz64(uint64_t x) nogil
    int orochi_ctz64(uint64_t x) nogil
    int orochi_popcount64(uint64_t x) nogil


cdef inline uint64_t load_le64(const uint8_t* p, Py_ssize_t avail) noexcept nogil:
    """Load up to 8 bytes at p (zero-extended when fewer than 8 remain)."""
    cdef uint64_t v = 0
    if avail >= 8:
        memcpy(&v, p, 8)
    elif avail > 0:
        memcpy(&v, p, <size_t>avail)
    return v


cdef inline void store_le64(uint8_t* p, Py_ssize_t avail, uint64_t v) noexcept nogil:
    """Store the low min(8, avail) bytes of v at p."""
    if avail >= 8:
        memcpy(p, &v, 8)
    elif avail > 0:
        memcpy(p, &v, <size_t>avail)


cdef inline uint64_t width_mask(int width) noexcept nogil:
    if width >= 64:
        return <uint64_t>0xFFFFFFFFFFFFFFFF
    return ((<uint64_t>1) << width) - 1


cdef inline uint64_t get_packed(const uint8_t* p, Py_ssize_t nbytes, Py_ssize_t i,
                                int width, uint64_t mask) noexcept nogil:
    """Return field i of a stream of `width`-bit fields.

    The caller guarantees nbytes >= ceil((i + 1) * width / 8); under that
    guarantee the second byte read below (only for widths above 56) is in
    bounds.
    """
    cdef Py_ssize_t bit = i * width
    cdef Py_ssize_t byte = bit >> 3
    cdef int shift = <int>(bit & 7)
    cdef uint64_t v = load_le64(p + byte, nbytes - byte) >> shift
    if shift + width > 64:
        v |= (<uint64_t>p[byte + 8]) << (64 - shift)
    return v & mask


cdef struct BitWriter:
    uint8_t* buf
    Py_ssize_t cap        # bytes available at buf
    Py_ssize_t pos        # byte offset of the next 64-bit flush
    uint64_t acc          # pending bits, LSB first
    int nacc              # number of pending bits, 0..63
    int overflow          # set when a write would pass cap


cdef inline void bw_init(BitWriter* w, uint8_t* buf, Py_ssize_t cap) noexcept nogil:
    w.buf = buf
    w.cap = cap
    w.pos = 0
    w.acc = 0
    w.nacc = 0
    w.overflow = 0


cdef inline void bw_write(BitWriter* w, uint64_t v, int nbits) noexcept nogil:
    """Append the low nbits (0..64) of v; v must have no bits above nbits."""
    if nbits <= 0:
        return
    w.acc |= v << w.nacc
    if w.nacc + nbits >= 64:
        if w.pos + 8 <= w.cap:
            memcpy(w.buf + w.pos, &w.acc, 8)
        else:
            w.overflow = 1
        w.pos += 8
        if w.nacc == 0:
            w.acc = 0
        else:
            w.acc = v >> (64 - w.nacc)
        w.nacc = w.nacc + nbits - 64
    else:
        w.nacc += nbits


cdef inline Py_ssize_t bw_finish(BitWriter* w) noexcept nogil:
    """Flush pending bits (zero padded to a byte); return bytes written."""
    cdef Py_ssize_t tail = (w.nacc + 7) >> 3
    if tail > 0:
        if w.pos + tail <= w.cap:
            memcpy(w.buf + w.pos, &w.acc, <size_t>tail)
        else:
            w.overflow = 1
        w.pos += tail
    w.acc = 0
    w.nacc = 0
    return w.pos


cdef struct BitReader:
    const uint8_t* buf
    Py_ssize_t nbytes
    Py_ssize_t nbits      # nbytes * 8
    Py_ssize_t bitpos


cdef inline void br_init(BitReader* r, const uint8_t* buf, Py_ssize_t nbytes) noexcept nogil:
    r.buf = buf
    r.nbytes = nbytes
    r.nbits = nbytes * 8
    r.bitpos = 0


cdef inline int br_read(BitReader* r, int nbits, uint64_t* out) noexcept nogil:
    """Read nbits (0..64) into out; return -1 (reading nothing) past the end."""
    cdef Py_ssize_t byte
    cdef int shift
    cdef uint64_t v
    if nbits <= 0:
        out[0] = 0
        return 0
    if r.bitpos + nbits > r.nbits:
        return -1
    byte = r.bitpos >> 3
    shift = <int>(r.bitpos & 7)
    v = load_le64(r.buf + byte, r.nbytes - byte) >> shift
    if shift + nbits > 64:
        v |= (<uint64_t>r.buf[byte + 8]) << (64 - shift)
    out[0] = v & width_mask(nbits)
    r.bitpos += nbits
    return 0


cdef inline int br_read1(BitReader* r) noexcept nogil:
    """Read one bit; return 0 or 1, or -1 past the end."""
    cdef int b
    if r.bitpos >= r.nbits:
        return -1
    b = (r.buf[r.bitpos >> 3] >> (r.bitpos & 7)) & 1
    r.bitpos += 1
    return b


cdef inline Py_ssize_t fast_count(Py_ssize_t n, Py_ssize_t nbytes, int width) noexcept nogil:
    """How many leading fields (of n) get_packed_fast may read: those whose
    8-byte window lies inside the buffer, for widths 1..56."""
    cdef Py_ssize_t k
    if width <= 0 or width > 56 or nbytes < 8:
        return 0
    k = ((nbytes - 8) * 8) // width + 1
    return k if k < n else n


cdef inline uint64_t get_packed_fast(const uint8_t* p, Py_ssize_t i, int width,
                                     uint64_t mask) noexcept nogil:
    """get_packed for i < fast_count(...): one unaligned 8-byte load."""
    cdef Py_ssize_t bit = i * width
    cdef uint64_t v
    memcpy(&v, p + (bit >> 3), 8)
    return (v >> (bit & 7)) & mask


# Unpacking many fields at once, for the decoders' fast paths: fields
# [start, start + m) of a width-bit stream (width 1..56, start a multiple of 8,
# every field's 8-byte window inside the buffer: i < fast_count(...)), each
# plus addend modulo 2**64, into tmp.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Fields [start, start + m) of a width-bit (1..56) stream whose 8-byte
       windows all lie in the buffer, plus addend (mod 2**64);
       start is a multiple of 8. */
    static inline void orochi_unpack_any(const uint8_t *p, int64_t start, int64_t m, int width,
                                         uint64_t mask, uint64_t addend, uint64_t *tmp)
    {
        int64_t j;
        for (j = 0; j < m; j++) {
            uint64_t bit = (uint64_t)(start + j) * (uint64_t)width, v;
            memcpy(&v, p + (bit >> 3), 8);
            tmp[j] = ((v >> (bit & 7)) & mask) + addend;
        }
    }

    /* The same for a width known at compile time: eight fields take W bytes,
       so each of them sits at a constant byte offset and shift in its group. */
    #define OROCHI_UNPACK_W(W)                                                                   \
    static inline void orochi_unpack_w##W(const uint8_t *p, int64_t start, int64_t m,             \
                                          uint64_t addend, uint64_t *tmp)                           \
    {                                                                                            \
        const uint64_t mask = (((uint64_t)1) << W) - 1;                                          \
        int64_t g;                                                                               \
        int k;                                                                                   \
        for (g = 0; g + 8 <= m; g += 8) {                                                        \
            const uint8_t *q = p + (((uint64_t)(start + g) * W) >> 3);                           \
            for (k = 0; k < 8; k++) {                                                            \
                uint64_t v;                                                                      \
                memcpy(&v, q + ((k * W) >> 3), 8);                                               \
                tmp[g + k] = ((v >> ((k * W) & 7)) & mask) + addend;                              \
            }                                                                                    \
        }                                                                                        \
        orochi_unpack_any(p, start + g, m - g, W, mask, addend, tmp + g);                          \
    }
    /* the widths with their own unpacking loop */
    #define OROCHI_WIDTHS(X) \
        X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) \
        X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) \
        X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) \
        X(25) X(26) X(27) X(28) X(29) X(30) X(31) X(32)
    OROCHI_WIDTHS(OROCHI_UNPACK_W)

    static inline void orochi_unpack_add(const uint8_t *p, int64_t start, int64_t m, int width,
                                           uint64_t mask, uint64_t addend, uint64_t *tmp)
    {
        switch (width) {
    #define OROCHI_UNPACK_CASE(W) case W: orochi_unpack_w##W(p, start, m, addend, tmp); return;
        OROCHI_WIDTHS(OROCHI_UNPACK_CASE)
        default: orochi_unpack_any(p, start, m, width, mask, addend, tmp);
        }
    }
    """
    void orochi_unpack_add(const uint8_t* p, int64_t start, int64_t m, int width, uint64_t mask,
                           uint64_t addend, uint64_t* tmp) noexcept nogil
