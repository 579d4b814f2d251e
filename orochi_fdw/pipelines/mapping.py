"""From records to rows: JSON paths and CSV fields to columns, and values to
the columns' types.

The mapping (option ``columns``):

- json, jsonl: ``{"column": "$.path.to.field", ...}``; a path is ``$``
  followed by ``.name``, ``["name"]`` or ``[index]`` steps (the ``$.`` may be
  left out: ``"a.b"``).  Without it, every top-level field goes to the
  column of the same name, and a field that names no column makes the record
  a dead letter (unless ``ignore_unknown_fields``).
- csv: ``{"column": "header name" | field index (0-based), ...}``, or a list
  of column names, one per field in order (``null`` skips a field).  Without
  it: by the header's names when there is a header, else the table's
  columns in order.

Columns the mapping leaves out get their defaults (they are not in the
COPY's column list).  A JSON ``null``, a missing field, and a CSV field
equal to the ``null`` option are SQL NULL.

Values are converted here, in Python, to the column's type (see
:class:`Converter`), so that a value that does not convert is a dead letter
naming its column, and the batch goes to PostgreSQL in COPY's binary format.
Types without a converter here (inet, interval, arrays, enums ...) go as text
through the type's input function (the batch then uses COPY's text format).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from orochi_fdw.pipelines.errors import InvalidPipelineOptionError, RecordError

try:  # a much faster parser; the standard one is the fallback and the exact one for numeric columns
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency
    orjson = None


# ---------------------------------------------------------------- columns of the target

#: the columns of a table that a pipeline can write, with their types (domains resolved)
COLUMNS_QUERY = """
WITH RECURSIVE base(oid, base_oid, typmod, depth) AS (
    SELECT t.oid, t.oid, -1, 0 FROM pg_catalog.pg_type t
     WHERE t.oid IN (SELECT atttypid FROM pg_catalog.pg_attribute WHERE attrelid = %(relid)s)
    UNION ALL
    SELECT b.oid, t.typbasetype, t.typtypmod, b.depth + 1
      FROM base b JOIN pg_catalog.pg_type t ON t.oid = b.base_oid
     WHERE t.typtype = 'd'
)
SELECT a.attname::text, a.attnum::int,
       bt.typname::text,
       CASE WHEN a.atttypmod <> -1 THEN a.atttypmod ELSE
            (SELECT b2.typmod FROM base b2 WHERE b2.oid = a.atttypid ORDER BY b2.depth DESC LIMIT 1) END,
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       a.attnotnull, a.atthasdef,
       bt.typcategory::text,
       coalesce(et.typname::text, '')
  FROM pg_catalog.pg_attribute a
  JOIN LATERAL (SELECT b.base_oid FROM base b WHERE b.oid = a.atttypid ORDER BY b.depth DESC LIMIT 1) r ON true
  JOIN pg_catalog.pg_type bt ON bt.oid = r.base_oid
  LEFT JOIN pg_catalog.pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
 WHERE a.attrelid = %(relid)s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 ORDER BY a.attnum
"""


@dataclass(frozen=True)
class ColumnInfo:
    """A column of the target table.

    Attributes:
        name: its name.
        typname: the name of its type (of the base type, for a domain).
        typmod: the type modifier (-1: none).
        sql_type: the type as SQL writes it (``character varying(10)``).
        not_null: declared NOT NULL.
        has_default: has a DEFAULT.
        category: ``pg_type.typcategory`` of the base type.
        element: for arrays, the element type's name, else ''.
    """

    name: str
    typname: str
    typmod: int
    sql_type: str
    not_null: bool = False
    has_default: bool = False
    category: str = ""
    element: str = ""

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "ColumnInfo":
        name, _attnum, typname, typmod, sql_type, not_null, has_default, category, element = row
        return cls(name, typname, -1 if typmod is None else int(typmod), sql_type, bool(not_null),
                   bool(has_default), category or "", element or "")


# ---------------------------------------------------------------- JSON paths

_PATH_STEP = re.compile(r"""\.([A-Za-z_][A-Za-z0-9_$-]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|\['((?:[^'\\]|\\.)*)'\]""")


