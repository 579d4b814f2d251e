"""Column batches: how rows cross the bridge in bulk.

A wrapper's ``execute`` may yield :class:`Batch` objects instead of rows. A
batch holds a row count and, per column, numpy buffers in the *wire* layout
the C bridge writes straight into Postgres Datums (see :class:`WireKind`):
fixed-width values as a numpy array, variable-width values (text, bytea and
anything converted through a type's text form) as ``offsets`` (int64, one
more than the rows) into a ``uint8`` data buffer, and NULLs as a ``validity``
array (nonzero = a value is present).

Convenience inputs are accepted and converted once per batch, vectorized:
numpy arrays of any numeric or datetime64 dtype, masked arrays, and Python
lists (the slow path, for tests and small wrappers).

Example:
    >>> import numpy as np
    >>> b = Batch(3, {"id": np.arange(3), "name": ["a", None, "c"]})
    >>> b.nrows
    3
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from orochi_fdw.bridge.types import Interval
from orochi_fdw.errors import WrapperError

#: seconds between 1970-01-01 and 2000-01-01, Postgres's epoch for dates and times
PG_EPOCH_SECONDS = 946_684_800
PG_EPOCH_DAYS = 10_957
PG_EPOCH_DATE = datetime.date(2000, 1, 1)
PG_EPOCH_DATETIME = datetime.datetime(2000, 1, 1)
PG_EPOCH_DATETIME_UTC = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


class WireKind(enum.IntEnum):
    """Layout of one batch column; the numbers are the C bridge's."""

    BOOL = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    FLOAT32 = 5
    FLOAT64 = 6
    DATE = 7  #: int32 days since 2000-01-01
    TIMESTAMP = 8  #: int64 microseconds since 2000-01-01 (UTC for timestamptz)
    TIME = 9  #: int64 microseconds since midnight
    INTERVAL = 10  #: 16 bytes: int64 microseconds, int32 days, int32 months
    UUID = 11  #: 16 bytes
    TEXT = 12  #: offsets + UTF-8 bytes
    BYTEA = 13  #: offsets + raw bytes
    CSTRING = 14  #: offsets + UTF-8 text form, through the type's input function
    #: int64: a numeric(p, s) value times 10^s (NaN: int64 max). Only between
    #: Orochi's scans, filters and aggregates: ``batch_to_wire`` hands it to
    #: the bridge as CSTRING (orochi_fdw.columnar.types.decimal_to_cstring).
    DECIMAL64 = 64

    @property
    def is_variable_width(self) -> bool:
        return self in (WireKind.TEXT, WireKind.BYTEA, WireKind.CSTRING)


INTERVAL_DTYPE = np.dtype([("time", "<i8"), ("day", "<i4"), ("month", "<i4")])

#: numpy dtype of the values buffer of each fixed-width kind
WIRE_DTYPES: dict[WireKind, np.dtype] = {
    WireKind.BOOL: np.dtype(np.uint8),
    WireKind.INT16: np.dtype("<i2"),
    WireKind.INT32: np.dtype("<i4"),
    WireKind.INT64: np.dtype("<i8"),
    WireKind.FLOAT32: np.dtype("<f4"),
    WireKind.FLOAT64: np.dtype("<f8"),
    WireKind.DATE: np.dtype("<i4"),
    WireKind.TIMESTAMP: np.dtype("<i8"),
    WireKind.TIME: np.dtype("<i8"),
    WireKind.INTERVAL: INTERVAL_DTYPE,
    WireKind.UUID: np.dtype("V16"),
    WireKind.DECIMAL64: np.dtype("<i8"),
}

# Postgres type oids with a direct wire kind; every other type is CSTRING.
_TYPE_WIRE: dict[int, WireKind] = {
    16: WireKind.BOOL,
    21: WireKind.INT16,
    23: WireKind.INT32,
    20: WireKind.INT64,
    700: WireKind.FLOAT32,
    701: WireKind.FLOAT64,
    1082: WireKind.DATE,
    1114: WireKind.TIMESTAMP,
    1184: WireKind.TIMESTAMP,
    1083: WireKind.TIME,
    1186: WireKind.INTERVAL,
    2950: WireKind.UUID,
    25: WireKind.TEXT,
    1043: WireKind.TEXT,
    17: WireKind.BYTEA,
}


def wire_kind_for_type(type_oid: int) -> WireKind:
    """The wire kind the bridge expects for a Postgres type."""
    return _TYPE_WIRE.get(type_oid, WireKind.CSTRING)


