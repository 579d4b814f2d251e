"""Distribution hashes: PostgreSQL's own extended hash functions.

The hash of a distribution value is the type's default hash operator
class's extended hash function (support function 2: ``hashint4extended``,
``hashtextextended`` ...) with seed 0, cut to its low 32 bits as a signed
int32.  With seed 0 those bits are what the standard hash function returns,
the value Citus hashes with, so a row lands in the shard whose range Citus
would give it.

:class:`HashFunction` computes them on the coordinator: in SQL (one
statement for a whole batch of values) for every type, and for the fixed
width kinds the bridge's batches carry (smallint, integer, bigint, date,
timestamp, time, boolean) with a numpy transcription of ``hash_uint32``
(Bob Jenkins' lookup3, ``src/common/hashfn.c``), which tests check against
the SQL functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.batch import Column, WireKind
from orochi_fdw.cluster import values as V
from orochi_fdw.cluster.errors import DistributionError

# ------------------------------------------------------------ lookup3 in numpy


def _rot(x: np.ndarray, k: int) -> np.ndarray:
    return (x << np.uint32(k)) | (x >> np.uint32(32 - k))


def hash_uint32(keys: np.ndarray) -> np.ndarray:
    """PostgreSQL's hash_uint32 (= the low 32 bits of hash_uint32_extended
    with seed 0) of each uint32 key, as int32."""
    k = np.asarray(keys).astype(np.uint32, copy=False)
    with np.errstate(over="ignore"):
        a = np.full(k.shape, 0x9E3779B9 + 4 + 3923095, dtype=np.uint32)
        b = a.copy()
        c = a.copy()
        a = a + k
        # final(a, b, c)
        c ^= b
        c -= _rot(b, 14)
        a ^= c
        a -= _rot(c, 11)
        b ^= a
        b -= _rot(a, 25)
        c ^= b
        c -= _rot(b, 16)
        a ^= c
        a -= _rot(c, 4)
        b ^= a
        b -= _rot(a, 14)
        c ^= b
        c -= _rot(b, 24)
    return c.view(np.int32)


def hash_int8(values: np.ndarray) -> np.ndarray:
    """hashint8: the two halves folded (the high half inverted for negative
    values) and hashed as one uint32."""
    v = np.asarray(values, dtype=np.int64)
    u = v.view(np.uint64)
    lo = (u & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (u >> np.uint64(32)).astype(np.uint32)
    lo ^= np.where(v >= 0, hi, ~hi)
    return hash_uint32(lo)


# ------------------------------------------------------------ per type


@dataclass(frozen=True)
class HashFunction:
    """The distribution hash of one column type.

    Attributes:
        type_oid: the distribution column's type.
        type_name: its name (format_type, no modifiers).
        function: the extended hash function, schema-qualified and quoted.
        fast_kind: the wire kind the numpy path hashes, or None.
    """

    type_oid: int
    type_name: str
    function: str
    fast: str | None = None
    #: the function's argument made of a value v of the column's type (the
    #: support function of some types takes another type's raw value)
    argument: str = "v"

    def hash_texts(self, texts: list[str | None]) -> list[int | None]:
        """Hashes of values in text form (None for NULL), in SQL."""
        if not texts:
            return []
        rows = spi.execute(
            f"SELECT ({self.function}({self.argument}, 0) & 4294967295)::bigint"
            f"  FROM unnest($1::text[]::{self.type_name}[])"
            " WITH ORDINALITY AS u(v, i) ORDER BY i", [texts], types=["text[]"], read_only=False).rows
        return [None if r[0] is None else _to_int32(int(r[0])) for r in rows]

    def hash_values(self, values: list) -> list[int | None]:
        """Hashes of Python values of the column's type."""
        return self.hash_texts([V.to_text(v) for v in values])

    def hash_column(self, column: Column, nrows: int) -> np.ndarray:
        """int32 hashes of a batch column (NULL rows hash as 0: callers
        refuse NULLs first)."""
        kind = column.kind
        if self.fast is not None and kind == WireKind[self.fast]:
            values = np.asarray(column.values)
            if kind in (WireKind.INT64, WireKind.TIMESTAMP, WireKind.TIME):
                return hash_int8(values.view(np.int64))
            if kind == WireKind.BOOL:
                return hash_uint32(values.astype(np.uint8).astype(np.int32).view(np.uint32))
            return hash_uint32(values.astype(np.int32).view(np.uint32))
        texts = column_texts(column, nrows)
        out = self.hash_texts(texts)
        return np.array([0 if h is None else h for h in out], dtype=np.int32)


