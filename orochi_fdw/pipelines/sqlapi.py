"""SQL functions of the pipelines (sql/80_pipelines.sql), run in the backend
as the calling role.

- ``orochi.create_pipeline(name, source, target, format, options)``: checks
  the options and the column mapping against the target now, so that a
  mistake is an ERROR here and not a failed pipeline later.  The caller
  needs INSERT on the target (the pipeline then loads with the caller's
  rights: it is the pipeline's owner); reading server files, or S3 with the
  sidecar's own credentials, also needs ``pg_read_server_files`` (as COPY
  FROM a file does).
- ``start_pipeline``, ``pause_pipeline``, ``resume_pipeline``,
  ``stop_pipeline``, ``drop_pipeline``: for roles with the rights of the
  owner role.  They change the state in the catalog; the sidecar's worker
  follows at its next batch.
- ``pipeline_commit_batch``, ``pipeline_state``,
  ``pipeline_stream_positions``, ``pipeline_report_worker``,
  ``pipeline_report_error``, ``pipeline_fail``: what the sidecar's worker,
  connected as the owner, reads and writes; for the same roles.

Privileges (docs/SECURITY.md): the catalog tables belong to the extension
owner and are granted to no one.  Every function checks the caller's rights
first, in a statement of the caller's (``current_user`` is the calling
role: the owner a new pipeline gets, the role whose rights are checked),
and then works on the catalog with internal statements only.
"""

from __future__ import annotations

import json
from typing import Any

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.pipelines.errors import (DuplicatePipelineError, InvalidPipelineOptionError,
                                         PipelineNotFoundError, PipelinePrivilegeError, PipelineStateError)
from orochi_fdw.pipelines.mapping import COLUMNS_QUERY, ColumnInfo, Mapper
from orochi_fdw.pipelines.options import check_options, uses_ambient_credentials

#: relation kinds a pipeline may load into: tables, partitioned tables, foreign tables (orochi's)
_TARGET_KINDS = ("r", "p", "f")


