"""The daemon's loop in process: duties, their registry, status strings."""

from __future__ import annotations

import pytest

from orochi_fdw.sidecar import config as configuration
from orochi_fdw.sidecar.daemon import Daemon
from orochi_fdw.sidecar.duties import Duty, duty_names, load_duty, register_duty


class _Flaky(Duty):
    name = "flaky"
    calls = 0

    def run_cycle(self) -> str:
        type(self).calls += 1
        if type(self).calls == 1:
            raise RuntimeError("boom")
        self.schedule_in(0)
        return "fine"


def test_a_duty_that_raises_is_logged_and_the_loop_goes_on(caplog):
    register_duty("flaky", f"{__name__}:_Flaky")
    config = configuration.load(environ={}, overrides={"dsn": "x", "duties": "flaky",
                                                       "reconnect.min_delay": 0.01})
    daemon = Daemon(config)
    assert [d.name for d in daemon.duties] == ["flaky"]
    assert daemon.run_cycle() == "flaky: unexpected error: RuntimeError: boom"
    assert "duty flaky failed" in caplog.text and "RuntimeError: boom" in caplog.text
    daemon.duties[0].schedule_in(0)
    assert daemon.run_cycle() == "flaky: fine"
    assert "flaky" in duty_names()


def test_unknown_or_broken_duties_are_configuration_errors():
    with pytest.raises(configuration.ConfigError, match="unknown duty 'nope'"):
        load_duty("nope")
    register_duty("broken", "no.such.module:Duty")
    with pytest.raises(configuration.ConfigError, match="duty 'broken' cannot be loaded"):
        load_duty("broken")


def test_jobs_duty_in_process(db, db_dsn):
    db.execute("CREATE TABLE log (job_id int)")
    db.execute("CREATE PROCEDURE note(job_id int, config jsonb) LANGUAGE sql "
               "AS $$ INSERT INTO log VALUES (job_id) $$")
    config = configuration.load(environ={}, overrides={"dsn": db_dsn})
    daemon = Daemon(config)
    try:
        assert daemon.run_cycle() == "jobs: no job due"
        assert daemon.postgres_reachable()
        db.execute("SELECT orochi.add_job('note', interval '1 hour')")
        daemon.duties[0].schedule_in(0)
        assert daemon.run_cycle() == "jobs: ran 1 of 1 due job (1 success)"
        assert daemon.run_cycle() == "idle"  # the next look is a poll interval away
        snapshot = daemon.duties[0].snapshot()
        assert [(j["job_id"], j["total_runs"], j["last_run_status"]) for j in snapshot["jobs"]] == \
            [(1000, 1, "Success")]
    finally:
        daemon.close()


def test_unreachable_postgres_is_a_status_not_a_crash():
    from orochi_fdw.testing.cluster import find_free_port
    port = find_free_port()
    config = configuration.load(environ={}, overrides={
        "dsn": f"host=127.0.0.1 port={port} dbname=x connect_timeout=2", "reconnect.min_delay": 0.01})
    daemon = Daemon(config)
    status = daemon.run_cycle()
    assert status.startswith("jobs: postgres unreachable (") and status.endswith("retrying in 0.0s")
    assert not daemon.postgres_reachable()
    daemon.close()
