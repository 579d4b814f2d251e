"""The SQL surface: bad input gets a clear error with the right SQLSTATE;
only superusers define pools, in the workload database; changes are
transactional (a rolled-back change is never in force); names are data,
never SQL; without preloading, workload management says what it needs."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from workload_helpers import pool_with_class


def sqlstate_of(wl, query: str, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as exc:
        wl.q(query, params)
    return exc.value


@pytest.mark.parametrize("concurrency", [0, -1, -100])
def test_pool_concurrency_must_be_positive(wl, concurrency):
    e = sqlstate_of(wl, "SELECT orochi.create_resource_pool('p', %s)", (concurrency,))
    assert e.sqlstate == "22023"
    assert f"max_concurrency must be at least 1, not {concurrency}" in e.diag.message_primary
    assert wl.q("SELECT count(*) FROM orochi.resource_pools") == [(0,)]
    wl.q("SELECT orochi.create_resource_pool('p', 1)")
    e = sqlstate_of(wl, "SELECT orochi.alter_resource_pool('p', max_concurrency => %s)", (concurrency,))
    assert e.sqlstate == "22023"


@pytest.mark.parametrize("args, message", [
    ("NULL, 1", "resource pool name cannot be NULL"),
    ("'', 1", "resource pool name cannot be empty"),
    ("'p', NULL", "max_concurrency cannot be NULL"),
    ("'p', 1, max_queue => -1", "max_queue must be at least 0, not -1"),
    ("'p', 1, queue_timeout_ms => 0", "queue_timeout_ms must be at least 1, not 0"),
    ("'p', 1, query_timeout_ms => -5", "query_timeout_ms must be at least 0, not -5"),
    ("'p', 1, work_mem => 'lots'", 'invalid value for work_mem: "lots"'),
    ("'p', 1, work_mem => '1kB'", 'invalid value for work_mem: "1kB"'),
    (f"'{'x' * 64}', 1", "is too long"),
])
def test_bad_pool_arguments(wl, args, message):
    e = sqlstate_of(wl, f"SELECT orochi.create_resource_pool({args})")
    assert e.sqlstate == "22023"
    assert message in e.diag.message_primary


def test_duplicate_and_default_pool(wl):
    wl.q("SELECT orochi.create_resource_pool('p', 1)")
    e = sqlstate_of(wl, "SELECT orochi.create_resource_pool('p', 2)")
    assert (e.sqlstate, e.diag.message_primary) == ("42710", 'resource pool "p" already exists')
    for call in ("orochi.create_resource_pool('default', 1)", "orochi.alter_resource_pool('default', 3)",
                 "orochi.drop_resource_pool('default')"):
        e = sqlstate_of(wl, f"SELECT {call}")
        assert e.sqlstate == "0A000"
        assert "default pool" in e.diag.message_primary
        assert "orochi.default_pool_concurrency" in e.diag.message_hint
    e = sqlstate_of(wl, "SELECT orochi.alter_resource_pool('nope', 3)")
    assert (e.sqlstate, e.diag.message_primary) == ("42704", 'resource pool "nope" does not exist')
    e = sqlstate_of(wl, "SELECT orochi.drop_resource_pool('nope')")
    assert e.sqlstate == "42704"
    wl.q("SELECT orochi.drop_resource_pool('nope', if_exists => true)")


def test_dropping_a_pool_a_class_uses(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    e = sqlstate_of(wl, "SELECT orochi.drop_resource_pool('p')")
    assert e.sqlstate == "2BP01"
    assert e.diag.message_primary == 'cannot drop resource pool "p" because workload classes use it'
    assert '"p_class"' in e.diag.message_detail
    assert [r[0] for r in wl.q("SELECT pool_name FROM orochi.list_resource_pools()")] == ["default", "p"]


def test_dropping_a_pool_that_runs_statements(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    wl.q("SELECT pg_catalog.pg_advisory_lock(7300000)")
    a = wl.client("cl-a").start("SELECT pg_catalog.pg_advisory_xact_lock_shared(7300000)")
    wl.wait_running(a, "p")
    b = wl.client("cl-b").start("SELECT 'b'")
    wl.wait_queued(b, "p")
    wl.q("SELECT orochi.drop_workload_class('p_class')")
    e = sqlstate_of(wl, "SELECT orochi.drop_resource_pool('p')")
    assert e.sqlstate == "55006"
    assert e.diag.message_primary == 'resource pool "p" is in use'
    assert e.diag.message_detail == "1 statements run in it and 1 wait in its queue."
    wl.q("SELECT pg_catalog.pg_advisory_unlock(7300000)")
    a.result()
    b.result()
    wl.q("SELECT orochi.drop_resource_pool('p')")


def test_a_pool_in_use_can_drop_when_the_dropper_runs_in_it(wl):
    """The statement calling drop_resource_pool holds a slot itself."""
    wl.q("SELECT orochi.create_resource_pool('p', 1)")
    wl.q("""SELECT orochi.create_workload_class('c', 'p', '{"application_name": "dropper"}')""")
    d = wl.client("dropper")
    d.execute("SELECT orochi.drop_workload_class('c')")      # runs in p, leaves it
    wl.q("""SELECT orochi.create_workload_class('c', 'p', '{"application_name": "dropper"}')""")
    d.execute("SELECT orochi.assign_workload_class('c')")
    d.execute("SELECT orochi.drop_workload_class('c'), orochi.drop_resource_pool('p')")


@pytest.mark.parametrize("match, sqlstate, message", [
    ('{"rol": "x"}', "22023", 'unknown match criterion "rol"'),
    ('["role"]', "22023", "match must be a JSON object"),
    ('{"kind": "select"}', "22023", 'unknown statement kind "select"'),
    ('{"kind": []}', "22023", 'match criterion "kind" cannot be an empty list'),
    ('{"role": 5}', "22023", 'match criterion "role" must be a non-empty string'),
    ('{"min_cost": -1}', "22023", 'match criterion "min_cost" must be a number of at least 0'),
    ('{"min_cost": "big"}', "22023", 'match criterion "min_cost" must be a number of at least 0'),
    ('{"role": "wl_no_such_role"}', "42704", 'role "wl_no_such_role" does not exist'),
    ('{"database": "wl_no_such_db"}', "3D000", 'database "wl_no_such_db" does not exist'),
    ('{"application_name": ["a","b","c","d","e","f","g","h","i"]}', "54000", "at most 8"),
    ('{"application_name": "etl\\\\"}', "22023", 'invalid application_name pattern "etl\\"'),
])
def test_bad_class_match(wl, match, sqlstate, message):
    wl.q("SELECT orochi.create_resource_pool('p', 1)")
    e = sqlstate_of(wl, "SELECT orochi.create_workload_class('c', 'p', %s::jsonb)", (match,))
    assert e.sqlstate == sqlstate
    assert message in e.diag.message_primary
    assert wl.q("SELECT count(*) FROM orochi.workload_classes") == [(0,)]


def test_class_naming_an_unknown_pool(wl):
    e = sqlstate_of(wl, "SELECT orochi.create_workload_class('c', 'nope', '{}')")
    assert (e.sqlstate, e.diag.message_primary) == ("42704", 'resource pool "nope" does not exist')
    assert "create_resource_pool" in e.diag.message_hint
    e = sqlstate_of(wl, "SELECT orochi.create_workload_class('c', NULL, '{}')")
    assert e.sqlstate == "22023"
    wl.q("SELECT orochi.create_workload_class('c', 'default', '{}')")
    e = sqlstate_of(wl, "SELECT orochi.alter_workload_class('c', pool => 'nope')")
    assert e.sqlstate == "42704"
    e = sqlstate_of(wl, "SELECT orochi.create_workload_class('c', 'default', '{}')")
    assert (e.sqlstate, e.diag.message_primary) == ("42710", 'workload class "c" already exists')
    e = sqlstate_of(wl, "SELECT orochi.assign_workload_class('nope')")
    assert (e.sqlstate, e.diag.message_primary) == ("42704", 'workload class "nope" does not exist')
    e = sqlstate_of(wl, "SELECT orochi.assign_workload_class('c', role => 'postgres', pid => 1)")
    assert e.sqlstate == "22023"
    e = sqlstate_of(wl, "SELECT orochi.assign_workload_class('c', pid => 1)")
    assert e.sqlstate == "22023" and "PID 1 is not a PostgreSQL backend process" in e.diag.message_primary


def test_names_are_data(wl):
    weird = "p'; DROP TABLE orochi.resource_pools; --\""
    wl.q("SELECT orochi.create_resource_pool(%s, 2)", (weird,))
    wl.q("SELECT orochi.create_workload_class(%s, %s, '{}')", (weird, weird))
    assert wl.q("SELECT pool_name FROM orochi.list_resource_pools() WHERE NOT is_default") == [(weird,)]
    assert wl.q("SELECT class_name, pool_name FROM orochi.list_workload_classes()") == [(weird, weird)]
    c = wl.client("x")
    c.execute("SELECT 1")
    assert wl.session(c.pid)["pool_name"] == weird


def test_changes_are_transactional(wl):
    with wl.admin.transaction():
        wl.q("SELECT orochi.create_resource_pool('kept', 1)")
    with pytest.raises(RuntimeError):
        with wl.admin.transaction():
            wl.q("SELECT orochi.create_resource_pool('lost', 1)")
            wl.q("SELECT orochi.alter_resource_pool('kept', max_concurrency => 9)")
            raise RuntimeError("roll back")
    with wl.admin.transaction():
        wl.q("SELECT orochi.alter_resource_pool('kept', max_concurrency => 2)")
        wl.q("SAVEPOINT s")
        wl.q("SELECT orochi.create_resource_pool('lost', 1)")
        wl.q("ROLLBACK TO SAVEPOINT s")
    assert wl.q("SELECT pool_name, max_concurrency FROM orochi.list_resource_pools() WHERE NOT is_default") == \
        [("kept", 2)]


def test_a_change_is_in_force_only_once_committed(wl):
    other = wl.client("other")
    generation = wl.one("SELECT generation FROM orochi.workload_status()")
    wl.admin.autocommit = False
    try:
        wl.q("SELECT orochi.create_resource_pool('pending', 1)")
        assert other.execute("SELECT count(*) FROM orochi.list_resource_pools() WHERE pool_name = 'pending'") == \
            [(0,)]
        wl.admin.commit()
    finally:
        wl.admin.autocommit = True
    assert other.execute("SELECT count(*) FROM orochi.list_resource_pools() WHERE pool_name = 'pending'") == [(1,)]
    assert wl.one("SELECT generation FROM orochi.workload_status()") > generation


def test_prepare_transaction_with_a_change_is_refused(wl):
    wl.admin.autocommit = False
    try:
        wl.q("SELECT orochi.create_resource_pool('p2pc', 1)")
        e = sqlstate_of(wl, "PREPARE TRANSACTION 'wl_2pc'")
        assert e.sqlstate == "0A000"
        assert "cannot PREPARE a transaction that changed resource pools" in e.diag.message_primary
        wl.admin.rollback()
    finally:
        wl.admin.autocommit = True
    assert wl.q("SELECT count(*) FROM orochi.resource_pools") == [(0,)]


def test_alter_pool_settings(wl):
    wl.q("SELECT orochi.create_resource_pool('p', 1, max_queue => 3, queue_timeout_ms => 100, "
         "query_timeout_ms => 200, priority => 1, work_mem => '1MB')")
    assert wl.q("SELECT max_concurrency, max_queue, queue_timeout_ms, query_timeout_ms, priority, work_mem "
                "FROM orochi.list_resource_pools() WHERE pool_name = 'p'") == [(1, 3, 100, 200, 1, "1024kB")]
    wl.q("SELECT orochi.alter_resource_pool('p', max_concurrency => 4, priority => 7)")
    assert wl.q("SELECT max_concurrency, max_queue, queue_timeout_ms, query_timeout_ms, priority, work_mem "
                "FROM orochi.list_resource_pools() WHERE pool_name = 'p'") == [(4, 3, 100, 200, 7, "1024kB")]
    wl.q("SELECT orochi.alter_resource_pool('p', max_queue => -1, queue_timeout_ms => -1, "
         "query_timeout_ms => -1, work_mem => 'default', new_name => 'q')")
    assert wl.q("SELECT pool_name, max_concurrency, max_queue, queue_timeout_ms, query_timeout_ms, priority, "
                "work_mem FROM orochi.list_resource_pools() WHERE NOT is_default") == \
        [("q", 4, None, None, None, 7, None)]


def test_raising_concurrency_admits_the_queue(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    wl.q("SELECT pg_catalog.pg_advisory_lock(7300001)")
    a = wl.client("cl-a").start("SELECT pg_catalog.pg_advisory_xact_lock_shared(7300001)")
    wl.wait_running(a, "p")
    b = wl.client("cl-b").start("SELECT 'b'")
    wl.wait_queued(b, "p")
    wl.q("SELECT orochi.alter_resource_pool('p', max_concurrency => 2)")
    assert b.result() == [("b",)]
    wl.q("SELECT pg_catalog.pg_advisory_unlock(7300001)")
    a.result()


def test_only_superusers_define_pools(wl):
    wl.q("DROP ROLE IF EXISTS wl_plain")
    wl.q("CREATE ROLE wl_plain LOGIN")
    try:
        plain = wl.client("x", user="wl_plain")
        for call in ("orochi.create_resource_pool('p', 1)", "orochi.drop_resource_pool('p')",
                     "orochi.create_workload_class('c', 'default')", "orochi.workload_reload()",
                     "orochi.pool_stats_reset()", "orochi.workload_publish()"):
            with pytest.raises(errors.InsufficientPrivilege):
                plain.execute(f"SELECT {call}")
        # granted EXECUTE is not enough: the functions check for a superuser
        wl.q("GRANT EXECUTE ON FUNCTION orochi.create_resource_pool(text, integer, integer, integer, integer, "
             "integer, text) TO wl_plain")
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            plain.execute("SELECT orochi.create_resource_pool('p', 1)")
        assert "must be superuser to create resource pools" in str(exc.value)
        # monitoring is for everyone
        assert plain.execute("SELECT count(*) FROM orochi.list_resource_pools()") == [(1,)]
        plain.execute("SELECT * FROM orochi.workload_status()")
        plain.close()
    finally:
        wl.reset()
        wl.q("REVOKE ALL ON FUNCTION orochi.create_resource_pool(text, integer, integer, integer, integer, "
             "integer, text) FROM wl_plain")
        wl.q("DROP ROLE wl_plain")


def test_changes_only_in_the_workload_database(wl):
    wl.q("DROP DATABASE IF EXISTS wl_elsewhere")
    wl.q("CREATE DATABASE wl_elsewhere")
    try:
        other = wl.client("x", dbname="wl_elsewhere")
        other.execute("CREATE EXTENSION orochi")
        with pytest.raises(errors.ObjectNotInPrerequisiteState) as exc:
            other.execute("SELECT orochi.create_resource_pool('p', 1)")
        assert 'defined in database "postgres"' in exc.value.diag.message_primary
        assert 'Connect to database "postgres"' in exc.value.diag.message_hint
        # what is in force is the same everywhere
        wl.q("SELECT orochi.create_resource_pool('p', 1)")
        assert other.execute("SELECT pool_name FROM orochi.list_resource_pools() ORDER BY 1") == \
            [("default",), ("p",)]
        other.close()
    finally:
        wl.reset()
        wl.q("DROP DATABASE IF EXISTS wl_elsewhere WITH (FORCE)")


def test_reload_reads_the_catalog(wl):
    """A row written behind the API's back is in force after workload_reload()."""
    wl.q("INSERT INTO orochi.resource_pools (pool_name, max_concurrency) VALUES ('sneaky', 3)")
    assert wl.q("SELECT count(*) FROM orochi.list_resource_pools() WHERE pool_name = 'sneaky'") == [(0,)]
    wl.q("SELECT orochi.workload_reload()")
    assert wl.q("SELECT max_concurrency FROM orochi.list_resource_pools() WHERE pool_name = 'sneaky'") == [(3,)]
    assert wl.q("SELECT loaded, load_error FROM orochi.workload_status()") == [(True, None)]


