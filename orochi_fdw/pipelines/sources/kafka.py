"""Kafka topics, read with confluent-kafka (librdkafka).

- Partitions are **assigned** explicitly (no consumer-group rebalancing):
  the worker that holds a pipeline's lock reads all its partitions (or those
  of the ``partitions`` option), so two sidecars never read the same one.
- Each partition starts where the catalog says (the next offset to read); a
  partition the catalog does not know yet starts at the low watermark
  (``start_position`` earliest) or the high watermark (latest), and that
  offset is committed to the catalog at once, so a restart never skips or
  repeats records.
- ``consumer_group``: offsets are also committed to Kafka after each
  PostgreSQL commit, for monitoring tools only; they are never read back.
- A message is one record (json), or holds one record per line (jsonl, csv);
  all records of a message go into the same batch.
- Tombstones (messages without a value) are skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from orochi_fdw.pipelines.errors import RecordError
from orochi_fdw.pipelines.options import PipelineOptions
from orochi_fdw.pipelines.records import Fetch, Record, StreamState, frame_bytes
from orochi_fdw.pipelines.sources.base import Source, SourceUnavailable

logger = logging.getLogger("orochi.sidecar.pipelines")

#: errors that mean the broker cannot be reached (shown, waited out)
_UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
                KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT}
#: seconds between two looks for new partitions
METADATA_INTERVAL = 30.0
#: seconds an idle fetch waits for a first record (the worker then looks at its state again)
IDLE_WAIT = 1.0
#: seconds a catch-up read waits for an answer before it says the broker is unavailable
CATCH_UP_TIMEOUT = 30.0


class KafkaSource(Source):
    """The partitions of one topic."""

    lag_unit = "records"

    def __init__(self, pipeline_id: int, options: PipelineOptions, format: str):
        super().__init__(pipeline_id, options, format)
        self.topic: str = options["topic"]
        self.consumer: Consumer | None = None
        self.partitions: list[int] = []
        self.cursor: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._last_metadata = 0.0
        self._paused = False
        self._quote = options["quote"].encode() if format == "csv" else None

    # ------------------------------------------------------------ connection
    def _on_error(self, error: KafkaError) -> None:
        self.current_error = f"kafka: {error.str()}"
        if error.code() not in _UNREACHABLE:
            logger.warning("pipeline %d: %s", self.pipeline_id, self.current_error)

    def _config(self) -> dict[str, Any]:
        options = self.options
        conf: dict[str, Any] = {
            "fetch.wait.max.ms": 100,
            "isolation.level": "read_committed",
            "client.id": f"orochi-pipeline-{self.pipeline_id}",
            "socket.connection.setup.timeout.ms": 10000,
        }
        conf.update(options["librdkafka"] or {})
        conf.update({
            "bootstrap.servers": options["bootstrap_servers"],
            "group.id": options["consumer_group"] or f"orochi-pipeline-{self.pipeline_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "error_cb": self._on_error,
        })
        return conf

    def _topic_partitions(self) -> list[int]:
        assert self.consumer is not None
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=10)
        except KafkaException as exc:
            raise SourceUnavailable(f"kafka: {exc.args[0].str() if exc.args else exc}") from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = topic.error.str() if topic is not None and topic.error is not None else "not found"
            raise SourceUnavailable(f'kafka: topic "{self.topic}" is not available: {reason}')
        available = sorted(topic.partitions)
        wanted = self.options["partitions"]
        if wanted:
            missing = [p for p in wanted if p not in available]
            if missing:
                raise SourceUnavailable(f'kafka: topic "{self.topic}" has no partition {missing[0]} '
                                        f"(it has {len(available)})")
            return sorted(wanted)
        return available

    def _watermarks(self, partition: int, cached: bool = False) -> tuple[int, int]:
        assert self.consumer is not None
        try:
            return self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10,
                                                       cached=cached)
        except KafkaException as exc:
            raise SourceUnavailable(f"kafka: {exc.args[0].str() if exc.args else exc}") from None

    def open(self, positions: Mapping[str, StreamState]) -> Fetch:
        self.close()
        self.consumer = Consumer(self._config())
        try:
            return self._assign(positions)
        except BaseException:
            self.close()
            raise

    def _assign(self, positions: Mapping[str, StreamState]) -> Fetch:
        partitions = self._topic_partitions()
        new = Fetch()
        self.committed_streams = {k: v.copy() for k, v in positions.items()}
        for partition in partitions:
            state = positions.get(str(partition))
            if state is None:
                low, high = self._watermarks(partition)
                start = low if self.options["start_position"] == "earliest" else high
                state = StreamState(str(partition), start, high)
                new.streams[state.stream] = state
            self.cursor[partition] = state.position
        self.partitions = partitions
        self._last_metadata = time.monotonic()
        self._reassign()
        self.current_error = None
        return new

    def _reassign(self) -> None:
        assert self.consumer is not None
        self.consumer.assign([TopicPartition(self.topic, p, self.cursor[p]) for p in self.partitions])
        if self._paused:
            self.consumer.pause([TopicPartition(self.topic, p) for p in self.partitions])

    def _new_partitions(self) -> dict[str, StreamState]:
        """Partitions added to the topic since the last look (read from their start)."""
        self._last_metadata = time.monotonic()
        if self.options["partitions"]:
            return {}
        try:
            partitions = self._topic_partitions()
        except SourceUnavailable:
            return {}
        added = [p for p in partitions if p not in self.cursor]
        states = {}
        for partition in added:
            low, high = self._watermarks(partition)
            self.cursor[partition] = low
            states[str(partition)] = StreamState(str(partition), low, high)
        if added:
            self.partitions = sorted(self.partitions + added)
            self._reassign()
            logger.info("pipeline %d: topic %s has new partitions %s", self.pipeline_id, self.topic, added)
        return states

    # ------------------------------------------------------------ reading
    def _records_of(self, message: Any, out: list[Record]) -> None:
        partition = message.partition()
        offset = message.offset()
        value = message.value()
        stream = str(partition)
        if value is None:
            return  # a tombstone: nothing to load
        size = len(value)
        if size > self.limit:
            out.append(Record(stream, offset, offset + 1, value[:self.limit], size,
                              error=RecordError(f"record of {size} bytes is larger than max_record_bytes "
                                                f"({self.limit})", "54000")))
            return
        if self.format == "json":
            out.append(Record(stream, offset, offset + 1, value, size))
            return
        lines = [data for _start, _end, data, _over in frame_bytes(value, 0, self.limit, self._quote)]
        for line, data in enumerate(lines, 1):
            if data.strip():
                out.append(Record(stream, offset, offset + 1, data, note=f"line {line}" if len(lines) > 1 else None))

    def fetch(self, max_records: int, max_wait: float, stop: threading.Event,
              until_caught_up: bool = False) -> Fetch:
        assert self.consumer is not None
        fetch = Fetch()
        if time.monotonic() - self._last_metadata > METADATA_INTERVAL:
            fetch.streams.update(self._new_partitions())
        targets: dict[int, int] = {}
        if until_caught_up:
            for partition in self.partitions:
                targets[partition] = self._watermarks(partition)[1]
                self._ends[partition] = targets[partition]
            self.current_error = None
        records = fetch.records
        touched: set[int] = set()
        deadline: float | None = None
        idle_since = time.monotonic()
        while len(records) < max_records and not stop.is_set():
            wanted = min(max_records - len(records), 10000)
            if until_caught_up:
                remaining = sum(max(t - self.cursor[p], 0) for p, t in targets.items())
                if remaining == 0:
                    fetch.caught_up = True
                    break
                wanted = min(wanted, remaining)
                timeout = 0.5
            elif deadline is None:
                wanted = 1  # idle: the first record starts the batch's clock
                timeout = IDLE_WAIT
            else:
                timeout = min(max(0.0, deadline - time.monotonic()), 1.0)
            messages = self.consumer.consume(wanted, timeout)
            got = False
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    if error.fatal():
                        raise SourceUnavailable(f"kafka: {error.str()}")
                    self._on_error(error)
                    continue
                got = True
                partition = message.partition()
                if partition not in self.cursor:
                    continue
                self._records_of(message, records)
                self.cursor[partition] = message.offset() + 1
                touched.add(partition)
            if not got:
                touched.update(self._skip_markers())
            now = time.monotonic()
            if got:
                self.current_error = None
                idle_since = now
                if deadline is None:
                    deadline = now + max_wait
            if until_caught_up:
                if not got and now - idle_since > CATCH_UP_TIMEOUT:
                    raise SourceUnavailable(self.current_error or "kafka: no answer from the broker")
                continue
            if deadline is not None and now >= deadline:
                break
            if deadline is None and not got and now - idle_since >= IDLE_WAIT:
                break
        if not records and self.current_error is not None and not stop.is_set():
            self._probe()
        for partition in touched:
            end = self._ends.get(partition)
            if not until_caught_up:
                try:
                    end = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                              cached=True)[1]
                except KafkaException:
                    end = None
                if end is not None and end < 0:
                    end = None
            state = StreamState(str(partition), self.cursor[partition], end)
            if end is not None:
                self._ends[partition] = end
            fetch.streams[state.stream] = state
        return fetch

    def _skip_markers(self) -> list[int]:
        """Move cursors past offsets that hold no message (Kafka transactions'
        commit markers, compacted records): the consumer's position already
        is past them."""
        assert self.consumer is not None
        try:
            positions = self.consumer.position([TopicPartition(self.topic, p) for p in self.partitions])
        except KafkaException:
            return []
        moved = []
        for tp in positions:
            if tp.offset >= 0 and tp.partition in self.cursor and tp.offset > self.cursor[tp.partition]:
                self.cursor[tp.partition] = tp.offset
                moved.append(tp.partition)
        return moved

    def _probe(self) -> None:
        """Ask the broker for the topic's metadata: clears the current error once
        it answers again (librdkafka reconnects by itself, silently)."""
        assert self.consumer is not None
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=2)
        except KafkaException:
            return
        topic = metadata.topics.get(self.topic)
        if topic is not None and topic.error is None and metadata.brokers:
            self.current_error = None

    def refresh_ends(self) -> dict[str, StreamState]:
        if self.consumer is None:
            return {}
        moved = {}
        for partition in self.partitions:
            try:
                high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)[1]
            except KafkaException:
                continue
            committed = self.committed_streams.get(str(partition))
            if high is None or high < 0 or committed is None or committed.end == high:
                continue
            moved[str(partition)] = StreamState(str(partition), committed.position, high)
        return moved

    # ------------------------------------------------------------ positions
    def committed(self, streams: Mapping[str, StreamState], forgotten: list[str]) -> None:
        super().committed(streams, forgotten)
        if self.consumer is None or not self.options["consumer_group"] or not streams:
            return
        offsets = [TopicPartition(self.topic, int(key), state.position) for key, state in streams.items()]
        try:  # informational only: monitoring tools read the group's lag from it
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            logger.debug("pipeline %d: consumer group commit failed: %s", self.pipeline_id, exc)

    def rewind(self) -> None:
        if self.consumer is None:
            return
        for partition in self.partitions:
            state = self.committed_streams.get(str(partition))
            if state is not None:
                self.cursor[partition] = state.position
        self._reassign()

    def pause(self) -> None:
        if self.consumer is not None and not self._paused:
            self.consumer.pause([TopicPartition(self.topic, p) for p in self.partitions])
        self._paused = True

    def resume(self) -> None:
        if self.consumer is not None and self._paused:
            self._paused = False
            self.rewind()  # drop what was prefetched before the pause
        self._paused = False

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError):
                pass
            self.consumer = None
