"""Helpers of the workload management tests: clients whose statements run
on threads, a view of the shared state through the monitoring functions,
and waiting for states of that shared state (never for time)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import psycopg
from psycopg import sql

from orochi_fdw.testing.cluster import PostgresCluster

#: what every test of this directory runs under
WORKLOAD_SETTINGS = {
    "orochi.workload_enabled": True,
    # lock cycles through the queue are looked for every deadlock_timeout
    "deadlock_timeout": "100ms",
    "max_connections": 60,
    "max_worker_processes": 16,
}

WAIT_SECONDS = 60


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Poll predicate until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Client:
    """A connection whose statements run on a thread, so that a test can
    watch them wait."""

    def __init__(self, pg: PostgresCluster, application_name: str, dbname: str = "postgres",
                 autocommit: bool = True, user: str | None = None):
        params: dict[str, Any] = {"application_name": application_name}
        if user is not None:
            params["user"] = user
        self.name = application_name
        self.conn = psycopg.connect(pg.dsn(dbname, **params), autocommit=autocommit, connect_timeout=10)
        self.pid = self.conn.info.backend_pid
        self.thread: threading.Thread | None = None
        self.rows: Any = None
        self.error: BaseException | None = None

    def execute(self, query: Any, params: Any = None) -> list[tuple] | None:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else None

    def start(self, query: Any, params: Any = None) -> "Client":
        """Run query on the client's thread."""
        assert self.thread is None or not self.thread.is_alive(), "client is busy"
        self.rows, self.error = None, None

        def run() -> None:
            try:
                self.rows = self.execute(query, params)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.error = exc

        self.thread = threading.Thread(target=run, name=self.name, daemon=True)
        self.thread.start()
        return self

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float = WAIT_SECONDS) -> "Client":
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name}: statement still running after {timeout}s"
        return self

    def result(self) -> Any:
        """Join, and raise the statement's error if it had one."""
        self.join()
        if self.error is not None:
            raise self.error
        return self.rows

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


class Workload:
    """The test's view of the workload cluster: an admin connection (its
    statements go to the default pool, which has no limit), clients, and the
    shared-memory state through the monitoring functions."""

    def __init__(self, pg: PostgresCluster):
        self.pg = pg
        self.clients: list[Client] = []
        self.admin = psycopg.connect(pg.dsn("postgres", application_name="admin"), autocommit=True)

    # --------------------------------------------------------------- SQL

    def q(self, query: Any, params: Any = None) -> list[tuple]:
        cur = self.admin.execute(query, params)
        return cur.fetchall() if cur.description else []

    def one(self, query: Any, params: Any = None) -> Any:
        return self.q(query, params)[0][0]

    def reconnect(self) -> None:
        """After a crash restart."""
        try:
            self.admin.close()
        except Exception:
            pass
        self.pg.wait_until_ready()
        self.admin = psycopg.connect(self.pg.dsn("postgres", application_name="admin"), autocommit=True)

    def client(self, application_name: str, **kwargs: Any) -> Client:
        c = Client(self.pg, application_name, **kwargs)
        self.clients.append(c)
        return c

    # --------------------------------------------------------------- shared state

    def stats(self, pool: str) -> dict[str, Any]:
        cur = self.admin.execute("SELECT * FROM orochi.pool_stats() WHERE pool_name = %s", (pool,))
        row = cur.fetchone()
        assert row is not None, f"no pool {pool!r} in pool_stats()"
        return dict(zip([d.name for d in cur.description], row))

    def queued(self, pool: str | None = None) -> list[int]:
        """Pids waiting, in queue order."""
        return [r[0] for r in self.q(
            "SELECT pid FROM orochi.queued_queries() WHERE %s::text IS NULL OR pool_name = %s "
            "ORDER BY pool_name, queue_position", (pool, pool))]

    def running(self, pool: str) -> set[int]:
        return {r[0] for r in self.q(
            "SELECT pid FROM orochi.session_resources() WHERE pool_name = %s AND state = 'running'", (pool,))}

    def session(self, pid: int) -> dict[str, Any] | None:
        cur = self.admin.execute("SELECT * FROM orochi.session_resources() WHERE pid = %s", (pid,))
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row)) if row else None

    def wait_queued(self, client: Client, pool: str | None = None) -> None:
        wait_until(lambda: client.pid in self.queued(pool), f"{client.name} to wait in the queue")

    def wait_running(self, client: Client, pool: str) -> None:
        wait_until(lambda: client.pid in self.running(pool), f"{client.name} to run in pool {pool}")

    def wait_lock_wait(self, client: Client) -> None:
        """Until the client's backend waits for a heavyweight lock."""
        wait_until(lambda: self.q("SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = %s "
                                  "AND wait_event_type = 'Lock'", (client.pid,)),
                   f"{client.name} to wait for a lock")

    # --------------------------------------------------------------- clean-up

    def reset(self) -> None:
        for c in self.clients:
            c.close()
        for c in self.clients:
            if c.thread is not None:
                c.thread.join(30)
        self.clients.clear()
        self.reconnect()
        # until the closed clients' backends are gone, their slots may still count
        wait_until(lambda: not self.q(
            "SELECT 1 FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() AND application_name <> 'admin'"), "clients to disconnect")
        self.q("SELECT pg_catalog.pg_advisory_unlock_all()")
        for (role,) in self.q("SELECT rolname FROM pg_catalog.pg_roles r JOIN orochi.workload_role_classes w "
                              "ON w.role = r.oid"):
            self.q("SELECT orochi.assign_workload_class(NULL, role => %s)", (role,))
        for (name,) in self.q("SELECT class_name::text FROM orochi.workload_classes"):
            self.q("SELECT orochi.drop_workload_class(%s)", (name,))
        for (name,) in self.q("SELECT pool_name::text FROM orochi.resource_pools"):
            self.q("SELECT orochi.drop_resource_pool(%s)", (name,))
        self.q("SELECT orochi.assign_workload_class(NULL)")
        self.q("SELECT orochi.pool_stats_reset()")

    def close(self) -> None:
        self.reset()
        self.admin.close()


def pool_with_class(wl: Workload, pool: str, pattern: str, max_concurrency: int, **pool_args: Any) -> None:
    """A pool, and a class sending sessions whose application_name is LIKE
    pattern to it."""
    args = sql.SQL(", ").join(
        [sql.Literal(pool), sql.Literal(max_concurrency)]
        + [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in pool_args.items()])
    wl.q(sql.SQL("SELECT orochi.create_resource_pool({})").format(args))
    wl.q("SELECT orochi.create_workload_class(%s, %s, jsonb_build_object('application_name', %s::text))",
         (pool + "_class", pool, pattern))
