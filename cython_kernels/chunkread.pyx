# Column chunk reading: a column chunk (read_chunk), or the chunks of one
# stripe column in any number of its chunk groups (read_column), read from the
# file, checksummed and decoded into the output array in a single call; a
# DICTIONARY-coded text chunk likewise into its dictionary form
# (read_dictionary, at the end).
#
# Each chunk is read with pread into a scratch buffer, its CRC-32 checked (by
# the checksum function the caller passes: the stripe format's, ISA-L's when
# installed) and, for the common layouts of fixed-width columns, decoded here:
# compression none or lz4 (by the decompressor the caller passes), codecs
# PLAIN, BITPACK, DELTA, DELTA_DELTA, RLE and DECIMAL (over any integer codec;
# over BITPACK in one fused pass), with or without
# a validity bitmap. The byte layouts are those of docs/FORMAT.md, decoded as
# orochi_fdw.storage.codecs.decode_chunk decodes them, bit for bit.
#
# A chunk this code does not decode (another codec or compression: declined
# before it is read), and any chunk whose bytes are not exactly valid (short
# read, checksum mismatch, a count, width or length out of range, trailing
# bytes, a value out of range) is declined (its rows of the output are then
# undefined) and marked in `status`: the caller reads it through decode_chunk,
# which decodes it or raises the error that names what is wrong. The integer
# decoding cores are codecs_int's (_intdecode.pxd).
# So this code never raises for bad data; it only declines it, and every check
# decode_chunk makes is made here too before a chunk counts as decoded.

from libc.errno cimport errno, EINTR
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.types cimport off_t
from posix.unistd cimport pread
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact
from cpython.mem cimport PyMem_Malloc, PyMem_Free

cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char* mem, Py_ssize_t size, int flags)
    int PyBUF_READ

from _bitio cimport fast_count, orochi_unpack_add, width_mask
from _intdecode cimport packed_field, packed_len, store_int, unpack_delta, unpack_dod, unpack_for
from _decunpack cimport orochi_decimal_unpack_f64, orochi_decimal_unpack_f32

# codec and compression ids (orochi_fdw.storage.codecs.Codec / Compression)
cdef enum:
    C_PLAIN = 0
    C_BITPACK = 1
    C_DELTA = 2
    C_DELTA_DELTA = 3
    C_RLE = 4
    C_DICTIONARY = 5
    C_GORILLA = 6
    C_BITMAP = 7
    C_DECIMAL = 8
    Z_NONE = 0
    Z_LZ4 = 1
    MAX_EXPONENT = 18
    MAX_CHUNK_ROWS = 1 << 22   # codecs.MAX_CHUNK_ROWS
    MAX_RAW_LENGTH = 0x7FFFFFFF   # codecs.MAX_RAW_CHUNK_BYTES

# physical kinds, as the caller numbers them
cdef enum:
    PHYSICAL_BOOL = 1
    PHYSICAL_INT = 2
    PHYSICAL_FLOAT = 3
    PHYSICAL_FIXED = 4

#: the physical kind numbers read_column takes, by Kind.physical
PHYSICALS = {"bool": PHYSICAL_BOOL, "int": PHYSICAL_INT, "float": PHYSICAL_FLOAT,
             "fixed": PHYSICAL_FIXED}

cdef double _POW10[19]

cdef void _init_pow10() noexcept:
    cdef int e
    cdef double p = 1.0
    for e in range(MAX_EXPONENT + 1):
        _POW10[e] = p          # exact in binary64: the same table codecs_float uses
        p *= 10.0

_init_pow10()

#: the integers the magic-number conversion of the fused decimal decoder takes exactly
cdef int64_t _MAGIC_LIMIT = (<int64_t>1) << 51


cdef inline int64_t _rd_i64(const uint8_t* p) noexcept nogil:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t _rd_u32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef int _packed_block(const uint8_t* p, Py_ssize_t avail, Py_ssize_t count, int64_t* base,
                       int* width, Py_ssize_t* size) noexcept nogil:
    """The header (<qB: base, bit width) of a packed block of count fields at
    p; its bytes follow at p + 9. -1 if it does not fit in avail bytes."""
    if avail < 9:
        return -1
    base[0] = _rd_i64(p)
    width[0] = p[8]
    if width[0] > 64:
        return -1
    size[0] = packed_len(count, width[0])
    if size[0] > avail - 9:
        return -1
    return 0


