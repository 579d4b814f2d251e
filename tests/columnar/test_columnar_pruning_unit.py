"""Min/max pruning without a server: awkward statistics, and binding of
qual values to columns, through the one bound form
(:mod:`orochi_fdw.query.predicates`) with the table's collation settings.
Each assertion says whether rows should be read."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from orochi_fdw.bridge.api import ColumnDefinition, Qual
from orochi_fdw.bridge.runtime import UNKNOWN
from orochi_fdw.bridge.types import SpecialValue
from orochi_fdw.columnar.filter import collation_policy
from orochi_fdw.columnar.pruning import CollationInfo
from orochi_fdw.query.predicates import ALWAYS_TRUE, ColumnStats as Bounds, bind_quals, might_match

C_UTF8 = CollationInfo(utf8=True, default_is_c=True, deterministic=lambda name: name != "ci")
LINGUISTIC = CollationInfo(utf8=True, default_is_c=False, deterministic=lambda name: name != "ci")

COLUMNS = {
    "i": ColumnDefinition("i", 23, type_name="integer", attnum=1),
    "f": ColumnDefinition("f", 701, type_name="double precision", attnum=2),
    "s": ColumnDefinition("s", 25, type_name="text", attnum=3),
    "d": ColumnDefinition("d", 1082, type_name="date", attnum=4),
    "ts": ColumnDefinition("ts", 1114, type_name="timestamp without time zone", attnum=5),
    "tz": ColumnDefinition("tz", 1184, type_name="timestamp with time zone", attnum=6),
    "n": ColumnDefinition("n", 1700, type_name="numeric", attnum=7),
    "u": ColumnDefinition("u", 2950, type_name="uuid", attnum=8),
    "b": ColumnDefinition("b", 16, type_name="boolean", attnum=9),
    "bp": ColumnDefinition("bp", 1042, type_name="character(4)", attnum=10),
    "ip": ColumnDefinition("ip", 869, type_name="inet", attnum=11),
    "iv": ColumnDefinition("iv", 1186, type_name="interval", attnum=12),
}


class _Pruning:
    """A qual's pruning expression, tested against one column's statistics."""

    def __init__(self, qual: Qual, expr):
        self.column, self.expr = qual.field_name, expr

    @property
    def value(self):
        return self.expr.value

    def might_match(self, b: Bounds) -> bool:
        return might_match(self.expr, {self.column: b})


def one(qual: Qual, collations: CollationInfo = C_UTF8) -> _Pruning | None:
    """The qual's pruning form, None when it cannot prune."""
    (bound,) = bind_quals([qual], COLUMNS, collation_policy(collations)).quals
    return None if bound.prune is ALWAYS_TRUE else _Pruning(qual, bound.prune)


def test_all_null_chunk():
    b = Bounds(row_count=10, null_count=10)
    assert not one(Qual("i", "=", 5)).might_match(b), "should skip: only NULLs, no comparison is true"
    assert one(Qual("i", "=", None)).might_match(b), "should read: IS NULL"
    assert not one(Qual("i", "<>", None)).might_match(b), "should skip: IS NOT NULL of only NULLs"


def test_no_null_chunk_and_is_null():
    b = Bounds(10, 0, 1, 9)
    assert not one(Qual("i", "=", None)).might_match(b), "should skip: no NULL"
    assert one(Qual("i", "<>", None)).might_match(b), "should read: IS NOT NULL"


@pytest.mark.parametrize("op, value, expect", [
    ("=", 0, False), ("=", 1, True), ("=", 9, True), ("=", 10, False),
    ("<", 1, False), ("<", 2, True), ("<=", 1, True), ("<=", 0, False),
    (">", 9, False), (">", 8, True), (">=", 9, True), (">=", 10, False),
])
def test_integer_ranges(op, value, expect):
    assert one(Qual("i", op, value)).might_match(Bounds(10, 2, 1, 9)) is expect
    assert one(Qual("i", "<>", value)).might_match(Bounds(10, 2, value, value)), \
        "should read: <> prunes only chunks of NULLs"
    assert not one(Qual("i", "<>", value)).might_match(Bounds(10, 10)), "should skip: only NULLs"


def test_integer_against_other_number_types():
    b = Bounds(10, 0, 1, 9)
    assert not one(Qual("i", ">", decimal.Decimal("9.5"))).might_match(b), "should skip: above the max"
    assert one(Qual("i", "<", 1.5)).might_match(b), "should read: 1 < 1.5"
    assert not one(Qual("i", "=", decimal.Decimal("NaN"))).might_match(b), "should skip: no integer is NaN"
    assert not one(Qual("i", "=", float("nan"))).might_match(b), "should skip: no integer is NaN"
    assert one(Qual("i", "<", decimal.Decimal("NaN"))).might_match(b), "should read: every number < NaN"
    assert one(Qual("i", "<", float("inf"))).might_match(b), "should read: everything < inf"


def test_floats_with_nan():
    with_nan = Bounds(10, 0, 1.0, 2.0, has_nan=True)
    assert one(Qual("f", ">", 100.0)).might_match(with_nan), "should read: NaN is above every number"
    assert one(Qual("f", ">=", 100.0)).might_match(with_nan), "should read: NaN is above every number"
    assert not one(Qual("f", "<", 0.5)).might_match(with_nan), "should skip: NaN is not below 0.5"
    assert not one(Qual("f", "=", 3.0)).might_match(with_nan), "should skip: NaN is not 3"
    only_nan = Bounds(10, 4, None, None, has_nan=True)
    assert one(Qual("f", ">", -1e308)).might_match(only_nan), "should read: NaN > any number"
    assert one(Qual("f", "=", float("nan"))).might_match(with_nan), "should read: NaN = NaN"
    assert not one(Qual("f", "=", float("nan"))).might_match(Bounds(10, 0, 1.0, 2.0, has_nan=False)), \
        "should skip: no NaN to equal"
    assert one(Qual("f", "=", 0.0)).might_match(Bounds(3, 0, -0.0, -0.0)), "should read: -0 = 0"


