"""orochi.sample and the sampled aggregates: the same sample on heap and
columnar tables, determinism, errors, privileges, and the coverage of the
confidence intervals over many seeds."""

from __future__ import annotations

import math

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orochi_fdw.sketches import sampling

COLUMNS = "id int8, g int4, x float8, s text"
FILL = ("INSERT INTO {} SELECT i, i % 7, CASE WHEN i % 11 = 0 THEN NULL ELSE (i % 97) * 1.5 END, "
        "'v' || (i % 300) FROM generate_series(1, {}) i")


@pytest.fixture
def tables(db):
    db.execute(f"CREATE TABLE h ({COLUMNS})")
    db.execute(f"CREATE FOREIGN TABLE m ({COLUMNS}) SERVER orochi OPTIONS (chunk_group_size '700')")
    for t in ("h", "m"):
        db.execute(FILL.format(t, 5000))
    return db


def test_hash_is_postgres_hashint8extended(db):
    ordinals = [1, 2, 3, 1000, 2**31 - 1, 2**31, 2**32 + 5, 2**40 + 17, -1, -(2**33)]
    for seed in (0, 1, 42, -7, 2**31 - 1, -(2**31)):
        want = [r[0] for r in db.execute(
            "SELECT hashint8extended(n, %s::int4) FROM unnest(%s::int8[]) WITH ORDINALITY u(n, k) ORDER BY k",
            (seed, ordinals)).fetchall()]
        got = sampling.hash_ordinals(np.array(ordinals, dtype=np.int64), seed).astype(np.int64).tolist()
        assert got == want, seed


@pytest.mark.parametrize("seed", [0, 1, 42, -7, 2**31 - 1, -(2**31)])
def test_fast_mask_equals_the_full_hash(seed):
    for fraction in (1e-9, 0.01, 0.1, 1 / 3, 0.5, 0.999999, 1 - 2**-40, 1.0):
        for first, n in ((1, 50_000), (2**31 - 3, 10), (2**32 - 50, 100), (2**40, 10)):
            hashes = sampling.hash_ordinals(np.arange(first, first + n, dtype=np.int64), seed)
            want = (hashes & np.uint64(0xFFFFFFFF)).astype(np.float64) < fraction * 2.0**32
            assert np.array_equal(sampling.sampled_mask(first, n, fraction, seed), want), (fraction, first)


@pytest.mark.parametrize("fraction, seed", [(0.1, 1), (0.5, 42), (0.013, -5), (1.0, 7)])
def test_same_sample_on_heap_and_columnar(tables, fraction, seed):
    q = "SELECT * FROM orochi.sample(NULL::{}, %s, %s)"
    heap = tables.execute(q.format("h"), (fraction, seed)).fetchall()
    col = tables.execute(q.format("m"), (fraction, seed)).fetchall()
    assert heap == col
    n = len(heap)
    if fraction == 1.0:
        assert n == 5000
    else:
        assert abs(n - 5000 * fraction) < 5 * math.sqrt(5000 * fraction * (1 - fraction)) + 1


def test_deterministic_and_seed_dependent(tables):
    q = "SELECT array_agg(id ORDER BY id) FROM orochi.sample(NULL::m, 0.2, %s)"
    a = tables.execute(q, (3,)).fetchone()[0]
    assert tables.execute(q, (3,)).fetchone()[0] == a
    assert tables.execute(q, (4,)).fetchone()[0] != a


def test_after_deletes_and_delta_rows_still_identical(tables):
    for t in ("h", "m"):
        tables.execute(f"DELETE FROM {t} WHERE id % 9 = 0 OR id BETWEEN 1000 AND 1400")
        tables.execute(f"INSERT INTO {t} VALUES (9001, 1, 2.5, 'new'), (9002, 2, NULL, 'newer')")
    q = "SELECT * FROM orochi.sample(NULL::{}, 0.3, 11)"
    assert tables.execute(q.format("h")).fetchall() == tables.execute(q.format("m")).fetchall()


def test_sample_in_queries_and_columnar_scan_not_left_sampled(tables):
    # the sample request is taken by the sample's own scan only
    q = "SELECT count(*), sum(x) FROM orochi.sample(NULL::{}, 0.25, 9)"
    assert tables.execute(q.format("m")).fetchone() == tables.execute(q.format("h")).fetchone()
    assert tables.execute("SELECT count(*) FROM m").fetchone() == (5000,)
    # joined with the full table, and in a LATERAL over several seeds
    j = ("SELECT count(*) FROM orochi.sample(NULL::{0}, 0.1, 2) s JOIN {0} t ON t.id = s.id")
    assert tables.execute(j.format("m")).fetchone() == tables.execute(j.format("h")).fetchone()
    lat = ("SELECT k, count(*) FROM generate_series(1, 3) k, LATERAL orochi.sample(NULL::{}, 0.05, k) "
           "GROUP BY k ORDER BY k")
    assert tables.execute(lat.format("m")).fetchall() == tables.execute(lat.format("h")).fetchall()


