"""One pipeline's worker: reads batches from the source and loads each, with
the positions after it, in one PostgreSQL transaction.

The worker connects **as the pipeline's owner** (the sidecar's DSN with the
owner's user name), so rows are written with the owner's rights and nothing
the target runs (triggers, defaults, input functions) can act with more: the
session has no other role to return to, unlike ``SET ROLE``.  The rows never
become SQL text: the COPY's table and columns are quoted identifiers, the
values travel in COPY's binary (or text) format.

A batch, in one transaction (fault points in brackets, see :mod:`.faults`)::

    fetch records from the source                  [fetched]
    BEGIN
      check the target (renamed? columns changed? -> mapping again)
      records -> rows (bad ones -> dead letters)
      COPY target (columns) FROM STDIN (FORMAT binary)  -- in a savepoint;
          a record-level error (SQLSTATE class 22 or 23) is found by
          splitting the batch, and that record becomes a dead letter
                                                   [copied]
      SELECT orochi.pipeline_commit_batch(...)     -- positions moved from
          where this batch started (or the whole transaction fails),
          counters, dead letters                   [positioned]
    COMMIT                                         [committed]
    tell the source (Kafka: informational group commit)

A crash anywhere before COMMIT loses the whole transaction, rows and
positions alike, and the next worker starts from the committed positions; a
crash after it finds both committed.  Either way every record is loaded
exactly once.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
from psycopg import sql

from orochi_fdw.pipelines import catalog
from orochi_fdw.pipelines.catalog import PipelineDef
from orochi_fdw.pipelines.decode import Decoder
from orochi_fdw.pipelines.errors import InvalidPipelineOptionError, RecordError
from orochi_fdw.pipelines.faults import fault_point
from orochi_fdw.pipelines.mapping import COLUMNS_QUERY, ColumnInfo, Mapper, b64, json_loader, _json_text
from orochi_fdw.pipelines.options import check_options
from orochi_fdw.pipelines.records import Fetch, Record, StreamState
from orochi_fdw.pipelines.sources.base import Source, SourceUnavailable, make_source
from orochi_fdw.pipelines.sources.streams import expand_documents

logger = logging.getLogger("orochi.sidecar.pipelines")

#: SQLSTATE classes of errors caused by one record's data
_RECORD_CLASSES = ("22", "23")
#: SQLSTATEs (or classes) after which the pipeline stops itself: retrying cannot help
_FATAL = ("42", "0A", "28", "3D", "3F")
_COPY_LINE = re.compile(r"COPY [^,]+, line (\d+), column ([^:]+)")
_COPY_COLUMN = re.compile(r"COPY [^,]+, line \d+, column ([^:]+)")


class PipelineBusy(Exception):
    """Another worker holds the pipeline."""


class PipelineGone(Exception):
    """The pipeline was dropped, stopped or paused: the worker ends."""


class PipelineFailed(Exception):
    """The pipeline cannot go on until its owner acts (its state is now failed)."""


@dataclass
class BatchResult:
    """What one batch did.

    Attributes:
        rows: rows loaded.
        errors: records sent to the dead letters.
        bytes: bytes of the records consumed.
        failed: the batch stopped the pipeline (max_errors).
        caught_up: the source had nothing more.
        positions: the streams' committed states after it.
    """

    rows: int = 0
    errors: int = 0
    bytes: int = 0
    failed: bool = False
    caught_up: bool = False
    positions: dict[str, StreamState] = field(default_factory=dict)

    def describe(self) -> str:
        text = f"{self.rows} row{'s' if self.rows != 1 else ''}"
        if self.errors:
            text += f", {self.errors} bad record{'s' if self.errors != 1 else ''}"
        return text + (" (stopped: max_errors)" if self.failed else "")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Redo(Exception):
    """Roll the batch's savepoint back and load fewer records."""


