"""Fixtures for the tests that hold orochi tables to PostgreSQL's semantics:
a heap table with the same rows is the oracle of every query."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def module_db(module_database):
    """A database with the orochi extension shared by one test module."""
    return module_database


@pytest.fixture
def mconn(pg_cluster, module_db):
    """An autocommit connection to the module's database."""
    conn = pg_cluster.connect(module_db, autocommit=True)
    yield conn
    conn.close()
