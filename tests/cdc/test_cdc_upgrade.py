"""ALTER EXTENSION orochi UPDATE from 0.1.0 (which had no change data
capture) to 0.2.0 makes the CDC objects exactly as a new install does —
tables, functions, the view, the event trigger, their owners and
privileges (tests/wal/test_upgrade.py compares every object; this looks
at CDC's closely) — and a subscription works afterwards."""

from __future__ import annotations

from cdc_harness import cdc_once, create_subscription, drop_slots, file_events

_OBJECTS = [
    # tables and sequences: columns, defaults, privileges (none granted), row-level security
    """SELECT c.relname::text, c.relkind::text, c.relacl::text, c.relrowsecurity,
              (SELECT array_agg(a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
                                || a.attnotnull::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
                                ORDER BY a.attnum)
                 FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
         FROM pg_class c
        WHERE c.relnamespace = 'orochi'::regnamespace AND c.relname LIKE 'cdc%'
        ORDER BY 1""",
    # functions: definitions and who may call them
    """SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text, p.prosecdef
         FROM pg_proc p
        WHERE p.pronamespace = 'orochi'::regnamespace AND p.proname LIKE '%cdc%'
        ORDER BY 1""",
    "SELECT pg_get_viewdef('orochi.cdc_errors'::regclass)",
    "SELECT evtname::text, evtevent::text, evtfoid::regproc::text FROM pg_event_trigger WHERE evtname LIKE '%cdc%'",
    # every CDC object belongs to the extension
    """SELECT count(*) FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
        WHERE d.refclassid = 'pg_extension'::regclass AND c.relname LIKE 'cdc%'
          AND c.relnamespace = 'orochi'::regnamespace AND d.deptype = 'e'""",
]


def _objects(conn) -> list:
    return [conn.execute(q).fetchall() for q in _OBJECTS]


def test_update_from_0_1_0_makes_the_cdc_objects(pg_cluster, db_name, out_dir):
    with pg_cluster.connect(db_name, autocommit=True) as fresh:
        expected = _objects(fresh)
    assert expected[1], "no CDC function in a new install"
    pg_cluster.drop_database("cdc_upgrade")
    pg_cluster.create_database("cdc_upgrade", extension=False)
    try:
        with pg_cluster.connect("cdc_upgrade", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION orochi VERSION '0.1.0'")
            assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE '%cdc%'").fetchone()[0] == 0
            conn.execute("ALTER EXTENSION orochi UPDATE TO '0.2.0'")
            assert _objects(conn) == expected
            # and it works: a heap and an orochi table streamed to files
            conn.execute("CREATE TABLE h (id int PRIMARY KEY, v text)")
            conn.execute("CREATE FOREIGN TABLE o (id int, v text) SERVER orochi")
            create_subscription(conn, "s", ["h", "o"], "file", "json", {"directory": out_dir})
            dsn = pg_cluster.dsn("cdc_upgrade")
            assert cdc_once(dsn) == "cdc: s: 0 events"
            conn.execute("INSERT INTO h VALUES (1, 'a')")
            conn.execute("INSERT INTO o VALUES (2, 'b')")
            conn.execute("UPDATE o SET v = 'c'")
            assert cdc_once(dsn) == "cdc: s: 4 events"  # the orochi table keyed by every column: d + c
            assert [(e["table"], e["op"], e["after"]) for e in file_events(out_dir)] == [
                ("h", "c", {"id": 1, "v": "a"}), ("o", "c", {"id": 2, "v": "b"}), ("o", "d", None),
                ("o", "c", {"id": 2, "v": "c"})]
            drop_slots(conn)
    finally:
        pg_cluster.drop_database("cdc_upgrade")
