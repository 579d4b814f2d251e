"""Skipping stripes and chunk groups by their min / max statistics.

A qual the bridge passes down is first *bound* to its column: its value is
converted into the domain of the column's statistics (the stored integer of
a date or timestamp, the UTF-8 bytes of a text, ...). A qual that cannot be
bound safely is dropped from pruning, never guessed at; Postgres rechecks
every qual on the rows that are read anyway, so pruning only has to be
conservative: it answers :data:`ROWS_CANNOT_MATCH` only when no row of the
stripe or chunk group can satisfy the qual, and :data:`ROWS_MIGHT_MATCH`
whenever it is unsure.

It is unsure, and reads, when:

- a statistic is missing (an interval column; a text maximum whose truncation
  could not be bounded);
- the value is NaN (Postgres sorts NaN above every number and makes it equal
  to itself, which min / max over the other values cannot express), or a
  numeric NaN;
- the operator is ``<>``, LIKE or anything but ``=``, ``<``, ``<=``, ``>``,
  ``>=``, IS NULL, IS NOT NULL and ``= ANY``;
- the constant is of another type than the column in a way whose comparison
  depends on settings (a timestamp column against a timestamptz or date
  value, which depends on the session's time zone);
- the column is text and the collation is not byte order: equality needs a
  deterministic collation (then equal strings are equal bytes); ranges need
  the C collation and a UTF-8 database (then the order is the bytes' order);
- the column's values are compared in an order other than their stored
  bytes' (numeric and jsonb in text form, bpchar without a length, and every
  type stored through its text form).

numeric(p, s) with p <= 18 is stored as scaled int64 (NaN as int64 max,
above every number, as Postgres orders it): a constant binds as the exact
rational ``value * 10^s``, which Python compares exactly with the integer
bounds. character(n) is stored without its trailing spaces, which is how
bpchar compares: a constant binds without them, then as text.
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from orochi_fdw.bridge.api import ColumnDefinition, Qual
from orochi_fdw.bridge.batch import PG_EPOCH_DATE, PG_EPOCH_DATETIME, PG_EPOCH_DATETIME_UTC
from orochi_fdw.bridge.types import SpecialValue
from fractions import Fraction

from orochi_fdw.columnar.types import BYTEA_OID, TEXT_TYPE_OIDS, decimal_scale, storage_kind
from orochi_fdw.storage import decimal as dec
from orochi_fdw.storage.kinds import get_kind

ROWS_MIGHT_MATCH = True
ROWS_CANNOT_MATCH = False

_RANGE_OPS = ("=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Bounds:
    """What is known of a column over some rows."""

    row_count: int
    null_count: int
    min: Any = None
    max: Any = None
    has_nan: bool = False


@dataclass(frozen=True)
class BoundQual:
    """A qual tied to a column, with its value(s) in the statistics' domain.

    ``op`` is one of ``=``, ``<``, ``<=``, ``>``, ``>=``, ``in`` (``= ANY``;
    ``value`` is then a tuple), ``is_null``, ``is_not_null``.
    """

    column: str
    kind: str
    op: str
    value: Any = None

    def might_match(self, b: Bounds) -> bool:
        """Whether any of the rows described by ``b`` may satisfy the qual."""
        if self.op == "is_null":
            return b.null_count > 0
        if self.op == "is_not_null":
            return b.null_count < b.row_count
        if b.null_count >= b.row_count:
            return ROWS_CANNOT_MATCH  # only NULLs: no comparison is true
        if self.op == "in":
            return any(_compare_might_match("=", v, b, self.kind) for v in self.value)
        return _compare_might_match(self.op, self.value, b, self.kind)


def _compare_might_match(op: str, v: Any, b: Bounds, kind: str) -> bool:
    is_float = get_kind(kind).physical == "float"
    if is_float and b.has_nan and op in (">", ">="):
        return ROWS_MIGHT_MATCH  # NaN is greater than every number
    lo, hi = b.min, b.max
    if is_float and b.has_nan and lo is None and hi is None:
        return ROWS_CANNOT_MATCH  # only NaN (and NULL): =, <, <= a number are false
    if op == "=":
        return (lo is None or lo <= v) and (hi is None or v <= hi)
    if op == "<":
        return lo is None or lo < v
    if op == "<=":
        return lo is None or lo <= v
    if op == ">":
        return hi is None or hi > v
    if op == ">=":
        return hi is None or hi >= v
    return ROWS_MIGHT_MATCH


# ------------------------------------------------------------------ binding

@dataclass(frozen=True)
class CollationInfo:
    """What binding text quals needs to know of the database."""

    utf8: bool
    default_is_c: bool
    deterministic: Callable[[str], bool]

    def is_c(self, name: str | None) -> bool:
        if name in ("C", "POSIX", "ucs_basic"):
            return True
        return name in (None, "default") and self.default_is_c


def _microseconds(delta: datetime.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _special_raw(value: Any, type_name: str) -> int | None:
    if isinstance(value, SpecialValue) and value.type_name == type_name:
        return int(value.raw)
    return None


def _number(value: Any) -> Any:
    """A number that compares exactly with ints and floats, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, decimal.Decimal):
        return None if value.is_nan() else value
    return None


