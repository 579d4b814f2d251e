# PostgreSQL comparison semantics for fixed-width values, shared by the filter
# kernels (and any kernel that must order values the way Postgres does).
#
# Integers compare as integers. Floats compare as PostgreSQL's float4/float8
# operators do, which is a total order and not IEEE 754's: NaN equals NaN and
# is greater than every other value (infinities included); -0.0 equals 0.0.

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t

# Columns a comparison kernel accepts: int8 ("char"), uint8 (bool, compared as
# 0 / 1), int16, int32 (also date), int64 (also timestamp, timestamptz, time),
# float32, float64.
ctypedef fused cmp_t:
    int8_t
    uint8_t
    int16_t
    int32_t
    int64_t
    float
    double

# Comparison operators, as the kernels number them (the Python side exports
# the same numbers as filters.OP_EQ ... and filters.COMBINE_SET ...).
cdef enum:
    CMP_EQ = 0
    CMP_NE = 1
    CMP_LT = 2
    CMP_LE = 3
    CMP_GT = 4
    CMP_GE = 5

# How a kernel's result meets what `out` already holds.
cdef enum:
    CMB_SET = 0    # out = result
    CMB_AND = 1    # out = out AND result
    CMB_OR = 2     # out = out OR result


cdef inline bint pg_isnan(cmp_t v) noexcept nogil:
    """True for a float NaN; always False for integers."""
    if cmp_t is float or cmp_t is double:
        return v != v
    else:
        return False


cdef inline bint pg_eq(cmp_t a, cmp_t b) noexcept nogil:
    if cmp_t is float or cmp_t is double:
        return a == b or (a != a and b != b)
    else:
        return a == b


cdef inline bint pg_lt(cmp_t a, cmp_t b) noexcept nogil:
    """a < b in Postgres's order (NaN last)."""
    if cmp_t is float or cmp_t is double:
        return a < b or (a == a and b != b)
    else:
        return a < b
