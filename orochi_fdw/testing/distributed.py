"""A coordinator and its workers on 127.0.0.1, for tests, the demo and the
benchmarks.

``LocalCluster(workers=2)`` starts one :class:`PostgresCluster` for the
coordinator and one per worker (each its own data directory and port,
``max_prepared_transactions`` set by the harness defaults), creates a
database with the orochi extension in each, and registers the workers with
``orochi.add_node``::

    with LocalCluster(workers=2) as lc:
        with lc.connect() as conn:          # to the coordinator's database
            conn.execute("SELECT orochi.create_distributed_table('t', 'id')")

``new_database()`` makes a further database (same name on every node,
nodes added) so that tests can start from an empty metadata cheaply.

This module must not import pytest.
"""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
from orochi_fdw.testing.cluster import PostgresCluster

_names = itertools.count(1)


class LocalCluster:
    """A coordinator and ``workers`` workers.

    Attributes:
        coordinator: the coordinator's cluster.
        workers: the workers' clusters, in node id order.
        dbname: the database made at start (on every node).
    """

    def __init__(self, workers: int = 2, *, dbname: str = "orochi_dist",
                 settings: dict[str, Any] | None = None, name: str = "dist"):
        self.name = name
        self.settings = dict(settings or {})
        self.coordinator = PostgresCluster(f"{name}-coord", settings=self.settings)
        self.workers = [PostgresCluster(f"{name}-w{i + 1}", settings=self.settings) for i in range(workers)]
        self.dbname = dbname
        self.databases: list[str] = []

    #: the database every node copies new databases from (the extension made once)
    TEMPLATE = "orochi_template"

    def start(self) -> "LocalCluster":
        """Start every node (at once) and make the template and the first
        database."""
        _each(self.all(), lambda c: c.start())
        _each(self.all(), lambda c: c.create_database(self.TEMPLATE))
        self.new_database(self.dbname)
        return self

    def all(self) -> list[PostgresCluster]:
        return [self.coordinator, *self.workers]

    def new_database(self, name: str | None = None, *, add_nodes: bool = True) -> str:
        """A database of that name on every node, with the extension, the
        workers added to the coordinator's metadata."""
        name = name or f"{self.name.replace('-', '_')}_{next(_names)}"
        _each(self.all(), lambda c: c.create_database(name, extension=False, template=self.TEMPLATE))
        self.databases.append(name)
        with self.coordinator.connect(name, autocommit=True) as conn:
            # each database is its own coordinator, with its own id in gids
            conn.execute("UPDATE orochi.dist_coordinator SET coordinator_id = (random() * 2147483646)::integer + 1")
        if add_nodes:
            with self.coordinator.connect(name, autocommit=True) as conn:
                for w in self.workers:
                    conn.execute("SELECT orochi.add_node(%s, %s)", (w.host, w.port))
        return name

    def drop_database(self, name: str) -> None:
        for c in self.all():
            if c.is_running():
                c.drop_database(name)
        if name in self.databases:
            self.databases.remove(name)

    def connect(self, dbname: str | None = None, *, autocommit: bool = True, **kw: Any) -> psycopg.Connection:
        return self.coordinator.connect(dbname or self.dbname, autocommit=autocommit, **kw)

    def worker_connect(self, index: int, dbname: str | None = None, **kw: Any) -> psycopg.Connection:
        return self.workers[index].connect(dbname or self.dbname, autocommit=True, **kw)

    def prepared_transactions(self, dbname: str | None = None) -> list[tuple[int, str]]:
        """(worker index, gid) of every prepared transaction on the workers."""
        out = []
        for i, w in enumerate(self.workers):
            for (gid,) in w.execute("SELECT gid FROM pg_prepared_xacts WHERE database = %s",
                                    (dbname or self.dbname,)):
                out.append((i, gid))
        return out

    def cleanup(self) -> None:
        for c in self.all():
            try:
                c.cleanup()
            except Exception:  # noqa: BLE001 - clean up the others anyway
                pass

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


def _each(clusters: list[PostgresCluster], action) -> None:
    """Run ``action`` on every cluster at once (threads: the work is in
    server processes)."""
    import threading

    errors: list[BaseException] = []

    def run(c: PostgresCluster) -> None:
        try:
            action(c)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
