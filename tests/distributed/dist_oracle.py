"""The heap oracle of the distributed tests: the same rows in a local heap
table ``h`` and a distributed table ``d``, and result comparison."""

from __future__ import annotations

import datetime
import decimal
import math

from psycopg import sql

COLUMNS = "k int NOT NULL, g int, v float8, n numeric, s text, ts timestamptz, b boolean"
COLUMN_NAMES = ["k", "g", "v", "n", "s", "ts", "b"]


def make_pair(dist, *, shard_count: int = 6, dist_column: str = "k", storage: str = "columnar",
              reference: bool = False, rows: list[tuple] | None = None, heap: str = "h", table: str = "d") -> None:
    """Heap ``heap`` and distributed ``table`` with COLUMNS and the same rows."""
    dist.q(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(heap), sql.SQL(COLUMNS)))
    dist.q(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(COLUMNS)))
    if reference:
        dist.reference(table, shard_storage=storage)
    else:
        dist.distribute(table, dist_column, shard_count, shard_storage=storage)
    if rows:
        insert(dist, rows, heap, table)


def insert(dist, rows: list[tuple], heap: str = "h", table: str = "d") -> None:
    """The rows into the heap (COPY), then one INSERT ... SELECT of them into
    the distributed table (routed in batches)."""
    with dist.conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS orochi_rows (LIKE {})").format(sql.Identifier(heap)))
        cur.execute("TRUNCATE orochi_rows")
        with cur.copy("COPY orochi_rows FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM orochi_rows").format(sql.Identifier(heap)))
        cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM orochi_rows").format(sql.Identifier(table)))


def _norm(value):
    if isinstance(value, float):
        if math.isnan(value):
            return ("nan",)
        return ("f", round(value, 6) if abs(value) < 1e12 else float(f"{value:.9g}"))
    if isinstance(value, decimal.Decimal):
        return ("d", str(value))  # the scale too: Postgres's numeric results are exact
    if isinstance(value, (datetime.datetime, datetime.date)):
        return ("t", value.isoformat())
    if value is None:
        return ("null",)
    return ("v", value)


def normalized(rows, exact_floats: bool = False) -> list:
    """Rows as a sorted list of tuples comparable across summation orders
    (floats rounded; numerics exact, scale included)."""
    out = [tuple(_norm(v) if not (exact_floats and isinstance(v, float)) else ("f", v) for v in r) for r in rows]
    return sorted(out, key=repr)


def same_result(dist, query: str, heap: str = "h", table: str = "d", params=None, ordered: bool = False,
                exact: bool = False) -> list:
    """Run the query on the heap (FROM {t} -> heap) and on the distributed
    table and assert equal results; returns the distributed rows."""
    expected = dist.q(query.replace("{t}", heap), params)
    got = dist.q(query.replace("{t}", table), params)
    if ordered:
        assert [tuple(_norm(v) for v in r) for r in got] == [tuple(_norm(v) for v in r) for r in expected], query
    elif exact:
        assert sorted(map(repr, got)) == sorted(map(repr, expected)), query
    else:
        assert normalized(got) == normalized(expected), query
    return got
