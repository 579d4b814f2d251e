"""Tiered chunks under writes and failures: DELETE / UPDATE / INSERT into
cold chunks (delete bitmaps and the delta store), a refused compression
naming untier_chunk, a corrupted object failing its checksum, the S3
server stopped in the middle of a query (a clear error, never partial rows)
and started again (the next query works), a rolled back move leaving an
orphan object that orochi.vacuum() deletes, drop_chunks removing the
objects, and the tiering policy as a job."""

from __future__ import annotations

import psycopg
import pytest

from orochi_fdw.testing.faults import FaultGate
from test_tiering_basic import DAY0, chunk_names, objects, same, setup_tables, stripe_files


def test_writes_into_cold_chunks(db, s3, bucket, target):
    setup_tables(db, days=3)
    db.execute("SELECT orochi.compact('m')")
    for c in chunk_names(db):
        db.execute("SELECT orochi.tier_chunk(%s, 'cold')", (c,))
    assert {r[0] for r in db.execute("SELECT tier FROM orochi.chunks").fetchall()} == {"cold"}
    nobjects = len(objects(s3, bucket))
    for t in ("m", "m_heap"):
        db.execute(f"DELETE FROM {t} WHERE device = 4 AND ts < {DAY0} + interval '1 day 12 hours'")
        db.execute(f"UPDATE {t} SET v = v + 1000, note = 'upd' WHERE device = 7 AND v < 20")
        db.execute(f"INSERT INTO {t} VALUES ({DAY0} + interval '2 hours', 99, 0.5, 'late')")
    same(db)
    # the objects were not rewritten: deletes are bitmaps, new rows in the delta store
    assert len(objects(s3, bucket)) == nobjects
    # vacuum leaves cold stripes where they are
    db.execute("SELECT * FROM orochi.vacuum('m', 0)")
    assert len(objects(s3, bucket)) == nobjects
    same(db)
    # compression of a cold chunk is refused, naming untier_chunk
    with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
        db.execute("SELECT orochi.compress_chunk(%s)", (chunk_names(db)[0],))
    assert "untier_chunk" in (info.value.diag.message_hint or "")
    # compaction writes the delta rows as local stripes of the chunk: mixed
    db.execute("SELECT orochi.compact('m')")
    assert "mixed" in {r[0] for r in db.execute("SELECT tier FROM orochi.chunks").fetchall()}
    same(db)
    for c in chunk_names(db):
        db.execute("SELECT orochi.untier_chunk(%s)", (c,))
    same(db)


def test_corrupted_object_fails_its_checksum(db, s3, bucket, target):
    setup_tables(db, days=2)
    db.execute("SELECT orochi.compact('m')")
    first = chunk_names(db)[0]
    db.execute("SELECT orochi.tier_chunk(%s, 'cold')", (first,))
    key = sorted(objects(s3, bucket))[0]
    client = s3.client()
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[40] ^= 0xFF  # inside the first column chunk
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    with pytest.raises(psycopg.errors.DataCorrupted) as info:
        db.execute("SELECT sum(v), max(note), count(ts), max(device) FROM m").fetchall()
    assert "checksum mismatch" in str(info.value)
    # untier refuses the corrupted object too, and leaves the chunk cold
    with pytest.raises(psycopg.errors.DataCorrupted):
        db.execute("SELECT orochi.untier_chunk(%s)", (first,))
    assert db.execute("SELECT tier FROM orochi.chunks WHERE chunk_name = %s", (first,)).fetchone()[0] == "cold"


