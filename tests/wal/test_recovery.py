"""Crash recovery, failover, base backups and point-in-time recovery carry
columnar data:

- kill -9 of the primary right after a COPY's COMMIT returned, its stripe
  files deleted or truncated before the restart: crash recovery rewrites
  them and the rows are complete;
- a promoted standby takes writes; the old primary, which took writes of
  its own after the split, is rewound with pg_rewind and follows it (its
  lost writes, and their files, gone);
- point-in-time recovery to a target between two commits (an LSN or a time)
  restores exactly the first;
- a base backup taken while writers commit restores to a consistent state
  (every writer transaction writes the same rows into an orochi table and
  its heap twin: after recovery both hold the same rows).

The moments are deterministic: a kill after COMMIT returned, targets taken
between two statements that have returned; nothing waits for the clock.
"""

from __future__ import annotations

import os
import threading

import psycopg
import pytest

from orochi_fdw.testing import replica
from wal_helpers import database_folder, files_of, table_queries

COLUMNS = "id int, k int, v text, ts timestamptz"
LOAD = ("INSERT INTO {t} SELECT g, g % 7, 'v' || g, timestamptz '2024-01-01' + g * interval '1 minute'"
        " FROM generate_series({a}, {b}) g")


@pytest.fixture
def clusters(make_cluster):
    """make_cluster with the replication settings (pg_rewind needs them),
    plus copies made from them, all cleaned up after the test."""
    made = []

    def primary(name: str = "primary", **settings):
        return make_cluster(name, settings={**replica.REPLICATION_SETTINGS, **settings})

    def adopt(cluster):
        made.append(cluster)
        return cluster

    primary.adopt = adopt
    yield primary
    for cluster in made:
        cluster.cleanup()


def _tables(conn, stripe_rows: int = 2000) -> None:
    conn.execute(f"CREATE FOREIGN TABLE t ({COLUMNS}) SERVER orochi"
                 f" OPTIONS (delta_row_limit '10', stripe_row_limit '{stripe_rows}')")
    conn.execute(f"CREATE TABLE t_heap ({COLUMNS})")


def _both(conn, sql: str) -> None:
    conn.execute(sql.format(t="t"))
    conn.execute(sql.format(t="t_heap"))


def _same_as_heap(conn) -> None:
    for q, h in zip(table_queries("t"), table_queries("t_heap")):
        assert conn.execute(q).fetchall() == conn.execute(h).fetchall(), q


