"""Orochi's internals belong to the extension owner and run no user code
with its rights; the views show each role its own; orochi.vacuum() removes
files only where Orochi owns the folder; continuous aggregates made by a
role that is not a superuser are that role's."""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import sql


def _extension_owner(conn) -> str:
    return conn.execute("SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'orochi'").fetchone()[0]


def test_delta_tables_belong_to_the_extension_owner(fresh_actors):
    a = fresh_actors
    owner, admin = a.conns["owner"], a.conns["superuser"]
    owner.execute("CREATE FOREIGN TABLE t (id int, note text) SERVER orochi")
    owner.execute("INSERT INTO t VALUES (1, 'delta')")
    delta = admin.execute("SELECT 'orochi.columnar_delta_' || 't'::regclass::oid").fetchone()[0]
    row = admin.execute("SELECT relowner::regrole::text, relacl FROM pg_class WHERE oid = %s::regclass",
                        [delta]).fetchone()
    assert row == (_extension_owner(admin), None)
    # its rows are read through the table, with the table's privileges
    owner.execute(sql.SQL("GRANT SELECT ON t TO {}").format(a.ident("granted")))
    assert a.conns["granted"].execute("SELECT * FROM t").fetchall() == [(1, "delta")]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.conns["granted"].execute(f"SELECT * FROM {delta}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        owner.execute(f"DELETE FROM {delta}")


def test_no_catalog_grants(db):
    """Nothing in schema orochi but the user-facing views is granted to anyone."""
    rows = db.execute(
        "SELECT c.relname, c.relkind::text FROM pg_class c"
        " WHERE c.relnamespace = 'orochi'::regnamespace AND c.relacl IS NOT NULL"
        " ORDER BY 1").fetchall()
    assert rows == [("cdc_errors", "v"), ("chunks", "v"), ("continuous_aggregates", "v"), ("distributed_tables", "v"),
                    ("job_stats", "v"), ("nodes", "v"), ("pipeline_errors", "v"), ("pipelines", "v"), ("rebalance_progress", "v"),
                    ("shards", "v"), ("storage_targets", "v"),
                    ("stripes", "v"), ("tiering_stats", "v"), ("vacuum_progress", "v"), ("vector_indexes", "v")]
    # no row-level security either: one model, explicit checks, for the whole catalog
    assert db.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'orochi'::regnamespace"
                      " AND relrowsecurity").fetchone()[0] == 0
    views = db.execute("SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'orochi'::regnamespace"
                       " AND c.relkind = 'v' AND c.relname <> 'vacuum_progress'"
                       " AND NOT coalesce('security_barrier=true' = ANY (c.reloptions), false)").fetchall()
    assert views == []


def test_user_code_never_runs_as_the_extension_owner(fresh_actors):
    """A domain's CHECK (a user's function) runs as the role writing the
    table, never with the delta table's rights, however the value gets there."""
    a = fresh_actors
    owner = a.conns["owner"]
    owner.execute("CREATE TABLE checked_by (who text)")
    owner.execute("CREATE FUNCTION note_checker(v int) RETURNS bool LANGUAGE plpgsql AS $$"
                  " BEGIN INSERT INTO checked_by VALUES (current_user); RETURN v > 0; END $$")
    owner.execute("CREATE DOMAIN posint AS int CHECK (note_checker(VALUE))")
    owner.execute("CREATE TYPE pair AS (a posint, b int)")
    owner.execute("CREATE FOREIGN TABLE t (id int, p posint, q pair, ps posint[]) SERVER orochi"
                  " OPTIONS (delta_row_limit '10')")
    owner.execute("INSERT INTO t VALUES (1, 5, '(1,2)', '{3,4}')")                      # the delta store
    owner.execute("INSERT INTO t SELECT g, g, format('(%s,%s)', g, g)::pair, ARRAY[g]::posint[] FROM generate_series(2, 50) g")  # stripes
    owner.execute("UPDATE t SET p = 7, q = '(2,3)' WHERE id = 1")
    owner.execute("SELECT orochi.compact('t')")
    assert owner.execute("SELECT p, q::text, ps::text FROM t WHERE id = 1").fetchall() == [(7, "(2,3)", "{3,4}")]
    who = {r[0] for r in owner.execute("SELECT who FROM checked_by")}
    assert who == {a.role("owner")}
    with pytest.raises(psycopg.errors.CheckViolation):
        owner.execute("INSERT INTO t VALUES (2, -1)")


