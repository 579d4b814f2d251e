"""Column values of change events: from Postgres's text form (heap rows
decoded by pgoutput, snapshot rows read by COPY) or from the bridge's wire
columns (orochi tables' messages) to JSON values, in Debezium's mapping or
the plain ``json`` format.

Every value goes through one canonical form per type (days, microseconds,
months/days/microseconds ...), so the same row gives the same event whether
it was stored in a heap or an orochi table.  The text forms parsed are those
of a session with ``DateStyle = ISO``, ``TimeZone = UTC``,
``IntervalStyle = iso_8601`` and ``bytea_output = hex`` (what the sidecar
sets), plus the other ISO forms Postgres prints.

Debezium's mapping (its defaults: ``time.precision.mode = adaptive``,
``interval.handling.mode = numeric``, ``binary.handling.mode = bytes``, the
JSON converter without schemas), and the plain format:

==============================  ==================================  ===========================
type                            debezium                            json
==============================  ==================================  ===========================
boolean                         boolean                             boolean
smallint, integer, bigint, oid  number                              number
real, double precision          number (NaN, ±Infinity as strings)  the same
numeric                         precise: base64 of the unscaled     string (exact)
                                value (``{"scale", "value"}`` when
                                the column has no scale); double;
                                string (``decimal_handling``)
text, varchar, char, name,      string                              string
enums, inet, xml, money ...
bytea                           base64 string                       ``\\x...`` hex string
date                            days since 1970-01-01               ``YYYY-MM-DD``
time(p)                         p <= 3: ms, else µs since midnight  ``HH:MM:SS[.ffffff]``
time with time zone             ``HH:MM:SS[.f]Z`` (UTC)             as Postgres prints it
timestamp(p)                    p <= 3: ms, else µs since 1970      ``YYYY-MM-DDTHH:MM:SS[.f]``
timestamp with time zone        ``YYYY-MM-DDTHH:MM:SS[.f]Z``        the same
interval                        µs (a month is 30.4375 days)        ISO 8601 (``P1Y2M3DT4H``)
uuid                            string                              string
json, jsonb                     string                              the JSON value
arrays                          array of the element's mapping      the same
orochi.vector                   array of numbers                    the same
==============================  ==================================  ===========================

Infinite dates and timestamps: ``"infinity"`` / ``"-infinity"`` where the
mapping is a string; where it is a number, the JDBC driver's constants
(±9223372036825200000 for timestamps, ±2147483647 days for dates).
"""

from __future__ import annotations

import base64
import decimal
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from orochi_fdw.bridge.batch import Column, WireKind

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency
    orjson = None

#: Debezium's stand-in for a TOASTed value an update did not change (and so did not log)
UNAVAILABLE = "__debezium_unavailable_value"

PG_EPOCH_DAYS = 10_957
PG_EPOCH_US = PG_EPOCH_DAYS * 86_400_000_000
US_PER_DAY = 86_400_000_000
_I32_MAX, _I32_MIN = 2**31 - 1, -(2**31)
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)
#: µs since 2000-01-01 of 0001-01-01 00:00 and of the last µs of 9999 (numpy prints these years as ISO)
_FIRST_AD_US = -63082281600 * 1_000_000
_LAST_AD_US = 252455615999 * 1_000_000 + 999_999
#: the JDBC driver's timestamps for ±infinity (PGStatement.DATE_POSITIVE_INFINITY)
JDBC_INFINITY = 9223372036825200000
DAYS_PER_MONTH = 365.25 / 12

# canonical kinds
BOOL, INT, FLOAT32, FLOAT64, NUMERIC, TEXT, BYTEA, DATE, TIME, TIMETZ, TIMESTAMP, TIMESTAMPTZ, INTERVAL, \
    UUID, JSON, ARRAY, VECTOR = ("bool", "int", "float32", "float64", "numeric", "text", "bytea", "date", "time",
                                 "timetz", "timestamp", "timestamptz", "interval", "uuid", "json", "array",
                                 "vector")

_KIND_BY_OID = {16: BOOL, 20: INT, 21: INT, 23: INT, 26: INT, 700: FLOAT32, 701: FLOAT64, 1700: NUMERIC,
                17: BYTEA, 1082: DATE, 1083: TIME, 1266: TIMETZ, 1114: TIMESTAMP, 1184: TIMESTAMPTZ,
                1186: INTERVAL, 2950: UUID, 114: JSON, 3802: JSON}


