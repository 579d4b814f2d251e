"""Shard moves: run the moves the rebalancer's SQL functions queued
(orochi.dist_move), and finish or roll back the moves whose runner died.

This runs outside PostgreSQL, over libpq (psycopg), as a superuser: in
orochi-sidecar's ``rebalance`` duty, or synchronously with::

    python -m orochi_fdw.cluster.mover --dsn 'dbname=app host=...' [--job N]

A move of a shard group (the shards of one index in a co-location group)
from its source node to a target node goes through these phases
(docs/rebalancer.md):

1. **setup** — the shards are created, empty, on the target (the source's
   definition, owner and privileges); on the source a row trigger
   ``orochi_move_capture`` starts logging every row written to them into
   ``orochi.dist_move_log`` (in the writer's transaction).
2. **copy** — in one REPEATABLE READ transaction on the source, the log rows
   that snapshot sees are deleted (they are in the copy) and each shard is
   streamed to the target with ``COPY ... (FORMAT binary)``.  Writes go on.
3. **catchup** — the logged changes are applied to the target in rounds
   (an insert inserts the row; a delete deletes one row equal to the old
   one — rows without a key form a multiset, and any equal row will do; an
   update is both), until few are left.
4. **switch** — the only moment writes wait.  On the coordinator the
   group's advisory lock (every transaction that reads the group's
   placements holds it shared) is taken exclusively, with a lock timeout
   (a failed attempt catches up again and retries).  On the source, a
   ``orochi_move_fence`` trigger is created on each shard, which waits for
   the writers still committing there (two-phase commits between PREPARE
   and COMMIT PREPARED included); the last changes are applied to the
   target and committed; the source's transaction is PREPAREd; the
   coordinator points the placements at the target and marks the move
   ``switched`` in one transaction (the decision); then COMMIT PREPARED on
   the source.  A writer whose snapshot predates the switch and still
   reaches the source meets the fence (40001, retry).
5. **cleanup** — once every coordinator transaction that began before the
   switch has ended (none of them can read the source any more), the
   source shards are dropped.

Recovery (each cycle, for moves no runner holds): a move marked
``switched`` is finished (the source's prepared transaction committed,
the source dropped); any other is rolled back (the prepared transaction
rolled back, the triggers and log rows removed, the target's tables
dropped).  The placement rows change only in the switch's transaction, so
a shard has one placement at every moment.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orochi_fdw.cluster.rebalance import GROUP_LOCK, MOVE_LOCK
from orochi_fdw.sidecar.faults import WorkerFaults

logger = logging.getLogger("orochi.rebalance")

#: fault points, in the order of a move (crash tests; see orochi_fdw/sidecar/faults.py):
#: ``OROCHI_REBALANCE_FAULT=phase[:n]`` and ``OROCHI_REBALANCE_FAULT_RELEASE=path``
PHASES = ("setup", "copying", "copied", "caught_up", "switch_locked", "prepared", "switched", "cleanup")
_FAULTS = WorkerFaults("OROCHI_REBALANCE_FAULT", PHASES, "orochi-rebalance", "move")
FAULT_ENV = _FAULTS.env
RELEASE_ENV = _FAULTS.release_env

CAPTURE_TRIGGER = "orochi_move_capture"
FENCE_TRIGGER = "orochi_move_fence"

#: sessions on the workers read and write rows' text forms as the capture
#: trigger (orochi.dist_move_capture) writes them
ROW_TEXT_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3"
                    " -c bytea_output=hex")

OPEN_PHASES = ("setup", "copy", "catchup", "switch", "cleanup")


class MoveError(Exception):
    """A move cannot go on (it is rolled back)."""


class MoveStopped(MoveError):
    """orochi.rebalance_stop() asked for it."""


@dataclass
class Settings:
    """How a runner moves."""

    copy_chunk_progress: int = 8 << 20      # bytes between two progress updates
    catchup_batch: int = 5000               # log rows applied per target transaction
    catchup_rounds: int = 50                # most rounds before the switch is tried anyway
    switch_when_below: int = 2000           # log rows left that the switch may apply
    switch_lock_timeout_ms: int = 1000      # a switch attempt waits this long for the lock
    switch_attempts: int = 20
    lock_timeout_ms: int = 30000            # setup and cleanup: DDL on the shards
    connect_timeout: int = 10


@dataclass
class ShardInfo:
    shard_id: int
    schema: str
    name: str
    storage: str
    dist_column: str
    table: str

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass
class Move:
    move_id: int
    job_id: int
    colocation_id: int
    shard_ids: list[int]
    source: int
    target: int
    phase: str
    switched: bool
    shards: list[ShardInfo] = field(default_factory=list)


def fault_point(phase: str, move_id: int, batch: int = 0) -> None:
    _FAULTS.point(phase, move_id, batch)


# ------------------------------------------------------------ connections


class Runner:
    """Runs and recovers moves for one coordinator database."""

    def __init__(self, dsn: str, settings: Settings | None = None, *,
                 stopping: threading.Event | None = None, application_name: str = "orochi-rebalance",
                 on_phase: Callable[[str, int], None] | None = None):
        self.dsn = dsn
        self.settings = settings or Settings()
        self.stopping = stopping or threading.Event()
        self.application_name = application_name
        #: called at each fault point with (phase, move id): tests in the same process
        self.on_phase = on_phase
        self.coord: psycopg.Connection | None = None
        self._nodes: dict[int, tuple[str, int]] = {}
        self.coordinator_id = 0

    def _point(self, phase: str, move_id: int, batch: int = 0) -> None:
        if self.on_phase is not None:
            self.on_phase(phase, move_id)
        fault_point(phase, move_id, batch)

    # connections --------------------------------------------------------

    def _connect(self, dsn: str, **kw: Any) -> psycopg.Connection:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=self.settings.connect_timeout,
                               application_name=self.application_name, **kw)

    def open(self) -> None:
        if self.coord is None or self.coord.closed:
            self.coord = self._connect(self.dsn)
            self.coordinator_id = int(self.coord.execute(
                "SELECT coordinator_id FROM orochi.dist_coordinator").fetchone()[0])
        self._nodes = {int(n): (str(h), int(p)) for n, h, p in
                       self.coord.execute("SELECT node_id, host, port FROM orochi.dist_node")}

    def close(self) -> None:
        if self.coord is not None:
            try:
                self.coord.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self.coord = None

    def node_dsn(self, node_id: int) -> str:
        host, port = self._nodes[node_id]
        params = conninfo_to_dict(self.dsn)
        params.pop("hostaddr", None)
        params.update(host=host, port=str(port), dbname=self.coord.info.dbname)
        return make_conninfo(**params)

    def node(self, node_id: int) -> psycopg.Connection:
        # the settings the capture trigger writes rows' text forms with
        conn = self._connect(self.node_dsn(node_id), options=ROW_TEXT_OPTIONS)
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self.settings.lock_timeout_ms}ms",))
        return conn

    # the queue ----------------------------------------------------------

    def _load(self, move_id: int) -> Move:
        row = self.coord.execute(
            "SELECT move_id, job_id, colocation_id, shard_ids, source_node, target_node, phase, switched"
            "  FROM orochi.dist_move WHERE move_id = %s", (move_id,)).fetchone()
        m = Move(int(row[0]), int(row[1]), int(row[2] or 0), [int(s) for s in row[3]], int(row[4]),
                 int(row[5]), str(row[6]), bool(row[7]))
        for sid, schema, base, storage, dist, table in self.coord.execute(
                "SELECT s.shard_id, t.shard_schema::text, t.shard_base::text, t.shard_storage,"
                "       (SELECT a.attname::text FROM pg_catalog.pg_attribute a"
                "         WHERE a.attrelid = t.relid AND a.attnum = t.dist_attnum), t.relid::regclass::text"
                "  FROM orochi.dist_shard s JOIN orochi.dist_table t USING (relid)"
                " WHERE s.shard_id = ANY (%s) ORDER BY array_position(%s, s.shard_id)",
                (m.shard_ids, m.shard_ids)):
            m.shards.append(ShardInfo(int(sid), schema, _shard_name(base, int(sid)), storage, dist, table))
        return m

    def _set(self, move_id: int, **values: Any) -> None:
        assigns = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k))
                                     for k in values)
        self.coord.execute(sql.SQL("UPDATE orochi.dist_move SET {} WHERE move_id = %(move_id)s").format(assigns),
                           {**values, "move_id": move_id})

    def _claim(self, move_id: int) -> bool:
        """Hold the move's advisory lock on the coordinator session (released
        when the runner's session ends, so recovery knows the move is
        orphaned)."""
        return bool(self.coord.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                       (MOVE_LOCK, move_id)).fetchone()[0])

    def _release(self, move_id: int) -> None:
        self.coord.execute("SELECT pg_advisory_unlock(%s, %s)", (MOVE_LOCK, move_id))

    def _stop_requested(self, move_id: int) -> bool:
        return bool(self.coord.execute("SELECT stop_requested FROM orochi.dist_move WHERE move_id = %s",
                                       (move_id,)).fetchone()[0]) or self.stopping.is_set()

    def _asked_to_stop(self, move_id: int) -> bool:
        try:
            return bool(self.coord.execute("SELECT stop_requested FROM orochi.dist_move WHERE move_id = %s",
                                           (move_id,)).fetchone()[0])
        except psycopg.Error:
            return False

    def run_pending(self, job_id: int | None = None, limit: int | None = None) -> list[tuple[int, str]]:
        """Recover orphaned moves, then run queued moves (of one job) in
        order; returns (move id, outcome) of those run."""
        self.open()
        self.recover()
        done = []
        while not self.stopping.is_set() and (limit is None or len(done) < limit):
            row = self.coord.execute(
                "SELECT move_id FROM orochi.dist_move WHERE phase = 'queued'"
                "   AND (%s::bigint IS NULL OR job_id = %s) ORDER BY job_id, position LIMIT 1",
                (job_id, job_id)).fetchone()
            if row is None:
                break
            move_id = int(row[0])
            if not self._claim(move_id):
                break  # another runner has it
            try:
                claimed = self.coord.execute(
                    "UPDATE orochi.dist_move SET phase = 'setup', started_at = now()"
                    " WHERE move_id = %s AND phase = 'queued' RETURNING move_id", (move_id,)).fetchone()
                if claimed is None:
                    continue
                done.append((move_id, self.run_move(move_id)))
            finally:
                if self.coord is not None and not self.coord.closed:
                    self._release(move_id)
        return done

    # a move -------------------------------------------------------------

    def run_move(self, move_id: int) -> str:
        """Run one claimed move to its end; returns its final phase."""
        m = self._load(move_id)
        src = tgt = None
        try:
            if len(m.shards) != len(m.shard_ids):
                raise MoveError("a shard of the group no longer exists")
            src = self.node(m.source)
            tgt = self.node(m.target)
            self._setup(m, src, tgt)
            self._copy(m, src, tgt)
            self._catchup(m, src, tgt)
            self._switch(m, src, tgt)
        except Exception as exc:  # noqa: BLE001 - the move is undone, the reason recorded
            stopped = isinstance(exc, MoveStopped)
            logger.warning("move %d %s: %s", move_id, "stopped" if stopped else "failed", exc)
            for c in (src, tgt):
                _close(c)
            src = tgt = None
            phase = "stopped" if stopped else "failed"
            if stopped and self.stopping.is_set() and not self._asked_to_stop(move_id):
                phase = "queued"  # the runner is shutting down: the move runs again later
            self._undo_or_finish(m, phase, None if stopped else f"{type(exc).__name__}: {exc}".strip())
            return self.coord.execute("SELECT phase FROM orochi.dist_move WHERE move_id = %s",
                                      (move_id,)).fetchone()[0] if self.coord and not self.coord.closed else "failed"
        finally:
            for c in (src, tgt):
                _close(c)
        try:
            return "done" if self._cleanup(m) else "cleanup"
        except psycopg.Error as exc:
            logger.warning("move %d: switched; the source's cleanup is left to recovery (%s)", move_id, exc)
            return "cleanup"

    def _setup(self, m: Move, src: psycopg.Connection, tgt: psycopg.Connection) -> None:
        self._set(m.move_id, phase="setup")
        # the target's shards: the source's definition, owner and privileges
        with tgt.transaction():
            for s in m.shards:
                schema_missing = tgt.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace"
                                             " WHERE nspname = %s)", (s.schema,)).fetchone()[0]
                if schema_missing:
                    tgt.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(s.schema)))
                for stmt in _definition(src, s):
                    tgt.execute(stmt)
        with src.transaction():
            for s in m.shards:
                src.execute(sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}"
                                    " FOR EACH ROW EXECUTE FUNCTION orochi.dist_move_capture({}, {})").format(
                    sql.Identifier(CAPTURE_TRIGGER), s.ident, sql.Literal(str(m.move_id)),
                    sql.Literal(str(s.shard_id))))
        self._point("setup", m.move_id)

    def _copy(self, m: Move, src: psycopg.Connection, tgt: psycopg.Connection) -> None:
        total = 0
        for s in m.shards:
            total += int(src.execute(
                "SELECT CASE c.relkind WHEN 'f' THEN orochi.table_size(c.oid) ELSE pg_catalog.pg_total_relation_size(c.oid) END"
                "  FROM pg_catalog.pg_class c WHERE c.oid = %s::regclass",
                (_qualified(s),)).fetchone()[0] or 0)
        self._set(m.move_id, phase="copy", bytes_total=total)
        copied = 0
        rows = 0
        last = 0
        with src.transaction(), tgt.transaction():
            src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # the changes this snapshot sees are in the copy
            src.execute("DELETE FROM orochi.dist_move_log WHERE move_id = %s", (m.move_id,))
            for s in m.shards:
                out_sql = sql.SQL("COPY (SELECT * FROM ONLY {}) TO STDOUT (FORMAT binary)").format(s.ident)
                in_sql = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(s.ident)
                with src.cursor().copy(out_sql) as cout, tgt.cursor().copy(in_sql) as cin:
                    for data in cout:
                        cin.write(data)
                        first = copied == 0
                        copied += len(data)
                        if first or copied - last >= self.settings.copy_chunk_progress:
                            last = copied
                            self._set(m.move_id, bytes_copied=copied)
                            self._point("copying", m.move_id)
                            if self._stop_requested(m.move_id):
                                raise MoveStopped("stopped")
                rows += int(tgt.execute(sql.SQL("SELECT count(*) FROM {}").format(s.ident)).fetchone()[0])
        self._set(m.move_id, bytes_copied=copied, rows_copied=rows,
                  bytes_total=max(total, copied))
        self._point("copied", m.move_id)

    def _catchup(self, m: Move, src: psycopg.Connection, tgt: psycopg.Connection) -> None:
        self._set(m.move_id, phase="catchup")
        for round_ in range(self.settings.catchup_rounds):
            if self._stop_requested(m.move_id):
                raise MoveStopped("stopped")
            applied = self._apply_round(m, src, tgt, src)
            left = int(src.execute("SELECT count(*) FROM orochi.dist_move_log WHERE move_id = %s",
                                   (m.move_id,)).fetchone()[0])
            self._point("caught_up", m.move_id, round_)
            if applied == 0 or left < self.settings.switch_when_below:
                break

    def _apply_round(self, m: Move, log_conn: psycopg.Connection, tgt: psycopg.Connection,
                     delete_conn: psycopg.Connection, limit: int | None = None) -> int:
        """Apply up to ``limit`` logged changes (oldest first) to the target
        and commit them there, then delete them from the log (through
        ``delete_conn``).  Returns how many."""
        entries = log_conn.execute(
            "SELECT seq, shard_id, op, old_row, new_row FROM orochi.dist_move_log WHERE move_id = %s"
            " ORDER BY seq LIMIT %s", (m.move_id, limit or self.settings.catchup_batch)).fetchall()
        if not entries:
            return 0
        by_id = {s.shard_id: s for s in m.shards}
        with tgt.transaction():
            pending: dict[int, list[str]] = {}

            def flush(shard_id: int) -> None:
                rows = pending.pop(shard_id, None)
                if rows:
                    s = by_id[shard_id]
                    tgt.execute(sql.SQL("INSERT INTO {} SELECT (r::{}).* FROM unnest(%s::text[]) AS r").format(
                        s.ident, s.ident), (rows,))

            for _seq, shard_id, op, old_row, new_row in entries:
                s = by_id[int(shard_id)]
                if op in ("D", "U"):
                    flush(s.shard_id)
                    _delete_one(tgt, s, old_row)
                if op in ("I", "U"):
                    pending.setdefault(s.shard_id, []).append(new_row)
            for shard_id in list(pending):
                flush(shard_id)
        delete_conn.execute("DELETE FROM orochi.dist_move_log WHERE move_id = %s AND seq = ANY (%s)",
                            (m.move_id, [e[0] for e in entries]))
        self.coord.execute("UPDATE orochi.dist_move SET changes_applied = changes_applied + %s WHERE move_id = %s",
                           (len(entries), m.move_id))
        return len(entries)

    def _switch(self, m: Move, src: psycopg.Connection, tgt: psycopg.Connection) -> None:
        self._set(m.move_id, phase="switch")
        gid = f"orochi_move_{self.coordinator_id}_{m.move_id}"
        coord2 = self._connect(self.dsn)
        fence = self.node(m.source)
        try:
            for attempt in range(self.settings.switch_attempts):
                if self._stop_requested(m.move_id):
                    raise MoveStopped("stopped")
                coord2.autocommit = False
                fence.autocommit = False
                try:
                    t0 = time.monotonic()
                    coord2.execute("SELECT set_config('lock_timeout', %s, true)",
                                   (f"{self.settings.switch_lock_timeout_ms}ms",))
                    coord2.execute("SELECT pg_advisory_xact_lock(%s, %s)", (GROUP_LOCK, m.colocation_id))
                    # writers are held on the coordinator; the fence waits for
                    # those still committing on the source
                    fence.execute("SELECT set_config('lock_timeout', %s, true)",
                                  (f"{self.settings.switch_lock_timeout_ms}ms",))
                    for s in m.shards:
                        fence.execute(sql.SQL("CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE ON {}"
                                              " FOR EACH STATEMENT EXECUTE FUNCTION orochi.dist_move_fence({})").format(
                            sql.Identifier(FENCE_TRIGGER), s.ident, sql.Literal(str(s.shard_id))))
                        fence.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                            sql.Identifier(CAPTURE_TRIGGER), s.ident))
                except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
                    coord2.rollback()
                    fence.rollback()
                    logger.info("move %d: switch attempt %d could not lock in time; catching up again",
                                m.move_id, attempt + 1)
                    self._apply_round(m, src, tgt, src)
                    continue
                self._point("switch_locked", m.move_id)
                while self._apply_round(m, fence, tgt, fence, limit=100000):
                    pass
                fence.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
                fence.autocommit = True
                self._point("prepared", m.move_id)
                moved = coord2.execute(
                    "UPDATE orochi.dist_placement SET node_id = %s WHERE shard_id = ANY (%s) AND node_id = %s",
                    (m.target, m.shard_ids, m.source)).rowcount
                if moved != len(m.shard_ids):
                    raise MoveError(f"the placements changed during the move ({moved} of {len(m.shard_ids)} found)")
                coord2.execute("UPDATE orochi.dist_move SET switched = true, phase = 'cleanup',"
                               " switched_at = clock_timestamp(), switch_ms = %s WHERE move_id = %s",
                               ((time.monotonic() - t0) * 1000.0, m.move_id))
                coord2.commit()
                m.switched = True
                self._point("switched", m.move_id)
                fence.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid)))
                return
            raise MoveError(f"the switch did not get its locks in {self.settings.switch_attempts} attempts")
        finally:
            _close(coord2)
            _close(fence)

    def _cleanup(self, m: Move, patience: float | None = None) -> bool:
        """Drop the source shards once no coordinator transaction that began
        before the switch is left (waiting at most ``patience`` seconds, then
        leaving it to a later round: False)."""
        deadline = None if patience is None else time.monotonic() + patience
        self._set(m.move_id, phase="cleanup")
        self._point("cleanup", m.move_id)
        since = self.coord.execute("SELECT clock_timestamp()").fetchone()[0]
        while True:
            old = self.coord.execute(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = current_database()"
                "   AND pid <> pg_catalog.pg_backend_pid() AND xact_start < %s AND backend_type = 'client backend'",
                (since,)).fetchone()[0]
            if not old:
                break
            if self.stopping.wait(0.05) or (deadline is not None and time.monotonic() > deadline):
                return False  # recovery finishes it
        src = self.node(m.source)
        try:
            gid = f"orochi_move_{self.coordinator_id}_{m.move_id}"
            if src.execute("SELECT 1 FROM pg_catalog.pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone():
                src.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid)))
            with src.transaction():
                for s in m.shards:
                    src.execute(sql.SQL("DROP {} IF EXISTS {}").format(
                        sql.SQL("FOREIGN TABLE" if s.storage == "columnar" else "TABLE"), s.ident))
                src.execute("DELETE FROM orochi.dist_move_log WHERE move_id = %s", (m.move_id,))
        finally:
            _close(src)
        self._set(m.move_id, phase="done", finished_at=_now(self.coord))
        return True

    # recovery -----------------------------------------------------------

    def _undo_or_finish(self, m: Move, phase: str, error: str | None) -> None:
        """After a failure: finish a switched move, else roll it back."""
        try:
            self.open()
            switched = bool(self.coord.execute("SELECT switched FROM orochi.dist_move WHERE move_id = %s",
                                               (m.move_id,)).fetchone()[0])
            if switched:
                self._cleanup(m)
            else:
                self._rollback(m, phase, error)
        except Exception as exc:  # noqa: BLE001 - left to recovery
            logger.warning("move %d: could not be finished or rolled back now (%s); recovery will", m.move_id, exc)
            self.close()

    def _rollback(self, m: Move, phase: str, error: str | None) -> None:
        gid = f"orochi_move_{self.coordinator_id}_{m.move_id}"
        placed = {int(s): int(n) for s, n in self.coord.execute(
            "SELECT shard_id, node_id FROM orochi.dist_placement WHERE shard_id = ANY (%s)", (m.shard_ids,))}
        src = self.node(m.source)
        try:
            if src.execute("SELECT 1 FROM pg_catalog.pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone():
                src.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
            with src.transaction():
                for s in m.shards:
                    if placed.get(s.shard_id) == m.source and _exists(src, s):
                        for trig in (CAPTURE_TRIGGER, FENCE_TRIGGER):
                            src.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(trig), s.ident))
                src.execute("DELETE FROM orochi.dist_move_log WHERE move_id = %s", (m.move_id,))
        finally:
            _close(src)
        tgt = self.node(m.target)
        try:
            with tgt.transaction():
                for s in m.shards:
                    if placed.get(s.shard_id) != m.target:  # never the live placement
                        tgt.execute(sql.SQL("DROP {} IF EXISTS {}").format(
                            sql.SQL("FOREIGN TABLE" if s.storage == "columnar" else "TABLE"), s.ident))
        finally:
            _close(tgt)
        if phase == "queued":
            self._set(m.move_id, phase=phase, error=None, started_at=None, bytes_copied=0, rows_copied=0,
                      changes_applied=0)
        else:
            self._set(m.move_id, phase=phase, error=error, finished_at=_now(self.coord))

    def recover(self) -> int:
        """Finish or roll back the open moves no runner holds; returns how
        many were resolved.  A node that cannot be reached leaves its move
        to the next round."""
        self.open()
        n = 0
        for (move_id,) in self.coord.execute(
                "SELECT move_id FROM orochi.dist_move WHERE phase = ANY (%s) ORDER BY move_id",
                (list(OPEN_PHASES),)).fetchall():
            if not self._claim(move_id):
                continue  # its runner is alive
            try:
                m = self._load(move_id)
                phase = self.coord.execute("SELECT phase FROM orochi.dist_move WHERE move_id = %s",
                                           (move_id,)).fetchone()[0]
                if phase not in OPEN_PHASES:
                    continue
                try:
                    if m.switched:
                        n += self._cleanup(m, patience=30.0)
                    else:
                        self._rollback(m, "failed", f"interrupted in phase {phase}; rolled back by recovery")
                        n += 1
                except psycopg.Error as exc:
                    logger.warning("move %d: recovery could not finish it now (%s); next round", move_id, exc)
            finally:
                if self.coord is not None and not self.coord.closed:
                    self._release(move_id)
        return n


# ------------------------------------------------------------ helpers


def _shard_name(base: str, shard_id: int) -> str:
    suffix = f"_{shard_id}"
    raw = base.encode("utf-8")
    room = 63 - len(suffix)
    if len(raw) > room:
        base = raw[:room].decode("utf-8", "ignore")
    return base + suffix


def _qualified(s: ShardInfo) -> str:
    return sql.Identifier(s.schema, s.name).as_string(None)


def _exists(conn: psycopg.Connection, s: ShardInfo) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (_qualified(s),)).fetchone()[0]


def _close(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass


def _now(conn: psycopg.Connection):
    return conn.execute("SELECT now()").fetchone()[0]


def _definition(src: psycopg.Connection, s: ShardInfo) -> list[sql.Composable]:
    """The statements that make the shard on another node as it is on the
    source: columns (types, collations, NOT NULL), kind (columnar foreign
    table with its options, or heap table), owner and privileges."""
    rel = src.execute(
        "SELECT c.oid, c.relkind::text, pg_catalog.pg_get_userbyid(c.relowner),"
        "       (SELECT f.ftoptions FROM pg_catalog.pg_foreign_table f WHERE f.ftrelid = c.oid),"
        "       (SELECT v.srvname::text FROM pg_catalog.pg_foreign_table f"
        "          JOIN pg_catalog.pg_foreign_server v ON v.oid = f.ftserver WHERE f.ftrelid = c.oid)"
        "  FROM pg_catalog.pg_class c WHERE c.oid = %s::regclass", (_qualified(s),)).fetchone()
    if rel is None:
        raise MoveError(f"shard {s.shard_id} is missing on its node")
    oid, kind, owner, ftoptions, server = rel
    cols = []
    for name, typ, collate, notnull in src.execute(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),"
            "       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation"
            "            THEN (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)"
            "                    FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn"
            "                      ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END,"
            "       a.attnotnull"
            "  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (oid,)):
        frag = sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(typ))  # format_type's output is SQL
        if collate:
            frag += sql.SQL(" COLLATE {}").format(sql.SQL(collate))
        if notnull:
            frag += sql.SQL(" NOT NULL")
        cols.append(frag)
    out: list[sql.Composable] = []
    if kind == "f":
        opts = sql.SQL("")
        if ftoptions:
            pairs = [o.partition("=") for o in ftoptions]
            opts = sql.SQL(" OPTIONS ({})").format(sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, _, v in pairs))
        out.append(sql.SQL("CREATE FOREIGN TABLE {} ({}) SERVER {}{}").format(
            s.ident, sql.SQL(", ").join(cols), sql.Identifier(server), opts))
        what = sql.SQL("FOREIGN TABLE")
    else:
        out.append(sql.SQL("CREATE TABLE {} ({})").format(s.ident, sql.SQL(", ").join(cols)))
        what = sql.SQL("TABLE")
    out.append(sql.SQL("ALTER {} {} OWNER TO {}").format(what, s.ident, sql.Identifier(owner)))
    grants = src.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee) END,"
        "       a.privilege_type, a.is_grantable, pg_catalog.pg_get_userbyid(a.grantor)"
        "  FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a WHERE c.oid = %s", (oid,)).fetchall()
    if grants:
        out.append(sql.SQL("REVOKE ALL ON {} FROM {}").format(s.ident, sql.Identifier(owner)))
        for grantee, privilege, grantable, _grantor in grants:
            out.append(sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege), s.ident, sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    return out


def _delete_one(tgt: psycopg.Connection, s: ShardInfo, old_row: str) -> None:
    """Delete one row of the target shard equal to ``old_row`` (its text
    form); a missing one means the copy diverged, and the move fails."""
    ctid = tgt.execute(
        sql.SQL("SELECT x.ctid FROM {} x WHERE x.{} IS NOT DISTINCT FROM (%s::{}).{} AND x::text = %s LIMIT 1").format(
            s.ident, sql.Identifier(s.dist_column), s.ident, sql.Identifier(s.dist_column)),
        (old_row, old_row)).fetchone()
    if ctid is None:
        raise MoveError(f"catch-up of shard {s.shard_id}: a changed row is missing on the target")
    tgt.execute(sql.SQL("DELETE FROM {} WHERE ctid = ANY (%s::tid[])").format(s.ident), ([str(ctid[0])],))


# ------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orochi_fdw.cluster.mover",
                                     description="Run the queued shard moves of a coordinator now, "
                                                 "after finishing or rolling back interrupted ones.")
    parser.add_argument("--dsn", required=True, help="the coordinator database (a superuser)")
    parser.add_argument("--job", type=int, help="only this job's moves")
    parser.add_argument("--recover-only", action="store_true", help="only finish or roll back interrupted moves")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner = Runner(args.dsn)
    try:
        if args.recover_only:
            print(f"recovered {runner.recover()} move(s)")
            return 0
        results = runner.run_pending(args.job)
    finally:
        runner.close()
    for move_id, outcome in results:
        print(f"move {move_id}: {outcome}")
    return 0 if all(o == "done" for _, o in results) else 1


if __name__ == "__main__":
    sys.exit(main())
