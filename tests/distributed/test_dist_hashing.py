"""Distribution hashes computed on the coordinator (numpy transcription of
hash_uint32, and the SQL path for every type) equal PostgreSQL's own
extended hash functions with seed 0, cut to 32 bits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orochi_fdw.cluster.hashing import hash_int8, hash_uint32


def _sql_hashes(cluster, function: str, sqltype: str, values: list) -> list[int]:
    """The hashes PostgreSQL computes: through the type's hash operator
    class (the SQL hash functions of some types take another type)."""
    if sqltype in ("date", "boolean", "timestamptz"):
        # these types' support functions take another type (int4, "char",
        # timestamp): the value's raw form as that type
        arg = {"date": "CASE WHEN v = 'infinity' THEN 2147483647 ELSE v - date '2000-01-01' END",
               "boolean": 'v::integer::"char"', "timestamptz": "v AT TIME ZONE 'UTC'"}[sqltype]
    else:
        arg = "v"
    rows = cluster.coordinator.execute(
        f"SELECT ({function}({arg}, 0) & 4294967295)::bigint FROM unnest(%s::{sqltype}[]) WITH ORDINALITY u(v, i)"
        " ORDER BY i", (values,), dbname=cluster.dbname)
    return [h - 2 ** 32 if h >= 2 ** 31 else h for (h,) in rows]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), min_size=1, max_size=50))
def test_int4_and_date(cluster, values):
    expected = _sql_hashes(cluster, "hashint4extended", "int4", values)
    assert hash_uint32(np.array(values, dtype=np.int32).view(np.uint32)).tolist() == expected


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=1, max_size=50))
def test_int8(cluster, values):
    assert hash_int8(np.array(values, dtype=np.int64)).tolist() == _sql_hashes(cluster, "hashint8extended", "int8", values)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(-2 ** 15, 2 ** 15 - 1), min_size=1, max_size=50))
def test_int2(cluster, values):
    got = hash_uint32(np.array(values, dtype=np.int16).astype(np.int32).view(np.uint32)).tolist()
    assert got == _sql_hashes(cluster, "hashint2extended", "int2", values)


@pytest.mark.parametrize("function, sqltype, values", [
    ("timestamp_hash_extended", "timestamptz", ["2024-01-01 00:00:00+00", "1999-12-31 23:59:59.999999+00",
                                                "0044-03-15 12:00:00+00 BC"]),
    ("timestamp_hash_extended", "timestamp", ["2024-01-01 00:00:00", "1970-01-01 00:00:01"]),
    ("time_hash_extended", "time", ["00:00:00", "23:59:59.999999", "12:00:00.5"]),
    ("hashcharextended", "boolean", [True, False]),
    ("hashint4extended", "date", ["2000-01-01", "1999-12-31", "infinity", "0044-03-15 BC"]),
])
def test_fast_kinds_against_sql(cluster, function, sqltype, values):
    """The raw integers of these types (as the bridge's batches carry them)
    hash as PostgreSQL hashes the values."""
    raw = cluster.coordinator.execute(
        {"timestamptz": "SELECT ((extract(epoch FROM v) - 946684800) * 1000000)::int8 FROM unnest(%s::timestamptz[]) v",
         "timestamp": "SELECT ((extract(epoch FROM v) - 946684800) * 1000000)::int8 FROM unnest(%s::timestamp[]) v",
         "time": "SELECT (extract(epoch FROM v) * 1000000)::int8 FROM unnest(%s::time[]) v",
         "boolean": "SELECT v::int FROM unnest(%s::boolean[]) v",
         "date": "SELECT CASE WHEN v = 'infinity' THEN 2147483647 ELSE v - date '2000-01-01' END"
                 " FROM unnest(%s::date[]) v"}[sqltype], (values,), dbname=cluster.dbname)
    raw = [r[0] if r[0] is not None else 2 ** 63 - 1 for r in raw]
    expected = _sql_hashes(cluster, function, sqltype, values)
    if sqltype in ("timestamptz", "timestamp", "time"):
        got = hash_int8(np.array(raw, dtype=np.int64)).tolist()
    else:
        got = hash_uint32(np.array(raw, dtype=np.int32).view(np.uint32)).tolist()
    assert got == expected