def _to_int32(h: int) -> int:
    h &= 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


#: the hash functions the numpy path transcribes, by the wire kind it reads
_FAST = {
    "hashint2extended": "INT16", "hashint4extended": "INT32", "hashint8extended": "INT64",
    "timestamp_hash_extended": "TIMESTAMP", "time_hash_extended": "TIME",
    "hashcharextended": "BOOL",
}

#: (support function, column type) whose function takes another type: the
#: column's raw value as that type (dates are int4 days since 2000-01-01,
#: infinities at the ends; a boolean is a "char" 0 or 1; timestamptz the
#: timestamp of the same microseconds)
_ARGUMENTS = {
    ("hashint4extended", "date"): ("CASE WHEN v = 'infinity' THEN 2147483647 WHEN v = '-infinity'"
                                   " THEN -2147483648 ELSE v - date '2000-01-01' END"),
    ("hashcharextended", "boolean"): 'v::integer::"char"',
    ("timestamp_hash_extended", "timestamp with time zone"): "v AT TIME ZONE 'UTC'",
}

_LOOKUP = """
WITH t AS (
    SELECT ty.oid, CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END AS base
      FROM pg_catalog.pg_type ty WHERE ty.oid = $1
), candidates AS (
    SELECT p.amproc, n.nspname::text AS nsp, pr.proname::text AS name,
           CASE WHEN c.opcintype = t.base THEN 0 ELSE 1 END AS rank
      FROM t
      JOIN pg_catalog.pg_type bt ON bt.oid = t.base
      JOIN pg_catalog.pg_opclass c ON c.opcdefault
      JOIN pg_catalog.pg_am a ON a.oid = c.opcmethod AND a.amname = 'hash'
      JOIN pg_catalog.pg_amproc p ON p.amprocfamily = c.opcfamily AND p.amprocnum = 2
           AND p.amproclefttype = c.opcintype AND p.amprocrighttype = c.opcintype
      JOIN pg_catalog.pg_proc pr ON pr.oid = p.amproc
      JOIN pg_catalog.pg_namespace n ON n.oid = pr.pronamespace
     WHERE c.opcintype = t.base
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast k WHERE k.castsource = t.base
                    AND k.casttarget = c.opcintype AND k.castmethod = 'b')
        OR (c.opcintype = 'pg_catalog.anyenum'::regtype AND bt.typtype = 'e')
        OR (c.opcintype = 'pg_catalog.anyrange'::regtype AND bt.typtype = 'r')
        OR (c.opcintype = 'pg_catalog.anyarray'::regtype AND bt.typcategory = 'A')
)
SELECT nsp, name, pg_catalog.format_type($1, NULL) FROM candidates ORDER BY rank LIMIT 1
"""

_functions: dict[int, HashFunction] = {}


def hash_function(type_oid: int) -> HashFunction:
    """The distribution hash of a column type.

    Raises:
        DistributionError: the type has no default hash operator class with
            an extended hash function (SQLSTATE 42883).
    """
    fn = _functions.get(type_oid)
    if fn is not None:
        return fn
    rows = spi.execute(_LOOKUP, [type_oid], types=["oid"]).rows
    if not rows:
        name = spi.execute("SELECT pg_catalog.format_type($1, NULL)", [type_oid], types=["oid"]).scalar()
        raise DistributionError(
            f"could not identify an extended hash function for type {name}", "42883",
            detail="A distribution column needs a type with a default hash operator class.",
            hint="Distribute by a column of a type such as integer, bigint, text, uuid or date.")
    nsp, name, type_name = rows[0]
    function = f"{spi.quote_ident(nsp)}.{spi.quote_ident(name)}"
    fast = _FAST.get(name) if nsp == "pg_catalog" else None
    argument = _ARGUMENTS.get((name, type_name), "v")
    if name == "hashint4extended" and type_name == "date":
        fast = "DATE"
    fn = HashFunction(int(type_oid), type_name, function, fast, argument)
    _functions[type_oid] = fn
    return fn


def column_texts(column: Column, nrows: int) -> list[str | None]:
    """A batch column's values in text form (None for NULL)."""
    from orochi_fdw.cluster.copyformat import column_text_fields

    data, offsets, nulls = column_text_fields(column, nrows)
    raw = data.tobytes()
    out: list[str | None] = []
    offs = offsets.tolist()
    isnull = nulls.tolist() if nulls is not None else None
    for i in range(nrows):
        if isnull is not None and isnull[i]:
            out.append(None)
        else:
            out.append(raw[offs[i]:offs[i + 1]].decode("utf-8"))
    return out
