"""pgoutput's logical replication messages (protocol version 1), as
``pg_logical_slot_peek_binary_changes`` returns them: one message per row.

Only what change capture needs is kept: Begin, Commit, Relation, Insert,
Update, Delete, Truncate and (transactional) Message; Origin and Type are
read past.  Tuple values are Postgres's text forms (pgoutput's default);
``None`` is NULL and :data:`UNCHANGED` a TOASTed value an update did not
change (so did not log).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from orochi_fdw.errors import CorruptDataError

#: a TOASTed value an UPDATE left alone (pgoutput's 'u')
UNCHANGED = object()

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")


@dataclass
class Begin:
    final_lsn: int      # the commit record's LSN
    commit_time: int    # microseconds since 2000-01-01
    xid: int


@dataclass
class Commit:
    commit_lsn: int
    end_lsn: int        # the end of the commit record: where the slot may move to
    commit_time: int


@dataclass
class RelationColumn:
    name: str
    type_oid: int
    typmod: int
    key: bool           # part of the replica identity


@dataclass
class Relation:
    relid: int
    schema: str
    table: str
    replica_identity: str
    columns: list[RelationColumn] = field(default_factory=list)


@dataclass
class RowChange:
    """Insert (``I``), Update (``U``) or Delete (``D``) of one heap row.

    ``old`` is the old key (``K``) or whole old row (``O``, REPLICA
    IDENTITY FULL) when pgoutput sent one; ``old_kind`` says which.
    """

    op: str
    relid: int
    new: list | None = None
    old: list | None = None
    old_kind: str | None = None


@dataclass
class Truncate:
    relids: list[int]
    cascade: bool
    restart_identity: bool


@dataclass
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: memoryview


class _Reader:
    __slots__ = ("buf", "raw", "pos")

    def __init__(self, buf: memoryview):
        self.buf = buf
        self.raw = buf.obj if isinstance(buf.obj, bytes) else bytes(buf)
        self.pos = 0

    def byte(self) -> str:
        b = self.buf[self.pos]
        self.pos += 1
        return chr(b)

    def int8(self) -> int:
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def int16(self) -> int:
        v = _I16.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return v

    def int32(self) -> int:
        v = _I32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def uint32(self) -> int:
        v = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def int64(self) -> int:
        v = _I64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def uint64(self) -> int:
        v = _U64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def string(self) -> str:
        end = self.raw.index(0, self.pos)
        s = self.raw[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s

    def take(self, n: int) -> memoryview:
        v = self.buf[self.pos:self.pos + n]
        if len(v) != n:
            raise CorruptDataError("a pgoutput message is truncated")
        self.pos += n
        return v

    def tuple(self) -> list:
        raw = self.raw
        pos = self.pos
        n = _I16.unpack_from(raw, pos)[0]
        pos += 2
        out: list = []
        append = out.append
        unpack = _I32.unpack_from
        end = len(raw)
        try:
            for _ in range(n):
                kind = raw[pos]
                pos += 1
                if kind == 116:  # 't'
                    length = unpack(raw, pos)[0]
                    pos += 4
                    if pos + length > end:
                        raise CorruptDataError("a pgoutput message is truncated")
                    append(raw[pos:pos + length].decode("utf-8"))
                    pos += length
                elif kind == 110:  # 'n'
                    append(None)
                elif kind == 117:  # 'u'
                    append(UNCHANGED)
                elif kind == 98:  # 'b'
                    length = unpack(raw, pos)[0]
                    pos += 4
                    if pos + length > end:
                        raise CorruptDataError("a pgoutput message is truncated")
                    append(raw[pos:pos + length])
                    pos += length
                else:
                    raise CorruptDataError(f"unknown pgoutput tuple value kind {chr(kind)!r}")
        finally:
            self.pos = pos
        return out


def parse(data: bytes | memoryview):
    """One pgoutput message as an object of this module (None for the kinds
    change capture does not use: Origin, Type).

    Raises:
        CorruptDataError: an unknown or truncated message.
    """
    r = _Reader(memoryview(data if isinstance(data, bytes) else bytes(data)))
    try:
        kind = r.byte()
        if kind == "B":
            return Begin(r.uint64(), r.int64(), r.uint32())
        if kind == "C":
            r.int8()
            return Commit(r.uint64(), r.uint64(), r.int64())
        if kind == "R":
            rel = Relation(r.uint32(), r.string(), r.string(), chr(r.int8()))
            for _ in range(r.int16()):
                flags = r.int8()
                rel.columns.append(RelationColumn(r.string(), r.uint32(), r.int32(), bool(flags & 1)))
            return rel
        if kind == "I":
            relid = r.uint32()
            r.byte()  # 'N'
            return RowChange("I", relid, new=r.tuple())
        if kind == "U":
            relid = r.uint32()
            which = r.byte()
            old = old_kind = None
            if which in ("K", "O"):
                old_kind, old = which, r.tuple()
                which = r.byte()
            if which != "N":
                raise CorruptDataError(f"pgoutput update without a new tuple ({which!r})")
            return RowChange("U", relid, new=r.tuple(), old=old, old_kind=old_kind)
        if kind == "D":
            relid = r.uint32()
            which = r.byte()
            return RowChange("D", relid, old=r.tuple(), old_kind=which)
        if kind == "T":
            n = r.int32()
            options = r.int8()
            return Truncate([r.uint32() for _ in range(n)], bool(options & 1), bool(options & 2))
        if kind == "M":
            flags = r.int8()
            lsn = r.uint64()
            prefix = r.string()
            length = r.int32()
            return Message(bool(flags & 1), lsn, prefix, r.take(length))
        if kind in ("O", "Y"):
            return None
    except (IndexError, ValueError, struct.error) as exc:
        raise CorruptDataError(f"a pgoutput message is malformed: {exc}") from None
    raise CorruptDataError(f"unknown pgoutput message {kind!r}")
