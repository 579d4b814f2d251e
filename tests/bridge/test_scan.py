"""Scans through the bridge: per-row and batch paths, quals, sorting, EXPLAIN."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("mode", ["row", "tuple", "batch"])
@pytest.mark.parametrize("nulls", [False, True])
def test_scan_matches_heap(db, foreign_table, mode, nulls):
    foreign_table("s", "id int8, v float8, t text", "SeriesWrapper", rows=25_000, mode=mode,
                  batch_size=4096, nulls=str(nulls).lower())
    nullexpr = "CASE WHEN i % 7 = 3 THEN NULL ELSE {} END" if nulls else "{}"
    db.execute(
        "CREATE TABLE h AS SELECT "
        + nullexpr.format("i::int8") + " AS id, "
        + nullexpr.format("i * 0.5") + "::float8 AS v, "
        + nullexpr.format("'row-' || i") + " AS t FROM generate_series(0, 24999) i"
    )
    q = "SELECT id, v, t FROM {} ORDER BY id NULLS FIRST, t"
    assert db.execute(q.format("s")).fetchall() == db.execute(q.format("h")).fetchall()
    agg = "SELECT count(*), count(id), sum(id), sum(v), min(t), max(t) FROM {}"
    assert db.execute(agg.format("s")).fetchall() == db.execute(agg.format("h")).fetchall()


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_count_star_needs_no_columns(db, foreign_table, mode):
    foreign_table("s", "id int8, v float8, t text", "SeriesWrapper", rows=12_345, mode=mode, batch_size=1000)
    assert db.execute("SELECT count(*) FROM s").fetchone() == (12_345,)


def test_empty_table(db, foreign_table):
    foreign_table("s", "id int8", "SeriesWrapper", rows=0, mode="batch")
    assert db.execute("SELECT count(*), sum(id) FROM s").fetchone() == (0, None)


def test_qual_values_are_typed(db, foreign_table):
    """Every operator and value type crosses as the right Python object; the
    table's columns are the echo's own, so the rows pass Postgres's recheck."""
    foreign_table("q", "field text, operator text, value text, pytype text, coll text", "QualsEchoWrapper")
    cases = {
        "field = 'field'": ("field", "=", "'field'", "str"),
        "operator <> 'x'": ("operator", "<>", "'x'", "str"),
        "value LIKE '%'": ("value", "~~", "'%'", "str"),
        "value ILIKE '%'": ("value", "~~*", "'%'", "str"),
        "pytype IN ('str', 'list', 'int')": ("pytype", "= ANY", "['str', 'list', 'int']", "list"),
        "'zzz' > field": ("field", "<", "'zzz'", "str"),
    }
    for where, expected in cases.items():
        rows = db.execute(f"SELECT field, operator, value, pytype FROM q WHERE {where}").fetchall()
        assert expected in rows, (where, rows)


def test_is_null_quals(db, foreign_table):
    foreign_table("q", "field text, operator text, value text, pytype text, coll text", "QualsEchoWrapper")
    rows = db.execute("SELECT field, operator, value FROM q WHERE coll IS NULL").fetchall()
    assert ("coll", "=", "None") in rows
    rows = db.execute("SELECT field, operator, value FROM q WHERE field IS NOT NULL").fetchall()
    assert ("field", "<>", "None") in rows


def test_null_comparison_reads_nothing(db, foreign_table):
    foreign_table("s", "id int8", "SeriesWrapper", rows=10)
    db.execute("PREPARE p(int8) AS SELECT count(*) FROM s WHERE id = $1")
    assert db.execute("EXECUTE p(NULL)").fetchone() == (0,)
    assert db.execute("EXECUTE p(3)").fetchone() == (1,)


def test_prepared_statement_parameters(db, foreign_table):
    foreign_table("q", "field text, operator text, value text, pytype text, coll text", "QualsEchoWrapper")
    db.execute("PREPARE p(text) AS SELECT field, operator, value FROM q WHERE field = $1")
    for _ in range(7):  # past the generic-plan threshold
        assert db.execute("EXECUTE p('field')").fetchall() == [("field", "=", "'field'")]


def test_stable_expression_is_evaluated_once(db, foreign_table):
    """`now() - interval` reaches the wrapper as a value (a timestamptz), not
    unknown: the scan evaluates it when it starts."""
    foreign_table("s", "id int8, ts timestamptz", "SeriesWrapper", rows=3)
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM s WHERE ts > now() - interval '1 hour'").fetchall())
    assert "Quals: ts > datetime.datetime(" in plan, plan
    # without ANALYZE the value is not known yet
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN VERBOSE SELECT * FROM s WHERE ts > now() - interval '1 hour'").fetchall())
    assert "Quals: ts > <unknown until execution>" in plan, plan


def test_nested_loop_rescan(db, foreign_table):
    foreign_table("s", "id int8, v float8, t text", "SeriesWrapper", rows=50, mode="batch", batch_size=7)
    db.execute("CREATE TABLE k AS SELECT i::int8 AS id FROM generate_series(0, 60, 3) i")
    db.execute("SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_material = off")
    got = db.execute("SELECT k.id, s.t FROM k JOIN s ON s.id = k.id ORDER BY 1").fetchall()
    assert got == [(i, f"row-{i}") for i in range(0, 50, 3)]
    # correlated subquery: a rescan per outer row with a parameter
    got = db.execute("SELECT id, (SELECT count(*) FROM s WHERE s.id < k.id) FROM k ORDER BY 1").fetchall()
    assert got == [(i, min(i, 50)) for i in range(0, 61, 3)]