cdef int _decode_values(const uint8_t* p, Py_ssize_t nb, Py_ssize_t m, int codec, int physical,
                        int w, uint8_t* out) noexcept nogil:
    """Decode a values section of exactly nb bytes holding m >= 1 values into
    out; -1 when it is not a valid encoding (or not one decoded here)."""
    cdef int64_t base, first, d, acc, v, pos, prev
    cdef int width, e, sub, pwidth
    cdef Py_ssize_t size, i, nx, psize, at
    cdef int64_t* ints
    cdef int rc
    cdef uint64_t mask, ubase
    cdef double pw
    cdef Py_ssize_t fast
    if codec == C_PLAIN:
        if physical == PHYSICAL_INT or physical == PHYSICAL_FLOAT or physical == PHYSICAL_BOOL \
                or physical == PHYSICAL_FIXED:
            if nb != m * w:
                return -1
            if physical == PHYSICAL_BOOL:
                for i in range(m):
                    if p[i] > 1:
                        return -1
            memcpy(out, p, <size_t>nb)
            return 0
        return -1
    if codec == C_RLE:
        return _decode_rle(p, nb, m, physical, w, out)
    if physical == PHYSICAL_INT:
        if codec == C_BITPACK:
            if _packed_block(p, nb, m, &base, &width, &size) < 0 or 9 + size != nb:
                return -1
            return 0 if unpack_for(p + 9, size, m, width, base, w, out) < 0 else -1
        if codec == C_DELTA:
            if nb < 8:
                return -1
            first = _rd_i64(p)
            if _packed_block(p + 8, nb - 8, m - 1, &base, &width, &size) < 0 or 17 + size != nb:
                return -1
            return 0 if unpack_delta(p + 17, size, m, first, width, base, w, out) < 0 else -1
        if codec == C_DELTA_DELTA:
            if nb < 16:
                return -1
            first = _rd_i64(p)
            d = _rd_i64(p + 8)
            if _packed_block(p + 16, nb - 16, m - 2 if m > 2 else 0, &base, &width, &size) < 0 \
                    or 25 + size != nb:
                return -1
            return 0 if unpack_dod(p + 25, size, m, first, d, width, base, w, out) < 0 else -1
        return -1
    if physical == PHYSICAL_FLOAT and codec == C_DECIMAL:
        # exponent, integer codec, exception count; [exception positions as a
        # packed block, exception values]; the integers (here: BITPACK only)
        if nb < 6:
            return -1
        e = p[0]
        sub = p[1]
        nx = _rd_u32(p + 2)
        if e > MAX_EXPONENT or sub > C_RLE or nx > m:
            return -1
        at = 6
        psize = 0
        pwidth = 0
        pos = 0
        if nx:
            if _packed_block(p + at, nb - at, nx, &base, &pwidth, &psize) < 0:
                return -1
            # strictly increasing positions in 0..m-1 (checked before any write)
            mask = width_mask(pwidth)
            prev = -1
            for i in range(nx):
                pos = <int64_t>(<uint64_t>base + packed_field(p + at + 9, psize, i, pwidth, mask, 0))
                if pos <= prev or pos >= m:
                    return -1
                prev = pos
            at += 9 + psize
            if nx * w > nb - at:
                return -1
            at += nx * w
        pw = _POW10[e]
        if sub != C_BITPACK:
            # the integers by their codec (into out, or a scratch array for
            # float32), then scaled: codecs_float.decimal_decode
            ints = <int64_t*>out if w == 8 else <int64_t*>malloc(<size_t>(8 * m))
            if ints == NULL:
                return -1
            rc = _decode_values(p + at, nb - at, m, sub, PHYSICAL_INT, 8, <uint8_t*>ints)
            if rc == 0:
                for i in range(m):
                    if w == 8:
                        (<double*>out)[i] = <double>ints[i] / pw
                    else:
                        (<float*>out)[i] = <float>(<double>ints[i] / pw)
            if w != 8:
                free(ints)
            if rc < 0:
                return -1
            _decimal_exceptions(p, nx, psize, pwidth, w, out)
            return 0
        if _packed_block(p + at, nb - at, m, &base, &width, &size) < 0 or at + 9 + size != nb:
            return -1
        mask = width_mask(width)
        fast = 0
        if 1 <= width <= 56 and -_MAGIC_LIMIT <= base <= _MAGIC_LIMIT - 1 - <int64_t>mask:
            fast = fast_count(m, size, width)
        if fast > 0:
            if w == 8:
                orochi_decimal_unpack_f64(p + at + 9, fast, width, base, pw, <double*>out)
            else:
                orochi_decimal_unpack_f32(p + at + 9, fast, width, base, pw, <float*>out)
        for i in range(fast, m):
            v = <int64_t>(<uint64_t>base + packed_field(p + at + 9, size, i, width, mask, 0))
            if w == 8:
                (<double*>out)[i] = <double>v / pw
            else:
                (<float*>out)[i] = <float>(<double>v / pw)
        _decimal_exceptions(p, nx, psize, pwidth, w, out)
        return 0
    return -1


