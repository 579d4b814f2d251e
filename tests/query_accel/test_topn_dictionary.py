"""Top-N (ORDER BY ... LIMIT n) over text columns of few distinct values,
which the stripes store DICTIONARY-coded: the scan sorts by such a key and
filters on such a column through the dictionary (once per distinct value,
the codes picking), and reads the other columns for the winners only.
Against heap twins: several keys, ASC / DESC, NULLS FIRST / LAST, ties,
filters on the coded columns and on others, prepared parameters (NULL
too), deleted, updated and delta store rows, chunk groups small enough
that some are coded plainly."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = "id int8, s text, k varchar(10), a int4, f float8"
POS = {"id": 0, "s": 1, "k": 2, "a": 3, "f": 4}

statuses = st.one_of(st.none(), st.sampled_from(["ok", "warning", "critical", "", "é", "ok2", "zz", "€"]))
kinds = st.one_of(st.none(), st.sampled_from(["a", "b", "ab"]))
values = st.tuples(statuses, kinds, st.one_of(st.none(), st.integers(-2, 2)),
                   st.one_of(st.none(), st.sampled_from([0.5, -1.0, 2.0, float("nan")])))
conditions = st.sampled_from([
    "true", "s = 'ok'", "s <> 'warning'", "s IN ('ok', 'é', 'nothing')", "s IS NULL", "s IS NOT NULL",
    "s > 'm'", "k = 'a' AND a > 0", "s = 'critical' AND f > 0", "(s = 'zz' OR a < 0)", "k <> 'b'",
    "(s = 'ok' OR s IS NULL)", "NOT (s = 'ok')", "s = 'nothing' AND a > 0", "s = 'warning' AND k IS NULL",
])


@st.composite
def orders(draw):
    cols = draw(st.lists(st.sampled_from(["s", "k", "a", "f", "id"]), min_size=1, max_size=3, unique=True))
    keys = [c + draw(st.sampled_from(["", " DESC"])) + draw(st.sampled_from(["", " NULLS FIRST", " NULLS LAST"]))
            for c in cols]
    return cols, ", ".join(keys)


def _norm(v):
    return "NaN" if isinstance(v, float) and v != v else v


def _check(got, want, every, positions):
    """The keys of ``want`` in order; rows of the table, none twice; inside
    the answer (keys neither first nor last in it) the heap's very rows."""
    def key(r):
        return tuple(_norm(r[i]) for i in positions)

    assert [key(r) for r in got] == [key(r) for r in want], (got, want)
    assert len({r[0] for r in got}) == len(got), got
    pool = Counter(tuple(map(_norm, r)) for r in every)
    assert all(pool[tuple(map(_norm, r))] > 0 for r in got), (got, every)
    if got:
        ends = {key(got[0]), key(got[-1])}
        assert Counter(tuple(map(_norm, r)) for r in got if key(r) not in ends) == \
            Counter(tuple(map(_norm, r)) for r in want if key(r) not in ends)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(bulk=st.lists(values, min_size=30, max_size=200), second=st.lists(values, max_size=40),
       delta=st.lists(values, max_size=4), chunk=st.sampled_from([8, 40, 1000]), deleted=st.integers(-2, 2),
       updated=st.integers(-2, 2), where=conditions, order=orders(),
       limit=st.sampled_from(["LIMIT 1", "LIMIT 5", "LIMIT 3 OFFSET 2", "LIMIT 300"]),
       param=st.sampled_from([None, "NULL", "''", "'ok'"]))
def test_dictionary_top_n_equals_heap(db, bulk, second, delta, chunk, deleted, updated, where, order, limit,
                                      param):
    db.execute("DROP FOREIGN TABLE IF EXISTS c; DROP TABLE IF EXISTS h")
    db.execute(f"CREATE FOREIGN TABLE c ({COLUMNS}) SERVER orochi "
               f"OPTIONS (chunk_group_size '{chunk}', delta_row_limit '20')")
    db.execute(f"CREATE TABLE h ({COLUMNS})")
    for table in ("c", "h"):
        n = 0
        for part in (bulk, second):  # one COPY each: a stripe (more than 20 rows) or delta rows
            if part:
                with db.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                    for row in part:
                        n += 1
                        copy.write_row((n,) + row)
        db.execute(f"DELETE FROM {table} WHERE a = %s", [deleted])
        db.execute(f"UPDATE {table} SET s = k, f = f + 1 WHERE a = %s", [updated])
        for row in delta:
            n += 1
            db.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s)", (n,) + row)
    cols, keys = order
    positions = [POS[c] for c in cols]
    select = "SELECT id, s, k, a, f FROM {t} WHERE " + where + ("" if param is None else " AND s >= $1")
    typed = "" if param is None else "(text)"
    for t in ("c", "h"):
        db.execute(f"PREPARE q_{t}{typed} AS {select.format(t=t)} ORDER BY {keys} {limit}")
    args = "" if param is None else f"({param})"
    try:
        db.execute(f"PREPARE e{typed} AS {select.format(t='h')}")
        every = db.execute(f"EXECUTE e{args}").fetchall()
        got = db.execute(f"EXECUTE q_c{args}").fetchall()
        want = db.execute(f"EXECUTE q_h{args}").fetchall()
        _check(got, want, every, positions)
    finally:
        db.execute("DEALLOCATE ALL")


