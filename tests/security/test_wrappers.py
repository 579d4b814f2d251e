"""Which wrapper classes load, and who may name them (orochi_fdw.bridge.wrappers).

Only declared wrappers load; the test wrappers (one appends to any file its
table names) only while the superuser-only orochi.allow_test_wrappers is on
(the harness turns it on); a role that is not a superuser may name only the
wrappers orochi.trusted_wrappers lists.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import sql


def _create(conn, name: str, options: str) -> None:
    conn.execute(sql.SQL("CREATE FOREIGN TABLE {} (id int8, v float8, t text) SERVER orochi OPTIONS ({})").format(
        sql.Identifier(name), sql.SQL(options)))


@pytest.mark.parametrize("path", [
    "os.system",                                   # a callable, not a class
    "subprocess.Popen",                            # a class, no execute
    "orochi_fdw.bridge.api.ForeignDataWrapper",    # a real wrapper base class, not declared
    "orochi_fdw.testing.cluster.PostgresCluster",  # a class of the package that is no wrapper
    "no_such_module.Class",
])
def test_only_declared_wrappers_load(db, path):
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue, match="not a declared orochi wrapper") as exc:
        _create(db, "f", f"wrapper {sql.Literal(path).as_string(db)}")
    assert "orochi.wrappers" in (exc.value.diag.message_hint or "")


def test_declared_wrappers_by_name_or_path(db):
    _create(db, "by_name", "wrapper 'SeriesWrapper', rows '3'")
    _create(db, "by_path", "wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', rows '3'")
    _create(db, "by_entry_point", "wrapper 'orochi_fdw.testing.wrappers:SeriesWrapper', rows '3'")
    _create(db, "columnar_by_name", "wrapper 'columnar'")
    _create(db, "columnar_by_path", "wrapper 'orochi_fdw.columnar.ColumnarTable'")
    for table in ("by_name", "by_path", "by_entry_point"):
        assert db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone() == (3,)
    db.execute("INSERT INTO columnar_by_name VALUES (1, 2, 'x')")
    assert db.execute("SELECT * FROM columnar_by_name").fetchall() == [(1, 2.0, "x")]


def test_test_wrappers_need_the_setting(db, new_connection, server_dir):
    log = os.path.join(server_dir, "hooks.log")
    _create(db, "series", "wrapper 'SeriesWrapper', rows '2'")
    off = new_connection()
    off.execute("SET orochi.allow_test_wrappers = off")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="test wrapper") as exc:
        _create(off, "hooks", f"wrapper 'HooksWrapper', log {sql.Literal(str(log)).as_string(db)}")
    assert "orochi.allow_test_wrappers" in exc.value.diag.message_hint
    # a table made while they were allowed does not load either
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="test wrapper"):
        off.execute("SELECT * FROM series")
    assert not os.path.exists(log)
    off.execute("RESET orochi.allow_test_wrappers")
    assert off.execute("SELECT count(*) FROM series").fetchone() == (2,)


def test_allow_test_wrappers_is_for_superusers(fresh_actors, pg_cluster):
    a = fresh_actors
    owner = a.conns["owner"]
    owner.execute("SELECT * FROM orochi.python_info()")  # the library is loaded: the settings exist
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        owner.execute("SET orochi.allow_test_wrappers = on")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        owner.execute("SET orochi.trusted_wrappers = 'columnar, HooksWrapper'")
    configured = a.conns["superuser"].execute("SELECT current_setting('orochi.allow_test_wrappers')").fetchone()[0]
    flipped = "off" if configured == "on" else "on"
    preloaded = "orochi" in a.conns["superuser"].execute(
        "SELECT current_setting('shared_preload_libraries')").fetchone()[0]
    with pg_cluster.connect(a.db, autocommit=True, user=a.role("owner")) as fresh:
        if preloaded:
            # the settings exist from the session's start
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                fresh.execute(f"SET orochi.allow_test_wrappers = {flipped}")
            return
        # set before the library is loaded (a placeholder), it does not count once it is
        fresh.execute(f"SET orochi.allow_test_wrappers = {flipped}")
        fresh.execute("SET orochi.trusted_wrappers = 'columnar, HooksWrapper'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            fresh.execute("CREATE FOREIGN TABLE hooks (id int) SERVER orochi"
                          " OPTIONS (wrapper 'HooksWrapper', log '/dev/null')")
        assert fresh.execute("SELECT current_setting('orochi.allow_test_wrappers'),"
                             " current_setting('orochi.trusted_wrappers')").fetchone() == (configured, "columnar")


def test_a_user_cannot_make_the_server_write_files(fresh_actors, server_dir):
    """The attack the test wrappers allowed: a table whose transaction hooks
    append to a file the server can write."""
    target = os.path.join(server_dir, "written-by-the-server")
    owner = fresh_actors.conns["owner"]
    for wrapper in ("HooksWrapper", "orochi_fdw.testing.wrappers.HooksWrapper"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to use wrapper"):
            _create(owner, "hooks", f"wrapper '{wrapper}', log {sql.Literal(str(target)).as_string(owner)}")
    # nor through a server of its own: creating one needs USAGE on the wrapper
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        owner.execute("CREATE SERVER mine FOREIGN DATA WRAPPER orochi OPTIONS (wrapper 'HooksWrapper')")
    assert not os.path.exists(target)


def test_trusted_wrappers_and_servers(fresh_actors):
    """A superuser allows a wrapper by listing it in orochi.trusted_wrappers
    (for a role or a database), or by making a server with it and granting
    USAGE on that server."""
    a = fresh_actors
    admin, owner = a.conns["superuser"], a.conns["owner"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="SeriesWrapper"):
        _create(owner, "series", "wrapper 'SeriesWrapper', rows '4'")
    admin.execute(sql.SQL("ALTER ROLE {} SET orochi.trusted_wrappers = 'columnar, SeriesWrapper'").format(
        a.ident("owner")))
    with psycopg.connect(admin.info.dsn, user=a.role("owner"), autocommit=True) as again:
        _create(again, "series", "wrapper 'SeriesWrapper', rows '4'")
        assert again.execute("SELECT count(*) FROM series").fetchone() == (4,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="HooksWrapper"):
            _create(again, "hooks", "wrapper 'HooksWrapper', log '/dev/null'")
    admin.execute("CREATE SERVER series_server FOREIGN DATA WRAPPER orochi OPTIONS (wrapper 'SeriesWrapper')")
    admin.execute(sql.SQL("GRANT USAGE ON FOREIGN SERVER series_server TO {}").format(a.ident("granted")))
    granted = a.conns["granted"]
    granted.execute("CREATE FOREIGN TABLE s2 (id int8) SERVER series_server")
    assert granted.execute("SELECT count(*) FROM s2").fetchone() == (10,)


def test_data_dir_is_for_superusers(fresh_actors, server_dir):
    a = fresh_actors
    admin, owner = a.conns["superuser"], a.conns["owner"]
    admin.execute(sql.SQL("GRANT USAGE ON FOREIGN DATA WRAPPER orochi TO {}").format(a.ident("owner")))
    owner.execute("CREATE SERVER own FOREIGN DATA WRAPPER orochi OPTIONS (compression 'zstd')")
    where = sql.Literal(server_dir).as_string(owner)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="data_dir"):
        owner.execute(f"CREATE SERVER elsewhere FOREIGN DATA WRAPPER orochi OPTIONS (data_dir {where})")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="data_dir"):
        owner.execute(f"ALTER SERVER own OPTIONS (ADD data_dir {where})")
    admin.execute(f"CREATE SERVER elsewhere FOREIGN DATA WRAPPER orochi OPTIONS (data_dir {where})")
