"""Aggregates pushed down into columnar tables equal the heap table's."""

from __future__ import annotations

import pytest


@pytest.fixture
def metrics(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, device int4, v float8, n int8, s text, ok bool) "
               "SERVER orochi OPTIONS (chunk_group_size '1000')")
    db.execute("CREATE TABLE h (ts timestamptz, device int4, v float8, n int8, s text, ok bool)")
    fill = ("INSERT INTO {} SELECT '2024-01-01'::timestamptz + i * interval '37 seconds', i % 17, "
            "CASE WHEN i % 11 = 0 THEN NULL ELSE (i % 1000) / 8.0 END, "
            "CASE WHEN i % 13 = 0 THEN NULL ELSE i::int8 * 1000003 END, "
            "CASE WHEN i % 7 = 0 THEN NULL ELSE 'status-' || (i % 5) END, i % 3 = 0 "
            "FROM generate_series(1, 20000) i")
    for t in ("h", "m"):
        db.execute(fill.format(t))
        db.execute(fill.format(t).replace("generate_series(1, 20000)", "generate_series(20001, 23000)"))
    return db


QUERIES = [
    "SELECT count(*) FROM {}",
    "SELECT count(*), count(v), sum(n), min(s), max(s), avg(device), bool_and(ok), bool_or(ok) FROM {}",
    "SELECT device, count(*), sum(v), max(n), min(ts) FROM {} GROUP BY device ORDER BY device",
    "SELECT s, device, count(*), avg(n) FROM {} GROUP BY s, device ORDER BY s NULLS FIRST, device",
    "SELECT ok, count(DISTINCT device) FROM {} GROUP BY ok ORDER BY ok",
    "SELECT sum(device), sum(n) FROM {} GROUP BY s ORDER BY 1, 2",
]


@pytest.mark.parametrize("query", QUERIES)
def test_pushed_down_equals_heap(metrics, query):
    db = metrics
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN VERBOSE " + query.format("m")).fetchall())
    assert "Aggregates: " in plan, plan
    got = db.execute(query.format("m")).fetchall()
    want = db.execute(query.format("h")).fetchall()
    assert _approx(got) == _approx(want)


def _approx(rows):
    """float sums may differ by summation order only"""
    out = []
    for row in rows:
        out.append(tuple(round(v, 6) if isinstance(v, float) else v for v in row))
    return out


def test_empty_columnar_table(db):
    db.execute("CREATE FOREIGN TABLE e (a int, b text) SERVER orochi")
    assert db.execute("SELECT count(*), sum(a), max(b) FROM e").fetchone() == (0, None, None)
    assert db.execute("SELECT a, count(*) FROM e GROUP BY a").fetchall() == []


def test_sum_overflow_raises_like_postgres(db):
    db.execute("CREATE FOREIGN TABLE big (a int8) SERVER orochi")
    db.execute("INSERT INTO big VALUES (9223372036854775807), (1)")
    db.execute("CREATE TABLE hbig (a int8)")
    db.execute("INSERT INTO hbig VALUES (9223372036854775807), (1)")
    assert db.execute("SELECT sum(a) FROM big").fetchone() == db.execute("SELECT sum(a) FROM hbig").fetchone()
    db.execute("CREATE FOREIGN TABLE small (a int4) SERVER orochi")
    db.execute("INSERT INTO small SELECT 2147483647 FROM generate_series(1, 10)")
    assert db.execute("SELECT sum(a), avg(a) FROM small").fetchone() == (21474836470,
                                                                      db.execute("SELECT avg(2147483647::int4)").fetchone()[0])


def test_text_collations(db):
    """min/max of text and grouping by text are pushed down only where byte
    order and byte equality are the collation's."""
    db.execute("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    db.execute("CREATE FOREIGN TABLE t (s text, c text COLLATE ci) SERVER orochi")
    db.execute("CREATE TABLE ht (s text, c text COLLATE ci)")
    for tbl in ("t", "ht"):
        db.execute(f"INSERT INTO {tbl} VALUES ('b', 'A'), ('a', 'a'), ('B', 'b'), (NULL, NULL)")
    for q, pushed in [("SELECT min(s), max(s) FROM {}", True),
                      ("SELECT min(s COLLATE \"en-x-icu\"), max(s COLLATE \"en-x-icu\") FROM {}", False),
                      ("SELECT c, count(*) FROM {} GROUP BY c ORDER BY 2, 1", False),
                      ("SELECT count(DISTINCT c) FROM {}", False),
                      ("SELECT s, count(*) FROM {} GROUP BY s ORDER BY 1", True)]:
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN VERBOSE " + q.format("t")).fetchall())
        assert ("Aggregates: " in plan) == pushed, (q, plan)
        assert db.execute(q.format("t")).fetchall() == db.execute(q.format("ht")).fetchall(), q


@pytest.mark.parametrize("bucket", [
    "orochi.time_bucket('1 hour', ts)",
    "orochi.time_bucket('15 minutes', ts)",
    "orochi.time_bucket('7 hours', ts)",
    "orochi.time_bucket('1 day', ts, '2024-01-01 06:00+00'::timestamptz)",
    "date_bin('20 minutes', ts, '2001-01-01')",
    "date_trunc('hour', ts)",
    "date_trunc('week', ts)",
    "date_trunc('month', ts)",
    "date_trunc('quarter', ts)",
    "date_trunc('year', ts)",
    "date_trunc('day', lts)",
    "orochi.time_bucket('1 hour', lts)",
])
@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata"])
def test_time_buckets_pushed_down(db, bucket, tz):
    db.execute(f"SET timezone = '{tz}'")
    for t, kind in (("m", "FOREIGN TABLE"), ("h", "TABLE")):
        server = "SERVER orochi OPTIONS (chunk_group_size '1000')" if t == "m" else ""
        db.execute(f"CREATE {kind} {t} (ts timestamptz, lts timestamp, v float8) {server}")
        db.execute(f"INSERT INTO {t} SELECT '2023-12-30 22:00+00'::timestamptz + i * interval '17 minutes 3 seconds', "
                   f"'2023-12-30 22:00'::timestamp + i * interval '17 minutes 3 seconds', i "
                   f"FROM generate_series(1, 12000) i")
        db.execute(f"INSERT INTO {t} VALUES ('infinity', '-infinity', 1), (NULL, NULL, 2)")
    q = f"SELECT ({bucket})::text AS b, count(*), sum(v) FROM {{}} GROUP BY {bucket} ORDER BY {bucket} NULLS FIRST"
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN VERBOSE " + q.format("m")).fetchall())
    pushable = not (tz != "UTC" and bucket.startswith("date_trunc") and "lts" not in bucket)
    assert ("Aggregates: " in plan) == pushable, plan
    assert db.execute(q.format("m")).fetchall() == db.execute(q.format("h")).fetchall()


def test_explain_analyze_of_pushed_down_aggregate(metrics):
    plan = "\n".join(r[0] for r in metrics.execute(
        "EXPLAIN (ANALYZE, VERBOSE) SELECT device, count(*) FROM m GROUP BY device").fetchall())
    assert "Aggregates: count(*)" in plan
    assert "Group by: device" in plan
    assert "Groups: 17" in plan
    assert "Stripes Read: " in plan
