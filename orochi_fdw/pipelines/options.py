"""The options of a pipeline: a declarative table per source, checked when
the pipeline is created (in the backend) and again when the sidecar runs it.

Options are a JSON object.  Keys common to every source:

============================  =======================================================
``batch_size``                most records in one batch (one transaction), default 10,000
``max_latency``               seconds a record may wait for its batch to fill, default 1.0
``max_errors``                bad records tolerated since the last start/resume before the
                              pipeline stops itself (status ``failed``); -1: no limit; default 100
``max_record_bytes``          larger records are dead letters, default 1 MiB
``columns``                   the column mapping (see :mod:`.mapping`)
``ignore_unknown_fields``     json: fields that name no column are ignored, not errors
``epoch_unit``                numbers into time columns count ``s`` (default), ``ms``, ``us``, ``ns``
``header``, ``delimiter``,    csv: a header line (default true for s3 and files, false for
``quote``, ``null``           kafka), the field delimiter (``,``), quote (``"``), the NULL text ('')
============================  =======================================================

Per source: see :data:`SOURCE_OPTIONS`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from orochi_fdw.pipelines.errors import InvalidPipelineOptionError

SOURCES = ("kafka", "s3", "file")
FORMATS = ("json", "jsonl", "csv")

#: librdkafka settings a pipeline sets itself (exactly once depends on them)
RESERVED_LIBRDKAFKA = ("group.id", "enable.auto.commit", "enable.auto.offset.store", "bootstrap.servers",
                       "enable.partition.eof", "auto.offset.reset")


@dataclass(frozen=True)
class Option:
    """One option: its type, default and check."""

    name: str
    kind: type | tuple[type, ...]
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    required: bool = False
    doc: str = ""


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)


def _one_char(v: str) -> str | None:
    return None if len(v) == 1 and v not in "\r\n" else "must be one character (not a line break)"


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _absolute_path(v: str) -> str | None:
    return None if os.path.isabs(v) else "must be an absolute path"


def _partitions(v: list) -> str | None:
    if not v or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in v):
        return "must be a non-empty list of partition numbers"
    return None if len(set(v)) == len(v) else "must not repeat a partition"


def _librdkafka(v: dict) -> str | None:
    for key, value in v.items():
        if key in RESERVED_LIBRDKAFKA:
            return f'"{key}" is set by the pipeline itself'
        if not isinstance(value, (str, int, float, bool)):
            return f'"{key}" must be a string, number or boolean'
    return None


COMMON_OPTIONS: tuple[Option, ...] = (
    Option("batch_size", int, 10000, _between(1, 1_000_000)),
    Option("max_latency", (int, float), 1.0, _between(0.001, 3600)),
    Option("max_errors", int, 100, _at_least(-1)),
    Option("max_record_bytes", int, 1 << 20, _between(1, 1 << 30)),
    Option("columns", (dict, list), None),
    Option("ignore_unknown_fields", bool, False),
    Option("epoch_unit", str, "s", _one_of("s", "ms", "us", "ns")),
    Option("header", bool, None),
    Option("delimiter", str, ",", _one_char),
    Option("quote", str, '"', _one_char),
    Option("null", str, ""),
)

SOURCE_OPTIONS: dict[str, tuple[Option, ...]] = {
    "kafka": (
        Option("bootstrap_servers", str, None, _non_empty, required=True),
        Option("topic", str, None, _non_empty, required=True),
        Option("partitions", list, None, _partitions),
        Option("consumer_group", str, None, _non_empty),
        Option("start_position", str, "earliest", _one_of("earliest", "latest")),
        Option("librdkafka", dict, None, _librdkafka),
    ),
    "s3": (
        Option("storage_target", str, None, _non_empty),
        Option("endpoint", str, None, _non_empty),
        Option("bucket", str, None, _non_empty),
        Option("prefix", str, ""),
        Option("pattern", str, "*", _non_empty),
        Option("region", str, None, _non_empty),
        Option("access_key_id", str, None),
        Option("secret_access_key", str, None),
        Option("session_token", str, None),
        Option("compression", str, "auto", _one_of("auto", "none", "gzip", "zstd")),
        Option("poll_interval", (int, float), 5.0, _between(0.01, 86400)),
    ),
    "file": (
        Option("directory", str, None, _absolute_path, required=True),
        Option("glob", str, "*", _non_empty),
        Option("follow", bool, True),
        Option("watch", str, "auto", _one_of("auto", "inotify", "poll")),
        Option("compression", str, "auto", _one_of("auto", "none", "gzip", "zstd")),
        Option("poll_interval", (int, float), 1.0, _between(0.01, 86400)),
    ),
}


class PipelineOptions(Mapping[str, Any]):
    """Checked options with their defaults filled in."""

    def __init__(self, source: str, format: str, values: dict[str, Any]):
        self.source = source
        self.format = format
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def csv_header(self) -> bool:
        """Whether CSV streams start with a header line."""
        header = self._values.get("header")
        return (self.source != "kafka") if header is None else bool(header)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", dict: "an object",
             list: "an array"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds:
        return "a number"
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def check_options(source: str, format: str, options: Mapping[str, Any] | None) -> PipelineOptions:
    """Check a pipeline's options and fill in the defaults.

    Raises:
        InvalidPipelineOptionError: an unknown source, format or option, a
            value of the wrong type or out of range, a required option
            missing, or options that do not go together.
    """
    if source not in SOURCES:
        raise InvalidPipelineOptionError(f'unknown pipeline source "{source}"',
                                         hint="The sources are " + ", ".join(SOURCES) + ".")
    if format not in FORMATS:
        raise InvalidPipelineOptionError(f'unknown pipeline format "{format}"',
                                         hint="The formats are " + ", ".join(FORMATS) + ".")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidPipelineOptionError("pipeline options must be a JSON object")
    table = {o.name: o for o in COMMON_OPTIONS + SOURCE_OPTIONS[source]}
    values: dict[str, Any] = {}
    for name, value in options.items():
        option = table.get(name)
        if option is None:
            raise InvalidPipelineOptionError(
                f'unknown option "{name}" for a {source} pipeline',
                hint="Valid options: " + ", ".join(sorted(table)) + ".")
        if value is None:
            continue
        kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise InvalidPipelineOptionError(
                f'option "{name}" must be {_type_name(option.kind)}, not {type(value).__name__} {value!r}')
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidPipelineOptionError(f'option "{name}" must be finite')
        problem = option.check(value) if option.check else None
        if problem:
            raise InvalidPipelineOptionError(f'option "{name}" {problem}, got {value!r}')
        values[name] = value
    for option in table.values():
        if option.name not in values:
            if option.required:
                raise InvalidPipelineOptionError(f'option "{option.name}" is required for a {source} pipeline')
            values[option.name] = option.default
    checked = PipelineOptions(source, format, values)
    _check_combinations(checked)
    return checked


def _check_combinations(options: PipelineOptions) -> None:
    source, format = options.source, options.format
    csv_only = [k for k in ("header", "delimiter", "quote", "null") if options[k] != _default(k)]
    if format != "csv" and csv_only:
        raise InvalidPipelineOptionError(f'option "{csv_only[0]}" applies to the csv format only')
    if format != "json" and format != "jsonl" and options["ignore_unknown_fields"]:
        raise InvalidPipelineOptionError('option "ignore_unknown_fields" applies to the json formats only')
    if source == "kafka" and format == "csv" and options.csv_header:
        raise InvalidPipelineOptionError(
            "a kafka pipeline cannot read a csv header",
            hint='Each message is one or more data lines: map columns by position ("columns": ["a", "b"]).')
    if format == "csv" and options["delimiter"] == options["quote"]:
        raise InvalidPipelineOptionError("the csv delimiter and quote must differ")
    if source == "s3":
        if options["storage_target"] is not None:
            raise InvalidPipelineOptionError(
                'option "storage_target" is not supported yet',
                hint='Storage targets come with tiered storage; name "endpoint", "bucket" and "prefix" instead.',
                sqlstate="0A000")
        if options["bucket"] is None:
            raise InvalidPipelineOptionError('option "bucket" is required for an s3 pipeline')
        if (options["access_key_id"] is None) != (options["secret_access_key"] is None):
            raise InvalidPipelineOptionError('options "access_key_id" and "secret_access_key" go together')
    if source == "file" and format == "json" and options["follow"]:
        raise InvalidPipelineOptionError(
            "a followed file cannot be read as one json document",
            hint='Use the jsonl format (one JSON value a line), or set "follow" to false.')


def _default(name: str) -> Any:
    for option in COMMON_OPTIONS:
        if option.name == name:
            return option.default
    raise KeyError(name)


def uses_ambient_credentials(options: PipelineOptions) -> bool:
    """Whether the pipeline reads with the sidecar's own access (server files,
    or S3 with the credentials of the sidecar's environment)."""
    if options.source == "file":
        return True
    return options.source == "s3" and options["access_key_id"] is None
