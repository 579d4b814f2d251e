"""Randomized differential tests: random data, random queries and random
DML on a distributed table and on a heap table holding the same rows; the
results must be equal (hypothesis)."""

from __future__ import annotations

import datetime
import decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dist_oracle import insert, make_pair, normalized, same_result

_BASE = datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc)
_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

# ------------------------------------------------------------------ data

texts = st.sampled_from(["a", "ab", "abc", "b", "ba", "B", "zz", "a%b", "ü", "", "x y"])


@st.composite
def row_strategy(draw, k):
    return (
        k,
        draw(st.none() | st.integers(-3, 6)),
        draw(st.none() | st.integers(-4000, 4000).map(lambda x: x * 0.25)),
        draw(st.none() | st.integers(-10 ** 6, 10 ** 6).map(lambda x: decimal.Decimal(x) / 100)),
        draw(st.none() | texts),
        draw(st.none() | st.integers(0, 200).map(lambda h: _BASE + datetime.timedelta(hours=h * 7))),
        draw(st.none() | st.booleans()),
    )


@st.composite
def datasets(draw, max_rows=120):
    keys = draw(st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), unique=True, max_size=max_rows))
    return [draw(row_strategy(k)) for k in keys]


def fixed_rows(n: int = 400) -> list[tuple]:
    import random

    rnd = random.Random(12)
    out = []
    for i, k in enumerate(rnd.sample(range(-10 ** 6, 10 ** 6), n)):
        out.append((k, rnd.choice([None, -1, 0, 1, 2, 3]), rnd.choice([None, rnd.randint(-400, 400) * 0.25]),
                    rnd.choice([None, decimal.Decimal(rnd.randint(-10 ** 5, 10 ** 5)) / 100]),
                    rnd.choice([None, "a", "ab", "abc", "b", "ba", "B", "zz", "a%b", "ü", ""]),
                    rnd.choice([None, _BASE + datetime.timedelta(hours=rnd.randint(0, 300) * 5)]),
                    rnd.choice([None, True, False])))
    return out


# ------------------------------------------------------------------ queries


def _lit(v) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, datetime.datetime):
        return f"'{v.isoformat()}'::timestamptz"
    return str(v)


@st.composite
def predicates(draw, keys: list[int], p: str = ""):
    """A WHERE clause of 0-3 random conditions; ``p`` prefixes the columns
    (a table alias and a dot)."""
    key = st.sampled_from(keys) if keys else st.integers(-5, 5)
    atom = st.one_of(
        key.map(lambda k: f"{p}k = {k}"),
        st.lists(key | st.integers(-2 ** 33, 2 ** 33), min_size=1, max_size=4).map(
            lambda ks: f"{p}k IN ({', '.join(map(str, ks))})"),
        key.map(lambda k: f"{p}k < {k}"),
        st.sampled_from([f"{p}k = 2147483648", f"{p}k = 3.5", f"{p}k = 4.0", f"{p}k::numeric = 5.00",
                         f"{p}k IS NULL", f"{p}k % 3 = 0", f"{p}k > 0 AND {p}k < 500000"]),
        st.integers(-3, 6).map(lambda g: f"{p}g = {g}"),
        st.integers(-3, 6).map(lambda g: f"{p}g <= {g}"),
        st.sampled_from([f"{p}g IS NULL", f"{p}g IS NOT NULL", f"{p}g IN (1, 2, NULL)", f"{p}g <> ALL ('{{1,2}}')",
                         f"({p}g + 1) * 2 > 5"]),
        st.integers(-400, 400).map(lambda x: f"{p}v > {x * 0.25}"),
        st.sampled_from([f"{p}v IS NULL", f"{p}v = 0.5", f"{p}v < 'Infinity'", f"{p}v <> 'NaN'"]),
        st.integers(-500, 500).map(lambda x: f"{p}n >= {x}.5"),
        texts.map(lambda t: f"{p}s = {_lit(t)}"),
        texts.map(lambda t: f"{p}s < {_lit(t)}"),
        st.sampled_from([f"{p}s LIKE 'a%'", f"{p}s ILIKE 'A_'", f"{p}s NOT LIKE '%b'", f"{p}s IN ('a', 'zz')",
                         f"{p}s IS NULL", f"length({p}s) > 1", f"{p}s = ANY ('{{a,b}}')"]),
        st.integers(0, 300).map(lambda h: f"{p}ts >= {_lit(_BASE + datetime.timedelta(hours=h * 5))}"),
        st.sampled_from([f"{p}b", f"NOT {p}b", f"{p}b IS NULL", f"{p}ts < '2024-03-10'::date",
                         f"({p}s = 'a' OR {p}g = 1)"]),
    )
    atoms = draw(st.lists(atom, max_size=3))
    return (" WHERE " + " AND ".join(atoms)) if atoms else ""


