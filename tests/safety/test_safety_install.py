"""Installing while the server runs does not break running backends.

`make install` (ci/install-release.py) puts the Python package into a new
directory and switches a symlink to it atomically; every interpreter pins the
release it started with. Here a cluster's backends run a virtualenv of the
test's own whose releases are copies of the installed one: a backend that
started before a switch keeps importing from its release (also modules it
imports only afterwards), a new backend takes the new release, and a release
is removed only once no process holds it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

import orochi_fdw

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _installer():
    spec = importlib.util.spec_from_file_location("install_release", os.path.join(REPO, "ci", "install-release.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def prefix():
    d = tempfile.mkdtemp(prefix="orochi-prefix-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _stage_copy(installed_release: str, releases: str, mark: str) -> str:
    """A staged release: a copy of the installed one, marked."""
    os.makedirs(releases, exist_ok=True)
    staged = tempfile.mkdtemp(prefix=".staging-", dir=releases)
    shutil.copytree(installed_release, staged, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("RELEASE", "__pycache__"))
    with open(os.path.join(staged, "MARK"), "w") as f:
        f.write(mark)
    return staged


def _backend_gone(pg, pid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pg.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]):
            if not os.path.exists(f"/proc/{pid}"):
                return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} did not exit")


def test_install_while_backends_run(make_cluster, prefix):
    ir = _installer()
    installed = os.path.dirname(os.path.dirname(os.path.abspath(orochi_fdw.__file__)))
    assert os.path.exists(os.path.join(installed, "RELEASE")), \
        f"orochi_fdw is not imported from an installed release ({installed}): run make install"
    releases = os.path.join(prefix, "releases")
    venv = os.path.join(prefix, "venv")
    subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", venv], check=True)
    # third-party packages from the real venv, after the test's own site-packages
    with open(os.path.join(ir.site_packages(venv), "deps.pth"), "w") as f:
        f.write(ir.site_packages(sys.prefix) + "\n")
    r1 = ir.publish(_stage_copy(installed, releases, "one"), releases, "one")
    ir.ensure_hooks(venv, releases)
    subprocess.run(["chmod", "-R", "a+rX", prefix], check=True)

    # without preloading: a preloading server keeps the release its postmaster started with
    pg = make_cluster("install", settings={"orochi.python_venv": venv},
                      initdb_settings={"shared_preload_libraries": ""})
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as setup:
        setup.execute("CREATE FOREIGN TABLE rel (path text) SERVER orochi "
                      "OPTIONS (wrapper 'orochi_fdw.testing.wrappers.ReleaseWrapper')")

    old = pg.connect("app", autocommit=True)
    info = dict(old.execute("SELECT * FROM orochi.python_info()").fetchall())
    assert info["orochi_path"].startswith(os.path.join(releases, r1) + os.sep), info
    old_pid = old.info.backend_pid

    # a new release while `old` runs; `old` has not imported the wrappers yet
    r2 = ir.publish(_stage_copy(installed, releases, "two"), releases, "two")
    assert old.execute("SELECT path FROM rel").fetchone()[0].startswith(os.path.join(releases, r1) + os.sep)
    with pg.connect("app", autocommit=True) as new:
        assert new.execute("SELECT path FROM rel").fetchone()[0].startswith(os.path.join(releases, r2) + os.sep)
        assert new.execute("SELECT count(*) FROM (SELECT * FROM orochi.python_info()) i").fetchone()[0] >= 3

    # a third release: the first is neither current nor the one before, but
    # `old` holds it, so it stays; once `old` is gone it is removed
    r3 = ir.publish(_stage_copy(installed, releases, "three"), releases, "three")
    assert ir.prune(releases) == []
    assert os.path.isdir(os.path.join(releases, r1))
    assert old.execute("SELECT path FROM rel").fetchone()[0].startswith(os.path.join(releases, r1) + os.sep)
    old.close()
    _backend_gone(pg, old_pid)
    if ir.releases_in_use(releases) is None:
        # the server's processes cannot be inspected (not root): nothing is removed
        assert ir.prune(releases) == []
    else:
        assert ir.prune(releases) == [r1]
        assert sorted(d for d in os.listdir(releases) if not d.startswith(".")) == sorted([r2, r3, "current"])
    with pg.connect("app", autocommit=True) as newest:
        assert newest.execute("SELECT path FROM rel").fetchone()[0].startswith(os.path.join(releases, r3) + os.sep)


def test_prune_keeps_current_and_previous(prefix):
    ir = _installer()
    releases = os.path.join(prefix, "releases")
    ids = []
    for mark in ("a", "b", "c"):
        staged = tempfile.mkdtemp(prefix=".staging-", dir=prefix)
        os.makedirs(releases, exist_ok=True)
        ids.append(ir.publish(staged, releases, mark))
    assert ir.prune(releases) == [ids[0]]
    assert os.path.realpath(os.path.join(releases, "current")) == os.path.join(os.path.realpath(releases), ids[2])
    assert ir.prune(releases) == []