@dataclass(frozen=True)
class TypeInfo:
    """What the conversions need of a column's type (domains resolved).

    Attributes:
        kind: the canonical kind.
        typmod: the type modifier (a domain's when the column has none).
        element: an array's element type.
        name: the type's name, for messages.
    """

    kind: str
    typmod: int = -1
    element: "TypeInfo | None" = None
    name: str = ""

    @property
    def precision(self) -> int:
        """Fractional digits of seconds of a time type (6 when not given)."""
        return self.typmod if self.typmod >= 0 else 6

    @property
    def scale(self) -> int | None:
        """A numeric column's scale, or None for an unconstrained one."""
        if self.typmod < 4:
            return None
        return (((self.typmod - 4) & 0x7FF) ^ 1024) - 1024


def type_info(type_oid: int, typmod: int, lookup: Callable[[int], tuple] | None = None) -> TypeInfo:
    """The :class:`TypeInfo` of a column.

    Args:
        lookup: ``oid -> (typname, nspname, typtype, typbasetype, typelem,
            typcategory, typtypmod)`` from the catalog, for types that are
            not built in (domains, arrays, enums, orochi.vector); None: such
            types are text.
    """
    kind = _KIND_BY_OID.get(type_oid)
    if kind is not None:
        return TypeInfo(kind, typmod, name=str(type_oid))
    if lookup is None:
        return TypeInfo(TEXT, typmod)
    row = lookup(type_oid)
    if row is None:
        return TypeInfo(TEXT, typmod)
    typname, nspname, typtype, basetype, elem, category, domain_typmod = row
    if typtype == "d":
        return type_info(int(basetype), typmod if typmod != -1 else int(domain_typmod), lookup)
    if nspname == "orochi" and typname == "vector":
        return TypeInfo(VECTOR, typmod, name="orochi.vector")
    if category == "A" and elem:
        return TypeInfo(ARRAY, typmod, element=type_info(int(elem), typmod, lookup), name=typname)
    return TypeInfo(TEXT, typmod, name=typname)


# ---------------------------------------------------------------------- parsing text forms

_DATE = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)( BC)?$")
_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")
_TIMESTAMP = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
                        r"(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?|Z)?( BC)?$")
_TIMETZ = re.compile(r"^(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?|Z)$")
_ISO_INTERVAL = re.compile(r"^P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)W)?(?:(-?\d+)D)?"
                           r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+(?:\.\d+)?)S)?)?$")
_PG_INTERVAL_UNIT = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(millennium|millennia|centur\w*|decade\w*|years?|mons?|"
                               r"months?|weeks?|days?|hours?|minutes?|mins?|seconds?|secs?|milliseconds?|"
                               r"microseconds?)\b")
_PG_INTERVAL_TIME = re.compile(r"([+-])?(\d+):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?")


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (astronomical year)."""
    y -= m <= 2
    era = y // 400  # floor division: no correction for negative years
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def _fraction_us(text: str | None) -> int:
    return int((text or "0").ljust(6, "0")[:6])


class Infinity:
    """An infinite date or timestamp (``sign`` +1 or -1)."""

    __slots__ = ("sign",)

    def __init__(self, sign: int):
        self.sign = sign

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Infinity) and other.sign == self.sign

    def __hash__(self) -> int:
        return hash(("infinity", self.sign))

    def __repr__(self) -> str:
        return "infinity" if self.sign > 0 else "-infinity"


def _infinity(text: str) -> Infinity | None:
    if text == "infinity":
        return Infinity(1)
    if text == "-infinity":
        return Infinity(-1)
    return None


def parse_date(text: str) -> int | Infinity:
    """Days since 1970-01-01."""
    inf = _infinity(text)
    if inf is not None:
        return inf
    m = _DATE.match(text)
    if not m:
        raise ValueError(f"not an ISO date: {text!r}")
    year = int(m.group(1))
    if m.group(4):
        year = 1 - year
    return _days_from_civil(year, int(m.group(2)), int(m.group(3)))


def parse_time(text: str) -> int:
    """Microseconds since midnight (24:00:00 is a day's worth)."""
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"not a time: {text!r}")
    return ((int(m.group(1)) * 60 + int(m.group(2))) * 60 + int(m.group(3))) * 1_000_000 + _fraction_us(m.group(4))


def _offset_seconds(sign: str | None, hh: str | None, mm: str | None, ss: str | None) -> int:
    if sign is None:
        return 0
    value = int(hh) * 3600 + int(mm or 0) * 60 + int(ss or 0)
    return -value if sign == "-" else value


