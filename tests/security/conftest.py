"""Fixtures for the privilege tests: a database and the four kinds of actor.

- ``owner``: a role that is not a superuser and makes the tables (so owns
  them);
- ``granted``: a role the owner GRANTs SELECT, INSERT, UPDATE, DELETE and
  TRUNCATE on its tables (and EXECUTE on its job procedures);
- ``ungranted``: a role with no privilege on them;
- ``superuser``: the cluster's superuser (who created the extension, so its
  owner).

Every non-superuser may create in schema public (PostgreSQL 15 grants that to
no one by default).  Roles are cluster-wide: their names carry the database's.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from security_helpers import drop_actors, make_actors


@pytest.fixture(scope="module")
def actors(pg_cluster, request):
    """The module's database and actors (see the module docstring)."""
    a = make_actors(pg_cluster, request.module.__name__.rsplit(".", 1)[-1])
    yield a
    drop_actors(pg_cluster, a)


@pytest.fixture
def fresh_actors(pg_cluster, request):
    """Like ``actors``, for one test (its own database and roles)."""
    a = make_actors(pg_cluster, request.node.name)
    yield a
    drop_actors(pg_cluster, a)


@pytest.fixture
def server_dir():
    """A folder under /tmp that the server's operating system user may
    write into (pytest's tmp_path is not reachable for it)."""
    path = tempfile.mkdtemp(prefix="orochi-security-")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)
