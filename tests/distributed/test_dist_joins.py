"""Joins: co-located distributed tables on their distribution column, and a
distributed table with a reference table, run on the workers; every other
join is answered by the coordinator from both tables' rows.  Results equal
the heap oracle's."""

from __future__ import annotations

import pytest
from psycopg import sql

from dist_oracle import same_result


@pytest.fixture(scope="module")
def tables(dist_module):
    d = dist_module
    d.q("CREATE TABLE ha (k int, v int, s text)")
    d.q("CREATE TABLE hb (k int, w int, t text)")
    d.q("CREATE TABLE hc (k int, x int)")
    d.q("CREATE TABLE hr (id int, name text)")
    d.q("INSERT INTO ha SELECT i, i % 10, 's' || (i % 7) FROM generate_series(1, 300) i")
    d.q("INSERT INTO ha VALUES (NULL, 3, 'nullkey')")
    d.q("INSERT INTO hb SELECT i, i % 4, CASE WHEN i % 5 = 0 THEN NULL ELSE 't' || i END FROM generate_series(150, 450) i")
    d.q("INSERT INTO hb SELECT i, 99, 'dup' FROM generate_series(150, 160) i")
    d.q("INSERT INTO hc SELECT i, i * 2 FROM generate_series(1, 500, 3) i")
    d.q("INSERT INTO hr SELECT i, 'name' || i FROM generate_series(0, 8) i")
    for h, t in (("ha", "da"), ("hb", "db"), ("hc", "dc"), ("hr", "dr")):
        d.q(f"CREATE TABLE {t} (LIKE {h})")
    d.q("ALTER TABLE da ALTER COLUMN k SET NOT NULL")  # the distribution column refuses NULL
    d.distribute("da", "k", 6)
    d.distribute("db", "k", 6)
    d.distribute("dc", "k", 4)  # another co-location group
    d.reference("dr")
    d.q("INSERT INTO da SELECT * FROM ha WHERE k IS NOT NULL")
    d.q("DELETE FROM ha WHERE k IS NULL")
    for h, t in (("hb", "db"), ("hc", "dc"), ("hr", "dr")):
        d.q(f"INSERT INTO {t} SELECT * FROM {h}")
    return d


def check(d, query: str, ordered: bool = False) -> list:
    """The query over the heap tables (h*) and the distributed ones (d*)."""
    heap = query.replace("{a}", "ha").replace("{b}", "hb").replace("{c}", "hc").replace("{r}", "hr")
    dist = query.replace("{a}", "da").replace("{b}", "db").replace("{c}", "dc").replace("{r}", "dr")
    expected = d.q(heap)
    got = d.q(dist)
    if ordered:
        assert got == expected, query
    else:
        assert sorted(map(repr, got)) == sorted(map(repr, expected)), query
    return got


def plan_of(d, query: str) -> str:
    q = query.replace("{a}", "da").replace("{b}", "db").replace("{c}", "dc").replace("{r}", "dr")
    return "\n".join(r[0] for r in d.q("EXPLAIN " + q))


PUSHED = [
    "SELECT a.k, a.v, b.w, b.t FROM {a} a JOIN {b} b ON a.k = b.k",
    "SELECT a.k, b.t FROM {a} a JOIN {b} b ON a.k = b.k AND a.v = b.w",
    "SELECT a.k, b.t FROM {a} a JOIN {b} b ON a.k = b.k WHERE a.v < 5 AND b.t LIKE 't1%'",
    "SELECT a.k, b.t FROM {a} a LEFT JOIN {b} b ON a.k = b.k",
    "SELECT a.k, b.t FROM {a} a LEFT JOIN {b} b ON a.k = b.k AND b.w = 2",
    "SELECT a.k, b.k, b.t FROM {a} a RIGHT JOIN {b} b ON a.k = b.k",
    "SELECT a.k, b.k FROM {a} a FULL JOIN {b} b ON a.k = b.k",
    "SELECT count(*) FROM {a} a JOIN {b} b ON a.k = b.k",
    "SELECT a.s, count(*), sum(b.w) FROM {a} a JOIN {b} b ON a.k = b.k GROUP BY a.s",
    "SELECT a.k, b.t FROM {a} a JOIN {b} b ON a.k = b.k WHERE a.k = 200",
    "SELECT a.k, b.t FROM {a} a JOIN {b} b ON a.k = b.k WHERE a.k IN (151, 152, 999)",
    "SELECT a.k, r.name FROM {a} a JOIN {r} r ON a.v = r.id",
    "SELECT a.k, r.name FROM {a} a LEFT JOIN {r} r ON a.v = r.id",
    "SELECT r.name, count(*) FROM {a} a JOIN {r} r ON a.v = r.id WHERE r.id < 4 GROUP BY r.name",
    "SELECT r1.id, r2.name FROM {r} r1 JOIN {r} r2 ON r1.id = r2.id",
    "SELECT a.k, b.k FROM {a} a JOIN {a} b ON a.k = b.k WHERE a.v = 1",
]

