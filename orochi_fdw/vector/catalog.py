"""Vector indexes in the catalog (sql/70_vector.sql).

``orochi.columnar_vector_indexes`` holds one row per index (table, column,
distance, options); ``orochi.columnar_vector_index_files`` one row per
stripe indexed, naming its file. The file row references the stripe's row
(``ON DELETE CASCADE``): whatever removes a stripe from the catalog (DROP,
TRUNCATE, vacuum, drop_chunks ...) removes its index files' rows in the
same transaction, and a trigger has the files removed when it commits.

Both tables belong to the extension owner and are granted to no one: every
statement here is internal (``spi.execute(..., internal=True)``); the SQL
functions check the caller's rights first (:mod:`orochi_fdw.vector.sqlapi`),
and a scan or a write reaches them only through a table whose privileges
the executor checked.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from orochi_fdw.bridge import spi
from orochi_fdw.catalog import files
from orochi_fdw.catalog.snapshots import SnapshotReads


@dataclass(frozen=True)
class IndexDef:
    """One vector index of a table."""

    index_id: int
    relid: int
    attnum: int
    dimensions: int
    index_type: str          # "hnsw" | "ivfflat"
    distance_type: str       # "l2" | "cosine" | "inner_product"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexFile:
    """A stripe's file of one index."""

    index_id: int
    stripe_id: int
    file_path: str
    row_count: int
    search_ef: int           # ef (HNSW) or probes (IVFFlat) its build-time check chose; 0: search exactly


_INDEXES = """
SELECT index_id, relid::oid, attnum, dimensions, index_type, distance_type, options::text
  FROM orochi.columnar_vector_indexes
 WHERE relid = $1
 ORDER BY index_id
"""


def table_indexes(relid: int, read_only: bool = True) -> list[IndexDef]:
    """The vector indexes of a table visible to this statement."""
    rows = spi.prepared(_INDEXES, ["oid"], internal=True).execute([relid], read_only=read_only).rows
    return [IndexDef(int(i), int(r), int(a), int(d), t, dt, json.loads(o)) for i, r, a, d, t, dt, o in rows]


def index_files(index_id: int, read_only: bool = True) -> dict[int, IndexFile]:
    """stripe id -> the stripe's file of index ``index_id``."""
    rows = spi.prepared(
        "SELECT stripe_id, file_path, row_count, search_ef FROM orochi.columnar_vector_index_files"
        " WHERE index_id = $1", ["bigint"], internal=True).execute([index_id], read_only=read_only).rows
    return {int(s): IndexFile(index_id, int(s), files.resolve(p), int(n), int(e)) for s, p, n, e in rows}


def indexed_stripes(index_id: int) -> set[int]:
    return set(index_files(index_id, read_only=False))


def insert_index(relid: int, attnum: int, dimensions: int, index_type: str, distance_type: str,
                 options: dict[str, Any]) -> IndexDef:
    index_id = int(spi.execute("SELECT pg_catalog.nextval('orochi.vector_index_id_seq')", internal=True).scalar())
    spi.prepared(
        "INSERT INTO orochi.columnar_vector_indexes"
        " (index_id, relid, attnum, dimensions, index_type, distance_type, options)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
        ["bigint", "oid", "smallint", "integer", "text", "text", "text"], internal=True).execute(
        [index_id, relid, attnum, dimensions, index_type, distance_type, json.dumps(options)])
    return IndexDef(index_id, relid, attnum, dimensions, index_type, distance_type, dict(options))


def insert_file(index: IndexDef, stripe_id: int, path: str, file_bytes: int, row_count: int,
                search_ef: int, build_ms: int, xid: int) -> None:
    spi.prepared(
        "INSERT INTO orochi.columnar_vector_index_files"
        " (index_id, stripe_id, relid, file_path, file_bytes, row_count, search_ef, build_ms, created_xid)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::xid8)",
        ["bigint", "bigint", "oid", "text", "bigint", "bigint", "integer", "bigint", "text"], internal=True).execute(
        [index.index_id, stripe_id, index.relid, files.catalog_path(path), file_bytes, row_count,
         search_ef, build_ms, str(xid)])


