"""PostgreSQL types, storage kinds and the bridge's wire layout.

Each column is stored in the :mod:`storage kind <orochi_fdw.storage.kinds>`
of its type; types without a kind of their own (numeric, jsonb, bpchar,
inet, arrays, enums, domains ...) are stored as their text form, which the
bridge produces with the type's output function and parses back with its
input function, so every type round-trips exactly.

Batches arrive from the bridge and leave for it in wire layout
(:class:`~orochi_fdw.bridge.batch.Column`); the numbers are the same on
both sides (dates are int32 days and timestamps int64 microseconds since
2000-01-01, text is offsets and UTF-8 bytes), so conversion is a matter of
views, not copies.
"""

from __future__ import annotations

import numpy as np

from orochi_fdw.bridge.api import ColumnDefinition
from orochi_fdw.bridge.batch import Column, WireKind, wire_kind_for_type
from orochi_fdw.errors import FeatureNotSupportedError
from orochi_fdw.storage.kinds import ColumnData, VarBytes, get_kind
from orochi_fdw.vector.types import is_vector_type

# type oid -> storage kind
_KIND_BY_OID = {
    16: "bool",
    21: "int16",
    23: "int32",
    20: "int64",
    700: "float32",
    701: "float64",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
    1083: "time",
    1186: "interval",
    2950: "uuid",
    25: "text",
    1043: "varchar",
    1042: "bpchar",
    17: "bytea",
    1700: "numeric",
    3802: "jsonb",
}

#: type oids whose values compare as their UTF-8 bytes under the C collation
TEXT_TYPE_OIDS = frozenset({25, 1043})
BYTEA_OID = 17


def storage_kind(column: ColumnDefinition) -> str:
    """The storage kind of a column; its text form ("text") when the type
    has no kind of its own. An orochi.vector(n) column is kind "vector"
    (n float32 per value), one without a dimension its payload ("bytea")."""
    kind = _KIND_BY_OID.get(column.type_oid)
    if kind is not None:
        return kind
    if is_vector_type(column.type_oid):
        return "vector" if column.typmod > 0 else "bytea"
    return "text"


def wire_kind(column: ColumnDefinition) -> WireKind:
    """How the bridge carries a column's values (an orochi.vector as its
    float32 payload, like bytea)."""
    if column.type_oid not in _KIND_BY_OID and is_vector_type(column.type_oid):
        return WireKind.BYTEA
    return wire_kind_for_type(column.type_oid)


def from_wire(col: Column, kind: str) -> tuple[object, np.ndarray | None]:
    """A batch column from the bridge as (values, validity) for the stripe
    writer. No copies: views of the bridge's buffers."""
    validity = None if col.validity is None else col.validity.view(np.bool_)
    k = get_kind(kind)
    if k.physical == "var":
        return (col.offsets, col.values), validity
    values = col.values
    if k.physical == "bool":
        values = values.view(np.bool_)
    elif values.dtype != k.dtype:
        values = values.view(k.dtype) if values.dtype.itemsize == k.dtype.itemsize else values.astype(k.dtype)
    return values, validity


def raw_size(values, validity: np.ndarray | None, kind: str) -> int:
    """Bytes of the non-NULL values before any encoding (a uuid is 16, a text
    its UTF-8 length)."""
    k = get_kind(kind)
    if k.physical == "var":
        offsets, _ = values
        return int(offsets[-1] - offsets[0])
    n = len(values) if validity is None else int(np.count_nonzero(validity))
    return n * k.width


def to_wire(data: ColumnData, kind: str, column: ColumnDefinition, stored_kind: str | None = None) -> Column:
    """A decoded column chunk as a wire column for ``column``.

    ``stored_kind`` is the kind the stripe holds, when the column's type has
    changed since (ALTER COLUMN ... TYPE): text forms are handed to the new
    type's input function, numbers through their text form; other changes
    are refused.

    Raises:
        FeatureNotSupportedError: the stored values cannot be read as the
            column's current type.
    """
    wk = wire_kind(column)
    stored = get_kind(stored_kind or kind)
    validity = None if data.validity is None else data.validity.view(np.uint8)
    if stored.name != kind:
        return _converted(data, stored.name, kind, column, validity)
    if stored.physical == "var":
        offsets, values = data.values
        return Column(wk, values, validity, offsets)
    values = data.values
    if stored.physical == "bool":
        values = values.view(np.uint8)
    return Column(wk, values, validity)


_NUMBER_KINDS = ("int16", "int32", "int64", "float32", "float64", "bool")


def _converted(data: ColumnData, stored: str, current: str, column: ColumnDefinition,
               validity: np.ndarray | None) -> Column:
    sk, ck = get_kind(stored), get_kind(current)
    if sk.physical == "var" and ck.physical == "var":
        offsets, values = data.values
        kind = WireKind.BYTEA if wire_kind(column) is WireKind.BYTEA else WireKind.CSTRING
        return Column(kind, values, validity, offsets)
    if stored in _NUMBER_KINDS and (current in _NUMBER_KINDS or ck.physical == "var"):
        values = data.values
        if stored == "bool":
            texts = ["true" if v else "false" for v in values.tolist()]
        elif sk.physical == "float":
            texts = [_float_text(v) for v in values.tolist()]
        else:
            texts = [str(v) for v in values.tolist()]
        vb, _ = VarBytes.from_values(texts)
        return Column(WireKind.CSTRING, vb.data, validity, vb.offsets)
    raise FeatureNotSupportedError(
        f'column "{column.column_name}" is now of type {column.type_name}, but older stripes '
        f"hold it as {stored}, which cannot be read as that type")


def _float_text(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)