def test_pool_stats_reset(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    c = wl.client("cl-a")
    c.execute("SELECT 1")
    assert wl.stats("p")["admitted"] == 1
    wl.q("SELECT orochi.pool_stats_reset('p')")
    s = wl.stats("p")
    assert (s["admitted"], s["mean_wait_ms"], s["p95_wait_ms"]) == (0, None, None)
    e = sqlstate_of(wl, "SELECT orochi.pool_stats_reset('nope')")
    assert e.sqlstate == "42704"


# ------------------------------------------------------------------ without preloading


@pytest.fixture
def unpreloaded(make_cluster):
    """A cluster without orochi in shared_preload_libraries, and a database with the extension."""
    pg = make_cluster("nopreload", initdb_settings={"shared_preload_libraries": ""},
                      settings={"orochi.workload_enabled": True})
    pg.create_database("app")
    return pg


def test_without_preloading_it_cannot_be_enabled(unpreloaded):
    db = unpreloaded.connect("app", autocommit=True)
    db.execute("SELECT orochi.python_info()")       # orochi.so is loaded in this session
    with pytest.raises(errors.ObjectNotInPrerequisiteState) as exc:
        db.execute("SET orochi.workload_enabled = on")
    assert "orochi.workload_enabled needs orochi in shared_preload_libraries" in exc.value.diag.message_primary
    assert "shared_preload_libraries" in exc.value.diag.message_hint
    for fn in ("pool_stats()", "queued_queries()", "session_resources()", "list_resource_pools()"):
        with pytest.raises(errors.ObjectNotInPrerequisiteState):
            db.execute(f"SELECT * FROM orochi.{fn}")
    status = db.execute("SELECT enabled, preloaded, loaded FROM orochi.workload_status()").fetchone()
    assert status == (False, False, None)
    # pools can be defined all the same; they take effect once the server preloads orochi
    db.close()
    unpreloaded.execute("CREATE EXTENSION orochi")
    unpreloaded.execute("SELECT orochi.create_resource_pool('later', 1)")
    assert unpreloaded.execute("SELECT pool_name FROM orochi.resource_pools") == [("later",)]


def test_without_preloading_the_setting_in_the_configuration_is_refused(unpreloaded):
    pg = unpreloaded
    offset = pg.log_offset()
    with pg.connect("app", autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
        conn.execute("SELECT orochi.python_info()")
        assert conn.execute("SHOW orochi.workload_enabled").fetchone() == ("off",)
    assert "orochi.workload_enabled needs orochi in shared_preload_libraries" in pg.log_since(offset)


def test_repeatable_read_change_publishes_what_others_committed_meanwhile(wl):
    """A REPEATABLE READ transaction's snapshot may predate another change;
    what it publishes at commit is the catalog as committed, both changes."""
    other = wl.client("other-admin")
    wl.admin.autocommit = False
    try:
        wl.q("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        wl.q("SELECT 1")                                            # the snapshot is taken here
        other.execute("SELECT orochi.create_resource_pool('first', 1)")
        wl.q("SELECT orochi.create_resource_pool('second', 1)")
        wl.admin.commit()
    finally:
        wl.admin.autocommit = True
    assert [r[0] for r in wl.q("SELECT pool_name FROM orochi.list_resource_pools() ORDER BY 1")] == \
        ["default", "first", "second"]
