"""The pipelines catalog as the sidecar reads and writes it (psycopg).

The SQL functions users call live in :mod:`orochi_fdw.pipelines.sqlapi` and
run in the backend; this module is the other side: what the sidecar's
connections ask of ``orochi.pipeline`` and its companions.

The catalog tables belong to the extension owner and are granted to no one
(docs/SECURITY.md).  The duty's own connection (a superuser's, as the
sidecar's DSN must be) reads the runnable pipelines directly; a worker,
connected as the pipeline's owner, goes through the SQL functions made for
it (``orochi.pipeline_state``, ``pipeline_stream_positions``,
``pipeline_report_worker``, ``pipeline_report_error``, ``pipeline_fail``,
``pipeline_commit_batch``), which check that the caller has the owner's
rights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from orochi_fdw.pipelines.records import StreamState

#: pipelines the sidecar should run (read on its own connection: the options included)
RUNNABLE_PIPELINES = """
SELECT p.pipeline_id, p.name, p.source, p.target, p.format, p.options::text, p.state,
       coalesce((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = p.owner)::text, p.owner::oid::text),
       orochi.pipeline_is_running(p.pipeline_id)
  FROM orochi.pipeline p
 WHERE p.state IN ('running', 'paused') {where}
 ORDER BY p.pipeline_id
"""


@dataclass(frozen=True)
class PipelineDef:
    """A pipeline as the sidecar runs it.

    Attributes:
        pipeline_id, name, source, target (oid), format: as in the catalog.
        options: the options as stored (checked again when the worker starts).
        state: running or paused (when read).
        owner: the name of the owner role (the worker connects as it).
        claimed: some worker held its lock when read.
    """

    pipeline_id: int
    name: str
    source: str
    target: int
    format: str
    options: dict[str, Any]
    state: str
    owner: str
    claimed: bool = False

    @classmethod
    def from_row(cls, row: tuple) -> "PipelineDef":
        pid, name, source, target, format, options, state, owner, claimed = row
        return cls(int(pid), name, source, int(target), format, json.loads(options), state, owner, bool(claimed))


def runnable_pipelines(conn: psycopg.Connection, only: int | None = None) -> list[PipelineDef]:
    """Pipelines in state running or paused (``only``: that one)."""
    if only is None:
        rows = conn.execute(RUNNABLE_PIPELINES.format(where="")).fetchall()
    else:
        rows = conn.execute(RUNNABLE_PIPELINES.format(where="AND p.pipeline_id = %s"), [only]).fetchall()
    return [PipelineDef.from_row(r) for r in rows]


def pipeline_state(conn: psycopg.Connection, pipeline_id: int) -> str | None:
    """The state asked for now, None when the pipeline is gone."""
    row = conn.execute("SELECT state FROM orochi.pipeline_state(%s)", [pipeline_id]).fetchone()
    return row[0] if row else None


def read_positions(conn: psycopg.Connection, pipeline_id: int) -> dict[str, StreamState]:
    """The committed positions of a pipeline's streams."""
    rows = conn.execute(
        "SELECT stream, position, stream_end, done, name, identity FROM orochi.pipeline_stream_positions(%s)",
        [pipeline_id]).fetchall()
    return {r[0]: StreamState(r[0], int(r[1]), None if r[2] is None else int(r[2]), bool(r[3]), r[4], r[5])
            for r in rows}


def errors_since_start(conn: psycopg.Connection, pipeline_id: int) -> int:
    row = conn.execute("SELECT errors_since_start FROM orochi.pipeline_state(%s)", [pipeline_id]).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def report_worker(conn: psycopg.Connection, pipeline_id: int, worker: str) -> None:
    """Record which worker runs the pipeline from now on."""
    conn.execute("SELECT orochi.pipeline_report_worker(%s, %s)", [pipeline_id, worker])


def report_error(conn: psycopg.Connection, pipeline_id: int, error: str | None) -> None:
    """Show (or clear, with None) the pipeline's current error."""
    conn.execute("SELECT orochi.pipeline_report_error(%s, %s::text)", [pipeline_id, error])


def mark_failed(conn: psycopg.Connection, pipeline_id: int, error: str) -> None:
    """The pipeline stops itself: state failed, with why."""
    conn.execute("SELECT orochi.pipeline_fail(%s, %s::text)", [pipeline_id, error])


def try_claim(conn: psycopg.Connection, pipeline_id: int) -> bool:
    """Take the pipeline's advisory lock for this session (without waiting)."""
    return bool(conn.execute("SELECT pg_try_advisory_lock(orochi.pipeline_lock_key(%s))",
                             [pipeline_id]).fetchone()[0])


#: the target's schema, name and a fingerprint of its columns (changes with ALTER TABLE)
TARGET_QUERY = """
SELECT n.nspname::text, c.relname::text,
       (SELECT string_agg(a.attname || ':' || a.atttypid || ':' || a.atttypmod || ':' || a.attnotnull,
                          ',' ORDER BY a.attnum)
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = %s
"""
