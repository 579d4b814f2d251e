"""Distributed transactions: one remote transaction per worker, committed
with the coordinator's.

The coordinator transaction's :class:`DistributedTransaction` (a
participant of the bridge's transaction hooks, docs/ARCHITECTURE.md
"Transactions") opens at most one session per worker, and a remote
transaction (``BEGIN``, with REPEATABLE READ when the coordinator's is
REPEATABLE READ or SERIALIZABLE) on it at first use.  At the end:

- no worker wrote: each remote transaction is committed after the local one;
- one worker wrote and the coordinator itself wrote nothing: that worker
  commits in one phase before the local commit (its failure aborts the
  local transaction);
- otherwise, two-phase commit, Citus's protocol: for each writer a row
  (node, gid) goes into ``orochi.dist_transaction`` in the local
  transaction, then every writer runs ``PREPARE TRANSACTION gid``; the
  local commit makes the rows, which are the decision, durable; then
  ``COMMIT PREPARED gid`` on each.  A failure before the local commit rolls
  every prepared transaction back; one after it leaves a prepared
  transaction that :func:`orochi_fdw.cluster.recovery.recover` commits
  later.  Gids are ``orochi_<coordinator id>_<local xid>_<node id>``.

Savepoints are carried to the remote transactions open when they are made;
``ROLLBACK TO`` rolls each back to the same point (a remote transaction
begun inside the savepoint rolls back entirely).  A session lost in the
middle of a transaction makes its commit fail.

Fault points (tests only): ``orochi.fault_points = 'step=file,...'`` makes
the backend log ``orochi fault point <step> reached`` at that step and wait
until the file exists.  Steps: ``after_prepare`` (every writer prepared,
before the local commit), ``before_commit_prepared`` (after the local
commit, before any COMMIT PREPARED).
"""

from __future__ import annotations

import os
import time
from typing import Iterable

from psycopg import sql

from orochi_fdw.bridge import runtime, spi
from orochi_fdw.cluster import connection as C
from orochi_fdw.cluster import metadata
from orochi_fdw.cluster.errors import NodeConnectionError
from orochi_fdw.cluster.metadata import Node


def gid_for(coordinator_id: int, xid: int, node_id: int) -> str:
    return f"orochi_{coordinator_id}_{xid}_{node_id}"


def parse_gid(gid: str) -> tuple[int, int, int] | None:
    """(coordinator id, xid, node id) of a gid this layer made, else None."""
    parts = gid.split("_")
    if len(parts) != 4 or parts[0] != "orochi":
        return None
    try:
        return int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        return None


def _literal(text: str) -> bytes:
    return sql.Literal(text).as_bytes(None)


