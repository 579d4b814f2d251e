# Hash aggregation kernels: group ids, per-group accumulators, finalization.
"""Hash aggregation kernels for pushed-down GROUP BY / aggregates.

Three parts, all running without the GIL over numpy column arrays:

* :class:`GroupTable` gives every selected row a dense group id (0, 1, ...
  in order of first appearance), hashing one or more key columns. It persists
  across calls, so a table read in many chunk groups is grouped once.
* ``group_*`` accumulators update caller-allocated per-group state arrays
  (index = group id) from one batch; :class:`DistinctCounter` and
  :class:`TextExtremes` keep state that does not fit in flat arrays.
* ``finalize_*`` / ``numeric_*_text`` turn state into result arrays plus a
  validity array (nonzero = the group has a value).

Rows and selections
    Every kernel reads a batch of ``nrows`` rows, optionally narrowed by a
    *selection*: ``None`` (every row), a ``uint8``/``bool`` mask of ``nrows``
    entries (nonzero = selected), or an ``int32``/``int64`` array of row
    indices. ``gids`` holds one group id per *selected* row, in selection
    order; *validity* is ``None`` or ``uint8``/``bool`` per row (nonzero =
    present). Row indices returned (first rows of groups) are batch row
    numbers, not selection positions.

Key columns (``GroupTable.assign``, ``DistinctCounter.update``) are tuples:
    ``("fixed", values, validity)`` with values bool/uint8, int16, int32,
    int64 (dates are int32 days, timestamps and times int64 microseconds),
    float32 or float64; ``("text", offsets, data, validity)`` with int64
    offsets (rows + 1) into uint8 bytes; ``("dict", codes, dict_offsets,
    dict_data, validity)`` with int32 codes into a dictionary of byte strings.

Postgres semantics kept here (PostgreSQL 15, checked against a server):

* Grouping: NULL keys form one group per key column, as in SQL GROUP BY.
  Float keys compare as Postgres's float equality: -0.0 equals 0.0 and every
  NaN equals every other NaN; a group's key is its first row's value. Text
  keys compare by bytes (deterministic collations).
* ``count(*)`` counts selected rows, ``count(col)`` its non-NULL values; both
  are 0, never NULL, over no rows. Every other aggregate over no (non-NULL)
  rows is NULL.
* ``sum(int2|int4)`` is int8 and ``sum(int8)`` is numeric. Sums are exact:
  an int64 running sum whose overflows are counted in a second int64
  (``carries``), so sum = carries * 2**64 + sums. An int8 result outside
  int64 raises NumericValueOutOfRangeError("bigint out of range", SQLSTATE
  22003). (Postgres 15's int4_sum/int2_sum do not check and would wrap, which
  needs more than 2**32 rows; the error is raised instead of a wrapped value.)
* ``avg(int2|int4|int8)`` is numeric: the exact sum divided by the count as
  numeric_div does it, result scale chosen by select_div_scale (at least 16
  significant digits: rscale = max(0, 16 - 4 * qweight), qweight the
  estimated base-10000 weight of the quotient) and rounded half away from
  zero, e.g. avg of 1 and 2 is 1.5000000000000000 and of 0 and 0 is
  0.00000000000000000000. Produced as text (numeric's output form).
* ``sum(float4)`` is float4 summed in float4 (float4pl), ``sum(float8)`` float8
  (float8pl): a sum of finite values that overflows to infinity raises
  NumericValueOutOfRangeError("value out of range: overflow"); NaN
  propagates; +inf + -inf is NaN. A sum state starts at -0.0 so that the sum
  of only -0.0 is -0.0, as in Postgres whose state starts at the first value.
* ``avg(float4|float8)`` is float8, computed with float8_accum's
  Youngs-Cramer transition (N, Sx, Sxx) row by row, including its overflow
  error when finite inputs make Sx or Sxx infinite, and finished as Sx / N.
* Float results equal Postgres's bit for bit when rows arrive in the same
  order; in another order they differ by summation order only (relative
  error of the order of n * 2**-53 for float8, n * 2**-24 for float4 sums).
* ``min``/``max`` keep the argument's type. Floats order NaN above every other
  value (NaN is the max if present, the min only when all are NaN); on ties
  the later row wins, as float8larger/float8smaller do (visible with -0.0 vs
  0.0). Text compares by memcmp then length (the "C" collation).
* ``bool_and``/``bool_or`` over no non-NULL rows are NULL.
* ``count(DISTINCT col)`` counts distinct non-NULL values per group, with the
  grouping equality above (floats: -0.0 = 0.0, NaN = NaN).

Hashes are not keyed: adversarial keys can make probing slow, never wrong.
"""

cimport numpy as cnp
from libc.math cimport fabs, isinf, isnan, NAN
from libc.stdint cimport (int16_t, int32_t, int64_t, uint8_t, uint64_t,
                          INT64_MAX, INT64_MIN)
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy, memset

from _interrupt cimport INTERRUPT_MASK, bind_interrupt_flag, interrupted, raise_interrupt
from _typedefs cimport float_t, int_t, key_t, minmax_t

import numpy as np

from orochi_fdw.errors import NumericValueOutOfRangeError

