"""The catalog records a nearest-neighbour scan keeps per backend (stripes,
delete bitmaps, the index and its files): the next query sees every change
committed by another session, made earlier in its own transaction, or
rolled back, and a REPEATABLE READ transaction keeps its snapshot's view
(the cache is keyed by the catalog rows' identities under the statement's
snapshot, or not read at all under the snapshot they were last checked
under). EXPLAIN ANALYZE says whether the records came from the cache, so
that the queries checked in between really are served from it."""

from __future__ import annotations

import numpy as np
import pytest

from vector_helpers import clustered_vectors, load, text

D = 8
N = 3000


@pytest.fixture
def two(db, new_connection):
    """(session A, session B) on one test database with table t: 3000 rows
    in 3 stripes and an HNSW index over them."""
    b = new_connection()
    for conn in (db, b):
        conn.execute("SET search_path = public, orochi")
    db.execute(f"CREATE FOREIGN TABLE t (id int, cat int, e vector({D})) SERVER orochi"
               " OPTIONS (delta_row_limit '0', stripe_row_limit '1000')")
    X = clustered_vectors(N, D, seed=5)
    load(db, "t", X)
    db.execute("SELECT orochi.create_vector_index('t', 'e')")
    return db, b, X


SQL = "SELECT id FROM t ORDER BY e <-> %s LIMIT 10"


def knn(conn, q) -> list[int]:
    return [r[0] for r in conn.execute(SQL, [text(q)]).fetchall()]


def how(conn, q) -> str:
    plan = [r[0] for r in conn.execute("EXPLAIN ANALYZE " + SQL, [text(q)]).fetchall()]
    return next(p for p in plan if "stripe(s) by index" in p)


def near(q, n: int, start: int, scale: float = 1e-4) -> list[tuple[int, str]]:
    """n vectors nearer to q than any of the table's, with ids from start."""
    return [(start + i, text(q + np.float32(scale * (i + 1)))) for i in range(n)]


