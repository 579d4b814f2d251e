"""The stripe catalog: rows in ``orochi.columnar_stripes`` and
``orochi.columnar_stripe_columns``, read and written through SPI in the
current transaction.

Per chunk group statistics stay in each stripe file's footer; the catalog
keeps, per stripe and column, the bounds over the whole stripe, so that a
scan skips stripes without opening their files and then chunk groups from
the footer of the files it does open.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from orochi_fdw.bridge import spi
from orochi_fdw.catalog import files
from orochi_fdw.storage.kinds import get_kind

_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


# ---------------------------------------------------------------- bounds

def encode_bound(kind: str, value: Any) -> bytes | None:
    """A min / max statistic as stored in the catalog (bytea)."""
    if value is None:
        return None
    k = get_kind(kind)
    if k.physical == "int":
        return _I64.pack(int(value))
    if k.physical == "float":
        return _F64.pack(float(value))
    if k.physical == "bool":
        return b"\x01" if value else b"\x00"
    return bytes(value)


def decode_bound(kind: str, raw: bytes | None) -> Any:
    """The inverse of :func:`encode_bound`."""
    if raw is None:
        return None
    k = get_kind(kind)
    raw = bytes(raw)
    if k.physical == "int":
        return _I64.unpack(raw)[0]
    if k.physical == "float":
        return _F64.unpack(raw)[0]
    if k.physical == "bool":
        return raw != b"\x00"
    return raw


# ---------------------------------------------------------------- records

@dataclass
class ColumnRecord:
    """One column of one stripe, as the catalog keeps it."""

    attnum: int
    column_name: str
    kind: str
    type_name: str
    null_count: int
    min_value: Any = None
    max_value: Any = None
    has_nan: bool = False
    compressed_bytes: int = 0
    raw_bytes: int = 0
    codecs: list[str] = field(default_factory=list)
    hll: bytes | None = None  # HyperLogLog sketch of the values (columnar.stripe_sketches)


@dataclass
class StripeRecord:
    """One stripe, as the catalog keeps it."""

    stripe_id: int
    relid: int
    file_path: str
    row_count: int
    chunk_group_count: int
    chunk_group_size: int
    file_bytes: int
    raw_bytes: int
    compression: str
    compression_level: int | None
    created_xid: int
    columns: dict[int, ColumnRecord] = field(default_factory=dict)  # by attnum
    deleted_count: int = 0
    delete_bitmap: bytes | None = None  # roaring bitmap of deleted offsets (columnar.deletes)
    chunk_id: int | None = None  # the hypertable chunk it belongs to (orochi.hypertable_chunks)

    @property
    def live_rows(self) -> int:
        return self.row_count - self.deleted_count


# ---------------------------------------------------------------- writing

_NEXT_ID = "SELECT nextval('orochi.columnar_stripe_id_seq')"
_CURRENT_XID = "SELECT pg_current_xact_id()::text"

_INSERT_STRIPE = """
INSERT INTO orochi.columnar_stripes
    (stripe_id, relid, file_path, row_count, chunk_group_count, chunk_group_size,
     file_bytes, raw_bytes, compression, compression_level, created_xid, deleted_count,
     delete_bitmap, chunk_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::xid8, $12, $13, $14)
"""
_INSERT_STRIPE_TYPES = ["bigint", "oid", "text", "bigint", "integer", "integer", "bigint",
                        "bigint", "text", "integer", "text", "bigint", "bytea", "bigint"]

_INSERT_COLUMN = """
INSERT INTO orochi.columnar_stripe_columns
    (stripe_id, relid, attnum, column_name, kind, type_name, null_count, min_value,
     max_value, has_nan, compressed_bytes, raw_bytes, codecs)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, string_to_array($13, ','))
