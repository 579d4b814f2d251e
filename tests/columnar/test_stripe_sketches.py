"""Per-stripe HyperLogLog sketches (table option stripe_sketches): an
orochi.approx_count_distinct or hll_agg over the whole table merges the
stripes' stored sketches instead of reading them, and gives what reading
the data gives (a table without the option, and a heap table with the same
rows, through the aggregate's own transition function), through delta rows,
deleted and updated rows, NULLs, compaction and vacuum."""

from __future__ import annotations

import re

import psycopg
import pytest

COLUMNS = "g int8, i int8, s text, f float8, d date, n numeric, b bool, t timestamptz, y bytea, r real"
FILL = """
INSERT INTO {t}
SELECT g,
       CASE WHEN g % 11 = 0 THEN NULL ELSE (g * 7919) % 3001 END,
       CASE WHEN g % 13 = 0 THEN NULL ELSE 'k' || (g % 2500) END,
       CASE g % 997 WHEN 0 THEN 'NaN' WHEN 1 THEN '-0' WHEN 2 THEN NULL ELSE (g % 40000) / 7.0 END,
       date '2020-01-01' + (g % 900)::int,
       (g % 300) / 10.0,
       CASE WHEN g % 17 = 0 THEN NULL ELSE g % 3 = 0 END,
       timestamptz '2024-01-01 00:00+00' + (g % 5000) * interval '1 second',
       CASE WHEN g % 19 = 0 THEN NULL ELSE decode(md5((g % 700)::text), 'hex') END,
       CASE g % 501 WHEN 0 THEN '-0' ELSE (g % 1200) / 3.0 END
FROM generate_series({lo}, {hi}) g
"""
QUERY = ("SELECT orochi.approx_count_distinct(i), orochi.approx_count_distinct(s), orochi.hll_agg(f), "
         "orochi.approx_count_distinct(d, 10), orochi.hll_agg(i, 12), orochi.approx_count_distinct(g), "
         "count(*), orochi.approx_count_distinct(b), orochi.approx_count_distinct(t), "
         "orochi.approx_count_distinct(y), orochi.approx_count_distinct(r) FROM {t}")
TABLES = ("m", "r", "h")  # with sketches, without, heap


def _each(db, sql):
    for t in TABLES:
        db.execute(sql.format(t=t, lo=0, hi=0) if "{lo}" not in sql else sql.format(t=t))


def _check(db, sql=QUERY):
    got = [db.execute(sql.format(t=t)).fetchall() for t in TABLES]
    assert got[0] == got[1] == got[2]
    return got[0]


def _answered(db, sql=QUERY):
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql.format(t="m")).fetchall())
    m = re.search(r"Stripes Answered From Sketches: (\d+)", plan)
    return int(m.group(1)) if m else None


def _stripes(db, t="m"):
    return db.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE relid = %s::regclass",
                      [t]).fetchone()[0]


def _make(db):
    opts = "delta_row_limit '100', stripe_row_limit '4000'"
    db.execute(f"CREATE FOREIGN TABLE m ({COLUMNS}) SERVER orochi OPTIONS ({opts}, stripe_sketches 'true')")
    db.execute(f"CREATE FOREIGN TABLE r ({COLUMNS}) SERVER orochi OPTIONS ({opts})")
    db.execute(f"CREATE TABLE h ({COLUMNS})")


