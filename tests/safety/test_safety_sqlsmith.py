"""Random SQL (Debian's sqlsmith) against a database holding columnar tables
(stripes, delta rows, delete bitmaps), a hypertable and a heap table: no
query may crash a server process.

sqlsmith runs as a role that can read everything and write the test tables,
not as a superuser (it calls any function it finds, pg_terminate_backend and
pg_reload_conf included). Its queries fail often (two in three: wrong types,
refused privileges); what matters is the server log: the crash watcher of
the root conftest fails the test on any process killed by a signal, and the
test checks the postmaster is the same one. Seeds are fixed, so a crash
found here is reproducible: it becomes a regression test of its own.

The query count per seed is OROCHI_SQLSMITH_QUERIES (default 1,500; CI runs
two seeds, 3,000 queries, about a minute).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

QUERIES = int(os.environ.get("OROCHI_SQLSMITH_QUERIES", "1500"))
SEEDS = [int(s) for s in os.environ.get("OROCHI_SQLSMITH_SEEDS", "11,12").split(",")]

SETUP = [
    """CREATE FOREIGN TABLE ct (id int8, g int4, v float8, t text, ts timestamptz, b bool,
                                n numeric, d date)
       SERVER orochi OPTIONS (delta_row_limit '100', chunk_group_size '1000')""",
    # stripes
    """INSERT INTO ct SELECT i, i % 7, i * 0.25, 't' || (i % 13),
              timestamptz '2024-01-01' + i * interval '1 minute', i % 3 = 0, i / 7.0,
              date '2024-01-01' + (i % 40)
       FROM generate_series(1, 5000) i""",
    # delta rows, delete bitmaps, an update
    "INSERT INTO ct SELECT i, i % 7, NULL, NULL, NULL, NULL, NULL, NULL FROM generate_series(5001, 5050) i",
    "DELETE FROM ct WHERE id % 10 = 3",
    "UPDATE ct SET v = -v WHERE id % 100 = 7",
    "CREATE FOREIGN TABLE metrics (ts timestamptz NOT NULL, device int, value float8, label text) SERVER orochi",
    "SELECT orochi.create_hypertable('metrics', 'ts', interval '1 day')",
    """INSERT INTO metrics SELECT timestamptz '2024-03-01' + i * interval '10 minutes', i % 5, sqrt(i),
              'l' || (i % 4)
       FROM generate_series(1, 3000) i""",
    "INSERT INTO metrics VALUES ('2024-03-02 12:00', 1, 1.5, 'late')",
    "DELETE FROM metrics WHERE device = 3 AND value < 20",
    "CREATE TABLE heap_t AS SELECT i AS id, 't' || (i % 13) AS t, i * 1.5 AS v FROM generate_series(1, 2000) i",
    "CREATE ROLE fuzzer LOGIN",
    "GRANT pg_read_all_data TO fuzzer",
    "GRANT INSERT, UPDATE, DELETE ON ct, metrics, heap_t TO fuzzer",
    "ALTER ROLE fuzzer SET statement_timeout = '2s'",
]


@pytest.fixture
def fuzz_cluster(make_cluster):
    assert shutil.which("sqlsmith"), "sqlsmith is not installed (make deps / ci/install-system-deps.sh)"
    pg = make_cluster("sqlsmith")
    pg.create_database("fz")
    with pg.connect("fz", autocommit=True) as conn:
        for stmt in SETUP:
            conn.execute(stmt)
    return pg


@pytest.mark.parametrize("seed", SEEDS)
def test_random_queries_crash_nothing(fuzz_cluster, seed):
    pg = fuzz_cluster
    postmaster = pg.postmaster_pid()
    proc = subprocess.run(
        ["sqlsmith", f"--target=host={pg.host} port={pg.port} dbname=fz user=fuzzer",
         f"--seed={seed}", f"--max-queries={QUERIES}", "--exclude-catalog"],
        capture_output=True, text=True, timeout=600,
    )
    crashes = pg.crashes_since(0, ignore_signals=())
    assert crashes == [], "\n".join(crashes)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert pg.postmaster_pid() == postmaster
    assert not re.search(r"server process .* was terminated", pg.read_log())
    # the tables still answer as before
    with pg.connect("fz", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) >= 0 FROM ct").fetchone() == (True,)
        assert conn.execute("SELECT count(*) >= 0 FROM metrics").fetchone() == (True,)
