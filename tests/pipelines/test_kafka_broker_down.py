"""The broker down for a while, or restarted: the pipeline waits, the view
shows why, and loading resumes where it stood."""

from __future__ import annotations

import json

import pytest

from orochi_fdw.testing.services import KafkaBroker
from pipeline_harness import create_pipeline, pipeline_row, positions, wait_until


@pytest.fixture
def own_broker():
    broker = KafkaBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.cleanup()


def test_broker_down_and_restarted(db, db_dsn, own_broker, start_sidecar):
    broker = own_broker
    db.execute("CREATE FOREIGN TABLE m (id int) SERVER orochi")
    broker.create_topic("events", partitions=2)
    broker.produce("events", [json.dumps({"id": i}) for i in range(400)], partitions=2)
    pid = create_pipeline(db, "p", "kafka", "m", "json",
                          {"bootstrap_servers": broker.bootstrap, "topic": "events", "max_latency": 0.05,
                           "librdkafka": {"reconnect.backoff.max.ms": 500}})
    sidecar = start_sidecar(db_dsn)
    loaded = lambda n: sum(positions(db, pid).values()) == n  # noqa: E731
    wait_until(lambda: loaded(400), what="the first records")
    assert pipeline_row(db, pid)["current_error"] is None

    broker.stop()  # down for a while
    error = wait_until(lambda: pipeline_row(db, pid)["current_error"], what="the view to show the broker down")
    assert error.startswith("kafka:")
    view = pipeline_row(db, pid)
    assert view["status"] == "running" and view["last_error"] == error and view["last_error_at"] is not None

    broker.start()
    broker.produce("events", [json.dumps({"id": i}) for i in range(400, 700)], partitions=2)
    wait_until(lambda: loaded(700), what="loading to resume")
    wait_until(lambda: pipeline_row(db, pid)["current_error"] is None, what="the error to clear")

    broker.restart()  # a quick restart in the middle of a stream
    broker.produce("events", [json.dumps({"id": i}) for i in range(700, 1000)], partitions=2)
    wait_until(lambda: loaded(1000), what="loading after the restart")
    sidecar.terminate()
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM m").fetchone()[0] == list(range(1000))
    assert pipeline_row(db, pid)["last_error"] == error  # the history stays


def test_topic_missing_then_created(db, db_dsn, own_broker, start_sidecar):
    broker = own_broker
    db.execute("CREATE TABLE m (id int)")
    pid = create_pipeline(db, "p", "kafka", "m", "json",
                          {"bootstrap_servers": broker.bootstrap, "topic": "later"})
    sidecar = start_sidecar(db_dsn)
    error = wait_until(lambda: pipeline_row(db, pid)["current_error"], what="the missing topic to show")
    assert 'topic "later" is not available' in error
    broker.create_topic("later", partitions=1)
    broker.produce("later", ['{"id": 1}'], partition=0)
    wait_until(lambda: positions(db, pid) == {"0": 1}, what="the topic's record")
    sidecar.terminate()
    assert db.execute("SELECT id FROM m").fetchall() == [(1,)]
