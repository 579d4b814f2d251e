"""Stripe files: the on-disk format of Orochi's columnar storage.

A stripe is one immutable file holding up to ~1M rows of one table. Its rows
are cut into *chunk groups* (10,000 rows by default); each column of a chunk
group is one *column chunk*, encoded by :mod:`orochi_fdw.storage.codecs` and
described in the footer by its codec, compression layer, row / NULL counts,
min / max, byte range and CRC-32. ``docs/FORMAT.md`` specifies every byte.

Layout (all integers little-endian)::

    header   16 bytes   magic "OROCSTRP", u16 version, u16 flags, u32 reserved
    chunks   ...        column chunk payloads, chunk group by chunk group
    footer   N bytes    schema, properties, chunk groups, chunk table, stats blob
    trailer  24 bytes   u32 N, u32 crc32(footer), u16 version, u16 flags,
                        u32 reserved, magic "OROCSTRP"

Writing goes to a temporary file in the target directory which is fsynced,
then linked into place under its final name (never replacing an existing
file), after which the directory is fsynced: a stripe file either exists
complete or not at all. Reading validates the magic, version, footer bounds
and checksum, every offset and count in the footer, and each chunk's CRC-32
before decoding it; failures raise :class:`~orochi_fdw.errors.CorruptDataError`
naming the file, and where it applies the column and chunk group.
"""

from __future__ import annotations

import collections
import errno
import functools
import os
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import lz4.block
import numpy as np

from orochi_fdw.errors import CorruptDataError, InvalidParameterError
from orochi_fdw.kernels import chunkread as _cr

try:
    # ISA-L's CRC-32: the very checksum zlib computes (the format's), about ten
    # times faster on column chunks; every chunk a scan reads is verified
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - without the optional accelerator
    from zlib import crc32
from orochi_fdw.storage.codecs import (
    CODECS,
    MAX_CHUNK_ROWS,
    ChunkStats,
    Codec,
    Compression,
    DictionaryChunk,
    codec_valid_for,
    decode_chunk,
    decode_dictionary_chunk,
    encode_chunk,
    resolve_compression,
)
from orochi_fdw.storage.kinds import (
    KINDS_BY_ID,
    ColumnData,
    Kind,
    VarBytes,
    concat_columns,
    get_kind,
    normalize_column,
)

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "DEFAULT_CHUNK_GROUP_ROWS",
    "DEFAULT_MAX_CHUNK_BYTES",
    "ColumnSpec",
    "ChunkMeta",
    "ChunkGroupInfo",
    "StripeMetadata",
    "StripeWriter",
    "StripeReader",
    "write_stripe",
    "read_stripe_metadata",
]

MAGIC = b"OROCSTRP"
FORMAT_VERSION = 1
DEFAULT_CHUNK_GROUP_ROWS = 10_000
#: A chunk group is cut early so that no variable-width column chunk holds
#: more than this many value bytes (a single larger value still gets its own
#: chunk group).
DEFAULT_MAX_CHUNK_BYTES = 64 << 20
#: Largest footer a reader accepts.
MAX_FOOTER_BYTES = 1 << 30

HEADER = struct.Struct("<8sHHI")
TRAILER = struct.Struct("<II HH I 8s")
FOOTER_HEAD = struct.Struct("<QIIII")

#: One entry of the footer's chunk table (72 bytes).
CHUNK_DTYPE = np.dtype([
    ("offset", "<u8"),
    ("length", "<u8"),
    ("raw_length", "<u8"),
    ("row_count", "<u4"),
    ("null_count", "<u4"),
    ("crc32", "<u4"),
    ("codec", "u1"),
    ("compression", "u1"),
    ("flags", "u1"),
    ("reserved", "u1"),
    ("min", "V16"),
    ("max", "V16"),
])
assert CHUNK_DTYPE.itemsize == 72

FLAG_HAS_MIN = 1
FLAG_HAS_MAX = 2
FLAG_MIN_TRUNCATED = 4
FLAG_MAX_TRUNCATED = 8
FLAG_HAS_NAN = 16
_KNOWN_FLAGS = 31
_VAR_SLOT = struct.Struct("<II")


# ------------------------------------------------------------ metadata types

@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """A column of a stripe.

    Attributes:
        name: Column name (unique within the stripe).
        kind: Logical kind (see :mod:`orochi_fdw.storage.kinds`).
        pg_type: PostgreSQL type name, informational (e.g. ``"jsonb"``).
        compression: Per-column override of the table's ``compression``
            setting, or ``None`` to inherit it (not stored in the file).
        compression_level: Per-column override of ``compression_level``.
    """

    name: str
    kind: str
    pg_type: str | None = None
    compression: str | None = None
    compression_level: int | None = None


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """Footer entry of one column chunk; usable as a header for decode_chunk."""

    column: str
    chunk_group: int
    offset: int
    length: int
    raw_length: int
    row_count: int
    null_count: int
    crc32: int
    codec: int
    compression: int
    stats: ChunkStats

    @property
    def stored_length(self) -> int:
        return self.length