def test_views_show_a_role_the_tables_it_may_read(fresh_actors):
    a = fresh_actors
    owner, granted, ungranted = a.conns["owner"], a.conns["granted"], a.conns["ungranted"]
    owner.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '0')")
    owner.execute("SELECT orochi.create_hypertable('m', 'ts', interval '1 day')")
    owner.execute("INSERT INTO m SELECT '2024-01-01'::timestamptz + g * interval '1 hour', g"
                  " FROM generate_series(1, 48) g")
    owner.execute("SELECT orochi.create_continuous_aggregate('m_daily',"
                  " $$SELECT orochi.time_bucket('1 day', ts) AS day, sum(v) AS total FROM m GROUP BY 1$$)")
    owner.execute(sql.SQL("GRANT SELECT ON m, m_daily TO {}").format(a.ident("granted")))
    for conn, sees in ((owner, True), (granted, True), (ungranted, False)):
        assert bool(conn.execute("SELECT count(*) FROM orochi.chunks").fetchone()[0]) is sees
        assert bool(conn.execute("SELECT count(*) FROM orochi.stripes").fetchone()[0]) is sees
        assert bool(conn.execute("SELECT count(*) FROM orochi.continuous_aggregates").fetchone()[0]) is sees
        assert bool(conn.execute("SELECT count(*) FROM orochi.hypertable_chunk_stats()").fetchone()[0]) is sees
    # a leaky function of the caller's sees no hidden row (security_barrier)
    ungranted.execute("CREATE FUNCTION peek(text) RETURNS bool LANGUAGE plpgsql COST 0.0000001"
                      " AS $$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$")
    seen = []
    ungranted.add_notice_handler(lambda d: seen.append(d.message_primary))
    ungranted.execute("SELECT * FROM orochi.chunks WHERE peek(chunk_name)").fetchall()
    ungranted.execute("SELECT * FROM orochi.stripes WHERE peek(file_path)").fetchall()
    assert seen == []


def test_continuous_aggregate_of_a_role_is_its_own(fresh_actors):
    a = fresh_actors
    owner, admin = a.conns["owner"], a.conns["superuser"]
    owner.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi")
    owner.execute("SELECT orochi.create_hypertable('m', 'ts', interval '1 day')")
    owner.execute("INSERT INTO m SELECT '2024-01-01'::timestamptz + g * interval '1 hour', g"
                  " FROM generate_series(1, 48) g")
    owner.execute("SELECT orochi.create_continuous_aggregate('m_daily',"
                  " $$SELECT orochi.time_bucket('1 day', ts) AS day, sum(v) AS total FROM m GROUP BY 1$$)")
    owners = admin.execute(
        "SELECT c.oid = g.view_relid, c.relowner::regrole::text FROM orochi.continuous_aggs g"
        "  JOIN pg_class c ON c.oid IN (g.view_relid, g.direct_relid, g.mat_relid) ORDER BY 1, 2").fetchall()
    # the view is its creator's; what lies in schema orochi is the extension owner's
    ext = _extension_owner(admin)
    assert owners == [(False, ext), (False, ext), (True, a.role("owner"))], owners
    assert owner.execute("SELECT has_schema_privilege('orochi', 'CREATE')").fetchone() == (False,)
    assert owner.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'orochi'::regnamespace"
                         " AND pg_has_role(relowner, 'USAGE') AND NOT pg_has_role(%s, 'USAGE')",
                         [ext]).fetchone() == (0,)
    assert owner.execute("SELECT count(*), sum(total) FROM m_daily").fetchone() == (3, 1176)
    owner.execute("INSERT INTO m VALUES ('2024-01-01 00:30', 1000)")
    owner.execute("SELECT orochi.refresh_continuous_aggregate('m_daily', NULL::timestamptz, NULL::timestamptz)")
    assert owner.execute("SELECT sum(total) FROM m_daily").fetchone() == (2176,)
    owner.execute("DROP VIEW m_daily CASCADE")
    assert admin.execute("SELECT count(*) FROM orochi.continuous_aggs").fetchone() == (0,)


