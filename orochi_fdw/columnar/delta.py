"""The delta store of a columnar table: a heap table holding the rows of small
writes until :mod:`~orochi_fdw.columnar.maintenance` folds them into stripes.

Each orochi table ``t`` (oid N) has ``orochi.columnar_delta_N``, made when the
table is created (or at its first small write), an extension member (so
``pg_dump`` leaves it out and ``DROP EXTENSION`` takes it), dropped with the
table::

    _rowid  bigint PRIMARY KEY   -- from orochi.columnar_delta_rowid_seq
    c<attnum> <the column's type> -- one per column of t, by attribute number

Rows are ordinary heap rows: WAL-logged, MVCC, row-locked by DELETE. Their row
ids are ``2^46 + _rowid`` (:mod:`~orochi_fdw.columnar.deletes`).

Values cross exactly: rows written come from the bridge's wire batches (or the
new rows of UPDATE) and are handed to SPI as parameters of the columns' own
types; rows read are turned back into wire batches of the same layout a
stripe's chunk group decodes to (dates as days, timestamps as microseconds
since 2000-01-01, text forms for the types stored as text), so whatever
consumes a scan's batches treats delta and stripe batches alike.

The delta table belongs to the extension owner and every statement on it is
internal (``spi.execute(..., internal=True)``: as the extension owner, with
the search path pinned); no other role has any right on it, and the columnar
table's own privileges, which the executor checks, decide who reads and
writes its rows.  So that no user code ever runs with those rights, a column
whose type is not one of pg_catalog's, nor one of Orochi's own base types and
domains (``orochi.vector``, the sketches: schema orochi holds only the
extension owner's objects), is kept as its text form (``text``): a user's
type's input function and a domain's CHECK (a domain, an enum, a composite,
an array of them ...) run in the caller's statement, when the bridge
converts the value, never in the delta table's.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.api import ColumnDefinition, Qual
from orochi_fdw.bridge.batch import (PG_EPOCH_DATE, PG_EPOCH_DATETIME, PG_EPOCH_DATETIME_UTC, WIRE_DTYPES,
                                     Batch, Column, WireKind)
from orochi_fdw.bridge.types import Interval, SpecialValue, j2date
from orochi_fdw.columnar import missing
from orochi_fdw.columnar.deletes import delta_rowids
from orochi_fdw.columnar.types import wire_kind

SCHEMA = "orochi"
#: rows per page when a scan reads the delta store
PAGE_ROWS = 10_000

_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_USECS_PER_DAY = 86_400_000_000
_TIMESTAMPTZ_OID = 1184
_TEXT_OID = 25


# the delta table's columns, with its oid and the row id sequence's
_LAYOUT = """
SELECT c.oid, 'orochi.columnar_delta_rowid_seq'::pg_catalog.regclass::oid, a.attname::text, a.attnum,
       a.atttypid
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
 WHERE c.oid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
"""


def table_name(relid: int) -> str:
    return f"columnar_delta_{int(relid)}"


def qualified_name(relid: int) -> str:
    return f"{SCHEMA}.{table_name(relid)}"


# The delta table is the table of that name only if it is the extension
# owner's (no other role owns anything in schema orochi, but an object of
# that name that is not Orochi's is never taken for one).
_EXISTS = """
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                WHERE c.oid = pg_catalog.to_regclass($1) AND c.relkind = 'r'
                  AND c.relowner = (SELECT e.extowner FROM pg_catalog.pg_extension e
                                     WHERE e.extname = 'orochi'))
