"""Every supported type, extremes included, stored in a columnar table
through INSERT, INSERT ... SELECT and COPY FROM, reads back equal to the
same rows in a heap table; and min/max pruning never changes a result."""

from __future__ import annotations

import pytest

from columnar_helpers import assert_same_rows

# type -> literal values; the extremes of each type are included
TYPE_VALUES = {
    "bool": ["true", "false"],
    "int2": ["-32768", "32767", "0", "7"],
    "int4": ["-2147483648", "2147483647", "0", "7"],
    "int8": ["-9223372036854775808", "9223372036854775807", "0", "-1"],
    "float4": ["1.5", "'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "0", "3.4028235e38", "1e-45"],
    "float8": ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "0", "1.7976931348623157e308",
               "5e-324", "0.1"],
    "numeric": ["'NaN'", "1234567890123456789012345678901234567890.123456789",
                "-1234567890123456789012345678901234567890", "-0.000001", "0", "'Infinity'"],
    "numeric(10,2)": ["12.34", "-99999999.99", "0"],
    "text": ["''", "'héllo wörld ✓'", "repeat('x', 70000)", "E'tab\\there'", "'a'", "'b'",
             "'\U0001F600'"],
    "varchar(5)": ["'abc'", "''", "'zzzzz'"],
    "char(4)": ["'ab'", "'abcd'", "''"],
    "bytea": ["'\\x00ff10'::bytea", "''::bytea", "'\\x00'::bytea", "'\\xffff'::bytea"],
    "date": ["'2000-01-01'", "'4713-01-01 BC'", "'5874897-12-31'", "'infinity'", "'-infinity'",
             "'1999-12-31'"],
    "time": ["'00:00'", "'23:59:59.999999'", "'24:00'", "'12:00'"],
    "timestamp": ["'2000-01-01 00:00'", "'294276-12-31 23:59:59.999999'", "'4713-01-01 00:00 BC'",
                  "'infinity'", "'-infinity'", "'1969-07-20 20:17:40.123456'"],
    "timestamptz": ["'2024-03-10 02:30:00+05:30'", "'infinity'", "'-infinity'", "'1900-01-01 00:00+00'",
                    "'2000-01-01 00:00 UTC'", "'294276-12-31 23:59:59.999999+00'"],
    "interval": ["'1 year 2 months 3 days 04:05:06.789'", "'-3 days'", "'0'", "'178000000 years'"],
    "uuid": ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'",
             "'ffffffff-ffff-ffff-ffff-ffffffffffff'"],
    "jsonb": ["'{\"a\": [1, 2, {\"b\": null}]}'", "'\"x\"'", "'[]'", "'1e400'"],
    "inet": ["'10.1.2.3/8'", "'::1'"],
    "int4[]": ["'{1,2,NULL}'", "'{}'"],
}

# types whose values have no order worth comparing with < and >
_UNORDERED = {"jsonb"}


def _fill(conn, table: str, heap: str, type_: str, values: list[str]) -> None:
    """The same rows into both tables: NULLs, each value alone, then many
    rows (several chunk groups) through INSERT ... SELECT and COPY."""
    for t in (table, heap):
        conn.execute(f"INSERT INTO {t} VALUES (NULL, 0)")
        conn.execute(f"INSERT INTO {t} VALUES " + ", ".join(f"({v}, {i + 1})" for i, v in enumerate(values)))
    conn.execute(f"CREATE TEMP TABLE src AS SELECT x, k FROM (VALUES "
                 + ", ".join(f"(({v})::{type_}, {i})" for i, v in enumerate(values))
                 + f") v(x, k), generate_series(1, 25) g ORDER BY g, k")
    conn.execute(f"INSERT INTO src SELECT NULL, -g FROM generate_series(1, 10) g")
    for t in (table, heap):
        conn.execute(f"INSERT INTO {t} SELECT x, k FROM src")
    buf = bytearray()
    with conn.cursor().copy("COPY src TO STDOUT") as cp:
        for chunk in cp:
            buf += chunk
    for t in (table, heap):
        with conn.cursor().copy(f"COPY {t} FROM STDIN") as cp:
            cp.write(bytes(buf))
    conn.execute("DROP TABLE src")


