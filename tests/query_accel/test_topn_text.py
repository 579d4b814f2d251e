"""Top-N (ORDER BY ... LIMIT n) over text and varchar keys on columnar
tables against their heap twins: the scan sorts under a collation that
orders by bytes (C, POSIX, the database's default when it is C), with
multi-byte UTF-8, empty strings, prefixes, NULLS FIRST / LAST, several keys,
filters and parameters, deleted and delta rows; under any other collation
Postgres sorts (and the answer is the heap's all the same)."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = 'id int8, s text, v varchar(8), c text COLLATE "C", a int4'

words = st.one_of(st.none(), st.sampled_from(["", "a", "ab", "abc", "b", "B", "Z", "zz", "é", "e", "€", "😀",
                                               "a b", "ab\u00ff", "Ω"]),
                  st.text(alphabet="abé€", max_size=4))
values = st.tuples(words, words.map(lambda w: None if w is None else w[:8]), words,
                   st.one_of(st.none(), st.integers(-2, 2)))
conditions = st.sampled_from(["true", "s > 'a'", "s IS NOT NULL", "v = 'ab'", "c <> 'zz'", "a >= 0",
                              "s = 'nothing'", "a IS NULL"])


@st.composite
def orders(draw):
    cols = draw(st.lists(st.sampled_from(["s", "v", "c", "a", 's COLLATE "C"', 's COLLATE "POSIX"']),
                         min_size=1, max_size=3, unique_by=lambda c: c[0]))
    keys = []
    for c in cols:
        keys.append(c + draw(st.sampled_from(["", " ASC", " DESC"]))
                    + draw(st.sampled_from(["", " NULLS FIRST", " NULLS LAST"])))
    return [c[0] for c in cols], ", ".join(keys)


POS = {"s": 1, "v": 2, "c": 3, "a": 4}


def _check(got, want, every, positions):
    """The keys of ``want`` in order; rows of the table, none twice; inside
    the answer (keys neither first nor last in it) the heap's very rows."""
    def key(r):
        return tuple(r[i] for i in positions)

    assert [key(r) for r in got] == [key(r) for r in want], (got, want)
    assert len({r[0] for r in got}) == len(got), got
    pool = Counter(every)
    assert all(pool[r] > 0 for r in got), (got, every)
    if got:
        ends = {key(got[0]), key(got[-1])}
        assert Counter(r for r in got if key(r) not in ends) == Counter(r for r in want if key(r) not in ends)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(bulk=st.lists(values, min_size=0, max_size=120), delta=st.lists(values, max_size=5),
       chunk=st.sampled_from([4, 16, 1000]), deleted=st.integers(-3, 3), where=conditions, order=orders(),
       limit=st.sampled_from(["LIMIT 1", "LIMIT 5", "LIMIT 3 OFFSET 2", "LIMIT 300"]),
       param=st.sampled_from([None, "NULL", "''", "'b'", "'zzzz'"]))
def test_text_top_n_equals_heap(db, bulk, delta, chunk, deleted, where, order, limit, param):
    db.execute("DROP FOREIGN TABLE IF EXISTS c; DROP TABLE IF EXISTS h")
    db.execute(f"CREATE FOREIGN TABLE c ({COLUMNS}) SERVER orochi "
               f"OPTIONS (chunk_group_size '{chunk}', delta_row_limit '5')")
    db.execute(f"CREATE TABLE h ({COLUMNS})")
    for table in ("c", "h"):
        n = 0
        if bulk:
            with db.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for row in bulk:
                    n += 1
                    copy.write_row((n,) + row)
        db.execute(f"DELETE FROM {table} WHERE a = %s", [deleted])
        for row in delta:
            n += 1
            db.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s)", (n,) + row)
    cols, keys = order
    positions = [POS[c] for c in cols]
    select = "SELECT id, s, v, c, a FROM {t} WHERE " + where + ("" if param is None else " AND s >= $1")
    for t in ("c", "h"):
        db.execute(f"PREPARE q_{t}{'' if param is None else '(text)'} AS {select.format(t=t)} "
                   f"ORDER BY {keys} {limit}")
    args = "" if param is None else f"({param})"
    try:
        db.execute(f"PREPARE e{'' if param is None else '(text)'} AS {select.format(t='h')}")
        every = db.execute(f"EXECUTE e{args}").fetchall()
        got = db.execute(f"EXECUTE q_c{args}").fetchall()
        want = db.execute(f"EXECUTE q_h{args}").fetchall()
        _check(got, want, every, positions)
    finally:
        db.execute("DEALLOCATE ALL")


def test_text_top_n_by_the_scan_only_for_byte_order(db):
    """Text keys under C (the test clusters' default) and POSIX are sorted
    by the scan, which skips chunk groups by their text min / max; under an
    ICU collation Postgres sorts, with the heap's answer."""
    db.execute("CREATE FOREIGN TABLE c (id int8, s text, u text COLLATE \"und-x-icu\") SERVER orochi "
               "OPTIONS (chunk_group_size '100')")
    db.execute("CREATE TABLE h (id int8, s text, u text COLLATE \"und-x-icu\")")
    for t in ("c", "h"):
        db.execute(f"INSERT INTO {t} SELECT i, 'k' || lpad((i * 7919 % 20000)::text, 5, '0'), "
                   f"CASE WHEN i % 3 = 0 THEN 'B' || i WHEN i % 3 = 1 THEN 'a' || i ELSE 'é' || i END "
                   f"FROM generate_series(1, 20000) i")
    for q, by_scan in (("SELECT * FROM {} ORDER BY s DESC LIMIT 5", True),
                       ("SELECT * FROM {} ORDER BY s COLLATE \"POSIX\", id LIMIT 5", True),
                       ("SELECT * FROM {} ORDER BY u LIMIT 5", False),
                       ("SELECT * FROM {} ORDER BY s COLLATE \"und-x-icu\" LIMIT 5", False),
                       ("SELECT * FROM {} ORDER BY u COLLATE \"C\" DESC LIMIT 5", True)):
        assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall(), q
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, COSTS OFF) " + q.format("c")).fetchall())
        assert ("Sorted by Orochi" in plan) == by_scan, plan
        if by_scan and "ORDER BY s DESC" in q:
            read = int(plan.split("Chunk Groups Read: ")[1].split(" ")[0])
            assert read <= 5, plan  # of 200
