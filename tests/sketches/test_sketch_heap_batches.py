"""Sketch aggregates over heap tables, whose transition function buffers the
values of a group in C and hands them to Python in batches
(pgext/sketch_agg.c): the sketches must be byte for byte those of the
per-row path (which the moving-aggregate form, used as a window function
over the whole partition, still takes) and of the aggregate pushed down into
a columnar table over the same rows."""

from __future__ import annotations

import psycopg
import pytest

# more rows than one batch (65536 values), so that batches are handed over
# during the scan and the final function takes the rest
ROWS = 70_000

COLUMNS = {
    "i2": "int2", "i4": "int4", "i8": "int8", "b": "bool", "f4": "float4", "f8": "float8",
    "d": "date", "ts": "timestamp", "tz": "timestamptz", "t": "time", "s": "text", "n": "numeric",
}

FILL = """
INSERT INTO {table}
SELECT CASE WHEN i % 11 = 0 THEN NULL ELSE (i % 30000 - 15000)::int2 END,
       (i * 7919) % 1000003 - 500000,
       CASE WHEN i % 13 = 0 THEN NULL ELSE (i::int8 * 1000000007) % 99999999977 END,
       i % 3 = 0,
       CASE i % 5000 WHEN 0 THEN '-0'::float4 WHEN 1 THEN 'NaN' WHEN 2 THEN 'Infinity' ELSE (i % 20011) / 7.0 END,
       CASE i % 4000 WHEN 0 THEN '-0'::float8 WHEN 1 THEN 'NaN' WHEN 2 THEN '-Infinity' ELSE (i % 70001) / 3.0 END,
       CASE i % 9000 WHEN 5 THEN 'infinity'::date WHEN 6 THEN '-infinity' ELSE date '2001-01-01' + i % 5000 END,
       CASE i % 9000 WHEN 7 THEN 'infinity'::timestamp ELSE timestamp '2020-01-01' + (i % 60000) * interval '1 min' END,
       timestamptz '2020-01-01 00:00+00' + (i % 90000) * interval '1 s',
       CASE i % 9000 WHEN 8 THEN '24:00:00'::time ELSE time '00:00' + (i % 86000) * interval '1 s' END,
       'k' || (i % 40000),
       (i % 30000) / 100.0
FROM generate_series(1, {rows}) i
"""


def _fill(db, columnar: bool):
    cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
    db.execute(f"CREATE TABLE h ({cols})")
    db.execute(FILL.format(table="h", rows=ROWS))
    if columnar:
        db.execute(f"CREATE FOREIGN TABLE m ({cols}) SERVER orochi")
        db.execute("INSERT INTO m SELECT * FROM h")
    return db


def _one(db, sql):
    return db.execute(sql).fetchone()[0]


def test_batched_sketches_equal_per_row_path(db):
    """Every packed type (and text and numeric, which stay per row), with
    NULLs, -0, NaN, infinities and 24:00:00 among the values: the HLL and
    t-digest bytes and the percentiles the per-row path gives."""
    _fill(db, columnar=False)
    for column in COLUMNS:
        batched = _one(db, f"SELECT orochi.hll_agg({column}) FROM h")
        per_row = _one(db, f"SELECT orochi.hll_agg({column}) OVER () FROM h LIMIT 1")
        assert bytes(batched) == bytes(per_row), column
    assert _one(db, "SELECT orochi.approx_count_distinct(i8, 10) FROM h") == \
        _one(db, "SELECT orochi.approx_count_distinct(i8, 10) OVER () FROM h LIMIT 1")
    assert bytes(_one(db, "SELECT orochi.tdigest_agg(f8, 500) FROM h")) == \
        bytes(_one(db, "SELECT orochi.tdigest_agg(f8, 500) OVER () FROM h LIMIT 1"))
    agg = "orochi.approx_percentile(i4, ARRAY[0.01, 0.5, 0.99], 300)"
    assert _one(db, f"SELECT {agg} FROM h") == _one(db, f"SELECT {agg} OVER () FROM h LIMIT 1")


