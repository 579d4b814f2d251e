"""Late materialization: a chunk group's filter columns are decoded and the
filter applied before its other columns; rows equal the heap table's, with
deleted rows, delta rows, text columns and a column added since."""

from __future__ import annotations


def test_filter_first_then_other_columns(db):
    for kind, t, opts in (("FOREIGN TABLE", "c", "SERVER orochi OPTIONS (chunk_group_size '100')"),
                          ("TABLE", "h", "")):
        db.execute(f"CREATE {kind} {t} (id int8, k int4, v float8, s text) {opts}")
        db.execute(f"INSERT INTO {t} SELECT i, (i * 37) % 1000, i / 3.0, 'row ' || i "
                   "FROM generate_series(1, 20000) i")
        db.execute(f"DELETE FROM {t} WHERE id % 7 = 0")
        db.execute(f"UPDATE {t} SET s = s || '!' WHERE id % 11 = 0 AND k < 50")
        db.execute(f"INSERT INTO {t} VALUES (-1, 3, 0.5, 'delta')")
        db.execute(f"ALTER TABLE {t} ADD COLUMN g int4 DEFAULT 5")
    for q in ("SELECT id, v, s, g FROM {} WHERE k < 50 ORDER BY id",
              "SELECT id, s FROM {} WHERE k = 3 AND s <> 'row 3' ORDER BY id",
              "SELECT count(*), sum(v), max(s) FROM {} WHERE k BETWEEN 10 AND 12",
              "SELECT id FROM {} WHERE k = 1001"):
        assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall(), q
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN (ANALYZE, VERBOSE) SELECT id, s FROM c WHERE k < 50").fetchall())
    passing = db.execute("SELECT count(*) FROM h WHERE k < 50").fetchone()[0]
    live = db.execute("SELECT count(*) FROM h").fetchone()[0]
    assert f"Rows Removed by Orochi Filter: {live - passing}" in plan, plan
    assert f"rows={passing} " in plan, plan
