"""The jobs duty: runs the jobs of ``orochi.jobs`` that are due.

Each cycle looks for due jobs (scheduled, ``next_start <= now()``) on a
control connection and runs them one at a time on a worker connection,
through ``orochi.run_job_background(job_id)``, which takes the job's and its
table's locks, runs the body in a subtransaction and records the outcome and
the retry backoff in ``orochi.job_stats`` in the same transaction.

- ``max_runtime``: the worker's ``statement_timeout`` during the run; the
  cancelled run is recorded as a failure.
- The worker sets ``client_connection_check_interval``: if the daemon dies
  in the middle of a job, the job's backend notices, its transaction rolls
  back, and the job, still due, runs again at the next start.
- Postgres unreachable: the duty reports it, closes its connections and
  tries again after a delay that doubles up to ``reconnect.max_delay``.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from orochi_fdw.sidecar.duties import DaemonContext, Duty

logger = logging.getLogger("orochi.sidecar.jobs")

_DUE_JOBS = """
SELECT job_id, application_name, proc_schema, proc_name, relid::regclass::text,
       extract(epoch FROM max_runtime)::float8
  FROM orochi.jobs
 WHERE scheduled AND next_start <= now()
 ORDER BY next_start, job_id
 LIMIT %s
"""

_JOBS_SNAPSHOT = """
SELECT coalesce(json_agg(x ORDER BY x.job_id), '[]'::json) FROM (
  SELECT j.job_id, j.application_name, j.proc_schema, j.proc_name,
         j.relid::regclass::text AS table_name, j.schedule_interval::text AS schedule_interval,
         j.max_runtime::text AS max_runtime, j.max_retries, j.retry_period::text AS retry_period,
         j.scheduled, j.config, j.next_start, j.owner::text AS owner,
         s.job_status, s.last_run_status, s.last_run_started_at, s.last_successful_finish,
         s.last_run_duration::text AS last_run_duration, s.total_runs, s.total_successes,
         s.total_failures, s.consecutive_failures, s.last_error, s.last_summary,
         extract(epoch FROM s.last_successful_finish)::float8 AS last_success_epoch
    FROM orochi.jobs j JOIN orochi.job_stats s USING (job_id)) x
