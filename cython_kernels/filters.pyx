# Filter kernels: a column compared with constants, into a row mask.
#
# Conventions:
# * A mask is uint8, one byte per row, 1 where the row passes. Kernels read any
#   nonzero byte of an existing mask as 1 and write only 0 and 1.
# * Every kernel writes into a caller-allocated `out` (one byte per row) and
#   `combine` says how the result meets what `out` holds: COMBINE_SET
#   (overwrite), COMBINE_AND or COMBINE_OR. Quals are ANDed, so a scan
#   evaluates its first qual with SET and the others with AND.
# * `validity` is uint8 per row, nonzero where a value is present, or None when
#   no row is NULL. A NULL row never passes a comparison (in SQL it yields NULL,
#   which WHERE treats as false); what is stored for a NULL row is read but
#   never decides anything.
# * Floats follow PostgreSQL, not IEEE 754: NaN = NaN, NaN is greater than
#   every other value, -0.0 = 0.0 (see _compare.pxd).
# * A constant must be exactly representable in the column's dtype (a float32
#   column takes only float32 values, an int16 column only int16 values):
#   ValueError / OverflowError otherwise. Turning a query's constant into the
#   column's domain (int4 col < 2.5 is col <= 2) is orochi_fdw.query.predicates'
#   job, not the kernels'.
# * Variable-width columns are int64 offsets[n + 1] into a uint8 data buffer
#   (the bridge's wire layout); offsets are checked as they are read.
# * Sizes are validated before `with nogil:`; rows are processed in blocks of
#   BLOCK so that each comparison loop is a plain loop the compiler vectorizes,
#   and validity and combining are separate passes over a block in L1.
# * The baseline x86-64 instruction set (SSE2) has no 64-bit integer compare
#   and compilers narrow wide compare masks to bytes slowly, so the comparison
#   loops of 32- and 64-bit columns (and the mask count) are small C functions
#   below: an AVX2 version picked at run time when the CPU has it (32-bit
#   compare masks packed to bytes; for 64-bit, movemask and a table turn four
#   lanes into four bytes), else plain loops also built for SSE4.2 (GCC's
#   target_clones). Every other loop is Cython.

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp, memcpy, memset