def parse_path(text: str) -> tuple[str | int, ...]:
    """A JSON path as its steps: field names (str) and array indexes (int).

    >>> parse_path("$.a.b[0]['c d']")
    ('a', 'b', 0, 'c d')

    Raises:
        InvalidPipelineOptionError: not a path of that form.
    """
    if not isinstance(text, str) or not text:
        raise InvalidPipelineOptionError(f"a JSON path must be a non-empty string, got {text!r}")
    rest = text
    if rest.startswith("$"):
        rest = rest[1:]
    elif not rest.startswith("["):
        rest = "." + rest
    steps: list[str | int] = []
    pos = 0
    while pos < len(rest):
        match = _PATH_STEP.match(rest, pos)
        if match is None:
            raise InvalidPipelineOptionError(
                f'invalid JSON path "{text}" at character {pos + (len(text) - len(rest)) + 1}',
                hint='Write paths as $.field.sub[0]["field with spaces"].')
        name, index, dq, sq = match.groups()
        if name is not None:
            steps.append(name)
        elif index is not None:
            steps.append(int(index))
        else:
            quoted = dq if dq is not None else sq
            steps.append(re.sub(r"\\(.)", r"\1", quoted))
        pos = match.end()
    return tuple(steps)


def _getter(steps: tuple[str | int, ...]) -> Callable[[Any], Any]:
    """A function returning the value at ``steps`` of a JSON value (None when absent)."""
    if len(steps) == 1 and isinstance(steps[0], str):
        key = steps[0]

        def get1(doc: Any) -> Any:
            return doc.get(key) if type(doc) is dict else None
        return get1

    def get(doc: Any) -> Any:
        for step in steps:
            if isinstance(step, str):
                if type(doc) is not dict:
                    return None
                doc = doc.get(step)
            else:
                if type(doc) is not list or step >= len(doc):
                    return None
                doc = doc[step]
            if doc is None:
                return None
        return doc
    return get


# ---------------------------------------------------------------- converters

_UTC = datetime.timezone.utc
_INF = float("inf")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
_INT_RE = re.compile(r"\s*[+-]?[0-9]+\s*\Z")
_INT_RANGES = {"int2": (-(1 << 15), (1 << 15) - 1, "smallint"),
               "int4": (-(1 << 31), (1 << 31) - 1, "integer"),
               "int8": (-(1 << 63), (1 << 63) - 1, "bigint")}
_TRUE = {"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"}
_FALSE = {"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"}
_SQL_NAMES = {"float4": "real", "float8": "double precision", "bool": "boolean", "timestamptz":
              "timestamp with time zone", "timestamp": "timestamp without time zone", "date": "date",
              "time": "time without time zone", "uuid": "uuid", "numeric": "numeric", "jsonb": "jsonb",
              "json": "json", "bytea": "bytea", "text": "text", "varchar": "character varying",
              "bpchar": "character"}

#: types converted here and sent in COPY's binary format
BINARY_TYPES = ("int2", "int4", "int8", "float4", "float8", "numeric", "bool", "text", "varchar", "bpchar",
                "timestamptz", "timestamp", "date", "time", "uuid", "json", "jsonb", "bytea")


def _quoted(value: Any) -> str:
    text = value if isinstance(value, str) else _json_text(value)
    if len(text) > 100:
        text = text[:100] + "..."
    return '"' + text + '"'


def _json_text(value: Any) -> str:
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str).decode()
        except TypeError:
            pass
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _bad(sql_name: str, value: Any) -> RecordError:
    return RecordError(f"invalid input syntax for type {sql_name}: {_quoted(value)}", "22P02")


def _check_text(text: str) -> str:
    if "\x00" in text:
        raise RecordError("text cannot contain NUL (0x00) characters", "22021")
    return text


