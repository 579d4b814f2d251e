"""A time qual whose value is known only at execution (now() - interval,
a timestamptz expression, a parameter) is applied exactly by the scan when
the value has the column's own type, so aggregates over it are pushed down;
a value of another time type (whose comparison depends on the session's
time zone) is still rechecked by Postgres. Results equal the heap table's."""

from __future__ import annotations

import pytest

ROWS = 20_000


@pytest.fixture
def tables(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, day date, local timestamp, v float8)"
               " SERVER orochi OPTIONS (chunk_group_size '1000')")
    db.execute("INSERT INTO m SELECT now() - g * interval '7 min', (now() - g * interval '7 min')::date,"
               f" localtimestamp - g * interval '7 min', g FROM generate_series(1, {ROWS}) g")
    db.execute("CREATE TABLE h AS SELECT * FROM m")
    return db


def _plan(db, sql: str, params=None) -> str:
    return "\n".join(r[0] for r in db.execute("EXPLAIN (VERBOSE, COSTS OFF) " + sql, params).fetchall())


@pytest.mark.parametrize("where", [
    "ts >= now() - interval '30 days'",
    "ts < now() - interval '2 days' AND ts >= timestamptz '2000-01-01' + interval '1 day'",
    "day >= current_date - 10",
    "local > localtimestamp - interval '3 days'",
])
def test_same_type_value_pushes_the_aggregate_down(tables, where):
    sql = f"SELECT count(*), sum(v), min(ts) FROM {{}} WHERE {where}"
    plan = _plan(tables, sql.format("m"))
    assert "Aggregates: count(*), sum(v), min(ts)" in plan, f"should push the aggregate down:\n{plan}"
    assert "Rechecked by Postgres" not in plan, plan
    assert "Orochi Filter:" in plan and "$param" in plan, plan
    # the time stands still inside one transaction: both tables see the same now()
    tables.execute("BEGIN")
    try:
        assert tables.execute(sql.format("m")).fetchone() == tables.execute(sql.format("h")).fetchone()
    finally:
        tables.execute("COMMIT")


def test_prepared_timestamptz_parameter(tables):
    sql = "SELECT count(*), sum(v) FROM {} WHERE ts >= %s::timestamptz"
    cutoff = tables.execute("SELECT now() - interval '20 days'").fetchone()[0]
    for _ in range(7):  # past the generic plan switch
        got = tables.execute(sql.format("m"), [cutoff], prepare=True).fetchone()
    assert got == tables.execute(sql.format("h"), [cutoff]).fetchone()


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Asia/Kathmandu"])
def test_value_of_another_time_type_is_rechecked(tables, zone):
    tables.execute("SELECT set_config('TimeZone', %s, false)", [zone])
    sql = "SELECT count(*), sum(v) FROM {} WHERE ts >= localtimestamp - interval '9 days'"
    plan = _plan(tables, sql.format("m"))
    assert "Rechecked by Postgres" in plan, f"should leave the time-zone dependent comparison to Postgres:\n{plan}"
    tables.execute("BEGIN")
    try:
        assert tables.execute(sql.format("m")).fetchone() == tables.execute(sql.format("h")).fetchone()
    finally:
        tables.execute("COMMIT")
