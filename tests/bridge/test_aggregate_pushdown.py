"""The bridge's aggregate pushdown protocol (docs/aggregate-pushdown.md)."""

from __future__ import annotations

import pytest


@pytest.fixture
def agg_tables(db, foreign_table):
    foreign_table("s", "id int8, v float8, t text, g int4", "AggregatingWrapper", rows=1000, nulls="true")
    db.execute(
        "CREATE TABLE h AS SELECT CASE WHEN i % 7 = 3 THEN NULL ELSE i::int8 END AS id, "
        "CASE WHEN i % 7 = 3 THEN NULL ELSE i * 0.5 END::float8 AS v, "
        "CASE WHEN i % 7 = 3 THEN NULL ELSE 'row-' || i END AS t, "
        "CASE WHEN i % 7 = 3 THEN NULL ELSE i % 5 END::int4 AS g FROM generate_series(0, 999) i"
    )


def _plan(db, query):
    return "\n".join(r[0] for r in db.execute("EXPLAIN VERBOSE " + query).fetchall())


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count(*), count(id), sum(id), min(t), max(v) FROM {}",
        "SELECT g, count(*), sum(id), max(t) FROM {} GROUP BY g ORDER BY g",
        "SELECT sum(v), g FROM {} GROUP BY g ORDER BY g NULLS FIRST",
        "SELECT count(*) FROM {} GROUP BY g ORDER BY 1",
        "SELECT g, count(*) FROM {} GROUP BY g ORDER BY count(*) DESC, g",
        # expressions over group keys and aggregates: computed above the pushed-down scan
        "SELECT sum(id) * 2, count(*) + 1 FROM {}",
        "SELECT g::text || '!', max(id) - min(id) FROM {} GROUP BY g ORDER BY 1",
        # HAVING: checked by the scan over the groups it yields
        "SELECT g, count(*) FROM {} GROUP BY g HAVING count(*) > 100 ORDER BY g",
        "SELECT g FROM {} GROUP BY g HAVING max(id) - min(id) > 10 ORDER BY g",
    ],
)
def test_pushed_down_and_equal_to_heap(db, agg_tables, query):
    plan = _plan(db, query.format("s"))
    assert "Aggregates: " in plan, plan
    assert "Aggregate" not in plan.replace("Aggregates: ", ""), plan
    assert db.execute(query.format("s")).fetchall() == db.execute(query.format("h")).fetchall()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT avg(v) FROM {}",                       # the wrapper declines avg
        "SELECT count(*) FROM {} WHERE id > 10",        # it declines quals
        "SELECT g + 1, count(*) FROM {} GROUP BY g + 1 ORDER BY 1",  # not a plain column
        "SELECT g, count(*) FROM {} GROUP BY g HAVING count(*) > 100 AND avg(v) > 0 ORDER BY g",  # avg declined
        "SELECT count(DISTINCT g) FROM {}",
    ],
)
def test_not_pushed_down_still_correct(db, agg_tables, query):
    plan = _plan(db, query.format("s"))
    assert "Aggregates: " not in plan
    assert db.execute(query.format("s")).fetchall() == db.execute(query.format("h")).fetchall()


def test_empty_table_aggregate(db, foreign_table):
    foreign_table("e", "id int8, v float8, t text, g int4", "AggregatingWrapper", rows=0)
    assert db.execute("SELECT count(*), sum(id) FROM e").fetchone() == (0, None)
    assert db.execute("SELECT g, count(*) FROM e GROUP BY g").fetchall() == []


def test_aggregate_in_prepared_statement_and_subquery(db, agg_tables):
    db.execute("PREPARE p AS SELECT g, count(*) FROM s GROUP BY g ORDER BY g")
    for _ in range(6):
        assert db.execute("EXECUTE p").fetchall() == db.execute(
            "SELECT g, count(*) FROM h GROUP BY g ORDER BY g").fetchall()
    q = "SELECT x.g, x.n FROM (SELECT g, count(*) n FROM {} GROUP BY g) x JOIN generate_series(0, 4) k ON k = x.g ORDER BY 1"
    assert db.execute(q.format("s")).fetchall() == db.execute(q.format("h")).fetchall()
