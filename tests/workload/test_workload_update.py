"""ALTER EXTENSION orochi UPDATE from 0.1.0, which had no workload
management: the update script makes the same workload objects a fresh 0.2.0
install has (tables, sequences, functions, their privileges, pg_dump marks),
and pools defined afterwards admit statements."""

from __future__ import annotations

import pytest

from workload_helpers import WORKLOAD_SETTINGS

#: the workload objects of schema orochi, as a fresh install and an update must both make them
OBJECTS = {
    "functions": """
        SELECT p.oid::regprocedure::text, pg_catalog.pg_get_function_result(p.oid), p.provolatile::text,
               p.prosecdef, coalesce(p.probin, ''), p.prosrc, coalesce(p.proacl::text, '')
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'orochi'::regnamespace
           AND p.proname ~ '(resource_pool|workload|pool_stats|session_resources|queued_queries)'
         ORDER BY 1""",
    "relations": """
        SELECT c.relname::text, c.relkind::text, coalesce(c.relacl::text, ''), c.relowner::regrole::text
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'orochi'::regnamespace
           AND c.relname ~ '^(resource_pools|workload_classes|workload_role_classes)'
         ORDER BY 1""",
    "columns": """
        SELECT a.attrelid::regclass::text, a.attnum, a.attname::text, a.atttypid::regtype::text, a.attnotnull,
               coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '')
          FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d
               ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid IN ('orochi.resource_pools'::regclass, 'orochi.workload_classes'::regclass,
                              'orochi.workload_role_classes'::regclass)
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname::text, pg_catalog.pg_get_constraintdef(oid)
          FROM pg_catalog.pg_constraint
         WHERE conrelid IN ('orochi.resource_pools'::regclass, 'orochi.workload_classes'::regclass,
                            'orochi.workload_role_classes'::regclass)
         ORDER BY 1, 2""",
    "dumped": """
        SELECT c::regclass::text FROM pg_catalog.pg_extension e, unnest(e.extconfig) c
         WHERE e.extname = 'orochi'
           AND c::regclass::text ~ '^orochi\\.(resource_pools|workload_classes|workload_role_classes)'
         ORDER BY 1""",
    "members": """
        SELECT pg_catalog.pg_describe_object(d.classid, d.objid, 0)
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON d.refobjid = e.oid
         WHERE e.extname = 'orochi' AND d.deptype = 'e'
           AND pg_catalog.pg_describe_object(d.classid, d.objid, 0)
               ~ '(resource_pool|workload|pool_stats|session_resources|queued_queries)'
         ORDER BY 1""",
}


def _objects(conn) -> dict:
    return {name: conn.execute(query).fetchall() for name, query in OBJECTS.items()}


def test_update_from_0_1_0_makes_the_workload_objects(make_cluster):
    pg = make_cluster("wl-upgrade", initdb_settings={"shared_preload_libraries": "orochi"},
                      settings={**WORKLOAD_SETTINGS, "orochi.workload_database": "app"})
    pg.create_database("fresh")
    pg.create_database("app", extension=False)
    with pg.connect("fresh", autocommit=True) as fresh:
        expected = _objects(fresh)
    # 17 functions; 3 tables, 2 sequences, 5 indexes
    assert len(expected["functions"]) == 17 and len(expected["relations"]) == 10, expected
    with pg.connect("app", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION orochi VERSION '0.1.0'")
        assert conn.execute("SELECT count(*) FROM pg_catalog.pg_proc WHERE proname = 'create_resource_pool'"
                            ).fetchone()[0] == 0
        conn.execute("ALTER EXTENSION orochi UPDATE TO '0.2.0'")
        assert _objects(conn) == expected
        # and it works: a pool of one slot, a class for this client, a statement admitted in it
        conn.execute("SELECT orochi.workload_reload()")
        conn.execute("SELECT orochi.create_resource_pool('updated', 1, max_queue => 0)")
        conn.execute("""SELECT orochi.create_workload_class('updated', 'updated', '{"application_name": "upd"}')""")
    with pg.connect("app", autocommit=True, application_name="upd") as client:
        assert client.execute("SELECT 42").fetchone() == (42,)
        pid = client.info.backend_pid
        with pg.connect("app", autocommit=True) as monitor:
            assert monitor.execute("SELECT pool_name, class_name FROM orochi.session_resources() WHERE pid = %s",
                                   (pid,)).fetchone() == ("updated", "updated")
            assert monitor.execute("SELECT admitted FROM orochi.pool_stats() WHERE pool_name = 'updated'"
                                   ).fetchone()[0] >= 1
