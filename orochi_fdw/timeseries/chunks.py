"""Chunks of hypertables: their catalog rows (``orochi.hypertable_chunks``),
routing written rows to them, excluding them from scans, dropping them, and
the invalidation log.

A chunk covers the time keys [range_start, range_end), with
``range_start = floor(key / chunk_interval) * chunk_interval``. Each stripe
of a hypertable belongs to exactly one chunk (``columnar_stripes.chunk_id``);
delta-store rows are not chunked physically, but the chunk row of every
delta row exists (it is created by the statement that writes the row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from orochi_fdw.bridge import spi
from orochi_fdw.catalog import store
from orochi_fdw.query.predicates import ALWAYS_TRUE, BooleanExpression, ColumnStats, might_match
from orochi_fdw.errors import OrochiError
from orochi_fdw.timeseries import timekeys
from orochi_fdw.timeseries.hypertable import Hypertable


class NotNullViolation(OrochiError):
    """A NULL in a hypertable's time column (SQLSTATE 23502)."""

    sqlstate = "23502"

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class Chunk:
    """One row of ``orochi.hypertable_chunks``; ``name`` is what users see."""

    chunk_id: int
    relid: int
    range_start: int
    range_end: int

    @property
    def name(self) -> str:
        return chunk_name(self.relid, self.chunk_id)


def chunk_name(relid: int, chunk_id: int) -> str:
    """The name users see for a chunk: ``_hyper_<relid>_<chunk_id>_chunk``."""
    return f"_hyper_{int(relid)}_{int(chunk_id)}_chunk"


_LIST = """
SELECT chunk_id, range_start, range_end
  FROM orochi.hypertable_chunks
 WHERE relid = $1
 ORDER BY range_start
"""


def list_chunks(relid: int, read_only: bool = False) -> list[Chunk]:
    """The chunks of a hypertable, in time order.

    Args:
        relid: the hypertable's oid.
        read_only: read under the running statement's snapshot (scans).

    Returns:
        Its chunks (an empty list for a table that is no hypertable).
    """
    rows = spi.prepared(_LIST, ["oid"], internal=True).execute([int(relid)], read_only=read_only).rows
    return [Chunk(int(r[0]), int(relid), int(r[1]), int(r[2])) for r in rows]


# ---------------------------------------------------------------- creating chunks

_FIND = """
SELECT range_start, chunk_id
  FROM orochi.hypertable_chunks
 WHERE relid = $1 AND range_start = ANY ($2)
"""

_CREATE = """
INSERT INTO orochi.hypertable_chunks (relid, range_start, range_end)
SELECT $1, s, e FROM unnest($2::bigint[], $3::bigint[]) AS u(s, e)
    ON CONFLICT (relid, range_start) DO NOTHING
RETURNING range_start, chunk_id
"""


def ensure_chunks(hypertable: Hypertable, starts: Iterable[int]) -> dict[int, int]:
    """The chunk ids of the chunks starting at ``starts``, creating the
    missing chunk rows in the current transaction.

    Two writers creating the same chunk at once: the second waits for the
    first to end (the unique index on (relid, range_start)), then uses its
    row if it committed.

    Args:
        hypertable: the hypertable.
        starts: chunk starts (time keys, aligned).

    Returns:
        range_start -> chunk_id for every start.
    """
    wanted = sorted({int(s) for s in starts})
    if not wanted:
        return {}
    relid = hypertable.relid
    found = {int(s): int(c) for s, c in spi.prepared(_FIND, ["oid", "bigint[]"], internal=True).execute([relid, wanted]).rows}
    for _ in range(3):
        missing = [s for s in wanted if s not in found]
        if not missing:
            return found
        ends = [timekeys.chunk_end(s, hypertable.chunk_interval) for s in missing]
        rows = spi.prepared(_CREATE, ["oid", "bigint[]", "bigint[]"], internal=True).execute([relid, missing, ends]).rows
        found.update({int(s): int(c) for s, c in rows})
        if len(rows) < len(missing):
            found.update({int(s): int(c) for s, c in
                          spi.prepared(_FIND, ["oid", "bigint[]"], internal=True).execute([relid, missing]).rows})
    missing = [s for s in wanted if s not in found]
    if missing:
        raise OrochiError(f"could not create the chunk starting at time key {missing[0]} "
                          f"of hypertable {relid}")
    return found


