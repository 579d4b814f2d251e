"""Chunk compression and the retention and compression policies' job bodies.

``orochi.compress_chunk(chunk)`` rewrites one chunk of a hypertable, in the
caller's transaction:

1. take the table's maintenance lock (compactions, vacuums and compressions
   of one table run one at a time), then lock the catalog rows of the
   chunk's stripes (``FOR NO KEY UPDATE``, as DELETE and UPDATE do): a
   writer of those stripes that started before waits for nothing and is
   waited for; one that comes later waits for the commit and then fails
   with 40001, as it would against a vacuum;
2. read the stripes' live rows (deleted rows left out) and the delta-store
   rows in the chunk's time range, deleting those delta rows by id (a row
   another transaction moved or deleted meanwhile is left out);
3. sort every row by the time column and write them as few stripes as
   ``stripe_row_limit`` allows, with :data:`COMPRESSED_CODEC` at
   :data:`COMPRESSED_LEVEL` over the light-weight codecs;
4. replace the old stripes' catalog rows with the new ones; the old files
   are retired like those of ``orochi.vacuum(table)``: snapshots taken before
   the commit still read them, and a later vacuum removes them.

Readers never wait. ``orochi.decompress_chunk(chunk)`` does the same with the
table's own codecs and forgets that the chunk was compressed.

A chunk is *Compressed* while nothing was written to it since: its stripes
are exactly those its compression wrote, none has deleted rows, and no
delta row lies in its range; otherwise a compressed chunk is *Partially
compressed* (``orochi._chunk_compression_status`` in
sql/60_compression.sql holds the rule).

The policies' bodies (``run_retention``, ``run_compression``) follow the
jobs registry's contract (:mod:`orochi_fdw.jobs.registry`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.bridge.faults import fault_point
from orochi_fdw.bridge.api import Qual
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.bridge.types import Interval, SpecialValue
from orochi_fdw.catalog import store
from orochi_fdw.columnar import deletes, maintenance
from orochi_fdw.columnar.options import TableSettings
from orochi_fdw.columnar.types import from_wire, raw_size
from orochi_fdw.errors import InvalidParameterError, OrochiError
from orochi_fdw.storage.kinds import ColumnData, VarBytes, concat_columns, get_kind
from orochi_fdw.timeseries import chunks as chunk_catalog
from orochi_fdw.timeseries import hypertable as hypertables
from orochi_fdw.timeseries import timekeys
from orochi_fdw.timeseries.sqlapi import check_owner

if TYPE_CHECKING:  # pragma: no cover
    from orochi_fdw.columnar.delta import DeltaBatch
    from orochi_fdw.columnar.table import ColumnarTable

#: the compression layer of compressed chunks (over the light-weight codecs)
COMPRESSED_CODEC = "zstd"
#: its level: measured on device metrics (bench/results/timeseries.md)
COMPRESSED_LEVEL = 9

UNCOMPRESSED = "Uncompressed"
COMPRESSED = "Compressed"
PARTIALLY_COMPRESSED = "Partially compressed"

_CHUNK_NAME = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*\.)?_hyper_(\d+)_(\d+)_chunk$")


class CompressionError(OrochiError):
    """Root of chunk compression's errors; carries a hint for the client."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ChunkNotFoundError(CompressionError):
    """A chunk name that names no chunk (SQLSTATE 42P01, undefined_table)."""

    sqlstate = "42P01"


class ChunkStateError(CompressionError):
    """A chunk that is already in the state asked for (SQLSTATE 55000,
    object_not_in_prerequisite_state)."""

    sqlstate = "55000"


@dataclass
class RewriteResult:
    """What one compression (or decompression) of a chunk did."""

    chunk: str
    rows: int = 0
    stripes_before: int = 0
    stripes_after: int = 0
    delta_rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


# ---------------------------------------------------------------- chunks by name