@dataclass(frozen=True, slots=True)
class ChunkGroupInfo:
    """A chunk group: its index, first row within the stripe, and row count."""

    index: int
    first_row: int
    row_count: int


#: values a stripe's metadata keeps for its readers (:meth:`StripeMetadata.derived`)
DERIVED_ENTRIES = 32


@dataclass(frozen=True)
class StripeMetadata:
    """Everything the footer of a stripe file says."""

    path: str
    version: int
    row_count: int
    chunk_group_rows: int
    columns: tuple[ColumnSpec, ...]
    chunk_groups: tuple[ChunkGroupInfo, ...]
    chunks: tuple[tuple[ChunkMeta, ...], ...]   # [chunk group][column]
    properties: dict[str, str] = field(default_factory=dict)
    file_size: int = 0

    def column_index(self, name: str) -> int:
        i = self._column_positions.get(name)
        if i is not None:
            return i
        raise InvalidParameterError(
            f"column {name!r} is not in stripe {self.path}; columns: "
            + ", ".join(c.name for c in self.columns))

    @functools.cached_property
    def _column_positions(self) -> dict[str, int]:
        positions: dict[str, int] = {}
        for i, c in enumerate(self.columns):
            positions.setdefault(c.name, i)
        return positions

    @property
    def schema(self) -> dict[str, str]:
        """Column name -> kind, in column order."""
        return {c.name: c.kind for c in self.columns}

    def chunk(self, column: str, chunk_group: int) -> ChunkMeta:
        """Footer entry of one column chunk."""
        ci = self.column_index(column)
        if not 0 <= chunk_group < len(self.chunk_groups):
            raise InvalidParameterError(
                f"chunk group {chunk_group} out of range 0..{len(self.chunk_groups) - 1}")
        return self.chunks[chunk_group][ci]

    def column_stats(self, column: str) -> list[ChunkStats]:
        """Per chunk group statistics of one column (min, max, NULL count...)."""
        ci = self.column_index(column)
        return [group[ci].stats for group in self.chunks]

    def chunk_table(self, ci: int) -> "ChunkTable":
        """The footer entries of column ``ci``'s chunks, one array per field
        (indexed by chunk group), as the native column reader takes them."""
        table = self._chunk_tables.get(ci)
        if table is None:
            metas = [group[ci] for group in self.chunks]
            table = self._chunk_tables[ci] = ChunkTable(
                np.array([m.offset for m in metas], dtype=np.uint64),
                np.array([m.length for m in metas], dtype=np.uint64),
                np.array([m.raw_length for m in metas], dtype=np.uint64),
                np.array([m.crc32 for m in metas], dtype=np.uint32),
                np.array([m.codec for m in metas], dtype=np.uint8),
                np.array([m.compression for m in metas], dtype=np.uint8),
                np.array([m.row_count for m in metas], dtype=np.uint32),
                np.array([m.null_count for m in metas], dtype=np.uint32))
        return table

    @functools.cached_property
    def _chunk_tables(self) -> dict[int, "ChunkTable"]:
        return {}

    def derived(self, key: tuple, make: Callable[[], Any]) -> Any:
        """``make()``, worked out from this footer alone, kept with it (the
        footer is cached across readers) under ``key``, a hashable tuple
        whose first item names what it is: the bounds of a top-N's keys per
        chunk group (:mod:`~orochi_fdw.columnar.topn`), the chunk groups a
        filter's min / max leave (:mod:`~orochi_fdw.columnar.scan`). The
        most recent :data:`DERIVED_ENTRIES` are kept."""
        memo = self._derived
        found = memo.get(key)
        if found is None:
            found = memo[key] = make()
            if len(memo) > DERIVED_ENTRIES:
                del memo[next(iter(memo))]
        return found

    @functools.cached_property
    def _derived(self) -> dict:
        return {}


class ChunkTable(NamedTuple):
    """One column's footer entries as arrays (:meth:`StripeMetadata.chunk_table`)."""

    offsets: np.ndarray
    lengths: np.ndarray
    raw_lengths: np.ndarray
    crcs: np.ndarray
    codecs: np.ndarray
    compressions: np.ndarray
    rows: np.ndarray
    nulls: np.ndarray


# ------------------------------------------------------------------ helpers

def _normalize_schema(schema) -> tuple[ColumnSpec, ...]:
    if isinstance(schema, Mapping):
        items: Iterable = [
            v if isinstance(v, ColumnSpec) else ColumnSpec(name, v)
            for name, v in schema.items()]
    else:
        items = [c if isinstance(c, ColumnSpec) else ColumnSpec(*c) for c in schema]
    out = []
    seen = set()
    for c in items:
        if isinstance(c.kind, Kind):
            c = ColumnSpec(c.name, c.kind.name, c.pg_type, c.compression, c.compression_level)
        get_kind(c.kind)
        if not isinstance(c.name, str) or not c.name:
            raise InvalidParameterError("column names must be non-empty strings")
        if len(c.name.encode("utf-8")) > 0xFFFF or len((c.pg_type or "").encode("utf-8")) > 0xFFFF:
            raise InvalidParameterError(f"column name or type of {c.name[:40]!r} too long")
        if c.name in seen:
            raise InvalidParameterError(f"duplicate column {c.name!r}")
        seen.add(c.name)
        if c.compression is not None or c.compression_level is not None:
            resolve_compression(c.compression or "auto", c.compression_level)
        out.append(c)
    if not out:
        raise InvalidParameterError("a stripe needs at least one column")
    return tuple(out)


