"""SQL functions of the jobs catalog (sql/55_jobs.sql): user-defined actions
(orochi.add_job, alter_job, delete_job), running a job (orochi.run_job,
run_job_background, record_job_failure) and the retention and compression
policies' SQL (their bodies live in orochi_fdw.timeseries.policies)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.bridge.types import Interval
from orochi_fdw.errors import SPIError
from orochi_fdw.jobs import catalog, registry, runner
from orochi_fdw.jobs.errors import (InvalidJobArgumentError, JobPrivilegeError, JobRoutineNotFoundError,
                                    WrongObjectTypeError)

#: time types of hypertables whose time is an integer
_INTEGER_TIME_TYPES = ("smallint", "integer", "bigint")

USER_DEFINED_ACTION = "User-Defined Action"


def _relid(value: Any) -> int:
    """A regclass argument (its text, or an oid) as an oid."""
    if isinstance(value, int):
        return value
    return int(spi.execute("SELECT $1::regclass::oid", [str(value)], types=["text"]).scalar())


def _json(value: Any) -> Any:
    """A jsonb argument (text) as Python."""
    if value is None or not isinstance(value, str):
        return value
    return json.loads(value)


def _job_row(job: catalog.Job) -> tuple:
    return (job.job_id, job.schedule_interval, job.max_runtime, job.max_retries, job.retry_period,
            job.scheduled, json.dumps(job.config) if job.config is not None else None, job.next_start)


# ---------------------------------------------------------------- user-defined actions

def _resolve_routine(proc: Any) -> tuple[str, str]:
    """The (schema, name) of a user's job routine, checked to take
    (integer, jsonb) and to be executable by the current role."""
    rows = spi.execute(
        "SELECT n.nspname::text, p.proname::text, p.oid FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = $1::regproc",
        [str(proc)], types=["text"])
    schema, name, oid = rows[0]
    fits = spi.execute(
        "SELECT p.oid FROM pg_catalog.pg_proc p WHERE p.pronamespace = "
        "(SELECT pronamespace FROM pg_catalog.pg_proc WHERE oid = $1) AND p.proname = $2 "
        "AND p.proargtypes = '23 3802'::pg_catalog.oidvector",
        [oid, name], types=["oid", "name"]).scalar()
    if fits is None:
        raise JobRoutineNotFoundError(
            f"function or procedure {spi.quote_ident(schema)}.{spi.quote_ident(name)}(integer, jsonb) does not exist",
            hint="A job's procedure takes (job_id integer, config jsonb).")
    allowed = spi.execute("SELECT has_function_privilege($1, 'EXECUTE')", [fits], types=["oid"]).scalar()
    if not allowed:
        raise JobPrivilegeError(f"permission denied for procedure {schema}.{name}")
    if schema == registry.BUILTIN_SCHEMA and registry.kind(name) is not None:
        raise InvalidJobArgumentError(f'"{name}" is a built-in job kind, not a user procedure')
    return schema, name


@sql_function("add_job")
def add_job(proc: Any, schedule_interval: Interval | None, config: Any = None,
            initial_start: datetime.datetime | None = None, scheduled: bool | None = True) -> int:
    """orochi.add_job: a user-defined action calling ``proc(job_id, config)``.

    Returns:
        The new job's id.

    Raises:
        JobRoutineNotFoundError: the routine does not take (integer, jsonb).
        InvalidJobArgumentError: a NULL or out-of-range argument.
    """
    if proc is None:
        raise InvalidJobArgumentError("proc cannot be NULL", hint="Name a procedure (job_id integer, config jsonb).")
    if schedule_interval is None:
        raise InvalidJobArgumentError("schedule_interval cannot be NULL")
    schema, name = _resolve_routine(proc)
    return catalog.add_job(name, None, schedule_interval, _json(config), USER_DEFINED_ACTION,
                           proc_schema=schema, initial_start=initial_start,
                           scheduled=True if scheduled is None else bool(scheduled))


@sql_function("alter_job")
def alter_job(job_id: int, schedule_interval: Interval | None = None, max_runtime: Interval | None = None,
              max_retries: int | None = None, retry_period: Interval | None = None,
              scheduled: bool | None = None, config: Any = None,
              next_start: datetime.datetime | None = None, if_exists: bool | None = False) -> tuple | None:
    """orochi.alter_job: change the settings given (not NULL).

    Returns:
        The job's settings, or None for a missing job with ``if_exists``.

    Raises:
        JobNotFoundError, JobPrivilegeError, InvalidJobArgumentError.
    """
    if job_id is None:
        raise InvalidJobArgumentError("job_id cannot be NULL")
    if catalog.get_job(job_id) is None and if_exists:
        spi.notice(f"job {job_id} not found, skipping")
        return None
    job = catalog.alter_job(job_id, schedule_interval=schedule_interval, max_runtime=max_runtime,
                            max_retries=max_retries, retry_period=retry_period, scheduled=scheduled,
                            config=config, next_start=next_start)
    return _job_row(job)


@sql_function("delete_job")
def delete_job(job_id: int) -> None:
    """orochi.delete_job: remove a job and its statistics."""
    catalog.delete_job(job_id)


# ---------------------------------------------------------------- running

@sql_function("run_job_now")
def run_job_now(job_id: int) -> str:
    """orochi.run_job_now (and CALL orochi.run_job): run the job in this transaction.

    Returns:
        The body's summary.
    """
    return runner.run_now(job_id)


@sql_function("run_job_background")
def run_job_background(job_id: int) -> tuple:
    """orochi.run_job_background: the scheduler's run, which never raises for the job.

    Returns:
        (status, message, duration, next_start).
    """
    return runner.run_background(job_id).as_row()


@sql_function("record_job_failure")
def record_job_failure(job_id: int, message: str | None, started_at: datetime.datetime | None = None):
    """orochi.record_job_failure: record a run that could not record itself.

    Returns:
        The job's next start, or None when it no longer exists.
    """
    if job_id is None:
        raise InvalidJobArgumentError("job_id cannot be NULL")
    job = catalog.get_job(job_id)
    if job is None:
        return None
    catalog.check_job_owner(job)
    return runner.record_failure(job_id, message or "unknown error", started_at)[1]


# ---------------------------------------------------------------- policies

def _hypertable_time_type(relid: int) -> str:
    """The time column's type of a hypertable.

    Raises:
        WrongObjectTypeError: the table is not a hypertable.
    """
    try:
        with spi.subtransaction():
            time_type = spi.execute("SELECT time_type::text FROM orochi.hypertables WHERE relid = $1",
                                    [relid], types=["oid"], internal=True).scalar()
    except SPIError as exc:
        if exc.sqlstate != "42P01":  # no hypertables catalog: nothing is a hypertable
            raise
        time_type = None
    if time_type is None:
        raise WrongObjectTypeError(f'table "{catalog.relation_name(relid)}" is not a hypertable',
                                   hint="Make it one with orochi.create_hypertable first.")
    return str(time_type)


def _require_table_owner(relid: int) -> None:
    owner = spi.execute("SELECT pg_has_role(current_user, relowner, 'MEMBER') FROM pg_catalog.pg_class "
                        "WHERE oid = $1", [relid], types=["oid"]).scalar()
    if not owner:
        raise JobPrivilegeError(f'must be owner of hypertable "{catalog.relation_name(relid)}"')


def _policy_lag(parameter: str, value: Any, time_type: str) -> int | str:
    """A policy's drop_after / compress_after, as stored in its config: an
    integer for integer time columns, else an interval's text."""
    if value is None:
        raise InvalidJobArgumentError(f"{parameter} cannot be NULL")
    if time_type in _INTEGER_TIME_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InvalidJobArgumentError(
                f"invalid value for parameter {parameter}",
                detail=f"The time column of the hypertable is of type {time_type}.",
                hint=f"Use an integer for {parameter}.")
        try:
            return int(value)
        except ValueError:
            raise InvalidJobArgumentError(f'invalid value for parameter {parameter}: "{value}"',
                                          hint=f"Use an integer for {parameter}.") from None
    if isinstance(value, Interval):
        text = catalog.interval_text(value)
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidJobArgumentError(
            f"invalid value for parameter {parameter}",
            detail=f"The time column of the hypertable is of type {time_type}.",
            hint=f"Use an interval for {parameter}, such as interval '30 days'.")
    try:
        with spi.subtransaction():
            return str(spi.execute("SELECT $1::interval::text", [text], types=["text"]).scalar())
    except SPIError:
        raise InvalidJobArgumentError(f'invalid value for parameter {parameter}: "{text}"',
                                      hint=f"Use an interval for {parameter}, such as interval '30 days'.") from None


