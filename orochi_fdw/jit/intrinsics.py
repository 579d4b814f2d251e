"""bigint arithmetic with LLVM's instructions, for kernels.

numba marks integer ``+ - *`` as never overflowing (``nsw``), so a check on
the wrapped result may be optimized away; the ``*_overflow`` functions give
the result and whether it overflowed, as PostgreSQL's pg_add_s64_overflow
and friends do.

``sdiv`` / ``srem`` are C's division and remainder (truncating toward zero,
the remainder with the dividend's sign: int8div's and int8mod's), one
instruction where Python's floor division in numba takes a division and
corrections; by a constant LLVM turns them into a multiply and shifts.  The
caller checks that the divisor is not 0 and the pair is not (INT64_MIN, -1)."""

from __future__ import annotations

from numba.core import types
from numba.extending import intrinsic

#: part of every kernel's cache key: bump when these change
VERSION = 2


def _overflow_op(method: str):
    def typer(typingctx, a, b):
        if a != types.int64 or b != types.int64:
            return None
        sig = types.Tuple((types.int64, types.boolean))(types.int64, types.int64)

        def codegen(context, builder, signature, args):
            pair = getattr(builder, method)(args[0], args[1])
            value = builder.extract_value(pair, 0)
            flag = builder.extract_value(pair, 1)
            return context.make_tuple(builder, signature.return_type, [value, flag])

        return sig, codegen

    return intrinsic(typer)


add_overflow = _overflow_op("sadd_with_overflow")
sub_overflow = _overflow_op("ssub_with_overflow")
mul_overflow = _overflow_op("smul_with_overflow")


def _division_op(method: str):
    def typer(typingctx, a, b):
        if a != types.int64 or b != types.int64:
            return None
        sig = types.int64(types.int64, types.int64)

        def codegen(context, builder, signature, args):
            return getattr(builder, method)(args[0], args[1])

        return sig, codegen

    return intrinsic(typer)


sdiv = _division_op("sdiv")
srem = _division_op("srem")
