"""Two sessions on one database for the differential tests of the join
engine: one queries the orochi tables, the other the heap tables holding
the same rows (the oracle)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def oracle_pair(pg_cluster, database: str, *settings: str) -> Iterator[tuple]:
    """(orochi session, heap session), both without parallel workers and
    with ``settings`` (SET statements) run in each."""
    oro = pg_cluster.connect(database, autocommit=True)
    heap = pg_cluster.connect(database, autocommit=True)
    try:
        for c in (oro, heap):
            c.execute("SET max_parallel_workers_per_gather = 0")
            for statement in settings:
                c.execute(statement)
        yield oro, heap
    finally:
        oro.close()
        heap.close()


@contextmanager
def engine_pair(pg_cluster, database: str, *settings: str) -> Iterator[tuple]:
    """:func:`oracle_pair` with PostgreSQL's own joins and hashed grouping
    costing more than any plan without them in the orochi session, so that
    the join engine's path is taken whenever it is offered."""
    with oracle_pair(pg_cluster, database, *settings) as (oro, heap):
        for setting in ("enable_hashjoin", "enable_mergejoin", "enable_nestloop", "enable_hashagg"):
            oro.execute(f"SET {setting} = off")
        yield oro, heap


def create_table_pairs(conn, tables, columns: str, options: str, statements) -> None:
    """Each of ``tables`` as an orochi table and a heap table ``<name>_h``
    with the same rows: ``statements(seed, target)`` lists the SQL run on
    both (the table's position as the seed)."""
    for seed, t in enumerate(tables):
        conn.execute(f"CREATE FOREIGN TABLE {t} ({columns}) SERVER orochi {options}")
        conn.execute(f"CREATE TABLE {t}_h ({columns})")
        for target in (t, f"{t}_h"):
            for statement in statements(seed, target):
                conn.execute(statement)
