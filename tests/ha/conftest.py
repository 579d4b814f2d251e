"""Fixtures of the HA tests: a worker group (a primary and two streaming
standbys), a coordinator, and one orochi-sidecar subprocess (the ha duty)
per server on 127.0.0.1, made once per module (orochi_fdw.testing.ha)."""

from __future__ import annotations

import os
import sys

import pytest

from orochi_fdw.testing.ha import HaGroup

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="module")
def ha_group():
    # a worker group (a primary, two standbys) and a coordinator (no standby):
    # four sidecars in one Raft group.  The tests check what happens, not how
    # fast: a lease and election timeouts a few times the defaults keep a
    # loaded machine (the suite runs beside other tests) from failing over
    # when nothing failed; bench/ha_bench.py measures the defaults.
    group = HaGroup(name="ha", groups={"worker1": 2, "coordinator": 0}, databases=("app",),
                    lease_ttl=8.0, ha_options={"raft_min_timeout": 1.0, "raft_max_timeout": 3.0})
    try:
        group.start()
        group.wait_ready()
        yield group
    except BaseException:
        for member, sidecar in group.sidecars.items():
            sys.stderr.write(f"--- sidecar {member} ---\n" + "\n".join(sidecar.lines[-80:]) + "\n")
        raise
    finally:
        group.cleanup()


@pytest.fixture
def ha(ha_group):
    """The module's group, ready (a primary that takes writes, every standby
    streaming from it)."""
    ha_group.wait_ready()
    return ha_group


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the sidecars' logs."""
    report = yield
    groups = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, HaGroup)]
    for group in groups if report.failed else ():
        for member, sidecar in group.sidecars.items():
            report.sections.append((f"orochi-sidecar {member}", "\n".join(sidecar.lines[-100:])))
    return report