from _bitio cimport load_le64
from _interrupt cimport bind_interrupt_flag, interrupted, raise_interrupt
from _compare cimport (cmp_t, pg_eq, pg_lt, pg_isnan, CMP_EQ, CMP_NE, CMP_LT,
                       CMP_LE, CMP_GT, CMP_GE, CMB_SET, CMB_AND, CMB_OR)

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define OROCHI_X86_DISPATCH 1
    #define OROCHI_SIMD_CLONES __attribute__((target_clones("avx2", "sse4.2", "default")))
    #else
    #define OROCHI_X86_DISPATCH 0
    #define OROCHI_SIMD_CLONES
    #endif

    /* t[j] = v[j] <op> c with Postgres's float semantics; op as in
       _compare.pxd, plus 6 is-NaN, 7 not-NaN, 8 true, 9 false. */
    #define OROCHI_CMP_LOOPS(NAME, T, IS_FLOAT)                                   \
    OROCHI_SIMD_CLONES static void                                                \
    NAME(const T *__restrict v, Py_ssize_t n, int op, T c, uint8_t *__restrict t) \
    {                                                                             \
        Py_ssize_t j;                                                             \
        switch (op) {                                                             \
        case 0: for (j = 0; j < n; j++) t[j] = v[j] == c; break;                  \
        case 1: for (j = 0; j < n; j++) t[j] = v[j] != c; break;                  \
        case 2: for (j = 0; j < n; j++) t[j] = v[j] < c; break;                   \
        case 3: for (j = 0; j < n; j++) t[j] = v[j] <= c; break;                  \
        case 4: for (j = 0; j < n; j++)                                           \
                    t[j] = (v[j] > c) | (IS_FLOAT && v[j] != v[j]); break;        \
        case 5: for (j = 0; j < n; j++)                                           \
                    t[j] = (v[j] >= c) | (IS_FLOAT && v[j] != v[j]); break;       \
        case 6: for (j = 0; j < n; j++) t[j] = v[j] != v[j]; break;               \
        case 7: for (j = 0; j < n; j++) t[j] = v[j] == v[j]; break;               \
        case 8: memset(t, 1, (size_t) n); break;                                  \
        default: memset(t, 0, (size_t) n); break;                                 \
        }                                                                         \
    }

    OROCHI_CMP_LOOPS(orochi_cmp_i32_generic, int32_t, 0)
    OROCHI_CMP_LOOPS(orochi_cmp_i64_generic, int64_t, 0)
    OROCHI_CMP_LOOPS(orochi_cmp_f32_generic, float, 1)
    OROCHI_CMP_LOOPS(orochi_cmp_f64_generic, double, 1)

    #if OROCHI_X86_DISPATCH
    #include <immintrin.h>

    /* compare bits of up to 8 lanes (movemask) -> 8 mask bytes of 0 / 1;
       the 64-bit types use 4 of them */
    static uint64_t orochi_bits_to_bytes[256];
    static int orochi_avx2 = -1;

    /* Kernels run without the GIL: the first callers may race here, which
       is harmless (they write the same table), and the release / acquire
       pair makes the table visible before the flag that says it is ready. */
    static int orochi_use_avx2(void)
    {
        int ready = __atomic_load_n(&orochi_avx2, __ATOMIC_ACQUIRE);
        if (ready < 0) {
            for (int b = 0; b < 256; b++) {
                uint64_t w = 0;
                for (int k = 0; k < 8; k++)
                    if (b & (1 << k))
                        w |= (uint64_t) 1 << (8 * k);
                orochi_bits_to_bytes[b] = w;
            }
            __builtin_cpu_init();
            /* OROCHI_KERNELS_NO_AVX2 (any value) forces the portable loops:
               the tests use it to check both paths on one machine. */
            ready = __builtin_cpu_supports("avx2") && getenv("OROCHI_KERNELS_NO_AVX2") == NULL;
            __atomic_store_n(&orochi_avx2, ready, __ATOMIC_RELEASE);
        }
        return ready;
    }

    /* Compilers narrow wide compare masks to bytes through long shuffle
       chains; movemask and a table do it in two instructions. LANES values
       per step, the step's compare as MASK_EXPR over x, FLIP inverts. */
    #define OROCHI_AVX2_LOOP(LANES, LOAD, MASK_EXPR, FLIP)                         \
        for (; j + LANES <= n; j += LANES) {                                       \
            LOAD;                                                                  \
            unsigned bits = (unsigned) (MASK_EXPR) ^ (FLIP);                       \
            memcpy(t + j, &orochi_bits_to_bytes[bits], LANES);                     \
        }

    #define OROCHI_INT_AVX2(NAME, T, LANES, SET1, CMPEQ, CMPGT, BITS, GENERIC)     \
    __attribute__((target("avx2"))) static void                                   \
    NAME(const T *v, Py_ssize_t n, int op, T c, uint8_t *t)                        \
    {                                                                              \
        const __m256i cv = SET1(c);                                                \
        const unsigned all = (1u << LANES) - 1;                                    \
        Py_ssize_t j = 0;                                                          \
        switch (op) {                                                              \
        case 0: OROCHI_AVX2_LOOP(LANES, __m256i x = _mm256_loadu_si256((const __m256i *) (v + j)), BITS(CMPEQ(x, cv)), 0) break;       \
        case 1: OROCHI_AVX2_LOOP(LANES, __m256i x = _mm256_loadu_si256((const __m256i *) (v + j)), BITS(CMPEQ(x, cv)), all) break;     \
        case 2: OROCHI_AVX2_LOOP(LANES, __m256i x = _mm256_loadu_si256((const __m256i *) (v + j)), BITS(CMPGT(cv, x)), 0) break;       \
        case 3: OROCHI_AVX2_LOOP(LANES, __m256i x = _mm256_loadu_si256((const __m256i *) (v + j)), BITS(CMPGT(x, cv)), all) break;     \
        case 4: OROCHI_AVX2_LOOP(LANES, __m256i x = _mm256_loadu_si256((const __m256i *) (v + j)), BITS(CMPGT(x, cv)), 0) break;       \
        case 5: OROCHI_AVX2_LOOP(LANES, __m256i x = _mm256_loadu_si256((const __m256i *) (v + j)), BITS(CMPGT(cv, x)), all) break;     \
        default: break;                                                            \
        }                                                                          \
        if (j < n)                                                                 \
            GENERIC(v + j, n - j, op, c, t + j);                                   \
    }
    
    #define OROCHI_BITS_64(m) _mm256_movemask_pd(_mm256_castsi256_pd(m))
    OROCHI_INT_AVX2(orochi_cmp_i64_avx2, int64_t, 4, _mm256_set1_epi64x, _mm256_cmpeq_epi64,
                    _mm256_cmpgt_epi64, OROCHI_BITS_64, orochi_cmp_i64_generic)

    /* Floats: unordered predicates make NaN pass >, >= and <> as in Postgres. */
    #define OROCHI_FLOAT_AVX2(NAME, T, LANES, VEC, SET1, LOADU, CMP, MOVEMASK, GENERIC) \
    __attribute__((target("avx2"))) static void                                   \
    NAME(const T *v, Py_ssize_t n, int op, T c, uint8_t *t)                        \
    {                                                                              \
        const VEC cv = SET1(c);                                                    \
        Py_ssize_t j = 0;                                                          \
        switch (op) {                                                              \
        case 0: OROCHI_AVX2_LOOP(LANES, VEC x = LOADU(v + j), MOVEMASK(CMP(x, cv, _CMP_EQ_OQ)), 0) break;   \
        case 1: OROCHI_AVX2_LOOP(LANES, VEC x = LOADU(v + j), MOVEMASK(CMP(x, cv, _CMP_NEQ_UQ)), 0) break;  \
        case 2: OROCHI_AVX2_LOOP(LANES, VEC x = LOADU(v + j), MOVEMASK(CMP(x, cv, _CMP_LT_OQ)), 0) break;   \
        case 3: OROCHI_AVX2_LOOP(LANES, VEC x = LOADU(v + j), MOVEMASK(CMP(x, cv, _CMP_LE_OQ)), 0) break;   \
        case 4: OROCHI_AVX2_LOOP(LANES, VEC x = LOADU(v + j), MOVEMASK(CMP(x, cv, _CMP_NLE_UQ)), 0) break;  \
        case 5: OROCHI_AVX2_LOOP(LANES, VEC x = LOADU(v + j), MOVEMASK(CMP(x, cv, _CMP_NLT_UQ)), 0) break;  \
        case 6: OROCHI_AVX2_LOOP(LANES, VEC x = LOADU(v + j), MOVEMASK(CMP(x, x, _CMP_UNORD_Q)), 0) break;  \
        case 7: OROCHI_AVX2_LOOP(LANES, VEC x = LOADU(v + j), MOVEMASK(CMP(x, x, _CMP_ORD_Q)), 0) break;    \
        default: break;                                                            \
        }                                                                          \
        if (j < n)                                                                 \
            GENERIC(v + j, n - j, op, c, t + j);                                   \
    }

    OROCHI_FLOAT_AVX2(orochi_cmp_f64_avx2, double, 4, __m256d, _mm256_set1_pd, _mm256_loadu_pd,
                      _mm256_cmp_pd, _mm256_movemask_pd, orochi_cmp_f64_generic)

    /* 32-bit lanes: 32 values per step, four compare masks packed to bytes
       (the packs interleave 128-bit lanes, the permute restores row order). */
    __attribute__((target("avx2"))) static inline __m256i
    orochi_mask_i32(const int32_t *p, __m256i cv, int op)
    {
        __m256i x = _mm256_loadu_si256((const __m256i *) p);
        switch (op) {
        case 0: case 1: return _mm256_cmpeq_epi32(x, cv);
        case 2: case 5: return _mm256_cmpgt_epi32(cv, x);
        default: return _mm256_cmpgt_epi32(x, cv);     /* 3, 4 */
        }
    }

    __attribute__((target("avx2"))) static inline __m256i
    orochi_mask_f32(const float *p, __m256 cv, int op)
    {
        __m256 x = _mm256_loadu_ps(p);
        switch (op) {
        case 0: return _mm256_castps_si256(_mm256_cmp_ps(x, cv, _CMP_EQ_OQ));
        case 1: return _mm256_castps_si256(_mm256_cmp_ps(x, cv, _CMP_NEQ_UQ));
        case 2: return _mm256_castps_si256(_mm256_cmp_ps(x, cv, _CMP_LT_OQ));
        case 3: return _mm256_castps_si256(_mm256_cmp_ps(x, cv, _CMP_LE_OQ));
        case 4: return _mm256_castps_si256(_mm256_cmp_ps(x, cv, _CMP_NLE_UQ));
        case 5: return _mm256_castps_si256(_mm256_cmp_ps(x, cv, _CMP_NLT_UQ));
        case 6: return _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        default: return _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_ORD_Q));
        }
    }

    #define OROCHI_PACK32_STEPS(MASK, CV, FLIP)                                    \
        for (; j + 32 <= n; j += 32) {                                             \
            __m256i m0 = MASK(v + j, CV, op), m1 = MASK(v + j + 8, CV, op);        \
            __m256i m2 = MASK(v + j + 16, CV, op), m3 = MASK(v + j + 24, CV, op);  \
            __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(m0, m1),             \
                                           _mm256_packs_epi32(m2, m3));            \
            b = _mm256_permutevar8x32_epi32(b, order);                             \
            b = (FLIP) ? _mm256_andnot_si256(b, one) : _mm256_and_si256(b, one);   \
            _mm256_storeu_si256((__m256i *) (t + j), b);                           \
        }

    __attribute__((target("avx2"))) static void
    orochi_cmp_i32_avx2(const int32_t *v, Py_ssize_t n, int op, int32_t c, uint8_t *t)
    {
        const __m256i cv = _mm256_set1_epi32(c), one = _mm256_set1_epi8(1);
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        const int flip = op == 1 || op == 3 || op == 5;   /* <>, <=, >= negate =, >, < */
        Py_ssize_t j = 0;
        OROCHI_PACK32_STEPS(orochi_mask_i32, cv, flip)
        if (j < n)
            orochi_cmp_i32_generic(v + j, n - j, op, c, t + j);
    }

    __attribute__((target("avx2"))) static void
    orochi_cmp_f32_avx2(const float *v, Py_ssize_t n, int op, float c, uint8_t *t)
    {
        const __m256 cv = _mm256_set1_ps(c);
        const __m256i one = _mm256_set1_epi8(1);
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        Py_ssize_t j = 0;
        OROCHI_PACK32_STEPS(orochi_mask_f32, cv, 0)
        if (j < n)
            orochi_cmp_f32_generic(v + j, n - j, op, c, t + j);
    }
    #endif

    #if OROCHI_X86_DISPATCH
    #define OROCHI_DISPATCH(NAME, T, MAX_OP)                                       \
    static void NAME(const T *v, Py_ssize_t n, int op, T c, uint8_t *t)            \
    {                                                                              \
        if (op <= MAX_OP && orochi_use_avx2())                                     \
            NAME##_avx2(v, n, op, c, t);                                           \
        else                                                                       \
            NAME##_generic(v, n, op, c, t);                                        \
    }
    #else
    #define OROCHI_DISPATCH(NAME, T, MAX_OP)                                       \
    static void NAME(const T *v, Py_ssize_t n, int op, T c, uint8_t *t)            \
    {                                                                              \
        NAME##_generic(v, n, op, c, t);                                            \
    }
    #endif
    OROCHI_DISPATCH(orochi_cmp_i32, int32_t, 5)
    OROCHI_DISPATCH(orochi_cmp_i64, int64_t, 5)
    OROCHI_DISPATCH(orochi_cmp_f32, float, 7)
    OROCHI_DISPATCH(orochi_cmp_f64, double, 7)

    /* Number of nonzero bytes: the high bit of each byte of
       ((w & 0x7f..) + 0x7f..) | w is set iff that byte is nonzero. */
    OROCHI_SIMD_CLONES static Py_ssize_t
    orochi_count_nonzero(const uint8_t *__restrict p, Py_ssize_t n)
    {
        const uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL, lanes16 = 0x00ff00ff00ff00ffULL;
        Py_ssize_t i = 0, total = 0;
        while (i + 8 <= n) {
            uint64_t acc = 0;
            Py_ssize_t stop = n - i >= 8 * 255 ? i + 8 * 255 : i + ((n - i) & ~(Py_ssize_t) 7);
            for (; i < stop; i += 8) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                acc += ((((w & low7) + low7) | w) >> 7) & 0x0101010101010101ULL;
            }
            acc = (acc & lanes16) + ((acc >> 8) & lanes16);
            total += (Py_ssize_t) ((acc * 0x0001000100010001ULL) >> 48);
        }
        for (; i < n; i++)
            total += p[i] != 0;
        return total;
    }
    """
    void orochi_cmp_i32(const int32_t* v, Py_ssize_t n, int op, int32_t c, uint8_t* t) noexcept nogil
    void orochi_cmp_i64(const int64_t* v, Py_ssize_t n, int op, int64_t c, uint8_t* t) noexcept nogil
    void orochi_cmp_f32(const float* v, Py_ssize_t n, int op, float c, uint8_t* t) noexcept nogil
    void orochi_cmp_f64(const double* v, Py_ssize_t n, int op, double c, uint8_t* t) noexcept nogil
    Py_ssize_t orochi_count_nonzero(const uint8_t* p, Py_ssize_t n) noexcept nogil


bind_interrupt_flag()

OP_EQ = CMP_EQ
OP_NE = CMP_NE
OP_LT = CMP_LT
OP_LE = CMP_LE
OP_GT = CMP_GT
OP_GE = CMP_GE
COMBINE_SET = CMB_SET
COMBINE_AND = CMB_AND
COMBINE_OR = CMB_OR

cdef enum:
    BLOCK = 2048
    # IN lists up to this long are tested by a linear, vectorizable scan.
    LINEAR_IN_MAX = 8
    # Integer IN lists spanning fewer values than this use a lookup table.
    TABLE_IN_SPAN = 65536

# Operators after folding a NaN constant away (see _fold_nan).
cdef enum:
    K_ISNAN = 6
    K_NOTNAN = 7
    K_TRUE = 8
    K_FALSE = 9

# Errors found inside a nogil loop, raised after it.
cdef enum:
    ERR_NONE = 0
    ERR_OFFSETS = 1
    ERR_CODE = 2
    ERR_CAPACITY = 3
    ERR_MEMORY = 4


# ------------------------------------------------------------------ checks

cdef int _check_common(Py_ssize_t n, Py_ssize_t out_len, object validity,
                       Py_ssize_t valid_len, int combine) except -1:
    if out_len != n:
        raise ValueError(f"out has {out_len} entries for {n} rows")
    if validity is not None and valid_len != n:
        raise ValueError(f"validity has {valid_len} entries for {n} rows")
    if combine != CMB_SET and combine != CMB_AND and combine != CMB_OR:
        raise ValueError(f"invalid combine mode {combine}")
    return 0


cdef int _check_op(int op) except -1:
    if op < CMP_EQ or op > CMP_GE:
        raise ValueError(f"invalid comparison operator {op}")
    return 0


cdef int _raise(int err, Py_ssize_t where) except -1:
    if err == ERR_OFFSETS:
        raise ValueError(f"invalid offsets at row {where}")
    if err == ERR_CODE:
        from orochi_fdw.errors import CorruptDataError
        raise CorruptDataError(f"dictionary code out of range at row {where}")
    if err == ERR_CAPACITY:
        raise ValueError("out too small for the selected rows")
    if err == ERR_MEMORY:
        raise MemoryError()
    return 0


cdef inline const uint8_t* _vptr(const uint8_t[::1] validity) noexcept nogil:
    if validity is None or validity.shape[0] == 0:
        return NULL
    return &validity[0]


cdef inline const uint8_t* _bptr(const uint8_t[::1] buf) noexcept nogil:
    if buf.shape[0] == 0:
        return NULL
    return &buf[0]


cdef inline int _fold_nan(int op) noexcept nogil:
    """The operator that `v op NaN` is, in Postgres's order (NaN last, NaN = NaN)."""
    if op == CMP_EQ or op == CMP_GE:
        return K_ISNAN
    if op == CMP_NE or op == CMP_LT:
        return K_NOTNAN
    if op == CMP_LE:
        return K_TRUE
    return K_FALSE


