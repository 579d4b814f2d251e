"""Sketch aggregates on heap tables in parallel (combine, serialize and
deserialize functions): Postgres plans a Partial Aggregate in its workers
and a Finalize Aggregate in the leader, and the results and sketch bytes
are those of the serial plan (an HLL merge is exact; a t-digest state ships
its values, so the digest is built from the same sorted values)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orochi_fdw.kernels import sketches as K
from orochi_fdw.sketches import reference as R
from orochi_fdw.sketches import sqlapi
from orochi_fdw.sketches.hll import Hll
from orochi_fdw.sketches.tdigest import TDigest

ROWS = 80_000   # more than one buffered batch (65536 values) over the workers

PARALLEL = ("SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; "
            "SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; "
            "SET parallel_leader_participation = off")
SERIAL = "SET max_parallel_workers_per_gather = 0"

AGGREGATES = [
    "orochi.approx_count_distinct(i8)",
    "orochi.approx_count_distinct(i8, 10)",
    "orochi.approx_count_distinct(s)",
    "orochi.approx_count_distinct(n)",
    "orochi.approx_count_distinct(f8)",
    "orochi.hll_agg(i4)",
    "orochi.hll_agg(s, 12)",
    "orochi.hll_agg(d)",
    "orochi.tdigest_agg(f8)",
    "orochi.tdigest_agg(f8, 50)",
    "orochi.tdigest_agg(i4 % 997)",  # values repeating: shipped as distinct values and counts
    "orochi.approx_percentile(f8, 0.5)",
    "orochi.approx_percentile(f8, 0.99, 200)",
    "orochi.approx_percentile(f8, ARRAY[0, 0.25, 0.75, 1])",
    "orochi.approx_percentile(f8, ARRAY[0.1, NULL], 30)",
]


@pytest.fixture(scope="module")
def pdb(pg_cluster):
    """One database for the module, with a heap table of ROWS rows: NULLs,
    NaN, infinities, -0, text and numeric (the per-row path) among them."""
    name = "sketch_parallel"
    pg_cluster.ensure_running()
    pg_cluster.create_database(name, True)
    conn = pg_cluster.connect(name, autocommit=True)
    conn.execute("CREATE TABLE h (g int, i4 int4, i8 int8, f8 float8, s text, n numeric, d date)")
    conn.execute(f"""
        INSERT INTO h
        SELECT i % 3,
               (i * 7919) % 100003,
               CASE WHEN i % 13 = 0 THEN NULL ELSE (i::int8 * 1000000007) % 9999991 END,
               CASE i % 4000 WHEN 0 THEN '-0'::float8 WHEN 1 THEN 'NaN' WHEN 2 THEN '-Infinity'
                             WHEN 3 THEN NULL ELSE (i % 70001) / 3.0 END,
               'k' || (i % 4000),
               (i % 3000) / 100.0,
               date '2001-01-01' + i % 5000
        FROM generate_series(1, {ROWS}) i""")
    conn.execute("ANALYZE h")
    yield conn
    conn.close()
    pg_cluster.drop_database(name)


def _plan(db, sql):
    plan = db.execute(f"EXPLAIN (ANALYZE, FORMAT JSON, COSTS OFF) {sql}").fetchone()[0]
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def _nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _assert_parallel(db, sql):
    """The plan has a Partial Aggregate under a Gather whose workers ran."""
    nodes = list(_nodes(_plan(db, sql)))
    partial = [n for n in nodes if n["Node Type"] == "Aggregate" and n.get("Partial Mode") == "Partial"]
    gathers = [n for n in nodes if n["Node Type"].startswith("Gather")]
    assert partial, f"no Partial Aggregate in the plan of {sql}"
    assert gathers and gathers[0]["Workers Launched"] >= 1, f"no worker launched for {sql}"


def _both(db, sql):
    db.execute(SERIAL)
    serial = db.execute(sql).fetchall()
    db.execute(PARALLEL)
    try:
        _assert_parallel(db, sql)
        parallel = db.execute(sql).fetchall()
    finally:
        db.execute("RESET ALL")
    return serial, parallel


def test_parallel_plans_equal_serial(pdb):
    """Every parallel sketch aggregate in one query, over the whole table:
    a Partial Aggregate with workers launched, and the same values and
    sketch bytes as the serial plan."""
    sql = "SELECT " + ", ".join(AGGREGATES) + " FROM h"
    serial, parallel = _both(pdb, sql)
    assert parallel == serial
    assert serial[0][0] > 0 and serial[0][5] is not None


def _digest_as_before(values, compression=100):
    """The t-digest bytes of values as they were built before the
    unit-weight compression: numpy's sort of the finite values, then the
    weighted compression kernel with every weight 1."""
    v = R.sort_finite(np.array([math.nan if x is None else x for x in values], dtype=np.float64))
    m, w = np.empty(len(v)), np.empty(len(v))
    k = K.tdigest_compress(v, np.ones(len(v)), compression, m, w)
    head = struct.pack("<4sIIdd", b"OTD\x01", compression, k, v[0], v[-1])
    return head + m[:k].tobytes() + w[:k].tobytes()


def test_digest_bytes_serial_and_parallel_as_before(pdb):
    """tdigest_agg's bytes, serial and parallel, by group and over the
    whole table (NULLs, NaN, infinities and -0 among the values), are those
    of the construction before (sort, weighted compression), byte for byte."""
    serial, parallel = [], []
    for sql in ("SELECT g, orochi.tdigest_agg(f8), orochi.tdigest_agg(f8, 37) FROM h GROUP BY g ORDER BY g",
                "SELECT NULL::int, orochi.tdigest_agg(f8), orochi.tdigest_agg(f8, 37) FROM h"):
        s, p = _both(pdb, sql)
        serial += s
        parallel += p
    assert parallel == serial and len(serial) == 4
    values = {g: [r[1] for r in pdb.execute("SELECT g, f8 FROM h").fetchall() if g is None or r[0] == g]
              for g in (0, 1, 2, None)}
    for g, d100, d37 in serial:
        assert bytes(d100) == _digest_as_before(values[g])
        assert bytes(d37) == _digest_as_before(values[g], 37)


def test_parallel_grouped_and_filtered(pdb):
    """Groups (a partial state per group in every worker) and a filter that
    leaves one group empty in some workers."""
    sql = ("SELECT g, orochi.hll_agg(i8), orochi.tdigest_agg(f8), orochi.approx_percentile(f8, 0.5) "
           "FROM h WHERE i4 % 7 <> 0 OR g = 2 GROUP BY g ORDER BY g")
    serial, parallel = _both(pdb, sql)
    assert parallel == serial and len(serial) == 3


def test_parallel_against_heap_oracle(pdb):
    """The parallel results against what Postgres computes exactly: the
    distinct count of a column with few values (exact while the sketch is
    sparse: at most 2048 values at p = 14) and the extreme percentiles (the digest keeps min and max)."""
    pdb.execute(PARALLEL)
    try:
        _assert_parallel(pdb, "SELECT orochi.approx_count_distinct(s) FROM h")
        got = pdb.execute("SELECT orochi.approx_count_distinct(left(s, 3)), "
                          "orochi.approx_count_distinct(i4 % 1500), "
                          "orochi.approx_percentile(f8, ARRAY[0, 1]) FROM h WHERE f8 <> 'NaN' "
                          "AND f8 > '-Infinity'").fetchone()
        exact = pdb.execute("SELECT count(DISTINCT left(s, 3)), count(DISTINCT i4 % 1500), "
                            "ARRAY[min(f8), max(f8)] "
                            "FROM h WHERE f8 <> 'NaN' AND f8 > '-Infinity'").fetchone()
    finally:
        pdb.execute("RESET ALL")
    assert got == exact


def test_parallel_error_and_no_state_left(pdb):
    """A bad parameter raised inside a worker reaches the client with its
    SQLSTATE; the leader keeps no sketch state afterwards."""
    pdb.execute(PARALLEL)
    try:
        with pytest.raises(psycopg.Error) as e:
            pdb.execute("SELECT orochi.approx_percentile(f8, 3) FROM h")
        assert e.value.sqlstate == "22023"
        pdb.execute("SELECT orochi.approx_count_distinct(i8), orochi.tdigest_agg(f8) FROM h").fetchone()
    finally:
        pdb.execute("RESET ALL")
    assert pdb.execute("SELECT orochi.sketch_open_states()").fetchone()[0] == 0


# ------------------------------------------------ builders, without a server


def _builder_of(values, make):
    b = make()
    for v in values:
        b.add(v)
    return b


def test_serialized_builders_merge_to_the_serial_sketch():
    """Split values over builders, serialize, deserialize and merge: the HLL
    and the t-digest (values shipped) are those of one builder."""
    rng = np.random.default_rng(7)
    values = rng.lognormal(size=30_000).tolist()
    parts = [values[:1000], values[1000:17_000], values[17_000:]]
    for make in (lambda: sqlapi._HllBuilder(11), lambda: sqlapi._TDigestBuilder(100, [0.5, None])):
        whole = _builder_of(values, make).result().to_bytes()
        merged = sqlapi._deserialize_builder(_builder_of(parts[0], make).serialize())
        for part in parts[1:]:
            merged.merge(sqlapi._deserialize_builder(_builder_of(part, make).serialize()))
        assert merged.result().to_bytes() == whole
    assert merged.quantiles == [0.5, None]


def test_batches_kept_in_c_sort_to_the_serial_sketch():
    """The batches of the C transition function (the first kept as it came,
    the later ones sorted at once straight from the buffer, with the values
    added one at a time) give the digest of all the values, serialized and
    merged too."""
    rng = np.random.default_rng(11)
    values = rng.lognormal(size=50_000)
    values[::97] = np.nan
    values[1::89] = -0.0
    values[2::101] = np.inf
    batches = [values[:64], values[64:30_000], values[30_000:]]
    whole = TDigest.from_values(values, 100).to_bytes()
    b = sqlapi._TDigestBuilder(100)
    for i, part in enumerate(batches):
        assert b.add_batch(2, memoryview(part.tobytes())) is True
        if i == 1:
            b.add(1.5)
    assert b.keeping and len(b.runs) == 2
    want = TDigest.from_values(np.append(values, 1.5), 100).to_bytes()
    assert want != whole and b.result().to_bytes() == want
    for n_parts in (1, 3):
        merged = None
        for chunk in np.array_split(values, n_parts):
            w = sqlapi._TDigestBuilder(100, [0.5, None, 0.99])
            w.add_batch(2, memoryview(chunk[:10].tobytes()))
            w.add_batch(2, memoryview(chunk[10:].tobytes()))
            plain = sqlapi._TDigestBuilder(100, [0.5, None, 0.99])
            plain.add_packed(2, chunk.tobytes())
            ser = w.serialize()
            assert isinstance(ser, memoryview)  # written around the sorted run, not copied
            assert bytes(ser) == plain.serialize()
            d = sqlapi._deserialize_builder(ser)
            merged = d if merged is None else (merged.merge(d) or merged)
        assert merged.result().to_bytes() == whole


def test_repeated_values_ship_as_distinct_values_and_counts():
    """A state whose values repeat travels as its distinct values and their
    counts (a fraction of the bytes) and merges to the serial digest; counts
    adding up to more values than a state ships are refused."""
    rng = np.random.default_rng(12)
    values = np.round(rng.lognormal(3, 1, 40_000), 1)
    whole = TDigest.from_values(values, 100).to_bytes()
    merged = None
    for chunk in np.array_split(values, 3):
        w = sqlapi._TDigestBuilder(100, 0.5)
        w.add_batch(2, memoryview(chunk[:64].tobytes()))
        w.add_batch(2, memoryview(chunk[64:].tobytes()))
        ser = bytes(w.serialize())
        assert ser[4] == sqlapi._SER_TDIGEST_RUNS and len(ser) < 4 * len(chunk)
        d = sqlapi._deserialize_builder(ser)
        assert d.quantiles == 0.5
        merged = d if merged is None else (merged.merge(d) or merged)
    assert len(merged.counted) == 3 and merged.count() == len(values)
    assert merged.result().to_bytes() == whole
    # with a run of raw values and values added one at a time beside them
    distinct = rng.lognormal(size=3000)
    mixed = None
    for part in (values[:20_000], values[20_000:]):
        w = sqlapi._TDigestBuilder(100)
        w.add_packed(2, part.tobytes())
        d = sqlapi._deserialize_builder(w.serialize())
        mixed = d if mixed is None else (mixed.merge(d) or mixed)
    raw = sqlapi._TDigestBuilder(100)
    raw.add_packed(2, distinct.tobytes())
    mixed.merge(sqlapi._deserialize_builder(raw.serialize()))
    mixed.add(7.25)
    assert len(mixed.counted) == 2 and len(mixed.runs) == 1
    assert mixed.result().to_bytes() == TDigest.from_values(
        np.concatenate([values, distinct, [7.25]]), 100).to_bytes()
    few = sqlapi._TDigestBuilder(100)
    few.add_packed(2, np.arange(2000.0).tobytes())  # all distinct: raw values
    assert bytes(few.serialize())[4] == sqlapi._SER_TDIGEST
    forged = (sqlapi._SER_MAGIC + bytes([sqlapi._SER_TDIGEST_RUNS]) + struct.pack("<i", 100) + b"\x00"
              + struct.pack("<Q", 1) + struct.pack("<d", 1.0) + struct.pack("<I", 0xFFFFFFFF)
              + struct.pack("<I", 0))
    with pytest.raises(sqlapi.CorruptSketchError):
        sqlapi._deserialize_builder(forged)
    with pytest.raises(sqlapi.CorruptSketchError):
        sqlapi._deserialize_builder(forged[:-6])
    # distinct values out of order (or not finite): sorted, not trusted
    unsorted = (sqlapi._SER_MAGIC + bytes([sqlapi._SER_TDIGEST_RUNS]) + struct.pack("<i", 100) + b"\x00"
                + struct.pack("<Q", 3) + struct.pack("<3d", 2.0, math.nan, 1.0) + struct.pack("<3I", 2, 1, 3)
                + struct.pack("<I", 0))
    assert sqlapi._deserialize_builder(unsorted).result().to_bytes() == \
        TDigest.from_values([2.0, 2.0, 1.0, 1.0, 1.0], 100).to_bytes()


def test_shipped_digests_stay_within_the_error_bound(monkeypatch):
    """States too large to ship their values ship their digest: the merged
    digest is not the serial one, but its quantiles stay within 1% of rank
    of the exact ones (compression 100)."""
    monkeypatch.setattr(sqlapi, "_SHIP_VALUES_MAX", 1000)
    rng = np.random.default_rng(11)
    values = rng.lognormal(size=60_000)
    parts = np.array_split(values, 4)
    merged = None
    for part in parts:
        b = sqlapi._deserialize_builder(_builder_of(part.tolist(), lambda: sqlapi._TDigestBuilder(100))
                                        .serialize())
        assert b.digest is not None and not b.count()
        if merged is None:
            merged = b
        else:
            merged.merge(b)
    digest = merged.result()
    serial = TDigest.from_values(values, 100)
    assert digest.to_bytes() != serial.to_bytes()
    ordered = np.sort(values)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        rank = np.searchsorted(ordered, digest.quantile(q)) / len(ordered)
        assert abs(rank - q) <= 0.01, (q, rank)
    assert digest.quantile(0) == ordered[0] and digest.quantile(1) == ordered[-1]


@pytest.mark.parametrize("data", [b"", b"OSS\x01", b"OSS\x01\x03", b"OSS\x01\x02\x00", b"XXXX\x01",
                                  b"OSS\x01\x02" + b"\x64\x00\x00\x00\x00" + b"\xff" * 8])
def test_deserialize_corrupt_states(data):
    with pytest.raises(sqlapi.CorruptSketchError):
        sqlapi._deserialize_builder(data)


def test_hll_roundtrip_is_exact_sparse_and_dense():
    """An HLL state that stays sparse in every part but not in the union
    becomes dense on merge, as the serial sketch does."""
    parts = [np.arange(i * 3000, (i + 1) * 3000, dtype=np.int64) for i in range(3)]
    whole = Hll(12).add_int64(np.concatenate(parts))
    merged = Hll(12)
    for p in parts:
        merged.merge(Hll.from_bytes(Hll(12).add_int64(p).to_bytes()))
    assert merged.to_bytes() == whole.to_bytes()
    assert not math.isnan(merged.cardinality())


@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=6),
                                 st.floats(allow_nan=True)), max_size=3000),
       cuts=st.lists(st.integers(0, 3000), max_size=4), p=st.integers(4, 16),
       compression=st.integers(10, 300))
def test_split_merge_equals_whole(values, cuts, p, compression):
    """Any split of any values over workers: the merged HLL and t-digest
    states give the bytes one builder gives (the parallel path's exactness)."""
    bounds = [0, *sorted(c % (len(values) + 1) for c in cuts), len(values)]
    parts = [values[a:b] for a, b in zip(bounds, bounds[1:])]
    floats = [float(v) for v in values if isinstance(v, float)]
    for make, data, split in (
            (lambda: sqlapi._HllBuilder(p), values, parts),
            (lambda: sqlapi._TDigestBuilder(compression), floats,
             [[float(v) for v in part if isinstance(v, float)] for part in parts])):
        whole = _builder_of(data, make).result().to_bytes()
        merged = sqlapi._deserialize_builder(_builder_of(split[0], make).serialize())
        for part in split[1:]:
            merged.merge(sqlapi._deserialize_builder(_builder_of(part, make).serialize()))
        assert merged.result().to_bytes() == whole