@dataclass(frozen=True)
class Column:
    """One column of a batch in wire layout.

    Attributes:
        kind: the layout.
        values: fixed-width values (dtype of ``WIRE_DTYPES[kind]``), or the
            ``uint8`` data buffer of a variable-width column.
        validity: ``uint8``/bool per row, nonzero where a value is present;
            None when every row has a value.
        offsets: int64, rows + 1 entries, for variable-width kinds.
    """

    kind: WireKind
    values: np.ndarray
    validity: np.ndarray | None = None
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        if self.kind.is_variable_width:
            return len(self.offsets) - 1
        return len(self.values)

    def null_mask(self) -> np.ndarray:
        """Boolean array, True where the row is NULL."""
        if self.validity is None:
            return np.zeros(len(self), dtype=bool)
        return self.validity == 0

    def to_pylist(self) -> list:
        """Python values (slow; for tests and small results)."""
        return [_to_python(self, i) for i in range(len(self))]

    @classmethod
    def from_pylist(cls, kind: WireKind, values: Sequence[Any]) -> "Column":
        """Build a column from Python values (None is NULL)."""
        return _column_from_sequence(kind, values)


def _to_python(col: Column, i: int) -> Any:
    if col.validity is not None and not col.validity[i]:
        return None
    k = col.kind
    if k.is_variable_width:
        raw = col.values[col.offsets[i] : col.offsets[i + 1]].tobytes()
        return raw if k is WireKind.BYTEA else raw.decode("utf-8")
    v = col.values[i]
    if k is WireKind.BOOL:
        return bool(v)
    if k in (WireKind.FLOAT32, WireKind.FLOAT64):
        return float(v)
    if k is WireKind.DATE:
        return PG_EPOCH_DATE + datetime.timedelta(days=int(v))
    if k is WireKind.TIMESTAMP:
        return PG_EPOCH_DATETIME + datetime.timedelta(microseconds=int(v))
    if k is WireKind.TIME:
        return (datetime.datetime.min + datetime.timedelta(microseconds=int(v))).time()
    if k is WireKind.INTERVAL:
        return Interval(int(v["month"]), int(v["day"]), int(v["time"]))
    if k is WireKind.UUID:
        return uuid.UUID(bytes=v.tobytes())
    return int(v)


def _encode_text(values: Iterable[Any], kind: WireKind) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    parts: list[bytes] = []
    valid: list[int] = []
    for v in values:
        if v is None:
            parts.append(b"")
            valid.append(0)
            continue
        valid.append(1)
        if isinstance(v, (bytes, bytearray, memoryview)):
            parts.append(bytes(v))
        elif kind is WireKind.BYTEA:
            raise WrapperError(f"a bytea column got a {type(v).__name__}, not bytes")
        elif isinstance(v, bool) and kind is WireKind.CSTRING:
            parts.append(b"true" if v else b"false")
        elif isinstance(v, (dict, list)) and kind is WireKind.CSTRING:
            import json

            parts.append(json.dumps(v).encode())
        else:
            parts.append(str(v).encode("utf-8"))
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    validity = None if all(valid) else np.array(valid, dtype=np.uint8)
    return data, offsets, validity


def _scalar_to_wire(kind: WireKind, v: Any) -> Any:
    if kind is WireKind.DATE:
        if isinstance(v, datetime.datetime):
            v = v.date()
        return (v - PG_EPOCH_DATE).days
    if kind is WireKind.TIMESTAMP:
        if v.tzinfo is not None:
            d = v - PG_EPOCH_DATETIME_UTC
        else:
            d = v - PG_EPOCH_DATETIME
        return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    if kind is WireKind.TIME:
        return ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
    if kind is WireKind.INTERVAL:
        if isinstance(v, datetime.timedelta):
            v = Interval.from_timedelta(v)
        return (v.microseconds, v.days, v.months)
    if kind is WireKind.UUID:
        return (v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))).bytes
    return v


def _column_from_sequence(kind: WireKind, values: Sequence[Any]) -> Column:
    if kind.is_variable_width:
        data, offsets, validity = _encode_text(values, kind)
        return Column(kind, data, validity, offsets)
    dtype = WIRE_DTYPES[kind]
    valid = np.fromiter((v is not None for v in values), dtype=np.uint8, count=len(values))
    filler = {WireKind.INTERVAL: (0, 0, 0), WireKind.UUID: bytes(16)}.get(kind, 0)
    items = [filler if v is None else _scalar_to_wire(kind, v) for v in values]
    if kind is WireKind.UUID:
        arr = np.frombuffer(b"".join(items), dtype=dtype) if items else np.zeros(0, dtype)
    else:
        arr = np.array(items, dtype=dtype) if items else np.zeros(0, dtype)
    return Column(kind, arr, None if valid.all() else valid)