"""
_INSERT_COLUMN_TYPES = ["bigint", "oid", "smallint", "text", "text", "text", "bigint", "bytea",
                        "bytea", "boolean", "bigint", "bigint", "text"]
# with a stripe sketch (a catalog of 0.1.0, before ALTER EXTENSION UPDATE,
# has no hll column: rows without a sketch do not name it)
_INSERT_COLUMN_HLL = _INSERT_COLUMN.replace("codecs)", "codecs, hll)").replace(
    "string_to_array($13, ','))", "string_to_array($13, ','), $14)")


def next_stripe_id() -> int:
    return int(spi.prepared(_NEXT_ID, internal=True).execute().scalar())


def current_xid() -> int:
    """The top-level transaction's full id (assigned now if need be)."""
    return int(spi.prepared(_CURRENT_XID, internal=True).execute().scalar())


def insert_stripe(stripe: StripeRecord) -> None:
    """Insert a stripe's rows (its file must already be complete)."""
    spi.prepared(_INSERT_STRIPE, _INSERT_STRIPE_TYPES, internal=True).execute([
        stripe.stripe_id, stripe.relid, files.catalog_path(stripe.file_path), stripe.row_count,
        stripe.chunk_group_count, stripe.chunk_group_size, stripe.file_bytes,
        stripe.raw_bytes, stripe.compression, stripe.compression_level,
        str(stripe.created_xid), stripe.deleted_count, stripe.delete_bitmap, stripe.chunk_id,
    ])
    for col in stripe.columns.values():
        values = [
            stripe.stripe_id, stripe.relid, col.attnum, col.column_name, col.kind,
            col.type_name, col.null_count, encode_bound(col.kind, col.min_value),
            encode_bound(col.kind, col.max_value), col.has_nan, col.compressed_bytes,
            col.raw_bytes, ",".join(col.codecs),
        ]
        if col.hll is None:
            spi.prepared(_INSERT_COLUMN, _INSERT_COLUMN_TYPES, internal=True).execute(values)
        else:
            spi.prepared(_INSERT_COLUMN_HLL, _INSERT_COLUMN_TYPES + ["bytea"], internal=True).execute(
                values + [col.hll])
    # the stripe's vector index files, if its table has vector indexes
    from orochi_fdw.vector.indexes import stripe_inserted

    stripe_inserted(stripe)


def delete_tables(relids: Sequence[int]) -> list[tuple[int, str]]:
    """Delete every stripe row of the tables; returns (stripe id, file path)
    of each."""
    relids = [int(r) for r in relids]
    spi.prepared("DELETE FROM orochi.columnar_stripe_columns WHERE relid = ANY ($1)",
                 ["oid[]"], internal=True).execute([relids])
    res = spi.prepared(
        "DELETE FROM orochi.columnar_stripes WHERE relid = ANY ($1) RETURNING stripe_id, file_path",
        ["oid[]"], internal=True).execute([relids])
    return [(int(r[0]), files.resolve(r[1])) for r in res.rows]


# ---------------------------------------------------------------- reading

_TABLE_STRIPES = """
SELECT stripe_id, file_path, row_count, chunk_group_count, file_bytes, deleted_count, delete_bitmap,
       chunk_id
  FROM orochi.columnar_stripes
 WHERE relid = $1
 ORDER BY stripe_id
"""

_TABLE_COLUMNS = """
SELECT stripe_id, attnum, column_name, kind, type_name, null_count, min_value, max_value,
       has_nan, compressed_bytes, raw_bytes
  FROM orochi.columnar_stripe_columns
 WHERE relid = $1 AND attnum = ANY ($2)
"""


