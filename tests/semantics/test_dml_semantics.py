"""INSERT, UPDATE and DELETE on orochi tables behave as on a heap table:
row counts, rows matched twice by a join, constraints, triggers."""

from __future__ import annotations

import itertools

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_counter = itertools.count()


def _rows(conn, table: str) -> list[tuple]:
    return sorted(conn.execute(f"SELECT k, v FROM {table}").fetchall(), key=repr)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(keys=st.lists(st.one_of(st.none(), st.integers(0, 12)), max_size=40),
       stripe_rows=st.integers(0, 40),
       src=st.lists(st.one_of(st.none(), st.integers(0, 14)), max_size=30),
       returning=st.booleans())
def test_update_delete_from_with_several_matches(mconn, keys, stripe_rows, src, returning):
    """UPDATE ... FROM and DELETE ... USING a join that matches a row more
    than once modify it once and count it once."""
    conn = mconn
    n = next(_counter)
    ct, heap, s = f"u{n}", f"u{n}_h", f"s{n}"
    conn.execute(f"CREATE FOREIGN TABLE {ct} (k int, v int) SERVER orochi OPTIONS (delta_row_limit '10')")
    conn.execute(f"CREATE TABLE {heap} (k int, v int)")
    conn.execute(f"CREATE TABLE {s} (k int)")
    try:
        for t in (ct, heap):
            # the first rows in stripes (one statement over delta_row_limit), the others in the delta store
            conn.execute(f"INSERT INTO {t} SELECT k, i FROM unnest(%s::int[]) WITH ORDINALITY AS x(k, i)"
                         f" WHERE i <= %s", (keys, max(stripe_rows, 11) if stripe_rows else 0))
            for i, k in enumerate(keys):
                if i + 1 > (max(stripe_rows, 11) if stripe_rows else 0):
                    conn.execute(f"INSERT INTO {t} VALUES (%s, %s)", (k, i + 1))
        conn.execute(f"INSERT INTO {s} SELECT unnest(%s::int[])", (src,))
        assert _rows(conn, ct) == _rows(conn, heap)

        counts = []
        for t in (ct, heap):
            cur = conn.execute(f"UPDATE {t} SET v = {t}.v + 100 FROM {s} WHERE {s}.k = {t}.k"
                               + (f" RETURNING {t}.k, {t}.v" if returning else ""))
            counts.append((cur.rowcount, sorted(cur.fetchall(), key=repr) if returning else None))
        assert counts[0] == counts[1]
        assert _rows(conn, ct) == _rows(conn, heap)

        counts = [conn.execute(f"DELETE FROM {t} USING {s} WHERE {s}.k = {t}.k - 1").rowcount for t in (ct, heap)]
        assert counts[0] == counts[1]
        assert _rows(conn, ct) == _rows(conn, heap)
    finally:
        conn.execute(f"DROP FOREIGN TABLE {ct}")
        conn.execute(f"DROP TABLE {heap}, {s}")


def test_update_from_counts_like_heap(db):
    db.execute("CREATE FOREIGN TABLE u (k int, v int) SERVER orochi")
    db.execute("CREATE TABLE uh (k int, v int)")
    db.execute("CREATE TABLE src (k int, w int)")
    db.execute("INSERT INTO src VALUES (1, 100), (1, 100), (2, 300)")
    for t in ("u", "uh"):
        db.execute(f"INSERT INTO {t} VALUES (1, 1), (2, 2), (3, 3)")
        assert db.execute(f"UPDATE {t} SET v = src.w FROM src WHERE src.k = {t}.k").rowcount == 2
        assert db.execute(f"DELETE FROM {t} USING src WHERE src.k = {t}.k").rowcount == 2
        assert db.execute(f"SELECT * FROM {t}").fetchall() == [(3, 3)]


# ---------------------------------------------------------------- constraints

CONSTRAINED = "(k int NOT NULL, v int CHECK (v > 0), w text, CONSTRAINT w_after_v CHECK (w IS NULL OR w > v::text))"


