"""ORDER BY distance LIMIT k on columnar tables: exact and through indexes,
against numpy and against a heap table ordered by an SQL distance."""

from __future__ import annotations

import glob
import os

import numpy as np
import psycopg
import pytest

from orochi_fdw.vector import reference
from vector_helpers import clustered_vectors, load, random_vectors, text

OPS = {"l2": "<->", "negative_inner_product": "<#>", "cosine": "<=>"}
#: SQL distances over real[] for the heap oracle
HEAP_FN = """
CREATE FUNCTION heap_l2(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS
$$ SELECT sqrt(sum((x::float8 - y::float8) ^ 2)) FROM unnest(a, b) AS u(x, y) $$;
CREATE FUNCTION heap_nip(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS
$$ SELECT -sum(x::float8 * y::float8) FROM unnest(a, b) AS u(x, y) $$;
CREATE FUNCTION heap_cos(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS
$$ SELECT 1 - sum(x::float8 * y::float8) / (sqrt(sum(x::float8 * x)) * sqrt(sum(y::float8 * y)))
     FROM unnest(a, b) AS u(x, y) $$;
"""
HEAP = {"l2": "heap_l2", "negative_inner_product": "heap_nip", "cosine": "heap_cos"}


@pytest.fixture
def x(db):
    db.execute("SET search_path = public, orochi")
    return db.execute


def make_table(x, name="t", dims=16, options="delta_row_limit '0', stripe_row_limit '1000'"):
    x(f"CREATE FOREIGN TABLE {name} (id int, cat int, e vector({dims})) SERVER orochi OPTIONS ({options})")


def ids(x, sql, params=()):
    return [r[0] for r in x(sql, params).fetchall()]


@pytest.mark.parametrize("metric", list(OPS))
def test_exact_knn_equals_numpy_and_heap(db, x, metric):
    X = random_vectors(3000, 16, seed=1) - 0.5
    cats = np.arange(3000) % 7
    make_table(x)
    load(db, "t", X, cats)
    x("CREATE TABLE h (id int, cat int, e real[])")
    with db.cursor().copy("COPY h (id, cat, e) FROM STDIN") as cp:
        for i, v in enumerate(X):
            cp.write_row((i, int(cats[i]), "{" + ",".join(repr(float(f)) for f in v) + "}"))
    x(HEAP_FN)
    assert "Vector Search" in str(x(f"EXPLAIN SELECT id FROM t ORDER BY e {OPS[metric]} %s LIMIT 10",
                                    [text(X[0])]).fetchall()), "should be answered in the scan"
    rng = np.random.default_rng(5)
    for _ in range(5):
        q = (rng.random(16, dtype=np.float32) - 0.5)
        got = ids(x, f"SELECT id FROM t ORDER BY e {OPS[metric]} %s LIMIT 10", [text(q)])
        assert got == reference.knn(X, q, 10, metric).tolist(), "should equal numpy"
        dist = [r[0] for r in x(f"SELECT e {OPS[metric]} %s FROM t ORDER BY e {OPS[metric]} %s LIMIT 10",
                                [text(q), text(q)]).fetchall()]
        heap = x(f"SELECT id, {HEAP[metric]}(e, %s::real[]) d FROM h ORDER BY d LIMIT 10",
                 ["{" + ",".join(repr(float(f)) for f in q) + "}"]).fetchall()
        assert np.allclose(dist, [d for _, d in heap], rtol=1e-9, atol=1e-12), "distances as the heap's"
        assert got[:9] == [i for i, _ in heap][:9] or sorted(got) == sorted(i for i, _ in heap)
        # with a filter: the k nearest of the rows that pass it
        got = ids(x, f"SELECT id FROM t WHERE cat = 3 ORDER BY e {OPS[metric]} %s LIMIT 10", [text(q)])
        assert got == reference.knn(X[cats == 3], q, 10, metric, ids=np.flatnonzero(cats == 3)).tolist()


