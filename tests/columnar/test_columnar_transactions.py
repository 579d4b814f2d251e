"""Stripes become visible exactly at COMMIT; ROLLBACK and failed statements
leave nothing, on disk included; concurrent writers and snapshot readers."""

from __future__ import annotations

import os
import threading

import psycopg
import pytest

from columnar_helpers import catalog_files, files_on_disk


def _table(db, name="t", options=""):
    db.execute(f"CREATE FOREIGN TABLE {name} (id int, v text) SERVER orochi {options}")


def test_rollback_leaves_nothing_and_removes_files(db):
    _table(db)
    db.execute("INSERT INTO t VALUES (1, 'kept')")
    before = files_on_disk(db)
    with db.transaction(force_rollback=True):
        db.execute("INSERT INTO t SELECT g, 'gone' FROM generate_series(1, 5000) g")
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 5001  # own writes visible
        assert len(files_on_disk(db)) > len(before)
    assert db.execute("SELECT count(*), max(v) FROM t").fetchone() == (1, "kept")
    assert files_on_disk(db) == before == catalog_files(db)


def test_rollback_to_savepoint(db):
    _table(db)
    with db.transaction():
        db.execute("INSERT INTO t VALUES (1, 'a')")
        with pytest.raises(psycopg.errors.DivisionByZero):
            with db.transaction():  # a savepoint
                db.execute("INSERT INTO t VALUES (2, 'b')")
                db.execute("SELECT 1 / 0")
        db.execute("INSERT INTO t VALUES (3, 'c')")
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM t").fetchone()[0] == [1, 3]
    assert files_on_disk(db) == catalog_files(db), "the undone stripe's file should be gone"


def test_savepoint_opened_before_first_use(db):
    """A savepoint taken before the table is first touched in the transaction."""
    _table(db)
    db.execute("BEGIN")
    db.execute("SAVEPOINT s")
    db.execute("INSERT INTO t VALUES (1, 'x')")
    db.execute("ROLLBACK TO SAVEPOINT s")
    db.execute("INSERT INTO t VALUES (2, 'y')")
    db.execute("COMMIT")
    assert db.execute("SELECT array_agg(id) FROM t").fetchone()[0] == [2]
    assert files_on_disk(db) == catalog_files(db)


def test_failed_copy_leaves_nothing(db):
    """A COPY that fails after several stripes were written."""
    _table(db, options="OPTIONS (stripe_row_limit '1000')")
    db.execute("INSERT INTO t VALUES (0, 'before')")
    before = files_on_disk(db)
    lines = "".join(f"{i}\tv{i}\n" for i in range(1, 5001)) + "oops\tbad\n"
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        with db.cursor().copy("COPY t FROM STDIN") as cp:
            cp.write(lines)
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    assert files_on_disk(db) == before


def test_row_of_the_wrong_shape_is_rejected(db):
    _table(db)
    db.execute("INSERT INTO t VALUES (1, 'a')")
    with pytest.raises(psycopg.errors.BadCopyFileFormat):
        with db.cursor().copy("COPY t FROM STDIN") as cp:
            cp.write("2\tb\n3\tc\textra\n")
    with pytest.raises(psycopg.errors.SyntaxError):
        db.execute("INSERT INTO t VALUES (4, 'd', 'extra')")
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        db.execute("INSERT INTO t VALUES ('four', 'd')")
    assert db.execute("SELECT array_agg(id) FROM t").fetchone()[0] == [1]


def test_insert_select_from_itself_reads_only_what_was_there(db):
    _table(db, options="OPTIONS (stripe_row_limit '100', chunk_group_size '10')")
    db.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 250) g")
    db.execute("INSERT INTO t SELECT id + 1000, v FROM t")
    assert db.execute("SELECT count(*), sum(id) FROM t").fetchone() == (500, 2 * 31375 + 250_000)


def test_two_sessions_write_at_once(db, new_connection):
    _table(db)
    a = new_connection(autocommit=False)
    b = new_connection(autocommit=False)
    a.execute("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 3000) g")
    b.execute("INSERT INTO t SELECT g, 'b' FROM generate_series(1, 2000) g")  # must not wait for a
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    b.commit()
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 2000
    a.commit()
    assert db.execute("SELECT v, count(*) FROM t GROUP BY v ORDER BY v").fetchall() == [("a", 3000), ("b", 2000)]


