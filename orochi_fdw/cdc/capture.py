"""Change capture in the columnar write path (runs in the writing backend).

Orochi tables write stripe files and their own catalog rows, not heap
tuples, so logical decoding cannot see their rows.  When a CDC subscription
covers a table, each write statement emits, in its own transaction, a
transactional logical message (:mod:`.payload`) carrying the rows it
changed: the inserted batches; for deletions and updates the old rows (every
column, read from the stripe files or the delta store before they go) and
the new ones.  Logical decoding delivers the messages at the transaction's
commit, in commit order with the heap tables' row changes, and never those
of a transaction or savepoint that rolled back.  Compaction and vacuum move
rows without changing them and emit nothing.

The check is cheap and cached: in a database where no subscription ever
started (a file in the data directory says when one did:
``orochi/cdc/<database oid>.capturing``, made by
``start_cdc_subscription``), writes ask nothing; otherwise the first write
of a transaction to an orochi table asks the catalog once whether a
subscription covers it (one indexed lookup, then a dictionary for the rest
of the transaction).  A transaction that began before a
subscription existed may have cached "not covered": the sidecar creates the
subscription's replication slot only once every such transaction has ended
(:mod:`.worker`), so the slot never decodes one of them.

Messages are signed (HMAC-SHA256 with a key kept in the data directory,
readable by the server and by roles that may read the WAL anyway): anyone
may call ``pg_logical_emit_message``, and the sidecar ignores a message with
the capture prefix that this code did not write.

Hooks (the only places the write path calls, orochi_fdw/columnar/modify.py
and table.py): :func:`for_statement` when a statement starts writing,
:meth:`TableCapture.inserted` for each batch inserted,
:meth:`TableCapture.updated` for each updated row,
:meth:`TableCapture.deleting` before the statement's deletions are applied,
:func:`truncated` for TRUNCATE.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
from pyroaring import BitMap

from orochi_fdw.bridge import runtime, spi
from orochi_fdw.bridge.batch import WIRE_DTYPES, Batch, Column, WireKind
from orochi_fdw.cdc import payload
from orochi_fdw.columnar.deletes import DELTA_ROWID_BASE, STRIPE_OFFSET_BITS

if TYPE_CHECKING:  # pragma: no cover
    from orochi_fdw.columnar.table import ColumnarTable

#: the file (in the cluster's orochi folder) holding the message signing key
KEY_FILE = "cdc_message.key"
KEY_BYTES = 32
MAC_BYTES = 32
#: updated rows whose old values are read (and the change emitted) at once
PENDING_UPDATES = 5_000
#: delta rows read at once for one message
DELTA_PAGE = 10_000
_OFFSET_MASK = (1 << STRIPE_OFFSET_BITS) - 1

#: the table's schema and name when a subscription covers it, else no row
_COVERED = ("SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = $1 AND EXISTS (SELECT 1 FROM orochi.cdc_subscription_table t"
            " WHERE t.relid = $1 AND t.capturing)")
#: the file that says a database has (had) capturing subscriptions
MARKER_FOLDER = "cdc"
_EMIT = "SELECT pg_logical_emit_message(true, $1, $2)"


# ---------------------------------------------------------------------- the signing key

_key: bytes | None = None


def key_path(data_directory: str) -> str:
    return os.path.join(data_directory, "orochi", KEY_FILE)


def load_or_create_key(data_directory: str) -> bytes:
    """The cluster's message key, made (atomically, 0600) the first time."""
    path = key_path(data_directory)
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) == KEY_BYTES:
            return key
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # fails if another backend made it first: theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(temp)
    with open(path, "rb") as f:
        key = f.read()
    if len(key) != KEY_BYTES:
        raise OSError(f'the change capture key "{path}" is damaged: remove it (subscriptions must then be '
                      "started again)")
    return key


def _message_key() -> bytes:
    global _key
    if _key is None:
        _key = load_or_create_key(spi.backend_info()["data_directory"])
    return _key


def sign(key: bytes, content: bytes) -> bytes:
    """A message as emitted: its MAC, then its content."""
    return hmac.new(key, content, hashlib.sha256).digest() + content


def verify(key: bytes, message: bytes | memoryview) -> memoryview | None:
    """The content of a signed message, or None when the signature is wrong."""
    message = memoryview(message)
    if len(message) < MAC_BYTES:
        return None
    content = message[MAC_BYTES:]
    expected = hmac.new(key, content, hashlib.sha256).digest()
    return content if hmac.compare_digest(expected, bytes(message[:MAC_BYTES])) else None


