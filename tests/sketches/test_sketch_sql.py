"""The sketch types, functions and aggregates in SQL, on heap tables and
pushed down into columnar tables."""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def data(db):
    db.execute("CREATE TABLE h (g int4, i int8, f float8, s text, d date)")
    db.execute("CREATE FOREIGN TABLE m (g int4, i int8, f float8, s text, d date) "
               "SERVER orochi OPTIONS (chunk_group_size '1000')")
    fill = ("INSERT INTO {} SELECT i % 3, CASE WHEN i % 17 = 0 THEN NULL ELSE i % 4000 END, "
            "(i % 997) / 7.0, 'k' || (i % 2500), date '2024-01-01' + (i % 300) "
            "FROM generate_series(1, 12000) i")
    for t in ("h", "m"):
        db.execute(fill.format(t))
    return db


def test_approx_count_distinct_small_is_exact(db):
    assert db.execute("SELECT orochi.approx_count_distinct(x) FROM generate_series(1, 500) x").fetchone() == (500,)
    assert db.execute("SELECT orochi.approx_count_distinct(x::text, 10) FROM generate_series(1, 100) x").fetchone() == (100,)
    assert db.execute("SELECT orochi.approx_count_distinct(x) FROM generate_series(1, 0) x").fetchone() == (0,)
    assert db.execute("SELECT orochi.approx_count_distinct(NULL::int)").fetchone() == (0,)


def test_approx_count_distinct_heap(data):
    rows = data.execute("SELECT g, orochi.approx_count_distinct(i), count(DISTINCT i), "
                        "orochi.approx_count_distinct(s), orochi.approx_count_distinct(d) "
                        "FROM h GROUP BY g ORDER BY g").fetchall()
    for g, approx, exact, s, d in rows:
        assert abs(approx - exact) <= 0.03 * exact
        assert abs(s - 2500) <= 0.03 * 2500
        assert d == 100  # i % 3 fixes i % 300 to 100 values; sparse: exact


def test_hll_rollup_union(db):
    db.execute("CREATE TABLE ev (hour int, u int)")
    db.execute("INSERT INTO ev SELECT i % 24, (i * 7919) % 30000 FROM generate_series(1, 60000) i")
    db.execute("CREATE TABLE rollup AS SELECT hour, orochi.hll_agg(u) AS users FROM ev GROUP BY hour")
    daily = db.execute("SELECT orochi.hll_cardinality(orochi.hll_union_agg(users)) FROM rollup").fetchone()[0]
    direct = db.execute("SELECT orochi.approx_count_distinct(u) FROM ev").fetchone()[0]
    assert daily == direct
    union = db.execute("SELECT orochi.hll_union_agg(users) FROM rollup").fetchone()[0]
    whole = db.execute("SELECT orochi.hll_agg(u) FROM ev").fetchone()[0]
    assert bytes(union) == bytes(whole)
    assert db.execute("SELECT pg_typeof(orochi.hll_agg(u))::text FROM ev").fetchone() == ("orochi.hll",)


def test_percentiles_heap(db):
    db.execute("CREATE TABLE t (v float8)")
    db.execute("INSERT INTO t SELECT i FROM generate_series(1, 10000) i")
    got = db.execute("SELECT orochi.approx_percentile(v, 0.5), orochi.approx_percentile(v, 0.99, 200), "
                     "orochi.approx_percentile(v, ARRAY[0, 0.25, 1]::float8[]) FROM t").fetchone()
    assert abs(got[0] - 5000) < 100
    assert abs(got[1] - 9900) < 30
    assert got[2][0] == 1 and got[2][2] == 10000 and abs(got[2][1] - 2500) < 100
    db.execute("CREATE TABLE d AS SELECT v::int % 4 AS k, orochi.tdigest_agg(v) AS t FROM t GROUP BY 1")
    p = db.execute("SELECT orochi.tdigest_percentile(orochi.tdigest_union_agg(t), 0.5), "
                   "orochi.tdigest_percentile(orochi.tdigest_union_agg(t), ARRAY[0.1, 0.9]) FROM d").fetchone()
    assert abs(p[0] - 5000) < 100 and abs(p[1][0] - 1000) < 100 and abs(p[1][1] - 9000) < 100
    assert db.execute("SELECT orochi.approx_percentile(v, 0.5) FROM t WHERE false").fetchone() == (None,)


@pytest.mark.parametrize("sql, sqlstate, message", [
    ("SELECT orochi.approx_count_distinct(x, 3) FROM generate_series(1, 3) x", "22023", "precision"),
    ("SELECT orochi.approx_count_distinct(x, 19) FROM generate_series(1, 3) x", "22023", "precision"),
    ("SELECT orochi.approx_percentile(x, 1.5) FROM generate_series(1, 3) x", "22023", "percentile"),
    ("SELECT orochi.approx_percentile(x, -0.1) FROM generate_series(1, 3) x", "22023", "percentile"),
    ("SELECT orochi.approx_percentile(x, ARRAY[0.5, 2]) FROM generate_series(1, 3) x", "22023", "percentile"),
    ("SELECT orochi.tdigest_agg(x, 5) FROM generate_series(1, 3) x", "22023", "compression"),
    ("SELECT orochi.hll_cardinality('\\x0102'::bytea::orochi.hll)", "22P03", "invalid hll"),
    ("SELECT orochi.tdigest_percentile('\\x4f544401'::bytea::orochi.tdigest, 0.5)", "22P03", "invalid tdigest"),
    ("SELECT orochi.tdigest_percentile(orochi.tdigest_agg(x), 2) FROM generate_series(1, 3) x", "22023", "percentile"),
])
def test_bad_parameters(db, sql, sqlstate, message):
    with pytest.raises(psycopg.Error) as e:
        db.execute(sql)
    assert e.value.sqlstate == sqlstate, e.value
    assert message in str(e.value)