def _slice(col: ColumnData, k: Kind, start: int, end: int) -> ColumnData:
    validity = None if col.validity is None else col.validity[start:end]
    if k.physical == "var":
        offsets, data = col.values
        return ColumnData(VarBytes(offsets[start:end + 1], data), validity)
    return ColumnData(col.values[start:end], validity)


def _stats_slots(stats: ChunkStats, k: Kind, blob: bytearray) -> tuple[int, bytes, bytes]:
    flags = 0
    slots = [b"\0" * 16, b"\0" * 16]
    for i, (value, bit) in enumerate(((stats.min, FLAG_HAS_MIN), (stats.max, FLAG_HAS_MAX))):
        if value is None:
            continue
        flags |= bit
        if k.physical == "var":
            raw = _VAR_SLOT.pack(len(blob), len(value))
            blob += value
        elif k.physical == "fixed":
            raw = bytes(value)
        else:
            raw = np.array([value], dtype=k.dtype).tobytes()
        slots[i] = raw.ljust(16, b"\0")
    if not stats.min_exact:
        flags |= FLAG_MIN_TRUNCATED
    if not stats.max_exact:
        flags |= FLAG_MAX_TRUNCATED
    if stats.has_nan:
        flags |= FLAG_HAS_NAN
    return flags, slots[0], slots[1]


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


# ------------------------------------------------------------------- writer