AGGREGATES = ["count(*)", "count(g)", "count(DISTINCT g)", "count(DISTINCT s)", "sum(k)", "sum(g)", "sum(n)",
              "sum(v)", "avg(k)", "avg(g)", "avg(n)", "avg(v)", "min(s)", "max(s)", "min(ts)", "max(n)",
              "min(v)", "max(k)", "bool_and(b)", "bool_or(b)", "orochi.approx_count_distinct(g)",
              "count(*) FILTER (WHERE g > 0)", "sum(DISTINCT g)"]
GROUPS = ["g", "s", "b", "k", "date_trunc('day', ts)", "g, b", "s, g", "k, s"]


@st.composite
def queries(draw, keys: list[int]):
    where = draw(predicates(keys))
    shape = draw(st.sampled_from(["rows", "agg", "group", "topn", "sub", "distinct"]))
    if shape == "rows":
        return f"SELECT * FROM {{t}}{where}", False
    aggs = ", ".join(draw(st.lists(st.sampled_from(AGGREGATES), min_size=1, max_size=4)))
    if shape == "agg":
        return f"SELECT {aggs} FROM {{t}}{where}", False
    if shape == "group":
        group = draw(st.sampled_from(GROUPS))
        having = draw(st.sampled_from(["", " HAVING count(*) > 1"]))
        return f"SELECT {group}, {aggs} FROM {{t}}{where} GROUP BY {group}{having}", False
    if shape == "topn":
        col = draw(st.sampled_from(["v", "n", "ts", "g", "k"]))
        desc = draw(st.sampled_from(["", " DESC"]))
        nulls = draw(st.sampled_from(["", " NULLS FIRST", " NULLS LAST"]))
        limit = draw(st.integers(0, 12))
        return f"SELECT k, {col} FROM {{t}}{where} ORDER BY {col}{desc}{nulls}, k LIMIT {limit}", True
    if shape == "sub":
        inner = draw(predicates(keys))
        return f"SELECT count(*), sum(g) FROM {{t}} WHERE k IN (SELECT k FROM {{t}}{inner})", False
    return f"SELECT DISTINCT g, b FROM {{t}}{where}", False


@pytest.fixture(scope="module")
def fixed(dist_module):
    rows = fixed_rows()
    make_pair(dist_module, shard_count=7, rows=rows)
    dist_module.keys = sorted(r[0] for r in rows)
    return dist_module


@settings(max_examples=150, **_SETTINGS)
@given(data=st.data())
def test_random_queries_on_fixed_data(fixed, data):
    query, ordered = data.draw(queries(fixed.keys))
    same_result(fixed, query, ordered=ordered)


@pytest.fixture(scope="module")
def empty_pair(dist_module):
    make_pair(dist_module, shard_count=5, heap="rh", table="rd", storage="heap")
    return dist_module


@settings(max_examples=25, **_SETTINGS)
@given(rows=datasets(), data=st.data())
def test_random_data_and_queries(empty_pair, rows, data):
    d = empty_pair
    d.q("TRUNCATE rh")
    d.q("TRUNCATE rd")
    insert(d, rows, heap="rh", table="rd")
    keys = [r[0] for r in rows]
    for _ in range(4):
        query, ordered = data.draw(queries(keys))
        same_result(d, query, heap="rh", table="rd", ordered=ordered)


# ------------------------------------------------------------------ parameters

#: conditions with parameters; each value comes from PARAM_VALUES' strategy
#: of its kind (keys of the table, keys of no row, NULL, values out of
#: int32's range)
PARAM_CONDITIONS = [
    ("k = %s", ["key"]),
    ("k = %s OR k = %s", ["key", "key"]),
    ("k IN (%s, %s, %s)", ["key", "key", "key"]),
    ("k = ANY (%s)", ["keys"]),
    ("k <> ALL (%s)", ["keys"]),
    ("k = %s AND g = %s", ["key", "g"]),
    ("k = %s AND s = %s", ["key", "s"]),
    ("k < %s", ["key"]),
    ("g = %s", ["g"]),
    ("g IS NOT DISTINCT FROM %s", ["g"]),
    ("s = %s", ["s"]),
    ("s LIKE %s", ["s"]),
    ("v > %s", ["v"]),
    ("ts >= %s", ["ts"]),
    ("b = %s", ["b"]),
]

