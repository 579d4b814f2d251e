"""Records to rows: parse each record (JSON, CSV) and map it with the
:class:`~orochi_fdw.pipelines.mapping.Mapper`; a record that fails becomes a
:class:`~orochi_fdw.pipelines.errors.RecordError` in its place."""

from __future__ import annotations

import csv
from typing import Any, Mapping, Sequence

from orochi_fdw.pipelines.errors import RecordError
from orochi_fdw.pipelines.mapping import Mapper, json_loader
from orochi_fdw.pipelines.records import Record


def split_json_document(doc: Any) -> list[Any]:
    """The records of one JSON document: the items of a top-level array, or
    the document itself."""
    return doc if type(doc) is list else [doc]


def parse_csv_header(data: bytes, options: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of a CSV header line.

    Raises:
        RecordError: not valid UTF-8 or not one CSV record.
    """
    fields = _csv_fields(data, options["delimiter"], options["quote"])
    return tuple(f.strip() for f in fields)


def _csv_fields(data: bytes, delimiter: str, quote: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f'invalid byte sequence for encoding "UTF8" at byte {exc.start}', "22021") from None
    try:
        rows = list(csv.reader([text],
                               delimiter=delimiter, quotechar=quote, strict=True))
    except csv.Error as exc:
        raise RecordError(f"invalid CSV: {exc}", "22P04") from None
    if len(rows) != 1:
        raise RecordError("invalid CSV: not one record", "22P04")
    return rows[0]


class Decoder:
    """Decodes the records of one pipeline."""

    def __init__(self, format: str, mapper: Mapper, options: Mapping[str, Any]):
        self.format = format
        self.mapper = mapper
        self.delimiter = options.get("delimiter", ",")
        self.quote = options.get("quote", '"')
        self._loads = json_loader(mapper.exact_numbers)

    def rows(self, records: Sequence[Record]) -> list[tuple | RecordError]:
        """One row or one error per record, in order."""
        out: list[tuple | RecordError] = []
        append = out.append
        if self.format == "csv":
            mapper_row = self.mapper.csv_row
            delimiter, quote = self.delimiter, self.quote
            for record in records:
                if record.error is not None:
                    append(record.error)
                    continue
                try:
                    append(mapper_row(_csv_fields(record.data, delimiter, quote), record.header))
                except RecordError as exc:
                    append(exc)
            return out
        loads = self._loads
        errors: dict[int, RecordError] = {}
        try:
            docs = [r.doc if r.doc is not None else loads(r.data) for r in records if r.error is None]
            if len(docs) != len(records):
                raise RecordError("some records were refused already")
        except RecordError:
            docs = []
            for i, record in enumerate(records):
                if record.error is not None:
                    errors[i] = record.error
                    docs.append(None)
                    continue
                try:
                    docs.append(record.doc if record.doc is not None else loads(record.data))
                except RecordError as exc:
                    errors[i] = exc
                    docs.append(None)
        rows: list[tuple | RecordError] = self.mapper.json_rows(docs, errors)  # type: ignore[assignment]
        for i, exc in errors.items():
            rows[i] = exc
        return rows