class DistributedTransaction:
    """The remote side of the current coordinator transaction."""

    def __init__(self) -> None:
        self.sessions: dict[int, C.Session] = {}
        self.joined = False
        self.serializable = False
        self.depth = 0
        self.broken: str | None = None
        self.user = ""
        self.database = ""
        self.timezone = ""
        self.faults: dict[str, str] = {}
        self.two_phase = False

    # -------------------------------------------------------------- use

    def _join(self) -> None:
        if self.joined:
            return
        runtime.join_transaction(self)  # calls begin(), and sub_begin per open savepoint
        self.joined = True
        user, database, tz = spi.execute(
            "SELECT current_user::text, current_database()::text, current_setting('TimeZone')").rows[0]
        self.user, self.database, self.timezone = str(user), str(database), str(tz)
        global _startup_checked
        if not _startup_checked:
            _startup_checked = True
            from orochi_fdw.cluster import recovery

            recovery.recover_at_start()

    def sessions_for(self, nodes: Iterable[Node]) -> dict[int, C.Session]:
        """A session in a remote transaction on each node (opened and begun
        as needed, all at once).

        Raises:
            NodeConnectionError: a node could not be reached, or a session of
                this transaction was lost before.
        """
        self._join()
        if self.broken:
            raise NodeConnectionError(self.broken, "08006",
                                      hint="The transaction must be rolled back.")
        nodes = list(nodes)
        wanted = [n for n in nodes if n.node_id not in self.sessions]
        if wanted:
            opened = C.open_sessions(wanted, self.user, self.database)
            self.sessions.update(opened)
        out = {n.node_id: self.sessions[n.node_id] for n in nodes}
        for session in out.values():
            if not session.in_transaction:
                self._begin(session)
        return out

    def _begin(self, session: C.Session) -> None:
        """Open a remote transaction on a session: its BEGIN and the
        coordinator's TimeZone, local to the remote transaction, go with its
        first command, in the same round trip.  The BEGIN comes first: a
        statement before it in the pipeline would open an implicit
        transaction whose snapshot forbids BEGIN's isolation level."""
        begin = (b"BEGIN ISOLATION LEVEL REPEATABLE READ" if self.serializable
                 else b"BEGIN ISOLATION LEVEL READ COMMITTED")
        session.prelude = [(begin, []),
                           (b"SELECT pg_catalog.set_config('TimeZone', $1, true)", [self.timezone.encode()])]
        session.in_transaction = True
        session.begin_level = self.depth
        session.savepoints = []

    def _drive(self, pairs, **kw):
        try:
            return C.drive(pairs, **kw)
        except NodeConnectionError as exc:
            self._lost(str(exc))
            raise
        except BaseException:
            for s, _ in pairs:
                if s.closed and s.in_transaction:
                    self._lost(f"connection to node {s.node.name} was closed by an interrupt")
            raise

    def _lost(self, message: str) -> None:
        if any(s.in_transaction and s.closed for s in self.sessions.values()):
            self.broken = message

    def mark_written(self, sessions: Iterable[C.Session]) -> None:
        for s in sessions:
            s.wrote = True

    # -------------------------------------------------------------- hooks

    def begin(self, serializable: bool) -> None:
        self.sessions = {}
        self.serializable = bool(serializable)
        self.depth = 0
        self.broken = None
        self.two_phase = False
        metadata.invalidate()

    def sub_begin(self, level: int) -> None:
        self.depth = level
        for s in self.sessions.values():
            if s.prelude:
                s.begin_level = level  # nothing sent yet: it begins inside the savepoint
        open_ = [s for s in self.sessions.values() if s.in_transaction and not s.closed and not s.prelude]
        if open_:
            self._drive([(s, C.command(s, b"SAVEPOINT " + self._savepoint(level))) for s in open_])
            for s in open_:
                s.savepoints.append(level)

    def sub_commit(self, level: int) -> None:
        self.depth = level - 1
        for s in self.sessions.values():
            s.savepoints = [lv for lv in s.savepoints if lv < level]
            # a remote transaction begun inside the released savepoint now
            # belongs to the enclosing level: a later ROLLBACK TO a savepoint
            # at this level must not roll it back whole
            s.begin_level = min(s.begin_level, level - 1)

    def sub_rollback(self, level: int) -> None:
        self.depth = level - 1
        pairs = []
        for s in list(self.sessions.values()):
            if not s.in_transaction:
                continue
            if s.closed:
                if s.begin_level >= level:
                    # begun inside the savepoint: losing it lost nothing kept
                    s.reset_transaction()
                    del self.sessions[s.node.node_id]
                continue
            if s.prelude:
                s.reset_transaction()  # its BEGIN was never sent
                continue
            if s.begin_level >= level or level not in s.savepoints:
                pairs.append((s, C.command(s, b"ROLLBACK")))
            else:
                pairs.append((s, C.command(s, b"ROLLBACK TO SAVEPOINT " + self._savepoint(level))))
        if pairs:
            error = C.run_jobs([C.Job(s, g) for s, g in pairs], cancel_on_error=False)
            for s, _ in pairs:
                if s.begin_level >= level or level not in s.savepoints:
                    s.reset_transaction()
                else:
                    s.savepoints = [lv for lv in s.savepoints if lv < level]
            if error is not None:
                self.broken = f"rolling back to a savepoint failed on a worker: {error}"
        if self.broken and not any(s.in_transaction and s.closed for s in self.sessions.values()):
            if "savepoint failed" not in self.broken:
                self.broken = None

    @staticmethod
    def _savepoint(level: int) -> bytes:
        return f"orochi_savepoint_{int(level)}".encode()

    def pre_commit(self) -> None:
        if self.broken:
            raise NodeConnectionError(f"cannot commit: {self.broken}", "08006",
                                      hint="The transaction was rolled back.")
        writers = [s for s in self.sessions.values() if s.in_transaction and s.wrote]
        if not writers:
            return
        local = spi.execute("SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL").scalar()
        if len(writers) == 1 and not local:
            s = writers[0]
            self._drive([(s, C.command(s, b"COMMIT"))])
            s.reset_transaction()
            return
        # two-phase commit
        self.faults = _fault_points()
        xid = int(spi.execute("SELECT pg_catalog.pg_current_xact_id()::text::bigint").scalar())
        coord = metadata.coordinator_id()
        # the commit decision: the caller's own transaction's records, written
        # as the extension owner (the catalog is granted to no one)
        insert = spi.prepared("INSERT INTO orochi.dist_transaction (node_id, gid) VALUES ($1, $2)",
                              ["integer", "text"], internal=True)
        for s in writers:
            s.prepared_gid = gid_for(coord, xid, s.node.node_id)
            insert.execute([s.node.node_id, s.prepared_gid])
        self.two_phase = True
        jobs = [C.Job(s, C.command(s, b"PREPARE TRANSACTION " + _literal(s.prepared_gid))) for s in writers]
        error = C.run_jobs(jobs, cancel_on_error=False)
        for job in jobs:
            if job.error is None:
                job.session.in_transaction = False  # prepared: no longer open on the session
            else:
                # a failed PREPARE rolls the remote transaction back
                job.session.prepared_gid = None
                job.session.in_transaction = False
        if error is not None:
            raise error
        self._fault("after_prepare")

    def commit(self) -> None:
        try:
            prepared = [s for s in self.sessions.values() if s.prepared_gid]
            if prepared:
                self._fault("before_commit_prepared")
                self._finish(prepared, "COMMIT PREPARED")
            for s in self.sessions.values():
                if s.in_transaction and not s.closed:
                    if s.prelude:
                        s.reset_transaction()  # never begun
                    elif not s.wrote:
                        # a read-only remote transaction: its COMMIT's result is
                        # read at the session's next use, not waited for now
                        C.send_without_waiting(s, b"COMMIT")
                        s.reset_transaction()
            self._finish([s for s in self.sessions.values() if s.in_transaction], "COMMIT")
        finally:
            self._end()

    def rollback(self) -> None:
        for s in self.sessions.values():
            if s.prelude:
                s.reset_transaction()  # never begun
        try:
            self._finish([s for s in self.sessions.values() if s.prepared_gid], "ROLLBACK PREPARED")
            self._finish([s for s in self.sessions.values() if s.in_transaction], "ROLLBACK")
        finally:
            self._end()

    def _finish(self, sessions: list[C.Session], verb: str) -> None:
        pairs = []
        for s in sessions:
            if s.closed:
                if s.prepared_gid:
                    spi.log("warning", f"orochi: could not {verb} transaction {s.prepared_gid} on node "
                                       f"{s.node.name}: the connection was lost; "
                                       "orochi.recover_prepared_transactions() will resolve it")
                continue
            if verb.endswith("PREPARED"):
                text = verb.encode() + b" " + _literal(s.prepared_gid)
            else:
                text = verb.encode()
            pairs.append((s, C.command(s, text)))
        if not pairs:
            return
        jobs = [C.Job(s, g) for s, g in pairs]
        C.run_jobs(jobs, cancel_on_error=False)
        for job in jobs:
            s = job.session
            if job.error is not None:
                what = f"transaction {s.prepared_gid}" if s.prepared_gid else "its transaction"
                spi.log("warning", f"orochi: {verb} of {what} failed on node {s.node.name}: {job.error}"
                        + ("; orochi.recover_prepared_transactions() will resolve it" if s.prepared_gid else ""))
                if not verb.endswith("PREPARED"):
                    s.close()
            s.reset_transaction()

    def _end(self) -> None:
        for s in self.sessions.values():
            s.reset_transaction()
        self.sessions = {}
        self.joined = False
        self.depth = 0
        self.broken = None
        self.two_phase = False

    # -------------------------------------------------------------- faults

    def _fault(self, step: str) -> None:
        path = self.faults.get(step)
        if not path:
            return
        spi.log("log", f"orochi fault point {step} reached")
        parent = os.getppid()
        # the test's signal, not a deadline; a postmaster killed meanwhile
        # takes this backend with it, as a crash of the machine would
        while not os.path.exists(path):
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.01)


def _fault_points() -> dict[str, str]:
    raw = spi.execute("SELECT current_setting('orochi.fault_points')").scalar() or ""
    out = {}
    for item in str(raw).split(","):
        step, _, path = item.strip().partition("=")
        if step and path:
            out[step] = path
    return out


#: whether this backend checked for a start-up recovery
_startup_checked = False

#: the current coordinator transaction's remote side (one per backend)
current = DistributedTransaction()
