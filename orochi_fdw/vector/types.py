"""The ``orochi.vector`` type as Python sees it.

A vector crosses the bridge as its payload: ``bytes`` of little-endian
float32 values (the C type holds nothing else). A vector(n) column of a
columnar table is stored in kind ``vector`` (every value 4n bytes, so a chunk
decodes to a contiguous array with n columns); a vector column without a
dimension is stored as its payload in kind ``bytea``.
"""

from __future__ import annotations

import math

import numpy as np

from orochi_fdw.vector.errors import VectorError

#: first oid of objects that are not built in
_FIRST_NORMAL_OID = 16384

#: the functions an ordering may use, by "schema.name", and the metric of each
DISTANCE_FUNCTIONS = {
    "orochi.l2_distance": "l2",
    "orochi.vector_negative_inner_product": "negative_inner_product",
    "orochi.cosine_distance": "cosine",
}

_oids: dict[int, bool] = {}


def is_vector_type(type_oid: int) -> bool:
    """Whether ``type_oid`` is ``orochi.vector`` (asked once per oid and
    backend; False outside a backend)."""
    if type_oid < _FIRST_NORMAL_OID:
        return False
    known = _oids.get(type_oid)
    if known is None:
        try:
            from orochi_fdw.bridge import spi

            known = bool(spi.prepared(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_type t"
                "  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace"
                " WHERE t.oid = $1 AND t.typname = 'vector' AND n.nspname = 'orochi')",
                ["oid"]).execute([type_oid]).scalar())
        except ImportError:  # not in a backend
            return False
        _oids[type_oid] = known
    return known


def parse_vector(value, dimensions: int | None = None, what: str = "vector") -> np.ndarray:
    """A query vector from a qual or sort key value: its payload (bytes), its
    text form ``[1,2,3]``, or a list of numbers (a real[] value), as float32.

    Raises:
        InvalidParameterError: not a vector, NaN or infinity in it, or not of
            ``dimensions`` dimensions (SQLSTATE 22023; the SQL operators give
            22000 for the same mistakes).
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) % 4 or not raw:
            raise VectorError(f"{what} payload of {len(raw)} bytes is not a vector")
        q = np.frombuffer(raw, dtype="<f4").copy()
    elif isinstance(value, str):
        text = value.strip()
        if not (text.startswith("[") and text.endswith("]")) and not (text.startswith("{") and text.endswith("}")):
            raise VectorError(f'invalid input syntax for type vector: "{value}"', "22P02")
        try:
            q = np.array([float(x) for x in text[1:-1].split(",")], dtype=np.float32)
        except ValueError:
            raise VectorError(f'invalid input syntax for type vector: "{value}"', "22P02") from None
    elif isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            raise VectorError("array must not contain nulls")
        q = np.array([float(v) for v in value], dtype=np.float32)
    else:
        raise VectorError(f"a {type(value).__name__} is not a vector")
    if q.ndim != 1 or len(q) == 0:
        raise VectorError("vector must have at least 1 dimension")
    if not np.isfinite(q).all():
        bad = next(float(x) for x in q if not math.isfinite(float(x)))
        raise VectorError("NaN not allowed in vector" if bad != bad else "infinite value not allowed in vector")
    if dimensions is not None and len(q) != dimensions:
        raise VectorError(f"different vector dimensions {dimensions} and {len(q)}",
                          detail=f"The column holds vectors of {dimensions} dimensions; "
                                 f"the {what} has {len(q)}.")
    return q


def payload_matrix(data: np.ndarray, dimensions: int) -> np.ndarray:
    """The data buffer of a vector chunk as an (m, dimensions) float32 view."""
    data = np.asarray(data)
    if data.dtype != np.uint8:
        data = data.view(np.uint8)
    if len(data) % (4 * dimensions):
        from orochi_fdw.errors import CorruptDataError

        raise CorruptDataError(f"vector data of {len(data)} bytes is not a whole number of "
                               f"{dimensions}-dimension vectors")
    return np.ascontiguousarray(data).view("<f4").reshape(-1, dimensions)
