"""The sink interface: deliver a batch of events, in order, and return only
once the sink has them for good (acknowledged, flushed, fsynced).

A sink that cannot take events now raises :class:`SinkUnavailable`: the
worker keeps the batch, shows the error and tries again with a backoff (the
slot does not move meanwhile, so nothing is lost).  Events a sink refuses
for good (a webhook's 4xx) are returned as :class:`Refused`: the worker
records them in ``orochi.cdc_errors`` and goes on.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from orochi_fdw.cdc.events import Event, RenderContext
from orochi_fdw.cdc.options import CdcOptions


class SinkUnavailable(Exception):
    """The sink cannot take events now; try again later.

    Attributes:
        retry_after: seconds the sink asked to wait (HTTP Retry-After), if any.
    """

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Refused:
    """An event the sink refused for good."""

    event: Event
    status: int | None
    response: str
    value: bytes


@dataclass
class Delivery:
    """What a delivery did: the events delivered (and their bytes), and
    those refused."""

    delivered: int = 0
    bytes: int = 0
    skipped: int = 0
    refused: list[Refused] = field(default_factory=list)


class Sink(abc.ABC):
    """One subscription's sink."""

    def __init__(self, name: str, options: CdcOptions, ctx: RenderContext):
        self.name = name
        self.options = options
        self.ctx = ctx

    def open(self) -> None:
        """Connect (or open files).  Raises SinkUnavailable."""

    @abc.abstractmethod
    def deliver(self, events: list[Event]) -> Delivery:
        """Deliver ``events`` in order and wait until the sink has them.

        Raises:
            SinkUnavailable: nothing or part of it was delivered; the whole
                batch is delivered again later (at-least-once).
        """

    def close(self) -> None:
        """Release connections and files."""


def make_sink(name: str, options: CdcOptions, ctx: RenderContext) -> Sink:
    if options.sink == "kafka":
        from orochi_fdw.cdc.sinks.kafka import KafkaSink
        return KafkaSink(name, options, ctx)
    if options.sink == "webhook":
        from orochi_fdw.cdc.sinks.webhook import WebhookSink
        return WebhookSink(name, options, ctx)
    if options.sink == "file":
        from orochi_fdw.cdc.sinks.files import FileSink
        return FileSink(name, options, ctx)
    raise ValueError(f"unknown sink {options.sink!r}")


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