def test_dictionary_key_and_filter_read_little(db):
    """A text key of four values (DICTIONARY-coded chunks) with a numeric
    second key, and a filter on the coded column: the heap's answers, sorted
    by the scan, which skips the chunk groups the threshold rules out (mem
    grows and temp falls with id, in steps of noise)."""
    db.execute("CREATE FOREIGN TABLE c (id int8, status text, mem float8, temp float8) SERVER orochi "
               "OPTIONS (chunk_group_size '1000')")
    db.execute("CREATE TABLE h (id int8, status text, mem float8, temp float8)")
    for t in ("c", "h"):
        db.execute(f"INSERT INTO {t} SELECT i, (ARRAY['ok', 'warning', 'critical', 'offline'])[1 + i * 7 % 4], "
                   f"i / 200.0 + (i * 7919 % 100) / 100.0, (20000 - i) / 250.0 + (i * 104729 % 50) / 100.0 "
                   f"FROM generate_series(1, 20000) i")
    for q in ("SELECT * FROM {} ORDER BY status DESC, mem LIMIT 10",
              "SELECT * FROM {} ORDER BY status, mem DESC, id LIMIT 7",
              "SELECT * FROM {} WHERE status = 'critical' AND mem > 50 ORDER BY temp, id DESC LIMIT 10",
              "SELECT id, status FROM {} WHERE status IN ('ok', 'offline') ORDER BY mem DESC, id LIMIT 3"):
        assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall(), q
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, COSTS OFF) " + q.format("c")).fetchall())
        assert "(top " in plan, plan
        read = int(plan.split("Chunk Groups Read: ")[1].split(" ")[0])
        assert read <= 4, plan  # of 20


def test_dictionary_top_n_stops_early_and_prunes_the_groups_it_reads(db):
    """Several stripes of many chunk groups, a text key then a numeric one,
    a filter on the coded column and one whose min / max rule out chunk
    groups: the heap's answers; the groups the quals' statistics rule out
    are counted as such, the others past the threshold as skipped by it,
    and every group of the stripes opened is counted once."""
    db.execute("CREATE FOREIGN TABLE c (id int8, status text, mem float8, temp float8) SERVER orochi "
               "OPTIONS (chunk_group_size '100', delta_row_limit '0')")
    db.execute("CREATE TABLE h (id int8, status text, mem float8, temp float8)")
    for t in ("c", "h"):
        for part in range(3):  # three stripes
            db.execute(f"INSERT INTO {t} SELECT i, CASE WHEN i % 11 = 0 THEN NULL "
                       f"ELSE (ARRAY['ok', 'warning', 'critical', 'offline'])[1 + i * 7 % 4] END, "
                       f"(i * 7919 % 1000) / 10.0, CASE WHEN i % 13 = 0 THEN 'NaN' ELSE (i * 104729 % 500) / 10.0 END "
                       f"FROM generate_series({part * 3000 + 1}, {part * 3000 + 3000}) i")
    for q in ("SELECT * FROM {} ORDER BY status DESC, mem, id LIMIT 10",
              "SELECT * FROM {} ORDER BY status DESC NULLS LAST, mem DESC, id LIMIT 10",
              "SELECT * FROM {} ORDER BY status NULLS FIRST, temp DESC, id LIMIT 5",
              "SELECT * FROM {} WHERE status = 'critical' AND mem > 50 ORDER BY temp, id DESC LIMIT 10",
              "SELECT * FROM {} WHERE status IS NULL AND id > 4000 ORDER BY temp DESC, id LIMIT 4",
              "SELECT * FROM {} WHERE id BETWEEN 2500 AND 6400 AND status <> 'ok' ORDER BY mem, id LIMIT 6",
              "SELECT * FROM {} WHERE status = 'nothing' ORDER BY mem LIMIT 3"):
        assert repr(db.execute(q.format("c")).fetchall()) == repr(db.execute(q.format("h")).fetchall()), q
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, COSTS OFF) " + q.format("c")).fetchall())
        groups = plan.split("Chunk Groups Read: ")[1].split("\n")[0]
        read, total = int(groups.split(" ")[0]), int(groups.split(" of ")[1].split(" ")[0])
        skipped = sum(int(part.split(" ")[0]) for part in groups.split("(")[1:])
        assert read + skipped == total <= 90, plan  # the groups of the stripes opened
        if "BETWEEN" in q:
            assert "skipped by min/max" in groups, plan
