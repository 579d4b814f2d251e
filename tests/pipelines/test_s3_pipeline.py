"""S3 pipelines against a real S3 server (moto's): objects read in key
order from byte positions (ranged GETs), compressed objects, new objects
later, the server down for a while, an object replaced while read, and the
sidecar killed in the middle."""

from __future__ import annotations

import gzip
import json

import zstandard

from pipeline_harness import (create_pipeline, dead_letters, pipeline_row, positions, run_batches, sidecar_once,
                              wait_until)


def _jsonl(lo: int, hi: int) -> bytes:
    return "".join(json.dumps({"id": i, "v": i / 2}) + "\n" for i in range(lo, hi)).encode()


def _ids(db) -> list[int]:
    return db.execute("SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM m").fetchone()[0]


def test_objects_plain_and_compressed_in_several_batches(db, db_dsn, s3, bucket):
    db.execute("CREATE FOREIGN TABLE m (id int, v float8) SERVER orochi")
    client = s3.client()
    client.put_object(Bucket=bucket, Key="in/2024/a.jsonl", Body=_jsonl(0, 250))
    client.put_object(Bucket=bucket, Key="in/2024/b.jsonl.gz", Body=gzip.compress(_jsonl(250, 400)))
    client.put_object(Bucket=bucket, Key="in/2024/c.jsonl.zst",
                      Body=zstandard.ZstdCompressor().compress(_jsonl(400, 500)))
    client.put_object(Bucket=bucket, Key="in/2024/readme.txt", Body=b"not matched")
    client.put_object(Bucket=bucket, Key="elsewhere/d.jsonl", Body=_jsonl(900, 910))
    pid = create_pipeline(db, "s3in", "s3", "m", "jsonl",
                          s3.options(bucket, prefix="in/", pattern="2024/*.jsonl*", batch_size=60))
    results = run_batches(db_dsn, pid)
    assert len(results) > 8  # resumed inside objects, from byte positions
    assert _ids(db) == list(range(500))
    assert db.execute("SELECT count(*) FROM m WHERE v = id / 2.0").fetchone()[0] == 500
    pos = {p["stream"]: p for p in pipeline_row(db, pid)["positions"]}
    assert sorted(pos) == ["in/2024/a.jsonl", "in/2024/b.jsonl.gz", "in/2024/c.jsonl.zst"]
    assert all(p["done"] for p in pos.values())
    assert pos["in/2024/a.jsonl"]["position"] == len(_jsonl(0, 250))
    assert pos["in/2024/b.jsonl.gz"]["position"] == len(_jsonl(250, 400))  # decompressed bytes

    client.put_object(Bucket=bucket, Key="in/2024/d.jsonl", Body=_jsonl(500, 520))  # a new object later
    run_batches(db_dsn, pid)
    assert _ids(db) == list(range(520))
    assert pipeline_row(db, pid)["lag"] == 0


def test_csv_objects_resume_with_their_header(db, db_dsn, s3, bucket):
    db.execute("CREATE TABLE m (id int, name text)")
    body = "name,id\n" + "".join(f"n{i},{i}\n" for i in range(100))
    s3.client().put_object(Bucket=bucket, Key="x.csv", Body=body.encode())
    pid = create_pipeline(db, "csv", "s3", "m", "csv", s3.options(bucket, batch_size=30))
    results = run_batches(db_dsn, pid)
    assert [r.rows for r in results][:4] == [30, 30, 30, 10]
    assert db.execute("SELECT count(*) FROM m WHERE name = 'n' || id").fetchone()[0] == 100


def test_s3_down_for_a_while_then_back(db, db_dsn, s3, bucket):
    db.execute("CREATE TABLE m (id int, v float8)")
    s3.client().put_object(Bucket=bucket, Key="a.jsonl", Body=_jsonl(0, 10))
    pid = create_pipeline(db, "p", "s3", "m", "jsonl", s3.options(bucket))
    assert sidecar_once(db_dsn) == "pipelines: p (1): 10 rows"
    s3.stop()
    try:
        status = sidecar_once(db_dsn)
        assert status.startswith("pipelines: p (1): s3: ")
        view = pipeline_row(db, pid)
        assert view["current_error"].startswith("s3: ") and view["status"] != "failed"
    finally:
        s3.start()
    s3.client().put_object(Bucket=bucket, Key="b.jsonl", Body=_jsonl(10, 15))
    assert sidecar_once(db_dsn) == "pipelines: p (1): 5 rows"
    assert pipeline_row(db, pid)["current_error"] is None
    assert _ids(db) == list(range(15))


def test_an_object_replaced_while_read_is_reported(db, db_dsn, s3, bucket):
    db.execute("CREATE TABLE m (id int, v float8)")
    client = s3.client()
    client.put_object(Bucket=bucket, Key="a.jsonl", Body=_jsonl(0, 100))
    pid = create_pipeline(db, "p", "s3", "m", "jsonl", s3.options(bucket, batch_size=40))
    assert sidecar_once(db_dsn) == "pipelines: p (1): 40 rows"
    client.put_object(Bucket=bucket, Key="a.jsonl", Body=_jsonl(1000, 1100))
    run_batches(db_dsn, pid)
    assert _ids(db) == list(range(40))
    [letter] = dead_letters(db, pid)
    assert 'object "a.jsonl" changed while it was being read' in letter["error"]
    assert letter["position"] == len(_jsonl(0, 40))


def test_s3_pipeline_survives_the_sidecar_killed(db, db_dsn, s3, bucket, start_sidecar):
    db.execute("CREATE TABLE m (id int, v float8)")
    client = s3.client()
    for k in range(4):
        client.put_object(Bucket=bucket, Key=f"part{k}.jsonl.gz", Body=gzip.compress(_jsonl(k * 300, (k + 1) * 300)))
    pid = create_pipeline(db, "p", "s3", "m", "jsonl", s3.options(bucket, batch_size=100))
    for spec in ("copied:3", "positioned:5", "committed:4", "fetched:2"):
        sidecar = start_sidecar(db_dsn, env={"OROCHI_PIPELINE_FAULT": spec})
        sidecar.wait_for_log("fault point")
        sidecar.kill9()
        ids = _ids(db)
        assert len(ids) == len(set(ids))
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: len(_ids(db)) == 1200, what="every record")
    sidecar.terminate()
    assert _ids(db) == list(range(1200))
    assert sum(positions(db, pid).values()) == sum(len(_jsonl(k * 300, (k + 1) * 300)) for k in range(4))
