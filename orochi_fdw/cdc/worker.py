"""One subscription's worker: creates its slot and takes the initial
snapshot, then reads the slot's changes, delivers them to the sink and
moves the slot once the sink has them.

**Connections.**  The worker connects with the sidecar's own role, which
needs the REPLICATION attribute (slots) and to see every subscription
(superuser or BYPASSRLS); it checks at every cycle that the subscription's
owner may still read each table (a table whose SELECT was revoked fails the
subscription).  The initial snapshot is read by a connection **as the
owner** (as pipelines load as theirs), so it reads only what the owner may.

**Slot and snapshot.**  Before the slot exists the worker waits until every
transaction that began before it looked has ended: such a transaction may
have found no subscription on an orochi table and written it without
change messages (orochi_fdw/cdc/capture.py), and the slot must not decode
it.  The slot is created over a replication connection with
``EXPORT_SNAPSHOT``; the snapshot connection imports that snapshot, so the
rows it reads (op ``r``) are exactly those committed before the slot's
first change.  A snapshot cut short (a crash) is started again with a new
slot.

**A cycle** (fault points in brackets, see :mod:`.faults`)::

    peek the slot's changes (pgoutput, up to cdc.peek_changes)       [fetched]
    for each batch_size events:  deliver, wait for the sink          [delivered]
        record the position after the last whole transaction
        delivered, the counters, refused events (one transaction)    [recorded]
        pg_replication_slot_advance(slot, that position)             [advanced]
    nothing more in the slot, but the WAL moved on (other tables and
    databases): write a non-transactional heartbeat message; once a
    peek reads it, the slot moves past it

A crash anywhere re-reads the slot from its last advance: events after it
are delivered again, with the ids they had, so a consumer keeping the last
id it applied drops them.  A transaction the catalog says was delivered
(the slot's advance may be lost in a crash of the server) is not delivered
again.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psycopg
from psycopg import sql

from orochi_fdw.cdc import catalog, pgoutput
from orochi_fdw.cdc.catalog import Progress, SubscriptionDef, SubscriptionState
from orochi_fdw.cdc.events import Event, EventBuilder, RenderContext, TableConfig, lsn_text, parse_lsn
from orochi_fdw.cdc.faults import fault_point
from orochi_fdw.cdc.options import CdcOptions, check_options
from orochi_fdw.cdc.sinks import Delivery, Sink, SinkUnavailable, make_sink
from orochi_fdw.cdc.values import Converter

logger = logging.getLogger("orochi.sidecar.cdc")

#: session settings of every connection whose text output is parsed
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c extra_float_digits=1"
                   " -c bytea_output=hex")

_PEEK = ("SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes(%s, NULL, %s, 'proto_version', '1', "
         "'publication_names', %s, 'messages', 'true')")
#: rows fetched from the peek's cursor at a time
_FETCH = 2000
#: WAL (bytes) past the slot's position after which an idle worker writes a heartbeat
_IDLE_ADVANCE = 1 << 20
#: prefix of the non-transactional messages that let an idle slot move on
HEARTBEAT_PREFIX = "orochi.cdc.heartbeat"


class SubscriptionBusy(Exception):
    """Another worker holds the subscription."""


class SubscriptionGone(Exception):
    """Dropped or stopped: the worker ends."""


class SubscriptionFailed(Exception):
    """It cannot go on until its owner acts (its state is now failed)."""


@dataclass
class CycleResult:
    """What one cycle did."""

    events: int = 0
    transactions: int = 0
    caught_up: bool = False
    snapshot_events: int = 0

    def describe(self) -> str:
        text = f"{self.events} event{'s' if self.events != 1 else ''}"
        if self.snapshot_events:
            text += f" ({self.snapshot_events} from the snapshot)"
        return text


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Cycle:
    """The events of one cycle not delivered yet, and how far the slot may
    move once they are."""

    def __init__(self, worker: "CdcWorker", result: CycleResult):
        self.worker = worker
        self.result = result
        self.rows = 0
        self.pending: list[Event] = []
        self.upto: int | None = None        # the slot may move here once `pending` is delivered
        self.recorded: int | None = None
        self.last_commit: tuple[int, int] | None = None
        self.progress = Progress()
        self.fetched = False

    def add(self, events: list[Event]) -> None:
        if events and not self.fetched:
            self.fetched = True
            fault_point("fetched", self.worker.subscription_id, self.worker.batches + 1)
        self.pending.extend(events)

    def done(self, end_lsn: int) -> None:
        """Everything the slot holds before ``end_lsn`` is in ``pending`` (or delivered)."""
        if self.upto is None or end_lsn > self.upto:
            self.upto = end_lsn

    def deliver(self) -> None:
        worker = self.worker
        if self.pending:
            worker._deliver(self.pending, self.progress)
            self.result.events += len(self.pending)
            self.pending = []
            fault_point("delivered", worker.subscription_id, worker.batches)
        if self.upto is not None and (self.recorded is None or self.upto > self.recorded):
            self.recorded = self.upto
            worker._record(self.upto, self.progress, self.last_commit, caught_up=False)
            self.progress = Progress()


class CdcWorker:
    """Runs one subscription: :meth:`run` in a thread (the daemon), or
    :meth:`run_cycle` (``orochi-sidecar --once``, tests)."""

    def __init__(self, definition: SubscriptionDef, dsn: str, *, application_name: str = "orochi-sidecar",
                 connect_timeout: int = 5, stop: threading.Event | None = None, min_delay: float = 1.0,
                 max_delay: float = 60.0, client_check_interval: float = 1.0, peek_changes: int = 10_000):
        self.definition = definition
        self.subscription_id = definition.subscription_id
        self.dsn = dsn
        self.application_name = application_name
        self.connect_timeout = connect_timeout
        self.stop = stop or threading.Event()
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.client_check_interval = client_check_interval
        self.peek_changes = peek_changes
        self.options: CdcOptions = check_options(definition.sink, definition.format, definition.options)
        self.conn: psycopg.Connection | None = None      # control: catalog, advance (autocommit)
        self.stream: psycopg.Connection | None = None    # peeks, in a transaction each
        self.sink: Sink | None = None
        self.state: SubscriptionState | None = None
        self.builder: EventBuilder | None = None
        self.ctx: RenderContext | None = None
        self.key: bytes | None = None
        self.status = "starting"
        self.batches = 0
        self.events_total = 0
        self.shown_error: str | None = None
        self.on_delivery: Callable[[int, float], None] | None = None
        self._types: dict[int, tuple | None] = {}
        self._pending_shown = False

    # ------------------------------------------------------------ connections
    def _connect(self, user: str | None = None, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=autocommit, connect_timeout=self.connect_timeout,
                               application_name=f"{self.application_name} cdc {self.subscription_id}",
                               options=SESSION_OPTIONS, **({"user": user} if user else {}), **kwargs)
        if not kwargs.get("replication"):
            conn.execute("SELECT set_config('client_connection_check_interval', %s, false)",
                         [str(int(self.client_check_interval * 1000))])
            if not autocommit:
                conn.commit()
        return conn

    def start(self) -> None:
        """Connect, claim the subscription, read its state and open the sink.

        Raises:
            SubscriptionBusy, SubscriptionGone, SubscriptionFailed, SinkUnavailable, psycopg.Error.
        """
        self.close()
        conn = self.conn = self._connect()
        if not catalog.try_claim(conn, self.subscription_id):
            raise SubscriptionBusy(f"subscription {self.subscription_id} is run by another worker")
        self._refresh()
        catalog.report_worker(conn, self.subscription_id, worker_name())
        self.key = bytes(conn.execute("SELECT orochi.cdc_message_key()").fetchone()[0])
        database = conn.execute("SELECT current_database()").fetchone()[0]
        server = self.options["topic_prefix"] or self.definition.name
        self.ctx = RenderContext(self.definition.format, server, database)
        self.stream = self._connect(autocommit=False)
        self.sink = make_sink(self.definition.name, self.options, self.ctx)
        self.sink.open()

    def close(self) -> None:
        if self.sink is not None:
            try:
                self.sink.close()
            except Exception:
                logger.exception("subscription %d: closing the sink failed", self.subscription_id)
            self.sink = None
        for attr in ("stream", "conn"):
            conn = getattr(self, attr)
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
                setattr(self, attr, None)
        self.builder = None

    def _refresh(self) -> SubscriptionState:
        """Read the subscription's state and tables again.

        Raises:
            SubscriptionGone: dropped or no longer running.
            SubscriptionFailed: the owner may no longer read a table.
        """
        assert self.conn is not None
        state = catalog.read_state(self.conn, self.subscription_id)
        if state.state != "running":
            raise SubscriptionGone(f"subscription {self.subscription_id} is {state.state or 'dropped'}")
        if state.denied:
            raise SubscriptionFailed(f"permission denied for table {state.denied}: the subscription's owner "
                                     f"{self.definition.owner} may no longer read it")
        if self.state is not None and self.builder is not None and state.tables != self.state.tables:
            self.builder.tables = state.tables
        self.state = state
        return state

    def _type_row(self, oid: int) -> tuple | None:
        if oid not in self._types:
            assert self.conn is not None
            self._types[oid] = self.conn.execute(catalog.TYPE_ROW, [oid]).fetchone()
        return self._types[oid]

    def _new_builder(self) -> EventBuilder:
        assert self.state is not None and self.key is not None
        return EventBuilder(self.definition.format, self.state.tables, self.key, self._type_row,
                            self.options["decimal_handling"])

    # ------------------------------------------------------------ errors shown
    def _show_error(self, error: str | None, count: bool = False,
                    pending_since: datetime.datetime | None = None) -> None:
        if self.conn is None or self.conn.closed or (error == self.shown_error and not count):
            return
        try:
            catalog.report_error(self.conn, self.subscription_id, error, count, pending_since)
            self.shown_error = error
        except psycopg.Error:
            pass

    def _fail(self, message: str) -> None:
        logger.error("subscription %d (%s) failed: %s", self.subscription_id, self.definition.name, message)
        if self.conn is not None and not self.conn.closed:
            try:
                catalog.mark_failed(self.conn, self.subscription_id, message)
            except psycopg.Error as exc:
                logger.warning("subscription %d: could not record its failure: %s", self.subscription_id,
                               first_line(exc))
        self.status = "failed"

    def _check_lag(self) -> None:
        """Fail the subscription and drop its slot when it holds more WAL
        than max_lag (so that the WAL it holds can go)."""
        limit = self.options.max_lag_bytes
        if limit is None or self.conn is None:
            return
        row = self.conn.execute(catalog.RETAINED, [self.definition.slot_name]).fetchone()
        if row is not None and row[0] is not None and int(row[0]) > limit:
            reason = (f"the replication slot held {int(row[0])} bytes of WAL, more than max_lag ({limit}): "
                      "the slot was dropped; start the subscription again for a new snapshot")
            catalog.fail_and_drop_slot(self.conn, self.subscription_id, self.definition.slot_name, reason)
            self.status = "failed"
            raise SubscriptionGone(reason)

    # ------------------------------------------------------------ delivery
    def _deliver(self, events: list[Event], progress: Progress, snapshot: bool = False,
                 retry_in_place: bool = False) -> Delivery:
        """Deliver one batch (with retries in place when asked: the snapshot,
        whose exported snapshot must not be let go)."""
        assert self.sink is not None
        delay = float(self.options["retry_min_delay"])
        while True:
            started = time.monotonic()
            try:
                result = self.sink.deliver(events)
                break
            except SinkUnavailable as exc:
                exc.pending_ms = events[0].commit_ms if events else None  # type: ignore[attr-defined]
                if not retry_in_place:
                    raise
                self._sink_down(exc, events[0].commit_ms if events else None)
                self._refresh()
                self.stop.wait(exc.retry_after if exc.retry_after else delay)
                if self.stop.is_set():
                    raise SubscriptionGone("the worker is stopping") from None
                delay = min(delay * 2, float(self.options["retry_max_delay"]))
        self.batches += 1
        if snapshot:
            progress.snapshot_events += result.delivered + result.skipped
        else:
            progress.events += result.delivered + result.skipped
        progress.bytes += result.bytes
        progress.batches += 1
        progress.refused += result.refused
        self.events_total += len(events)
        if self.on_delivery is not None:
            self.on_delivery(len(events), time.monotonic() - started)
        if self.shown_error is not None:
            self._show_error(None)
        return result

    def _sink_down(self, exc: SinkUnavailable, pending_ms: int | None) -> None:
        message = f"sink unavailable: {first_line(exc)}"
        logger.warning("subscription %d (%s): %s", self.subscription_id, self.definition.name, message)
        self.status = "waiting for the sink"
        pending = None if pending_ms is None else datetime.datetime.fromtimestamp(pending_ms / 1000,
                                                                                   datetime.timezone.utc)
        self._show_error(message, count=True, pending_since=pending)
        self._check_lag()

    # ------------------------------------------------------------ slot and snapshot
    def _slot_exists(self) -> bool:
        assert self.conn is not None
        return self.conn.execute("SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                                 [self.definition.slot_name]).fetchone() is not None

    def prepare_slot(self) -> int:
        """Make sure the slot exists and the snapshot was delivered; returns
        the snapshot events delivered now.

        Raises:
            SubscriptionFailed: the slot is gone after the snapshot (dropped
                by hand, or a drop rolled back): starting the subscription
                again makes a new one.
        """
        assert self.conn is not None and self.state is not None
        state = self.state
        exists = self._slot_exists()
        if exists and state.snapshot_done:
            return 0
        if not exists and state.snapshot_done and state.slot_lsn is not None:
            raise SubscriptionFailed(f'its replication slot "{self.definition.slot_name}" is gone; start the '
                                     "subscription again for a new slot and a new snapshot")
        if exists:  # a snapshot cut short: its exported snapshot is gone, start again
            logger.info("subscription %d: the initial snapshot did not finish; starting it again",
                        self.subscription_id)
            catalog.drop_slot(self.conn, self.definition.slot_name)
        self._wait_for_older_transactions()
        return self._create_slot_and_snapshot()

    def _wait_for_older_transactions(self) -> None:
        """Wait until no transaction of this database that began before now
        is open (it may have written orochi tables without change messages)."""
        assert self.conn is not None
        since = self.conn.execute("SELECT clock_timestamp()").fetchone()[0]
        query = ("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = current_database() "
                 "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start < %s")
        shown = False
        while True:
            n = int(self.conn.execute(query, [since]).fetchone()[0])
            if n == 0:
                break
            if not shown:
                self.status = f"waiting for {n} older transaction(s) to end"
                self._show_error(f"the replication slot waits for {n} transaction(s) older than the subscription")
                shown = True
            if self.stop.wait(0.05):
                raise SubscriptionGone("the worker is stopping")
        if shown:
            self._show_error(None)

    def _create_slot_and_snapshot(self) -> int:
        assert self.conn is not None and self.state is not None
        slot = self.definition.slot_name
        repl = psycopg.connect(self.dsn, autocommit=True, replication="database", connect_timeout=self.connect_timeout,
                               application_name=f"{self.application_name} cdc {self.subscription_id} slot")
        try:
            row = repl.execute(sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT").format(
                sql.Identifier(slot))).fetchone()
            consistent, snapshot_name = parse_lsn(row[1]), row[2]
            catalog.record_slot(self.conn, self.subscription_id, consistent, False)
            logger.info("subscription %d: replication slot %s created at %s", self.subscription_id, slot, row[1])
            if self.options["snapshot"] == "never":
                catalog.record_slot(self.conn, self.subscription_id, consistent, True)
                self.state = self._refresh()
                return 0
            snap = self._connect(user=self.definition.owner, autocommit=False)
            try:
                snap.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snap.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
                repl.close()  # the snapshot is imported: the slot's creation can end
                count = self._snapshot(snap, consistent)
            finally:
                snap.close()
        finally:
            repl.close()
        catalog.record_slot(self.conn, self.subscription_id, consistent, True)
        self.state = self._refresh()
        return count

    def _snapshot_rows(self, snap: psycopg.Connection, relid: int, config: TableConfig
                       ) -> Iterator[tuple[str, str, list[str], dict[str, Any], list[str]]]:
        """(schema, table, key columns, row) of every row of a table."""
        name = snap.execute(catalog.TABLE_NAME, [relid]).fetchone()
        if name is None:
            return
        schema, table, relkind = name
        columns = snap.execute(catalog.SNAPSHOT_COLUMNS, [relid]).fetchall()
        names = [c[0] for c in columns]
        assert self.builder is not None
        convs: list[Converter] = [self.builder.converter(c[1], c[2]) for c in columns]
        if config.key_columns:
            key = [k for k in config.key_columns if k in names] or names
        elif relkind == "r":
            key = [r[0] for r in snap.execute(catalog.IDENTITY_COLUMNS, [relid]).fetchall()] or names
        else:
            key = names
        query = sql.SQL("COPY (SELECT {} FROM ONLY {}.{}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names), sql.Identifier(schema), sql.Identifier(table))
        with snap.cursor() as cur:
            with cur.copy(query) as copy:
                for row in copy.rows():
                    yield schema, table, key, {n: c.from_text(v) for n, c, v in zip(names, convs, row)}

    def _snapshot(self, snap: psycopg.Connection, consistent: int) -> int:
        """Deliver every row of every table (op r), as of the slot's start."""
        assert self.state is not None
        self.status = "snapshot"
        self.builder = self._new_builder()
        now_ms = int(time.time() * 1000)
        batch_size = int(self.options["batch_size"])
        progress = Progress()
        batch: list[Event] = []
        index = 0
        total = 0
        previous: Event | None = None
        orders: dict[tuple[str, str], int] = {}

        def flush(final: bool) -> None:
            nonlocal batch, progress, total
            if not batch:
                return
            self._deliver(batch, progress, snapshot=True, retry_in_place=True)
            total += len(batch)
            catalog.record_progress(self.conn, self.subscription_id, None, progress, None)
            progress = Progress()
            batch = []
            if not final:
                fault_point("snapshot", self.subscription_id, self.batches)

        for relid in self.state.ordered:
            config = self.state.tables[relid]
            for schema, table, key, row in self._snapshot_rows(snap, relid, config):
                order = orders.get((schema, table), 0) + 1
                orders[(schema, table)] = order
                event = Event(consistent, index, "r", schema, table, {k: row.get(k) for k in key}, None, row,
                              None, now_ms, "true", order)
                index += 1
                if previous is None:
                    event.snapshot = "first"
                else:
                    batch.append(previous)
                    if len(batch) >= batch_size:
                        flush(False)
                previous = event
        if previous is not None:
            if previous.snapshot != "first":
                previous.snapshot = "last"
            batch.append(previous)
        flush(True)
        logger.info("subscription %d: initial snapshot of %d row(s) delivered", self.subscription_id, total)
        return total

    # ------------------------------------------------------------ a cycle
    def run_cycle(self) -> CycleResult:
        """Read what the slot has (once, up to cdc.peek_changes changes) and
        deliver it.

        Raises:
            SinkUnavailable, SubscriptionGone, SubscriptionFailed, psycopg.Error.
        """
        assert self.conn is not None and self.stream is not None
        self._refresh()
        result = CycleResult()
        result.snapshot_events = self.prepare_slot()
        if self.builder is None:
            self.builder = self._new_builder()
        state = self.state
        assert state is not None
        builder = self.builder
        builder.tables = state.tables
        self.status = "running"
        confirmed = state.confirmed_lsn or 0
        batch_size = int(self.options["batch_size"])
        cycle = _Cycle(self, result)
        stream = self.stream
        try:
            with stream.transaction():
                with stream.cursor(name=f"orochi_cdc_{self.subscription_id}") as cur:
                    cur.itersize = _FETCH
                    cur.execute(_PEEK, [self.definition.slot_name, self.peek_changes, self.definition.publication])
                    for (data,) in cur:
                        cycle.rows += 1
                        message = pgoutput.parse(data)
                        if message is None:
                            continue
                        if isinstance(message, pgoutput.Message) and not message.transactional:
                            # decoding got past this point: every transaction that
                            # committed before it has been read
                            cycle.done(max(message.lsn, confirmed))
                            continue
                        txn = builder.feed(message)
                        if txn is not None:
                            if txn.end_lsn <= confirmed:
                                cycle.done(txn.end_lsn)  # delivered before (the slot's advance was lost): not again
                                continue
                            if txn.ignored_messages:
                                logger.warning("subscription %d: %d change message(s) of transaction %d had no "
                                               "valid signature and were ignored", self.subscription_id,
                                               txn.ignored_messages, txn.xid)
                            cycle.add(txn.events)
                            cycle.progress.transactions += 1
                            result.transactions += 1
                            cycle.last_commit = (txn.commit_lsn, txn.commit_ms)
                            cycle.progress.last_commit_lsn, cycle.progress.last_commit_ms = cycle.last_commit
                            cycle.done(txn.end_lsn)
                        elif builder.txn is not None and len(builder.txn.events) >= batch_size \
                                and builder.txn.commit_lsn > confirmed:
                            cycle.add(builder.txn.events)  # a big transaction: delivered as it comes
                            builder.txn.events = []
                        if len(cycle.pending) >= batch_size:
                            cycle.deliver()
        finally:
            builder.txn = None
        cycle.deliver()
        result.caught_up = cycle.rows < self.peek_changes
        if result.caught_up:
            if not cycle.progress.empty():
                self._record(None, cycle.progress, None, caught_up=True)
            elif self._pending_shown:
                self._record(None, cycle.progress, None, caught_up=True)
            self._heartbeat_if_behind()
        self._check_lag()
        return result

    def _heartbeat_if_behind(self) -> None:
        """When the slot has nothing for us but the WAL has moved on (other
        tables, other databases), write a non-transactional message: once
        the slot's decoding reads it, the slot can move past it."""
        assert self.conn is not None and self.state is not None
        row = self.conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), confirmed_flush_lsn)::bigint "
                                "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                                [self.definition.slot_name]).fetchone()
        if row is not None and row[0] is not None and int(row[0]) > _IDLE_ADVANCE:
            self.conn.execute("SELECT pg_logical_emit_message(false, %s, ''::bytea)", [HEARTBEAT_PREFIX])

    def _record(self, upto: int | None, progress: Progress, last_commit: tuple[int, int] | None,
                caught_up: bool) -> None:
        """Commit the position, then move the slot (fault points between)."""
        assert self.conn is not None and self.state is not None
        pending = None
        if not caught_up and last_commit is not None:
            pending = datetime.datetime.fromtimestamp(last_commit[1] / 1000, datetime.timezone.utc)
        catalog.record_progress(self.conn, self.subscription_id, upto, progress, pending)
        self._pending_shown = pending is not None
        fault_point("recorded", self.subscription_id, self.batches)
        if upto is not None:
            self.state.confirmed_lsn = max(self.state.confirmed_lsn or 0, upto)
            self._advance(upto)
            fault_point("advanced", self.subscription_id, self.batches)

    def _advance(self, lsn: int) -> None:
        assert self.conn is not None
        row = self.conn.execute("SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots "
                                "WHERE slot_name = %s", [self.definition.slot_name]).fetchone()
        if row is None or row[0] is None or parse_lsn(row[0]) >= lsn:
            return
        self.conn.execute("SELECT pg_catalog.pg_replication_slot_advance(%s, %s::pg_lsn)",
                          [self.definition.slot_name, lsn_text(lsn)])

    # ------------------------------------------------------------ the daemon's loop
    def run(self) -> None:
        """Run until stopped, the subscription is stopped, dropped or fails,
        or another worker has it (the daemon's thread body)."""
        delay = self.min_delay
        sink_delay = float(self.options["retry_min_delay"])
        poll = float(self.options["poll_interval"])
        while not self.stop.is_set():
            try:
                if self.conn is None or self.conn.closed:
                    self.status = "starting"
                    self.start()
                result = self.run_cycle()
                delay = self.min_delay
                sink_delay = float(self.options["retry_min_delay"])
                if result.caught_up:
                    self.status = "caught up"
                    self.stop.wait(poll)
            except SubscriptionBusy:
                self.status = "busy"
                self.close()
                return
            except SubscriptionGone as exc:
                logger.info("subscription %d: %s", self.subscription_id, exc)
                self.status = "gone" if self.status != "failed" else self.status
                self.close()
                return
            except SubscriptionFailed as exc:
                self._fail(str(exc))
                self.close()
                return
            except SinkUnavailable as exc:
                try:
                    self._sink_down(exc, getattr(exc, "pending_ms", None))
                except SubscriptionGone as gone:
                    logger.info("subscription %d: %s", self.subscription_id, gone)
                    self.close()
                    return
                except psycopg.Error:
                    self.close()
                self.stop.wait(exc.retry_after if exc.retry_after else sink_delay)
                sink_delay = min(sink_delay * 2, float(self.options["retry_max_delay"]))
            except psycopg.OperationalError as exc:
                logger.warning("subscription %d: postgres unreachable or slot unusable: %s; retrying in %.1fs",
                               self.subscription_id, first_line(exc), delay)
                self.status = f"waiting: {first_line(exc)}"
                self._show_error(first_line(exc))
                self.close()
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_delay)
            except psycopg.Error as exc:
                state = exc.sqlstate or ""
                if state[:2] in ("42", "0A", "28", "3D"):
                    self._fail(first_line(exc))
                    self.close()
                    return
                logger.warning("subscription %d: cycle failed (%s): %s; retrying in %.1fs", self.subscription_id,
                               state, first_line(exc), delay)
                self.status = "retrying"
                self._show_error(first_line(exc), count=True)
                self.close()
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_delay)
            except Exception as exc:  # a bug: shown, retried, never the daemon's end
                logger.exception("subscription %d: unexpected error", self.subscription_id)
                self.status = "retrying"
                self._show_error(f"{type(exc).__name__}: {exc}", count=True)
                self.close()
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_delay)
        self.close()
