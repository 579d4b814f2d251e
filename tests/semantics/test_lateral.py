"""LATERAL references into scans of orochi tables: the scan is run once per
outer row, with the outer row's values (as a heap table's scan is)."""

from __future__ import annotations

import pytest

QUERIES = [
    # columns of the outer row in the lateral subquery's output
    "SELECT a.k, s.* FROM {T} a LEFT JOIN LATERAL (SELECT a.t AS x, b.v FROM {T} b WHERE b.k > a.k) s ON true",
    "SELECT a.k, s.* FROM {T} a LEFT JOIN LATERAL (SELECT a.t AS x, b.k FROM {T} b) s ON true",
    "SELECT h.t, s.* FROM h LEFT JOIN LATERAL (SELECT k, h.t AS ht FROM {T} ct WHERE ct.t = h.t) s ON true",
    "SELECT h.t, s.* FROM h LEFT JOIN LATERAL (SELECT ct.k, h.t || ct.t AS cat FROM {T} ct) s ON true",
    "SELECT a.k, s.* FROM {T} a LEFT JOIN LATERAL (SELECT b.t, a.v + b.v AS w FROM {T} b WHERE b.k > a.k) s ON true",
    "SELECT a.k, s.* FROM {T} a CROSS JOIN LATERAL (SELECT b.k AS bk, a.t FROM {T} b WHERE b.t = a.t) s",
    # lateral aggregates, with and without GROUP BY
    "SELECT a.k, s.* FROM {T} a LEFT JOIN LATERAL (SELECT a.t AS x, count(*) FROM {T} b WHERE b.k > a.k) s ON true",
    "SELECT a.k, s.* FROM {T} a LEFT JOIN LATERAL"
    " (SELECT b.t, a.t AS x, count(*), sum(b.v) FROM {T} b WHERE b.k >= a.k GROUP BY b.t) s ON true",
    "SELECT h.t, s.* FROM h LEFT JOIN LATERAL (SELECT count(*) AS c, max(k) FROM {T} ct WHERE ct.t = h.t) s ON true",
    # top-N per outer row
    "SELECT h.t, s.* FROM h LEFT JOIN LATERAL (SELECT k, h.t AS ht FROM {T} ct WHERE ct.t <> h.t ORDER BY k LIMIT 2) s"
    " ON true",
    # the outer row's column compared with a column of the scan, both ways round, and in a list
    "SELECT a.k, b.k FROM {T} a, LATERAL (SELECT * FROM {T} b WHERE a.v < b.v AND b.t IS NOT NULL) b",
    "SELECT a.k, b.k FROM {T} a, LATERAL (SELECT * FROM {T} b WHERE b.k IN (a.k, a.k + 1)) b",
]


@pytest.fixture
def tables(db):
    for t, kind in (("ct", "FOREIGN TABLE"), ("ct_h", "TABLE")):
        db.execute(f"CREATE {kind} {t} (k int, t text, v int)" + (" SERVER orochi" if t == "ct" else ""))
        db.execute(f"INSERT INTO {t} SELECT i, CASE WHEN i % 4 = 0 THEN NULL ELSE 't' || i % 3 END, i * 10"
                   f" FROM generate_series(1, 7) i")
        db.execute(f"INSERT INTO {t} VALUES (NULL, 't1', NULL)")
    db.execute("CREATE TABLE h (t text)")
    db.execute("INSERT INTO h VALUES ('t1'), (NULL), ('zz'), ('t2')")
    return db


@pytest.mark.parametrize("query", QUERIES)
def test_lateral_matches_heap(tables, query):
    db = tables
    got = sorted(repr(r) for r in db.execute(query.format(T="ct")).fetchall())
    want = sorted(repr(r) for r in db.execute(query.format(T="ct_h")).fetchall())
    assert got == want
    assert want  # the query returns something


def test_lateral_join_clause_reaches_the_scan(tables):
    """A lateral scan's join clause on its own column is handed to the
    wrapper as a qual with the outer row's value."""
    db = tables
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT a.k, s.* FROM ct a"
        " LEFT JOIN LATERAL (SELECT a.t AS x, b.v FROM ct b WHERE b.k > a.k) s ON true"))
    assert "Orochi Filter: k > $param" in plan
