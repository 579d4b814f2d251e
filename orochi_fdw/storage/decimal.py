"""numeric(p, s) with p <= 18 as scaled int64 (DuckDB's DECIMAL layout).

A value ``v`` of a ``numeric(p, s)`` column with ``0 <= s <= p <= 18`` is
stored as the integer ``v * 10^s`` (``|v * 10^s| < 10^18``); numeric NaN,
which a constrained column may hold, is :data:`NAN` (int64 max), above every
number as Postgres sorts NaN, so min / max, ordering and comparisons of the
stored integers are Postgres's comparisons of the values. (A constrained
numeric cannot hold ±Infinity.) The display scale of every value of the
column is ``s`` (the type modifier sets it), so the text is known from the
integer and ``s`` alone: 150 at scale 2 prints ``1.50``.

:func:`format_text` and :func:`parse_text` run the kernels of
``cython_kernels/decimal.pyx``; :func:`format_reference` and
:func:`parse_reference` are the pure-Python definitions the tests compare
them with.
"""

from __future__ import annotations

import decimal
import re

import numpy as np

from orochi_fdw.errors import InvalidParameterError, NumericValueOutOfRangeError
from orochi_fdw.kernels import decimal as _kd

__all__ = ["NAN", "MAX_PRECISION", "typmod_precision_scale", "format_text", "parse_text",
           "format_reference", "parse_reference", "to_decimal", "from_decimal"]

#: the stored value of numeric NaN
NAN = _kd.DEC64_NAN
#: the widest declared precision stored as scaled int64
MAX_PRECISION = 18


class InvalidTextRepresentationError(InvalidParameterError):
    """A text is not a number (SQLSTATE 22P02, invalid_text_representation)."""

    sqlstate = "22P02"


def typmod_precision_scale(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of a numeric type modifier, None without one.
    PostgreSQL packs ``((p << 16) | (s & 0x7ff)) + VARHDRSZ``, the scale an
    11-bit two's complement (PG15 allows -1000..1000)."""
    if typmod < 4:
        return None
    t = typmod - 4
    p = (t >> 16) & 0xFFFF
    s = t & 0x7FF
    if s & 0x400:
        s -= 0x800
    return p, s


def _u8(validity) -> np.ndarray | None:
    if validity is None:
        return None
    v = np.asarray(validity)
    return np.ascontiguousarray(v.view(np.uint8) if v.dtype == np.bool_ else v, dtype=np.uint8)


def format_text(values: np.ndarray, validity, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64[n + 1], data uint8) of the values' text (NULLs empty)."""
    return _kd.format_decimal64(np.ascontiguousarray(values, dtype=np.int64), _u8(validity), scale)


def parse_text(offsets: np.ndarray, data: np.ndarray, validity, scale: int, precision: int,
               what: str = "numeric") -> np.ndarray:
    """Scaled int64 values of numeric texts (NULL rows 0).

    Raises:
        InvalidTextRepresentationError: a text is not a number.
        NumericValueOutOfRangeError: a value does not fit ``numeric(precision, scale)``.
    """
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    data = np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray)
                                else data.view(np.uint8).reshape(-1))
    out = np.empty(len(offsets) - 1, dtype=np.int64)
    status, row = _kd.parse_decimal64(offsets, data, _u8(validity), scale, precision, out)
    if status:
        text = bytes(data[offsets[row]:offsets[row + 1]]).decode("utf-8", errors="replace")
        if status == 1:
            raise InvalidTextRepresentationError(f'invalid input syntax for type {what}: "{text}"')
        raise NumericValueOutOfRangeError(
            f'numeric field overflow: "{text}" does not fit numeric({precision},{scale})')
    return out


# ------------------------------------------------------------- references

_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", re.ASCII)


def format_reference(value: int, scale: int) -> str:
    """The text of one stored value (the definition the kernel follows)."""
    if value == NAN:
        return "NaN"
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(scale + 1, "0")
    if scale == 0:
        return sign + digits
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def parse_reference(text: str, scale: int, precision: int) -> int:
    """One text as a stored value, with Python's decimal module: rounded half
    away from zero to ``scale`` digits, as Postgres applies a type modifier."""
    if text.lower() == "nan":
        return NAN
    if not _NUMBER.fullmatch(text):
        raise InvalidTextRepresentationError(f'invalid input syntax for type numeric: "{text}"')
    d = decimal.Decimal(text)
    with decimal.localcontext() as ctx:
        ctx.prec = 200
        q = d.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP)
        v = int(q.scaleb(scale))
    if abs(v) >= 10 ** precision:
        raise NumericValueOutOfRangeError(
            f'numeric field overflow: "{text}" does not fit numeric({precision},{scale})')
    return v


def to_decimal(value: int, scale: int) -> decimal.Decimal:
    """A stored value as a Decimal (NaN included)."""
    if value == NAN:
        return decimal.Decimal("NaN")
    return decimal.Decimal(value).scaleb(-scale)


def from_decimal(value: decimal.Decimal, scale: int, precision: int = MAX_PRECISION) -> int:
    """A Decimal as a stored value (rounded as the type modifier rounds).

    Raises:
        NumericValueOutOfRangeError: ±Infinity, or too many digits."""
    if value.is_nan():
        return NAN
    if value.is_infinite():
        raise NumericValueOutOfRangeError(
            f"numeric field overflow: numeric({precision},{scale}) cannot hold an infinite value")
    return parse_reference(format(value, "f"), scale, precision)
