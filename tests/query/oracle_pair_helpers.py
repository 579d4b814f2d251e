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


#: the columns of the subquery tests' tables (o, i, j): NULLs in every column
SUBQUERY_COLUMNS = "k int, g bigint, n numeric(10,2), m numeric(12,3), v text, d date"
SUBQUERY_TABLE_OPTIONS = "OPTIONS (stripe_row_limit '150', chunk_group_size '50')"
SUBQUERY_TABLES = ("o", "i", "j")


def subquery_table_statements(seed: int, target: str) -> list[str]:
    """The rows of a subquery test's table (``create_table_pairs``'
    statements): several stripes and chunk groups, NULLs in each column,
    keys that match nothing elsewhere, deleted rows."""
    rows = 260 + 70 * seed
    return [f"INSERT INTO {target} SELECT "
            f"CASE WHEN x % {7 + seed} = 0 THEN NULL ELSE (x * {seed + 3}) % {19 + seed} END, "
            f"(x % {4 + seed})::bigint, "
            f"CASE WHEN x % 11 = 0 THEN NULL ELSE ((x % 17) * 1.25 - 5)::numeric(10,2) END, "
            f"CASE WHEN x % 13 = 0 THEN NULL ELSE ((x * 7) % 31 / 3.0)::numeric(12,3) END, "
            f"CASE WHEN x % 5 = 0 THEN NULL ELSE 'v' || (x % 6) END, "
            f"date '2024-01-01' + (x % 29) "
            f"FROM generate_series(1, {rows}) x",
            f"INSERT INTO {target} VALUES (7, 1, 2.50, 1.001, 'delta', '2024-01-05'), "
            f"(NULL, 2, NULL, NULL, NULL, NULL), (40, 9, 99.99, 0.001, 'only', '2024-02-01'), "
            f"(41, 9, NULL, NULL, 'only', NULL)",
            f"DELETE FROM {target} WHERE g = 3 AND k < 5"]


def create_subquery_tables(conn) -> None:
    """The subquery tests' tables (o, i, j) and their heap twins, analyzed."""
    create_table_pairs(conn, SUBQUERY_TABLES, SUBQUERY_COLUMNS, SUBQUERY_TABLE_OPTIONS, subquery_table_statements)
    conn.execute("ANALYZE")