# ---------------------------------------------------------------- routing

class ChunkRouter:
    """What one writing statement needs of its hypertable: checks the time
    column, maps rows to chunks (creating the chunk rows), and keeps the
    lowest and greatest time key the statement touched for the invalidation
    log."""

    def __init__(self, hypertable: Hypertable, kind: str):
        self.hypertable = hypertable
        self.kind = kind                          # storage kind of the time column
        self.lowest: int | None = None
        self.greatest: int | None = None
        self._chunk_ids: dict[int, int] = {}     # range_start -> chunk_id, this statement

    @property
    def column(self) -> str:
        return self.hypertable.time_column

    def touch(self, lowest: int | None, greatest: int | None) -> None:
        """Note a range of time keys written, updated or deleted."""
        if lowest is not None:
            self.lowest = lowest if self.lowest is None else min(self.lowest, lowest)
        if greatest is not None:
            self.greatest = greatest if self.greatest is None else max(self.greatest, greatest)

    def _null(self, relname: str, count: int) -> NotNullViolation:
        return NotNullViolation(
            f'null value in column "{self.column}" of relation "{relname}" violates not-null constraint',
            detail=f'The time column of a hypertable takes no NULL ({count} row(s) had one).')

    def keys(self, values: Any, validity: np.ndarray | None, relname: str) -> np.ndarray:
        """Time keys of storage values of the time column, checked.

        Raises:
            NotNullViolation: a NULL time.
            InfiniteTimeError: an infinite time.
        """
        if validity is not None:
            valid = np.asarray(validity, dtype=bool)
            if not valid.all():
                raise self._null(relname, int((~valid).sum()))
        keys = timekeys.keys_from_storage(values, self.kind, self.column)
        if len(keys):
            self.touch(int(keys.min()), int(keys.max()))
        return keys

    def key_of_value(self, value: Any, relname: str) -> int:
        """The key of one Python value of the time column (UPDATE's new
        rows), checked and noted."""
        if value is None:
            raise self._null(relname, 1)
        key = timekeys.key_from_value(value, self.hypertable.time_type, self.column)
        self.touch(key, key)
        return key

    def chunk_ids(self, starts: Iterable[int]) -> dict[int, int]:
        """range_start -> chunk_id, creating the chunks this statement has not
        seen yet."""
        starts = {int(s) for s in starts}
        missing = starts - set(self._chunk_ids)
        if missing:
            self._chunk_ids.update(ensure_chunks(self.hypertable, missing))
        return {s: self._chunk_ids[s] for s in starts}

    def ensure_for_keys(self, keys: np.ndarray) -> None:
        """Create the chunk rows of these keys (rows going to the delta store)."""
        if len(keys):
            self.chunk_ids(np.unique(timekeys.chunk_starts(keys, self.hypertable.chunk_interval)).tolist())

    def split(self, keys: np.ndarray) -> list[tuple[int, np.ndarray | None]]:
        """The rows of each chunk: (chunk_id, row indices in key order of
        appearance, or None when every row is in that one chunk)."""
        if not len(keys):
            return []
        starts = timekeys.chunk_starts(keys, self.hypertable.chunk_interval)
        unique = np.unique(starts)
        ids = self.chunk_ids(unique.tolist())
        if len(unique) == 1:
            return [(ids[int(unique[0])], None)]
        order = np.argsort(starts, kind="stable")
        sorted_starts = starts[order]
        cuts = np.flatnonzero(np.diff(sorted_starts)) + 1
        return [(ids[int(starts[part[0]])], part)
                for part in (order[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(order)]))]

    def deleted(self, table: Any, delta_ids: set[int], stripe_ids: Sequence[int]) -> None:
        """Note the time range of the rows a statement deletes (for the
        invalidation log of a hypertable that tracks them): delta rows by
        their times, stripe rows by their stripes' catalog min / max of the
        time column."""
        if not self.hypertable.track_invalidations:
            return
        if delta_ids:
            for lo, hi in table.delta.time_range(self.hypertable.time_attnum, delta_ids):
                self.touch(self.key_of_value(lo, table.relname), self.key_of_value(hi, table.relname))
        if stripe_ids:
            found = stripe_key_range(table.relid, self.hypertable.time_attnum, self.kind, list(stripe_ids))
            if found is not None:
                self.touch(*found)

    def finish(self) -> None:
        """The statement's end: its row of the invalidation log."""
        self.log_invalidation()

    def log_invalidation(self) -> None:
        """Write the statement's row of the invalidation log if the hypertable
        tracks invalidations and the statement touched any time."""
        if self.hypertable.track_invalidations and self.lowest is not None:
            log_invalidation(self.hypertable.relid, self.lowest, self.greatest)
        self.lowest = self.greatest = None