def insert(conn, rows) -> None:
    with conn.cursor().copy("COPY t (id, e) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


def test_catalog_cache_sees_every_change(two):
    a, b, X = two
    q = X[17] + np.float32(0.01)
    first = knn(a, q)
    assert len(first) == 10 and first[0] == 17
    assert "3 stripe(s) by index" in how(a, q)
    assert "catalog cached" in how(a, q), "a later query of the backend uses the kept records"
    assert "catalog cached" in how(a, q)

    # another session deletes the nearest row: a new delete bitmap
    b.execute("DELETE FROM t WHERE id = 17")
    got = knn(a, q)
    assert 17 not in got and len(got) == 10
    assert "catalog cached" in how(a, q)

    # another session writes a new stripe with rows nearer than any
    insert(b, near(q, 3, 10_000))
    assert knn(a, q)[:3] == [10_000, 10_001, 10_002]

    # this session updates a row to the query vector, in a transaction: seen
    # inside it, the old records back after the rollback
    a.execute("BEGIN")
    a.execute("UPDATE t SET e = %s WHERE id = 400", [text(q)])
    assert knn(a, q)[0] == 400
    a.execute("DELETE FROM t WHERE id = 10000")
    assert 10_000 not in knn(a, q)
    a.execute("ROLLBACK")
    got = knn(a, q)
    assert got[:3] == [10_000, 10_001, 10_002] and 400 not in got[:3]
    assert "catalog cached" in how(a, q)

    # the index dropped and made again by another session
    b.execute("SELECT orochi.drop_vector_index('t', 'e')")
    assert "0 stripe(s) by index" in how(a, q)
    assert knn(a, q)[:3] == [10_000, 10_001, 10_002]
    b.execute("SELECT orochi.create_vector_index('t', 'e')")
    assert "4 stripe(s) by index" in how(a, q), "the three stripes and the one written since"

    assert knn(a, q)[:3] == [10_000, 10_001, 10_002]

    # a REPEATABLE READ transaction keeps its snapshot's view while another
    # session commits rows, and sees them in its next transaction
    a.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert knn(a, q)[0] == 10_000
    insert(b, near(q, 2, 20_000, scale=1e-6))
    assert knn(a, q)[0] == 10_000, "the transaction's snapshot does not see the new stripe"
    a.execute("COMMIT")
    assert knn(a, q)[:2] == [20_000, 20_001], "the next transaction does (the records built meanwhile are not used)"

    # TRUNCATE in another session: nothing left
    b.execute("TRUNCATE t")
    assert knn(a, q) == []


def test_delta_rows_after_an_empty_delta_store(two):
    """The delta store's scan is skipped while its table has no block; a
    row another session inserts there is found by the next query, and a row
    deleted from it is not returned."""
    a, b, X = two
    q = X[3] + np.float32(0.01)
    assert "delta rows 0" in how(a, q)
    b.execute("ALTER FOREIGN TABLE t OPTIONS (SET delta_row_limit '100')")
    b.execute("INSERT INTO t (id, e) VALUES (%s, %s)", [50_000, text(q)])
    assert knn(a, q)[0] == 50_000
    assert "delta rows 1" in how(a, q)
    b.execute("DELETE FROM t WHERE id = 50000")
    assert 50_000 not in knn(a, q)


def test_same_snapshot_reads_no_identities(two):
    """Under the snapshot the kept records were last checked under (a
    REPEATABLE READ transaction that has no transaction id) not even the
    catalog rows' identities are read: another session's commit meanwhile
    stays unseen there and is seen by the next transaction; once the
    transaction has written (it has an id: its own changes are seen) the
    identities are read again."""
    a, b, X = two
    q = X[17] + np.float32(0.01)
    a.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert knn(a, q)[0] == 17
    assert "catalog cached (same snapshot)" in how(a, q)
    b.execute("DELETE FROM t WHERE id = 17")
    insert(b, near(q, 2, 30_000))
    assert knn(a, q)[0] == 17
    assert "(same snapshot)" in how(a, q)
    a.execute("COMMIT")
    got = knn(a, q)
    assert got[:2] == [30_000, 30_001] and 17 not in got

    a.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert knn(a, q)[0] == 30_000
    assert "(same snapshot)" in how(a, q)
    a.execute("DELETE FROM t WHERE id = 30000")
    assert knn(a, q)[0] == 30_001, "the transaction's own delete is seen"
    assert "(same snapshot)" not in how(a, q)
    a.execute("ROLLBACK")
    assert knn(a, q)[0] == 30_000


def test_planner_estimate_sees_every_change(two):
    """The planner's estimate of a query without quals on a table with a
    vector column comes from the same kept records: its row count follows
    another session's new stripe and delete, a delta-store row, and its own
    transaction's changes and its rollback."""
    a, b, X = two

    def rows(conn) -> float:
        plan = [r[0] for r in conn.execute("EXPLAIN " + SQL, [text(X[0])]).fetchall()]
        scan = next(p for p in plan if "Foreign Scan" in p)
        return float(scan.split("rows=")[1].split()[0])

    assert rows(a) == N
    knn(a, X[0])
    insert(b, near(X[0], 1000, 10_000))                  # another session: a new stripe
    assert rows(a) == N + 1000
    b.execute("DELETE FROM t WHERE id < 500")
    assert rows(a) == N + 500
    b.execute("ALTER FOREIGN TABLE t OPTIONS (SET delta_row_limit '1000')")
    b.execute("INSERT INTO t (id, e) VALUES (20000, %s)", [text(X[1])])   # the delta store
    assert rows(a) == N + 501
    a.execute("BEGIN")
    a.execute("DELETE FROM t WHERE id >= 10000 AND id < 10100")      # its own transaction
    assert rows(a) == N + 401
    a.execute("ROLLBACK")
    assert rows(a) == N + 501
