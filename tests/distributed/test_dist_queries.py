"""Reading distributed tables: pruning, the router path, fan-out,
pushed-down aggregates merged on the coordinator; results equal the heap
oracle's."""

from __future__ import annotations

import datetime
import decimal

import psycopg
import pytest

from dist_oracle import make_pair, same_result


def _rows(n: int) -> list[tuple]:
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    out = []
    for i in range(n):
        out.append((i, i % 7 if i % 11 else None, (i * 0.25) if i % 5 else None,
                    decimal.Decimal(i) / 8 if i % 3 else None, f"s{i % 13}" if i % 4 else None,
                    base + datetime.timedelta(hours=i * 5), (i % 2 == 0) if i % 6 else None))
    return out


@pytest.fixture(scope="module")
def pair(dist_module):
    make_pair(dist_module, shard_count=6, rows=_rows(500))
    return dist_module


QUERIES = [
    "SELECT * FROM {t}",
    "SELECT k, s FROM {t} WHERE k = 17",
    "SELECT k, s FROM {t} WHERE k IN (1, 2, 3, 400, 9999)",
    "SELECT k FROM {t} WHERE k = ANY ('{5,6,7}'::int[])",
    "SELECT k FROM {t} WHERE k = 17 AND k = 18",
    "SELECT k FROM {t} WHERE k IS NULL",
    "SELECT k, g FROM {t} WHERE g < 3 AND v IS NOT NULL",
    "SELECT k FROM {t} WHERE s LIKE 's1%'",
    "SELECT k FROM {t} WHERE s ILIKE 'S1_'",
    "SELECT k FROM {t} WHERE ts >= '2024-02-01' AND ts < '2024-02-03'",
    "SELECT k FROM {t} WHERE n > 10.5",
    "SELECT k FROM {t} WHERE v = 0.75",
    "SELECT k FROM {t} WHERE b",
    "SELECT k FROM {t} WHERE NOT b",
    "SELECT k FROM {t} WHERE k::text = '42'",
    "SELECT k FROM {t} WHERE k = 3.0",
    "SELECT k FROM {t} WHERE k = 3.5",
    "SELECT k FROM {t} WHERE k = 2147483648",
    "SELECT count(*) FROM {t}",
    "SELECT count(*), count(g), count(v), count(s) FROM {t}",
    "SELECT sum(k), sum(g), sum(n), avg(k), avg(g), avg(n), avg(v) FROM {t}",
    "SELECT min(k), max(k), min(s), max(s), min(ts), max(ts), min(n), max(v) FROM {t}",
    "SELECT bool_and(b), bool_or(b), every(b) FROM {t}",
    "SELECT count(DISTINCT g), count(DISTINCT s) FROM {t}",
    "SELECT g, count(*), sum(k), avg(n), min(s), max(ts) FROM {t} GROUP BY g",
    "SELECT s, count(DISTINCT g), sum(v) FROM {t} GROUP BY s",
    "SELECT k, count(*), sum(g) FROM {t} GROUP BY k",
    "SELECT g, b, count(*) FROM {t} GROUP BY g, b",
    "SELECT date_trunc('day', ts) AS day, count(*), avg(k) FROM {t} GROUP BY 1",
    "SELECT orochi.time_bucket('6 hours', ts) AS bucket, count(*) FROM {t} GROUP BY 1",
    "SELECT count(*) FROM {t} WHERE k = 17",
    "SELECT g, sum(k) FROM {t} WHERE k IN (1, 2, 3, 4, 5, 6, 7, 8) GROUP BY g",
    "SELECT count(*), sum(n), min(s) FROM {t} WHERE k = -5",
    "SELECT g, count(*) FROM {t} WHERE k = -5 GROUP BY g",
    "SELECT sum(k) / 2, g::text FROM {t} GROUP BY g",
    "SELECT g, count(*) FROM {t} GROUP BY g HAVING count(*) > 60",
    "SELECT count(*) FROM (SELECT DISTINCT g, s FROM {t}) x",
    "SELECT k, v FROM {t} ORDER BY v DESC NULLS LAST, k LIMIT 5",
    "SELECT s, count(*) FROM {t} GROUP BY s ORDER BY 2 DESC, 1 LIMIT 3",
    "SELECT sum(DISTINCT g), avg(DISTINCT g) FROM {t}",
    "SELECT k FROM {t} WHERE k > (SELECT max(k) - 3 FROM {t})",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY k) FROM {t}",
    "SELECT string_agg(s, ',' ORDER BY k) FROM {t} WHERE k < 20",
]


