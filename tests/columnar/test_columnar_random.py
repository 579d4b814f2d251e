"""Random data and random quals: a columnar table answers like a heap table
holding the same rows, whatever the stripe and chunk group sizes."""

from __future__ import annotations

import datetime
import decimal
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from columnar_helpers import assert_same_rows

COLUMNS = "i int8, f float8, r float4, s text, b bool, d date, ts timestamptz, n numeric, u uuid"

_UTC = datetime.timezone.utc
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_numeric = st.one_of(st.decimals(allow_nan=False, allow_infinity=False, places=4,
                                 min_value=-10**30, max_value=10**30),
                     st.sampled_from([decimal.Decimal("NaN"), decimal.Decimal("0"), decimal.Decimal("-0.0001")]))
_float = st.floats(allow_nan=True, allow_infinity=True)


def _maybe(strategy, null_weight=0.15):
    return st.one_of(st.none(), strategy) if null_weight else strategy


_row = st.tuples(
    _maybe(st.integers(-2**63, 2**63 - 1) | st.integers(-50, 50)),
    _maybe(_float | st.sampled_from([0.0, -0.0, 1.5])),
    _maybe(st.floats(width=32, allow_nan=True, allow_infinity=True)),
    _maybe(_text | st.sampled_from(["ok", "warn", "error", ""])),
    _maybe(st.booleans()),
    _maybe(st.dates()),
    _maybe(st.datetimes(min_value=datetime.datetime(1, 1, 2), timezones=st.just(_UTC))),
    _maybe(_numeric),
    _maybe(st.uuids()),
)

_OPS = ["=", "<", "<=", ">", ">=", "<>"]
_counter = itertools.count()


def _literal(conn, col: str, value) -> str:
    """A SQL literal of value, typed like the column."""
    types = dict(c.split(" ", 1) for c in COLUMNS.split(", "))
    if value is None:
        return f"NULL::{types[col]}"
    return conn.execute("SELECT quote_literal(%s::text)", (str(value) if not isinstance(value, bool)
                                                            else ("true" if value else "false"),)).fetchone()[0] \
        + f"::{types[col]}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(rows=st.lists(_row, max_size=250),
       splits=st.lists(st.integers(0, 250), max_size=3),
       chunk_group=st.integers(1, 60),
       stripe_rows=st.integers(1, 300),
       quals=st.lists(st.tuples(st.integers(0, 8), st.sampled_from(_OPS), st.integers(0, 10**6)), max_size=6),
       data=st.data())
def test_random_rows_match_heap(mconn, rows, splits, chunk_group, stripe_rows, quals, data):
    conn = mconn
    n = next(_counter)
    col, heap = f"r{n}", f"r{n}_h"
    conn.execute(f"CREATE FOREIGN TABLE {col} ({COLUMNS}) SERVER orochi "
                 f"OPTIONS (chunk_group_size '{chunk_group}', stripe_row_limit '{stripe_rows}')")
    conn.execute(f"CREATE TABLE {heap} ({COLUMNS})")
    try:
        # the same rows, in several statements (COPY and INSERT ... SELECT)
        cuts = sorted({0, len(rows), *[min(s, len(rows)) for s in splits]})
        for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
            with conn.cursor().copy(f"COPY {heap} FROM STDIN") as cp:
                for row in rows[a:b]:
                    cp.write_row(row)
            if k % 2 == 0:
                with conn.cursor().copy(f"COPY {col} FROM STDIN") as cp:
                    for row in rows[a:b]:
                        cp.write_row(row)
            else:
                conn.execute(f"INSERT INTO {col} SELECT * FROM {heap} OFFSET {a} LIMIT {b - a}")
        assert_same_rows(conn, col, heap)

        names = [c.split(" ")[0] for c in COLUMNS.split(", ")]
        for ci, op, pick in quals:
            name = names[ci]
            present = [r[ci] for r in rows if r[ci] is not None]
            if present and pick % 3:
                value = present[pick % len(present)]
            else:
                value = data.draw(_row)[ci]
            if value is None:
                where = f"WHERE {name} IS {'NOT ' if pick % 2 else ''}NULL"
            else:
                where = f"WHERE {name} {op} {_literal(conn, name, value)}"
            assert_same_rows(conn, col, heap, where)
    finally:
        conn.execute(f"DROP FOREIGN TABLE {col}")
        conn.execute(f"DROP TABLE {heap}")
