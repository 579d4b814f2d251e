"""Time keys: the one integer scale on which a hypertable's chunks are cut.

A time key is TimescaleDB's internal representation of a time value:

- ``timestamptz``: microseconds since 1970-01-01 00:00 UTC;
- ``timestamp``: its wall clock read as UTC, in microseconds since
  1970-01-01 00:00;
- ``date``: its midnight, in microseconds since 1970-01-01 00:00;
- ``smallint``, ``integer``, ``bigint``: the value itself.

Stripes store timestamps as microseconds since 2000-01-01 and dates as days
since 2000-01-01 (:mod:`orochi_fdw.storage.kinds`); the functions here turn
those storage values, Python values and SQL values into keys and back.

Infinite timestamps and dates have no key: a hypertable refuses them
(:class:`InfiniteTimeError`).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.batch import PG_EPOCH_DATE, PG_EPOCH_DATETIME, PG_EPOCH_DATETIME_UTC, PG_EPOCH_SECONDS
from orochi_fdw.bridge.types import Interval, SpecialValue
from orochi_fdw.errors import OrochiError, SPIError

if TYPE_CHECKING:  # pragma: no cover
    from orochi_fdw.timeseries.hypertable import Hypertable

#: microseconds between 1970-01-01 and 2000-01-01
EPOCH_SHIFT_US = PG_EPOCH_SECONDS * 1_000_000
USECS_PER_DAY = 86_400_000_000
KEY_MIN = -(2**63)
KEY_MAX = 2**63 - 1

#: time column types a hypertable accepts, by their regtype text -> storage kind
TIME_TYPES = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "date": "date",
    "smallint": "int16",
    "integer": "int32",
    "bigint": "int64",
}
INTEGER_TYPES = ("smallint", "integer", "bigint")

_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)


class InfiniteTimeError(OrochiError):
    """An infinite timestamp or date as a hypertable's time value
    (SQLSTATE 22008, datetime_field_overflow)."""

    sqlstate = "22008"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class InvalidTimeArgumentError(OrochiError):
    """A time argument (older_than, newer_than, chunk_time_interval) of a
    type that does not fit the hypertable's time column (SQLSTATE 22023,
    invalid_parameter_value)."""

    sqlstate = "22023"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def _infinite(column: str) -> InfiniteTimeError:
    return InfiniteTimeError(f'infinite time value in time column "{column}" of a hypertable',
                             hint="A hypertable's time column takes only finite timestamps and dates.")


def is_integer_type(time_type: str) -> bool:
    """Whether a time column type (regtype text) is an integer type."""
    return time_type in INTEGER_TYPES


# ---------------------------------------------------------------- storage values

def keys_from_storage(values: np.ndarray, kind: str, column: str = "time") -> np.ndarray:
    """Keys (int64) of storage values of a time column's kind.

    Args:
        values: the stored integers (µs since 2000 for timestamps, days since
            2000 for dates, the value for integers); NULL slots must already
            have been refused or filtered out.
        kind: the column's storage kind.
        column: the column's name, for errors.

    Returns:
        The keys, as an int64 array.

    Raises:
        InfiniteTimeError: an infinite timestamp or date.
    """
    v = np.asarray(values)
    if kind in ("timestamptz", "timestamp"):
        v = v.astype(np.int64, copy=False)
        if len(v) and (v.max() == _INT64_MAX or v.min() == _INT64_MIN):
            raise _infinite(column)
        if len(v) and v.max() > _INT64_MAX - EPOCH_SHIFT_US:
            # after about year 294247: the key would not fit in 64 bits
            raise InfiniteTimeError(f'time value in column "{column}" out of range for a hypertable',
                                    hint="A hypertable's time column takes times before year 294247.")
        return v + np.int64(EPOCH_SHIFT_US)
    if kind == "date":
        v = v.astype(np.int64)
        if len(v) and (v.max() == _INT32_MAX or v.min() == _INT32_MIN):
            raise _infinite(column)
        return v * np.int64(USECS_PER_DAY) + np.int64(EPOCH_SHIFT_US)
    return v.astype(np.int64, copy=False)


def storage_bounds(kind: str, start: int, end: int) -> tuple[int, int]:
    """The inclusive range of storage values whose keys lie in
    [start, end) (for comparing a chunk with quals the way stripe min / max
    are compared); a range clamped at the top of the key scale includes it."""
    last = end if end >= KEY_MAX else end - 1
    if kind in ("timestamptz", "timestamp"):
        return start - EPOCH_SHIFT_US, last - EPOCH_SHIFT_US
    if kind == "date":
        lo = -((-(start - EPOCH_SHIFT_US)) // USECS_PER_DAY)  # ceiling
        hi = (last - EPOCH_SHIFT_US) // USECS_PER_DAY
        return lo, hi
    return start, last


# ---------------------------------------------------------------- Python values

def key_from_value(value: Any, time_type: str, column: str = "time") -> int:
    """The key of a Python value of a time column (as the bridge converts
    values of ``time_type``: aware datetime for timestamptz, naive for
    timestamp, date, int).

    Raises:
        InfiniteTimeError: infinity, or a value Python cannot hold.
        InvalidTimeArgumentError: a value of another type.
    """
    if isinstance(value, SpecialValue):
        if value.is_infinite:
            raise _infinite(column)
        if value.type_name == "date":
            return int(value.raw) * USECS_PER_DAY + EPOCH_SHIFT_US
        return int(value.raw) + EPOCH_SHIFT_US
    if isinstance(value, bool):
        raise InvalidTimeArgumentError(f'invalid time value {value!r} for column "{column}"')
    if isinstance(value, int):
        return value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            d = value - PG_EPOCH_DATETIME_UTC
        else:
            d = value - PG_EPOCH_DATETIME
        return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds + EPOCH_SHIFT_US
    if isinstance(value, datetime.date):
        return (value - PG_EPOCH_DATE).days * USECS_PER_DAY + EPOCH_SHIFT_US
    raise InvalidTimeArgumentError(f'invalid time value {value!r} for column "{column}" of type {time_type}')


def key_to_value(key: int, time_type: str) -> Any:
    """A key back as a Python value of ``time_type`` that SPI passes as that
    type exactly (a value Python cannot hold as its text form)."""
    from orochi_fdw.columnar.delta import _date_value, _timestamp_value

    if is_integer_type(time_type):
        return int(key)
    if time_type == "date":
        return _date_value((int(key) - EPOCH_SHIFT_US) // USECS_PER_DAY)
    return _timestamp_value(int(key) - EPOCH_SHIFT_US, time_type == "timestamp with time zone")


def param_value(key: int, time_type: str) -> Any:
    """A key as an SPI parameter of ``time_type`` (special values as text)."""
    value = key_to_value(key, time_type)
    return value.text if isinstance(value, SpecialValue) else value


# ---------------------------------------------------------------- chunk ranges

def chunk_start(key: int, interval: int) -> int:
    """The start of the chunk holding ``key``: aligned on the epoch
    (key 0), floor division also for negative keys, clamped to the key
    scale."""
    return max(KEY_MIN, (int(key) // interval) * interval)


def chunk_end(start: int, interval: int) -> int:
    """The exclusive end of the chunk starting at ``start`` (clamped to the
    key scale: the last chunk then also holds the greatest key)."""
    aligned = (start // interval) * interval if start == KEY_MIN else start
    return min(KEY_MAX, aligned + interval)


def chunk_starts(keys: np.ndarray, interval: int) -> np.ndarray:
    """:func:`chunk_start` of every key (int64 array)."""
    keys = np.asarray(keys, dtype=np.int64)
    starts = np.floor_divide(keys, np.int64(interval))
    # int64 overflow only where the floor of the lowest keys leaves the scale
    lowest = KEY_MIN // interval
    out = np.where(starts <= lowest, np.int64(KEY_MIN), starts * np.int64(interval)) \
        if interval > 1 else keys.copy()
    return out.astype(np.int64, copy=False)


# ---------------------------------------------------------------- user arguments

def interval_microseconds(value: Interval) -> int:
    """A chunk_time_interval in microseconds (a month counts 30 days, as in
    TimescaleDB).

    Raises:
        InvalidTimeArgumentError: an interval that is not positive.
    """
    us = (value.months * 30 + value.days) * USECS_PER_DAY + value.microseconds
    if us <= 0:
        raise InvalidTimeArgumentError("invalid chunk_time_interval: must be greater than zero")
    return us


#: the largest chunk_time_interval an integer time column takes (TimescaleDB's
#: bound: a chunk may not be wider than the type's range)
INTEGER_INTERVAL_MAX = {"smallint": 2**15 - 1, "integer": 2**31 - 1, "bigint": 2**63 - 1}


def check_integer_interval(interval: int, time_type: str) -> int:
    """An integer chunk_time_interval, checked against the time column's type.

    Raises:
        InvalidTimeArgumentError: not between 1 and the type's greatest value
            (for timestamp-like columns, whose integer intervals are in
            microseconds, the bound is bigint's).
    """
    top = INTEGER_INTERVAL_MAX.get(time_type, INTEGER_INTERVAL_MAX["bigint"])
    if not 1 <= interval <= top:
        raise InvalidTimeArgumentError(f"invalid interval: must be between 1 and {top}",
                                       hint=f"The time column is of type {time_type}.")
    return interval


def _untyped(value: Any, sql_type: str) -> Any:
    """An untyped literal ("any" arguments pass them as text) read as
    ``sql_type``, as TimescaleDB reads one as the time column's type."""
    try:
        return spi.execute(f"SELECT $1::text::{sql_type}", [value], types=["text"]).scalar()
    except SPIError as exc:
        raise InvalidTimeArgumentError(f"invalid time argument: {exc.message}",
                                       hint="Cast the argument to the type you mean.") from None


def creation_cutoff(value: Any, argument: str) -> int | None:
    """The key (microseconds since 1970-01-01 UTC) of a created_before /
    created_after argument, compared with chunks' creation times.

    Args:
        value: an :class:`Interval` (now() minus it), a timestamptz, or a
            timestamp or date (read as timestamptz in the session's time zone,
            as an implicit cast does); an untyped literal is read as
            timestamptz.
        argument: the argument's name, for errors.

    Returns:
        The key, or None for infinity (no bound).

    Raises:
        InvalidTimeArgumentError: a value of another type (an integer...).
    """
    if isinstance(value, str):
        value = _untyped(value, "timestamp with time zone")
    if isinstance(value, SpecialValue) and value.is_infinite:
        return None
    if isinstance(value, Interval):
        result = spi.execute("SELECT now() - $1::interval", [value], types=["interval"]).scalar()
    elif isinstance(value, SpecialValue):
        result = spi.execute(f"SELECT $1::{value.type_name}::timestamptz", [value.text],
                             types=[value.type_name]).scalar()
    elif isinstance(value, datetime.datetime):
        result = value if value.tzinfo is not None else spi.execute(
            "SELECT $1::timestamp::timestamptz", [value], types=["timestamp without time zone"]).scalar()
    elif isinstance(value, datetime.date):
        result = spi.execute("SELECT $1::date::timestamptz", [value], types=["date"]).scalar()
    else:
        kind = "integer" if isinstance(value, int) and not isinstance(value, bool) else type(value).__name__
        raise InvalidTimeArgumentError(
            f'invalid time argument type "{kind}" for {argument}',
            hint='Try casting the argument to "timestamp with time zone", or pass an interval.')
    if isinstance(result, SpecialValue) and result.is_infinite:
        return None
    return key_from_value(result, "timestamp with time zone", argument)


def cutoff_key(hypertable: "Hypertable", value: Any) -> int:
    """The key of an older_than / newer_than argument.

    Args:
        hypertable: the hypertable.
        value: an :class:`Interval` (now() minus it), a timestamptz,
            timestamp or date (cast to the time column's type, in the
            session's time zone where it matters), or an integer for
            integer time columns.

    Returns:
        The key.

    Raises:
        InvalidTimeArgumentError: a value of a type the time column does not
            take (an interval or time for an integer column, an integer for a
            time column).
        InfiniteTimeError: infinity.
    """
    time_type = hypertable.time_type
    column = hypertable.time_column
    integer = is_integer_type(time_type)
    if isinstance(value, str):
        value = _untyped(value, time_type)
    if integer:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        raise InvalidTimeArgumentError(
            f'invalid time argument type for integer time column "{column}"',
            hint="Pass an integer value of the time column as older_than or newer_than, or select chunks "
                 "by when they were created with created_before or created_after.")
    if isinstance(value, Interval):
        query = f"SELECT (now() - $1::interval)::{time_type}"
        result = spi.execute(query, [value], types=["interval"]).scalar()
        return key_from_value(result, time_type, column)
    if isinstance(value, SpecialValue) and value.is_infinite:
        raise _infinite(column)
    if isinstance(value, SpecialValue):
        sql_type = value.type_name
        param: Any = value.text
    elif isinstance(value, datetime.datetime):
        sql_type = "timestamp with time zone" if value.tzinfo is not None else "timestamp without time zone"
        param = value
    elif isinstance(value, datetime.date):
        sql_type = "date"
        param = value
    else:
        raise InvalidTimeArgumentError(
            f'invalid time argument type for time column "{column}" of type {time_type}',
            hint="Pass an interval, a timestamptz, a timestamp or a date as older_than or newer_than.")
    result = spi.execute(f"SELECT $1::{sql_type}::{time_type}", [param], types=[sql_type]).scalar()
    return key_from_value(result, time_type, column)
