"""Tiered chunks: tier_chunk moves a chunk's stripe files to a real S3
server (moto), queries read them back with ranged requests and answer as
the heap table does, untier_chunk brings the files back byte for byte."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from tiering_helpers import create_target

COLUMNS = "ts timestamptz NOT NULL, device int, v float8, note text"
DAY0 = "timestamptz '2024-01-01 00:00:00+00'"


def _both(db, sql: str) -> None:
    db.execute(sql.format(t="m"))
    db.execute(sql.format(t="m_heap"))


def setup_tables(db, days: int = 4, per_day: int = 3000) -> None:
    db.execute(f"CREATE FOREIGN TABLE m ({COLUMNS}) SERVER orochi"
               " OPTIONS (stripe_row_limit '2000', chunk_group_size '500')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute(f"CREATE TABLE m_heap ({COLUMNS})")
    n = days * per_day
    _both(db, f"INSERT INTO {{t}} SELECT {DAY0} + (g * 7919 % {n}) * interval '1 day' / {per_day},"
              " g % 10, (g * 31 % 1000) / 8.0, 'n' || (g % 37) FROM generate_series(0, " + str(n - 1) + ") g")


QUERIES = [
    "SELECT count(*), sum(v), min(ts), max(ts) FROM {t}",
    "SELECT device, count(*), avg(v), max(note) FROM {t} GROUP BY device ORDER BY device",
    f"SELECT ts, device, v, note FROM {{t}} WHERE ts >= {DAY0} + interval '1 day 3 hours'"
    f" AND ts < {DAY0} + interval '2 days 5 hours' ORDER BY ts, device, v",
    "SELECT ts, v FROM {t} ORDER BY v DESC, ts LIMIT 7",
    f"SELECT count(*) FROM {{t}} WHERE ts < {DAY0} + interval '1 day' AND device = 3",
]


def same(db) -> None:
    for q in QUERIES:
        assert db.execute(q.format(t="m")).fetchall() == db.execute(q.format(t="m_heap")).fetchall(), q


def chunk_names(db) -> list[str]:
    return [r[0] for r in db.execute("SELECT chunk_name FROM orochi.chunks WHERE hypertable_name = 'm'::regclass"
                                     " ORDER BY range_start").fetchall()]


def stripe_files(db, chunk: str) -> dict[int, str]:
    return dict(db.execute("SELECT s.stripe_id, s.file_path FROM orochi.columnar_stripes s"
                           " JOIN orochi.chunks c USING (chunk_id) WHERE c.chunk_name = %s", (chunk,)).fetchall())


def objects(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def test_tier_and_untier_round_trip(db, s3, bucket, target):
    round_trip(db, s3, bucket)


def test_round_trip_on_seaweedfs(db, seaweed):
    """The same against SeaweedFS, a persistent S3 server in its own process."""
    seaweed.client().create_bucket(Bucket="orochi-tier-weed")
    create_target(db, seaweed, "orochi-tier-weed")
    round_trip(db, seaweed, "orochi-tier-weed")


def stripe_bytes(db) -> int:
    """orochi.table_size('m') without its delta store: the heap relation's
    pages may change between two readings (autovacuum, a free space map
    made), its stripe files only by what moves them."""
    return db.execute("SELECT orochi.table_size('m') - coalesce(pg_total_relation_size("
                      "to_regclass('orochi.columnar_delta_' || 'm'::regclass::oid)), 0)").fetchone()[0]


def round_trip(db, s3, bucket):
    setup_tables(db)
    db.execute("SELECT orochi.compact('m')")
    # the delta tables' dead rows truncated now, not by autovacuum between
    # the two table_size readings below
    db.execute("VACUUM")
    same(db)
    chunks = chunk_names(db)
    first = chunks[1]
    local = stripe_files(db, first)
    assert local and all(not p.startswith("tier:") for p in local.values())
    datadir = db.execute("SHOW data_directory").fetchone()[0]
    digests = {}
    for sid, p in local.items():
        full = db.execute("SELECT orochi._file_path(%s)", (p,)).fetchone()[0]
        digests[sid] = hashlib.sha256(db.execute("SELECT pg_read_binary_file(%s)", (full,)).fetchone()[0]).hexdigest()
    size_before = stripe_bytes(db)
    assert db.execute("SELECT orochi.tier_chunk(%s, 'cold')", (first,)).fetchone()[0] == first
    moved = db.execute("SELECT cold_bytes FROM orochi.chunks WHERE chunk_name = %s", (first,)).fetchone()[0]
    assert moved > 0 and stripe_bytes(db) == size_before - moved
    cold = stripe_files(db, first)
    assert set(cold) == set(local) and all(p.startswith("tier:") for p in cold.values())
    assert len(objects(s3, bucket)) == len(local)
    row = db.execute("SELECT tier, storage_target, location FROM orochi.chunks WHERE chunk_name = %s",
                     (first,)).fetchone()
    assert row[0] == "cold" and row[1] == "cold" and row[2].startswith(f"s3://{bucket}/pg/")
    stats = db.execute("SELECT total_chunks, cold_chunks, hot_chunks FROM orochi.tiering_stats").fetchone()
    assert stats == (len(chunks), 1, len(chunks) - 1)
    same(db)
    # an ANALYZE shows what came from object storage
    plan = "\n".join(r[0] for r in db.execute(
        f"EXPLAIN (ANALYZE, COSTS OFF) SELECT sum(v) FROM m WHERE ts < {DAY0} + interval '2 days'").fetchall())
    assert "Object Storage:" in plan and "bytes fetched" in plan, plan
    # a second tier_chunk of the same chunk does nothing
    db.execute("SELECT orochi.tier_chunk(%s, 'cold')", (first,))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        db.execute("SELECT orochi.tier_chunk(%s, 'cold', if_not_tiered => false)", (first,))
    # the local files are retired, removed by vacuum; the objects stay
    db.execute("SELECT * FROM orochi.vacuum()")
    assert len(objects(s3, bucket)) == len(local)
    same(db)
    # back: byte for byte
    db.execute("SELECT orochi.untier_chunk(%s)", (first,))
    back = stripe_files(db, first)
    assert set(back) == set(local) and all(not p.startswith("tier:") for p in back.values())
    for sid, p in back.items():
        full = db.execute("SELECT orochi._file_path(%s)", (p,)).fetchone()[0]
        assert hashlib.sha256(db.execute("SELECT pg_read_binary_file(%s)", (full,)).fetchone()[0]).hexdigest() \
            == digests[sid]
    assert db.execute("SELECT tier FROM orochi.chunks WHERE chunk_name = %s", (first,)).fetchone()[0] == "hot"
    same(db)
    db.execute("SELECT * FROM orochi.vacuum()")  # the retired objects go
    assert objects(s3, bucket) == []
    same(db)
    assert datadir