# ---------------------------------------------------------------- crash recovery


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage appended"])
def test_kill9_after_commit_replay_restores_the_files(clusters, damage):
    pg = clusters("crash", checkpoint_timeout="1h", max_wal_size="4GB")
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as conn:
        _tables(conn)
        conn.execute("CHECKPOINT")  # replay starts before the COPY
        with conn.cursor().copy("COPY t (id, k, v) FROM STDIN") as copy:
            for i in range(10_000):
                copy.write_row((i, i % 7, f"c{i}"))
        conn.execute("INSERT INTO t_heap (id, k, v) SELECT g, g % 7, 'c' || g FROM generate_series(0, 9999) g")
        # COMMIT has returned: the files are named in committed rows
        paths = [os.path.join(pg.datadir, r[0]) for r in conn.execute(
            "SELECT orochi._file_path(file_path) FROM orochi.columnar_stripes ORDER BY stripe_id").fetchall()]
    assert len(paths) == 5
    before = files_of(pg, "app")
    pg.kill9()
    for path in paths[1:4]:
        if damage == "deleted":
            os.unlink(path)
        elif damage == "truncated":
            os.truncate(path, os.path.getsize(path) // 2)
        else:
            with open(path, "ab") as f:
                f.write(b"\0" * 1000)
    pg.start()
    assert files_of(pg, "app") == before, "replay rewrote the files exactly"
    with pg.connect("app", autocommit=True) as conn:
        _same_as_heap(conn)
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 10_000


def test_kill9_of_a_standby_in_the_middle_of_replay(clusters):
    """A standby killed while it replays stripe files resumes from its last
    restartpoint and ends with the primary's files."""
    pg = clusters("primary")
    pg.create_database("app")
    standby = clusters.adopt(replica.make_standby(pg, "standby"))
    with pg.connect("app", autocommit=True) as conn:
        _tables(conn)
        for n in range(4):
            _both(conn, LOAD.format(t="{t}", a=n * 5000, b=n * 5000 + 4999))
        lsn = replica.current_lsn(pg)
    standby.kill9()
    with pg.connect("app", autocommit=True) as conn:
        _both(conn, "DELETE FROM {t} WHERE id % 3 = 0")
        conn.execute("SELECT * FROM orochi.vacuum('t', 0.1)")
    standby.start()
    replica.wait_for_lsn(standby, lsn)
    replica.wait_for_catchup(pg, standby)
    assert files_of(standby, "app") == files_of(pg, "app")
    with standby.connect("app", autocommit=True) as conn:
        _same_as_heap(conn)


# ---------------------------------------------------------------- failover


def test_promoted_standby_takes_writes_and_the_old_primary_is_rewound(clusters):
    pg = clusters("primary")
    pg.create_database("app")
    standby = clusters.adopt(replica.make_standby(pg, "standby"))
    with pg.connect("app", autocommit=True) as conn:
        _tables(conn)
        _both(conn, LOAD.format(t="{t}", a=1, b=9000))
        _both(conn, "DELETE FROM {t} WHERE id % 10 = 0")
    replica.wait_for_catchup(pg, standby)
    replica.promote(standby)
    # the new primary takes writes of every kind
    with standby.connect("app", autocommit=True) as conn:
        _both(conn, LOAD.format(t="{t}", a=20000, b=26000))
        _both(conn, "UPDATE {t} SET v = 'new' WHERE id BETWEEN 100 AND 200")
        conn.execute("SELECT * FROM orochi.compact('t')")
        conn.execute("SELECT * FROM orochi.vacuum('t', 0.05)")
        _same_as_heap(conn)
        expected = [conn.execute(q).fetchall() for q in table_queries("t")]
    # the old primary takes writes the new timeline will never have
    with pg.connect("app", autocommit=True) as conn:
        named = "SELECT file_path FROM orochi.columnar_stripes"
        before = {r[0] for r in conn.execute(named).fetchall()}
        _both(conn, LOAD.format(t="{t}", a=50000, b=58000))
        lost = {r[0] for r in conn.execute(named).fetchall()} - before
    assert lost and all(os.path.exists(os.path.join(database_folder(pg, "app"), p)) for p in lost)
    replica.rewind(pg, standby)
    replica.wait_for_catchup(standby, pg)
    with pg.connect("app", autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        assert [conn.execute(q).fetchall() for q in table_queries("t")] == expected
    assert files_of(pg, "app") == files_of(standby, "app"), "pg_rewind made the folders the same"
    assert not any(os.path.exists(os.path.join(database_folder(pg, "app"), p)) for p in lost), \
        "the files of the lost writes are gone"


# ---------------------------------------------------------------- PITR and base backups


@pytest.mark.parametrize("target", ["lsn", "time"])
def test_point_in_time_recovery_between_two_commits(clusters, target):
    pg = clusters("primary")
    archive = replica.enable_archiving(pg)
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as conn:
        _tables(conn)
        _both(conn, LOAD.format(t="{t}", a=1, b=3000))
    backup = clusters.adopt(replica.base_backup(pg, "restored"))
    with pg.connect("app", autocommit=True) as conn:
        # the first commit: rows, a delete, a compaction, a vacuum (new and removed files)
        with conn.transaction():
            _both(conn, LOAD.format(t="{t}", a=3001, b=9000))
            _both(conn, "DELETE FROM {t} WHERE id % 4 = 0")
        conn.execute("SELECT * FROM orochi.vacuum('t', 0.1)")
        first = [conn.execute(q).fetchall() for q in table_queries("t")]
        first_files = files_of(pg, "app")
        # between the two commits
        if target == "lsn":
            point = {"target_lsn": replica.current_lsn(pg)}
        else:
            point = {"target_time": str(conn.execute("SELECT clock_timestamp()").fetchone()[0])}
        # the second commit
        _both(conn, LOAD.format(t="{t}", a=20000, b=29000))
        conn.execute("SELECT * FROM orochi.vacuum('t', 0.0)")
    replica.wait_for_archived(pg, replica.switch_wal(pg))
    replica.recover(backup, archive, **point)
    with backup.connect("app", autocommit=True) as conn:
        assert [conn.execute(q).fetchall() for q in table_queries("t")] == first
        _same_as_heap(conn)
        named = {r[0] for r in conn.execute("SELECT file_path FROM orochi.columnar_stripes").fetchall()}
        # files of the second commit are orphans that vacuum removes
        conn.execute("SELECT * FROM orochi.vacuum()")
        conn.execute("SELECT * FROM orochi.vacuum('t', 1.0)")  # retired files no snapshot reads
    restored = files_of(backup, "app")
    assert named <= set(restored)
    assert {p: h for p, h in restored.items() if p in named} == {p: h for p, h in first_files.items()
                                                                  if p in named}


def test_base_backup_during_heavy_writes_restores_a_consistent_state(clusters):
    pg = clusters("primary")
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as conn:
        _tables(conn, stripe_rows=700)
    stop = threading.Event()
    started = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with pg.connect("app", autocommit=True) as conn:
                n = 0
                while not stop.is_set() or n < 3:
                    with conn.transaction():
                        _both(conn, LOAD.format(t="{t}", a=n * 2000, b=n * 2000 + 1999))
                        _both(conn, f"DELETE FROM {{t}} WHERE id % 11 = {n % 11}")
                    if n % 3 == 2:
                        conn.execute("SELECT * FROM orochi.compact('t')")
                        conn.execute("SELECT * FROM orochi.vacuum('t', 0.05)")
                    n += 1
                    started.set()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert started.wait(120)
        backup = clusters.adopt(replica.base_backup(pg, "backup"))
    finally:
        stop.set()
        thread.join(300)
    assert not errors, errors
    backup.start()
    with backup.connect("app", autocommit=True) as conn:
        _same_as_heap(conn)
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] > 0
        for (path,) in conn.execute("SELECT orochi._file_path(file_path) FROM orochi.columnar_stripes").fetchall():
            assert os.path.exists(os.path.join(backup.datadir, path))
