"""ALTER EXTENSION orochi UPDATE from 0.1.0 makes what a fresh install of
0.2.0 makes, object by object (the update script must follow every change
to sql/*.sql).  Catalogs that named files by
absolute paths into the data directory name them relative to the
database's folder, relation references become regclass, the dump marks and
triggers appear; everything reads as before, and a standby made afterwards
reads its own files (not the primary's)."""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import sql
from catalog_snapshot import differences, snapshot
from orochi_fdw.testing import replica
from wal_helpers import files_of

COLUMNS = "ts timestamptz NOT NULL, device int, temp float8"

QUERIES = [
    "SELECT count(*), sum(device), sum(temp), min(ts), max(ts) FROM m",
    "SELECT x::text FROM m x ORDER BY 1",
    "SELECT x::text FROM hourly x ORDER BY 1",
    "SELECT hypertable_name::text, range_start, rows FROM orochi.chunks ORDER BY 2",
    "SELECT proc_name, relid::regclass::text FROM orochi.jobs ORDER BY job_id",
    "SELECT table_name::text, column_name, stripes_indexed FROM orochi.vector_indexes",
]


def test_update_makes_what_a_fresh_install_makes(make_database, pg_cluster):
    """Every member of the extension, as 0.1.0 updated to 0.2.0 has it and as
    CREATE EXTENSION orochi (0.2.0) makes it: functions (signature, body,
    language, volatility, strictness, parallel safety, SECURITY DEFINER,
    SET options, owner, ACL), aggregates (every pg_aggregate column),
    tables and views (columns by name, defaults, constraints, indexes,
    triggers, policies, options, owner, ACL, view definitions), sequences,
    types, casts, operators and their classes, the foreign-data wrapper, the
    event triggers, and the extension's configuration tables."""
    updated = make_database(extension=False)
    fresh = make_database(extension=False)
    with pg_cluster.connect(updated, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION orochi VERSION '0.1.0'")
        conn.execute("ALTER EXTENSION orochi UPDATE TO '0.2.0'")
        got = snapshot(conn)
    with pg_cluster.connect(fresh, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION orochi")
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'orochi'").fetchone()[0] == "0.2.0"
        want = snapshot(conn)
    assert len(want) > 200  # the comparison sees the extension
    problems = differences(want, got)
    assert not problems, (f"{len(problems)} differences between 0.2.0 installed fresh and 0.1.0 updated"
                          " to 0.2.0:\n" + "\n".join(problems))
    # and the comparison sees a difference where there is one
    with pg_cluster.connect(updated, autocommit=True) as conn:
        conn.execute("ALTER FUNCTION orochi._file_path(text) SECURITY DEFINER")
        conn.execute("GRANT SELECT ON orochi.jobs TO PUBLIC")
        conn.execute("ALTER TABLE orochi.pipeline ALTER COLUMN name DROP NOT NULL")
        problems = differences(want, snapshot(conn))
    assert [p.split("\n")[0] for p in problems] == [
        "function orochi._file_path(pg_catalog.text): security_definer: fresh false / updated true",
        "table orochi.jobs: acl:",
        "table orochi.pipeline: columns name: not_null: fresh true / updated false",
    ], problems


def test_update_from_0_1_0(make_cluster):
    pg = make_cluster("upgrade", settings=replica.REPLICATION_SETTINGS)
    pg.create_database("app", extension=False)
    with pg.connect("app", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION orochi VERSION '0.1.0'")
        conn.execute(f"CREATE FOREIGN TABLE m ({COLUMNS}) SERVER orochi OPTIONS (delta_row_limit '10')")
        conn.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
        conn.execute("INSERT INTO m SELECT timestamptz '2024-01-01' + i * interval '5 minutes', i % 9, i * 0.5"
                     " FROM generate_series(0, 2999) i")
        conn.execute("""SELECT orochi.create_continuous_aggregate('hourly', $$
            SELECT orochi.time_bucket(interval '1 hour', ts) AS bucket, count(*) AS n, sum(temp) AS total
              FROM m GROUP BY bucket $$)""")
        conn.execute("SELECT orochi.add_retention_policy('m', interval '1000 days')")
        conn.execute("CREATE FOREIGN TABLE v (id int, e orochi.vector(3)) SERVER orochi"
                     " OPTIONS (delta_row_limit '0')")
        conn.execute("INSERT INTO v SELECT g, ('[' || g % 5 || ',' || g % 7 || ',1]')::orochi.vector"
                     " FROM generate_series(1, 1200) g")
        conn.execute("SELECT orochi.create_vector_index('v', 'e')")
        # the real-time view as 0.1.0 made it: the aggregate named by the view's oid
        view_oid = conn.execute("SELECT 'hourly'::regclass::oid").fetchone()[0]
        definition = conn.execute("SELECT pg_get_viewdef('hourly')").fetchone()[0]
        assert "'orochi._materialized_1'::regclass" in definition
        conn.execute("CREATE OR REPLACE VIEW hourly AS "
                     + definition.replace("'orochi._materialized_1'::regclass", f"({view_oid})::oid"))
        # as 0.1.0 wrote them: absolute paths into this data directory
        pgdata, dboid = conn.execute("SELECT current_setting('data_directory'), oid FROM pg_database"
                                     " WHERE datname = current_database()").fetchone()
        for table in ("columnar_stripes", "columnar_vector_index_files"):
            conn.execute(f"UPDATE orochi.{table} SET file_path = %s || file_path",
                         (f"{pgdata}/orochi/{dboid}/",))
        assert conn.execute("SELECT bool_and(file_path LIKE '/%') FROM orochi.columnar_stripes").fetchone()[0]
        # a user's view over a sketch aggregate (which the update redefines in place)
        conn.execute("CREATE VIEW devices AS SELECT orochi.approx_count_distinct(device) AS n FROM m")
        conn.execute("CREATE ROLE upgrade_reader")
        conn.execute("GRANT USAGE ON SCHEMA public TO upgrade_reader")
        conn.execute("GRANT SELECT ON devices TO upgrade_reader")
        # a delta store as 0.1.0 made it: owned by the (superuser) role that made
        # the table, a column of a user's type kept in that type
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        conn.execute("CREATE ROLE upgrade_admin SUPERUSER")
        conn.execute("CREATE FOREIGN TABLE moods (id int, m mood) SERVER orochi OPTIONS (delta_row_limit '1000')")
        conn.execute("INSERT INTO moods VALUES (1, 'sad'), (2, 'happy'), (3, NULL)")
        moods = conn.execute("SELECT id, m::text FROM moods ORDER BY 1").fetchall()
        assert moods == [(1, "sad"), (2, "happy"), (3, None)]
        delta = sql.Identifier("orochi", "columnar_delta_%d" % conn.execute("SELECT 'moods'::regclass::oid").fetchone()[0])
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(delta)).fetchone()[0] == 3
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN c2 TYPE mood USING c2::mood").format(delta))
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO upgrade_admin").format(delta))
        # the continuous aggregate's hidden objects as 0.1.0 left them: their creator's
        conn.execute("ALTER VIEW orochi._direct_view_1 OWNER TO upgrade_admin")
        conn.execute("ALTER FOREIGN TABLE orochi._materialized_1 OWNER TO upgrade_admin")
        created = conn.execute("SELECT chunk_id, created_at FROM orochi.hypertable_chunks ORDER BY 1").fetchall()
        assert len(created) > 1
        before = [conn.execute(q).fetchall() for q in QUERIES + ["SELECT n FROM devices"]]

        conn.execute("ALTER EXTENSION orochi UPDATE TO '0.2.0'")
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'orochi'").fetchone()[0] == "0.2.0"
        assert conn.execute("SELECT bool_or(file_path LIKE '/%') FROM orochi.columnar_stripes").fetchone()[0] is False
        assert conn.execute("SELECT count(*) FROM orochi.columnar_vector_index_files"
                            " WHERE file_path LIKE '/%'").fetchone()[0] == 0
        types = dict(conn.execute(
            "SELECT attrelid::regclass::text || '.' || attname, atttypid::regtype::text FROM pg_attribute"
            " WHERE attrelid IN ('orochi.hypertables'::regclass, 'orochi.jobs'::regclass,"
            " 'orochi.continuous_aggs'::regclass, 'orochi.columnar_vector_indexes'::regclass)"
            " AND attname LIKE '%relid'").fetchall())
        assert set(types.values()) == {"regclass"}, types
        config = {r[0] for r in conn.execute(
            "SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'orochi'").fetchall()}
        assert {"orochi.hypertables", "orochi.jobs", "orochi.continuous_aggs"} <= config
        assert [conn.execute(q).fetchall() for q in QUERIES + ["SELECT n FROM devices"]] == before
        # the delta store is the extension owner's, the user's type kept as text
        assert conn.execute(sql.SQL("SELECT c.relowner::regrole::text, format_type(a.atttypid, a.atttypmod)"
                                    " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'c2'"
                                    " WHERE c.oid = {}::regclass").format(sql.Literal(delta.as_string(conn)))
                            ).fetchone() == ("postgres", "text")
        assert conn.execute("SELECT id, m::text FROM moods ORDER BY 1").fetchall() == moods
        conn.execute("INSERT INTO moods VALUES (4, 'ok')")
        conn.execute("UPDATE moods SET m = 'ok' WHERE id = 1")
        assert conn.execute("SELECT id, m::text FROM moods ORDER BY 1").fetchall() == \
            [(1, "ok"), (2, "happy"), (3, None), (4, "ok")]
        # ... and the aggregate's hidden objects, the creator granted the table
        assert conn.execute("SELECT array_agg(relowner::regrole::text) FROM pg_class WHERE oid IN"
                            " ('orochi._direct_view_1'::regclass, 'orochi._materialized_1'::regclass)"
                            ).fetchone()[0] == ["postgres", "postgres"]
        assert conn.execute("SELECT array_agg(a.privilege_type ORDER BY a.privilege_type) FROM pg_class c,"
                            " aclexplode(c.relacl) a WHERE c.oid = 'orochi._materialized_1'::regclass"
                            " AND a.grantee = 'upgrade_admin'::regrole").fetchone()[0] == \
            ["DELETE", "INSERT", "SELECT", "TRUNCATE", "UPDATE"]
        # chunks keep the creation time 0.1.0 recorded, now shown by orochi.chunks
        assert conn.execute("SELECT chunk_id, created_at FROM orochi.hypertable_chunks"
                            " ORDER BY 1").fetchall() == created
        assert conn.execute("SELECT array_agg(chunk_creation_time ORDER BY chunk_id) FROM orochi.chunks"
                            ).fetchone()[0] == [c for _, c in created]
        # the sketch aggregates run as moving window functions: each row's value
        # is the plain aggregate over its frame
        rows = conn.execute("""
            SELECT w.n = (SELECT orochi.approx_count_distinct(x) FROM unnest(w.vals) x)
              FROM (SELECT orochi.approx_count_distinct(g % 7) OVER f AS n, array_agg(g % 7) OVER f AS vals
                      FROM generate_series(1, 60) g WINDOW f AS (ORDER BY g ROWS 4 PRECEDING)) w""").fetchall()
        assert rows == [(True,)] * 60
        # the catalog is the extension owner's: a role reads what the views show it
        conn.execute("SET ROLE upgrade_reader")
        try:
            assert conn.execute("SELECT n FROM devices").fetchall() == before[-1]
            assert conn.execute("SELECT count(*) FROM orochi.chunks").fetchone()[0] == 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM orochi.hypertables")
        finally:
            conn.execute("RESET ROLE")
        # the old view is made again at the aggregate's next refresh
        assert "::oid)" in conn.execute("SELECT pg_get_viewdef('hourly')").fetchone()[0]
        conn.execute("SELECT orochi.refresh_continuous_aggregate('hourly', NULL, NULL)")
        assert "'orochi._materialized_1'::regclass" in conn.execute("SELECT pg_get_viewdef('hourly')").fetchone()[0]
        assert [conn.execute(q).fetchall() for q in QUERIES] == before[:-1]
        # still writable, and the new hypertable path (its trigger) works
        conn.execute("INSERT INTO m SELECT timestamptz '2024-02-01' + i * interval '1 hour', 1, 1"
                     " FROM generate_series(0, 99) i")
        conn.execute(f"CREATE FOREIGN TABLE n ({COLUMNS}) SERVER orochi OPTIONS (delta_row_limit '0')")
        conn.execute("INSERT INTO n SELECT timestamptz '2024-01-01' + i * interval '1 hour', 1, 1"
                     " FROM generate_series(0, 99) i")
        conn.execute("SELECT orochi.create_hypertable('n', 'ts', migrate_data => true)")
        assert conn.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE relid = 'n'::regclass"
                            " AND chunk_id IS NULL").fetchone()[0] == 0
        expected = [conn.execute(q).fetchall() for q in QUERIES]
    # a standby made now reads its own copy of every file
    standby = replica.make_standby(pg, "upgrade-standby")
    try:
        with standby.connect("app", autocommit=True) as conn:
            assert [conn.execute(q).fetchall() for q in QUERIES] == expected
        assert files_of(standby, "app") == files_of(pg, "app")
        pg.stop()
        os.rename(pg.datadir, pg.datadir + ".moved")  # the primary's files are gone from their place
        try:
            with standby.connect("app", autocommit=True) as conn:
                assert [conn.execute(q).fetchall() for q in QUERIES] == expected
        finally:
            os.rename(pg.datadir + ".moved", pg.datadir)
    finally:
        standby.cleanup()
