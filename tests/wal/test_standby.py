"""A streaming standby carries columnar data: random writes on the primary
(COPY, INSERT into the delta store, UPDATE, DELETE, compaction, vacuum,
compress_chunk, drop_chunks, TRUNCATE, orphan collection, vector index
files), then, once the standby has replayed the primary's WAL position,
every query answers the same on both and as the heap twins do, and the
standby's columnar folder holds exactly the primary's files, byte for byte."""

from __future__ import annotations

import datetime

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orochi_fdw.testing import replica
from wal_helpers import answers, catalog_files, database_folder, files_of, table_queries

COLUMNS = "id int, k int, v text, ts timestamptz NOT NULL"
TS = "timestamptz '2024-01-01 00:00+00' + {x} * interval '37 minutes'"
TABLES = ("t", "m")

WHERES = ["id = {a}", "id BETWEEN {a} AND {a} + 40", "k = {a} % 7", "v IS NULL", "id % 5 = {a} % 5"]
SETS = ["k = k + 1", "v = 'u' || id", "v = NULL", "id = id + 1000", "ts = ts + interval '1 day'"]

OPS = st.one_of(
    st.tuples(st.just("copy"), st.sampled_from(TABLES), st.integers(0, 400), st.integers(30, 400)),
    st.tuples(st.just("insert"), st.sampled_from(TABLES), st.integers(0, 400), st.integers(1, 4)),
    st.tuples(st.just("update"), st.sampled_from(TABLES), st.integers(0, 400), st.sampled_from(range(len(WHERES))),
              st.sampled_from(range(len(SETS)))),
    st.tuples(st.just("delete"), st.sampled_from(TABLES), st.integers(0, 400), st.sampled_from(range(len(WHERES)))),
    st.tuples(st.just("compact"), st.sampled_from(TABLES)),
    st.tuples(st.just("vacuum"), st.sampled_from(TABLES)),
    st.tuples(st.just("compress_chunk"), st.integers(0, 6)),
    st.tuples(st.just("drop_chunks"), st.integers(1, 6)),
    st.tuples(st.just("truncate"), st.sampled_from(TABLES)),
    st.tuples(st.just("orphans"),),
)


def _both(conn, table: str, sql: str) -> None:
    conn.execute(sql.format(t=table))
    conn.execute(sql.format(t=f"{table}_heap"))


def _copy(conn, table: str, first: int, n: int) -> None:
    """COPY FROM STDIN of n rows into the orochi table and its heap twin."""
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    rows = [(i, i % 7, None if i % 9 == 0 else f"c{i}", start + i * datetime.timedelta(minutes=37))
            for i in range(first, first + n)]
    for target in (table, f"{table}_heap"):
        with conn.cursor().copy(f"COPY {target} (id, k, v, ts) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def apply(conn, op: tuple) -> None:
    kind = op[0]
    if kind == "copy":
        _, table, a, n = op
        _copy(conn, table, a, n)
    elif kind == "insert":
        _, table, a, n = op
        _both(conn, table, f"INSERT INTO {{t}} SELECT g, g % 7, 'i' || g, {TS.format(x='g')}"
                           f" FROM generate_series({a}, {a + n - 1}) g")
    elif kind == "update":
        _, table, a, w, s = op
        _both(conn, table, f"UPDATE {{t}} SET {SETS[s]} WHERE {WHERES[w].format(a=a)}")
    elif kind == "delete":
        _, table, a, w = op
        _both(conn, table, f"DELETE FROM {{t}} WHERE {WHERES[w].format(a=a)}")
    elif kind == "compact":
        conn.execute("SELECT * FROM orochi.compact(%s)", (op[1],))
    elif kind == "vacuum":
        conn.execute("SELECT * FROM orochi.vacuum(%s, 0.1)", (op[1],))
    elif kind == "compress_chunk":
        row = conn.execute("SELECT chunk_name FROM orochi.chunks WHERE hypertable_name = 'm'::regclass"
                           " ORDER BY range_start LIMIT 1 OFFSET %s", (op[1],)).fetchone()
        if row is not None:
            conn.execute("SELECT orochi.compress_chunk(%s)", (row[0],))
    elif kind == "drop_chunks":
        boundary = f"timestamptz '2024-01-01 00:00+00' + interval '{op[1]} days'"
        conn.execute(f"SELECT orochi.drop_chunks('m', older_than => {boundary})")
        conn.execute(f"DELETE FROM m_heap WHERE ts < {boundary}")
    elif kind == "truncate":
        _both(conn, op[1], "TRUNCATE {t}")
    elif kind == "orphans":
        conn.execute("SELECT * FROM orochi.vacuum()")
    else:  # pragma: no cover
        raise AssertionError(kind)


def _queries() -> list[str]:
    out = []
    for table in TABLES:
        out += table_queries(table)
    out.append("SELECT chunk_name, range_start, range_end, compression_status, rows FROM orochi.chunks"
               " ORDER BY range_start")
    out.append("SELECT stripe_id, row_count, deleted_count, chunk_id FROM orochi.columnar_stripes ORDER BY 1")
    return out


def _heap_queries() -> list[str]:
    out = []
    for table in TABLES:
        out += table_queries(f"{table}_heap")
    return out


def check_standby(primary, standby, dbname: str) -> None:
    replica.wait_for_catchup(primary, standby)
    queries = _queries()
    on_primary = answers(primary, dbname, queries)
    assert answers(standby, dbname, queries) == on_primary, "the standby answers as the primary"
    n = len(TABLES) * len(table_queries("x"))
    assert on_primary[:n] == answers(primary, dbname, _heap_queries()), "the orochi tables answer as the heap"
    primary_files = files_of(primary, dbname)
    assert files_of(standby, dbname, database_folder(standby, dbname)) == primary_files, \
        "the standby holds the primary's files, byte for byte"
    with standby.connect(dbname, autocommit=True) as conn:
        assert catalog_files(conn) <= set(primary_files), "every file the catalog names exists"


def _create(conn) -> None:
    for table in TABLES:
        conn.execute(f"DROP FOREIGN TABLE IF EXISTS {table}")
        conn.execute(f"DROP TABLE IF EXISTS {table}_heap")
        conn.execute(f"CREATE FOREIGN TABLE {table} ({COLUMNS}) SERVER orochi OPTIONS"
                     " (delta_row_limit '20', stripe_row_limit '150', chunk_group_size '40')")
        conn.execute(f"CREATE TABLE {table}_heap ({COLUMNS})")
    conn.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(OPS, min_size=3, max_size=10))
