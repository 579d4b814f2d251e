"""Python failing to start in the postmaster (shared_preload_libraries =
'orochi') must not stop the server: it logs a WARNING and starts; backends
then report an ERROR when they need Python, and the server stays up."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import psycopg
import pytest


@pytest.fixture
def scratch_dir():
    d = tempfile.mkdtemp(prefix="orochi-venv-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _broken_venv(root: str) -> str:
    """A virtualenv whose base installation has no standard library: the
    interpreter cannot initialise (no ``encodings`` module)."""
    home = os.path.join(root, "home")
    os.makedirs(os.path.join(home, "bin"))
    os.makedirs(os.path.join(home, "lib", "python3.11", "lib-dynload"))
    open(os.path.join(home, "lib", "python3.11", "os.py"), "w").close()  # the landmark only
    venv = os.path.join(root, "broken")
    os.makedirs(os.path.join(venv, "bin"))
    os.symlink("/usr/bin/python3.11", os.path.join(venv, "bin", "python3"))
    with open(os.path.join(venv, "pyvenv.cfg"), "w") as f:
        f.write(f"home = {home}/bin\n")
    subprocess.run(["chmod", "-R", "a+rX", root], check=True)
    return venv


def _venv_without_orochi(root: str) -> str:
    """A working virtualenv in which orochi_fdw cannot be imported."""
    venv = os.path.join(root, "empty")
    subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", venv], check=True)
    subprocess.run(["chmod", "-R", "a+rX", root], check=True)
    return venv


def _check_server_survives(pg, expected_error: str):
    log = pg.read_log()
    assert "orochi could not preload Python" in log, log[-3000:]
    postmaster = pg.postmaster_pid()
    for _ in range(3):
        with pg.connect("postgres", autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            with pytest.raises(psycopg.Error, match=expected_error):
                conn.execute("CREATE EXTENSION IF NOT EXISTS orochi")
                conn.execute("SELECT * FROM orochi.python_info()")
            assert conn.execute("SELECT 2").fetchone() == (2,)
    assert pg.postmaster_pid() == postmaster
    assert pg.is_running()


def test_interpreter_that_cannot_start(make_cluster, scratch_dir):
    venv = _broken_venv(scratch_dir)
    pg = make_cluster("brokenvenv", initdb_settings={"shared_preload_libraries": "orochi",
                                                     "orochi.python_venv": venv})
    _check_server_survives(pg, "orochi cannot use Python in this process: the interpreter did not start")


def test_runtime_that_cannot_be_imported(make_cluster, scratch_dir):
    venv = _venv_without_orochi(scratch_dir)
    pg = make_cluster("noorochi", initdb_settings={"shared_preload_libraries": "orochi",
                                                   "orochi.python_venv": venv})
    _check_server_survives(pg, "No module named 'orochi_fdw'")


def test_broken_venv_in_a_session_without_preloading(make_cluster, scratch_dir):
    """Without preloading, a session whose interpreter cannot start gets an
    ERROR (every time it needs Python), not FATAL."""
    venv = _broken_venv(scratch_dir)
    pg = make_cluster("lazyvenv", initdb_settings={"shared_preload_libraries": ""})
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as conn:
        conn.execute(f"SET orochi.python_venv = '{venv}'")
        for _ in range(3):
            with pytest.raises(psycopg.errors.ExternalRoutineException,
                               match="Python interpreter|cannot use Python"):
                conn.execute("SELECT * FROM orochi.python_info()")
        assert conn.execute("SELECT 1").fetchone() == (1,)