def bind_value(column: ColumnDefinition, value: Any) -> Any:
    """``value`` in the statistics' domain of ``column``, or None when it
    cannot be compared with them safely."""
    kind = storage_kind(column)
    k = get_kind(kind)
    if value is None:
        return None
    if kind in ("int16", "int32", "int64"):
        return _number(value)
    scale = decimal_scale(kind)
    if scale is not None:
        return _decimal_value(value, scale)
    if kind == "char":
        return value.rstrip(" ").encode("utf-8") if isinstance(value, str) else None
    if k.physical == "float":
        v = _number(value)
        if isinstance(v, decimal.Decimal):
            return None  # the column would be compared as numeric: not pushed as is
        return None if v is None else float(v)
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "date":
        if type(value) is datetime.date:
            return (value - PG_EPOCH_DATE).days
        return _special_raw(value, "date")
    if kind == "timestamp":
        if type(value) is datetime.datetime and value.tzinfo is None:
            return _microseconds(value - PG_EPOCH_DATETIME)
        return _special_raw(value, "timestamp without time zone")
    if kind == "timestamptz":
        if type(value) is datetime.datetime and value.tzinfo is not None:
            return _microseconds(value - PG_EPOCH_DATETIME_UTC)
        return _special_raw(value, "timestamp with time zone")
    if kind == "time":
        if type(value) is datetime.time and value.tzinfo is None:
            return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
        return _special_raw(value, "time without time zone")
    if kind == "uuid":
        return value.bytes if isinstance(value, uuid.UUID) else None
    if column.type_oid == BYTEA_OID:
        return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None
    if column.type_oid in TEXT_TYPE_OIDS and isinstance(value, str):
        return value.encode("utf-8")
    return None


def _decimal_value(value: Any, scale: int) -> Any:
    """A numeric constant in the stored domain of scale ``scale`` (an int or
    an exact Fraction), NaN as the stored NaN; None for other types."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value * 10 ** scale
    if not isinstance(value, decimal.Decimal):
        return None  # a float8 constant compares the column cast to float8
    if value.is_nan():
        return dec.NAN
    if value.is_infinite():
        # between every number and NaN, in numeric's order
        return Fraction(2 * dec.NAN - 1, 2) if value > 0 else Fraction(-(2 ** 64) - 1, 2)
    return Fraction(value) * 10 ** scale


def bind(quals: Iterable[Qual], columns: dict[str, ColumnDefinition],
         collations: CollationInfo, unknown: Any = None) -> list[BoundQual]:
    """The quals that can prune, bound to their columns. ``unknown`` is the
    bridge's marker of a value not known yet (plan time)."""
    out = []
    for q in quals:
        column = columns.get(q.field_name)
        if column is None or (unknown is not None and q.value is unknown):
            continue
        kind = storage_kind(column)
        if q.is_list_operator:
            op, use_any = q.operator
            if op != "=" or not use_any or not isinstance(q.value, (list, tuple)):
                continue
            if not _text_ok(column, "=", q.collation, collations):
                continue
            values = [bind_value(column, v) for v in q.value if v is not None]
            if any(v is None for v in values):
                continue
            out.append(BoundQual(q.field_name, kind, "in", tuple(values)))
            continue
        op = q.operator
        if q.value is None:
            if op == "=":
                out.append(BoundQual(q.field_name, kind, "is_null"))
            elif op == "<>":
                out.append(BoundQual(q.field_name, kind, "is_not_null"))
            continue
        if op not in _RANGE_OPS or not _text_ok(column, op, q.collation, collations):
            continue
        v = bind_value(column, q.value)
        if v is not None:
            out.append(BoundQual(q.field_name, kind, op, v))
    return out


def _text_ok(column: ColumnDefinition, op: str, collation: str | None, collations: CollationInfo) -> bool:
    if column.type_oid not in TEXT_TYPE_OIDS and storage_kind(column) != "char":
        return True
    if op == "=":
        return collations.is_c(collation) or collations.deterministic(collation or "default")
    return collations.utf8 and collations.is_c(collation)


def might_match(quals: Iterable[BoundQual], bounds_of: Callable[[str], Bounds | None]) -> bool:
    """Whether rows described by ``bounds_of(column)`` may satisfy every qual
    (None bounds: nothing known of that column)."""
    for q in quals:
        b = bounds_of(q.column)
        if b is not None and not q.might_match(b):
            return ROWS_CANNOT_MATCH
    return ROWS_MIGHT_MATCH