cdef int _decode_rle(const uint8_t* p, Py_ssize_t nb, Py_ssize_t m, int physical, int w,
                     uint8_t* out) noexcept nogil:
    """RLE (codecs._rle_decode): u32 r, r run values of w bytes, their
    lengths as a packed block; each length >= 1, together exactly m; for
    bool each run value 0 or 1. -1 when not exactly that."""
    cdef Py_ssize_t r, size, i, pos = 0, j, k, nl, fast
    cdef int64_t base, length
    cdef uint64_t lengths[512]
    cdef int width
    cdef uint64_t mask
    cdef const uint8_t* rv
    cdef const uint8_t* lp
    cdef uint64_t v8
    cdef uint32_t v4
    cdef uint16_t v2
    cdef uint8_t v1
    if nb < 4:
        return -1
    r = _rd_u32(p)
    if r < 1 or r > m or r * w > nb - 4:
        return -1
    rv = p + 4
    if _packed_block(rv + r * w, nb - 4 - r * w, r, &base, &width, &size) < 0 \
            or 4 + r * w + 9 + size != nb:
        return -1
    lp = rv + r * w + 9
    mask = width_mask(width)
    fast = fast_count(r, size, width)
    i = 0
    while i < r:
        # the run lengths: blocks unpacked at once where they may be, else one by one
        if i < fast:
            nl = fast - i if fast - i < 512 else 512
            orochi_unpack_add(lp, i, nl, width, mask, <uint64_t>base, lengths)
        else:
            nl = 1
            lengths[0] = <uint64_t>base + packed_field(lp, size, i, width, mask, 0)
        for k in range(nl):
            length = <int64_t>lengths[k]
            if length < 1 or length > m - pos:
                return -1
            # a short run as eight values at once, when they fit (the next
            # runs overwrite those past it): no loop whose end is mispredicted
            if w == 8:
                memcpy(&v8, rv + 8 * i, 8)
                if length <= 8 and pos + 8 <= m:
                    for j in range(8):
                        (<uint64_t*>out)[pos + j] = v8
                else:
                    for j in range(pos, pos + length):
                        (<uint64_t*>out)[j] = v8
            elif w == 4:
                memcpy(&v4, rv + 4 * i, 4)
                if length <= 8 and pos + 8 <= m:
                    for j in range(8):
                        (<uint32_t*>out)[pos + j] = v4
                else:
                    for j in range(pos, pos + length):
                        (<uint32_t*>out)[j] = v4
            elif w == 2:
                memcpy(&v2, rv + 2 * i, 2)
                for j in range(pos, pos + length):
                    (<uint16_t*>out)[j] = v2
            elif w == 1:
                v1 = rv[i]
                if physical == PHYSICAL_BOOL and v1 > 1:
                    return -1
                memset(out + pos, v1, <size_t>length)
            else:
                for j in range(pos, pos + length):
                    memcpy(out + w * j, rv + w * i, <size_t>w)
            pos += length
            i += 1
    return 0 if pos == m else -1


cdef void _decimal_exceptions(const uint8_t* p, Py_ssize_t nx, Py_ssize_t psize, int pwidth, int w,
                              uint8_t* out) noexcept nogil:
    """DECIMAL's exception values, stored as they are, put at their
    positions (p: the values section; positions checked by the caller)."""
    cdef uint64_t mask = width_mask(pwidth)
    cdef int64_t base, pos
    cdef Py_ssize_t i, at = 6 + 9 + psize
    if not nx:
        return
    base = _rd_i64(p + 6)
    for i in range(nx):
        pos = <int64_t>(<uint64_t>base + packed_field(p + 6 + 9, psize, i, pwidth, mask, 0))
        memcpy(out + w * pos, p + at + w * i, <size_t>w)