def test_concurrent_copies_in_threads(db, new_connection):
    _table(db, options="OPTIONS (stripe_row_limit '500')")
    errors = []

    def writer(tag: str) -> None:
        try:
            conn = new_connection()
            with conn.cursor().copy("COPY t FROM STDIN") as cp:
                for i in range(4000):
                    cp.write_row((i, tag))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert db.execute("SELECT count(*), count(DISTINCT v), sum(id) FROM t").fetchone() == (12000, 3, 3 * 7998000)
    assert files_on_disk(db) == catalog_files(db)


def test_repeatable_read_reader_sees_a_stable_snapshot(db, new_connection):
    _table(db)
    db.execute("INSERT INTO t SELECT g, 'old' FROM generate_series(1, 100) g")
    reader = new_connection(autocommit=False)
    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    w1, w2 = new_connection(), new_connection()
    w1.execute("INSERT INTO t SELECT g, 'new' FROM generate_series(1, 50) g")
    w2.execute("INSERT INTO t SELECT g, 'new2' FROM generate_series(1, 70) g")
    assert reader.execute("SELECT count(*), count(DISTINCT v) FROM t").fetchone() == (100, 1)
    read_committed = new_connection()
    assert read_committed.execute("SELECT count(*) FROM t").fetchone()[0] == 220
    reader.commit()
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 220


def test_prepared_transactions(db):
    _table(db)
    db.execute("INSERT INTO t VALUES (0, 'base')")
    db.execute("BEGIN")
    db.execute("INSERT INTO t VALUES (1, 'committed later')")
    db.execute("PREPARE TRANSACTION 'orochi_p1'")
    db.execute("BEGIN")
    db.execute("INSERT INTO t VALUES (2, 'rolled back later')")
    db.execute("PREPARE TRANSACTION 'orochi_p2'")
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    on_disk = files_on_disk(db)
    assert len(on_disk) == 3
    db.execute("SELECT orochi.vacuum()")
    assert files_on_disk(db) == on_disk, "should keep the files of prepared transactions"
    db.execute("COMMIT PREPARED 'orochi_p1'")
    db.execute("ROLLBACK PREPARED 'orochi_p2'")
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM t").fetchone()[0] == [0, 1]
    db.execute("SELECT orochi.vacuum()")
    assert len(files_on_disk(db)) == 2, "should collect the file of the rolled back prepared transaction"
    assert files_on_disk(db) == catalog_files(db)


def test_vacuum_keeps_files_of_running_writers(db, new_connection):
    _table(db)
    writer = new_connection(autocommit=False)
    writer.execute("INSERT INTO t SELECT g, 'w' FROM generate_series(1, 100) g")
    pending = files_on_disk(db)
    assert pending and not catalog_files(db)
    db.execute("SELECT orochi.vacuum()")
    assert files_on_disk(db) == pending, "should keep the files of a running writer"
    writer.commit()
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 100


def test_vacuum_collects_files_of_killed_backends(db, new_connection, pg_cluster):
    _table(db)
    db.execute("INSERT INTO t VALUES (1, 'kept')")
    victim = new_connection(autocommit=False)
    victim.execute("INSERT INTO t SELECT g, 'lost' FROM generate_series(1, 100) g")
    pid = victim.info.backend_pid
    assert len(files_on_disk(db)) == 2
    # a terminated backend aborts its transaction: its rollback hook removes the file
    db.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    # whatever was left is an orphan of an aborted transaction now
    db.execute("SELECT orochi.vacuum()")
    assert files_on_disk(db) == catalog_files(db)


def test_vacuum_collects_planted_orphans_and_temporary_files(db):
    """Files named like stripes of finished transactions, with no catalog row."""
    _table(db)
    db.execute("INSERT INTO t VALUES (1, 'kept')")
    (path,) = catalog_files(db)
    folder = os.path.dirname(path)
    old_xid = int(db.execute("SELECT pg_current_xact_id()::text").fetchone()[0])  # committed now
    future_xid = old_xid + 1_000_000
    planted = [os.path.join(folder, f"999001.{old_xid}.stripe"),
               os.path.join(folder, f".999002.{old_xid}.stripe.abc123.tmp"),
               os.path.join(folder, f"999003.{future_xid}.stripe")]
    for p in planted:
        with open(p, "wb") as f:
            f.write(b"x" * 10)
    foreign = os.path.join(folder, "README")
    with open(foreign, "w") as f:
        f.write("not ours")
    removed_files, removed_bytes = db.execute("SELECT * FROM orochi.vacuum()").fetchone()
    assert removed_files >= 3 and removed_bytes >= 30
    assert files_on_disk(db) == {path, foreign}
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1