"""


def exists(relid: int) -> bool:
    return spi.prepared(_EXISTS, ["text"], internal=True).execute([qualified_name(relid)]).scalar()


# ---------------------------------------------------------------------- DDL

# Per column of the columnar table: the delta column's type as SQL, its
# collation as SQL (NULL: the type's own), and (type, typmod, collation) to
# compare with the delta table's.  Types of pg_catalog, and Orochi's own base
# types and domains (not the row types of the relations in schema orochi,
# whose columns may be of any type), are kept as they are; any other type as
# its text form (see the module docstring).
_TABLE_COLUMNS = """
SELECT a.attnum,
       CASE WHEN s.builtin THEN pg_catalog.format_type(a.atttypid, a.atttypmod) ELSE 'text' END,
       CASE WHEN s.builtin AND a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(c.collname) END,
       CASE WHEN s.builtin THEN a.atttypid ELSE 'pg_catalog.text'::pg_catalog.regtype::oid END,
       CASE WHEN s.builtin THEN a.atttypmod ELSE -1 END,
       CASE WHEN s.builtin THEN a.attcollation ELSE 'pg_catalog.default'::pg_catalog.regcollation::oid END
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  CROSS JOIN LATERAL (
       SELECT t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
              OR (t.typnamespace = 'orochi'::pg_catalog.regnamespace AND t.typtype IN ('b', 'd')
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e
                                   WHERE e.oid = t.typelem AND e.typtype NOT IN ('b', 'd'))) AS builtin) s
  LEFT JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation
  LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = c.collnamespace
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""


def _column_storage(relid: int) -> dict[int, tuple[str, str | None, tuple[int, int, int]]]:
    """attnum -> (delta type as SQL, collation as SQL or None, (type oid,
    typmod, collation oid)) of a table's columns."""
    return {int(a): (t, c, (int(to), int(tm), int(co)))
            for a, t, c, to, tm, co in spi.prepared(_TABLE_COLUMNS, ["oid"], internal=True).execute([relid]).rows}


def _column_types(relid: int) -> dict[int, tuple[str, str | None]]:
    """attnum -> (delta type as SQL, collation as SQL or None) of a table's columns."""
    return {a: (t, c) for a, (t, c, _) in _column_storage(relid).items()}


def _col_sql(attnum: int, typ: str, coll: str | None) -> str:
    return f"c{attnum} {typ}" + (f" COLLATE {coll}" if coll else "")


def sync(relid: int) -> None:
    """Create the delta table of a columnar table, or bring its columns in
    line with the table's (after ADD / DROP / ALTER COLUMN ... TYPE)."""
    spi.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('orochi.columnar_delta'), $1::int)",
                [int(relid) & 0x7FFFFFFF], types=["int8"], internal=True)
    storage = _column_storage(relid)
    want = {a: (t, c) for a, (t, c, _) in storage.items()}
    name = qualified_name(relid)
    if not exists(relid):
        cols = ", ".join(["_rowid bigint PRIMARY KEY"] + [_col_sql(a, t, c) for a, (t, c) in want.items()])
        spi.execute(f"CREATE TABLE {name} ({cols})", internal=True)
        spi.execute(f"ALTER EXTENSION orochi ADD TABLE {name}", internal=True)
        return
    have: dict[int, tuple[int, int, int]] = {}
    for attname, typoid, typmod, colloid in spi.execute(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attcollation"
            "  FROM pg_catalog.pg_attribute a"
            " WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped",
            [name], types=["text"], internal=True).rows:
        if attname.startswith("c") and attname[1:].isdigit():
            have[int(attname[1:])] = (int(typoid), int(typmod), int(colloid))
    actions = []
    for attnum in sorted(set(have) - set(want)):
        actions.append(f"DROP COLUMN c{attnum}")
    added = [attnum for attnum in want if attnum not in have]
    for attnum in added:
        typ, coll = want[attnum]
        actions.append(f"ADD COLUMN {_col_sql(attnum, typ, coll)}")
    if actions:
        spi.execute(f"ALTER TABLE {name} " + ", ".join(actions), internal=True)
    _fill_added_columns(relid, added, want)
    # type changes: compare through the types' oids (names may be qualified differently)
    for attnum, (typ, coll, key) in storage.items():
        if attnum in have and have[attnum] != key:
            # through the text form to the type without its modifier; ALTER
            # then assigns that to the column's type, modifier included (a
            # value too long for a varchar(n) is an error, as in a heap
            # table's ALTER); a type kept as text stays text
            base = "text" if typ == "text" else spi.execute(
                "SELECT pg_catalog.format_type($1, NULL)", [key[0]], types=["oid"], internal=True).scalar()
            spi.execute(f"ALTER TABLE {name} ALTER COLUMN c{attnum} TYPE {typ}"
                        + (f" COLLATE {coll}" if coll else "") + f" USING c{attnum}::text::{base}",
                        internal=True)
            declared = _declared_type(relid, attnum)
            if typ == "text" and declared != "text":
                _check_text_values(name, attnum, declared)
            missing.retyped(relid, attnum, declared)


