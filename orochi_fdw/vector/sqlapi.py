"""SQL functions of vector search (sql/70_vector.sql): orochi.create_vector_index,
orochi.drop_vector_index, and the trigger hook that has an index file
removed when its catalog row goes.

Privileges (docs/SECURITY.md): creating and dropping an index is for the
table's owner, checked as the caller before the catalog (the extension
owner's, reached by internal statements only) is touched; the trigger hook
is revoked from PUBLIC and called only by the catalog's own trigger."""

from __future__ import annotations

import json
import os
import re

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.catalog import files, store
from orochi_fdw.columnar.maintenance import Progress, lock_table_maintenance, open_table
from orochi_fdw.vector import catalog, indexes
from orochi_fdw.vector.errors import VectorError
from orochi_fdw.vector.types import is_vector_type

INDEX_TYPES = ("hnsw", "ivfflat")
DISTANCE_TYPES = ("l2", "cosine", "inner_product")
#: build options per index type: (smallest, largest)
OPTIONS = {"hnsw": {"m": (2, 100), "ef_construction": (4, 1000)},
           "ivfflat": {"lists": (1, 32768)}}

_INDEX_FILE = re.compile(r"^\d+\.\d+\.\d+\.vindex$")


def _relid(rel) -> int:
    if isinstance(rel, int):
        return rel
    return int(spi.execute("SELECT $1::regclass::oid", [str(rel)], types=["text"]).scalar())


def check_owner(relid: int, action: str) -> None:
    """Creating or dropping a vector index is for the table's owner (as
    CREATE INDEX): ``must be owner of table t`` (42501) otherwise."""
    privileges.require_owner(relid, action)


def _column(table, name: str):
    column = table.columns.get(name)
    if column is None:
        raise VectorError(f'column "{name}" of table "{table.relname}" does not exist', "42703")
    return column