def test_s3_stopped_mid_query(db, db_dsn, s3, bucket, target):
    setup_tables(db, days=3)
    db.execute("SELECT orochi.compact('m')")
    for c in chunk_names(db):
        db.execute("SELECT orochi.tier_chunk(%s, 'cold')", (c,))
    expected = db.execute("SELECT count(*), sum(v), max(note) FROM m_heap").fetchone()
    try:
        with FaultGate(db_dsn, "tier:before_fetch@2") as gate:
            op = gate.run("SELECT count(*), sum(v), max(note) FROM m")
            gate.wait_reached()  # the first stripe was read, the second is next
            s3.stop()
            gate.open()
            op.join(120)
        assert not op.finished
        assert isinstance(op.error, psycopg.errors.IoError), op.error
        assert "could not read object" in str(op.error) and 'storage target "cold"' in str(op.error)
    finally:
        s3.start()
    assert db.execute("SELECT count(*), sum(v), max(note) FROM m").fetchone() == expected
    same(db)


def test_rolled_back_move_leaves_an_orphan_for_vacuum(db, s3, bucket, target):
    setup_tables(db, days=2)
    db.execute("SELECT orochi.compact('m')")
    first = chunk_names(db)[0]
    local = stripe_files(db, first)
    with db.transaction(force_rollback=True):
        db.execute("SELECT orochi.tier_chunk(%s, 'cold')", (first,))
    assert stripe_files(db, first) == local
    assert len(objects(s3, bucket)) == len(local)  # uploaded, then rolled back
    same(db)
    removed = db.execute("SELECT removed_files FROM orochi.vacuum()").fetchone()[0]
    assert removed >= len(local)
    assert objects(s3, bucket) == []
    same(db)


def test_drop_chunks_and_drop_table_remove_objects(db, s3, bucket, target):
    setup_tables(db, days=3)
    db.execute("SELECT orochi.compact('m')")
    chunks = chunk_names(db)
    for c in chunks:
        db.execute("SELECT orochi.tier_chunk(%s, 'cold')", (c,))
    per_chunk = {c: len(stripe_files(db, c)) for c in chunks}
    db.execute(f"SELECT orochi.drop_chunks('m', older_than => {DAY0} + interval '1 day')")
    db.execute(f"DELETE FROM m_heap WHERE ts < {DAY0} + interval '1 day'")
    same(db)
    db.execute("SELECT * FROM orochi.vacuum()")
    assert len(objects(s3, bucket)) == sum(per_chunk.values()) - per_chunk[chunks[0]]
    # a target holding stripes cannot be dropped
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        db.execute("SELECT orochi.drop_storage_target('cold')")
    db.execute("DROP FOREIGN TABLE m")
    assert objects(s3, bucket) == []
    db.execute("SELECT orochi.drop_storage_target('cold')")
    assert db.execute("SELECT count(*) FROM orochi.storage_targets").fetchone()[0] == 0


def test_tiering_policy(db, s3, bucket, target):
    setup_tables(db, days=4)
    db.execute("SELECT orochi.compact('m')")
    # chunks lying wholly before 2024-01-03 00:00 move; 'now' is years later, so pick by lag
    lag = db.execute(f"SELECT now() - ({DAY0} + interval '2 days')").fetchone()[0]
    job = db.execute("SELECT orochi.add_tiering_policy('m', %s::interval, 'cold')", (str(lag),)).fetchone()[0]
    summary = db.execute("SELECT orochi.run_job_now(%s)", (job,)).fetchone()[0]
    assert summary.startswith("moved 2 chunk(s)"), summary
    tiers = [r[0] for r in db.execute("SELECT tier FROM orochi.chunks ORDER BY range_start").fetchall()]
    assert tiers == ["cold", "cold", "hot", "hot"], tiers
    same(db)
    assert db.execute("SELECT orochi.run_job_now(%s)", (job,)).fetchone()[0] == "no chunk to move"
    with pytest.raises(psycopg.errors.DuplicateObject):
        db.execute("SELECT orochi.add_tiering_policy('m', interval '1 day', 'cold')")
    db.execute("SELECT orochi.remove_tiering_policy('m')")
    assert db.execute("SELECT count(*) FROM orochi.job_stats WHERE job_id = %s", (job,)).fetchone()[0] == 0
    with pytest.raises(psycopg.errors.UndefinedObject):
        db.execute("SELECT orochi.add_tiering_policy('m', interval '1 day', 'nowhere')")