@pytest.mark.slow
def test_batched_sketches_equal_columnar_and_per_row_path(db):
    """The same rows in a columnar table (sketches pushed down), and the
    t-digest forms of every numeric column."""
    _fill(db, columnar=True)
    for column in COLUMNS:
        # the columnar pushdown of a date column with infinite dates hashes
        # differently from the heap path (before batching too): compared on
        # the finite dates only
        where = " WHERE isfinite(d)" if column == "d" else ""
        assert bytes(_one(db, f"SELECT orochi.hll_agg({column}) FROM h{where}")) == \
            bytes(_one(db, f"SELECT orochi.hll_agg({column}) FROM m{where}")), column
    for column in ("f8", "i4", "f4", "i8", "i2"):
        for agg in (f"orochi.tdigest_agg({column})", f"orochi.tdigest_agg({column}, 500)"):
            assert bytes(_one(db, f"SELECT {agg} FROM h")) == \
                bytes(_one(db, f"SELECT {agg} OVER () FROM h LIMIT 1")), agg
        for agg in (f"orochi.approx_percentile({column}, 0.9)",
                    f"orochi.approx_percentile({column}, ARRAY[0.01, 0.5, 0.99], 300)"):
            assert _one(db, f"SELECT {agg} FROM h") == _one(db, f"SELECT {agg} OVER () FROM h LIMIT 1"), agg
        assert _one(db, f"SELECT orochi.approx_percentile({column}, 0.5) FROM h") == \
            _one(db, f"SELECT orochi.approx_percentile({column}, 0.5) FROM m")


def test_groups_hashed_and_sorted(db):
    """Many groups (each its own buffered state, hashed or sorted
    aggregation) give the per-row path's sketches, and no state is left
    open in the backend afterwards."""
    db.execute("CREATE TABLE h (i4 int4, i8 int8, f8 float8)")
    db.execute("INSERT INTO h SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 7919) % 50000 END, "
               "(i % 10007) / 3.0 FROM generate_series(1, 80000) i")
    query = ("SELECT i4 % 97 AS g, orochi.hll_agg(i8), orochi.tdigest_agg(f8), "
             "orochi.approx_percentile(f8, 0.25) FROM h GROUP BY 1 ORDER BY 1")
    window = ("SELECT DISTINCT ON (g) g, orochi.hll_agg(i8) OVER w, orochi.tdigest_agg(f8) OVER w, "
              "orochi.approx_percentile(f8, 0.25) OVER w FROM (SELECT i4 % 97 AS g, i8, f8 FROM h) s "
              "WINDOW w AS (PARTITION BY g) ORDER BY g")
    expected = [tuple(bytes(v) if isinstance(v, (bytes, memoryview)) else v for v in row)
                for row in db.execute(window).fetchall()]
    for hashed in ("on", "off"):
        db.execute(f"SET enable_hashagg = {hashed}")
        got = [tuple(bytes(v) if isinstance(v, (bytes, memoryview)) else v for v in row)
               for row in db.execute(query).fetchall()]
        assert got == expected
    db.execute("RESET enable_hashagg")
    assert _one(db, "SELECT orochi.sketch_open_states()") == 0


def test_nulls_ignored_and_empty_groups(db):
    db.execute("CREATE TABLE n (g int, v int8, f float8)")
    db.execute("INSERT INTO n SELECT i % 2, CASE WHEN i % 2 = 0 THEN NULL ELSE i END, "
               "CASE WHEN i % 2 = 0 THEN NULL ELSE i END FROM generate_series(1, 100000) i")
    rows = db.execute("SELECT g, orochi.approx_count_distinct(v), orochi.approx_percentile(f, 1), "
                      "orochi.hll_agg(v) IS NULL FROM n GROUP BY g ORDER BY g").fetchall()
    assert rows[0] == (0, 0, None, True)
    assert rows[1][0] == 1 and rows[1][2] == 99999.0 and rows[1][3] is False
    assert rows[1][1] == _one(db, "SELECT orochi.approx_count_distinct(v) OVER () FROM n LIMIT 1")