def test_delta_rows_updates_and_deletes(db, x):
    X = random_vectors(2500, 8, seed=2)
    make_table(x, dims=8, options="stripe_row_limit '1000'")
    load(db, "t", X)                           # 2500 rows: stripes
    extra = random_vectors(5, 8, seed=3)
    for i, v in enumerate(extra):               # small INSERTs: the delta store
        x("INSERT INTO t (id, e) VALUES (%s, %s)", [5000 + i, text(v)])
    q = extra[2] + np.float32(1e-4)
    assert ids(x, "SELECT id FROM t ORDER BY e <-> %s LIMIT 1", [text(q)]) == [5002], "delta row found"
    near = reference.knn(X, q, 3, "l2").tolist()
    x("DELETE FROM t WHERE id = ANY(%s)", [[5002, near[0]]])
    x("UPDATE t SET e = %s WHERE id = %s", [text(np.full(8, 100, np.float32)), near[1]])
    allx = np.vstack([X, extra])
    alive = np.ones(len(allx), bool)
    alive[[2500 + 2, near[0]]] = False
    allx[near[1]] = 100
    got = ids(x, "SELECT id FROM t ORDER BY e <-> %s LIMIT 20", [text(q)])
    ref_ids = np.r_[np.arange(2500), 5000 + np.arange(5)][alive]
    assert sorted(got) == sorted(reference.knn(allx[alive], q, 20, "l2", ids=ref_ids).tolist())
    assert 5002 not in got and near[0] not in got and near[1] not in got, "deleted / updated rows never return"
    x("SELECT orochi.create_vector_index('t', 'e')")
    got2 = ids(x, "SELECT id FROM t ORDER BY e <-> %s LIMIT 20", [text(q)])
    assert 5002 not in got2 and near[0] not in got2 and near[1] not in got2


def test_bad_input_and_k_beyond_rows(db, x):
    make_table(x, dims=3)
    load(db, "t", random_vectors(10, 3))
    with pytest.raises(psycopg.Error) as e:
        x("SELECT id FROM t ORDER BY e <-> '[1,2]' LIMIT 3")
    assert e.value.sqlstate == "22000" and "dimensions" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        x("SELECT id FROM t ORDER BY e <-> '[1,NaN,2]' LIMIT 3")
    assert e.value.sqlstate == "22000"
    assert len(ids(x, "SELECT id FROM t ORDER BY e <-> '[0,0,0]' LIMIT 50")) == 10, "k > rows: every row"
    assert ids(x, "SELECT id FROM t ORDER BY e <-> NULL::vector LIMIT 3") and True
    with pytest.raises(psycopg.Error) as e:
        x("SELECT orochi.create_vector_index('t', 'cat')")
    assert e.value.sqlstate == "42804"
    with pytest.raises(psycopg.Error) as e:
        x("SELECT orochi.create_vector_index('t', 'e', 4)")
    assert e.value.sqlstate == "22000"
    with pytest.raises(psycopg.Error) as e:
        x("SELECT orochi.create_vector_index('t', 'e', options => '{\"m\": 1}')")
    assert e.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as e:
        x("SELECT orochi.create_vector_index('t', 'e', index_type => 'lsh')")
    assert e.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as e:
        x("SELECT orochi.drop_vector_index('t', 'e')")
    assert e.value.sqlstate == "42704"


def test_index_privileges_owner_only(db, x, new_connection):
    make_table(x, dims=3)
    x("CREATE ROLE vec_reader LOGIN")
    x("GRANT SELECT ON t TO vec_reader")
    other = new_connection(user="vec_reader")
    for call in ("SELECT orochi.create_vector_index('t', 'e')", "SELECT orochi.drop_vector_index('t', 'e')"):
        with pytest.raises(psycopg.Error) as e:
            other.execute(call)
        assert e.value.sqlstate == "42501"
    with pytest.raises(psycopg.Error) as e:
        other.execute("SELECT orochi.vector_index_file_deleted('/tmp/x')")
    assert e.value.sqlstate == "42501"


def _files(x):
    """The index files the catalog names (a segment's once, however many
    stripes' rows name it)."""
    return sorted({os.path.join(r[0], r[1]) for r in x(
        "SELECT current_setting('data_directory'), orochi._file_path(file_path)"
        "  FROM orochi.columnar_vector_index_files").fetchall()})


def _file_rows(x) -> int:
    return x("SELECT count(*) FROM orochi.columnar_vector_index_files").fetchone()[0]


