"""Scans of columnar tables: catalog first, then files, chunk group by
chunk group, decoding only the columns asked for; then the delta store.

Every batch carries row ids (``Batch.rowids``, see
:mod:`~orochi_fdw.columnar.deletes`) for UPDATE and DELETE, unless the scan
is made without (``rowids=False``: aggregations, and plans that read no
ctid); the delta store's batches always have them. Deleted rows are
left out by the live mask of each chunk group (``DeletedOffsets.live_mask``,
applied in :meth:`ColumnarScan._kept`, with the filter's mask if any, and in
:meth:`ColumnarScan._apply_deletes` for a scan of no column); the delta
store's rows come last, as extra batches of the same layout, from
:meth:`~orochi_fdw.columnar.delta.DeltaStore.scan`.

With a filter the table applies exactly (``prefilter``), a chunk group's
filter columns are decoded first and its other columns only if a row
passes (late materialization). The kept rows of consecutive chunk groups of
a stripe go into one batch of up to :data:`RUN_ROWS` rows, a fixed-width
column's written straight into the batch's array (the ``compress`` kernel:
selection and gather in one pass); a large group whose every row is kept is
a batch of its own (its decoded columns, not copied). :meth:`ColumnarScan.chunk_groups` hands out
the chunk groups themselves (:class:`ChunkGroup`, columns decoded on
demand) to the top-N scan and to answers from statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from orochi_fdw.bridge.api import ColumnDefinition
from orochi_fdw.bridge.batch import Batch, Column
from orochi_fdw.catalog import files, store
from orochi_fdw.catalog.errors import MissingStripeFileError, StorageIOError
from orochi_fdw.columnar.deletes import DeletedOffsets, stripe_rowids
from orochi_fdw.columnar.topn import concat, dictionary_take, take
from orochi_fdw.columnar.types import storage_kind, to_wire
from orochi_fdw.kernels.filters import compress, count_selected
from orochi_fdw.query.all_match import matcher
from orochi_fdw.query.predicates import (ALWAYS_TRUE, BooleanExpression, ColumnStats, DictionaryColumn, pruner,
                                         referenced_columns, selection)
from orochi_fdw.storage.kinds import ColumnData
from orochi_fdw.storage.stripe_format import StripeReader
from orochi_fdw.tiering.objects import TierCounters, footer_estimate, open_stripe, prefetch_footers


#: rows of a batch of a scan at most: the kept rows of consecutive chunk
#: groups of a stripe are written into one batch's arrays, so that what
#: the scan's consumers do per batch (Arrow arrays, rows handed to
#: PostgreSQL) is done once per this many rows, not per chunk group
RUN_ROWS = 65536

#: a chunk group of at least this many rows all kept is a batch of its own:
#: its decoded columns handed on as they are (gathering them into a larger
#: batch would copy them)
WHOLE_GROUP_ROWS = 8192

#: decoded column chunks a scan keeps for its rescans
CHUNK_CACHE_ENTRIES = 32
#: dictionaries of up to this many bytes are kept by a scan, one wire column
#: per content (:meth:`ChunkGroup.dictionary`) ...
DICTIONARY_REUSE_BYTES = 4096
#: ... the most recent this many
DICTIONARY_REUSE_ENTRIES = 64


@dataclass
class ScanCounters:
    """What a scan read and skipped, for EXPLAIN ANALYZE."""

    stripes: int = 0
    stripes_skipped: int = 0
    stripes_skipped_topn: int = 0  # ruled out by a top-N's threshold
    stripes_from_stats: int = 0  # aggregated from the catalog's statistics, not read
    chunk_groups: int = 0
    chunk_groups_skipped: int = 0
    chunk_groups_skipped_topn: int = 0  # ruled out by a top-N's threshold
    chunk_groups_from_stats: int = 0  # aggregated from the chunks' statistics, not decoded
    chunk_groups_whole: int = 0  # passed the filter whole by their statistics (filter not decoded)
    rows: int = 0
    deleted_rows_skipped: int = 0
    delta_rows: int = 0
    rowids: int = 0  # stripe rows whose row ids were built
    columns: list[str] = field(default_factory=list)
    chunks: tuple[int, int] | None = None  # a hypertable's (chunks, chunks excluded)
    tier: TierCounters = field(default_factory=TierCounters)  # reads from object storage


def stripe_bounds(stripe: store.StripeRecord, column: ColumnDefinition, has_missing: bool = False) -> ColumnStats:
    """The catalog's statistics of a column over a stripe; a column the
    stripe does not have (added later) is NULL throughout, or, if it was
    added with a default (``has_missing``), that value (not known here)."""
    rec = stripe.columns.get(column.attnum)
    if rec is None:
        return ColumnStats(stripe.row_count, 0 if has_missing else stripe.row_count)
    if rec.kind != storage_kind(column):
        return ColumnStats(stripe.row_count, rec.null_count)  # type changed: only NULL counts hold
    return ColumnStats(stripe.row_count, rec.null_count, rec.min_value, rec.max_value, rec.has_nan)


def prune_expression(quals: Any) -> BooleanExpression:
    """What min/max pruning tests: a bound expression (``BoundQuals.prune``),
    or the bound quals themselves; an empty list prunes nothing."""
    if isinstance(quals, BooleanExpression):
        return quals
    prune = getattr(quals, "prune", None)
    if isinstance(prune, BooleanExpression):
        return prune
    if not quals:
        return ALWAYS_TRUE
    raise TypeError(f"not bound quals: {quals!r}")


def prune_stripes(stripes: list[store.StripeRecord], quals: Any,
                  columns: dict[str, ColumnDefinition], missing: Mapping[str, object] = {}
                  ) -> list[store.StripeRecord]:
    """The stripes whose catalog statistics do not rule every row out for
    the bound quals (:func:`prune_expression`; ``missing``: the columns added
    with a default, see :mod:`~orochi_fdw.columnar.missing`)."""
    expr = prune_expression(quals)
    if expr is ALWAYS_TRUE:
        return list(stripes)
    may_match = pruner(expr)
    return [s for s in stripes
            if may_match(lambda name, s=s: stripe_bounds(s, columns[name], name in missing))]


class ColumnarScan:
    """The iterator ``ColumnarTable.execute`` returns: yields batches
    (:class:`Batch`) of the kept rows of runs of chunk groups of a stripe
    (up to :data:`RUN_ROWS` rows; one per stripe when no column is
    needed), with only the needed columns.

    The stripe list is read from the catalog when the scan is created, before
    any row is produced, so rows a statement inserts into the table it scans
    are never read back by that statement.
    """

    def __init__(self, relname: str, table_columns: dict[str, ColumnDefinition],
                 stripes: list[store.StripeRecord], needed: list[str], quals: Any,
                 delta: Callable[[], Iterable[Batch]] | None = None,
                 missing: Mapping[str, tuple] = {}, chunk_cache: dict | None = None, rowids: bool = True,
                 dictionaries: frozenset = frozenset()):
        self.relname = relname
        self.rowids = rowids  # whether stripe rows get row ids
        #: text columns whose DICTIONARY-coded chunks are handed over in that
        #: form (a :class:`DictionaryColumn`), not decoded: for a consumer
        #: that takes it (the join engine); only where nothing filters the
        #: batch after the scan
        self.dictionaries = dictionaries
        self.table_columns = table_columns
        self.needed = [c for c in needed if c in table_columns]
        #: what min/max pruning tests (the bound quals' ``prune`` expression)
        self.quals = prune_expression(quals)
        self.missing = missing  # the values of columns added with a default, for older stripes
        self.counters = ScanCounters(columns=list(self.needed))
        kept = prune_stripes(stripes, self.quals, table_columns, missing)
        self.counters.stripes_skipped = len(stripes) - len(kept)
        self.stripes = kept
        self.delta = delta
        #: a FilteredScan over this scan, whose filter chunk groups apply
        #: before their other columns are decoded (late materialization)
        self.prefilter = None
        #: whether a chunk group's statistics show that every row passes the
        #: prefilter (:func:`~orochi_fdw.query.all_match.matcher`; False: not made yet)
        self._whole: Any = False
        # decoded column chunks by (stripe, chunk group, column), kept across
        # the rescans of one scan node (the most recent CHUNK_CACHE_ENTRIES)
        self.chunk_cache = chunk_cache
        self._may_match: Callable | None = None  # the quals' pruner (:meth:`_pruner`)
        #: (test, id(footer)) -> (footer, where the stripe holds each column, its answers)
        #: (:meth:`_footer_answers`)
        self._match_answers: dict[tuple, tuple] = {}
        #: the small dictionaries read, as wire columns, by (text column, with
        #: character(n), offsets, bytes): one object per content
        self._entries: dict[tuple, Column] = {}
        #: the capacity of the scan's last batch, in rows (:meth:`_emit`)
        self._run_rows = 0
        self._iter = self._batches()

    def __iter__(self) -> "ColumnarScan":
        return self

    def __next__(self) -> Batch:
        return next(self._iter)

    def explain_analyze(self) -> list[str]:
        c = self.counters
        total_stripes = c.stripes + c.stripes_skipped
        lines = [] if c.chunks is None else [
            f"Chunks Read: {c.chunks[0] - c.chunks[1]} of {c.chunks[0]}"
            + (f" ({c.chunks[1]} excluded)" if c.chunks[1] else "")]
        total_stripes += c.stripes_skipped_topn + c.stripes_from_stats
        lines += [f"Stripes Read: {c.stripes} of {total_stripes}"
                 + (f" ({c.stripes_skipped} skipped by min/max)" if c.stripes_skipped else "")
                 + (f" ({c.stripes_skipped_topn} skipped by top-N threshold)" if c.stripes_skipped_topn else "")
                 + (f" ({c.stripes_from_stats} answered from statistics)" if c.stripes_from_stats else "")]
        if self.needed:
            total_groups = c.chunk_groups + c.chunk_groups_skipped + c.chunk_groups_skipped_topn \
                + c.chunk_groups_from_stats
            lines.append(f"Chunk Groups Read: {c.chunk_groups} of {total_groups}"
                         + (f" ({c.chunk_groups_skipped} skipped by min/max)" if c.chunk_groups_skipped else "")
                         + (f" ({c.chunk_groups_skipped_topn} skipped by top-N threshold)"
                            if c.chunk_groups_skipped_topn else "")
                         + (f" ({c.chunk_groups_from_stats} answered from statistics)"
                            if c.chunk_groups_from_stats else ""))
        if c.chunk_groups_whole:
            lines.append(f"Chunk Groups Passing Whole: {c.chunk_groups_whole}")
        if c.deleted_rows_skipped:
            lines.append(f"Deleted Rows Skipped: {c.deleted_rows_skipped}")
        if c.rowids:
            lines.append(f"Row Ids Built: {c.rowids}")
        if c.tier.objects:
            lines.append(f"Object Storage: {c.tier.explain()}")
        lines.append(f"Delta Rows: {c.delta_rows}")
        return lines

    # ------------------------------------------------------------------

    def _batches(self) -> Iterator[Batch]:
        if self.needed:
            prefetch_footers((s.file_path, s.file_bytes, self._footer_estimate(s)) for s in self.stripes)
        ahead: tuple | None = None  # (stripe, plan) of a cold stripe whose fetches are in flight
        try:
            for stripe in self.stripes:
                self.counters.stripes += 1
                if not self.needed:
                    deleted = DeletedOffsets(stripe.delete_bitmap)
                    batch = self._apply_deletes(stripe, deleted, 0, Batch(stripe.row_count, {}))
                    if batch is not None:
                        self.counters.rows += batch.nrows
                        yield batch
                    continue
                if files.is_object(stripe.file_path):
                    # in object storage: start its fetches now, decode the
                    # stripe before it (if any) while they run
                    planned = (stripe, self._plan(stripe))
                    if ahead is not None:
                        current, ahead = ahead, planned
                        yield from self._emit(*current)
                    else:
                        ahead = planned
                    continue
                if ahead is not None:
                    current, ahead = ahead, None
                    yield from self._emit(*current)
                yield from self._emit(stripe, self._plan(stripe))
            if ahead is not None:
                current, ahead = ahead, None
                yield from self._emit(*current)
        finally:
            if ahead is not None:
                ahead[1].reader.close()
        if self.delta is not None:
            for batch in self.delta():
                self.counters.delta_rows += batch.nrows
                yield batch

    def _apply_deletes(self, stripe: store.StripeRecord, deleted: DeletedOffsets, first_row: int,
                       batch: Batch) -> Batch | None:
        """The rows of ``batch`` (the stripe's rows from ``first_row`` on, a
        chunk group) that are not deleted, with their row ids; None if none
        is left (row ids only if the scan builds them). The one place where
        delete bitmaps filter stripe rows."""
        n = batch.nrows
        live = deleted.live_mask(first_row, n)
        if live is None:
            if self.rowids:
                batch.rowids = stripe_rowids(stripe.stripe_id, np.arange(first_row, first_row + n))
                self.counters.rowids += n
            return batch
        offsets = np.flatnonzero(live)
        self.counters.deleted_rows_skipped += n - len(offsets)
        if len(offsets) == 0:
            return None
        cols = {name: col.take(offsets) if isinstance(col, DictionaryColumn) else select_rows(col, live, offsets)
                for name, col in batch.columns.items()}
        return Batch(len(offsets), cols, self._rowids(stripe.stripe_id, offsets + first_row))

    def _rowids(self, stripe_id: int, offsets: np.ndarray) -> np.ndarray | None:
        """Row ids of stripe rows at ``offsets``, if the scan builds them."""
        if not self.rowids:
            return None
        self.counters.rowids += len(offsets)
        return stripe_rowids(stripe_id, offsets)

    def _footer_estimate(self, stripe: store.StripeRecord) -> int:
        return footer_estimate(stripe.chunk_group_count, len(self.table_columns) + 2)

    def _open(self, stripe: store.StripeRecord) -> StripeReader:
        try:
            return open_stripe(stripe.file_path, stripe.file_bytes, self.counters.tier,
                               self._footer_estimate(stripe))
        except FileNotFoundError:
            raise MissingStripeFileError(
                f'stripe file "{stripe.file_path}" of table "{self.relname}" is missing',
                detail=f"The catalog lists stripe {stripe.stripe_id} with {stripe.row_count} rows.") from None
        except PermissionError as exc:
            raise StorageIOError(f'could not open stripe file "{stripe.file_path}": {exc.strerror}') from None

    @dataclass
    class _Plan:
        """What a scan reads from one stripe: its open reader and the chunk
        groups left after pruning (their fetches started, for a stripe in
        object storage)."""

        reader: object
        groups: list

    def _plan(self, stripe: store.StripeRecord) -> "ColumnarScan._Plan":
        reader = self._open(stripe)
        try:
            groups = self._groups(stripe, reader)
            start = getattr(reader, "start_prefetch", None)
            if start is not None:  # a stripe in object storage: fetch what is read, in parallel
                start([(group.present[name][0], group.index) for group in groups for name in self.needed
                       if name in group.present])
            return ColumnarScan._Plan(reader, groups)
        except BaseException:
            reader.close()
            raise

    def _emit(self, stripe: store.StripeRecord, plan: "ColumnarScan._Plan") -> Iterator[Batch]:
        """The batches of a stripe's chunk groups: each group's kept rows
        (filtered, deleted ones left out) written into the arrays of a
        batch of up to RUN_ROWS rows, the next group's when they are full
        (a column of another layout than the batch's starts a new one).
        A scan's first batch holds one group's rows, the next ones twice as
        many as the one before, up to RUN_ROWS: a scan stopped early (a
        LIMIT) reads no more groups than before. A group of at least
        WHOLE_GROUP_ROWS rows all kept is a batch of its own, not copied."""
        pre = self.prefilter
        filtering = pre is not None and bool(pre.filters)
        dicts = self.dictionaries if filtering or pre is None or pre.expr is ALWAYS_TRUE else frozenset()
        needed = pre.needed if filtering else self.needed
        remaining = sum(group.nrows for group in plan.groups)
        run: _Run | None = None
        try:
            for group in plan.groups:
                if run is not None and run.nrows >= run.capacity:
                    yield self._batch(run, filtering)  # full: handed on before the next group is read
                    run = None
                self.counters.chunk_groups += 1
                remaining -= group.nrows
                mask, k = self._kept(group, pre if filtering else None)
                if k == 0:
                    group.release()
                    continue
                full, picked = self._group_columns(group, needed, dicts, mask)
                if mask is None and k >= WHOLE_GROUP_ROWS:
                    # every row kept: the group's columns handed on as they are, not copied
                    if run is not None:
                        yield self._batch(run, filtering)
                        run = None
                    cols = {name: full[name] if name in full else picked[name] for name in needed}
                    rowids = self._rowids(stripe.stripe_id, np.arange(group.first_row, group.first_row + k)) \
                        if self.rowids else None
                    group.release()
                    self.counters.rows += k
                    yield (FilteredBatch if filtering else Batch)(k, cols, rowids)
                    continue
                if run is not None and not run.accepts(full, picked, k):
                    yield self._batch(run, filtering)
                    run = None
                if run is None:
                    # the first batch of a scan is one group's (a LIMIT reads
                    # no more), each next one up to twice the size of the one before
                    self._run_rows = min(RUN_ROWS, max(2 * self._run_rows, k))
                    run = _Run(max(k, min(self._run_rows, k + remaining)))
                run.add(full, picked, mask, k)
                if self.rowids:
                    offsets = np.arange(group.nrows) if mask is None else selection(mask, np.int64)
                    run.rowids.append(self._rowids(stripe.stripe_id, offsets + group.first_row))
                group.release()
            if run is not None:
                yield self._batch(run, filtering)
        finally:
            plan.reader.close()

    def _batch(self, run: "_Run", filtering: bool) -> Batch:
        batch = run.batch(FilteredBatch if filtering else Batch)
        self.counters.rows += batch.nrows
        return batch

    def _kept(self, group: "ChunkGroup", pre) -> tuple[np.ndarray | None, int]:
        """The rows of ``group`` a scan passes on: (a uint8 mask, None when
        every row is kept; how many), the filter ``pre`` applied (None: no
        filter) and deleted rows left out. Late materialization: only the
        filter's columns are decoded for it; a group whose statistics show
        that every row passes is taken without decoding them."""
        n = group.nrows
        mask = None
        if pre is not None:
            if self._whole is False:
                self._whole = matcher(pre.expr)  # once per scan
            whole = False
            if self._whole is not None:
                answers = self._footer_answers("whole", pre.expr, group.reader.metadata, group.present)
                whole = answers[group.index]
                if whole is None:
                    whole = answers[group.index] = bool(self._whole(group.stats))
            if whole:
                self.counters.chunk_groups_whole += 1
            else:
                mask = pre.mask(group.column, n, group.filter_dictionary)
        live = group.live()
        deleted = 0
        if live is not None:
            live = live.view(np.uint8)
            deleted = n - count_selected(live)
            self.counters.deleted_rows_skipped += deleted
            if mask is None:
                mask = live
            else:
                np.bitwise_and(mask, live, out=mask)
        k = n if mask is None else count_selected(mask)
        if pre is not None:
            pre.removed += n - deleted - k
        return (None if k == n else mask), k

    def _group_columns(self, group: "ChunkGroup", needed: list[str], dicts: frozenset,
                       mask: np.ndarray | None) -> tuple[dict, dict]:
        """The ``needed`` columns of ``group``: (fixed-width columns of
        every row, for the run to gather the kept rows of; the others,
        variable-width and dictionary forms, at the kept rows already)."""
        full: dict[str, Column] = {}
        picked: dict[str, Any] = {}
        idx = None
        for name in needed:
            if name in dicts:
                col = group.dictionary_column(name)
            elif group.dictionary_read(name) is not None:
                # its dictionary form was read for the filter: the kept rows decoded from it
                if idx is None:
                    idx = np.arange(group.nrows) if mask is None else selection(mask, np.int64)
                picked[name] = group.rows(name, idx)
                continue
            else:
                col = group.column(name)
            if isinstance(col, DictionaryColumn) or col.offsets is not None:  # variable-width
                if mask is not None:
                    if idx is None:
                        idx = selection(mask, np.int64)
                    col = col.take(idx) if isinstance(col, DictionaryColumn) else take(col, idx)
                picked[name] = col
            else:
                full[name] = col
        return full, picked

    def _groups(self, stripe: store.StripeRecord, reader: StripeReader, prune: bool = True) -> list["ChunkGroup"]:
        """The chunk groups of ``stripe`` (open in ``reader``) that the quals'
        min / max do not rule out (without ``prune``: left to
        :meth:`may_match`, asked of the groups read only) and that have a
        live row."""
        present, deleted, infos = self._live_groups(stripe, reader, prune)
        return [ChunkGroup(self, stripe, reader, present, deleted, group) for group in infos]

    def _live_groups(self, stripe: store.StripeRecord, reader: StripeReader, prune: bool = True) -> tuple:
        """:meth:`_groups` before the :class:`ChunkGroup` objects are made
        (a top-N makes those of the groups it reads only): (table column ->
        (file column, stored kind), the stripe's deleted offsets, the groups'
        footer records)."""
        meta = reader.metadata
        # table column -> (file column, stored kind); absent columns read as NULL
        present: dict[str, tuple[str, str]] = {}
        for name, column in self.table_columns.items():
            rec = stripe.columns.get(column.attnum)
            if rec is not None:
                present[name] = (rec.column_name, rec.kind)
        deleted = DeletedOffsets(stripe.delete_bitmap)
        qual_cols = {}
        prune = prune and self.quals is not ALWAYS_TRUE
        may_match = self._pruner()
        for name in (referenced_columns(self.quals) if prune else ()):
            rec = stripe.columns.get(self.table_columns[name].attnum)
            if rec is not None and rec.kind == storage_kind(self.table_columns[name]):
                qual_cols[name] = meta.column_index(rec.column_name)
        answers = self._footer_answers("may match", self.quals, meta, present) if prune else None
        groups = []
        for group in meta.chunk_groups:
            g = group.index
            if prune:
                ok = answers[g]
                if ok is None:
                    def stats(name: str, g: int = g) -> Any:
                        ci = qual_cols.get(name)
                        return None if ci is None else meta.chunks[g][ci].stats  # a ChunkStats

                    ok = answers[g] = bool(may_match(stats))
                if not ok:
                    self.counters.chunk_groups_skipped += 1
                    continue
            if deleted and deleted.count_in(group.first_row, group.first_row + group.row_count) \
                    == group.row_count:
                self.counters.deleted_rows_skipped += group.row_count
                continue  # every row deleted: nothing to decode
            groups.append(group)
        return present, deleted, groups

    def may_match(self, group: "ChunkGroup") -> bool:
        """Whether the quals' min / max leave rows of ``group`` (one of
        :meth:`_groups` without ``prune``) that may match; counted as skipped
        by min / max if not."""
        if self.quals is ALWAYS_TRUE:
            return True
        answers = self._footer_answers("may match", self.quals, group.reader.metadata, group.present)
        ok = answers[group.index]
        if ok is None:
            ok = answers[group.index] = self._pruner()(group.stats)
        if ok:
            return True
        self.counters.chunk_groups_skipped += 1
        return False

    def _footer_answers(self, what: str, expr: BooleanExpression, meta: Any, present: dict) -> list:
        """What a test of ``expr`` on chunk statistics (``what``: "may
        match", the quals' min / max; "whole", every row passes) answered
        per chunk group of the footer ``meta`` (None: not asked yet). The
        answers depend on the footer's statistics only: kept with it (cached
        across queries), for the scans of the same expression after this
        one, under the stored kinds of the columns it reads (``present``)."""
        known = self._match_answers.get((what, id(meta)))
        if known is not None and known[0] is meta and known[1] is present:
            return known[2]
        key = (what, expr) + tuple((present.get(name), storage_kind(self.table_columns[name]))
                                   for name in sorted(referenced_columns(expr)))
        try:
            answers = meta.derived(key, lambda: [None] * len(meta.chunk_groups))
        except TypeError:  # a value that does not hash
            answers = [None] * len(meta.chunk_groups)
        self._match_answers[(what, id(meta))] = (meta, present, answers)
        return answers

    def _pruner(self) -> Callable:
        """The quals' min / max pruner, made once per scan."""
        if self._may_match is None:
            self._may_match = pruner(self.quals)
        return self._may_match

    def chunk_groups(self, stripe: store.StripeRecord, reader: StripeReader,
                     skip: Callable[["ChunkGroup"], bool] | None = None,
                     order: Callable[["ChunkGroup"], Any] | None = None) -> Iterator["ChunkGroup"]:
        """The chunk groups of ``stripe`` (open in ``reader``) that the quals'
        min / max do not rule out and that have a live row, each with its
        columns decoded on demand (:class:`ChunkGroup`); ``skip``: a further
        test on a group's statistics (a top-N's threshold), counted apart,
        asked just before the group would be yielded; ``order``: a sort key
        of the groups (file order without)."""
        groups = self._groups(stripe, reader)
        if order is not None:
            groups.sort(key=order)
        for chunk_group in groups:
            if skip is not None and skip(chunk_group):
                self.counters.chunk_groups_skipped_topn += 1
                continue
            self.counters.chunk_groups += 1
            yield chunk_group


