"""pg_dump -> a new cluster -> pg_restore gives the same rows, the same
hypertable chunks, the same jobs and the same continuous aggregate and
vector index definitions, with the documented commands:

    pg_dump -Fc --include-foreign-data=orochi -f app.dump app
    pg_restore -d app app.dump            (into an empty database)

Tables live in two schemas, one whose name sorts before ``orochi`` (its
rows are restored before Orochi's catalog rows) and ``public`` (after).
"""

from __future__ import annotations

import json
import os

import pytest

from orochi_fdw.testing.cluster import PostgresCluster

COLUMNS = "ts timestamptz NOT NULL, device int, temp float8, note text"

SETUP = [
    "CREATE SCHEMA analytics",
    # two hypertables (one in a schema sorting before orochi), stripes, delta rows, deletes, updates
    f"CREATE FOREIGN TABLE analytics.metrics ({COLUMNS}) SERVER orochi OPTIONS (delta_row_limit '100')",
    "SELECT orochi.create_hypertable('analytics.metrics', 'ts', chunk_time_interval => interval '1 day')",
    f"CREATE FOREIGN TABLE public.readings ({COLUMNS}) SERVER orochi OPTIONS (delta_row_limit '100')",
    "SELECT orochi.create_hypertable('readings', 'ts', chunk_time_interval => interval '12 hours')",
    *[f"INSERT INTO {t} SELECT timestamptz '2024-01-01' + i * interval '97 seconds', i % 10, 20 + (i * 7) % 13,"
      f" CASE WHEN i % 5 = 0 THEN NULL ELSE 'n' || (i % 17) END FROM generate_series(0, 5999) i"
      for t in ("analytics.metrics", "readings")],
    *[f"INSERT INTO {t} VALUES ('2024-01-03 10:00+00', 42, 1.5, 'late')" for t in ("analytics.metrics", "readings")],
    "DELETE FROM analytics.metrics WHERE device = 3 AND temp > 25",
    "UPDATE readings SET note = 'fixed' WHERE device = 4 AND temp < 22",
    # a continuous aggregate (real time) and one materialized only, with policies
    """SELECT orochi.create_continuous_aggregate('public.hourly', $$
        SELECT orochi.time_bucket(interval '1 hour', ts) AS bucket, device, count(*) AS n, avg(temp) AS avg_temp
          FROM analytics.metrics GROUP BY bucket, device $$)""",
    """SELECT orochi.create_continuous_aggregate('analytics.daily', $$
        SELECT orochi.time_bucket(interval '1 day', ts) AS day, max(temp) AS hottest
          FROM readings GROUP BY day $$, materialized_only => true)""",
    "INSERT INTO analytics.metrics VALUES ('2024-01-02 01:30+00', 1, 99, 'after refresh')",  # invalidation pending
    "SELECT orochi.add_continuous_aggregate_policy('public.hourly', interval '30 days', interval '1 hour',"
    " interval '1 hour')",
    "SELECT orochi.add_retention_policy('analytics.metrics', interval '400 days')",
    "SELECT orochi.add_compression_policy('readings', interval '10 days', schedule_interval => interval '6 hours')",
    # a plain columnar table with a vector index (stripes large enough for a
    # file each: create_vector_index indexes them in one file, a restore
    # that loads the rows after the index's row one file per stripe)
    "CREATE FOREIGN TABLE public.items (id int, e orochi.vector(4)) SERVER orochi"
    " OPTIONS (delta_row_limit '0', stripe_row_limit '2000')",
    "INSERT INTO items SELECT g, ('[' || (g % 7) || ',' || (g % 11) || ',' || (g % 13) || ',' || (g % 5) || ']')"
    "::orochi.vector FROM generate_series(1, 4000) g",
    "SELECT orochi.create_vector_index('items', 'e', index_type => 'ivfflat')",
]

