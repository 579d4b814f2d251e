"""The test side of fault points (:mod:`orochi_fdw.bridge.faults`): hold a
point's gate, run an operation in another session with
``orochi.fault_injection`` naming the point, wait until the operation waits
at the gate, then kill the server or open the gate.

::

    with FaultGate(cluster.dsn("db"), "vacuum:after_write@3") as gate:
        op = gate.run("SELECT orochi.vacuum('t', 0)")   # in a thread, its own session
        gate.wait_reached()      # the backend waits at the 3rd rewritten stripe
        cluster.kill9(kill_children=True)

Nothing here sleeps to let something happen: waiting means polling
``pg_locks`` for the backend's lock wait, with a deadline only as a guard
against a test that never gets there.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import psycopg

_GATE = "(hashtext('orochi.fault_point'), hashtext(%s))"
_WAITING = """
SELECT 1 FROM pg_catalog.pg_locks
 WHERE locktype = 'advisory' AND pid = %s AND NOT granted
   AND classid = hashtext('orochi.fault_point')::oid AND objid = hashtext(%s)::oid AND objsubid = 2
"""


class FaultGateError(AssertionError):
    """The operation never reached its fault point."""


class Operation:
    """Statements (or a function given the connection) run in a thread, in
    a session of their own whose ``orochi.fault_injection`` names the gate's
    point."""

    def __init__(self, dsn: str, setting: str, statements: list[str], autocommit: bool,
                 body: Callable[[psycopg.Connection], None] | None = None):
        self.dsn = dsn
        self.setting = setting
        self.statements = statements
        self.body = body
        self.autocommit = autocommit
        self.pid: int | None = None
        self.error: BaseException | None = None
        self.finished = False
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=self.autocommit) as conn:
                conn.execute("SELECT set_config('orochi.fault_injection', %s, false)", (self.setting,))
                if not self.autocommit:
                    conn.commit()
                self.pid = conn.info.backend_pid
                self._started.set()
                for sql in self.statements:
                    conn.execute(sql)
                if self.body is not None:
                    self.body(conn)
                if not self.autocommit:
                    conn.commit()
            self.finished = True
        except BaseException as exc:  # the server may go away under it
            self.error = exc
        finally:
            self._started.set()

    def start(self) -> "Operation":
        self.thread.start()
        if not self._started.wait(60) or self.pid is None:
            raise FaultGateError(f"the operation's session did not start: {self.error!r}")
        return self

    def join(self, timeout: float = 60) -> None:
        self.thread.join(timeout)


class FaultGate:
    """Holds the gate of one fault point (``name`` or ``name@N``) in a session
    of its own until :meth:`open` or the end of the ``with`` block."""

    def __init__(self, dsn: str, point: str):
        self.dsn = dsn
        self.point = point
        self.name = point.partition("@")[0]
        self.conn: psycopg.Connection | None = None
        self.operation: Operation | None = None

    def __enter__(self) -> "FaultGate":
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.conn.execute(f"SELECT pg_advisory_lock{_GATE}", (self.name,))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, *statements: str, autocommit: bool = True,
            body: Callable[[psycopg.Connection], None] | None = None) -> Operation:
        """Start the statements, then ``body(connection)``, in their own
        session (a thread), pausing at this gate's point."""
        self.operation = Operation(self.dsn, self.point, list(statements), autocommit, body).start()
        return self.operation

    def wait_reached(self, timeout: float = 120, operation: Operation | None = None) -> None:
        """Wait until the operation's backend waits at the gate.

        Raises:
            FaultGateError: the operation ended (or failed) without reaching
                the point, or did not reach it within ``timeout`` seconds.
        """
        op = operation or self.operation
        assert op is not None and self.conn is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.conn.execute(_WAITING, (op.pid, self.name)).fetchone():
                return
            if not op.thread.is_alive():
                raise FaultGateError(f"the operation ended before reaching fault point {self.point}"
                                     f" (error: {op.error!r})")
            if time.monotonic() > deadline:
                raise FaultGateError(f"fault point {self.point} not reached in {timeout} s")
            time.sleep(0.01)

    def open(self) -> None:
        """Let the operation go on."""
        if self.conn is not None and not self.conn.closed:
            self.conn.execute(f"SELECT pg_advisory_unlock{_GATE}", (self.name,))

    def close(self) -> None:
        """Drop the gate's session (a killed server has dropped it already)."""
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - the server may be gone
                pass
            self.conn = None


def run_until(dsn: str, point: str, *statements: str, kill: Callable[[], None],
              autocommit: bool = True, body: Callable[[psycopg.Connection], None] | None = None,
              before_kill: Callable[[Operation], None] | None = None) -> Operation:
    """Run ``statements`` (then ``body(connection)``) until they reach
    ``point``, then call ``kill`` (the server's kill -9) while they wait
    there; returns the operation (joined).

    Raises:
        FaultGateError: the point was not reached (the statements finished,
            failed, or took too long).
    """
    with FaultGate(dsn, point) as gate:
        op = gate.run(*statements, autocommit=autocommit, body=body)
        gate.wait_reached()
        if before_kill is not None:
            before_kill(op)
        kill()
    op.join(30)
    if op.finished:
        raise FaultGateError(f"the operation finished although it waited at {point}")
    return op
