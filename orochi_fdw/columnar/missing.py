"""Columns added with ``ALTER TABLE ... ADD COLUMN ... DEFAULT``: the value the
rows stored before read in them.

A heap table gives its existing rows the default (evaluated once, kept as the
column's "missing value"; a volatile default is evaluated per row by a
rewrite). Stripes are immutable and hold the columns they were written with,
so the columnar table does the same as the heap's missing value: when the
DDL event trigger sees a column added (``delta.sync``), the default is
evaluated once (``orochi.column_default``) and kept in
``orochi.columnar_missing_values``; the delta store's rows get it by an
UPDATE. Scans, aggregates and the rewrites of vacuum and compression read it
wherever a stripe lacks the column. A volatile default (``random()``,
``clock_timestamp()``, an identity or a generated column) would need a value
per stored row: it is refused when the table holds rows.

Privileges (docs/SECURITY.md): ``orochi.columnar_missing_values`` belongs to
the extension owner and is read and written by internal statements only.
The default is evaluated, and a kept value converted to a column's new type,
by the role running the ALTER TABLE, in statements of its own (the
expression and the type's input function may be a user's code), never in an
internal one.

A database whose extension is still at 0.1.0 (before ``ALTER EXTENSION orochi
UPDATE``) has neither the table nor ``orochi.column_default``: its columns
added with a default read NULL in the rows stored before, as under 0.1.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.api import ColumnDefinition
from orochi_fdw.columnar.types import from_wire, storage_kind
from orochi_fdw.errors import FeatureNotSupportedError
from orochi_fdw.storage.kinds import get_kind

#: a column's missing value in storage form: (values, validity) of one row
Storage = tuple[Any, Any]


_kept_seen = False  # the table exists in this backend's database (it is not dropped but with the extension)


def _kept() -> bool:
    """Whether this database's catalog keeps missing values (not before the
    update from 0.1.0). Asked until the answer is yes, then remembered: a
    scan does not pay a catalog query for it."""
    global _kept_seen
    if not _kept_seen:
        _kept_seen = bool(spi.prepared("SELECT pg_catalog.to_regclass('orochi.columnar_missing_values') IS NOT NULL",
                                       []).execute([], read_only=True).scalar())
    return _kept_seen


def on_column_added(relid: int, attnum: int, relname: str, column_name: str, has_rows) -> str | None:
    """Decide what the stored rows read in a column just added: its default's
    text form, to be kept (None: NULL, nothing to keep).

    Args:
        has_rows: a callable telling whether the table holds rows.

    Raises:
        FeatureNotSupportedError: a volatile default or a generated column on
            a table that holds rows.
    """
    if not _kept():
        return None
    kind, value = spi.execute("SELECT kind, value FROM orochi.column_default($1, $2)",
                              [relid, attnum], types=["oid", "int2"]).rows[0]
    if kind in ("volatile", "generated"):
        if not has_rows():
            return None
        what = "a volatile default" if kind == "volatile" else "a generated value"
        error = FeatureNotSupportedError(
            f'cannot add column "{column_name}" with {what} to table "{relname}", which holds rows')
        error.detail = ("An orochi table gives the rows it already holds one value, computed once "
                        "(a heap table would compute one per row).")
        error.hint = ("Add the column without a default, set it with ALTER TABLE ... ALTER COLUMN ... "
                      "SET DEFAULT, and fill the existing rows with UPDATE.")
        raise error
    if kind != "constant" or value is None:
        return None
    spi.execute("INSERT INTO orochi.columnar_missing_values (relid, attnum, value) VALUES ($1, $2, $3)"
                " ON CONFLICT (relid, attnum) DO UPDATE SET value = excluded.value",
                [relid, attnum, value], types=["oid", "int2", "text"], internal=True)
    return value


def retyped(relid: int, attnum: int, type_sql: str) -> None:
    """ALTER COLUMN ... TYPE: the kept value is cast to the new type (through
    its text form, as the delta store's rows are), so that it fails now if it
    cannot be, as a heap table's rewrite would."""
    if not _kept():
        return
    row = spi.execute("SELECT value FROM orochi.columnar_missing_values WHERE relid = $1 AND attnum = $2",
                      [relid, attnum], types=["oid", "int2"], internal=True).rows
    if not row:
        return
    # as the caller: the new type's input function may be a user's
    new = spi.execute(f"SELECT ($1::text)::{type_sql}::text", [row[0][0]], types=["text"]).scalar()
    spi.execute("UPDATE orochi.columnar_missing_values SET value = $3 WHERE relid = $1 AND attnum = $2",
                [relid, attnum, new], types=["oid", "int2", "text"], internal=True)


def forget(relids: list[int]) -> None:
    """The tables are dropped."""
    if not _kept():
        return
    spi.execute("DELETE FROM orochi.columnar_missing_values WHERE relid = ANY ($1)", [relids], types=["oid[]"],
                internal=True)


def load(relid: int, columns: dict[str, ColumnDefinition]) -> dict[str, Storage]:
    """The missing values of a table's columns, in storage form (one row each)."""
    from orochi_fdw.columnar import delta

    if not _kept():
        return {}
    rows = spi.prepared("SELECT attnum, value FROM orochi.columnar_missing_values WHERE relid = $1",
                        ["oid"], internal=True).execute([relid], read_only=True).rows
    if not rows:
        return {}
    by_attnum = {c.attnum: name for name, c in columns.items()}
    types = delta._column_types(relid)
    out = {}
    for attnum, value in rows:
        name = by_attnum.get(int(attnum))
        if name is None or int(attnum) not in types:
            continue  # a column dropped since
        column = columns[name]
        rc = delta._read_column(name, column)
        c = f"c{column.attnum}"
        typ = types[int(attnum)][0]
        # typ is the delta column's: a type of pg_catalog or Orochi's own, or text (no user code)
        row = spi.execute(f"SELECT {', '.join(rc.exprs)} FROM (SELECT ($1::text)::{typ} AS {c}) AS d",
                          [value], types=["text"], read_only=True, internal=True).rows[0]
        wire = delta._build_column(rc, [[v] for v in row])
        out[name] = from_wire(wire, storage_kind(column))
    return out


def repeat(value: Storage, kind: str, n: int) -> Storage:
    """``n`` rows of a one-row storage-form value."""
    values, validity = value
    valid = None if validity is None else np.repeat(np.asarray(validity, dtype=bool), n)
    if get_kind(kind).physical == "var":
        offsets, data = values
        one = np.asarray(data, dtype=np.uint8)[int(offsets[0]):int(offsets[1])]
        return (np.arange(n + 1, dtype=np.int64) * len(one), np.tile(one, n)), valid
    return np.repeat(np.asarray(values), n), valid
