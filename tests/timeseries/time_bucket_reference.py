"""TimescaleDB's time_bucket, written out in Python from its documented
semantics, as the tests' reference (no database involved).

- Widths without months: floor((ts - origin) / width) * width + origin, in
  microseconds; default origin 2000-01-03 00:00 (a Monday).
- Widths in months: the first of a month at 00:00, a whole number of widths
  away from the month of the origin's *date* (its day and time do not
  count); default origin 2000-01-01.
- timestamptz without a time zone: the same on the UTC clock.
- ``time_bucket(width, ts, timezone, origin, offset)``: ts less the offset,
  read on the wall clock of the time zone, bucketed there (origin read in the
  same zone), the start turned back into an absolute time as PostgreSQL reads
  a wall clock time in a zone (of two readings, or for a time that does not
  exist, the later instant), moved back by whole widths while it is after
  the time, then the offset added back. Offsets, and widths when moving
  back, are added as PostgreSQL adds an interval to a timestamptz (days and
  months on the session time zone's calendar).

Times are Python datetimes (years 1..9999); an interval is (months, days,
microseconds).
"""

from __future__ import annotations

import calendar
import datetime as dt
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc
US = dt.timedelta(microseconds=1)
DEFAULT_ORIGIN = dt.datetime(2000, 1, 3)
MONTH_ORIGIN = dt.datetime(2000, 1, 1)


def interval_sql(months: int, days: int, us: int) -> str:
    return f"{months} months {days} days {us} microseconds"


def bucket(width: tuple[int, int, int], ts: dt.datetime, origin: dt.datetime | None = None) -> dt.datetime:
    """time_bucket(width, ts timestamp [, origin timestamp])."""
    months, days, us = width
    if months:
        assert not days and not us, "months cannot mix with days or time"
        o = (origin or MONTH_ORIGIN).date()
        index = ts.year * 12 + ts.month - 1
        o_index = o.year * 12 + o.month - 1
        start = (index - o_index) // months * months + o_index
        return dt.datetime(start // 12, start % 12 + 1, 1)
    period = days * 86_400_000_000 + us
    origin = DEFAULT_ORIGIN if origin is None else origin
    return origin + ((ts - origin) // US // period) * period * US


def bucket_tstz(width, ts: dt.datetime, origin: dt.datetime | None = None) -> dt.datetime:
    """time_bucket(width, ts timestamptz [, origin timestamptz]): on the UTC clock."""
    naive = bucket(width, ts.astimezone(UTC).replace(tzinfo=None),
                   None if origin is None else origin.astimezone(UTC).replace(tzinfo=None))
    return naive.replace(tzinfo=UTC)


def wall_to_instant(wall: dt.datetime, zone: str) -> dt.datetime:
    """A wall clock time in a zone as PostgreSQL reads it (timestamp AT TIME
    ZONE zone): of the two readings of a repeated or skipped time, the later
    instant."""
    z = ZoneInfo(zone)
    return max(wall.replace(tzinfo=z, fold=0).astimezone(UTC), wall.replace(tzinfo=z, fold=1).astimezone(UTC))


def add_interval(ts: dt.datetime, interval: tuple[int, int, int], session_zone: str) -> dt.datetime:
    """timestamptz + interval as PostgreSQL computes it: months, then days on
    the session zone's calendar (the day of the month clamped), then the
    microseconds."""
    months, days, us = interval
    z = ZoneInfo(session_zone)
    if months:
        wall = ts.astimezone(z).replace(tzinfo=None)
        y, m = divmod(wall.month - 1 + months, 12)
        year, month = wall.year + y, m + 1
        wall = wall.replace(year=year, month=month, day=min(wall.day, calendar.monthrange(year, month)[1]))
        ts = wall_to_instant(wall, session_zone)
    if days:
        wall = ts.astimezone(z).replace(tzinfo=None) + dt.timedelta(days=days)
        ts = wall_to_instant(wall, session_zone)
    return ts + us * US


def _negate(interval):
    return tuple(-x for x in interval)


def bucket_tstz_offset(width, ts: dt.datetime, offset, session_zone: str = "UTC") -> dt.datetime:
    """time_bucket(width, ts timestamptz, "offset" interval)."""
    shifted = add_interval(ts, _negate(offset), session_zone)
    return add_interval(bucket_tstz(width, shifted), offset, session_zone)


def bucket_in_zone(width, ts: dt.datetime, zone: str, origin: dt.datetime | None = None, offset=None,
                   session_zone: str = "UTC") -> dt.datetime:
    """time_bucket(width, ts timestamptz, timezone [, origin] [, "offset"])."""
    t = ts if offset is None else add_interval(ts, _negate(offset), session_zone)
    wall = t.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    wall_origin = None if origin is None else origin.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    start = wall_to_instant(bucket(width, wall, wall_origin), zone)
    while start > t:
        start = add_interval(start, _negate(width), session_zone)
    return start if offset is None else add_interval(start, offset, session_zone)