def test_index_files_follow_their_stripes(db, x):
    X = clustered_vectors(6000, 16, seed=4)
    make_table(x, options="delta_row_limit '0', stripe_row_limit '3000'")
    load(db, "t", X)
    x("SELECT orochi.create_vector_index('t', 'e', index_type => 'hnsw')")
    x("SELECT orochi.create_vector_index('t', 'e', index_type => 'ivfflat', distance_type => 'cosine')")
    files = _files(x)
    # the stripes already there: one file (a segment) per index over both stripes, a row per stripe
    assert len(files) == 2 and _file_rows(x) == 4 and all(os.path.exists(f) for f in files)
    folder = os.path.dirname(files[0])
    load(db, "t", clustered_vectors(3000, 16, seed=5), first_id=10000)   # a new stripe is indexed as written
    assert len(_files(x)) == 4 and _file_rows(x) == 6
    x("BEGIN")
    x("SELECT orochi.drop_vector_index('t', 'e', 'cosine')")
    x("ROLLBACK")
    assert len(_files(x)) == 4 and all(os.path.exists(f) for f in _files(x)), "a rollback keeps them"
    before = set(_files(x))
    x("SELECT orochi.drop_vector_index('t', 'e', 'cosine')")
    gone = before - set(_files(x))
    assert len(gone) == 2 and not any(os.path.exists(f) for f in gone), "files go with the index"
    segment = [f for f in _files(x) if _file_rows_of(x, f) == 2]
    assert len(segment) == 1
    x("DELETE FROM t WHERE id < 3000")
    x("SELECT * FROM orochi.vacuum('t', 0.5)")                 # the first stripe goes
    assert _file_rows_of(x, segment[0]) == 1 and os.path.exists(segment[0]), \
        "a segment's file stays while a stripe still names it"
    assert all(os.path.exists(f) for f in _files(x))
    q = X[3100] + np.float32(0.01)
    ids = [r[0] for r in x("SELECT id FROM t ORDER BY e <-> %s LIMIT 20", [text(q)]).fetchall()]
    assert len(ids) == 20 and min(ids) >= 3000, "rows of the segment's gone stripe are never returned"
    # a crash leaves a file without a row: orochi.vacuum() collects it
    orphan = os.path.join(folder, "999.1.1.vindex")
    open(orphan, "wb").close()
    x("SELECT * FROM orochi.vacuum()")
    assert not os.path.exists(orphan)
    x("TRUNCATE t")
    assert _files(x) == [] and glob.glob(os.path.join(folder, "*.vindex")) == []
    assert not os.path.exists(segment[0]), "the segment's file goes with its last stripe"


def _file_rows_of(x, path: str) -> int:
    return sum(1 for r in x("SELECT current_setting('data_directory'), orochi._file_path(file_path)"
                            "  FROM orochi.columnar_vector_index_files").fetchall()
               if os.path.join(r[0], r[1]) == path)


@pytest.mark.parametrize("index_type", [None, "hnsw", "ivfflat"])
def test_returned_vectors_are_the_stored_ones(db, x, index_type):
    """The search hands over the vectors it read (an index's stored copy or
    the exact scan's) as the rows' column: they must be the stored values,
    for stripe rows and delta rows alike, with the other columns."""
    X = clustered_vectors(6000, 16, seed=11)
    make_table(x, options="delta_row_limit '0', stripe_row_limit '3000'")
    load(db, "t", X, np.arange(6000) % 5)
    if index_type:
        x("SELECT orochi.create_vector_index('t', 'e', index_type => %s)", [index_type])
    x("ALTER FOREIGN TABLE t OPTIONS (SET delta_row_limit '1000')")
    extra = clustered_vectors(3, 16, seed=12)
    for i, v in enumerate(extra):
        x("INSERT INTO t (id, cat, e) VALUES (%s, %s, %s)", [9000 + i, 4, text(v)])
    x("INSERT INTO t (id, cat, e) VALUES (9100, 4, NULL)")
    stored = {i: X[i] for i in range(6000)} | {9000 + i: v for i, v in enumerate(extra)}
    for q in (X[17], extra[1], X[4500] + np.float32(0.01)):
        for where in ("", "WHERE cat = 4"):
            rows = x(f"SELECT id, cat, e::real[] FROM t {where} ORDER BY e <-> %s LIMIT 12", [text(q)]).fetchall()
            assert len(rows) == 12
            for rid, cat, e in rows:
                assert np.array_equal(np.asarray(e, dtype=np.float32), stored[rid]), f"row {rid}'s vector"
                assert cat == (4 if rid >= 9000 else rid % 5)
    rows = x("SELECT id, e FROM t ORDER BY e <-> %s LIMIT 6010", [text(X[0])]).fetchall()
    assert len(rows) == 6004 and rows[-1] == (9100, None), "NULL vectors last"



