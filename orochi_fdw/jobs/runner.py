"""Running a job: its body, its locks and its statistics.

Two entry points:

- :func:`run_now` (``CALL orochi.run_job(id)``) runs a job in the caller's
  transaction, waiting for its locks; an error reaches the caller as an
  ERROR naming the job.
- :func:`run_background` (``orochi.run_job_background(id)``, what
  orochi-sidecar calls) never raises because of the job: it takes the locks
  without waiting (busy: ``Skipped``), runs the body in a subtransaction and
  records success or failure, with the retry backoff, in the same
  transaction.

Locks are transaction-level advisory locks: one keyed on the job (so a job
never runs twice at once) and one keyed on its table (at most one job at a
time per table).

A job's body runs with its owner's rights and no other
(:func:`~orochi_fdw.bridge.spi.running_as`, as VACUUM and REFRESH
MATERIALIZED VIEW run as the table's owner): whoever runs it (a superuser's
sidecar, a member of the owner calling orochi.run_job), SET ROLE, RESET
ROLE and SET SESSION AUTHORIZATION are refused inside the body, and the
settings it changes are rolled back when it ends.  Both entry points first
check that the caller is (a member of) the job's owner.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.types import Interval
from orochi_fdw.errors import OrochiError, SPIError
from orochi_fdw.jobs import registry
from orochi_fdw.jobs.catalog import Job, check_job_owner, get_job, relation_name, require_job
from orochi_fdw.jobs.errors import JobRoutineNotFoundError, JobRunError

SUCCESS = "Success"
FAILED = "Failed"
SKIPPED = "Skipped"


@dataclass(frozen=True)
class RunOutcome:
    """What one background run did.

    Attributes:
        status: ``Success``, ``Failed`` or ``Skipped``.
        message: the body's summary, the error's message, or why it was skipped.
        duration: how long the body ran (None when skipped).
        next_start: when the job is due next (None when skipped).
    """

    status: str
    message: str
    duration: Interval | datetime.timedelta | None
    next_start: datetime.datetime | None

    def as_row(self) -> tuple:
        """The outcome as orochi.run_job_background's result row."""
        return (self.status, self.message, self.duration, self.next_start)


def describe_job(job: Job) -> str:
    """How messages name a job: ``job 1000 (Retention Policy [1000] on "metrics")``."""
    where = f' on "{relation_name(job.relid)}"' if job.relid is not None else ""
    return f"job {job.job_id} ({job.application_name}{where})"


