"""Which Python function is the body of each built-in job.

A built-in job is a row of ``orochi.jobs`` whose ``proc_schema`` is
``orochi``; its ``proc_name`` names an entry here.  Bodies are imported
lazily, when a job of their kind first runs, so that the modules of time
series need not be importable for the jobs catalog to work.

The contract of a body::

    def run(job_id: int, relid: int, config: dict) -> str

It runs in the caller's transaction (SQL through
:mod:`orochi_fdw.bridge.spi`), raises an :class:`~orochi_fdw.errors.OrochiError`
(or lets an SPI error through) on failure, and returns a one-line summary of
what it did, which ``orochi.job_stats.last_summary`` shows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from orochi_fdw.jobs.errors import JobError

#: the schema of built-in jobs' proc_schema
BUILTIN_SCHEMA = "orochi"

JobBody = Callable[[int, int, dict], str]


@dataclass(frozen=True)
class JobKind:
    """A kind of built-in job.

    Attributes:
        proc_name: the name stored in ``orochi.jobs.proc_name``.
        target: ``"module:function"`` of the body.
        application_name: the job's display name, completed with `` [<job_id>]``.
        label: how messages name a job of this kind ("retention policy").
    """

    proc_name: str
    target: str
    application_name: str
    label: str


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add (or replace) a kind of built-in job.

    Args:
        kind: the kind to register.

    Returns:
        The kind, for use as a module-level constant.
    """
    _KINDS[kind.proc_name] = kind
    return kind


RETENTION = register(JobKind("policy_retention", "orochi_fdw.timeseries.policies:run_retention",
                             "Retention Policy", "retention policy"))
COMPRESSION = register(JobKind("policy_compression", "orochi_fdw.timeseries.policies:run_compression",
                               "Compression Policy", "compression policy"))
TIERING = register(JobKind("policy_tiering", "orochi_fdw.tiering.sqlapi:run_tiering",
                           "Tiering Policy", "tiering policy"))
REFRESH_CONTINUOUS_AGGREGATE = register(JobKind(
    "policy_refresh_continuous_aggregate", "orochi_fdw.timeseries.continuous:run_refresh",
    "Refresh Continuous Aggregate Policy", "continuous aggregate policy"))


def kind(proc_name: str) -> JobKind | None:
    """The built-in kind named ``proc_name``, or None."""
    return _KINDS.get(proc_name)


def kinds() -> list[JobKind]:
    """Every registered kind."""
    return list(_KINDS.values())


def resolve(proc_name: str) -> JobBody:
    """Import and return the body of a built-in job kind.

    Args:
        proc_name: a registered kind's name.

    Returns:
        The body function.

    Raises:
        JobError: no such kind, or its module or function cannot be loaded.
    """
    entry = _KINDS.get(proc_name)
    if entry is None:
        raise JobError(f'no built-in job is named "{proc_name}"',
                       hint="Known kinds: " + ", ".join(sorted(_KINDS)) + ".")
    module_name, _, function_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise JobError(f'the body of job kind "{proc_name}" cannot be imported: {exc}') from exc
    body = getattr(module, function_name, None)
    if body is None or not callable(body):
        raise JobError(f'the body of job kind "{proc_name}" is missing: {entry.target} does not exist')
    return body
