"""Fixtures shared by every test: real PostgreSQL 15 clusters.

- ``pg_cluster`` (session): one running cluster for the whole run.
- ``make_cluster`` (function): factory for more clusters; all cleaned up after the test.
- ``make_database`` (function): factory for databases in ``pg_cluster``; dropped after.
- ``db_name`` / ``db_dsn`` / ``db``: one fresh database per test with
  ``CREATE EXTENSION orochi`` done; ``db`` is an autocommit psycopg connection to it.
  If the extension cannot be created the test errors (it is never skipped).
  The databases are copies of a template database in which the extension was
  created once (``OROCHI_EXTENSION_TEMPLATE=0``: created in each).
- ``new_connection``: opens more connections to the ``db`` database.

Every test that uses a cluster is watched: if the server log shows a server process
killed by a signal other than SIGKILL (a segfault or abort in the bridge), the test fails
at teardown unless marked ``allow_backend_crash``; when a test fails, the server log
written during it is attached to the report.

``@pytest.mark.slow`` tests (soak tests) run only with ``--run-slow`` or
``OROCHI_RUN_SLOW=1``.

Every cluster's data directory is a copy of one ``initdb`` per process
(``OROCHI_INITDB_TEMPLATE``, see orochi_fdw.testing.cluster; ``=0`` runs initdb for
each). The suite runs in parallel worker processes under ``make test`` (pytest-xdist,
see the Makefile); each worker has clusters of its own.

``--pg-setting NAME=VALUE`` (repeatable) runs every cluster of the session with
that server setting, e.g. ``--pg-setting force_parallel_mode=regress``; it is
passed on as ``OROCHI_PG_SETTINGS`` (see orochi_fdw.testing.cluster), so clusters
made outside the fixtures, and by subprocesses, get it too. A test's own
settings win.
"""

from __future__ import annotations

import itertools
import os
import re

import psycopg
import pytest

from orochi_fdw.testing.cluster import (
    ENV_INITDB_TEMPLATE,
    ENV_SETTINGS,
    PostgresCluster,
    env_settings,
    remove_initdb_templates,
)

# Extra server settings for the session cluster. Edit here when every test needs one.
PG_CLUSTER_SETTINGS: dict = {}

_LOG_LINES_IN_REPORT = 200
_watch_key = pytest.StashKey[list]()  # [(cluster, log offset at test start)]
_crash_key = pytest.StashKey[list]()  # crash lines of clusters already cleaned up
_db_counter = itertools.count(1)


# --------------------------------------------------------------------- options, markers
# The markers (slow, allow_backend_crash) are registered in pytest.ini.


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="run tests marked slow (soak tests); also OROCHI_RUN_SLOW=1",
    )
    parser.addoption(
        "--pg-setting",
        action="append",
        metavar="NAME=VALUE",
        help="a server setting for every cluster of the run (repeatable), "
        "e.g. force_parallel_mode=regress; also OROCHI_PG_SETTINGS",
    )


def pytest_configure(config):
    # clusters are copies of one initdb per process (orochi_fdw.testing.cluster);
    # OROCHI_INITDB_TEMPLATE=0 runs initdb for each
    os.environ.setdefault(ENV_INITDB_TEMPLATE, "1")
    pairs = config.getoption("--pg-setting") or []
    if pairs:
        merged = {**env_settings()}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep:
                raise pytest.UsageError(f"--pg-setting expects NAME=VALUE, got {pair!r}")
            merged[name.strip()] = value.strip()
        os.environ[ENV_SETTINGS] = ";".join(f"{k}={v}" for k, v in merged.items())
    env_settings()  # an unparsable OROCHI_PG_SETTINGS fails here, not in the first fixture


def pytest_unconfigure(config):
    remove_initdb_templates()