def test_continuous_aggregate_query_cannot_plant_objects_in_orochi(fresh_actors):
    """Parsing the query runs input functions of its literals, as the
    caller; a domain CHECK that creates something in schema orochi while the
    caller may create there undoes the whole creation."""
    a = fresh_actors
    owner, admin = a.conns["owner"], a.conns["superuser"]
    owner.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi")
    owner.execute("SELECT orochi.create_hypertable('m', 'ts', interval '1 day')")
    owner.execute("CREATE FUNCTION plant(v int) RETURNS bool LANGUAGE plpgsql AS $$"
                  " BEGIN CREATE TABLE IF NOT EXISTS orochi.planted (x int); RETURN true; END $$")
    owner.execute("CREATE DOMAIN planting AS int CHECK (plant(VALUE))")
    owner.execute("CREATE TYPE carrier AS (p planting)")
    with pytest.raises(psycopg.Error) as exc:
        owner.execute("SELECT orochi.create_continuous_aggregate('m_daily', $$SELECT orochi.time_bucket('1 day', ts)"
                      " AS day, count(*) AS n, min(('(1)'::carrier).p) AS c FROM m GROUP BY 1$$)")
    assert exc.value.sqlstate == "42501", exc.value
    assert admin.execute("SELECT to_regclass('orochi.planted')").fetchone() == (None,)
    assert owner.execute("SELECT has_schema_privilege('orochi', 'CREATE')").fetchone() == (False,)


def _make_dir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)


def test_vacuum_removes_files_only_in_folders_orochi_owns(db, server_dir):
    """orochi.vacuum() collects orphan stripe files (and folders of dropped
    databases) only under data directories that carry Orochi's marker."""
    root = os.path.join(server_dir, "data")
    _make_dir(root)
    dboid = db.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    stranger_db = os.path.join(root, "4000000000")        # looks like a dropped database's folder
    stranger_table = os.path.join(root, str(dboid), "3999999999")
    for folder in (stranger_db, stranger_table):
        _make_dir(os.path.join(root, str(dboid)))
        _make_dir(folder)
    orphan = os.path.join(stranger_table, "1.1.stripe")  # looks like an orphan of xid 1
    with open(orphan, "w") as f:
        f.write("not Orochi's")
    with open(os.path.join(stranger_db, "keep"), "w") as f:
        f.write("not Orochi's")
    db.execute(sql.SQL("CREATE SERVER elsewhere FOREIGN DATA WRAPPER orochi OPTIONS (data_dir {})").format(
        sql.Literal(root)))
    db.execute("SELECT * FROM orochi.vacuum()")
    assert os.path.exists(orphan) and os.path.isdir(stranger_db)
    # once Orochi writes there, the folder is its own: orphans go
    db.execute("CREATE FOREIGN TABLE t (id int) SERVER elsewhere OPTIONS (delta_row_limit '0')")
    db.execute("INSERT INTO t SELECT generate_series(1, 10)")
    assert os.path.isfile(os.path.join(root, "OROCHI_DATA_DIR"))
    db.execute("SELECT * FROM orochi.vacuum()")
    assert not os.path.exists(orphan) and not os.path.exists(stranger_db)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (10,)
