"""Fixtures for the WAL tests: a primary and a streaming standby
(pg_basebackup -R on 127.0.0.1), made once per module.

The clusters' logs are watched like the session cluster's: a server process
killed by a signal other than SIGKILL fails the test.
"""

from __future__ import annotations

import os
import sys

import pytest

from orochi_fdw.testing import replica
from orochi_fdw.testing.cluster import PostgresCluster

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="module")
def pair():
    """(primary, standby), both running, the standby following the primary."""
    primary = PostgresCluster("wal-primary", settings=replica.REPLICATION_SETTINGS)
    standby = None
    try:
        primary.start()
        standby = replica.make_standby(primary, "wal-standby")
        yield primary, standby
    finally:
        if standby is not None:
            standby.cleanup()
        primary.cleanup()


@pytest.fixture
def pair_db(request, pair):
    """A fresh database (orochi created) on the pair's primary; its name.
    The standby sees it once it has caught up."""
    primary, standby = pair
    for cluster in (primary, standby):
        if not cluster.is_running():
            pytest.fail(f"{cluster.name} is not running (a previous test stopped it)")
    offsets = [(c, c.log_offset()) for c in (primary, standby)]
    name = "w_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())[:50]
    primary.create_database(name)
    yield name
    primary.drop_database(name)
    problems = [f"{c.name}: {line}" for c, off in offsets for line in c.crashes_since(off)]
    if problems:
        pytest.fail("server process crashed during the test:\n" + "\n".join(problems), pytrace=False)
