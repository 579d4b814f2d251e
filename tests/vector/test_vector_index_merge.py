"""orochi.vector_index_merge: the per-stripe index files written after an
index was built are merged into one segment; queries find the heap table's
nearest rows before and after (recall at least 0.95), deleted rows stay excluded,
the old files are removed at commit, a rollback keeps them and removes the
new one."""

from __future__ import annotations

import os

import numpy as np
import psycopg
import pytest

from vector_helpers import clustered_vectors, text

D = 8
PER_STRIPE = 2500          # above the 2,000 vectors a stripe needs for a file of its own


def copy_rows(conn, table: str, X: np.ndarray, first: int) -> None:
    with conn.cursor().copy(f"COPY {table} (id, e) FROM STDIN") as cp:
        for i, v in enumerate(X):
            cp.write_row((first + i, text(v)))


def index_files(conn) -> list[str]:
    """The index files of t, as paths of this machine."""
    return sorted({r[0] for r in conn.execute(
        "SELECT current_setting('data_directory') || '/' || orochi._file_path(f.file_path)"
        "  FROM orochi.columnar_vector_index_files f WHERE f.relid = 't'::regclass").fetchall()})


def on_disk(conn, paths: list[str]) -> list[bool]:
    return [os.path.exists(p) for p in paths]


def answers(conn, table: str, Q) -> list[list[int]]:
    return [[r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY e <-> %s LIMIT 10",
                                        [text(q)]).fetchall()] for q in Q]


@pytest.fixture
def merged_table(db):
    """Table t: an index made on its first stripe, then three stripes
    written (a file each); h: a heap table with the same rows."""
    db.execute("SET search_path = public, orochi")
    db.execute(f"CREATE FOREIGN TABLE t (id int, e vector({D})) SERVER orochi"
               f" OPTIONS (delta_row_limit '0', stripe_row_limit '{PER_STRIPE}')")
    db.execute(f"CREATE TABLE h (id int, e vector({D}))")
    X = clustered_vectors(4 * PER_STRIPE, D, seed=11, clusters=20)
    copy_rows(db, "t", X[:PER_STRIPE], 0)
    db.execute("SELECT orochi.create_vector_index('t', 'e')")
    for s in range(1, 4):
        copy_rows(db, "t", X[s * PER_STRIPE:(s + 1) * PER_STRIPE], s * PER_STRIPE)
    copy_rows(db, "h", X, 0)
    return db, X


def recall(got: list[list[int]], exact: list[list[int]]) -> float:
    return sum(len(set(g) & set(e)) for g, e in zip(got, exact)) / sum(len(e) for e in exact)


def test_merge_keeps_answers_and_deleted_rows_out(merged_table):
    conn, X = merged_table
    # HNSW is approximate: a graph built by several threads leaves a row
    # unreachable now and then (seen with an ef as large as the table), so
    # the answers before and after the merge are held to a recall against the
    # heap's exact ones, not to equality; deleted rows never appear
    conn.execute("SET orochi.hnsw_ef_search = 500")
    rng = np.random.default_rng(3)
    Q = X[rng.choice(len(X), 12, replace=False)] + np.float32(0.01)
    deleted = [int(i) for i in rng.choice(len(X), 40, replace=False)]
    # the nearest rows of some queries among the deleted ones
    deleted += [answers(conn, "h", Q[:3])[j][0] for j in range(3)]
    for table in ("t", "h"):
        conn.execute(f"DELETE FROM {table} WHERE id = ANY (%s)", [deleted])
    before_files = index_files(conn)
    assert len(before_files) == 4, "one file per stripe"
    exact = answers(conn, "h", Q)
    assert recall(answers(conn, "t", Q), exact) >= 0.95

    # a rollback keeps the old files and removes the new one
    conn.execute("BEGIN")
    assert conn.execute("SELECT orochi.vector_index_merge('t')").fetchone()[0] == 1
    during = index_files(conn)
    conn.execute("ROLLBACK")
    assert index_files(conn) == before_files and all(on_disk(conn, before_files))
    assert not any(on_disk(conn, [p for p in during if p not in before_files]))

    assert conn.execute("SELECT orochi.vector_index_merge('t')").fetchone()[0] == 1
    after_files = index_files(conn)
    assert len(after_files) == 1 and after_files[0] not in before_files
    assert on_disk(conn, after_files) == [True] and not any(on_disk(conn, before_files))
    rows = conn.execute("SELECT count(*), sum(row_count) FROM orochi.columnar_vector_index_files"
                        " WHERE relid = 't'::regclass").fetchone()
    assert rows == (4, 4 * PER_STRIPE)
    plan = [r[0] for r in conn.execute("EXPLAIN ANALYZE SELECT id FROM t ORDER BY e <-> %s LIMIT 10",
                                       [text(Q[5])]).fetchall()]
    assert any("4 stripe(s) by index (1 round(s))" in p for p in plan), plan
    after = answers(conn, "t", Q)
    assert recall(after, exact) >= 0.95
    assert not set(deleted) & {i for a in after for i in a}

    # nothing left to merge; a stripe written since gets its own file, merged next time
    assert conn.execute("SELECT orochi.vector_index_merge('t')").fetchone()[0] == 0
    copy_rows(conn, "t", X[:PER_STRIPE] + np.float32(0.5), 100_000)
    assert len(index_files(conn)) == 2
    assert conn.execute("SELECT orochi.vector_index_merge('t')").fetchone()[0] == 1
    assert len(index_files(conn)) == 1


