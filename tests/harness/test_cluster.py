"""Tests of the test harness itself (orochi_fdw.testing.cluster and tests/conftest.py).

None of these needs the orochi extension.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import psycopg
import pytest

from orochi_fdw.testing.cluster import ClusterError, PostgresCluster, _process_alive

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _environ_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode().split("=", 1) for i in items if b"=" in i)


def test_session_cluster_basics(pg_cluster):
    assert pg_cluster.is_running()
    with pg_cluster.connect() as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int,"
            " current_setting('server_encoding'), current_setting('lc_collate'),"
            " current_setting('listen_addresses'), current_setting('port')::int,"
            " current_user, current_setting('TimeZone'),"
            " current_setting('wal_level'),"
            " current_setting('max_prepared_transactions')::int"
        ).fetchone()
    version, encoding, collate, listen, port, user, tz, wal, prepared = row
    assert 150000 <= version < 160000
    assert (encoding, collate) == ("UTF8", "C")
    assert (listen, port) == ("127.0.0.1", pg_cluster.port)
    assert (user, tz, wal) == ("postgres", "UTC", "logical")
    assert prepared > 0


def test_connect_autocommit_and_dsn(pg_cluster):
    with pg_cluster.connect(autocommit=True) as conn:
        assert conn.autocommit
        assert conn.info.port == pg_cluster.port
    with pg_cluster.connect() as conn:
        assert not conn.autocommit
    with psycopg.connect(pg_cluster.dsn("template1")) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "template1"
    assert pg_cluster.execute("SELECT 1 + 1") == [(2,)]
    assert pg_cluster.execute("SET work_mem = '8MB'") == []


def test_private_unix_socket(pg_cluster):
    assert os.path.dirname(pg_cluster.socket_dir) == pg_cluster.base
    with psycopg.connect(pg_cluster.dsn(host=pg_cluster.socket_dir)) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone()[0] is None


def test_directory_layout(pg_cluster):
    assert os.path.dirname(pg_cluster.base) == "/tmp"
    assert os.path.basename(pg_cluster.base).startswith("orochi-pg-")
    assert os.path.isfile(os.path.join(pg_cluster.datadir, "PG_VERSION"))
    assert os.path.isfile(pg_cluster.logfile)
    if os.geteuid() == 0:
        import pwd

        uid = pwd.getpwnam("postgres").pw_uid
        for path in (pg_cluster.base, pg_cluster.datadir, pg_cluster.socket_dir):
            assert os.stat(path).st_uid == uid, path
        assert pg_cluster.execute("SELECT 1")  # root connects to a postgres-owned server


def test_postmaster_environment(make_cluster, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/nonexistent/leak")
    monkeypatch.setenv("PYTHONHOME", "/nonexistent/home")
    monkeypatch.setenv("VIRTUAL_ENV", "/nonexistent/venv")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    pg = make_cluster("env", env={"OROCHI_TEST_MARK": "yes"})
    env = _environ_of(pg.postmaster_pid())
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        assert name not in env
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["OROCHI_TEST_MARK"] == "yes"
    # backends inherit it
    with pg.connect() as conn:
        assert "PYTHONPATH" not in _environ_of(pg.backend_pid(conn))


def test_kill9_and_restart_keeps_committed_data(make_cluster):
    pg = make_cluster("crash")
    with pg.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g")
    pending = pg.connect()
    pending.execute("INSERT INTO t VALUES (5000, 'never committed')")
    before = pg.postmaster_pid()
    offset = pg.log_offset()

    assert pg.kill9() == before
    assert not pg.is_running()
    with pytest.raises(psycopg.OperationalError):
        pending.execute("SELECT 1")
    pending.close()

    pg.start()
    assert pg.postmaster_pid() != before
    assert "was interrupted" in pg.log_since(offset)  # crash recovery ran
    assert pg.execute("SELECT count(*), max(id) FROM t") == [(1000, 1000)]
    # and again, with every server process killed at once
    pg.kill9(kill_children=True)
    pg.restart()
    assert pg.execute("SELECT count(*) FROM t") == [(1000,)]


def test_two_clusters_at_once(make_cluster):
    a = make_cluster("a")
    b = make_cluster("b", settings={"work_mem": "7MB"})
    assert a.port != b.port
    assert a.base != b.base
    a.execute("CREATE TABLE only_in_a (x int)")
    assert b.execute("SELECT to_regclass('only_in_a') IS NULL") == [(True,)]
    assert b.execute("SHOW work_mem") == [("7MB",)]
    assert a.execute("SHOW work_mem") == [("4MB",)]
    with a.connect() as ca, b.connect() as cb:
        assert ca.info.backend_pid != cb.info.backend_pid
    a.stop()
    assert not a.is_running() and b.is_running()
    assert b.execute("SELECT 1") == [(1,)]
    with pytest.raises(psycopg.OperationalError):
        a.connect()
    a.start()
    assert a.execute("SELECT count(*) FROM only_in_a") == [(0,)]


def test_latin1_database(pg_cluster):
    name = pg_cluster.create_database("harness_latin1", extension=False, encoding="LATIN1")
    try:
        with pg_cluster.connect(name, autocommit=True) as conn:
            enc, collate, ctype = conn.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype"
                " FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            assert (enc, collate, ctype) == ("LATIN1", "C", "C")
            assert conn.execute("SHOW server_encoding").fetchone()[0] == "LATIN1"
            # the client encoding defaults to the database's; ask for UTF8 so that the
            # server, not the client, converts (and rejects what LATIN1 cannot hold)
            conn.execute("SET client_encoding TO 'UTF8'")
            conn.execute("CREATE TABLE t (s text)")
            conn.execute("INSERT INTO t VALUES (%s)", ("café",))
            assert conn.execute("SELECT s, octet_length(s) FROM t").fetchone() == (
                "café",
                4,
            )
            with pytest.raises(psycopg.errors.UntranslatableCharacter):
                conn.execute("INSERT INTO t VALUES (%s)", ("€",))
    finally:
        pg_cluster.drop_database(name)
    assert pg_cluster.execute(
        "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)
    ) == [(0,)]


def test_sql_ascii_cluster_and_database(make_cluster):
    pg = make_cluster("ascii", encoding="SQL_ASCII")
    # psycopg returns text from a SQL_ASCII server as bytes: it cannot know the encoding
    assert pg.execute("SHOW server_encoding") == [(b"SQL_ASCII",)]
    pg.create_database("ascii_db", extension=False, encoding="SQL_ASCII")
    with pg.connect("ascii_db") as conn:
        assert conn.execute("SHOW server_encoding").fetchone()[0] == b"SQL_ASCII"
        conn.execute("SET client_encoding TO 'UTF8'")
        assert conn.execute("SELECT 'é'::text").fetchone()[0] == "é"


def test_initdb_settings_start_settings_and_reload(make_cluster):
    pg = make_cluster(
        "settings",
        initdb_settings={"shared_preload_libraries": ["pg_stat_statements"]},
        settings={"work_mem": "12MB", "application_name": "it's quoted"},
    )
    assert pg.execute("SHOW shared_preload_libraries") == [("pg_stat_statements",)]
    assert pg.execute("SHOW work_mem") == [("12MB",)]
    assert pg.execute("SHOW application_name") == [("it's quoted",)]

    pg.configure({"work_mem": "13MB"})  # reload, no restart
    assert pg.execute("SHOW work_mem") == [("13MB",)]

    pid = pg.postmaster_pid()
    pg.restart({"max_connections": 33})
    assert pg.postmaster_pid() != pid
    assert pg.execute("SHOW max_connections") == [("33",)]
    assert pg.execute("SHOW work_mem") == [("13MB",)]  # kept across restarts
    assert pg.execute("SHOW shared_preload_libraries") == [("pg_stat_statements",)]

    # ALTER SYSTEM still overrides the harness's settings
    pg.execute("ALTER SYSTEM SET work_mem = '14MB'")
    pg.reload()
    assert pg.execute("SHOW work_mem") == [("14MB",)]


def test_failed_start_reports_log_tail(make_cluster):
    pg = make_cluster("broken", start=False)
    with pytest.raises(ClusterError) as err:
        pg.start({"shared_preload_libraries": "orochi_no_such_library"}, timeout=20)
    assert "orochi_no_such_library" in str(err.value)
    assert "server log tail" in str(err.value)
    assert not pg.is_running()
    pg.settings.pop("shared_preload_libraries")
    pg.start()
    assert pg.execute("SELECT 1") == [(1,)]


def test_server_log_reading(pg_cluster):
    offset = pg_cluster.log_offset()
    with pg_cluster.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0 AS harness_marker")
    match = pg_cluster.wait_for_log(r"ERROR:\s+division by zero", since=offset)
    assert match
    assert "harness_marker" in pg_cluster.log_since(offset)
    assert "division by zero" in pg_cluster.log_tail(20)
    assert "division by zero" not in pg_cluster.log_since(pg_cluster.log_offset())
    assert pg_cluster.read_log().startswith(pg_cluster.log_since(0)[:100])


def test_backend_pids_and_killing_a_backend(make_cluster):
    pg = make_cluster("backend")
    victim = pg.connect(autocommit=True)
    bystander = pg.connect(autocommit=True)
    pid = pg.backend_pid(victim)
    assert victim.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert pid in pg.backend_pids()
    assert pid in pg.backend_pids("postgres")
    assert pg.backend_pids("template1") == []

    offset = pg.log_offset()
    pg.kill_backend(pid)  # SIGKILL: the postmaster resets every session
    pg.wait_for_log(r"terminated by signal 9", since=offset)
    pg.wait_until_ready()
    for conn in (victim, bystander):
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()
    assert pg.execute("SELECT 1") == [(1,)]
    assert pg.crashes_since(offset) == []  # SIGKILL is not counted as a crash
    assert len(pg.crashes_since(offset, ignore_signals=())) == 1


def test_drop_database_with_leftovers(pg_cluster):
    name = pg_cluster.create_database("harness_leftovers", extension=False)
    with pg_cluster.connect(name, autocommit=True) as conn:
        # (before the prepared transaction: creating a slot waits for open ones)
        conn.execute(
            "SELECT pg_create_logical_replication_slot('harness_slot', 'test_decoding')"
        )
    holder = pg_cluster.connect(name)
    holder.execute("CREATE TABLE t (x int)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("PREPARE TRANSACTION 'harness_gid'")
    idle = pg_cluster.connect(name)
    idle.execute("SELECT 1")  # an open transaction in the database
    pg_cluster.drop_database(name)
    assert pg_cluster.execute("SELECT count(*) FROM pg_prepared_xacts") == [(0,)]
    assert pg_cluster.execute("SELECT count(*) FROM pg_replication_slots") == [(0,)]
    assert pg_cluster.execute(
        "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)
    ) == [(0,)]
    holder.close()
    idle.close()
    pg_cluster.drop_database(name)  # no-op when gone


def test_make_database_fixture(make_database, pg_cluster):
    plain = make_database(extension=False)
    latin = make_database("harness_fixture_latin1", extension=False, encoding="LATIN1")
    assert plain != latin
    with pg_cluster.connect(latin) as conn:
        assert conn.execute("SHOW server_encoding").fetchone()[0] == "LATIN1"
    with pg_cluster.connect(plain) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == plain


def test_create_database_extension_argument(pg_cluster):
    # extension=True means orochi; a name picks another extension. A failure raises
    # (it is never hidden) and leaves no database behind.
    name = pg_cluster.create_database("harness_ext", extension="pg_stat_statements")
    try:
        assert pg_cluster.execute(
            "SELECT extname FROM pg_extension WHERE extname = 'pg_stat_statements'",
            dbname=name,
        ) == [("pg_stat_statements",)]
    finally:
        pg_cluster.drop_database(name)
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        pg_cluster.create_database("harness_noext", extension="orochi_no_such_ext")
    assert pg_cluster.execute(
        "SELECT count(*) FROM pg_database WHERE datname = 'harness_noext'"
    ) == [(0,)]
    # nor a template database of the extension that could not be created
    assert pg_cluster.execute(
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'orochi_tpl_orochi_no_such%'"
    ) == [(0,)]


_EXTENSION_MEMBERS = (
    "SELECT d.classid::regclass::text, pg_describe_object(d.classid, d.objid, d.objsubid)"
    "  FROM pg_depend d JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass"
    "   AND d.refobjid = e.oid WHERE e.extname = 'orochi' AND d.deptype = 'e' ORDER BY 1, 2"
)


def test_databases_from_the_extension_template(pg_cluster, make_database, monkeypatch):
    # The session cluster copies its databases with orochi from a template database
    # where CREATE EXTENSION ran once: they must hold what CREATE EXTENSION makes.
    # (Also when the run turned the templates off with OROCHI_EXTENSION_TEMPLATE=0.)
    monkeypatch.setattr(pg_cluster, "extension_templates", True)
    copied = make_database()
    created = make_database(extension=False)
    pg_cluster.execute("CREATE EXTENSION orochi", dbname=created)
    members = pg_cluster.execute(_EXTENSION_MEMBERS, dbname=copied)
    assert len(members) > 100
    assert members == pg_cluster.execute(_EXTENSION_MEMBERS, dbname=created)
    for query in ("SELECT extversion FROM pg_extension WHERE extname = 'orochi'",
                  "SELECT srvname FROM pg_foreign_server ORDER BY 1"):
        assert pg_cluster.execute(query, dbname=copied) == pg_cluster.execute(query, dbname=created)
    # the template takes no connections (a session in it would stop every copy)
    template = pg_cluster.extension_template("orochi")
    assert pg_cluster.execute(
        "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = %s", (template,)
    ) == [(True, False)]
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        pg_cluster.connect(template).close()
    # a database of its own encoding is still made by CREATE EXTENSION
    latin = make_database(encoding="LATIN1")
    assert pg_cluster.execute(_EXTENSION_MEMBERS, dbname=latin) == members


def test_clusters_copied_from_one_initdb(make_cluster, monkeypatch):
    # The suite's clusters are copies of one initdb (OROCHI_INITDB_TEMPLATE=1, set by
    # the conftest); each must have a system identifier of its own (in pg_control and
    # in the WAL it starts from), and WAL that replays after a crash.
    monkeypatch.setenv("OROCHI_INITDB_TEMPLATE", "1")
    first, second = make_cluster("copy1"), make_cluster("copy2")
    from orochi_fdw.testing import cluster as harness

    assert any(harness._initdb_templates.values())  # a template was made, and used
    query = "SELECT system_identifier FROM pg_control_system()"
    ids = {first.execute(query)[0][0], second.execute(query)[0][0]}
    assert len(ids) == 2
    first.execute("CREATE TABLE kept AS SELECT g FROM generate_series(1, 1000) g")
    first.kill9()
    first.start()
    assert first.execute("SELECT count(*) FROM kept") == [(1000,)]
    assert first.execute(query)[0][0] in ids
    # WAL records are read back with the new identifier (a mismatch is
    # "WAL file is from different database system")
    assert first.execute(
        "SELECT count(*) FROM pg_ls_waldir() WHERE size > 0") != [(0,)]
    assert first.crashes_since(0) == []


def test_context_manager_and_cleanup():
    with PostgresCluster("ctx") as pg:
        assert pg.is_running()
        base, pid = pg.base, pg.postmaster_pid()
        assert pg.execute("SELECT 1") == [(1,)]
    assert not os.path.exists(base)
    assert not _process_alive(pid)
    pg.cleanup()  # idempotent
    with pytest.raises(ClusterError):
        pg.start()


def test_cleanup_of_a_crashed_cluster_and_keep(make_cluster):
    pg = make_cluster("keep", keep=True)
    pg.kill9()
    pg.cleanup()
    assert os.path.isdir(pg.datadir)  # kept for inspection
    shutil.rmtree(pg.base)


# --------------------------------------------------------------------- conftest behaviour

_INNER_TESTS = '''
import signal
import pytest

def test_plain(pg_cluster):
    assert pg_cluster.execute("SELECT 1") == [(1,)]

@pytest.mark.slow
def test_soak():
    pass

def _segfault_a_backend(pg):
    with pg.connect() as conn:
        pg.kill_backend(pg.backend_pid(conn), signal.SIGSEGV)
        pg.wait_for_log("terminated by signal 11")
    pg.wait_until_ready()

def test_crash_is_reported(pg_cluster):
    _segfault_a_backend(pg_cluster)

@pytest.mark.allow_backend_crash
def test_crash_allowed(pg_cluster):
    _segfault_a_backend(pg_cluster)

def test_crash_in_made_cluster(make_cluster):
    _segfault_a_backend(make_cluster())

def test_failure_shows_log(pg_cluster):
    try:
        pg_cluster.execute("SELECT inner_marker_no_such_function()")
    except Exception:
        pass
    assert False, "deliberate"
'''


def _run_inner_pytest(tmp_path, *args, env=None):
    shutil.copy(os.path.join(REPO, "tests", "conftest.py"), tmp_path / "conftest.py")
    shutil.copy(os.path.join(REPO, "pytest.ini"), tmp_path / "pytest.ini")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_inner.py").write_text(textwrap.dedent(_INNER_TESTS))
    full_env = dict(os.environ)
    full_env.pop("OROCHI_RUN_SLOW", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:randomly", *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_conftest_markers_crash_check_and_log_report(tmp_path):
    proc = _run_inner_pytest(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "PASSED tests/test_inner.py::test_plain" in out
    assert "SKIPPED [1] tests/test_inner.py:" in out and "--run-slow" in out
    assert "PASSED tests/test_inner.py::test_crash_allowed" in out
    assert "ERROR tests/test_inner.py::test_crash_is_reported" in out
    assert "ERROR tests/test_inner.py::test_crash_in_made_cluster" in out
    assert "terminated by signal 11" in out
    assert "FAILED tests/test_inner.py::test_failure_shows_log" in out
    assert "postgres log (session" in out
    assert "inner_marker_no_such_function" in out


def test_run_slow_option_and_env(tmp_path):
    proc = _run_inner_pytest(tmp_path, "--run-slow", "-k", "soak or plain")
    assert "2 passed" in proc.stdout, proc.stdout + proc.stderr
    (tmp_path / "conftest.py").unlink()
    (tmp_path / "pytest.ini").unlink()
    shutil.rmtree(tmp_path / "tests")
    proc = _run_inner_pytest(tmp_path, "-k", "soak", env={"OROCHI_RUN_SLOW": "1"})
    assert "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_forgotten_cluster_is_removed_at_exit():
    script = textwrap.dedent(
        """
        from orochi_fdw.testing.cluster import PostgresCluster
        pg = PostgresCluster("forgotten").start()
        print(pg.base, pg.postmaster_pid(), flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        check=True,
    ).stdout.split()
    base, pid = out[0], int(out[1])
    assert not os.path.exists(base)
    assert not _process_alive(pid)
