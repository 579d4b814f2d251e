"""Randomized differential test of top-N (ORDER BY plain columns LIMIT n) on
columnar tables against their heap twins: several keys, ASC / DESC, NULLS
FIRST / LAST, ties, NaN, filters, prepared parameters (NULL and values that
match nothing), with deleted, updated and delta store rows present.

A top-N answer is right when its sort keys come in the heap's sequence and
its rows are distinct rows of the table that pass the filter: rows tying on
every key may be any of them, as in Postgres."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

COLUMNS = "id int8, a int4, b int8, f float8, d date, t timestamptz, ok bool, s text"
KEY_COLUMNS = ["a", "b", "f", "d", "t", "ok"]

ints = st.one_of(st.none(), st.integers(-2, 2), st.sampled_from([-2**31, 2**31 - 1]))
bigs = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([-2**63, 2**63 - 1]))
floats = st.one_of(st.none(), st.sampled_from([0.5, -1.25, 2.0, 0.0, -0.0, float("nan"), float("inf"),
                                               -float("inf")]))
dates = st.one_of(st.none(), st.integers(0, 6).map(lambda n: dt.date(2024, 1, 1) + dt.timedelta(days=n)))
times = st.one_of(st.none(), st.integers(0, 6).map(
    lambda m: dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=m)))
texts = st.one_of(st.none(), st.sampled_from(["x", "y", "z"]))
values = st.tuples(ints, bigs, floats, dates, times, st.one_of(st.none(), st.booleans()), texts)

conditions = st.sampled_from([
    "true", "a > 0", "a <= 2", "b = 1", "b IS NOT NULL", "f > 0", "f = 'NaN'", "f <> 0",
    "s = 'x'", "s IS NULL", "ok", "d >= '2024-01-03'", "t < '2024-01-01 00:04+00'",
    "a IN (1, 3, -5)", "(a > 0 OR b < 0)", "NOT ok",
])


@st.composite
def orders(draw):
    cols = draw(st.lists(st.sampled_from(KEY_COLUMNS), min_size=1, max_size=3, unique=True))
    keys = []
    for c in cols:
        direction = draw(st.sampled_from(["", " ASC", " DESC"]))
        nulls = draw(st.sampled_from(["", " NULLS FIRST", " NULLS LAST"]))
        keys.append(c + direction + nulls)
    return cols, ", ".join(keys)


def _norm(v):
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, float) and v == 0.0:
        return 0.0  # -0.0 and 0.0 are equal to Postgres
    return v


def _check(got, want, every, positions):
    """``got`` a right top-N answer: the keys of ``want`` in order, rows
    among ``every`` (all rows passing the filter), none twice. The keys
    decide everything but which rows tie on every key: inside the answer
    (a key neither first nor last in it, so all rows with that key made it
    past the OFFSET and the LIMIT) the rows with each key are the heap's
    rows with that key; only at the two ends may they be other rows of the
    table with the same keys."""
    def key(r):
        return tuple(_norm(r[i]) for i in positions)

    assert [key(r) for r in got] == [key(r) for r in want], (got, want)
    assert len({r[0] for r in got}) == len(got), got
    pool = Counter(tuple(map(_norm, r)) for r in every)
    for r in got:
        assert pool[tuple(map(_norm, r))] > 0, (r, every)
    if got:
        ends = {key(got[0]), key(got[-1])}
        inner_got = Counter(tuple(map(_norm, r)) for r in got if key(r) not in ends)
        inner_want = Counter(tuple(map(_norm, r)) for r in want if key(r) not in ends)
        assert inner_got == inner_want, (got, want)


_NULL_ROW = (None,) * 7


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(bulk=st.lists(values, min_size=21, max_size=200), second=st.lists(values, min_size=0, max_size=60),
       delta=st.lists(values, min_size=0, max_size=8), chunk=st.sampled_from([5, 16, 64]),
       deleted=st.integers(-3, 3), updated=st.integers(-3, 3), where=conditions, order=orders(),
       limit=st.sampled_from(["LIMIT 1", "LIMIT 4", "LIMIT 10", "LIMIT 3 OFFSET 2", "LIMIT 400"]),
       param=st.sampled_from([None, "NULL", "-100", "0", "1000"]),
       generic=st.booleans())
# NULL keys tie on their key whatever the column's slot holds for them (the
# delta store's all-NULL row holds another date than the stripe's NULLs):
# the second key decides, b = 1 before NULL
@example(bulk=[_NULL_ROW] * 21, second=[_NULL_ROW] * 31 + [(None, 1) + (None,) * 5], delta=[_NULL_ROW],
         chunk=5, deleted=0, updated=0, where="true", order=(["d", "b"], "d DESC, b"), limit="LIMIT 1",
         param=None, generic=False)
def test_top_n_equals_heap(db, bulk, second, delta, chunk, deleted, updated, where, order, limit, param,
                           generic):
    db.execute("DROP FOREIGN TABLE IF EXISTS c; DROP TABLE IF EXISTS h")
    db.execute(f"CREATE FOREIGN TABLE c ({COLUMNS}) SERVER orochi "
               f"OPTIONS (chunk_group_size '{chunk}', delta_row_limit '20')")
    db.execute(f"CREATE TABLE h ({COLUMNS})")
    n = 0
    for table in ("c", "h"):
        n = 0
        for part in (bulk, second):  # one COPY each: a stripe (more than 20 rows) or delta rows
            if not part:
                continue
            with db.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for row in part:
                    n += 1
                    copy.write_row((n,) + row)
        db.execute(f"DELETE FROM {table} WHERE a = %s", [deleted])
        db.execute(f"UPDATE {table} SET f = f * 2, t = t + interval '1 minute' WHERE b = %s", [updated])
        for row in delta:  # one row per statement: the delta store
            n += 1
            db.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", (n,) + row)

    cols, keys = order
    positions = [1 + KEY_COLUMNS.index(c) for c in cols]
    select = "SELECT id, a, b, f, d, t, ok, s FROM {t} WHERE " + where
    if param is None:
        for table in ("c", "h"):
            db.execute(f"PREPARE q_{table} AS {select.format(t=table)} ORDER BY {keys} {limit}")
        args = ""
    else:
        for table in ("c", "h"):
            db.execute(f"PREPARE q_{table}(int4) AS {select.format(t=table)} AND a >= $1 "
                       f"ORDER BY {keys} {limit}")
        args = f"({param})"
    db.execute(f"SET plan_cache_mode = {'force_generic_plan' if generic else 'force_custom_plan'}")
    try:
        every_sql = select.format(t="h") + ("" if param is None else f" AND a >= {param}")
        every = db.execute(every_sql).fetchall()
        for _ in range(2):
            got = db.execute(f"EXECUTE q_c{args}").fetchall()
            want = db.execute(f"EXECUTE q_h{args}").fetchall()
            _check(got, want, every, positions)
    finally:
        db.execute("DEALLOCATE q_c; DEALLOCATE q_h; RESET plan_cache_mode")


def test_top_n_reads_only_what_it_needs(db):
    """With many ties on the first key, the second decides; chunk groups
    whose statistics cannot beat the n-th candidate are not read, and the
    answer is the heap's."""
    db.execute("CREATE FOREIGN TABLE c (ts int8, cpu float8, pad text) SERVER orochi "
               "OPTIONS (chunk_group_size '100')")
    db.execute("CREATE TABLE h (ts int8, cpu float8, pad text)")
    for t in ("c", "h"):
        db.execute(f"INSERT INTO {t} SELECT i, least(100, (i * 7919) % 211), 'p' || i "
                   "FROM generate_series(1, 20000) i")
    for q in ("SELECT * FROM {} ORDER BY cpu DESC, ts LIMIT 10",
              "SELECT * FROM {} ORDER BY cpu DESC, ts DESC LIMIT 10",
              "SELECT ts, cpu FROM {} WHERE pad <> 'p5' ORDER BY cpu, ts DESC LIMIT 3"):
        assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall(), q
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, COSTS OFF) " + q.format("c")).fetchall())
        assert "Sort" not in plan.replace("Sorted by Orochi", ""), plan
        assert "(top " in plan, plan
        read = int(plan.split("Chunk Groups Read: ")[1].split(" ")[0])
        assert read <= 5, plan  # of 200


