"""Compaction and vacuum of columnar tables, and their progress.

``orochi.compact(t)`` folds the delta store into stripes, in the caller's
transaction:

1. read the delta rows (READ COMMITTED: what is committed now) and write them
   as stripe files, ``stripe_row_limit`` rows each; nothing is locked yet;
2. delete those rows from the delta table by id (row locks, like any DELETE);
   a row another transaction deleted meanwhile is marked deleted in the new
   stripe's bitmap;
3. insert the stripes' catalog rows. The commit makes the rows leave the
   delta store and appear in the stripes at the same instant.

Writers that change one of the moved delta rows wait for the commit (only
steps 2-3 hold locks) and then fail with 40001; readers never wait.

``orochi.vacuum(t, min_deleted_fraction)`` rewrites each stripe with at least
that fraction of its rows deleted, in the caller's transaction:

1. list the candidates with their delete bitmaps, read each one's live rows
   and write them to a new stripe file; nothing is locked yet;
2. lock the candidates' catalog rows; rows deleted since step 1 are carried
   over into the new stripe's bitmap (offsets renumbered); a candidate that
   is gone meanwhile is left alone;
3. replace the old stripes' catalog rows by the new ones, and note the old
   files in ``orochi.columnar_retired_files``: snapshots taken before the
   commit still read them, so they are removed by a later vacuum, once no
   backend's snapshot is older than this one's commit.

Both take a transaction-level advisory lock per table, so compactions and
vacuums of one table run one at a time.

Progress is written, outside any transaction, to small files under
``<data directory>/orochi/_progress`` and shown by ``orochi.vacuum_progress``.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyroaring import BitMap

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.faults import fault_point
from orochi_fdw.catalog import files, store
from orochi_fdw.catalog.ledger import ledger
from orochi_fdw.columnar import deletes
from orochi_fdw.columnar.definition import read_definition
from orochi_fdw.columnar.types import from_wire, raw_size
from orochi_fdw.errors import InvalidParameterError
from orochi_fdw.storage.kinds import ColumnData, VarBytes, concat_columns, get_kind
from orochi_fdw.storage.stripe_format import StripeReader

def open_table(relid: int):
    """A ColumnarTable instance for ``relid`` (as the bridge would make it)."""
    from orochi_fdw.bridge import wrappers
    from orochi_fdw.columnar.table import ColumnarTable

    definition = read_definition(relid)
    if definition is None:
        raise InvalidParameterError(f'relation with oid {relid} is not an orochi columnar table')
    relname = definition.relname
    fdw = spi.execute("SELECT w.fdwhandler = 'orochi.orochi_fdw_handler'::regproc"
                      "  FROM pg_catalog.pg_foreign_table ft"
                      "  JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver"
                      "  JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw"
                      " WHERE ft.ftrelid = $1", [relid], types=["oid"]).scalar()
    if not fdw or not wrappers.is_default(definition.wrapper):
        raise InvalidParameterError(f'"{relname}" is not an orochi columnar table')
    options = definition.options
    options.setdefault("table_name", relname)
    options.setdefault("table_oid", str(relid))
    return ColumnarTable(options, definition.columns)


def lock_table_maintenance(relid: int) -> None:
    """Wait for, then hold until the transaction ends, the table's
    maintenance lock: compactions, vacuums and chunk compressions of one
    table run one at a time."""
    spi.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('orochi.maintenance'), $1::int)",
                [int(relid) & 0x7FFFFFFF], types=["int8"], internal=True)


# ---------------------------------------------------------------- progress

def _progress_dir() -> str:
    return os.path.join(files.default_data_dir(), "_progress")


class Progress:
    """What one compaction or vacuum is doing, in a file others can read
    while the transaction runs (catalog rows would be invisible until it
    commits)."""

    def __init__(self, command: str, relid: int):
        self.command = command
        self.relid = relid
        self.pid = int(spi.backend_info()["pid"])
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.state: dict[str, Any] = {"phase": "starting", "stripes_done": 0, "stripes_total": 0,
                                      "rows_done": 0}
        self.path = os.path.join(_progress_dir(), f"{self.pid}.json")
        self._last = 0.0
        self.update(force=True)

    def update(self, force: bool = False, **state: Any) -> None:
        self.state.update(state)
        now = time.monotonic()
        if not force and now - self._last < 0.05:
            return
        self._last = now
        record = {"pid": self.pid, "command": self.command, "relid": self.relid,
                  "started_at": self.started.isoformat(),
                  "updated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(), **self.state}
        try:
            files.ensure_dir(_progress_dir())
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(record, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # progress is best effort

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def progress_rows() -> list[tuple]:
    """The progress of every compaction and vacuum running now."""
    folder = _progress_dir()
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    alive = {int(r[0]) for r in spi.execute("SELECT pid FROM pg_catalog.pg_stat_activity").rows}
    out = []
    for name in sorted(names):
        if not name.endswith(".json"):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        if rec.get("pid") not in alive:
            try:
                os.unlink(path)  # left by a backend that died
            except OSError:
                pass
            continue
        out.append((rec["pid"], rec["command"], rec["relid"], rec["phase"], rec["stripes_done"],
                    rec["stripes_total"], rec["rows_done"],
                    datetime.datetime.fromisoformat(rec["started_at"]),
                    datetime.datetime.fromisoformat(rec["updated_at"])))
    return out


# ---------------------------------------------------------------- compaction

@dataclass
class CompactResult:
    moved_rows: int = 0
    stripes_written: int = 0


def _storage_columns(table, batches: list) -> tuple[dict[str, tuple], dict[str, int], int]:
    """Wire batches (the delta's) as one set of storage-form columns."""
    nrows = sum(b.nrows for b in batches)
    columns, raw = {}, {}
    for name in table.columns:
        kind = table.kinds[name]
        parts = []
        for b in batches:
            values, validity = from_wire(b.columns[name], kind)
            if get_kind(kind).physical == "var":
                values = VarBytes(*values)
            if validity is None:
                validity = np.ones(b.nrows, dtype=bool)
            parts.append(ColumnData(values, validity))
        data = concat_columns(parts, kind)
        values = tuple(data.values) if get_kind(kind).physical == "var" else data.values
        columns[name] = (values, data.validity)
        raw[name] = raw_size(values, data.validity, kind)
    return columns, raw, nrows


def compact(relid: int) -> CompactResult:
    table = open_table(relid)
    lock_table_maintenance(relid)
    result = CompactResult()
    if not table.delta.exists():
        return result
    progress = Progress("compact", relid)
    try:
        names = list(table.columns)
        limit = table.settings.stripe_row_limit
        router = table.chunk_router()
        written: list[tuple[store.StripeRecord, np.ndarray]] = []
        pending: list = []
        pending_rows = 0

        def flush() -> None:
            nonlocal pending, pending_rows
            if not pending:
                return
            ids = np.concatenate([b.ids for b in pending])
            columns, _, _ = _storage_columns(table, pending)
            # a hypertable's rows: one stripe per chunk
            for record, rows in table.write_stripes_by_chunk(columns, router, insert=False):
                written.append((record, ids if rows is None else ids[rows]))
            pending, pending_rows = [], 0
            progress.update(stripes_done=len(written), rows_done=sum(len(i) for _, i in written))
            fault_point("compact:after_write")

        progress.update(force=True, phase="writing stripes")
        for batch in table.delta.scan(names, read_only=False):
            # a batch never straddles two stripes: cut it at the limit
            start = 0
            while start < batch.nrows:
                take = min(batch.nrows - start, limit - pending_rows)
                part = batch if (start == 0 and take == batch.nrows) else _slice_batch(batch, start, start + take)
                pending.append(part)
                pending_rows += take
                start += take
                if pending_rows >= limit:
                    flush()
        flush()
        if not written:
            return result

        progress.update(force=True, phase="moving rows", stripes_total=len(written))
        all_ids = np.concatenate([ids for _, ids in written])
        moved = table.delta.delete(all_ids.tolist())
        fault_point("compact:after_move")
        for record, ids in written:
            gone = [i for i, rid in enumerate(ids.tolist()) if rid not in moved]
            if len(gone) == len(ids):
                continue  # every row was deleted meanwhile: the file goes at the end
            if gone:
                bm = BitMap(gone)
                record.delete_bitmap = deletes.dump(bm)
                record.deleted_count = len(bm)
            store.insert_stripe(record)
            result.stripes_written += 1
        result.moved_rows = len(moved)
        progress.update(force=True, phase="committing", stripes_done=len(written), rows_done=len(moved))
        fault_point("compact:before_commit")
        return result
    finally:
        progress.close()


def _slice_batch(batch, start: int, stop: int):
    from orochi_fdw.columnar.delta import DeltaBatch
    from orochi_fdw.columnar.scan import select_rows

    mask = np.zeros(batch.nrows, dtype=bool)
    mask[start:stop] = True
    cols = {name: select_rows(col, mask) for name, col in batch.columns.items()}
    return DeltaBatch(stop - start, cols, batch.rowids[start:stop], batch.ids[start:stop])


# ---------------------------------------------------------------- vacuum

@dataclass
class VacuumTableResult:
    stripes_rewritten: int = 0
    rows_removed: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    removed_files: int = 0
    removed_bytes: int = 0


def remove_retired(relid: int | None = None) -> tuple[int, int]:
    """Remove the retired stripe files that no snapshot can read any more."""
    nfiles = nbytes = 0
    for path, freed in files.remove_files(store.purge_retired(relid)):
        if isinstance(freed, OSError):
            spi.log("warning", f'could not remove stripe file "{path}": {freed.strerror}')
            continue
        nfiles += 1
        nbytes += freed
    return nfiles, nbytes


def live_columns(table, stripe: store.StripeRecord, bitmap: BitMap) -> tuple[dict, dict, int] | None:
    """The live rows of a stripe in storage form.

    Args:
        table: the stripe's ColumnarTable.
        stripe: the stripe's catalog record.
        bitmap: its deleted rows (offsets), left out of the answer.

    Returns:
        ``(columns, raw, nlive)``: name -> (values, validity) for every
        column of the table (a column the stripe does not have is all NULL,
        or its missing value if it was added with a default),
        name -> raw bytes, and the number of rows; or None if the stripe
        holds a column in a kind other than the column's current one (an
        ALTER COLUMN TYPE since), which is then left as it is.
    """
    present = {}
    for name, col in table.columns.items():
        rec = stripe.columns.get(col.attnum)
        if rec is None:
            continue
        if rec.kind != table.kinds[name]:
            return None
        present[name] = rec.column_name
    deleted = np.frombuffer(bitmap.to_array(), dtype=np.uint32).astype(np.int64)
    live = np.ones(stripe.row_count, dtype=bool)
    live[deleted] = False
    nlive = int(live.sum())
    from orochi_fdw.tiering.objects import open_stripe

    reader = open_stripe(stripe.file_path, stripe.file_bytes)
    try:
        columns, raw = {}, {}
        for name in table.columns:
            kind = table.kinds[name]
            k = get_kind(kind)
            if name not in present:
                from orochi_fdw.columnar import missing
                from orochi_fdw.columnar.table import _all_null

                value = table.missing_values().get(name)
                if value is not None:
                    values, validity = missing.repeat(value, kind, nlive)
                else:
                    values, validity = _all_null(kind, nlive)
            else:
                parts = [reader.read_chunk(present[name], g.index) for g in reader.metadata.chunk_groups]
                data = concat_columns(parts, kind)
                validity = None if data.validity is None else data.validity[live]
                if k.physical == "var":
                    from orochi_fdw.bridge.batch import Column, WireKind
                    from orochi_fdw.columnar.scan import select_rows

                    vb = data.values
                    sel = select_rows(Column(WireKind.BYTEA, vb.data, None, vb.offsets), live)
                    values = (sel.offsets, sel.values)
                else:
                    values = data.values[live]
            columns[name] = (values, validity)
            raw[name] = raw_size(values, validity, kind)
        return columns, raw, nlive
    finally:
        reader.close()


def retire_stripes(relid: int, stripe_ids: list[int]) -> list[tuple[int, str, int]]:
    """Delete stripes' catalog rows in the current transaction and note
    their files as retired: snapshots taken before the commit still read
    them, so a later vacuum removes them once no snapshot is that old.

    Args:
        relid: the table the stripes belong to.
        stripe_ids: the stripes replaced.

    Returns:
        (stripe id, file path, file bytes) of each stripe deleted.
    """
    if not stripe_ids:
        return []
    removed = store.delete_stripes(stripe_ids)
    store.retire_files(relid, removed, ledger.transaction_id())
    return removed


def vacuum_table(relid: int, min_deleted_fraction: float = 0.2) -> VacuumTableResult:
    if not 0.0 <= float(min_deleted_fraction) <= 1.0:
        raise InvalidParameterError("min_deleted_fraction must be between 0 and 1")
    table = open_table(relid)
    lock_table_maintenance(relid)
    result = VacuumTableResult()
    progress = Progress("vacuum", relid)
    try:
        progress.update(force=True, phase="removing old files")
        result.removed_files, result.removed_bytes = remove_retired(relid)

        progress.update(force=True, phase="scanning catalog")
        attnums = [c.attnum for c in table.columns.values()]
        stripes = store.table_stripes(relid, attnums, read_only=False)
        # stripes in object storage stay there (their deleted rows stay
        # marked): a rewrite would bring their rows back to local disk
        candidates = [s for s in stripes if s.deleted_count > 0 and not files.is_object(s.file_path)
                      and s.deleted_count >= min_deleted_fraction * s.row_count]
        progress.update(force=True, phase="rewriting stripes", stripes_total=len(candidates))
        rewritten = []  # (old stripe, bitmap read, new record or None)
        for i, stripe in enumerate(candidates):
            bitmap = deletes.load(stripe.delete_bitmap)
            if len(bitmap) >= stripe.row_count:
                rewritten.append((stripe, bitmap, None))
            else:
                live = live_columns(table, stripe, bitmap)
                if live is None:
                    continue
                columns, raw, _ = live
                rewritten.append((stripe, bitmap, table.write_stripe_columns(columns, raw, insert=False,
                                                                              chunk_id=stripe.chunk_id)))
            progress.update(stripes_done=i + 1, rows_done=progress.state["rows_done"] + stripe.row_count)
            fault_point("vacuum:after_write")
        if not rewritten:
            return result

        progress.update(force=True, phase="swapping stripes")
        locked = store.lock_stripes([s.stripe_id for s, _, _ in rewritten])
        gone_old = []
        for old, before, new in rewritten:
            current = locked.get(old.stripe_id)
            if current is None:
                continue  # removed meanwhile: its new file goes at the end
            latest = deletes.load(current[2])
            if new is not None:
                extra = latest - before
                if extra:
                    renumbered = BitMap(o - before.rank(o) for o in extra)
                    new.delete_bitmap = deletes.dump(renumbered)
                    new.deleted_count = len(renumbered)
                store.insert_stripe(new)
                result.bytes_after += new.file_bytes
            result.stripes_rewritten += 1
            result.rows_removed += len(before)
            result.bytes_before += old.file_bytes
            gone_old.append(old.stripe_id)
        retire_stripes(relid, gone_old)
        progress.update(force=True, phase="committing")
        fault_point("vacuum:before_commit")
        return result
    finally:
        progress.close()
