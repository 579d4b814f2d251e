"""Options of columnar tables: what each accepts, and the settings they
resolve to.

=====================  ==================  ============================================
option                 where               meaning
=====================  ==================  ============================================
``compression``        server, table,      ``auto`` (a light-weight codec chosen from
                       column              the data, then lz4 when it pays), ``none``,
                                           ``lz4`` or ``zstd``; default ``auto``
``compression_level``  server, table,      lz4: 1..12 (high-compression mode), zstd:
                       column              -7..22; default: the codec's own
``stripe_row_limit``   server, table       rows per stripe file, at most 1,000,000
                                           (the default)
``chunk_group_size``   server, table       rows per chunk group, default 10,000
``delta_row_limit``    server, table       INSERT statements of at most this many rows
                                           go to the delta store (a heap table);
                                           larger ones write stripes; 0: never;
                                           default 10,000
``stripe_sketches``    server, table       ``true``: every stripe written keeps a
                                           HyperLogLog sketch of each column, which
                                           orochi.approx_count_distinct / hll_agg
                                           over the whole table merge instead of
                                           reading the stripe; default ``false``
``data_dir``           server              absolute path of the folder holding the
                                           stripe files; default ``orochi`` inside
                                           the PostgreSQL data directory
=====================  ==================  ============================================

A table option overrides the server's, a column option the table's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from orochi_fdw.bridge.api import ColumnDefinition, OptionSpec
from orochi_fdw.errors import InvalidOptionValueError, InvalidParameterError
from orochi_fdw.storage.codecs import COMPRESSION_SETTINGS, resolve_compression

DEFAULT_STRIPE_ROW_LIMIT = 1_000_000
MAX_STRIPE_ROW_LIMIT = 1_000_000
DEFAULT_CHUNK_GROUP_SIZE = 10_000
DEFAULT_DELTA_ROW_LIMIT = 10_000
MAX_DELTA_ROW_LIMIT = 1_000_000
MAX_CHUNK_GROUP_SIZE = 1_000_000


def _bounded_int(low: int, high: int):
    def parse(value: str) -> int:
        try:
            n = int(value.strip())
        except ValueError:
            raise ValueError("not an integer") from None
        if not low <= n <= high:
            raise ValueError(f"must be between {low} and {high}")
        return n

    return parse


def _level(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("not an integer") from None


def _absolute_path(value: str) -> str:
    if not os.path.isabs(value):
        raise ValueError("must be an absolute path")
    return os.path.normpath(value)


_COMPRESSION = OptionSpec(str, "auto, none, lz4 or zstd", choices=COMPRESSION_SETTINGS)
_LEVEL = OptionSpec(_level, "level of the lz4 (1..12) or zstd (-7..22) compression")
_STRIPE_ROWS = OptionSpec(_bounded_int(1, MAX_STRIPE_ROW_LIMIT), "rows per stripe file")
_CHUNK_ROWS = OptionSpec(_bounded_int(1, MAX_CHUNK_GROUP_SIZE), "rows per chunk group")
_DELTA_ROWS = OptionSpec(_bounded_int(0, MAX_DELTA_ROW_LIMIT),
                         "INSERT statements of at most this many rows go to the delta store")

def _boolean(value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "on", "yes", "1"):
        return True
    if v in ("false", "off", "no", "0"):
        return False
    raise ValueError("not a boolean")


_TABLE_OPTIONS = {
    "compression": _COMPRESSION,
    "compression_level": _LEVEL,
    "stripe_row_limit": _STRIPE_ROWS,
    "chunk_group_size": _CHUNK_ROWS,
    "delta_row_limit": _DELTA_ROWS,
    "stripe_sketches": OptionSpec(_boolean, "whether stripes keep HyperLogLog sketches of their columns"),
}

OPTIONS_SPEC: Mapping[str, Mapping[str, OptionSpec]] = {
    "server": {**_TABLE_OPTIONS, "data_dir": OptionSpec(_absolute_path, "folder of the stripe files")},
    "table": dict(_TABLE_OPTIONS),
    "column": {"compression": _COMPRESSION, "compression_level": _LEVEL},
}


@dataclass(frozen=True)
class ColumnSettings:
    """Compression of one column, or None to inherit the table's."""

    compression: str | None = None
    compression_level: int | None = None


@dataclass(frozen=True)
class TableSettings:
    """The settings a columnar table's options resolve to."""

    compression: str = "auto"
    compression_level: int | None = None
    stripe_row_limit: int = DEFAULT_STRIPE_ROW_LIMIT
    chunk_group_size: int = DEFAULT_CHUNK_GROUP_SIZE
    delta_row_limit: int = DEFAULT_DELTA_ROW_LIMIT
    data_dir: str | None = None
    columns: Mapping[str, ColumnSettings] = None  # type: ignore[assignment]
    stripe_sketches: bool = False


def _parse(kind: str, options: Mapping[str, str], where: str = "") -> dict[str, Any]:
    """Options known at ``kind`` parsed (others are ignored).

    Raises:
        InvalidOptionValueError: a value of the wrong type or not allowed.
    """
    spec = OPTIONS_SPEC[kind]
    out = {}
    for name, value in options.items():
        option = spec.get(name)
        if option is None:
            continue
        if option.choices is not None and value not in option.choices:
            raise InvalidOptionValueError(
                f'invalid value for option "{name}"{where}: "{value}" (expected one of {", ".join(option.choices)})')
        try:
            out[name] = option.parse(value)
        except ValueError as exc:
            raise InvalidOptionValueError(f'invalid value for option "{name}"{where}: "{value}" ({exc})') from None
    return out


def _check_compression(compression: str, level: int | None, where: str) -> None:
    try:
        resolve_compression(compression, level)
    except InvalidParameterError as exc:
        raise InvalidOptionValueError(f"invalid compression options {where}: {exc}") from None


def resolve(options: Mapping[str, str], columns: Mapping[str, ColumnDefinition]) -> TableSettings:
    """Settings from a table's merged server and table options (table wins)
    and its columns' options, checked together.

    Raises:
        InvalidOptionValueError: a value of the wrong type or out of range, or
            a compression_level that does not fit its compression.
    """
    parsed = _parse("server", options)
    compression = parsed.get("compression", "auto")
    level = parsed.get("compression_level")
    _check_compression(compression, level, "of the table")
    cols = {}
    for name, col in columns.items():
        if not col.options:
            continue
        c = _parse("column", col.options, f' of column "{name}"')
        settings = ColumnSettings(c.get("compression"), c.get("compression_level"))
        if settings.compression is not None or settings.compression_level is not None:
            effective = settings.compression or compression
            eff_level = settings.compression_level if settings.compression_level is not None else (
                level if settings.compression is None else None)
            _check_compression(effective, eff_level, f'of column "{name}"')
        cols[name] = settings
    return TableSettings(
        compression=compression,
        compression_level=level,
        stripe_row_limit=parsed.get("stripe_row_limit", DEFAULT_STRIPE_ROW_LIMIT),
        chunk_group_size=parsed.get("chunk_group_size", DEFAULT_CHUNK_GROUP_SIZE),
        delta_row_limit=parsed.get("delta_row_limit", DEFAULT_DELTA_ROW_LIMIT),
        data_dir=parsed.get("data_dir"),
        columns=cols,
        stripe_sketches=parsed.get("stripe_sketches", False),
    )
