"""count(*), count, min and max of a whole columnar table from its stripes'
statistics, against the heap table: with deleted and updated rows, rows in
the delta store, NULLs, NaN and columns added since."""

from __future__ import annotations

import datetime as dt
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = "a int4, b int8, f float8, r float4, d date, t timestamptz, s text"
QUERY = ("SELECT count(*), count(a), min(a), max(a), min(b), max(b), min(f), max(f), count(f), "
         "min(r), max(r), min(d), max(d), min(t), max(t), count(s) FROM {}")

ints = st.one_of(st.none(), st.integers(-2, 2), st.sampled_from([-2**31, 2**31 - 1]))
bigs = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([-2**63, 2**63 - 1]))
floats = st.one_of(st.none(), st.sampled_from([0.5, -1.25, 2.0, 0.0, float("nan"), float("inf"),
                                               -float("inf")]))
dates = st.one_of(st.none(), st.integers(-3, 6).map(lambda n: dt.date(2024, 1, 1) + dt.timedelta(days=n)))
times = st.one_of(st.none(), st.integers(-3, 6).map(
    lambda m: dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=m)))
texts = st.one_of(st.none(), st.sampled_from(["x", "y"]))
values = st.tuples(ints, bigs, floats, floats, dates, times, texts)


def _norm(row):
    return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(parts=st.lists(st.lists(values, min_size=4, max_size=60), min_size=1, max_size=3),
       delta=st.lists(values, min_size=0, max_size=5), chunk=st.sampled_from([4, 16, 1000]),
       deleted=st.one_of(st.none(), st.integers(-2, 2)), updated=st.one_of(st.none(), st.integers(-3, 3)))
def test_stats_answers_equal_heap(db, parts, delta, chunk, deleted, updated):
    db.execute("DROP FOREIGN TABLE IF EXISTS c; DROP TABLE IF EXISTS h")
    db.execute(f"CREATE FOREIGN TABLE c ({COLUMNS}) SERVER orochi "
               f"OPTIONS (chunk_group_size '{chunk}', delta_row_limit '3')")
    db.execute(f"CREATE TABLE h ({COLUMNS})")
    for table in ("c", "h"):
        for part in parts:  # one COPY each: a stripe (more than 3 rows) or delta rows
            if part:
                with db.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                    for row in part:
                        copy.write_row(row)
        if deleted is not None:
            db.execute(f"DELETE FROM {table} WHERE a = %s", [deleted])
        if updated is not None:
            db.execute(f"UPDATE {table} SET f = -f, t = t - interval '1 day' WHERE b = %s", [updated])
        for row in delta:
            db.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s, %s)", row)
    got = db.execute(QUERY.format("c")).fetchall()
    want = db.execute(QUERY.format("h")).fetchall()
    assert [_norm(r) for r in got] == [_norm(r) for r in want]


def test_stats_answer_reads_no_stripe(db):
    """Stripes without deletions are answered from the catalog; after a
    DELETE, only the chunk groups it touched are read; a column added since
    is read from the rows (its default); the delta store's rows count."""
    for kind, t, opts in (("FOREIGN TABLE", "c", "SERVER orochi OPTIONS (chunk_group_size '100', stripe_row_limit '10000')"),
                          ("TABLE", "h", "")):
        db.execute(f"CREATE {kind} {t} (a int8, f float8) {opts}")
        db.execute(f"INSERT INTO {t} SELECT i, i / 7.0 FROM generate_series(1, 30000) i")
    q = "SELECT count(*), min(a), max(a), max(f), count(f) FROM {}"

    def same():
        assert [_norm(r) for r in db.execute(q.format("c")).fetchall()] == \
            [_norm(r) for r in db.execute(q.format("h")).fetchall()]

    def plan():
        return "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, VERBOSE) " + q.format("c")).fetchall())

    same()
    p = plan()
    assert "Stripes Read: 0 of 3 (3 answered from statistics)" in p, p
    for t in ("c", "h"):
        db.execute(f"DELETE FROM {t} WHERE a = 30000 OR a = 5")
        db.execute(f"INSERT INTO {t} VALUES (-1, 'NaN')")
    same()
    p = plan()
    assert "Stripes Read: 2 of 3 (1 answered from statistics)" in p, p
    assert "Chunk Groups Read: 2 of 200 (198 answered from statistics)" in p, p
    assert "Delta Rows: 1" in p, p
    for t in ("c", "h"):
        db.execute(f"ALTER TABLE {t} ADD COLUMN g int4 DEFAULT 7")
    q = "SELECT count(*), min(g), max(a), count(g) FROM {}"
    same()
