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
from dataclasses import dataclass, field
from typing import Any

from orochi_fdw.bridge import spi
from orochi_fdw.catalog import files


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


def delete_indexes(relid: int, attnum: int, distance_type: str | None) -> list[int]:
    """Delete index definitions (their files' rows go with them); returns
    their ids."""
    rows = spi.prepared(
        "DELETE FROM orochi.columnar_vector_indexes WHERE relid = $1 AND attnum = $2"
        " AND ($3::text IS NULL OR distance_type = $3) RETURNING index_id",
        ["oid", "smallint", "text"], internal=True).execute([relid, attnum, distance_type]).rows
    return [int(r[0]) for r in rows]
