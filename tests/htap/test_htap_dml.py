"""UPDATE, DELETE, the delta store, compaction and vacuum against a heap
twin, one feature at a time; types through the delta store exactly."""

from __future__ import annotations

import os

import psycopg
import pytest

from columnar_helpers import assert_same_rows, files_on_disk
from test_columnar_types import TYPE_VALUES, _fill


def _twins(db, cols="id int, k int, v text, ts timestamptz", options=""):
    db.execute(f"CREATE FOREIGN TABLE t ({cols}) SERVER orochi {options}")
    db.execute(f"CREATE TABLE h ({cols})")


def both(db, sql, params=None):
    out = []
    for name in ("t", "h"):
        out.append(db.execute(sql.replace("{t}", name), params).rowcount)
    return out


def delta_rows(db, table="t"):
    return db.execute("SELECT delta_rows FROM orochi.delta_size(%s)", (table,)).fetchone()[0]


def stripes(db, table="t"):
    return db.execute("SELECT stripe_id, row_count, deleted_count FROM orochi.columnar_stripes"
                      " WHERE relid = %s::regclass ORDER BY stripe_id", (table,)).fetchall()


def test_small_inserts_go_to_the_delta_store_large_ones_to_stripes(db):
    _twins(db, options="OPTIONS (delta_row_limit '100')")
    both(db, "INSERT INTO {t} VALUES (1, 1, 'one', '2024-01-01')")
    both(db, "INSERT INTO {t} SELECT g, g % 7, 'v' || g, '2024-05-01 12:00+00'::timestamptz FROM generate_series(2, 100) g")
    assert delta_rows(db) == 100 and stripes(db) == []
    both(db, "INSERT INTO {t} SELECT g, g % 7, NULL, NULL FROM generate_series(101, 301) g")
    assert delta_rows(db) == 100 and [s[1] for s in stripes(db)] == [201]
    assert_same_rows(db, "t", "h")
    assert db.execute("SELECT count(*), sum(id) FROM t WHERE k = 3").fetchone() == \
        db.execute("SELECT count(*), sum(id) FROM h WHERE k = 3").fetchone()
    assert db.execute("INSERT INTO t VALUES (9, 9, 'r', NULL) RETURNING id * 2, v").fetchall() == [(18, "r")]


def test_update_and_delete_of_stripe_and_delta_rows_with_returning(db):
    _twins(db, options="OPTIONS (delta_row_limit '10', chunk_group_size '16')")
    both(db, "INSERT INTO {t} SELECT g, g % 5, 's' || g, '2024-01-01'::timestamptz + g * interval '1 hour'"
             " FROM generate_series(1, 200) g")
    both(db, "INSERT INTO {t} VALUES (1000, 1, 'delta', NULL), (1001, 2, 'delta2', NULL)")
    assert delta_rows(db) == 2
    assert both(db, "UPDATE {t} SET v = v || '!', k = k + 10 WHERE k = 3 OR id = 1000") == [41, 41]
    assert_same_rows(db, "t", "h")
    got = db.execute("UPDATE t SET ts = ts + interval '1 day' WHERE id = 5 RETURNING id, ts").fetchall()
    want = db.execute("UPDATE h SET ts = ts + interval '1 day' WHERE id = 5 RETURNING id, ts").fetchall()
    assert got == want
    # the deleted rows are not at hand when a row id is deleted: refused, not NULLs
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="DELETE ... RETURNING"):
        db.execute("DELETE FROM t WHERE id = 1001 RETURNING id")
    assert both(db, "DELETE FROM {t} WHERE id BETWEEN 10 AND 30 OR id = 1001") == [22, 22]
    assert_same_rows(db, "t", "h")
    assert_same_rows(db, "t", "h", "WHERE id < 50")
    assert db.execute("SELECT count(*) FROM t").fetchone() == db.execute("SELECT count(*) FROM h").fetchone()
    # the delete bitmap: 40 + 1 rows updated, 17 deleted (4 of the 21 had moved to the delta)
    assert [s[2] for s in stripes(db)] == [40 + 1 + 17]
    # a whole-table UPDATE and DELETE without quals (no column needed by the scan)
    assert both(db, "UPDATE {t} SET k = -k") == [180, 180]
    assert_same_rows(db, "t", "h")
    assert both(db, "DELETE FROM {t}") == [180, 180]
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_update_joining_a_row_twice_updates_it_once(db):
    _twins(db)
    db.execute("CREATE TABLE src (id int, x int)")
    db.execute("INSERT INTO src VALUES (1, 10), (1, 10), (2, 20)")
    both(db, "INSERT INTO {t} VALUES (1, 0, 'a', NULL), (2, 0, 'b', NULL), (3, 0, 'c', NULL)")
    both(db, "UPDATE {t} SET k = src.x FROM src WHERE src.id = {t}.id")
    assert_same_rows(db, "t", "h")


