"""The join engine's inputs read ahead (DuckDB's own join order and build
sides, every row count known) or streamed past the joins' work_mem (the
plan's order kept): the same answers as the heap either way, semi and anti
joins with NULL keys when DuckDB builds on the smaller outer side (a right
semi or anti join), an input read in part and then streamed, a cancel while
the inputs are read."""

from __future__ import annotations

import pyarrow as pa
import pytest

from oracle_pair_helpers import create_table_pairs, engine_pair
from orochi_fdw.query import engine

COLUMNS = "k bigint, g int, v text"
OPTS = "OPTIONS (stripe_row_limit '4000', chunk_group_size '1000')"

QUERIES = [
    # semi and anti joins of a small outer side against a large inner side
    # (NULL keys on both sides)
    "SELECT o.k, o.v FROM {o} o WHERE EXISTS (SELECT 1 FROM {l} l WHERE l.k = o.k AND l.g < 40)",
    "SELECT o.k, o.v FROM {o} o WHERE NOT EXISTS (SELECT 1 FROM {l} l WHERE l.k = o.k AND l.g < 40)",
    "SELECT o.k FROM {o} o WHERE o.k IN (SELECT l.k FROM {l} l WHERE l.g > 90)",
    "SELECT o.k FROM {o} o WHERE o.k NOT IN (SELECT l.k FROM {l} l WHERE l.g > 90)",
    "SELECT o.k FROM {o} o WHERE o.k NOT IN (SELECT l.k FROM {l} l WHERE l.k IS NOT NULL AND l.g > 90)",
    # no row of the inner side matches; an inner side of NULL keys only
    "SELECT o.k FROM {o} o WHERE EXISTS (SELECT 1 FROM {l} l WHERE l.k = o.k AND l.g > 1000)",
    "SELECT o.k FROM {o} o WHERE NOT EXISTS (SELECT 1 FROM {l} l WHERE l.k = o.k AND l.g > 1000)",
    "SELECT o.k FROM {o} o WHERE EXISTS (SELECT 1 FROM {l} l WHERE l.k = o.k AND l.k IS NULL)",
    "SELECT o.k FROM {o} o WHERE NOT EXISTS (SELECT 1 FROM {l} l WHERE l.k = o.k AND l.k IS NULL)",
    # inner and outer joins of three tables, grouped
    "SELECT o.v, count(*), sum(l.g) FROM {l} l JOIN {o} o ON l.k = o.k JOIN {s} s ON s.g = o.g "
    "WHERE s.v <> 's2' GROUP BY o.v",
    "SELECT o.k, count(l.k) FROM {o} o LEFT JOIN {l} l ON l.k = o.k AND l.g < 10 GROUP BY o.k",
]


@pytest.fixture(scope="module")
def conns(pg_cluster, module_database):
    with pg_cluster.connect(module_database, autocommit=True) as conn:
        create_table_pairs(conn, ("l",), COLUMNS, OPTS, lambda _seed, t: [
            f"INSERT INTO {t} SELECT CASE WHEN i % 97 = 0 THEN NULL ELSE i % 500 END, i % 100, 'l' || (i % 7) "
            "FROM generate_series(1, 30000) i"])
        create_table_pairs(conn, ("o", "s"), COLUMNS, OPTS, lambda seed, t: [
            f"INSERT INTO {t} SELECT CASE WHEN i % 13 = 0 THEN NULL ELSE i * {seed + 3} END, i % 5, "
            f"'{t[0]}' || (i % 3) FROM generate_series(1, 200) i"])
        conn.execute("ANALYZE")
    with engine_pair(pg_cluster, module_database) as pair:
        yield pair


def _analyze(conn, q: str) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + q).fetchall())


@pytest.mark.parametrize("work_mem", ["64MB", "64kB"])
def test_read_ahead_or_streamed_matches_heap(conns, work_mem):
    """64MB: every input read ahead, DuckDB's join order; 64kB (and a
    hash_mem_multiplier of 1: 64 kB per join): the 30,000-row table is
    streamed (read in part first, the plan's order) unless its scan keeps
    few enough of its rows."""
    oro, heap = conns
    oro.execute(f"SET work_mem = '{work_mem}'")
    oro.execute("SET hash_mem_multiplier = 1")
    try:
        engine_runs = streamed = 0
        for template in QUERIES:
            q = template.format(o="o", l="l", s="s")
            plan = _analyze(oro, q)
            if "Orochi Join (DuckDB)" in plan:
                engine_runs += 1
                if "Engine Join Order: the plan's (streamed past work_mem: t" in plan:
                    assert work_mem == "64kB" and (" l)" in plan or " l, " in plan), plan
                    streamed += 1
                else:
                    assert "Engine Join Order: DuckDB's (every input read ahead)" in plan, plan
            got = sorted(oro.execute(q).fetchall(), key=repr)
            want = sorted(heap.execute(template.format(o="o_h", l="l_h", s="s_h")).fetchall(), key=repr)
            assert got == want, (q, plan)
        assert engine_runs >= 8
        assert streamed >= (3 if work_mem == "64kB" else 0), streamed
    finally:
        oro.execute("RESET work_mem")
        oro.execute("RESET hash_mem_multiplier")


def _reader(batches: list, schema, fail_after: int | None = None):
    def gen():
        for i, b in enumerate(batches):
            if fail_after is not None and i == fail_after:
                raise KeyboardInterrupt()
            yield b
    return pa.RecordBatchReader.from_batches(schema, gen())


def test_read_inputs_budget_order_and_rest_streamed():
    """The smallest input first; the one passing the budget hands over what
    was read of it, then the rest of its stream, and the inputs after it
    stay streams."""
    schema = pa.schema([("x", pa.int64())])
    batch = [pa.record_batch([pa.array(range(i * 100, i * 100 + 100), pa.int64())], schema=schema)
             for i in range(10)]
    tables = {1: _reader(batch[:8], schema), 2: _reader(batch[8:9], schema), 3: _reader(batch[9:], schema)}
    # 800 bytes a batch: inputs 2 and 3 fit, input 1 passes at its third batch
    streamed = engine._read_inputs(tables, 3 * 800, {1: 800, 2: 100, 3: 100})
    assert streamed == [1]
    assert isinstance(tables[2], pa.Table) and isinstance(tables[3], pa.Table)
    assert isinstance(tables[1], pa.RecordBatchReader)
    assert tables[1].read_all().column("x").to_pylist() == list(range(800))
    tables = {1: _reader(batch[:2], schema), 2: _reader(batch[2:4], schema)}
    assert engine._read_inputs(tables, 1 << 20, {}) == []
    assert [tables[k].num_rows for k in (1, 2)] == [200, 200]
    # nothing fits: every input a stream
    tables = {1: _reader(batch[:2], schema), 2: _reader(batch[2:4], schema)}
    assert sorted(engine._read_inputs(tables, 0, {1: 1, 2: 2})) == [1, 2]
    assert tables[2].read_all().num_rows == 200 and tables[1].read_all().num_rows == 200


def test_read_inputs_cancel_propagates():
    """A cancel reaching the scan while the inputs are read ahead ends the
    run with the interrupt itself (PostgreSQL's error follows from it)."""
    schema = pa.schema([("x", pa.int64())])
    batch = pa.record_batch([pa.array([1, 2], pa.int64())], schema=schema)
    tables = {1: _reader([batch, batch, batch], schema, fail_after=1)}
    with pytest.raises(KeyboardInterrupt):
        engine._read_inputs(tables, 1 << 20, {})