def parse_timestamp(text: str) -> int | Infinity:
    """Microseconds since 1970-01-01 00:00 (UTC when the text has an offset)."""
    inf = _infinity(text)
    if inf is not None:
        return inf
    m = _TIMESTAMP.match(text)
    if not m:
        raise ValueError(f"not an ISO timestamp: {text!r}")
    year = int(m.group(1))
    if m.group(12):
        year = 1 - year
    days = _days_from_civil(year, int(m.group(2)), int(m.group(3)))
    secs = (int(m.group(4)) * 60 + int(m.group(5))) * 60 + int(m.group(6))
    secs -= _offset_seconds(m.group(8), m.group(9), m.group(10), m.group(11))
    return (days * 86_400 + secs) * 1_000_000 + _fraction_us(m.group(7))


def parse_timetz(text: str) -> int:
    """Microseconds since midnight UTC (modulo a day)."""
    m = _TIMETZ.match(text)
    if not m:
        raise ValueError(f"not a time with time zone: {text!r}")
    secs = (int(m.group(1)) * 60 + int(m.group(2))) * 60 + int(m.group(3))
    secs -= _offset_seconds(m.group(5), m.group(6), m.group(7), m.group(8))
    return (secs * 1_000_000 + _fraction_us(m.group(4))) % US_PER_DAY


def _seconds_us(text: str) -> int:
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    us = int(whole or 0) * 1_000_000 + _fraction_us(frac)
    return -us if negative else us


def parse_interval(text: str) -> tuple[int, int, int]:
    """(months, days, microseconds) of an interval in ISO 8601 or Postgres's
    own output style."""
    m = _ISO_INTERVAL.match(text)
    if m and text != "P":
        y, mo, w, d, h, mi, s = m.groups()
        months = int(y or 0) * 12 + int(mo or 0)
        days = int(w or 0) * 7 + int(d or 0)
        us = (int(h or 0) * 60 + int(mi or 0)) * 60_000_000 + _seconds_us(s or "0")
        return months, days, us
    months = days = us = 0
    rest = text.replace("@", " ").strip()
    ago = rest.endswith(" ago")
    if ago:
        rest = rest[:-4]
    for match in _PG_INTERVAL_TIME.finditer(rest):
        sign, hh, mm, ss, frac = match.groups()
        value = ((int(hh) * 60 + int(mm)) * 60 + int(ss or 0)) * 1_000_000 + _fraction_us(frac)
        us += -value if sign == "-" else value
    rest = _PG_INTERVAL_TIME.sub(" ", rest)
    for number, unit in _PG_INTERVAL_UNIT.findall(rest):
        n = decimal.Decimal(number)
        if unit.startswith("millenni"):
            months += int(n * 12000)
        elif unit.startswith("centur"):
            months += int(n * 1200)
        elif unit.startswith("decade"):
            months += int(n * 120)
        elif unit.startswith("year"):
            months += int(n * 12)
        elif unit.startswith("mon"):
            months += int(n)
        elif unit.startswith("week"):
            days += int(n * 7)
        elif unit.startswith("day"):
            days += int(n)
        elif unit.startswith("hour"):
            us += int(n * 3_600_000_000)
        elif unit.startswith("min"):
            us += int(n * 60_000_000)
        elif unit.startswith("milli"):
            us += int(n * 1000)
        elif unit.startswith("micro"):
            us += int(n)
        else:
            us += int(n * 1_000_000)
    if ago:
        months, days, us = -months, -days, -us
    return months, days, us


_ARRAY_SPACE = " \t\n\r\v\f"  # what Postgres's array input skips (not every Unicode space)


def parse_array(text: str) -> list:
    """A Postgres array literal as nested lists of element texts (None for NULL)."""
    pos = 0
    if text.startswith("["):  # dimension decoration: [1:2]={...}
        pos = text.index("=") + 1
    n = len(text)

    def parse_level(i: int) -> tuple[list, int]:
        if text[i] != "{":
            raise ValueError(f"not an array literal: {text!r}")
        i += 1
        out: list = []
        if i < n and text[i] == "}":
            return out, i + 1
        while True:
            if text[i] == "{":
                sub, i = parse_level(i)
                out.append(sub)
            elif text[i] == '"':
                i += 1
                buf = []
                while text[i] != '"':
                    if text[i] == "\\":
                        i += 1
                    buf.append(text[i])
                    i += 1
                i += 1
                out.append("".join(buf))
            else:
                j = i
                while text[j] not in ",}":
                    j += 1
                item = text[i:j].strip(_ARRAY_SPACE)
                out.append(None if item.upper() == "NULL" else item)
                i = j
            if text[i] == ",":
                i += 1
                continue
            if text[i] == "}":
                return out, i + 1
            raise ValueError(f"not an array literal: {text!r}")

    value, _ = parse_level(pos)
    return value