def _outcome(conn, statement: str, table: str, copy_rows: list | None = None):
    """(rowcount, None) or (None, (sqlstate, message, detail)) with the
    table's name written as T, so that a heap table's errors compare."""
    try:
        if copy_rows is not None:
            with conn.cursor().copy(statement.format(T=table)) as cp:
                for row in copy_rows:
                    cp.write_row(row)
            return (len(copy_rows), None)
        return (conn.execute(statement.format(T=table)).rowcount, None)
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        diag = getattr(exc, "diag", None)
        if diag is None:
            raise
        constraint = diag.constraint_name or ""
        if constraint.startswith(table + "_"):
            constraint = "T" + constraint[len(table):]
        return (None, (diag.sqlstate, diag.message_primary.replace(f'"{table}"', '"T"')
                       .replace(f'"{table}_', '"T_'),
                       diag.message_detail, constraint, diag.column_name))


CONSTRAINT_CASES = [
    ("INSERT INTO {T} VALUES (NULL, 1, NULL)", None),
    ("INSERT INTO {T} VALUES (1, -1, NULL)", None),
    ("INSERT INTO {T} VALUES (1, 5, '3')", None),
    ("INSERT INTO {T} VALUES (1, 5, '6'), (2, 7, NULL)", None),
    ("INSERT INTO {T} SELECT i, i - 5, NULL FROM generate_series(1, 30000) i", None),  # a batch, late failure
    ("INSERT INTO {T} SELECT i, i, NULL FROM generate_series(1, 30000) i", None),
    ("INSERT INTO {T} (v) VALUES (1)", None),
    ("INSERT INTO {T} VALUES (1, NULL, NULL)", None),  # a CHECK on NULL passes
    ("COPY {T} FROM STDIN", [(1, 2, None), (2, 0, None)]),
    ("COPY {T} FROM STDIN", [(1, 2, None), (None, 3, None)]),
    ("COPY {T} FROM STDIN", [(1, 2, None), (3, 3, "4")]),
    ("UPDATE {T} SET v = -v WHERE k = 3", None),
    ("UPDATE {T} SET k = NULL WHERE k = 5", None),
    ("UPDATE {T} SET w = '0' WHERE k = 7", None),
    ("UPDATE {T} SET v = v + 1 WHERE k < 20", None),
]


def test_constraints_enforced_like_heap(db):
    """NOT NULL and CHECK constraints hold on INSERT, INSERT ... SELECT, COPY
    and UPDATE with the heap table's SQLSTATE, message and detail; the rows
    of a failed statement are not kept."""
    db.execute(f"CREATE FOREIGN TABLE c {CONSTRAINED} SERVER orochi OPTIONS (delta_row_limit '5')")
    db.execute(f"CREATE TABLE ch {CONSTRAINED}")
    for t in ("c", "ch"):
        db.execute(f"INSERT INTO {t} SELECT i, i, NULL FROM generate_series(1, 10) i")  # stripes
        db.execute(f"INSERT INTO {t} VALUES (11, 11, NULL), (12, 12, '2')")  # delta rows
    for statement, copy_rows in CONSTRAINT_CASES:
        got = _outcome(db, statement, "c", copy_rows)
        want = _outcome(db, statement, "ch", copy_rows)
        assert got == want, statement
        assert sorted(db.execute("SELECT * FROM c").fetchall(), key=repr) == \
            sorted(db.execute("SELECT * FROM ch").fetchall(), key=repr), statement
    assert any(want[1] and want[1][0] == "23502" for want in [_outcome(db, CONSTRAINT_CASES[0][0], "ch")])


def test_constraints_of_a_hypertable(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz NOT NULL, v int CHECK (v >= 0)) SERVER orochi")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute("INSERT INTO m VALUES ('2024-01-01', 1)")
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation, match='violates check constraint "m_v_check"'):
        db.execute("INSERT INTO m SELECT timestamptz '2024-01-01' + i * interval '1 hour', 10 - i"
                   " FROM generate_series(1, 50) i")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE m SET v = -1")
    assert db.execute("SELECT count(*), sum(v) FROM m").fetchone() == (1, 1)


# ---------------------------------------------------------------- triggers and functions see the writes

_LOGGER = """
CREATE TABLE log (tbl text, event text, n bigint, s bigint);
CREATE FUNCTION log_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE n bigint; s bigint;
BEGIN
    EXECUTE format('SELECT count(*), sum(v) FROM %I', TG_TABLE_NAME) INTO n, s;
    INSERT INTO log VALUES (TG_TABLE_NAME, TG_WHEN || ' ' || TG_LEVEL || ' ' || TG_OP, n, s);
    IF TG_WHEN = 'BEFORE' AND TG_LEVEL = 'ROW' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RETURN NULL;
END $$;
"""

