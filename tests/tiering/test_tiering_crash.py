"""kill -9 of the whole server while a chunk moves to object storage (or
back), at each fault point: after the restart the chunk is either local or
cold, complete, queries answer as the heap table does, and orochi.vacuum()
deletes the objects the interrupted move left."""

from __future__ import annotations

import pytest

from orochi_fdw.testing.faults import run_until
from tiering_helpers import create_target
from test_tiering_basic import chunk_names, objects, same, setup_tables, stripe_files


@pytest.fixture(scope="module")
def crash_cluster(request):
    from orochi_fdw.testing.cluster import PostgresCluster

    pg = PostgresCluster(name="tiercrash")
    pg.start()
    yield pg
    pg.cleanup()


@pytest.mark.allow_backend_crash
@pytest.mark.parametrize("point", [pytest.param("tier:before_upload", marks=pytest.mark.slow), "tier:after_upload",
                                   pytest.param("tier:before_commit", marks=pytest.mark.slow),
                                   pytest.param("untier:after_download", marks=pytest.mark.slow)])
def test_kill9_during_a_move(crash_cluster, s3, bucket, point):
    pg = crash_cluster
    pg.ensure_running()
    dbname = "c_" + point.replace(":", "_")
    pg.drop_database(dbname)
    pg.create_database(dbname)
    with pg.connect(dbname, autocommit=True) as conn:
        setup_tables(conn, days=2)
        conn.execute("SELECT orochi.compact('m')")
        create_target(conn, s3, bucket)
        chunk = chunk_names(conn)[1]
        if point.startswith("untier"):
            conn.execute("SELECT orochi.tier_chunk(%s, 'cold')", (chunk,))
        before = stripe_files(conn, chunk)
        nobjects = len(objects(s3, bucket))
    statement = ("SELECT orochi.untier_chunk(%s)" if point.startswith("untier")
                 else "SELECT orochi.tier_chunk(%s, 'cold')")
    run_until(pg.dsn(dbname), point, body=lambda c: c.execute(statement, (chunk,)),
              kill=lambda: pg.kill9(kill_children=True))
    pg.start()
    with pg.connect(dbname, autocommit=True) as conn:
        # the move did not happen: the chunk is where it was, complete
        assert stripe_files(conn, chunk) == before
        same(conn)
        conn.execute("SELECT * FROM orochi.vacuum()")  # what the move uploaded is an orphan
        assert len(objects(s3, bucket)) == nobjects
        # the move works now
        conn.execute(statement, (chunk,))
        moved = stripe_files(conn, chunk)
        assert set(moved) == set(before) and all(
            p.startswith("tier:") != point.startswith("untier") for p in moved.values())
        same(conn)
        conn.execute("DROP FOREIGN TABLE m")
        conn.execute("SELECT * FROM orochi.vacuum()")
    assert objects(s3, bucket) == []