class ChunkGroup:
    """One chunk group of a stripe a scan reads: its statistics, its live
    rows, and its columns, each decoded when first asked for."""

    __slots__ = ("scan", "stripe", "reader", "present", "deleted", "index", "first_row", "nrows", "_cols",
                 "_dicts")

    def __init__(self, scan: ColumnarScan, stripe: store.StripeRecord, reader: StripeReader,
                 present: dict[str, tuple[str, str]], deleted: DeletedOffsets, group):
        self.scan = scan
        self.stripe = stripe
        self.reader = reader
        self.present = present
        self.deleted = deleted
        self.index = group.index
        self.first_row = group.first_row
        self.nrows = group.row_count
        self._cols: dict[str, Column] = {}
        #: dictionary forms read: by name (:meth:`dictionary`), by (name,
        #: True) with character(n) columns too (:meth:`filter_dictionary`)
        self._dicts: dict[Any, tuple | None] = {}

    def stats(self, name: str):
        """The chunk's statistics of column ``name`` (a ``ChunkStats``), or
        None when the stripe does not hold it in its current kind."""
        where = self.present.get(name)
        if where is None or where[1] != storage_kind(self.scan.table_columns[name]):
            return None
        meta = self.reader.metadata
        return meta.chunks[self.index][meta.column_index(where[0])].stats

    def column(self, name: str) -> Column:
        """Column ``name`` of every row of the group (deleted ones too)."""
        col = self._cols.get(name)
        if col is None:
            column = self.scan.table_columns[name]
            if name not in self.present:  # added after this stripe was written
                col = missing_column(column, self.scan.missing.get(name), self.nrows, native=True)
            else:
                # decoded chunks are kept across the rescans of one scan node
                cache = self.scan.chunk_cache
                key = (self.stripe.stripe_id, self.index, name)
                col = None if cache is None else cache.get(key)
                if col is None:
                    file_column, stored_kind = self.present[name]
                    col = to_wire(self.reader.read_chunk(file_column, self.index), storage_kind(column),
                                  column, stored_kind, native=True)
                    if cache is not None:
                        cache[key] = col
                        if len(cache) > CHUNK_CACHE_ENTRIES:
                            del cache[next(iter(cache))]
            self._cols[name] = col
        return col

    def dictionary_read(self, name: str) -> tuple | None:
        """Column ``name``'s dictionary form if a filter read it and the
        column was not decoded (:meth:`rows` gathers from it), else None."""
        if name in self._cols:
            return None
        return self._dicts.get((name, True)) or self._dicts.get(name)

    def rows(self, name: str, idx: np.ndarray | None) -> Column:
        """Column ``name`` at rows ``idx`` (None: every row of the group):
        gathered from its dictionary form if that was read (for a filter:
        the chunk is not read again), else decoded (:meth:`column`)."""
        found = self.dictionary_read(name)
        if found is not None:
            return dictionary_take(*found, np.arange(self.nrows) if idx is None else idx)
        col = self.column(name)
        return col if idx is None else take(col, idx)

    def dictionary(self, name: str) -> tuple[Column, np.ndarray, np.ndarray | None] | None:
        """Variable-width column ``name`` in its dictionary form, if its chunk
        is DICTIONARY-coded and stored as the column's current type: (the
        distinct values as a wire column, int32 code per row of the group
        (0 for NULLs), validity or None); else None. Not decoded if
        :meth:`column` decoded it already."""
        if name in self._dicts:
            return self._dicts[name]
        found = None if name in self._cols else self._dictionary_parts(name, chars=False)
        self._dicts[name] = found
        return found

    def dictionary_column(self, name: str) -> "Column | DictionaryColumn":
        """Text column ``name`` as a :class:`DictionaryColumn` when its chunk
        is DICTIONARY-coded (character(n) too: its entries without their
        padding, as stored), else decoded (:meth:`column`)."""
        found = None
        if name not in self._cols and self.scan.chunk_cache is None:
            found = self._dicts.get(name) or self._dicts.get((name, True)) or self._dictionary_parts(name, chars=True)
        return self.column(name) if found is None else DictionaryColumn(*found)

    def filter_dictionary(self, name: str) -> tuple[Column, np.ndarray, np.ndarray | None] | None:
        """:meth:`dictionary`'s answer for the scan's filter, character(n)
        columns too (their entries, like their decoded rows in a scan's
        layout, are without padding)."""
        key = (name, True)
        if key not in self._dicts:
            self._dicts[key] = None if name in self._cols else \
                self._dicts.get(name) or self._dictionary_parts(name, chars=True)
        return self._dicts[key]

    def _dictionary_parts(self, name: str, chars: bool) -> tuple[Column, np.ndarray, np.ndarray | None] | None:
        """:meth:`dictionary`'s answer, read (``chars``: of a character(n)
        column too)."""
        where = self.present.get(name)
        column = self.scan.table_columns[name]
        read = getattr(self.reader, "read_dictionary", None)
        kind = storage_kind(column)
        if where is None or where[1] != kind or (kind == "char" and not chars) or read is None:
            return None
        chunk = read(where[0], self.index)
        if chunk is None:
            return None
        offsets, data = chunk.entries
        if len(data) > DICTIONARY_REUSE_BYTES:
            entries = to_wire(ColumnData(chunk.entries, None), kind, column, native=True)
        else:
            # chunk groups often share their (small) dictionary: a scan makes
            # one wire column of each, so that what its consumers work out
            # from one (a filter's answer per entry) they may keep by identity
            known = self.scan._entries
            key = (name, chars, offsets.tobytes(), data.tobytes())
            entries = known.get(key)
            if entries is None:
                entries = known[key] = to_wire(ColumnData(chunk.entries, None), kind, column, native=True)
                if len(known) > DICTIONARY_REUSE_ENTRIES:
                    del known[next(iter(known))]
        if not entries.kind.is_variable_width:
            return None
        return entries, chunk.codes, chunk.validity

    def release(self) -> None:
        """Forget the decoded columns (the batch made of them holds them as
        long as it lives): a stripe's plan keeps its chunk groups until the
        stripe is read, and their columns would otherwise pile up in memory
        (a stripe's worth of decoded columns, allocated afresh stripe after
        stripe)."""
        self._cols = {}
        self._dicts = {}

    def live(self) -> np.ndarray | None:
        """Mask of the rows not deleted, None when none is."""
        return self.deleted.live_mask(self.first_row, self.nrows)

    def rowids(self, offsets: np.ndarray) -> np.ndarray:
        """Row ids of the group's rows at ``offsets``."""
        return stripe_rowids(self.stripe.stripe_id, np.asarray(offsets, dtype=np.int64) + self.first_row)


