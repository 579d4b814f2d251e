"""Recall@10 at default settings against the exact answer (numpy in the test
process), and exact search equal to the numpy reference, on uniform random
and on clustered 128-dimension vectors, without a filter and with filters
letting 1%, 10% and 50% of the rows through.

The default suite runs 20k vectors; the issue's 100k x 128 runs with
``--run-slow``. The queries are held out from the data's own distribution
(drawn with the data, not stored). Each case prints its figures (recall per
filter, the ef or probes the stripes' build-time check recorded, and how the
stripes were searched, from EXPLAIN ANALYZE): run with ``-s`` to see them.

On uniform random vectors the build-time check (orochi_fdw/vector/indexes.py)
finds no ef reaching its recall target at a cost below an exact search, records
0, and the stripes are searched exactly: the recall measured there is the exact
scan's, and the test says so (EXPLAIN ANALYZE shows no stripe searched by index).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from orochi_fdw.vector import reference
from vector_helpers import clustered_vectors, load, random_vectors, recall, text

D = 128
K = 10
#: WHERE cat < s lets s% of the rows through (cat uniform in 0..99); None: no filter
SELECTIVITIES = (None, 1, 10, 50)
TARGET = 0.95


def data_set(kind: str, n: int, nq: int):
    """n stored vectors, nq held-out queries of the same distribution, and
    each row's category."""
    both = random_vectors(n + nq, D, seed=21) if kind == "random" else clustered_vectors(n + nq, D, seed=21)
    cats = np.random.default_rng(22).integers(0, 100, n)
    return both[:n], both[n:], cats


def ids(x, sql, params=()):
    return [r[0] for r in x(sql, params).fetchall()]


def how_searched(x, where: str, q) -> str:
    plan = [r[0] for r in x(f"EXPLAIN ANALYZE SELECT id FROM t {where} ORDER BY e <-> %s LIMIT {K}",
                            [text(q)]).fetchall()]
    line = next(p for p in plan if "stripe(s) by index" in p)
    return line.split("Vector Search:", 1)[1].strip()


def stripes_by_index(summary: str) -> int:
    return int(re.match(r"(\d+) stripe\(s\) by index", summary).group(1))


def check_recall(db, kind: str, n: int, nq: int) -> None:
    x = db.execute
    x("SET search_path = public, orochi")
    X, Q, cats = data_set(kind, n, nq)
    x(f"CREATE FOREIGN TABLE t (id int, cat int, e vector({D})) SERVER orochi OPTIONS (delta_row_limit '0')")
    load(db, "t", X, cats)
    truth = {}
    for s in SELECTIVITIES:
        keep = np.ones(n, bool) if s is None else cats < s
        truth[s] = [reference.knn(X[keep], q, K, "l2", ids=np.flatnonzero(keep)).tolist() for q in Q]

    # exact search (no index) equals numpy: the same rows in the same order
    for s in SELECTIVITIES:
        where = "" if s is None else f"WHERE cat < {s}"
        for q, want in zip(Q, truth[s]):
            assert ids(x, f"SELECT id FROM t {where} ORDER BY e <-> %s LIMIT {K}", [text(q)]) == want, \
                f"exact search with filter {s}% should equal numpy"

    report = []
    failures = []
    for index_type in ("hnsw", "ivfflat"):
        x("SELECT orochi.create_vector_index('t', 'e', index_type => %s)", [index_type])   # defaults
        recorded = [r[0] for r in x("SELECT search_ef FROM orochi.columnar_vector_index_files").fetchall()]
        assert recorded, "the stripes should have index files"
        for s in SELECTIVITIES:
            where = "" if s is None else f"WHERE cat < {s}"
            got = []
            for q in Q:
                rows = ids(x, f"SELECT id FROM t {where} ORDER BY e <-> %s LIMIT {K}", [text(q)])
                assert len(rows) == K, "k rows whenever k rows pass the filter"
                got.append(rows)
            r = recall(got, truth[s])
            path = how_searched(x, where, Q[0])
            report.append(f"{kind} {n} {index_type} recorded ef/probes {recorded} filter "
                          f"{'none' if s is None else f'{s}%'}: recall@10 {r:.3f}; {path}")
            if r < TARGET:
                failures.append(report[-1])
            if s is None and kind == "clustered" and min(recorded) > 0:
                # the index is what is being measured here, not an exact fallback
                assert stripes_by_index(path) > 0, f"{index_type} index should be used: {path}"
            if max(recorded) == 0:
                # the build-time check found no ef (probes) worth using: the
                # stripes are searched exactly, and the recall is the exact scan's
                assert stripes_by_index(path) == 0, f"a stripe whose check recorded 0 is searched exactly: {path}"
        x("SELECT orochi.drop_vector_index('t', 'e')")
    print("\n" + "\n".join(report))
    assert not failures, "recall@10 below 0.95 at default settings:\n" + "\n".join(failures)


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_recall_at_default_settings_20k(db, kind):
    check_recall(db, kind, 20_000, 20)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_recall_at_default_settings_100k(db, kind):
    check_recall(db, kind, 100_000, 50)
