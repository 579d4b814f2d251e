# The fused DECIMAL-over-BITPACK decoder shared by the codec kernels
# (codecs_float.decimal_unpack) and the column chunk reader (chunkread):
# see the comment above decimal_unpack in codecs_float.pyx.

from libc.stdint cimport int64_t, uint8_t
from _bitio cimport orochi_unpack_add

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
    #define OROCHI_DECIMAL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
    #else
    #define OROCHI_DECIMAL_CLONES
    #endif
    #define OROCHI_MAGIC_BITS 0x4338000000000000ULL   /* 2**52 + 2**51 */
    #define OROCHI_MAGIC 6755399441055744.0
    #define OROCHI_DECIMAL_BLOCK 512

    /* out[i] = (T)((double)(base + field i) / pw) for the first n fields */
    #define OROCHI_DECIMAL_UNPACK(NAME, T)                                                        \
    static OROCHI_DECIMAL_CLONES void NAME(const uint8_t *p, int64_t n, int width, int64_t base, \
                                           double pw, T *out)                                    \
    {                                                                                            \
        uint64_t tmp[OROCHI_DECIMAL_BLOCK];                                                      \
        uint64_t mask = (((uint64_t)1) << width) - 1;                                            \
        int64_t start, j, m;                                                                     \
        for (start = 0; start < n; start += OROCHI_DECIMAL_BLOCK) {                              \
            m = n - start < OROCHI_DECIMAL_BLOCK ? n - start : OROCHI_DECIMAL_BLOCK;             \
            orochi_unpack_add(p, start, m, width, mask, (uint64_t)base + OROCHI_MAGIC_BITS, tmp);                 \
            for (j = 0; j < m; j++) {                                                            \
                double d;                                                                        \
                memcpy(&d, &tmp[j], 8);                                                          \
                out[start + j] = (T)((d - OROCHI_MAGIC) / pw);                                   \
            }                                                                                    \
        }                                                                                        \
    }
    OROCHI_DECIMAL_UNPACK(orochi_decimal_unpack_f64, double)
    OROCHI_DECIMAL_UNPACK(orochi_decimal_unpack_f32, float)
    """
    void orochi_decimal_unpack_f64(const uint8_t* p, int64_t n, int width, int64_t base,
                                   double pw, double* out) noexcept nogil
    void orochi_decimal_unpack_f32(const uint8_t* p, int64_t n, int width, int64_t base,
                                   double pw, float* out) noexcept nogil
