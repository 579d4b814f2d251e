"""The sinks against real receivers: Kafka (noida-db, a Kafka-protocol
broker), an HTTP receiver for webhooks, files; a sink that is down for a
while gets the backlog in order afterwards; max_lag gives the WAL back."""

from __future__ import annotations

import hashlib
import hmac
import json
import os


from cdc_harness import (apply_events, assert_same_rows, cdc_once, create_subscription, dedupe, event_id,
                         file_events, kafka_events, make_copy, stats)
from orochi_fdw.testing.services import KafkaBroker
from pipeline_harness import wait_until


def test_kafka_topics_keys_tombstones(db, db_dsn, kafka):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v text)")
    db.execute("CREATE FOREIGN TABLE o (dev int, ts timestamptz, v float8) SERVER orochi")
    db.execute("INSERT INTO h VALUES (1, 'snap')")
    create_subscription(db, "k", ["h", "o"], "kafka", "debezium",
                        {"bootstrap_servers": kafka.bootstrap, "topic_prefix": "srv1",
                         "key_columns": {"o": ["dev", "ts"]}})
    cdc_once(db_dsn)
    db.execute("INSERT INTO h VALUES (2, 'a'), (3, 'b')")
    db.execute("UPDATE h SET v = 'c' WHERE id = 2")
    db.execute("DELETE FROM h WHERE id = 3")
    db.execute("INSERT INTO o VALUES (7, '2024-03-01', 1.5)")
    db.execute("UPDATE o SET v = 2.5")
    assert cdc_once(db_dsn) == "cdc: k: 6 events"
    h = kafka_events(kafka, ["srv1.public.h"])
    assert [(json.loads(k), v and v["op"]) for _, k, v in h] == [
        ({"id": 1}, "r"), ({"id": 2}, "c"), ({"id": 3}, "c"), ({"id": 2}, "u"), ({"id": 3}, "d"), ({"id": 3}, None)]
    assert h[4][2]["before"] == {"id": 3, "v": None} and h[4][2]["after"] is None  # default identity: the key
    o = kafka_events(kafka, ["srv1.public.o"])
    assert [(json.loads(k), v["op"], v["after"]["v"]) for _, k, v in o] == [
        ({"dev": 7, "ts": "2024-03-01T00:00:00Z"}, "c", 1.5), ({"dev": 7, "ts": "2024-03-01T00:00:00Z"}, "u", 2.5)]
    assert o[1][2]["before"]["v"] == 1.5
    # every message says its event id in a header
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "hdr", "enable.auto.commit": False})
    consumer.assign([TopicPartition("srv1.public.o", 0, 0)])
    msg = None
    while msg is None or msg.error():
        msg = consumer.poll(5)
    consumer.close()
    value = json.loads(msg.value())
    assert dict(msg.headers())["orochi.event_id"].decode() == \
        f"{value['source']['lsn']}:{value['transaction']['total_order'] - 1}"


def test_kafka_one_topic_and_no_tombstones(db, db_dsn, kafka):
    db.execute("CREATE TABLE a (id int PRIMARY KEY)")
    db.execute("CREATE TABLE b (id int PRIMARY KEY)")
    create_subscription(db, "k2", ["a", "b"], "kafka", "json",
                        {"bootstrap_servers": kafka.bootstrap, "topic": "everything-k2", "tombstones": False})
    cdc_once(db_dsn)
    db.execute("INSERT INTO a VALUES (1)")
    db.execute("INSERT INTO b VALUES (1)")
    db.execute("DELETE FROM a")
    cdc_once(db_dsn)
    got = kafka_events(kafka, ["everything-k2"])
    assert [(v["table"], v["op"]) for _, _, v in got] == [("a", "c"), ("b", "c"), ("a", "d")]