def parse_vector(text: str) -> list[float]:
    body = text.strip().strip("[]").strip()
    return [_float32(float(x)) for x in body.split(",")] if body else []


def _float32(value: float) -> float:
    """The shortest decimal that reads back as the same float4 (as Postgres prints it)."""
    return float(str(np.float32(value)))


def parse_bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    out = bytearray()  # escape format
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if text[i + 1] == "\\":
                out.append(92)
                i += 2
            else:
                out.append(int(text[i + 1:i + 4], 8))
                i += 4
        else:
            out += ch.encode()
            i += 1
    return bytes(out)


# ---------------------------------------------------------------------- formatting

def _frac(us: int, trim: bool = True) -> str:
    """``.ffffff`` of microseconds, trailing zeros trimmed (nothing for 0)."""
    if not us:
        return ""
    text = f".{us:06d}"
    return text.rstrip("0") if trim else text


def format_date(days: int) -> str:
    y, m, d = _civil_from_days(days)
    if y <= 0:
        return f"{1 - y:04d}-{m:02d}-{d:02d} BC"
    return f"{y:04d}-{m:02d}-{d:02d}"


def format_time(us: int) -> str:
    secs, frac = divmod(us, 1_000_000)
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}{_frac(frac)}"


def format_timestamp(us: int, zone: str = "") -> str:
    """ISO 8601 (``T`` between date and time); years before 1 as negative
    astronomical years are printed with ``BC`` (Postgres's form)."""
    days, rest = divmod(us, US_PER_DAY)
    y, m, d = _civil_from_days(days)
    time = format_time(rest)
    if y <= 0:
        return f"{1 - y:04d}-{m:02d}-{d:02d}T{time}{zone} BC"
    return f"{y:04d}-{m:02d}-{d:02d}T{time}{zone}"


def format_iso_interval(months: int, days: int, us: int) -> str:
    """Postgres's iso_8601 interval style (``P1Y2M3DT4H5M6.5S``)."""
    years, mons = int(months / 12), months - int(months / 12) * 12
    out = "P"
    if years:
        out += f"{years}Y"
    if mons:
        out += f"{mons}M"
    if days:
        out += f"{days}D"
    if us:
        negative = us < 0
        a = -us if negative else us
        hours, rem = divmod(a, 3_600_000_000)
        minutes, rem = divmod(rem, 60_000_000)
        sign = "-" if negative else ""
        out += "T"
        if hours:
            out += f"{sign}{hours}H"
        if minutes:
            out += f"{sign}{minutes}M"
        if rem:
            secs, frac = divmod(rem, 1_000_000)
            out += f"{sign}{secs}{_frac(frac)}S"
    return out if out != "P" else "PT0S"


