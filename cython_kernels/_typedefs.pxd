# Shared typedefs and fused types for Orochi's Cython kernels.
#
# This file is the contract between kernel modules: every kernel that works on
# "any integer column" or "any fixed-width column" is written once against the
# fused types below and specialised by Cython per dtype.

from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t,
                          uint8_t, uint16_t, uint32_t, uint64_t)

# Signed integer columns: int16, int32 (also date), int64 (also timestamp,
# timestamptz, time).
ctypedef fused int_t:
    int16_t
    int32_t
    int64_t

# Fixed-width values handled as raw bit patterns (bool, int16/32/64, float32/64
# and dates viewed as unsigned integers of the same width), so that comparisons
# are bit-exact: NaN payloads and -0.0 survive untouched.
ctypedef fused uint_t:
    uint8_t
    uint16_t
    uint32_t
    uint64_t

# Raw bit patterns of float32 / float64 for the Gorilla XOR codec.
ctypedef fused fbits_t:
    uint32_t
    uint64_t

# Offsets into variable-width data buffers.
ctypedef int64_t offset_t

# Floating-point columns, as values (for the decimal codec).
ctypedef fused float_t:
    float
    double

# Columns an aggregate's min/max runs on: integers (also dates, timestamps and
# times) and floats, compared as values.
ctypedef fused minmax_t:
    int16_t
    int32_t
    int64_t
    float
    double

# Fixed-width grouping keys and count(DISTINCT) arguments: bool (uint8),
# integers, floats.
ctypedef fused key_t:
    uint8_t
    int16_t
    int32_t
    int64_t
    float
    double