def test_webhook_batches_signature_and_refusals(db, db_dsn, receiver):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v text)")
    create_subscription(db, "w", ["h"], "webhook", "json",
                        {"url": receiver.url, "secret": "topsecret", "batch_size": 3,
                         "headers": {"Authorization": "Bearer t"}})
    cdc_once(db_dsn)
    receiver.refuse = lambda e: e["after"] is not None and e["after"]["v"] == "poison"
    db.execute("INSERT INTO h SELECT g, CASE WHEN g = 5 THEN 'poison' ELSE 'ok' END FROM generate_series(1, 8) g")
    assert cdc_once(db_dsn) == "cdc: w: 8 events"
    got = receiver.events()
    assert [e["after"]["id"] for e in got] == [1, 2, 3, 4, 6, 7, 8]  # the refused one split out
    for headers, body in receiver.batches:
        expected = hmac.new(b"topsecret", body, hashlib.sha256).hexdigest()
        assert headers["x-orochi-signature"] == f"sha256={expected}"
        assert headers["authorization"] == "Bearer t" and headers["x-orochi-subscription"] == "w"
        first, last = json.loads(body)[0], json.loads(body)[-1]
        assert (headers["x-orochi-first-event"], headers["x-orochi-last-event"]) == (first["id"], last["id"])
    errors = db.execute("SELECT subscription, event_id, table_name, op, status, response, event "
                        "FROM orochi.cdc_errors").fetchall()
    assert len(errors) == 1
    sub, eid, table, op, status, response, event = errors[0]
    assert (sub, table, op, status, json.loads(response)) == ("w", "public.h", "c", 400, {"error": "refused"})
    assert event["after"] == {"id": 5, "v": "poison"} and eid == event["id"]
    assert stats(db, "w")["errors"] == 1 and stats(db, "w")["events_sent"] == 7  # the refused one is an error


def test_webhook_timeout_and_429_are_tried_again(db, db_dsn, receiver, start_sidecar):
    """A receiver that does not answer within ``timeout``, then one that
    answers 429 with Retry-After: the batch is tried again until it is
    acknowledged, the errors show meanwhile, and every event arrives once
    acknowledged, in order."""
    import threading

    db.execute("CREATE TABLE h (id int PRIMARY KEY, v int)")
    create_subscription(db, "w", ["h"], "webhook", "json",
                        {"url": receiver.url, "batch_size": 4, "timeout": 1, "retry_min_delay": 0.05,
                         "retry_max_delay": 0.2})
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: db.execute("SELECT snapshot_done FROM orochi.list_cdc_subscriptions()").fetchone()[0],
               what="the subscription to start")
    receiver.hold = threading.Event()
    db.execute("INSERT INTO h SELECT g, g FROM generate_series(1, 10) g")
    wait_until(lambda: "did not answer within 1 s" in (stats(db, "w")["current_error"] or ""),
               what="the timeout to show")
    wait_until(lambda: receiver.held >= 2, what="a second try")
    assert stats(db, "w")["events_sent"] == 0 and stats(db, "w")["errors"] >= 1
    receiver.status, receiver.retry_after = 429, "0.1"
    receiver.hold.set()  # the held requests are answered 429 (their client gave up on them)
    receiver.hold = None
    wait_until(lambda: "answered 429" in (stats(db, "w")["current_error"] or ""), what="the 429 to show")
    assert receiver.events() == []
    receiver.status = 200
    wait_until(lambda: stats(db, "w")["events_sent"] == 10, what="the events to be delivered")
    sidecar.terminate()
    assert [e["after"]["id"] for e in dedupe(receiver.events())] == list(range(1, 11))
    assert stats(db, "w")["current_error"] is None
    assert db.execute("SELECT count(*) FROM orochi.cdc_errors").fetchone()[0] == 0  # none refused for good


