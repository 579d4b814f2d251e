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