def test_random_writes_reach_the_standby(pair, pair_db, ops):
    primary, standby = pair
    with primary.connect(pair_db, autocommit=True) as conn:
        _create(conn)
        apply(conn, ("copy", "t", 0, 300))
        apply(conn, ("copy", "m", 0, 300))
        for op in ops:
            apply(conn, op)
    check_standby(primary, standby, pair_db)


def test_every_kind_of_write_reaches_the_standby(pair, pair_db):
    """Each kind of write at least once, in one deterministic sequence."""
    primary, standby = pair
    ops = [("copy", "t", 0, 400), ("copy", "m", 0, 400), ("insert", "t", 500, 3), ("insert", "m", 500, 3),
           ("update", "t", 10, 1, 1), ("delete", "t", 50, 1), ("update", "m", 3, 2, 4), ("delete", "m", 0, 4),
           ("compact", "t"), ("compact", "m"), ("vacuum", "t"), ("vacuum", "m"), ("compress_chunk", 1),
           ("compress_chunk", 3), ("drop_chunks", 2), ("orphans",), ("truncate", "t"), ("copy", "t", 0, 200)]
    with primary.connect(pair_db, autocommit=True) as conn:
        _create(conn)
        for op in ops:
            apply(conn, op)
        # a transaction that aborts after writing stripes: its files go on both
        with pytest.raises(psycopg.errors.RaiseException):
            with conn.transaction():
                apply(conn, ("copy", "t", 1000, 300))
                conn.execute("DO $$ BEGIN RAISE EXCEPTION 'undo'; END $$")
    check_standby(primary, standby, pair_db)
    with standby.connect(pair_db, autocommit=True) as conn:
        kinds = {r[0] for r in conn.execute("SELECT compression_status FROM orochi.chunks").fetchall()}
        assert "Compressed" in kinds


def test_vector_index_files_reach_the_standby(pair, pair_db):
    primary, standby = pair
    with primary.connect(pair_db, autocommit=True) as conn:
        conn.execute("CREATE FOREIGN TABLE vt (id int, e orochi.vector(8)) SERVER orochi"
                     " OPTIONS (delta_row_limit '0', stripe_row_limit '2000')")
        conn.execute("INSERT INTO vt SELECT g, ('[' || array_to_string(ARRAY(SELECT ((g * 7 + i * 13) % 97)::float4"
                     " FROM generate_series(1, 8) i), ',') || ']')::orochi.vector FROM generate_series(1, 4000) g")
        conn.execute("SELECT orochi.create_vector_index('vt', 'e', index_type => 'hnsw')")
        conn.execute("INSERT INTO vt SELECT g, ('[' || array_to_string(ARRAY(SELECT ((g * 3 + i) % 89)::float4"
                     " FROM generate_series(1, 8) i), ',') || ']')::orochi.vector FROM generate_series(5000, 6999) g")
        query = "SELECT id FROM vt ORDER BY e OPERATOR(orochi.<->) '[1,2,3,4,5,6,7,8]' LIMIT 5"
        expected = conn.execute(query).fetchall()
        n_files = conn.execute("SELECT count(DISTINCT file_path), count(*) FROM orochi.columnar_vector_index_files"
                               ).fetchone()
    assert n_files == (2, 3), "one file over the two first stripes (a segment), one for the third"
    replica.wait_for_catchup(primary, standby)
    with standby.connect(pair_db, autocommit=True) as conn:
        assert conn.execute(query).fetchall() == expected
    assert files_of(standby, pair_db) == files_of(primary, pair_db)
    assert sum(name.endswith(".vindex") for name in files_of(standby, pair_db)) == 2