cdef inline bint _codec_valid(int codec, int physical) noexcept nogil:
    """codecs.codec_valid_for, for the fixed-width physical kinds."""
    if codec == C_PLAIN:
        return True
    if codec == C_BITPACK or codec == C_DELTA or codec == C_DELTA_DELTA:
        return physical == PHYSICAL_INT
    if codec == C_RLE:
        return True
    if codec == C_GORILLA or codec == C_DECIMAL:
        return physical == PHYSICAL_FLOAT
    if codec == C_BITMAP:
        return physical == PHYSICAL_BOOL
    return False


cdef inline bint _decoded_here(int codec, int physical) noexcept nogil:
    """Whether _decode_values decodes codec's values of physical kind."""
    if codec == C_PLAIN or codec == C_RLE:
        return True
    if codec == C_BITPACK or codec == C_DELTA or codec == C_DELTA_DELTA:
        return physical == PHYSICAL_INT
    return codec == C_DECIMAL and physical == PHYSICAL_FLOAT


cdef int _decode_chunk(const uint8_t* p, Py_ssize_t nb, Py_ssize_t n, Py_ssize_t nulls, int codec,
                       int physical, int w, uint8_t* out, uint8_t* valid) noexcept nogil:
    """Decode one raw (decompressed) chunk payload of n rows into out (n * w
    bytes) and valid (n bytes of 0/1); -1 when declined."""
    cdef Py_ssize_t vb, i, j, k, rem, ones = 0, m = n - nulls
    cdef uint8_t byte
    if n < 1 or nulls < 0 or nulls > n or not _codec_valid(codec, physical):
        return -1
    if nulls == n:
        # no values section whatever the codec
        if nb != 0:
            return -1
        memset(out, 0, <size_t>(n * w))
        memset(valid, 0, <size_t>n)
        return 0
    if nulls:
        vb = (n + 7) >> 3
        if vb > nb:
            return -1
        rem = n & 7
        if rem and (p[vb - 1] >> rem) != 0:
            return -1
        for i in range(n):
            byte = (p[i >> 3] >> (i & 7)) & 1
            valid[i] = byte
            ones += byte
        if ones != m:
            return -1
        p += vb
        nb -= vb
    else:
        memset(valid, 1, <size_t>n)
    if _decode_values(p, nb, m, codec, physical, w, out) < 0:
        return -1
    if nulls:
        # spread the m values over the valid rows, from the end (k <= j throughout)
        k = m - 1
        j = n - 1
        while j >= 0:
            if valid[j]:
                if k != j:
                    memcpy(out + w * j, out + w * k, <size_t>w)
                k -= 1
            else:
                memset(out + w * j, 0, <size_t>w)
            j -= 1
    return 0


cdef Py_ssize_t _max_raw_length(Py_ssize_t rows, int w) noexcept nogil:
    # orochi_fdw.storage.codecs._max_raw_length for a fixed-width kind
    return (rows + 7) // 8 + 64 + rows * (w + 10)


cdef const uint8_t* _bytes_of(object buf) except NULL:
    """The bytes of a non-empty buffer (lz4's output: a bytes object)."""
    cdef const uint8_t[::1] view
    if PyBytes_CheckExact(buf):
        return <const uint8_t*>PyBytes_AS_STRING(buf)
    view = buf
    return &view[0]   # (the caller keeps buf alive)


cdef object _fetch(int fd, object checksum, bint verify, object lz4_decompress, uint64_t offset,
                   Py_ssize_t length, Py_ssize_t raw, uint32_t crc, int compression, uint8_t* sp, object mv):
    """Read a chunk's length bytes into sp (mv: a memoryview of it), verify
    its checksum and undo its compression (none or lz4): True when its raw
    bytes are those in sp, the decompressed bytes, or None when declined
    (short read, checksum mismatch, lengths that do not agree)."""
    cdef Py_ssize_t got = 0
    cdef ssize_t r
    with nogil:
        while got < length:
            r = pread(fd, sp + got, <size_t>(length - got), <off_t>(offset + <uint64_t>got))
            if r < 0 and errno == EINTR:
                continue
            if r <= 0:
                break
            got += r
    if got != length:
        return None
    if verify and checksum(mv[:length]) != crc:
        return None
    if compression == Z_LZ4:
        if raw > 255 * length + 16:
            return None
        try:
            decompressed = lz4_decompress(mv[:length], uncompressed_size=raw)
        except Exception:  # noqa - the Python decoder reports it
            return None
        if len(decompressed) != raw:
            return None
        return decompressed
    if compression != Z_NONE or raw != length:
        return None
    return True