def test_sink_down_for_a_while_gets_the_backlog_in_order(db, db_dsn, receiver, start_sidecar):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v int)")
    db.execute("CREATE FOREIGN TABLE o (id int, v int) SERVER orochi OPTIONS (delta_row_limit '30')")
    create_subscription(db, "w", ["h", "o"], "webhook", "json",
                        {"url": receiver.url, "batch_size": 50, "retry_min_delay": 0.1, "retry_max_delay": 0.3})
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: stats(db, "w")["status"] == "running" and stats(db, "w")["snapshot_events"] == 0
               and db.execute("SELECT snapshot_done FROM orochi.list_cdc_subscriptions()").fetchone()[0],
               what="the subscription to start")
    db.execute("INSERT INTO h VALUES (0, 0)")
    wait_until(lambda: len(receiver.events()) == 1, what="the first event")
    receiver.status = 503  # down (answering), then gone altogether
    for i in range(1, 41):
        db.execute("INSERT INTO h VALUES (%s, %s)", [i, i])
        db.execute("INSERT INTO o SELECT g, %s FROM generate_series(1, %s) g", [i, 1 + i % 50])
        if i % 5 == 0:
            db.execute("UPDATE h SET v = v + 1 WHERE id = %s", [i - 1])
            db.execute("DELETE FROM o WHERE id = 1 AND v = %s", [i - 2])
        if i == 20:
            wait_until(lambda: "503" in (stats(db, "w")["current_error"] or ""), what="the error to show")
            receiver.stop()
    wait_until(lambda: "cannot be reached" in (stats(db, "w")["current_error"] or ""), what="the error to show")
    st = stats(db, "w")
    assert st["lag_bytes"] > 0 and st["lag_seconds"] > 0 and st["errors"] >= 2
    assert len(receiver.events()) == 1  # nothing went while it was down
    receiver.status = 200
    receiver.start()
    db.execute("INSERT INTO h VALUES (999, 999)")  # the last change: once it is in, everything is
    expected = db.execute("SELECT count(*) FROM h").fetchone()[0] + db.execute("SELECT count(*) FROM o").fetchone()[0]
    wait_until(lambda: any(e["after"] and e["after"]["id"] == 999 for e in receiver.events()),
               what="the backlog to be delivered")
    wait_until(lambda: stats(db, "w")["current_error"] is None and stats(db, "w")["lag_seconds"] == 0,
               what="the error and the lag to clear")
    sidecar.terminate()
    events = dedupe(receiver.events())
    ids = [event_id(e) for e in events]
    assert ids == sorted(ids)
    make_copy(db, "h", "h_copy")
    make_copy(db, "o", "o_copy")
    apply_events(db, events, {"public.h": "h_copy", "public.o": "o_copy"})
    assert assert_same_rows(db, "h", "h_copy") + assert_same_rows(db, "o", "o_copy") == expected


def test_kafka_broker_down_for_a_while_gets_the_backlog_in_order(db, db_dsn, start_sidecar):
    """The broker stopped mid-stream: the changes wait in the slot (the
    subscription shows the error and the lag), and once it is back they all
    arrive, each topic in order, a repeat only with an id already seen.
    A broker of its own (the session's is shared)."""
    with KafkaBroker() as kafka:
        _broker_down(db, db_dsn, kafka, start_sidecar)