def test_merge_needs_the_owner(db, new_connection):
    db.execute("CREATE ROLE merge_reader LOGIN")
    db.execute("CREATE FOREIGN TABLE m (id int, e orochi.vector(3)) SERVER orochi")
    db.execute("GRANT SELECT, INSERT ON m TO merge_reader")
    other = new_connection(user="merge_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        other.execute("SELECT orochi.vector_index_merge('m')")
    assert db.execute("SELECT orochi.vector_index_merge('m')").fetchone()[0] == 0


@pytest.mark.slow
@pytest.mark.allow_backend_crash
def test_crash_while_merging(make_cluster):
    """kill -9 while vector_index_merge waits after writing its segment's
    file: after restart the old files are still the index's (their rows'
    deletion did not commit), the new file is an orphan that
    orochi.vacuum() removes, and the merge can be made again."""
    import glob

    from orochi_fdw.testing.faults import run_until

    pg = make_cluster("vmergecrash")
    pg.create_database("c")
    conn = pg.connect("c", autocommit=True)
    conn.execute("SET search_path = public, orochi")
    conn.execute(f"CREATE FOREIGN TABLE t (id int, e vector({D})) SERVER orochi"
                 f" OPTIONS (delta_row_limit '0', stripe_row_limit '{PER_STRIPE}')")
    X = clustered_vectors(3 * PER_STRIPE, D, seed=12, clusters=20)
    copy_rows(conn, "t", X[:PER_STRIPE], 0)
    conn.execute("SELECT orochi.create_vector_index('t', 'e')")
    copy_rows(conn, "t", X[PER_STRIPE:2 * PER_STRIPE], PER_STRIPE)
    copy_rows(conn, "t", X[2 * PER_STRIPE:], 2 * PER_STRIPE)
    old = index_files(conn)
    assert len(old) == 3
    folder = os.path.dirname(old[0])
    conn.close()
    run_until(pg.dsn("c"), "vector_index:after_file", "SELECT orochi.vector_index_merge('t')",
              kill=lambda: pg.kill9(kill_children=True))
    assert len(glob.glob(os.path.join(folder, "*.vindex"))) == 4, "the segment was written before the crash"
    pg.start()
    with pg.connect("c", autocommit=True) as conn:
        conn.execute("SET search_path = public, orochi")
        assert index_files(conn) == old
        conn.execute("SELECT orochi.vacuum()")
        assert sorted(glob.glob(os.path.join(folder, "*.vindex"))) == old, "the orphan is collected"
        q = X[PER_STRIPE + 7] + np.float32(0.001)
        assert conn.execute("SELECT id FROM t ORDER BY e <-> %s LIMIT 1", [text(q)]).fetchone()[0] == PER_STRIPE + 7
        assert conn.execute("SELECT orochi.vector_index_merge('t')").fetchone()[0] == 1
        assert len(index_files(conn)) == 1 and glob.glob(os.path.join(folder, "*.vindex")) == index_files(conn)