def _column_from_array(kind: WireKind, arr: np.ndarray, mask: np.ndarray | None) -> Column:
    """Vectorized conversion of a numpy array to the wire layout of kind."""
    validity = None if mask is None else (~mask.astype(bool)).astype(np.uint8)
    if kind.is_variable_width:
        return _column_from_sequence(
            kind, [None if (mask is not None and mask[i]) else v for i, v in enumerate(arr.tolist())]
        )
    dtype = WIRE_DTYPES[kind]
    if arr.dtype.kind == "M":
        nat = np.isnat(arr)
        if kind is WireKind.DATE:
            out = arr.astype("datetime64[D]").astype(np.int64) - PG_EPOCH_DAYS
        elif kind is WireKind.TIMESTAMP:
            out = arr.astype("datetime64[us]").astype(np.int64) - PG_EPOCH_SECONDS * 1_000_000
        else:
            raise WrapperError(f"datetime64 values cannot fill a column of wire kind {kind.name}")
        if nat.any():
            out[nat] = 0
            validity = (~nat).astype(np.uint8) if validity is None else validity & (~nat)
        return Column(kind, np.ascontiguousarray(out, dtype=dtype), validity)
    if arr.dtype.kind == "m" and kind is WireKind.TIME:
        return Column(kind, np.ascontiguousarray(arr.astype("timedelta64[us]").astype(np.int64)), validity)
    if arr.dtype == object:
        return _column_from_sequence(
            kind, [None if (mask is not None and mask[i]) else v for i, v in enumerate(arr.tolist())]
        )
    if arr.dtype == dtype:
        return Column(kind, np.ascontiguousarray(arr), validity)
    if kind is WireKind.BOOL:
        return Column(kind, np.ascontiguousarray(arr != 0, dtype=np.uint8), validity)
    if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
        raise WrapperError(f"a {arr.dtype} array cannot fill a column of wire kind {kind.name}")
    if dtype.kind == "i" and arr.dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise WrapperError(f"integer values out of range for wire kind {kind.name}")
    return Column(kind, np.ascontiguousarray(arr, dtype=dtype), validity)


def to_column(kind: WireKind, data: Any) -> Column:
    """Convert what a wrapper put in a batch to a wire :class:`Column`."""
    if isinstance(data, Column):
        return data
    if isinstance(data, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(data)
        return _column_from_array(kind, np.asarray(data.data), mask if mask.any() else None)
    if isinstance(data, np.ndarray):
        return _column_from_array(kind, data, None)
    if isinstance(data, (list, tuple)):
        if not kind.is_variable_width and not any(
            v is None or isinstance(v, (datetime.date, datetime.time, datetime.timedelta,
                                        Interval, uuid.UUID, decimal.Decimal))
            for v in data
        ):
            return _column_from_array(kind, np.asarray(data), None)
        return _column_from_sequence(kind, data)
    raise WrapperError(f"a batch column cannot be built from a {type(data).__name__}")


class Batch:
    """A batch of rows in column form, yielded by ``execute`` or received by
    ``insert_batch``.

    Args:
        nrows: the number of rows (a batch with no columns still counts rows:
            ``count(*)`` needs nothing else).
        columns: column name to data: a :class:`Column`, a numpy array
            (masked for NULLs), or a list.
        rowids: optional int64 row ids, one per row, for wrappers whose
            ``rowid_column`` is ``"ctid"``.
    """

    __slots__ = ("nrows", "columns", "rowids")

    def __init__(self, nrows: int | None = None, columns: Mapping[str, Any] | None = None,
                 rowids: np.ndarray | None = None):
        self.columns = dict(columns or {})
        if nrows is None:
            if not self.columns:
                raise WrapperError("a batch with no columns needs its row count")
            first = next(iter(self.columns.values()))
            nrows = len(first)
        self.nrows = int(nrows)
        self.rowids = rowids

    def __repr__(self) -> str:
        return f"Batch(nrows={self.nrows}, columns={list(self.columns)})"

    def column(self, name: str) -> Column:
        """A column as a wire :class:`Column` (batches handed to insert_batch
        are already in that form)."""
        return self.columns[name]

    def to_pylist(self) -> list[dict[str, Any]]:
        """Rows as dicts (slow; for tests and small wrappers)."""
        lists = {name: col.to_pylist() for name, col in self.columns.items()}
        return [{name: values[i] for name, values in lists.items()} for i in range(self.nrows)]


class CountedBatches:
    """The batches a generator yields, and the counters it fills as it goes
    (what EXPLAIN ANALYZE shows of a run: the join engine's, the JIT's)."""

    def __init__(self, batches: Iterator[Batch], counters: dict[str, Any]) -> None:
        self.counters = counters
        self._gen = batches

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
