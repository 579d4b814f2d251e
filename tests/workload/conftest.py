"""Fixtures for workload management: one cluster with orochi preloaded and
orochi.workload_enabled on, shared by the tests of this directory (crash
tests restart it), the extension created in the workload database
(postgres).

- ``wl_cluster`` (session): the cluster.
- ``wl`` (function): a :class:`workload_helpers.Workload` on it; at the end
  of the test its clients are closed and every pool, class and assignment
  is dropped.
"""

from __future__ import annotations

import pytest

from orochi_fdw.testing.cluster import PostgresCluster
from workload_helpers import WORKLOAD_SETTINGS, Workload


@pytest.fixture(scope="session")
def wl_cluster():
    cluster = PostgresCluster("workload", initdb_settings={"shared_preload_libraries": "orochi"},
                              settings=WORKLOAD_SETTINGS)
    try:
        cluster.start()
        cluster.execute("CREATE EXTENSION orochi")
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def wl(request, wl_cluster):
    """A Workload on the shared cluster; fails the test if a server process
    crashed (other than by SIGKILL) while it ran."""
    wl_cluster.ensure_running()
    offset = wl_cluster.log_offset()
    w = Workload(wl_cluster)
    w.reset()
    yield w
    crashes = wl_cluster.crashes_since(offset)
    try:
        wl_cluster.ensure_running()
        w.close()
    finally:
        if crashes and not request.node.get_closest_marker("allow_backend_crash"):
            pytest.fail("server process crashed during the test:\n" + "\n".join(crashes), pytrace=False)