def delete_files(index_id: int, stripe_ids: list[int]) -> int:
    """Delete the file rows of ``stripe_ids`` of an index (their files go
    when the transaction commits and no row names them any more)."""
    return len(spi.prepared(
        "DELETE FROM orochi.columnar_vector_index_files WHERE index_id = $1 AND stripe_id = ANY ($2)"
        " RETURNING stripe_id", ["bigint", "bigint[]"], internal=True).execute(
        [int(index_id), [int(s) for s in stripe_ids]]).rows)


def delete_indexes(relid: int, attnum: int, distance_type: str | None) -> list[int]:
    """Delete index definitions (their files' rows go with them); returns
    their ids."""
    rows = spi.prepared(
        "DELETE FROM orochi.columnar_vector_indexes WHERE relid = $1 AND attnum = $2"
        " AND ($3::text IS NULL OR distance_type = $3) RETURNING index_id",
        ["oid", "smallint", "text"], internal=True).execute([relid, attnum, distance_type]).rows
    return [int(r[0]) for r in rows]


# ---------------------------------------------------------------- a scan's catalog, cached per backend
#
# A nearest-neighbour query reads the table's stripes (with their delete
# bitmaps and the catalog rows of the columns it reads), its vector indexes
# and their files' rows: four statements and the Python records made from
# their rows, on every query. This backend keeps what it read, keyed by the
# identity of every catalog row it came from: (id, xmin, ctid) of each of the
# table's rows in orochi.columnar_stripes, orochi.columnar_vector_indexes and
# orochi.columnar_vector_index_files visible to the statement's snapshot.
# One statement reads those identities; when they are the ones the cached
# records were read from, the records are those the four statements would
# return under this snapshot, so they are used; otherwise the four statements
# run and their records replace the cached ones.
#
# A row version is named by its xmin and ctid: an UPDATE (a delete bitmap,
# a stripe moved to object storage) makes a new version with a new ctid, a
# DELETE (DROP, TRUNCATE, vacuum, compaction, drop_vector_index) removes it
# from the visible set, an INSERT (a stripe written, an index built) adds
# one; each changes the identities. The rows of
# orochi.columnar_stripe_columns are inserted and deleted with their stripe's
# row and never updated, so the stripe's identity covers them. Nothing here
# depends on when another backend's commit is seen (as an invalidation
# message would): the identities are read under the same snapshot as the
# records would be, so a snapshot sees exactly the rows it would read, also
# in a transaction that itself changed the table, rolled back, or runs at
# REPEATABLE READ.
#
# The identities statement itself is skipped when the statement's snapshot is
# the one the records were last checked under (spi.snapshot_key: its xmin,
# xmax and in-progress transaction ids, and this transaction has no id of
# its own). Which row versions a snapshot sees depends on nothing else: a
# commit anywhere since changes the next snapshot's xmax or in-progress
# list, so an equal key means no transaction has finished since (a
# read-mostly workload: queries one after another with no commit between;
# under concurrent commits the identities are read, as before). Whether the
# delta store had blocks is kept with it: rows written since belong to
# transactions that snapshot does not see.
#
# The same statement tells whether the table's delta store has any block
# (pg_relation_size): a table with none holds no delta row for any snapshot,
# so its scan is skipped. (The two-argument pg_relation_size is the C
# function; the one-argument form is a SQL function around it, whose call
# cost a fifth of the statement.)

_IDENTITIES = """
SELECT pg_catalog.string_agg(x, ','), pg_catalog.max(d) FROM (
  SELECT 's' || s.stripe_id || ':' || s.xmin || ':' || s.ctid AS x, NULL::bigint AS d
    FROM orochi.columnar_stripes s WHERE s.relid = $1
  UNION ALL
  SELECT 'i' || i.index_id || ':' || i.xmin || ':' || i.ctid, NULL
    FROM orochi.columnar_vector_indexes i WHERE i.relid = $1
  UNION ALL
  SELECT 'f' || f.index_id || '/' || f.stripe_id || ':' || f.xmin || ':' || f.ctid, NULL
    FROM orochi.columnar_vector_index_files f
   WHERE f.index_id = ANY (ARRAY(SELECT i.index_id FROM orochi.columnar_vector_indexes i WHERE i.relid = $1))
  UNION ALL
  SELECT NULL, pg_catalog.pg_relation_size(c.oid, 'main') FROM pg_catalog.pg_class c
   WHERE c.oid = pg_catalog.to_regclass($2) AND c.relkind = 'r'
     AND c.relowner = (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = 'orochi')
) AS rows
"""


