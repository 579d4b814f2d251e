"""Logical column kinds and the in-memory representation of column data.

Every PostgreSQL type an Orochi table can hold maps to one *logical kind*,
which fixes how its values are laid out in memory and on disk:

===============  ==============================  =====================================
kind             PostgreSQL types                in memory (little-endian numpy)
===============  ==============================  =====================================
bool             boolean                         ``bool``
int16            smallint                        ``int16``
int32            integer                         ``int32``
int64            bigint                          ``int64``
float32          real                            ``float32``
float64          double precision                ``float64``
date             date                            ``int32`` days since 2000-01-01
timestamp        timestamp                       ``int64`` µs since 2000-01-01
timestamptz      timestamptz                     ``int64`` µs since 2000-01-01 UTC
time             time                            ``int64`` µs since midnight
interval         interval                        16 bytes: int64 µs, int32 days,
                                                 int32 months (PostgreSQL's layout)
uuid             uuid                            16 raw bytes (``V16``)
text, varchar,   text, varchar, bpchar, bytea,   :class:`VarBytes`: ``int64`` offsets
bpchar, bytea,   other numeric (text form), jsonb ``[n + 1]`` and a ``uint8`` data buffer
numeric, jsonb   (text form), anything else
                 (text form, kind ``text``)
decimal64_S      numeric(p, S), S <= p <= 18     ``int64``: the value times 10^S; NaN
                 (S = 0..18)                     is int64 max (see storage.decimal)
char             character(n)                    :class:`VarBytes`: the value without
                                                 its trailing spaces (the padding is
                                                 the type's, restored on output)
vector           orochi.vector(n)                :class:`VarBytes` whose every value is
                                                 n little-endian float32 (4n bytes), so
                                                 the data buffer of a chunk without
                                                 NULLs is a contiguous n-column array
===============  ==============================  =====================================

NULLs are never represented in the values: a separate validity array
(``bool``, True = present) says which rows hold a value, or ``None`` when no
row is NULL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from orochi_fdw.errors import InvalidParameterError
from orochi_fdw.kernels import codecs_bytes as _cb

__all__ = [
    "INTERVAL_DTYPE",
    "UUID_DTYPE",
    "Kind",
    "KINDS",
    "KINDS_BY_ID",
    "VarBytes",
    "ColumnData",
    "get_kind",
    "kind_for_pg_type",
    "normalize_column",
]

#: PostgreSQL's ``Interval`` struct: TimeOffset time (µs), int32 day, int32 month.
INTERVAL_DTYPE = np.dtype([("time", "<i8"), ("day", "<i4"), ("month", "<i4")])
#: A uuid is 16 opaque bytes, compared bytewise.
UUID_DTYPE = np.dtype("V16")


@dataclass(frozen=True, slots=True)
class Kind:
    """A logical column kind.

    Attributes:
        name: The kind's name, as used in schemas.
        id: Its stable numeric id in the stripe format (never reused).
        physical: How values are stored: ``"bool"``, ``"int"``, ``"float"``,
            ``"fixed"`` (opaque fixed-width records) or ``"var"``.
        dtype: The numpy dtype of a value, or ``None`` for ``"var"``.
    """

    name: str
    id: int
    physical: str
    dtype: np.dtype | None

    @property
    def width(self) -> int:
        """Bytes per value (0 for variable-width kinds)."""
        return 0 if self.dtype is None else self.dtype.itemsize


_KIND_LIST = (
    Kind("bool", 1, "bool", np.dtype(np.bool_)),
    Kind("int16", 2, "int", np.dtype("<i2")),
    Kind("int32", 3, "int", np.dtype("<i4")),
    Kind("int64", 4, "int", np.dtype("<i8")),
    Kind("float32", 5, "float", np.dtype("<f4")),
    Kind("float64", 6, "float", np.dtype("<f8")),
    Kind("date", 7, "int", np.dtype("<i4")),
    Kind("timestamp", 8, "int", np.dtype("<i8")),
    Kind("timestamptz", 9, "int", np.dtype("<i8")),
    Kind("time", 10, "int", np.dtype("<i8")),
    Kind("interval", 11, "fixed", INTERVAL_DTYPE),
    Kind("uuid", 12, "fixed", UUID_DTYPE),
    Kind("text", 13, "var", None),
    Kind("bytea", 14, "var", None),
    Kind("varchar", 15, "var", None),
    Kind("bpchar", 16, "var", None),
    Kind("numeric", 17, "var", None),
    Kind("jsonb", 18, "var", None),
    Kind("vector", 19, "var", None),
) + tuple(
    # numeric(p, s), 0 <= s <= p <= 18: the value times 10^s (orochi_fdw.storage.decimal)
    Kind(f"decimal64_{s}", 20 + s, "int", np.dtype("<i8")) for s in range(19)
) + (
    Kind("char", 39, "var", None),
)

KINDS: dict[str, Kind] = {k.name: k for k in _KIND_LIST}
KINDS_BY_ID: dict[int, Kind] = {k.id: k for k in _KIND_LIST}

_PG_TYPES = {
    "bool": "bool", "boolean": "bool",
    "int2": "int16", "smallint": "int16",
    "int4": "int32", "integer": "int32", "int": "int32",
    "int8": "int64", "bigint": "int64",
    "float4": "float32", "real": "float32",
    "float8": "float64", "double precision": "float64",
    "date": "date",
    "timestamp": "timestamp", "timestamp without time zone": "timestamp",
    "timestamptz": "timestamptz", "timestamp with time zone": "timestamptz",
    "time": "time", "time without time zone": "time",
    "interval": "interval",
    "uuid": "uuid",
    "text": "text", "name": "text",
    "varchar": "varchar", "character varying": "varchar",
    "bpchar": "bpchar", "character": "bpchar", "char": "bpchar",
    "bytea": "bytea",
    "numeric": "numeric", "decimal": "numeric",
    "jsonb": "jsonb",
}


def get_kind(kind: str | Kind) -> Kind:
    """Return the :class:`Kind` named ``kind``.

    Raises:
        InvalidParameterError: ``kind`` is not a known kind name.
    """
    if isinstance(kind, Kind):
        return kind
    try:
        return KINDS[kind]
    except (KeyError, TypeError):
        raise InvalidParameterError(
            f"unknown column kind {kind!r}; valid kinds: {', '.join(KINDS)}") from None


def kind_for_pg_type(typname: str) -> str:
    """Map a PostgreSQL type name to the kind that stores it.

    Types without a kind of their own (json, inet, arrays, enums, ...) are
    stored as their text form, kind ``"text"``.
    """
    return _PG_TYPES.get(typname.strip().lower(), "text")


class VarBytes(NamedTuple):
    """A column of variable-width values: value i is ``data[offsets[i]:offsets[i+1]]``.

    ``offsets`` is ``int64[n + 1]`` and non-decreasing; ``data`` is ``uint8``.
    NULL rows (see the validity array) conventionally have empty values.
    """

    offsets: np.ndarray
    data: np.ndarray

    @property
    def count(self) -> int:
        """Number of values."""
        return len(self.offsets) - 1

    def value(self, i: int) -> bytes:
        """Value ``i`` as bytes (for tests and debugging, not hot paths)."""
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def to_list(self, validity: np.ndarray | None = None) -> list[bytes | None]:
        """All values as a list of bytes, ``None`` where validity is False."""
        out: list[bytes | None] = []
        raw = self.data.tobytes()
        offs = self.offsets.tolist()
        for i in range(len(offs) - 1):
            if validity is not None and not validity[i]:
                out.append(None)
            else:
                out.append(raw[offs[i]:offs[i + 1]])
        return out

    @classmethod
    def from_values(cls, values: Iterable[bytes | str | None]
                    ) -> tuple["VarBytes", np.ndarray | None]:
        """Build a column from Python values (str is UTF-8 encoded).

        Returns ``(VarBytes, validity)``; validity is ``None`` when no value is
        ``None``. For tests, examples and small literals, not for bulk data.
        """
        parts: list[bytes] = []
        valid: list[bool] = []
        for v in values:
            if v is None:
                parts.append(b"")
                valid.append(False)
            else:
                parts.append(v.encode("utf-8") if isinstance(v, str) else bytes(v))
                valid.append(True)
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()
        validity = None if all(valid) else np.array(valid, dtype=bool)
        return cls(offsets, data), validity


class ColumnData(NamedTuple):
    """Decoded column: ``values`` (ndarray or :class:`VarBytes`) and ``validity``
    (bool ndarray, True = not NULL, or ``None`` when no row is NULL)."""

    values: np.ndarray | VarBytes
    validity: np.ndarray | None


def _as_uint8(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            if data.dtype.itemsize != 1:
                raise InvalidParameterError("variable-width data must be a uint8 buffer")
            data = data.view(np.uint8)
        return np.ascontiguousarray(data).reshape(-1)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def normalize_column(values, validity, kind: str | Kind
                     ) -> tuple[np.ndarray | VarBytes, np.ndarray | None, int]:
    """Check and normalise one column for encoding.

    Args:
        values: An ndarray of the kind's dtype (a safe cast is applied, a uuid
            may also be given as ``uint8[n, 16]``), or for variable-width kinds
            an ``(offsets, data)`` pair.
        validity: ``None`` or a bool-like array of ``n`` entries, True = present.
        kind: The column's logical kind.

    Returns:
        ``(values, validity, n)`` with contiguous little-endian values and
        validity either a bool array containing at least one False, or None.

    Raises:
        InvalidParameterError: the values or validity do not fit the kind.
    """
    k = get_kind(kind)
    if k.physical == "var":
        try:
            offsets, data = values
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"kind {k.name} takes an (offsets, data) pair") from None
        offsets = np.asarray(offsets)
        if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) < 1:
            raise InvalidParameterError("offsets must be a 1-D integer array of n + 1 entries")
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        data = _as_uint8(data)
        if _cb.var_check(offsets, len(data)) != -1:
            raise InvalidParameterError(
                "offsets must be non-decreasing and within the data buffer")
        out = VarBytes(offsets, data)
        n = len(offsets) - 1
    else:
        arr = np.asarray(values)
        if k.name == "uuid" and arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == 16:
            arr = np.ascontiguousarray(arr).view(UUID_DTYPE).reshape(-1)
        if arr.ndim != 1:
            raise InvalidParameterError(f"kind {k.name} takes a 1-D array")
        if arr.dtype != k.dtype:
            if k.physical == "fixed":
                if k.name == "uuid" and arr.dtype.itemsize == 16 and arr.dtype.kind in "VS":
                    arr = np.ascontiguousarray(arr).view(UUID_DTYPE)
                elif k.name == "interval" and arr.dtype.names == k.dtype.names:
                    arr = arr.astype(k.dtype)
                else:
                    raise InvalidParameterError(
                        f"kind {k.name} takes dtype {k.dtype}, got {arr.dtype}")
            elif (k.physical != "bool" and arr.dtype.kind in "iuf"
                  and np.can_cast(arr.dtype, k.dtype, "safe")):
                # Safe widening only (int16 -> int32, other byte orders, ...).
                arr = arr.astype(k.dtype)
            else:
                raise InvalidParameterError(
                    f"kind {k.name} takes dtype {k.dtype}, got {arr.dtype}")
        out = np.ascontiguousarray(arr)
        n = len(out)
    if validity is not None:
        v = np.asarray(validity)
        if v.ndim != 1 or len(v) != n:
            raise InvalidParameterError(f"validity must have {n} entries, got shape {v.shape}")
        if v.dtype != np.bool_:
            v = v != 0
        v = np.ascontiguousarray(v)
        validity = None if v.all() else v
    return out, validity, n


def concat_columns(parts: Sequence[ColumnData], kind: str | Kind) -> ColumnData:
    """Concatenate decoded pieces of one column (in order)."""
    k = get_kind(kind)
    if len(parts) == 1:
        return parts[0]
    if k.physical == "var":
        if not parts:
            values = VarBytes(np.zeros(1, np.int64), np.zeros(0, np.uint8))
        else:
            total = sum(p.values.count for p in parts)
            offsets = np.empty(total + 1, dtype=np.int64)
            offsets[0] = 0
            pos, base = 1, 0
            datas = []
            for p in parts:
                o, d = p.values
                c = len(o) - 1
                offsets[pos:pos + c] = o[1:] - o[0] + base
                pos += c
                base += int(o[-1] - o[0])
                datas.append(d[o[0]:o[-1]])
            values = VarBytes(offsets, np.concatenate(datas) if datas else np.zeros(0, np.uint8))
        lens = [p.values.count for p in parts]
    else:
        values = (np.concatenate([p.values for p in parts]) if parts
                  else np.zeros(0, dtype=k.dtype))
        lens = [len(p.values) for p in parts]
    if all(p.validity is None for p in parts):
        validity = None
    else:
        validity = np.concatenate([
            p.validity if p.validity is not None else np.ones(c, dtype=bool)
            for p, c in zip(parts, lens)])
    return ColumnData(values, validity)
