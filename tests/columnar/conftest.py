"""Fixtures for columnar table tests.

These tests are about stripe files: their databases set the server option
``delta_row_limit '0'``, so that every INSERT writes stripes as it did before
the delta store existed. The delta store, UPDATE, DELETE, compaction and
vacuum are tested in tests/htap.
"""

from __future__ import annotations

import pytest

from columnar_helpers import stripes_only


@pytest.fixture
def db_name(make_database, pg_cluster) -> str:
    name = make_database()
    stripes_only(pg_cluster, name)
    return name


@pytest.fixture(scope="module")
def module_db(pg_cluster, module_database):
    """A database with the orochi extension shared by one test module (for
    tests that each make their own tables)."""
    stripes_only(pg_cluster, module_database)
    return module_database


@pytest.fixture
def mconn(pg_cluster, module_db):
    """An autocommit connection to the module's database."""
    conn = pg_cluster.connect(module_db, autocommit=True)
    yield conn
    conn.close()