def find_chunk(name: str) -> chunk_catalog.Chunk:
    """The chunk called ``name`` (``_hyper_<relid>_<chunk_id>_chunk``, as
    ``orochi.show_chunks`` lists them).

    Raises:
        ChunkNotFoundError: no such chunk.
    """
    match = _CHUNK_NAME.match(str(name).strip())
    if match is not None:
        relid, chunk_id = int(match.group(1)), int(match.group(2))
        for chunk in chunk_catalog.list_chunks(relid):
            if chunk.chunk_id == chunk_id:
                return chunk
    raise ChunkNotFoundError(f'chunk "{name}" does not exist',
                             hint="orochi.show_chunks(hypertable) lists the chunks of a hypertable.")


def _delta_range_quals(ht: hypertables.Hypertable, chunk: chunk_catalog.Chunk) -> list[Qual]:
    """Quals selecting the delta rows of a chunk's range (a pre-filter: the
    exact test is on the keys)."""
    quals = []
    for op, key in ((">=", chunk.range_start), ("<", chunk.range_end)):
        if timekeys.KEY_MIN < key < timekeys.KEY_MAX:
            value = timekeys.key_to_value(key, ht.time_type)
            if not isinstance(value, SpecialValue):
                quals.append(Qual(ht.time_column, op, value))
    return quals


def _delta_rows_in_range(table: "ColumnarTable", ht: hypertables.Hypertable, chunk: chunk_catalog.Chunk,
                         names: list[str]) -> Iterator[tuple["DeltaBatch", np.ndarray]]:
    """The delta rows of a chunk (under a new snapshot).

    Args:
        table: the hypertable's ColumnarTable.
        ht: its hypertable row.
        chunk: the chunk.
        names: the columns to read (the time column among them).

    Returns:
        Pairs of a batch of delta rows and the mask of its rows whose time
        lies in the chunk (batches with no such row are left out).
    """
    kind = table.kinds[ht.time_column]
    for batch in table.delta.scan(names, _delta_range_quals(ht, chunk), read_only=False):
        values, validity = from_wire(batch.columns[ht.time_column], kind)
        keys = timekeys.keys_from_storage(values, kind, ht.time_column)
        mask = (keys >= chunk.range_start) & (keys < chunk.range_end)
        if validity is not None:
            mask &= np.asarray(validity, dtype=bool)
        if mask.any():
            yield batch, mask


def delta_rows_in_chunk(table: "ColumnarTable", ht: hypertables.Hypertable, chunk: chunk_catalog.Chunk) -> int:
    """How many delta rows lie in a chunk's time range.

    Args:
        table: the hypertable's ColumnarTable.
        ht: its hypertable row.
        chunk: the chunk.

    Returns:
        The number of rows.
    """
    return sum(int(mask.sum()) for _, mask in _delta_rows_in_range(table, ht, chunk, [ht.time_column]))


def chunk_status(chunk: chunk_catalog.Chunk, table: "ColumnarTable | None" = None,
                 ht: hypertables.Hypertable | None = None) -> str:
    """A chunk's compression status (the rule is
    ``orochi._chunk_compression_status`` in sql/60_compression.sql).

    Args:
        chunk: the chunk.
        table: its ColumnarTable, if the caller has it open.
        ht: its hypertable row, if the caller has it.

    Returns:
        :data:`UNCOMPRESSED`, :data:`COMPRESSED` or :data:`PARTIALLY_COMPRESSED`.
    """
    table = table or maintenance.open_table(chunk.relid)
    ht = ht or hypertables.get(chunk.relid)
    compressed = spi.prepared("SELECT compressed_at IS NOT NULL FROM orochi.hypertable_chunks"
                              " WHERE chunk_id = $1", ["bigint"], internal=True).execute([chunk.chunk_id]).scalar()
    if not compressed:
        return UNCOMPRESSED
    ndelta = delta_rows_in_chunk(table, ht, chunk)
    return str(spi.prepared("SELECT orochi._chunk_compression_status($1, $2)", ["bigint", "bigint"], internal=True)
               .execute([chunk.chunk_id, ndelta]).scalar())