def test_sorted_path_is_used_and_correct(db, foreign_table):
    foreign_table("s", "id int8, v float8, t text", "SortedWrapper", rows=1000)
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN SELECT id FROM s ORDER BY id DESC LIMIT 5").fetchall())
    assert "Sort" not in plan.split("Foreign Scan")[0].replace("Sort Key", ""), plan
    assert db.execute("SELECT id FROM s ORDER BY id DESC LIMIT 5").fetchall() == [(i,) for i in range(999, 994, -1)]
    assert db.execute("SELECT id FROM s ORDER BY id LIMIT 3").fetchall() == [(0,), (1,), (2,)]
    # an order the wrapper cannot produce is sorted by Postgres
    assert db.execute("SELECT t FROM s ORDER BY t DESC LIMIT 1").fetchone() == ("row-999",)


def test_exact_quals_are_not_rechecked(db, foreign_table):
    foreign_table("honest", "id int8, t text", "ExactWrapper", rows=100)
    foreign_table("liar", "id int8, t text", "ExactWrapper", rows=100, lie="true")
    assert db.execute("SELECT count(*) FROM honest WHERE id < 10").fetchone() == (10,)
    # the liar ignores the quals it claimed: Postgres did not recheck them
    assert db.execute("SELECT count(*) FROM liar WHERE id < 10").fetchone() == (100,)
    # quals it did not claim are rechecked
    assert db.execute("SELECT count(*) FROM liar WHERE t = 'row-5'").fetchone() == (1,)
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN SELECT * FROM liar WHERE id < 10 AND t = 'x'").fetchall())
    assert "Filter: (t = 'x'::text)" in plan


def test_explain_shows_python_lines(db, foreign_table):
    foreign_table("s", "id int8, v float8, t text", "SeriesWrapper", rows=10, mode="batch")
    lines = [r[0] for r in db.execute("EXPLAIN VERBOSE SELECT id FROM s WHERE id > 3").fetchall()]
    text = "\n".join(lines)
    assert "Wrapper: series of 10 rows (batch)" in text
    assert "Quals: id > 3" in text
    assert "Columns: id" in text
    js = db.execute("EXPLAIN (FORMAT JSON) SELECT id FROM s").fetchone()[0]
    assert js[0]["Plan"]["Wrapper"] == "series of 10 rows (batch)"


def test_whole_row_reference(db, foreign_table):
    foreign_table("s", "id int8, v float8, t text", "SeriesWrapper", rows=2, mode="batch")
    assert db.execute("SELECT s FROM s ORDER BY id").fetchall() == [("(0,0,row-0)",), ("(1,0.5,row-1)",)]


def test_dropped_column(db, foreign_table):
    foreign_table("s", "id int8, junk int4, v float8, t text", "SeriesWrapper", rows=3, mode="tuple")
    db.execute("ALTER FOREIGN TABLE s DROP COLUMN junk")
    assert db.execute("SELECT id, v, t FROM s ORDER BY id").fetchall() == [
        (0, 0.0, "row-0"), (1, 0.5, "row-1"), (2, 1.0, "row-2")]
    foreign_table("b", "id int8, junk int4, v float8", "SeriesWrapper", rows=3, mode="batch")
    db.execute("ALTER FOREIGN TABLE b DROP COLUMN junk")
    assert db.execute("SELECT sum(id), sum(v) FROM b").fetchone() == (3, 1.5)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_analyze(db, foreign_table, mode):
    foreign_table("s", "id int8, v float8, t text", "SeriesWrapper", rows=50_000, mode=mode, nulls="true")
    db.execute("ANALYZE s")
    stats = dict(db.execute(
        "SELECT attname, null_frac FROM pg_stats WHERE tablename = 's'").fetchall())
    assert set(stats) == {"id", "v", "t"}
    assert abs(stats["id"] - 1 / 7) < 0.03  # every 7th value is NULL
    assert db.execute("SELECT reltuples FROM pg_class WHERE relname = 's'").fetchone()[0] == 50_000
    n_distinct = db.execute("SELECT n_distinct FROM pg_stats WHERE tablename = 's' AND attname = 'id'").fetchone()[0]
    assert n_distinct < -0.5  # unique-ish: a fraction of the rows


def test_limit_reaches_the_wrapper_only_when_safe(db, foreign_table):
    foreign_table("s", "id int8, v float8, t text", "SortedWrapper", rows=1000)
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    assert db.execute("SELECT id FROM s ORDER BY id DESC LIMIT 3 OFFSET 1").fetchall() == [(998,), (997,), (996,)]
    assert notices == ["limit 4"]
    notices.clear()
    # a qual Postgres rechecks: the wrapper must not stop early
    assert db.execute("SELECT id FROM s WHERE t <> 'row-999' ORDER BY id DESC LIMIT 3").fetchall() == [
        (998,), (997,), (996,)]
    # an order the wrapper cannot give: Postgres sorts everything
    assert db.execute("SELECT t FROM s ORDER BY t LIMIT 2").fetchall() == [("row-0",), ("row-1",)]
    # a join: the limit is the join's, not the scan's
    assert db.execute("SELECT s.id FROM s JOIN generate_series(995, 999) g ON g = s.id "
                      "ORDER BY s.id DESC LIMIT 2").fetchall() == [(999,), (998,)]
    # grouping: no limit for the scan
    assert db.execute("SELECT count(*) FROM s LIMIT 1").fetchone() == (1000,)
    assert notices == []
    assert db.execute("SELECT id FROM s LIMIT 2").fetchall() == [(0,), (1,)]
    assert notices == ["limit 2"]