def _declared_type(relid: int, attnum: int) -> str:
    """A column's type as SQL, modifier included, schema-qualified unless it
    is pg_catalog's."""
    return str(spi.execute("SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a"
                           " WHERE a.attrelid = $1 AND a.attnum = $2", [relid, int(attnum)],
                           types=["oid", "int2"], internal=True).scalar())


def _check_text_values(name: str, attnum: int, type_sql: str) -> None:
    """The values a delta column keeps as text (a type that is not
    pg_catalog's) still read as the column's type after ALTER COLUMN ...
    TYPE, as a heap table's rewrite would check: converted in the caller's
    own statement (the type's input function is a user's), never in an
    internal one."""
    values = spi.execute(f"SELECT pg_catalog.array_agg(c{int(attnum)}) FROM {name}"
                         f" WHERE c{int(attnum)} IS NOT NULL", internal=True).scalar()
    if values:
        spi.execute(f"SELECT ($1::text[])::{type_sql}[]", [list(values)], types=["text[]"])


def _fill_added_columns(relid: int, added: list[int], want: dict[int, tuple[str, str | None]]) -> None:
    """Columns just added (ALTER TABLE ... ADD COLUMN): the rows already
    stored get the column's default, as in a heap table (see
    :mod:`~orochi_fdw.columnar.missing`).  The default is evaluated by the
    role running the ALTER (the event trigger runs as that role); the
    catalog and the delta table are written as the extension owner."""
    if not added:
        return
    relname = spi.execute("SELECT relname::text FROM pg_catalog.pg_class WHERE oid = $1", [relid],
                          types=["oid"]).scalar()

    def has_rows() -> bool:
        return bool(spi.execute(
            "SELECT EXISTS (SELECT 1 FROM orochi.columnar_stripes WHERE relid = $1 AND row_count > deleted_count)"
            f" OR EXISTS (SELECT 1 FROM {qualified_name(relid)})", [relid], types=["oid"], internal=True).scalar())

    for attnum in added:
        column_name = spi.execute("SELECT attname::text FROM pg_catalog.pg_attribute"
                                  " WHERE attrelid = $1 AND attnum = $2", [relid, attnum],
                                  types=["oid", "int2"]).scalar()
        value = missing.on_column_added(relid, attnum, relname, column_name, has_rows)
        if value is not None:
            # the delta column is of a pg_catalog type, or text: no user code
            spi.execute(f"UPDATE {qualified_name(relid)} SET c{int(attnum)} = ($1::text)::{want[attnum][0]}",
                        [value], types=["text"], internal=True)


def drop(relid: int) -> None:
    """Drop the delta table of a dropped columnar table (if any)."""
    if exists(relid):
        name = qualified_name(relid)
        spi.execute(f"ALTER EXTENSION orochi DROP TABLE {name}", internal=True)
        spi.execute(f"DROP TABLE {name}", internal=True)


# ------------------------------------------------------------ wire <-> values

def _date_text(days: int) -> str:
    year, month, day = j2date(days + 2451545)
    bc = year <= 0
    return f"{(1 - year) if bc else year:04d}-{month:02d}-{day:02d}" + (" BC" if bc else "")