# ---------------------------------------------------------------- rewriting

def _take(values: Any, validity: np.ndarray | None, kind: str, index: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """Rows ``index`` (an int array) of a storage-form column: values an
    array, or ``(offsets, data)`` for variable-width kinds."""
    if get_kind(kind).physical == "var":
        offsets, data = values
        offsets = np.asarray(offsets, dtype=np.int64)
        starts = offsets[index]
        lengths = offsets[index + 1] - starts
        new_offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=new_offsets[1:])
        total = int(new_offsets[-1])
        if total:
            gather = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
            new_data = np.asarray(data)[gather]
        else:
            new_data = np.zeros(0, dtype=np.uint8)
        out = (new_offsets, new_data)
    else:
        out = np.asarray(values)[index]
    return out, None if validity is None else np.asarray(validity)[index]


def _as_column_data(values: Any, validity: np.ndarray | None, kind: str, nrows: int) -> ColumnData:
    """A storage-form column as a ColumnData (for concat_columns)."""
    if get_kind(kind).physical == "var":
        values = VarBytes(np.asarray(values[0], dtype=np.int64), np.asarray(values[1], dtype=np.uint8))
    if validity is None:
        validity = np.ones(nrows, dtype=bool)
    return ColumnData(values, validity)


def _sort_order(values: Any, validity: np.ndarray | None) -> np.ndarray:
    """Row order by the time column (NULLs, which a hypertable refuses, last)."""
    keys = np.asarray(values)
    if validity is None or np.asarray(validity).all():
        return np.argsort(keys, kind="stable")
    return np.lexsort((keys, ~np.asarray(validity, dtype=bool)))


def _writer_settings(settings: TableSettings, compress: bool) -> TableSettings:
    """The settings a rewrite writes with: the compressed chunks' codec over
    the table's, or the table's own. A column's own compression option is
    kept either way."""
    if not compress:
        return settings
    return replace(settings, compression=COMPRESSED_CODEC, compression_level=COMPRESSED_LEVEL)


def _cold_stripes(chunk: chunk_catalog.Chunk) -> int:
    """How many of the chunk's stripes are in object storage (docs/tiering.md)."""
    return int(spi.prepared("SELECT count(*) FROM orochi.columnar_stripes WHERE chunk_id = $1"
                            " AND file_path LIKE 'tier:%'", ["bigint"], internal=True).execute(
        [chunk.chunk_id]).scalar())


def _refuse_cold(chunk: chunk_catalog.Chunk, what: str) -> None:
    """A chunk with stripes in object storage is not rewritten (0A000)."""
    if _cold_stripes(chunk):
        from orochi_fdw.errors import FeatureNotSupportedError

        exc = FeatureNotSupportedError(f'chunk "{chunk.name}" is in object storage and cannot be {what}')
        exc.hint = f"Move it back first: SELECT orochi.untier_chunk('{chunk.name}');"
        raise exc


def rewrite_chunk(chunk: chunk_catalog.Chunk, compress: bool) -> RewriteResult:
    """Fold a chunk's stripes and delta rows into new stripes sorted by time,
    in the caller's transaction (see the module's docstring).

    Args:
        chunk: the chunk.
        compress: write with the compressed chunks' codec and mark the chunk
            compressed; else with the table's codecs, and unmark it.

    Returns:
        What was done.

    Raises:
        ChunkNotFoundError: the table is no longer a hypertable.
    """
    relid = chunk.relid
    table = maintenance.open_table(relid)
    ht = hypertables.get(relid)
    if ht is None:
        raise ChunkNotFoundError(f'chunk "{chunk.name}" does not exist')
    maintenance.lock_table_maintenance(relid)
    _refuse_cold(chunk, "compressed" if compress else "decompressed")
    result = RewriteResult(chunk.name)
    parts: dict[str, list[ColumnData]] = {name: [] for name in table.columns}
    progress = maintenance.Progress("compress" if compress else "decompress", relid)
    try:
        old_ids = _read_stripes(table, chunk, parts, result, progress)
        fault_point("compress:after_read")
        progress.update(force=True, phase="moving delta rows")
        _move_delta_rows(table, ht, chunk, parts, result)
        progress.update(force=True, phase="writing stripes")
        table.settings = _writer_settings(table.settings, compress)
        new_records = _write_sorted(table, ht, chunk, parts, result.rows, progress)
        fault_point("compress:after_write")
        progress.update(force=True, phase="swapping stripes")
        for record in new_records:
            store.insert_stripe(record)
            result.bytes_after += record.file_bytes
        maintenance.retire_stripes(relid, old_ids)
        result.stripes_after = len(new_records)
        _mark_chunk(chunk, compress, result)
        progress.update(force=True, phase="committing")
        fault_point("compress:before_commit")
        return result
    finally:
        progress.close()


