"""Python values for Postgres values that have no exact Python counterpart."""

from __future__ import annotations

import datetime
from typing import NamedTuple


class Interval(NamedTuple):
    """A Postgres interval: months, days and microseconds kept apart, as
    Postgres keeps them (one month is not a fixed number of days)."""

    months: int
    days: int
    microseconds: int

    def to_timedelta(self) -> datetime.timedelta:
        """The interval as a timedelta; raises ValueError if it has months."""
        if self.months:
            raise ValueError("an interval with months has no fixed length")
        return datetime.timedelta(days=self.days, microseconds=self.microseconds)

    @classmethod
    def from_timedelta(cls, delta: datetime.timedelta) -> "Interval":
        return cls(0, delta.days, delta.seconds * 1_000_000 + delta.microseconds)


class SpecialValue(NamedTuple):
    """A date or time Python cannot hold: infinity, -infinity, years before
    1 or after 9999.  ``raw`` is Postgres's own integer (days or microseconds
    since 2000-01-01), ``text`` its text form."""

    type_name: str
    raw: int
    text: str

    @property
    def is_infinite(self) -> bool:
        return self.text in ("infinity", "-infinity")


def j2date(jd: int) -> tuple[int, int, int]:
    """Postgres's j2date: (year, month, day) of a Julian day (year <= 0 is
    BC). Plain integer arithmetic, so that the expression JIT compiles it too."""
    julian = jd + 32044
    quad = julian // 146097
    extra = (julian - quad * 146097) * 4 + 3
    julian += 60 + quad * 3 + extra // 146097
    quad = julian // 1461
    julian -= quad * 1461
    y = julian * 4 // 1461
    julian = ((julian + 305) % 365 if y != 0 else (julian + 306) % 366) + 123
    y += quad * 4
    quad = julian * 2141 // 65536
    return y - 4800, (quad + 10) % 12 + 1, julian - 7834 * quad // 256
