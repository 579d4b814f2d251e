"""kill -9 of the postmaster during a compaction and during a vacuum, each
paused at a fault point (after writing stripes, after moving rows, just
before COMMIT): after restart the table holds exactly what was committed
(nothing lost, nothing twice), the interrupted work's files are orphans
orochi.vacuum() collects, and compaction and vacuum then finish the job."""

from __future__ import annotations

import pytest

from columnar_helpers import assert_same_rows, catalog_files, files_on_disk
from orochi_fdw.testing.faults import run_until


def _setup(pg, delta: bool):
    pg.create_database("c")
    conn = pg.connect("c", autocommit=True)
    cols = "id int, k int, v text"
    limit = "1000000" if delta else "0"
    conn.execute(f"CREATE FOREIGN TABLE t ({cols}) SERVER orochi OPTIONS "
                 f"(delta_row_limit '{limit}', stripe_row_limit '4000', chunk_group_size '500')")
    conn.execute(f"CREATE TABLE h ({cols})")
    for name in ("t", "h"):
        conn.execute(f"INSERT INTO {name} SELECT g, g % 10, md5(g::text) FROM generate_series(1, 40000) g")
    return conn


def _kill_during(pg, conn, sql: str, point: str) -> None:
    """Run sql in another session, kill -9 the postmaster while it waits at
    the fault point, start it again."""
    conn.close()
    run_until(pg.dsn("c"), point, sql, kill=lambda: pg.kill9(kill_children=True))
    pg.start()


def _check_and_finish(pg) -> None:
    with pg.connect("c", autocommit=True) as conn:
        assert_same_rows(conn, "t", "h")
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchone() == (40000 - 0, 40000) \
            or conn.execute("SELECT count(*) = count(DISTINCT id) FROM t").fetchone()[0]
        removed, _ = conn.execute("SELECT * FROM orochi.vacuum()").fetchone()
        assert files_on_disk(conn) == catalog_files(conn)
        conn.execute("SELECT orochi.compact('t')")
        conn.execute("SELECT orochi.vacuum('t', 0)")
        assert_same_rows(conn, "t", "h")
        conn.execute("SELECT orochi.vacuum('t', 0)")
        conn.execute("SELECT orochi.vacuum()")
        assert files_on_disk(conn) == catalog_files(conn)
        assert conn.execute("SELECT delta_rows FROM orochi.delta_size('t')").fetchone()[0] == 0
        for name in ("t", "h"):
            conn.execute(f"UPDATE {name} SET k = -1 WHERE id % 100 = 0")
        assert_same_rows(conn, "t", "h")


@pytest.mark.allow_backend_crash
@pytest.mark.parametrize("point", ["compact:after_write@2", "compact:after_move", "compact:before_commit"])
def test_kill9_during_compaction(make_cluster, point):
    pg = make_cluster("crashc")
    conn = _setup(pg, delta=True)
    for name in ("t", "h"):
        conn.execute(f"DELETE FROM {name} WHERE id % 7 = 0")
        conn.execute(f"UPDATE {name} SET k = k + 100 WHERE id % 11 = 0")
    _kill_during(pg, conn, "SELECT orochi.compact('t')", point)
    _check_and_finish(pg)


@pytest.mark.allow_backend_crash
@pytest.mark.parametrize("point", ["vacuum:after_write@3", "vacuum:before_commit"])
def test_kill9_during_vacuum(make_cluster, point):
    pg = make_cluster("crashv")
    conn = _setup(pg, delta=False)
    for name in ("t", "h"):
        conn.execute(f"DELETE FROM {name} WHERE id % 3 = 0")
    _kill_during(pg, conn, "SELECT orochi.vacuum('t', 0.1)", point)
    _check_and_finish(pg)
