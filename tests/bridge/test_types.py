"""Every supported type crosses the bridge both ways, on the per-row and the
batch paths, and comes back equal to what Postgres stored in a heap table."""

from __future__ import annotations

import pytest

# (type, literal values) - extremes included
TYPE_VALUES = {
    "bool": ["true", "false"],
    "int2": ["-32768", "32767", "0"],
    "int4": ["-2147483648", "2147483647", "7"],
    "int8": ["-9223372036854775808", "9223372036854775807", "0"],
    "float4": ["1.5", "'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "3.4028235e38"],
    "float8": ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "1.7976931348623157e308", "5e-324", "0.1"],
    "numeric": ["'NaN'", "1234567890123456789012345678901234567890.123456789", "-0.000001", "0"],
    "numeric(10,2)": ["12.34", "-99999999.99"],
    "text": ["''", "'héllo wörld ✓'", "repeat('x', 70000)", "E'tab\\there'"],
    "varchar(5)": ["'abc'", "''"],
    "char(4)": ["'ab'", "'abcd'"],
    "bytea": ["'\\x00ff10'::bytea", "''::bytea"],
    "date": ["'2000-01-01'", "'4713-01-01 BC'", "'5874897-12-31'", "'infinity'", "'-infinity'", "'1999-12-31'"],
    "time": ["'00:00'", "'23:59:59.999999'", "'24:00'"],
    "timestamp": ["'2000-01-01 00:00'", "'294276-12-31 23:59:59.999999'", "'4713-01-01 00:00 BC'",
                  "'infinity'", "'-infinity'", "'1969-07-20 20:17:40.123456'"],
    "timestamptz": ["'2024-03-10 02:30:00+05:30'", "'infinity'", "'1900-01-01 00:00+00'", "'2000-01-01 00:00 UTC'"],
    "interval": ["'1 year 2 months 3 days 04:05:06.789'", "'-3 days'", "'0'", "'178000000 years'"],
    "uuid": ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"],
    "jsonb": ["'{\"a\": [1, 2, {\"b\": null}]}'", "'\"x\"'", "'[]'"],
    "inet": ["'10.1.2.3/8'", "'::1'"],
    "int4[]": ["'{1,2,NULL}'", "'{}'"],
}


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("type_", list(TYPE_VALUES))
def test_type_round_trip(db, foreign_table, type_, mode):
    """INSERT into a wrapper that keeps what it receives and gives it back."""
    foreign_table("e", f"x {type_}", "EchoTypesWrapper", mode=mode)
    db.execute(f"CREATE TABLE h (x {type_})")
    values = TYPE_VALUES[type_] + ["NULL"]
    for v in values:
        db.execute(f"INSERT INTO h VALUES ({v})")
    # one statement, so the batch path gets all rows in one batch
    db.execute("INSERT INTO e SELECT x FROM h")
    expected = db.execute("SELECT x::text FROM h").fetchall()
    got = db.execute("SELECT x::text FROM e").fetchall()
    assert got == expected
    # comparing in SQL catches what text forms could hide (e.g. -0)
    assert db.execute(
        "SELECT count(*) FROM (SELECT x, row_number() OVER () r FROM e) a "
        "JOIN (SELECT x, row_number() OVER () r FROM h) b USING (r) WHERE a.x IS DISTINCT FROM b.x"
    ).fetchone() == (0,)


def test_many_types_in_one_row(db, foreign_table):
    cols = ", ".join(f"c{i} {t}" for i, t in enumerate(TYPE_VALUES))
    for mode in ("row", "batch"):
        foreign_table(f"e_{mode}", cols, "EchoTypesWrapper", mode=mode)
    db.execute(f"CREATE TABLE h ({cols})")
    row = ", ".join(vals[0] for vals in TYPE_VALUES.values())
    db.execute(f"INSERT INTO h VALUES ({row}), ({row})")
    for mode in ("row", "batch"):
        db.execute(f"INSERT INTO e_{mode} SELECT * FROM h")
        # row text: NaN compares equal to itself there
        assert db.execute(f"SELECT e::text FROM e_{mode} e").fetchall() == db.execute("SELECT h::text FROM h").fetchall()


def test_copy_from_goes_through_batches(db, foreign_table):
    foreign_table("e", "a int8, b text, c timestamptz", "EchoTypesWrapper", mode="batch")
    with db.cursor().copy("COPY e FROM STDIN") as copy:
        for i in range(25_000):
            copy.write_row((i, f"v{i}", "2024-01-01 00:00+00"))
    assert db.execute("SELECT count(*), sum(a), count(DISTINCT b) FROM e").fetchone() == (25_000, 312_487_500, 25_000)


def test_batch_rows_are_checked_against_the_type(db, foreign_table):
    """A value that does not fit the column (varchar(2) gets 'abc') behaves as
    in any foreign table: Postgres does not check typmods of scanned values,
    but input functions still validate what they parse."""
    foreign_table("e", "x numeric", "EchoTypesWrapper", mode="row")
    db.execute("INSERT INTO e VALUES (1.5)")
    assert db.execute("SELECT x FROM e").fetchone()[0] == pytest.approx(1.5)