cdef int _read_one(int fd, object checksum, bint verify, object lz4_decompress, uint64_t offset,
                   Py_ssize_t length, Py_ssize_t raw, uint32_t crc, int codec, int compression,
                   Py_ssize_t n, Py_ssize_t nulls, int physical, int width, uint8_t* out, uint8_t* valid,
                   uint8_t* sp, object mv) except -2:
    """Read (into sp, at least length bytes; mv: a memoryview of it),
    verify and decode one chunk into out / valid: 0, or -1 when declined."""
    cdef const uint8_t* dp = sp
    cdef int rc
    if n < 1 or n > MAX_CHUNK_ROWS or raw > _max_raw_length(n, width) \
            or (compression != Z_NONE and compression != Z_LZ4) \
            or not _codec_valid(codec, physical) or (nulls != n and not _decoded_here(codec, physical)):
        return -1   # (declined before reading: the caller reads it)
    got = _fetch(fd, checksum, verify, lz4_decompress, offset, length, raw, crc, compression, sp, mv)
    if got is None:
        return -1
    if got is not True and raw:
        dp = _bytes_of(got)
    with nogil:
        rc = _decode_chunk(dp, raw, n, nulls, codec, physical, width, out, valid)
    return rc


cdef int _check_kind(int physical, int width) except -1:
    if physical not in (PHYSICAL_BOOL, PHYSICAL_INT, PHYSICAL_FLOAT, PHYSICAL_FIXED) \
            or width not in (1, 2, 4, 8, 16):
        raise ValueError("unsupported physical kind or width")
    return 0


def read_chunk(int fd, object checksum, bint verify, object lz4_decompress, uint64_t offset,
               uint64_t length, uint64_t raw_length, uint32_t crc, int codec, int compression,
               uint32_t rows, uint32_t nulls, int physical, int width, uint8_t[::1] out,
               uint8_t[::1] valid):
    """Read, verify and decode one column chunk (its footer entry in the
    arguments) into ``out`` (``rows`` values of ``width`` bytes) and ``valid``
    (``rows`` bytes, 1 = not NULL); see :func:`read_column`. True if decoded,
    False if left to the caller (``out`` / ``valid`` then undefined)."""
    cdef uint8_t* sp
    cdef Py_ssize_t cap
    _check_kind(physical, width)
    if out.shape[0] != <Py_ssize_t>rows * width or valid.shape[0] != rows:
        raise ValueError("out and valid must hold rows values")
    if rows < 1 or length > <uint64_t>MAX_RAW_LENGTH:
        return False
    cap = <Py_ssize_t>length
    sp = <uint8_t*>PyMem_Malloc(cap + 8)
    if sp == NULL:
        raise MemoryError()
    try:
        mv = PyMemoryView_FromMemory(<char*>sp, cap, PyBUF_READ)
        return _read_one(fd, checksum, verify, lz4_decompress, offset, cap, <Py_ssize_t>raw_length, crc,
                         codec, compression, rows, nulls, physical, width, &out[0], &valid[0], sp, mv) == 0
    finally:
        PyMem_Free(sp)


