"""The one bound predicate model against PostgreSQL: random quals on the
same rows held three ways, a heap table (the oracle), a columnar table whose
rows are all in stripes of many small chunk groups (pruned by min / max, then
filtered by the kernels batch by batch) and a columnar table whose rows are
all in the delta store (pre-filtered in SQL by the quals that prune, then
filtered by the same kernels). The three must give the same rows: pruning
that dropped a chunk group holding a row the filter keeps, or a filter that
differed between the stripes' batches, the delta rows and PostgreSQL, shows
as a difference. The quals mix NULL constants, values no row has, IN and
NOT IN lists, IS [NOT] NULL, ranges and LIKE prefixes on integer, numeric,
float, text, date, timestamp, timestamptz, uuid and boolean columns, with
constants of the column's type and of others (a session time zone that is
not UTC makes the zoned comparisons count)."""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

COLUMNS = ("id int, i int4, n numeric(10,2), f float8, s text, d date, t timestamp,"
           " tz timestamptz, u uuid, b bool")
ROWS = 600
TIME_ZONE = "America/St_Johns"  # UTC-03:30 / -02:30: zoned comparisons shift
EPOCH = dt.datetime(2024, 1, 1)
UUIDS = [uuid.UUID(int=random.Random(k).getrandbits(128)) for k in range(40)]
WORDS = ["", "a", "ab", "abc", "b", "ba", "error", "ok", "warn", "zz", "é", "éa", "naïve", "x'y", "A"]


def _rows() -> list[tuple]:
    """Rows whose time columns grow with id (stripes and chunk groups hold
    ranges), the others at random, every column NULL now and then."""
    rnd = random.Random(19)

    def maybe(v):
        return None if rnd.random() < 0.08 else v

    out = []
    for k in range(ROWS):
        at = EPOCH + dt.timedelta(hours=3 * k, minutes=rnd.randrange(180))
        out.append((
            k,
            maybe(rnd.randrange(-50, 51) if k % 150 < 100 else 1000 + k),
            maybe(Decimal(rnd.randrange(-100_000, 100_001)) / 100 if k % 7 else Decimal("NaN")),
            maybe(rnd.choice([rnd.uniform(-100, 100), 0.0, -0.0, 1.5, float("nan"), float("inf"),
                              float("-inf")])),
            maybe(f"w{k:04d}" if k % 200 >= 100 else rnd.choice(WORDS) + rnd.choice(["", "", rnd.choice(WORDS)])),
            maybe(at.date()),
            maybe(at),
            maybe(at.replace(tzinfo=dt.timezone.utc)),
            maybe(UUIDS[k // 15]),
            maybe(rnd.random() < 0.5 if k % 200 < 150 else True),
        ))
    return out


@pytest.fixture(scope="module")
def tables(pg_cluster, module_database):
    conn = pg_cluster.connect(module_database, autocommit=True)
    conn.execute(f"CREATE TABLE h ({COLUMNS})")
    conn.execute(f"CREATE FOREIGN TABLE cs ({COLUMNS}) SERVER orochi OPTIONS"
                 " (delta_row_limit '0', stripe_row_limit '150', chunk_group_size '25')")
    conn.execute(f"CREATE FOREIGN TABLE cd ({COLUMNS}) SERVER orochi OPTIONS (delta_row_limit '100000')")
    with conn.cursor().copy("COPY h FROM STDIN") as cp:
        for row in _rows():
            cp.write_row(row)
    conn.execute("INSERT INTO cs SELECT * FROM h ORDER BY id")
    conn.execute("INSERT INTO cd SELECT * FROM h ORDER BY id")
    conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(TIME_ZONE)))
    yield conn
    conn.close()