def _read_stripes(table: "ColumnarTable", chunk: chunk_catalog.Chunk, parts: dict[str, list[ColumnData]],
                  result: RewriteResult, progress: maintenance.Progress) -> list[int]:
    """Lock the chunk's stripes and add their live rows to ``parts``.

    Returns:
        The ids of the stripes read (to be replaced).
    """
    progress.update(force=True, phase="locking stripes")
    attnums = [c.attnum for c in table.columns.values()]
    listed = [s for s in store.table_stripes(chunk.relid, attnums, read_only=False)
              if s.chunk_id == chunk.chunk_id]
    locked = store.lock_stripes([s.stripe_id for s in listed])
    old_ids: list[int] = []
    progress.update(force=True, phase="reading stripes", stripes_total=len(listed))
    for i, stripe in enumerate(listed):
        current = locked.get(stripe.stripe_id)
        if current is None:
            continue  # rewritten or dropped meanwhile
        bitmap = deletes.load(current[2])
        if len(bitmap) < stripe.row_count:
            live = maintenance.live_columns(table, stripe, bitmap)
            if live is None:
                spi.notice(f'stripe {stripe.stripe_id} of chunk "{chunk.name}" holds a column of an '
                           "older type and is left as it is")
                continue
            columns, _, nlive = live
            for name in parts:
                parts[name].append(_as_column_data(*columns[name], table.kinds[name], nlive))
            result.rows += nlive
        result.bytes_before += stripe.file_bytes
        old_ids.append(stripe.stripe_id)
        progress.update(stripes_done=i + 1, rows_done=result.rows)
    result.stripes_before = len(old_ids)
    return old_ids


def _move_delta_rows(table: "ColumnarTable", ht: hypertables.Hypertable, chunk: chunk_catalog.Chunk,
                     parts: dict[str, list[ColumnData]], result: RewriteResult) -> None:
    """Delete the delta rows in the chunk's range and add them to ``parts``
    (a row someone else deleted or moved meanwhile is left out)."""
    for batch, mask in _delta_rows_in_range(table, ht, chunk, list(parts)):
        moved = table.delta.delete(batch.ids[mask].tolist())
        keep = mask & np.isin(batch.ids, np.fromiter(moved, dtype=np.int64, count=len(moved)))
        n = int(keep.sum())
        if not n:
            continue
        index = np.flatnonzero(keep)
        for name in parts:
            kind = table.kinds[name]
            values, validity = _take(*from_wire(batch.columns[name], kind), kind, index)
            parts[name].append(_as_column_data(values, validity, kind, n))
            result.bytes_before += raw_size(values, validity, kind)
        result.delta_rows += n
        result.rows += n