COORDINATOR = [
    "SELECT a.k, b.k FROM {a} a JOIN {b} b ON a.v = b.w WHERE a.k < 20 AND b.k < 170",
    "SELECT a.k, c.x FROM {a} a JOIN {c} c ON a.k = c.k",
    "SELECT r.id, a.k FROM {r} r LEFT JOIN {a} a ON a.v = r.id AND a.k < 30",
    "SELECT a.k, b.k FROM {a} a FULL JOIN {b} b ON a.k = b.k AND a.k < b.w + 200",
    "SELECT a.k, r.name FROM {a} a FULL JOIN {r} r ON a.v = r.id",
    "SELECT a.k FROM {a} a WHERE a.k IN (SELECT k FROM {b} WHERE w = 1)",
    "SELECT a.k FROM {a} a WHERE EXISTS (SELECT 1 FROM {b} b WHERE b.k = a.k AND b.t IS NULL)",
    "SELECT a.k FROM {a} a WHERE NOT EXISTS (SELECT 1 FROM {b} b WHERE b.k = a.k)",
    "SELECT a.k, b.t, c.x FROM {a} a JOIN {b} b ON a.k = b.k JOIN {c} c ON c.k = a.k",
    "SELECT a.k, b.t, r.name FROM {a} a JOIN {b} b ON a.k = b.k JOIN {r} r ON r.id = b.w",
    "SELECT a.k, (SELECT max(w) FROM {b} b WHERE b.k = a.k) FROM {a} a WHERE a.k < 160",
    "SELECT * FROM {a} a, {r} r WHERE a.k = 5",
    "SELECT a.k FROM {a} a JOIN LATERAL (SELECT b.t FROM {b} b WHERE b.k = a.k LIMIT 1) x ON true",
]


@pytest.mark.parametrize("query", PUSHED)
def test_pushed_join(tables, query):
    check(tables, query)
    assert "Distributed Join:" in plan_of(tables, query), plan_of(tables, query)


@pytest.mark.parametrize("query", COORDINATOR)
def test_join_answered_by_the_coordinator(tables, query):
    check(tables, query)


def test_reference_table_preserved_by_outer_join_is_not_pushed(tables):
    q = "SELECT r.id, a.k FROM {r} r LEFT JOIN {a} a ON a.v = r.id"
    check(tables, q)
    assert "Distributed Join:" not in plan_of(tables, q)


def test_non_colocated_join_is_not_pushed(tables):
    q = "SELECT a.k, c.x FROM {a} a JOIN {c} c ON a.k = c.k"
    assert "Distributed Join:" not in plan_of(tables, q)


def test_join_with_parameters(tables):
    with tables.connect() as conn:
        conn.execute("PREPARE j(int) AS SELECT a.k, b.t FROM da a JOIN db b ON a.k = b.k WHERE a.k = $1")
        conn.execute("PREPARE hj(int) AS SELECT a.k, b.t FROM ha a JOIN hb b ON a.k = b.k WHERE a.k = $1")
        for k in (150, 151, 152, 160, 200, 1, 299, 300, 151):
            assert conn.execute(f"EXECUTE j({k})").fetchall() == conn.execute(f"EXECUTE hj({k})").fetchall()


def test_join_explain_analyze(tables):
    plan = "\n".join(r[0] for r in tables.q(
        "EXPLAIN ANALYZE SELECT a.k, b.t FROM da a JOIN db b ON a.k = b.k WHERE a.k = 200"))
    assert "Shard Pairs: 1 of 6 (5 pruned)" in plan
    assert "shard pair(s)" in plan


JOINS_WITH_PARAMETERS = [
    # (query over {a} {b} {r} with $1 $2, parameter types)
    ("SELECT a.k, b.t FROM {a} a JOIN {b} b ON a.k = b.k WHERE a.k = $1 OR a.k = $2", "int, int"),
    ("SELECT a.k, b.w FROM {a} a LEFT JOIN {b} b ON a.k = b.k AND b.w = $1 WHERE a.k < $2", "int, int"),
    ("SELECT a.k, b.w FROM {a} a RIGHT JOIN {b} b ON a.k = b.k AND a.v = $1 WHERE b.k < $2", "int, int"),
    ("SELECT a.k, b.k FROM {a} a FULL JOIN {b} b ON a.k = b.k AND a.v = $1 AND b.w = $2", "int, int"),
    ("SELECT count(*), count(b.k) FROM {a} a LEFT JOIN {b} b ON a.k = b.k AND b.t = $1 WHERE a.v = $2", "text, int"),
    ("SELECT a.k, r.name FROM {a} a JOIN {r} r ON a.v = r.id WHERE r.name = $1 AND a.k > $2", "text, int"),
    ("SELECT a.k, r.name FROM {a} a LEFT JOIN {r} r ON a.v = r.id AND r.id = $2 WHERE a.s = $1", "text, int"),
]


@pytest.mark.parametrize("query, types", JOINS_WITH_PARAMETERS)
@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_join_with_null_and_unmatched_parameters(tables, query, types, mode):
    """A NULL parameter empties its own side only: an outer join still
    yields the rows of the side it preserves (generic plans get the values
    at execution)."""
    values = {"int": [None, 3, 151, 200, 10 ** 6], "text": [None, "t151", "s3", "name3", "no such"]}
    t1, t2 = [t.strip() for t in types.split(",")]
    with tables.connect() as conn:
        conn.execute(f"SET plan_cache_mode = {mode}")
        dist = query.replace("{a}", "da").replace("{b}", "db").replace("{r}", "dr")
        heap = query.replace("{a}", "ha").replace("{b}", "hb").replace("{r}", "hr")
        conn.execute(f"PREPARE dq({types}) AS {dist}")
        conn.execute(f"PREPARE hq({types}) AS {heap}")
        for p1 in values[t1]:
            for p2 in values[t2][:3]:
                args = sql.SQL("({}, {})").format(sql.Literal(p1), sql.Literal(p2))
                got = conn.execute(sql.SQL("EXECUTE dq") + args).fetchall()
                expected = conn.execute(sql.SQL("EXECUTE hq") + args).fetchall()
                assert sorted(map(repr, got)) == sorted(map(repr, expected)), (query, p1, p2)