class FilteredBatch(Batch):
    """A batch whose rows passed the scan's filter already."""

    __slots__ = ()


def null_column(column: ColumnDefinition, nrows: int, native: bool = False) -> Column:
    """A wire column of ``nrows`` NULLs for ``column`` (one a stripe does not
    have), so that every batch carries every needed column (``native``: in a
    scan's layout, :func:`~orochi_fdw.columnar.types.scan_wire_kind`)."""
    from orochi_fdw.storage.kinds import ColumnData, get_kind

    kind = storage_kind(column)
    k = get_kind(kind)
    validity = np.zeros(nrows, dtype=bool)
    if k.physical == "var":
        values = (np.zeros(nrows + 1, dtype=np.int64), np.zeros(0, dtype=np.uint8))
    else:
        values = np.zeros(nrows, dtype=k.dtype)
    return to_wire(ColumnData(values, validity), kind, column, native=native)


def missing_column(column: ColumnDefinition, value: tuple | None, nrows: int,
                   native: bool = False) -> Column:
    """A wire column of ``nrows`` rows of a column a stripe does not have: its
    missing value (one row in storage form), or NULL."""
    if value is None:
        return null_column(column, nrows, native)
    from orochi_fdw.columnar import missing
    from orochi_fdw.storage.kinds import ColumnData

    kind = storage_kind(column)
    return to_wire(ColumnData(*missing.repeat(value, kind, nrows)), kind, column, native=native)


