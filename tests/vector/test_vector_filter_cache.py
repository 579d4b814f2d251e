"""A filtered nearest-neighbour query's filter scan reads the table's stripes
from the scan's kept catalog records (checked by the catalog rows'
identities under the statement's snapshot), not the catalog: a stripe
written, a row deleted or updated by another session is seen by the next
query, with the filter applied to the new rows. The same query on a heap
table with the same rows is the oracle for the rows the test controls."""

from __future__ import annotations

import numpy as np
import pytest

from vector_helpers import clustered_vectors, text

D = 8
N = 3000


def copy_rows(conn, table: str, rows) -> None:
    with conn.cursor().copy(f"COPY {table} (id, cat, e) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


@pytest.fixture
def two(db, new_connection):
    """(session A, session B, the vectors): table t (columnar, 3 stripes,
    an HNSW index) and h (heap) with the same rows, cat = id % 10."""
    b = new_connection()
    for conn in (db, b):
        conn.execute("SET search_path = public, orochi")
    db.execute(f"CREATE FOREIGN TABLE t (id int, cat int, e vector({D})) SERVER orochi"
               " OPTIONS (delta_row_limit '0', stripe_row_limit '1000')")
    db.execute(f"CREATE TABLE h (id int, cat int, e vector({D}))")
    X = clustered_vectors(N, D, seed=9)
    rows = [(i, i % 10, text(v)) for i, v in enumerate(X)]
    for table in ("t", "h"):
        copy_rows(db, table, rows)
    db.execute("SELECT orochi.create_vector_index('t', 'e')")
    return db, b, X


def knn(conn, table: str, q, cat: int) -> list[int]:
    return [r[0] for r in conn.execute(f"SELECT id FROM {table} WHERE cat = %s ORDER BY e <-> %s LIMIT 10",
                                       [cat, text(q)]).fetchall()]


def how(conn, q, cat: int) -> str:
    plan = [r[0] for r in conn.execute("EXPLAIN ANALYZE SELECT id FROM t WHERE cat = %s ORDER BY e <-> %s LIMIT 10",
                                       [cat, text(q)]).fetchall()]
    return next(p for p in plan if "stripe(s) by index" in p)


def both(b, sql: str, params=()) -> None:
    for table in ("t", "h"):
        b.execute(sql.format(table=table), params)


def test_filtered_query_sees_other_sessions_changes(two):
    a, b, X = two
    q = X[17] + np.float32(0.01)                   # row 17: cat 7
    first = knn(a, "t", q, 7)
    assert len(first) == 10 and first[0] == 17 and all(i % 10 == 7 for i in first)
    assert "(filtered)" in how(a, q, 7)
    assert "catalog cached" in how(a, q, 7), "a later filtered query uses the kept records"
    assert knn(a, "t", q, 7)[:3] == knn(a, "h", q, 7)[:3]

    # another session deletes the nearest row (a new delete bitmap)
    both(b, "DELETE FROM {table} WHERE id = 17")
    got = knn(a, "t", q, 7)
    assert 17 not in got and len(got) == 10 and all(i % 10 == 7 for i in got)
    assert "catalog cached" in how(a, q, 7)

    # another session writes a stripe with rows nearer than any, of both
    # categories: only those passing the filter come back
    near = [(10_000 + i, 7 if i % 2 == 0 else 3, text(q + np.float32(1e-4 * (i + 1)))) for i in range(6)]
    for table in ("t", "h"):
        copy_rows(b, table, near)
    got = knn(a, "t", q, 7)
    assert got[:3] == [10_000, 10_002, 10_004] == knn(a, "h", q, 7)[:3]
    assert knn(a, "t", q, 3)[:3] == [10_001, 10_003, 10_005] == knn(a, "h", q, 3)[:3]
    assert "catalog cached" in how(a, q, 7)

    # another session moves a row out of the filter's category (UPDATE:
    # the old version deleted, the new one in a new stripe)
    both(b, "UPDATE {table} SET cat = 3 WHERE id = 10000")
    got = knn(a, "t", q, 7)
    assert got[:2] == [10_002, 10_004] and 10_000 not in got
    assert knn(a, "t", q, 3)[:2] == [10_000, 10_001] == knn(a, "h", q, 3)[:2]

    # the new rows deleted by another session: the original answer is back
    both(b, "DELETE FROM {table} WHERE id >= 10000")
    assert knn(a, "t", q, 7)[:5] == knn(a, "h", q, 7)[:5]
    assert not any(i >= 10_000 for i in knn(a, "t", q, 3))
