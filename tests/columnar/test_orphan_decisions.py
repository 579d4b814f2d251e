"""Which stripe files orochi.vacuum() removes, decided by the catalog and the
status of each file's writer (orochi_fdw.catalog.vacuum): never the file of
a writer that is running, prepared or committed after the vacuum's snapshot;
always, at the first vacuum after it ended, the orphan of an aborted or
crashed writer, whatever other transactions run at that moment. Writers are
paused at fault points, so every interleaving here is the one named."""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from columnar_helpers import catalog_files, files_on_disk, stripes_only
from orochi_fdw.testing.faults import FaultGate, run_until

ROWS = "INSERT INTO t SELECT g, 'w' || g FROM generate_series(1, 3000) g"


def _vacuum(conn) -> None:
    """orochi.vacuum() (its counts also include the folders of databases other
    tests dropped: the tests look at this database's files instead)."""
    conn.execute("SELECT orochi.vacuum()")


def _xid_of(path: str) -> int:
    """The writer's transaction id in a stripe file's name (<stripe>.<xid>.stripe)."""
    return int(os.path.basename(path).split(".")[1])


@pytest.fixture
def cdb(pg_cluster, make_database):
    """A database whose orochi tables write stripes for every INSERT, with a
    table t holding one committed stripe."""
    name = make_database()
    stripes_only(pg_cluster, name)
    conn = pg_cluster.connect(name, autocommit=True)
    conn.execute("CREATE FOREIGN TABLE t (id int8, v text) SERVER orochi")
    conn.execute("INSERT INTO t VALUES (0, 'committed')")
    yield name, conn
    conn.close()


def test_running_writer_keeps_its_file(pg_cluster, cdb):
    name, conn = cdb
    committed = files_on_disk(conn)
    with FaultGate(pg_cluster.dsn(name), "write_stripe:after_file") as gate:
        writer = gate.run(ROWS)
        gate.wait_reached()
        pending = files_on_disk(conn) - committed
        assert len(pending) == 1 and not (pending & catalog_files(conn))
        _vacuum(conn)
        assert files_on_disk(conn) == committed | pending, "should keep the file of a running writer"
        gate.open()
        writer.join()
    assert writer.finished and writer.error is None
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (3001,)
    conn.execute("SELECT orochi.vacuum()")
    assert files_on_disk(conn) == catalog_files(conn) == committed | pending


def test_snapshot_older_than_the_writers_commit_keeps_its_files(pg_cluster, cdb):
    """A vacuum whose snapshot was taken before a writer committed cannot see
    the writer's rows: it keeps the files (the writer committed after it)."""
    name, conn = cdb
    old = pg_cluster.connect(name)
    old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    old.execute("SELECT count(*) FROM t")  # the snapshot
    committed = files_on_disk(conn)
    conn.execute(ROWS)
    written = files_on_disk(conn) - committed
    assert len(written) == 1
    assert old.execute("SELECT count(*) FROM t").fetchone() == (1,)
    old.execute("SELECT orochi.vacuum()")
    assert files_on_disk(conn) == committed | written, "should keep the files of a writer committed since"
    old.commit()
    old.close()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (3001,)
    assert files_on_disk(conn) == catalog_files(conn)


def test_prepared_writer_keeps_its_files_until_it_ends(pg_cluster, cdb):
    name, conn = cdb
    committed = files_on_disk(conn)
    writer = pg_cluster.connect(name)
    writer.execute(ROWS)
    writer.execute("PREPARE TRANSACTION 'w1'")
    writer.close()
    pending = files_on_disk(conn) - committed
    assert len(pending) == 1
    _vacuum(conn)
    assert files_on_disk(conn) == committed | pending, "should keep the files of a prepared transaction"
    conn.execute("ROLLBACK PREPARED 'w1'")
    _vacuum(conn)
    assert files_on_disk(conn) == catalog_files(conn) == committed


def test_writer_ids_reach_the_wal_before_files_carry_them(pg_cluster, cdb):
    """A file is named with its writer's own transaction id, and a WAL record
    carrying an id of that transaction was flushed before the file existed."""
    name, conn = cdb
    conn.execute("CREATE EXTENSION pg_walinspect")
    committed = files_on_disk(conn)
    start = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    with FaultGate(pg_cluster.dsn(name), "write_stripe:after_file") as gate:
        writer = gate.run("BEGIN", ROWS)
        gate.wait_reached()
        (path,) = files_on_disk(conn) - committed
        xid = conn.execute("SELECT backend_xid FROM pg_stat_activity WHERE pid = %s", (writer.pid,)).fetchone()[0]
        assert int(xid) == _xid_of(path) % 2**32
        flushed = conn.execute(
            "SELECT count(*) FROM pg_get_wal_records_info(%s, pg_current_wal_flush_lsn())"
            " WHERE resource_manager = 'XLOG' AND record_type = 'NOOP' AND xid::text::bigint >= %s",
            (start, int(xid))).fetchone()[0]
        assert flushed == 1
        gate.open()
        writer.join()


