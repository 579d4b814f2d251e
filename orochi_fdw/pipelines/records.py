"""Records as the sources deliver them, and cutting byte streams into them.

A :class:`Record` is one message (Kafka) or one line / CSV record (objects,
files), with where it starts and where the stream stands after it.  The
positions are what the catalog stores: a Kafka offset, or a byte offset in
the (decompressed) object or file.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from orochi_fdw.pipelines.errors import RecordError


class Record:
    """One record of a source.

    Attributes:
        stream: the stream it comes from (a partition, an object key, a file id).
        position: where it starts (an offset, or a byte offset).
        end: the stream's position after it.
        data: its bytes (without the line break); the first ``max_record_bytes``
            only when ``error`` says it is too large.
        size: its size in bytes.
        name: the object key or file path, for dead letters.
        note: where inside its message it was (``line 2``), for dead letters.
        error: a framing error (too large) found before decoding.
        header: the CSV header of its stream, when the stream has one.
        doc: an already-decoded JSON value (records of one JSON document).
    """

    __slots__ = ("stream", "position", "end", "data", "size", "name", "note", "error", "header", "doc")

    def __init__(self, stream: str, position: int, end: int, data: bytes, size: int | None = None,
                 name: str | None = None, note: str | None = None, error: RecordError | None = None,
                 header: tuple[str, ...] | None = None, doc: object = None):
        self.stream = stream
        self.position = position
        self.end = end
        self.data = data
        self.size = len(data) if size is None else size
        self.name = name
        self.note = note
        self.error = error
        self.header = header
        self.doc = doc

    def __repr__(self) -> str:
        return f"Record({self.stream!r}, {self.position}, {self.end}, {self.data[:40]!r})"


@dataclass
class StreamState:
    """Where one stream stands.

    Attributes:
        stream: its key (``pipeline_positions.stream``).
        position: the next record's position.
        end: the stream's end as last seen (high watermark, size), or None.
        done: read to its end; nothing more will come.
        name: the object key / file path.
        identity: the object's ETag.
    """

    stream: str
    position: int
    end: int | None = None
    done: bool = False
    name: str | None = None
    identity: str | None = None

    def copy(self) -> "StreamState":
        return StreamState(self.stream, self.position, self.end, self.done, self.name, self.identity)


@dataclass
class Fetch:
    """What one fetch brought.

    Attributes:
        records: the records, in stream order within each stream.
        streams: every stream whose state changed (position, end, done, name),
            as it stands once every record of it in ``records`` is loaded.
        forget: streams gone from the source (deleted files, objects).
        caught_up: the source had nothing more when the fetch ended.
    """

    records: list[Record] = field(default_factory=list)
    streams: dict[str, StreamState] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)
    caught_up: bool = False


# ---------------------------------------------------------------- compression

def compression_of(name: str, setting: str) -> str:
    """The compression of an object or file: the setting, or by suffix."""
    if setting != "auto":
        return setting
    lowered = name.lower()
    if lowered.endswith((".gz", ".gzip")):
        return "gzip"
    if lowered.endswith((".zst", ".zstd")):
        return "zstd"
    return "none"


def decompressing(raw: BinaryIO, compression: str) -> BinaryIO:
    """A readable stream of the decompressed bytes of ``raw``."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    return raw


def skip(stream: BinaryIO, count: int) -> int:
    """Read and drop ``count`` bytes; returns how many were there."""
    left = count
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        left -= len(chunk)
    return count - left


# ---------------------------------------------------------------- framing

class LineFramer:
    """Cuts a byte stream into records at line breaks.

    A CSV record may hold line breaks inside quotes: with ``quote`` given, a
    line break ends a record only when the record holds an even number of
    quote characters so far.  A record longer than ``limit`` is returned
    cut to ``limit`` bytes, flagged ``oversize``, and its end is still found.
    At the end of the stream, an unterminated last record is returned when
    ``final`` (the stream is complete), else kept until more arrives.

    ``position`` is the offset of the first byte not yet returned.
    """

    CHUNK = 1 << 16

    def __init__(self, raw: BinaryIO, position: int, limit: int, quote: bytes | None = None):
        self.raw = raw
        self.position = position       # offset of buf[0]
        self.limit = limit
        self.quote = quote
        self.buf = b""
        self.scan = 0                  # bytes of buf known to hold no record end
        self.quotes = 0                # quote characters in buf[:scan]
        self.oversize_prefix: bytes | None = None  # first bytes of a record being skipped
        self.oversize_start = 0
        self.eof = False

    def _fill(self) -> bool:
        chunk = self.raw.read(self.CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def next(self, final: bool) -> tuple[int, int, bytes, bool] | None:
        """The next record: (start, end, data, oversize), or None when there
        is no complete record (yet)."""
        while True:
            newline = self.buf.find(b"\n", self.scan)
            while newline >= 0 and self.quote is not None:
                self.quotes += self.buf.count(self.quote, self.scan, newline)
                self.scan = newline + 1
                if self.quotes % 2 == 0:
                    break
                newline = self.buf.find(b"\n", self.scan)
            if newline >= 0:
                return self._take(newline + 1, newline)
            if self.quote is not None:
                self.quotes += self.buf.count(self.quote, self.scan)
            self.scan = len(self.buf)
            if len(self.buf) > self.limit:
                self._start_skipping()
            if not self.eof and self._fill():
                continue
            if final and (self.buf or self.oversize_prefix is not None):
                return self._take(len(self.buf), len(self.buf))
            if final:
                return None
            self.eof = False  # more may be appended later
            return None

    def _start_skipping(self) -> None:
        """Keep only the first ``limit`` bytes of a too-large record."""
        if self.oversize_prefix is None:
            self.oversize_prefix = self.buf[:self.limit]
            self.oversize_start = self.position
        self.position += len(self.buf)
        self.buf = b""
        self.scan = 0

    def _take(self, consumed: int, stop: int) -> tuple[int, int, bytes, bool]:
        data = self.buf[:stop]
        if data.endswith(b"\r"):
            data = data[:-1]
        self.buf = self.buf[consumed:]
        self.scan = 0
        self.quotes = 0
        if self.oversize_prefix is not None:
            start = self.oversize_start
            prefix = self.oversize_prefix
            self.oversize_prefix = None
            self.position += consumed
            return start, self.position, prefix, True
        start = self.position
        self.position += consumed
        if len(data) > self.limit:
            return start, self.position, data[:self.limit], True
        return start, self.position, data, False


def frame_bytes(data: bytes, start: int, limit: int, quote: bytes | None, final: bool = True
                ) -> Iterator[tuple[int, int, bytes, bool]]:
    """Every record of an in-memory buffer (as :class:`LineFramer` cuts them)."""
    framer = LineFramer(io.BytesIO(data), start, limit, quote)
    while True:
        item = framer.next(final)
        if item is None:
            return
        yield item
