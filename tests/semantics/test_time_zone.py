"""A prepared statement whose date_trunc over a timestamptz was pushed down
(planned in UTC) still answers as the heap table does after SET TimeZone:
the buckets follow the session's zone when it runs."""

from __future__ import annotations

import pytest

ZONES = ["America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London", "Pacific/Chatham", "UTC"]
UNITS = ["minute", "hour", "day", "week", "month", "quarter", "year"]


@pytest.fixture(scope="module")
def tables(pg_cluster, module_db):
    conn = pg_cluster.connect(module_db, autocommit=True)
    conn.execute("CREATE FOREIGN TABLE tz (ts timestamptz, v int) SERVER orochi"
                 " OPTIONS (stripe_row_limit '500', delta_row_limit '10')")
    conn.execute("CREATE TABLE tz_h (ts timestamptz, v int)")
    for t in ("tz", "tz_h"):
        # around daylight saving changes of several zones, and across years
        conn.execute(f"INSERT INTO {t} SELECT timestamptz '2023-12-30 00:00+00' + i * interval '47 minutes', i"
                     f" FROM generate_series(1, 3000) i")
        conn.execute(f"INSERT INTO {t} SELECT timestamptz '2024-10-05 12:00+00' + i * interval '13 minutes', i"
                     f" FROM generate_series(1, 800) i")
        conn.execute(f"INSERT INTO {t} VALUES ('infinity', 1), ('-infinity', 2), (NULL, 3), ('1890-03-01 10:00+00', 4)")
    conn.close()


def _pushed(conn, statement: str) -> bool:
    return "Aggregates:" in "\n".join(r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + statement))


@pytest.mark.parametrize("unit", UNITS)
def test_prepared_date_trunc_after_set_time_zone(mconn, tables, unit):
    db = mconn
    query = (f"SELECT date_trunc('{unit}', ts)::text AS b, count(*), sum(v) FROM {{}}"
             f" GROUP BY date_trunc('{unit}', ts)")
    db.execute("SET TimeZone = 'UTC'")
    db.execute(f"PREPARE p AS {query.format('tz')}")
    db.execute(f"PREPARE ph AS {query.format('tz_h')}")
    try:
        assert _pushed(db, "EXECUTE p")
        for zone in ZONES:
            db.execute("SET TimeZone = %s" % db.execute("SELECT quote_literal(%s)", (zone,)).fetchone()[0])
            got = sorted(db.execute("EXECUTE p").fetchall(), key=repr)
            want = sorted(db.execute("EXECUTE ph").fetchall(), key=repr)
            assert got == want, zone
            # the same through the extended protocol's prepared statements
            got = sorted(db.execute(query.format("tz"), prepare=True).fetchall(), key=repr)
            assert got == want, zone
    finally:
        db.execute("DEALLOCATE p")
        db.execute("DEALLOCATE ph")
        db.execute("RESET TimeZone")


def test_set_time_zone_inside_a_transaction(mconn, tables):
    db = mconn
    db.execute("SET TimeZone = 'UTC'")
    for name, table in (("q", "tz"), ("qh", "tz_h")):
        db.execute(f"PREPARE {name}(int) AS SELECT date_trunc('day', ts)::text, count(*) FROM {table}"
                   " WHERE v > $1 GROUP BY date_trunc('day', ts)")
    try:
        db.execute("SET plan_cache_mode = force_generic_plan")
        with db.transaction():
            db.execute("EXECUTE q(10)")
            db.execute("SET LOCAL TimeZone = 'Asia/Tokyo'")
            got = sorted(db.execute("EXECUTE q(10)").fetchall(), key=repr)
            assert got == sorted(db.execute("EXECUTE qh(10)").fetchall(), key=repr)
        got = sorted(db.execute("EXECUTE q(100)").fetchall(), key=repr)  # UTC again
        assert got == sorted(db.execute("EXECUTE qh(100)").fetchall(), key=repr)
    finally:
        db.execute("DEALLOCATE q")
        db.execute("DEALLOCATE qh")
        db.execute("RESET plan_cache_mode")
        db.execute("RESET TimeZone")
