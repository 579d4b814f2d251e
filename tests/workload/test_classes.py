"""Which pool a statement goes to: workload classes matching role,
database, application_name, statement kind and estimated cost; roles and
sessions assigned to a class; the order classes are tried in; sessions
classified again when their role, application_name or the definitions
change."""

from __future__ import annotations

import json

import psycopg
import pytest

from workload_helpers import pool_with_class


def pool_of(wl, client) -> str:
    """The pool of the client's last statement."""
    return wl.session(client.pid)["pool_name"]


def class_of(wl, client) -> str | None:
    return wl.session(client.pid)["class_name"]


def make_pools(wl, *names: str) -> None:
    for name in names:
        wl.q("SELECT orochi.create_resource_pool(%s, 5)", (name,))


def create_class(wl, name: str, pool: str, match: dict, priority: int | None = None) -> None:
    wl.q("SELECT orochi.create_workload_class(%s, %s, %s::jsonb, %s)", (name, pool, json.dumps(match), priority))


@pytest.fixture
def roles(wl):
    names = ["wl_analyst", "wl_alice", "wl_bob"]
    for r in reversed(names):
        wl.q(f"DROP ROLE IF EXISTS {r}")
    wl.q("CREATE ROLE wl_analyst NOLOGIN")
    wl.q("CREATE ROLE wl_alice LOGIN IN ROLE wl_analyst")
    wl.q("CREATE ROLE wl_bob LOGIN")
    wl.q("GRANT USAGE ON SCHEMA orochi TO wl_alice, wl_bob")
    yield names
    wl.reset()
    wl.q("REVOKE USAGE ON SCHEMA orochi FROM wl_alice, wl_bob")
    for r in reversed(names):
        wl.q(f"DROP ROLE IF EXISTS {r}")


def test_unmatched_statements_go_to_the_default_pool(wl):
    make_pools(wl, "p")
    create_class(wl, "c", "p", {"application_name": "etl"})
    b = wl.client("web")
    b.execute("SELECT 1")
    assert (pool_of(wl, b), class_of(wl, b)) == ("default", None)


def test_role_match_by_membership(wl, roles):
    make_pools(wl, "analytics")
    create_class(wl, "analysts", "analytics", {"role": "wl_analyst"})
    alice = wl.client("x", user="wl_alice")
    bob = wl.client("x", user="wl_bob")
    alice.execute("SELECT 1")
    bob.execute("SELECT 1")
    assert (pool_of(wl, alice), class_of(wl, alice)) == ("analytics", "analysts")
    assert pool_of(wl, bob) == "default"
    # a superuser is a member of every role, but is not taken for one
    admin_like = wl.client("x")
    admin_like.execute("SELECT 1")
    assert pool_of(wl, admin_like) == "default"


def test_database_match(wl):
    make_pools(wl, "p")
    wl.q("DROP DATABASE IF EXISTS wl_other")
    wl.q("CREATE DATABASE wl_other")
    try:
        create_class(wl, "other_db", "p", {"database": "wl_other"})
        o = wl.client("x", dbname="wl_other")        # no orochi extension there: admitted all the same
        o.execute("SELECT 1")
        here = wl.client("x")
        here.execute("SELECT 1")
        assert pool_of(wl, o) == "p"
        assert pool_of(wl, here) == "default"
        o.close()
    finally:
        wl.reset()
        wl.q("DROP DATABASE IF EXISTS wl_other WITH (FORCE)")


def test_application_name_patterns_and_change_of_name(wl):
    make_pools(wl, "etl", "bi")
    create_class(wl, "etl", "etl", {"application_name": ["loader-%", "airflow"]})
    create_class(wl, "bi", "bi", {"application_name": "tableau_"})
    c = wl.client("loader-7")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "etl"
    c.execute("SET application_name = 'airflow'")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "etl"
    c.execute("SET application_name = 'tableau1'")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "bi"
    c.execute("SET application_name = 'tableau12'")      # _ is one character
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "default"
    # an escaped wildcard is a literal one
    create_class(wl, "literal", "bi", {"application_name": "50\\%"})
    c.execute("SET application_name = '500'")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "default"
    c.execute("SET application_name = '50%'")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "bi"


