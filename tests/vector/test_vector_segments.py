"""Index files over several stripes (segments): ``create_vector_index`` on a
table that already has stripes builds one file for a run of them. Searches
through it equal numpy's exact answer where they are exact (and keep its
rows where they go through the graph), never return a deleted or updated
row's old version, and the exact search over the file's stored vectors
equals numpy's order. A crash between the file and its catalog rows leaves
an orphan that ``orochi.vacuum()`` removes."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from orochi_fdw.testing.faults import run_until
from orochi_fdw.vector import reference
from vector_helpers import clustered_vectors, load, text

D = 16
N = 9000


def _knn(live: dict[int, np.ndarray], q: np.ndarray, k: int, allow=lambda i: True) -> list[int]:
    """numpy's exact k nearest (l2, the kernels' arithmetic; ties by id)."""
    ids = np.array(sorted(i for i in live if allow(i)), dtype=np.int64)
    if len(ids) == 0:
        return []
    X = np.vstack([live[int(i)] for i in ids])
    return ids[reference.knn(X, q, min(k, len(ids)), "l2")].tolist()


def _how(x, sql: str, params) -> str:
    plan = [r[0] for r in x("EXPLAIN ANALYZE " + sql, params).fetchall()]
    return next(p for p in plan if "stripe(s) by index" in p)


@pytest.fixture
def x(db):
    db.execute("SET search_path = public, orochi")
    return db.execute


def test_segment_search_after_deletes_and_updates(db, x):
    X = clustered_vectors(N, D, seed=31)
    cats = np.arange(N) % 10
    x(f"CREATE FOREIGN TABLE t (id int, cat int, e vector({D})) SERVER orochi"
      " OPTIONS (delta_row_limit '0', stripe_row_limit '3000')")
    load(db, "t", X, cats)
    x("SELECT orochi.create_vector_index('t', 'e')")
    assert x("SELECT count(DISTINCT file_path), count(*) FROM orochi.columnar_vector_index_files"
             ).fetchone() == (1, 3), "one file for the three stripes, a row per stripe"
    live = {i: X[i] for i in range(N)}
    rng = np.random.default_rng(7)
    queries = [X[j] + rng.normal(0, 0.05, D).astype(np.float32) for j in rng.choice(N, 6, replace=False)]

    # every row wanted: exact over the file's stored vectors, numpy's order
    sql = "SELECT id FROM t ORDER BY e <-> %s LIMIT 9500"
    assert "3 exactly (3 over index files' vectors)" in _how(x, sql, [text(queries[0])])
    for q in queries[:2]:
        assert [r[0] for r in x(sql, [text(q)]).fetchall()] == _knn(live, q, N)

    deleted = [i for i in range(N) if i % 7 == 0]
    x("DELETE FROM t WHERE id % 7 = 0")
    for i in deleted:
        del live[i]
    # updates into the delta store: the graph still holds the old vectors
    x("ALTER FOREIGN TABLE t OPTIONS (SET delta_row_limit '1000')")
    updated = [i for i in range(1, N, 97) if i in live][:40]
    for n, i in enumerate(updated):
        v = queries[n % len(queries)] + rng.normal(0, 0.02, D).astype(np.float32)
        x("UPDATE t SET e = %s WHERE id = %s", [text(v), i])
        live[i] = v
    assert x("SELECT count(*) FROM t").fetchone()[0] == len(live)

    got_all, truth_all = [], []
    for q in queries:
        # through the graph: k rows, none deleted, updated rows by their new vector
        rows = x("SELECT id, e::real[] FROM t ORDER BY e <-> %s LIMIT 10", [text(q)]).fetchall()
        assert len(rows) == 10
        for rid, e in rows:
            assert rid in live, f"deleted row {rid} returned"
            assert np.array_equal(np.asarray(e, dtype=np.float32), live[rid]), f"row {rid}'s current vector"
        got_all.append([r[0] for r in rows])
        truth_all.append(_knn(live, q, 10))
        # a filter letting few rows through: exact over the file's vectors, with the live rows only
        sql = "SELECT id FROM t WHERE id < 200 ORDER BY e <-> %s LIMIT 10"
        assert [r[0] for r in x(sql, [text(q)]).fetchall()] == _knn(live, q, 10, lambda i: i < 200)
        # a filter the graph serves (10%): k rows that pass it
        ids = [r[0] for r in x("SELECT id FROM t WHERE cat = 3 ORDER BY e <-> %s LIMIT 10", [text(q)]).fetchall()]
        assert len(ids) == 10 and all(i in live and i % 10 == 3 for i in ids)
    assert "over index files' vectors" in _how(x, "SELECT id FROM t WHERE id < 200 ORDER BY e <-> %s LIMIT 10",
                                               [text(queries[0])])
    assert "1 round(s)" in _how(x, "SELECT id FROM t ORDER BY e <-> %s LIMIT 10", [text(queries[0])]), \
        "the three stripes searched in one graph"
    hits = sum(len(set(g) & set(t)) for g, t in zip(got_all, truth_all))
    assert hits >= 0.9 * 10 * len(queries)
    # the updated rows (new vectors next to the queries) must be found
    for q, g, t in zip(queries, got_all, truth_all):
        assert set(t) & set(updated) <= set(g)

    # vacuum rewrites the first stripe only (a third of it deleted): the
    # segment's file stays for the two others and still holds the first
    # stripe's old rows, which must not come back (their stripe is gone);
    # those rows are found in the rewritten stripe
    x("DELETE FROM t WHERE id < 1000")
    for i in [i for i in live if i < 1000]:
        del live[i]
    x("SELECT * FROM orochi.vacuum('t', 0.2)")
    assert x("SELECT count(DISTINCT file_path), count(*) FROM orochi.columnar_vector_index_files"
             " WHERE file_bytes = 0").fetchone() == (1, 2), "the segment's file still named by the two other stripes"
    near = [X[j] + rng.normal(0, 0.05, D).astype(np.float32) for j in range(1000, 3000, 400) if j in live]
    for q in near:
        rows = x("SELECT id, e::real[] FROM t ORDER BY e <-> %s LIMIT 10", [text(q)]).fetchall()
        ids = [r[0] for r in rows]
        assert len(ids) == 10 and len(set(ids)) == 10 and all(i in live for i in ids), \
            "a rewritten row only once, from its new stripe"
        for rid, e in rows:
            assert np.array_equal(np.asarray(e, dtype=np.float32), live[rid])
        assert [r[0] for r in x("SELECT id FROM t ORDER BY e <-> %s LIMIT 9500", [text(q)]).fetchall()] \
            == _knn(live, q, N)


@pytest.mark.allow_backend_crash
def test_crash_while_building_a_segment(make_cluster):
    """kill -9 while create_vector_index waits after writing its file: after
    restart no catalog row names the file and orochi.vacuum() removes it;
    the index can then be made again."""
    pg = make_cluster("vsegcrash")
    pg.create_database("c")
    conn = pg.connect("c", autocommit=True)
    conn.execute("SET search_path = public, orochi")
    conn.execute(f"CREATE FOREIGN TABLE t (id int, cat int, e vector({D})) SERVER orochi"
                 " OPTIONS (delta_row_limit '0', stripe_row_limit '3000')")
    X = clustered_vectors(6000, D, seed=41)
    load(conn, "t", X)
    folder = os.path.dirname(conn.execute(
        "SELECT current_setting('data_directory') || '/' || orochi._file_path(file_path)"
        "  FROM orochi.columnar_stripes LIMIT 1").fetchone()[0])
    conn.close()
    run_until(pg.dsn("c"), "vector_index:after_file", "SELECT orochi.create_vector_index('t', 'e')",
              kill=lambda: pg.kill9(kill_children=True))
    left = glob.glob(os.path.join(folder, "*.vindex"))
    assert len(left) == 1, "the file was written before the crash"
    pg.start()
    with pg.connect("c", autocommit=True) as conn:
        conn.execute("SET search_path = public, orochi")
        assert conn.execute("SELECT count(*) FROM orochi.columnar_vector_indexes").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM orochi.columnar_vector_index_files").fetchone() == (0,)
        conn.execute("SELECT orochi.vacuum()")
        assert glob.glob(os.path.join(folder, "*.vindex")) == [], "the orphan is collected"
        conn.execute("SELECT orochi.create_vector_index('t', 'e')")
        assert conn.execute("SELECT count(DISTINCT file_path), count(*) FROM orochi.columnar_vector_index_files"
                            ).fetchone() == (1, 2)
        q = X[10]
        ids = [r[0] for r in conn.execute("SELECT id FROM t ORDER BY e <-> %s LIMIT 5", [text(q)]).fetchall()]
        assert ids[0] == 10