def pytest_report_header(config):
    extra = env_settings()
    if extra:
        return "server settings for every cluster: " + ", ".join(f"{k}={v}" for k, v in extra.items())
    return None


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or os.environ.get("OROCHI_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: use --run-slow or OROCHI_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------- log watching


def _watch(request, cluster: PostgresCluster, offset: int | None = None) -> None:
    """Attach ``cluster``'s log (from ``offset``, default now) to the current test."""
    watched = request.node.stash.setdefault(_watch_key, [])
    watched.append((cluster, cluster.log_offset() if offset is None else offset))


def _unwatch(request, cluster: PostgresCluster) -> None:
    """Stop watching ``cluster`` (about to be deleted), keeping its crash lines."""
    watched = request.node.stash.get(_watch_key, [])
    crashes = request.node.stash.setdefault(_crash_key, [])
    for entry in list(watched):
        if entry[0] is cluster:
            crashes += [f"{cluster.name}: {line}" for line in cluster.crashes_since(entry[1])]
            watched.remove(entry)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for cluster, offset in item.stash.get(_watch_key, []):
            text = cluster.log_since(offset)
            lines = text.splitlines()[-_LOG_LINES_IN_REPORT:]
            if lines:
                report.sections.append(
                    (f"postgres log ({cluster.name}, {cluster.base})", "\n".join(lines))
                )
    return report


@pytest.fixture(autouse=True)
def _postgres_crash_check(request):
    """Fail a test during which a server process crashed (see module docstring)."""
    if "pg_cluster" in request.fixturenames:
        _watch(request, request.getfixturevalue("pg_cluster"))
    yield
    if request.node.get_closest_marker("allow_backend_crash"):
        return
    problems = list(request.node.stash.get(_crash_key, []))
    for cluster, offset in request.node.stash.get(_watch_key, []):
        problems += [f"{cluster.name}: {line}" for line in cluster.crashes_since(offset)]
    if problems:
        pytest.fail(
            "server process crashed during the test:\n" + "\n".join(problems),
            pytrace=False,
        )


# --------------------------------------------------------------------- clusters


@pytest.fixture(scope="session")
def pg_cluster():
    """One running PostgreSQL cluster shared by the whole test session. Its
    databases with the extension are copies of a template database in which
    ``CREATE EXTENSION orochi`` ran once (``extension_templates``)."""
    cluster = PostgresCluster(
        "session",
        settings=PG_CLUSTER_SETTINGS,
        # OROCHI_EXTENSION_TEMPLATE=0: CREATE EXTENSION in every database instead
        extension_templates=os.environ.get("OROCHI_EXTENSION_TEMPLATE") != "0",
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def make_cluster(request):
    """Factory: ``make_cluster(name=..., settings=..., initdb_settings=...,
    encoding=..., start=True, **kwargs)`` -> a new :class:`PostgresCluster`, started
    unless ``start=False``. Every cluster made is cleaned up after the test."""
    clusters: list[PostgresCluster] = []

    def factory(name: str | None = None, *, start: bool = True, **kwargs):
        cluster = PostgresCluster(name or f"c{len(clusters) + 1}", **kwargs)
        clusters.append(cluster)
        _watch(request, cluster, 0)
        if start:
            cluster.start()
        return cluster

    yield factory
    errors = []
    for cluster in reversed(clusters):
        try:
            _unwatch(request, cluster)
            cluster.cleanup()
        except Exception as e:  # clean up the others anyway
            errors.append(e)
    if errors:
        raise errors[0]


# --------------------------------------------------------------------- databases


def _test_db_name(request) -> str:
    stem = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())
    return f"t{next(_db_counter)}_{stem}"[:63]


@pytest.fixture
def make_database(request, pg_cluster):
    """Factory: ``make_database(name=None, extension=True, encoding=None,
    locale=None)`` -> name of a new database in ``pg_cluster`` (``CREATE EXTENSION
    orochi`` done when ``extension``); dropped after the test."""
    names: list[str] = []

    def factory(name: str | None = None, extension: bool = True, **kwargs) -> str:
        name = name or _test_db_name(request)
        pg_cluster.ensure_running()
        pg_cluster.create_database(name, extension, **kwargs)
        names.append(name)
        return name

    yield factory
    if names:
        pg_cluster.ensure_running()
        for name in names:
            pg_cluster.drop_database(name)


@pytest.fixture(scope="module")
def module_database(pg_cluster, request) -> str:
    """Name of a database with the orochi extension shared by the tests of
    one module (``m_<module>``, made afresh), dropped after its last test."""
    name = "m_" + request.module.__name__.rsplit(".", 1)[-1][:50]
    pg_cluster.ensure_running()
    pg_cluster.drop_database(name)
    pg_cluster.create_database(name)
    yield name
    pg_cluster.ensure_running()
    pg_cluster.drop_database(name)


@pytest.fixture
def db_name(make_database) -> str:
    """Name of this test's fresh database, with the orochi extension created."""
    return make_database()


@pytest.fixture
def db_dsn(pg_cluster, db_name) -> str:
    """libpq connection string of this test's database."""
    return pg_cluster.dsn(db_name)


@pytest.fixture
def new_connection(pg_cluster, db_name):
    """Factory: ``new_connection(autocommit=True, **kwargs)`` -> another psycopg
    connection to this test's database; all closed after the test."""
    conns: list[psycopg.Connection] = []

    def factory(autocommit: bool = True, **kwargs) -> psycopg.Connection:
        conn = pg_cluster.connect(db_name, autocommit=autocommit, **kwargs)
        conns.append(conn)
        return conn

    yield factory
    for conn in conns:
        conn.close()


@pytest.fixture
def db(new_connection) -> psycopg.Connection:
    """An autocommit psycopg connection to a fresh database with the orochi extension."""
    return new_connection()