TRIGGER_STATEMENTS = [
    ("INSERT INTO {T} VALUES (1, 1), (2, 2), (3, 3)", None),
    ("INSERT INTO {T} SELECT i, i FROM generate_series(10, 30) i", None),  # over delta_row_limit: stripes
    ("COPY {T} FROM STDIN", [(40, 40), (41, 41), (42, 42)]),
    ("UPDATE {T} SET v = v * 10 WHERE k % 2 = 0", None),
    ("DELETE FROM {T} WHERE k % 3 = 0", None),
    ("INSERT INTO {T} VALUES (100, 100)", None),
    ("DELETE FROM {T} WHERE k = 100", None),
]


@pytest.mark.parametrize("timing,level", [("AFTER", "STATEMENT"), ("AFTER", "ROW"), ("BEFORE", "ROW"),
                                          ("BEFORE", "STATEMENT")])
@pytest.mark.parametrize("hypertable", [False, True])
def test_triggers_see_the_statements_rows(db, timing, level, hypertable):
    """A trigger reading the table sees what it sees in a heap table: AFTER
    triggers every row of the statement, a BEFORE ROW trigger the rows
    written before its row."""
    db.execute(_LOGGER)
    if hypertable:
        db.execute("CREATE FOREIGN TABLE t (k int, v bigint) SERVER orochi OPTIONS (delta_row_limit '10')")
        db.execute("SELECT orochi.create_hypertable('t', 'k', chunk_time_interval => 16)")
    else:
        db.execute("CREATE FOREIGN TABLE t (k int, v bigint) SERVER orochi OPTIONS (delta_row_limit '10')")
    db.execute("CREATE TABLE th (k int, v bigint)")
    for table in ("t", "th"):
        db.execute(f"CREATE TRIGGER trig {timing} INSERT OR UPDATE OR DELETE ON {table}"
                   f" FOR EACH {level} EXECUTE FUNCTION log_rows()")
    for statement, copy_rows in TRIGGER_STATEMENTS:
        assert _outcome(db, statement, "t", copy_rows) == _outcome(db, statement, "th", copy_rows), statement
    logs = {}
    for table in ("t", "th"):
        logs[table] = sorted(db.execute("SELECT event, n, s FROM log WHERE tbl = %s", (table,)).fetchall(),
                             key=repr)
    assert logs["t"] == logs["th"]
    assert len(logs["t"]) >= len(TRIGGER_STATEMENTS)


_FUNCTIONS = """
CREATE FUNCTION rows_of(tbl text) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %I', tbl) INTO n;
    RETURN n;
END $$;
CREATE FUNCTION rows_of_stable(tbl text) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %I', tbl) INTO n;
    RETURN n;
END $$;
CREATE FUNCTION sum_of(tbl text) RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT 0::bigint $$;
"""


@pytest.mark.parametrize("statement", [
    "INSERT INTO {T} SELECT i, rows_of('{T}') FROM generate_series(1, 25) i",
    "INSERT INTO {T} SELECT i, rows_of_stable('{T}') FROM generate_series(1, 25) i",
    "INSERT INTO {T} SELECT i, (SELECT rows_of('{T}')) + i FROM generate_series(1, 25) i",
    "INSERT INTO {T} VALUES (1, rows_of('{T}')), (2, rows_of('{T}')), (3, rows_of('{T}'))",
    "INSERT INTO {T} SELECT k + 100, rows_of('{T}') FROM {T}",
    "UPDATE {T} SET v = rows_of('{T}') WHERE k % 2 = 1",
    "DELETE FROM {T} WHERE rows_of('{T}') < 0",
])
def test_functions_called_by_a_statement_see_its_rows(db, statement):
    """A volatile function called for each row sees the rows written before
    it (its queries take new snapshots), a stable one the statement's
    snapshot only: as with a heap table."""
    db.execute(_FUNCTIONS)
    db.execute("CREATE FOREIGN TABLE t (k int, v bigint) SERVER orochi OPTIONS (delta_row_limit '10')")
    db.execute("CREATE TABLE th (k int, v bigint)")
    for table in ("t", "th"):
        db.execute(f"INSERT INTO {table} SELECT i, 0 FROM generate_series(1, 12) i")
    got = _outcome(db, statement.replace("{T}", "t"), "t")
    want = _outcome(db, statement.replace("{T}", "th"), "th")
    assert got == want
    assert sorted(db.execute("SELECT k, v FROM t").fetchall()) == sorted(db.execute("SELECT k, v FROM th").fetchall())
