"""What object and file sources share: reading one byte stream from a
position into records, CSV headers, and whole JSON documents."""

from __future__ import annotations

from typing import Any, BinaryIO, Callable

from orochi_fdw.pipelines.decode import parse_csv_header
from orochi_fdw.pipelines.errors import RecordError
from orochi_fdw.pipelines.options import PipelineOptions
from orochi_fdw.pipelines.records import LineFramer, Record

DOCUMENT = "document"


def too_large(size: int, limit: int) -> RecordError:
    return RecordError(f"record of {size} bytes is larger than max_record_bytes ({limit})", "54000")


class StreamReader:
    """Reads the records of one stream (a file, an object) from a position.

    Attributes:
        position: where the stream stands after the records returned.
        finished: the end of a complete stream was reached.
        header: the CSV header (read at position 0, or fetched by
            ``read_header`` when starting further in).
    """

    def __init__(self, key: str, name: str, raw: BinaryIO, position: int, format: str,
                 options: PipelineOptions, final: bool, header: tuple[str, ...] | None,
                 read_header: Callable[[], tuple[str, ...] | None] | None = None):
        self.key = key
        self.name = name
        self.raw = raw
        self.format = format
        self.options = options
        self.limit = int(options["max_record_bytes"])
        self.final = final
        self.position = position
        self.finished = False
        self.header = header
        self._read_header = read_header
        self._wants_header = format == "csv" and options.csv_header
        quote = options["quote"].encode() if format == "csv" else None
        self.framer = LineFramer(raw, position, self.limit, quote)

    def read(self, max_records: int, out: list[Record]) -> int:
        """Append up to ``max_records`` records to ``out``; returns how many."""
        if self.format == "json":
            return self._read_document(out)
        if self._wants_header and self.header is None and self.position > 0 and self._read_header:
            self.header = self._read_header()
        count = 0
        while count < max_records:
            item = self.framer.next(self.final)
            if item is None:
                if self.final:
                    self.finished = True
                break
            start, end, data, oversize = item
            self.position = end
            if self._wants_header and self.header is None and start == 0:
                try:
                    self.header = parse_csv_header(data, self.options)
                except RecordError as exc:
                    out.append(Record(self.key, start, end, data, name=self.name, note="csv header", error=exc))
                    self.header = ()
                    count += 1
                continue
            if oversize:
                out.append(Record(self.key, start, end, data, end - start, name=self.name,
                                  error=too_large(end - start, self.limit)))
                count += 1
                continue
            if not data.strip():
                continue
            out.append(Record(self.key, start, end, data, name=self.name, header=self.header))
            count += 1
        return count

    def _read_document(self, out: list[Record]) -> int:
        """The whole stream as one JSON document (its records expanded later)."""
        if self.position > 0:  # read already
            self.finished = True
            return 0
        chunks = []
        size = 0
        while True:
            chunk = self.raw.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size <= self.limit:
                chunks.append(chunk)
        data = b"".join(chunks)
        self.position = size
        self.finished = True
        if size > self.limit:
            out.append(Record(self.key, 0, size, data[:self.limit], size, name=self.name,
                              error=too_large(size, self.limit)))
        else:
            out.append(Record(self.key, 0, size, data, name=self.name, note=DOCUMENT))
        return 1


def first_record(raw: BinaryIO, options: PipelineOptions) -> tuple[str, ...] | None:
    """The CSV header at the start of a stream."""
    quote = options["quote"].encode()
    framer = LineFramer(raw, 0, int(options["max_record_bytes"]), quote)
    item = framer.next(True)
    if item is None:
        return None
    try:
        return parse_csv_header(item[2], options)
    except RecordError:
        return ()


def expand_documents(records: list[Record], loads: Callable[[bytes], Any]) -> list[Record]:
    """Records of whole JSON documents replaced by one record per item."""
    if not any(r.note == DOCUMENT for r in records):
        return records
    out: list[Record] = []
    for record in records:
        if record.note != DOCUMENT or record.error is not None:
            out.append(record)
            continue
        try:
            doc = loads(record.data)
        except RecordError as exc:
            record.error = exc
            out.append(record)
            continue
        items = doc if type(doc) is list else [doc]
        for index, item in enumerate(items):
            out.append(Record(record.stream, record.position, record.end, b"", record.size if index == 0 else 0,
                              name=record.name,
                              note=f"item {index}", doc=item if item is not None else _NULL))
    return out


class _JsonNull:
    """A JSON null item of a document (``doc=None`` means "not decoded")."""


_NULL = _JsonNull()