PARAM_SHAPES = [
    "SELECT k, g, s FROM {t} WHERE {c}",
    "SELECT count(*), sum(g), min(s), max(ts) FROM {t} WHERE {c}",
    "SELECT g, count(*), avg(v) FROM {t} WHERE {c} GROUP BY g",
    "SELECT k, count(*) FROM {t} WHERE {c} GROUP BY k",
    "SELECT k, v FROM {t} WHERE {c} ORDER BY v NULLS FIRST, k LIMIT 4",
]


def _param_values(keys: list[int]):
    key_values = st.one_of(
        st.sampled_from(keys) if keys else st.integers(-5, 5),
        st.integers(-2 ** 31, 2 ** 31 - 1),  # almost never a key: no row
        st.none(),
        st.sampled_from([2 ** 31, -2 ** 31 - 1, 2 ** 40]),  # beyond int4: no row, no error
    )
    return {
        "key": key_values,
        "keys": st.lists(key_values, max_size=4),
        "g": st.none() | st.integers(-4, 7),
        "s": st.none() | texts | st.just("a%"),
        "v": st.none() | st.integers(-400, 400).map(lambda x: x * 0.25),
        "ts": st.none() | st.integers(0, 300).map(lambda h: _BASE + datetime.timedelta(hours=h * 5)),
        "b": st.none() | st.booleans(),
    }


@settings(max_examples=80, **_SETTINGS)
@given(data=st.data())
def test_random_queries_with_parameters(fixed, data):
    """Parameters -- values of the table, values of no row, NULLs, integers
    int4 cannot hold -- with custom and generic plans of server-side
    prepared statements (a generic plan prunes shards when it runs)."""
    d = fixed
    values = _param_values(d.keys)
    conditions = data.draw(st.lists(st.sampled_from(PARAM_CONDITIONS), min_size=1, max_size=2))
    cond = " AND ".join(f"({c})" for c, _ in conditions)
    params = [data.draw(values[kind]) for _, kinds in conditions for kind in kinds]
    query = data.draw(st.sampled_from(PARAM_SHAPES)).replace("{c}", cond)
    mode = data.draw(st.sampled_from(["auto", "force_generic_plan", "force_custom_plan"]))
    conn = d.conn
    conn.execute(f"SET plan_cache_mode = {mode}")
    try:
        for _ in range(2 if mode == "auto" else 1):
            expected = conn.execute(query.replace("{t}", "h"), params, prepare=True).fetchall()
            got = conn.execute(query.replace("{t}", "d"), params, prepare=True).fetchall()
            if "ORDER BY" in query:
                assert [tuple(map(repr, r)) for r in got] == [tuple(map(repr, r)) for r in expected], (query, params)
            else:
                assert normalized(got) == normalized(expected), (query, params, mode)
    finally:
        conn.execute("RESET plan_cache_mode")


# ------------------------------------------------------------------ DML


@st.composite
def statements(draw, next_key):
    kind = draw(st.sampled_from(["insert", "update", "update", "delete", "savepoint"]))
    where = draw(predicates([]))
    if kind == "insert":
        n = draw(st.integers(1, 6))
        rows = [draw(row_strategy(next_key() )) for _ in range(n)]
        values = ", ".join("(" + ", ".join("NULL" if v is None else _lit(v) for v in r) + ")" for r in rows)
        return f"INSERT INTO {{t}} VALUES {values}"
    if kind == "update":
        sets = draw(st.sampled_from(["g = coalesce(g, 0) + 1", "s = 'upd'", "v = v * 2, n = NULL",
                                     "b = NOT b", "ts = ts + interval '1 day'", "s = s || 'x', g = NULL"]))
        return f"UPDATE {{t}} SET {sets}{where}"
    if kind == "delete":
        return f"DELETE FROM {{t}}{where}"
    return "SAVEPOINT"


@pytest.fixture(scope="module")
def dml_pair(dist_module):
    make_pair(dist_module, shard_count=4, heap="mh", table="md")
    return dist_module