"""


@dataclass(frozen=True)
class DueJob:
    """A job found due, as the cycle runs it."""

    job_id: int
    application_name: str
    proc_schema: str
    proc_name: str
    table_name: str | None
    max_runtime: float  # seconds, 0 = no limit

    @property
    def proc(self) -> str:
        return _proc_label(self.proc_schema, self.proc_name)


def _proc_label(schema: str, name: str) -> str:
    """How logs and metrics name a job's procedure: the policy kind, or schema.name."""
    return name if schema == "orochi" else f"{schema}.{name}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class JobsDuty(Duty):
    """Runs due jobs, one at a time, and keeps their statistics for the REST API."""

    name = "jobs"

    def __init__(self, context: DaemonContext):
        super().__init__(context)
        self.config = context.config
        self._control: psycopg.Connection | None = None
        self._worker: psycopg.Connection | None = None
        self._worker_pid: int | None = None
        self._lock = threading.Lock()
        self._running: DueJob | None = None
        self._reconnect_delay = self.config["reconnect.min_delay"]
        self._snapshot: dict[str, Any] = {"as_of": None, "jobs": []}
        metrics = context.metrics
        self._runs = metrics.counter("orochi_sidecar_job_runs_total",
                                     "Job runs by outcome (Success, Failed, Skipped).", ["status"])
        self._durations = metrics.histogram("orochi_sidecar_job_duration_seconds",
                                            "Duration of job runs, in seconds.", ["proc_name"])
        self._last_success = metrics.gauge(
            "orochi_sidecar_job_last_success_timestamp_seconds",
            "When each job last finished successfully (Unix time).", ["job_id", "proc_name"])
        self._consecutive_failures = metrics.gauge(
            "orochi_sidecar_job_consecutive_failures", "Consecutive failed runs of each job.",
            ["job_id", "proc_name"])
        self._jobs_due = metrics.gauge("orochi_sidecar_jobs_due", "Jobs found due at the last look.")
        self._reconnects = metrics.counter("orochi_sidecar_postgres_connection_failures_total",
                                           "Failed attempts to reach Postgres.")

    # ------------------------------------------------------------ connections

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.config["dsn"], autocommit=True,
                               connect_timeout=self.config["connect_timeout"],
                               application_name=self.config["application_name"])

    def _ensure_connected(self) -> None:
        if self._control is None or self._control.closed:
            self._control = self._connect()
        if self._worker is None or self._worker.closed:
            worker = self._connect()
            check_ms = int(self.config["jobs.client_check_interval"] * 1000)
            worker.execute("SELECT set_config('client_connection_check_interval', %s, false)",
                           [str(check_ms)])
            self._worker_pid = worker.info.backend_pid
            self._worker = worker

    def _disconnect(self) -> None:
        for conn in (self._control, self._worker):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # already broken: nothing to release
                    pass
        self._control = self._worker = None
        self._worker_pid = None

    def _unreachable(self, exc: BaseException) -> str:
        self._disconnect()
        self._reconnects.inc()
        self.context.postgres_up[self.name] = False
        delay = self._reconnect_delay
        self._reconnect_delay = min(delay * 2, self.config["reconnect.max_delay"])
        self.schedule_in(delay)
        logger.warning("postgres unreachable: %s; retrying in %.1fs", _first_line(exc), delay)
        return f"postgres unreachable ({_first_line(exc)}); retrying in {delay:.1f}s"

    # ------------------------------------------------------------ the cycle

    def run_cycle(self) -> str:
        """Run the due jobs; the status says how many ran and how they ended."""
        try:
            self._ensure_connected()
            assert self._control is not None
            limit = self.config["jobs.max_jobs_per_cycle"]
            try:
                rows = self._control.execute(_DUE_JOBS, [limit]).fetchall()
            except psycopg.errors.UndefinedTable:
                self.context.postgres_up[self.name] = True
                self.schedule_in(self.config["jobs.poll_interval"])
                return "the orochi extension is not installed in this database"
            self.context.postgres_up[self.name] = True
            self._reconnect_delay = self.config["reconnect.min_delay"]
            due = [DueJob(*row) for row in rows]
            self._jobs_due.set(len(due))
            outcomes: dict[str, int] = {}
            for job in due:
                if self.context.stopping.is_set():
                    break
                status = self._run_one(job)
                outcomes[status] = outcomes.get(status, 0) + 1
            self._refresh_snapshot()
        except psycopg.OperationalError as exc:
            return self._unreachable(exc)
        poll = self.config["jobs.poll_interval"]
        self.schedule_in(0 if len(due) >= limit else poll)
        if not due:
            return "no job due"
        ran = sum(outcomes.values())
        summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(outcomes.items()))
        return f"ran {ran} of {len(due)} due job{'s' if len(due) != 1 else ''} ({summary})"

    def _run_one(self, job: DueJob) -> str:
        """Run one job on the worker connection; returns its status.

        Raises:
            psycopg.OperationalError: Postgres went away (the run is recorded
                as failed if the control connection still works).
        """
        assert self._worker is not None and self._control is not None
        worker = self._worker
        worker.execute("SELECT set_config('statement_timeout', %s, false)",
                       [str(int(job.max_runtime * 1000))])
        started_wall = datetime.datetime.now(datetime.timezone.utc)
        started = time.monotonic()
        with self._lock:
            self._running = job
        try:
            status, message = worker.execute(
                "SELECT status, message FROM orochi.run_job_background(%s)", [job.job_id]).fetchone()
        except psycopg.errors.QueryCanceled as exc:
            # max_runtime (statement_timeout) or a cancel hit outside the body's
            # subtransaction: the run rolled back whole, so record it from here
            elapsed = time.monotonic() - started
            message = _first_line(exc)
            if job.max_runtime and elapsed >= job.max_runtime:
                message = f"canceled after exceeding max_runtime of {job.max_runtime:g}s ({message})"
            status = self._record_failure(job, message, started_wall)
        except psycopg.OperationalError as exc:
            message = f"the connection running the job was lost: {_first_line(exc)}"
            status = self._record_failure(job, message, started_wall, stopping_ok=True)
            self._log(job, status, time.monotonic() - started, message)
            self._runs.inc(status=status)
            raise
        except psycopg.Error as exc:
            message = _first_line(exc)
            status = self._record_failure(job, message, started_wall)
        finally:
            with self._lock:
                self._running = None
        elapsed = time.monotonic() - started
        if not worker.closed:
            try:
                worker.execute("SELECT set_config('statement_timeout', '0', false)")
            except psycopg.Error:
                pass
        self._log(job, status, elapsed, message)
        self._runs.inc(status=status)
        if status != "Skipped":
            self._durations.observe(elapsed, proc_name=job.proc)
        return status

    def _record_failure(self, job: DueJob, message: str, started: datetime.datetime,
                        stopping_ok: bool = False) -> str:
        """Record a run that could not record itself; returns its status."""
        if stopping_ok and self.context.stopping.is_set():
            return "Cancelled"  # stopped at shutdown: rolled back, runs again at the next start
        try:
            assert self._control is not None
            self._control.execute("SELECT orochi.record_job_failure(%s, %s, %s)",
                                  [job.job_id, message, started])
        except psycopg.Error as exc:
            logger.warning("job %d: could not record its failure: %s", job.job_id, _first_line(exc))
        return "Failed"

    def _log(self, job: DueJob, status: str, elapsed: float, message: str) -> None:
        level = logging.INFO if status in ("Success", "Skipped") else logging.WARNING
        logger.log(level, "job %d (%s, table %s): %s in %.3fs: %s", job.job_id, job.proc,
                   job.table_name or "-", status, elapsed, message)

    def _refresh_snapshot(self) -> None:
        assert self._control is not None
        jobs = self._control.execute(_JOBS_SNAPSHOT).fetchone()[0]
        keep = []
        for row in jobs:
            labels = {"job_id": str(row["job_id"]),
                      "proc_name": _proc_label(row["proc_schema"], row["proc_name"])}
            keep.append(labels)
            if row.get("last_success_epoch") is not None:
                self._last_success.set(row["last_success_epoch"], **labels)
            self._consecutive_failures.set(row.get("consecutive_failures") or 0, **labels)
        self._last_success.remove_other(keep)
        self._consecutive_failures.remove_other(keep)
        with self._lock:
            self._snapshot = {"as_of": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                              "running": self._running.job_id if self._running else None,
                              "jobs": jobs}

    # ------------------------------------------------------------ other threads

    def snapshot(self) -> dict[str, Any]:
        """The jobs and their statistics as of the last cycle, for /jobs."""
        with self._lock:
            snap = dict(self._snapshot)
            snap["running"] = self._running.job_id if self._running else None
            return snap

    def cancel(self) -> None:
        """Stop the running job at shutdown: its backend is terminated, so its
        transaction rolls back and the job runs again at the next start."""
        with self._lock:
            job, pid = self._running, self._worker_pid
        if job is None or pid is None:
            return
        logger.warning("job %d: still running after the shutdown grace period, cancelling it", job.job_id)
        try:
            with self._connect() as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        except psycopg.Error as exc:
            logger.warning("job %d: could not cancel it: %s", job.job_id, _first_line(exc))

    def close(self) -> None:
        self._disconnect()
