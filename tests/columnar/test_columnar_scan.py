"""Scans: stripes and chunk groups skipped by min/max where that is safe (and
only there), EXPLAIN, parameters and stable expressions, projections,
planner estimates, damaged files."""

from __future__ import annotations

import os
import re

import psycopg
import pytest

from columnar_helpers import assert_same_rows, catalog_files


def _explain(conn, query: str, params=None) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                                                + query, params).fetchall())


def _read(plan: str) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """((stripes read, stripes), (chunk groups read, chunk groups)) from EXPLAIN ANALYZE."""
    s = re.search(r"Stripes Read: (\d+) of (\d+)", plan)
    g = re.search(r"Chunk Groups Read: (\d+) of (\d+)", plan)
    return (int(s[1]), int(s[2])), ((int(g[1]), int(g[2])) if g else None)


@pytest.fixture
def series(db):
    """A time series of 100,000 rows in 5 stripes of 20 chunk groups, and its heap twin."""
    db.execute("""CREATE FOREIGN TABLE ts (t timestamptz, device int, v float8, status text, note text)
                  SERVER orochi OPTIONS (stripe_row_limit '20000', chunk_group_size '1000')""")
    db.execute("""CREATE TABLE ts_h AS
                  SELECT '2024-01-01'::timestamptz + g * interval '1 minute' AS t, g % 50 AS device,
                         CASE WHEN g % 997 = 0 THEN 'NaN'::float8 ELSE g / 7.0 END AS v,
                         (ARRAY['ok', 'warn', 'error'])[1 + (g / 5000) % 3] AS status,
                         CASE WHEN g % 100 = 0 THEN 'note ' || g END AS note
                    FROM generate_series(0, 99999) g""")
    db.execute("INSERT INTO ts SELECT * FROM ts_h")
    return db


def test_time_range_skips_stripes_and_chunk_groups(series):
    q = "SELECT count(*), sum(v)::text FROM {} WHERE t >= '2024-02-15' AND t < '2024-02-16'"
    assert series.execute(q.format("ts")).fetchone() == series.execute(q.format("ts_h")).fetchone()
    (sread, stotal), (gread, gtotal) = _read(_explain(series, q.format("ts")))
    assert (sread, stotal) == (1, 5), "should skip the stripes outside the day"
    assert gread <= 3 and gtotal == 20, "should read only the chunk groups of that day"


def test_parameters_and_stable_expressions_prune_at_execution(series):
    series.execute("PREPARE p(timestamptz) AS SELECT count(*) FROM ts WHERE t > $1")
    for _ in range(7):  # past the point where a generic plan is used
        assert series.execute("EXECUTE p('2024-03-10')").fetchone()[0] == \
            series.execute("SELECT count(*) FROM ts_h WHERE t > '2024-03-10'").fetchone()[0]
    (sread, _), _ = _read(_explain(series, "EXECUTE p('2024-03-10')"))
    assert sread == 1
    q = "SELECT count(*) FROM {} WHERE t < '2024-01-01'::timestamptz + interval '3 days'"
    assert series.execute(q.format("ts")).fetchone() == series.execute(q.format("ts_h")).fetchone()
    (sread, _), (gread, _) = _read(_explain(series, q.format("ts")))
    assert sread == 1 and gread == 5


def test_explain_without_analyze(series):
    plan = "\n".join(r[0] for r in series.execute(
        "EXPLAIN (COSTS OFF) SELECT * FROM ts WHERE device = 3 AND t > '2024-03-01'").fetchall())
    assert "Stripes: 5 (4 skipped by min/max)" in plan
    (line,) = [x for x in plan.splitlines() if "Min/Max Filter:" in x]
    assert "device = 3" in line and "t > 2024-03-01 00:00:00+00:00" in line


def test_nan_and_nulls_are_never_pruned_wrongly(series):
    for where in ["v > 1e300", "v >= 'NaN'", "v = 'NaN'", "v < 0", "v <= 0", "note IS NULL",
                  "note IS NOT NULL", "note = 'note 500'", "note > 'note 99'", "status = 'warn'",
                  "status IN ('error', 'nope')", "device = ANY (ARRAY[1, NULL, 49])", "v < 'Infinity'",
                  "t = '2024-01-01 00:07:00+00'", "t > 'infinity'", "t < '-infinity'"]:
        assert_same_rows(series, "ts", "ts_h", f"WHERE {where}")