def test_statement_kind(wl):
    make_pools(wl, "reads", "writes", "ddl")
    create_class(wl, "r", "reads", {"kind": "read", "application_name": "app"})
    create_class(wl, "w", "writes", {"kind": "write", "application_name": "app"})
    create_class(wl, "d", "ddl", {"kind": "ddl", "application_name": "app"})
    c = wl.client("app")
    try:
        cases = [
            ("CREATE TABLE wl_kinds (x int)", "ddl"),
            ("INSERT INTO wl_kinds VALUES (1)", "writes"),
            ("SELECT * FROM wl_kinds", "reads"),
            ("UPDATE wl_kinds SET x = 2", "writes"),
            ("SELECT * FROM wl_kinds FOR UPDATE", "writes"),
            ("WITH d AS (DELETE FROM wl_kinds RETURNING x) SELECT * FROM d", "writes"),
            ("CREATE INDEX ON wl_kinds (x)", "ddl"),
            ("ANALYZE wl_kinds", "ddl"),
            ("DO $$ BEGIN PERFORM 1; END $$", "writes"),
            ("DROP TABLE wl_kinds", "ddl"),
        ]
        for query, pool in cases:
            before = wl.stats(pool)["admitted"]
            c.execute(query)
            assert wl.stats(pool)["admitted"] == before + 1, query
            assert pool_of(wl, c) == pool, query
    finally:
        wl.q("DROP TABLE IF EXISTS wl_kinds")


def test_estimated_cost_threshold(wl):
    make_pools(wl, "big")
    create_class(wl, "big", "big", {"min_cost": 10000})
    c = wl.client("any")
    cost = c.execute("EXPLAIN (FORMAT JSON) SELECT count(*) FROM generate_series(1, 10000000) g")[0][0][0]["Plan"][
        "Total Cost"]
    assert cost >= 10000
    c.execute("SELECT count(*) FROM generate_series(1, 10000000) g")
    assert pool_of(wl, c) == "big"
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "default"
    c.execute("CREATE TEMP TABLE wl_cheap (x int)")       # utility statements have no cost
    assert pool_of(wl, c) == "default"


def test_more_specific_class_first_then_name(wl):
    make_pools(wl, "a", "b", "c")
    create_class(wl, "zz_generic", "a", {"application_name": "app%"})
    create_class(wl, "aa_generic", "b", {"application_name": "app"})
    create_class(wl, "specific", "c", {"application_name": "app", "kind": "write"})
    order = [r[0] for r in wl.q("SELECT class_name FROM orochi.list_workload_classes() ORDER BY evaluation_order")]
    assert order == ["specific", "aa_generic", "zz_generic"]
    c = wl.client("app")
    c.execute("SELECT 1")
    assert class_of(wl, c) == "aa_generic"
    c.execute("CREATE TEMP TABLE wl_w (x int)")
    c.execute("INSERT INTO wl_w VALUES (1)")
    assert class_of(wl, c) == "specific"


def test_empty_match_takes_everything(wl):
    make_pools(wl, "all")
    create_class(wl, "all", "all", {})
    c = wl.client("whatever")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "all"


