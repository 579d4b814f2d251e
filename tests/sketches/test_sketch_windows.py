"""The sketch aggregates as window functions (running and moving frames,
partitions, peers, exclusions): each row's result equals the plain aggregate
over the rows of its frame (byte for byte for sketches), computed from the
frame's values as array_agg over the same window gives them. And the states
kept in Python for them are released when the window is done."""

from __future__ import annotations

import math

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FRAMES = [
    "ORDER BY g",                                                         # running, peers share a row
    "ORDER BY g, i",                                                      # running
    "ORDER BY g, i ROWS BETWEEN 3 PRECEDING AND CURRENT ROW",            # moving
    "ORDER BY g, i ROWS BETWEEN 2 PRECEDING AND 2 FOLLOWING",
    "ORDER BY g ROWS BETWEEN 5 PRECEDING AND 1 PRECEDING",                # empty frames first
    "ORDER BY g RANGE BETWEEN 2 PRECEDING AND CURRENT ROW",
    "ORDER BY g GROUPS BETWEEN 1 PRECEDING AND 1 FOLLOWING",
    "ORDER BY g, i ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING",
    "ORDER BY g, i ROWS BETWEEN 4 PRECEDING AND 1 FOLLOWING EXCLUDE CURRENT ROW",
    "ORDER BY g, i ROWS BETWEEN CURRENT ROW AND 3 FOLLOWING",
    "PARTITION BY p ORDER BY g, i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
    "PARTITION BY p",
]

# each call: {v} is the argument, {over} the OVER clause (empty for the plain aggregate)
AGGREGATES = {
    "count": "orochi.approx_count_distinct({v}){over}",
    "count_p": "orochi.approx_count_distinct({v}, 8){over}",
    "hll": "orochi.hll_agg({v}){over}::bytea",
    "hll_p": "orochi.hll_agg({v}, 6){over}::bytea",
}
FLOAT_AGGREGATES = {
    "tdigest": "orochi.tdigest_agg({v}){over}::bytea",
    "tdigest_c": "orochi.tdigest_agg({v}, 20){over}::bytea",
    "median": "orochi.approx_percentile({v}, 0.5){over}",
    "p90_c": "orochi.approx_percentile({v}, 0.9, 50){over}",
    "quartiles": "orochi.approx_percentile({v}, ARRAY[0.25, 0.5, 0.75]){over}",
}
UNIONS = {"h": "orochi.hll_union_agg({v}){over}::bytea", "d": "orochi.tdigest_union_agg({v}){over}::bytea"}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (bytes, memoryview)) and isinstance(b, (bytes, memoryview)):
        return bytes(a) == bytes(b)
    return a == b


def _check(db, table: str, column: str, frame: str, call: str) -> int:
    """Compare the window function with the plain aggregate over each row's
    frame; returns the number of rows compared."""
    window_call = call.format(v=column, over=" OVER w")
    plain_call = call.format(v="x", over="")
    rows = db.execute(
        f"WITH f AS (SELECT g, i, {window_call} AS win, array_agg({column}) OVER w AS frame"
        f"             FROM {table} WINDOW w AS ({frame}))"
        f" SELECT g, i, win, (SELECT {plain_call} FROM unnest(frame) AS u(x)) FROM f ORDER BY g, i").fetchall()
    for g, i, win, plain in rows:
        assert _same(win, plain), (frame, call, g, i, win, plain)
    return len(rows)


@pytest.fixture
def data(db):
    db.execute("CREATE TABLE t (g int, i int, p int, k int, s text, f float8)")
    db.execute("INSERT INTO t SELECT g / 2, g, g % 3, CASE WHEN g % 7 = 0 THEN NULL ELSE (g * 37) % 11 END,"
               " 's' || (g * 13) % 9, CASE WHEN g % 11 = 0 THEN NULL WHEN g % 13 = 0 THEN 'NaN'"
               "   ELSE ((g * 7919) % 101) / 4.0 END FROM generate_series(1, 60) g")
    return db


@pytest.mark.parametrize("frame", FRAMES)
def test_each_frame_equals_the_plain_aggregate(data, frame):
    for call in AGGREGATES.values():
        for column in ("k", "s"):
            assert _check(data, "t", column, frame, call) == 60
    for call in FLOAT_AGGREGATES.values():
        assert _check(data, "t", "f", frame, call) == 60


@pytest.mark.parametrize("frame", FRAMES)
def test_union_aggregates_over_frames(db, frame):
    db.execute("CREATE TABLE sk (g int, i int, p int, h orochi.hll, d orochi.tdigest)")
    db.execute("INSERT INTO sk SELECT r / 2, r, r % 3,"
               " (SELECT orochi.hll_agg(x, CASE WHEN r % 5 = 0 THEN 10 ELSE 12 END)"
               "    FROM generate_series(r * 3, r * 3 + r % 40) x),"
               " (SELECT orochi.tdigest_agg(x * 1.5, 30) FROM generate_series(r, r + 25 + r % 9) x)"
               " FROM generate_series(1, 40) r")
    db.execute("UPDATE sk SET h = NULL, d = NULL WHERE i % 9 = 0")
    for column, call in UNIONS.items():
        assert _check(db, "sk", column, frame, call) == 40


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), st.integers(-5, 40)), min_size=1, max_size=80),
       floats=st.lists(st.one_of(st.none(), st.floats(allow_infinity=True, allow_nan=True, width=32)),
                       min_size=1, max_size=80),
       frame=st.sampled_from(FRAMES), before=st.integers(0, 6), after=st.integers(0, 6))