@pytest.mark.parametrize("query", QUERIES)
def test_query_matches_heap(pair, query):
    same_result(pair, query, ordered="ORDER BY" in query and "string_agg" not in query)


def test_router_query_touches_one_worker(pair):
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN SELECT * FROM d WHERE k = 17"))
    assert "Shards: 1 of 6 (5 pruned)" in plan
    assert "Task Count: 1 (router)" in plan
    assert '"k" = $1::bigint' in plan
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN SELECT * FROM d WHERE k IN (1, 2)"))
    assert "Shards: 2 of 6" in plan or "Shards: 1 of 6" in plan


def test_prepared_statement_prunes_at_execution(pair):
    with pair.connect(autocommit=True) as conn:
        conn.execute("PREPARE p(int) AS SELECT k, s FROM d WHERE k = $1")
        conn.execute("PREPARE ph(int) AS SELECT k, s FROM h WHERE k = $1")
        for k in (1, 2, 3, 17, 499, 500, -1, 1, 2, 3):  # past five runs: the generic plan
            assert (conn.execute(f"EXECUTE p({k})").fetchall()
                    == conn.execute(f"EXECUTE ph({k})").fetchall())
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE p(17)"))
        assert "Node " in plan
        conn.execute("PREPARE pa(int) AS SELECT count(*), sum(g) FROM d WHERE k = $1")
        conn.execute("PREPARE pha(int) AS SELECT count(*), sum(g) FROM h WHERE k = $1")
        for k in (1, 2, 3, 17, 499, 7, 8, 9):
            assert conn.execute(f"EXECUTE pa({k})").fetchall() == conn.execute(f"EXECUTE pha({k})").fetchall()


def test_explain_shows_tasks_and_merge(pair):
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN (VERBOSE) SELECT g, count(*) FROM d GROUP BY g"))
    assert "Task Count: 2" in plan
    assert "Merge: final aggregation on the coordinator" in plan
    assert "Remote SQL:" in plan and "GROUP BY" in plan
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN SELECT k, count(*) FROM d GROUP BY k"))
    assert "Merge: concatenation" in plan
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN ANALYZE SELECT g, count(*) FROM d GROUP BY g"))
    assert plan.count("Node 127.0.0.1:") == 2
    assert "Partial rows merged:" in plan


def test_sketches_merge_like_one_node(pair):
    """approx_count_distinct over shards equals the union of the shards'
    sketches on one node, byte for byte the same union."""
    got = pair.q("SELECT orochi.approx_count_distinct(k), orochi.approx_count_distinct(s, 10) FROM d")
    heap = pair.q("SELECT orochi.approx_count_distinct(k), orochi.approx_count_distinct(s, 10) FROM h")
    assert got == heap  # sparse sketches: exact below 2^p/8 values, and the union is order-independent
    got = pair.q("SELECT g, orochi.approx_count_distinct(k) FROM d GROUP BY g ORDER BY g NULLS FIRST")
    heap = pair.q("SELECT g, orochi.approx_count_distinct(k) FROM h GROUP BY g ORDER BY g NULLS FIRST")
    assert got == heap
    sk = pair.q("SELECT orochi.hll_agg(k)::bytea FROM d")[0][0]
    assert sk == pair.q("SELECT orochi.hll_agg(k)::bytea FROM h")[0][0]
    p = pair.q("SELECT orochi.approx_percentile(v, 0.5) FROM d")[0][0]
    exact = pair.q("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM h")[0][0]
    assert abs(p - exact) <= 0.02 * max(1.0, abs(exact))


def test_text_distribution_column(dist):
    rows = [r[:4] + (r[4] or "none",) + r[5:] for r in _rows(300)]
    make_pair(dist, dist_column="s", shard_count=5, rows=rows)
    for q in ["SELECT k FROM {t} WHERE s = 's3'", "SELECT s, count(*) FROM {t} GROUP BY s",
              "SELECT count(*) FROM {t} WHERE s IN ('s1', 's2', 'zz')", "SELECT * FROM {t} WHERE s IS NULL",
              "SELECT s, count(DISTINCT g), avg(v) FROM {t} WHERE s > 's5' GROUP BY s"]:
        same_result(dist, q)
    plan = "\n".join(r[0] for r in dist.q("EXPLAIN SELECT k FROM d WHERE s = 's3'"))
    assert "Shards: 1 of 5" in plan
    with pytest.raises(psycopg.Error) as info:
        dist.q("INSERT INTO d (k, s) VALUES (1, NULL)")
    assert info.value.sqlstate == "23502"