def read_column(int fd, object checksum, bint verify, object lz4_decompress,
                const uint64_t[::1] offsets, const uint64_t[::1] lengths,
                const uint64_t[::1] raw_lengths, const uint32_t[::1] crcs,
                const uint8_t[::1] codecs, const uint8_t[::1] compressions,
                const uint32_t[::1] rows, const uint32_t[::1] nulls, const int64_t[::1] starts,
                int physical, int width, uint8_t[::1] out, uint8_t[::1] valid,
                uint8_t[::1] status):
    """Read, verify and decode column chunks i = 0..len(offsets)-1 of a stripe
    column (their footer entries in the arrays) into ``out`` (values of
    ``width`` bytes, chunk i's rows from row ``starts[i]``) and ``valid``
    (one byte per row, 1 = not NULL).

    ``checksum(buffer) -> int`` is the CRC-32 (checked when ``verify``);
    ``lz4_decompress(buffer, uncompressed_size=n) -> bytes`` undoes the lz4
    layer. Returns the number of chunks left to the caller; ``status[i]`` is
    0 for a chunk decoded, 1 for one left (its rows of ``out`` / ``valid``
    undefined): see the module comment.

    Raises ValueError when the arrays do not agree with each other (a caller's
    mistake, not bad data).
    """
    cdef Py_ssize_t nchunks = offsets.shape[0], i, total = valid.shape[0], left = 0, scratch_len = 0
    cdef uint8_t* sp
    _check_kind(physical, width)
    if not (lengths.shape[0] == raw_lengths.shape[0] == crcs.shape[0] == codecs.shape[0]
            == compressions.shape[0] == rows.shape[0] == nulls.shape[0] == starts.shape[0]
            == status.shape[0] == nchunks):
        raise ValueError("chunk arrays differ in length")
    if out.shape[0] != total * width:
        raise ValueError("out must hold len(valid) values")
    for i in range(nchunks):
        if starts[i] < 0 or <Py_ssize_t>rows[i] > total - starts[i]:
            raise ValueError("chunk rows outside the output")
        if lengths[i] <= <uint64_t>MAX_RAW_LENGTH and <Py_ssize_t>lengths[i] > scratch_len:
            scratch_len = lengths[i]
    sp = <uint8_t*>PyMem_Malloc(scratch_len + 8)
    if sp == NULL:
        raise MemoryError()
    try:
        mv = PyMemoryView_FromMemory(<char*>sp, scratch_len, PyBUF_READ)
        for i in range(nchunks):
            status[i] = 1
            if lengths[i] > <uint64_t>MAX_RAW_LENGTH or _read_one(
                    fd, checksum, verify, lz4_decompress, offsets[i], <Py_ssize_t>lengths[i],
                    <Py_ssize_t>raw_lengths[i], crcs[i], codecs[i], compressions[i], rows[i], nulls[i],
                    physical, width, &out[0] + starts[i] * width, &valid[0] + starts[i], sp, mv) < 0:
                left += 1
            else:
                status[i] = 0
    finally:
        PyMem_Free(sp)
    return left


# ------------------------------------------------------------ dictionary chunks
#
# A DICTIONARY-coded chunk of a variable-width column (docs/FORMAT.md): after
# the validity bitmap, u32 d, the d entries' lengths as a packed block and
# their bytes, then the codes of the non-NULL rows: a codec byte and a packed
# block (BITPACK) or u32 r, r u32 run values and their lengths as a packed
# block (RLE). Read into its dictionary form, as
# orochi_fdw.storage.codecs.decode_dictionary_chunk reads it.

