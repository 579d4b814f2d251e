"""Fixtures of the sidecar tests: orochi-sidecar as a real subprocess."""

from __future__ import annotations

import pytest

from sidecar_harness import TEST_SETTINGS, Sidecar


@pytest.fixture
def start_sidecar(tmp_path):
    """Factory: ``start_sidecar(dsn, *args, env=None)`` -> a running
    :class:`Sidecar` with :data:`TEST_SETTINGS`, extra command-line ``args``
    and extra environment variables (killed after the test if still running)."""
    started: list[Sidecar] = []

    def factory(dsn: str, *args: str, env: dict[str, str] | None = None) -> Sidecar:
        path = tmp_path / f"sidecar{len(started)}.toml"
        path.write_text(TEST_SETTINGS)
        sidecar = Sidecar(dsn, str(path), list(args), env)
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        if sidecar.proc.poll() is None:
            sidecar.kill9()


@pytest.fixture
def job_table(db):
    """``job_log`` written by ``public.slow_job(job_id, config)``: it inserts
    'first', sleeps ``job_control.sleep_seconds``, inserts 'second', then
    fails with ``job_control.fail_with`` when set."""
    db.execute("CREATE TABLE job_log (job_id int, step text, at timestamptz DEFAULT clock_timestamp())")
    db.execute("CREATE TABLE job_control (sleep_seconds float8 NOT NULL DEFAULT 0, fail_with text)")
    db.execute("INSERT INTO job_control DEFAULT VALUES")
    db.execute("""
        CREATE PROCEDURE public.slow_job(job_id int, config jsonb) LANGUAGE plpgsql AS $$
        DECLARE
            control job_control;
        BEGIN
            SELECT * INTO control FROM job_control;
            INSERT INTO job_log (job_id, step) VALUES (job_id, 'first');
            PERFORM pg_sleep(control.sleep_seconds);
            INSERT INTO job_log (job_id, step) VALUES (job_id, 'second');
            IF control.fail_with IS NOT NULL THEN
                RAISE EXCEPTION '%', control.fail_with;
            END IF;
        END $$""")
    return "job_log"