class PipelineWorker:
    """Runs one pipeline: :meth:`run` in a thread (the daemon), or
    :meth:`run_batch` once (``orochi-sidecar --once``, tests)."""

    def __init__(self, definition: PipelineDef, dsn: str, *, application_name: str = "orochi-sidecar",
                 connect_timeout: int = 5, stop: threading.Event | None = None,
                 min_delay: float = 1.0, max_delay: float = 60.0, client_check_interval: float = 1.0):
        self.definition = definition
        self.pipeline_id = definition.pipeline_id
        self.dsn = dsn
        self.application_name = application_name
        self.connect_timeout = connect_timeout
        self.stop = stop or threading.Event()
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.client_check_interval = client_check_interval
        self.options = check_options(definition.source, definition.format, definition.options)
        self.conn: psycopg.Connection | None = None
        self.source: Source | None = None
        self.mapper: Mapper | None = None
        self.decoder: Decoder | None = None
        self._target: tuple[str, str, str] | None = None
        self.errors_since_start = 0
        self.batches = 0
        self.shown_error: str | None = None
        self.status = "starting"
        self.last_result: BatchResult | None = None
        self.rows_total = 0
        self.on_batch: Callable[[BatchResult, float], None] | None = None

    # ------------------------------------------------------------ connection and claim
    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, user=self.definition.owner, autocommit=True,
                               connect_timeout=self.connect_timeout,
                               application_name=f"{self.application_name} pipeline {self.pipeline_id}")
        try:
            # a killed sidecar's open transaction ends soon, not when TCP notices
            conn.execute("SELECT set_config('client_connection_check_interval', %s, false)",
                         [str(int(self.client_check_interval * 1000))])
            if not catalog.try_claim(conn, self.pipeline_id):
                raise PipelineBusy(f"pipeline {self.pipeline_id} is run by another worker")
        except BaseException:
            conn.close()
            raise
        return conn

    def start(self) -> None:
        """Connect as the owner, claim the pipeline, read its positions and
        open the source (committing the starting positions of new streams).

        Raises:
            PipelineBusy, PipelineGone, PipelineFailed, SourceUnavailable,
            psycopg.Error.
        """
        self.close()
        self.conn = self._connect()
        conn = self.conn
        state = catalog.pipeline_state(conn, self.pipeline_id)
        if state not in ("running", "paused"):
            raise PipelineGone(f"pipeline {self.pipeline_id} is {state or 'dropped'}")
        catalog.report_worker(conn, self.pipeline_id, worker_name())
        self.errors_since_start = catalog.errors_since_start(conn, self.pipeline_id)
        self._load_target()
        positions = catalog.read_positions(conn, self.pipeline_id)
        self.source = make_source(self.pipeline_id, self.definition.source, self.definition.format, self.options)
        initial = self.source.open(positions)
        if initial is not None and initial.streams:
            self._commit_positions(initial)
        self.status = state

    def close(self) -> None:
        """Release the source and the connection (and with it the claim)."""
        if self.source is not None:
            try:
                self.source.close()
            except Exception:
                logger.exception("pipeline %d: closing the source failed", self.pipeline_id)
            self.source = None
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    # ------------------------------------------------------------ the target
    def _load_target(self) -> None:
        """Check the target and (re)build the mapping when its columns changed.

        Raises:
            PipelineFailed: the mapping no longer fits the target.
            PipelineGone: the target is gone.
        """
        assert self.conn is not None
        row = self.conn.execute(catalog.TARGET_QUERY, [self.definition.target]).fetchone()
        if row is None:
            raise PipelineGone(f"the target of pipeline {self.pipeline_id} was dropped")
        if self._target is not None and self._target[2] == row[2] and self.mapper is not None:
            self._target = tuple(row)  # type: ignore[assignment]
            return
        columns = [ColumnInfo.from_row(r) for r in
                   self.conn.execute(COLUMNS_QUERY, {"relid": self.definition.target}).fetchall()]
        try:
            self.mapper = Mapper(self.definition.format, columns, self.options, csv_header=self.options.csv_header)
        except InvalidPipelineOptionError as exc:
            raise PipelineFailed(f"the mapping no longer fits table {row[0]}.{row[1]}: {exc}") from None
        self.decoder = Decoder(self.definition.format, self.mapper, self.options)
        self._target = tuple(row)  # type: ignore[assignment]

    def _copy_statement(self) -> sql.Composed:
        assert self._target is not None and self.mapper is not None
        schema, table, _ = self._target
        fmt = sql.SQL("binary" if self.mapper.binary else "text")
        return sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT {})").format(
            sql.Identifier(schema), sql.Identifier(table),
            sql.SQL(", ").join(sql.Identifier(c.name) for c in self.mapper.columns), fmt)

    # ------------------------------------------------------------ one batch
    def fetch(self, until_caught_up: bool = False) -> Fetch:
        assert self.source is not None
        return self.source.fetch(int(self.options["batch_size"]), float(self.options["max_latency"]), self.stop,
                                 until_caught_up)

    def run_batch(self, until_caught_up: bool = True) -> BatchResult:
        """Fetch one batch and load it (nothing when there is nothing new).

        Raises:
            SourceUnavailable, PipelineGone, PipelineFailed, psycopg.Error.
        """
        fetch = self.fetch(until_caught_up)
        if not (fetch.records or fetch.streams or fetch.forget):
            return BatchResult(caught_up=fetch.caught_up)
        result = self.load(fetch)
        result.caught_up = fetch.caught_up and not result.failed
        return result

    def _commit_positions(self, fetch: Fetch) -> None:
        """Commit stream states alone (new streams, moved ends)."""
        result = self.load(fetch)
        del result

    def load(self, fetch: Fetch) -> BatchResult:
        """Load one fetch in one transaction (see the module docstring).

        Raises:
            PipelineGone: the pipeline or its target was dropped meanwhile.
            PipelineFailed: the mapping no longer fits the target.
            psycopg.Error: the transaction failed (nothing of it is kept).
        """
        assert self.conn is not None and self.source is not None
        conn = self.conn
        self.batches += 1
        batch = self.batches
        started = time.monotonic()
        fault_point("fetched", self.pipeline_id, batch)
        try:
            with conn.transaction():
                self._load_target()
                assert self.decoder is not None
                records = expand_documents(fetch.records, json_loader(self.mapper.exact_numbers))
                rows = self.decoder.rows(records)
                result, included, dead, fail_with = self._write(records, rows)
                fault_point("copied", self.pipeline_id, batch)
                states, payload = self._positions(fetch, records, included)
                letters = [self._dead_letter(records[i], err) for i, err in sorted(dead.items())]
                consumed = sum(r.size for r in records[:included])
                elapsed = time.monotonic() - started
                total = conn.execute(
                    "SELECT orochi.pipeline_commit_batch(%s, %s::jsonb, %s, %s, %s::jsonb, %s::text[], "
                    "make_interval(secs => %s), %s)",
                    [self.pipeline_id, _json_text(payload), result.rows, consumed, _json_text(letters),
                     list(fetch.forget), elapsed, fail_with]).fetchone()[0]
                fault_point("positioned", self.pipeline_id, batch)
        except psycopg.errors.UndefinedObject as exc:
            self.source.rewind()
            if "does not exist" in str(exc) and "pipeline" in str(exc):
                raise PipelineGone(f"pipeline {self.pipeline_id} was dropped") from None
            raise
        except BaseException:
            self.source.rewind()
            raise
        fault_point("committed", self.pipeline_id, batch)
        self.errors_since_start = int(total or 0)
        result.failed = fail_with is not None
        result.bytes = consumed
        result.positions = states
        self.source.committed(states, list(fetch.forget))
        if included < len(records):
            self.source.rewind()
        self.rows_total += result.rows
        self.last_result = result
        if self.on_batch is not None:
            self.on_batch(result, elapsed)
        if fail_with:
            logger.warning("pipeline %d (%s): %s", self.pipeline_id, self.definition.name, fail_with)
        return result

    def _write(self, records: list[Record], rows: list[Any]) -> tuple[BatchResult, int, dict[int, RecordError], str | None]:
        """COPY the good rows (within the max_errors budget).

        Returns:
            (result, number of records consumed, dead letters by record index,
            the reason the pipeline stops itself or None).
        """
        assert self.conn is not None
        dead: dict[int, RecordError] = {i: r for i, r in enumerate(rows) if isinstance(r, RecordError)}
        max_errors = int(self.options["max_errors"])
        budget = None if max_errors < 0 else max(max_errors - self.errors_since_start, 0)
        limit = len(records)
        fail_with = None
        while True:
            if budget is not None:
                bad = sorted(i for i in dead if i < limit)
                if len(bad) > budget:
                    crossing = bad[budget]
                    limit = _message_end(records, crossing)
                    fail_with = (f"stopped after {self.errors_since_start + budget + 1} bad records "
                                 f"(max_errors {max_errors}); the last: {_describe(records[crossing], dead[crossing])}")
            candidates = [i for i in range(limit) if i not in dead]
            try:
                with self.conn.transaction():
                    found = self._copy(rows, candidates) if candidates else {}
                    bad_now = sorted(i for i in set(dead) | set(found) if i < limit)
                    if budget is not None and found and len(bad_now) > budget:
                        dead.update(found)
                        raise _Redo()
            except _Redo:
                continue
            dead.update(found)
            loaded = len(candidates) - len(found)
            kept = {i: e for i, e in dead.items() if i < limit}
            return BatchResult(rows=loaded, errors=len(kept)), limit, kept, fail_with

    def _copy(self, rows: list[Any], indexes: list[int]) -> dict[int, RecordError]:
        """COPY rows[indexes]; record-level failures are isolated by splitting.

        Returns:
            The records PostgreSQL refused, by index.
        """
        assert self.conn is not None and self.mapper is not None
        statement = self._copy_statement()
        binary = self.mapper.binary
        types = self.mapper.copy_types
        refused: dict[int, RecordError] = {}

        def attempt(segment: list[int]) -> None:
            try:
                with self.conn.transaction():
                    with self.conn.cursor() as cur:
                        with cur.copy(statement) as copy:
                            if binary:
                                copy.set_types(types)
                            write = copy.write_row
                            for i in segment:
                                write(rows[i])
            except psycopg.Error as exc:
                state = exc.sqlstate or ""
                if state[:2] not in _RECORD_CLASSES:
                    raise
                context = exc.diag.context or ""
                if len(segment) == 1:
                    column = exc.diag.column_name
                    match = _COPY_COLUMN.search(context)
                    if column is None and match:
                        column = match.group(1).strip()
                    message = exc.diag.message_primary or _first_line(exc)
                    if column and f'"{column}"' not in message:
                        message = f'column "{column}": {message}'
                    refused[segment[0]] = RecordError(message, state, column)
                    return
                match = _COPY_LINE.search(context)
                line = int(match.group(1)) if match else 0
                if 1 <= line <= len(segment):
                    parts = [segment[:line - 1], segment[line - 1:line], segment[line:]]
                else:
                    half = len(segment) // 2
                    parts = [segment[:half], segment[half:]]
                for part in parts:
                    if part:
                        attempt(part)

        attempt(indexes)
        return refused

    def _positions(self, fetch: Fetch, records: list[Record], included: int
                   ) -> tuple[dict[str, StreamState], list[dict[str, Any]]]:
        """The streams' states after the records included, and the commit's payload."""
        assert self.source is not None
        last_end: dict[str, int] = {}
        for record in records[:included]:
            previous = last_end.get(record.stream)
            if previous is None or record.end > previous:
                last_end[record.stream] = record.end
        cut = {r.stream for r in records[included:]}
        committed = self.source.committed_streams
        states: dict[str, StreamState] = {}
        for key, state in fetch.streams.items():
            if key in cut:
                before = committed.get(key)
                position = last_end.get(key, before.position if before else state.position)
                if before is None and key not in last_end:
                    continue  # a new stream none of whose records are in: leave it for the next batch
                state = StreamState(key, position, state.end, False, state.name, state.identity)
            states[key] = state
        payload = []
        for key, state in states.items():
            before = committed.get(key)
            if before is not None and (before.position, before.end, before.done, before.name, before.identity) \
                    == (state.position, state.end, state.done, state.name, state.identity):
                continue
            payload.append({"stream": key, "from": None if before is None else before.position,
                            "to": state.position, "end": state.end, "done": state.done, "name": state.name,
                            "identity": state.identity})
        return states, payload

    def _dead_letter(self, record: Record, error: RecordError) -> dict[str, Any]:
        data = record.data
        if not data and record.doc is not None:
            try:
                data = _json_text(record.doc).encode()
            except Exception:
                data = b""
        return {"stream": record.stream, "name": record.name, "position": record.position,
                "raw": b64(data[:int(self.options["max_record_bytes"])]), "size": record.size or len(data),
                "error": _describe(record, error, with_position=False), "sqlstate": error.sqlstate,
                "column": error.column}

    # ------------------------------------------------------------ the daemon's loop
    def _show_error(self, error: str | None) -> None:
        if error == self.shown_error or self.conn is None:
            return
        try:
            catalog.report_error(self.conn, self.pipeline_id, error)
            self.shown_error = error
        except psycopg.Error:
            pass

    def _fail(self, message: str) -> None:
        logger.error("pipeline %d (%s) failed: %s", self.pipeline_id, self.definition.name, message)
        if self.conn is not None and not self.conn.closed:
            try:
                catalog.mark_failed(self.conn, self.pipeline_id, message)
            except psycopg.Error as exc:
                logger.warning("pipeline %d: could not record its failure: %s", self.pipeline_id,
                               _first_line(exc))
        self.status = "failed"

    def run(self) -> None:
        """Run until stopped, the pipeline is paused-then-stopped, dropped or
        failed, or another worker has it (the daemon's thread body)."""
        delay = self.min_delay
        last_ends = time.monotonic()
        while not self.stop.is_set():
            try:
                if self.conn is None or self.conn.closed or self.source is None:
                    self.status = "starting"
                    self.start()
                    self.shown_error = None
                    self._show_error(None)
                assert self.conn is not None and self.source is not None
                state = catalog.pipeline_state(self.conn, self.pipeline_id)
                if state not in ("running", "paused"):
                    self.status = state or "dropped"
                    return
                if state == "paused":
                    self.status = "paused"
                    self.source.pause()
                    self.stop.wait(0.5)
                    continue
                self.source.resume()
                self.status = "running"
                fetch = self.fetch()
                if fetch.records or fetch.streams or fetch.forget:
                    self.load(fetch)
                elif time.monotonic() - last_ends > 5.0:
                    moved = self.source.refresh_ends()
                    if moved:
                        self.load(Fetch(streams=moved))
                    last_ends = time.monotonic()
                self._show_error(self.source.current_error)
                if self.last_result is not None and self.last_result.failed:
                    self.status = "failed"
                    return
                delay = self.min_delay
            except PipelineBusy:
                self.status = "busy"
                self.close()
                return
            except PipelineGone as exc:
                logger.info("pipeline %d: %s", self.pipeline_id, exc)
                self.status = "gone"
                self.close()
                return
            except PipelineFailed as exc:
                self._fail(str(exc))
                self.close()
                return
            except SourceUnavailable as exc:
                message = str(exc)
                logger.warning("pipeline %d (%s): %s; retrying in %.1fs", self.pipeline_id, self.definition.name,
                               message, delay)
                self.status = "waiting"
                self._show_error(message)
                if self.source is not None:
                    self.source.close()
                    self.source = None
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_delay)
            except psycopg.OperationalError as exc:
                logger.warning("pipeline %d: postgres unreachable as %s: %s; retrying in %.1fs", self.pipeline_id,
                               self.definition.owner, _first_line(exc), delay)
                self.status = f"waiting: cannot connect as {self.definition.owner}: {_first_line(exc)}"
                self.close()
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_delay)
            except psycopg.Error as exc:
                state = exc.sqlstate or ""
                message = _first_line(exc)
                if state[:2] in _FATAL:
                    self._fail(message)
                    self.close()
                    return
                logger.warning("pipeline %d: batch failed (%s): %s; retrying in %.1fs", self.pipeline_id,
                               state, message, delay)
                self.status = "retrying"
                self._show_error(message)
                self.close()  # positions are read again: another worker may have loaded meanwhile
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_delay)
            except Exception as exc:  # a bug: shown, retried, never the daemon's end
                logger.exception("pipeline %d: unexpected error", self.pipeline_id)
                self.status = "retrying"
                self._show_error(f"{type(exc).__name__}: {exc}")
                self.close()
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_delay)
        self.close()


def _message_end(records: list[Record], index: int) -> int:
    """The number of records up to and including ``index`` and every other
    record of the same message (Kafka) or document: a position can only
    move past a whole message."""
    record = records[index]
    end = index + 1
    while end < len(records) and records[end].stream == record.stream and records[end].end == record.end:
        end += 1
    return end


def _describe(record: Record, error: RecordError, with_position: bool = True) -> str:
    text = error.message
    if record.note and record.note != "document":
        text = f"{record.note}: {text}"
    if with_position:
        where = f"{record.name or record.stream} at {record.position}"
        text = f"{text} ({where})"
    return text