def log_invalidation(relid: int, lowest: int, greatest: int) -> None:
    """Insert one row into ``orochi.hypertable_invalidation_log``."""
    spi.prepared("INSERT INTO orochi.hypertable_invalidation_log (relid, lowest, greatest)"
                 " VALUES ($1, $2, $3)", ["oid", "bigint", "bigint"], internal=True).execute(
        [int(relid), int(lowest), int(greatest)])


def stripe_key_range(relid: int, time_attnum: int, kind: str, stripe_ids: Sequence[int]) -> tuple[int, int] | None:
    """The lowest and greatest time key of stripes by their catalog min / max
    (an over-estimate of the rows deleted from them), or None."""
    if not stripe_ids:
        return None
    rows = spi.prepared(
        "SELECT min_value, max_value FROM orochi.columnar_stripe_columns"
        " WHERE relid = $1 AND attnum = $2 AND stripe_id = ANY ($3)",
        ["oid", "smallint", "bigint[]"], internal=True).execute([relid, time_attnum, [int(s) for s in stripe_ids]]).rows
    lo = hi = None
    for mn, mx in rows:
        mn, mx = store.decode_bound(kind, mn), store.decode_bound(kind, mx)
        if mn is None or mx is None:
            continue
        k = timekeys.keys_from_storage(np.array([mn, mx]), kind)
        lo = int(k[0]) if lo is None else min(lo, int(k[0]))
        hi = int(k[1]) if hi is None else max(hi, int(k[1]))
    return None if lo is None else (lo, hi)


# ---------------------------------------------------------------- exclusion

def excluded_chunks(column: str, chunks: Sequence[Chunk], prune: BooleanExpression,
                    kind: str) -> set[int]:
    """Ids of the chunks whose time range rules out every row for the bound
    quals, tested as stripe min / max are
    (:func:`~orochi_fdw.query.predicates.might_match`), with the chunk's
    range as the statistics of the time column and nothing known of the
    other columns.

    Args:
        column: the time column's name (as the quals name it).
        chunks: the hypertable's chunks.
        prune: the bound quals' pruning expression (``BoundQuals.prune``).
        kind: the time column's storage kind.

    Returns:
        The excluded chunks' ids.
    """
    if prune is ALWAYS_TRUE:
        return set()
    out = set()
    for c in chunks:
        lo, hi = timekeys.storage_bounds(kind, c.range_start, c.range_end)
        if lo > hi:
            out.add(c.chunk_id)  # a date chunk shorter than a day holding no midnight
            continue
        stats = {column: ColumnStats(1, 0, lo, hi)}
        if not might_match(prune, stats):
            out.add(c.chunk_id)
    return out


# ---------------------------------------------------------------- dropping

@dataclass(frozen=True)
class ChunkSelection:
    """Which chunks show_chunks / drop_chunks take: by time range (keys),
    the chunks lying wholly before ``older_than`` and wholly at or after
    ``newer_than``; or by creation time (microseconds since 1970-01-01 UTC),
    the chunks created before ``created_before`` and at or after
    ``created_after``. None: no bound."""

    older_than: int | None = None
    newer_than: int | None = None
    created_before: int | None = None
    created_after: int | None = None


_LIST_CREATED = """
SELECT chunk_id, range_start, range_end
  FROM orochi.hypertable_chunks
 WHERE relid = $1
   AND ($2::bigint IS NULL OR extract(epoch FROM created_at) * 1000000 < $2)
   AND ($3::bigint IS NULL OR extract(epoch FROM created_at) * 1000000 >= $3)
 ORDER BY range_start
"""