def test_rollback_and_savepoints_undo_updates_and_deletes(db):
    _twins(db, options="OPTIONS (delta_row_limit '5')")
    both(db, "INSERT INTO {t} SELECT g, g, 'x', NULL FROM generate_series(1, 50) g")
    both(db, "INSERT INTO {t} VALUES (100, 1, 'd', NULL)")
    with db.transaction(force_rollback=True):
        both(db, "DELETE FROM {t} WHERE id < 20")
        both(db, "UPDATE {t} SET v = 'y'")
        assert db.execute("SELECT count(*) FROM t WHERE v = 'y'").fetchone()[0] == 32
    assert_same_rows(db, "t", "h")
    with db.transaction():
        both(db, "DELETE FROM {t} WHERE id < 5")
        with pytest.raises(psycopg.errors.DivisionByZero):
            with db.transaction():
                both(db, "UPDATE {t} SET k = k + 1 WHERE id > 40")
                db.execute("SELECT 1 / 0")
        both(db, "UPDATE {t} SET v = 'z' WHERE id = 100")
    assert_same_rows(db, "t", "h")
    # a statement that fails half way leaves nothing behind for the next one
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("UPDATE t SET k = 1 / (id - 30)")
    both(db, "UPDATE {t} SET k = 0 WHERE id = 31")
    assert_same_rows(db, "t", "h")


def test_compaction_moves_delta_rows_into_stripes(db):
    _twins(db, options="OPTIONS (stripe_row_limit '300', chunk_group_size '50')")
    for i in range(40):
        both(db, f"INSERT INTO {{t}} SELECT g, g % 3, 'r{i}', '2024-05-01 12:00+00'::timestamptz FROM generate_series({i * 20}, {i * 20 + 19}) g")
    both(db, "DELETE FROM {t} WHERE id % 10 = 0")
    both(db, "UPDATE {t} SET k = 7 WHERE id % 10 = 1")
    before = delta_rows(db)
    assert before == 800 - 80 + 80 - 80 + 80 or before > 0
    moved, nstripes = db.execute("SELECT * FROM orochi.compact('t')").fetchone()
    assert moved == before and nstripes == 3
    assert delta_rows(db) == 0
    assert [s[1] for s in stripes(db)] == [300, 300, 120]
    assert_same_rows(db, "t", "h")
    assert db.execute("SELECT * FROM orochi.compact('t')").fetchone() == (0, 0)
    # compaction inside a transaction that rolls back changes nothing
    both(db, "INSERT INTO {t} VALUES (5000, 1, 'late', NULL)")
    with db.transaction(force_rollback=True):
        db.execute("SELECT orochi.compact('t')")
        assert delta_rows(db) == 0
    assert delta_rows(db) == 1
    assert_same_rows(db, "t", "h")


def test_vacuum_rewrites_stripes_and_gives_space_back(db):
    _twins(db, options="OPTIONS (delta_row_limit '0', stripe_row_limit '1000', chunk_group_size '100')")
    both(db, "INSERT INTO {t} SELECT g, g % 10, repeat('p', 50) || g, '2024-05-01 12:00+00'::timestamptz FROM generate_series(1, 3000) g")
    files_before = files_on_disk(db)
    both(db, "DELETE FROM {t} WHERE id <= 600")           # stripe 1: 60 %
    both(db, "DELETE FROM {t} WHERE id BETWEEN 1001 AND 1100")  # stripe 2: 10 %
    r = db.execute("SELECT * FROM orochi.vacuum('t', 0.5)").fetchone()
    assert r[0] == 1 and r[1] == 600 and r[3] < r[2]
    assert_same_rows(db, "t", "h")
    assert sorted(s[1:] for s in stripes(db)) == [(400, 0), (1000, 0), (1000, 100)]
    # the old file stays until no snapshot can read it, the next vacuum removes it
    assert files_before <= files_on_disk(db)
    r = db.execute("SELECT * FROM orochi.vacuum('t', 0.05)").fetchone()
    assert r[0] == 1 and r[4] == 1 and r[5] > 0
    db.execute("SELECT orochi.vacuum()")
    assert len(files_on_disk(db)) == 3
    assert_same_rows(db, "t", "h")
    # updates and deletes keep working on rewritten stripes
    both(db, "UPDATE {t} SET k = 99 WHERE id % 7 = 0")
    both(db, "DELETE FROM {t} WHERE id % 5 = 0")
    assert_same_rows(db, "t", "h")
    # a stripe with every row deleted goes away
    both(db, "DELETE FROM {t} WHERE id > 2000")
    db.execute("SELECT orochi.vacuum('t', 0.01)")
    assert_same_rows(db, "t", "h")


