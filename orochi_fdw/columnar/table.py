"""``ColumnarTable``: the default wrapper of ``SERVER orochi``.

Rows of INSERT, INSERT ... SELECT and COPY FROM reach :meth:`insert_batch`
in column batches of up to ``stripe_row_limit`` rows (the bridge cuts a
batch early when it holds 64 MB). A statement of at most ``delta_row_limit``
rows goes to the delta store (:mod:`~orochi_fdw.columnar.delta`); a larger
one becomes stripe files (one per batch, more if it is larger than the
limit), written, fsynced and linked into place before their catalog rows are
inserted in the statement's transaction. UPDATE and DELETE work through row
ids carried in ctid (:mod:`~orochi_fdw.columnar.modify`).
Scans read the catalog, skip stripes and chunk groups whose min / max rule
the quals out, decode only the columns the query needs, leave deleted rows
out, and then read the delta store.

A table extension (:mod:`~orochi_fdw.columnar.extensions`: hypertables are
one) may route a table's rows into parts: the table then writes one stripe
per part its rows fall in, and its scans first leave out the stripes of the
parts the extension rules out.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from orochi_fdw.bridge import runtime, spi
from orochi_fdw.bridge.api import ColumnDefinition, ForeignDataWrapper, Qual, SortKey
from orochi_fdw.bridge.faults import fault_point
from orochi_fdw.bridge.batch import Batch, WireKind
from orochi_fdw.catalog import files, store
from orochi_fdw.catalog.snapshots import SnapshotReads
from orochi_fdw.catalog.errors import StorageIOError
from orochi_fdw.catalog.ledger import ledger
from orochi_fdw.columnar import extensions
from orochi_fdw.columnar import options as opts
from orochi_fdw.columnar import topn
from orochi_fdw.columnar.delta import DeltaStore
from orochi_fdw.columnar.filter import FilteredScan, collation_policy
from orochi_fdw.columnar.modify import StatementWrites
from orochi_fdw.columnar.aggregate import AggregatePushdown
from orochi_fdw.columnar.pruning import CollationInfo
from orochi_fdw.columnar.scan import ColumnarScan, prune_stripes
from orochi_fdw.columnar.types import TEXT_TYPE_OIDS, from_wire, raw_size, scan_wire_kind, storage_kind
from orochi_fdw.errors import InsufficientPrivilegeError, InvalidOptionError
from orochi_fdw.query.predicates import ALWAYS_TRUE, BoundQuals, bind_quals
from orochi_fdw.sketches.sampling import sample_requested, sampled_scan_if_requested
from orochi_fdw.storage.codecs import Codec, Compression
from orochi_fdw.storage.stripe_format import ColumnSpec, StripeWriter

if TYPE_CHECKING:  # pragma: no cover
    from orochi_fdw.columnar.extensions import WriteRouter

#: bytes per value assumed for planning when nothing is stored yet
_DEFAULT_WIDTH = {"bool": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4, "float64": 8,
                  "date": 4, "timestamp": 8, "timestamptz": 8, "time": 8, "interval": 16,
                  "uuid": 16, **{f"decimal64_{s}": 8 for s in range(19)}}


#: what planning read of a table's catalog (its stripe records with the
#: catalog rows of some columns, its delta store's row count), for the rest
#: of the snapshot
_planning_reads = SnapshotReads(64)


def _planning_read(key: tuple, read: Any) -> Any:
    """``read()``, or what it answered under the same snapshot before (the
    records are shared: planning only reads them)."""
    return _planning_reads.read(key, read)


class ColumnarTable(AggregatePushdown, ForeignDataWrapper):
    """A compressed columnar table.

    Args:
        options: the server's and table's options (see
            :mod:`orochi_fdw.columnar.options`), plus ``table_oid`` and
            ``table_name`` from the bridge.
        columns: the table's columns.

    Raises:
        InvalidOptionValueError: options that do not fit together.
    """

    options_spec = opts.OPTIONS_SPEC

    @classmethod
    def validate_options(cls, kind: str, options: Mapping[str, str]) -> dict[str, Any]:
        """Check the options given on a server, table or column (CREATE /
        ALTER); combinations are checked once the table exists, by the DDL
        event trigger and when the table is opened."""
        spec = cls.options_spec.get(kind, {})
        for name in options:
            if name not in spec:
                raise InvalidOptionError(
                    f'invalid option "{name}" for a columnar {kind}',
                    hint=f"Valid options in this context are: {', '.join(sorted(spec)) or '(none)'}")
        if "data_dir" in options and not spi.is_superuser():
            # files are written, and orphans removed, where it points: as
            # file_fdw's filename, only a superuser may choose a folder
            raise InsufficientPrivilegeError(
                'only superuser can set the option "data_dir"',
                detail="Stripe files are written where it points, by the operating system user "
                       "running PostgreSQL.")
        return super().validate_options(kind, options)

    def __init__(self, options: Mapping[str, Any], columns: Mapping[str, ColumnDefinition]):
        super().__init__(options, columns)
        self.relid = int(options["table_oid"])
        self.relname = str(options.get("table_name", self.relid))
        self.settings = opts.resolve(options, self.columns)
        self.kinds = {name: storage_kind(c) for name, c in self.columns.items()}
        self.delta = DeltaStore(self.relid, self.columns)
        self._missing: dict[str, tuple] | None = None
        self._writes: StatementWrites | None = None
        self._depth = 0  # savepoint depth

    # ------------------------------------------------------------------ writing

    @property
    def insert_batch_size(self) -> int:  # type: ignore[override]
        return self.settings.stripe_row_limit

    @property
    def rowid_column(self) -> str:  # type: ignore[override]
        return "ctid"

    def _statement(self) -> StatementWrites:
        if self._writes is None:
            self._writes = StatementWrites(self, self._depth)
        return self._writes

    def insert_batch(self, batch: Batch) -> None:
        self._statement().insert_batch(batch)

    def fast_insert_layout(self) -> tuple[int, int, int, dict[int, int]] | None:
        """Whether the bridge may write a one-row INSERT straight into the
        delta store (no Python call per statement), and how: (delta table
        oid, row id sequence oid, ``_rowid``'s attno, {column attnum: delta
        attno}, and what a table extension adds); None when every row must
        come here: a subclass, a table extension that refuses it, a database
        with change capture, a table whose rows never go to the delta store,
        or columns the delta table keeps as text. The bridge keeps the
        answer until the table's relcache entry is invalidated
        (spi.invalidate_relcache where what it depends on changes)."""
        from orochi_fdw.cdc import capture

        if type(self) is not ColumnarTable or self.settings.delta_row_limit < 1:
            return None
        if capture.database_captures():
            return None

        def base():
            self.delta.ensure()
            return self.delta.fast_insert_layout()

        for extension in extensions.registered():
            layout = extension.fast_insert_layout(self, base)
            if layout is not None:
                return layout or None
        return base()

    def update(self, oldvalues: Any, newvalues: dict[str, Any]) -> bool | None:
        """None, or False if this statement already modified the row (a join
        matching it twice: the first match wins, as for a heap table)."""
        return None if self._statement().update(int(oldvalues), newvalues) else False

    def delete(self, oldvalues: Any) -> bool | None:
        return None if self._statement().delete(int(oldvalues)) else False

    def end_modify(self) -> None:
        writes, self._writes = self._writes, None
        if writes is not None:
            writes.finish()

    def flush_writes(self) -> None:
        if self._writes is not None:
            self._writes.flush()

    # transaction hooks: a statement that failed leaves its writes behind
    def begin(self, serializable: bool) -> None:
        self._writes = None
        self._depth = 0

    def sub_begin(self, level: int) -> None:
        self._depth = level

    def sub_commit(self, level: int) -> None:
        self._depth = level - 1

    def sub_rollback(self, level: int) -> None:
        if self._writes is not None and self._writes.level >= level:
            self._writes = None
        self._depth = level - 1

    def rollback(self) -> None:
        self._writes = None
        self._depth = 0

    def commit(self) -> None:
        self._writes = None
        self._depth = 0

    def write_stripes(self, batch: Batch, router: "WriteRouter | None" = None) -> None:
        """Write a wire batch as stripe files (``stripe_row_limit`` rows each;
        with a table extension's ``router``, one stripe per part of each)."""
        limit = self.settings.stripe_row_limit
        for start in range(0, batch.nrows, limit):
            end = min(start + limit, batch.nrows)
            self._write_stripe(batch, start, end, router)

    def chunk_router(self) -> "WriteRouter | None":
        """The router of a statement writing into this table if a table
        extension claims it (read in the current transaction), else None."""
        for extension in extensions.registered():
            router = extension.write_router(self)
            if router is not None:
                return router
        return None

    def write_stripes_by_chunk(self, columns: dict[str, tuple], router: "WriteRouter | None",
                               insert: bool = True) -> list[tuple[store.StripeRecord, np.ndarray | None]]:
        """Write rows in storage form (every column of the table) as one
        stripe, or, with a router, one stripe per part the rows fall in.

        Args:
            columns: name -> (values, validity) in storage form.
            router: the table extension's router, or None.
            insert: insert the stripes' catalog rows now (see
                :meth:`write_stripe_columns`).

        Returns:
            (stripe record, the indices of the rows it holds or None for all).

        Raises:
            OrochiError: a key the router refuses (e.g. a NULL time in a hypertable).
        """
        if router is None:
            raw = {n: raw_size(v, m, self.kinds[n]) for n, (v, m) in columns.items()}
            return [(self.write_stripe_columns(columns, raw, insert), None)]
        values, validity = columns[router.column]
        keys = router.keys(values, validity, self.relname)
        out = []
        for chunk_id, rows in router.split(keys):
            part = columns if rows is None else {
                n: _take(v, m, self.kinds[n], rows) for n, (v, m) in columns.items()}
            raw = {n: raw_size(v, m, self.kinds[n]) for n, (v, m) in part.items()}
            out.append((self.write_stripe_columns(part, raw, insert, chunk_id=chunk_id), rows))
        return out

    def _schema(self) -> list[ColumnSpec]:
        out = []
        for name, col in self.columns.items():
            cs = self.settings.columns.get(name) if self.settings.columns else None
            out.append(ColumnSpec(name, self.kinds[name], col.type_name or None,
                                  cs.compression if cs else None,
                                  cs.compression_level if cs else None))
        return out

    def _data_dir(self) -> str:
        return self.settings.data_dir or files.default_data_dir()

    def _write_stripe(self, batch: Batch, start: int, end: int, router: "WriteRouter | None" = None) -> None:
        nrows = end - start
        if nrows <= 0:
            return
        columns = {}
        raw = {}
        for name, col in self.columns.items():
            kind = self.kinds[name]
            wire = batch.columns.get(name)
            if wire is None:
                values, validity = _all_null(kind, nrows)
            else:
                values, validity = from_wire(wire, kind)
                values, validity = _slice(values, validity, kind, start, end, len(wire))
            columns[name] = (values, validity)
            raw[name] = raw_size(values, validity, kind)
        if router is not None:
            self.write_stripes_by_chunk(columns, router)
        else:
            self.write_stripe_columns(columns, raw)

    def write_stripe_columns(self, columns: dict[str, tuple], raw: dict[str, int],
                             insert: bool = True, chunk_id: int | None = None) -> store.StripeRecord:
        """Write one stripe of ``columns`` (name -> (values, validity) in
        storage form, every column of the table) and, with ``insert``,
        insert its catalog rows in the current transaction (else the caller
        does, with ``store.insert_stripe``, once it knows the record is
        wanted; a file whose row is never inserted goes at the end of the
        transaction). ``chunk_id``: the part (a table extension's) every row
        lies in (the caller's promise; see :meth:`write_stripes_by_chunk`)."""
        files.require_wal()
        xid = ledger.writer_transaction_id()
        directory = files.ensure_table_dir(self._data_dir(), self.relid)
        writer = None
        for _ in range(8):
            stripe_id = store.next_stripe_id()
            path = os.path.join(directory, files.stripe_file_name(stripe_id, xid))
            try:
                writer = StripeWriter(
                    path, self._schema(), chunk_group_rows=self.settings.chunk_group_size,
                    compression=self.settings.compression,
                    compression_level=self.settings.compression_level,
                    properties={"relid": str(self.relid), "stripe_id": str(stripe_id), "xid": str(xid),
                                "attnums": ",".join(str(c.attnum) for c in self.columns.values())})
                break
            except FileExistsError:
                continue  # left by a crash under ids handed out again: take the next id
            except FileNotFoundError:
                files.ensure_table_dir(self._data_dir(), self.relid)  # removed by a concurrent vacuum: once more
            except OSError as exc:
                raise StorageIOError(f'could not create a stripe file in "{directory}": {exc.strerror}',
                                     hint="Check the data_dir option of the table's server.") from None
        if writer is None:
            raise StorageIOError(f'could not find a free stripe file name in "{directory}"')
        # Registered before the file can exist: whatever fails from here on,
        # the end of the transaction removes it unless its rows commit.
        ledger.file_created(stripe_id, path)
        with writer:
            writer.write_batch(columns)
        fault_point("write_stripe:after_file")
        meta = writer.metadata
        files.log_new_file(path)  # to the WAL, before its catalog row

        record = store.StripeRecord(
            stripe_id=stripe_id, relid=self.relid, file_path=path, row_count=meta.row_count,
            chunk_group_count=len(meta.chunk_groups), chunk_group_size=self.settings.chunk_group_size,
            file_bytes=meta.file_size, raw_bytes=sum(raw.values()),
            compression=self.settings.compression, compression_level=self.settings.compression_level,
            created_xid=xid, chunk_id=chunk_id)
        for ci, (name, col) in enumerate(self.columns.items()):
            chunks = [group[ci] for group in meta.chunks]
            record.columns[col.attnum] = _column_record(col, self.kinds[name], chunks, raw[name])
        if self.settings.stripe_sketches:
            from orochi_fdw.columnar import stripe_sketches

            stripe_sketches.build(self, record, columns)
        if insert:
            store.insert_stripe(record)
        return record

    def truncate(self, behavior: str, restart_seqs: bool) -> None:
        """TRUNCATE: the table's stripes leave the catalog now, their files
        when the transaction commits."""
        from orochi_fdw.cdc import capture

        capture.truncated(self)
        stripes = store.delete_tables([self.relid])
        ledger.rows_deleted(stripes, sorted({os.path.dirname(p) for _, p in stripes}))
        self.delta.truncate()
        for extension in extensions.registered():
            extension.truncated(self)

    # ------------------------------------------------------------------ reading

    def missing_values(self) -> dict[str, tuple]:
        """The values rows stored before ADD COLUMN ... DEFAULT read in the
        added columns (:mod:`~orochi_fdw.columnar.missing`), by column name."""
        if self._missing is None:
            from orochi_fdw.columnar import missing

            self._missing = missing.load(self.relid, self.columns)
        return self._missing

    def can_sort(self, sortkeys: list[SortKey]) -> list[SortKey]:
        """The leading sort keys on columns whose values order as numbers,
        or text / varchar under a collation that orders by bytes ("C",
        "POSIX", ucs_basic, or the database's default when it is one of
        those; see :mod:`orochi_fdw.columnar.topn`), or a distance to a
        vector column (:mod:`orochi_fdw.vector.search`). A key under another
        collation ends them: Postgres sorts by its rules above the scan."""
        key = sortkeys[0] if sortkeys else None
        if key is not None and key.function is not None:
            from orochi_fdw.vector import search

            return search.can_sort(self, key)
        handled = []
        for key in sortkeys:
            if key.function is not None or key.attname not in self.columns:
                break
            column = self.columns[key.attname]
            if scan_wire_kind(column) not in topn.ORDERABLE and not (
                    column.type_oid in TEXT_TYPE_OIDS and _collation_info().is_c(key.collate)):
                break
            handled.append(key)
        return handled

    def execute(self, quals: list[Qual], columns: list[str], sortkeys: list[SortKey] | None = None,
                limit: int | None = None, scan_cache: dict | None = None, rowids: bool = True,
                stripes: tuple | None = None, dictionaries: frozenset = frozenset()):
        """Scan the table.  ``scan_cache`` (the same dict at every rescan of
        one scan node) keeps the catalog's stripe list, whether the delta
        store has rows and the last decoded column chunks, so that a
        parameterized scan's rescans (one per outer row) read neither the
        catalog nor the same chunks again; within one statement the catalog
        a scan sees does not change.  Without ``rowids`` (the plan reads no
        ctid: no UPDATE, DELETE or ``SELECT ctid``) the stripes' batches
        carry no row ids.  ``stripes`` (a plain scan: no sort keys, no
        ``scan_cache``) is (the stripe records, whether the delta store may
        hold rows) as the caller read them under this statement's snapshot,
        with the catalog rows of every column the scan reads (a
        nearest-neighbour scan's filter, from its kept records).
        ``dictionaries``: text columns whose DICTIONARY-coded chunks the
        batches may carry in that form (a
        :class:`~orochi_fdw.columnar.scan.DictionaryColumn`), for a caller
        that takes it (the join engine)."""
        if sortkeys and sortkeys[0].function is not None:
            from orochi_fdw.vector import search

            return search.KnnScan(self, quals, columns, sortkeys[0], limit)
        if sortkeys:
            needed = [c for c in columns if c in self.columns]
            if limit is not None and limit > 0 and not sample_requested(self.relid, quals) \
                    and self._plain_top_n(quals, needed, sortkeys):
                return self._top_n(quals, needed, sortkeys, limit)
            scan = self.execute(quals, sorted(set(needed) | {k.attname for k in sortkeys}), rowids=rowids)
            return topn.SortedScan(scan, sortkeys, needed, limit)
        needed = [c for c in columns if c in self.columns]
        if scan_cache is not None:
            rows = self._rescan_from_index(quals, needed, scan_cache, rowids)
            if rows is not None:
                return rows
        bound = self.bound_quals(quals, must_be_exact=[q.exact for q in quals])
        read = needed + sorted(bound.columns - set(needed))
        attnums = {self.columns[c].attnum for c in read} | {self.columns[c].attnum for c in bound.prune_columns}
        if stripes is not None:
            all_stripes = stripes[0]
            delta = (lambda: self.delta.scan(read, bound)) if stripes[1] else None
        elif scan_cache is None:
            all_stripes = store.table_stripes(self.relid, attnums)
            delta = lambda: self.delta.scan(read, bound)  # noqa: E731
        else:
            key = ("stripes", frozenset(attnums))
            all_stripes = scan_cache.get(key)
            if all_stripes is None:
                all_stripes = scan_cache[key] = store.table_stripes(self.relid, attnums)
            if "delta_rows" not in scan_cache:
                scan_cache["delta_rows"] = self.delta.count()
            delta = (lambda: self.delta.scan(read, bound)) if scan_cache["delta_rows"] else None
        stripes, chunk_counts = self._exclude_chunks(all_stripes, bound, scan_cache)
        scan = ColumnarScan(self.relname, self.columns, stripes, read, bound,
                            delta=delta, missing=self.missing_values(),
                            chunk_cache=None if scan_cache is None else scan_cache.setdefault("chunks", {}),
                            rowids=rowids,
                            dictionaries=frozenset() if sample_requested(self.relid, quals) else dictionaries)
        scan.counters.chunks = chunk_counts
        if scan_cache is not None:
            scan_cache["last_scan"] = scan
        filtered = FilteredScan(scan, bound.filter, needed,
                                {n: scan_wire_kind(self.columns[n]) for n in read}, self.columns,
                                filter_columns=bound.columns)
        scan.prefilter = filtered
        return sampled_scan_if_requested(self.relid, quals, filtered)  # orochi.sample

    def aggregate(self, request: Mapping[str, Any], quals: list[Qual] | None, scan_cache: dict | None = None):
        """A pushed-down aggregation; count, min and max over the whole table
        from statistics where they can (:mod:`~orochi_fdw.columnar.statistics`)."""
        from orochi_fdw.columnar import statistics

        if quals is not None and not quals \
                and statistics.answerable(request, self.settings.stripe_sketches) \
                and not sample_requested(self.relid, quals):
            return statistics.StatisticsAggregate(self, request)
        return super().aggregate(request, quals, scan_cache)

    def _planning_stripes(self, attnums: set[int]) -> list[store.StripeRecord]:
        """The table's stripe records for planning (not to be changed), with
        the catalog rows of at least the columns ``attnums``: those read
        before under the same snapshot when they have them, else read again
        with the columns of both."""
        key = ("stripes", self.relid)
        snapshot = spi.snapshot_key()
        found = _planning_reads.get(key, snapshot)
        if found is not None:
            have, records = found
            if attnums <= have:
                return records
            attnums = have | attnums
        attnums = frozenset(attnums)
        return _planning_reads.put(key, snapshot, (attnums, store.table_stripes(self.relid, attnums)))[1]

    def _planning_delta_rows(self) -> int:
        """The delta store's rows, for planning."""
        return _planning_read(("delta", self.relid), self.delta.count)

    def value_ranges(self, columns: list[str], exact: bool = False) -> dict[str, tuple[int, int]]:
        """The least and greatest value of integer ``columns`` (scaled
        integers for numerics stored as int64) over the catalog statistics
        of every stripe that holds them in their current type: a hint, the
        delta store's rows and stripes without statistics may hold others.
        With ``exact``, only the columns whose every value is within: every
        stripe has their statistics in the current type and the delta store
        is empty (the bounds hold for this snapshot)."""
        names = [c for c in columns if c in self.columns]
        if not names or (exact and self._planning_delta_rows()):
            return {}
        stripes = self._planning_stripes({self.columns[c].attnum for c in names})
        out = {}
        for name in names:
            column = self.columns[name]
            kind = storage_kind(column)
            lo = hi = None
            for stripe in stripes:
                rec = stripe.columns.get(column.attnum)
                if rec is None or rec.kind != kind or not isinstance(rec.min_value, int) \
                        or not isinstance(rec.max_value, int):
                    if exact and stripe.row_count:
                        break
                    continue
                lo = rec.min_value if lo is None else min(lo, rec.min_value)
                hi = rec.max_value if hi is None else max(hi, rec.max_value)
            else:
                if lo is not None:
                    out[name] = (lo, hi)
        return out

    def stored_rows(self) -> int:
        """Rows of every stripe (deleted ones included) and of the delta
        store: at least as many as any scan of this snapshot reads."""
        return sum(s.row_count for s in self._planning_stripes(set())) + self._planning_delta_rows()

    def _plain_top_n(self, quals: list[Qual], needed: list[str], keys: list[SortKey]) -> bool:
        """Whether the top-N scan takes these columns: not scaled numerics
        nor char(n), which the delta store hands over as text (the sorted
        scan over the filtered rows takes them)."""
        names = set(needed) | {k.attname for k in keys} | {q.field_name for q in quals}
        return not any(scan_wire_kind(self.columns[n]) is WireKind.DECIMAL64
                       or storage_kind(self.columns[n]) == "char" for n in names if n in self.columns)

    def _top_n(self, quals: list[Qual], needed: list[str], keys: list[SortKey], limit: int) -> topn.TopNScan:
        """ORDER BY plain columns LIMIT ``limit``: see :class:`~orochi_fdw.columnar.topn.TopNScan`
        (the bridge passes a limit only when every qual is applied here)."""
        exact = self.bound_quals(quals, must_be_exact=[q.exact for q in quals])
        read = sorted(set(needed) | set(exact.columns) | {k.attname for k in keys})
        attnums = {self.columns[c].attnum for c in read} | {self.columns[c].attnum for c in exact.prune_columns}
        stripes, chunk_counts = self._exclude_chunks(store.table_stripes(self.relid, attnums), exact)
        scan = ColumnarScan(self.relname, self.columns, stripes, read, exact, missing=self.missing_values())
        scan.counters.chunks = chunk_counts
        kinds = {n: scan_wire_kind(self.columns[n]) for n in read}
        return topn.TopNScan(scan, keys, needed, limit, exact.filter, exact.columns, kinds,
                             delta=lambda: self.delta.scan(read, exact))

    def _rescan_from_index(self, quals: list[Qual], needed: list[str], scan_cache: dict, rowids: bool = True):
        """A rescan answered by :mod:`orochi_fdw.query.rescan_index`, or None."""
        from orochi_fdw.query import rescan_index

        last = scan_cache.pop("last_scan", None)
        if last is not None:
            scan_cache["rows_read"] = scan_cache.get("rows_read", 0) + last.counters.rows
        stripes = next((v for k, v in scan_cache.items() if isinstance(k, tuple) and k[0] == "stripes"), None)
        if stripes is None:
            return None
        total = sum(s.live_rows for s in stripes) + scan_cache.get("delta_rows", 0)

        def limit() -> int:
            return int(spi.execute(
                "SELECT pg_catalog.pg_size_bytes(pg_catalog.current_setting('work_mem'))"
                " * pg_catalog.current_setting('hash_mem_multiplier')::float8", internal=True).scalar())

        kinds = {q.field_name: scan_wire_kind(self.columns[q.field_name])
                 for q in quals if q.field_name in self.columns}
        return rescan_index.indexed_rescan(scan_cache, quals, kinds, total,
                                           lambda qs, cols: self.execute(qs, cols, rowids=rowids), needed, limit)

    def _exclude_chunks(self, stripes: list[store.StripeRecord], bound: BoundQuals, scan_cache: dict | None = None
                        ) -> tuple[list[store.StripeRecord], tuple[int, int] | None]:
        """Part exclusion by a table extension (a hypertable's chunks whose
        time range rules the quals out): the stripes left and (parts,
        excluded parts), or None when no extension claims the table."""
        if scan_cache is not None and scan_cache.get("no_extension"):
            return stripes, None
        for extension in extensions.registered():
            found = extension.exclude_stripes(self, stripes, bound)
            if found is not None:
                return found
        if scan_cache is not None:
            scan_cache["no_extension"] = True
        return stripes, None

    def exact_quals(self, quals: list[Qual]) -> list[bool]:
        """Quals the filter kernels apply exactly (Postgres then skips them)."""
        return self.bound_quals(quals).exact

    def bound_quals(self, quals: list[Qual], must_be_exact: list[bool] | None = None) -> BoundQuals:
        """The quals bound once to the table's columns: the one form that
        prunes stripes, chunk groups and a hypertable's chunks (``prune``),
        filters stripe and delta rows (``filter``), pre-filters the delta
        table and writes EXPLAIN (:mod:`orochi_fdw.query.predicates`)."""
        return bind_quals(quals, self.columns, collation_policy(_collation_info()), must_be_exact)

    def get_rel_size(self, quals: list[Qual], columns: list[str]) -> tuple[float, int]:
        bound = self.bound_quals(quals)
        attnums = {self.columns[c].attnum for c in bound.prune_columns}
        stripes = self._planning_stripes(attnums)
        total = sum(s.live_rows for s in stripes)
        kept, _ = self._exclude_chunks(stripes, bound)
        rows = sum(s.live_rows for s in prune_stripes(kept, bound, self.columns, self.missing_values())) \
            if bound.prune is not ALWAYS_TRUE else total
        rows += self._planning_delta_rows()
        return (float(rows), self._width(columns, total))

    def estimate(self, quals: list[Qual], columns: list[str], selectivity: float) -> dict:
        """Rows and costs of a scan (:mod:`orochi_fdw.query.estimates`): the
        rows are the table's live rows times Postgres's selectivity of the
        quals, the costs follow the columns read and the stripes pruning keeps."""
        from orochi_fdw.query import estimates

        if not quals and self._has_vector_column():
            from orochi_fdw.vector import search

            return search.estimate(self, columns, selectivity)   # from the kept catalog records
        shape, stored_rows = self.scan_shape(quals, columns)
        needed = [c for c in columns if c in self.columns]
        rows = min(shape.total_rows * max(0.0, min(1.0, selectivity)), shape.scanned_rows)
        startup, total_cost = estimates.scan_cost(shape, rows, len(needed))
        return {"rows": rows, "width": self._width(needed, stored_rows),
                "startup_cost": startup, "total_cost": total_cost, "tuples": shape.total_rows}

    def scan_shape(self, quals: list[Qual], columns: list[str]):
        """(:class:`~orochi_fdw.query.estimates.ScanShape`, rows in stripes)
        of a scan with these quals reading these columns."""
        from orochi_fdw.query import estimates

        read, stripes, kept = self._planned_stripes(quals, columns)
        delta = self._planning_delta_rows()
        stored = sum(s.live_rows for s in stripes)
        scanned = sum(s.live_rows for s in kept) + delta
        shape = estimates.ScanShape(stored + delta, scanned, len(kept),
                                    estimates.read_bytes(kept, {self.columns[c].attnum for c in read}),
                                    len(read), len(quals))
        return shape, stored

    def _planned_stripes(self, quals: list[Qual], columns: list[str]) -> tuple[set[str], list, list]:
        """For planning a scan with these quals reading these columns: the
        columns read, the table's stripes, and those left after chunk
        exclusion and min/max pruning."""
        bound = self.bound_quals(quals)
        read = {c for c in [*columns, *(q.field_name for q in quals)] if c in self.columns}
        attnums = {self.columns[c].attnum for c in read} | {self.columns[c].attnum for c in bound.prune_columns}
        stripes = self._planning_stripes(attnums)
        kept, _ = self._exclude_chunks(stripes, bound)
        if bound.prune is not ALWAYS_TRUE:
            kept = prune_stripes(kept, bound, self.columns, self.missing_values())
        return read, stripes, kept

    def param_scan_cost(self, quals: list[Qual], columns: list[str], rows: float) -> tuple[float, float] | None:
        """The cost of one scan of a parameterized path, whose ``column =
        value`` quals get their values from the outer row at each rescan;
        None unless min/max pruning makes it read a small part of the table
        (the column is clustered, as lineitem by l_orderkey)."""
        from orochi_fdw.query import estimates

        params = [q for q in quals if q.value is runtime.UNKNOWN and q.operator == "=" and q.field_name in
                  self.columns and scan_wire_kind(self.columns[q.field_name]) in topn.ORDERABLE]
        if not params:
            return None
        needed = [c for c in columns if c in self.columns]
        read, _, kept = self._planned_stripes(quals, columns)
        full = sum(s.live_rows for s in kept)
        if full == 0:
            return None
        lookups = [estimates.point_lookup_rows(kept, self.columns[q.field_name].attnum) for q in params]
        known = [n for n in lookups if n is not None]
        if not known:
            return None
        per_scan = min(known)
        if per_scan > estimates.PARAM_USEFUL_FRACTION * full:
            return None
        delta = self._planning_delta_rows()
        share = per_scan / full
        shape = estimates.ScanShape(full + delta, per_scan + delta, 1,
                                    estimates.read_bytes(kept, {self.columns[c].attnum for c in read}) * share,
                                    len(read), len(quals))
        return estimates.scan_cost(shape, rows, len(needed), estimates.RESCAN_STARTUP_COST)

    def _has_vector_column(self) -> bool:
        return "vector" in self.kinds.values()

    def _width(self, columns: list[str], total: int, stored: dict[int, int] | None = None) -> int:
        """Bytes a row of ``columns`` takes (``stored``: raw bytes per
        attnum over the table's stripes, read from the catalog when None)."""
        if stored is None:
            stored = _planning_read(("raw_bytes", self.relid), lambda: store.column_raw_bytes(self.relid)) \
                if total else {}
        width = 0
        for name in columns:
            col = self.columns.get(name)
            if col is None:
                continue
            if col.attnum in stored and total:
                width += max(1, stored[col.attnum] // total)
            else:
                width += _DEFAULT_WIDTH.get(self.kinds[name], 32)
        return max(width, 1)

    def explain(self, quals: list[Qual], columns: list[str], sortkeys: list[SortKey] | None = None,
                verbose: bool = False) -> list[str]:
        bound = self.bound_quals(quals)
        attnums = {self.columns[c].attnum for c in bound.prune_columns}
        stripes = store.table_stripes(self.relid, attnums)
        lines = []
        in_chunks, chunk_counts = self._exclude_chunks(stripes, bound)
        if chunk_counts is not None:
            total_chunks, excluded = chunk_counts
            lines.append(f"Chunks: {total_chunks}" + (f" ({excluded} excluded)" if excluded else ""))
        kept = prune_stripes(in_chunks, bound, self.columns, self.missing_values())
        line = f"Stripes: {len(stripes)}"
        if len(in_chunks) < len(stripes):
            line += f" ({len(stripes) - len(in_chunks)} in excluded chunks)"
        if len(kept) < len(in_chunks):
            line += f" ({len(in_chunks) - len(kept)} skipped by min/max)"
        lines.append(line)
        if bound.pruning:
            lines.append("Min/Max Filter: " + " AND ".join(_describe(b.qual) for b in bound.pruning))
        lines += bound.explain(verbose)
        if sortkeys and sortkeys[0].function is not None:
            from orochi_fdw.vector import search

            lines += search.explain(self, sortkeys[0])
        if verbose:
            lines.append(f"Compression: {self.settings.compression}"
                         + (f" level {self.settings.compression_level}"
                            if self.settings.compression_level is not None else ""))
        return lines


# ---------------------------------------------------------------------- helpers

def _literal(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "'\\x" + bytes(v).hex() + "'"
    if isinstance(v, (list, tuple)):
        return "{" + ",".join("NULL" if x is None else _literal(x) for x in v) + "}"
    text = getattr(v, "text", None)  # SpecialValue
    return "'" + text + "'" if isinstance(text, str) else str(v)


def _describe(q: Qual) -> str:
    if q.value is None:
        return f"{q.field_name} IS {'NOT ' if q.operator == '<>' else ''}NULL"
    if q.is_list_operator:
        return f"{q.field_name} {q.operator[0]} ANY ({_literal(q.value)})"
    return f"{q.field_name} {q.operator} {_literal(q.value)}"


def _all_null(kind: str, n: int):
    from orochi_fdw.storage.kinds import get_kind

    k = get_kind(kind)
    validity = np.zeros(n, dtype=bool)
    if k.physical == "var":
        return (np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.uint8)), validity
    return np.zeros(n, dtype=k.dtype), validity


def _slice(values, validity, kind: str, start: int, end: int, n: int):
    if start == 0 and end == n:
        return values, validity
    from orochi_fdw.storage.kinds import get_kind

    v = None if validity is None else validity[start:end]
    if get_kind(kind).physical == "var":
        offsets, data = values
        return (offsets[start:end + 1], data), v
    return values[start:end], v


def _take(values, validity, kind: str, rows: np.ndarray):
    """Rows ``rows`` (indices) of storage-form values and validity."""
    from orochi_fdw.bridge.batch import Column, WireKind
    from orochi_fdw.columnar.scan import select_rows
    from orochi_fdw.storage.kinds import get_kind

    v = None if validity is None else np.asarray(validity)[rows]
    if get_kind(kind).physical == "var":
        offsets, data = values
        data = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
        mask = np.zeros(len(offsets) - 1, dtype=bool)
        mask[rows] = True  # rows ascend (ChunkRouter.split keeps each chunk's rows in order)
        col = select_rows(Column(WireKind.BYTEA, data, None, np.asarray(offsets, dtype=np.int64)), mask, rows)
        return (col.offsets, col.values), v
    return np.asarray(values)[rows], v


def _codec_name(codec: int, compression: int) -> str:
    try:
        name = Codec(codec).name.lower()
    except ValueError:
        name = str(codec)
    if compression:
        try:
            name += "+" + Compression(compression).name.lower()
        except ValueError:
            name += f"+{compression}"
    return name


def _column_record(col: ColumnDefinition, kind: str, chunks, raw_bytes: int) -> store.ColumnRecord:
    """A column's catalog row from its chunks' footer entries: the bounds
    over the stripe (a chunk with values but no bound leaves that bound
    unknown; a float chunk of only NaN counts through has_nan)."""
    nulls = sum(c.null_count for c in chunks)
    lo = hi = None
    lo_known = hi_known = True
    has_nan = False
    for c in chunks:
        st = c.stats
        has_nan = has_nan or st.has_nan
        if st.null_count >= st.row_count:
            continue
        if st.min is None and st.max is None and st.has_nan:
            continue  # only NaN
        if st.min is None:
            lo_known = False
        elif lo is None or st.min < lo:
            lo = st.min
        if st.max is None:
            hi_known = False
        elif hi is None or st.max > hi:
            hi = st.max
    return store.ColumnRecord(
        attnum=col.attnum, column_name=col.column_name, kind=kind, type_name=col.type_name or kind,
        null_count=nulls, min_value=lo if lo_known else None, max_value=hi if hi_known else None,
        has_nan=has_nan, compressed_bytes=sum(c.length for c in chunks), raw_bytes=raw_bytes,
        codecs=sorted({_codec_name(c.codec, c.compression) for c in chunks}))


_collation_cache: CollationInfo | None = None


def _collation_info() -> CollationInfo:
    """The database's encoding and default collation, read once per backend."""
    global _collation_cache
    if _collation_cache is None:
        row = spi.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datlocprovider::text"
            "  FROM pg_catalog.pg_database WHERE datname = current_database()").rows[0]
        deterministic: dict[str, bool] = {}

        def is_deterministic(name: str) -> bool:
            if name == "default":
                return True
            if name not in deterministic:
                res = spi.execute("SELECT coalesce(bool_and(collisdeterministic), false)"
                                  "  FROM pg_catalog.pg_collation WHERE collname = $1", [name],
                                  types=["text"])
                deterministic[name] = bool(res.scalar())
            return deterministic[name]

        _collation_cache = CollationInfo(
            utf8=row[0] == "UTF8", default_is_c=row[1] in ("C", "POSIX") and row[2] == "c",
            deterministic=is_deterministic)
    return _collation_cache