def _options(index_type: str, raw) -> dict:
    given = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    if not isinstance(given, dict):
        raise VectorError("options must be a JSON object", "22023")
    allowed = OPTIONS[index_type]
    out = dict(indexes.HNSW_DEFAULTS if index_type == "hnsw" else indexes.IVFFLAT_DEFAULTS)
    for key, value in given.items():
        if key not in allowed:
            raise VectorError(f'invalid option "{key}" for a {index_type} index', "22023",
                              hint=f"Valid options: {', '.join(sorted(allowed))}.")
        lo, hi = allowed[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise VectorError(f'option "{key}" must be an integer from {lo} to {hi}, not {json.dumps(value)}',
                              "22023")
        out[key] = value
    return out


@sql_function("create_vector_index")
def create_vector_index(rel, column: str, dimensions=None, index_type="hnsw", distance_type="l2",
                        options=None) -> int:
    if rel is None or column is None:
        raise VectorError("table and column must not be NULL", "22004")
    relid = _relid(rel)
    check_owner(relid, "orochi.create_vector_index")
    index_type = (index_type or "hnsw").lower()
    distance_type = (distance_type or "l2").lower()
    if index_type not in INDEX_TYPES:
        raise VectorError(f'unknown index type "{index_type}"', "22023",
                          hint="Valid index types: hnsw, ivfflat.")
    if distance_type not in DISTANCE_TYPES:
        raise VectorError(f'unknown distance type "{distance_type}"', "22023",
                          hint="Valid distance types: l2, cosine, inner_product.")
    opts = _options(index_type, options)
    table = open_table(relid)
    col = _column(table, column)
    if not is_vector_type(col.type_oid):
        raise VectorError(f'column "{column}" is of type {col.type_name}; a vector index needs a column of '
                          "type orochi.vector(n)", "42804",
                          hint=f"ALTER FOREIGN TABLE {table.relname} ALTER COLUMN {column} TYPE orochi.vector(n)"
                               " turns a real[] column into one.")
    if col.typmod <= 0:
        raise VectorError(f'column "{column}" has no dimensions; a vector index needs orochi.vector(n)', "42804")
    if dimensions is not None and int(dimensions) != col.typmod:
        raise VectorError(f"expected {col.typmod} dimensions, not {int(dimensions)}", "22000",
                          detail=f'Column "{column}" is of type {col.type_name}.')
    lock_table_maintenance(relid)
    exists = spi.execute("SELECT 1 FROM orochi.columnar_vector_indexes WHERE relid = $1 AND attnum = $2"
                         " AND distance_type = $3", [relid, col.attnum, distance_type],
                         types=["oid", "smallint", "text"], internal=True).rows
    if exists:
        raise VectorError(f'a {distance_type} vector index on column "{column}" of table "{table.relname}" '
                          "already exists", "42P07")
    # the catalog row's trigger builds the files of the stored stripes (vector_index_inserted)
    index = catalog.insert_index(relid, col.attnum, col.typmod, index_type, distance_type, opts)
    return index.index_id


@sql_function("_vector_index_inserted")
def vector_index_inserted(index_id: int) -> None:
    """The trigger on ``orochi.columnar_vector_indexes``: build the index's
    files (one per run of stripes up to ``indexes.SEGMENT_MAX_VECTORS``
    vectors) for the stored stripes that have none (a new index, or pg_restore
    loading a table's rows before the index's catalog row)."""
    index = next((i for i in catalog.table_indexes(
        int(spi.execute("SELECT relid::oid FROM orochi.columnar_vector_indexes WHERE index_id = $1",
                        [int(index_id)], types=["bigint"]).scalar()), read_only=False)
        if i.index_id == int(index_id)), None)
    if index is None:
        return
    done = catalog.indexed_stripes(index.index_id)
    todo = [s for s in store.table_stripes(index.relid, [index.attnum], read_only=False) if s.stripe_id not in done]
    # one file per run of stripes (a segment): a query searches one graph
    # where it would search one per stripe
    _build_segments(index, indexes.segments(todo), "create vector index")


def _build_segments(index, runs: list, command: str) -> int:
    """Build one file per run of stripes, shown in orochi.vacuum_progress
    (stripes and vectors done); how many files were written."""
    progress = Progress(command, index.relid)
    written = 0
    try:
        progress.update(force=True, stripes_total=sum(len(run) for run in runs))
        for run in runs:
            if indexes.build_segment_index(index, run, progress):
                written += 1
            progress.update(force=True, stripes_done=progress.state["stripes_done"] + len(run))
        progress.update(force=True, phase="committing")
    finally:
        progress.close()
    return written


@sql_function("drop_vector_index")
def drop_vector_index(rel, column: str, distance_type=None) -> int:
    if rel is None or column is None:
        raise VectorError("table and column must not be NULL", "22004")
    relid = _relid(rel)
    check_owner(relid, "orochi.drop_vector_index")
    table = open_table(relid)
    col = _column(table, column)
    dropped = catalog.delete_indexes(relid, col.attnum, distance_type.lower() if distance_type else None)
    if not dropped:
        raise VectorError(f'no vector index on column "{column}" of table "{table.relname}"'
                          + (f" for {distance_type}" if distance_type else ""), "42704")
    return len(dropped)


@sql_function("vector_index_merge")
def vector_index_merge(rel) -> int:
    """Merge the table's index files of few vectors (the per-stripe files
    written since its indexes were built, and small segments) into segments
    of up to ``indexes.SEGMENT_MAX_VECTORS`` vectors; returns how many files
    were written. The table's owner only.

    A stripe counts as loose when it has no file (too few vectors for one)
    or its file indexes fewer than half a segment's vectors; the loose
    stripes of each index are cut into runs as ``create_vector_index`` cuts
    a table's stripes, and a run of two stripes or more that one file does
    not already cover gets one new file:
    its stripes' old rows deleted (their files removed when the transaction
    commits and no row names them), the new file written and registered
    like any index file (a crash before the commit leaves it an orphan that
    ``orochi.vacuum()`` removes). Full segments are left as they are."""
    if rel is None:
        raise VectorError("table must not be NULL", "22004")
    relid = _relid(rel)
    check_owner(relid, "orochi.vector_index_merge")
    open_table(relid)
    lock_table_maintenance(relid)
    written = 0
    for index in catalog.table_indexes(relid, read_only=False):
        by_stripe = catalog.index_files(index.index_id, read_only=False)
        vectors: dict[str, int] = {}
        for f in by_stripe.values():
            vectors[f.file_path] = vectors.get(f.file_path, 0) + f.row_count
        stripes = store.table_stripes(relid, [index.attnum], read_only=False)
        loose = [s for s in stripes if s.stripe_id not in by_stripe
                 or vectors[by_stripe[s.stripe_id].file_path] < indexes.SEGMENT_MAX_VECTORS // 2]
        runs = [run for run in indexes.segments(loose)
                if len(run) >= 2 and not (all(st.stripe_id in by_stripe for st in run)
                                          and len({by_stripe[st.stripe_id].file_path for st in run}) == 1)]
        # (one stripe, or one file already: left as they are)
        for run in runs:
            catalog.delete_files(index.index_id, [s.stripe_id for s in run if s.stripe_id in by_stripe])
        written += _build_segments(index, runs, "merge vector index files")
    return written


@sql_function("vector_index_file_deleted")
def vector_index_file_deleted(path: str) -> None:
    """The trigger on orochi.columnar_vector_index_files: the row of an index
    file is gone, the file goes if the transaction commits (only a name the
    index writer makes is ever removed)."""
    if path and _INDEX_FILE.match(os.path.basename(path)):
        indexes.ledger.row_deleted(files.resolve(path))
