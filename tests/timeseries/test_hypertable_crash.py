"""kill -9 of the postmaster during a COPY into a hypertable that writes
stripes into many chunks, paused at a fault point after its 20th stripe
file: after restart the table holds exactly what was
committed, the COPY's chunk rows and stripes are gone, its files are orphans
orochi.vacuum() removes, and the table takes writes again."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "columnar"))
from columnar_helpers import assert_same_rows, catalog_files, files_on_disk  # noqa: E402
from orochi_fdw.testing.faults import run_until  # noqa: E402


@pytest.mark.allow_backend_crash
def test_kill9_during_chunked_copy(make_cluster):
    pg = make_cluster("crashht")
    pg.create_database("c")
    conn = pg.connect("c", autocommit=True)
    conn.execute("CREATE FOREIGN TABLE t (ts timestamptz, v int) SERVER orochi"
                 " OPTIONS (delta_row_limit '100', stripe_row_limit '5000')")
    conn.execute("SELECT orochi.create_hypertable('t', 'ts', chunk_time_interval => interval '1 hour')")
    conn.execute("CREATE TABLE h (ts timestamptz, v int)")
    for name in ("t", "h"):
        conn.execute(f"INSERT INTO {name} SELECT timestamptz '2024-01-01 00:00+00' + i * interval '1 minute', i"
                     f" FROM generate_series(0, 9999) i")
        conn.execute(f"INSERT INTO {name} VALUES ('2024-01-01 00:30+00', -1)")
    chunks_before = conn.execute("SELECT count(*) FROM orochi.hypertable_chunks").fetchone()[0]
    committed_files = catalog_files(conn)

    def copy_forever(c2) -> None:
        with c2.cursor() as cur, cur.copy("COPY t (ts, v) FROM STDIN") as copy:
            i = 0
            while True:  # until the server goes away: the COPY waits at its 20th stripe
                copy.write(f"2024-02-{1 + i % 20:02d} {i % 24:02d}:{i % 60:02d}:00+00\t{i}\n")
                i += 1

    conn.close()
    run_until(pg.dsn("c"), "write_stripe:after_file@20", body=copy_forever,
              kill=lambda: pg.kill9(kill_children=True))
    pg.start()
    with pg.connect("c", autocommit=True) as conn:
        assert_same_rows(conn, "t", "h")
        assert conn.execute("SELECT count(*) FROM orochi.hypertable_chunks").fetchone()[0] == chunks_before
        assert conn.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE chunk_id NOT IN"
                            " (SELECT chunk_id FROM orochi.hypertable_chunks)").fetchone() == (0,)
        assert catalog_files(conn) == committed_files
        assert len(files_on_disk(conn) - committed_files) == 20  # the COPY's stripe files
        assert conn.execute("SELECT removed_files FROM orochi.vacuum()").fetchone() == (20,)
        assert files_on_disk(conn) == catalog_files(conn)
        for name in ("t", "h"):
            conn.execute(f"INSERT INTO {name} SELECT timestamptz '2024-03-01 00:00+00' + i * interval '7 minutes', i"
                         f" FROM generate_series(0, 2999) i")
        assert_same_rows(conn, "t", "h")
        assert_same_rows(conn, "t", "h", "WHERE ts >= '2024-03-01 05:00+00' AND ts < '2024-03-01 09:00+00'")