def test_old_snapshots_keep_reading_rewritten_stripes(db, new_connection):
    _twins(db, options="OPTIONS (delta_row_limit '0', chunk_group_size '100')")
    both(db, "INSERT INTO {t} SELECT g, 0, 'x', NULL FROM generate_series(1, 1000) g")
    both(db, "DELETE FROM {t} WHERE id <= 500")
    reader = new_connection(autocommit=False)
    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 500
    db.execute("SELECT orochi.vacuum('t')")
    db.execute("SELECT orochi.vacuum('t')")      # the reader still needs the old file
    db.execute("SELECT orochi.vacuum()")
    assert reader.execute("SELECT count(*), sum(id) FROM t").fetchone() == (500, sum(range(501, 1001)))
    reader.rollback()
    r = db.execute("SELECT * FROM orochi.vacuum('t')").fetchone()
    assert r[4] == 1


def test_progress_view_and_delta_size(db, new_connection):
    _twins(db, options="OPTIONS (delta_row_limit '0', chunk_group_size '100', stripe_row_limit '2000')")
    both(db, "INSERT INTO {t} SELECT g, 0, md5(g::text), NULL FROM generate_series(1, 20000) g")
    both(db, "DELETE FROM {t} WHERE id % 2 = 0")
    assert db.execute("SELECT count(*) FROM orochi.vacuum_progress").fetchone()[0] == 0
    vac = new_connection(autocommit=False)
    vac.execute("SELECT orochi.vacuum('t')")   # holds its transaction open: progress is gone already
    seen = db.execute("SELECT count(*) FROM orochi.vacuum_progress").fetchone()[0]
    assert seen == 0
    vac.commit()
    assert_same_rows(db, "t", "h")


def test_ddl_keeps_the_delta_store_in_step(db):
    _twins(db, cols="a int, b text")
    both(db, "INSERT INTO {t} VALUES (1, 'x'), (2, 'y')")
    for sql in ("ALTER {kind} {t} ADD COLUMN c numeric", "ALTER {kind} {t} RENAME COLUMN b TO bb",
                "ALTER {kind} {t} ALTER COLUMN a TYPE bigint", "ALTER {kind} {t} DROP COLUMN c"):
        for name, kind in (("t", "FOREIGN TABLE"), ("h", "TABLE")):
            db.execute(sql.replace("{t}", name).replace("{kind}", kind))
        both(db, "INSERT INTO {t} SELECT 3 + count(*), 'z' FROM {t}")
        assert_same_rows(db, "t", "h")
    both(db, "UPDATE {t} SET bb = 'u' WHERE a = 1")
    db.execute("SELECT orochi.compact('t')")
    assert_same_rows(db, "t", "h")
    relid = db.execute("SELECT 't'::regclass::oid").fetchone()[0]
    db.execute("DROP FOREIGN TABLE t")
    assert db.execute("SELECT to_regclass(%s)", (f"orochi.columnar_delta_{relid}",)).fetchone()[0] is None
    db.execute("CREATE FOREIGN TABLE t2 (a int) SERVER orochi")
    db.execute("INSERT INTO t2 VALUES (1)")
    db.execute("TRUNCATE t2")
    assert db.execute("SELECT count(*) FROM t2").fetchone()[0] == 0


def test_select_for_update_fails_clearly(db):
    _twins(db)
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="SELECT FOR UPDATE/SHARE"):
        db.execute("SELECT * FROM t FOR UPDATE")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        db.execute("SELECT * FROM t JOIN h USING (id) FOR SHARE OF t")
    db.execute("SELECT * FROM t JOIN h USING (id) FOR UPDATE OF h")  # the heap side alone: fine


@pytest.mark.parametrize("type_", list(TYPE_VALUES))
def test_types_round_trip_through_the_delta_store_and_compaction(db, type_):
    """Every type: rows written to the delta store, read back, updated, then
    compacted into stripes, equal the heap twin's at each step."""
    ident = "d_" + "".join(c if c.isalnum() else "_" for c in type_)
    db.execute(f"CREATE FOREIGN TABLE {ident} (x {type_}, k int) SERVER orochi "
               "OPTIONS (chunk_group_size '7', stripe_row_limit '50')")
    db.execute(f"CREATE TABLE {ident}_h (x {type_}, k int)")
    _fill(db, ident, f"{ident}_h", type_, TYPE_VALUES[type_])
    assert delta_rows(db, ident) > 0
    assert_same_rows(db, ident, f"{ident}_h")
    for v in TYPE_VALUES[type_][:3]:
        assert_same_rows(db, ident, f"{ident}_h", f"WHERE x = ({v})::{type_}")
    for t in (ident, f"{ident}_h"):
        db.execute(f"UPDATE {t} SET k = k + 1000 WHERE k % 3 = 0")
        db.execute(f"DELETE FROM {t} WHERE k % 5 = 1")
    assert_same_rows(db, ident, f"{ident}_h")
    db.execute("SELECT orochi.compact(%s)", (ident,))
    assert delta_rows(db, ident) == 0
    assert_same_rows(db, ident, f"{ident}_h")
    db.execute("SELECT orochi.vacuum(%s, 0)", (ident,))
    assert_same_rows(db, ident, f"{ident}_h")
