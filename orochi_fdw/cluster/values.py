"""Python values as the text Postgres reads back exactly, and the SQL type a
value stands for.

Values go to workers only as parameters in text form (never pasted into
SQL); each parameter is cast in the SQL to the type chosen here, so the
worker compares with the operator the coordinator's own plan used.

The bridge hands a qual's value over as a Python value; its SQL type is
the one its Python type says (``int`` a bigint, ``Decimal`` a numeric ...),
except for strings, which stand for the column's own type: Postgres had
coerced the literal to it.  :func:`param_type` returns None where that is
not sure, and such a qual is then left to the coordinator.
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from typing import Any

from orochi_fdw.bridge.types import Interval, SpecialValue

#: column types whose comparisons with a string are text comparisons
TEXT_TYPES = ("text", "character varying")

#: SQL types of the value types the bridge hands over at execution for
#: values unknown at plan time (Qual.value_type), mapped to the Python type
#: those values then have
_VALUE_TYPES = {
    "smallint": int, "integer": int, "bigint": int, "numeric": decimal.Decimal,
    "real": float, "double precision": float, "boolean": bool, "text": str,
    "character varying": str, "date": datetime.date,
    "timestamp without time zone": datetime.datetime, "timestamp with time zone": datetime.datetime,
    "time without time zone": datetime.time, "interval": Interval, "uuid": uuid.UUID, "bytea": bytes,
}


def to_text(value: Any) -> str | None:
    """The text form of a value that the type's input function reads back
    exactly; None for NULL.

    Raises:
        TypeError: a value of a type with no known text form.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return "NaN"
        if value.is_infinite():
            return "Infinity" if value > 0 else "-Infinity"
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime.datetime):
        text = value.isoformat(sep=" ")
        return text
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, Interval):
        return f"{value.months} mons {value.days} days {value.microseconds} microseconds"
    if isinstance(value, datetime.timedelta):
        return f"{value.days} days {value.seconds * 1_000_000 + value.microseconds} microseconds"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, SpecialValue):
        return value.text
    if isinstance(value, (list, tuple)):
        return array_literal([to_text(v) for v in value])
    raise TypeError(f"no text form for a value of type {type(value).__name__}")


def array_literal(items: list[str | None]) -> str:
    """A one-dimensional array literal of elements in text form."""
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
        else:
            parts.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


def value_sql_type(value: Any, column_type: str) -> str | None:
    """The SQL type a (non-NULL) qual value stands for, compared with a column
    of ``column_type`` (format_type's name, without modifiers); None when not
    sure."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint" if -2 ** 63 <= value < 2 ** 63 else "numeric"
    if isinstance(value, float):
        # a real constant's value is exact as a double, and real-double
        # comparisons of it give what real-real comparisons give
        return "double precision"
    if isinstance(value, decimal.Decimal):
        return "numeric"
    if isinstance(value, str):
        return "text" if column_type in TEXT_TYPES else column_type
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytea"
    if isinstance(value, datetime.datetime):
        return "timestamp with time zone" if value.tzinfo is not None else "timestamp without time zone"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time without time zone" if value.tzinfo is None else None
    if isinstance(value, (Interval, datetime.timedelta)):
        return "interval"
    if isinstance(value, uuid.UUID):
        return "uuid"
    if isinstance(value, SpecialValue):
        return value.type_name if value.type_name in _VALUE_TYPES else None
    return None


def list_sql_type(values: list, column_type: str) -> str | None:
    """The element type of an IN / ANY list: one type for all its non-NULL
    elements, else None."""
    types = {value_sql_type(v, column_type) for v in values if v is not None}
    if not types:
        return column_type if column_type in _VALUE_TYPES else None
    if None in types:
        return None
    if types <= {"bigint", "numeric"}:
        return "numeric" if "numeric" in types else "bigint"
    return types.pop() if len(types) == 1 else None


def planned_type_ok(value_type: str | None, column_type: str) -> bool:
    """Whether a value known only at execution, of SQL type ``value_type``,
    will be shipped with the same type (see :func:`value_sql_type`)."""
    if value_type is None:
        return False
    vt = value_type.split("(", 1)[0]
    if vt in ("smallint", "integer", "bigint"):
        return True  # an int, shipped as bigint: integer comparisons are exact
    if vt in ("numeric", "boolean", "bytea", "date", "timestamp without time zone",
              "timestamp with time zone", "interval", "uuid", "time without time zone"):
        return True
    if vt in ("real", "double precision"):
        return True
    if vt in TEXT_TYPES:
        return column_type in TEXT_TYPES
    return vt == column_type
