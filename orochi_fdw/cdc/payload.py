"""The content of the logical messages that carry an orochi table's changes.

The columnar write path emits, in the writing transaction, one transactional
logical message (prefix :data:`PREFIX`) per batch of changed rows; logical
decoding hands it to each subscription's slot at the transaction's commit,
in order with the heap tables' row changes, and drops it when the
transaction (or the savepoint it was written in) rolls back.

Layout (little-endian)::

    b"OCDC" | u8 version | u8 flags (1: body zstd-compressed) | u32 header length
    header: JSON {"op", "relid", "schema", "table", "rows",
                  "columns": [[name, type oid, typmod, wire kind], ...],
                  "sections": ["before" | "after", ...],
                  "buffers": [length, ...], "body": uncompressed body length}
    body: for each section, for each column: [validity bits], values, [offsets]

A column's buffers are the bridge's wire layout (orochi_fdw/bridge/batch.py):
validity packed one bit per row (present only when a row is NULL), the
values (fixed-width, or the bytes of variable-width values) and, for
variable-width kinds, int64 offsets (rows + 1, from 0).  Ops: ``c`` insert
(section ``after``), ``d`` delete (``before``: every column of the deleted
rows), ``u`` update (``before`` and ``after``, row i of one paired with row i
of the other), ``t`` truncate (no rows).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from orochi_fdw.bridge.batch import WIRE_DTYPES, Column, WireKind
from orochi_fdw.errors import CorruptDataError

PREFIX = "orochi.cdc"
MAGIC = b"OCDC"
VERSION = 1
_FLAG_ZSTD = 1
#: bodies larger than this are compressed
COMPRESS_ABOVE = 16 * 1024
_HEAD = struct.Struct("<4sBBI")


@dataclass(frozen=True)
class ColumnMeta:
    """A column of the changed table as the message describes it."""

    name: str
    type_oid: int
    typmod: int
    kind: WireKind


@dataclass
class Change:
    """One decoded message: the changed rows of one table.

    Attributes:
        op: ``c``, ``u``, ``d`` or ``t``.
        relid, schema, table: the table when the rows were written.
        columns: its columns, in order.
        rows: the number of rows (updates: of pairs).
        before, after: the columns of the old and new rows by name, or None.
    """

    op: str
    relid: int
    schema: str
    table: str
    columns: list[ColumnMeta]
    rows: int
    before: dict[str, Column] | None = None
    after: dict[str, Column] | None = None


def _column_buffers(col: Column, nrows: int) -> list[bytes]:
    """validity bits (empty when no NULL), values, offsets (variable width)."""
    if col.validity is not None and not np.all(col.validity):
        validity = np.packbits(np.asarray(col.validity, dtype=bool), bitorder="little").tobytes()
    else:
        validity = b""
    if col.kind.is_variable_width:
        offsets = np.asarray(col.offsets, dtype=np.int64)
        start, end = int(offsets[0]), int(offsets[-1])
        data = np.asarray(col.values, dtype=np.uint8)[start:end] if isinstance(col.values, np.ndarray) \
            else bytes(col.values)[start:end]
        if start:
            offsets = offsets - start
        return [validity, bytes(memoryview(data)), offsets.astype("<i8", copy=False).tobytes()]
    values = np.ascontiguousarray(col.values, dtype=WIRE_DTYPES[col.kind])
    if len(values) != nrows:
        raise ValueError(f"a column has {len(values)} values for {nrows} rows")
    return [validity, values.tobytes(), b""]


def encode(op: str, relid: int, schema: str, table: str, columns: Sequence[ColumnMeta], rows: int,
           before: Mapping[str, Column] | None = None, after: Mapping[str, Column] | None = None) -> bytes:
    """The message content for ``rows`` changed rows (see the module docstring)."""
    sections = []
    buffers: list[bytes] = []
    for label, cols in (("before", before), ("after", after)):
        if cols is None:
            continue
        sections.append(label)
        for meta in columns:
            col = cols.get(meta.name)
            if col is None:
                col = Column.from_pylist(meta.kind, [None] * rows)
            buffers += _column_buffers(col, rows)
    body = b"".join(buffers)
    header = {"op": op, "relid": int(relid), "schema": schema, "table": table, "rows": int(rows),
              "columns": [[c.name, int(c.type_oid), int(c.typmod), int(c.kind)] for c in columns],
              "sections": sections, "buffers": [len(b) for b in buffers], "body": len(body)}
    flags = 0
    if len(body) > COMPRESS_ABOVE:
        import zstandard

        body = zstandard.ZstdCompressor(level=1).compress(body)
        flags |= _FLAG_ZSTD
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(MAGIC, VERSION, flags, len(head)) + head + body


def decode(data: bytes | memoryview) -> Change:
    """A message's content as a :class:`Change`.

    Raises:
        CorruptDataError: not a message of this format, or truncated.
    """
    data = memoryview(data)
    if len(data) < _HEAD.size:
        raise CorruptDataError("a change message is shorter than its header")
    magic, version, flags, head_len = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise CorruptDataError(f"not an orochi change message (magic {bytes(magic)!r}, version {version})")
    try:
        header = json.loads(bytes(data[_HEAD.size:_HEAD.size + head_len]))
    except ValueError as exc:
        raise CorruptDataError(f"a change message's header is not JSON: {exc}") from None
    body = data[_HEAD.size + head_len:]
    if flags & _FLAG_ZSTD:
        import zstandard

        body = memoryview(zstandard.ZstdDecompressor().decompress(bytes(body),
                                                                   max_output_size=int(header["body"])))
    if len(body) != header["body"] or sum(header["buffers"]) != len(body):
        raise CorruptDataError("a change message's body does not have the length its header says")
    columns = [ColumnMeta(n, int(t), int(m), WireKind(int(k))) for n, t, m, k in header["columns"]]
    rows = int(header["rows"])
    change = Change(header["op"], int(header["relid"]), header["schema"], header["table"], columns, rows)
    lengths = iter(header["buffers"])
    pos = 0

    def take() -> memoryview:
        nonlocal pos
        n = next(lengths)
        out = body[pos:pos + n]
        pos += n
        return out

    for section in header["sections"]:
        cols: dict[str, Column] = {}
        for meta in columns:
            raw_validity, raw_values, raw_offsets = take(), take(), take()
            validity = None
            if len(raw_validity):
                validity = np.unpackbits(np.frombuffer(raw_validity, dtype=np.uint8), count=rows,
                                         bitorder="little")
            if meta.kind.is_variable_width:
                offsets = np.frombuffer(raw_offsets, dtype="<i8")
                if len(offsets) != rows + 1 or (rows and (offsets[0] != 0 or offsets[-1] != len(raw_values))):
                    raise CorruptDataError(f'column "{meta.name}" of a change message has bad offsets')
                cols[meta.name] = Column(meta.kind, np.frombuffer(raw_values, dtype=np.uint8), validity, offsets)
            else:
                values = np.frombuffer(raw_values, dtype=WIRE_DTYPES[meta.kind])
                if len(values) != rows:
                    raise CorruptDataError(f'column "{meta.name}" of a change message has {len(values)} values '
                                           f"for {rows} rows")
                cols[meta.name] = Column(meta.kind, values, validity)
        setattr(change, section, cols)
    return change
