"""The jobs catalog: rows of ``orochi.jobs`` and ``orochi.bgw_job_stat``,
read and written through SPI in the current transaction.

Other parts of Orochi add their policies through :func:`add_job` and remove
them with :func:`delete_jobs`; users manage jobs through the SQL functions
of :mod:`orochi_fdw.jobs.sqlapi`.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.types import Interval
from orochi_fdw.errors import SPIError
from orochi_fdw.jobs import registry
from orochi_fdw.jobs.errors import (DuplicateJobError, InvalidJobArgumentError, JobNotFoundError,
                                    JobPrivilegeError)

IntervalLike = str | Interval | datetime.timedelta

_JOB_COLUMNS = ("job_id, application_name, proc_schema, proc_name, relid::oid, schedule_interval, "
                "max_runtime, max_retries, retry_period, scheduled, config::text, next_start, "
                "coalesce((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = owner)::text, owner::text), "
                "owner::oid")


@dataclass(frozen=True)
class Job:
    """One row of ``orochi.jobs``.

    Attributes:
        job_id: the job's id (1000 and up).
        application_name: display name, e.g. ``Retention Policy [1000]``.
        proc_schema: ``orochi`` for built-in jobs, else the user procedure's schema.
        proc_name: the built-in kind (``policy_retention`` ...) or the procedure's name.
        relid: the table the job works on, or None for user-defined actions.
        schedule_interval: time between two runs.
        max_runtime: longest a run may take (zero: no limit).
        max_retries: consecutive failures retried before waiting a full
            schedule_interval again (-1: retried forever).
        retry_period: the first retry's delay, doubling with each failure.
        scheduled: whether the scheduler runs it.
        config: the job's configuration (a JSON object), or None.
        next_start: when it is due next.
        owner: the name of the role the job belongs to (and runs as).
        owner_oid: that role's oid.
    """

    job_id: int
    application_name: str
    proc_schema: str
    proc_name: str
    relid: int | None
    schedule_interval: Interval
    max_runtime: Interval
    max_retries: int
    retry_period: Interval
    scheduled: bool
    config: dict | None
    next_start: datetime.datetime
    owner: str
    owner_oid: int = 0

    @property
    def is_builtin(self) -> bool:
        """Whether the body is Python (a registered kind) rather than a user procedure."""
        return self.proc_schema == registry.BUILTIN_SCHEMA and registry.kind(self.proc_name) is not None


def interval_text(value: IntervalLike | None) -> str | None:
    """An interval as Postgres input text.

    Args:
        value: text Postgres understands ('1 day'), an Interval or a timedelta.

    Returns:
        The text, or None for None.

    Raises:
        InvalidJobArgumentError: a value of another type.
    """
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = Interval.from_timedelta(value)
    if isinstance(value, Interval):
        return f"{value.months} mons {value.days} days {value.microseconds} microseconds"
    if isinstance(value, str):
        return value
    raise InvalidJobArgumentError(f"expected an interval, got {type(value).__name__}")


def relation_name(relid: int | None) -> str:
    """A table's name as Postgres shows a regclass (``schema.name`` when not visible)."""
    if relid is None:
        return "(none)"
    return str(spi.execute("SELECT $1::oid::regclass::text", [int(relid)], types=["oid"]).scalar())


def _job_from_row(row: tuple) -> Job:
    values = list(row)
    values[4] = int(values[4]) if values[4] is not None else None
    values[10] = json.loads(values[10]) if values[10] is not None else None
    values[13] = int(values[13])
    return Job(*values)


def get_job(job_id: int) -> Job | None:
    """The job ``job_id`` as the current snapshot sees it, or None."""
    rows = spi.execute(f"SELECT {_JOB_COLUMNS} FROM orochi.jobs WHERE job_id = $1",
                       [int(job_id)], types=["int4"], internal=True)
    return _job_from_row(rows[0]) if rows else None


def require_job(job_id: int) -> Job:
    """The job ``job_id``.

    Raises:
        JobNotFoundError: there is no such job.
    """
    job = get_job(job_id)
    if job is None:
        raise JobNotFoundError(f"job {job_id} not found",
                               hint="orochi.jobs lists the jobs there are.")
    return job


def list_jobs(relid: int | None = None) -> list[Job]:
    """Every job (of one table when ``relid`` is given), by job id."""
    if relid is None:
        rows = spi.execute(f"SELECT {_JOB_COLUMNS} FROM orochi.jobs ORDER BY job_id", internal=True)
    else:
        rows = spi.execute(f"SELECT {_JOB_COLUMNS} FROM orochi.jobs WHERE relid = $1 ORDER BY job_id",
                           [int(relid)], types=["oid"], internal=True)
    return [_job_from_row(r) for r in rows]