class StripeWriter:
    """Write one stripe file, batch by batch.

    Example::

        with StripeWriter(path, {"ts": "timestamptz", "v": "float64"}) as w:
            w.write_batch({"ts": (ts, None), "v": (v, validity)})
        meta = w.metadata

    Args:
        path: Final path of the stripe file; it must not exist yet.
        schema: Mapping name -> kind (or :class:`ColumnSpec`), or a sequence
            of :class:`ColumnSpec` / ``(name, kind)`` pairs.
        chunk_group_rows: Rows per chunk group (the last may hold fewer, and
            a group is cut early when a variable-width chunk would exceed
            ``max_chunk_bytes``).
        compression: Table-wide ``compression`` setting; columns may override.
        compression_level: Table-wide ``compression_level``.
        properties: Small string key/value pairs stored in the footer (e.g.
            the table and stripe ids, to cross-check against the catalog).
        max_chunk_bytes: See ``chunk_group_rows``.

    Raises:
        InvalidParameterError: invalid schema or settings.
        FileExistsError: ``path`` already exists.
    """

    def __init__(self, path, schema, *, chunk_group_rows: int = DEFAULT_CHUNK_GROUP_ROWS,
                 compression: str | None = "auto", compression_level: int | None = None,
                 properties: Mapping[str, str] | None = None,
                 max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.columns = _normalize_schema(schema)
        self._kinds = [get_kind(c.kind) for c in self.columns]
        if not 1 <= int(chunk_group_rows) <= MAX_CHUNK_ROWS:
            raise InvalidParameterError(f"chunk_group_rows must be in 1..{MAX_CHUNK_ROWS}")
        if int(max_chunk_bytes) < 1:
            raise InvalidParameterError("max_chunk_bytes must be positive")
        self.chunk_group_rows = int(chunk_group_rows)
        self.max_chunk_bytes = int(max_chunk_bytes)
        table_setting = resolve_compression(compression, compression_level)
        self._settings = []
        for c in self.columns:
            if c.compression is None and c.compression_level is None:
                self._settings.append(table_setting)
            else:
                self._settings.append(resolve_compression(
                    c.compression or table_setting[0],
                    c.compression_level if c.compression_level is not None
                    else (table_setting[1] if c.compression is None else None)))
        self.properties = {str(k): str(v) for k, v in (properties or {}).items()}
        for k, v in self.properties.items():
            if len(k.encode()) > 0xFFFF or len(v.encode()) > 0xFFFFFFFF:
                raise InvalidParameterError(f"property {k[:40]!r} too long")
        if os.path.lexists(self.path):
            raise FileExistsError(errno.EEXIST, "stripe file already exists", self.path)
        directory, base = os.path.split(self.path)
        fd, self._tmp_path = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
        self._file = os.fdopen(fd, "wb")
        self._file.write(HEADER.pack(MAGIC, FORMAT_VERSION, 0, 0))
        self._pos = HEADER.size
        self._pending: list[list[ColumnData]] = [[] for _ in self.columns]
        self._pending_rows = 0
        self._group_rows: list[int] = []
        self._chunks: list[tuple[ChunkMeta, ...]] = []
        self._closed = False
        self.metadata: StripeMetadata | None = None

    def __enter__(self) -> "StripeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._closed:
                self.close()
        else:
            self.abort()

    def write_batch(self, columns: Mapping[str, Any]) -> None:
        """Append rows.

        Args:
            columns: name -> ``(values, validity)`` for every column of the
                schema, all with the same number of rows. ``values`` is an
                ndarray of the kind's dtype or, for variable-width kinds, an
                ``(offsets, data)`` pair; ``validity`` is ``None`` or a bool
                array (True = not NULL).
        """
        if self._closed:
            raise InvalidParameterError("stripe writer is closed")
        names = [c.name for c in self.columns]
        if set(columns) != set(names):
            missing = [n for n in names if n not in columns]
            extra = [n for n in columns if n not in names]
            raise InvalidParameterError(
                f"batch columns differ from the schema (missing {missing}, unknown {extra})")
        batch = []
        rows = None
        for c, k in zip(self.columns, self._kinds):
            item = columns[c.name]
            if isinstance(item, ColumnData):
                values, validity = item
            else:
                try:
                    values, validity = item
                except (TypeError, ValueError):
                    raise InvalidParameterError(
                        f"column {c.name!r}: expected a (values, validity) pair") from None
            try:
                values, validity, n = normalize_column(values, validity, k)
            except InvalidParameterError as exc:
                raise InvalidParameterError(f"column {c.name!r}: {exc}") from None
            if rows is None:
                rows = n
            elif n != rows:
                raise InvalidParameterError(
                    f"column {c.name!r} has {n} rows, expected {rows}")
            batch.append(ColumnData(values, validity))
        if not rows:
            return
        for pending, col in zip(self._pending, batch):
            pending.append(col)
        self._pending_rows += rows
        if self._pending_rows >= self.chunk_group_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if self._pending_rows == 0:
            return
        cols = [concat_columns(p, k) for p, k in zip(self._pending, self._kinds)]
        n = self._pending_rows
        start = 0
        while start < n:
            end = min(start + self.chunk_group_rows, n)
            for col, k in zip(cols, self._kinds):
                if k.physical == "var":
                    offsets = col.values.offsets
                    limit = int(np.searchsorted(
                        offsets, offsets[start] + self.max_chunk_bytes, side="right")) - 1
                    end = min(end, max(limit, start + 1))
            full = end - start == self.chunk_group_rows or end < n
            if not full and not final:
                break
            self._write_group([_slice(c, k, start, end) for c, k in zip(cols, self._kinds)],
                              end - start)
            start = end
        self._pending = [[_slice(c, k, start, n)] if start < n else []
                         for c, k in zip(cols, self._kinds)]
        self._pending_rows = n - start

    def _write_group(self, cols: list[ColumnData], rows: int) -> None:
        g = len(self._group_rows)
        metas = []
        for spec, k, (setting, level), col in zip(self.columns, self._kinds,
                                                  self._settings, cols):
            header, stored = encode_chunk(col.values, col.validity, k,
                                          compression=setting, compression_level=level)
            self._file.write(stored)
            metas.append(ChunkMeta(
                spec.name, g, self._pos, len(stored), header.raw_length, header.row_count,
                header.null_count, crc32(stored), header.codec, header.compression,
                header.stats))
            self._pos += len(stored)
        self._group_rows.append(rows)
        self._chunks.append(tuple(metas))

    def _footer(self) -> bytes:
        parts = [FOOTER_HEAD.pack(sum(self._group_rows), len(self.columns),
                                  len(self._group_rows), self.chunk_group_rows,
                                  len(self.properties))]
        for c, k in zip(self.columns, self._kinds):
            name = c.name.encode("utf-8")
            pg_type = (c.pg_type or "").encode("utf-8")
            parts.append(struct.pack("<BBH", k.id, 0, len(name)) + name
                         + struct.pack("<H", len(pg_type)) + pg_type)
        for key, value in self.properties.items():
            kb, vb = key.encode("utf-8"), value.encode("utf-8")
            parts.append(struct.pack("<H", len(kb)) + kb + struct.pack("<I", len(vb)) + vb)
        parts.append(np.array(self._group_rows, dtype="<u4").tobytes())
        table = np.zeros(len(self._group_rows) * len(self.columns), dtype=CHUNK_DTYPE)
        blob = bytearray()
        i = 0
        for group in self._chunks:
            for meta, k in zip(group, self._kinds):
                flags, mn, mx = _stats_slots(meta.stats, k, blob)
                table[i] = (meta.offset, meta.length, meta.raw_length, meta.row_count,
                            meta.null_count, meta.crc32, meta.codec, meta.compression,
                            flags, 0, mn, mx)
                i += 1
        parts.append(table.tobytes())
        parts.append(struct.pack("<I", len(blob)) + bytes(blob))
        return b"".join(parts)

    def close(self) -> StripeMetadata:
        """Finish the file: footer, fsync, link into place, fsync the directory.

        Returns:
            The stripe's :class:`StripeMetadata` (as a reader would parse it).
        """
        if self._closed:
            if self.metadata is None:
                raise InvalidParameterError("stripe writer was aborted")
            return self.metadata
        try:
            self._flush(final=True)
            footer = self._footer()
            if len(footer) > MAX_FOOTER_BYTES:
                raise InvalidParameterError("stripe footer too large; write fewer chunk groups")
            self._file.write(footer)
            self._file.write(TRAILER.pack(len(footer), crc32(footer), FORMAT_VERSION,
                                          0, 0, MAGIC))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        groups, first = [], 0
        for i, rows in enumerate(self._group_rows):
            groups.append(ChunkGroupInfo(i, first, rows))
            first += rows
        self.metadata = StripeMetadata(
            self.path, FORMAT_VERSION, first, self.chunk_group_rows,
            tuple(ColumnSpec(c.name, c.kind, c.pg_type) for c in self.columns),
            tuple(groups), tuple(self._chunks), dict(self.properties),
            self._pos + len(footer) + TRAILER.size)
        return self.metadata

    def _publish(self) -> None:
        try:
            os.link(self._tmp_path, self.path)        # fails if the target exists
        except FileExistsError:
            raise
        except OSError:
            # Filesystems without hard links: rename (checked not to clobber).
            if os.path.lexists(self.path):
                raise FileExistsError(errno.EEXIST, "stripe file already exists", self.path)
            os.rename(self._tmp_path, self.path)
        else:
            os.unlink(self._tmp_path)
        _fsync_dir(os.path.dirname(self.path))

    def abort(self) -> None:
        """Discard the stripe: close and remove the temporary file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        finally:
            try:
                os.unlink(self._tmp_path)
            except FileNotFoundError:
                pass


def write_stripe(path, schema, columns: Mapping[str, Any], **options) -> StripeMetadata:
    """Write one stripe file from whole columns; see :class:`StripeWriter`."""
    with StripeWriter(path, schema, **options) as writer:
        writer.write_batch(columns)
    return writer.metadata


# ------------------------------------------------------------------- reader

class _Cursor:
    __slots__ = ("buf", "pos", "where")

    def __init__(self, buf: bytes, where: str) -> None:
        self.buf = buf
        self.pos = 0
        self.where = where

    def take(self, n: int) -> bytes:
        if n < 0 or n > len(self.buf) - self.pos:
            raise CorruptDataError(f"{self.where}: footer truncated at offset {self.pos}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def text(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptDataError(f"{self.where}: invalid UTF-8 in footer") from None


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_COLUMN_HEAD = struct.Struct("<BBH")


def _decode_stat(slot: bytes, k: Kind, blob: bytes, where: str):
    if k.physical == "var":
        off, length = _VAR_SLOT.unpack(slot[:8])
        if off > len(blob) or length > len(blob) - off or any(slot[8:]):
            raise CorruptDataError(f"{where}: statistics outside the stats blob")
        return blob[off:off + length]
    if k.physical == "fixed":
        return bytes(slot)
    value = np.frombuffer(slot[:k.width], dtype=k.dtype)[0]
    if k.physical == "bool":
        if slot[0] > 1:
            raise CorruptDataError(f"{where}: invalid boolean statistic")
        return bool(value)
    return value.item()


def _parse_footer(footer: bytes, path: str, file_size: int, footer_start: int
                  ) -> StripeMetadata:
    cur = _Cursor(footer, path)
    rows, ncols, ngroups, group_rows, nprops = cur.unpack(FOOTER_HEAD)
    if ncols < 1 or ncols > len(footer) // 4:
        raise CorruptDataError(f"{path}: invalid column count {ncols}")
    if not 1 <= group_rows <= MAX_CHUNK_ROWS:
        raise CorruptDataError(f"{path}: invalid chunk group size {group_rows}")
    if ngroups * (4 + ncols * CHUNK_DTYPE.itemsize) > len(footer):
        raise CorruptDataError(f"{path}: chunk group count {ngroups} exceeds the footer")
    columns, kinds, names = [], [], set()
    for _ in range(ncols):
        kind_id, flags, name_len = cur.unpack(_COLUMN_HEAD)
        k = KINDS_BY_ID.get(kind_id)
        if k is None or flags != 0:
            raise CorruptDataError(f"{path}: unknown column kind {kind_id} or flags {flags}")
        name = cur.text(name_len)
        (type_len,) = cur.unpack(_U16)
        pg_type = cur.text(type_len) or None
        if not name or name in names:
            raise CorruptDataError(f"{path}: empty or duplicate column name {name!r}")
        names.add(name)
        columns.append(ColumnSpec(name, k.name, pg_type))
        kinds.append(k)
    properties = {}
    if nprops > len(footer) // 6:
        raise CorruptDataError(f"{path}: invalid property count {nprops}")
    for _ in range(nprops):
        (klen,) = cur.unpack(_U16)
        key = cur.text(klen)
        (vlen,) = cur.unpack(_U32)
        properties[key] = cur.text(vlen)
    group_counts = np.frombuffer(cur.take(4 * ngroups), dtype="<u4")
    if ngroups and (int(group_counts.min()) < 1 or int(group_counts.max()) > MAX_CHUNK_ROWS):
        raise CorruptDataError(f"{path}: chunk group row count out of range")
    if int(group_counts.sum(dtype=np.uint64)) != rows:
        raise CorruptDataError(f"{path}: chunk groups hold {int(group_counts.sum())} rows, "
                               f"footer says {rows}")
    table = np.frombuffer(cur.take(ngroups * ncols * CHUNK_DTYPE.itemsize), dtype=CHUNK_DTYPE)
    (blob_len,) = cur.unpack(_U32)
    blob = cur.take(blob_len)
    if cur.pos != len(footer):
        raise CorruptDataError(f"{path}: {len(footer) - cur.pos} unexpected bytes in footer")

    groups, chunks, first = [], [], 0
    for g in range(ngroups):
        grows = int(group_counts[g])
        groups.append(ChunkGroupInfo(g, first, grows))
        first += grows
        metas = []
        for c in range(ncols):
            e = table[g * ncols + c]
            k = kinds[c]
            where = f"{path}: column {columns[c].name!r}, chunk group {g}"
            offset, length, raw_length = int(e["offset"]), int(e["length"]), int(e["raw_length"])
            crow, nulls = int(e["row_count"]), int(e["null_count"])
            codec, comp, flags = int(e["codec"]), int(e["compression"]), int(e["flags"])
            if not (HEADER.size <= offset <= footer_start and length <= footer_start - offset):
                raise CorruptDataError(f"{where}: chunk bytes outside the data area")
            if crow != grows or nulls > crow:
                raise CorruptDataError(f"{where}: inconsistent row or NULL count")
            if not codec_valid_for(codec, k):
                raise CorruptDataError(f"{where}: codec {codec} invalid for kind {k.name}")
            if comp not in tuple(Compression) or (comp == Compression.NONE and raw_length != length):
                raise CorruptDataError(f"{where}: invalid compression {comp}")
            if flags & ~_KNOWN_FLAGS or int(e["reserved"]) != 0:
                raise CorruptDataError(f"{where}: unknown chunk flags {flags}")
            has_values = nulls < crow
            if (flags & (FLAG_HAS_MIN | FLAG_HAS_MAX) and not has_values) or (
                    flags & FLAG_HAS_NAN and k.physical != "float") or (
                    flags & (FLAG_MIN_TRUNCATED | FLAG_MAX_TRUNCATED) and k.physical != "var"):
                raise CorruptDataError(f"{where}: statistics flags {flags} invalid for the chunk")
            mn = _decode_stat(e["min"].tobytes(), k, blob, where) if flags & FLAG_HAS_MIN else None
            mx = _decode_stat(e["max"].tobytes(), k, blob, where) if flags & FLAG_HAS_MAX else None
            stats = ChunkStats(crow, nulls, mn, mx, not flags & FLAG_MIN_TRUNCATED,
                               not flags & FLAG_MAX_TRUNCATED, bool(flags & FLAG_HAS_NAN))
            metas.append(ChunkMeta(columns[c].name, g, offset, length, raw_length, crow, nulls,
                                   int(e["crc32"]), codec, comp, stats))
        chunks.append(tuple(metas))
    return StripeMetadata(path, FORMAT_VERSION, rows, group_rows, tuple(columns),
                          tuple(groups), tuple(chunks), properties, file_size)


def _read_exact(fd: int, n: int, offset: int, path: str) -> bytes:
    data = os.pread(fd, n, offset)
    while len(data) < n:
        more = os.pread(fd, n - len(data), offset + len(data))
        if not more:
            raise CorruptDataError(f"{path}: file ends early (wanted {n} bytes at {offset})")
        data += more
    return data


#: the native reader's number of each fixed-width physical kind
_PHYSICALS = _cr.PHYSICALS

#: parsed footers kept per process (least recently used dropped first)
FOOTER_CACHE_ENTRIES = 4096
_FOOTER_CACHE: "collections.OrderedDict[tuple, StripeMetadata]" = collections.OrderedDict()


class StripeReader:
    """Read a stripe file: validated metadata, projection, chunk group selection.

    Example::

        with StripeReader(path) as r:
            keep = [g.index for g, s in zip(r.chunk_groups, r.column_stats("ts"))
                    if s.max is None or s.max >= lower_bound]
            cols = r.read(["ts", "v"], chunk_groups=keep)

    Args:
        path: The stripe file.
        verify_checksums: Check each chunk's CRC-32 before decoding it.

    Raises:
        CorruptDataError: bad magic, version, footer or checksum.
        FileNotFoundError: no such file.
    """

    def __init__(self, path, *, verify_checksums: bool = True) -> None:
        self.path = os.fspath(path)
        self.verify_checksums = verify_checksums
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self.metadata = self._load_metadata()
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._kinds = [get_kind(c.kind) for c in self.metadata.columns]

    def _load_metadata(self) -> StripeMetadata:
        path = self.path
        st = os.fstat(self._fd)
        size = st.st_size
        # stripe files never change once written: a footer parsed (and its
        # checksum verified) once serves every later reader of the same file
        key = (path, st.st_dev, st.st_ino, size, st.st_mtime_ns)
        cached = _FOOTER_CACHE.get(key)
        if cached is not None:
            _FOOTER_CACHE.move_to_end(key)
            return cached
        metadata = self._read_metadata(path, size)
        _FOOTER_CACHE[key] = metadata
        if len(_FOOTER_CACHE) > FOOTER_CACHE_ENTRIES:
            _FOOTER_CACHE.popitem(last=False)
        return metadata

    def _read_metadata(self, path: str, size: int) -> StripeMetadata:
        if size < HEADER.size + TRAILER.size:
            raise CorruptDataError(f"{path}: file too short for a stripe ({size} bytes)")
        magic, version, flags, reserved = HEADER.unpack(
            _read_exact(self._fd, HEADER.size, 0, path))
        if magic != MAGIC:
            raise CorruptDataError(f"{path}: not a stripe file (bad magic {magic!r})")
        if version != FORMAT_VERSION:
            raise CorruptDataError(f"{path}: unsupported stripe format version {version}")
        if flags != 0 or reserved != 0:
            raise CorruptDataError(f"{path}: unknown header flags {flags:#x}/{reserved:#x}")
        flen, fcrc, tversion, tflags, treserved, tmagic = TRAILER.unpack(
            _read_exact(self._fd, TRAILER.size, size - TRAILER.size, path))
        if tmagic != MAGIC:
            raise CorruptDataError(f"{path}: bad trailer magic (truncated file?)")
        if tversion != version or tflags != 0 or treserved != 0:
            raise CorruptDataError(f"{path}: trailer version {tversion} differs from header")
        footer_start = size - TRAILER.size - flen
        if flen > MAX_FOOTER_BYTES or footer_start < HEADER.size:
            raise CorruptDataError(f"{path}: footer length {flen} out of bounds")
        footer = _read_exact(self._fd, flen, footer_start, path)
        if crc32(footer) != fcrc:
            raise CorruptDataError(f"{path}: footer checksum mismatch")
        return _parse_footer(footer, path, size, footer_start)

    def __enter__(self) -> "StripeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # Metadata shortcuts -----------------------------------------------------
    @property
    def row_count(self) -> int:
        return self.metadata.row_count

    @property
    def columns(self) -> tuple[ColumnSpec, ...]:
        return self.metadata.columns

    @property
    def schema(self) -> dict[str, str]:
        return self.metadata.schema

    @property
    def chunk_groups(self) -> tuple[ChunkGroupInfo, ...]:
        return self.metadata.chunk_groups

    @property
    def properties(self) -> dict[str, str]:
        return self.metadata.properties

    def column_stats(self, column: str) -> list[ChunkStats]:
        """Per chunk group min / max / NULL count of one column, for skipping."""
        return self.metadata.column_stats(column)

    # Data ------------------------------------------------------------------
    def read_chunk(self, column: str, chunk_group: int) -> ColumnData:
        """Read, verify and decode one column chunk.

        Raises:
            CorruptDataError: checksum mismatch or undecodable chunk, naming
                the file, column and chunk group.
        """
        if self._fd < 0:
            raise InvalidParameterError("stripe reader is closed")
        meta = self.metadata.chunk(column, chunk_group)
        k = self._kinds[self.metadata.column_index(column)]
        physical = _PHYSICALS.get(k.physical)
        if physical is not None:
            # read, verified and decoded by one native call, unless it declines
            # the chunk: then decode_chunk decodes it or says what is wrong
            rows = meta.row_count
            values = np.empty(rows, dtype=k.dtype)
            valid = np.empty(rows, dtype=np.uint8)
            if _cr.read_chunk(self._fd, crc32, self.verify_checksums, lz4.block.decompress, meta.offset,
                              meta.length, meta.raw_length, meta.crc32, meta.codec, meta.compression, rows,
                              meta.null_count, physical, k.width, values.view(np.uint8),
                              valid):
                return ColumnData(values, valid.view(np.bool_) if meta.null_count else None)
        return self._decoded(column, chunk_group, meta, decode_chunk)

    def read_column(self, column: str, chunk_groups: Sequence[int]
                    ) -> tuple[ColumnData, list[int], list[int]] | None:
        """Column ``column`` of ``chunk_groups`` (in that order) read, verified
        and decoded in one native call, rows back to back: (the column, the
        first row of each group and the total, each group's NULL count);
        None, reading nothing, for a variable-width column or no group.
        Errors as :meth:`read_chunk`'s."""
        if self._fd < 0:
            raise InvalidParameterError("stripe reader is closed")
        groups = self._selection([column], chunk_groups)[1]
        ci = self.metadata.column_index(column)
        if self._kinds[ci].physical == "var" or not groups:
            return None
        values, valid, starts = self._read_column(column, ci, groups)
        nulls = self.metadata.chunk_table(ci).nulls[groups].tolist()
        return (ColumnData(values, valid.view(np.bool_) if any(nulls) else None),
                starts.tolist(), nulls)

    def _read_column(self, column: str, ci: int, groups: list[int]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Column ``ci`` (fixed-width) of ``groups``, rows back to back:
        (values, validity as uint8 0/1, first row of each group and the total).
        The chunks the native reader declines (any it cannot decode, any that
        is not valid) go through :func:`decode_chunk`, which decodes them or
        raises the error naming what is wrong."""
        k = self._kinds[ci]
        t = self.metadata.chunk_table(ci)
        sel = np.asarray(groups, dtype=np.intp)
        rows = t.rows[sel]
        starts = np.zeros(len(sel) + 1, dtype=np.int64)
        np.cumsum(rows, out=starts[1:])
        total = int(starts[-1])
        values = np.empty(total, dtype=k.dtype)
        valid = np.empty(total, dtype=np.uint8)
        status = np.empty(len(sel), dtype=np.uint8)
        left = _cr.read_column(
            self._fd, crc32, self.verify_checksums, lz4.block.decompress, t.offsets[sel], t.lengths[sel],
            t.raw_lengths[sel], t.crcs[sel], t.codecs[sel], t.compressions[sel], rows, t.nulls[sel],
            starts[:-1], _cr.PHYSICALS[k.physical], k.width, values.view(np.uint8), valid, status)
        if left:
            for i in np.flatnonzero(status):
                a, b = int(starts[i]), int(starts[i + 1])
                # (declined natively already: straight to decode_chunk)
                chunk = self._decoded(column, groups[i], self.metadata.chunk(column, groups[i]), decode_chunk)
                values[a:b] = chunk.values
                valid[a:b] = 1 if chunk.validity is None else chunk.validity
        return values, valid, starts

    def read_dictionary(self, column: str, chunk_group: int) -> DictionaryChunk | None:
        """One column chunk in its dictionary form (:func:`decode_dictionary_chunk`),
        verified as :meth:`read_chunk` does; None, reading nothing, when the
        chunk is not DICTIONARY-coded (or holds only NULLs)."""
        if self._fd < 0:
            raise InvalidParameterError("stripe reader is closed")
        meta = self.metadata.chunk(column, chunk_group)
        if int(meta.codec) != Codec.DICTIONARY or meta.null_count == meta.row_count \
                or self._kinds[self.metadata.column_index(column)].physical != "var":
            return None
        # read, verified and decoded by one native call, unless it declines
        # the chunk: then decode_dictionary_chunk decodes it or says what is wrong
        found = _cr.read_dictionary(self._fd, crc32, self.verify_checksums, lz4.block.decompress, meta.offset,
                                    meta.length, meta.raw_length, meta.crc32, meta.codec, meta.compression,
                                    meta.row_count, meta.null_count)
        if found is not None:
            offsets, data, codes, validity = found
            return DictionaryChunk(VarBytes(offsets, data), codes, validity)
        return self._decoded(column, chunk_group, meta, decode_dictionary_chunk)

    def _decoded(self, column: str, chunk_group: int, meta, decode):
        """``decode(meta, bytes, kind)`` of one column chunk read and its
        checksum verified; errors name the file, column and chunk group."""
        k = self._kinds[self.metadata.column_index(column)]
        data = _read_exact(self._fd, meta.length, meta.offset, self.path)
        if self.verify_checksums and crc32(data) != meta.crc32:
            raise CorruptDataError(
                f"{self.path}: checksum mismatch in column {column!r}, chunk group {chunk_group}")
        try:
            return decode(meta, data, k)
        except CorruptDataError as exc:
            raise CorruptDataError(
                f"{self.path}: column {column!r}, chunk group {chunk_group}: {exc}") from exc

    def _selection(self, columns, chunk_groups) -> tuple[list[str], list[int]]:
        names = [c.name for c in self.columns] if columns is None else list(columns)
        for n in names:
            self.metadata.column_index(n)
        ngroups = len(self.chunk_groups)
        groups = list(range(ngroups)) if chunk_groups is None else [int(g) for g in chunk_groups]
        for g in groups:
            if not 0 <= g < ngroups:
                raise InvalidParameterError(f"chunk group {g} out of range 0..{ngroups - 1}")
        return names, groups

    def iter_chunk_groups(self, columns: Sequence[str] | None = None,
                          chunk_groups: Sequence[int] | None = None
                          ) -> Iterator[tuple[ChunkGroupInfo, dict[str, ColumnData]]]:
        """Yield ``(chunk group, {column: ColumnData})`` for the selection."""
        names, groups = self._selection(columns, chunk_groups)
        for g in groups:
            yield self.chunk_groups[g], {n: self.read_chunk(n, g) for n in names}

    def read(self, columns: Sequence[str] | None = None,
             chunk_groups: Sequence[int] | None = None) -> dict[str, ColumnData]:
        """Read the selected columns (default all) of the selected chunk groups
        (default all, in the order given), concatenated per column."""
        names, groups = self._selection(columns, chunk_groups)
        out = {}
        for n in names:
            ci = self.metadata.column_index(n)
            k = self._kinds[ci]
            found = self.read_column(n, groups)
            out[n] = concat_columns([self.read_chunk(n, g) for g in groups], k) if found is None else found[0]
        return out


def read_stripe_metadata(path, ) -> StripeMetadata:
    """Validate a stripe file's header, trailer and footer and return its metadata."""
    with StripeReader(path) as reader:
        return reader.metadata
