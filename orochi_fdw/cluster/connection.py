"""Connections from a coordinator backend to its workers, and running
commands on several of them at once.

Objects, in the manner of Citus's adaptive executor:

- :class:`Session` is one libpq connection (psycopg's ``pq.PGconn``, driven
  non-blocking) to one worker, as one user, kept for the backend's life and
  reused by later transactions.  A coordinator transaction uses at most one
  session per worker, so that everything it does on a worker is one remote
  transaction (see :mod:`orochi_fdw.cluster.transaction`).
- A *command* is a generator that sends one statement on a session and
  yields what it waits for (:data:`READ` or :data:`WRITE` on the socket)
  until its results are in; :func:`drive` runs the commands of many
  sessions at once with ``select``, so wall time is the slowest worker's,
  not the sum.

Interrupts: while waiting in ``select``, a query cancel or statement_timeout
on the coordinator arrives as ``KeyboardInterrupt`` (the bridge's signal
wrapper).  :func:`drive` then sends a cancel request to every worker with a
command in flight, waits a moment for each to answer, closes those that do
not, and lets the interrupt go on to Postgres, which reports it.

Connection parameters: host and port of the node, the coordinator's
database, the current user, ``application_name=orochi``, and the options of
the current user's user mapping (else PUBLIC's) on server
``orochi_cluster`` (``password``, ``sslmode`` ...); libpq's own files
(``~/.pgpass`` of the server's OS user) apply as usual.  Opening waits at
most ``orochi.node_connect_timeout``.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable

from psycopg import pq

from orochi_fdw.bridge import spi
from orochi_fdw.cluster.errors import NodeConnectionError, RemoteError
from orochi_fdw.cluster.metadata import Node

READ = 1
WRITE = 2

#: the settings every session starts with: text forms that read back
#: exactly, and only pg_catalog on the search path (every name the
#: coordinator sends is schema-qualified)
_SESSION_SETUP = (b"SET search_path = pg_catalog; SET DateStyle = ISO; SET IntervalStyle = postgres;"
                  b" SET extra_float_digits = 3; SET bytea_output = hex")

#: user mapping options passed on to libpq
MAPPING_OPTIONS = ("user", "password", "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl",
                   "sslpassword", "passfile", "channel_binding", "krbsrvname", "gssencmode")

#: seconds to wait for workers to answer a cancel request before closing
_CANCEL_GRACE = 2.0

Command = Generator[int, None, Any]


@dataclass(eq=False)
class Session:
    """One connection to a worker.

    Attributes:
        node: the worker.
        user: the role it is connected as.
        pgconn: the libpq connection.
        in_transaction: a remote transaction (BEGIN) is open on it for the
            current coordinator transaction.
        wrote: that remote transaction modified something.
        begin_level: the coordinator's savepoint depth when it began.
        savepoints: the savepoint levels created on it.
        prepared_gid: the name it was prepared under (two-phase commit).
        busy: a command is in flight.
    """

    node: Node
    user: str
    pgconn: Any
    in_transaction: bool = False
    wrote: bool = False
    begin_level: int = 0
    savepoints: list[int] = field(default_factory=list)
    prepared_gid: str | None = None
    busy: bool = False
    closed: bool = False
    #: statements to send before the next command, in the same round trip
    #: (the BEGIN of a remote transaction, pipelined with its first command)
    prelude: list = field(default_factory=list)
    #: results of a statement sent without waiting (a read-only COMMIT) to
    #: read before the next command
    unread: bool = False

    @property
    def fileno(self) -> int:
        return self.pgconn.socket

    def reset_transaction(self) -> None:
        self.prelude = []
        self.in_transaction = False
        self.wrote = False
        self.begin_level = 0
        self.savepoints = []
        self.prepared_gid = None

    def close(self) -> None:
        """Close the connection (a remote transaction still open on it rolls
        back); the session leaves the cache."""
        if not self.closed:
            self.closed = True
            try:
                self.pgconn.finish()
            except Exception:  # noqa: BLE001 - closing what may be broken already
                pass
        key = (self.node.node_id, self.user)
        if _cache.get(key) is self:
            del _cache[key]

    def healthy(self) -> bool:
        """Open, and not closed by the worker meanwhile: an idle connection
        with something to read has seen its server go (a restart), or a
        notice, which is read here."""
        if self.closed or self.pgconn.status != pq.ConnStatus.OK:
            return False
        try:
            # A worker that ends the connection sends its FATAL message (which
            # libpq takes as a notice on an idle connection) and closes it: the
            # end of the stream shows at a further read.
            for _ in range(8):
                readable, _, _ = select.select([self.pgconn.socket], [], [], 0)
                if not readable:
                    break
                self.pgconn.consume_input()
                while not self.pgconn.is_busy():
                    if self.pgconn.get_result() is None:
                        self.unread = False  # a COMMIT sent without waiting has answered
                        break
                if self.pgconn.status != pq.ConnStatus.OK:
                    return False
        except Exception:  # noqa: BLE001 - a broken connection
            return False
        return self.pgconn.status == pq.ConnStatus.OK


# ------------------------------------------------------------------ opening

_cache: dict[tuple[int, str], Session] = {}


def connect_timeout_ms() -> int:
    return int(spi.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'orochi.node_connect_timeout'"
                           ).scalar() or 5000)


def _conninfo(node: Node, user: str, database: str, mapping: dict[str, str]) -> bytes:
    params = {"host": node.host, "port": str(node.port), "dbname": database, "user": user,
              "application_name": "orochi", "client_encoding": "UTF8"}
    for key in MAPPING_OPTIONS:
        if key in mapping:
            params[key] = mapping[key]
    parts = []
    for key, value in params.items():
        parts.append(f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'")
    return " ".join(parts).encode("utf-8")


def user_mapping() -> dict[str, str]:
    """Options of the current user's user mapping on server orochi_cluster
    (PUBLIC's when the user has none)."""
    rows = spi.execute(
        "SELECT m.umoptions FROM pg_catalog.pg_user_mappings m"
        " WHERE m.srvname = 'orochi_cluster' AND (m.umuser = (SELECT oid FROM pg_catalog.pg_roles"
        "       WHERE rolname = current_user) OR m.umuser = 0)"
        " ORDER BY m.umuser = 0 LIMIT 1").rows
    out: dict[str, str] = {}
    if rows and rows[0][0]:
        for item in rows[0][0]:
            key, _, value = str(item).partition("=")
            out[key] = value
    return out


def open_sessions(nodes: Iterable[Node], user: str, database: str) -> dict[int, Session]:
    """A healthy session to each node, from the cache or opened now (all at
    once, each within orochi.node_connect_timeout).

    Raises:
        NodeConnectionError: a node could not be reached (08001), naming it.
    """
    out: dict[int, Session] = {}
    missing: list[Node] = []
    for node in nodes:
        session = _cache.get((node.node_id, user))
        if session is not None and not session.busy and session.healthy():
            out[node.node_id] = session
        else:
            if session is not None:
                session.close()
            missing.append(node)
    if missing:
        timeout = connect_timeout_ms() / 1000.0
        mapping = user_mapping()
        for session in _connect_all(missing, user, database, mapping, timeout):
            _cache[(session.node.node_id, user)] = session
            out[session.node.node_id] = session
    return out


def _connect_all(nodes: list[Node], user: str, database: str, mapping: dict[str, str],
                 timeout: float) -> list[Session]:
    deadline = time.monotonic() + timeout
    pending: dict[int, tuple[Node, Any, int]] = {}
    done: list[Session] = []
    failed: list[tuple[Node, str]] = []
    try:
        for node in nodes:
            pgconn = pq.PGconn.connect_start(_conninfo(node, user, database, mapping))
            if pgconn.status == pq.ConnStatus.BAD:
                failed.append((node, _conn_error(pgconn)))
                pgconn.finish()
                continue
            pending[node.node_id] = (node, pgconn, WRITE)
        while pending:
            # libpq wants the socket watched for what connect_poll last asked
            for node_id, (node, pgconn, want) in list(pending.items()):
                if want == 0:
                    status = pgconn.connect_poll()
                    if status == pq.PollingStatus.OK:
                        pgconn.nonblocking = 1
                        done.append(Session(node, user, pgconn))
                        del pending[node_id]
                    elif status == pq.PollingStatus.FAILED:
                        failed.append((node, _conn_error(pgconn)))
                        pgconn.finish()
                        del pending[node_id]
                    else:
                        pending[node_id] = (node, pgconn, READ if status == pq.PollingStatus.READING else WRITE)
            if not pending:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                for node, pgconn, _ in pending.values():
                    failed.append((node, f"timeout expired after {int(timeout * 1000)} ms"))
                    pgconn.finish()
                pending.clear()
                break
            rl = [p[1].socket for p in pending.values() if p[2] == READ]
            wl = [p[1].socket for p in pending.values() if p[2] == WRITE]
            r, w, _ = select.select(rl, wl, [], min(left, 1.0))
            ready = set(r) | set(w)
            for node_id, (node, pgconn, want) in list(pending.items()):
                if pgconn.socket in ready:
                    pending[node_id] = (node, pgconn, 0)
    except BaseException:
        for _, pgconn, _ in pending.values():
            pgconn.finish()
        for session in done:
            session.pgconn.finish()
        raise
    if failed:
        for session in done:
            session.pgconn.finish()
        node, message = failed[0]
        raise NodeConnectionError(
            f'could not connect to node {node.name}: {message}', "08001",
            hint="Check that the node is running and accepts connections, and orochi.node_connect_timeout.")
    # every new session gets the same settings
    drive([(s, command(s, _SESSION_SETUP)) for s in done])
    return done


def _conn_error(pgconn) -> str:
    try:
        msg = pgconn.get_error_message() if hasattr(pgconn, "get_error_message") else pgconn.error_message
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        return " ".join(str(msg).split()) or "connection failed"
    except Exception:  # noqa: BLE001
        return "connection failed"


def cached_sessions() -> list[Session]:
    return list(_cache.values())


def close_all() -> None:
    for session in list(_cache.values()):
        session.close()


# ------------------------------------------------------------------ commands


def _result_error(session: Session, res, command: bytes | str | None = None) -> RemoteError:
    def field(f):
        v = res.error_field(f)
        return v.decode("utf-8", "replace") if v is not None else None

    message = field(pq.DiagnosticField.MESSAGE_PRIMARY) or _conn_error(session.pgconn)
    return RemoteError(session.node.name, message, field(pq.DiagnosticField.SQLSTATE),
                       detail=field(pq.DiagnosticField.MESSAGE_DETAIL),
                       hint=field(pq.DiagnosticField.MESSAGE_HINT),
                       command=command.decode("utf-8", "replace") if isinstance(command, bytes) else command)


def _lost(session: Session, what: str) -> NodeConnectionError:
    message = _conn_error(session.pgconn)
    session.close()
    return NodeConnectionError(f"connection to node {session.node.name} was lost while {what}: {message}",
                               "08006")


def _flush(session: Session) -> Command:
    pgconn = session.pgconn
    while True:
        rc = pgconn.flush()
        if rc == 0:
            return
        if rc < 0:
            raise _lost(session, "sending a command")
        yield WRITE | READ
        pgconn.consume_input()


def _results(session: Session, sql: bytes) -> Command:
    """Collect a command's results; raise the first error after all are in."""
    pgconn = session.pgconn
    results = []
    error = None
    while True:
        while pgconn.is_busy():
            yield READ
            try:
                pgconn.consume_input()
            except Exception:  # noqa: BLE001 - a broken connection
                raise _lost(session, "waiting for a result") from None
        res = pgconn.get_result()
        if res is None:
            break
        status = res.status
        if status == pq.ExecStatus.FATAL_ERROR:
            if error is None:
                error = _result_error(session, res, sql)
        elif status in (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH):
            results.append(res)
            return results  # the caller goes on with the COPY
        else:
            results.append(res)
    if pgconn.status != pq.ConnStatus.OK:
        raise _lost(session, "running a command")
    if error is not None:
        raise error
    return results


def _read_unread(session: Session) -> Command:
    """Read the results of a statement sent without waiting (they do not
    matter: a read-only transaction's COMMIT)."""
    if not session.unread:
        return
    session.unread = False
    try:
        yield from _results(session, b"COMMIT")
    except RemoteError:
        pass


def command(session: Session, sql: bytes, params: list[bytes | None] | None = None) -> Command:
    """Send one statement (text parameters ``$1``...; several statements
    separated by ``;`` when there are none) and return its results.  The
    session's prelude (a BEGIN) goes first: in one round trip with the
    statement (libpq's pipeline mode) when it is a single statement."""
    pgconn = session.pgconn
    session.busy = True
    yield from _read_unread(session)
    prelude, session.prelude = session.prelude, []
    if prelude and params is None:
        # several statements (simple protocol): cannot share a pipeline
        for text, values in prelude:
            yield from command(session, text, values)
        session.busy = True
        prelude = []
    try:
        if prelude:
            pgconn.enter_pipeline_mode()
            for text, values in prelude:
                pgconn.send_query_params(text, values or [])
            pgconn.send_query_params(sql, params or [])
            pgconn.pipeline_sync()
        elif not params:
            pgconn.send_query(sql)
        else:
            pgconn.send_query_params(sql, params)
    except Exception:  # noqa: BLE001 - psycopg raises OperationalError when the connection is gone
        session.busy = False
        raise _lost(session, "sending a command") from None
    yield from _flush(session)
    if prelude:
        results = yield from _pipeline_results(session, sql, len(prelude) + 1)
    else:
        results = yield from _results(session, sql)
    session.busy = False
    return results


def _pipeline_results(session: Session, sql: bytes, statements: int) -> Command:
    """The results of a pipeline of ``statements`` statements and a sync:
    the last statement's; the first error of any."""
    pgconn = session.pgconn
    error = None
    last: list = []
    done = 0
    try:
        while True:
            while pgconn.is_busy():
                yield READ
                try:
                    pgconn.consume_input()
                except Exception:  # noqa: BLE001
                    raise _lost(session, "waiting for a result") from None
            res = pgconn.get_result()
            if res is None:
                done += 1  # the end of one statement's results
                continue
            status = res.status
            if status == pq.ExecStatus.PIPELINE_SYNC:
                break
            if status == pq.ExecStatus.FATAL_ERROR and error is None:
                error = _result_error(session, res, sql)
            elif status not in (pq.ExecStatus.PIPELINE_ABORTED, pq.ExecStatus.FATAL_ERROR) and done == statements - 1:
                last.append(res)
    finally:
        if pgconn.status == pq.ConnStatus.OK:
            try:
                pgconn.exit_pipeline_mode()
            except Exception:  # noqa: BLE001 - left in a state the next use finds out
                pass
    if pgconn.status != pq.ConnStatus.OK:
        raise _lost(session, "running a command")
    if error is not None:
        raise error
    return last


def send_without_waiting(session: Session, sql: bytes) -> None:
    """Send a statement whose result does not matter now (it is read before
    the session's next command)."""
    try:
        session.pgconn.send_query(sql)
        while session.pgconn.flush() > 0:
            select.select([], [session.pgconn.socket], [], 1.0)
        session.unread = True
    except Exception:  # noqa: BLE001 - a broken connection is found at its next use
        session.close()


def copy_in(session: Session, sql: bytes, data: Iterable[bytes]) -> Command:
    """``COPY ... FROM STDIN`` with the given chunks of COPY text."""
    pgconn = session.pgconn
    session.busy = True
    yield from _read_unread(session)
    prelude, session.prelude = session.prelude, []
    for text, values in prelude:
        yield from command(session, text, values)
    session.busy = True
    try:
        pgconn.send_query(sql)
    except Exception:  # noqa: BLE001
        session.busy = False
        raise _lost(session, "sending a COPY") from None
    yield from _flush(session)
    results = yield from _results(session, sql)
    if not results or results[-1].status != pq.ExecStatus.COPY_IN:
        session.busy = False
        return results
    for chunk in data:
        view = memoryview(chunk)
        step = 1 << 20
        for start in range(0, len(view), step):
            piece = view[start:start + step]
            while True:
                rc = pgconn.put_copy_data(piece)
                if rc == 1:
                    break
                if rc < 0:
                    raise _lost(session, "sending COPY data")
                yield WRITE | READ
                pgconn.consume_input()
            yield from _flush(session)
    while True:
        rc = pgconn.put_copy_end()
        if rc == 1:
            break
        if rc < 0:
            raise _lost(session, "ending a COPY")
        yield WRITE
    yield from _flush(session)
    results = yield from _results(session, sql)
    session.busy = False
    return results


def copy_out(session: Session, sql: bytes) -> Command:
    """``COPY ... TO STDOUT``: the COPY text it sends, as one bytes."""
    pgconn = session.pgconn
    session.busy = True
    yield from _read_unread(session)
    prelude, session.prelude = session.prelude, []
    for text, values in prelude:
        yield from command(session, text, values)
    session.busy = True
    try:
        pgconn.send_query(sql)
    except Exception:  # noqa: BLE001
        session.busy = False
        raise _lost(session, "sending a COPY") from None
    yield from _flush(session)
    results = yield from _results(session, sql)
    if not results or results[-1].status != pq.ExecStatus.COPY_OUT:
        session.busy = False
        return b""
    chunks = []
    while True:
        nbytes, data = pgconn.get_copy_data(1)
        if nbytes == 0:
            yield READ
            pgconn.consume_input()
            continue
        if nbytes < 0:
            break
        chunks.append(bytes(data))
    yield from _results(session, sql)
    session.busy = False
    return b"".join(chunks)


# ------------------------------------------------------------------ driving


@dataclass
class Job:
    """A command running on a session, with its timing (for EXPLAIN
    ANALYZE)."""

    session: Session
    gen: Command
    want: int = 0
    result: Any = None
    error: BaseException | None = None
    started: float = 0.0
    finished: float = 0.0
    done: bool = False
    on_done: Callable[["Job"], None] | None = None


def drive(pairs: list[tuple[Session, Command]], *, cancel_on_error: bool = True) -> list[Any]:
    """Run commands (at most one per session at a time; several commands of
    one session run one after the other, in order) and return their results
    in order.  The first error is raised once every command has finished or
    was cancelled; an interrupt cancels the commands in flight."""
    jobs = [Job(s, g) for s, g in pairs]
    error = run_jobs(jobs, cancel_on_error=cancel_on_error)
    if error is not None:
        raise error
    return [job.result for job in jobs]


def run_jobs(jobs: list[Job], *, cancel_on_error: bool = True) -> BaseException | None:
    """Run jobs; errors stay in each job's ``error``, and the first one to
    happen is returned.  With
    ``cancel_on_error``, the first error cancels the commands in flight and
    the queued ones do not run (they get the same error)."""
    queues: dict[int, list[Job]] = {}
    for job in jobs:
        queues.setdefault(id(job.session), []).append(job)
    running: dict[int, Job] = {}
    failed: list[BaseException] = []

    def advance(job: Job, first: bool) -> None:
        try:
            job.want = next(job.gen) if first else job.gen.send(None)
            return
        except StopIteration as stop:
            finish(job, stop.value, None)
        except (RemoteError, NodeConnectionError) as exc:
            finish(job, None, exc)

    def finish(job: Job, result: Any, error: BaseException | None) -> None:
        job.done = True
        job.finished = time.perf_counter()
        job.result = result
        job.error = error
        job.session.busy = False
        running.pop(id(job.session), None)
        if error is not None:
            failed.append(error)
        elif job.on_done is not None:
            job.on_done(job)
        queue = queues.get(id(job.session))
        if not queue:
            return
        if error is not None and (cancel_on_error or not isinstance(error, RemoteError)):
            for j in queue:
                j.done, j.error = True, error
            queue.clear()
            return
        launch(queue.pop(0))

    def launch(job: Job) -> None:
        running[id(job.session)] = job
        job.started = time.perf_counter()
        advance(job, True)

    try:
        for queue in list(queues.values()):
            launch(queue.pop(0))
        cancelled = False
        while running:
            if cancel_on_error and failed and not cancelled:
                cancelled = True
                for queue in queues.values():
                    for j in queue:
                        j.done, j.error = True, failed[0]
                    queue.clear()
                _cancel(list(running.values()))
            rl = [j.session.fileno for j in running.values() if j.want & READ]
            wl = [j.session.fileno for j in running.values() if j.want & WRITE]
            r, w, _ = select.select(rl, wl, [], 1.0)
            ready = set(r) | set(w)
            for job in list(running.values()):
                if job.session.fileno in ready:
                    advance(job, False)
    except BaseException:
        _abandon(list(running.values()))
        raise
    return failed[0] if failed else None


def _cancel(jobs: list[Job]) -> None:
    for job in jobs:
        try:
            job.session.pgconn.get_cancel().cancel()
        except Exception:  # noqa: BLE001 - the drain below finds out
            pass


def _abandon(jobs: list[Job]) -> None:
    """After an interrupt: cancel the commands in flight, give the workers a
    moment to answer, and close the sessions that did not (their remote
    transactions then roll back)."""
    _cancel(jobs)
    deadline = time.monotonic() + _CANCEL_GRACE
    for job in jobs:
        if not job.done and job.session.pgconn.pipeline_status != pq.PipelineStatus.OFF:
            job.session.close()  # a pipeline cut short: simpler to reconnect than to resync
            job.done = True
    pending = [j for j in jobs if not j.done]
    while pending and time.monotonic() < deadline:
        try:
            r, _, _ = select.select([j.session.fileno for j in pending], [], [],
                                    max(0.0, deadline - time.monotonic()))
        except BaseException:  # noqa: BLE001 - a second interrupt: stop waiting
            break
        for job in list(pending):
            if job.session.fileno not in r:
                continue
            pgconn = job.session.pgconn
            try:
                pgconn.consume_input()
                while not pgconn.is_busy():
                    res = pgconn.get_result()
                    if res is None:
                        job.done = True
                        job.session.busy = False
                        pending.remove(job)
                        break
                    if res.status in (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT):
                        raise RuntimeError("in COPY")
            except Exception:  # noqa: BLE001
                job.session.close()
                job.done = True
                pending.remove(job)
    for job in pending:
        job.session.close()
        job.done = True
    for job in jobs:
        job.session.busy = False