def test_stripe_sketches_equal_reading_the_data(db):
    _make(db)
    for t in TABLES:
        db.execute(FILL.format(t=t, lo=1, hi=20_000))
    stripes = _stripes(db)
    assert stripes >= 5
    first = _check(db)
    assert first[0][0] > 2000 and first[0][6] == 20_000
    assert _answered(db) == stripes
    # the stored sketches are the ones reading the stripe builds
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripe_columns "
                      "WHERE relid = 'm'::regclass AND hll IS NOT NULL").fetchone()[0] == 9 * stripes
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripe_columns "
                      "WHERE relid = 'r'::regclass AND hll IS NOT NULL").fetchone()[0] == 0

    # delta rows: merged with the sketches
    for t in TABLES:
        db.execute(FILL.format(t=t, lo=30_001, hi=30_050))
    assert _check(db) != first
    assert _answered(db) == stripes

    # deleted and updated rows: their stripes are read, the others answered
    for t in TABLES:
        db.execute(f"DELETE FROM {t} WHERE g BETWEEN 100 AND 180")
        db.execute(f"UPDATE {t} SET s = 'updated', i = -1 WHERE g BETWEEN 9000 AND 9010")
    _check(db)
    answered = _answered(db)
    assert 0 < answered < stripes

    # compaction and vacuum write new stripes with sketches
    db.execute("SELECT * FROM orochi.compact('m')")
    db.execute("SELECT * FROM orochi.vacuum('m', 0.0)")
    db.execute("SELECT * FROM orochi.compact('r')")
    _check(db)
    assert _answered(db) == _stripes(db)

    # filters and groups are not answered from sketches, and stay right
    _check(db, "SELECT orochi.approx_count_distinct(s) FROM {t} WHERE g > 5000")
    _check(db, "SELECT g % 3, orochi.approx_count_distinct(i) FROM {t} GROUP BY 1 ORDER BY 1")
    # a precision above the stored one, and numeric (not sketched): read
    _check(db, "SELECT orochi.approx_count_distinct(i, 16), orochi.approx_count_distinct(n) FROM {t}")
    assert _answered(db, "SELECT orochi.approx_count_distinct(i, 16) FROM {t}") is None


def test_old_stripes_without_sketches_are_read(db):
    """Stripes written before the option was set have no sketch: read, and
    merged with the sketches of the stripes written since."""
    _make(db)
    db.execute("ALTER FOREIGN TABLE m OPTIONS (SET stripe_sketches 'false')")
    for t in TABLES:
        db.execute(FILL.format(t=t, lo=1, hi=8000))
    before = _stripes(db)
    db.execute("ALTER FOREIGN TABLE m OPTIONS (SET stripe_sketches 'true')")
    for t in TABLES:
        db.execute(FILL.format(t=t, lo=8001, hi=16_000))
    _check(db)
    assert _answered(db) == _stripes(db) - before > 0
    db.execute("ALTER FOREIGN TABLE m ADD COLUMN extra int")
    _check(db)


def test_bad_option_value(db):
    with pytest.raises(psycopg.Error, match="stripe_sketches"):
        db.execute(f"CREATE FOREIGN TABLE bad ({COLUMNS}) SERVER orochi OPTIONS (stripe_sketches 'maybe')")


@pytest.mark.parametrize("damage", ["overlay(hll placing '\\x07'::bytea from 5)",  # the precision byte
                                    "substring(hll from 1 for 20)"])
def test_corrupt_stored_sketch_is_a_clear_error(db, damage):
    """A stored sketch is checked when read: a wrong header or length is an
    error naming the stripe and column (22P03), not a wrong count; with the
    option off the stripes are read again."""
    db.execute(f"CREATE FOREIGN TABLE m ({COLUMNS}) SERVER orochi "
               "OPTIONS (delta_row_limit '0', stripe_sketches 'true')")
    db.execute(FILL.format(t="m", lo=1, hi=3000))
    right = db.execute("SELECT orochi.approx_count_distinct(s) FROM m").fetchone()
    db.execute(f"UPDATE orochi.columnar_stripe_columns SET hll = {damage} "
               "WHERE relid = 'm'::regclass AND column_name = 's'")
    with pytest.raises(psycopg.errors.InvalidBinaryRepresentation, match='column "s" in stripe'):
        db.execute("SELECT orochi.approx_count_distinct(s) FROM m")
    db.execute("ALTER FOREIGN TABLE m OPTIONS (SET stripe_sketches 'false')")
    assert db.execute("SELECT orochi.approx_count_distinct(s) FROM m").fetchone() == right