@pytest.mark.parametrize("type_", list(TYPE_VALUES))
def test_type_round_trip_and_pruning(mconn, type_):
    conn = mconn
    ident = "t_" + "".join(c if c.isalnum() else "_" for c in type_)
    values = TYPE_VALUES[type_]
    conn.execute(f"CREATE FOREIGN TABLE {ident} (x {type_}, k int) SERVER orochi "
                 "OPTIONS (chunk_group_size '7', stripe_row_limit '50')")
    conn.execute(f"CREATE TABLE {ident}_h (x {type_}, k int)")
    _fill(conn, ident, f"{ident}_h", type_, values)

    assert_same_rows(conn, ident, f"{ident}_h")
    stripes = conn.execute(f"SELECT count(*), sum(chunk_group_count) FROM orochi.columnar_stripes "
                           f"WHERE relid = '{ident}'::regclass").fetchone()
    assert stripes[0] >= 4 and stripes[1] > stripes[0], "should be several stripes and chunk groups"

    # Pruning by min/max must never change a result: every value, every operator.
    ops = ["="] if type_ in _UNORDERED else ["=", "<", "<=", ">", ">="]
    for v in values:
        for op in ops:
            assert_same_rows(conn, ident, f"{ident}_h", f"WHERE x {op} ({v})::{type_}")
    assert_same_rows(conn, ident, f"{ident}_h", "WHERE x IS NULL")
    assert_same_rows(conn, ident, f"{ident}_h", "WHERE x IS NOT NULL")
    in_list = ", ".join(f"({v})::{type_}" for v in values[:2])
    assert_same_rows(conn, ident, f"{ident}_h", f"WHERE x IN ({in_list}, NULL)")
    # only the column asked for, and none (count(*))
    got = conn.execute(f"SELECT count(*), count(x), count(k) FROM {ident}").fetchone()
    want = conn.execute(f"SELECT count(*), count(x), count(k) FROM {ident}_h").fetchone()
    assert got == want


def test_all_types_in_one_wide_table(mconn):
    """Every type side by side, many rows, NULLs scattered per column."""
    conn = mconn
    cols = list(TYPE_VALUES)
    defs = ", ".join(f"c{i} {t}" for i, t in enumerate(cols))
    conn.execute(f"CREATE FOREIGN TABLE wide ({defs}) SERVER orochi OPTIONS (chunk_group_size '100')")
    conn.execute(f"CREATE TABLE wide_h ({defs})")
    selects = []
    for i, t in enumerate(cols):
        vals = TYPE_VALUES[t]
        pick = " ".join(f"WHEN {j} THEN ({v})::{t}" for j, v in enumerate(vals))
        selects.append(f"CASE WHEN (g + {i}) % 11 = 0 THEN NULL "
                       f"ELSE CASE (g * {i + 3}) % {len(vals)} {pick} END END")
    conn.execute(f"INSERT INTO wide_h SELECT {', '.join(selects)} FROM generate_series(1, 1000) g")
    conn.execute("INSERT INTO wide SELECT * FROM wide_h")
    assert_same_rows(conn, "wide", "wide_h")
    for i in (0, 7, 12, 14):  # bool, text, date, timestamptz: projections of one column
        got = conn.execute(f"SELECT c{i}::text FROM wide ORDER BY 1").fetchall()
        want = conn.execute(f"SELECT c{i}::text FROM wide_h ORDER BY 1").fetchall()
        assert got == want


def test_domain_enum_and_composite_through_text_form(mconn):
    conn = mconn
    conn.execute("CREATE DOMAIN posint AS int CHECK (VALUE > 0)")
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    conn.execute("CREATE TYPE pair AS (a int, b text)")
    conn.execute("CREATE FOREIGN TABLE odd (p posint, m mood, c pair) SERVER orochi")
    conn.execute("CREATE TABLE odd_h (p posint, m mood, c pair)")
    for t in ("odd", "odd_h"):
        conn.execute(f"INSERT INTO {t} VALUES (1, 'happy', ROW(1, 'x')), (2, 'sad', ROW(NULL, 'a,b')), "
                     f"(NULL, NULL, NULL)")
    assert_same_rows(conn, "odd", "odd_h")
    assert_same_rows(conn, "odd", "odd_h", "WHERE m > 'sad'")
