"""Jobs run with their owner's rights and cannot regain their runner's.

The scheduler (orochi-sidecar) connects as a superuser and calls
orochi.run_job_background; a member of the owner may CALL orochi.run_job.
Either way the body runs as the owner in a security-restricted operation:
RESET ROLE, SET ROLE, SET SESSION AUTHORIZATION and set_config('role', ...)
are refused inside it, and the runner's role is what it is again after.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

ESCAPES = {
    "reset_role": "RESET ROLE",
    "set_role": "SET ROLE postgres",
    "set_session_authorization": "SET SESSION AUTHORIZATION postgres",
    "set_config_role": "PERFORM set_config('role', 'postgres', false)",
    "set_local_role": "SET LOCAL ROLE postgres",
}


def _escape_job(owner, name: str, escape: str) -> int:
    """A job whose body tries ``escape``, then records who it is and tries
    to make its owner a superuser."""
    owner.execute("CREATE TABLE IF NOT EXISTS whoami (job text, who text, session_who text, super bool)")
    owner.execute(sql.SQL("""
        CREATE PROCEDURE {}(job_id int, config jsonb) LANGUAGE plpgsql AS $body$
        BEGIN
            {};
            INSERT INTO whoami SELECT {}, current_user, session_user,
                   (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
            EXECUTE format('ALTER ROLE %I SUPERUSER', current_user);
        END $body$""").format(sql.Identifier(name), sql.SQL(ESCAPES[name]), sql.Literal(name)))
    return owner.execute("SELECT orochi.add_job(%s, interval '1 hour')", [name]).fetchone()[0]


def _is_super(admin, role: str) -> bool:
    return admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role]).fetchone()[0]


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_job_body_cannot_become_the_scheduler(fresh_actors, escape):
    a = fresh_actors
    admin, owner = a.conns["superuser"], a.conns["owner"]
    job = _escape_job(owner, escape, escape)
    # the scheduler's way: a superuser's session runs it
    status, message = admin.execute("SELECT status, message FROM orochi.run_job_background(%s)", [job]).fetchone()
    assert status == "Failed"
    assert "cannot set parameter" in message or "permission denied" in message, message
    assert not _is_super(admin, a.role("owner"))
    assert admin.execute("SELECT count(*) FROM whoami").fetchone() == (0,)
    assert admin.execute("SELECT current_user, session_user").fetchone() == ("postgres", "postgres")


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_run_job_after_set_role_cannot_reset(fresh_actors, escape):
    """A superuser who SET ROLE to the owner and runs the job: RESET ROLE in
    the body would otherwise give it the superuser back."""
    a = fresh_actors
    admin, owner = a.conns["superuser"], a.conns["owner"]
    job = _escape_job(owner, escape, escape)
    admin.execute(sql.SQL("SET ROLE {}").format(a.ident("owner")))
    try:
        with pytest.raises(psycopg.Error) as exc:
            admin.execute("CALL orochi.run_job(%s)", [job])
        assert exc.value.sqlstate in ("42501", "0A000"), exc.value
        assert admin.execute("SELECT current_user").fetchone() == (a.role("owner"),)
    finally:
        admin.execute("RESET ROLE")
    assert not _is_super(admin, a.role("owner"))


def test_job_runs_as_its_owner(fresh_actors):
    a = fresh_actors
    admin, owner = a.conns["superuser"], a.conns["owner"]
    owner.execute("CREATE TABLE who (who text, session_who text)")
    owner.execute("CREATE PROCEDURE note_who(job_id int, config jsonb) LANGUAGE sql"
                  " AS $$ INSERT INTO who SELECT current_user, session_user $$")
    job = owner.execute("SELECT orochi.add_job('note_who', interval '1 hour')").fetchone()[0]
    assert admin.execute("SELECT status FROM orochi.run_job_background(%s)", [job]).fetchone() == ("Success",)
    owner.execute("CALL orochi.run_job(%s)", [job])
    assert owner.execute("SELECT who FROM who").fetchall() == [(a.role("owner"),), (a.role("owner"),)]
    # the body's settings do not leak into the runner's session
    owner.execute("CREATE PROCEDURE set_things(job_id int, config jsonb) LANGUAGE plpgsql"
                  " AS $$ BEGIN PERFORM set_config('work_mem', '7MB', false); END $$")
    job2 = owner.execute("SELECT orochi.add_job('set_things', interval '1 hour')").fetchone()[0]
    before = admin.execute("SHOW work_mem").fetchone()
    admin.execute("SELECT orochi.run_job_background(%s)", [job2])
    assert admin.execute("SHOW work_mem").fetchone() == before


def test_job_cannot_do_what_its_owner_cannot(fresh_actors):
    """A job of a role without rights on a table fails on it, though a
    superuser's scheduler runs it."""
    a = fresh_actors
    admin, owner = a.conns["superuser"], a.conns["owner"]
    admin.execute("CREATE TABLE secret (v int)")
    owner.execute("CREATE PROCEDURE steal(job_id int, config jsonb) LANGUAGE sql"
                  " AS $$ DELETE FROM secret $$")
    job = owner.execute("SELECT orochi.add_job('steal', interval '1 hour')").fetchone()[0]
    status, message = admin.execute("SELECT status, message FROM orochi.run_job_background(%s)", [job]).fetchone()
    assert (status, message) == ("Failed", "permission denied for table secret")


def test_only_the_owner_runs_changes_or_deletes_a_job(fresh_actors):
    a = fresh_actors
    owner, granted = a.conns["owner"], a.conns["granted"]
    owner.execute("CREATE PROCEDURE noop(job_id int, config jsonb) LANGUAGE sql AS $$ SELECT 1 $$")
    job = owner.execute("SELECT orochi.add_job('noop', interval '1 hour')").fetchone()[0]
    for statement in ("CALL orochi.run_job(%s)", "SELECT orochi.run_job_background(%s)",
                      "SELECT orochi.alter_job(%s, scheduled => false)", "SELECT orochi.delete_job(%s)",
                      "SELECT orochi.record_job_failure(%s, 'x')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            granted.execute(statement, [job])
    # a member of the owner may
    a.conns["superuser"].execute(sql.SQL("GRANT {} TO {}").format(a.ident("owner"), a.ident("granted")))
    granted.execute("CALL orochi.run_job(%s)", [job])
    granted.execute("SELECT orochi.delete_job(%s)", [job])


def test_policy_runs_as_its_owner_and_stops_when_ownership_moves(fresh_actors):
    """A retention policy's body drops chunks as the policy's owner; once
    the table belongs to someone else, it fails instead of dropping them."""
    a = fresh_actors
    admin, owner = a.conns["superuser"], a.conns["owner"]
    owner.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi")
    owner.execute("SELECT orochi.create_hypertable('m', 'ts', interval '1 day')")
    owner.execute("INSERT INTO m SELECT '2020-01-01'::timestamptz + g * interval '1 hour', g"
                  " FROM generate_series(1, 100) g")
    job = owner.execute("SELECT orochi.add_retention_policy('m', interval '1 day')").fetchone()[0]
    admin.execute(sql.SQL("ALTER FOREIGN TABLE m OWNER TO {}").format(a.ident("granted")))
    status, message = admin.execute("SELECT status, message FROM orochi.run_job_background(%s)", [job]).fetchone()
    assert status == "Failed" and "must be owner" in message, message
    assert admin.execute("SELECT count(*) FROM m").fetchone() == (100,)
    admin.execute(sql.SQL("ALTER FOREIGN TABLE m OWNER TO {}").format(a.ident("owner")))
    admin.execute("SELECT orochi.alter_job(%s, next_start => now())", [job])  # due again, not in backoff
    status, _ = admin.execute("SELECT status, message FROM orochi.run_job_background(%s)", [job]).fetchone()
    assert status == "Success"
    assert admin.execute("SELECT count(*) FROM m").fetchone() == (0,)


def test_job_stats_show_a_role_its_own_jobs(fresh_actors):
    a = fresh_actors
    owner, granted, admin = a.conns["owner"], a.conns["granted"], a.conns["superuser"]
    owner.execute("CREATE PROCEDURE noop(job_id int, config jsonb) LANGUAGE sql AS $$ SELECT 1 $$")
    mine = owner.execute("SELECT orochi.add_job('noop', interval '1 hour', '{\"k\": 1}')").fetchone()[0]
    granted.execute("CREATE PROCEDURE noop2(job_id int, config jsonb) LANGUAGE sql AS $$ SELECT 1 $$")
    theirs = granted.execute("SELECT orochi.add_job('noop2', interval '1 hour')").fetchone()[0]
    assert owner.execute("SELECT job_id, owner::text, config FROM orochi.job_stats").fetchall() == [
        (mine, a.role("owner"), {"k": 1})]
    assert granted.execute("SELECT job_id FROM orochi.job_stats").fetchall() == [(theirs,)]
    assert {r[0] for r in admin.execute("SELECT job_id FROM orochi.job_stats")} == {mine, theirs}


def test_job_of_a_dropped_role_fails_and_is_left_to_superusers(fresh_actors):
    a = fresh_actors
    admin, owner = a.conns["superuser"], a.conns["owner"]
    admin.execute("CREATE PROCEDURE shared_noop(job_id int, config jsonb) LANGUAGE sql AS $$ SELECT 1 $$")
    job = owner.execute("SELECT orochi.add_job('shared_noop', interval '1 hour')").fetchone()[0]
    owner.close()
    admin.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(a.ident("owner")))
    admin.execute(sql.SQL("DROP ROLE {}").format(a.ident("owner")))
    status, message = admin.execute("SELECT status, message FROM orochi.run_job_background(%s)", [job]).fetchone()
    assert status == "Failed" and "does not exist" in message, message
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.conns["granted"].execute("SELECT orochi.delete_job(%s)", [job])
    admin.execute("SELECT orochi.delete_job(%s)", [job])