class Converter:
    """Converts the values of one column.

    ``convert(value)`` takes a JSON value (dict, list, str, int, float,
    Decimal, bool) or a CSV field (str) and returns what the COPY writes, or
    raises :class:`RecordError`.  None is never passed (NULL is handled by
    the caller).
    """

    def __init__(self, column: ColumnInfo, epoch_unit: str = "s"):
        self.column = column
        self.binary = column.typname in BINARY_TYPES and column.category != "A"
        self.copy_type = column.typname if self.binary else "text"
        self.needs_decimal = column.typname == "numeric"
        self._epoch_us = _EPOCH_US[epoch_unit]
        maker = getattr(self, "_make_" + column.typname, None) if self.binary else None
        self.convert: Callable[[Any], Any] = maker() if maker is not None else self._make_text_input()

    # integers -------------------------------------------------------------
    def _make_int(self) -> Callable[[Any], Any]:
        low, high, sql_name = _INT_RANGES[self.column.typname]

        def convert(value: Any) -> int:
            kind = type(value)
            if kind is int:
                number = value
            elif kind is str:
                if not _INT_RE.match(value):
                    raise _bad(sql_name, value)
                number = int(value)
            elif kind is float or kind is decimal.Decimal:
                if not (value == value and abs(value) != float("inf")) or value != int(value):
                    raise _bad(sql_name, value)
                number = int(value)
            else:
                raise _bad(sql_name, value)
            if number < low or number > high:
                raise RecordError(f"value {_quoted(str(number))} is out of range for type {sql_name}", "22003")
            return number
        return convert

    _make_int2 = _make_int4 = _make_int8 = _make_int

    # floating point and numeric ------------------------------------------
    def _make_float(self) -> Callable[[Any], Any]:
        sql_name = _SQL_NAMES[self.column.typname]
        largest = 3.4028234663852886e38 if self.column.typname == "float4" else None

        def convert(value: Any) -> float:
            kind = type(value)
            number = None
            if kind is float or kind is int or kind is decimal.Decimal:
                try:
                    number = float(value)
                except OverflowError:
                    number = float("inf")
            elif kind is str and "_" not in value:
                try:
                    number = float(value)
                except ValueError:
                    pass
            if number is None:
                raise _bad(sql_name, value)
            if number in (_INF, -_INF):
                if kind is not str or "inf" not in value.lower():
                    raise RecordError(f"{_quoted(str(value))} is out of range for type {sql_name}", "22003")
            elif largest is not None and abs(number) > largest:
                raise RecordError(f"{_quoted(str(value))} is out of range for type {sql_name}", "22003")
            return number
        return convert

    _make_float4 = _make_float8 = _make_float

    def _make_numeric(self) -> Callable[[Any], Any]:
        def convert(value: Any) -> decimal.Decimal:
            kind = type(value)
            if kind is decimal.Decimal:
                return value
            if kind is int:
                return decimal.Decimal(value)
            if kind is float:
                return decimal.Decimal(repr(value))
            if kind is str and "_" not in value:
                try:
                    number = decimal.Decimal(value.strip())
                except decimal.InvalidOperation:
                    raise _bad("numeric", value) from None
                if number.is_infinite():
                    raise RecordError("infinite numeric values need PostgreSQL 14's numeric infinity; "
                                      "pipelines refuse them", "22P02")
                return number
            raise _bad("numeric", value)
        return convert

    # boolean ------------------------------------------------------------------
    def _make_bool(self) -> Callable[[Any], Any]:
        def convert(value: Any) -> bool:
            kind = type(value)
            if kind is bool:
                return value
            if kind is str:
                word = value.strip().lower()
                if word in _TRUE:
                    return True
                if word in _FALSE:
                    return False
            elif kind is int and value in (0, 1):
                return bool(value)
            raise _bad("boolean", value)
        return convert

    # text -------------------------------------------------------------------
    def _make_text(self) -> Callable[[Any], Any]:
        limit = self.column.typmod - 4 if self.column.typname == "varchar" and self.column.typmod >= 4 else None

        def convert(value: Any) -> str:
            text = value if type(value) is str else _json_text(value)
            if "\x00" in text:
                raise RecordError("text cannot contain NUL (0x00) characters", "22021")
            if limit is not None and len(text) > limit:
                stripped = text.rstrip(" ")
                if len(stripped) > limit:  # PostgreSQL drops trailing spaces past the limit
                    raise RecordError(f"value too long for type character varying({limit})", "22001")
                text = text[:limit]
            return text
        return convert

    _make_varchar = _make_bpchar = _make_text

    # times ------------------------------------------------------------------
    def _from_epoch(self, value: Any, sql_name: str) -> datetime.datetime:
        try:
            micros = round(value * self._epoch_us)
            return _EPOCH + datetime.timedelta(microseconds=micros)
        except (OverflowError, ValueError):
            raise RecordError(f"timestamp out of range: {_quoted(value)}", "22008") from None

    def _make_timestamptz(self) -> Callable[[Any], Any]:
        def convert(value: Any) -> datetime.datetime:
            kind = type(value)
            if kind is str:
                try:
                    moment = datetime.datetime.fromisoformat(value.strip())
                except ValueError:
                    raise _bad("timestamp with time zone", value) from None
                return moment if moment.tzinfo is not None else moment.replace(tzinfo=_UTC)
            if (kind is int or kind is float or kind is decimal.Decimal) and value == value:
                return self._from_epoch(value, "timestamp with time zone")
            raise _bad("timestamp with time zone", value)
        return convert

    def _make_timestamp(self) -> Callable[[Any], Any]:
        def convert(value: Any) -> datetime.datetime:
            kind = type(value)
            if kind is str:
                try:
                    moment = datetime.datetime.fromisoformat(value.strip())
                except ValueError:
                    raise _bad("timestamp without time zone", value) from None
                # as PostgreSQL's timestamp input: an offset in the text is ignored
                return moment.replace(tzinfo=None)
            if (kind is int or kind is float or kind is decimal.Decimal) and value == value:
                return self._from_epoch(value, "timestamp without time zone").replace(tzinfo=None)
            raise _bad("timestamp without time zone", value)
        return convert

    def _make_date(self) -> Callable[[Any], Any]:
        def convert(value: Any) -> datetime.date:
            kind = type(value)
            if kind is str:
                text = value.strip()
                try:
                    return datetime.date.fromisoformat(text)
                except ValueError:
                    try:
                        return datetime.datetime.fromisoformat(text).date()
                    except ValueError:
                        raise _bad("date", value) from None
            if (kind is int or kind is float) and value == value:
                return self._from_epoch(value, "date").date()
            raise _bad("date", value)
        return convert

    def _make_time(self) -> Callable[[Any], Any]:
        def convert(value: Any) -> datetime.time:
            if type(value) is str:
                try:
                    moment = datetime.time.fromisoformat(value.strip())
                except ValueError:
                    raise _bad("time without time zone", value) from None
                return moment.replace(tzinfo=None)
            raise _bad("time without time zone", value)
        return convert

    # others -------------------------------------------------------------------
    def _make_uuid(self) -> Callable[[Any], Any]:
        def convert(value: Any) -> uuid.UUID:
            if type(value) is str:
                try:
                    return uuid.UUID(value.strip())
                except ValueError:
                    pass
            raise _bad("uuid", value)
        return convert

    def _make_json(self) -> Callable[[Any], Any]:
        from psycopg.types.json import Json, Jsonb
        wrap = Jsonb if self.column.typname == "jsonb" else Json

        def convert(value: Any) -> Any:
            if type(value) is str and self._csv:
                try:
                    value = json.loads(value, parse_float=decimal.Decimal)
                except ValueError:
                    raise _bad(self.column.typname, value) from None
            if type(value) is str and "\x00" in value:
                raise RecordError("unsupported Unicode escape sequence: \\u0000 cannot be converted to text",
                                  "22P05")
            return wrap(value, dumps=_json_text)
        return convert

    _make_jsonb = _make_json
    _csv = False  # set by the mapper: CSV fields are JSON text, JSON values are themselves

    def _make_bytea(self) -> Callable[[Any], Any]:
        def convert(value: Any) -> bytes:
            if type(value) is str:
                if value.startswith("\\x"):
                    try:
                        return bytes.fromhex(value[2:])
                    except ValueError:
                        raise _bad("bytea", value) from None
                return value.encode()
            raise _bad("bytea", value)
        return convert

    def convert_column(self, values: list[Any]) -> list[Any]:
        """Every value of a column converted (None stays None); raises on the
        first bad value (the caller then converts value by value to name it)."""
        convert = self.convert
        kind = self.column.typname
        if kind in _INT_RANGES:
            low, high, _ = _INT_RANGES[kind]
            return [v if v.__class__ is int and low <= v <= high else None if v is None else convert(v)
                    for v in values]
        if kind in ("float8", "float4"):
            return [v if v.__class__ is float else None if v is None else convert(v) for v in values]
        if kind == "bool":
            return [v if v.__class__ is bool else None if v is None else convert(v) for v in values]
        if kind == "text" or (kind == "varchar" and self.column.typmod < 4):
            return [v if v.__class__ is str and "\x00" not in v else None if v is None else convert(v)
                    for v in values]
        if kind == "timestamptz":
            parse = datetime.datetime.fromisoformat
            out = [parse(v) if v.__class__ is str else None if v is None else convert(v) for v in values]
            return [d if d is None or d.tzinfo is not None else d.replace(tzinfo=_UTC) for d in out]
        return [None if v is None else convert(v) for v in values]

    def _make_text_input(self) -> Callable[[Any], Any]:
        """Other types: the text form, parsed by the type's input function."""
        is_array = self.column.category == "A"

        def convert(value: Any) -> str:
            kind = type(value)
            if kind is str:
                return _check_text(value)
            if kind is list and is_array:
                return _check_text(_array_literal(value))
            if kind is bool:
                return "true" if value else "false"
            return _check_text(_json_text(value) if kind is dict or kind is list else str(value))
        return convert