def _write_sorted(table: "ColumnarTable", ht: hypertables.Hypertable, chunk: chunk_catalog.Chunk,
                  parts: dict[str, list[ColumnData]], nrows: int,
                  progress: maintenance.Progress) -> list[store.StripeRecord]:
    """Write the rows of ``parts`` sorted by the time column as stripe files
    of the chunk (``stripe_row_limit`` rows each) with the table's current
    settings; their catalog rows are the caller's to insert.

    Returns:
        The new stripes' records.
    """
    if not nrows:
        return []
    merged = {name: concat_columns(parts[name], table.kinds[name]) for name in parts}
    time_data = merged[ht.time_column]
    order = _sort_order(time_data.values, time_data.validity)
    limit = table.settings.stripe_row_limit
    records: list[store.StripeRecord] = []
    for start in range(0, nrows, limit):
        index = order[start:start + limit]
        columns, raw = {}, {}
        for name, data in merged.items():
            kind = table.kinds[name]
            values = (data.values.offsets, data.values.data) if get_kind(kind).physical == "var" else data.values
            columns[name] = _take(values, data.validity, kind, index)
            raw[name] = raw_size(*columns[name], kind)
        records.append(table.write_stripe_columns(columns, raw, insert=False, chunk_id=chunk.chunk_id))
        progress.update(stripes_done=len(records), rows_done=start + len(index))
    return records


def _mark_chunk(chunk: chunk_catalog.Chunk, compress: bool, result: RewriteResult) -> None:
    """Record a compression (or forget it, after a decompression) in the
    chunk's catalog row."""
    if compress:
        spi.prepared(
            "UPDATE orochi.hypertable_chunks SET compressed_at = now(),"
            " compressed_xid = pg_current_xact_id(), compressed_stripes = $2,"
            " uncompressed_bytes = $3, compressed_bytes = $4, compressed_rows = $5"
            " WHERE chunk_id = $1", ["bigint", "integer", "bigint", "bigint", "bigint"], internal=True).execute(
            [chunk.chunk_id, result.stripes_after, result.bytes_before, result.bytes_after, result.rows])
    else:
        spi.prepared(
            "UPDATE orochi.hypertable_chunks SET compressed_at = NULL, compressed_xid = NULL,"
            " compressed_stripes = NULL, uncompressed_bytes = NULL, compressed_bytes = NULL,"
            " compressed_rows = NULL WHERE chunk_id = $1", ["bigint"], internal=True).execute([chunk.chunk_id])


def compress_chunk(name: str, if_not_compressed: bool = True) -> RewriteResult | None:
    """Compress one chunk (see the module's docstring); a Partially
    compressed chunk is compressed again, whole.

    Args:
        name: the chunk's name.
        if_not_compressed: a chunk already Compressed gets a NOTICE (else an
            ERROR).

    Returns:
        What was done, or None when the chunk was already compressed.

    Raises:
        ChunkNotFoundError: no such chunk.
        ChunkStateError: already compressed, without if_not_compressed.
        HypertableError: the caller does not own the hypertable (42501).
    """
    return _rewrite_named(name, compress=True, skip_quietly=if_not_compressed)


def decompress_chunk(name: str, if_compressed: bool = True) -> RewriteResult | None:
    """Rewrite a compressed chunk with the table's own codecs (still sorted
    by time) and forget that it was compressed.

    Raises:
        ChunkNotFoundError: no such chunk.
        ChunkStateError: not compressed, without if_compressed.
        HypertableError: the caller does not own the hypertable (42501).
    """
    return _rewrite_named(name, compress=False, skip_quietly=if_compressed)


def _rewrite_named(name: str, compress: bool, skip_quietly: bool) -> RewriteResult | None:
    """compress_chunk / decompress_chunk: a chunk already in the state asked
    for gets a NOTICE (``skip_quietly``) or an ERROR naming the flag."""
    match = _CHUNK_NAME.match(str(name).strip())
    if match is not None and privileges.relation_exists(int(match.group(1))):
        check_owner(int(match.group(1)))  # before saying whether the chunk exists
    chunk = find_chunk(name)
    check_owner(chunk.relid)
    maintenance.lock_table_maintenance(chunk.relid)  # a concurrent compression first ends
    if chunk_status(chunk) == (COMPRESSED if compress else UNCOMPRESSED):
        state, flag, what = (("already compressed", "if_not_compressed", "compressed") if compress
                             else ("not compressed", "if_compressed", "uncompressed"))
        if not skip_quietly:
            raise ChunkStateError(f'chunk "{chunk.name}" is {state}',
                                  hint=f"Pass {flag} => true to skip {what} chunks.")
        spi.notice(f'chunk "{chunk.name}" is {state}')
        return None
    return rewrite_chunk(chunk, compress=compress)