class ScanCatalog:
    """What a nearest-neighbour scan reads from the catalog about its table:
    the stripes (with the catalog rows of ``attnums``), the index serving
    its column and distance (or None) with its files by stripe id. Shared by
    the queries of this backend while the catalog rows it came from stay
    the same: read only."""

    __slots__ = ("stripes", "by_id", "index", "files", "_masks", "memo")

    def __init__(self, stripes: list, index: IndexDef | None, files_by_stripe: dict[int, IndexFile]) -> None:
        self.stripes = stripes
        self.by_id = {s.stripe_id: s for s in stripes}
        self.index = index
        self.files = files_by_stripe
        self._masks: dict[int, Any] = {}
        #: what a scan derives from these records alone (the stripes to
        #: search through each index file, say), kept with them
        self.memo: dict[Any, Any] = {}

    def live_mask(self, stripe):
        """Per row of the stripe, whether it is not deleted (None: all),
        from its delete bitmap (kept with the record it came from)."""
        try:
            return self._masks[stripe.stripe_id]
        except KeyError:
            from orochi_fdw.columnar.deletes import DeletedOffsets

            mask = DeletedOffsets(stripe.delete_bitmap).live_mask(0, stripe.row_count)
            self._masks[stripe.stripe_id] = mask
            return mask


#: (relid, attnums, attnum, distance) -> (identities, ScanCatalog, the snapshot
#: key they were last checked under, whether the delta store had blocks then);
#: least recently used out
_scan_catalogs: "OrderedDict[tuple, tuple]" = OrderedDict()
SCAN_CATALOG_ENTRIES = 64
#: relid -> (the identities of the table's catalog rows, whether its delta
#: store had blocks), for the rest of the snapshot they were read under: the
#: keys of one table (the planner's estimate, its cost of the ordered path,
#: the scan) share one identities statement per snapshot
_identities = SnapshotReads(SCAN_CATALOG_ENTRIES)
#: what :func:`scan_catalog` says of kept records used under the snapshot
#: they were last checked under (truthy, as "cached")
SAME_SNAPSHOT = "same snapshot"


def scan_catalog(relid: int, attnums: set[int], attnum: int, distance_type: str,
                 delta_name: str) -> tuple[ScanCatalog, bool, bool | str]:
    """(the :class:`ScanCatalog` of a scan of table ``relid`` reading columns
    ``attnums``, ordering by column ``attnum`` with an index of
    ``distance_type``; whether the delta table ``delta_name`` may hold rows;
    whether the catalog records came from this backend's copy:
    :data:`SAME_SNAPSHOT` when not even their identities were read). The
    copy serves when the catalog rows it came from are the ones this
    statement's snapshot sees; else the records are read anew and kept."""
    from orochi_fdw.catalog import store

    key = (relid, frozenset(attnums), attnum, distance_type)
    found = _scan_catalogs.get(key)
    snapshot = spi.snapshot_key()
    if found is not None and snapshot is not None and found[2] == snapshot:
        # the snapshot the records were last checked under, to the byte:
        # the same rows, the same answer (no statement)
        _scan_catalogs.move_to_end(key)
        return found[1], found[3], SAME_SNAPSHOT
    # the table's identities may have been read under this very snapshot (by
    # the planner's estimate, or a scan of other columns): the same rows
    last = _identities.get(relid, snapshot)
    if last is not None:
        identities, delta_rows = last
    else:
        identities, delta_bytes = spi.prepared(_IDENTITIES, ["oid", "text"], internal=True).execute(
            [relid, delta_name], read_only=True).rows[0]
        delta_rows = delta_bytes is not None and int(delta_bytes) > 0
        _identities.put(relid, snapshot, (identities, delta_rows))
    if found is not None and found[0] == identities:
        _scan_catalogs[key] = (identities, found[1], snapshot, delta_rows)
        _scan_catalogs.move_to_end(key)
        return found[1], delta_rows, True
    stripes = store.table_stripes(relid, attnums)
    index = next((i for i in table_indexes(relid) if i.attnum == attnum and i.distance_type == distance_type), None)
    cat = ScanCatalog(stripes, index, index_files(index.index_id) if index is not None else {})
    _scan_catalogs[key] = (identities, cat, snapshot, delta_rows)
    _scan_catalogs.move_to_end(key)
    while len(_scan_catalogs) > SCAN_CATALOG_ENTRIES:
        _scan_catalogs.popitem(last=False)
    return cat, delta_rows, False