def test_reference_table_reads(dist):
    make_pair(dist, reference=True, rows=_rows(100))
    for q in ["SELECT * FROM {t}", "SELECT g, count(*), sum(n) FROM {t} GROUP BY g", "SELECT count(DISTINCT s) FROM {t}"]:
        same_result(dist, q)


def test_heap_shards(dist):
    make_pair(dist, storage="heap", rows=_rows(200))
    for q in QUERIES[:25]:
        same_result(dist, q)


def test_empty_table_aggregates(dist):
    make_pair(dist)
    for q in ["SELECT count(*), sum(k), avg(v), min(s) FROM {t}", "SELECT g, count(*) FROM {t} GROUP BY g",
              "SELECT count(DISTINCT g) FROM {t}", "SELECT orochi.approx_count_distinct(k) FROM {t}"]:
        same_result(dist, q)


@pytest.mark.parametrize("column, sqltype, values", [
    ("d", "date", ["2024-01-01", "1999-12-31", "infinity", "-infinity", "0044-03-15 BC", "2000-02-29"]),
    ("t", "timestamptz", ["2024-01-01 10:00:00+00", "1970-01-01 00:00:00+00", "infinity", "2000-01-01 00:00:00.5+00"]),
    ("b", "boolean", ["true", "false"]),
    ("u", "uuid", ["00000000-0000-0000-0000-000000000000", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
    ("n", "numeric", ["1", "1.0", "-2.50", "NaN", "1e20"]),
    ("s2", "smallint", ["-32768", "0", "7", "32767"]),
    ("v", "varchar(10)", ["a", "", "zz", "ü"]),
])
def test_other_distribution_types(dist, column, sqltype, values):
    """Rows land where the coordinator's hash says (inserts hash in numpy or
    SQL, pruning in SQL): each equality finds its rows through one shard."""
    dist.q(f"CREATE TABLE h (x {sqltype}, i int)")
    dist.q(f"CREATE TABLE d (x {sqltype} NOT NULL, i int)")
    dist.distribute("d", "x", 5)
    for t in ("h", "d"):
        dist.q(f"INSERT INTO {t} SELECT v::{sqltype}, n FROM unnest(%s::text[]) WITH ORDINALITY u(v, n)", (values,))
        dist.q(f"INSERT INTO {t} SELECT v::{sqltype}, n + 100 FROM unnest(%s::text[]) WITH ORDINALITY u(v, n)",
               (values,))
    for v in values:
        same_result(dist, f"SELECT x::text, i FROM {{t}} WHERE x = %s::{sqltype}", params=(v,))
        plan = "\n".join(r[0] for r in dist.q(f"EXPLAIN SELECT * FROM d WHERE x = %s::{sqltype}", (v,)))
        assert "Shards: 1 of 5" in plan, plan
    same_result(dist, "SELECT x::text, count(*) FROM {t} GROUP BY x")


def test_having_is_checked_over_pushed_down_groups(pair):
    for q in ["SELECT g, count(*) FROM {t} GROUP BY g HAVING count(*) > 60",
              "SELECT s, sum(k) FROM {t} GROUP BY s HAVING sum(k) > 10000 AND max(g) < 6",
              "SELECT g, avg(n) FROM {t} GROUP BY g HAVING count(DISTINCT s) > 3 OR g IS NULL",
              "SELECT count(*) FROM {t} HAVING count(*) > 1000"]:
        same_result(pair, q)
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN SELECT g, count(*) FROM d GROUP BY g HAVING count(*) > 60"))
    assert "Aggregates: count(*)" in plan and "Filter: ((count(*)) > 60)" in plan, plan


def test_explain_of_a_router_query_shows_the_pruning_and_one_task(pair):
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN (VERBOSE) SELECT k, s FROM d WHERE k = 123457 AND s = 'x''y'"))
    assert "Distributed Table: hash distributed, 6 shards" in plan
    assert "Shards: 1 of 6 (5 pruned)" in plan
    assert "Task Count: 1 (router)" in plan
    remote = next(line for line in plan.splitlines() if "Remote SQL:" in line)
    # values travel as parameters, identifiers quoted
    assert "123457" not in remote and "x'y" not in remote and "x''y" not in remote
    assert "$1" in remote and '"k"' in remote
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN ANALYZE SELECT count(*) FROM d WHERE k IN (1, 2, 3)"))
    import re

    m = re.search(r"Shards: (\d+) of 6 \((\d+) pruned\)", plan)
    assert m and 1 <= int(m.group(1)) <= 3 and int(m.group(1)) + int(m.group(2)) == 6, plan
    assert "Node 127.0.0.1:" in plan
