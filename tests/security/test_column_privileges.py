"""Column privileges on columnar tables are exactly Postgres's: a role
granted some columns reads and writes those and no others, also through
WHERE, RETURNING, aggregate pushdown, COPY TO and the delta store; each
statement is checked against a heap table with the same grants (the
oracle)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

GRANTS = [
    "SELECT (id, note)",
    "INSERT (id, note)",
    "UPDATE (v)",
]

STATEMENTS = [
    "SELECT id, note FROM {t} ORDER BY id",
    "SELECT v FROM {t}",
    "SELECT * FROM {t}",
    "SELECT count(*) FROM {t}",
    "SELECT count(id), max(note) FROM {t}",
    "SELECT sum(v) FROM {t}",
    "SELECT id FROM {t} WHERE v > 1 ORDER BY id",
    "SELECT id FROM {t} WHERE id = 101",
    "INSERT INTO {t} (id, note) VALUES (500, 'x')",
    "INSERT INTO {t} (id, v) VALUES (501, 1)",
    "INSERT INTO {t} VALUES (502, 1, 'y')",
    "INSERT INTO {t} (id, note) VALUES (503, 'z') RETURNING id",
    "INSERT INTO {t} (id, note) VALUES (504, 'z') RETURNING v",
    "INSERT INTO {t} (id, note) SELECT g, 'many' FROM generate_series(1000, 1100) g",
    "UPDATE {t} SET v = 0",
    "UPDATE {t} SET v = 1 WHERE id = 3",
    "UPDATE {t} SET v = 2 WHERE v > 5",
    "UPDATE {t} SET v = 3 WHERE id = 101 RETURNING id",
    "UPDATE {t} SET v = 3 RETURNING v",
    "UPDATE {t} SET note = 'n'",
    "DELETE FROM {t} WHERE id = 4",
    "DELETE FROM {t}",
    "TRUNCATE {t}",
    # COPY TO, which the bridge rewrites for an orochi table after COPY's own check
    "COPY {t} TO STDOUT",
    "COPY {t} (id, note) TO STDOUT",
    "COPY {t} (note) TO STDOUT (FORMAT csv, HEADER)",
    "COPY {t} (v) TO STDOUT",
]


def _make(conn, table: str, foreign: bool) -> None:
    t = sql.Identifier(table)
    if foreign:
        conn.execute(sql.SQL("CREATE FOREIGN TABLE {} (id int, v float8, note text) SERVER orochi"
                             " OPTIONS (delta_row_limit '5')").format(t))
    else:
        conn.execute(sql.SQL("CREATE TABLE {} (id int, v float8, note text)").format(t))
    conn.execute(sql.SQL("INSERT INTO {} SELECT g, g, 'n' || g FROM generate_series(1, 20) g").format(t))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (101, 50, 'delta')").format(t))  # the delta store


def _outcome(conn, statement: str):
    try:
        if statement.startswith("COPY"):
            with conn.cursor().copy(statement) as copy:
                data = b"".join(bytes(block) for block in copy)
            lines = data.splitlines()
            return ("ok", lines[:1] + sorted(lines[1:]) if "HEADER" in statement else sorted(lines))
        cur = conn.execute(statement)
        return ("ok", cur.fetchall() if cur.description else cur.rowcount)
    except psycopg.Error as exc:
        return ("error", exc.sqlstate)


@pytest.mark.parametrize("statement", STATEMENTS)
def test_column_privileges_as_on_heap(fresh_actors, statement):
    a = fresh_actors
    owner, granted = a.conns["owner"], a.conns["granted"]
    for table, foreign in (("c", True), ("h", False)):
        _make(owner, table, foreign)
        for grant in GRANTS:
            owner.execute(sql.SQL(f"GRANT {grant} ON {{}} TO {{}}").format(sql.Identifier(table), a.ident("granted")))
    # COPY t TO of an orochi table needs the library loaded in the session
    # (preloaded, or any earlier use of Orochi: docs/columnar.md)
    granted.execute("SELECT orochi.table_size('c')")
    columnar = _outcome(granted, statement.format(t="c"))
    heap = _outcome(granted, statement.format(t="h"))
    assert columnar == heap, f"{statement}: columnar {columnar}, heap {heap}"
    # and the rows are the same afterwards, as the owner sees them
    assert owner.execute("SELECT * FROM c ORDER BY id, v, note").fetchall() == \
        owner.execute("SELECT * FROM h ORDER BY id, v, note").fetchall()


def test_the_oracle_refuses_some(fresh_actors):
    """Some statements above are refused (42501) and some allowed, so the
    comparison can fail either way."""
    a = fresh_actors
    owner, granted = a.conns["owner"], a.conns["granted"]
    _make(owner, "h", False)
    for grant in GRANTS:
        owner.execute(sql.SQL(f"GRANT {grant} ON h TO {{}}").format(a.ident("granted")))
    outcomes = [_outcome(granted, s.format(t="h"))[0] for s in STATEMENTS]
    assert "ok" in outcomes and "error" in outcomes