def test_bad_parameter_of_a_later_batch_state_still_reported(db):
    """The first row's parameters are checked (by Python) before anything
    is buffered; a failed query leaves no state behind."""
    db.execute("CREATE TABLE p (v float8)")
    db.execute("INSERT INTO p SELECT i FROM generate_series(1, 100000) i")
    import psycopg
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT orochi.approx_percentile(v, 3) FROM p")
    assert e.value.sqlstate == "22023" and "percentile" in str(e.value)
    assert _one(db, "SELECT orochi.sketch_open_states()") == 0


def test_a_forged_buffered_state_is_refused(db):
    """The state is internal: a user cannot give an aggregate of their own
    on the buffered transition function an initial condition, and one that
    pairs the sketch final function with another transition function
    (array_agg's, whose state is no sketch state) gets a clean error, not a
    read of foreign memory as a sketch."""
    header = ("4f534201" "01000000" "00000000" "00000100" "14000000") + "00" * 16  # capacity 65536, no room
    with pytest.raises(psycopg.errors.UndefinedFunction):
        db.execute("CREATE AGGREGATE forged_hll(int8) (SFUNC = orochi.sketch_hll_trans, STYPE = bytea, "
                   f"INITCOND = '\\x{header}')")
    db.rollback()
    with pytest.raises(psycopg.Error):
        db.execute("CREATE AGGREGATE forged_hll(int8) (SFUNC = orochi.sketch_hll_trans, STYPE = internal, "
                   f"INITCOND = '\\x{header}')")
    db.rollback()
    db.execute("CREATE AGGREGATE forged_count(int8) (SFUNC = array_agg_transfn, STYPE = internal, "
               "FINALFUNC = orochi.sketch_hll_count_final)")
    with pytest.raises(psycopg.errors.DataCorrupted, match="invalid sketch aggregate state"):
        db.execute("SELECT forged_count(g) FROM generate_series(1, 10) g")
    db.rollback()
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_kept_values_are_in_the_aggregate_memory_hash_aggregation_counts(db):
    """A t-digest state keeps its values itself past the first batch, in
    the aggregate's memory context: hash aggregation counts them against
    its memory limit (under 2 MB here) and spills the groups that come after
    a group of 400,000 values (3.2 MB; a batch of 65,536 is 512 kB, which
    spills nothing); the digests are those of the sorted plan and of the
    per-row path."""
    db.execute("CREATE TABLE kept (g int, v float8)")
    db.execute("INSERT INTO kept SELECT 0, (i::int8 * 7919 % 100003) / 7.0 FROM generate_series(1, 400000) i")
    db.execute("INSERT INTO kept SELECT 1 + i % 50, i FROM generate_series(1, 500) i")
    sql = "SELECT g, orochi.tdigest_agg(v), orochi.approx_percentile(v, 0.3) FROM kept GROUP BY g ORDER BY g"
    db.execute("SET max_parallel_workers_per_gather = 0; SET work_mem = '1MB'; "
               "SET hash_mem_multiplier = 2; SET enable_sort = off")
    try:
        plan = "\n".join(r[0] for r in db.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}").fetchall())
        hashed = db.execute(sql).fetchall()
        db.execute("RESET enable_sort; SET enable_hashagg = off")
        grouped = db.execute(sql).fetchall()
    finally:
        db.execute("RESET ALL")
    assert "HashAggregate" in plan and "Disk Usage" in plan, plan
    assert hashed == grouped and len(hashed) == 51
    per_row = db.execute("SELECT orochi.tdigest_agg(v) OVER () FROM kept WHERE g = 0 LIMIT 1").fetchone()[0]
    assert hashed[0][1] == per_row
    assert _one(db, "SELECT orochi.sketch_open_states()") == 0