def test_assignment_precedence_session_then_role_then_match(wl, roles):
    make_pools(wl, "m", "r", "s")
    create_class(wl, "by_match", "m", {"application_name": "x"})
    create_class(wl, "by_role", "r", {"application_name": "nobody"})
    create_class(wl, "by_session", "s", {"application_name": "nobody"})
    bob = wl.client("x", user="wl_bob")
    bob.execute("SELECT 1")
    assert class_of(wl, bob) == "by_match"
    wl.q("SELECT orochi.assign_workload_class('by_role', role => 'wl_bob')")
    bob.execute("SELECT 1")
    assert class_of(wl, bob) == "by_role"
    wl.q("SELECT orochi.assign_workload_class('by_session', pid => %s)", (bob.pid,))
    bob.execute("SELECT 1")
    assert class_of(wl, bob) == "by_session"
    # another session of bob keeps the role's class
    bob2 = wl.client("x", user="wl_bob")
    bob2.execute("SELECT 1")
    assert class_of(wl, bob2) == "by_role"
    # removing the assignments, one by one
    wl.q("SELECT orochi.assign_workload_class(NULL, pid => %s)", (bob.pid,))
    bob.execute("SELECT 1")
    assert class_of(wl, bob) == "by_role"
    wl.q("SELECT orochi.assign_workload_class(NULL, role => 'wl_bob')")
    bob.execute("SELECT 1")
    assert class_of(wl, bob) == "by_match"
    assert wl.q("SELECT count(*) FROM orochi.workload_role_classes") == [(0,)]


def test_assign_own_session_and_a_session_not_yet_admitted(wl):
    make_pools(wl, "s")
    create_class(wl, "mine", "s", {"application_name": "nobody"})
    c = wl.client("x")
    c.execute("SELECT orochi.assign_workload_class('mine')")     # this session
    c.execute("SELECT 1")
    assert class_of(wl, c) == "mine"
    fresh = wl.client("y")          # has not run anything yet
    wl.q("SELECT orochi.assign_workload_class('mine', pid => %s)", (fresh.pid,))
    fresh.execute("SELECT 1")
    assert class_of(wl, fresh) == "mine"


def test_role_assignment_and_class_drop(wl, roles):
    make_pools(wl, "r")
    create_class(wl, "by_role", "r", {"application_name": "nobody"})
    wl.q("SELECT orochi.assign_workload_class('by_role', role => 'wl_alice')")
    assert wl.q("SELECT assigned_roles FROM orochi.list_workload_classes()") == [(["wl_alice"],)]
    notices = []
    wl.admin.add_notice_handler(lambda d: notices.append(d.message_primary))
    wl.q("SELECT orochi.drop_workload_class('by_role')")
    assert any("no longer assigned to roles wl_alice" in n for n in notices)
    assert wl.q("SELECT count(*) FROM orochi.workload_role_classes") == [(0,)]


def test_definition_changes_reclassify_running_sessions(wl):
    make_pools(wl, "one", "two")
    create_class(wl, "c", "one", {"application_name": "app"})
    c = wl.client("app")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "one"
    wl.q("SELECT orochi.alter_workload_class('c', pool => 'two')")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "two"
    wl.q("""SELECT orochi.alter_workload_class('c', match => '{"application_name": "other"}')""")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "default"


def test_class_priority_overrides_its_pools(wl):
    wl.q("SELECT orochi.create_resource_pool('p', 1, priority => 3)")
    create_class(wl, "plain", "p", {"application_name": "plain"})
    create_class(wl, "urgent", "p", {"application_name": "urgent"}, priority=9)
    a, b = wl.client("plain"), wl.client("urgent")
    a.execute("SELECT 1")
    b.execute("SELECT 1")
    assert wl.session(a.pid)["priority"] == 3
    assert wl.session(b.pid)["priority"] == 9


def test_dropped_class_and_pool_while_sessions_remember_them(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    c = wl.client("cl-1")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "p"
    wl.q("SELECT orochi.drop_workload_class('p_class')")
    wl.q("SELECT orochi.drop_resource_pool('p')")
    c.execute("SELECT 1")
    assert pool_of(wl, c) == "default"
    assert [r[0] for r in wl.q("SELECT pool_name FROM orochi.pool_stats()")] == ["default"]


def test_plain_user_statements_are_admitted_and_can_read_the_state(wl, roles):
    pool_with_class(wl, "p", "cl-%", 1)
    bob = wl.client("cl-bob", user="wl_bob")
    assert bob.execute("SELECT pool_name, running FROM orochi.pool_stats() WHERE pool_name = 'p'") == [("p", 1)]
    assert bob.execute("SELECT count(*) > 0 FROM orochi.session_resources()") == [(True,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        bob.execute("SELECT orochi.assign_workload_class(NULL)")