def select_chunks(relid: int, selection: ChunkSelection) -> list[Chunk]:
    """The chunks of a hypertable a selection takes, in time order."""
    if selection.created_before is not None or selection.created_after is not None:
        rows = spi.prepared(_LIST_CREATED, ["oid", "bigint", "bigint"]).execute(
            [int(relid), selection.created_before, selection.created_after]).rows
        return [Chunk(int(r[0]), int(relid), int(r[1]), int(r[2])) for r in rows]
    older_than, newer_than = selection.older_than, selection.newer_than
    return [c for c in list_chunks(relid)
            if (older_than is None or c.range_end <= older_than)
            and (newer_than is None or c.range_start >= newer_than)]


def drop_chunks(relid: int, selection: ChunkSelection) -> list[str]:
    """Drop the chunks a selection takes (:class:`ChunkSelection`), in the
    caller's transaction: their catalog rows, their stripes and the delta
    rows in their ranges.

    It first waits for the hypertable's open writers and keeps new ones out
    until the transaction ends (:func:`~orochi_fdw.timeseries.hypertable.lock_for_drop`),
    so what they wrote is seen and dropped too. Stripe files are retired as by
    orochi.vacuum(rel): snapshots taken before the commit may still read
    them, and a later orochi.vacuum(rel) removes them.

    Args:
        relid: the hypertable.
        selection: the chunks to drop.

    Returns:
        The dropped chunks' names, in time order.
    """
    from orochi_fdw.columnar.delta import DeltaStore
    from orochi_fdw.columnar.maintenance import retire_stripes
    from orochi_fdw.timeseries import hypertable as hypertables

    ht = hypertables.get(relid)
    if ht is None:
        return []
    hypertables.lock_for_drop(relid)
    doomed = select_chunks(relid, selection)
    if not doomed:
        return []
    ids = [int(r[0]) for r in spi.prepared(
        "DELETE FROM orochi.hypertable_chunks WHERE chunk_id = ANY ($1) RETURNING chunk_id",
        ["bigint[]"], internal=True).execute([[c.chunk_id for c in doomed]]).rows]
    doomed = [c for c in doomed if c.chunk_id in set(ids)]
    stripe_ids = [int(r[0]) for r in spi.prepared(
        "SELECT stripe_id FROM orochi.columnar_stripes WHERE relid = $1 AND chunk_id = ANY ($2)",
        ["oid", "bigint[]"], internal=True).execute([relid, ids]).rows]
    retire_stripes(relid, stripe_ids)
    delta = DeltaStore(relid, {})
    if delta.exists():
        column = f"c{ht.time_attnum}"
        for c in doomed:
            lo = _param_text(c.range_start, ht.time_type)
            if c.range_end >= timekeys.KEY_MAX:
                spi.prepared(f"DELETE FROM {delta.name} WHERE {column} >= $1::text::{ht.time_type}",
                             ["text"], internal=True).execute([lo])
            else:
                spi.prepared(f"DELETE FROM {delta.name} WHERE {column} >= $1::text::{ht.time_type}"
                             f" AND {column} < $2::text::{ht.time_type}", ["text", "text"], internal=True).execute(
                    [lo, _param_text(c.range_end, ht.time_type)])
    return [c.name for c in doomed]


def _param_text(key: int, time_type: str) -> str:
    """A key as the text form of a ``time_type`` value (exact, any range)."""
    value = timekeys.key_to_value(key, time_type)
    text = getattr(value, "text", None)  # a SpecialValue
    if text is not None:
        return text
    return str(value)


def truncate_chunks(relid: int) -> None:
    """TRUNCATE of a hypertable: its chunk rows go (its stripes and delta
    rows go with the table's); a hypertable that tracks invalidations logs
    all time as written."""
    spi.prepared("DELETE FROM orochi.hypertable_chunks WHERE relid = $1", ["oid"], internal=True).execute([int(relid)])
    spi.prepared("INSERT INTO orochi.hypertable_invalidation_log (relid, lowest, greatest)"
                 " SELECT relid, $2, $3 FROM orochi.hypertables WHERE relid = $1 AND track_invalidations",
                 ["oid", "bigint", "bigint"], internal=True).execute([int(relid), timekeys.KEY_MIN, timekeys.KEY_MAX - 1])