def test_filtered_search_exact_when_the_graph_costs_as_much(db, x):
    """A filtered query reads the allowed rows exactly (over the index
    file's vectors) when the graph search at the file's recorded ef would
    compute about as many distances (ef x M x 4 >= allowed rows: the
    build-time check's own rule), and searches the graph when it is
    cheaper or when orochi.hnsw_ef_search is set; numpy's rows when exact."""
    X = random_vectors(8000, 8, seed=9)
    cats = np.arange(8000) % 2
    make_table(x, dims=8, options="delta_row_limit '0'")
    load(db, "t", X, cats)
    x("SELECT orochi.create_vector_index('t', 'e')")
    x("UPDATE orochi.columnar_vector_index_files SET search_ef = 20")
    q = X[5] + np.float32(0.01)

    def how(where: str) -> str:
        plan = [r[0] for r in x(f"EXPLAIN ANALYZE SELECT id FROM t WHERE {where} ORDER BY e <-> %s LIMIT 10",
                                [text(q)]).fetchall()]
        return next(p for p in plan if "stripe(s) by index" in p)

    # half the rows pass: the graph is asked for 38 candidates, at ef 38, M 32:
    # 38 * 32 * 4 = 4,864 distances for 4,000 rows allowed
    assert "0 stripe(s) by index" in how("cat = 0") and "over index files' vectors" in how("cat = 0")
    keep = np.flatnonzero(cats == 0)
    assert ids(x, "SELECT id FROM t WHERE cat = 0 ORDER BY e <-> %s LIMIT 10", [text(q)]) == \
        reference.knn(X[keep], q, 10, "l2", ids=keep).tolist()
    # 7,000 rows pass: 26 candidates at ef 26, 3,328 distances: the graph
    assert "1 stripe(s) by index" in how("id < 7000")
    assert len(ids(x, "SELECT id FROM t WHERE id < 7000 ORDER BY e <-> %s LIMIT 10", [text(q)])) == 10
    # an explicit ef is not second-guessed
    x("SET orochi.hnsw_ef_search = 20")
    assert "1 stripe(s) by index" in how("cat = 0")
    x("RESET orochi.hnsw_ef_search")


def test_kept_rows_other_columns_of_every_kind(db, x):
    """The k rows' other columns, read by offset from a stripe's column
    kept whole (fixed width, with and without NULLs) or per chunk group
    (text), over several stripes of several chunk groups each: each row's
    own values, also after a DELETE and when the delta store holds rows."""
    n = 3000
    X = clustered_vectors(n, 8, seed=21)
    x("CREATE FOREIGN TABLE t (id int, n int, b bigint, f float8, s text, e vector(8)) SERVER orochi"
      " OPTIONS (delta_row_limit '0', stripe_row_limit '1000', chunk_group_size '300')")

    def row(i):
        return (i, None if i % 7 == 0 else i * 3, 10**12 + i, i / 4, None if i % 5 == 0 else f"s{i}" * (i % 4))

    with db.cursor().copy("COPY t (id, n, b, f, s, e) FROM STDIN") as cp:
        for i, v in enumerate(X):
            cp.write_row((*row(i), text(v)))
    x("SELECT orochi.create_vector_index('t', 'e')")
    x("ALTER FOREIGN TABLE t OPTIONS (SET delta_row_limit '1000')")
    x("INSERT INTO t (id, n, b, f, s, e) VALUES (%s, %s, %s, %s, %s, %s)", [*row(5000), text(X[10])])
    rng = np.random.default_rng(3)
    deleted = set()
    for round_ in range(3):
        for q in X[rng.choice(n, 8, replace=False)] + np.float32(0.01):
            for cols in ("id, n, b, f, s", "s, id, f", "b, id"):
                rows = x(f"SELECT {cols} FROM t ORDER BY e <-> %s LIMIT 10", [text(q)]).fetchall()
                assert len(rows) == 10
                names = [c.strip() for c in cols.split(",")]
                for r in rows:
                    got = dict(zip(names, r))
                    i = got["id"]
                    assert i not in deleted, "a deleted row returned"
                    want = dict(zip(["id", "n", "b", "f", "s"], row(i)))
                    assert got == {c: want[c] for c in names}, f"row {i}"
        gone = [int(i) for i in rng.choice(n, 50, replace=False)]
        x("DELETE FROM t WHERE id = ANY(%s)", [gone])
        deleted.update(gone)