def check_job_owner(job: Job) -> None:
    """Refuse a role that is not (a member of) the job's owner; superusers
    are members of every role.

    Raises:
        JobPrivilegeError: the current role does not own the job.
    """
    # as the caller (never internal): current_user is the role asking; a job
    # whose owner was dropped is left to superusers (its runs then fail)
    allowed = spi.execute(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE oid = $1)"
        "            THEN pg_catalog.pg_has_role(current_user, $1, 'MEMBER')"
        "            ELSE (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) END",
        [int(job.owner_oid)], types=["oid"]).scalar()
    if not allowed:
        raise JobPrivilegeError(f"insufficient permissions to alter job {job.job_id}",
                                detail=f'The job belongs to role "{job.owner}".')


def _existing_policy(schema: str, proc_name: str, relid: int) -> int | None:
    return spi.execute(
        "SELECT job_id FROM orochi.jobs WHERE proc_schema = $1 AND proc_name = $2 AND relid = $3",
        [schema, proc_name, int(relid)], types=["name", "name", "oid"], internal=True).scalar()


def _duplicate(label: str, relid: int) -> DuplicateJobError:
    return DuplicateJobError(f'{label} already exists for "{relation_name(relid)}"',
                             hint="Use if_not_exists => true to skip it, or remove the existing one first.")


def add_job(proc_name: str, relid: int | None, schedule_interval: IntervalLike, config: dict | None,
            application_name: str, if_not_exists: bool = False, *,
            proc_schema: str = registry.BUILTIN_SCHEMA,
            initial_start: datetime.datetime | None = None, scheduled: bool = True,
            max_runtime: IntervalLike | None = None, max_retries: int | None = None,
            retry_period: IntervalLike | None = None) -> int:
    """Add a job, in the current transaction.

    A table has at most one job of each built-in kind (policy): adding a
    second is an error, or with ``if_not_exists`` a NOTICE and the existing
    job's id.

    Args:
        proc_name: a registered kind (``policy_retention`` ...) or, with
            ``proc_schema``, a user procedure's name.
        relid: the table the job works on, or None.
        schedule_interval: time between runs ('1 day', an Interval or a timedelta).
        config: the job's configuration (stored as jsonb), or None.
        application_name: display name; `` [<job_id>]`` is appended.
        if_not_exists: return an existing policy's id instead of failing.
        proc_schema: the procedure's schema; ``orochi`` for built-in kinds.
        initial_start: first due time (default: now).
        scheduled: whether the scheduler runs it.
        max_runtime: longest a run may take (default: no limit).
        max_retries: consecutive failures retried with backoff (default -1: forever).
        retry_period: the first retry's delay (default 5 minutes).

    Returns:
        The job id.

    Raises:
        DuplicateJobError: the table already has a job of that kind.
        InvalidJobArgumentError: a bad interval, or a built-in kind that does not exist.
    """
    label = application_name.lower()
    if proc_schema == registry.BUILTIN_SCHEMA:
        kind = registry.kind(proc_name)
        if kind is None:
            raise InvalidJobArgumentError(f'no built-in job is named "{proc_name}"')
        label = kind.label
    if relid is not None:
        existing = _existing_policy(proc_schema, proc_name, relid)
        if existing is not None:
            if if_not_exists:
                spi.notice(f'{label} already exists for "{relation_name(relid)}", skipping')
                return int(existing)
            raise _duplicate(label, relid)
    job_id = int(spi.execute("SELECT nextval('orochi.jobs_job_id_seq')::int4", internal=True).scalar())
    if "[" not in application_name:
        application_name = f"{application_name} [{job_id}]"
    try:
        with spi.subtransaction():
            spi.execute(
                "INSERT INTO orochi.jobs (job_id, application_name, proc_schema, proc_name, relid, "
                " schedule_interval, max_runtime, max_retries, retry_period, scheduled, config, "
                " next_start, owner) "
                "VALUES ($1, $2, $3, $4, $5, $6::interval, coalesce($7::interval, interval '0'), "
                " coalesce($8, -1), coalesce($9::interval, interval '5 minutes'), $10, $11::jsonb, "
                " coalesce($12, now()), $13::oid::regrole)",
                [job_id, application_name, proc_schema, proc_name,
                 int(relid) if relid is not None else None, interval_text(schedule_interval),
                 interval_text(max_runtime), max_retries, interval_text(retry_period), bool(scheduled),
                 json.dumps(config) if config is not None else None, initial_start, spi.current_user_oid()],
                types=["int4", "text", "name", "name", "oid", "text", "text", "int4", "text", "bool",
                       "text", "timestamptz", "oid"], internal=True)
            spi.execute("INSERT INTO orochi.bgw_job_stat (job_id) VALUES ($1)", [job_id], types=["int4"], internal=True)
    except SPIError as exc:
        if exc.sqlstate == "23505" and relid is not None:  # a concurrent add won the race
            if if_not_exists:
                spi.notice(f'{label} already exists for "{relation_name(relid)}", skipping')
                return int(_existing_policy(proc_schema, proc_name, relid))
            raise _duplicate(label, relid) from None
        if exc.sqlstate in ("22007", "22008", "22P02", "23514"):
            raise InvalidJobArgumentError(f"invalid job setting: {exc.message}") from None
        raise
    return job_id