def test_views_and_partitioned_tables(tables):
    tables.execute("CREATE VIEW v AS SELECT id, x FROM h WHERE g < 3")
    tables.execute("CREATE TABLE p (id int8, x float8) PARTITION BY RANGE (id)")
    tables.execute("CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (2500)")
    tables.execute("CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (2500) TO (10000)")
    tables.execute("INSERT INTO p SELECT id, x FROM h ORDER BY id")
    tables.execute("CREATE TABLE flat AS SELECT id, x FROM h ORDER BY id")
    q = "SELECT * FROM orochi.sample(NULL::{}, 0.2, 3)"
    sample = tables.execute(q.format("v")).fetchall()
    assert sample == tables.execute(q.format("v")).fetchall()
    assert set(sample) <= set(tables.execute("SELECT * FROM v").fetchall())
    assert 300 < len(sample) < 560  # 2143 rows, 20%
    # partitions are read in order, so the rows' positions are the flat table's
    assert tables.execute(q.format("p")).fetchall() == tables.execute(q.format("flat")).fetchall()


def test_regclass_form_and_overloads(tables):
    rows = tables.execute("SELECT * FROM orochi.sample('m'::regclass, 0.1, 1) "
                          "AS s(id int8, g int4, x float8, s text)").fetchall()
    assert rows == tables.execute("SELECT * FROM orochi.sample(NULL::m, 0.1, 1)").fetchall()
    # an untyped literal matches both forms: Postgres asks for a cast
    with pytest.raises(psycopg.Error) as e:
        tables.execute("SELECT * FROM orochi.sample('m', 0.1, 1)")
    assert e.value.sqlstate == "42725", e.value
    with pytest.raises(psycopg.Error) as e:
        tables.execute("SELECT * FROM orochi.sample('m'::regclass, 0.1, 1)")
    assert e.value.sqlstate == "42601", e.value  # a column definition list is required


@pytest.mark.parametrize("args, sqlstate, message", [
    ("NULL::m, 0, 1", "22023", "fraction"),
    ("NULL::m, 1.5, 1", "22023", "fraction"),
    ("NULL::m, -0.1, 1", "22023", "fraction"),
    ("NULL::m, NULL, 1", "22023", "fraction"),
    ("NULL::h, 'NaN', 1", "22023", "fraction"),
    ("NULL::h, 0.1, NULL", "22023", "seed"),
    ("2.5::float8, 0.1, 1", "42809", "row of the table"),
])
def test_bad_arguments(tables, args, sqlstate, message):
    with pytest.raises(psycopg.Error) as e:
        tables.execute(f"SELECT * FROM orochi.sample({args})")
    assert e.value.sqlstate == sqlstate, e.value
    assert message in str(e.value)
    # nothing is left behind: the next plain scan reads every row
    assert tables.execute("SELECT count(*) FROM m").fetchone() == (5000,)


def test_privileges(tables, new_connection):
    tables.execute("CREATE ROLE sampler LOGIN")
    tables.execute("GRANT USAGE ON SCHEMA orochi TO sampler")
    user = new_connection(user="sampler")
    for t in ("h", "m"):
        with pytest.raises(psycopg.Error) as e:
            user.execute(f"SELECT count(*) FROM orochi.sample(NULL::{t}, 0.5, 1)")
        assert e.value.sqlstate == "42501", e.value
    assert tables.execute("SELECT count(*) FROM m").fetchone() == (5000,)
    tables.execute("GRANT SELECT ON h, m TO sampler")
    q = "SELECT count(*) FROM orochi.sample(NULL::{}, 0.5, 1)"
    assert user.execute(q.format("h")).fetchone() == tables.execute(q.format("h")).fetchone()
    # a sample of a columnar table reads it as a plain SELECT by the caller does
    try:
        user.execute("SELECT count(*) FROM m").fetchone()
    except psycopg.Error as plain:
        with pytest.raises(psycopg.Error) as e:
            user.execute(q.format("m"))
        assert e.value.sqlstate == plain.sqlstate
    else:
        assert user.execute(q.format("m")).fetchone() == tables.execute(q.format("h")).fetchone()


# ---------------------------------------------------------- sampled aggregates


def _estimates(conn, table: str, fraction: float, seed: int, confidence: float = 0.95):
    return conn.execute(
        f"SELECT orochi.sampled_sum(x, %(f)s, %(c)s), orochi.sampled_count(x, %(f)s, %(c)s), "
        f"orochi.sampled_avg(x, %(f)s, %(c)s), orochi.sampled_count(1, %(f)s) "
        f"FROM orochi.sample(NULL::{table}, %(f)s, %(s)s)", {"f": fraction, "c": confidence, "s": seed}
    ).fetchone()


