"""INSERT, UPDATE and DELETE on orochi tables behave as on a heap table:
row counts, rows matched twice by a join, constraints, triggers."""

from __future__ import annotations

import itertools

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