# ---------------------------------------------------------------------- which tables are covered

def marker_path(data_directory: str, database_oid: int) -> str:
    return os.path.join(data_directory, "orochi", MARKER_FOLDER, f"{int(database_oid)}.capturing")


def make_marker(data_directory: str, database_oid: int) -> None:
    """Say (durably) that this database has capturing subscriptions; from
    then on its writers ask the catalog once per transaction.  Made before
    the first subscription starts, never removed."""
    path = marker_path(data_directory, database_oid)
    if os.path.exists(path):
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for directory in (folder, os.path.dirname(folder)):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class _TransactionCache:
    """Per transaction: which tables a subscription covers (with their
    names).  A transaction participant (runtime.join_transaction), so it
    forgets everything when the transaction ends."""

    def __init__(self) -> None:
        self.covered: dict[int, tuple[str, str] | None] = {}
        self.joined = False

    def _reset(self) -> None:
        self.covered = {}
        self.joined = False

    def commit(self) -> None:
        self._reset()

    def rollback(self) -> None:
        self._reset()

    def prepare(self) -> None:
        self._reset()


_cache = _TransactionCache()
#: whether this database's marker exists (once it does, for good)
_capturing_database = False


def database_captures() -> bool:
    """Whether change capture ever started in this database (see
    :func:`make_marker`)."""
    return _database_captures()


def _database_captures() -> bool:
    """Whether any subscription of this database ever started: a file's
    existence, looked at (once per transaction) until it exists."""
    global _capturing_database
    if not _capturing_database:
        info = spi.backend_info()
        _capturing_database = os.path.exists(marker_path(info["data_directory"], info["database_oid"]))
    return _capturing_database


def covered(relid: int) -> tuple[str, str] | None:
    """(schema, name) of the table when a CDC subscription covers it, else
    None (read once per transaction; nothing asked in a database where no
    subscription ever started)."""
    if not _cache.joined:
        runtime.join_transaction(_cache)
        _cache.joined = True
        if not _database_captures():
            _cache.covered = _NOTHING_COVERED
    if relid in _cache.covered:
        return _cache.covered[relid]
    rows = spi.prepared(_COVERED, ["oid"], internal=True).execute([relid]).rows
    found = (rows[0][0], rows[0][1]) if rows else None
    _cache.covered[relid] = found
    return found


