"""What every source does for a worker.

A source reads records from where the catalog says each stream stands and
never decides a position itself: the worker commits positions with the rows
and then tells the source (:meth:`Source.committed`); after a failed or cut
batch it moves the source back to the committed positions
(:meth:`Source.rewind`).
"""

from __future__ import annotations

import abc
import threading
from typing import Any, Mapping

from orochi_fdw.pipelines.options import PipelineOptions
from orochi_fdw.pipelines.records import Fetch, StreamState


class SourceUnavailable(Exception):
    """The source cannot be reached or read now (broker down, bucket
    missing ...): the worker shows the message and tries again."""


class Source(abc.ABC):
    """One pipeline's reader.

    Attributes:
        current_error: a problem the source has now (None when healthy); the
            worker shows it in ``orochi.pipelines.current_error``.
    """

    lag_unit = "bytes"

    def __init__(self, pipeline_id: int, options: PipelineOptions, format: str):
        self.pipeline_id = pipeline_id
        self.options = options
        self.format = format
        self.limit = int(options["max_record_bytes"])
        self.current_error: str | None = None
        self.committed_streams: dict[str, StreamState] = {}

    @abc.abstractmethod
    def open(self, positions: Mapping[str, StreamState]) -> None:
        """Connect and get ready to read from ``positions`` (the catalog's).

        Raises:
            SourceUnavailable: cannot connect or find what to read.
        """

    @abc.abstractmethod
    def fetch(self, max_records: int, max_wait: float, stop: threading.Event, until_caught_up: bool = False) -> Fetch:
        """Read up to ``max_records`` records.

        Waits at most ``max_wait`` seconds once the first record is there (the
        batch's latency), and about that long when nothing comes; with
        ``until_caught_up``, reads until the source holds nothing more (or the
        batch is full), without waiting for records that are not there yet.

        Raises:
            SourceUnavailable: the source cannot be read now.
        """

    def committed(self, streams: Mapping[str, StreamState], forgotten: list[str]) -> None:
        """The states of ``streams`` are committed (with the rows before them)."""
        for key, state in streams.items():
            self.committed_streams[key] = state.copy()
        for key in forgotten:
            self.committed_streams.pop(key, None)

    @abc.abstractmethod
    def rewind(self) -> None:
        """Go back to the committed positions (a batch was not loaded, or only
        part of it)."""

    def pause(self) -> None:
        """Stop reading ahead while the pipeline is paused."""

    def resume(self) -> None:
        """Read again after :meth:`pause`."""

    def refresh_ends(self) -> dict[str, StreamState]:
        """Streams whose end (high watermark, size) moved since committed,
        for the lag shown while nothing is loaded."""
        return {}

    def close(self) -> None:
        """Release connections and files."""

    def describe(self) -> dict[str, Any]:
        return {"source": type(self).__name__}


def make_source(pipeline_id: int, source: str, format: str, options: PipelineOptions) -> Source:
    """The source of a pipeline (its client library imported now)."""
    if source == "kafka":
        from orochi_fdw.pipelines.sources.kafka import KafkaSource
        return KafkaSource(pipeline_id, options, format)
    if source == "s3":
        from orochi_fdw.pipelines.sources.s3 import S3Source
        return S3Source(pipeline_id, options, format)
    if source == "file":
        from orochi_fdw.pipelines.sources.files import FileSource
        return FileSource(pipeline_id, options, format)
    raise ValueError(f"unknown source {source!r}")