def delete_jobs(proc_name: str, relid: int, if_exists: bool = False, *,
                proc_schema: str = registry.BUILTIN_SCHEMA) -> int:
    """Delete a table's jobs of one kind (its policy), in the current transaction.

    Args:
        proc_name: the kind (``policy_retention`` ...).
        relid: the table.
        if_exists: a NOTICE instead of an error when there is none.
        proc_schema: ``orochi`` for built-in kinds.

    Returns:
        How many jobs were deleted (0 or 1).

    Raises:
        JobNotFoundError: the table has no such job and ``if_exists`` is false.
    """
    kind = registry.kind(proc_name)
    label = kind.label if kind is not None else f"job {proc_name}"
    deleted = spi.execute(
        "DELETE FROM orochi.jobs WHERE proc_schema = $1 AND proc_name = $2 AND relid = $3 RETURNING job_id",
        [proc_schema, proc_name, int(relid)], types=["name", "name", "oid"], internal=True)
    if not deleted:
        if if_exists:
            spi.notice(f'{label} not found for "{relation_name(relid)}", skipping')
            return 0
        raise JobNotFoundError(f'{label} not found for "{relation_name(relid)}"')
    return len(deleted)


def delete_job(job_id: int) -> None:
    """Delete one job and its statistics.

    Raises:
        JobNotFoundError: no such job.
        JobPrivilegeError: the current role does not own it.
    """
    job = require_job(job_id)
    check_job_owner(job)
    spi.execute("DELETE FROM orochi.jobs WHERE job_id = $1", [int(job_id)], types=["int4"], internal=True)


_ALTERABLE = {
    "schedule_interval": "$::interval",
    "max_runtime": "$::interval",
    "max_retries": "$::int4",
    "retry_period": "$::interval",
    "scheduled": "$::bool",
    "config": "$::jsonb",
    "next_start": "$::timestamptz",
}


def alter_job(job_id: int, **changes: Any) -> Job:
    """Change some settings of a job; a None value leaves a setting as it is.

    Args:
        job_id: the job.
        **changes: any of schedule_interval, max_runtime, max_retries,
            retry_period (intervals as for :func:`add_job`), scheduled (bool),
            config (dict), next_start (datetime).

    Returns:
        The job as it is now.

    Raises:
        JobNotFoundError: no such job.
        JobPrivilegeError: the current role does not own it.
        InvalidJobArgumentError: an unknown setting or an out-of-range value.
    """
    job = require_job(job_id)
    check_job_owner(job)
    sets: list[str] = []
    params: list[Any] = []
    types: list[str] = []
    for name, value in changes.items():
        if name not in _ALTERABLE:
            raise InvalidJobArgumentError(f'unknown job setting "{name}"',
                                          hint="Settings: " + ", ".join(_ALTERABLE) + ".")
        if value is None:
            continue
        if name in ("schedule_interval", "max_runtime", "retry_period"):
            value, type_name = interval_text(value), "text"
        elif name == "config":
            value, type_name = (value if isinstance(value, str) else json.dumps(value)), "text"
        elif name == "next_start":
            type_name = "text" if isinstance(value, str) else "timestamptz"
        elif name == "max_retries":
            value, type_name = int(value), "int4"
        else:
            value, type_name = bool(value), "bool"
        params.append(value)
        types.append(type_name)
        sets.append(f"{spi.quote_ident(name)} = " + _ALTERABLE[name].replace("$", f"${len(params)}"))
    if sets:
        params.append(int(job_id))
        types.append("int4")
        try:
            with spi.subtransaction():
                spi.execute(f"UPDATE orochi.jobs SET {', '.join(sets)} WHERE job_id = ${len(params)}",
                            params, types=types, internal=True)
        except SPIError as exc:
            if exc.sqlstate in ("22007", "22008", "22P02", "23514", "22023"):
                raise InvalidJobArgumentError(f"invalid setting for job {job_id}: {exc.message}") from None
            raise
    return require_job(job_id)
