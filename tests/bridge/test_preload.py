"""shared_preload_libraries = 'orochi': Python starts in the postmaster and
backends inherit it."""

from __future__ import annotations

import time

import psycopg
import pytest


@pytest.fixture
def preloaded_cluster(make_cluster):
    return make_cluster("preload", initdb_settings={"shared_preload_libraries": "orochi"})


def test_preloaded_backends_work(preloaded_cluster):
    pg = preloaded_cluster
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as db:
        db.execute("CREATE FOREIGN TABLE s (id int8, v float8, t text) SERVER orochi OPTIONS "
                   "(wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', rows '5000', mode 'batch')")
    # many fresh backends, each using Python at once
    for _ in range(5):
        with pg.connect("app", autocommit=True) as db:
            assert db.execute("SELECT count(*), sum(id) FROM s").fetchone() == (5000, 12497500)
            info = dict(db.execute("SELECT * FROM orochi.python_info()").fetchall())
            assert info["python_version"].startswith("3.11")


def test_preloaded_cancel_and_shutdown(preloaded_cluster):
    pg = preloaded_cluster
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as db:
        db.execute("CREATE FOREIGN TABLE slow (x int) SERVER orochi OPTIONS "
                   "(wrapper 'orochi_fdw.testing.wrappers.SlowWrapper')")
        db.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            db.execute("SELECT * FROM slow")
        db.execute("RESET statement_timeout")
        assert db.execute("SELECT 1").fetchone() == (1,)
    # the postmaster still shuts down fast (its own SIGINT handler is intact)
    start = time.monotonic()
    pg.stop(mode="fast")
    assert time.monotonic() - start < 10
    pg.start()
    with pg.connect("app", autocommit=True) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)
