"""Helpers of the CDC tests: subscriptions, one sidecar cycle in this
process, a webhook receiver, reading the sinks back, and the oracle: events
applied to empty heap copies of the captured tables."""

from __future__ import annotations

import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

import psycopg
from psycopg import sql

from orochi_fdw.testing.cluster import find_free_port

SIDECAR_SETTINGS = """
log_level = "debug"
duties = ["cdc"]
[http]
port = 0
[cdc]
poll_interval = 0.2
shutdown_grace = 5
[jobs]
client_check_interval = 0.5
[reconnect]
min_delay = 0.1
max_delay = 0.5
"""


def drop_slots(conn: psycopg.Connection) -> None:
    """Drop every replication slot of the connection's database (holders
    disconnected first)."""
    for _ in range(200):
        rows = conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots "
                            "WHERE database = current_database()").fetchall()
        if not rows:
            return
        for slot, pid in rows:
            if pid is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", [pid])
                continue
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            except (psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
                pass
        conn.execute("SELECT pg_sleep(0.02)")
    raise AssertionError("replication slots could not be dropped")


def create_subscription(db: psycopg.Connection, name: str, tables: list[str], sink: str, format: str,
                        options: dict[str, Any], start: bool = True) -> int:
    sid = db.execute("SELECT orochi.create_cdc_subscription(%s, %s::regclass[], %s, %s, %s::jsonb)",
                     [name, tables, sink, format, json.dumps(options)]).fetchone()[0]
    if start:
        db.execute("SELECT orochi.start_cdc_subscription(%s)", [name])
    return sid


def cdc_once(dsn: str) -> str:
    """One cycle of the cdc duty as ``orochi-sidecar --once`` runs it, in
    this process: every running subscription delivers what its slot holds."""
    from orochi_fdw.sidecar import config as configuration
    from orochi_fdw.sidecar.daemon import Daemon

    config = configuration.load(environ={}, overrides={"dsn": dsn, "duties": "cdc"})
    daemon = Daemon(config)
    daemon.context.once = True
    try:
        return daemon.run_cycle()
    finally:
        daemon.close()


def stats(db: psycopg.Connection, name: str) -> dict[str, Any]:
    cur = db.execute("SELECT * FROM orochi.cdc_subscription_stats(%s)", [name])
    row = cur.fetchone()
    assert row is not None, f"no subscription {name}"
    return dict(zip([d.name for d in cur.description], row))


# ---------------------------------------------------------------------- reading sinks back

def file_events(directory: str, name: str | None = None) -> list[dict]:
    """Events of the file sink's files, rotated ones first (in order), per file."""
    files = sorted(os.listdir(directory))
    groups: dict[str, list[tuple[int, str]]] = {}
    for f in files:
        m = re.match(r"^(.*?)(?:\.(\d+))?\.jsonl$", f)
        if not m:
            continue
        groups.setdefault(m.group(1), []).append((int(m.group(2)) if m.group(2) else 1 << 60, f))
    out = []
    for stem in sorted(groups):
        if name is not None and not stem.startswith(name):
            continue
        for _, f in sorted(groups[stem]):
            with open(os.path.join(directory, f), "rb") as fh:
                for line in fh:
                    out.append(json.loads(line))
    return out


def event_id(event: dict) -> tuple[int, int]:
    """(lsn, index) of an event of either format."""
    if "index" in event:
        return int(event["lsn"]), int(event["index"])
    return int(event["source"]["lsn"]), int(event["transaction"]["total_order"]) - 1


def dedupe(events: Iterable[dict]) -> list[dict]:
    """Events in delivery order without repeats; asserts that every repeat
    has an id already seen and that ids increase otherwise."""
    seen: set[tuple[int, int]] = set()
    last: tuple[int, int] | None = None
    out = []
    for e in events:
        eid = event_id(e)
        if eid in seen:
            continue
        assert last is None or eid > last, f"event {eid} arrived after {last} without having been seen"
        seen.add(eid)
        last = eid
        out.append(e)
    return out


def kafka_events(broker: Any, topics: list[str], timeout: float = 60.0) -> list[tuple[str, bytes | None, dict | None]]:
    """(topic, key, value) of every message of ``topics``, from their start,
    partition by partition in offset order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "orochi-cdc-test",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "isolation.level": "read_committed"})
    out = []
    try:
        for topic in topics:
            ends = broker.high_watermarks(topic)
            for partition, end in ends.items():
                if end == 0:
                    continue
                consumer.assign([TopicPartition(topic, partition, 0)])
                got = 0
                import time
                deadline = time.monotonic() + timeout
                while got < end and time.monotonic() < deadline:
                    msg = consumer.poll(1.0)
                    if msg is None or msg.error():
                        continue
                    got = msg.offset() + 1
                    value = msg.value()
                    out.append((topic, msg.key(), None if value is None else json.loads(value)))
                assert got >= end, f"{topic}[{partition}]: read {got} of {end} messages"
    finally:
        consumer.close()
    return out


# ---------------------------------------------------------------------- a webhook receiver

class Receiver:
    """An HTTP server on 127.0.0.1 that records the batches POSTed to it.

    Attributes:
        batches: (headers, body bytes) of every accepted POST, in order.
        status: the status answered (200 by default; 503 plays "down" while
            the server still listens).
        refuse: a predicate on an event; a batch holding such an event is
            answered 400.
        hold: when set to a ``threading.Event``, each POST waits for it
            before it is answered (a receiver that does not answer in time).
        retry_after: the ``Retry-After`` header of answers other than 200.
    """

    def __init__(self, port: int | None = None):
        self.port = port or find_free_port()
        self.batches: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        self.status = 200
        self.refuse: Callable[[dict], bool] | None = None
        self.hold: threading.Event | None = None
        self.retry_after: str | None = None
        self.held = 0
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._open: set = set()  # kept-alive connections, closed by stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._open.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._open.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                hold = receiver.hold
                if hold is not None:
                    with receiver._lock:
                        receiver.held += 1
                    hold.wait()
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver.status
                    if status == 200 and receiver.refuse is not None:
                        if any(receiver.refuse(e) for e in json.loads(body)):
                            status = 400
                    if status == 200:
                        receiver.batches.append(({k.lower(): v for k, v in self.headers.items()}, body))
                answer = b'{"ok": true}' if status == 200 else b'{"error": "refused"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status != 200 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and close the connections clients keep open."""
        import socket

        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for conn in list(self._open):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def events(self) -> list[dict]:
        with self._lock:
            return [e for _, body in self.batches for e in json.loads(body)]


# ---------------------------------------------------------------------- the oracle: apply events to copies

def make_copy(db: psycopg.Connection, source: str, copy: str) -> None:
    """An empty heap table with the source's columns (no constraints)."""
    db.execute(sql.SQL("CREATE TABLE {} AS SELECT * FROM {} WITH NO DATA").format(
        sql.SQL(copy), sql.SQL(source)))


def apply_events(db: psycopg.Connection, events: Iterable[dict], copies: dict[str, str]) -> int:
    """Apply json-format events in order to the copies (``"schema.table"`` ->
    copy's name): create and read insert, delete removes one row equal to
    the key (its columns compared with IS NOT DISTINCT FROM), update is a
    delete of the old key and an insert, truncate empties.  Returns how many
    were applied."""
    n = 0
    inserts: list[dict] = []
    insert_target: str | None = None

    def flush_inserts() -> None:
        nonlocal inserts
        if inserts:
            db.execute(sql.SQL("INSERT INTO {t} SELECT * FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb)")
                       .format(t=sql.SQL(insert_target)), [json.dumps(inserts)])
            inserts = []

    with db.transaction():
        for e in events:
            copy = copies.get(f"{e['schema']}.{e['table']}")
            if copy is None:
                continue
            op = e["op"]
            if op in ("c", "r"):
                if insert_target != copy:
                    flush_inserts()
                    insert_target = copy
                inserts.append(e["after"])
                n += 1
                continue
            flush_inserts()
            target = sql.SQL(copy)
            if op == "t":
                db.execute(sql.SQL("TRUNCATE {}").format(target))
            if op in ("u", "d"):
                key = e["key"] if op == "d" or e["before"] is None else \
                    {k: e["before"][k] for k in e["key"]}
                match = sql.SQL(" AND ").join(
                    sql.SQL("c.{0} IS NOT DISTINCT FROM k.{0}").format(sql.Identifier(col)) for col in key)
                deleted = db.execute(sql.SQL(
                    "DELETE FROM {t} WHERE ctid = (SELECT c.ctid FROM {t} c, "
                    "jsonb_populate_record(NULL::{t}, %s::jsonb) k WHERE {m} LIMIT 1)").format(t=target, m=match),
                    [json.dumps(key)]).rowcount
                assert deleted == 1, f"event {e['id']}: no row of {copy} has the key {key}"
            if op == "u":
                db.execute(sql.SQL("INSERT INTO {t} SELECT * FROM jsonb_populate_record(NULL::{t}, %s::jsonb)")
                           .format(t=target), [json.dumps(e["after"])])
            n += 1
        flush_inserts()
    return n


def assert_same_rows(db: psycopg.Connection, source: str, copy: str) -> int:
    """The two tables hold the same rows (as multisets); returns how many."""
    for a, b in ((source, copy), (copy, source)):  # rows compared by their text (every type has one)
        extra = db.execute(sql.SQL("SELECT r::text FROM {} r EXCEPT ALL SELECT r::text FROM {} r").format(
            sql.SQL(a), sql.SQL(b))).fetchall()
        assert not extra, f"rows of {a} not in {b}: {extra[:5]} ({len(extra)} in all)"
    return db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(source))).fetchone()[0]