bind_interrupt_flag()

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static inline int orochi_add_overflow_i64(int64_t a, int64_t b, int64_t *r)
    {
        return __builtin_add_overflow(a, b, r);
    }

    /* MurmurHash3's 64-bit finalizer: a bijective avalanche mix. */
    static inline uint64_t orochi_mix64(uint64_t x)
    {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33;
        return x;
    }

    static inline uint64_t orochi_hash_bytes(const uint8_t *p, int64_t n)
    {
        uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t) n * 0xc2b2ae3d27d4eb4fULL);
        uint64_t w;

        while (n >= 8)
        {
            memcpy(&w, p, 8);
            h = (h ^ orochi_mix64(w)) * 0x9e3779b97f4a7c15ULL;
            h ^= h >> 29;
            p += 8;
            n -= 8;
        }
        if (n > 0)
        {
            w = 0;
            memcpy(&w, p, (size_t) n);
            h = (h ^ orochi_mix64(w ^ 0x5bd1e995ULL)) * 0x9e3779b97f4a7c15ULL;
        }
        return orochi_mix64(h);
    }

    typedef __int128 orochi_i128;
    typedef unsigned __int128 orochi_u128;

    /* sum = carry * 2**64 + wrapped (see group_sum_int) */
    static inline orochi_i128 orochi_sum128(int64_t wrapped, int64_t carry)
    {
        return (orochi_i128) carry * ((orochi_i128) 1 << 64) + (orochi_i128) wrapped;
    }

    /* Decimal digits of u into buf (no sign); returns their number. */
    static int orochi_u128_digits(orochi_u128 u, char *buf)
    {
        char tmp[48];
        int n = 0, i;

        do
        {
            tmp[n++] = (char) ('0' + (int) (u % 10));
            u /= 10;
        } while (u != 0);
        for (i = 0; i < n; i++)
            buf[i] = tmp[n - 1 - i];
        return n;
    }

    /* Weight (base-10000 digits - 1) and leading base-10000 digit of u;
     * (0, 0) for zero, as numeric's select_div_scale sees them. */
    static void orochi_nbase_lead(orochi_u128 u, int *weight, int *first)
    {
        int w = 0;

        if (u == 0)
        {
            *weight = 0;
            *first = 0;
            return;
        }
        while (u >= 10000)
        {
            u /= 10000;
            w++;
        }
        *weight = w;
        *first = (int) u;
    }

    /* Text of the exact sum; out needs 41 bytes. */
    static int orochi_int128_text(int64_t wrapped, int64_t carry, char *out)
    {
        orochi_i128 s = orochi_sum128(wrapped, carry);
        orochi_u128 u;
        int n = 0;

        if (s < 0)
        {
            out[n++] = '-';
            u = (orochi_u128) 0 - (orochi_u128) s;
        }
        else
            u = (orochi_u128) s;
        return n + orochi_u128_digits(u, out + n);
    }

    /* Text of numeric_div(sum, count) for count > 0, as avg(int) gives it:
     * select_div_scale's result scale (NUMERIC_MIN_SIG_DIGITS = 16,
     * DEC_DIGITS = 4, both inputs of display scale 0), exact long division,
     * rounded half away from zero. out needs 96 bytes. */
    static int orochi_numeric_avg_text(int64_t wrapped, int64_t carry, int64_t count, char *out)
    {
        orochi_i128 s = orochi_sum128(wrapped, carry);
        int neg = s < 0;
        orochi_u128 u = neg ? (orochi_u128) 0 - (orochi_u128) s : (orochi_u128) s;
        orochi_u128 den = (orochi_u128) (uint64_t) count;
        orochi_u128 rem;
        char digits[128];
        int w1, f1, w2, f2, qweight, rscale, nd, i, n = 0, nonzero = 0;

        orochi_nbase_lead(u, &w1, &f1);
        orochi_nbase_lead(den, &w2, &f2);
        qweight = w1 - w2;
        if (f1 <= f2)
            qweight--;
        rscale = 16 - qweight * 4;
        if (rscale < 0)
            rscale = 0;
        nd = orochi_u128_digits(u / den, digits + 1);  /* digits[0]: room for a carry */
        rem = u % den;
        for (i = 0; i < rscale; i++)
        {
            rem *= 10;
            digits[1 + nd++] = (char) ('0' + (int) (rem / den));
            rem %= den;
        }
        digits[0] = '0';
        if (rem * 2 >= den)
        {
            i = nd;
            while (digits[i] == '9')
                digits[i--] = '0';
            digits[i]++;
        }
        /* skip the carry slot unless it was used */
        {
            char *d = digits[0] == '0' ? digits + 1 : digits;
            int len = digits[0] == '0' ? nd : nd + 1;
            int intlen = len - rscale;

            for (i = 0; i < len; i++)
                if (d[i] != '0')
                    nonzero = 1;
            if (neg && nonzero)
                out[n++] = '-';
            memcpy(out + n, d, (size_t) intlen);
            n += intlen;
            if (rscale > 0)
            {
                out[n++] = '.';
                memcpy(out + n, d + intlen, (size_t) rscale);
                n += rscale;
            }
        }
        return n;
    }
    """
    int orochi_add_overflow_i64(int64_t a, int64_t b, int64_t* r) nogil
    uint64_t orochi_mix64(uint64_t x) nogil
    uint64_t orochi_hash_bytes(const uint8_t* p, int64_t n) nogil
    int orochi_int128_text(int64_t wrapped, int64_t carry, char* out) nogil
    int orochi_numeric_avg_text(int64_t wrapped, int64_t carry, int64_t count, char* out) nogil


# ----------------------------------------------------------------- selection

cdef enum:
    SEL_ALL = 0
    SEL_MASK = 1
    SEL_IDX32 = 2
    SEL_IDX64 = 3


cdef struct Sel:
    int kind
    Py_ssize_t nrows      # rows in the batch
    Py_ssize_t count      # selected rows
    Py_ssize_t pos        # cursor: next selection position (or mask row)
    const void* data      # the mask (uint8), or the indexes (int32 or int64)


cdef inline Py_ssize_t sel_next(Sel* s) noexcept nogil:
    """Batch row of the next selected row (call exactly s.count times)."""
    cdef Py_ssize_t p = s.pos
    if s.kind == SEL_ALL:
        s.pos = p + 1
        return p
    if s.kind == SEL_IDX64:
        s.pos = p + 1
        return <Py_ssize_t>(<const int64_t*>s.data)[p]
    if s.kind == SEL_IDX32:
        s.pos = p + 1
        return <Py_ssize_t>(<const int32_t*>s.data)[p]
    while (<const uint8_t*>s.data)[p] == 0:
        p += 1
    s.pos = p + 1
    return p


cdef inline const void* _data(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


cdef object _sel_init(Sel* s, object selection, Py_ssize_t nrows):
    """Fill s for a batch of nrows rows; return the array to keep alive."""
    cdef cnp.ndarray a
    memset(s, 0, sizeof(Sel))
    s.nrows = nrows
    if selection is None:
        s.kind = SEL_ALL
        s.count = nrows
        return None
    a = np.ascontiguousarray(selection)
    if a.ndim != 1:
        raise ValueError("a selection must be one-dimensional")
    if a.dtype == np.bool_ or a.dtype == np.uint8:
        if a.shape[0] != nrows:
            raise ValueError(f"selection mask has {a.shape[0]} entries for {nrows} rows")
        a = a.view(np.uint8)
        s.kind = SEL_MASK
        s.data = _data(a)
        s.count = np.count_nonzero(a)
        return a
    if a.dtype == np.int64 or a.dtype == np.int32:
        if a.shape[0] and (a.min() < 0 or a.max() >= nrows):
            raise ValueError(f"selection index out of range for {nrows} rows")
        s.count = a.shape[0]
        if a.dtype == np.int64:
            s.kind = SEL_IDX64
            s.data = _data(a)
        else:
            s.kind = SEL_IDX32
            s.data = _data(a)
        return a
    raise ValueError(f"a selection must be a bool/uint8 mask or int32/int64 indices, not {a.dtype}")


cdef object _valid_init(const uint8_t** out, object validity, Py_ssize_t nrows):
    """Point *out at the validity bytes (NULL when every row is present)."""
    cdef cnp.ndarray a
    out[0] = NULL
    if validity is None:
        return None
    a = np.ascontiguousarray(validity)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    if a.dtype != np.uint8 or a.ndim != 1:
        raise ValueError("validity must be a one-dimensional uint8 or bool array")
    if a.shape[0] != nrows:
        raise ValueError(f"validity has {a.shape[0]} entries for {nrows} rows")
    out[0] = <const uint8_t*>_data(a)
    return a


cdef inline bint _present(const uint8_t* valid, Py_ssize_t i) noexcept nogil:
    return valid == NULL or valid[i] != 0


cdef int _check_gids(Py_ssize_t ngids, Sel* s) except -1:
    if ngids != s.count:
        raise ValueError(f"{ngids} group ids for {s.count} selected rows")
    return 0


cdef int _raise_gid() except -1:
    raise ValueError("group id out of range of the state arrays")


# The loop the grouped kernels share: for the k-th selected row, its batch row
# and group id, checked against the state arrays, and whether it is NULL.
cdef struct GroupRows:
    Sel sel
    const uint8_t* valid  # NULL: every row present
    const int64_t* gids   # one per selected row
    Py_ssize_t cap        # group ids must be below this


cdef enum:
    ROW_SKIP = 0  # NULL: nothing to fold in
    ROW_TAKE = 1
    ROW_BAD = 2   # group id out of range of the state arrays
    ROW_STOP = 3  # interrupted


cdef GroupRows _group_rows(list keep, const int64_t[::1] gids, Py_ssize_t cap, object validity,
                           object selection, Py_ssize_t nrows) except *:
    """The rows of a batch of nrows rows, the arrays to keep alive added to
    keep (returned by value: a kernel's copy never escapes, so the compiler
    keeps its fields in registers)."""
    cdef GroupRows r
    keep.append(_valid_init(&r.valid, validity, nrows))
    keep.append(_sel_init(&r.sel, selection, nrows))
    _check_gids(gids.shape[0], &r.sel)
    r.gids = &gids[0] if gids.shape[0] else NULL
    r.cap = cap
    return r


cdef inline int _group_row(GroupRows* r, Py_ssize_t k, Py_ssize_t* i, int64_t* g) noexcept nogil:
    """The k-th selected row (call for k = 0, 1, ... in turn): its batch
    row i and group g, and whether to fold it in (ROW_TAKE), skip it
    (ROW_SKIP) or stop (ROW_BAD, ROW_STOP: :func:`_rows_end` raises)."""
    if (k & INTERRUPT_MASK) == 0 and interrupted():
        return ROW_STOP
    i[0] = sel_next(&r.sel)
    g[0] = r.gids[k]
    if <uint64_t>g[0] >= <uint64_t>r.cap:
        return ROW_BAD
    return ROW_TAKE if _present(r.valid, i[0]) else ROW_SKIP


cdef int _rows_end(int status) except -1:
    """Raise what stopped a loop of :func:`_group_row`."""
    if status == ROW_STOP:
        raise_interrupt()
    if status == ROW_BAD:
        _raise_gid()
    return 0


# ------------------------------------------------------------ growable arrays

cdef struct I64Vec:
    int64_t* data
    Py_ssize_t size
    Py_ssize_t cap


cdef struct U8Vec:
    uint8_t* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int i64_reserve(I64Vec* v, Py_ssize_t cap) noexcept nogil:
    cdef int64_t* p
    if cap <= v.cap:
        return 0
    p = <int64_t*>realloc(v.data, <size_t>cap * sizeof(int64_t))
    if p == NULL:
        return -1
    v.data = p
    v.cap = cap
    return 0


cdef inline int i64_push(I64Vec* v, int64_t x) noexcept nogil:
    if v.size == v.cap:
        if i64_reserve(v, v.cap * 2 if v.cap else 16) < 0:
            return -1
    v.data[v.size] = x
    v.size += 1
    return 0


cdef int i64_resize(I64Vec* v, Py_ssize_t size, int64_t fill) noexcept nogil:
    """Grow to size entries, new ones set to fill."""
    cdef Py_ssize_t i, cap = v.cap if v.cap else 16
    if size <= v.size:
        return 0
    while cap < size:
        cap *= 2
    if i64_reserve(v, cap) < 0:
        return -1
    for i in range(v.size, size):
        v.data[i] = fill
    v.size = size
    return 0


cdef int u8_append(U8Vec* v, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t cap
    cdef uint8_t* q
    if v.size + n > v.cap:
        cap = v.cap if v.cap else 256
        while cap < v.size + n:
            cap *= 2
        q = <uint8_t*>realloc(v.data, <size_t>cap)
        if q == NULL:
            return -1
        v.data = q
        v.cap = cap
    if n > 0:
        memcpy(v.data + v.size, p, <size_t>n)
    v.size += n
    return 0


cdef object _i64_array(I64Vec* v):
    out = np.empty(v.size, dtype=np.int64)
    if v.size:
        memcpy(cnp.PyArray_DATA(out), v.data, <size_t>v.size * sizeof(int64_t))
    return out


# ------------------------------------------------------------- hash indexes

cdef struct Slot:
    uint64_t key          # the key itself (int maps) or its hash (bytes, tuples)
    int64_t id            # -1: empty


cdef struct HashIndex:
    Slot* slots
    uint64_t mask         # capacity - 1 (capacity a power of two)
    Py_ssize_t size
    bint key_is_hash      # slots hold hashes: rehash without mixing again


cdef int hi_init(HashIndex* h, bint key_is_hash) noexcept nogil:
    cdef Py_ssize_t cap = 16, i
    h.slots = <Slot*>realloc(NULL, <size_t>cap * sizeof(Slot))
    if h.slots == NULL:
        return -1
    for i in range(cap):
        h.slots[i].id = -1
    h.mask = cap - 1
    h.size = 0
    h.key_is_hash = key_is_hash
    return 0


cdef inline uint64_t hi_hash(HashIndex* h, uint64_t key) noexcept nogil:
    return key if h.key_is_hash else orochi_mix64(key)


cdef int hi_grow(HashIndex* h) noexcept nogil:
    """Double the capacity and reinsert every slot."""
    cdef uint64_t newmask = h.mask * 2 + 1, pos
    cdef Py_ssize_t i, cap = <Py_ssize_t>newmask + 1
    cdef Slot* old = h.slots
    cdef Slot* slots = <Slot*>realloc(NULL, <size_t>cap * sizeof(Slot))
    if slots == NULL:
        return -1
    for i in range(cap):
        slots[i].id = -1
    for i in range(<Py_ssize_t>h.mask + 1):
        if old[i].id >= 0:
            pos = hi_hash(h, old[i].key) & newmask
            while slots[pos].id >= 0:
                pos = (pos + 1) & newmask
            slots[pos] = old[i]
    free(old)
    h.slots = slots
    h.mask = newmask
    return 0


cdef inline Slot* hi_insert(HashIndex* h, uint64_t key, uint64_t hash, int64_t id) noexcept nogil:
    """Insert a key known to be absent; NULL when out of memory."""
    cdef uint64_t pos
    if (h.size + 1) * 2 > <Py_ssize_t>h.mask + 1:
        if hi_grow(h) < 0:
            return NULL
    pos = hash & h.mask
    while h.slots[pos].id >= 0:
        pos = (pos + 1) & h.mask
    h.slots[pos].key = key
    h.slots[pos].id = id
    h.size += 1
    return &h.slots[pos]


# ----------------------------------------------------------- key dictionaries

cdef enum:
    KIND_INT = 0
    KIND_FLOAT = 1
    KIND_BYTES = 2

_KINDS = {"int": KIND_INT, "float": KIND_FLOAT, "bytes": KIND_BYTES}


cdef struct KeyDict:
    # Distinct values of one column, each with a dense id in order of first
    # appearance; NULL gets an id of its own when first seen.
    int kind
    HashIndex index       # int/float: key = canonical bits; bytes: key = hash
    Py_ssize_t count
    int64_t null_id       # -1 until a NULL is seen
    I64Vec values         # int/float: raw bits of the first value, per id
    I64Vec offsets        # bytes: count + 1 offsets into arena
    U8Vec arena
    int64_t last_key      # one-entry cache for runs of equal int keys
    int64_t last_id
    # int keys whose values span a small range skip hashing: direct[key -
    # dbase] is the key's id (-1 unseen). Once the range gets too wide the
    # hash index is built from `values` and used from then on.
    int32_t* direct
    int64_t dbase
    uint64_t dspan
    bint hashed           # the hash index holds every value


cdef int kd_init(KeyDict* d, int kind) noexcept nogil:
    memset(d, 0, sizeof(KeyDict))
    d.kind = kind
    d.null_id = -1
    d.last_id = -1
    d.hashed = kind != KIND_INT
    if hi_init(&d.index, kind == KIND_BYTES) < 0:
        return -1
    if kind == KIND_BYTES:
        return i64_push(&d.offsets, 0)
    return 0


cdef void kd_free(KeyDict* d) noexcept nogil:
    free(d.direct)
    d.direct = NULL
    free(d.index.slots)
    free(d.values.data)
    free(d.offsets.data)
    free(d.arena.data)
    d.index.slots = NULL
    d.values.data = NULL
    d.offsets.data = NULL
    d.arena.data = NULL


cdef inline int64_t kd_new_id(KeyDict* d, uint64_t raw) noexcept nogil:
    cdef int64_t id = d.count
    if d.kind == KIND_BYTES:
        if i64_push(&d.offsets, d.arena.size) < 0:
            return -1
    elif i64_push(&d.values, <int64_t>raw) < 0:
        return -1
    d.count += 1
    return id


cdef inline int64_t kd_null(KeyDict* d, bint* created) noexcept nogil:
    created[0] = d.null_id < 0
    if d.null_id < 0:
        d.null_id = kd_new_id(d, 0)
    return d.null_id


cdef inline int64_t kd_int(KeyDict* d, uint64_t key, uint64_t raw, bint* created) noexcept nogil:
    """Id of an int/float key (canonical bits key, first-seen bits raw)."""
    cdef uint64_t h = orochi_mix64(key)
    cdef uint64_t pos = h & d.index.mask
    cdef Slot* s
    cdef int64_t id
    created[0] = False
    while True:
        s = &d.index.slots[pos]
        if s.id < 0:
            break
        if s.key == key:
            return s.id
        pos = (pos + 1) & d.index.mask
    id = kd_new_id(d, raw)
    if id < 0 or hi_insert(&d.index, key, h, id) == NULL:
        return -1
    created[0] = True
    return id


cdef inline int64_t kd_bytes(KeyDict* d, const uint8_t* p, int64_t n, bint* created) noexcept nogil:
    """Id of a byte string."""
    cdef uint64_t h = orochi_hash_bytes(p, n)
    cdef uint64_t pos = h & d.index.mask
    cdef Slot* s
    cdef int64_t id, start
    created[0] = False
    while True:
        s = &d.index.slots[pos]
        if s.id < 0:
            break
        if s.key == h:
            start = d.offsets.data[s.id]
            if d.offsets.data[s.id + 1] - start == n and (
                    n == 0 or memcmp(d.arena.data + start, p, <size_t>n) == 0):
                return s.id
        pos = (pos + 1) & d.index.mask
    if u8_append(&d.arena, p, n) < 0:
        return -1
    id = kd_new_id(d, 0)
    if id < 0 or hi_insert(&d.index, h, h, id) == NULL:
        return -1
    created[0] = True
    return id


cdef enum:
    # widest value range (max - min + 1) of int keys grouped by direct
    # addressing: a table of 1 MB
    DIRECT_MAX_SPAN = 1 << 18


cdef int kd_direct_prepare(KeyDict* d, int64_t lo, int64_t hi) noexcept nogil:
    """Before a batch of int keys within [lo, hi]: extend the direct table
    to cover them, or switch to the hash index for good when the range gets
    too wide. Returns -1 when out of memory."""
    cdef int64_t base
    cdef uint64_t span
    cdef int32_t* table
    cdef Py_ssize_t j
    cdef int64_t v
    if d.hashed:
        return 0
    if d.direct != NULL:
        if lo >= d.dbase and <uint64_t>hi - <uint64_t>d.dbase < d.dspan:
            return 0
        if d.dbase < lo:
            lo = d.dbase
        v = d.dbase + <int64_t>(d.dspan - 1)
        if v > hi:
            hi = v
    span = <uint64_t>hi - <uint64_t>lo + 1
    if span != 0 and span <= <uint64_t>DIRECT_MAX_SPAN:
        base = lo
        table = <int32_t*>realloc(NULL, <size_t>span * sizeof(int32_t))
        if table == NULL:
            return -1
        memset(table, 0xff, <size_t>span * sizeof(int32_t))
        for j in range(d.count):
            if j != d.null_id:
                table[d.values.data[j] - base] = <int32_t>j
        free(d.direct)
        d.direct = table
        d.dbase = base
        d.dspan = span
        return 0
    # too wide: index every value seen so far and hash from now on
    for j in range(d.count):
        if j != d.null_id:
            v = d.values.data[j]
            if hi_insert(&d.index, <uint64_t>v, orochi_mix64(<uint64_t>v), j) == NULL:
                return -1
    free(d.direct)
    d.direct = NULL
    d.hashed = True
    return 0


# ------------------------------------------------------------------ key input

cdef enum:
    FORM_FIXED = 0
    FORM_TEXT = 1
    FORM_DICT = 2

cdef enum:
    DT_BOOL = 0
    DT_I16 = 1
    DT_I32 = 2
    DT_I64 = 3
    DT_F32 = 4
    DT_F64 = 5

_FIXED_DTYPES = {
    np.dtype(np.bool_): DT_BOOL, np.dtype(np.uint8): DT_BOOL,
    np.dtype(np.int16): DT_I16, np.dtype(np.int32): DT_I32, np.dtype(np.int64): DT_I64,
    np.dtype(np.float32): DT_F32, np.dtype(np.float64): DT_F64,
}


cdef struct KeyInput:
    int form
    int dtype             # FORM_FIXED
    const void* values    # FORM_FIXED values; FORM_DICT int32 codes
    const int64_t* offsets    # FORM_TEXT row offsets; FORM_DICT dictionary offsets
    const uint8_t* data
    Py_ssize_t ndict
    const uint8_t* valid
    int64_t* dict_map     # FORM_DICT: dictionary entry -> id, -1 unseen (scratch)


cdef object _key_input(KeyInput* ki, object spec, int kind, Py_ssize_t* nrows):
    """Parse a key tuple into ki; return the objects to keep alive. nrows is
    set from the column, or checked against it when already >= 0."""
    cdef cnp.ndarray values, offsets, data, codes, dmap
    cdef Py_ssize_t n
    memset(ki, 0, sizeof(KeyInput))
    if not isinstance(spec, tuple) or not spec:
        raise ValueError("a key column is a tuple: ('fixed'|'text'|'dict', arrays..., validity)")
    form = spec[0]
    keep = []
    if form == "fixed" and len(spec) == 3:
        values = np.ascontiguousarray(spec[1])
        dt = _FIXED_DTYPES.get(values.dtype)
        if dt is None or values.ndim != 1:
            raise ValueError(f"unsupported key array dtype {values.dtype}")
        if kind == KIND_BYTES or (kind == KIND_FLOAT) != (dt in (DT_F32, DT_F64)):
            raise ValueError(f"a {values.dtype} array cannot feed a key of this kind")
        ki.form = FORM_FIXED
        ki.dtype = dt
        ki.values = _data(values)
        n = values.shape[0]
        keep.append(values)
        validity = spec[2]
    elif form == "text" and len(spec) == 4:
        offsets = np.ascontiguousarray(spec[1], dtype=np.int64)
        data = _u8(spec[2])
        n = offsets.shape[0] - 1
        if n < 0 or data.ndim != 1:
            raise ValueError("text offsets need rows + 1 entries")
        _check_offsets(offsets, data.shape[0])
        ki.form = FORM_TEXT
        ki.offsets = <const int64_t*>_data(offsets)
        ki.data = <const uint8_t*>_data(data) if data.shape[0] else <const uint8_t*>""
        keep += [offsets, data]
        validity = spec[3]
    elif form == "dict" and len(spec) == 5:
        codes = np.ascontiguousarray(spec[1], dtype=np.int32)
        offsets = np.ascontiguousarray(spec[2], dtype=np.int64)
        data = _u8(spec[3])
        if offsets.shape[0] < 1 or data.ndim != 1:
            raise ValueError("dictionary offsets need entries + 1 values")
        _check_offsets(offsets, data.shape[0])
        ki.form = FORM_DICT
        ki.values = _data(codes)
        ki.offsets = <const int64_t*>_data(offsets)
        ki.data = <const uint8_t*>_data(data) if data.shape[0] else <const uint8_t*>""
        ki.ndict = offsets.shape[0] - 1
        dmap = np.full(max(ki.ndict, 1), -1, dtype=np.int64)
        ki.dict_map = <int64_t*>_data(dmap)
        n = codes.shape[0]
        keep += [codes, offsets, data, dmap]
        validity = spec[4]
    else:
        raise ValueError(f"unknown key column form {form!r} (or wrong number of arrays)")
    if ki.form != FORM_FIXED and kind != KIND_BYTES:
        raise ValueError("text keys need a key of kind 'bytes'")
    if nrows[0] >= 0 and nrows[0] != n:
        raise ValueError(f"key columns of different lengths ({nrows[0]} and {n})")
    nrows[0] = n
    keep.append(_valid_init(&ki.valid, validity, n))
    return keep


cdef object _u8(object buf):
    """A byte buffer as a contiguous uint8 array."""
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return np.frombuffer(buf, dtype=np.uint8)
    a = np.ascontiguousarray(buf)
    if a.dtype != np.uint8 and a.dtype != np.int8:
        raise ValueError(f"a byte buffer must be uint8, not {a.dtype}")
    return a.view(np.uint8)


cdef int _check_offsets(cnp.ndarray offsets, Py_ssize_t nbytes) except -1:
    cdef Py_ssize_t n = offsets.shape[0]
    if n and (offsets[0] < 0 or offsets[n - 1] > nbytes or (n > 1 and np.any(np.diff(offsets) < 0))):
        raise ValueError("offsets must be non-decreasing and within the data buffer")
    return 0


cdef inline uint64_t _canon_double(double v, uint64_t* raw) noexcept nogil:
    """Key bits of a float under Postgres equality: -0.0 = 0.0, NaN = NaN."""
    cdef uint64_t bits
    memcpy(&bits, &v, 8)
    raw[0] = bits
    if v != v:
        return <uint64_t>0x7ff8000000000000
    if v == 0.0:
        return 0
    return bits


cdef inline uint64_t _fixed_key(const key_t* values, Py_ssize_t i, uint64_t* raw) noexcept nogil:
    cdef uint64_t k
    if key_t is float or key_t is double:
        k = _canon_double(<double>values[i], raw)
    elif key_t is uint8_t:
        k = 1 if values[i] != 0 else 0
        raw[0] = k
    else:
        k = <uint64_t><int64_t>values[i]
        raw[0] = k
    return k


# Status codes of the nogil interning loops.
cdef enum:
    ST_OK = 0
    ST_NOMEM = -1
    ST_BADCODE = -2
    ST_INTERRUPTED = -3   # a query cancel (_interrupt.pxd)


cdef int _intern_fixed(KeyDict* d, const key_t* values, const uint8_t* valid, Sel sel,
                       int64_t* out, I64Vec* first) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef uint64_t key, raw
    cdef int64_t id, lo, hi, v
    cdef bint created
    cdef int32_t* slot
    if key_t is not float and key_t is not double:
        if not d.hashed and sel.count > 0:
            # the range of the batch's non-NULL keys
            if key_t is uint8_t:
                lo, hi = 0, 1
            else:
                lo, hi = INT64_MAX, INT64_MIN
                if valid == NULL:
                    for i in range(sel.nrows):
                        v = <int64_t>values[i]
                        lo = v if v < lo else lo
                        hi = v if v > hi else hi
                else:
                    for i in range(sel.nrows):
                        if valid[i]:
                            v = <int64_t>values[i]
                            lo = v if v < lo else lo
                            hi = v if v > hi else hi
            if lo <= hi and kd_direct_prepare(d, lo, hi) < 0:
                return ST_NOMEM
        if d.direct != NULL:
            for k in range(sel.count):
                if (k & INTERRUPT_MASK) == 0 and interrupted():
                    return ST_INTERRUPTED
                i = sel_next(&sel)
                created = False
                if not _present(valid, i):
                    id = kd_null(d, &created)
                else:
                    key = _fixed_key(values, i, &raw)
                    slot = &d.direct[<int64_t>key - d.dbase]
                    id = slot[0]
                    if id < 0:
                        id = kd_new_id(d, key)
                        slot[0] = <int32_t>id
                        created = True
                if id < 0:
                    return ST_NOMEM
                if created and first != NULL and i64_push(first, i) < 0:
                    return ST_NOMEM
                out[k] = id
            return ST_OK
    for k in range(sel.count):
        if (k & INTERRUPT_MASK) == 0 and interrupted():
            return ST_INTERRUPTED
        i = sel_next(&sel)
        if not _present(valid, i):
            id = kd_null(d, &created)
        else:
            key = _fixed_key(values, i, &raw)
            if d.last_id >= 0 and <int64_t>key == d.last_key:
                id = d.last_id
                created = False
            else:
                id = kd_int(d, key, raw, &created)
                d.last_key = <int64_t>key
                d.last_id = id
        if id < 0:
            d.last_id = -1
            return ST_NOMEM
        if created and first != NULL and i64_push(first, i) < 0:
            return ST_NOMEM
        out[k] = id
    return ST_OK


cdef inline int64_t _bytes_id(KeyDict* d, KeyInput* ki, Py_ssize_t i, bint* created) noexcept nogil:
    """Id of row i of a text or dictionary column; -1 no memory, -2 bad code."""
    cdef int64_t code, id, start
    if ki.form == FORM_TEXT:
        start = ki.offsets[i]
        return kd_bytes(d, ki.data + start, ki.offsets[i + 1] - start, created)
    code = (<const int32_t*>ki.values)[i]
    if code < 0 or code >= ki.ndict:
        return -2
    id = ki.dict_map[code]
    if id >= 0:
        created[0] = False
        return id
    start = ki.offsets[code]
    id = kd_bytes(d, ki.data + start, ki.offsets[code + 1] - start, created)
    ki.dict_map[code] = id
    return id


cdef int _intern_bytes(KeyDict* d, KeyInput* ki, Sel sel, int64_t* out, I64Vec* first) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef int64_t id
    cdef bint created
    for k in range(sel.count):
        if (k & INTERRUPT_MASK) == 0 and interrupted():
            return ST_INTERRUPTED
        i = sel_next(&sel)
        if not _present(ki.valid, i):
            id = kd_null(d, &created)
        else:
            id = _bytes_id(d, ki, i, &created)
        if id < 0:
            return ST_NOMEM if id == -1 else ST_BADCODE
        if created and first != NULL and i64_push(first, i) < 0:
            return ST_NOMEM
        out[k] = id
    return ST_OK


cdef int _intern_column(KeyDict* d, KeyInput* ki, Sel sel, int64_t* out, I64Vec* first) noexcept nogil:
    if ki.form != FORM_FIXED:
        return _intern_bytes(d, ki, sel, out, first)
    if ki.dtype == DT_BOOL:
        return _intern_fixed(d, <const uint8_t*>ki.values, ki.valid, sel, out, first)
    if ki.dtype == DT_I16:
        return _intern_fixed(d, <const int16_t*>ki.values, ki.valid, sel, out, first)
    if ki.dtype == DT_I32:
        return _intern_fixed(d, <const int32_t*>ki.values, ki.valid, sel, out, first)
    if ki.dtype == DT_I64:
        return _intern_fixed(d, <const int64_t*>ki.values, ki.valid, sel, out, first)
    if ki.dtype == DT_F32:
        return _intern_fixed(d, <const float*>ki.values, ki.valid, sel, out, first)
    return _intern_fixed(d, <const double*>ki.values, ki.valid, sel, out, first)


cdef int _raise_status(int status) except -1:
    if status == ST_NOMEM:
        raise MemoryError("out of memory in a hash aggregation table")
    if status == ST_BADCODE:
        raise ValueError("dictionary code out of range")
    if status == ST_INTERRUPTED:
        raise_interrupt()
    return 0


# ----------------------------------------------------------------- GroupTable

cdef class GroupTable:
    """Dense group ids for rows by one or more key columns, across batches.

    Args:
        kinds: one per key column: ``"int"`` (bool, integers, dates,
            timestamps), ``"float"`` or ``"bytes"`` (text given as offsets +
            bytes or as dictionary codes). At least one.

    A table is not safe to use from several threads at once (its methods
    release the GIL).

    Example:
        >>> import numpy as np
        >>> t = GroupTable(["int"])
        >>> gids, first = t.assign([("fixed", np.array([5, 7, 5]), None)])
        >>> gids.tolist(), first.tolist(), t.ngroups
        ([0, 1, 0], [0, 1], 2)
    """

    cdef KeyDict* dicts
    cdef int nk
    cdef HashIndex tindex     # nkeys >= 2: tuples of column ids -> group id
    cdef I64Vec tuples        # nkeys >= 2: ngroups x nkeys column ids
    cdef I64Vec* graw         # nkeys >= 2, float keys: bits of each group's first value
    cdef Py_ssize_t _ngroups

    def __cinit__(self, kinds):
        cdef int c
        kinds = list(kinds)
        if not kinds:
            raise ValueError("a GroupTable needs at least one key column")
        if len(kinds) > 64:
            raise ValueError("at most 64 key columns")
        for k in kinds:
            if k not in _KINDS:
                raise ValueError(f"key kind must be 'int', 'float' or 'bytes', not {k!r}")
        self.dicts = <KeyDict*>realloc(NULL, len(kinds) * sizeof(KeyDict))
        if self.dicts == NULL:
            raise MemoryError()
        memset(self.dicts, 0, len(kinds) * sizeof(KeyDict))
        self.graw = <I64Vec*>realloc(NULL, len(kinds) * sizeof(I64Vec))
        if self.graw == NULL:
            raise MemoryError()
        memset(self.graw, 0, len(kinds) * sizeof(I64Vec))
        self.nk = len(kinds)
        for c in range(self.nk):
            if kd_init(&self.dicts[c], _KINDS[kinds[c]]) < 0:
                raise MemoryError()
        if self.nk > 1 and hi_init(&self.tindex, True) < 0:
            raise MemoryError()

    def __dealloc__(self):
        cdef int c
        if self.dicts != NULL:
            for c in range(self.nk):
                kd_free(&self.dicts[c])
            free(self.dicts)
        if self.graw != NULL:
            for c in range(self.nk):
                free(self.graw[c].data)
            free(self.graw)
        free(self.tindex.slots)
        free(self.tuples.data)

    @property
    def ngroups(self) -> int:
        """Groups seen so far."""
        return self._ngroups

    @property
    def nkeys(self) -> int:
        """Key columns."""
        return self.nk

    def assign(self, keys, selection=None):
        """Group ids of the selected rows of a batch.

        Args:
            keys: one key tuple per key column (see the module docstring).
            selection: None, a row mask or row indices.

        Returns:
            (gids, first_rows): int64 group id per selected row; int64 batch
            row of the first row of each group this call created (groups
            ``ngroups_before ... ngroups - 1``, in order).

        Raises:
            ValueError: inputs of the wrong shape or dtype, dictionary codes
                out of range. MemoryError.
        """
        cdef KeyInput* kis
        cdef Sel sel
        cdef Py_ssize_t nrows = -1, k, i, n
        cdef int c, status = ST_OK, nk = self.nk
        cdef cnp.ndarray gids, tmp
        cdef int64_t* out
        cdef int64_t* ids
        cdef I64Vec first
        keys = list(keys)
        if len(keys) != nk:
            raise ValueError(f"{len(keys)} key columns for a table of {nk}")
        kis = <KeyInput*>realloc(NULL, nk * sizeof(KeyInput))
        if kis == NULL:
            raise MemoryError()
        memset(&first, 0, sizeof(I64Vec))
        try:
            keep = []
            for c in range(nk):
                keep.append(_key_input(&kis[c], keys[c], self.dicts[c].kind, &nrows))
            keep.append(_sel_init(&sel, selection, nrows))
            n = sel.count
            gids = np.empty(n, dtype=np.int64)
            out = <int64_t*>_data(gids)
            if nk == 1:
                with nogil:
                    status = _intern_column(&self.dicts[0], &kis[0], sel, out, &first)
                    self._ngroups = self.dicts[0].count
            else:
                tmp = np.empty((nk, max(n, 1)), dtype=np.int64)
                ids = <int64_t*>_data(tmp)
                with nogil:
                    for c in range(nk):
                        status = _intern_column(&self.dicts[c], &kis[c], sel, ids + c * n, NULL)
                        if status != ST_OK:
                            break
                    if status == ST_OK:
                        status = self._intern_tuples(ids, n, sel, out, &first)
            _raise_status(status)
            firsts = _i64_array(&first)
            if nk > 1:
                self._keep_float_keys(keys, firsts)
            return gids, firsts
        finally:
            free(kis)
            free(first.data)

    cdef int _intern_tuples(self, const int64_t* ids, Py_ssize_t n, Sel sel, int64_t* out,
                            I64Vec* first) noexcept nogil:
        cdef Py_ssize_t k, i
        cdef int c, nk = self.nk
        cdef uint64_t h, pos
        cdef int64_t gid
        cdef const int64_t* t
        cdef bint found
        for k in range(n):
            if (k & INTERRUPT_MASK) == 0 and interrupted():
                return ST_INTERRUPTED
            i = sel_next(&sel)
            h = 0x9e3779b97f4a7c15
            for c in range(nk):
                h = orochi_mix64(h ^ <uint64_t>ids[c * n + k]) + <uint64_t>c
            pos = h & self.tindex.mask
            found = False
            while self.tindex.slots[pos].id >= 0:
                if self.tindex.slots[pos].key == h:
                    gid = self.tindex.slots[pos].id
                    t = self.tuples.data + gid * nk
                    found = True
                    for c in range(nk):
                        if t[c] != ids[c * n + k]:
                            found = False
                            break
                    if found:
                        break
                pos = (pos + 1) & self.tindex.mask
            if not found:
                gid = self._ngroups
                for c in range(nk):
                    if i64_push(&self.tuples, ids[c * n + k]) < 0:
                        return ST_NOMEM
                if hi_insert(&self.tindex, h, h, gid) == NULL or i64_push(first, i) < 0:
                    return ST_NOMEM
                self._ngroups += 1
            out[k] = gid
        return ST_OK

    cdef _keep_float_keys(self, list keys, firsts):
        """Float key columns compare -0.0 = 0.0 and NaN = NaN, so the value a
        group shows is its first row's, kept here per group."""
        cdef int c
        cdef Py_ssize_t j
        cdef const int64_t* p
        cdef cnp.ndarray bits
        for c in range(self.nk):
            if self.dicts[c].kind != KIND_FLOAT:
                continue
            bits = np.ascontiguousarray(
                np.asarray(keys[c][1])[firsts].astype(np.float64).view(np.int64))
            p = <const int64_t*>_data(bits)
            if i64_reserve(&self.graw[c], self.graw[c].size + bits.shape[0] + 16) < 0:
                raise MemoryError()
            for j in range(bits.shape[0]):
                i64_push(&self.graw[c], p[j])

    def column_ids(self, int c):
        """int64 id, within key column c's distinct values, of every group."""
        if c < 0 or c >= self.nk:
            raise IndexError("key column out of range")
        if self.nk == 1:
            return np.arange(self._ngroups, dtype=np.int64)
        return _i64_array(&self.tuples).reshape(self._ngroups, self.nk)[:, c].copy()

    def keys(self, int c):
        """Key values of every group for key column c.

        Returns:
            ``(values, validity)`` for int keys (int64) and float keys
            (float64, the first value seen of each group); ``(offsets, data,
            validity)`` for bytes keys. validity is uint8, 0 for the NULL
            group.
        """
        cdef KeyDict* d
        cdef cnp.ndarray ids, offsets, data, dict_offsets
        cdef const int64_t* pid
        cdef const int64_t* doff
        cdef int64_t* poff
        cdef uint8_t* pdata
        cdef Py_ssize_t g, ng = self._ngroups
        cdef int64_t start, length
        ids = self.column_ids(c)
        d = &self.dicts[c]
        validity = (ids != d.null_id).astype(np.uint8)
        if d.kind == KIND_FLOAT and self.nk > 1:
            return _i64_array(&self.graw[c]).view(np.float64), validity
        if d.kind != KIND_BYTES:
            values = _i64_array(&d.values)[ids]
            if d.kind == KIND_FLOAT:
                values = values.view(np.float64)
            return values, validity
        dict_offsets = _i64_array(&d.offsets)
        lengths = dict_offsets[ids + 1] - dict_offsets[ids]
        offsets = np.zeros(ng + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.empty(offsets[ng], dtype=np.uint8)
        pid = <const int64_t*>_data(ids)
        doff = <const int64_t*>_data(dict_offsets)
        poff = <int64_t*>_data(offsets)
        pdata = <uint8_t*>_data(data)
        with nogil:
            for g in range(ng):
                start = doff[pid[g]]
                length = poff[g + 1] - poff[g]
                if length > 0:
                    memcpy(pdata + poff[g], d.arena.data + start, <size_t>length)
        return offsets, data, validity


# -------------------------------------------------------------- accumulators

def group_count(int64_t[::1] counts, const int64_t[::1] gids, validity=None, selection=None):
    """counts[g] += 1 per selected row of group g (``count(*)``), or per
    selected row whose validity is nonzero (``count(col)``)."""
    cdef GroupRows rows
    cdef Py_ssize_t k, i, n = gids.shape[0], cap = counts.shape[0]
    cdef int64_t g
    cdef int status = ROW_TAKE
    if validity is None:
        with nogil:
            for k in range(n):
                if (k & INTERRUPT_MASK) == 0 and interrupted():
                    status = ROW_STOP
                    break
                g = gids[k]
                if <uint64_t>g >= <uint64_t>cap:
                    status = ROW_BAD
                    break
                counts[g] += 1
    else:
        keep = []
        rows = _group_rows(keep, gids, cap, validity, selection, len(validity))
        with nogil:
            for k in range(n):
                status = _group_row(&rows, k, &i, &g)
                if status == ROW_TAKE:
                    counts[g] += 1
                elif status != ROW_SKIP:
                    break
    _rows_end(status)


def group_sum_int(int64_t[::1] sums, int64_t[::1] carries, int64_t[::1] counts,
                  const int64_t[::1] gids, const int_t[::1] values, validity=None,
                  selection=None):
    """Exact integer sums: for each selected non-NULL row of group g,
    sums[g] += value modulo 2**64 and carries[g] counts the wraps (+1 up,
    -1 down), so the sum is carries[g] * 2**64 + sums[g]; counts[g] += 1.

    State arrays start at zero. Used for sum and avg of int2/int4/int8.
    """
    cdef GroupRows rows
    cdef Py_ssize_t k, i, n = gids.shape[0]
    cdef int64_t g, v
    cdef int status = ROW_TAKE
    keep = []
    rows = _group_rows(keep, gids, min(sums.shape[0], carries.shape[0], counts.shape[0]),
                       validity, selection, values.shape[0])
    with nogil:
        for k in range(n):
            status = _group_row(&rows, k, &i, &g)
            if status != ROW_TAKE:
                if status == ROW_SKIP:
                    continue
                break
            v = <int64_t>values[i]
            if orochi_add_overflow_i64(sums[g], v, &sums[g]):
                carries[g] += 1 if v >= 0 else -1
            counts[g] += 1
    _rows_end(status)


def group_sum_float(float_t[::1] sums, int64_t[::1] counts, const int64_t[::1] gids,
                    const float_t[::1] values, validity=None, selection=None):
    """Float sums in the argument's precision, as float4pl / float8pl.

    sums must start at -0.0. Raises NumericValueOutOfRangeError("value out of
    range: overflow") when two finite values add up to an infinity.
    """
    cdef GroupRows rows
    cdef Py_ssize_t k, i, n = gids.shape[0]
    cdef int64_t g
    cdef float_t s, v, t
    cdef int status = ROW_TAKE
    cdef bint overflow = False
    keep = []
    rows = _group_rows(keep, gids, min(sums.shape[0], counts.shape[0]), validity, selection,
                       values.shape[0])
    with nogil:
        for k in range(n):
            status = _group_row(&rows, k, &i, &g)
            if status != ROW_TAKE:
                if status == ROW_SKIP:
                    continue
                break
            v = values[i]
            s = sums[g]
            t = s + v
            if isinf(t) and not isinf(s) and not isinf(v):
                overflow = True
                break
            sums[g] = t
            counts[g] += 1
    _rows_end(status)
    if overflow:
        raise NumericValueOutOfRangeError("value out of range: overflow")


# avg(float4|float8) fast path. Postgres's float8_accum keeps N, Sx and Sxx
# (Youngs-Cramer) per group, but avg only returns Sx / N: Sxx serves only the
# overflow check ("value out of range: overflow" when finite inputs make Sx or
# Sxx infinite), nothing else reads it here. While every value folded into the
# aggregate so far has |x| <= AVG_FAST_BOUND (or is NaN), neither can become
# infinite for any count N <= 2^63, so a batch whose values all pass that test
# needs only N += 1 and Sx += x, in row order (Sx bit for bit as Postgres's).
#
# Bound (B = 1e100; rounding to nearest is monotone, and fl(s + a) == s once
# |s| >= 2^54 |a|, so a float sum of terms <= a stays below max(start, 2^55 a)):
#   |Sx|  <= 2^55 B                        (< 2^64 B)
#   |tmp| =  |x N - Sx| <= 2^63 B + 2^64 B  (< 2^65 B)
#   each Sxx term tmp^2 / (N (N - 1)) <= 2^129 B^2, so Sxx <= 2^184 B^2 < 2^190 B^2,
# and 2^190 B^2 ~ 1.6e257 is finite with a wide margin. NaN only makes Sx NaN
# (as in Postgres); infinities take the exact path.
#
# After such batches a group's Sxx is only known to lie in [sxx, AVG_SXX_BOUND]
# (sxx keeps the last exact value; Sxx never decreases). Should a later batch
# need the exact path, the caller passes sxx_hi = AVG_SXX_BOUND for those
# groups and the exact loop carries both ends with the same terms: rounding is
# monotone, so Postgres's Sxx stays between them, and the group is exact again
# as soon as both ends round to the same value (the first term large enough).
cdef double _AVG_FAST_BOUND = 1e100
AVG_FAST_BOUND = _AVG_FAST_BOUND
AVG_SXX_BOUND = 1.5692754338466701e257  # 2^190 * 1e200, rounded up


cdef bint _avg_batch_bounded(const float_t[::1] values, const uint8_t* valid,
                             Sel sel, Py_ssize_t n) noexcept nogil:
    """Whether every selected non-NULL value is NaN or |x| <= AVG_FAST_BOUND
    (``sel`` a copy: the caller's cursor stays where it is)."""
    cdef Py_ssize_t k, i
    cdef double v
    cdef double worst = 0.0
    if sel.kind == SEL_ALL and valid == NULL:
        for k in range(n):
            v = fabs(<double>values[k])
            worst = v if v > worst else worst  # NaN never compares greater
        return worst <= _AVG_FAST_BOUND
    for k in range(n):
        i = sel_next(&sel)
        if _present(valid, i):
            v = fabs(<double>values[i])
            if v > worst:
                worst = v  # NaN never compares greater
    return worst <= _AVG_FAST_BOUND


def group_avg_float(int64_t[::1] counts, double[::1] sx, double[::1] sxx,
                    const int64_t[::1] gids, const float_t[::1] values, validity=None,
                    selection=None, double[::1] sxx_hi=None, bint fast=False):
    """float8_accum's transition for avg(float4|float8): N (counts), Sx, Sxx
    (Youngs-Cramer), all starting at zero; the average is Sx / N.

    Raises NumericValueOutOfRangeError("value out of range: overflow") where
    Postgres does: finite inputs making Sx or Sxx infinite.

    fast: the caller vouches that every value folded in so far passed the
    bound (see AVG_FAST_BOUND); then a batch within the bound only counts and
    sums (Sxx is not updated) and True is returned; a batch beyond it is not
    folded in and False is returned (call again without fast). sxx_hi (when
    given): upper ends of Sxx for groups that went through fast batches
    (sxx_hi[g] > sxx[g]); the exact loop keeps both ends.
    """
    cdef GroupRows rows
    cdef Py_ssize_t k, i, n = gids.shape[0]
    cdef Py_ssize_t cap = min(counts.shape[0], sx.shape[0], sxx.shape[0])
    cdef int64_t g
    cdef double newval, n_old, N, Sx, Sxx, tmp, term, Hi
    cdef int status = ROW_TAKE
    cdef bint overflow = False, has_hi = sxx_hi is not None
    cdef bint bounded = False
    if has_hi:
        cap = min(cap, sxx_hi.shape[0])
    keep = []
    rows = _group_rows(keep, gids, cap, validity, selection, values.shape[0])
    with nogil:
        if fast:
            bounded = _avg_batch_bounded(values, rows.valid, rows.sel, n)
        if bounded and rows.sel.kind == SEL_ALL and rows.valid == NULL:
            for k in range(n):
                if (k & INTERRUPT_MASK) == 0 and interrupted():
                    status = ROW_STOP
                    break
                g = gids[k]
                if <uint64_t>g >= <uint64_t>cap:
                    status = ROW_BAD
                    break
                counts[g] += 1
                sx[g] += <double>values[k]
        elif bounded:
            for k in range(n):
                status = _group_row(&rows, k, &i, &g)
                if status == ROW_TAKE:
                    counts[g] += 1
                    sx[g] += <double>values[i]
                elif status != ROW_SKIP:
                    break
        elif not fast:
            for k in range(n):
                status = _group_row(&rows, k, &i, &g)
                if status != ROW_TAKE:
                    if status == ROW_SKIP:
                        continue
                    break
                newval = <double>values[i]
                n_old = <double>counts[g]
                N = n_old + 1.0
                Sx = sx[g] + newval
                Sxx = sxx[g]
                if n_old > 0.0:
                    tmp = newval * N - Sx
                    term = tmp * tmp / (N * n_old)
                    if has_hi and sxx_hi[g] > Sxx:
                        # Sxx is only known to lie in [sxx, sxx_hi]: an overflow
                        # of the upper end alone is taken as Postgres's (it would
                        # need both ends to straddle DBL_MAX's rounding edge)
                        Hi = sxx_hi[g] + term
                        Sxx = Sxx + term
                        if isinf(Hi) and not isinf(Sx) and not isinf(sx[g]) and not isinf(newval):
                            overflow = True
                            break
                        sxx_hi[g] = Hi
                    else:
                        Sxx = Sxx + term
                    if isinf(Sx) or isinf(Sxx):
                        if not isinf(sx[g]) and not isinf(newval):
                            overflow = True
                            break
                        Sxx = NAN
                elif isnan(newval) or isinf(newval):
                    Sxx = NAN
                counts[g] += 1
                sx[g] = Sx
                sxx[g] = Sxx
                if has_hi and not sxx_hi[g] > Sxx:
                    sxx_hi[g] = Sxx
    _rows_end(status)
    if overflow:
        raise NumericValueOutOfRangeError("value out of range: overflow")
    return bounded


cdef inline bint _pg_gt(double a, double b) noexcept nogil:
    """float8_gt: NaN sorts above everything and equals NaN."""
    if isnan(a):
        return not isnan(b)
    if isnan(b):
        return False
    return a > b


cdef inline bint _pg_lt(double a, double b) noexcept nogil:
    if isnan(a):
        return False
    if isnan(b):
        return True
    return a < b


def group_minmax(minmax_t[::1] state, int64_t[::1] counts, const int64_t[::1] gids,
                 const minmax_t[::1] values, bint is_max, validity=None, selection=None):
    """min (is_max false) or max of each group's selected non-NULL values into
    state; counts[g] (starting at 0) says whether state[g] holds a value.

    Floats follow Postgres's float order (NaN largest) and, on ties, the later
    row wins, as in float8larger/float8smaller.
    """
    cdef GroupRows rows
    cdef Py_ssize_t k, i, n = gids.shape[0]
    cdef int64_t g
    cdef minmax_t v
    cdef int status = ROW_TAKE
    keep = []
    rows = _group_rows(keep, gids, min(state.shape[0], counts.shape[0]), validity, selection,
                       values.shape[0])
    with nogil:
        for k in range(n):
            status = _group_row(&rows, k, &i, &g)
            if status != ROW_TAKE:
                if status == ROW_SKIP:
                    continue
                break
            v = values[i]
            if counts[g] == 0:
                state[g] = v
            elif minmax_t is float or minmax_t is double:
                if is_max:
                    if not _pg_gt(state[g], v):
                        state[g] = v
                elif not _pg_lt(state[g], v):
                    state[g] = v
            elif is_max:
                if v > state[g]:
                    state[g] = v
            elif v < state[g]:
                state[g] = v
            counts[g] += 1
    _rows_end(status)


def group_bool(uint8_t[::1] state, int64_t[::1] counts, const int64_t[::1] gids,
               const uint8_t[::1] values, bint is_and, validity=None, selection=None):
    """bool_and (is_and) or bool_or of each group's non-NULL values into
    state (0/1); counts[g] (starting at 0) says whether state[g] is set."""
    cdef GroupRows rows
    cdef Py_ssize_t k, i, n = gids.shape[0]
    cdef int64_t g
    cdef uint8_t b
    cdef int status = ROW_TAKE
    keep = []
    rows = _group_rows(keep, gids, min(state.shape[0], counts.shape[0]), validity, selection,
                       values.shape[0])
    with nogil:
        for k in range(n):
            status = _group_row(&rows, k, &i, &g)
            if status != ROW_TAKE:
                if status == ROW_SKIP:
                    continue
                break
            b = 1 if values[i] != 0 else 0
            if counts[g] == 0:
                state[g] = b
            elif is_and:
                state[g] = state[g] & b
            else:
                state[g] = state[g] | b
            counts[g] += 1
    _rows_end(status)


# ------------------------------------------------------------ count(DISTINCT)

cdef struct PairSlot:
    int64_t g             # -1: empty
    uint64_t x


cdef class DistinctCounter:
    """count(DISTINCT col) per group: a hash set of (group, value) pairs.

    Args:
        kind: ``"int"``, ``"float"`` or ``"bytes"``, as for GroupTable keys.
    """

    cdef KeyDict values       # bytes: value -> id (the pair holds the id)
    cdef int kind
    cdef PairSlot* slots
    cdef uint64_t mask
    cdef Py_ssize_t size

    def __cinit__(self, kind):
        cdef Py_ssize_t i
        if kind not in _KINDS:
            raise ValueError(f"kind must be 'int', 'float' or 'bytes', not {kind!r}")
        self.kind = _KINDS[kind]
        if kd_init(&self.values, self.kind) < 0:
            raise MemoryError()
        self.slots = <PairSlot*>realloc(NULL, 16 * sizeof(PairSlot))
        if self.slots == NULL:
            raise MemoryError()
        for i in range(16):
            self.slots[i].g = -1
        self.mask = 15

    def __dealloc__(self):
        kd_free(&self.values)
        free(self.slots)

    @property
    def size(self) -> int:
        """Distinct (group, value) pairs held."""
        return self.size

    cdef int _grow(self) noexcept nogil:
        cdef uint64_t newmask = self.mask * 2 + 1, pos
        cdef Py_ssize_t i
        cdef PairSlot* slots = <PairSlot*>realloc(NULL, <size_t>(newmask + 1) * sizeof(PairSlot))
        if slots == NULL:
            return -1
        for i in range(<Py_ssize_t>newmask + 1):
            slots[i].g = -1
        for i in range(<Py_ssize_t>self.mask + 1):
            if self.slots[i].g >= 0:
                pos = orochi_mix64(self.slots[i].x ^ orochi_mix64(<uint64_t>self.slots[i].g)) & newmask
                while slots[pos].g >= 0:
                    pos = (pos + 1) & newmask
                slots[pos] = self.slots[i]
        free(self.slots)
        self.slots = slots
        self.mask = newmask
        return 0

    cdef int _add(self, int64_t g, uint64_t x) noexcept nogil:
        """1 if (g, x) is new, 0 if already present, -1 out of memory."""
        cdef uint64_t pos
        if (self.size + 1) * 2 > <Py_ssize_t>self.mask + 1:
            if self._grow() < 0:
                return -1
        pos = orochi_mix64(x ^ orochi_mix64(<uint64_t>g)) & self.mask
        while self.slots[pos].g >= 0:
            if self.slots[pos].g == g and self.slots[pos].x == x:
                return 0
            pos = (pos + 1) & self.mask
        self.slots[pos].g = g
        self.slots[pos].x = x
        self.size += 1
        return 1

    def update(self, int64_t[::1] counts, const int64_t[::1] gids, column, selection=None):
        """counts[g] += 1 for every selected non-NULL value new to group g.

        Args:
            counts: per-group distinct counts (starting at 0).
            gids: group id per selected row.
            column: a key tuple (``("fixed", ...)``, ``("text", ...)`` or
                ``("dict", ...)``) of the aggregated column.
            selection: None, a row mask or row indices.
        """
        cdef KeyInput ki
        cdef Sel sel
        cdef Py_ssize_t nrows = -1, n = gids.shape[0], cap = counts.shape[0]
        cdef int status = ST_OK
        cdef int64_t* pcounts = NULL
        cdef const int64_t* pgids = NULL
        keep = _key_input(&ki, column, self.kind, &nrows)
        keep_sel = _sel_init(&sel, selection, nrows)
        _check_gids(n, &sel)
        if cap:
            pcounts = &counts[0]
        if n:
            pgids = &gids[0]
        with nogil:
            status = self._update(pcounts, cap, pgids, &ki, sel)
        if status == 1:
            _raise_gid()
        _raise_status(status)

    cdef int _update(self, int64_t* counts, Py_ssize_t cap, const int64_t* gids, KeyInput* ki,
                     Sel sel) noexcept nogil:
        cdef Py_ssize_t k, i
        cdef int64_t g, id
        cdef uint64_t x, raw
        cdef bint created
        cdef int r
        cdef GroupRows rows
        rows.sel, rows.valid, rows.gids, rows.cap = sel, ki.valid, gids, cap
        for k in range(sel.count):
            r = _group_row(&rows, k, &i, &g)
            if r != ROW_TAKE:
                if r == ROW_SKIP:
                    continue
                return ST_INTERRUPTED if r == ROW_STOP else 1
            if ki.form != FORM_FIXED:
                id = _bytes_id(&self.values, ki, i, &created)
                if id < 0:
                    return ST_NOMEM if id == -1 else ST_BADCODE
                x = <uint64_t>id
            elif ki.dtype == DT_BOOL:
                x = _fixed_key(<const uint8_t*>ki.values, i, &raw)
            elif ki.dtype == DT_I16:
                x = _fixed_key(<const int16_t*>ki.values, i, &raw)
            elif ki.dtype == DT_I32:
                x = _fixed_key(<const int32_t*>ki.values, i, &raw)
            elif ki.dtype == DT_I64:
                x = _fixed_key(<const int64_t*>ki.values, i, &raw)
            elif ki.dtype == DT_F32:
                x = _fixed_key(<const float*>ki.values, i, &raw)
            else:
                x = _fixed_key(<const double*>ki.values, i, &raw)
            r = self._add(g, x)
            if r < 0:
                return ST_NOMEM
            counts[g] += r
        return ST_OK


# ------------------------------------------------ count(DISTINCT) by bitmap


cdef int _bitmap_fill(uint64_t* bits, uint64_t nbits, int64_t lo, const int_t* values,
                      const uint8_t* valid, Sel* sel, uint8_t* outside, Py_ssize_t* added,
                      Py_ssize_t* nout) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef uint64_t off, m
    for k in range(sel.count):
        if (k & INTERRUPT_MASK) == 0 and interrupted():
            return ST_INTERRUPTED
        i = sel_next(sel)
        if not _present(valid, i):
            continue
        # the difference exact in unsigned arithmetic once v >= lo
        off = <uint64_t>(<int64_t>values[i]) - <uint64_t>lo
        if <int64_t>values[i] < lo or off >= nbits:
            outside[i] = 1
            nout[0] += 1
            continue
        m = (<uint64_t>1) << (off & 63)
        if (bits[off >> 6] & m) == 0:
            bits[off >> 6] |= m
            added[0] += 1
    return ST_OK


def distinct_bitmap_update(uint64_t[::1] bits, int64_t lo, const int_t[::1] values, validity=None,
                           selection=None):
    """count(DISTINCT) of integers in a small range: bit ``v - lo`` of
    ``bits`` set for every selected non-NULL value ``v`` with
    ``lo <= v < lo + 64 * len(bits)``.

    Args:
        bits: the bitmap (uint64 words, bit ``j`` of word ``w`` is value
            ``lo + 64 * w + j``), updated in place.
        lo: the value of bit 0.
        values: int16, int32 or int64 values (dates as int32 days).
        validity: None or per-row presence.
        selection: None, a row mask or row indices.

    Returns:
        ``(added, outside)``: how many bits were newly set (values not seen
        before), and None or a uint8 mask of the selected non-NULL rows whose
        values lie outside the bitmap's range (left for a hash set).
    """
    cdef Sel sel
    cdef const uint8_t* valid
    cdef Py_ssize_t nrows = values.shape[0], added = 0, nout = 0
    cdef uint64_t nbits = <uint64_t>bits.shape[0] * 64
    cdef int status
    cdef uint64_t dummy = 0
    cdef uint64_t* pbits = &dummy
    cdef const int_t* pvalues = NULL
    cdef cnp.ndarray outside = np.zeros(nrows, dtype=np.uint8)
    cdef uint8_t* pout = <uint8_t*>_data(outside)
    keep_valid = _valid_init(&valid, validity, nrows)
    keep_sel = _sel_init(&sel, selection, nrows)
    if bits.shape[0]:
        pbits = &bits[0]
    if nrows:
        pvalues = &values[0]
    with nogil:
        status = _bitmap_fill(pbits, nbits, lo, pvalues, valid, &sel, pout, &added, &nout)
    _raise_status(status)
    return added, (outside if nout else None)


# ------------------------------------------------ GROUP BY a small integer range


cdef int _dense_fill(int64_t* out, int64_t lo, uint64_t nslots, const int_t* values,
                     const uint8_t* valid, Sel* sel, uint8_t* seen, Py_ssize_t* nout) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef uint64_t off
    for k in range(sel.count):
        if (k & INTERRUPT_MASK) == 0 and interrupted():
            return ST_INTERRUPTED
        i = sel_next(sel)
        if not _present(valid, i):
            out[k] = <int64_t>nslots
            seen[nslots] = 1
            continue
        # the difference exact in unsigned arithmetic once v >= lo
        off = <uint64_t>(<int64_t>values[i]) - <uint64_t>lo
        if <int64_t>values[i] < lo or off >= nslots:
            out[k] = -1
            nout[0] += 1
            continue
        out[k] = <int64_t>off
        seen[off] = 1
    return ST_OK


def dense_group_ids(const int_t[::1] values, int64_t lo, Py_ssize_t nslots, uint8_t[::1] seen,
                    validity=None, selection=None):
    """Group ids of one integer key whose values mostly lie in a small range
    (GROUP BY a column whose range the statistics give), without hashing.

    Args:
        values: int16, int32 or int64 key values.
        lo: the value of group 0.
        nslots: the range's size: values ``lo .. lo + nslots - 1`` are
            groups ``0 .. nslots - 1``; NULL is group ``nslots``.
        seen: uint8, at least ``nslots + 1`` entries: set to 1 for every
            group a row falls in.
        validity: None or per-row presence.
        selection: None, a row mask or row indices.

    Returns:
        ``(gids, outside)``: int64 group id per selected row, -1 for a value
        outside the range (for a hash table to group); how many are -1.
    """
    cdef Sel sel
    cdef const uint8_t* valid
    cdef Py_ssize_t nrows = values.shape[0], nout = 0
    cdef int status
    cdef const int_t* pvalues = NULL
    cdef cnp.ndarray gids
    cdef int64_t* pgids
    if nslots < 0 or seen.shape[0] < nslots + 1:
        raise ValueError("seen needs nslots + 1 entries")
    keep_valid = _valid_init(&valid, validity, nrows)
    keep_sel = _sel_init(&sel, selection, nrows)
    gids = np.empty(sel.count, dtype=np.int64)
    pgids = <int64_t*>_data(gids)
    if nrows:
        pvalues = &values[0]
    with nogil:
        status = _dense_fill(pgids, lo, <uint64_t>nslots, pvalues, valid, &sel, &seen[0], &nout)
    _raise_status(status)
    return gids, nout


# ------------------------------------------------------------ text min / max

cdef inline int _bytes_cmp(const uint8_t* a, int64_t la, const uint8_t* b, int64_t lb) noexcept nogil:
    """memcmp order, a proper prefix first: the "C" collation."""
    cdef int c = 0
    cdef int64_t m = la if la < lb else lb
    if m > 0:
        c = memcmp(a, b, <size_t>m)
    if c != 0:
        return c
    return (la > lb) - (la < lb)


cdef inline int64_t _row_bytes(KeyInput* ki, Py_ssize_t i, const uint8_t** p) noexcept nogil:
    """Bytes of row i of a text or dictionary column; -1 for a bad code."""
    cdef int64_t code
    if ki.form == FORM_TEXT:
        p[0] = ki.data + ki.offsets[i]
        return ki.offsets[i + 1] - ki.offsets[i]
    code = (<const int32_t*>ki.values)[i]
    if code < 0 or code >= ki.ndict:
        return -1
    p[0] = ki.data + ki.offsets[code]
    return ki.offsets[code + 1] - ki.offsets[code]


cdef class TextExtremes:
    """min or max of text per group by byte order (the "C" collation).

    Each batch first finds every touched group's best row in place, then
    copies at most one value per group into an arena that is compacted when
    replaced values make up most of it.

    Args:
        is_max: max if true, else min.
    """

    cdef bint is_max
    cdef I64Vec starts        # per group: arena offset of the value
    cdef I64Vec lengths       # per group: its length, -1 = none yet
    cdef I64Vec best          # per group: best batch row this batch, -1
    cdef U8Vec arena
    cdef int64_t live

    def __cinit__(self, bint is_max):
        self.is_max = is_max

    def __dealloc__(self):
        free(self.starts.data)
        free(self.lengths.data)
        free(self.best.data)
        free(self.arena.data)

    cdef int _grow(self, Py_ssize_t ngroups) noexcept nogil:
        if (i64_resize(&self.starts, ngroups, 0) < 0 or i64_resize(&self.lengths, ngroups, -1) < 0
                or i64_resize(&self.best, ngroups, -1) < 0):
            return -1
        return 0

    def update(self, const int64_t[::1] gids, Py_ssize_t ngroups, column, selection=None):
        """Fold a batch in.

        Args:
            gids: group id per selected row (all below ngroups).
            ngroups: groups so far.
            column: ``("text", offsets, data, validity)`` or
                ``("dict", codes, dict_offsets, dict_data, validity)``.
            selection: None, a row mask or row indices.
        """
        cdef KeyInput ki
        cdef Sel sel
        cdef Py_ssize_t nrows = -1, n = gids.shape[0]
        cdef int status
        cdef const int64_t* pgids = NULL
        keep = _key_input(&ki, column, KIND_BYTES, &nrows)
        if ki.form == FORM_FIXED:
            raise ValueError("TextExtremes needs a text or dictionary column")
        keep_sel = _sel_init(&sel, selection, nrows)
        _check_gids(n, &sel)
        if n:
            pgids = &gids[0]
        with nogil:
            status = self._grow(ngroups)
            if status == 0:
                status = self._update(pgids, ngroups, &ki, sel)
        if status == 1:
            _raise_gid()
        _raise_status(status)

    cdef int _update(self, const int64_t* gids, Py_ssize_t ngroups, KeyInput* ki,
                     Sel sel) noexcept nogil:
        cdef Py_ssize_t k, i, j
        cdef int64_t g, len_new, len_best, length
        cdef const uint8_t* p
        cdef const uint8_t* q
        cdef int c, sign = 1 if self.is_max else -1
        cdef I64Vec touched
        cdef int status = ST_OK, r
        cdef GroupRows rows
        rows.sel, rows.valid, rows.gids, rows.cap = sel, ki.valid, gids, ngroups
        memset(&touched, 0, sizeof(I64Vec))
        for k in range(sel.count):
            r = _group_row(&rows, k, &i, &g)
            if r != ROW_TAKE:
                if r == ROW_SKIP:
                    continue
                status = ST_INTERRUPTED if r == ROW_STOP else 1  # best[] is reset below
                break
            len_new = _row_bytes(ki, i, &p)
            if len_new < 0:
                status = ST_BADCODE
                break
            if self.best.data[g] < 0:
                if i64_push(&touched, g) < 0:
                    status = ST_NOMEM
                    break
                self.best.data[g] = i
            else:
                len_best = _row_bytes(ki, self.best.data[g], &q)
                if _bytes_cmp(p, len_new, q, len_best) * sign > 0:
                    self.best.data[g] = i
        for j in range(touched.size):
            g = touched.data[j]
            if status == ST_OK:
                len_new = _row_bytes(ki, self.best.data[g], &p)
                length = self.lengths.data[g]
                if length < 0 or _bytes_cmp(p, len_new, self.arena.data + self.starts.data[g],
                                            length) * sign > 0:
                    self.starts.data[g] = self.arena.size
                    if u8_append(&self.arena, p, len_new) < 0:
                        status = ST_NOMEM
                    else:
                        self.live += len_new - (length if length > 0 else 0)
                        self.lengths.data[g] = len_new
            self.best.data[g] = -1
        free(touched.data)
        if status == ST_OK and self.arena.size > 4 * self.live + 65536:
            status = self._compact()
        return status

    cdef int _compact(self) noexcept nogil:
        """Copy the live values into a fresh arena."""
        cdef U8Vec fresh
        cdef Py_ssize_t g
        cdef int64_t start
        memset(&fresh, 0, sizeof(U8Vec))
        for g in range(self.lengths.size):
            if self.lengths.data[g] >= 0:
                start = fresh.size
                if u8_append(&fresh, self.arena.data + self.starts.data[g], self.lengths.data[g]) < 0:
                    free(fresh.data)
                    return ST_NOMEM
                self.starts.data[g] = start
        free(self.arena.data)
        self.arena = fresh
        return ST_OK

    @property
    def arena_bytes(self) -> int:
        return self.arena.size

    def result(self, Py_ssize_t ngroups):
        """(offsets, data, validity) of the result for groups 0..ngroups-1."""
        cdef cnp.ndarray offsets, data, validity
        cdef int64_t* poff
        cdef uint8_t* pdata
        cdef uint8_t* pvalid
        cdef Py_ssize_t g
        cdef int64_t length, total = 0
        if self._grow(ngroups) < 0:
            raise MemoryError()
        offsets = np.zeros(ngroups + 1, dtype=np.int64)
        validity = np.zeros(ngroups, dtype=np.uint8)
        poff = <int64_t*>_data(offsets)
        pvalid = <uint8_t*>_data(validity)
        for g in range(ngroups):
            length = self.lengths.data[g]
            if length >= 0:
                pvalid[g] = 1
                total += length
            poff[g + 1] = total
        data = np.empty(total, dtype=np.uint8)
        pdata = <uint8_t*>_data(data)
        with nogil:
            for g in range(ngroups):
                length = poff[g + 1] - poff[g]
                if length > 0:
                    memcpy(pdata + poff[g], self.arena.data + self.starts.data[g], <size_t>length)
        return offsets, data, validity


# --------------------------------------------------------------- finalization

def finalize_sum_int8(int64_t[::1] out, uint8_t[::1] validity, const int64_t[::1] sums,
                      const int64_t[::1] carries, const int64_t[::1] counts):
    """sum(int2|int4) as int8: out[g] = the exact sum, validity[g] = any rows.

    Raises NumericValueOutOfRangeError("bigint out of range") if a sum does
    not fit in int64.
    """
    cdef Py_ssize_t g, n = counts.shape[0]
    cdef bint overflow = False
    if min(out.shape[0], validity.shape[0], sums.shape[0], carries.shape[0]) < n:
        raise ValueError("arrays shorter than counts")
    with nogil:
        for g in range(n):
            if counts[g] == 0:
                out[g] = 0
                validity[g] = 0
            elif carries[g] != 0:
                overflow = True
                break
            else:
                out[g] = sums[g]
                validity[g] = 1
    if overflow:
        raise NumericValueOutOfRangeError("bigint out of range")


def finalize_avg_float(double[::1] out, uint8_t[::1] validity, const int64_t[::1] counts,
                       const double[::1] sx):
    """avg(float4|float8) as float8_avg finishes it: Sx / N, NULL for N = 0."""
    cdef Py_ssize_t g, n = counts.shape[0]
    if min(out.shape[0], validity.shape[0], sx.shape[0]) < n:
        raise ValueError("arrays shorter than counts")
    with nogil:
        for g in range(n):
            if counts[g] == 0:
                out[g] = 0.0
                validity[g] = 0
            else:
                out[g] = sx[g] / <double>counts[g]
                validity[g] = 1


def _numeric_text(const int64_t[::1] sums, const int64_t[::1] carries,
                  const int64_t[::1] counts, bint avg):
    cdef Py_ssize_t g, n = counts.shape[0], pos = 0
    cdef cnp.ndarray offsets, data, validity
    cdef int64_t* poff
    cdef uint8_t* pvalid
    cdef char* pdata
    if min(sums.shape[0], carries.shape[0]) < n:
        raise ValueError("arrays shorter than counts")
    offsets = np.zeros(n + 1, dtype=np.int64)
    validity = np.zeros(n, dtype=np.uint8)
    data = np.empty(n * 96 + 1, dtype=np.uint8)
    poff = <int64_t*>_data(offsets)
    pvalid = <uint8_t*>_data(validity)
    pdata = <char*>_data(data)
    with nogil:
        for g in range(n):
            if counts[g] > 0:
                pvalid[g] = 1
                if avg:
                    pos += orochi_numeric_avg_text(sums[g], carries[g], counts[g], pdata + pos)
                else:
                    pos += orochi_int128_text(sums[g], carries[g], pdata + pos)
            poff[g + 1] = pos
    return offsets, data[:pos].copy(), validity


def numeric_sum_text(const int64_t[::1] sums, const int64_t[::1] carries,
                     const int64_t[::1] counts):
    """sum(int8) as numeric text (exact, scale 0) per group.

    Returns (offsets, data, validity), validity 0 where counts is 0.
    """
    return _numeric_text(sums, carries, counts, False)


def numeric_avg_text(const int64_t[::1] sums, const int64_t[::1] carries,
                     const int64_t[::1] counts):
    """avg(int2|int4|int8) as numeric text per group, digit for digit as
    Postgres prints it (see the module docstring).

    Returns (offsets, data, validity), validity 0 where counts is 0.
    """
    return _numeric_text(sums, carries, counts, True)
