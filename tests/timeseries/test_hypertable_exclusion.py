"""Chunk exclusion never loses a row: randomized time quals (ranges, open
ends, BETWEEN, =, IN, prepared-statement parameters, timestamptz / date /
timestamp constants, now()-relative expressions, several session time
zones) over hypertables with small chunks, against the same rows in heap
tables; plain scans, pushed-down aggregates and top-N. Also EXPLAIN's
``Chunks:`` line."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TIME_TYPES = {"timestamptz": "interval '6 hours'", "timestamp": "interval '5 hours'",
              "date": "interval '2 days'", "bigint": "97"}
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham", "Europe/Berlin"]


@pytest.fixture
def tables(db, typ):
    """The hypertable ht_<typ> and the heap table hp_<typ> with the same rows:
    rows near 1970-01-01 (negative time keys) and near now, in stripes,
    the delta store, updated and deleted."""
    db.execute("SET TimeZone = 'UTC'")
    now = db.execute("SELECT date_trunc('hour', now() AT TIME ZONE 'UTC')").fetchone()[0]
    rnd = random.Random(7)
    stamps = []
    for base in (dt.datetime(1970, 1, 1), now):
        for _ in range(1500):
            stamps.append(base + dt.timedelta(minutes=rnd.randint(-12 * 24 * 60, 12 * 24 * 60)))
        stamps += [base, base + dt.timedelta(hours=6), base - dt.timedelta(days=2)]  # on chunk edges
    interval = TIME_TYPES[typ]
    ht, hp = f"ht_{typ}", f"hp_{typ}"
    db.execute(f"CREATE FOREIGN TABLE {ht} (ts {typ}, v int) SERVER orochi"
               " OPTIONS (delta_row_limit '50', stripe_row_limit '700', chunk_group_size '100')")
    db.execute(f"SELECT orochi.create_hypertable('{ht}', 'ts', chunk_time_interval => {interval})")
    db.execute(f"CREATE TABLE {hp} (ts {typ}, v int)")
    if typ == "bigint":
        values = [int((s - dt.datetime(1970, 1, 1)).total_seconds() // 600) for s in stamps]
    elif typ == "date":
        values = [s.date() for s in stamps]
    elif typ == "timestamptz":
        values = [s.replace(tzinfo=dt.timezone.utc) for s in stamps]
    else:
        values = stamps
    rows = list(zip(values, range(len(values))))
    for t in (ht, hp):
        with db.cursor() as cur, cur.copy(f"COPY {t} (ts, v) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        db.execute(f"DELETE FROM {t} WHERE v % 11 = 0")
        db.execute(f"UPDATE {t} SET v = v + 100000 WHERE v % 13 = 0")
        db.execute(f"INSERT INTO {t} SELECT ts, v + 200000 FROM {t} WHERE v % 97 = 1 ORDER BY v LIMIT 20")
    db.execute("RESET TimeZone")
    return now


def _constant(typ: str, now: dt.datetime, draw) -> tuple[str, list]:
    """A time constant as SQL and its parameters."""
    if typ == "bigint":
        v = draw(st.integers(-3000, 3000)) + draw(st.sampled_from([0, int((now - dt.datetime(1970, 1, 1))
                                                                           .total_seconds() // 600)]))
        return draw(st.sampled_from(["%s::bigint", "%s::int"])), [v]
    base = draw(st.sampled_from([dt.datetime(1970, 1, 1), now]))
    when = base + dt.timedelta(minutes=draw(st.integers(-14 * 24 * 60, 14 * 24 * 60)))
    form = draw(st.sampled_from(["timestamptz", "timestamp", "date", "now", "param_tz", "param_date"]))
    if form == "timestamptz":
        return f"timestamptz '{when.isoformat()}+00'", []
    if form == "timestamp":
        return f"timestamp '{when.isoformat()}'", []
    if form == "date":
        return f"date '{when.date().isoformat()}'", []
    if form == "now":
        # a stable expression: known at execution only
        delta = dt.datetime.utcnow() - when
        return f"now() - interval '{int(delta.total_seconds())} seconds'", []
    if form == "param_tz":
        return "%s", [when.replace(tzinfo=dt.timezone.utc)]
    return "%s", [when.date()]


@st.composite
def _qual(draw, typ: str, now: dt.datetime) -> tuple[str, list]:
    shape = draw(st.sampled_from(["<", "<=", ">", ">=", "=", "between", "range", "in"]))
    if shape in ("<", "<=", ">", ">=", "="):
        c, p = _constant(typ, now, draw)
        return f"ts {shape} {c}", p
    if shape == "between":
        a, pa = _constant(typ, now, draw)
        b, pb = _constant(typ, now, draw)
        return f"ts BETWEEN {a} AND {b}", pa + pb
    if shape == "range":
        a, pa = _constant(typ, now, draw)
        b, pb = _constant(typ, now, draw)
        lo = draw(st.sampled_from([">", ">="]))
        hi = draw(st.sampled_from(["<", "<="]))
        return f"ts {lo} {a} AND ts {hi} {b}", pa + pb
    parts, params = [], []
    for _ in range(draw(st.integers(1, 3))):
        c, p = _constant(typ, now, draw)
        parts.append(c)
        params += p
    return f"ts IN ({', '.join(parts)})", params


QUERIES = [
    "SELECT x::text FROM {t} x WHERE {q} ORDER BY 1",
    "SELECT count(*), sum(v), min(ts)::text, max(ts)::text FROM {t} WHERE {q}",
    "SELECT ts::text FROM {t} WHERE {q} ORDER BY ts LIMIT 7",
    "SELECT ts::text FROM {t} WHERE {q} ORDER BY ts DESC LIMIT 5",
]


@pytest.mark.parametrize("typ", list(TIME_TYPES))
def test_exclusion_matches_heap(db, tables, typ):
    now = tables

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        qual, params = data.draw(_qual(typ, now))
        zone = data.draw(st.sampled_from(ZONES))
        generic = data.draw(st.booleans())
        query = data.draw(st.sampled_from(QUERIES))
        db.execute("BEGIN")  # one now() for both tables
        try:
            db.execute(f"SET LOCAL TimeZone = '{zone}'")
            if generic:
                db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            got = db.execute(query.format(t=f"ht_{typ}", q=qual), params, prepare=bool(params)).fetchall()
            want = db.execute(query.format(t=f"hp_{typ}", q=qual), params, prepare=bool(params)).fetchall()
        finally:
            db.execute("ROLLBACK")
        assert got == want, f"{query.format(t='ht', q=qual)} {params} in {zone}"

    check()


def test_explain_shows_excluded_chunks(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '0')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute("INSERT INTO m SELECT timestamptz '2024-01-01 00:00+00' + i * interval '1 hour', i"
               " FROM generate_series(0, 12 * 24 - 1) i")
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN SELECT * FROM m WHERE ts >= '2024-01-11 00:00+00'").fetchall())
    assert "Chunks: 12 (10 excluded)" in plan
    assert "Stripes: 12 (10 in excluded chunks)" in plan
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN SELECT * FROM m").fetchall())
    assert "Chunks: 12" in plan and "excluded" not in plan
    # a stable expression is known at execution only: nothing excluded at plan time, rows still right
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)"
        " SELECT * FROM m WHERE ts >= now() - (now() - timestamptz '2024-01-11 00:00+00')").fetchall())
    assert "Chunks Read: 2 of 12 (10 excluded)" in plan, plan
    assert "Stripes Read: 2 of 2" in plan, plan
    assert db.execute("SELECT count(*) FROM m WHERE ts >= now() - (now() - timestamptz '2024-01-11 00:00+00')"
                      ).fetchone() == (48,)


def test_exclusion_over_random_data(db):
    """Random rows (stripes, delta rows, deleted rows) and random quals."""
    now = db.execute("SELECT date_trunc('hour', now() AT TIME ZONE 'UTC')").fetchone()[0]
    db.execute("CREATE FOREIGN TABLE ht (ts timestamptz, v int) SERVER orochi"
               " OPTIONS (delta_row_limit '5', stripe_row_limit '40', chunk_group_size '10')")
    db.execute("SELECT orochi.create_hypertable('ht', 'ts', chunk_time_interval => interval '3 hours')")
    db.execute("CREATE TABLE hp (ts timestamptz, v int)")

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        base = data.draw(st.sampled_from([dt.datetime(1970, 1, 1), now]))
        offsets = data.draw(st.lists(st.integers(-3 * 24 * 60, 3 * 24 * 60), min_size=1, max_size=150))
        rows = [((base + dt.timedelta(minutes=m)).replace(tzinfo=dt.timezone.utc), i)
                for i, m in enumerate(offsets)]
        small = data.draw(st.lists(st.integers(-3 * 24 * 60, 3 * 24 * 60), max_size=4))
        drop_mod = data.draw(st.integers(2, 9))
        for t in ("ht", "hp"):
            db.execute(f"TRUNCATE {t}")
            with db.cursor() as cur, cur.copy(f"COPY {t} (ts, v) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
            db.execute(f"DELETE FROM {t} WHERE v % {drop_mod} = 0")
            for m in small:
                db.execute(f"INSERT INTO {t} VALUES (%s, -1)", (base.replace(tzinfo=dt.timezone.utc)
                                                              + dt.timedelta(minutes=m),))
        for _ in range(5):
            qual, params = data.draw(_qual("timestamptz", now))
            query = data.draw(st.sampled_from(QUERIES))
            db.execute("BEGIN")
            try:
                db.execute(f"SET LOCAL TimeZone = '{data.draw(st.sampled_from(ZONES))}'")
                got = db.execute(query.format(t="ht", q=qual), params).fetchall()
                want = db.execute(query.format(t="hp", q=qual), params).fetchall()
            finally:
                db.execute("ROLLBACK")
            assert got == want, f"{query.format(t='ht', q=qual)} {params}"

    check()