def table_stripes(relid: int, attnums: Iterable[int] = (), read_only: bool = True) -> list[StripeRecord]:
    """The table's stripes visible to this transaction, in stripe id order,
    with their delete bitmaps and the catalog rows of the columns ``attnums``
    (a column a stripe does not have is absent from its ``columns``).

    ``read_only``: read under the snapshot of the SQL statement running (a
    scan's), so that every query of one statement sees the same catalog, also
    in READ COMMITTED; else under a new snapshot."""
    rows = spi.prepared(_TABLE_STRIPES, ["oid"], internal=True).execute([relid], read_only=read_only).rows
    stripes = {}
    out = []
    for stripe_id, path, nrows, ngroups, file_bytes, ndeleted, bitmap, chunk_id in rows:
        s = StripeRecord(int(stripe_id), relid, files.resolve(path), int(nrows), int(ngroups), 0,
                         int(file_bytes), 0, "", None, 0, deleted_count=int(ndeleted),
                         delete_bitmap=None if bitmap is None else bytes(bitmap),
                         chunk_id=None if chunk_id is None else int(chunk_id))
        stripes[s.stripe_id] = s
        out.append(s)
    attnums = sorted({int(a) for a in attnums})
    if out and attnums:
        for (stripe_id, attnum, name, kind, type_name, nulls, mn, mx, has_nan, cbytes,
             rbytes) in spi.prepared(_TABLE_COLUMNS, ["oid", "smallint[]"], internal=True).execute(
                [relid, attnums], read_only=read_only).rows:
            s = stripes.get(int(stripe_id))
            if s is None:
                continue
            s.columns[int(attnum)] = ColumnRecord(
                int(attnum), name, kind, type_name, int(nulls), decode_bound(kind, mn),
                decode_bound(kind, mx), bool(has_nan), int(cbytes), int(rbytes))
    return out


_COLUMN_SKETCHES = """
SELECT stripe_id, attnum, hll
  FROM orochi.columnar_stripe_columns
 WHERE relid = $1 AND attnum = ANY ($2) AND hll IS NOT NULL
"""


def column_sketches(relid: int, attnums: Iterable[int]) -> dict[tuple[int, int], bytes]:
    """The stored HyperLogLog sketches of columns ``attnums`` of a table's
    stripes, by (stripe id, attnum), under the running statement's snapshot."""
    rows = spi.prepared(_COLUMN_SKETCHES, ["oid", "smallint[]"], internal=True).execute(
        [relid, sorted({int(a) for a in attnums})], read_only=True).rows
    return {(int(s), int(a)): bytes(h) for s, a, h in rows}


def table_totals(relid: int) -> tuple[int, int, int]:
    """(stripes, live rows, file bytes) of a table."""
    row = spi.prepared(
        "SELECT count(*), coalesce(sum(row_count - deleted_count), 0), coalesce(sum(file_bytes), 0)"
        "  FROM orochi.columnar_stripes WHERE relid = $1", ["oid"], internal=True).execute([relid]).rows[0]
    return int(row[0]), int(row[1]), int(row[2])


def column_raw_bytes(relid: int) -> dict[int, int]:
    """Raw bytes stored per column (attnum) over all of a table's stripes."""
    res = spi.prepared(
        "SELECT attnum, sum(raw_bytes) FROM orochi.columnar_stripe_columns"
        " WHERE relid = $1 GROUP BY attnum", ["oid"], internal=True).execute([relid])
    return {int(a): int(b) for a, b in res.rows}


def visible_stripe_ids(stripe_ids: Sequence[int]) -> set[int]:
    """Which of ``stripe_ids`` have a row this transaction sees."""
    if not stripe_ids:
        return set()
    res = spi.prepared("SELECT stripe_id FROM orochi.columnar_stripes WHERE stripe_id = ANY ($1)",
                       ["bigint[]"], internal=True).execute([list(stripe_ids)])
    return {int(r[0]) for r in res.rows}


def data_dirs_in_use() -> set[str]:
    """Data directories outside the default one that hold this database's
    stripes: the folder three levels above each stripe file named by an
    absolute path (``<data_dir>/<db>/<table>/<file>``)."""
    import os

    res = spi.execute("SELECT DISTINCT regexp_replace(file_path, '/[^/]*/[^/]*/[^/]*$', '')"
                      "  FROM orochi.columnar_stripes WHERE file_path LIKE '/%'", internal=True)
    return {os.path.normpath(r[0]) for r in res.rows if r[0]}


# ---------------------------------------------------------------- deletes and rewrites

_LOCK_STRIPES = """
SELECT stripe_id, row_count, deleted_count, delete_bitmap
  FROM orochi.columnar_stripes
 WHERE stripe_id = ANY ($1)
 ORDER BY stripe_id
   FOR NO KEY UPDATE
"""

