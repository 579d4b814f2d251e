"""Pushdown knows operators, aggregates, functions and collations by what
they are (OID, namespace), never by name: a user's ``=``, ``count``,
``date_trunc``, ``time_bucket`` or collation "C" found first in the search
path keeps its own meaning, as on a heap table (the oracle).  And a
collation's name never reaches SQL text unquoted."""

from __future__ import annotations

import pytest
from psycopg import sql

ROWS = [(i, i * 0.5, f"2024-01-0{1 + i % 3} 0{i % 10}:00:00+00", ("ABC", "abc", "Abc", "x")[i % 4])
        for i in range(40)]


@pytest.fixture
def tables(db):
    """Heap h and columnar c with the same rows (stripes and delta rows),
    and a schema trojan with look-alikes of built-in objects, first in the
    search path."""
    db.execute("CREATE TABLE h (id int, v float8, ts timestamptz, note text)")
    db.execute("CREATE FOREIGN TABLE c (id int, v float8, ts timestamptz, note text)"
               " SERVER orochi OPTIONS (delta_row_limit '5')")
    for table in ("h", "c"):
        rows = ROWS[:30]  # one statement: stripes in c
        db.execute(sql.SQL("INSERT INTO {} VALUES ").format(sql.Identifier(table))
                   + sql.SQL(", ").join([sql.SQL("(%s, %s, %s, %s)")] * len(rows)),
                   [v for r in rows for v in r])
        for r in ROWS[30:]:  # one by one: the delta store in c
            db.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(sql.Identifier(table)), r)
    db.execute("CREATE SCHEMA trojan")
    # = and < on integers that mean something else (PL/pgSQL: never inlined
    # away, so the operator stays in the plan under its name)
    db.execute("CREATE FUNCTION trojan.always(int, int) RETURNS bool LANGUAGE plpgsql IMMUTABLE"
               " AS 'BEGIN RETURN true; END'")
    db.execute("CREATE FUNCTION trojan.never(int, int) RETURNS bool LANGUAGE plpgsql IMMUTABLE"
               " AS 'BEGIN RETURN false; END'")
    db.execute("CREATE OPERATOR trojan.= (leftarg = int, rightarg = int, function = trojan.always)")
    db.execute("CREATE OPERATOR trojan.< (leftarg = int, rightarg = int, function = trojan.never)")
    db.execute("CREATE FUNCTION trojan.textlike(text, text) RETURNS bool LANGUAGE plpgsql IMMUTABLE"
               " AS 'BEGIN RETURN true; END'")
    db.execute("CREATE OPERATOR trojan.~~ (leftarg = text, rightarg = text, function = trojan.textlike)")
    # count, date_trunc and time_bucket that are not the built-in ones
    db.execute("CREATE FUNCTION trojan.add2(bigint, int) RETURNS bigint LANGUAGE sql IMMUTABLE"
               " AS 'SELECT $1 + 2'")
    db.execute("CREATE AGGREGATE trojan.count(int) (sfunc = trojan.add2, stype = bigint, initcond = '0')")
    db.execute("CREATE FUNCTION trojan.date_trunc(text, timestamptz) RETURNS timestamptz LANGUAGE plpgsql"
               " IMMUTABLE AS $$ BEGIN RETURN timestamptz '2000-01-01 00:00+00'; END $$")
    db.execute("CREATE FUNCTION trojan.time_bucket(interval, timestamptz) RETURNS timestamptz LANGUAGE plpgsql"
               " IMMUTABLE AS $$ BEGIN RETURN timestamptz '1999-01-01 00:00+00'; END $$")
    db.execute("CREATE FUNCTION trojan.date_bin(interval, timestamptz, timestamptz) RETURNS timestamptz"
               " LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN timestamptz '1998-01-01 00:00+00'; END $$")
    # a collation called "C" that is neither byte order nor deterministic
    db.execute("CREATE COLLATION trojan.\"C\" (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    db.execute("SET search_path = trojan, pg_catalog, public, orochi")
    return db


QUERIES = [
    "SELECT count(*) FROM {t} WHERE id = 5",
    "SELECT count(*) FROM {t} WHERE 5 = id",
    "SELECT count(*) FROM {t} WHERE id < 5",
    "SELECT count(*) FROM {t} WHERE id = ANY (ARRAY[1, 2])",
    "SELECT count(*) FROM {t} WHERE id = 5 OR id = 6",
    "SELECT sum(v) FROM {t} WHERE id = 35",
    "SELECT count(*) FROM {t} WHERE note ~~ 'zzz%'",
    "SELECT id FROM {t} WHERE id = 36 ORDER BY id",
    "SELECT count(id) FROM {t}",
    "SELECT count(id), count(*) FROM {t} WHERE v > 1",
    "SELECT date_trunc('day', ts) AS d, count(*) FROM {t} GROUP BY 1 ORDER BY 1",
    "SELECT time_bucket('1 day', ts) AS d, count(*) FROM {t} GROUP BY 1 ORDER BY 1",
    "SELECT date_bin('1 day', ts, '2000-01-01') AS d, count(*) FROM {t} GROUP BY 1 ORDER BY 1",
    "SELECT count(*) FROM {t} WHERE note = 'abc' COLLATE trojan.\"C\"",
    "SELECT count(*) FROM {t} WHERE note < 'abd' COLLATE trojan.\"C\"",
    "SELECT min(note COLLATE trojan.\"C\"), max(note COLLATE trojan.\"C\") FROM {t}",
    "SELECT note COLLATE trojan.\"C\", count(*) FROM {t} GROUP BY 1 ORDER BY 2, 1",
    "SELECT count(DISTINCT note COLLATE trojan.\"C\") FROM {t}",
]


@pytest.mark.parametrize("query", QUERIES)
def test_user_lookalikes_keep_their_meaning(tables, query):
    heap = tables.execute(query.format(t="h")).fetchall()
    columnar = tables.execute(query.format(t="c")).fetchall()
    assert columnar == heap, f"{query}: columnar {columnar} but heap {heap}"


def test_lookalikes_do_change_the_answers(tables):
    """The test above can fail: the trojans' answers differ from the
    built-ins'."""
    assert tables.execute("SELECT count(*) FROM h WHERE id = 5").fetchone() == (40,)
    assert tables.execute("SELECT count(*) FROM h WHERE id OPERATOR(pg_catalog.=) 5").fetchone() == (1,)
    assert tables.execute("SELECT count(*) FROM h WHERE id < 5").fetchone() == (0,)
    assert tables.execute("SELECT count(id) FROM h").fetchone() == (80,)
    assert tables.execute("SELECT count(*) FROM h WHERE note = 'abc' COLLATE trojan.\"C\"").fetchone() == (30,)
    assert tables.execute("SELECT count(*) FROM h WHERE note = 'abc' COLLATE pg_catalog.\"C\"").fetchone() == (10,)


def test_builtins_still_push_down(tables):
    """With the built-in objects (qualified), pushdown still happens."""
    plan = "\n".join(r[0] for r in tables.execute(
        "EXPLAIN SELECT pg_catalog.count(*) FROM c WHERE id OPERATOR(pg_catalog.=) 5"))
    assert "Aggregates" in plan, plan
    tables.execute("RESET search_path")
    plan = "\n".join(r[0] for r in tables.execute("EXPLAIN SELECT count(id) FROM c"))
    assert "Aggregates" in plan, plan


def test_collation_names_never_reach_sql_text(db):
    """A collation whose name closes the quoted identifier and goes on as a
    statement: the scan of the delta store must not run it."""
    db.execute("CREATE TABLE victim (v int)")
    db.execute("CREATE FOREIGN TABLE c (note text) SERVER orochi OPTIONS (delta_row_limit '100')")
    db.execute("CREATE TABLE h (note text)")
    for table in ("c", "h"):
        db.execute(sql.SQL("INSERT INTO {} VALUES ('a'), ('b'), ('c')").format(sql.Identifier(table)))
    name = 'x" ; DROP TABLE victim; --'
    db.execute(sql.SQL("CREATE COLLATION {} (locale = 'C')").format(sql.Identifier(name)))
    for table in ("c", "h"):
        rows = db.execute(sql.SQL("SELECT count(*) FROM {} WHERE note = 'b' COLLATE {}").format(
            sql.Identifier(table), sql.Identifier(name))).fetchall()
        assert rows == [(1,)]
    assert db.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone() == (True,)