def test_count_star_reads_no_chunk(series):
    plan = _explain(series, "SELECT count(*) FROM ts")
    # answered from the catalog's statistics: no stripe file is opened
    assert "Stripes Read: 0 of 5 (5 answered from statistics)" in plan and "Chunk Groups Read" not in plan
    assert series.execute("SELECT count(*) FROM ts").fetchone()[0] == 100000


def test_limit_stops_early(series):
    assert len(series.execute("SELECT * FROM ts LIMIT 5").fetchall()) == 5
    (sread, _), (gread, _) = _read(_explain(series, "SELECT * FROM ts LIMIT 5"))
    assert sread == 1 and gread == 1


def test_row_estimates_come_from_the_catalog(series):
    plan = series.execute("EXPLAIN SELECT * FROM ts").fetchall()[0][0]
    assert "rows=100000 " in plan
    plan = series.execute("EXPLAIN SELECT * FROM ts WHERE t < '2024-01-10'").fetchall()[0][0]
    assert "rows=20000 " in plan, "should count only the stripes the quals keep"


def test_text_pruning_respects_collations(db):
    """Equality under a nondeterministic collation matches other bytes; ranges
    under a linguistic collation follow another order: neither may prune."""
    db.execute("CREATE FOREIGN TABLE w (s text) SERVER orochi OPTIONS (chunk_group_size '2', stripe_row_limit '2')")
    db.execute("CREATE TABLE w_h (s text)")
    for t in ("w", "w_h"):
        db.execute(f"INSERT INTO {t} VALUES ('abc'), ('abd')")
        db.execute(f"INSERT INTO {t} VALUES ('ABC'), ('B')")
        db.execute(f"INSERT INTO {t} VALUES ('a'), ('Z')")
    assert_same_rows(db, "w", "w_h", "WHERE s = 'abc'")
    assert_same_rows(db, "w", "w_h", "WHERE s > 'Z'")
    has_icu = db.execute("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'").fetchone()[0] > 0
    if has_icu:
        db.execute("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
        assert_same_rows(db, "w", "w_h", "WHERE s = 'ABC' COLLATE ci")
        assert len(db.execute("SELECT * FROM w WHERE s = 'abc' COLLATE ci").fetchall()) == 2
        assert_same_rows(db, "w", "w_h", "WHERE s > 'b' COLLATE \"und-x-icu\"")
        assert_same_rows(db, "w", "w_h", "WHERE s < 'B' COLLATE \"und-x-icu\"")
    assert_same_rows(db, "w", "w_h", "WHERE s >= 'abd' COLLATE \"C\"")
    plan = _explain(db, "SELECT * FROM w WHERE s >= 'abd' COLLATE \"C\"")
    assert _read(plan)[0] == (1, 3), "the C collation is byte order: should prune"


def test_filters_on_dictionary_coded_text_and_char(db):
    """The scan's filter on DICTIONARY-coded text and character(n) chunks runs
    once per distinct value (codes and NULLs as stored): the same rows as
    the heap's, for comparisons, IN lists, prefixes and NULL tests."""
    cols = "(k int, s text, c char(6), v varchar(8))"
    db.execute(f"CREATE FOREIGN TABLE dct {cols} SERVER orochi OPTIONS (chunk_group_size '50')")
    db.execute(f"CREATE TABLE dct_h {cols}")
    db.execute("""INSERT INTO dct_h SELECT g,
                    CASE WHEN g % 11 = 0 THEN NULL ELSE (ARRAY['MAIL', 'SHIP', 'AIR', 'AIR REG', ''])[1 + g % 5] END,
                    CASE WHEN g % 13 = 0 THEN NULL ELSE (ARRAY['MAIL', 'AIR', 'SHIP ', 'A'])[1 + g % 4] END,
                    CASE WHEN g % 7 = 0 THEN NULL ELSE (ARRAY['x', 'y ', 'zz'])[1 + g % 3] END
                  FROM generate_series(1, 400) g""")
    db.execute("INSERT INTO dct SELECT * FROM dct_h")
    for where in ["s IN ('MAIL', 'SHIP')", "s NOT IN ('AIR', '')", "s < 'MAIL'", "s >= 'AIR' AND s < 'SHIP'",
                  "s = ''", "s LIKE 'AIR%'", "s IS NULL", "c = 'SHIP'", "c = 'SHIP  '", "c IN ('MAIL', 'A')",
                  "c < 'B'", "c > 'A' AND k < 200", "c IS NOT NULL AND s IN ('AIR REG')", "v = 'y '", "v > 'x'",
                  "s = 'nothing'", "c IN ('AIR', 'MAIL') AND s IN ('MAIL', 'SHIP') AND v <> 'zz'"]:
        assert_same_rows(db, "dct", "dct_h", f"WHERE {where}")


def test_damaged_dictionary_chunk_gives_a_clear_error(db):
    """A DICTIONARY-coded text chunk damaged on disk: a filter on it (scan
    and top-N) reports the file, never returns rows read wrong."""
    from orochi_fdw.storage.codecs import Codec
    from orochi_fdw.storage.stripe_format import StripeReader

    db.execute("CREATE FOREIGN TABLE dd (a int, s text) SERVER orochi")
    db.execute("INSERT INTO dd SELECT g, (ARRAY['ok', 'warning', 'critical'])[1 + g % 3] FROM generate_series(1, 3000) g")
    (path,) = catalog_files(db)
    with StripeReader(path) as r:
        chunk = r.metadata.chunk("s", 0)
    assert chunk.codec == Codec.DICTIONARY
    data = bytearray(open(path, "rb").read())
    data[chunk.offset + chunk.length // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)
    for query in ("SELECT a, s FROM dd WHERE s = 'critical'", "SELECT * FROM dd WHERE s = 'ok' ORDER BY a LIMIT 3"):
        with pytest.raises(psycopg.errors.DataCorrupted) as exc:
            db.execute(query).fetchall()
        assert path in str(exc.value)
    assert db.execute("SELECT sum(a) FROM dd").fetchone()[0] == 3000 * 3001 // 2  # other columns still readable


def test_cross_type_comparisons(db):
    db.execute("CREATE FOREIGN TABLE x (i2 int2, i8 int8, f4 float4, d date, ts timestamp) SERVER orochi "
               "OPTIONS (chunk_group_size '3')")
    db.execute("CREATE TABLE x_h (i2 int2, i8 int8, f4 float4, d date, ts timestamp)")
    for t in ("x", "x_h"):
        db.execute(f"INSERT INTO {t} SELECT g, g * 1000000000000, g / 3.0, '2024-01-01'::date + g, "
                   f"'2024-01-01'::timestamp + g * interval '1 hour' FROM generate_series(-20, 20) g")
    for where in ["i2 = 5::int8", "i2 < 100000::int8", "i8 > 3::int2", "f4 < 0.1::float8", "f4 = (1/3.0)::float4",
                  "d < '2024-01-05'::timestamp", "d > '2023-12-31 23:00+05'::timestamptz",
                  "ts < '2024-01-01 05:00+02'::timestamptz", "ts >= '2024-01-01'::date", "i8 = 5.5"]:
        assert_same_rows(db, "x", "x_h", f"WHERE {where}")


def test_damaged_files_give_clear_errors(db):
    db.execute("CREATE FOREIGN TABLE t (a int, b text) SERVER orochi")
    db.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g")
    (path,) = catalog_files(db)
    data = bytearray(open(path, "rb").read())
    data[16] ^= 0xFF  # the first byte of the first column chunk
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(psycopg.errors.DataCorrupted) as exc:
        db.execute("SELECT sum(a) FROM t")
    assert db.execute("SELECT count(b) FROM t").fetchone()[0] == 1000  # other columns still readable
    assert path in str(exc.value)
    os.unlink(path)
    with pytest.raises(psycopg.errors.UndefinedFile) as exc:
        db.execute("SELECT * FROM t")
    assert f'stripe file "{path}" of table "t" is missing' in str(exc.value)
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1000  # the catalog alone answers