def _broker_down(db, db_dsn, kafka, start_sidecar) -> None:
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v int)")
    db.execute("CREATE FOREIGN TABLE o (id int, v int) SERVER orochi OPTIONS (delta_row_limit '30')")
    create_subscription(db, "kd", ["h", "o"], "kafka", "json",
                        {"bootstrap_servers": kafka.bootstrap, "topic_prefix": "down", "batch_size": 25,
                         "tombstones": False, "delivery_timeout": 2, "retry_min_delay": 0.1,
                         "retry_max_delay": 0.5, "key_columns": {"o": ["id", "v"]}})
    topics = ["down.public.h", "down.public.o"]
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: db.execute("SELECT snapshot_done FROM orochi.list_cdc_subscriptions()").fetchone()[0],
               what="the subscription to start")
    db.execute("INSERT INTO h VALUES (0, 0)")
    wait_until(lambda: stats(db, "kd")["events_sent"] == 1, what="the first event")
    kafka.stop()
    try:
        for i in range(1, 31):
            with db.transaction():
                db.execute("INSERT INTO h VALUES (%s, %s)", [i, i])
                db.execute("INSERT INTO o SELECT g, %s FROM generate_series(1, %s) g", [i, 1 + i % 40])
            if i % 4 == 0:
                db.execute("UPDATE h SET v = v + 1 WHERE id = %s", [i - 1])
                db.execute("DELETE FROM o WHERE id = 1 AND v = %s", [i - 2])
        wait_until(lambda: (stats(db, "kd")["current_error"] or "").startswith("sink unavailable"),
                   what="the error to show")
        st = stats(db, "kd")
        assert st["status"] == "running" and st["errors"] >= 1
        assert st["lag_bytes"] > 0 and st["lag_seconds"] > 0 and st["events_sent"] == 1
    finally:
        kafka.start()
    db.execute("INSERT INTO h VALUES (999, 999)")  # the last change: once it is in, everything is
    expected = db.execute("SELECT (SELECT count(*) FROM h) + (SELECT count(*) FROM o)").fetchone()[0]

    def delivered():
        return any(v and v["after"] and v["after"]["id"] == 999 for _, _, v in kafka_events(kafka, ["down.public.h"]))

    wait_until(delivered, what="the backlog to be delivered")
    wait_until(lambda: stats(db, "kd")["current_error"] is None, what="the error to clear")
    sidecar.terminate()
    values = [v for _, _, v in kafka_events(kafka, topics)]
    for topic_events in ([e for e in values if e["table"] == "h"], [e for e in values if e["table"] == "o"]):
        dedupe(topic_events)  # per topic: in order, a repeat only with an id seen before
    merged, seen = [], set()
    for e in sorted(values, key=event_id):
        if event_id(e) not in seen:
            seen.add(event_id(e))
            merged.append(e)
    make_copy(db, "h", "h_copy")
    make_copy(db, "o", "o_copy")
    apply_events(db, merged, {"public.h": "h_copy", "public.o": "o_copy"})
    assert assert_same_rows(db, "h", "h_copy") + assert_same_rows(db, "o", "o_copy") == expected


def test_max_lag_drops_the_slot_and_fails_the_subscription(db, db_dsn, out_dir):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, pad text)")
    create_subscription(db, "s", ["h"], "file", "json", {"directory": out_dir, "max_lag": "2MB"})
    cdc_once(db_dsn)
    db.execute("SELECT orochi.stop_cdc_subscription('s')")
    db.execute("INSERT INTO h SELECT g, repeat('x', 200) FROM generate_series(1, 30000) g")
    assert stats(db, "s")["retained_wal_bytes"] > 2 << 20
    cdc_once(db_dsn)  # the duty's housekeeping, even for a stopped subscription
    st = stats(db, "s")
    assert st["status"] == "failed" and "more than max_lag" in st["current_error"]
    assert st["retained_wal_bytes"] is None
    assert db.execute("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
                      ).fetchone()[0] == 0
    # started again: a new slot, a new snapshot
    db.execute("SELECT orochi.start_cdc_subscription('s')")
    assert cdc_once(db_dsn) == "cdc: s: 0 events and 30000 snapshot events"
    assert len(file_events(out_dir)) == 30000


def test_file_sink_per_table_and_rotation(db, db_dsn, out_dir):
    db.execute("CREATE TABLE a (id int PRIMARY KEY)")
    db.execute("CREATE FOREIGN TABLE b (id int) SERVER orochi")
    create_subscription(db, "f", ["a", "b"], "file", "debezium",
                        {"directory": out_dir, "per": "table", "max_file_bytes": 20000})
    cdc_once(db_dsn)
    db.execute("INSERT INTO a SELECT generate_series(1, 100)")
    db.execute("INSERT INTO b SELECT generate_series(1, 100)")
    cdc_once(db_dsn)
    names = sorted(os.listdir(out_dir))
    assert "f.public.a.jsonl" in names and "f.public.b.jsonl" in names and "f.public.a.1.jsonl" in names
    assert all(os.path.getsize(os.path.join(out_dir, n)) <= 20000 for n in names)
    a = file_events(out_dir, "f.public.a")
    assert [e["after"]["id"] for e in a] == list(range(1, 101))