QUERIES = [
    "SELECT x::text FROM analytics.metrics x ORDER BY 1",
    "SELECT x::text FROM readings x ORDER BY 1",
    "SELECT x::text FROM items x ORDER BY 1",
    "SELECT device, count(*), sum(temp), max(ts) FROM analytics.metrics GROUP BY device ORDER BY 1",
    "SELECT hypertable_name::text, range_start, range_end, rows FROM orochi.chunks ORDER BY 1, 2",
    "SELECT x::text FROM public.hourly x ORDER BY 1",
    "SELECT x::text FROM analytics.daily x ORDER BY 1",
    "SELECT view_schema, view_name, hypertable::text, bucket_column, bucket_width, watermark, materialized_only,"
    " view_definition FROM orochi.continuous_aggregates ORDER BY 1, 2",
    "SELECT pg_get_viewdef('public.hourly'::regclass)",
    "SELECT c.view_relid::text, i.lowest, i.greatest FROM orochi.continuous_agg_invalidations i"
    " JOIN orochi.continuous_aggs c USING (view_relid) ORDER BY 1, 2",
    "SELECT application_name, proc_schema, proc_name, relid::regclass::text, schedule_interval, max_runtime,"
    " max_retries, retry_period, scheduled, config - 'hypertable_id' - 'mat_hypertable_id', next_start"
    " FROM orochi.jobs ORDER BY job_id",
    "SELECT table_name::text, column_name, index_type, distance_type, dimensions, options, stripes_indexed,"
    " stripes FROM orochi.vector_indexes",
    "SELECT id FROM items ORDER BY e OPERATOR(orochi.<->) '[3,3,3,3]', id LIMIT 10",
]


def _answers(cluster: PostgresCluster, dbname: str) -> list[list[tuple]]:
    with cluster.connect(dbname, autocommit=True) as conn:
        return [conn.execute(q).fetchall() for q in QUERIES]


def _run(cluster: PostgresCluster, args: list[str]) -> str:
    proc = cluster._run(args, check=False)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def test_dump_and_restore_into_a_new_cluster(make_cluster):
    source = make_cluster("dump-source")
    source.create_database("app")
    with source.connect("app", autocommit=True) as conn:
        for sql in SETUP:
            conn.execute(sql)
        jobs = conn.execute("SELECT count(*) FROM orochi.jobs").fetchone()[0]
    assert jobs == 3
    expected = _answers(source, "app")
    dump = os.path.join(source.base, "app.dump")
    _run(source, [source.bin("pg_dump"), "-Fc", "--include-foreign-data=orochi", "-f", dump,
                  "-h", source.host, "-p", str(source.port), "-U", source.user, "app"])

    target = make_cluster("dump-target")
    target.create_database("app", extension=False)
    out = _run(target, [target.bin("pg_restore"), "-d", "app", "-h", target.host, "-p", str(target.port),
                        "-U", target.user, "--exit-on-error", dump])
    assert "error" not in out.lower()
    got = _answers(target, "app")
    for query, want, have in zip(QUERIES, expected, got):
        assert have == want, query
    # the restored objects work as the originals: refresh, policies, writes into chunks
    with target.connect("app", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE chunk_id IS NULL"
                            " AND relid IN ('analytics.metrics'::regclass, 'readings'::regclass)").fetchone()[0] == 0
        conn.execute("INSERT INTO analytics.metrics VALUES ('2024-01-02 02:30+00', 2, 50, 'restored')")
        conn.execute("SELECT orochi.refresh_continuous_aggregate('public.hourly', NULL, NULL)")
        for job_id, in conn.execute("SELECT job_id FROM orochi.jobs ORDER BY job_id").fetchall():
            conn.execute("SELECT orochi.run_job_now(%s)", (job_id,))
        hourly = conn.execute("SELECT n FROM public.hourly WHERE bucket = '2024-01-02 02:00+00'"
                              " AND device = 2").fetchone()
    with source.connect("app", autocommit=True) as conn:
        conn.execute("INSERT INTO analytics.metrics VALUES ('2024-01-02 02:30+00', 2, 50, 'restored')")
        conn.execute("SELECT orochi.refresh_continuous_aggregate('public.hourly', NULL, NULL)")
        assert conn.execute("SELECT n FROM public.hourly WHERE bucket = '2024-01-02 02:00+00'"
                            " AND device = 2").fetchone() == hourly


def test_a_plain_dump_without_foreign_data_says_what_is_missing(make_cluster):
    """Without --include-foreign-data the definitions come back and the
    columnar tables are empty, as for any foreign table: documented."""
    source = make_cluster("dump-plain")
    source.create_database("app")
    with source.connect("app", autocommit=True) as conn:
        conn.execute(f"CREATE FOREIGN TABLE m ({COLUMNS}) SERVER orochi")
        conn.execute("SELECT orochi.create_hypertable('m', 'ts')")
        conn.execute("INSERT INTO m VALUES ('2024-01-01', 1, 2, 'x')")
    out = _run(source, [source.bin("pg_dump"), "-h", source.host, "-p", str(source.port), "-U", source.user,
                        "app"])
    assert "CREATE FOREIGN TABLE public.m" in out
    assert "COPY orochi.hypertables" in out and "public.m\tts" in out
    assert "COPY public.m" not in out