def select_rows(col: Column, mask: np.ndarray, indices: np.ndarray | None = None) -> Column:
    """The rows of a wire column where ``mask`` is true (``indices``: the same
    as positions, if known)."""
    if indices is None:
        indices = np.flatnonzero(mask)
    validity = None if col.validity is None else col.validity[mask]
    if not col.kind.is_variable_width:
        return Column(col.kind, col.values[mask], validity)
    offsets = col.offsets
    starts = offsets[:-1][indices]
    lengths = offsets[1:][indices] - starts
    new_offsets = np.zeros(len(indices) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    total = int(new_offsets[-1])
    if total == 0:
        return Column(col.kind, np.zeros(0, dtype=np.uint8), validity, new_offsets)
    gather = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    values = col.values if isinstance(col.values, np.ndarray) else np.frombuffer(col.values, np.uint8)
    return Column(col.kind, values[gather], validity, new_offsets)


def compress_rows(mask: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
    """``values`` (fixed-width, any dtype) at the rows where the uint8
    ``mask`` is nonzero, written into ``out`` (as many entries, ``values``'
    dtype): one pass of the ``compress`` kernel for values of 1, 2, 4 or 8
    bytes, numpy's boolean indexing for the others."""
    width = values.dtype.itemsize
    if width not in (1, 2, 4, 8) or values.dtype.hasobject:
        out[...] = values[mask.view(np.bool_)]
        return
    compress(mask, np.ascontiguousarray(values).view(np.uint8), out.view(np.uint8), width)


class _Run:
    """The kept rows of consecutive chunk groups of a stripe, gathered into
    one batch of at most ``capacity`` rows: a fixed-width column's kept
    values written straight into the batch's array (no array per group),
    other columns (variable-width, dictionary forms: at their kept rows
    already) joined when the batch is made (:meth:`batch`)."""

    __slots__ = ("capacity", "nrows", "fixed", "parts", "rowids")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.nrows = 0
        #: fixed-width column -> [kind, values array, validity array or None]
        self.fixed: dict[str, list] = {}
        #: other column -> its groups' kept rows
        self.parts: dict[str, list] = {}
        self.rowids: list[np.ndarray] = []

    def accepts(self, full: dict, picked: dict, k: int) -> bool:
        """Whether a group's columns (:meth:`ColumnarScan._group_columns`),
        ``k`` kept rows, go into this batch: they fit, in the same layouts."""
        if self.nrows + k > self.capacity:
            return False
        if self.nrows == 0:
            return True
        for name, col in full.items():
            known = self.fixed.get(name)
            if known is None or known[0] is not col.kind or known[1].dtype != col.values.dtype:
                return False
        for name, col in picked.items():
            known = self.parts.get(name)
            if known is None or type(known[0]) is not type(col) or (
                    isinstance(col, Column) and known[0].kind is not col.kind):
                return False
        return True

    def add(self, full: dict, picked: dict, mask: np.ndarray | None, k: int) -> None:
        """A group's columns (its ``k`` kept rows: where ``mask`` is nonzero,
        None: all)."""
        at, end = self.nrows, self.nrows + k
        for name, col in full.items():
            known = self.fixed.get(name)
            values = np.asarray(col.values)
            if known is None:
                known = self.fixed[name] = [col.kind, np.empty(self.capacity, dtype=values.dtype), None]
            if mask is None:
                known[1][at:end] = values
            else:
                compress_rows(mask, values, known[1][at:end])
            validity = known[2]
            if col.validity is not None:
                if validity is None:
                    validity = known[2] = np.ones(self.capacity, dtype=np.uint8)
                v = np.asarray(col.validity)
                v = v.view(np.uint8) if v.dtype == np.bool_ else v.astype(np.uint8, copy=False)
                if mask is None:
                    validity[at:end] = v
                else:
                    compress_rows(mask, v, validity[at:end])
            elif validity is not None:
                validity[at:end] = 1
        for name, col in picked.items():
            self.parts.setdefault(name, []).append(col)
        self.nrows = end

    def batch(self, batch_type: type) -> Batch:
        """The batch made of the groups added (a ``batch_type``)."""
        n = self.nrows
        # arrays much larger than their rows are copied to their size (a
        # selective filter's batch keeps no capacity's worth of memory)
        trim = n * 4 < self.capacity
        cols: dict[str, Any] = {}
        for name, (kind, values, validity) in self.fixed.items():
            values = values[:n].copy() if trim else values[:n]
            if validity is not None:
                validity = validity[:n].copy() if trim else validity[:n]
            cols[name] = Column(kind, values, validity)
        for name, parts in self.parts.items():
            cols[name] = parts[0] if len(parts) == 1 else \
                _join_dictionaries(parts) if isinstance(parts[0], DictionaryColumn) else concat(parts)
        rowids = None
        if self.rowids:
            rowids = self.rowids[0] if len(self.rowids) == 1 else np.concatenate(self.rowids)
        return batch_type(n, cols, rowids)


def _join_dictionaries(parts: list[DictionaryColumn]) -> DictionaryColumn:
    """Text columns in dictionary form, one after the other: one entries
    column when they share it (a scan keeps one object per small
    dictionary), else their entries one after the other, the codes of
    each shifted past the entries before it."""
    def rows(p: DictionaryColumn) -> int:
        return len(p.entries.offsets) - 1 if p.codes is None else len(p.codes)

    def codes(p: DictionaryColumn) -> np.ndarray:
        return np.arange(rows(p), dtype=np.int32) if p.codes is None else np.asarray(p.codes, dtype=np.int32)

    validity = None
    if any(p.validity is not None for p in parts):
        validity = np.concatenate([np.ones(rows(p), np.uint8) if p.validity is None
                                   else np.asarray(p.validity).astype(np.uint8, copy=False) for p in parts])
    first = parts[0].entries
    if all(p.entries is first for p in parts):
        return DictionaryColumn(first, np.concatenate([codes(p) for p in parts]), validity)
    shifted, base = [], 0
    for p in parts:
        shifted.append(codes(p) + np.int32(base))
        base += len(p.entries.offsets) - 1
    return DictionaryColumn(concat([p.entries for p in parts]), np.concatenate(shifted), validity)
