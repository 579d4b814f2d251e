"""Who may do what with workload management: (owner, granted, ungranted,
superuser) x every workload function, the catalog tables and the settings
that would let a session leave its pool.  Each cell succeeds or fails with
SQLSTATE 42501 (insufficient_privilege), as ``OPS`` says.

Pools and classes belong to nobody: they are server-wide controls over every
role, so only superusers define them (docs/workload.md, Privileges).  The
actors, all but the superuser without superuser rights:

- ``owner``: owns the workload database and a table in it (owning things is
  not administering the pools);
- ``granted``: a superuser granted it EXECUTE on every workload function (not
  enough: the functions check for a superuser themselves);
- ``ungranted``: nothing granted;
- ``superuser``: the cluster's superuser, who created the extension.

``test_every_workload_function_is_in_the_matrix`` keeps the table complete.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors, sql

ACTORS = ("owner", "granted", "ungranted", "superuser")
ROLES = {"owner": "wl_priv_owner", "granted": "wl_priv_granted", "ungranted": "wl_priv_ungranted",
         "superuser": "postgres"}

ALL = frozenset(ACTORS)
SUPER = frozenset({"superuser"})

#: what each cell finds before its action: a pool ``p`` with a class ``c``,
#: and a pool ``spare`` nothing names
SETUP = ["SELECT orochi.create_resource_pool('p', 2)",
         "SELECT orochi.create_resource_pool('spare', 2)",
         "SELECT orochi.create_workload_class('c', 'p', '{\"application_name\": \"priv-%\"}')"]


@dataclass(frozen=True)
class Op:
    name: str
    action: str          # {role}, {role_lit}: the actor's role; {pid}: the admin session's pid
    allowed: frozenset


OPS = [
    # ---------------------------------------------------------------- administration
    Op("create_resource_pool", "SELECT orochi.create_resource_pool('q', 1)", SUPER),
    Op("alter_resource_pool", "SELECT orochi.alter_resource_pool('p', max_concurrency => 3)", SUPER),
    Op("drop_resource_pool", "SELECT orochi.drop_resource_pool('spare')", SUPER),
    Op("create_workload_class", "SELECT orochi.create_workload_class('d', 'p', '{{}}')", SUPER),
    Op("alter_workload_class", "SELECT orochi.alter_workload_class('c', pool => 'spare')", SUPER),
    Op("drop_workload_class", "SELECT orochi.drop_workload_class('c')", SUPER),
    Op("assign_workload_class_own_session", "SELECT orochi.assign_workload_class('c')", SUPER),
    Op("assign_workload_class_to_no_class", "SELECT orochi.assign_workload_class(NULL)", SUPER),
    Op("assign_workload_class_role", "SELECT orochi.assign_workload_class('c', role => {role_lit})", SUPER),
    Op("assign_workload_class_pid", "SELECT orochi.assign_workload_class('c', pid => {pid})", SUPER),
    Op("workload_reload", "SELECT orochi.workload_reload()", SUPER),
    Op("pool_stats_reset", "SELECT orochi.pool_stats_reset()", SUPER),
    Op("pool_stats_reset_one", "SELECT orochi.pool_stats_reset('p')", SUPER),
    # internal
    Op("workload_publish", "SELECT orochi.workload_publish()", SUPER),
    Op("workload_assign_session", "SELECT orochi.workload_assign_session({pid}, 'c')", SUPER),
    # ---------------------------------------------------------------- monitoring
    Op("list_resource_pools", "SELECT * FROM orochi.list_resource_pools()", ALL),
    Op("list_workload_classes", "SELECT * FROM orochi.list_workload_classes()", ALL),
    Op("pool_stats", "SELECT * FROM orochi.pool_stats()", ALL),
    Op("workload_status", "SELECT * FROM orochi.workload_status()", ALL),
    Op("session_resources", "SELECT * FROM orochi.session_resources()", ALL),
    Op("queued_queries", "SELECT * FROM orochi.queued_queries()", ALL),
    # ---------------------------------------------------------------- the catalog
    Op("read_resource_pools", "SELECT * FROM orochi.resource_pools", SUPER),
    Op("read_workload_classes", "SELECT * FROM orochi.workload_classes", SUPER),
    Op("read_workload_role_classes", "SELECT * FROM orochi.workload_role_classes", SUPER),
    Op("write_resource_pools", "UPDATE orochi.resource_pools SET max_concurrency = 1 WHERE false", SUPER),
    Op("write_workload_classes", "DELETE FROM orochi.workload_classes WHERE false", SUPER),
    Op("write_workload_role_classes", "DELETE FROM orochi.workload_role_classes WHERE false", SUPER),
    Op("pool_id_sequence", "SELECT nextval('orochi.resource_pools_pool_id_seq')", SUPER),
    Op("class_id_sequence", "SELECT nextval('orochi.workload_classes_class_id_seq')", SUPER),
    # ---------------------------------------------------------------- leaving the pools
    Op("set_workload_enabled", "SET orochi.workload_enabled = off", SUPER),
    Op("set_config_workload_enabled", "SELECT pg_catalog.set_config('orochi.workload_enabled', 'off', false)",
       SUPER),
    Op("set_default_query_timeout", "SET orochi.default_query_timeout_ms = 0", SUPER),
    Op("alter_own_role_set_workload_enabled", "ALTER ROLE {role} SET orochi.workload_enabled = off", SUPER),
    Op("alter_database_set_workload_enabled", "ALTER DATABASE postgres SET orochi.workload_enabled = off", SUPER),
]

#: functions of schema orochi that belong to workload management
WORKLOAD_FUNCTIONS = {
    "create_resource_pool", "alter_resource_pool", "drop_resource_pool", "create_workload_class",
    "alter_workload_class", "drop_workload_class", "assign_workload_class", "workload_reload",
    "pool_stats_reset", "workload_publish", "workload_assign_session", "list_resource_pools",
    "list_workload_classes", "pool_stats", "workload_status", "session_resources", "queued_queries",
}


def _action(op: Op, role: str, pid: int) -> sql.Composed:
    return sql.SQL(op.action).format(role=sql.Identifier(role), role_lit=sql.Literal(role), pid=sql.Literal(pid))


@pytest.fixture(scope="module")
def actor_roles(wl_cluster):
    """The three roles that are not superusers; the owner owns the workload
    database and a table; the granted role may EXECUTE every workload
    function."""
    wl_cluster.ensure_running()
    with psycopg.connect(wl_cluster.dsn("postgres"), autocommit=True) as c:
        for actor in ("owner", "granted", "ungranted"):
            ident = sql.Identifier(ROLES[actor])
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
            c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        owner = sql.Identifier(ROLES["owner"])
        c.execute(sql.SQL("ALTER DATABASE postgres OWNER TO {}").format(owner))
        c.execute("DROP TABLE IF EXISTS public.wl_priv_table")
        c.execute("CREATE TABLE public.wl_priv_table (id int)")
        c.execute(sql.SQL("ALTER TABLE public.wl_priv_table OWNER TO {}").format(owner))
        functions = [r[0] for r in c.execute(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p "
            "WHERE p.pronamespace = 'orochi'::regnamespace AND p.proname = ANY(%s)",
            (sorted(WORKLOAD_FUNCTIONS),)).fetchall()]
        for f in functions:
            c.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                sql.SQL(f), sql.Identifier(ROLES["granted"])))
    yield ROLES
    wl_cluster.ensure_running()
    with psycopg.connect(wl_cluster.dsn("postgres"), autocommit=True) as c:
        c.execute("ALTER DATABASE postgres OWNER TO postgres")
        c.execute("ALTER DATABASE postgres RESET ALL")
        c.execute("DROP TABLE IF EXISTS public.wl_priv_table")
        for f in functions:
            c.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM {}").format(
                sql.SQL(f), sql.Identifier(ROLES["granted"])))
        for actor in ("owner", "granted", "ungranted"):
            ident = sql.Identifier(ROLES[actor])
            c.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(ident))
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_workload_privilege_matrix(wl, actor_roles, op: Op, actor: str):
    for statement in SETUP:
        wl.q(statement)
    conn = wl.client("matrix", user=actor_roles[actor])
    action = _action(op, actor_roles[actor], wl.admin.info.backend_pid)
    try:
        if actor in op.allowed:
            conn.execute(action)
        else:
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.execute(action)
            # refused by a check of the caller's rights, never by reaching the catalog with them
            if not op.name.startswith(("read_", "write_", "pool_id_", "class_id_")):
                assert "orochi.resource_pools" not in str(exc.value)
                assert "table resource_pools" not in str(exc.value)
                assert "table workload_" not in str(exc.value)
    finally:
        wl.q(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(actor_roles[actor]))
             if actor != "superuser" else "ALTER ROLE postgres RESET orochi.workload_enabled")
        wl.q("ALTER DATABASE postgres RESET orochi.workload_enabled")


def test_a_refused_change_changes_nothing(wl, actor_roles):
    """The pools in force and the catalog are as before every refused cell."""
    for statement in SETUP:
        wl.q(statement)
    before = (wl.q("SELECT * FROM orochi.list_resource_pools() ORDER BY 1"),
              wl.q("SELECT * FROM orochi.list_workload_classes() ORDER BY 1"),
              wl.one("SELECT generation FROM orochi.workload_status()"))
    for actor in ("owner", "granted", "ungranted"):
        conn = wl.client("refused", user=actor_roles[actor])
        for op in OPS:
            if op.allowed == SUPER and not op.name.startswith(("read_", "set_", "alter_own", "alter_database")):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(_action(op, actor_roles[actor], wl.admin.info.backend_pid))
    after = (wl.q("SELECT * FROM orochi.list_resource_pools() ORDER BY 1"),
             wl.q("SELECT * FROM orochi.list_workload_classes() ORDER BY 1"),
             wl.one("SELECT generation FROM orochi.workload_status()"))
    assert after == before


def test_granted_execute_is_refused_by_the_functions_own_check(wl, actor_roles):
    conn = wl.client("granted", user=actor_roles["granted"])
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        conn.execute("SELECT orochi.create_resource_pool('q', 1)")
    assert exc.value.diag.message_primary == "must be superuser to create resource pools"
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        conn.execute("SELECT orochi.pool_stats_reset()")
    assert "superuser" in exc.value.diag.message_primary


def test_a_role_bound_to_a_class_cannot_leave_it(wl, actor_roles):
    """assign_workload_class(role =>) binds a role's sessions: neither its
    application_name (the client's choice, which classes may match) nor SET
    ROLE (classification is by session user) moves them."""
    for statement in SETUP:
        wl.q(statement)
    wl.q("SELECT orochi.create_workload_class('open', 'spare', '{\"application_name\": \"open-%\"}')")
    wl.q("GRANT wl_priv_owner TO wl_priv_ungranted")
    try:
        wl.q("SELECT orochi.assign_workload_class('c', role => 'wl_priv_ungranted')")
        conn = wl.client("somewhere", user=actor_roles["ungranted"])
        conn.execute("SELECT 1")
        assert wl.session(conn.pid)["pool_name"] == "p"
        conn.execute("SET application_name = 'open-door'")
        conn.execute("SELECT 1")
        assert wl.session(conn.pid)["pool_name"] == "p"
        conn.execute("SET ROLE wl_priv_owner")
        conn.execute("SELECT 1")
        assert (wl.session(conn.pid)["pool_name"], wl.session(conn.pid)["class_name"]) == ("p", "c")
        # an unbound role's application_name does choose among the classes
        free = wl.client("free", user=actor_roles["owner"])
        free.execute("SET application_name = 'open-door'")
        free.execute("SELECT 1")
        assert wl.session(free.pid)["pool_name"] == "spare"
    finally:
        wl.q("REVOKE wl_priv_owner FROM wl_priv_ungranted")


def test_every_workload_function_is_in_the_matrix(wl):
    """Every function of sql/80_workload.sql has a row (a new one must get
    one): the workload functions of schema orochi are WORKLOAD_FUNCTIONS, and
    each is called by an op."""
    names = {r[0] for r in wl.q(
        "SELECT p.proname::text FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'orochi'::regnamespace "
        "AND (p.proname ~ '(resource_pool|workload|pool_stats|session_resources|queued_queries)')")}
    assert names == WORKLOAD_FUNCTIONS
    called = {f for f in WORKLOAD_FUNCTIONS for op in OPS if f"orochi.{f}(" in op.action}
    assert called == WORKLOAD_FUNCTIONS