_LOCK_STRIPES_SKIP = _LOCK_STRIPES.replace("FOR NO KEY UPDATE", "FOR NO KEY UPDATE SKIP LOCKED")


def lock_stripes(stripe_ids: Sequence[int], skip_locked: bool = False) -> dict[int, tuple[int, int, bytes | None]]:
    """Lock the catalog rows of stripes (in id order) and read their latest
    delete bitmaps: stripe id -> (row_count, deleted_count, bitmap). A stripe
    missing from the answer is gone (rewritten or dropped since the caller's
    snapshot), or, with ``skip_locked``, locked by someone else."""
    if not stripe_ids:
        return {}
    plan = spi.prepared(_LOCK_STRIPES_SKIP if skip_locked else _LOCK_STRIPES, ["bigint[]"], internal=True)
    rows = plan.execute([sorted(int(s) for s in stripe_ids)]).rows
    return {int(r[0]): (int(r[1]), int(r[2]), None if r[3] is None else bytes(r[3])) for r in rows}


def set_deletes(stripe_id: int, deleted_count: int, bitmap: bytes | None) -> None:
    spi.prepared("UPDATE orochi.columnar_stripes SET deleted_count = $2, delete_bitmap = $3"
                 " WHERE stripe_id = $1", ["bigint", "bigint", "bytea"], internal=True).execute(
        [stripe_id, deleted_count, bitmap])


def delete_stripes(stripe_ids: Sequence[int]) -> list[tuple[int, str, int]]:
    """Delete stripes' catalog rows; returns (stripe id, file path, file bytes)."""
    ids = [int(s) for s in stripe_ids]
    spi.prepared("DELETE FROM orochi.columnar_stripe_columns WHERE stripe_id = ANY ($1)",
                 ["bigint[]"], internal=True).execute([ids])
    res = spi.prepared("DELETE FROM orochi.columnar_stripes WHERE stripe_id = ANY ($1)"
                       " RETURNING stripe_id, file_path, file_bytes", ["bigint[]"], internal=True).execute([ids])
    return [(int(r[0]), files.resolve(r[1]), int(r[2])) for r in res.rows]


def retire_files(relid: int, stripes: Sequence[tuple[int, str, int]], xid: int) -> None:
    """Note files whose stripes this transaction replaced (removed later, when
    no snapshot can read them)."""
    spi.prepared(
        "INSERT INTO orochi.columnar_retired_files (file_path, relid, stripe_id, file_bytes, retired_xid)"
        " SELECT p, $1, s, b, $5::text::xid8 FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS u(p, s, b)"
        " ON CONFLICT (file_path) DO NOTHING",
        ["oid", "text[]", "bigint[]", "bigint[]", "text"], internal=True).execute(
        [relid, [files.catalog_path(p) for _, p, _ in stripes], [s for s, _, _ in stripes],
         [b for _, _, b in stripes], str(xid)])


# A retired file may go once its retiring transaction committed and no
# backend holds a snapshot that could still see the stripe's row: every
# backend's xmin is younger than the retiring transaction (age compares the
# 32-bit xids, which are recent here).
_SAFE_RETIRED = """
SELECT r.file_path
  FROM orochi.columnar_retired_files r
 WHERE ($1::oid IS NULL OR r.relid = $1)
   AND pg_xact_status(r.retired_xid) IS DISTINCT FROM 'in progress'  -- visible rows: committed
   AND NOT EXISTS (
         SELECT 1 FROM pg_catalog.pg_stat_activity a
          WHERE a.backend_xmin IS NOT NULL
            AND age(a.backend_xmin) >= age((r.retired_xid::text::numeric % 4294967296)::text::xid))
"""


def purge_retired(relid: int | None = None) -> list[str]:
    """Forget the retired files no snapshot can read any more; returns their
    paths (the caller removes them)."""
    paths = [r[0] for r in spi.prepared(_SAFE_RETIRED, ["oid"], internal=True).execute([relid]).rows]
    if paths:
        spi.prepared("DELETE FROM orochi.columnar_retired_files WHERE file_path = ANY ($1)",
                     ["text[]"], internal=True).execute([paths])
    return [files.resolve(p) for p in paths]
