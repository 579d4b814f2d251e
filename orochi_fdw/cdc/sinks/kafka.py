"""The Kafka sink: confluent-kafka's idempotent producer.

One topic per table, named as Debezium names them,
``<topic_prefix>.<schema>.<table>`` (or every table into ``topic``); the
message key is the event key (JSON), the value the event; a delete is
followed by a tombstone (the key with a null value, so that log compaction
can forget the row) unless ``tombstones`` is false.  Each message has a
header ``orochi.event_id`` (``<commit lsn>:<index>``).

The producer is idempotent (``enable.idempotence``, ``acks=all``): the
broker keeps each partition in the order produced, without duplicates from
the producer's own retries.  A batch counts as delivered when every message
is acknowledged (``flush``); when one is not, the whole batch is produced
again later, so a consumer may see an event twice, always with the same id.
Topics are created on first use (``topic_partitions`` partitions) when the
broker does not create them itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from orochi_fdw.cdc.events import Event, render_key, render_value
from orochi_fdw.cdc.sinks.base import Delivery, Sink, SinkUnavailable

logger = logging.getLogger("orochi.sidecar.cdc")


class KafkaSink(Sink):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.producer: Any = None
        self.admin: Any = None
        self.known_topics: set[str] = set()

    def _config(self) -> dict[str, Any]:
        config = {"bootstrap.servers": self.options["bootstrap_servers"], "enable.idempotence": True,
                  "acks": "all", "linger.ms": 5,
                  "delivery.timeout.ms": int(float(self.options["delivery_timeout"]) * 1000),
                  "message.timeout.ms": int(float(self.options["delivery_timeout"]) * 1000)}
        config.update(self.options["librdkafka"] or {})
        return config

    def open(self) -> None:
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient

        if self.producer is None:
            self.producer = Producer(self._config())
            admin_config = {k: v for k, v in self._config().items()
                            if k.startswith(("bootstrap.", "security.", "sasl.", "ssl.", "client."))}
            self.admin = AdminClient(admin_config)

    def topic_for(self, event: Event) -> str:
        return self.options["topic"] or f"{self.ctx.server_name}.{event.schema}.{event.table}"

    def _ensure_topics(self, topics: set[str]) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import NewTopic

        missing = topics - self.known_topics
        if not missing:
            return
        try:
            meta = self.admin.list_topics(timeout=10)
        except KafkaException as exc:
            raise SinkUnavailable(f"the Kafka broker does not answer: {exc}") from None
        absent = [t for t in missing if t not in meta.topics or meta.topics[t].error is not None]
        if absent:
            futures = self.admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in absent])
            for topic, future in futures.items():
                try:
                    future.result(15)
                except KafkaException as exc:
                    if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                        raise SinkUnavailable(f'could not create Kafka topic "{topic}": {exc}') from None
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                meta = self.admin.list_topics(timeout=10)
                if all(t in meta.topics and meta.topics[t].error is None for t in absent):
                    break
                time.sleep(0.05)
        self.known_topics |= missing

    def deliver(self, events: list[Event]) -> Delivery:
        self.open()
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        self._ensure_topics({self.topic_for(e) for e in events})
        total = 0
        now_ms = int(time.time() * 1000)
        tombstones = self.options["tombstones"]
        producer = self.producer
        for event in events:
            topic = self.topic_for(event)
            key = render_key(event)
            value = render_value(event, self.ctx, now_ms)
            total += len(value)
            headers = [("orochi.event_id", event.id.encode())]
            self._produce(topic, key, value, headers, delivered)
            if tombstones and event.op == "d":
                self._produce(topic, key, None, headers, delivered)
        left = producer.flush(float(self.options["delivery_timeout"]))
        if left or failures:
            raise SinkUnavailable(f"{left} message(s) not acknowledged by Kafka"
                                  + (f": {failures[0]}" if failures else ""))
        return Delivery(delivered=len(events), bytes=total)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list, callback: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=callback)
                return
            except BufferError:
                self.producer.poll(0.05)

    def close(self) -> None:
        if self.producer is not None:
            try:
                self.producer.flush(1)
            except Exception:
                pass
            self.producer = None
            self.admin = None