def test_missing_bounds_read():
    assert one(Qual("i", "=", 5)).might_match(Bounds(10, 0, None, None)), "should read: nothing known"
    assert one(Qual("s", ">", "zz")).might_match(Bounds(10, 0, b"a", None)), \
        "should read: a truncated maximum that could not be bounded"
    assert not one(Qual("s", "<", "a")).might_match(Bounds(10, 0, b"b", None)), "should skip: min above"


def test_text_needs_byte_order_for_ranges_and_determinism_for_equality():
    b = Bounds(10, 0, b"apple", b"banana")
    assert not one(Qual("s", "=", "cherry", "default")).might_match(b), "should skip: C collation, above max"
    assert not one(Qual("s", ">", "c", "C")).might_match(b), "should skip: byte order"
    assert one(Qual("s", ">", "c", "default"), LINGUISTIC) is None, "should not prune ranges: linguistic order"
    assert one(Qual("s", "=", "cherry", "en_US"), LINGUISTIC) is not None, "equality: deterministic collation"
    assert one(Qual("s", "=", "APPLE", "ci")) is None, "should not prune: nondeterministic collation"
    assert one(Qual("s", ">", "c", "C"), CollationInfo(False, True, lambda n: True)) is None, \
        "should not prune ranges: stored UTF-8 order is not the database encoding's"
    assert not one(Qual("s", "=", "äpfel", "C")).might_match(Bounds(2, 0, b"a", b"b")), \
        "should skip: unicode compared as UTF-8 bytes"


def test_unicode_truncated_bounds_are_bounds():
    # a truncated min is a prefix (below every value), a truncated max an upper bound
    b = Bounds(10, 0, b"\xc3\xa4" * 10, b"\xc3\xa5")
    assert one(Qual("s", "=", "ä" * 11, "C")).might_match(b), "should read: within the bounds"
    assert not one(Qual("s", "=", "z", "C")).might_match(b), "should skip: below the min ('z' < 'ä')"


def test_dates_and_times_bind_exactly():
    b = Bounds(10, 0, 0, 30)  # 2000-01-01 .. 2000-01-31
    assert one(Qual("d", "=", datetime.date(2000, 1, 15))).might_match(b)
    assert not one(Qual("d", ">", datetime.date(2000, 1, 31))).might_match(b), "should skip: after"
    assert not one(Qual("d", "=", SpecialValue("date", 2**31 - 1, "infinity"))).might_match(b), \
        "should skip: infinity above"
    assert not one(Qual("d", "<", datetime.datetime(2000, 1, 1))).might_match(b), \
        "should skip: a date against a timestamp compares its midnight (no day before 2000-01-01)"
    assert one(Qual("d", "<", datetime.datetime(2000, 1, 1, 0, 0, 1))).might_match(b), \
        "should read: 2000-01-01 00:00 < 00:00:01"
    zoned = one(Qual("ts", "<", datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)))
    assert zoned.might_match(Bounds(10, 0, 15 * 3_600_000_000, 20 * 3_600_000_000)), \
        "should read: within 16 hours, the session time zone decides"
    assert not zoned.might_match(Bounds(10, 0, 16 * 3_600_000_000, 20 * 3_600_000_000)), \
        "should skip: later than any time zone's midnight"
    tz = one(Qual("tz", ">=", datetime.datetime(2000, 1, 1, 0, 0, 1, tzinfo=datetime.timezone.utc)))
    assert tz.value == 1_000_000
    before = one(Qual("tz", "<", SpecialValue("timestamp with time zone", -(2**63), "-infinity")))
    assert not before.might_match(Bounds(10, 0, -(2**63), 0)), "should skip: nothing is before -infinity"
    upto = one(Qual("tz", "<=", SpecialValue("timestamp with time zone", -(2**63), "-infinity")))
    assert upto.value == -(2**63) and upto.might_match(Bounds(10, 0, -(2**63), 0))


def test_types_compared_otherwise_than_their_bytes_never_prune():
    for name, value in [("n", decimal.Decimal("1.0")), ("bp", "ab"), ("ip", "10.0.0.1"),
                        ("iv", (0, 1, 0))]:
        assert one(Qual(name, "=", value)) is None, f"should not prune {name}"


def test_lists_and_booleans_and_uuids():
    b = Bounds(10, 0, 10, 20)
    assert not one(Qual("i", ("=", True), [1, 2, None])).might_match(b), "should skip: no element in range"
    assert one(Qual("i", ("=", True), [1, 15])).might_match(b)
    assert one(Qual("i", ("<>", False), [1, 15])).might_match(b), "should read: <> ALL is never pruned"
    assert not one(Qual("i", ("=", True), [None])).might_match(b), "should skip: = ANY('{NULL}') is never true"
    assert not one(Qual("b", "=", True)).might_match(Bounds(5, 0, False, False)), "should skip: all false"
    assert one(Qual("b", "=", False)).might_match(Bounds(5, 0, False, True))
    lo, hi = uuid.UUID(int=5), uuid.UUID(int=9)
    ub = Bounds(3, 0, lo.bytes, hi.bytes)
    assert not one(Qual("u", "=", uuid.UUID(int=10))).might_match(ub), "should skip: above"
    assert one(Qual("u", "<=", uuid.UUID(int=5))).might_match(ub)


def test_unknown_values_are_left_alone():
    assert one(Qual("i", "=", UNKNOWN)) is None