def _add_policy(kind: registry.JobKind, parameter: str, relation: Any, lag: Any,
                schedule_interval: Interval | None, if_not_exists: bool | None,
                initial_start: datetime.datetime | None) -> int:
    if relation is None:
        raise InvalidJobArgumentError("relation cannot be NULL")
    relid = _relid(relation)
    time_type = _hypertable_time_type(relid)
    _require_table_owner(relid)
    config = {"hypertable_id": relid, parameter: _policy_lag(parameter, lag, time_type)}
    return catalog.add_job(kind.proc_name, relid, schedule_interval or "1 day", config,
                           kind.application_name, bool(if_not_exists), initial_start=initial_start,
                           max_runtime="5 minutes" if kind is registry.RETENTION else None)


def _remove_policy(kind: registry.JobKind, relation: Any, if_exists: bool | None) -> None:
    if relation is None:
        raise InvalidJobArgumentError("relation cannot be NULL")
    relid = _relid(relation)
    _hypertable_time_type(relid)
    _require_table_owner(relid)
    catalog.delete_jobs(kind.proc_name, relid, bool(if_exists))


@sql_function("add_retention_policy")
def add_retention_policy(relation: Any, drop_after: Any, schedule_interval: Interval | None = None,
                         if_not_exists: bool | None = False,
                         initial_start: datetime.datetime | None = None) -> int:
    """orochi.add_retention_policy: a job dropping chunks older than ``drop_after``.

    Returns:
        The job id (the existing one with ``if_not_exists``).
    """
    return _add_policy(registry.RETENTION, "drop_after", relation, drop_after, schedule_interval,
                       if_not_exists, initial_start)


@sql_function("remove_retention_policy")
def remove_retention_policy(relation: Any, if_exists: bool | None = False) -> None:
    """orochi.remove_retention_policy."""
    _remove_policy(registry.RETENTION, relation, if_exists)


@sql_function("add_compression_policy")
def add_compression_policy(relation: Any, compress_after: Any, schedule_interval: Interval | None = None,
                           if_not_exists: bool | None = False,
                           initial_start: datetime.datetime | None = None) -> int:
    """orochi.add_compression_policy: a job compressing chunks older than ``compress_after``.

    Returns:
        The job id (the existing one with ``if_not_exists``).
    """
    return _add_policy(registry.COMPRESSION, "compress_after", relation, compress_after, schedule_interval,
                       if_not_exists, initial_start)


@sql_function("remove_compression_policy")
def remove_compression_policy(relation: Any, if_exists: bool | None = False) -> None:
    """orochi.remove_compression_policy."""
    _remove_policy(registry.COMPRESSION, relation, if_exists)