def test_estimates_match_the_formulas(tables):
    fraction = 0.2
    xs = [r[0] for r in tables.execute("SELECT x FROM orochi.sample(NULL::h, 0.2, 5)").fetchall()]
    values = np.array([x for x in xs if x is not None])
    n, total = len(values), float(values.sum())
    squares = float(((values - values.mean()) ** 2).sum())
    z = 1.959963984540054
    got = _estimates(tables, "h", fraction, 5)
    assert got == _estimates(tables, "m", fraction, 5)
    for (kind, row), count in zip([("sum", got[0]), ("count", got[1]), ("avg", got[2])], [n, n, n]):
        est, _, _, se, _ = sampling.estimate(kind, n, total, squares, fraction, 0.95)
        e = _parse(row)
        assert e[0] == pytest.approx(est, rel=1e-9)
        assert e[3] == pytest.approx(se, rel=1e-6)
        assert e[1] == pytest.approx(est - z * se, rel=1e-6)
        assert e[2] == pytest.approx(est + z * se, rel=1e-6)
        assert e[4] == count
    rows = _parse(got[3])
    assert rows[0] == pytest.approx(len(xs) / fraction) and rows[4] == len(xs)


def _parse(composite):
    """An orochi.estimate as returned by psycopg (a tuple-like or its text)."""
    if isinstance(composite, str):
        parts = composite.strip("()").split(",")
        return [float(p) for p in parts[:4]] + [int(parts[4])]
    return list(composite)


def test_fraction_one_is_exact(tables):
    got = tables.execute("SELECT orochi.sampled_sum(x, 1), orochi.sampled_avg(x, 1), "
                         "orochi.sampled_count(x, 1), sum(x), avg(x), count(x) "
                         "FROM orochi.sample(NULL::m, 1, 0)").fetchone()
    s, a, c = _parse(got[0]), _parse(got[1]), _parse(got[2])
    assert s[0] == pytest.approx(got[3]) and s[1] == s[2] == s[0] and s[3] == 0
    assert a[0] == pytest.approx(float(got[4])) and a[3] == 0
    assert c[0] == got[5] and c[3] == 0


def test_default_confidence_is_95(tables):
    q = ("SELECT orochi.sampled_{0}(x, 0.3), orochi.sampled_{0}(x, 0.3, 0.95) "
         "FROM orochi.sample(NULL::m, 0.3, 4)")
    for kind in ("sum", "count", "avg"):
        two, three = tables.execute(q.format(kind)).fetchone()
        assert _parse(two) == pytest.approx(_parse(three), rel=1e-12)
    # NULL values (and rows with a NULL fraction) are left out
    got = tables.execute("SELECT (orochi.sampled_count(x, 1)).estimate, count(x) FROM m").fetchone()
    assert got[0] == got[1] == 5000 - 5000 // 11


def test_empty_and_grouped(tables):
    got = tables.execute("SELECT orochi.sampled_sum(x, 0.1), orochi.sampled_avg(x, 0.1), "
                         "orochi.sampled_count(x, 0.1) FROM h WHERE false").fetchone()
    assert got[0] is None and got[1] is None and _parse(got[2]) == [0, 0, 0, 0, 0]
    q = ("SELECT g, (orochi.sampled_sum(x, 0.3)).estimate, (orochi.sampled_avg(x, 0.3)).standard_error "
         "FROM orochi.sample(NULL::{}, 0.3, 8) GROUP BY g ORDER BY g")
    assert tables.execute(q.format("m")).fetchall() == tables.execute(q.format("h")).fetchall()
    assert len(tables.execute(q.format("h")).fetchall()) == 7


@pytest.mark.parametrize("sql, message", [
    ("SELECT orochi.sampled_sum(x, 0) FROM h", "fraction"),
    ("SELECT orochi.sampled_avg(x, 2) FROM h", "fraction"),
    ("SELECT orochi.sampled_count(x, NULL, 0.9) FROM h", "fraction"),
    ("SELECT orochi.sampled_sum(x, 0.5, 1) FROM h", "confidence"),
    ("SELECT orochi.sampled_count(length(s), 0.5, 0) FROM h", "confidence"),
    ("SELECT orochi.sampled_sum(x, CASE WHEN id % 2 = 0 THEN 0.1 ELSE 0.2 END) FROM h", "same in every row"),
])
def test_aggregate_bad_parameters(tables, sql, message):
    with pytest.raises(psycopg.Error) as e:
        tables.execute(sql)
    assert e.value.sqlstate == "22023", e.value
    assert message in str(e.value)