def _stored(conn, table: str) -> tuple[int, int]:
    """(stripes, rows in the delta store) of a columnar table."""
    plan = "\n".join(r[0] for r in conn.execute(
        sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT id FROM {}").format(
            sql.Identifier(table))).fetchall())
    stripes = re.search(r"Stripes Read: \d+ of (\d+)", plan)
    delta = re.search(r"Delta Rows: (\d+)", plan)
    assert stripes and delta, plan
    return int(stripes.group(1)), int(delta.group(1))


# ------------------------------------------------------------------ values

_ts = st.datetimes(min_value=dt.datetime(2023, 12, 20), max_value=dt.datetime(2024, 3, 20))
_time_values = st.one_of(
    _ts, _ts.map(lambda v: v.replace(tzinfo=dt.timezone.utc)),
    _ts.map(lambda v: v.replace(tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))),
    _ts.map(lambda v: v.date()), st.sampled_from(["infinity", "-infinity"]),
    st.sampled_from([dt.datetime(2024, 1, 1), dt.date(2024, 1, 10), dt.date(1999, 1, 1)]))
VALUES = {
    "i": st.one_of(st.integers(-60, 60), st.integers(1000, 1700), st.sampled_from([2**40, -2**40, 2**31]),
                   st.decimals(min_value=-60, max_value=60, places=1), st.floats(-60, 60),
                   st.sampled_from([Decimal("NaN"), float("nan")])),
    "n": st.one_of(st.decimals(min_value=-1001, max_value=1001, places=3), st.integers(-1001, 1001),
                   st.sampled_from([Decimal("NaN"), Decimal("1e12"), Decimal("-0.005")])),
    "f": st.one_of(st.floats(-120, 120), st.sampled_from([0.0, -0.0, 1.5, float("nan"), float("inf"),
                                                           float("-inf")]), st.integers(-120, 120)),
    "s": st.one_of(st.sampled_from(WORDS + ["w0500", "w05", "w1"]), st.text(alphabet="abzé'w0", max_size=3)),
    "d": _time_values,
    "t": _time_values,
    "tz": _time_values,
    "u": st.one_of(st.sampled_from(UUIDS), st.uuids()),
    "b": st.booleans(),
}
_values_or_null = {name: st.one_of(st.none(), s) if name != "b" else s for name, s in VALUES.items()}
OPS = ["=", "<>", "<", "<=", ">", ">="]


@st.composite
def quals(draw) -> tuple[sql.Composable, list]:
    """One qual as SQL with its parameters."""
    name = draw(st.sampled_from(sorted(VALUES)))
    col = sql.Identifier(name)
    form = draw(st.sampled_from(["cmp", "cmp", "cmp", "in", "not in", "null", "range", "like", "any"]))
    if form == "null":
        return sql.SQL("{} IS {}NULL").format(col, sql.SQL(draw(st.sampled_from(["", "NOT "])))), []
    if form in ("in", "not in"):
        items = draw(st.lists(_values_or_null[name] if form == "in" else VALUES[name], min_size=1, max_size=4))
        return (sql.SQL("{} {} ({})").format(col, sql.SQL(form.upper()),
                                             sql.SQL(", ").join(sql.Placeholder() * len(items))), items)
    if form == "any":
        items = draw(st.lists(VALUES[name], min_size=0, max_size=4))
        typed = sql.SQL("ARRAY[{}]::{}[]").format(sql.SQL(", ").join(sql.Placeholder() * len(items)),
                                                   sql.SQL(_TYPES[name]))
        op = draw(st.sampled_from(["=", "<>", "<"]))
        kind = "ALL" if op == "<>" else draw(st.sampled_from(["ANY", "ALL"]))
        return sql.SQL("{} {} {} ({})").format(col, sql.SQL(op), sql.SQL(kind), typed), items
    if form == "range":
        lo, hi = draw(VALUES[name]), draw(VALUES[name])
        return sql.SQL("{} BETWEEN {} AND {}").format(col, sql.Placeholder(), sql.Placeholder()), [lo, hi]
    if form == "like" and name == "s":
        prefix = draw(st.sampled_from(WORDS + ["a_", "%", "w05", "w0", "w1"]))
        op = draw(st.sampled_from(["LIKE", "NOT LIKE"]))
        return sql.SQL("s {} {}").format(sql.SQL(op), sql.Placeholder()), [prefix + "%"]
    op = draw(st.sampled_from(OPS))
    value = draw(_values_or_null[name])
    collate = sql.SQL(" COLLATE \"C\"") if name == "s" and draw(st.booleans()) else sql.SQL("")
    return sql.SQL("{}{} {} {}").format(col, collate, sql.SQL(op), sql.Placeholder()), [value]