def test_top_n_ties_on_the_first_key_in_a_later_group(db):
    """The n-th candidate's first key ties with rows of a group read later
    that win on the second key: they are not left out."""
    db.execute("CREATE FOREIGN TABLE c (a int4, b int4) SERVER orochi "
               "OPTIONS (chunk_group_size '2', delta_row_limit '0')")
    db.execute("INSERT INTO c VALUES (4, 2), (3, 0), (4, 1), (1, 1), (4, 3), (0, 9)")
    assert db.execute("SELECT * FROM c ORDER BY a DESC, b LIMIT 1").fetchall() == [(4, 1)]
    assert db.execute("SELECT * FROM c ORDER BY a DESC, b LIMIT 2").fetchall() == [(4, 1), (4, 2)]
    assert db.execute("SELECT * FROM c ORDER BY a DESC, b DESC LIMIT 1").fetchall() == [(4, 3)]


def test_top_n_chunk_groups_of_every_stripe_in_one_order(db):
    """The chunk groups of all stripes are read best bounds first, whatever
    stripe they are in: the best rows of the second stripe set the
    threshold before the first stripe's middling groups are read."""
    db.execute("CREATE FOREIGN TABLE c (i int4, x int4) SERVER orochi "
               "OPTIONS (chunk_group_size '100', delta_row_limit '20')")
    db.execute("CREATE TABLE h (i int4, x int4)")
    for t in ("c", "h"):
        # first stripe: 0 in its first group, 21..29 in the others, the rest large
        db.execute(f"INSERT INTO {t} SELECT i, CASE WHEN i % 100 <> 50 THEN 5000 + i WHEN i < 100 THEN 0 "
                   f"ELSE 20 + i / 100 END FROM generate_series(0, 999) i")
        # second stripe: 1..10 in its first group, the rest large
        db.execute(f"INSERT INTO {t} SELECT i, CASE WHEN i < 10 THEN i + 1 ELSE 6000 + i END "
                   f"FROM generate_series(0, 999) i")
    q = "SELECT * FROM {} ORDER BY x LIMIT 10"
    assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall()
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, COSTS OFF) " + q.format("c")).fetchall())
    assert "Stripes Read: 2 of 2" in plan, plan
    read = int(plan.split("Chunk Groups Read: ")[1].split(" ")[0])
    assert read == 2, plan  # of 20 (stripe by stripe: 11)