def _relid(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(spi.execute("SELECT $1::regclass::oid", [str(value)], types=["text"]).scalar())


def _options(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str):
        return json.loads(value)
    return value


def _target_columns(relid: int) -> list[ColumnInfo]:
    rows = spi.execute(COLUMNS_QUERY.replace("%(relid)s", "$1"), [relid], types=["oid"])
    return [ColumnInfo.from_row(r) for r in rows]


def _check_target(relid: int) -> str:
    """The target's name; refuses what is not a table or not writable by the caller."""
    row = spi.execute("SELECT c.relkind::text, c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = $1",
                      [relid], types=["oid"])
    kind, name = row[0]
    if kind not in _TARGET_KINDS:
        raise InvalidPipelineOptionError(f'"{name}" is not a table', sqlstate="42809",
                                         hint="A pipeline loads into a table, a partitioned table or an orochi table.")
    allowed = spi.execute("SELECT has_table_privilege($1, 'INSERT')", [relid], types=["oid"]).scalar()
    if not allowed:
        raise PipelinePrivilegeError(f"permission denied for table {name}",
                                     detail="Creating a pipeline needs INSERT on its target table.")
    return name


@sql_function("create_pipeline")
def create_pipeline(name: str | None, source: str | None, target: Any, format: str | None,
                    options: Any = None) -> int:
    """orochi.create_pipeline: a new pipeline, in state ``created``.

    Returns:
        The pipeline's id.

    Raises:
        InvalidPipelineOptionError (22023, 42703 for a column the mapping
        names that the target lacks, 42809 for a target that is not a table),
        PipelinePrivilegeError (42501), DuplicatePipelineError (42710).
    """
    for label, value in (("name", name), ("source", source), ("target", target), ("format", format)):
        if value is None:
            raise InvalidPipelineOptionError(f"{label} cannot be NULL")
    if not str(name).strip():
        raise InvalidPipelineOptionError("a pipeline's name cannot be empty")
    source = str(source).lower()
    format = str(format).lower()
    try:
        raw = _options(options)
    except ValueError as exc:
        raise InvalidPipelineOptionError(f"options are not valid JSON: {exc}") from None
    checked = check_options(source, format, raw)
    relid = _relid(target)
    _check_target(relid)
    Mapper(format, _target_columns(relid), checked, csv_header=checked.csv_header)  # raises on a bad mapping
    if uses_ambient_credentials(checked):
        allowed = spi.execute("SELECT pg_has_role(current_user, 'pg_read_server_files', 'MEMBER')").scalar()
        if not allowed:
            what = "read files on the server" if source == "file" else "read S3 with the sidecar's own credentials"
            raise PipelinePrivilegeError(
                f"permission denied to create a pipeline that would {what}",
                detail="Only superusers and members of pg_read_server_files may.",
                hint='Give "access_key_id" and "secret_access_key".' if source == "s3" else None)
    # names are unique among all pipelines (as among roles): a name taken by
    # another role's pipeline is refused without telling whose it is
    if spi.execute("SELECT 1 FROM orochi.pipeline WHERE name = $1", [name], types=["text"], internal=True):
        raise DuplicatePipelineError(f'pipeline "{name}" already exists')
    owner = spi.current_user_oid()  # the caller, not the internal statement's role
    pipeline_id = spi.execute(
        "INSERT INTO orochi.pipeline (name, source, target, format, options, owner) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6::pg_catalog.oid::pg_catalog.regrole) RETURNING pipeline_id",
        [name, source, relid, format, json.dumps(raw), owner], types=["text", "text", "oid", "text", "text", "oid"],
        internal=True).scalar()
    spi.execute("INSERT INTO orochi.pipeline_stats (pipeline_id) VALUES ($1)", [pipeline_id], types=["int4"],
                internal=True)
    return int(pipeline_id)


def _check_owner(pipeline_id: int, lock: bool = False) -> tuple[str, str] | None:
    """(state, name) of a pipeline the caller may act for (it has the rights
    of the pipeline's owner role, as Postgres's ownership checks ask), or
    None if there is no such pipeline; ``lock``: its row locked FOR UPDATE.

    Raises:
        InsufficientPrivilegeError: ``must be owner of pipeline "p"`` (42501).
    """
    row = spi.execute("SELECT p.owner::pg_catalog.oid, p.owner::pg_catalog.text, p.name, p.state"
                      "  FROM orochi.pipeline p WHERE p.pipeline_id = $1" + (" FOR UPDATE" if lock else ""),
                      [pipeline_id], types=["int4"], internal=True).rows
    if not row:
        return None
    owner_oid, owner, name, state = row[0]
    privileges.require_role_member(int(owner_oid), f'must be owner of pipeline "{name}"',
                                   detail=f"The pipeline belongs to role {owner}.")
    return state, name


def _require(pipeline_id: int) -> tuple[str, str]:
    """(state, name) of a pipeline the caller may manage, its row locked.

    Raises:
        PipelineNotFoundError, InsufficientPrivilegeError.
    """
    found = _check_owner(pipeline_id, lock=True)
    if found is None:
        raise PipelineNotFoundError(f"pipeline {pipeline_id} does not exist")
    return found


def _set_state(pipeline_id: int, state: str, fresh_start: bool) -> str:
    spi.execute("UPDATE orochi.pipeline SET state = $2, state_changed_at = pg_catalog.now() WHERE pipeline_id = $1",
                [pipeline_id, state], types=["int4", "text"], internal=True)
    if fresh_start:
        spi.execute("INSERT INTO orochi.pipeline_stats AS s (pipeline_id) VALUES ($1) "
                    "ON CONFLICT (pipeline_id) DO UPDATE SET errors_since_start = 0, current_error = NULL",
                    [pipeline_id], types=["int4"], internal=True)
    return state


def _transition(pipeline_id: int, command: str, allowed: tuple[str, ...], noop: str, new_state: str,
                hint: str | None, fresh_start: bool = False) -> str:
    state, name = _require(pipeline_id)
    if state == noop:
        spi.notice(f'pipeline "{name}" is already {noop}')
        return state
    if state not in allowed:
        raise PipelineStateError(f'cannot {command} pipeline "{name}": it is {state}', hint=hint)
    return _set_state(pipeline_id, new_state, fresh_start)


@sql_function("start_pipeline")
def start_pipeline(pipeline_id: int) -> str:
    """orochi.start_pipeline: created, stopped or failed → running (from the saved positions)."""
    return _transition(pipeline_id, "start", ("created", "stopped", "failed"), "running", "running",
                       "Use orochi.resume_pipeline for a paused pipeline.", fresh_start=True)


@sql_function("pause_pipeline")
def pause_pipeline(pipeline_id: int) -> str:
    """orochi.pause_pipeline: running → paused (the worker stays, loads nothing)."""
    return _transition(pipeline_id, "pause", ("running",), "paused", "paused",
                       "Only a running pipeline can be paused.")


@sql_function("resume_pipeline")
def resume_pipeline(pipeline_id: int) -> str:
    """orochi.resume_pipeline: paused or failed → running."""
    return _transition(pipeline_id, "resume", ("paused", "failed"), "running", "running",
                       "Use orochi.start_pipeline for a pipeline that is not paused.", fresh_start=True)


@sql_function("stop_pipeline")
def stop_pipeline(pipeline_id: int) -> str:
    """orochi.stop_pipeline: running, paused or failed → stopped (the worker ends; positions stay)."""
    return _transition(pipeline_id, "stop", ("running", "paused", "failed", "created"), "stopped", "stopped", None)


@sql_function("drop_pipeline")
def drop_pipeline(pipeline_id: int | None, if_exists: bool | None = False) -> None:
    """orochi.drop_pipeline: the pipeline, its positions, statistics and dead letters."""
    if pipeline_id is None:
        raise InvalidPipelineOptionError("pipeline_id cannot be NULL")
    try:
        _require(pipeline_id)
    except PipelineNotFoundError:
        if if_exists:
            spi.notice(f"pipeline {pipeline_id} does not exist, skipping")
            return None
        raise
    spi.execute("DELETE FROM orochi.pipeline WHERE pipeline_id = $1", [pipeline_id], types=["int4"],
                internal=True)
    return None


# ------------------------------------------------------------------ the worker's

@sql_function("pipeline_commit_batch")
def pipeline_commit_batch(pipeline: int | None, positions: Any, batch_rows: int | None, batch_bytes: int | None,
                          dead_letters: Any = None, forget: list | None = None, duration: Any = None,
                          fail_with: str | None = None) -> int | None:
    """orochi.pipeline_commit_batch: one batch's positions, counters and dead
    letters, in the transaction that loaded its rows (the body is
    ``orochi._pipeline_commit_batch``, sql/80_pipelines.sql).

    Raises:
        PipelineNotFoundError: the pipeline was dropped (the worker stops).
        InsufficientPrivilegeError: the caller has not its owner's rights.
    """
    if pipeline is None:
        raise PipelineNotFoundError("pipeline NULL does not exist")
    if _check_owner(pipeline) is None:
        raise PipelineNotFoundError(f"pipeline {pipeline} does not exist")
    # the arguments go back as the bridge handed them over, with their types
    return spi.execute(
        "SELECT orochi._pipeline_commit_batch($1, $2, $3, $4, $5, $6, $7, $8)",
        [pipeline, positions, batch_rows, batch_bytes, dead_letters, forget, duration, fail_with],
        types=["int4", "jsonb", "int8", "int8", "jsonb", "text[]", "interval", "text"], internal=True).scalar()


@sql_function("pipeline_state")
def pipeline_state(pipeline_id: int) -> tuple:
    """orochi.pipeline_state: (state asked for, bad records since the last
    start); NULLs for a pipeline that is gone."""
    found = _check_owner(pipeline_id)
    if found is None:
        return (None, None)
    errors = spi.execute("SELECT errors_since_start FROM orochi.pipeline_stats WHERE pipeline_id = $1",
                         [pipeline_id], types=["int4"], internal=True).scalar()
    return (found[0], int(errors or 0))


@sql_function("pipeline_stream_positions")
def pipeline_stream_positions(pipeline_id: int) -> list[tuple]:
    """orochi.pipeline_stream_positions: the committed positions of the
    pipeline's streams (none for a pipeline that is gone)."""
    if _check_owner(pipeline_id) is None:
        return []
    return [tuple(r) for r in spi.execute(
        "SELECT stream, position, stream_end, done, name, identity FROM orochi.pipeline_positions"
        " WHERE pipeline_id = $1 ORDER BY stream", [pipeline_id], types=["int4"], internal=True).rows]


@sql_function("pipeline_report_worker")
def pipeline_report_worker(pipeline_id: int | None, worker: str | None) -> None:
    """orochi.pipeline_report_worker: which worker runs the pipeline from now on."""
    if pipeline_id is None or _check_owner(pipeline_id) is None:
        return None
    spi.execute(
        "INSERT INTO orochi.pipeline_stats AS s (pipeline_id, worker, worker_started_at)"
        " VALUES ($1, $2, pg_catalog.now())"
        " ON CONFLICT (pipeline_id) DO UPDATE SET worker = excluded.worker,"
        " worker_started_at = excluded.worker_started_at",
        [pipeline_id, worker], types=["int4", "text"], internal=True)
    return None


def _report_error(pipeline_id: int, error: str | None) -> None:
    spi.execute(
        "INSERT INTO orochi.pipeline_stats AS s (pipeline_id, current_error, last_error, last_error_at)"
        " VALUES ($1, $2, $2, CASE WHEN $2 IS NULL THEN NULL ELSE pg_catalog.now() END)"
        " ON CONFLICT (pipeline_id) DO UPDATE SET current_error = excluded.current_error,"
        " last_error = coalesce(excluded.current_error, s.last_error),"
        " last_error_at = CASE WHEN excluded.current_error IS NULL THEN s.last_error_at ELSE pg_catalog.now() END",
        [pipeline_id, error], types=["int4", "text"], internal=True)


@sql_function("pipeline_report_error")
def pipeline_report_error(pipeline_id: int | None, error: str | None) -> None:
    """orochi.pipeline_report_error: the problem the pipeline has now (NULL:
    it is over)."""
    if pipeline_id is None or _check_owner(pipeline_id) is None:
        return None
    _report_error(pipeline_id, error)
    return None


@sql_function("pipeline_fail")
def pipeline_fail(pipeline_id: int | None, error: str | None) -> None:
    """orochi.pipeline_fail: the pipeline stops itself (state failed), with why."""
    if pipeline_id is None or _check_owner(pipeline_id, lock=True) is None:
        return None
    spi.execute("UPDATE orochi.pipeline SET state = 'failed', state_changed_at = pg_catalog.now()"
                " WHERE pipeline_id = $1 AND state IN ('running', 'paused')", [pipeline_id], types=["int4"],
                internal=True)
    _report_error(pipeline_id, error)
    return None