def test_intervals_cover_the_true_value(db):
    """Over 200 seeds, the 95% intervals of sum, count and avg cover the
    exact value about 95% of the time (loose band: 85-100%)."""
    db.execute("CREATE TABLE pop (x float8)")
    db.execute("SELECT setseed(0.5)")
    db.execute("INSERT INTO pop SELECT CASE WHEN random() < 0.1 THEN NULL "
               "ELSE round((exp(random() * 3) * 10)::numeric, 2) END FROM generate_series(1, 4000)")
    exact = db.execute("SELECT sum(x), count(x), avg(x) FROM pop").fetchone()
    got = db.execute(
        "SELECT avg(((e.s).lower <= %(sum)s AND %(sum)s <= (e.s).upper)::int), "
        "       avg(((e.c).lower <= %(count)s AND %(count)s <= (e.c).upper)::int), "
        "       avg(((e.a).lower <= %(avg)s AND %(avg)s <= (e.a).upper)::int), min((e.c).sampled_values) "
        "FROM (SELECT k, orochi.sampled_sum(x, 0.05) AS s, orochi.sampled_count(x, 0.05) AS c, "
        "             orochi.sampled_avg(x, 0.05) AS a "
        "      FROM generate_series(1, 200) k, LATERAL orochi.sample(NULL::pop, 0.05, k) GROUP BY k) e",
        {"sum": exact[0], "count": exact[1], "avg": float(exact[2])}).fetchone()
    for coverage in got[:3]:
        assert 0.85 <= coverage <= 1.0, got
    assert got[3] > 100


def test_tiny_and_huge_values(db):
    # squares that underflow float8 do not fail (Python computes the result)
    got = db.execute("SELECT orochi.sampled_sum(x, 0.5), orochi.sampled_avg(x, 0.5, 0.9) "
                     "FROM (VALUES (1e-200::float8), (3e-200), (2e-310)) v(x)").fetchone()
    assert _parse(got[0])[0] == pytest.approx(8e-200) and _parse(got[1])[0] == pytest.approx(4e-200 / 3)
    with pytest.raises(psycopg.Error) as e:  # as variance() and sum(x * x) do
        db.execute("SELECT orochi.sampled_sum(x, 0.5, 0.9) FROM (VALUES (1e200::float8), (-1e200)) v(x)")
    assert e.value.sqlstate == "22003"


def test_estimate_reference_rejects_bad_fraction():
    with pytest.raises(Exception):
        sampling.check_fraction(0)
    assert sampling.normal_quantile(0.95) == pytest.approx(1.959963984540054)


# ------------------------------------------------------------- randomized

_rows = st.lists(st.tuples(st.one_of(st.none(), st.integers(-10**6, 10**6)),
                           st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
                           st.one_of(st.none(), st.text(st.characters(exclude_categories=("Cs",),
                                                                      exclude_characters="\x00"), max_size=8))),
                 max_size=400)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows, fraction=st.floats(1e-3, 1.0), seed=st.integers(-(2**31), 2**31 - 1),
       deleted=st.integers(0, 5), chunk=st.sampled_from([7, 50, 1000]))
def test_random_tables_same_sample_and_estimates(db, rows, fraction, seed, deleted, chunk):
    """Random rows (NULLs included), fractions, seeds, chunk sizes and
    deletes: the columnar table's sample and estimates are the heap's."""
    db.execute("DROP TABLE IF EXISTS rh")
    db.execute("DROP FOREIGN TABLE IF EXISTS rm")
    db.execute("CREATE TABLE rh (i int8, f float8, t text)")
    db.execute(f"CREATE FOREIGN TABLE rm (i int8, f float8, t text) SERVER orochi "
               f"OPTIONS (chunk_group_size '{chunk}')")
    for t in ("rh", "rm"):
        with db.cursor() as cur:
            if rows:
                cur.execute(f"INSERT INTO {t} SELECT * FROM unnest(%s::int8[], %s::float8[], %s::text[])",
                            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]), prepare=False)
            if deleted:
                cur.execute(f"DELETE FROM {t} WHERE i %% 7 = %s", (deleted,), prepare=False)
    q = "SELECT * FROM orochi.sample(NULL::{}, %s, %s)"
    # prepare=False: a prepared statement naming a dropped and re-created row
    # type fails in Postgres ("function in FROM has unsupported return type")
    heap = db.execute(q.format("rh"), (fraction, seed), prepare=False).fetchall()
    assert db.execute(q.format("rm"), (fraction, seed), prepare=False).fetchall() == heap
    agg = ("SELECT orochi.sampled_sum(f, %(f)s), orochi.sampled_avg(i, %(f)s), orochi.sampled_count(i, %(f)s), "
           "orochi.sampled_sum(f, %(f)s, 0.9) FROM orochi.sample(NULL::{}, %(f)s, %(s)s)")
    params = {"f": fraction, "s": seed}
    assert db.execute(agg.format("rm"), params, prepare=False).fetchall() == \
        db.execute(agg.format("rh"), params, prepare=False).fetchall()