# ------------------------------------------------------------ block helpers

cdef inline void _cmp_block(const cmp_t* v, Py_ssize_t n, int op, cmp_t c,
                            uint8_t* t) noexcept nogil:
    """t[j] = v[j] op c for a constant c that is not NaN (or a K_ operator)."""
    cdef Py_ssize_t j
    if cmp_t is int32_t:
        orochi_cmp_i32(v, n, op, c, t)
        return
    if cmp_t is int64_t:
        orochi_cmp_i64(v, n, op, c, t)
        return
    if cmp_t is float:
        orochi_cmp_f32(v, n, op, c, t)
        return
    if cmp_t is double:
        orochi_cmp_f64(v, n, op, c, t)
        return
    if op == CMP_EQ:
        for j in range(n):
            t[j] = v[j] == c
    elif op == CMP_NE:
        # For floats `!=` is also true for NaN, as Postgres wants (c is not NaN).
        for j in range(n):
            t[j] = v[j] != c
    elif op == CMP_LT:
        for j in range(n):
            t[j] = v[j] < c
    elif op == CMP_LE:
        for j in range(n):
            t[j] = v[j] <= c
    elif op == CMP_GT:
        if cmp_t is float or cmp_t is double:
            for j in range(n):
                t[j] = (v[j] > c) | (v[j] != v[j])
        else:
            for j in range(n):
                t[j] = v[j] > c
    elif op == CMP_GE:
        if cmp_t is float or cmp_t is double:
            for j in range(n):
                t[j] = (v[j] >= c) | (v[j] != v[j])
        else:
            for j in range(n):
                t[j] = v[j] >= c
    elif op == K_ISNAN:
        for j in range(n):
            t[j] = v[j] != v[j]
    elif op == K_NOTNAN:
        for j in range(n):
            t[j] = v[j] == v[j]
    elif op == K_TRUE:
        memset(t, 1, <size_t>n)
    else:
        memset(t, 0, <size_t>n)