def error_message(exc: BaseException) -> str:
    """The one-line message of an exception raised by a job's body."""
    if isinstance(exc, SPIError):
        return exc.message
    if isinstance(exc, OrochiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- locks

def _lock(job: Job, wait: bool) -> str | None:
    """Take the job's and its table's advisory locks for the transaction.

    Returns:
        None when both are held, else why not (only when ``wait`` is false).
    """
    function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    got = spi.execute(f"SELECT {function}(orochi.job_lock_key($1))::text", [job.job_id],
                      types=["int4"]).scalar()
    if not wait and got != "true":
        return f"job {job.job_id} is running in another session"
    if job.relid is not None:
        got = spi.execute(f"SELECT {function}(orochi.job_table_lock_key($1))::text", [job.relid],
                          types=["oid"]).scalar()
        if not wait and got != "true":
            return f'another job is running on "{relation_name(job.relid)}"'
    return None


# ---------------------------------------------------------------- bodies

def _call_procedure(job: Job) -> str:
    """CALL (or SELECT, for a function) the user's routine (the caller has
    already become the job's owner: :func:`execute_body`)."""
    routine = f"{spi.quote_ident(job.proc_schema)}.{spi.quote_ident(job.proc_name)}"
    kind = spi.execute(
        "SELECT p.prokind::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = $2 "
        "AND p.proargtypes = '23 3802'::pg_catalog.oidvector",
        [job.proc_schema, job.proc_name], types=["name", "name"]).scalar()
    if kind is None:
        raise JobRoutineNotFoundError(f"function or procedure {routine}(integer, jsonb) does not exist")
    params = [job.job_id, json.dumps(job.config) if job.config is not None else None]
    if kind == "p":
        spi.execute(f"CALL {routine}($1, $2::jsonb)", params, types=["int4", "text"])
    else:
        spi.execute(f"SELECT {routine}($1, $2::jsonb)", params, types=["int4", "text"])
    return f"called {routine}"


def execute_body(job: Job) -> str:
    """Run a job's body once in the current transaction, as the job's owner
    (see the module docstring).

    Returns:
        The body's one-line summary.

    Raises:
        Whatever the body raises.
    """
    with spi.running_as(job.owner_oid):
        if job.proc_schema == registry.BUILTIN_SCHEMA and registry.kind(job.proc_name) is not None:
            body = registry.resolve(job.proc_name)
            summary = body(job.job_id, job.relid, dict(job.config or {}))
            return str(summary) if summary else "done"
        return _call_procedure(job)


# ---------------------------------------------------------------- statistics

def record_success(job_id: int, started_at: datetime.datetime, summary: str) -> tuple:
    """Record a successful run and schedule the next one.

    Returns:
        (duration, next_start).
    """
    spi.execute(
        "INSERT INTO orochi.bgw_job_stat AS s (job_id, last_run_started_at, last_successful_finish, "
        " last_finish, last_run_status, last_run_duration, last_summary, total_runs, total_successes) "
        "VALUES ($1, $2, clock_timestamp(), clock_timestamp(), 'Success', clock_timestamp() - $2, $3, 1, 1) "
        "ON CONFLICT (job_id) DO UPDATE SET last_run_started_at = excluded.last_run_started_at, "
        " last_successful_finish = excluded.last_successful_finish, last_finish = excluded.last_finish, "
        " last_run_status = 'Success', last_run_duration = excluded.last_run_duration, "
        " last_summary = excluded.last_summary, total_runs = s.total_runs + 1, "
        " total_successes = s.total_successes + 1, consecutive_failures = 0",
        [job_id, started_at, summary], types=["int4", "timestamptz", "text"], internal=True)
    row = spi.execute(
        "UPDATE orochi.jobs SET next_start = greatest($2 + schedule_interval, clock_timestamp()) "
        "WHERE job_id = $1 RETURNING clock_timestamp() - $2, next_start",
        [job_id, started_at], types=["int4", "timestamptz"], internal=True)
    return tuple(row[0]) if row else (None, None)


def record_failure(job_id: int, message: str, started_at: datetime.datetime | None = None) -> tuple:
    """Record a failed run and schedule the retry.

    The n-th consecutive failure waits ``retry_period * 2^(n-1)``, at most
    ``schedule_interval``; once a job has been retried ``max_retries`` times
    (unless -1) without success, it waits a full ``schedule_interval``.

    Returns:
        (duration, next_start), both None when the job no longer exists.
    """
    failures = spi.execute(
        "INSERT INTO orochi.bgw_job_stat AS s (job_id, last_run_started_at, last_finish, last_run_status, "
        " last_run_duration, last_error, total_runs, total_failures, consecutive_failures) "
        "SELECT $1, coalesce($2, clock_timestamp()), clock_timestamp(), 'Failed', "
        " clock_timestamp() - coalesce($2, clock_timestamp()), $3, 1, 1, 1 "
        "  FROM orochi.jobs WHERE job_id = $1 "
        "ON CONFLICT (job_id) DO UPDATE SET last_run_started_at = excluded.last_run_started_at, "
        " last_finish = excluded.last_finish, last_run_status = 'Failed', "
        " last_run_duration = excluded.last_run_duration, last_error = excluded.last_error, "
        " total_runs = s.total_runs + 1, total_failures = s.total_failures + 1, "
        " consecutive_failures = s.consecutive_failures + 1 "
        "RETURNING consecutive_failures, last_run_duration",
        [job_id, started_at, message], types=["int4", "timestamptz", "text"], internal=True)
    if not failures:
        return (None, None)
    consecutive, duration = failures[0]
    next_start = spi.execute(
        "UPDATE orochi.jobs SET next_start = clock_timestamp() + CASE "
        "  WHEN max_retries <> -1 AND $2 > max_retries THEN schedule_interval "
        "  ELSE least(retry_period * power(2, least($2 - 1, 40)), schedule_interval) END "
        "WHERE job_id = $1 RETURNING next_start",
        [job_id, int(consecutive)], types=["int4", "int4"], internal=True).scalar()
    return (duration, next_start)


# ---------------------------------------------------------------- entry points

def run_now(job_id: int) -> str:
    """Run a job now in the caller's transaction (``CALL orochi.run_job``).

    Waits for the job's and its table's locks, runs the body and records the
    success in the job's statistics (and its next start).

    Returns:
        The body's summary.

    Raises:
        JobNotFoundError: no such job.
        JobPrivilegeError: the current role does not own the job.
        JobRunError: the body failed (the message names the job; the SQLSTATE
            is the cause's).
    """
    job = require_job(job_id)
    check_job_owner(job)
    _lock(job, wait=True)
    started_at = spi.execute("SELECT clock_timestamp()").scalar()
    try:
        summary = execute_body(job)
    except Exception as exc:  # every failure of the body names the job
        sqlstate = getattr(exc, "sqlstate", None) or "XX000"
        raise JobRunError(f"{describe_job(job)} failed: {error_message(exc)}", sqlstate=sqlstate,
                          detail=getattr(exc, "detail", None), hint=getattr(exc, "hint", None)) from exc
    record_success(job.job_id, started_at, summary)
    return summary


def run_background(job_id: int) -> RunOutcome:
    """Run a due job for the scheduler; never raises because of the job.

    Returns:
        The outcome; ``Skipped`` when the job does not exist, is paused, is
        not due (another scheduler ran it), or a lock is busy.

    Raises:
        JobPrivilegeError: the caller is not (a member of) the job's owner
            (the scheduler connects as a superuser).
    """
    job = get_job(job_id)
    if job is None:
        return RunOutcome(SKIPPED, f"job {job_id} not found", None, None)
    check_job_owner(job)
    busy = _lock(job, wait=False)
    if busy is not None:
        return RunOutcome(SKIPPED, busy, None, None)
    job = get_job(job_id)  # as committed now that the job is ours
    if job is None:
        return RunOutcome(SKIPPED, f"job {job_id} not found", None, None)
    due = spi.execute("SELECT $1 <= clock_timestamp()", [job.next_start], types=["timestamptz"]).scalar()
    if not job.scheduled or not due:
        return RunOutcome(SKIPPED, f"job {job_id} is not due", None, None)
    started_at = spi.execute("SELECT clock_timestamp()").scalar()
    try:
        with spi.subtransaction():
            summary = execute_body(job)
    except Exception as exc:  # the body's failure is recorded, never raised
        message = error_message(exc)
        duration, next_start = record_failure(job.job_id, message, started_at)
        return RunOutcome(FAILED, message, duration, next_start)
    duration, next_start = record_success(job.job_id, started_at, summary)
    return RunOutcome(SUCCESS, summary, duration, next_start)
