"""orochi-sidecar as a real subprocess against a real Postgres: it runs due
jobs, retries failures, serves /health, /jobs and /metrics, shuts down
cleanly on SIGTERM, and a kill -9 in the middle of a job loses nothing."""

from __future__ import annotations

import re
import signal
import subprocess


from sidecar_harness import SIDECAR, wait_until
from promtext import parse, value


def _add_job(db, **settings) -> int:
    job_id = db.execute("SELECT orochi.add_job('slow_job', interval '1 hour', "
                        "initial_start => now() + interval '1 day')").fetchone()[0]
    if settings:
        assignments = ", ".join(f"{k} => %s" for k in settings)
        db.execute(f"SELECT orochi.alter_job(%s, {assignments})", [job_id, *settings.values()])
    return job_id


def _make_due(db, job_id):
    db.execute("UPDATE orochi.jobs SET next_start = now() - interval '1 second' WHERE job_id = %s", [job_id])


def _stats(db, job_id):
    cur = db.execute("SELECT * FROM orochi.job_stats WHERE job_id = %s", [job_id])
    return dict(zip([c.name for c in cur.description], cur.fetchone()))


def _steps(db):
    return [r[0] for r in db.execute("SELECT step FROM job_log ORDER BY at")]


def test_runs_a_due_job_serves_endpoints_and_stops_on_sigterm(db, db_dsn, job_table, start_sidecar):
    job_id = _add_job(db)
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: sidecar.get("/health")[0] == 200, what="a healthy sidecar")
    assert _steps(db) == []  # not due yet

    _make_due(db, job_id)
    match = sidecar.wait_for_log(rf"job {job_id} \(public\.slow_job, table -\): Success in [0-9.]+s")
    assert match
    assert _steps(db) == ["first", "second"]
    assert _stats(db, job_id)["total_successes"] == 1

    status, health = sidecar.get_json("/health")
    assert status == 200 and health["postgres"] == "up" and health["state"] == "running"
    jobs = wait_until(lambda: (lambda j: j if j["jobs"] and j["jobs"][0]["total_runs"] == 1 else None)(
        sidecar.get_json("/jobs")[1]), what="/jobs to show the run")
    job = jobs["jobs"][0]
    assert (job["job_id"], job["proc_name"], job["last_run_status"], job["job_status"]) == \
        (job_id, "slow_job", "Success", "Scheduled")
    assert job["schedule_interval"] == "01:00:00" and job["table_name"] is None

    status, content_type, text = sidecar.get("/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    types, samples = parse(text)
    assert types["orochi_sidecar_job_runs_total"] == "counter"
    assert types["orochi_sidecar_job_duration_seconds"] == "histogram"
    assert value(samples, "orochi_sidecar_job_runs_total", status="Success") == 1
    assert value(samples, "orochi_sidecar_postgres_up") == 1
    assert value(samples, "orochi_sidecar_cycles_total") >= 2
    assert value(samples, "orochi_sidecar_job_duration_seconds_count", proc_name="public.slow_job") == 1
    assert value(samples, "orochi_sidecar_job_duration_seconds_bucket", proc_name="public.slow_job",
                 le="+Inf") == 1
    last_success = value(samples, "orochi_sidecar_job_last_success_timestamp_seconds",
                         job_id=str(job_id), proc_name="public.slow_job")
    assert last_success == _stats(db, job_id)["last_successful_finish"].timestamp()

    assert sidecar.get("/nope")[0] == 404
    assert sidecar.terminate() == 0
    assert "received SIGTERM, shutting down" in sidecar.log() and sidecar.log().endswith("stopped")


def test_two_sidecars_run_a_due_job_once(db, db_dsn, job_table, start_sidecar):
    job_id = _add_job(db)
    db.execute("UPDATE job_control SET sleep_seconds = 1")
    first, second = start_sidecar(db_dsn), start_sidecar(db_dsn)
    _make_due(db, job_id)
    first_start, second_start = len(first.lines), len(second.lines)
    wait_until(lambda: _stats(db, job_id)["total_runs"] == 1, what="a run")
    # both have looked at least twice since; only one ran it
    for sidecar in (first, second):
        mark = len(sidecar.lines)
        sidecar.wait_for_log("cycle: jobs: ", start=mark)
        sidecar.wait_for_log("cycle: jobs: ", start=len(sidecar.lines))
    assert _steps(db) == ["first", "second"] and _stats(db, job_id)["total_runs"] == 1
    successes = [s for s, start in ((first, first_start), (second, second_start))
                 if any(f"job {job_id} " in line and ": Success in" in line for line in s.lines[start:])]
    assert len(successes) == 1
    assert first.terminate() == 0 and second.terminate() == 0


def test_a_failing_job_is_retried_until_it_succeeds(db, db_dsn, job_table, start_sidecar):
    job_id = _add_job(db, retry_period="0.5 seconds")
    db.execute("UPDATE job_control SET fail_with = 'not yet'")
    sidecar = start_sidecar(db_dsn)
    _make_due(db, job_id)
    sidecar.wait_for_log(rf"job {job_id} .*: Failed in [0-9.]+s: not yet")
    stats = wait_until(lambda: (lambda s: s if s["consecutive_failures"] >= 2 else None)(_stats(db, job_id)),
                       what="a retry")
    assert stats["last_error"] == "not yet" and stats["job_status"] in ("Scheduled", "Running")
    assert _steps(db) == []  # the failed runs rolled back
    db.execute("UPDATE job_control SET fail_with = NULL")
    sidecar.wait_for_log(rf"job {job_id} .*: Success in")
    stats = _stats(db, job_id)
    assert stats["consecutive_failures"] == 0 and stats["total_successes"] == 1
    assert stats["total_failures"] >= 2
    _, samples = parse(sidecar.get("/metrics")[2])
    assert value(samples, "orochi_sidecar_job_runs_total", status="Failed") >= 2
    assert sidecar.terminate() == 0


def test_kill_9_in_the_middle_of_a_job_rolls_it_back_and_it_runs_again(db, db_dsn, job_table,
                                                                         start_sidecar):
    job_id = _add_job(db)
    db.execute("UPDATE job_control SET sleep_seconds = 300")
    sidecar = start_sidecar(db_dsn)
    _make_due(db, job_id)
    wait_until(lambda: _stats(db, job_id)["job_status"] == "Running", what="the job to start")
    sidecar.kill9()
    # the job's backend notices its client is gone and rolls the job back
    wait_until(lambda: _stats(db, job_id)["job_status"] != "Running", what="the job's backend to end")
    assert _steps(db) == []
    stats = _stats(db, job_id)
    assert stats["total_runs"] == 0 and stats["next_start"] < stats["next_start"].now(stats["next_start"].tzinfo)

    db.execute("UPDATE job_control SET sleep_seconds = 0")
    again = start_sidecar(db_dsn)
    again.wait_for_log(rf"job {job_id} .*: Success in")
    assert _steps(db) == ["first", "second"]
    assert _stats(db, job_id)["total_runs"] == 1
    assert again.terminate() == 0


def test_sigterm_cancels_a_long_job_after_the_grace_period(db, db_dsn, job_table, start_sidecar):
    job_id = _add_job(db)
    db.execute("UPDATE job_control SET sleep_seconds = 300")
    sidecar = start_sidecar(db_dsn)
    _make_due(db, job_id)
    wait_until(lambda: _stats(db, job_id)["job_status"] == "Running", what="the job to start")
    assert sidecar.terminate() == 0
    assert "still running after the shutdown grace period, cancelling it" in sidecar.log()
    wait_until(lambda: _stats(db, job_id)["job_status"] != "Running", what="the job's backend to end")
    assert _steps(db) == [] and _stats(db, job_id)["total_runs"] == 0  # due again at the next start


def test_max_runtime_cancels_a_run_and_records_it(db, db_dsn, job_table, start_sidecar):
    job_id = _add_job(db, max_runtime="1 second", retry_period="1 hour")
    db.execute("UPDATE job_control SET sleep_seconds = 300")
    sidecar = start_sidecar(db_dsn)
    _make_due(db, job_id)
    sidecar.wait_for_log(rf"job {job_id} .*: Failed in ")
    stats = _stats(db, job_id)
    # recorded by the run itself, or by the daemon when the cancel hit outside the body
    assert re.search("statement timeout|exceeding max_runtime of 1s", stats["last_error"]), stats["last_error"]
    assert stats["total_failures"] == 1 and stats["consecutive_failures"] == 1
    assert _steps(db) == []
    assert sidecar.terminate() == 0


def test_health_follows_postgres_going_down_and_coming_back(make_cluster, start_sidecar):
    cluster = make_cluster("sidecar_pg")
    cluster.create_database("app", True)
    sidecar = start_sidecar(cluster.dsn("app"))
    wait_until(lambda: sidecar.get("/health")[0] == 200, what="a healthy sidecar")
    cluster.stop()
    wait_until(lambda: sidecar.get("/health")[0] == 503, what="/health to report Postgres down")
    _, samples = parse(sidecar.get("/metrics")[2])
    assert value(samples, "orochi_sidecar_postgres_up") == 0
    assert value(samples, "orochi_sidecar_postgres_connection_failures_total") >= 1
    assert sidecar.proc.poll() is None
    cluster.start()
    wait_until(lambda: sidecar.get("/health")[0] == 200, what="/health to recover")
    assert sidecar.terminate() == 0


def test_once_runs_one_cycle(db, db_dsn, job_table):
    job_id = _add_job(db)
    _make_due(db, job_id)
    done = subprocess.run([SIDECAR, "--dsn", db_dsn, "--once"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "jobs: ran 1 of 1 due job (1 success)"
    assert _steps(db) == ["first", "second"]


def test_once_without_postgres_and_bad_configuration_exit_non_zero(tmp_path):
    from orochi_fdw.testing.cluster import find_free_port
    dsn = f"host=127.0.0.1 port={find_free_port()} dbname=x connect_timeout=2"
    done = subprocess.run([SIDECAR, "--dsn", dsn, "--once"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout.startswith("jobs: postgres unreachable")
    bad = tmp_path / "bad.toml"
    bad.write_text('[jobs]\npoll_interval = "often"\n')
    done = subprocess.run([SIDECAR, "--dsn", dsn, "--config", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert 'invalid value for "jobs.poll_interval"' in done.stderr


def test_many_due_jobs_all_run_once_across_cycles(db, db_dsn, job_table, start_sidecar):
    job_ids = [_add_job(db) for _ in range(25)]
    sidecar = start_sidecar(db_dsn, env={"OROCHI_SIDECAR_JOBS_MAX_JOBS_PER_CYCLE": "10"})
    db.execute("UPDATE orochi.jobs SET next_start = now() - interval '1 second'")
    wait_until(lambda: db.execute("SELECT count(*) FROM orochi.job_stats WHERE total_runs = 1").fetchone()[0]
               == len(job_ids), what="every job to run")
    assert db.execute("SELECT max(total_runs), count(*) FROM orochi.job_stats").fetchone() == (1, 25)
    assert sorted(r[0] for r in db.execute("SELECT job_id FROM job_log WHERE step = 'second'")) == job_ids
    assert "cycle: jobs: ran 10 of 10 due jobs (10 success)" in sidecar.log()  # a full cycle, then more
    sidecar.proc.send_signal(signal.SIGINT)
    assert sidecar.proc.wait(60) == 0
    assert "received SIGINT, shutting down" in sidecar.log()