cdef inline void _finish_block(uint8_t* out, uint8_t* t, const uint8_t* valid,
                               Py_ssize_t n, int combine) noexcept nogil:
    """Clear NULL rows of t, then combine t into out (t is out for SET)."""
    cdef Py_ssize_t j
    if valid != NULL:
        for j in range(n):
            t[j] = t[j] & (valid[j] != 0)
    if combine == CMB_AND:
        for j in range(n):
            out[j] = (out[j] != 0) & t[j]
    elif combine == CMB_OR:
        for j in range(n):
            out[j] = (out[j] != 0) | t[j]


cdef inline void _not_block(uint8_t* t, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        t[j] = t[j] ^ 1


# ------------------------------------------------------------- comparisons

cdef int _constant(object value, cmp_t* c) except -1:
    """Convert a Python constant to the column's dtype, exactly."""
    if cmp_t is float or cmp_t is double:
        c[0] = value
        if not (c[0] == value or (c[0] != c[0] and value != value)):
            raise ValueError(f"{value!r} is not exactly representable in the column's type")
    else:
        if isinstance(value, float):
            raise TypeError("an integer column needs an integer constant")
        c[0] = value
    return 0


def compare(const cmp_t[::1] values, const uint8_t[::1] validity, int op, object value,
            uint8_t[::1] out, int combine=CMB_SET):
    """Rows where ``values <op> value``.

    Args:
        values: the column (int8, uint8 for bool, int16, int32, int64, float32
            or float64).
        validity: nonzero where a value is present, or None.
        op: OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT or OP_GE.
        value: the constant, exactly representable in the column's dtype.
        out: the mask, one byte per row.
        combine: COMBINE_SET, COMBINE_AND or COMBINE_OR.

    Raises:
        ValueError: mismatched sizes, an invalid op or combine mode, or a
            constant the dtype cannot hold exactly (OverflowError for an
            integer out of range).
    """
    cdef Py_ssize_t n = values.shape[0], i = 0, m
    cdef cmp_t c
    cdef int kop = op
    cdef const uint8_t* valid = _vptr(validity)
    cdef uint8_t tmp[BLOCK]
    cdef uint8_t* t
    _check_common(n, out.shape[0], validity, 0 if validity is None else validity.shape[0], combine)
    _check_op(op)
    _constant(value, &c)
    if n == 0:
        return
    if pg_isnan(c):
        kop = _fold_nan(op)
    with nogil:
        while i < n and not interrupted():
            m = n - i if n - i < BLOCK else BLOCK
            t = &out[i] if combine == CMB_SET else tmp
            _cmp_block(&values[i], m, kop, c, t)
            _finish_block(&out[i], t, valid + i if valid != NULL else NULL, m, combine)
            i += m
    if i < n:
        raise_interrupt()


def compare_range(const cmp_t[::1] values, const uint8_t[::1] validity, int op1, object value1,
                  int op2, object value2, uint8_t[::1] out, int combine=CMB_SET):
    """Rows where ``values <op1> value1 AND values <op2> value2``, in one pass
    (a time range: ``ts >= a AND ts < b``). Arguments as for :func:`compare`."""
    cdef Py_ssize_t n = values.shape[0], i = 0, m, j
    cdef cmp_t c1, c2
    cdef int k1 = op1, k2 = op2
    cdef const uint8_t* valid = _vptr(validity)
    cdef uint8_t tmp[BLOCK]
    cdef uint8_t tmp2[BLOCK]
    cdef uint8_t* t
    _check_common(n, out.shape[0], validity, 0 if validity is None else validity.shape[0], combine)
    _check_op(op1)
    _check_op(op2)
    _constant(value1, &c1)
    _constant(value2, &c2)
    if n == 0:
        return
    if pg_isnan(c1):
        k1 = _fold_nan(op1)
    if pg_isnan(c2):
        k2 = _fold_nan(op2)
    with nogil:
        while i < n and not interrupted():
            m = n - i if n - i < BLOCK else BLOCK
            t = &out[i] if combine == CMB_SET else tmp
            _cmp_block(&values[i], m, k1, c1, t)
            _cmp_block(&values[i], m, k2, c2, tmp2)
            for j in range(m):
                t[j] = t[j] & tmp2[j]
            _finish_block(&out[i], t, valid + i if valid != NULL else NULL, m, combine)
            i += m
    if i < n:
        raise_interrupt()


cdef Py_ssize_t _check_sorted(const cmp_t[::1] items) except -2:
    """Check items are in Postgres order (NaN last); return how many are not NaN."""
    cdef Py_ssize_t k = items.shape[0], i
    for i in range(1, k):
        if pg_lt(items[i], items[i - 1]):
            raise ValueError("IN-list items must be sorted (NaN last)")
    i = k
    while i > 0 and pg_isnan(items[i - 1]):
        i -= 1
    return i


def in_list(const cmp_t[::1] values, const uint8_t[::1] validity, const cmp_t[::1] items,
            bint negate, uint8_t[::1] out, int combine=CMB_SET):
    """Rows whose value is one of ``items`` (``= ANY``), or with ``negate``
    none of them (``<> ALL``, i.e. NOT IN without NULLs in the list).

    ``items`` has the column's dtype and is sorted in Postgres's order (NaN
    last; duplicates allowed). Short lists are scanned linearly, integer lists
    spanning few values use a lookup table, others a binary search per row.

    Raises:
        ValueError: mismatched sizes, unsorted items, or an invalid combine mode.
    """
    cdef Py_ssize_t n = values.shape[0], k, i = 0, m, j, q, lo, hi, mid
    cdef const uint8_t* valid = _vptr(validity)
    cdef uint8_t tmp[BLOCK]
    cdef uint8_t eq[BLOCK]
    cdef uint8_t* t
    cdef uint8_t* table = NULL
    cdef bint has_nan
    cdef cmp_t x
    cdef uint64_t span = 0, d
    cdef int err = ERR_NONE
    _check_common(n, out.shape[0], validity, 0 if validity is None else validity.shape[0], combine)
    k = _check_sorted(items)
    has_nan = k < items.shape[0]
    if n == 0:
        return
    if cmp_t is not float and cmp_t is not double:
        if k > LINEAR_IN_MAX:
            span = <uint64_t>items[k - 1] - <uint64_t>items[0]
            if span < TABLE_IN_SPAN:
                table = <uint8_t*>malloc(<size_t>(span + 1))
                if table == NULL:
                    raise MemoryError()
                memset(table, 0, <size_t>(span + 1))
                for q in range(k):
                    table[<uint64_t>items[q] - <uint64_t>items[0]] = 1
    try:
        with nogil:
            while i < n and not interrupted():
                m = n - i if n - i < BLOCK else BLOCK
                t = &out[i] if combine == CMB_SET else tmp
                if k <= LINEAR_IN_MAX:
                    memset(t, 0, <size_t>m)
                    for q in range(k):
                        _cmp_block(&values[i], m, CMP_EQ, items[q], eq)
                        for j in range(m):
                            t[j] = t[j] | eq[j]
                elif table != NULL:
                    for j in range(m):
                        d = <uint64_t>values[i + j] - <uint64_t>items[0]
                        t[j] = table[d] if d <= span else 0
                else:
                    for j in range(m):
                        x = values[i + j]
                        lo = 0
                        hi = k
                        while lo < hi:
                            mid = (lo + hi) >> 1
                            if items[mid] < x:
                                lo = mid + 1
                            else:
                                hi = mid
                        t[j] = lo < k and items[lo] == x
                if cmp_t is float or cmp_t is double:
                    if has_nan:
                        for j in range(m):
                            t[j] = t[j] | (values[i + j] != values[i + j])
                if negate:
                    _not_block(t, m)
                _finish_block(&out[i], t, valid + i if valid != NULL else NULL, m, combine)
                i += m
        if i < n:
            raise_interrupt()
    finally:
        free(table)


def validity_filter(const uint8_t[::1] validity, bint is_null, uint8_t[::1] out,
                    int combine=CMB_SET):
    """Rows that are NULL (``is_null``) or not NULL, from a validity array
    (None: no row is NULL, and ``len(out)`` rows)."""
    cdef Py_ssize_t n = out.shape[0], i = 0, m, j
    cdef const uint8_t* valid = _vptr(validity)
    cdef uint8_t tmp[BLOCK]
    cdef uint8_t* t
    _check_common(n, n, validity, 0 if validity is None else validity.shape[0], combine)
    if n == 0:
        return
    with nogil:
        while i < n and not interrupted():
            m = n - i if n - i < BLOCK else BLOCK
            t = &out[i] if combine == CMB_SET else tmp
            if valid == NULL:
                memset(t, 0 if is_null else 1, <size_t>m)
            elif is_null:
                for j in range(m):
                    t[j] = valid[i + j] == 0
            else:
                for j in range(m):
                    t[j] = valid[i + j] != 0
            _finish_block(&out[i], t, NULL, m, combine)
            i += m
    if i < n:
        raise_interrupt()


# ---------------------------------------------------------- variable width

# Text values are mostly short: below SHORT_BYTES a byte loop beats a call
# to memcmp.
cdef enum:
    SHORT_BYTES = 16


cdef inline bint _eq_bytes(const uint8_t* a, const uint8_t* b, int64_t n) noexcept nogil:
    cdef int64_t i
    if n > SHORT_BYTES:
        return memcmp(a, b, <size_t>n) == 0
    for i in range(n):
        if a[i] != b[i]:
            return False
    return True


cdef inline uint64_t _word_at(const uint8_t* dp, int64_t s, int64_t dlen) noexcept nogil:
    """The 8 bytes at dp + s, little-endian (zeros past the buffer's end)."""
    cdef uint64_t w
    if s + 8 <= dlen:
        memcpy(&w, dp + s, 8)
        return w
    return load_le64(dp + s, dlen - s)


cdef inline uint64_t _low_bytes_mask(int64_t n) noexcept nogil:
    """A mask of the low n (0..8) bytes of a word."""
    return 0xFFFFFFFFFFFFFFFFULL if n >= 8 else (<uint64_t>1 << (8 * n)) - 1


cdef inline int _cmp_bytes(const uint8_t* a, int64_t alen,
                           const uint8_t* b, int64_t blen) noexcept nogil:
    """memcmp order of two byte strings (a shorter prefix sorts first)."""
    cdef int64_t k = alen if alen < blen else blen, i
    cdef int64_t head = k if k < SHORT_BYTES else SHORT_BYTES
    cdef int c = 0
    for i in range(head):
        if a[i] != b[i]:
            return <int>a[i] - <int>b[i]
    if k > head:
        c = memcmp(a + head, b + head, <size_t>(k - head))
        if c != 0:
            return c
    return (alen > blen) - (alen < blen)


cdef inline bint _op_holds(int op, int c) noexcept nogil:
    if op == CMP_EQ:
        return c == 0
    if op == CMP_NE:
        return c != 0
    if op == CMP_LT:
        return c < 0
    if op == CMP_LE:
        return c <= 0
    if op == CMP_GT:
        return c > 0
    return c >= 0


cdef int _check_var(const int64_t[::1] offsets, Py_ssize_t out_len, object validity,
                    Py_ssize_t valid_len, int combine) except -1:
    if offsets.shape[0] < 1:
        raise ValueError("offsets must have rows + 1 entries")
    return _check_common(offsets.shape[0] - 1, out_len, validity, valid_len, combine)


def text_compare(const int64_t[::1] offsets, const uint8_t[::1] data,
                 const uint8_t[::1] validity, int op, const uint8_t[::1] value,
                 uint8_t[::1] out, int combine=CMB_SET):
    """Rows where ``value_i <op> value`` in byte order (memcmp, a prefix first):
    the order of text under the C collation in a UTF-8 database, and of bytea.
    Equality is byte equality, which is text equality in any deterministic
    collation.

    Raises:
        ValueError: mismatched sizes, an invalid op or combine mode, or an
            offset outside the data buffer.
    """
    cdef Py_ssize_t n = offsets.shape[0] - 1, i = 0, m, j, bad = -1
    cdef const uint8_t* valid = _vptr(validity)
    cdef const uint8_t* dp = _bptr(data)
    cdef const uint8_t* vp = _bptr(value)
    cdef int64_t vlen = value.shape[0], dlen = data.shape[0], s, e
    cdef uint64_t key = load_le64(vp, vlen), keymask = _low_bytes_mask(vlen)
    cdef bint short_eq = vlen <= 8 and (op == CMP_EQ or op == CMP_NE)
    cdef uint8_t flip = op == CMP_NE
    cdef uint8_t tmp[BLOCK]
    cdef uint8_t* t
    _check_var(offsets, out.shape[0], validity, 0 if validity is None else validity.shape[0], combine)
    _check_op(op)
    if n == 0:
        return
    with nogil:
        while i < n and bad < 0 and not interrupted():
            m = n - i if n - i < BLOCK else BLOCK
            t = &out[i] if combine == CMB_SET else tmp
            for j in range(m):
                s = offsets[i + j]
                e = offsets[i + j + 1]
                if s < 0 or e < s or e > dlen:
                    bad = i + j
                    break
                if short_eq:
                    # a value of at most 8 bytes: one masked word compare,
                    # no branch on the data
                    t[j] = ((e - s == vlen) & (((_word_at(dp, s, dlen) ^ key) & keymask) == 0)) ^ flip
                elif op == CMP_EQ:
                    t[j] = e - s == vlen and _eq_bytes(dp + s, vp, vlen)
                elif op == CMP_NE:
                    t[j] = not (e - s == vlen and _eq_bytes(dp + s, vp, vlen))
                else:
                    t[j] = _op_holds(op, _cmp_bytes(dp + s, e - s, vp, vlen))
            if bad >= 0:
                break
            _finish_block(&out[i], t, valid + i if valid != NULL else NULL, m, combine)
            i += m
    if i < n and bad < 0:
        raise_interrupt()
    if bad >= 0:
        _raise(ERR_OFFSETS, bad)


def text_prefix(const int64_t[::1] offsets, const uint8_t[::1] data,
                const uint8_t[::1] validity, const uint8_t[::1] prefix, bint negate,
                uint8_t[::1] out, int combine=CMB_SET):
    """Rows whose bytes start with ``prefix`` (``LIKE 'abc%'``), or with
    ``negate`` do not (``NOT LIKE 'abc%'``); NULL rows pass neither."""
    cdef Py_ssize_t n = offsets.shape[0] - 1, i = 0, m, j, bad = -1
    cdef const uint8_t* valid = _vptr(validity)
    cdef const uint8_t* dp = _bptr(data)
    cdef const uint8_t* pp = _bptr(prefix)
    cdef int64_t plen = prefix.shape[0], dlen = data.shape[0], s, e
    cdef uint64_t key = load_le64(pp, plen), keymask = _low_bytes_mask(plen)
    cdef uint8_t tmp[BLOCK]
    cdef uint8_t* t
    _check_var(offsets, out.shape[0], validity, 0 if validity is None else validity.shape[0], combine)
    if n == 0:
        return
    with nogil:
        while i < n and bad < 0 and not interrupted():
            m = n - i if n - i < BLOCK else BLOCK
            t = &out[i] if combine == CMB_SET else tmp
            for j in range(m):
                s = offsets[i + j]
                e = offsets[i + j + 1]
                if s < 0 or e < s or e > dlen:
                    bad = i + j
                    break
                if plen <= 8:
                    t[j] = ((e - s >= plen) & (((_word_at(dp, s, dlen) ^ key) & keymask) == 0)) ^ negate
                else:
                    t[j] = (e - s >= plen and _eq_bytes(dp + s, pp, plen)) ^ negate
            if bad >= 0:
                break
            _finish_block(&out[i], t, valid + i if valid != NULL else NULL, m, combine)
            i += m
    if i < n and bad < 0:
        raise_interrupt()
    if bad >= 0:
        _raise(ERR_OFFSETS, bad)


def text_in_list(const int64_t[::1] offsets, const uint8_t[::1] data,
                 const uint8_t[::1] validity, const int64_t[::1] item_offsets,
                 const uint8_t[::1] item_data, bint negate, uint8_t[::1] out,
                 int combine=CMB_SET):
    """Rows whose bytes equal one of the items (``= ANY``), or with ``negate``
    none of them (``<> ALL``). The items are a variable-width column of their
    own, sorted in byte order (duplicates allowed); each row is looked up by
    binary search.

    Raises:
        ValueError: mismatched sizes, unsorted items or bad offsets.
    """
    cdef Py_ssize_t n = offsets.shape[0] - 1, k = item_offsets.shape[0] - 1
    cdef Py_ssize_t i = 0, m, j, q, lo, hi, mid, bad = -1
    cdef const uint8_t* valid = _vptr(validity)
    cdef const uint8_t* dp = _bptr(data)
    cdef const uint8_t* ip = _bptr(item_data)
    cdef int64_t dlen = data.shape[0], s, e
    cdef int c
    cdef uint8_t tmp[BLOCK]
    cdef uint8_t* t
    _check_var(offsets, out.shape[0], validity, 0 if validity is None else validity.shape[0], combine)
    if k < 0:
        raise ValueError("item_offsets must have items + 1 entries")
    for q in range(k + 1):
        if item_offsets[q] < 0 or item_offsets[q] > item_data.shape[0] or (
                q > 0 and item_offsets[q] < item_offsets[q - 1]):
            raise ValueError(f"invalid item offsets at item {q}")
    for q in range(1, k):
        if _cmp_bytes(ip + item_offsets[q - 1], item_offsets[q] - item_offsets[q - 1],
                      ip + item_offsets[q], item_offsets[q + 1] - item_offsets[q]) > 0:
            raise ValueError("IN-list items must be sorted in byte order")
    if n == 0:
        return
    with nogil:
        while i < n and bad < 0 and not interrupted():
            m = n - i if n - i < BLOCK else BLOCK
            t = &out[i] if combine == CMB_SET else tmp
            for j in range(m):
                s = offsets[i + j]
                e = offsets[i + j + 1]
                if s < 0 or e < s or e > dlen:
                    bad = i + j
                    break
                lo = 0
                hi = k
                c = 1
                while lo < hi:
                    mid = (lo + hi) >> 1
                    c = _cmp_bytes(ip + item_offsets[mid], item_offsets[mid + 1] - item_offsets[mid],
                                   dp + s, e - s)
                    if c == 0:
                        break
                    if c < 0:
                        lo = mid + 1
                    else:
                        hi = mid
                t[j] = (c == 0) ^ negate
            if bad >= 0:
                break
            _finish_block(&out[i], t, valid + i if valid != NULL else NULL, m, combine)
            i += m
    if i < n and bad < 0:
        raise_interrupt()
    if bad >= 0:
        _raise(ERR_OFFSETS, bad)


# -------------------------------------------------------------- dictionary

def dict_filter(const int32_t[::1] codes, const uint8_t[::1] entry_mask,
                const uint8_t[::1] validity, uint8_t[::1] out, int combine=CMB_SET):
    """Rows of a dictionary-encoded column whose entry passes: ``entry_mask``
    holds the predicate evaluated once per dictionary entry, and row i passes
    when ``entry_mask[codes[i]]`` does. ``codes`` has one code per row (what a
    NULL row holds is not looked at).

    Raises:
        CorruptDataError: a code of a non-NULL row outside the dictionary.
    """
    cdef Py_ssize_t n = codes.shape[0], d = entry_mask.shape[0], i = 0, m, j, bad = -1
    cdef const uint8_t* valid = _vptr(validity)
    cdef uint8_t tmp[BLOCK]
    cdef uint8_t* t
    cdef uint64_t code
    _check_common(n, out.shape[0], validity, 0 if validity is None else validity.shape[0], combine)
    if n == 0:
        return
    with nogil:
        while i < n and bad < 0 and not interrupted():
            m = n - i if n - i < BLOCK else BLOCK
            t = &out[i] if combine == CMB_SET else tmp
            for j in range(m):
                if valid != NULL and valid[i + j] == 0:
                    t[j] = 0
                    continue
                code = <uint64_t><int64_t>codes[i + j]
                if code >= <uint64_t>d:
                    bad = i + j
                    break
                t[j] = entry_mask[code] != 0
            if bad >= 0:
                break
            _finish_block(&out[i], t, NULL, m, combine)
            i += m
    if i < n and bad < 0:
        raise_interrupt()
    if bad >= 0:
        _raise(ERR_CODE, bad)


# --------------------------------------------------------------- selection

ctypedef fused index_t:
    int32_t
    int64_t


def count_selected(const uint8_t[::1] mask):
    """Number of nonzero bytes of ``mask``."""
    cdef Py_ssize_t n = mask.shape[0]
    cdef Py_ssize_t total = 0
    if n == 0:
        return 0
    with nogil:
        total = orochi_count_nonzero(&mask[0], n)
    return total


def mask_to_indices(const uint8_t[::1] mask, index_t[::1] out):
    """Write the indices of the nonzero bytes of ``mask``, ascending, into
    ``out`` (int32 or int64, at least :func:`count_selected` entries); return
    how many were written. Eight zero bytes at a time are skipped at once, so
    sparse selections cost little more than reading the mask.

    Raises:
        ValueError: ``out`` is too small, or int32 cannot hold the indices.
    """
    cdef Py_ssize_t n = mask.shape[0], cap = out.shape[0], i = 0, k = 0, b
    cdef uint64_t w
    cdef const uint8_t* p = _bptr(mask)
    cdef int err = ERR_NONE
    if index_t is int32_t and n > 0x7FFFFFFF:
        raise ValueError("int32 indices cannot address this many rows")
    if n == 0:
        return 0
    with nogil:
        while i + 8 <= n:
            memcpy(&w, p + i, 8)
            if w != 0:
                for b in range(8):
                    if p[i + b]:
                        if k >= cap:
                            err = ERR_CAPACITY
                            break
                        out[k] = <index_t>(i + b)
                        k += 1
                if err != ERR_NONE:
                    break
            i += 8
        if err == ERR_NONE:
            while i < n:
                if p[i]:
                    if k >= cap:
                        err = ERR_CAPACITY
                        break
                    out[k] = <index_t>i
                    k += 1
                i += 1
    if err != ERR_NONE:
        _raise(err, 0)
    return k



ctypedef fused word_t:
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef inline Py_ssize_t _compress_words(const uint8_t* m, Py_ssize_t n, word_t* v, word_t* out,
                                       Py_ssize_t count) noexcept nogil:
    """The values of the rows whose mask byte is nonzero into ``out``,
    ``count`` of them (the number of nonzero bytes), eight rows at a time:
    none kept, skipped; all kept (bytes of 1), copied; else every value
    written and the position advanced where the row is kept (no branch on
    the mask) while eight more values fit in ``out``, the rows kept only
    near its end (``out`` needs no more than ``count`` entries)."""
    cdef Py_ssize_t i = 0, k = 0, b
    cdef uint64_t w
    while i + 8 <= n:
        memcpy(&w, m + i, 8)
        if w == 0:
            pass
        elif w == <uint64_t> 0x0101010101010101 and k + 8 <= count:
            memcpy(out + k, v + i, 8 * sizeof(word_t))
            k += 8
        elif k + 8 <= count:
            for b in range(8):
                out[k] = v[i + b]
                k += m[i + b] != 0
        else:
            for b in range(8):
                if m[i + b]:
                    out[k] = v[i + b]
                    k += 1
        i += 8
    while i < n:
        if m[i]:
            out[k] = v[i]
            k += 1
        i += 1
    return k


def compress(const uint8_t[::1] mask, const uint8_t[::1] values, uint8_t[::1] out, int width):
    """Write the values of the rows whose byte of ``mask`` is nonzero, in
    order, into ``out``; return how many were written. ``values`` and
    ``out`` are the bytes of columns of values ``width`` bytes wide (1, 2, 4
    or 8: a column of any such dtype viewed as bytes; ``out`` of at least
    :func:`count_selected` values): a selection and a gather in one pass.

    Raises:
        ValueError: another width, ``values`` not of one value per row of
            ``mask``, or ``out`` too small.
    """
    cdef Py_ssize_t n = mask.shape[0], count = 0, k = 0
    cdef const uint8_t* m
    cdef uint8_t* v
    cdef uint8_t* o
    if width != 1 and width != 2 and width != 4 and width != 8:
        raise ValueError(f"values of {width} bytes")
    if values.shape[0] != n * width:
        raise ValueError(f"{values.shape[0]} bytes of values for a mask of {n} rows of {width} bytes")
    if n == 0:
        return 0
    m = &mask[0]
    with nogil:
        count = orochi_count_nonzero(m, n)
    if count * width > out.shape[0]:
        _raise(ERR_CAPACITY, 0)
    if count == 0:
        return 0
    v = <uint8_t*> &values[0]  # read only
    o = &out[0]
    with nogil:
        if count == n:
            memcpy(o, v, <size_t> (n * width))
            k = n
        elif width == 1:
            k = _compress_words(m, n, v, o, count)
        elif width == 2:
            k = _compress_words(m, n, <uint16_t*> v, <uint16_t*> o, count)
        elif width == 4:
            k = _compress_words(m, n, <uint32_t*> v, <uint32_t*> o, count)
        else:
            k = _compress_words(m, n, <uint64_t*> v, <uint64_t*> o, count)
    return k
