"""Canonical value hashing shared by the heap-table aggregates and pushdown.

A value is hashed with XXH64 (seed 0) of canonical bytes, so that a value
hashes the same whichever path computes the sketch:

* integers, booleans (0/1), dates (days since 2000-01-01), times and
  timestamps (microseconds; timestamptz in UTC since 2000-01-01): the 8
  little-endian bytes of the value as int64;
* floats: the 8 bytes of the value as float64, with -0.0 as 0.0 and every NaN
  as the one quiet NaN 0x7ff8000000000000 (Postgres treats them as equal);
* text: its UTF-8 bytes; bytea: its bytes;
* anything else (numeric, uuid, ...): the UTF-8 bytes of its text form
  (numeric normalized, so 1.0 and 1.00 hash the same).
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

import numpy as np

from orochi_fdw.kernels import sketches as K

_EPOCH_DATE = datetime.date(2000, 1, 1)
_EPOCH_TS = datetime.datetime(2000, 1, 1)
_EPOCH_TSTZ = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
_US = datetime.timedelta(microseconds=1)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def canonical_float_bits(values: np.ndarray) -> np.ndarray:
    """float values as the int64 bit patterns that are hashed."""
    v = np.asarray(values, dtype=np.float64).copy()
    v[v == 0.0] = 0.0
    v[np.isnan(v)] = np.nan
    return v.view(np.int64)


def canonical(value: Any) -> int | bytes:
    """The canonical form of one Python value: an int64 or bytes."""
    if isinstance(value, (bool, int)):
        v = int(value)
        if _INT64_MIN <= v <= _INT64_MAX:
            return v
        return str(v).encode()
    if isinstance(value, float):
        if value == 0.0:
            value = 0.0
        elif value != value:
            value = float("nan")
        return struct.unpack("<q", struct.pack("<d", value))[0]
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            return (value - _EPOCH_TSTZ) // _US
        return (value - _EPOCH_TS) // _US
    if isinstance(value, datetime.date):
        return (value - _EPOCH_DATE).days
    if isinstance(value, datetime.time):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return b"NaN"
        if value == 0:
            return b"0"
        return str(value.normalize()).encode()
    return str(value).encode("utf-8")


def hash_ints(values: np.ndarray) -> np.ndarray:
    """XXH64 of each value's 8 little-endian int64 bytes."""
    v = np.ascontiguousarray(values, dtype=np.int64)
    out = np.empty(len(v), dtype=np.uint64)
    K.hash_int64(v, out)
    return out


def hash_varlen(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """XXH64 of each byte string data[offsets[i]:offsets[i + 1]]."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    out = np.empty(len(offsets) - 1, dtype=np.uint64)
    K.hash_varlen(offsets, np.ascontiguousarray(data, dtype=np.uint8), out)
    return out


def hash_bytes_list(values: list[bytes]) -> np.ndarray:
    """XXH64 of each byte string of a list."""
    lengths = np.fromiter((len(b) for b in values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(values), dtype=np.uint8)
    return hash_varlen(offsets, data)


def hash_values(values: list[Any]) -> np.ndarray:
    """Hashes of Python values (NULLs must be left out by the caller)."""
    ints, blobs = [], []
    for v in values:
        c = canonical(v)
        (ints if isinstance(c, int) else blobs).append(c)
    parts = []
    if ints:
        parts.append(hash_ints(np.array(ints, dtype=np.int64)))
    if blobs:
        parts.append(hash_bytes_list(blobs))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
