"""The options of a CDC subscription: a declarative table per sink, checked
when the subscription is created (in the backend) and again when the
sidecar runs it.

Common options (every sink):

=====================  ==================================================================
``batch_size``         most events delivered at once (a webhook POST, one Kafka flush, one
                       file fsync), default 1,000
``max_lag``            WAL the slot may hold back (bytes, or text such as ``"10GB"``); past
                       it the subscription fails and its slot is dropped, so that the WAL
                       can go (default ``"10GB"``; ``-1``: no limit)
``key_columns``        ``{"table": ["col", ...]}``: the event key of a table (Debezium's
                       ``message.key.columns``); default: the primary key (replica
                       identity) of a heap table, every column of an orochi table
``snapshot``           ``initial`` (default: every row as an ``r`` event first) or ``never``
``topic_prefix``       Debezium's ``topic.prefix``: ``source.name`` and the first part of
                       Kafka topics (default: the subscription's name)
``decimal_handling``   numeric as Debezium's ``precise`` (default), ``double`` or ``string``
``poll_interval``      seconds between looks at the slot when there was nothing new (0.2)
``verify_sink``        check at creation that the sink answers (default true)
``retry_min_delay``,   seconds between two tries of a sink that failed, doubling from the
``retry_max_delay``    first to the second (0.5 and 30)
=====================  ==================================================================

Per sink: :data:`SINK_OPTIONS` (documented in docs/cdc.md).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from orochi_fdw.cdc.errors import InvalidCdcOptionError

SINKS = ("kafka", "webhook", "file")
FORMATS = ("debezium", "json")

#: librdkafka settings the Kafka sink sets itself
RESERVED_LIBRDKAFKA = ("bootstrap.servers", "enable.idempotence", "acks", "max.in.flight.requests.per.connection")

_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class Option:
    name: str
    kind: type | tuple[type, ...]
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    required: bool = False


def parse_bytes(value: Any) -> int:
    """A size in bytes: an integer, or text such as ``"512MB"`` (-1: none).

    Raises:
        ValueError: not a size.
    """
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(-?\d+)\s*([kmgt]?b)?\s*", str(value), re.IGNORECASE)
    if not match:
        raise ValueError("not a size")
    return int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]


def _size(v: Any) -> str | None:
    try:
        n = parse_bytes(v)
    except ValueError:
        return 'must be a number of bytes or a size such as "10GB"'
    return None if n == -1 or n > 0 else "must be positive, or -1 for no limit"


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _topic_name(v: str) -> str | None:
    return None if _TOPIC_NAME.match(v) else "may hold only letters, digits, '.', '_' and '-'"


def _absolute_path(v: str) -> str | None:
    return None if os.path.isabs(v) else "must be an absolute path"


def _url(v: str) -> str | None:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    return None


def _headers(v: dict) -> str | None:
    for key, value in v.items():
        if not isinstance(value, str) or "\n" in value or "\r" in value or "\n" in key or ":" in key:
            return "must map header names to one-line strings"
    return None


def _librdkafka(v: dict) -> str | None:
    for key, value in v.items():
        if key in RESERVED_LIBRDKAFKA:
            return f'"{key}" is set by the sink itself'
        if not isinstance(value, (str, int, float, bool)):
            return f'"{key}" must be a string, number or boolean'
    return None


def _key_columns(v: dict) -> str | None:
    for table, cols in v.items():
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
            return f'must map each table to a non-empty list of column names (see "{table}")'
    return None


COMMON_OPTIONS: tuple[Option, ...] = (
    Option("batch_size", int, 1000, _between(1, 1_000_000)),
    Option("max_lag", (int, str), "10GB", _size),
    Option("key_columns", dict, None, _key_columns),
    Option("snapshot", str, "initial", _one_of("initial", "never")),
    Option("topic_prefix", str, None, _topic_name),
    Option("decimal_handling", str, "precise", _one_of("precise", "double", "string")),
    Option("poll_interval", (int, float), 0.2, _between(0.001, 3600)),
    Option("verify_sink", bool, True),
    Option("retry_min_delay", (int, float), 0.5, _between(0.001, 3600)),
    Option("retry_max_delay", (int, float), 30.0, _between(0.001, 86400)),
)

SINK_OPTIONS: dict[str, tuple[Option, ...]] = {
    "kafka": (
        Option("bootstrap_servers", str, None, _non_empty, required=True),
        Option("topic", str, None, _topic_name),
        Option("tombstones", bool, True),
        Option("delivery_timeout", (int, float), 30.0, _between(1, 86400)),
        Option("librdkafka", dict, None, _librdkafka),
    ),
    "webhook": (
        Option("url", str, None, _url, required=True),
        Option("secret", str, None, _non_empty),
        Option("timeout", (int, float), 10.0, _between(0.01, 3600)),
        Option("headers", dict, None, _headers),
    ),
    "file": (
        Option("directory", str, None, _absolute_path, required=True),
        Option("per", str, "subscription", _one_of("subscription", "table")),
        Option("max_file_bytes", (int, str), "64MB", _size),
        Option("fsync", bool, True),
    ),
}


class CdcOptions(Mapping[str, Any]):
    """Checked options with their defaults filled in."""

    def __init__(self, sink: str, format: str, values: dict[str, Any]):
        self.sink = sink
        self.format = format
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def max_lag_bytes(self) -> int | None:
        n = parse_bytes(self._values["max_lag"])
        return None if n < 0 else n

    @property
    def max_file_bytes(self) -> int:
        return parse_bytes(self._values["max_file_bytes"])


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", dict: "an object",
             list: "an array"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds:
        return "a number"
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def check_options(sink: str, format: str, options: Mapping[str, Any] | None) -> CdcOptions:
    """Check a subscription's options and fill in the defaults.

    Raises:
        InvalidCdcOptionError: an unknown sink, format or option, a value of
            the wrong type or out of range, or a required option missing.
    """
    if sink not in SINKS:
        raise InvalidCdcOptionError(f'unknown CDC sink "{sink}"', hint="The sinks are " + ", ".join(SINKS) + ".")
    if format not in FORMATS:
        raise InvalidCdcOptionError(f'unknown CDC format "{format}"',
                                    hint="The formats are " + ", ".join(FORMATS) + ".")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidCdcOptionError("CDC subscription options must be a JSON object")
    table = {o.name: o for o in COMMON_OPTIONS + SINK_OPTIONS[sink]}
    values: dict[str, Any] = {}
    for name, value in options.items():
        option = table.get(name)
        if option is None:
            raise InvalidCdcOptionError(f'unknown option "{name}" for a {sink} subscription',
                                        hint="Valid options: " + ", ".join(sorted(table)) + ".")
        if value is None:
            continue
        kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise InvalidCdcOptionError(
                f'option "{name}" must be {_type_name(option.kind)}, not {type(value).__name__} {value!r}')
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidCdcOptionError(f'option "{name}" must be finite')
        problem = option.check(value) if option.check else None
        if problem:
            raise InvalidCdcOptionError(f'option "{name}" {problem}, got {value!r}')
        values[name] = value
    for option in table.values():
        if option.name not in values:
            if option.required:
                raise InvalidCdcOptionError(f'option "{option.name}" is required for a {sink} subscription')
            values[option.name] = option.default
    checked = CdcOptions(sink, format, values)
    if checked["retry_min_delay"] > checked["retry_max_delay"]:
        raise InvalidCdcOptionError('option "retry_min_delay" must not exceed "retry_max_delay"')
    if sink == "file" and checked.max_file_bytes <= 0:
        raise InvalidCdcOptionError('option "max_file_bytes" must be positive')
    return checked
