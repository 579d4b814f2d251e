"""Kafka pipelines: records of several partitions loaded once each, field
by field, into heap and orochi tables; positions, lag and the view."""

from __future__ import annotations

import datetime
import json

import pytest

from pipeline_harness import (create_pipeline, dead_letters, pipeline_row, positions, run_batches, run_one_batch,
                              wait_until)

UTC = datetime.timezone.utc
BASE = datetime.datetime(2024, 1, 1, tzinfo=UTC)


def records(n: int, start: int = 0) -> list[dict]:
    return [{"id": i, "ts": (BASE + datetime.timedelta(seconds=i)).isoformat(), "device": f"dev-{i % 7}",
             "value": i * 0.25, "ok": i % 3 == 0} for i in range(start, start + n)]


def expected_rows(recs: list[dict]) -> list[tuple]:
    return sorted((r["id"], datetime.datetime.fromisoformat(r["ts"]), r["device"], r["value"], r["ok"])
                  for r in recs)


@pytest.mark.parametrize("kind", ["heap", "orochi", "hypertable"])
def test_json_records_of_several_partitions_load_once(db, db_dsn, kafka, topic, kind):
    if kind == "heap":
        db.execute("CREATE TABLE m (id int8, ts timestamptz NOT NULL, device text, value float8, ok bool)")
    else:
        db.execute("CREATE FOREIGN TABLE m (id int8, ts timestamptz NOT NULL, device text, value float8, ok bool) "
                   "SERVER orochi")
        if kind == "hypertable":
            db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 hour')")
    kafka.create_topic(topic, partitions=3)
    recs = records(3000)
    kafka.produce(topic, [json.dumps(r) for r in recs], partitions=3)
    pid = create_pipeline(db, "p", "kafka", "m", "json",
                          {"bootstrap_servers": kafka.bootstrap, "topic": topic, "batch_size": 700})
    results = run_batches(db_dsn, pid)
    assert sum(r.rows for r in results) == 3000
    assert max(r.rows for r in results) <= 700  # several batches
    rows = db.execute("SELECT id, ts, device, value, ok FROM m ORDER BY id").fetchall()
    assert rows == expected_rows(recs)
    assert positions(db, pid) == {"0": 1000, "1": 1000, "2": 1000}
    # running, no sidecar has it now: the worker's claim goes with its
    # session, which ends just after the connection closes
    wait_until(lambda: pipeline_row(db, pid)["status"] == "starting", what="the claim to be released")
    view = pipeline_row(db, pid)
    assert view["rows_loaded"] == 3000 and view["errors"] == 0 and view["lag"] == 0
    assert view["status"] == "starting"
    assert view["last_batch_at"] is not None and view["bytes_loaded"] == sum(len(json.dumps(r)) for r in recs)

    # more records later: only those are loaded
    more = records(500, start=3000)
    kafka.produce(topic, [json.dumps(r) for r in more], partitions=3)
    run_batches(db_dsn, pid)
    rows = db.execute("SELECT id, ts, device, value, ok FROM m ORDER BY id").fetchall()
    assert rows == expected_rows(recs + more)
    assert dead_letters(db, pid) == []


def test_transactional_producers_aborted_messages_are_never_loaded(db, db_dsn, kafka, topic):
    from confluent_kafka import Producer

    db.execute("CREATE TABLE m (id int)")
    kafka.create_topic(topic, partitions=1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    for batch, commit in ((range(0, 5), True), (range(5, 10), False), (range(10, 15), True)):
        producer.begin_transaction()
        for i in batch:
            producer.produce(topic, json.dumps({"id": i}).encode(), partition=0)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    pid = create_pipeline(db, "p", "kafka", "m", "json", {"bootstrap_servers": kafka.bootstrap, "topic": topic})
    results = run_batches(db_dsn, pid)
    assert results[-1].caught_up
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM m").fetchone()[0] == list(range(5)) + list(range(10, 15))
    high = kafka.high_watermarks(topic)[0]
    assert positions(db, pid) == {"0": high}  # past the commit and abort markers: no lag left
