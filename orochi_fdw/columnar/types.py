"""PostgreSQL types, storage kinds and the bridge's wire layout.

Each column is stored in the :mod:`storage kind <orochi_fdw.storage.kinds>`
of its type; types without a kind of their own (numeric wider than 18
digits or without a precision, jsonb, bpchar without a length, inet,
arrays, enums, domains ...) are stored as their text form, which the
bridge produces with the type's output function and parses back with its
input function, so every type round-trips exactly.

``numeric(p, s)`` with ``0 <= s <= p <= 18`` is stored as scaled int64
(kind ``decimal64_<s>``, :mod:`orochi_fdw.storage.decimal`); scans hand such
a column to filters and aggregates as :attr:`WireKind.DECIMAL64` (the same
integers), and the bridge's last step turns the rows that leave into text
(:func:`decimal_to_cstring`). ``character(n)`` is stored without its
trailing spaces (kind ``char``): Postgres compares bpchar values without
them, and the type's input function pads them again on output.

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
from orochi_fdw.storage import decimal as dec
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


NUMERIC_OID = 1700
BPCHAR_OID = 1042


def decimal_type(column: ColumnDefinition) -> tuple[int, int] | None:
    """(precision, scale) of a numeric column stored as scaled int64, or None."""
    if column.type_oid != NUMERIC_OID:
        return None
    ps = dec.typmod_precision_scale(column.typmod)
    if ps is None or not 0 <= ps[1] <= ps[0] <= dec.MAX_PRECISION:
        return None
    return ps


def decimal_scale(kind: str) -> int | None:
    """The scale of a ``decimal64_<s>`` kind, None for other kinds."""
    if kind.startswith("decimal64_"):
        return int(kind[len("decimal64_"):])
    return None


def storage_kind(column: ColumnDefinition) -> str:
    """The storage kind of a column; its text form ("text") when the type
    has no kind of its own. An orochi.vector(n) column is kind "vector"
    (n float32 per value), one without a dimension its payload ("bytea").
    numeric(p, s) with 0 <= s <= p <= 18 is "decimal64_<s>", character(n)
    "char"; other numerics and bpchar keep their text form."""
    kind = _KIND_BY_OID.get(column.type_oid)
    if kind == "numeric":
        ps = decimal_type(column)
        return kind if ps is None else f"decimal64_{ps[1]}"
    if kind == "bpchar":
        return "char" if column.typmod > 4 else kind
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


def scan_wire_kind(column: ColumnDefinition) -> WireKind:
    """The layout in which a scan hands a column to filters and aggregates:
    :func:`wire_kind`, but DECIMAL64 for a numeric stored as scaled int64."""
    if decimal_type(column) is not None:
        return WireKind.DECIMAL64
    return wire_kind(column)


def decimal_to_cstring(col: Column, column: ColumnDefinition) -> Column:
    """A DECIMAL64 column as the text the bridge reads with numeric's input
    function (at the column's scale, which every scan layout is at)."""
    ps = decimal_type(column)
    if ps is None:
        raise FeatureNotSupportedError(
            f'column "{column.column_name}" of type {column.type_name} got scaled integers')
    offsets, data = dec.format_text(col.values, col.validity, ps[1])
    return Column(WireKind.CSTRING, data, col.validity, offsets)


def cstring_to_decimal(col: Column, column: ColumnDefinition) -> Column:
    """Numeric text (the delta store's, a stripe's from before the column was
    stored as scaled int64) as a DECIMAL64 column at the column's scale,
    rounded as its type modifier rounds."""
    p, s = decimal_type(column)
    try:
        values = dec.parse_text(col.offsets, col.values, col.validity, s, p)
    except dec.InvalidTextRepresentationError:
        # another type's text form (a float's 1e-05): as numeric's input reads it
        values = np.array([0 if v is None else dec.from_decimal(_decimal(v), s, p)
                           for v in col.to_pylist()], dtype=np.int64)
    return Column(WireKind.DECIMAL64, values, col.validity)


def _decimal(text: str):
    import decimal

    try:
        return decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        raise dec.InvalidTextRepresentationError(
            f'invalid input syntax for type numeric: "{text}"') from None


def _rtrim_spaces(offsets: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values without their trailing ASCII spaces (bpchar's padding)."""
    n = len(offsets) - 1
    if n == 0 or len(data) == 0:
        return offsets, data
    data = np.asarray(data, dtype=np.uint8)
    ends = np.asarray(offsets[1:], dtype=np.int64).copy()
    starts = np.asarray(offsets[:-1], dtype=np.int64)
    while True:
        more = (ends > starts) & (data[np.maximum(ends - 1, 0)] == 32)
        if not more.any():
            break
        ends[more] -= 1
    lengths = ends - starts
    if int(lengths.sum()) == int(offsets[-1] - offsets[0]):
        return offsets, data
    new_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    total = int(new_offsets[-1])
    gather = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    return new_offsets, data[gather]


def from_wire(col: Column, kind: str) -> tuple[object, np.ndarray | None]:
    """A batch column from the bridge as (values, validity) for the stripe
    writer. No copies: views of the bridge's buffers (numeric text is
    parsed into scaled integers, character(n) loses its padding)."""
    validity = None if col.validity is None else col.validity.view(np.bool_)
    k = get_kind(kind)
    scale = decimal_scale(k.name)
    if scale is not None and col.kind.is_variable_width:
        values = dec.parse_text(col.offsets, col.values, col.validity, scale, dec.MAX_PRECISION)
        return values, validity
    if k.name == "char" and col.kind.is_variable_width:
        return _rtrim_spaces(col.offsets, col.values), validity
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


def to_wire(data: ColumnData, kind: str, column: ColumnDefinition, stored_kind: str | None = None,
            native: bool = False) -> Column:
    """A decoded column chunk as a wire column for ``column``.

    ``stored_kind`` is the kind the stripe holds, when the column's type has
    changed since (ALTER COLUMN ... TYPE): text forms are handed to the new
    type's input function, numbers through their text form; other changes
    are refused. ``native``: a numeric stored as scaled int64 stays
    DECIMAL64 (:func:`scan_wire_kind`), else it becomes its text, and a
    character(n) (stored without its padding) is padded to n again.

    Raises:
        FeatureNotSupportedError: the stored values cannot be read as the
            column's current type.
    """
    col = _to_wire(data, kind, column, stored_kind, native)
    if kind == "char" and not native and col.kind.is_variable_width:
        # the value as the type gives it (change data capture reads it as is)
        return Column(col.kind, *_pad_chars(col.offsets, col.values, column.typmod - 4, col.validity))
    return col


def _pad_chars(offsets: np.ndarray, data: np.ndarray, n: int, validity) -> tuple:
    """(data, validity, offsets) of values padded with spaces to ``n``
    characters, as character(n) gives them."""
    texts = []
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    offs = np.asarray(offsets).tolist()
    valid = None if validity is None else np.asarray(validity).tolist()
    for i in range(len(offs) - 1):
        v = raw[offs[i]:offs[i + 1]]
        if valid is not None and not valid[i]:
            texts.append(b"")
            continue
        chars = len(v.decode("utf-8", errors="replace"))
        texts.append(v + b" " * max(n - chars, 0))
    vb, _ = VarBytes.from_values(texts)
    return vb.data, validity, vb.offsets


def _to_wire(data: ColumnData, kind: str, column: ColumnDefinition, stored_kind: str | None,
             native: bool) -> Column:
    """:func:`to_wire` but for character(n)'s padding."""
    wk = wire_kind(column)
    stored = get_kind(stored_kind or kind)
    validity = None if data.validity is None else data.validity.view(np.uint8)
    if stored.name != kind:
        col = _converted(data, stored.name, kind, column, validity)
        if native and decimal_scale(kind) is not None and col.kind.is_variable_width:
            return cstring_to_decimal(col, column)
        return col
    if decimal_scale(kind) is not None:
        col = Column(WireKind.DECIMAL64, data.values, validity)
        return col if native else decimal_to_cstring(col, column)
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
    stored_scale = decimal_scale(stored)
    if stored_scale is not None and (ck.physical == "var" or decimal_scale(current) is not None):
        # numbers stored as scaled int64: through their text form
        offsets, values = dec.format_text(data.values, validity, stored_scale)
        return Column(WireKind.CSTRING, values, validity, offsets)
    if sk.physical == "var" and (ck.physical == "var" or decimal_scale(current) is not None):
        offsets, values = data.values
        if current == "char" and stored != "char":
            offsets, values = _rtrim_spaces(offsets, values)  # padded text form
        kind = WireKind.BYTEA if wire_kind(column) is WireKind.BYTEA else WireKind.CSTRING
        return Column(kind, values, validity, offsets)
    if stored in _NUMBER_KINDS and (current in _NUMBER_KINDS or ck.physical == "var"
                                    or decimal_scale(current) is not None):
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
