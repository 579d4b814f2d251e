"""ORDER BY ... LIMIT on columnar tables: the scan sorts and stops early,
and the rows are the heap table's."""

from __future__ import annotations

import pytest


@pytest.fixture
def tables(db):
    for t, kind, opts in (("m", "FOREIGN TABLE", "SERVER orochi OPTIONS (chunk_group_size '500')"),
                          ("h", "TABLE", "")):
        db.execute(f"CREATE {kind} {t} (id int8, v float8, d date, s text) {opts}")
        db.execute(f"INSERT INTO {t} SELECT i, CASE WHEN i % 97 = 0 THEN 'NaN' WHEN i % 89 = 0 THEN NULL "
                   f"ELSE (i * 7919) % 10007 + i / 100000.0 END, "
                   f"DATE '2020-01-01' + (i % 3000), 'row ' || i FROM generate_series(1, 20000) i")
    return db


@pytest.mark.parametrize("order", [
    "v DESC", "v", "v NULLS FIRST", "v DESC NULLS LAST", "id DESC", "id",
])
@pytest.mark.parametrize("limit", ["LIMIT 10", "LIMIT 3 OFFSET 4", "LIMIT 2000"])
def test_top_n_equals_heap(tables, order, limit):
    db = tables
    q = f"SELECT id, v, s FROM {{}} ORDER BY {order} {limit}"
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + q.format("m")).fetchall())
    assert "Sort" not in plan, plan
    got = db.execute(q.format("m")).fetchall()
    want = db.execute(q.format("h")).fetchall()
    key = 0 if order.startswith("id") else 1
    # the sort key in the same order (ties, e.g. NaN or NULL, may come as other rows) ...
    assert [str(r[key]) for r in got] == [str(r[key]) for r in want]
    # ... and every row is one of the table's
    ids = [r[0] for r in got]
    assert sorted(map(str, got)) == sorted(map(str, db.execute(
        "SELECT id, v, s FROM h WHERE id = ANY(%s)", [ids]).fetchall()))


def test_sorted_without_limit_and_with_recheck(tables):
    db = tables
    q = "SELECT id FROM {} WHERE s LIKE 'row 1%' ORDER BY id DESC"
    assert db.execute(q.format("m")).fetchall() == db.execute(q.format("h")).fetchall()
    q = "SELECT id, d FROM {} ORDER BY d DESC, id LIMIT 7"
    assert db.execute(q.format("m")).fetchall() == db.execute(q.format("h")).fetchall()


def test_explain_analyze_of_sorted_scan(tables):
    plan = "\n".join(r[0] for r in tables.execute(
        "EXPLAIN (ANALYZE, VERBOSE) SELECT id FROM m ORDER BY v DESC LIMIT 5").fetchall())
    assert "Sorted by Orochi: v DESC (top 5)" in plan, plan
    assert "Stripes Read: " in plan


@pytest.mark.parametrize("order, limit", [
    ("a, b DESC, id", 10), ("a DESC, b NULLS FIRST, id DESC", 64), ("b, a, id", 1), ("a, id DESC", 65),
])
def test_top_n_later_keys_on_first_key_ties(db, order, limit):
    """Keys after the first are worked out only for the candidates tying on
    the first (with each other or with the limit-th): a first key of many
    ties across chunk groups and stripes, a filter, and limits on either side
    of the one up to which the keys are left pending; the whole order is
    given (the id last), so the rows are the heap's very rows."""
    for t, kind, opts in (("m", "FOREIGN TABLE", "SERVER orochi OPTIONS (chunk_group_size '100', delta_row_limit '20')"),
                          ("h", "TABLE", "")):
        db.execute(f"CREATE {kind} {t} (id int8, a int4, b float8, s text) {opts}")
        for lo in (1, 1501, 3001):  # a stripe each
            db.execute(f"INSERT INTO {t} SELECT i, (i * 7) % 13, CASE WHEN i % 11 = 0 THEN NULL "
                       f"WHEN i % 17 = 0 THEN 'NaN'::float8 ELSE (i * 31) % 29 END, "
                       f"CASE WHEN i % 3 = 0 THEN 'x' ELSE 'y' END "
                       f"FROM generate_series({lo}, {lo + 1499}) i")
    for where in ("", "WHERE s = 'x' AND id % 5 <> 0"):
        q = f"SELECT id, a, b, s FROM {{}} {where} ORDER BY {order} LIMIT {limit}"
        got = db.execute(q.format("m")).fetchall()
        assert [tuple(map(str, r)) for r in got] == \
            [tuple(map(str, r)) for r in db.execute(q.format("h")).fetchall()], q