_TYPES = {"i": "int4", "n": "numeric", "f": "float8", "s": "text", "d": "date", "t": "timestamp",
          "tz": "timestamptz", "u": "uuid", "b": "bool"}


def _ids(conn, table: str, where: sql.Composable, params: list):
    query = sql.SQL("SELECT id FROM {} WHERE {} ORDER BY id").format(sql.Identifier(table), where)
    try:
        return [r[0] for r in conn.execute(query, params).fetchall()]
    except psycopg.Error as exc:
        return ("error", exc.sqlstate)


def test_tables_hold_their_rows_where_meant(tables):
    assert _stored(tables, "cs")[0] >= ROWS // 150 and _stored(tables, "cs")[1] == 0
    assert _stored(tables, "cd") == (0, ROWS)
    assert tables.execute("SELECT count(*) FROM cs").fetchone()[0] == ROWS
    assert tables.execute("SELECT count(*) FROM cd").fetchone()[0] == ROWS


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(qs=st.lists(quals(), min_size=1, max_size=3))
def test_random_quals_stripes_delta_and_heap_agree(tables, qs):
    where = sql.SQL(" AND ").join(q for q, _ in qs)
    params = [p for _, ps in qs for p in ps]
    expected = _ids(tables, "h", where, params)
    text = where.as_string(tables)
    assert _ids(tables, "cs", where, params) == expected, \
        f"stripes (pruned, filtered in batches) differ from the heap for WHERE {text} {params}"
    assert _ids(tables, "cd", where, params) == expected, \
        f"delta rows differ from the heap for WHERE {text} {params}"


def _plan(conn, query: str, params: list = ()) -> str:
    return "\n".join(r[0] for r in conn.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + query, params).fetchall())


@pytest.mark.parametrize("where, params", [
    ("d < %s", [dt.datetime(2024, 1, 5, 12)]),                       # a date against a timestamp
    ("tz < %s", [dt.date(2024, 1, 5)]),                              # timestamptz against a date (zoned)
    ("s LIKE %s", ["w05%"]),                                         # a prefix
    ("u = %s", [UUIDS[3]]),                                          # uuid bytes
    ("i IN (%s, %s)", [1560, 1570]),                                 # an IN list
])
def test_the_model_prunes_where_it_can(tables, where, params):
    plan = _plan(tables, f"SELECT id FROM cs WHERE {where}", params)
    assert "skipped by min/max" in plan, plan
    assert _ids(tables, "cs", sql.SQL(where), params) == _ids(tables, "h", sql.SQL(where), params)


def test_explain_lines_of_the_bound_quals(tables):
    plan = "\n".join(r[0] for r in tables.execute(
        "EXPLAIN (COSTS OFF) SELECT id FROM cs WHERE i = 3 AND s <> 'ok' AND n IS NULL").fetchall())
    (line,) = [x for x in plan.splitlines() if "Min/Max Filter:" in x]
    # the quals min/max tests (not <>, which only rules out chunks of NULLs), as written
    assert set(line.split("Min/Max Filter: ")[1].split(" AND ")) == {"i = 3", "n IS NULL"}, plan
    (line,) = [x for x in plan.splitlines() if "Orochi Filter:" in x]
    assert set(line.split("Orochi Filter: ")[1].split(" AND ")) == {"i = 3", "s <> 'ok'", "n IS NULL"}, plan