@sql_function("compress_chunk")
def _sql_compress_chunk(name: str, if_not_compressed: bool | None = True) -> str:
    compress_chunk(name, True if if_not_compressed is None else bool(if_not_compressed))
    return find_chunk(name).name


@sql_function("decompress_chunk")
def _sql_decompress_chunk(name: str, if_compressed: bool | None = True) -> str:
    decompress_chunk(name, True if if_compressed is None else bool(if_compressed))
    return find_chunk(name).name


# ---------------------------------------------------------------- policies

def _hypertable_or_error(relid: int) -> hypertables.Hypertable:
    """The hypertable ``relid``.

    Raises:
        InvalidParameterError: it is not (or no longer) a hypertable.
    """
    ht = hypertables.get(relid)
    if ht is None:
        raise InvalidParameterError(f"relation with oid {relid} is not a hypertable")
    return ht


def _config_cutoff(ht: hypertables.Hypertable, config: dict, key: str) -> int:
    """The cutoff key of a policy's ``drop_after`` / ``compress_after``: an
    interval's text (now() minus it) or an integer (integer time columns).

    Raises:
        InvalidParameterError: the setting is missing or of the wrong type.
    """
    if key not in config or config[key] is None:
        raise InvalidParameterError(f'the policy\'s config has no "{key}"')
    value = config[key]
    if isinstance(value, str) and not timekeys.is_integer_type(ht.time_type):
        value = spi.execute("SELECT $1::interval", [value], types=["text"]).scalar()
        if not isinstance(value, Interval):
            raise InvalidParameterError(f'invalid "{key}" in the policy\'s config: {config[key]!r}')
    elif isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InvalidParameterError(f'invalid "{key}" in the policy\'s config: {config[key]!r}'
                                        " (an integer for an integer time column)") from None
    return timekeys.cutoff_key(ht, value)


def run_retention(job_id: int, relid: int, config: dict) -> str:
    """The retention policy: drop the chunks lying wholly before now() -
    ``config["drop_after"]`` (or before that integer, for integer time).

    Returns:
        A one-line summary.
    """
    ht = _hypertable_or_error(relid)
    check_owner(relid)  # the job's owner (it runs as that role) must own the table now
    cutoff = _config_cutoff(ht, config, "drop_after")
    dropped = chunk_catalog.drop_chunks(relid, chunk_catalog.ChunkSelection(older_than=cutoff))
    return f"dropped {len(dropped)} chunk(s) older than {config['drop_after']}"


def run_compression(job_id: int, relid: int, config: dict) -> str:
    """The compression policy: compress every chunk lying wholly before
    now() - ``config["compress_after"]`` that is not Compressed (Partially
    compressed chunks are compressed again).

    Returns:
        A one-line summary.
    """
    ht = _hypertable_or_error(relid)
    check_owner(relid)  # the job's owner (it runs as that role) must own the table now
    cutoff = _config_cutoff(ht, config, "compress_after")
    table = maintenance.open_table(relid)
    maintenance.lock_table_maintenance(relid)
    done = rows = before = after = 0
    for chunk in chunk_catalog.list_chunks(relid):
        if chunk.range_end > cutoff:
            continue
        if chunk_status(chunk, table, ht) == COMPRESSED or _cold_stripes(chunk):
            continue  # a chunk in object storage stays as it was moved
        r = rewrite_chunk(chunk, compress=True)
        done += 1
        rows += r.rows
        before += r.bytes_before
        after += r.bytes_after
    if not done:
        return "no chunk to compress"
    return (f"compressed {done} chunk(s), {rows} rows, {before} -> {after} bytes")