class _Nothing(dict):
    """A covered-table cache that answers None for every table."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: Any) -> None:
        return None

    def clear(self) -> None:
        pass


_NOTHING_COVERED = _Nothing()


def _emit(content: bytes) -> None:
    from orochi_fdw.bridge.faults import fault_point

    spi.prepared(_EMIT, ["text", "bytea"]).execute([payload.PREFIX, sign(_message_key(), content)])
    fault_point("cdc:after_emit")


# ---------------------------------------------------------------------- the hooks

def for_statement(table: "ColumnarTable") -> "TableCapture | None":
    """The capture of a write statement on ``table``, or None when no
    subscription covers it (the common case: nothing more is done)."""
    names = covered(table.relid)
    if names is None:
        return None
    return TableCapture(table, names)


def truncated(table: "ColumnarTable") -> None:
    """TRUNCATE of a covered table: one message without rows."""
    capture = for_statement(table)
    if capture is not None:
        capture.emit("t", 0)


class TableCapture:
    """The changes one statement makes to one covered table."""

    def __init__(self, table: "ColumnarTable", names: tuple[str, str]):
        self.table = table
        self.schema, self.name = names
        self.metas = [payload.ColumnMeta(name, col.type_oid, col.typmod, _wire_kind(col))
                      for name, col in table.columns.items()]
        self.types = {name: col.type_name for name, col in table.columns.items() if col.type_name}
        self.updates: dict[int, dict[str, Any]] = {}  # row id -> new values, until the old row is read
        self.done: list[np.ndarray] = []  # row ids whose change was emitted already

    def emit(self, op: str, rows: int, before: Mapping[str, Column] | None = None,
             after: Mapping[str, Column] | None = None) -> None:
        _emit(payload.encode(op, self.table.relid, self.schema, self.name, self.metas, rows, before, after))

    # -- INSERT: every batch, whether it goes to stripes or to the delta store
    def inserted(self, batch: Batch) -> None:
        if batch.nrows:
            self.emit("c", batch.nrows, after=batch.columns)

    # -- UPDATE: the new values wait for the old row, read when deletions are
    # applied, or sooner when many are waiting (memory)
    def updated(self, rowid: int, values: dict[str, Any]) -> None:
        self.updates[int(rowid)] = values
        if len(self.updates) >= PENDING_UPDATES:
            stripes: dict[int, BitMap] = {}
            delta: list[int] = []
            for r in self.updates:
                if r >= DELTA_ROWID_BASE:
                    delta.append(r - DELTA_ROWID_BASE)
                else:
                    stripes.setdefault(r >> STRIPE_OFFSET_BITS, BitMap()).add(r & _OFFSET_MASK)
            self.deleting(stripes, delta)

    # -- DELETE / UPDATE: called with the row ids about to be deleted
    def deleting(self, stripe_offsets: Mapping[int, BitMap], delta_ids: Iterable[int]) -> None:
        """Emit the old rows (and, for updated ones, the new) of the row ids
        given, a stripe or a page of delta rows at a time; rows emitted
        before (UPDATE's early reads) are left out."""
        for stripe_id in sorted(stripe_offsets):
            offsets = np.frombuffer(BitMap(stripe_offsets[stripe_id]).to_array(), dtype=np.uint32).astype(np.int64)
            rowids = (np.int64(stripe_id) << np.int64(STRIPE_OFFSET_BITS)) + offsets
            keep = self._not_done(rowids)
            if keep is not None:
                rowids, offsets = rowids[keep], offsets[keep]
            if len(rowids):
                self._emit_old(rowids, _stripe_rows(self.table, stripe_id, offsets))
        ids = np.array(sorted(int(i) for i in delta_ids), dtype=np.int64)
        for start in range(0, len(ids), DELTA_PAGE):
            page = ids[start:start + DELTA_PAGE]
            rowids = page + np.int64(DELTA_ROWID_BASE)
            keep = self._not_done(rowids)
            if keep is not None:
                rowids, page = rowids[keep], page[keep]
            if len(rowids):
                self._emit_old(rowids, _delta_rows(self.table, page.tolist()))

    def _not_done(self, rowids: np.ndarray) -> np.ndarray | None:
        """A mask of the row ids not emitted yet, or None when none was."""
        if not self.done:
            return None
        return ~np.isin(rowids, np.concatenate(self.done))

    def _emit_old(self, rowids: np.ndarray, old: tuple[np.ndarray, dict[str, Column]]) -> None:
        """Emit deletions and updates of ``rowids`` (ascending) from their old
        rows (``old``: row ids ascending and the columns)."""
        old_ids, columns = old
        if len(old_ids) != len(rowids) or not np.array_equal(old_ids, rowids):
            raise _concurrent(self.table, f"{len(rowids) - len(old_ids)} row(s) of its delta store were deleted, "
                                          "updated or compacted by another transaction since this statement started.")
        is_update = np.fromiter((int(r) in self.updates for r in rowids.tolist()), dtype=bool, count=len(rowids))
        deleted = np.flatnonzero(~is_update)
        updated = np.flatnonzero(is_update)
        if len(deleted):
            self.emit("d", len(deleted), before={n: _take(c, deleted) for n, c in columns.items()})
        if len(updated):
            news = [self.updates.pop(int(r)) for r in rowids[updated].tolist()]
            after = {m.name: _column_from_values(m, [v.get(m.name) for v in news], self.types.get(m.name))
                     for m in self.metas}
            self.emit("u", len(updated), before={n: _take(c, updated) for n, c in columns.items()}, after=after)
        self.done.append(rowids)


# ---------------------------------------------------------------------- old rows

def _concurrent(table: "ColumnarTable", detail: str) -> Exception:
    """The error the write path gives when rows it changes were changed by
    another transaction (40001): the statement, and its messages, roll back."""
    from orochi_fdw.columnar.modify import SerializationFailure

    return SerializationFailure(f'could not serialize access to table "{table.relname}" due to concurrent update',
                                detail=detail)


_STRIPE = "SELECT file_path FROM orochi.columnar_stripes WHERE stripe_id = $1"
_STRIPE_COLUMNS = "SELECT attnum, column_name, kind FROM orochi.columnar_stripe_columns WHERE stripe_id = $1"


def _stripe_rows(table: "ColumnarTable", stripe_id: int, offsets: np.ndarray) -> tuple[np.ndarray, dict[str, Column]]:
    """The rows at ``offsets`` (ascending) of a stripe, every column (files
    are immutable: what they hold is what the rows were)."""
    from orochi_fdw.columnar.scan import missing_column, select_rows
    from orochi_fdw.columnar.types import storage_kind, to_wire
    from orochi_fdw.storage.stripe_format import StripeReader

    from orochi_fdw.catalog import files

    path = spi.prepared(_STRIPE, ["bigint"], internal=True).execute([stripe_id]).scalar()
    if path is None:
        raise _concurrent(table, f"Stripe {stripe_id} was rewritten (orochi.vacuum) or removed by another "
                                 "transaction since this statement started.")
    stored = {int(a): (n, k) for a, n, k in
              spi.prepared(_STRIPE_COLUMNS, ["bigint"], internal=True).execute([stripe_id]).rows}
    missing = table.missing_values()
    pieces: dict[str, list[Column]] = {name: [] for name in table.columns}
    from orochi_fdw.tiering.objects import open_stripe

    reader = open_stripe(files.resolve(path))
    try:
        for group in reader.metadata.chunk_groups:
            lo = int(np.searchsorted(offsets, group.first_row))
            hi = int(np.searchsorted(offsets, group.first_row + group.row_count))
            if lo == hi:
                continue
            mask = np.zeros(group.row_count, dtype=bool)
            mask[offsets[lo:hi] - group.first_row] = True
            for name, column in table.columns.items():
                rec = stored.get(column.attnum)
                if rec is None:  # added after the stripe was written
                    col = missing_column(column, missing.get(name), group.row_count)
                else:
                    col = to_wire(reader.read_chunk(rec[0], group.index), storage_kind(column), column, rec[1])
                pieces[name].append(select_rows(col, mask))
    finally:
        reader.close()
    rowids = (np.int64(stripe_id) << np.int64(STRIPE_OFFSET_BITS)) + offsets
    found = sum(len(p) for p in next(iter(pieces.values()), [])) if pieces else len(offsets)
    if found != len(offsets):
        rowids = rowids[:found]  # reported by the caller as rows not found
    return rowids, {name: _concat(cols, _wire_kind(table.columns[name])) for name, cols in pieces.items()}


def _delta_rows(table: "ColumnarTable", ids: list[int]) -> tuple[np.ndarray, dict[str, Column]]:
    """The delta store's rows ``ids`` (a delta row never changes in place:
    UPDATE deletes it and inserts another)."""
    import dataclasses

    from orochi_fdw.columnar.delta import _build_column, _read_column

    delta = table.delta
    reads = [_read_column(n, c) for n, c in table.columns.items()]
    # text forms by the output function, as the values print (a cast to text
    # drops char(n)'s padding, adds inet's netmask ...)
    reads = [dataclasses.replace(rc, exprs=(f"CASE WHEN c{table.columns[rc.name].attnum} IS NOT NULL"
                                            f" THEN format('%s', c{table.columns[rc.name].attnum}) END",))
             if rc.kind is WireKind.CSTRING else rc for rc in reads]
    select = ["_rowid"] + [e for rc in reads for e in rc.exprs]
    rows = spi.prepared(f"SELECT {', '.join(select)} FROM {delta.name} WHERE _rowid = ANY ($1) ORDER BY _rowid",
                        ["bigint[]"], internal=True).execute([ids]).rows
    cols_in = list(zip(*rows)) if rows else [[] for _ in select]
    out = {}
    i = 1
    for rc in reads:
        out[rc.name] = _build_column(rc, [list(cols_in[i + j]) for j in range(len(rc.exprs))])
        i += len(rc.exprs)
    found = np.array(cols_in[0], dtype=np.int64) + np.int64(DELTA_ROWID_BASE)
    return found, out


# ---------------------------------------------------------------------- wire columns

def _wire_kind(column) -> WireKind:
    from orochi_fdw.columnar.types import wire_kind

    return wire_kind(column)


def _concat(cols: list[Column], kind: WireKind) -> Column:
    if not cols:
        return Column.from_pylist(kind, [])
    if len(cols) == 1:
        return cols[0]
    if any(c.validity is not None for c in cols):
        validity = np.concatenate([np.ones(len(c), np.uint8) if c.validity is None
                                   else np.asarray(c.validity, np.uint8) for c in cols])
    else:
        validity = None
    if not kind.is_variable_width:
        return Column(kind, np.concatenate([np.asarray(c.values, dtype=WIRE_DTYPES[kind]) for c in cols]), validity)
    datas, offsets, base = [], [np.zeros(1, np.int64)], 0
    for c in cols:
        o = np.asarray(c.offsets, np.int64)
        values = c.values if isinstance(c.values, np.ndarray) else np.frombuffer(c.values, np.uint8)
        datas.append(values[o[0]:o[-1]])
        offsets.append(o[1:] - o[0] + base)
        base += int(o[-1] - o[0])
    return Column(kind, np.concatenate(datas), validity, np.concatenate(offsets))


def _take(col: Column, index: np.ndarray) -> Column:
    """The rows of a wire column at positions ``index`` (any order)."""
    index = np.asarray(index, dtype=np.int64)
    validity = None if col.validity is None else np.asarray(col.validity)[index]
    if not col.kind.is_variable_width:
        return Column(col.kind, np.asarray(col.values)[index], validity)
    offsets = np.asarray(col.offsets, np.int64)
    starts = offsets[:-1][index]
    lengths = offsets[1:][index] - starts
    new_offsets = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    total = int(new_offsets[-1])
    values = col.values if isinstance(col.values, np.ndarray) else np.frombuffer(col.values, np.uint8)
    gather = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    return Column(col.kind, values[gather] if total else np.zeros(0, np.uint8), validity, new_offsets)


def _column_from_values(meta: payload.ColumnMeta, values: list, type_sql: str | None = None) -> Column:
    """UPDATE's new values (Python objects, as the bridge hands them over)
    as a wire column of the column's kind.  Values of types carried as text
    are printed again by the type's output function (the bridge hands some
    over as a cast to text would print them: ``inet`` with its netmask,
    ``char(n)`` without its padding), so that they read as a scan's do."""
    from orochi_fdw.bridge.types import SpecialValue

    kind = meta.kind
    if kind is WireKind.TEXT:
        return Column.from_pylist(kind, [None if v is None else pg_text(v) for v in values])
    if kind is WireKind.CSTRING:
        texts = [None if v is None else pg_text(v) for v in values]
        if type_sql is not None and any(t is not None for t in texts):
            texts = spi.prepared(
                f"SELECT array_agg(CASE WHEN v IS NULL THEN NULL ELSE format('%s', v::{type_sql}) END ORDER BY i)"
                " FROM unnest($1::text[]) WITH ORDINALITY u(v, i)", ["text[]"]).execute([texts]).scalar()
        return Column.from_pylist(kind, texts)
    if kind in (WireKind.DATE, WireKind.TIMESTAMP, WireKind.TIME) and \
            any(isinstance(v, SpecialValue) for v in values):
        return _special_times(kind, values)
    return Column.from_pylist(kind, values)


def _special_times(kind: WireKind, values: list) -> Column:
    """Dates and times with infinities, years Python cannot hold, or
    24:00:00 among them (a SpecialValue carries Postgres's own integer)."""
    from orochi_fdw.bridge.batch import _scalar_to_wire
    from orochi_fdw.bridge.types import SpecialValue

    out = np.zeros(len(values), dtype=WIRE_DTYPES[kind])
    validity = np.ones(len(values), dtype=np.uint8)
    for i, v in enumerate(values):
        if v is None:
            validity[i] = 0
        else:
            out[i] = v.raw if isinstance(v, SpecialValue) else _scalar_to_wire(kind, v)
    return Column(kind, out, None if validity.all() else validity)


def pg_text(value: Any) -> str:
    """A Python value the bridge made from a Postgres value, back in the
    text form that Postgres would print (arrays as array literals)."""
    import datetime
    import decimal
    import json

    from orochi_fdw.bridge.types import Interval, SpecialValue

    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, decimal.Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, SpecialValue):
        return value.text
    if isinstance(value, Interval):
        return f"{value.months} mons {value.days} days {value.microseconds} microseconds"
    if isinstance(value, (list, tuple)):
        return "{" + ",".join("NULL" if v is None else _array_element(pg_text(v), v) for v in value) + "}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, datetime.timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    return str(value)


def _array_element(text: str, value: Any) -> str:
    if isinstance(value, list):
        return text  # a nested array: already braced
    if text == "" or text.upper() == "NULL" or any(ch in text for ch in ' {}",\\\t\n\r\v\f'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text
