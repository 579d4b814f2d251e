"""Databases, preloading and WAL volume:

- CREATE DATABASE ... TEMPLATE of a database with columnar tables gives an
  independent copy (both strategies), on the primary and on a standby;
  DROP DATABASE removes the database's folder on both;
- a server without orochi in shared_preload_libraries refuses every write
  of a columnar file (55000, with a hint), reads and heap writes still work;
- the WAL a bulk write produces is close to the compressed bytes it stores;
- the resource manager's id can be moved (orochi.wal_resource_manager_id),
  and crash recovery replays with it.
"""

from __future__ import annotations

import os

import psycopg
import pytest

from orochi_fdw.testing import replica
from wal_helpers import database_folder, files_of, table_queries

COLUMNS = "id int, k int, v text, ts timestamptz"
LOAD = ("INSERT INTO {t} SELECT g, g % 7, 'v' || g, timestamptz '2024-01-01' + g * interval '1 minute'"
        " FROM generate_series({a}, {b}) g")


def _answers(cluster, dbname: str) -> list:
    with cluster.connect(dbname, autocommit=True) as conn:
        return [conn.execute(q).fetchall() for q in table_queries("t")]


@pytest.mark.parametrize("strategy", ["wal_log", "file_copy"])
def test_create_database_from_a_template_is_an_independent_copy(pair, pair_db, strategy):
    primary, standby = pair
    copy = f"{pair_db}_copy"[:60]
    with primary.connect(pair_db, autocommit=True) as conn:
        conn.execute(f"CREATE FOREIGN TABLE t ({COLUMNS}) SERVER orochi OPTIONS (delta_row_limit '5',"
                     " stripe_row_limit '1000')")
        conn.execute(LOAD.format(t="t", a=1, b=5000))
        conn.execute("DELETE FROM t WHERE id % 10 = 0")
        conn.execute(LOAD.format(t="t", a=9000, b=9002))  # delta rows
    original = _answers(primary, pair_db)
    primary.execute(f"CREATE DATABASE {copy} TEMPLATE {pair_db} STRATEGY {strategy}")
    try:
        assert _answers(primary, copy) == original
        source, target = database_folder(primary, pair_db), database_folder(primary, copy)
        assert files_of(primary, copy) == files_of(primary, pair_db)
        assert all(not os.path.samefile(os.path.join(source, p), os.path.join(target, p))
                   for p in files_of(primary, copy)), "the copy's files are its own"
        # changes on either side stay there
        with primary.connect(pair_db, autocommit=True) as conn:
            conn.execute("TRUNCATE t")
            conn.execute(LOAD.format(t="t", a=1, b=100))
        with primary.connect(copy, autocommit=True) as conn:
            assert [conn.execute(q).fetchall() for q in table_queries("t")] == original
            conn.execute(LOAD.format(t="t", a=20000, b=23000))
            conn.execute("SELECT * FROM orochi.vacuum('t', 0.05)")
            copied = [conn.execute(q).fetchall() for q in table_queries("t")]
        with primary.connect(pair_db, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 100
        # the standby made its own copy too, from the WAL
        replica.wait_for_catchup(primary, standby)
        assert _answers(standby, copy) == copied
        assert files_of(standby, copy) == files_of(primary, copy)
        assert _answers(standby, pair_db) == _answers(primary, pair_db)
        folder_on_standby = database_folder(standby, copy)
    finally:
        primary.drop_database(copy)
    replica.wait_for_catchup(primary, standby)
    assert not os.path.exists(target) and not os.path.exists(folder_on_standby), \
        "DROP DATABASE removes the folder on the primary and on the standby"


def test_without_preloading_columnar_files_are_never_written(make_cluster):
    pg = make_cluster("nopreload", initdb_settings={"shared_preload_libraries": ""})
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as conn:
        conn.execute(f"CREATE FOREIGN TABLE t ({COLUMNS}) SERVER orochi OPTIONS (delta_row_limit '100')")
        for sql in (LOAD.format(t="t", a=1, b=5000), "COPY t (id) FROM PROGRAM 'seq 1 500'"):
            with pytest.raises(psycopg.Error) as exc:
                conn.execute(sql)
            assert exc.value.sqlstate == "55000"
            assert "shared_preload_libraries" in exc.value.diag.message_primary
            assert "shared_preload_libraries" in exc.value.diag.message_hint
        conn.execute(LOAD.format(t="t", a=1, b=50))  # into the heap delta store: WAL-logged by Postgres
        with pytest.raises(psycopg.Error) as exc:
            conn.execute("SELECT * FROM orochi.compact('t')")
        assert exc.value.sqlstate == "55000"
        assert conn.execute("SELECT count(*), sum(id) FROM t").fetchone() == (50, 1275)
        assert conn.execute("SELECT count(*) FROM orochi.columnar_stripes").fetchone()[0] == 0
        assert not os.path.exists(database_folder(pg, "app")) or files_of(pg, "app") == {}
        conn.execute("TRUNCATE t")
        conn.execute("DROP FOREIGN TABLE t")


def test_wal_volume_is_close_to_the_compressed_bytes(make_cluster):
    pg = make_cluster("volume", settings={"full_page_writes": True})
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as conn:
        conn.execute("CREATE FOREIGN TABLE t (id int8, device int, temp float8, note text) SERVER orochi")
        conn.execute("CHECKPOINT")
        start = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        conn.execute("INSERT INTO t SELECT g, g % 100, 20 + (g * 7919 % 1000) / 100.0, 'n' || (g * 31 % 997)"
                     " FROM generate_series(1::int8, 2000000) g")
        end = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        wal = int(conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0])
        stored = int(conn.execute("SELECT sum(file_bytes) FROM orochi.columnar_stripes").fetchone()[0])
    assert stored > 1_000_000
    assert stored <= wal <= 1.2 * stored, f"{wal} bytes of WAL for {stored} bytes of stripe files"


def test_another_resource_manager_id(make_cluster):
    pg = make_cluster("rmgrid", settings={"orochi.wal_resource_manager_id": 200, "checkpoint_timeout": "1h"})
    assert pg.execute("SHOW orochi.wal_resource_manager_id") == [("200",)]
    assert 'custom resource manager "orochi" with ID 200' in pg.read_log()
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as conn:
        conn.execute(f"CREATE FOREIGN TABLE t ({COLUMNS}) SERVER orochi OPTIONS (delta_row_limit '0')")
        conn.execute("CHECKPOINT")
        conn.execute(LOAD.format(t="t", a=1, b=3000))
        expected = [conn.execute(q).fetchall() for q in table_queries("t")]
    before = files_of(pg, "app")
    folder = database_folder(pg, "app")
    pg.kill9()
    for path in before:
        os.unlink(os.path.join(folder, path))
    pg.start()
    assert files_of(pg, "app") == before
    assert _answers(pg, "app") == expected