def test_random_frames(db, values, floats, frame, before, after):
    db.execute("DROP TABLE IF EXISTS r")
    db.execute("CREATE TABLE r (g int, i int, p int, k int, f float8)")
    n = max(len(values), len(floats))
    rows = [(j // 3, j, j % 2, values[j % len(values)], floats[j % len(floats)]) for j in range(n)]
    with db.cursor() as cur:
        cur.executemany("INSERT INTO r VALUES (%s, %s, %s, %s, %s)", rows)
    frames = [frame, f"ORDER BY g, i ROWS BETWEEN {before} PRECEDING AND {after} FOLLOWING"]
    for fr in frames:
        for call in (AGGREGATES["count"], AGGREGATES["hll"]):
            _check(db, "r", "k", fr, call)
        for call in (FLOAT_AGGREGATES["tdigest"], FLOAT_AGGREGATES["quartiles"]):
            _check(db, "r", "f", fr, call)


def test_running_distinct_count_is_exact_while_sparse(db):
    """The use postgresql-hll is known for: a running count of distinct users."""
    rows = db.execute(
        "SELECT d, orochi.approx_count_distinct(u) OVER (ORDER BY d), count(u) OVER (ORDER BY d)"
        "  FROM (SELECT d, (d * 7) % 50 AS u FROM generate_series(1, 200) d) e ORDER BY d").fetchall()
    seen = set()
    for d, running, _ in rows:
        seen.add((d * 7) % 50)
        assert running == len(seen)


def test_windows_over_a_columnar_table_equal_heap(db):
    db.execute("CREATE FOREIGN TABLE m (ts int, u int, v float8) SERVER orochi OPTIONS (delta_row_limit '50')")
    db.execute("CREATE TABLE h (ts int, u int, v float8)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT g, (g * 31) % 97, (g % 17) * 1.25 FROM generate_series(1, 3000) g")
    q = ("SELECT ts, orochi.approx_count_distinct(u) OVER (ORDER BY ts ROWS 99 PRECEDING),"
         " orochi.approx_percentile(v, 0.5) OVER (ORDER BY ts ROWS 30 PRECEDING),"
         " orochi.hll_agg(u) OVER (PARTITION BY ts % 10 ORDER BY ts)::bytea FROM {} ORDER BY ts")
    assert db.execute(q.format("m")).fetchall() == db.execute(q.format("h")).fetchall()


def test_window_states_are_released(db):
    """Each partition's state is dropped once Postgres is done with it: after
    a window over many partitions, a query cut short by LIMIT or one that
    fails, no state is left in the backend."""
    db.execute("CREATE TABLE t (g int, u int, f float8)")
    db.execute("INSERT INTO t SELECT g % 500, g % 37, g FROM generate_series(1, 5000) g")
    assert db.execute("SELECT orochi.sketch_open_states()").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM (SELECT orochi.approx_count_distinct(u) OVER (PARTITION BY g ORDER BY u),"
                      " orochi.approx_percentile(f, 0.5) OVER (PARTITION BY g ROWS 2 PRECEDING) FROM t) s"
                      ).fetchone() == (5000,)
    assert db.execute("SELECT orochi.sketch_open_states()").fetchone() == (0,)
    # restarts: an EXCLUDE frame recomputes every row's aggregate from scratch
    db.execute("SELECT orochi.hll_agg(u) OVER (ORDER BY g ROWS 3 PRECEDING EXCLUDE CURRENT ROW) FROM t")
    assert db.execute("SELECT orochi.sketch_open_states()").fetchone() == (0,)
    # groups never finalized (LIMIT), and a statement that fails
    db.execute("SET enable_sort = off")
    db.execute("SELECT g, orochi.hll_agg(u) FROM t GROUP BY g LIMIT 2").fetchall()
    assert db.execute("SELECT orochi.sketch_open_states()").fetchone() == (0,)
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("SELECT g, orochi.approx_count_distinct(u / (g - 250)) FROM t GROUP BY g")
    assert db.execute("SELECT orochi.sketch_open_states()").fetchone() == (0,)


def test_plain_aggregates_unchanged(db):
    """As plain aggregates they still consume their state (one final per group)."""
    db.execute("CREATE TABLE t (g int, u int)")
    db.execute("INSERT INTO t SELECT g % 3, g FROM generate_series(1, 300) g")
    assert db.execute("SELECT g, orochi.approx_count_distinct(u), orochi.hll_cardinality(orochi.hll_agg(u))"
                      " FROM t GROUP BY g ORDER BY g").fetchall() == [(0, 100, 100), (1, 100, 100), (2, 100, 100)]