cdef object _dictionary_parts(const uint8_t* p, Py_ssize_t nb, Py_ssize_t rows, Py_ssize_t nulls):
    """The dictionary form of a raw (decompressed) DICTIONARY payload of rows
    rows, nulls of them NULL (0 <= nulls < rows): (entry offsets, entry
    bytes, an int32 code per row (0 for NULLs), validity as bool or None),
    or None when not exactly valid."""
    cdef Py_ssize_t count = rows - nulls, vb, i, j, k, at, size, room, ones = 0, r, pos
    cdef int64_t base, length, total = 0, run
    cdef int width, rem
    cdef uint32_t d, v
    cdef uint64_t mask
    cdef uint8_t byte
    cdef const uint8_t* lp
    cdef const uint8_t* rv
    cdef uint8_t* valid_v = NULL
    cdef int64_t* offsets_v
    cdef int32_t* codes
    cdef cnp.ndarray valid, offsets, data, codes_arr
    cdef cnp.npy_intp dim
    cdef bint bad = False
    valid = None
    if nulls:
        vb = (rows + 7) >> 3
        if vb > nb:
            return None
        rem = rows & 7
        if rem and (p[vb - 1] >> rem) != 0:
            return None
        dim = rows
        valid = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_UINT8, 0)
        valid_v = <uint8_t*>cnp.PyArray_DATA(valid)
        for i in range(rows):
            byte = (p[i >> 3] >> (i & 7)) & 1
            valid_v[i] = byte
            ones += byte
        if ones != count:
            return None
        p += vb
        nb -= vb
    if nb < 4:
        return None
    d = _rd_u32(p)
    if d == 0 or d > count:
        return None
    if _packed_block(p + 4, nb - 4, d, &base, &width, &size) < 0:
        return None
    lp = p + 4 + 9
    at = 4 + 9 + size
    room = nb - at
    # the entries: each length in 0..room, all of them within room
    dim = d + 1
    offsets = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_INT64, 0)
    offsets_v = <int64_t*>cnp.PyArray_DATA(offsets)
    offsets_v[0] = 0
    mask = width_mask(width)
    for i in range(d):
        length = <int64_t>(<uint64_t>base + packed_field(lp, size, i, width, mask, 0))
        if length < 0 or length > room:
            return None
        total += length
        offsets_v[i + 1] = total
    if total > room - 1:   # (and the codes' codec byte after them)
        return None
    dim = total
    data = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_UINT8, 0)
    if total:
        memcpy(cnp.PyArray_DATA(data), p + at, <size_t>total)
    at += total
    dim = rows
    codes_arr = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_INT32, 0)
    codes = <int32_t*>cnp.PyArray_DATA(codes_arr)
    if p[at] == C_BITPACK:
        at += 1
        if _packed_block(p + at, nb - at, count, &base, &width, &size) < 0 or at + 9 + size != nb:
            return None
        with nogil:
            bad = unpack_for(p + at + 9, size, count, width, base, 4, <uint8_t*>codes) >= 0
            if not bad:
                for i in range(count):
                    if <uint32_t>codes[i] >= d:
                        bad = True
                        break
        if bad:
            return None
    elif p[at] == C_RLE:
        at += 1
        if nb - at < 4:
            return None
        r = _rd_u32(p + at)
        at += 4
        if r == 0 or r > count or 4 * r > nb - at:
            return None
        rv = p + at
        at += 4 * r
        if _packed_block(p + at, nb - at, r, &base, &width, &size) < 0 or at + 9 + size != nb:
            return None
        lp = p + at + 9
        mask = width_mask(width)
        pos = 0
        with nogil:
            for i in range(r):
                run = <int64_t>(<uint64_t>base + packed_field(lp, size, i, width, mask, 0))
                v = _rd_u32(rv + 4 * i)
                if run < 1 or run > count - pos or v >= d:
                    bad = True
                    break
                for j in range(pos, pos + run):
                    codes[j] = <int32_t>v
                pos += run
        if bad or pos != count:
            return None
    else:
        return None
    if nulls:
        # spread the codes over the valid rows, from the end (k <= j throughout)
        k = count - 1
        j = rows - 1
        while j >= 0:
            if valid_v[j]:
                codes[j] = codes[k]
                k -= 1
            else:
                codes[j] = 0
            j -= 1
        return offsets, data, codes_arr, valid.view(np.bool_)
    return offsets, data, codes_arr, None


def read_dictionary(int fd, object checksum, bint verify, object lz4_decompress, uint64_t offset,
                    uint64_t length, uint64_t raw_length, uint32_t crc, int codec, int compression,
                    uint32_t rows, uint32_t nulls):
    """Read, verify and decode one DICTIONARY-coded chunk of a variable-width
    column (its footer entry in the arguments) into its dictionary form:
    ``(entry offsets int64, entry bytes uint8, codes int32, validity)``, a
    code per row (0 for a NULL one) and the validity as bool (None: no
    NULL); or None when left to the caller: a chunk coded otherwise, of
    NULLs only, compressed by zstd, or not exactly valid (see the module
    comment; ``checksum`` and ``lz4_decompress`` as :func:`read_column`'s)."""
    cdef uint8_t* sp
    cdef Py_ssize_t cap, raw
    cdef const uint8_t* dp
    if codec != C_DICTIONARY or rows < 1 or rows > MAX_CHUNK_ROWS or nulls >= rows \
            or length > <uint64_t>MAX_RAW_LENGTH or raw_length > <uint64_t>MAX_RAW_LENGTH \
            or (compression != Z_NONE and compression != Z_LZ4):
        return None
    cap = <Py_ssize_t>length
    raw = <Py_ssize_t>raw_length
    sp = <uint8_t*>PyMem_Malloc(cap + 8)
    if sp == NULL:
        raise MemoryError()
    try:
        mv = PyMemoryView_FromMemory(<char*>sp, cap, PyBUF_READ)
        got = _fetch(fd, checksum, verify, lz4_decompress, offset, cap, raw, crc, compression, sp, mv)
        if got is None or raw == 0:
            return None
        dp = sp if got is True else _bytes_of(got)
        return _dictionary_parts(dp, raw, rows, nulls)
    finally:
        PyMem_Free(sp)
