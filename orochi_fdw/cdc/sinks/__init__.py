"""Where change events go: Kafka, a webhook, files (one module each)."""

from orochi_fdw.cdc.sinks.base import Delivery, Refused, Sink, SinkUnavailable, make_sink

__all__ = ["Delivery", "Refused", "Sink", "SinkUnavailable", "make_sink"]