def _float_value(v: float) -> Any:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _numeric_precise(text: str, scale: int | None) -> Any:
    """Debezium's precise decimal: the unscaled value's two's complement
    bytes (big-endian, base64); with the scale when the column has none."""
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return None
    if not value.is_finite():
        return None
    exp = -value.as_tuple().exponent if scale is None else scale
    exp = max(exp, 0)
    unscaled = int(value.scaleb(exp))
    length = max(1, (unscaled.bit_length() + 8) // 8)
    raw = base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()
    return raw if scale is not None else {"scale": exp, "value": raw}


# ---------------------------------------------------------------------- converters

def _identity(text: str) -> str:
    return text


def _bool_text(text: str) -> bool:
    return text == "t" or text == "true"


def _float_text(text: str) -> Any:
    return _float_value(float(text))


class Converter:
    """Turns one column's values into event values.

    Args:
        info: the column's type.
        format: ``debezium`` or ``json``.
        decimal_handling: Debezium's ``precise``, ``double`` or ``string``.
    """

    def __init__(self, info: TypeInfo, format: str, decimal_handling: str = "precise"):
        self.info = info
        self.format = format
        self.decimal_handling = decimal_handling
        self.element = Converter(info.element, format, decimal_handling) if info.element is not None else None
        self._text_fn = self._text_function()

    def _text_function(self) -> Callable[[str], Any]:
        """text form -> event value, with fast paths for the forms a session
        with the sidecar's settings prints (the general path otherwise)."""
        kind, dbz = self.info.kind, self.format == "debezium"
        general = self._general

        if kind in (TEXT, UUID) or (kind == JSON and dbz) or \
                (kind == NUMERIC and (not dbz or self.decimal_handling == "string")):
            return _identity
        if kind == INT:
            return int
        if kind == BOOL:
            return _bool_text
        if kind in (FLOAT32, FLOAT64):
            return _float_text
        if kind == TIMESTAMPTZ:
            def tstz(text: str) -> Any:
                if len(text) >= 22 and text[10] == " " and text[4] == "-" and text.endswith("+00"):
                    return text[:10] + "T" + text[11:-3] + "Z"
                return general(text)
            return tstz
        if kind == TIMESTAMP:
            if not dbz:
                def ts_json(text: str) -> Any:
                    if len(text) >= 19 and text[10] == " " and text[4] == "-" and not text.endswith("BC"):
                        return text[:10] + "T" + text[11:]
                    return general(text)
                return ts_json
            millis = self.info.precision <= 3

            def ts_dbz(text: str) -> Any:
                if len(text) >= 19 and text[10] == " " and text[4] == "-" and not text.endswith("BC"):
                    us = ((_days_from_civil(int(text[0:4]), int(text[5:7]), int(text[8:10])) * 86_400
                           + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])) * 1_000_000
                          + (_fraction_us(text[20:]) if len(text) > 20 else 0))
                    return us // 1000 if millis else us
                return general(text)
            return ts_dbz
        if kind == DATE and dbz:
            def date_dbz(text: str) -> Any:
                if len(text) == 10 and text[4] == "-":
                    return _days_from_civil(int(text[0:4]), int(text[5:7]), int(text[8:10]))
                return general(text)
            return date_dbz
        if kind == DATE:
            return lambda text: text if len(text) == 10 and text[4] == "-" else general(text)
        return general

    def _general(self, text: str) -> Any:
        return self.out(self.canonical_text(text))

    # -- canonical values -> event values
    def out(self, value: Any) -> Any:
        """An event value from a canonical one (None stays None)."""
        if value is None:
            return None
        kind, dbz = self.info.kind, self.format == "debezium"
        if kind in (BOOL, INT, TEXT, UUID):
            return value
        if kind in (FLOAT32, FLOAT64):
            return _float_value(value)
        if kind == NUMERIC:
            if not dbz or self.decimal_handling == "string":
                return value
            if self.decimal_handling == "double":
                return _float_value(float(value))
            return _numeric_precise(value, self.info.scale)
        if kind == BYTEA:
            return base64.b64encode(value).decode() if dbz else "\\x" + value.hex()
        if kind == DATE:
            if isinstance(value, Infinity):
                return (_I32_MAX if value.sign > 0 else _I32_MIN) if dbz else repr(value)
            return value if dbz else format_date(value)
        if kind == TIME:
            if dbz:
                return value // 1000 if self.info.precision <= 3 else value
            return format_time(value)
        if kind == TIMETZ:
            return format_time(value) + "Z" if dbz else value
        if kind in (TIMESTAMP, TIMESTAMPTZ):
            if isinstance(value, Infinity):
                if dbz and kind == TIMESTAMP:
                    return JDBC_INFINITY * value.sign
                return repr(value)
            if kind == TIMESTAMPTZ:
                return format_timestamp(value, "Z")
            if dbz:
                return value // 1000 if self.info.precision <= 3 else value
            return format_timestamp(value)
        if kind == INTERVAL:
            months, days, us = value
            if dbz:
                return int(round((months * DAYS_PER_MONTH + days) * US_PER_DAY)) + us
            return format_iso_interval(months, days, us)
        if kind == JSON:
            if dbz:
                return value
            return orjson.loads(value) if orjson is not None else __import__("json").loads(value)
        if kind == ARRAY:
            return [self._element_out(v) for v in value]
        if kind == VECTOR:
            return value
        return value

    def _element_out(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self._element_out(x) for x in v]
        return None if v is None else self.element._text_fn(v)

    # -- text forms -> canonical values
    def canonical_text(self, text: str) -> Any:
        kind = self.info.kind
        if kind == TEXT or kind == UUID or kind == NUMERIC:
            return text
        if kind == INT:
            return int(text)
        if kind == BOOL:
            return text in ("t", "true")
        if kind in (FLOAT32, FLOAT64):
            return float(text)
        if kind == BYTEA:
            return parse_bytea(text)
        if kind == DATE:
            return parse_date(text)
        if kind in (TIMESTAMP, TIMESTAMPTZ):
            return parse_timestamp(text)
        if kind == TIME:
            return parse_time(text)
        if kind == TIMETZ:
            return parse_timetz(text) if self.format == "debezium" else text
        if kind == INTERVAL:
            return parse_interval(text)
        if kind == JSON:
            return text
        if kind == ARRAY:
            return parse_array(text)
        if kind == VECTOR:
            return parse_vector(text)
        return text

    def from_text(self, text: str | None) -> Any:
        """An event value from Postgres's text form (None is NULL)."""
        if text is None:
            return None
        try:
            return self._text_fn(text)
        except (ValueError, IndexError, decimal.InvalidOperation):
            return text  # a form not foreseen: the text itself, rather than nothing

    # -- wire columns (orochi tables) -> event values
    def from_wire(self, col: Column) -> list:
        """The event values of a wire column, row by row."""
        n = len(col)
        values = self._wire_values(col, n)
        if col.validity is not None:
            valid = np.asarray(col.validity).astype(bool).tolist()
            values = [v if ok else None for v, ok in zip(values, valid)]
        return values

    def _timestamps(self, raw: np.ndarray) -> list | None:
        """Wire timestamps (µs since 2000) as event values, vectorized; None
        when some are infinite or outside years 1-9999 (the general path)."""
        if not len(raw) or raw.min() < _FIRST_AD_US or raw.max() > _LAST_AD_US:
            return None
        us = raw.astype(np.int64) + np.int64(PG_EPOCH_US)
        kind, dbz = self.info.kind, self.format == "debezium"
        if kind == TIMESTAMP and dbz:
            return (us // 1000 if self.info.precision <= 3 else us).tolist()
        if kind not in (TIMESTAMP, TIMESTAMPTZ):
            return None
        zone = "Z" if kind == TIMESTAMPTZ else ""
        texts = np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()
        return [(t[:19] + t[19:].rstrip("0").rstrip(".") if t.endswith("0") else t) + zone for t in texts]

    def _wire_values(self, col: Column, n: int) -> list:
        kind, wk = self.info.kind, col.kind
        if wk.is_variable_width:
            offsets = np.asarray(col.offsets).tolist()
            data = bytes(memoryview(col.values)) if not isinstance(col.values, bytes) else col.values
            raw = [data[offsets[i]:offsets[i + 1]] for i in range(n)]
            if wk is WireKind.BYTEA:
                if kind == VECTOR:
                    return [[float(x) for x in np.frombuffer(r, "<f4").astype(str)] for r in raw]
                return [self.out(r) for r in raw]
            return [self.from_text(r.decode("utf-8")) for r in raw]
        values = col.values
        if wk is WireKind.BOOL:
            return np.asarray(values).astype(bool).tolist()
        if wk in (WireKind.INT16, WireKind.INT32, WireKind.INT64):
            return np.asarray(values).tolist()
        if wk is WireKind.FLOAT32:
            return [_float_value(float(x)) for x in np.asarray(values).astype(str)]
        if wk is WireKind.FLOAT64:
            return [_float_value(x) for x in np.asarray(values).tolist()]
        if wk is WireKind.DATE:
            out = []
            for v in np.asarray(values).tolist():
                if v == _I32_MAX or v == _I32_MIN:
                    out.append(self.out(Infinity(1 if v > 0 else -1)))
                else:
                    out.append(self.out(v + PG_EPOCH_DAYS))
            return out
        if wk is WireKind.TIMESTAMP:
            fast = self._timestamps(np.asarray(values))
            if fast is not None:
                return fast
            out = []
            for v in np.asarray(values).tolist():
                if v == _I64_MAX or v == _I64_MIN:
                    out.append(self.out(Infinity(1 if v > 0 else -1)))
                else:
                    out.append(self.out(v + PG_EPOCH_US))
            return out
        if wk is WireKind.TIME:
            return [self.out(v) for v in np.asarray(values).tolist()]
        if wk is WireKind.INTERVAL:
            arr = np.asarray(values)
            return [self.out((int(m), int(d), int(t))) for t, d, m in
                    zip(arr["time"].tolist(), arr["day"].tolist(), arr["month"].tolist())]
        if wk is WireKind.UUID:
            import uuid

            return [str(uuid.UUID(bytes=bytes(v))) for v in np.asarray(values)]
        raise ValueError(f"unknown wire kind {wk}")