@settings(max_examples=25, **_SETTINGS)
@given(data=st.data())
def test_random_dml(dml_pair, data):
    d = dml_pair
    d.q("TRUNCATE mh")
    d.q("TRUNCATE md")
    counter = iter(range(10 ** 6))
    seed = [r for r in fixed_rows(60)]
    insert(d, seed, heap="mh", table="md")
    # the whole program is drawn before anything runs, so that an error in
    # a statement cannot change what is drawn (hypothesis replays it as is)
    in_block = data.draw(st.booleans())
    program: list[tuple[str, str | None, bool]] = []  # (statement, savepoint body, roll back to it)
    for _ in range(data.draw(st.integers(1, 8))):
        stmt = data.draw(statements(lambda: 2 * 10 ** 6 + next(counter)))
        if stmt != "SAVEPOINT":
            program.append((stmt, None, False))
        elif in_block:
            body = data.draw(statements(lambda: 2 * 10 ** 6 + next(counter)))
            program.append((stmt, None if body == "SAVEPOINT" else body, data.draw(st.booleans())))
    commit = data.draw(st.booleans())
    conn = d.connect(autocommit=not in_block)
    try:
        for stmt, body, roll_back in program:
            if stmt == "SAVEPOINT":
                conn.execute("SAVEPOINT sp")
                if body is not None:
                    conn.execute(body.replace("{t}", "mh"))
                    conn.execute(body.replace("{t}", "md"))
                conn.execute("ROLLBACK TO SAVEPOINT sp" if roll_back else "RELEASE SAVEPOINT sp")
                continue
            conn.execute(stmt.replace("{t}", "mh"))
            conn.execute(stmt.replace("{t}", "md"))
        if in_block:
            if commit:
                conn.commit()
            else:
                conn.rollback()
    finally:
        conn.close()
    same_result(d, "SELECT * FROM {t}", heap="mh", table="md")
    assert d.lc.prepared_transactions(d.dbname) == []


# ------------------------------------------------------------------ joins


@pytest.fixture(scope="module")
def join_tables(fixed):
    """Beside (h, d): a co-located pair (h2, d2) sharing half of d's keys and
    a reference pair (hr, dr)."""
    d = fixed
    d.q("CREATE TABLE h2 (k int NOT NULL, g int, s text)")
    d.q("CREATE TABLE d2 (k int NOT NULL, g int, s text)")
    d.distribute("d2", "k", 7)
    d.q("CREATE TABLE hr (g int, label text)")
    d.q("CREATE TABLE dr (g int, label text)")
    d.reference("dr")
    for t in ("h2", "d2"):
        d.q(f"INSERT INTO {t} SELECT k, (k % 5), s FROM h WHERE k % 2 = 0")
        d.q(f"INSERT INTO {t} SELECT generate_series(1, 50), 1, 'extra'")
    for t in ("hr", "dr"):
        d.q(f"INSERT INTO {t} SELECT i, 'g' || i FROM generate_series(-1, 4) i")
    return d


@st.composite
def join_queries(draw, keys):
    kind = draw(st.sampled_from(["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"]))
    other = draw(st.sampled_from(["x2", "xr"]))
    if other == "x2":
        cond = draw(st.sampled_from(["a.k = b.k", "a.k = b.k AND a.g = b.g", "a.g = b.g AND a.k < 0",
                                     "a.k = b.k AND b.s = 'a'"]))
        cols = "a.k, a.g, b.k, b.s"
    else:
        cond = draw(st.sampled_from(["a.g = b.g", "a.g = b.g AND b.label <> 'g1'"]))
        cols = "a.k, b.g, b.label"
    where = draw(predicates(keys, "a."))
    agg = draw(st.booleans())
    select = "count(*), count(b.g)" if agg else cols
    return f"SELECT {select} FROM {{a}} a {kind} {{{other}}} b ON {cond}{where}"


@settings(max_examples=60, **_SETTINGS)
@given(data=st.data())
def test_random_joins(join_tables, data):
    d = join_tables
    query = data.draw(join_queries(d.keys))
    heap = query.replace("{a}", "h").replace("{x2}", "h2").replace("{xr}", "hr")
    dist = query.replace("{a}", "d").replace("{x2}", "d2").replace("{xr}", "dr")
    assert normalized(d.q(dist)) == normalized(d.q(heap)), query