PUSHED = [
    "SELECT orochi.approx_count_distinct(i), orochi.approx_count_distinct(s, 12), "
    "orochi.approx_count_distinct(d), orochi.approx_count_distinct(f) FROM {}",
    "SELECT g, orochi.approx_count_distinct(i), orochi.approx_count_distinct(s), count(*) "
    "FROM {} GROUP BY g ORDER BY g",
    "SELECT orochi.approx_percentile(f, 0.5), orochi.approx_percentile(f, 0.99, 300) FROM {}",
    "SELECT g, orochi.approx_percentile(f, 0.25) FROM {} WHERE i > 100 GROUP BY g ORDER BY g",
    "SELECT g, orochi.hll_agg(s), orochi.hll_agg(i, 8), orochi.tdigest_agg(f), orochi.tdigest_agg(f, 50) "
    "FROM {} GROUP BY g ORDER BY g",
    "SELECT orochi.hll_agg(i) FROM {} WHERE i < 0",
    "SELECT orochi.approx_count_distinct(i), orochi.approx_percentile(f, 0.5) FROM {} WHERE i < 0",
]


@pytest.mark.parametrize("query", PUSHED)
def test_pushed_down_identical_to_heap(data, query):
    plan = "\n".join(r[0] for r in data.execute("EXPLAIN VERBOSE " + query.format("m")).fetchall())
    assert "Aggregates: " in plan, plan
    got = data.execute(query.format("m")).fetchall()
    want = data.execute(query.format("h")).fetchall()
    assert got == want


def test_not_pushed_down_still_correct(data):
    # array of quantiles and out-of-range parameters are left to Postgres
    q = "SELECT orochi.approx_percentile(f, ARRAY[0.1, 0.9]) FROM {}"
    assert data.execute(q.format("m")).fetchall() == data.execute(q.format("h")).fetchall()
    with pytest.raises(psycopg.Error) as e:
        data.execute("SELECT orochi.approx_count_distinct(i, 30) FROM m")
    assert e.value.sqlstate == "22023"


def test_pushed_down_hashes_every_type_like_heap(db):
    cols = "b bool, r float4, t timestamptz, ts timestamp, tm time, by bytea, v varchar, sm int2"
    db.execute(f"CREATE TABLE h2 ({cols})")
    db.execute(f"CREATE FOREIGN TABLE m2 ({cols}) SERVER orochi OPTIONS (chunk_group_size '500')")
    fill = ("INSERT INTO {} SELECT i % 2 = 0, CASE WHEN i % 5 = 0 THEN -0.0 ELSE (i % 300) / 3.0 END, "
            "timestamptz '2024-03-01 00:00+00' + (i % 4000) * interval '1 second', "
            "timestamp '1999-12-31 23:00' + (i % 3000) * interval '1 minute', "
            "time '00:00' + (i % 1500) * interval '1 second', "
            "decode(md5((i % 2600)::text), 'hex'), 'v' || (i % 2700), (i % 3100)::int2 "
            "FROM generate_series(1, 6000) i")
    for t in ("h2", "m2"):
        db.execute(fill.format(t))
    db.execute("SET TIME ZONE 'America/New_York'")
    q = ("SELECT " + ", ".join(f"orochi.approx_count_distinct({c})" for c in
                               ("b", "r", "t", "ts", "tm", "by", "v", "sm")) + " FROM {}")
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN VERBOSE " + q.format("m2")).fetchall())
    assert "Aggregates: " in plan, plan
    got, want = db.execute(q.format("m2")).fetchone(), db.execute(q.format("h2")).fetchone()
    assert got == want
    assert want[0] == 2 and want[1] == 241  # 240 values of i % 300 with i % 5 != 0, and 0 = -0


@pytest.mark.parametrize("n_a, n_b", [(50, 80), (100, 5000), (30000, 20000)])
def test_hll_union_of_different_precisions(db, n_a, n_b):
    """Sketches of different precisions merge at the lower one, byte for
    byte the sketch of the union built at that precision (sparse and dense)."""
    db.execute("CREATE TABLE u (part int, v int8)")
    db.execute("INSERT INTO u SELECT 1, (i * 7919) %% 1000003 FROM generate_series(1, %s) i", (n_a,))
    db.execute("INSERT INTO u SELECT 2, (i * 104729) %% 999983 FROM generate_series(1, %s) i", (n_b,))
    want = db.execute("SELECT orochi.hll_agg(v, 10) FROM u").fetchone()[0]
    got = db.execute(
        "SELECT orochi.hll_union((SELECT orochi.hll_agg(v, 14) FROM u WHERE part = 1), "
        "                        (SELECT orochi.hll_agg(v, 10) FROM u WHERE part = 2)), "
        "       orochi.hll_union((SELECT orochi.hll_agg(v, 10) FROM u WHERE part = 1), "
        "                        (SELECT orochi.hll_agg(v, 18) FROM u WHERE part = 2))").fetchone()
    assert bytes(got[0]) == bytes(want) and bytes(got[1]) == bytes(want)
    agg = db.execute("SELECT orochi.hll_union_agg(h ORDER BY p DESC) FROM "
                     "(SELECT part, orochi.hll_agg(v, CASE part WHEN 1 THEN 16 ELSE 10 END) AS h, "
                     "        CASE part WHEN 1 THEN 16 ELSE 10 END AS p FROM u GROUP BY part) s").fetchone()[0]
    assert bytes(agg) == bytes(want)
