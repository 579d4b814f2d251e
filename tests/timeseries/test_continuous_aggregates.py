"""Continuous aggregates: creation, refresh, real-time views, policies,
DROP; the same query run live on the hypertable is the oracle."""

from __future__ import annotations

import psycopg
import pytest

QUERY = ("SELECT orochi.time_bucket(interval '1 hour', ts) AS bucket, device, count(*) AS n, sum(v) AS s, "
         "avg(v) AS a, min(v) AS lo, max(v) AS hi, count(DISTINCT note) AS notes FROM m GROUP BY 1, device")


def _make(db, name: str = "m", time_type: str = "timestamptz", interval: str = "interval '1 day'") -> None:
    db.execute(f"CREATE FOREIGN TABLE {name} (ts {time_type} NOT NULL, device int, v float8, note text)"
               f" SERVER orochi")
    db.execute(f"SELECT orochi.create_hypertable('{name}', 'ts', chunk_time_interval => {interval})")


def _rows(db, sql: str) -> list[tuple]:
    return db.execute(f"SELECT * FROM ({sql}) q ORDER BY 1, 2").fetchall()


def test_smoke(db):
    _make(db)
    db.execute("INSERT INTO m SELECT timestamptz '2024-01-01' + i * interval '7 minutes', i % 3, i, 'n' || (i % 5)"
               " FROM generate_series(1, 1000) i")
    db.execute(f"SELECT orochi.create_continuous_aggregate('c', $q${QUERY}$q$, materialized_only => true)")
    assert _rows(db, "SELECT * FROM c") == _rows(db, QUERY)
    db.execute("INSERT INTO m VALUES ('2024-01-01 00:30', 1, 1000, 'x'), ('2025-01-01', 2, 5, 'y')")
    db.execute("DELETE FROM m WHERE ts >= '2024-01-02' AND ts < '2024-01-02 03:00'")
    db.execute("UPDATE m SET ts = ts + interval '1 day', v = v * 2 WHERE device = 1 AND ts < '2024-01-01 06:00'")
    assert _rows(db, "SELECT * FROM c") != _rows(db, QUERY)
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', NULL, NULL)")
    assert _rows(db, "SELECT * FROM c") == _rows(db, QUERY)
    print(db.execute("SELECT * FROM orochi.continuous_aggregates").fetchall())