@pytest.mark.allow_backend_crash
@pytest.mark.parametrize("delay", [0.0, 0.5])
def test_crashed_writers_id_is_never_reused(make_cluster, delay):
    """kill -9 while a writer's first stripe file exists and its id appears in
    no row: after restart that id is handed out to no one (the first
    transaction gets a later one), so the file's writer is known to have
    aborted and the first vacuum removes the file, while that transaction is
    still open. ``delay`` moves the kill after the WAL writer's cycle
    (200 ms), which must not change anything."""
    pg = make_cluster("orphan_xid")
    pg.create_database("c")
    stripes_only(pg, "c")
    with pg.connect("c", autocommit=True) as conn:
        conn.execute("CREATE FOREIGN TABLE t (id int8, v text) SERVER orochi")
        conn.execute("INSERT INTO t VALUES (0, 'committed')")
        committed = files_on_disk(conn)
    orphans: list[str] = []

    def before_kill(_op) -> None:
        with pg.connect("c", autocommit=True) as c:
            orphans.extend(files_on_disk(c) - committed)
        time.sleep(delay)  # moves the kill in time; nothing is asserted about time

    run_until(pg.dsn("c"), "write_stripe:after_file", ROWS,
              kill=lambda: pg.kill9(kill_children=True), before_kill=before_kill)
    pg.start()
    assert len(orphans) == 1
    crashed = _xid_of(orphans[0])
    first = pg.connect("c")
    try:
        first.execute("INSERT INTO t VALUES (1, 'after')")  # takes an id and writes a file
        new_id = int(first.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
        assert new_id > crashed, "the crashed writer's id was handed out again"
        with pg.connect("c", autocommit=True) as conn:
            removed = conn.execute("SELECT removed_files FROM orochi.vacuum()").fetchone()[0]
            assert removed == 1 and not os.path.exists(orphans[0])
            # the open transaction's own file is kept
            assert len(files_on_disk(conn) - committed) == 1
        first.commit()
    finally:
        first.close()
    with pg.connect("c", autocommit=True) as conn:
        assert conn.execute("SELECT count(*), sum(id) FROM t").fetchone() == (2, 1)
        assert conn.execute("SELECT removed_files FROM orochi.vacuum()").fetchone() == (0,)
        assert files_on_disk(conn) == catalog_files(conn)


@pytest.mark.allow_backend_crash
def test_files_named_with_a_lost_id_are_still_collected(make_cluster):
    """Files written before ids were made durable may carry an id that a
    crash lost and that is handed out again: named with the vacuum's own id
    or with an id beyond any handed out, such a file is an orphan."""
    pg = make_cluster("orphan_lost")
    pg.create_database("c")
    with pg.connect("c", autocommit=True) as conn:
        conn.execute("CREATE FOREIGN TABLE t (id int8) SERVER orochi OPTIONS (delta_row_limit '0')")
        conn.execute("INSERT INTO t VALUES (1)")
        (path,) = catalog_files(conn)
        folder = os.path.dirname(path)
        conn.execute("BEGIN")
        own = int(conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
        planted = [os.path.join(folder, f"900001.{own}.stripe"), os.path.join(folder, f"900002.{own + 10**6}.stripe")]
        for p in planted:
            with open(p, "wb") as f:
                f.write(b"x")
        assert conn.execute("SELECT removed_files FROM orochi.vacuum()").fetchone() == (2,)
        conn.execute("COMMIT")
        assert files_on_disk(conn) == {path}


def test_vacuum_in_a_failed_writer_session(pg_cluster, cdb):
    """A writer that fails after its file exists rolls back and removes it;
    a concurrent vacuum while it waits at the fault point keeps it."""
    name, conn = cdb
    committed = files_on_disk(conn)
    conn.execute("CREATE TABLE boom (x int CHECK (x > 0))")
    with FaultGate(pg_cluster.dsn(name), "write_stripe:after_file") as gate:
        writer = gate.run("BEGIN", ROWS, "INSERT INTO boom VALUES (-1)")
        gate.wait_reached()
        pending = files_on_disk(conn) - committed
        assert len(pending) == 1
        _vacuum(conn)
        assert files_on_disk(conn) == committed | pending
        gate.open()
        writer.join()
    assert isinstance(writer.error, psycopg.errors.CheckViolation)
    assert files_on_disk(conn) == catalog_files(conn) == committed