def _array_literal(items: list) -> str:
    """A JSON array as a PostgreSQL array literal (nested arrays as dimensions)."""
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
        elif isinstance(item, list):
            parts.append(_array_literal(item))
        else:
            text = ("true" if item else "false") if isinstance(item, bool) else (
                item if isinstance(item, str) else _json_text(item) if isinstance(item, dict) else str(item))
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


# ---------------------------------------------------------------- the mapper

class Mapper:
    """Turns decoded records into rows for the COPY.

    Attributes:
        columns: the target columns written, in COPY order.
        binary: whether every column converts here (COPY binary), else text.
        copy_types: the types to declare for a binary COPY.
        exact_numbers: whether JSON must be parsed with exact decimals.
    """

    def __init__(self, format: str, columns: Sequence[ColumnInfo], options: Mapping[str, Any],
                 csv_header: bool = False):
        self.format = format
        self.all_columns = list(columns)
        by_name = {c.name: c for c in columns}
        self._by_name = by_name
        self.ignore_unknown = bool(options.get("ignore_unknown_fields"))
        self.null_text = options.get("null", "")
        self.csv_header = csv_header
        mapping = options.get("columns")
        epoch_unit = options.get("epoch_unit", "s")
        self._paths: list[Callable[[Any], Any]] | None = None
        self._csv_keys: list[str | int] | None = None
        if format == "csv":
            chosen = self._csv_mapping(mapping, by_name)
        else:
            chosen = self._json_mapping(mapping, by_name)
        self.columns = chosen
        self.converters = []
        for column in chosen:
            conv = Converter(column, epoch_unit)
            if format == "csv" and column.typname in ("json", "jsonb"):
                conv._csv = True
            self.converters.append(conv)
        self.binary = all(c.binary for c in self.converters)
        self.copy_types = [c.copy_type for c in self.converters]
        self.exact_numbers = any(c.needs_decimal for c in self.converters)
        self._not_null = [c.not_null for c in chosen]
        self._names = frozenset(by_name)
        self._header_cache: dict[tuple[str, ...], list[int | None]] = {}

    # ------------------------------------------------------------ building
    def _json_mapping(self, mapping: Any, by_name: dict[str, ColumnInfo]) -> list[ColumnInfo]:
        if mapping is None:
            self._paths = None
            return list(by_name.values())
        if not isinstance(mapping, dict) or not mapping:
            raise InvalidPipelineOptionError(
                'option "columns" of a json pipeline must be an object {"column": "$.path"}')
        chosen = []
        paths = []
        for name, path in mapping.items():
            if name not in by_name:
                raise _unknown_column(name)
            if not isinstance(path, str):
                raise InvalidPipelineOptionError(f'the path of column "{name}" must be a string, got {path!r}')
            paths.append(_getter(parse_path(path)))
            chosen.append(by_name[name])
        self._paths = paths
        return chosen

    def _csv_mapping(self, mapping: Any, by_name: dict[str, ColumnInfo]) -> list[ColumnInfo]:
        self._csv_width: int | None = None  # fields a record has (None: at least the mapped ones)
        if mapping is None:
            if self.csv_header:
                self._csv_keys = None  # by the header's names
                return list(by_name.values())
            self._csv_keys = list(range(len(by_name)))
            self._csv_width = len(by_name)
            return list(by_name.values())
        chosen: list[ColumnInfo] = []
        keys: list[str | int] = []
        if isinstance(mapping, list):
            for index, name in enumerate(mapping):
                if name is None:
                    continue
                if not isinstance(name, str):
                    raise InvalidPipelineOptionError(
                        f'option "columns" of a csv pipeline lists column names, got {name!r}')
                if name not in by_name:
                    raise _unknown_column(name)
                chosen.append(by_name[name])
                keys.append(index)
            self._csv_width = len(mapping)
        elif isinstance(mapping, dict) and mapping:
            for name, key in mapping.items():
                if name not in by_name:
                    raise _unknown_column(name)
                if isinstance(key, bool) or not isinstance(key, (str, int)) or (isinstance(key, int) and key < 0):
                    raise InvalidPipelineOptionError(
                        f'column "{name}" must map to a header name or a field index (from 0), got {key!r}')
                if isinstance(key, str) and not self.csv_header:
                    raise InvalidPipelineOptionError(
                        f'column "{name}" maps to header name "{key}" but the csv has no header',
                        hint='Map columns to field indexes (0, 1 ...), or set "header" to true.')
                chosen.append(by_name[name])
                keys.append(key)
        else:
            raise InvalidPipelineOptionError(
                'option "columns" of a csv pipeline must be a list of column names or an object')
        if len({c.name for c in chosen}) != len(chosen):
            raise InvalidPipelineOptionError('option "columns" maps a column twice')
        self._csv_keys = keys
        return chosen

    # ------------------------------------------------------------ rows
    def _finish(self, values: list[Any]) -> tuple:
        row = []
        for value, conv, not_null in zip(values, self.converters, self._not_null):
            if value is None:
                if not_null:
                    raise RecordError(f'null value in column "{conv.column.name}" violates not-null constraint',
                                      "23502", conv.column.name)
                row.append(None)
                continue
            try:
                row.append(conv.convert(value))
            except RecordError as exc:
                exc.column = conv.column.name
                exc.message = f'column "{conv.column.name}": {exc.message}'
                raise
        return tuple(row)

    def json_row(self, doc: Any) -> tuple:
        """The row of one JSON record.

        Raises:
            RecordError: a field that names no column, or a value that does not convert.
        """
        if self._paths is None:
            if type(doc) is not dict:
                raise RecordError(f"a record must be a JSON object, not {_json_kind(doc)}", "22P02")
            if not self.ignore_unknown:
                for key in doc:
                    if key not in self._by_name:
                        raise RecordError(f'unknown column "{key}": the target has no column of that name',
                                          "42703", key)
            return self._finish([doc.get(c.name) for c in self.columns])
        return self._finish([get(doc) for get in self._paths])

    def _convert_columns(self, columns: list[list[Any]], errors: dict[int, RecordError]) -> list[tuple]:
        """Columns of raw values to rows; bad values go to ``errors`` (the
        first error of a record wins)."""
        converted = []
        for values, conv, not_null in zip(columns, self.converters, self._not_null):
            name = conv.column.name
            if not_null and None in values:
                for i, v in enumerate(values):
                    if v is None and i not in errors:
                        errors[i] = RecordError(f'null value in column "{name}" violates not-null constraint',
                                                "23502", name)
            try:
                converted.append(conv.convert_column(values))
                continue
            except (RecordError, ValueError, TypeError, OverflowError, AttributeError):
                pass
            out = []
            for i, v in enumerate(values):
                if v is None:
                    out.append(None)
                    continue
                try:
                    out.append(conv.convert(v))
                except RecordError as exc:
                    out.append(None)
                    if i not in errors:
                        exc.column = name
                        exc.message = f'column "{name}": {exc.message}'
                        errors[i] = exc
            converted.append(out)
        return list(zip(*converted)) if converted else [()] * len(columns[0] if columns else [])

    def json_rows(self, docs: list[Any], errors: dict[int, RecordError]) -> list[tuple]:
        """The rows of decoded JSON records, column by column (the fast path of
        :meth:`json_row`); ``errors`` holds the records already refused and
        gets those refused here."""
        empty: dict = {}
        if self._paths is None:
            names = self._names
            ignore = self.ignore_unknown
            for i, doc in enumerate(docs):
                if i in errors:
                    continue
                if doc.__class__ is not dict or (not ignore and not doc.keys() <= names):
                    try:
                        self.json_row(doc)
                    except RecordError as exc:
                        errors[i] = exc
            if errors:
                docs = [empty if i in errors else d for i, d in enumerate(docs)]
            columns = [[d.get(c.name) for d in docs] for c in self.columns]
        else:
            if errors:
                docs = [empty if i in errors else d for i, d in enumerate(docs)]
            columns = [[get(d) for d in docs] for get in self._paths]
        if not docs:
            return []
        if not columns:
            return [()] * len(docs)
        return self._convert_columns(columns, errors)

    def _header_indexes(self, header: tuple[str, ...]) -> list[int | None]:
        cached = self._header_cache.get(header)
        if cached is not None:
            return cached
        positions = {name: i for i, name in enumerate(header)}
        if self._csv_keys is None:
            unknown = [name for name in header if name not in self._by_name]
            if unknown:
                raise RecordError(f'unknown column "{unknown[0]}" in the csv header: '
                                  "the target has no column of that name", "42703", unknown[0])
            indexes: list[int | None] = [positions.get(c.name) for c in self.columns]
        else:
            indexes = []
            for key in self._csv_keys:
                if isinstance(key, str):
                    if key not in positions:
                        raise RecordError(f'the csv header has no field "{key}"', "42703")
                    indexes.append(positions[key])
                else:
                    indexes.append(key)
        self._header_cache[header] = indexes
        return indexes

    def csv_row(self, fields: list[str], header: tuple[str, ...] | None = None) -> tuple:
        """The row of one CSV record (its fields as text).

        Raises:
            RecordError: too many or too few fields, or a value that does not convert.
        """
        if self.csv_header:
            if header is None:
                raise RecordError("no csv header was read for this record", "22P04")
            width: int | None = len(header)
            indexes = self._header_indexes(header)
        else:
            width = self._csv_width
            indexes = self._csv_keys  # type: ignore[assignment]
        if width is not None and len(fields) > width:
            raise RecordError(f"extra data after last expected column: {len(fields)} fields, expected {width}",
                              "22P04")
        if width is None:
            width = max(i for i in indexes if i is not None) + 1 if indexes else 0
        if len(fields) < width:
            missing = len(fields)
            name = next((c.name for c, i in zip(self.columns, indexes) if i is not None and i >= missing),
                        None)
            raise RecordError(f'missing data for column "{name}": {len(fields)} fields, expected {width}'
                              if name else f"missing data: {len(fields)} fields, expected {width}", "22P04", name)
        null = self.null_text
        values = []
        for index in indexes:
            if index is None:
                values.append(None)
                continue
            field = fields[index]
            values.append(None if field == null else field)
        return self._finish(values)


def _json_kind(doc: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            decimal.Decimal: "a number"}.get(type(doc), "null")


def _unknown_column(name: str) -> InvalidPipelineOptionError:
    error = InvalidPipelineOptionError(f'column "{name}" of the mapping does not exist in the target',
                                       sqlstate="42703")
    return error


# ---------------------------------------------------------------- JSON decoding

def json_loader(exact_numbers: bool) -> Callable[[bytes], Any]:
    """A function parsing one JSON document (bytes), raising RecordError."""
    def exact(data: bytes) -> Any:
        try:
            return json.loads(data, parse_float=decimal.Decimal)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordError(f"invalid JSON: {exc}", "22P02") from None

    if exact_numbers or orjson is None:
        return exact

    loads = orjson.loads
    decode_error = orjson.JSONDecodeError

    def fast(data: bytes) -> Any:
        try:
            return loads(data)
        except decode_error:
            return exact(data)  # orjson refuses a few valid documents (integers past 64 bits)
    return fast


def b64(data: bytes) -> str:
    """Bytes as base64 text (dead letters travel in JSON)."""
    return base64.b64encode(data).decode()