def _time_text(usecs: int) -> str:
    secs, us = divmod(usecs, 1_000_000)
    mins, s = divmod(secs, 60)
    h, m = divmod(mins, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{us:06d}"


def _date_value(days: int) -> Any:
    if days == _INT32_MAX:
        return SpecialValue("date", days, "infinity")
    if days == _INT32_MIN:
        return SpecialValue("date", days, "-infinity")
    try:
        return PG_EPOCH_DATE + datetime.timedelta(days=days)
    except OverflowError:
        return SpecialValue("date", days, _date_text(days))


def _timestamp_value(usecs: int, tz: bool) -> Any:
    name = "timestamp with time zone" if tz else "timestamp without time zone"
    if usecs == _INT64_MAX:
        return SpecialValue(name, usecs, "infinity")
    if usecs == _INT64_MIN:
        return SpecialValue(name, usecs, "-infinity")
    try:
        return (PG_EPOCH_DATETIME_UTC if tz else PG_EPOCH_DATETIME) + datetime.timedelta(microseconds=usecs)
    except OverflowError:
        days, rest = divmod(usecs, _USECS_PER_DAY)
        text = _date_text(days)
        bc = text.endswith(" BC")
        text = text.removesuffix(" BC") + " " + _time_text(rest) + ("+00" if tz else "") + (" BC" if bc else "")
        return SpecialValue(name, usecs, text)


def _time_value(usecs: int) -> Any:
    if usecs >= _USECS_PER_DAY:
        return SpecialValue("time without time zone", usecs, "24:00:00")
    return (datetime.datetime.min + datetime.timedelta(microseconds=usecs)).time()


def wire_to_values(col: Column, column: ColumnDefinition) -> list:
    """A wire column's values as Python objects that SPI turns back into
    exactly the same Postgres values for ``column``'s type."""
    n = len(col)
    kind = col.kind
    if n == 1 and col.validity is not None and not col.validity[0]:
        return [None]
    if kind.is_variable_width:
        offsets = col.offsets.tolist()
        data = bytes(col.values)
        if kind is WireKind.BYTEA:
            out = [data[offsets[i]:offsets[i + 1]] for i in range(n)]
        else:
            out = [data[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n)]
    elif kind is WireKind.BOOL:
        out = [bool(v) for v in col.values.tolist()]
    elif kind in (WireKind.INT16, WireKind.INT32, WireKind.INT64, WireKind.FLOAT32, WireKind.FLOAT64):
        out = col.values.tolist()
    elif kind is WireKind.DATE:
        out = [_date_value(v) for v in col.values.tolist()]
    elif kind is WireKind.TIMESTAMP:
        tz = column.type_oid == _TIMESTAMPTZ_OID
        out = [_timestamp_value(v, tz) for v in col.values.tolist()]
    elif kind is WireKind.TIME:
        out = [_time_value(v) for v in col.values.tolist()]
    elif kind is WireKind.INTERVAL:
        v = col.values
        out = [Interval(int(m), int(d), int(t)) for t, d, m in zip(v["time"], v["day"], v["month"])]
    elif kind is WireKind.UUID:
        out = [uuid.UUID(bytes=bytes(v)) for v in col.values]
    else:
        raise ValueError(f"unknown wire kind {kind}")
    if col.validity is not None and n > 1:
        for i, valid in enumerate(col.validity.tolist()):
            if not valid:
                out[i] = None
    return out


@dataclass(frozen=True)
class _ReadColumn:
    """How a scan reads one column from the delta table and rebuilds its
    wire layout."""

    name: str
    exprs: tuple[str, ...]
    kind: WireKind


def _read_column(name: str, column: ColumnDefinition) -> _ReadColumn:
    c = f"c{column.attnum}"
    kind = wire_kind(column)
    if kind is WireKind.DATE:
        exprs = (f"CASE WHEN {c} = 'infinity' THEN {_INT32_MAX} WHEN {c} = '-infinity' THEN {_INT32_MIN}"
                 f" ELSE {c} - date '2000-01-01' END",)
    elif kind is WireKind.TIMESTAMP:
        # days and time of day apart: extract(epoch) rounds far from 2000
        u = f"({c} AT TIME ZONE 'UTC')" if column.type_oid == _TIMESTAMPTZ_OID else c
        exprs = (f"CASE WHEN {c} = 'infinity' THEN {_INT64_MAX}::int8 WHEN {c} = '-infinity'"
                 f" THEN ({_INT64_MIN})::int8"
                 f" ELSE ({u}::date - date '2000-01-01')::int8 * {_USECS_PER_DAY}"
                 f" + (extract(epoch FROM {u}::time) * 1000000)::int8 END",)
    elif kind is WireKind.TIME:
        exprs = (f"(extract(epoch FROM {c}) * 1000000)::int8",)
    elif kind is WireKind.INTERVAL:
        exprs = (f"(extract(hour FROM {c}) * 3600000000 + extract(minute FROM {c}) * 60000000"
                 f" + extract(microseconds FROM {c}))::int8",
                 f"extract(day FROM {c})::int4",
                 f"(extract(year FROM {c}) * 12 + extract(month FROM {c}))::int4")
    elif kind is WireKind.UUID:
        exprs = (f"uuid_send({c})",)
    elif kind is WireKind.CSTRING:
        exprs = (f"{c}::text",)
    else:
        exprs = (c,)
    return _ReadColumn(name, exprs, kind)


def _fixed(values: list, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray | None]:
    nulls = [i for i, v in enumerate(values) if v is None]
    if nulls:
        validity = np.ones(len(values), dtype=np.uint8)
        validity[nulls] = 0
        values = [0 if v is None else v for v in values]
    else:
        validity = None
    return np.array(values, dtype=dtype), validity


def _var(values: list, encode: bool) -> Column | tuple:
    parts = []
    validity = None
    for i, v in enumerate(values):
        if v is None:
            if validity is None:
                validity = np.ones(len(values), dtype=np.uint8)
            validity[i] = 0
            parts.append(b"")
        else:
            parts.append(v.encode("utf-8") if encode else bytes(v))
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.frombuffer(b"".join(parts), dtype=np.uint8), validity, offsets


def _build_column(rc: _ReadColumn, lists: list[list]) -> Column:
    kind = rc.kind
    if kind.is_variable_width:
        data, validity, offsets = _var(lists[0], kind is not WireKind.BYTEA)
        return Column(kind, data, validity, offsets)
    if kind is WireKind.INTERVAL:
        t, validity = _fixed(lists[0], np.dtype(np.int64))
        d, _ = _fixed(lists[1], np.dtype(np.int32))
        m, _ = _fixed(lists[2], np.dtype(np.int32))
        arr = np.zeros(len(t), dtype=WIRE_DTYPES[kind])
        arr["time"], arr["day"], arr["month"] = t, d, m
        return Column(kind, arr, validity)
    if kind is WireKind.UUID:
        vals = lists[0]
        validity = None
        if any(v is None for v in vals):
            validity = np.array([v is not None for v in vals], dtype=np.uint8)
        raw = b"".join(bytes(16) if v is None else bytes(v) for v in vals)
        return Column(kind, np.frombuffer(raw, dtype=WIRE_DTYPES[kind]), validity)
    if kind is WireKind.BOOL:
        arr, validity = _fixed([None if v is None else int(v) for v in lists[0]], np.dtype(np.uint8))
        return Column(kind, arr, validity)
    arr, validity = _fixed(lists[0], WIRE_DTYPES[kind])
    return Column(kind, arr, validity)


# ---------------------------------------------------------------------- the store

def _param_type(value: Any) -> str | None:
    """An explicit parameter type for a qual value whose natural type must be
    kept (a cast to the column's type could round it); None: inferred from
    the column."""
    import decimal

    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "int8"
    if isinstance(value, float):
        return "float8"
    if isinstance(value, decimal.Decimal):
        return "numeric"
    return None


#: the comparisons a scan pushes into the delta table's SQL (pruning binds no other)
_PUSHED_OPERATORS = frozenset({"=", "<", "<=", ">", ">="})

_catalog_collations: dict[str, bool] = {}


def _catalog_collation(name: str) -> bool:
    """Whether ``name`` is a collation of pg_catalog (the bridge names those
    unqualified, a user's schema-qualified)."""
    known = _catalog_collations.get(name)
    if known is None:
        known = _catalog_collations[name] = bool(spi.prepared(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_collation"
            " WHERE collnamespace = 'pg_catalog'::pg_catalog.regnamespace AND collname = $1)",
            ["name"], internal=True).execute([name]).scalar())
    return known


def _array_element(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "{" + ",".join(_array_element(v) for v in value) + "}"
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_form(value: Any) -> str | None:
    """A value of a column kept as text in the delta table (a type that is
    not pg_catalog's), as its type's input function reads it: UPDATE hands
    arrays over as lists, other values as their text form already."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return _array_element(list(value))
    return str(value)


#: the SQL type names of the values of a date / time column's own type
_TIME_TYPES = {1082: ("date",), 1114: ("timestamp without time zone", "timestamp"),
               1184: ("timestamp with time zone", "timestamptz"), 1083: ("time without time zone", "time")}


def _own_type(column: ColumnDefinition, value: Any) -> bool:
    """Whether a qual's value (each item of a list) is of a date or time
    column's own type: a parameter without an explicit type takes the
    column's, which would cut a timestamp compared with a date column to
    its day, or drop a timestamptz's offset (numbers have explicit types;
    other values arrive in their column's type)."""
    names = _TIME_TYPES.get(column.type_oid)
    if names is None or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_own_type(column, v) for v in value)
    if isinstance(value, SpecialValue):
        return value.type_name in names
    if column.type_oid == 1082:
        return type(value) is datetime.date
    if column.type_oid == 1083:
        return type(value) is datetime.time and value.tzinfo is None
    return type(value) is datetime.datetime and (value.tzinfo is not None) == (column.type_oid == 1184)


def _param_value(value: Any) -> Any:
    """A qual value as an SPI parameter (SpecialValue, a tuple, by its text)."""
    return value.text if isinstance(value, SpecialValue) else value


class DeltaStore:
    """The delta table of one columnar table, as its wrapper instance uses it."""

    def __init__(self, relid: int, columns: dict[str, ColumnDefinition]):
        self.relid = int(relid)
        self.columns = columns
        self.name = qualified_name(relid)
        self._known = False
        self._types: dict[int, tuple[str, str | None]] | None = None
        self._as_text: set[int] | None = None  # attnums of user types kept as text
        self._inserts: dict[tuple[tuple[str, ...], int], spi.Plan] = {}

    # -- existence ----------------------------------------------------------

    def exists(self) -> bool:
        """Whether the delta table exists (once it does, it stays until DROP)."""
        if not self._known:
            self._known = exists(self.relid)
        return self._known

    def ensure(self) -> None:
        if not self.exists():
            sync(self.relid)
            self._known = True

    def _column_types(self) -> dict[int, tuple[str, str | None]]:
        if self._types is None:
            self._types = _column_types(self.relid)
        return self._types

    def _text_columns(self) -> set[int]:
        """The attnums whose values the delta table keeps as text though the
        column's type is another (see the module docstring)."""
        if self._as_text is None:
            self._as_text = {c.attnum for c in self.columns.values()
                             if c.type_oid != _TEXT_OID and self._column_types().get(c.attnum, ("",))[0] == "text"}
        return self._as_text

    # -- writing ------------------------------------------------------------

    def insert_values(self, names: Sequence[str], values: dict[str, list], nrows: int) -> None:
        """Insert rows given column by column as Python values (as
        :func:`wire_to_values` makes them, or UPDATE's new rows)."""
        if nrows <= 0:
            return
        self.ensure()
        chunk = max(1, min(256, 30_000 // max(1, len(names))))
        as_text = self._text_columns()
        lists = [[text_form(v) for v in values[name]] if self.columns[name].attnum in as_text else values[name]
                 for name in names]
        for start in range(0, nrows, chunk):
            n = min(chunk, nrows - start)
            if n == 1:
                params = [v[start] for v in lists]
            else:
                params = [v for row in zip(*(col[start:start + n] for col in lists)) for v in row]
            self._insert_plan(tuple(names), n).execute(params)

    def fast_insert_layout(self) -> tuple[int, int, int, dict[int, int]] | None:
        """(delta table oid, row id sequence oid, ``_rowid``'s attno,
        {column attnum: delta attno}) for the bridge's one-row INSERT path,
        or None when a column's delta column is not of the column's own type
        (kept as text) or is missing."""
        rows = spi.prepared(_LAYOUT, ["text"], internal=True).execute([self.name]).rows
        if not rows:
            return None
        delta_oid, seq_oid = int(rows[0][0]), int(rows[0][1])
        attrs = {name: (int(attno), int(typ)) for _, _, name, attno, typ in rows}
        rowid = attrs.get("_rowid")
        if rowid is None or rowid[1] != 20:
            return None
        layout = {}
        for column in self.columns.values():
            found = attrs.get(f"c{int(column.attnum)}")
            if found is None or found[1] != int(column.type_oid):
                return None
            layout[int(column.attnum)] = found[0]
        return delta_oid, seq_oid, rowid[0], layout

    def _insert_plan(self, names: tuple[str, ...], n: int) -> spi.Plan:
        """INSERT of n rows of the columns ``names``, prepared once."""
        plan = self._inserts.get((names, n))
        if plan is None:
            types = self._column_types()
            cols = [self.columns[name] for name in names]
            collist = ", ".join(["_rowid"] + [f"c{c.attnum}" for c in cols])
            rows_sql = []
            k = 1
            for _ in range(n):
                ph = ", ".join(f"${k + j}" for j in range(len(cols)))
                k += len(cols)
                rows_sql.append("(nextval('orochi.columnar_delta_rowid_seq')" + (", " + ph if cols else "") + ")")
            query = f"INSERT INTO {self.name} ({collist}) VALUES " + ", ".join(rows_sql)
            plan = self._inserts[(names, n)] = spi.prepared(query, [types[c.attnum][0] for c in cols] * n,
                                                            internal=True)
        return plan

    def insert_batch(self, batch: Batch, start: int = 0, stop: int | None = None) -> int:
        """Insert rows [start, stop) of a wire batch from the bridge."""
        stop = batch.nrows if stop is None else stop
        names = list(self.columns)
        values = {}
        for name in names:
            col = batch.columns.get(name)
            if col is None:
                values[name] = [None] * batch.nrows
            else:
                values[name] = wire_to_values(col, self.columns[name])
        if start or stop != batch.nrows:
            values = {k: v[start:stop] for k, v in values.items()}
        self.insert_values(names, values, stop - start)
        return stop - start

    def delete(self, ids: Sequence[int]) -> set[int]:
        """Delete delta rows by ``_rowid``; returns the ids that were there
        (an id missing was deleted or compacted by someone else meanwhile)."""
        if not ids or not self.exists():
            return set()
        res = spi.prepared(f"DELETE FROM {self.name} WHERE _rowid = ANY ($1) RETURNING _rowid",
                           ["bigint[]"], internal=True).execute([sorted(int(i) for i in ids)])
        return {int(r[0]) for r in res.rows}

    def time_range(self, attnum: int, ids: Sequence[int]) -> list[tuple[Any, Any]]:
        """[(min, max)] of column ``attnum`` over the delta rows ``ids`` (an
        empty list when none of them has a value)."""
        if not ids or not self.exists():
            return []
        rows = spi.prepared(f"SELECT min(c{int(attnum)}), max(c{int(attnum)}) FROM {self.name}"
                            " WHERE _rowid = ANY ($1)", ["bigint[]"], internal=True).execute(
            [sorted(int(i) for i in ids)]).rows
        return [(lo, hi) for lo, hi in rows if lo is not None]

    def truncate(self) -> None:
        if self.exists():
            spi.execute(f"TRUNCATE {self.name}", internal=True)

    # -- reading ------------------------------------------------------------

    def _pushed_quals(self, quals: Any, first_param: int) -> tuple[list[str], list, list]:
        """SQL conditions (on the delta table) for the quals that also prune
        (their bound form's ``prune`` is not trivially true: the scan's one
        binding, :meth:`ColumnarTable.bound_quals`, or raw quals bound here),
        each as written, when its value has the column's own type (the
        parameter's type is then the column's). They only pre-filter: the
        filter kernels apply the exact quals to the delta rows as to the
        stripes', and Postgres rechecks the others."""
        from orochi_fdw.bridge import runtime
        from orochi_fdw.query.predicates import ALWAYS_TRUE, BoundQuals

        if not isinstance(quals, BoundQuals):
            from orochi_fdw.columnar.filter import collation_policy
            from orochi_fdw.columnar.table import _collation_info
            from orochi_fdw.query.predicates import bind_quals

            quals = bind_quals(quals, self.columns, collation_policy(_collation_info()))
        conds, params, types = [], [], []
        k = first_param
        for b in quals.quals:
            q = b.qual
            column = self.columns.get(q.field_name)
            if column is None or q.value is runtime.UNKNOWN or b.prune is ALWAYS_TRUE:
                continue
            if q.is_list_operator and not (q.operator_name == "=" and q.list_any_or_all
                                           and isinstance(q.value, (list, tuple))):
                continue  # only = ANY (list) is pushed
            if not _own_type(column, q.value):
                continue
            c = f"c{column.attnum}"
            coll = ""
            if q.collation and q.collation != "default":
                if not _catalog_collation(q.collation):
                    continue  # a user's collation (schema-qualified by the bridge): not pushed
                coll = f" COLLATE pg_catalog.{spi.quote_ident(q.collation)}"
            if q.value is None:
                conds.append(f"{c} IS {'NOT ' if q.operator == '<>' else ''}NULL")
                continue
            if q.is_list_operator:
                values = [_param_value(v) for v in q.value if v is not None]
                if not values:
                    conds.append("false")
                    continue
                kinds = {_param_type(v) for v in values}
                elem = kinds.pop() if len(kinds) == 1 else None
                if elem is None and any(_param_type(v) for v in values):
                    continue
                conds.append(f"{c}{coll} = ANY (${k})")
                types.append(f"{elem}[]" if elem else f"{self._column_types()[column.attnum][0]}[]")
            else:
                if q.operator not in _PUSHED_OPERATORS:
                    continue
                conds.append(f"{c}{coll} {q.operator} ${k}")
                types.append(_param_type(q.value))
                values = _param_value(q.value)
            params.append(values)
            k += 1
        return conds, params, types

    def scan(self, needed: Sequence[str], quals: Sequence[Qual] = (), read_only: bool = True,
             page_rows: int = PAGE_ROWS) -> Iterator[Batch]:
        """The delta rows (visible to the running statement's snapshot), page
        by page in ``_rowid`` order, as batches of the ``needed`` columns with
        their row ids."""
        if not self.exists():
            return
        reads = [_read_column(n, self.columns[n]) for n in needed if n in self.columns]
        select = ["_rowid"] + [e for rc in reads for e in rc.exprs]
        conds, qparams, qtypes = self._pushed_quals(quals, 2)
        where = " AND ".join(["_rowid > $1"] + conds)
        query = (f"SELECT {', '.join(select)} FROM {self.name} WHERE {where}"
                 f" ORDER BY _rowid LIMIT {int(page_rows)}")
        plan = spi.prepared(query, ["int8"] + qtypes, internal=True)
        last = -1
        while True:
            rows = plan.execute([last] + qparams, read_only=read_only).rows
            if not rows:
                return
            cols = list(zip(*rows))
            ids = np.array(cols[0], dtype=np.int64)
            out = {}
            i = 1
            for rc in reads:
                out[rc.name] = _build_column(rc, [list(cols[i + j]) for j in range(len(rc.exprs))])
                i += len(rc.exprs)
            last = int(ids[-1])
            yield DeltaBatch(len(rows), out, delta_rowids(ids), ids)
            if len(rows) < page_rows:
                return

    def count(self, read_only: bool = True) -> int:
        if not self.exists():
            return 0
        return int(spi.prepared(f"SELECT count(*) FROM {self.name}", internal=True).execute(
            read_only=read_only).scalar())

    def size(self) -> tuple[int, int]:
        if not self.exists():
            return (0, 0)
        row = spi.execute(f"SELECT count(*), pg_catalog.pg_total_relation_size($1::pg_catalog.regclass)"
                          f" FROM {self.name}", [self.name], types=["text"], internal=True).rows[0]
        return int(row[0]), int(row[1])


class DeltaBatch(Batch):
    """A batch of delta rows; ``ids`` are their ``_rowid`` values."""

    __slots__ = ("ids",)

    def __init__(self, nrows, columns, rowids, ids):
        super().__init__(nrows, columns, rowids)
        self.ids = ids
