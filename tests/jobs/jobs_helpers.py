"""Helpers of the jobs and sidecar tests."""

from __future__ import annotations

import psycopg


def make_hypertable(db: psycopg.Connection, name: str, time_type: str = "timestamptz") -> int:
    """An orochi hypertable ``name (ts <time_type> NOT NULL, v float8)``; returns its oid."""
    db.execute(f"CREATE FOREIGN TABLE {name} (ts {time_type} NOT NULL, v float8) SERVER orochi")
    if time_type in ("smallint", "integer", "bigint"):
        db.execute("SELECT orochi.create_hypertable(%s, 'ts', chunk_time_interval => 100)", [name])
    else:
        db.execute("SELECT orochi.create_hypertable(%s, 'ts', chunk_time_interval => interval '1 day')",
                   [name])
    return db.execute("SELECT %s::regclass::oid", [name]).fetchone()[0]
