"""Hypothesis inputs of the integer aggregation kernels (the dense GROUP BY
numbering and the count(DISTINCT) bitmap): batches of values near a range,
with the integer types' extremes, NULLs and row selections."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

#: the integer dtypes and their bounds
DTYPES = {np.int16: (-2**15, 2**15 - 1), np.int32: (-2**31, 2**31 - 1), np.int64: (-2**63, 2**63 - 1)}


def integer_batches(draw, dtype, near, max_size: int) -> list[tuple]:
    """1-3 batches of (values of ``dtype``, validity or None, selection:
    None, a uint8 mask or sorted int64 indices); values drawn from ``near``
    or the type's extremes and 0."""
    lo_t, hi_t = DTYPES[dtype]
    batches = []
    for _ in range(draw(st.integers(1, 3))):
        values = draw(st.lists(st.one_of(near, st.sampled_from([lo_t, hi_t, 0])), max_size=max_size))
        n = len(values)
        validity = draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=n, max_size=n)))
        selection = draw(st.one_of(
            st.none(), st.lists(st.booleans(), min_size=n, max_size=n).map(lambda m: np.array(m, np.uint8)),
            st.lists(st.integers(0, max(n - 1, 0)), max_size=n if n else 0, unique=True).map(
                lambda ix: np.array(sorted(ix), np.int64))))
        batches.append((np.array(values, dtype=dtype),
                        None if validity is None else np.array(validity, np.uint8), selection))
    return batches


def fill_pair(db, columns: str, parts, delta, chunk: int, edit=None) -> None:
    """A columnar table ``c`` and a heap table ``h`` (both made anew) with the
    same rows: each of ``parts`` by one COPY (a stripe of ``c``), then
    ``edit(table)`` (DELETE / UPDATE), then ``delta`` one INSERT per row (the
    delta store)."""
    db.execute("DROP FOREIGN TABLE IF EXISTS c; DROP TABLE IF EXISTS h")
    db.execute(f"CREATE FOREIGN TABLE c ({columns}) SERVER orochi "
               f"OPTIONS (chunk_group_size '{chunk}', delta_row_limit '3')")
    db.execute(f"CREATE TABLE h ({columns})")
    for table in ("c", "h"):
        for part in parts:
            with db.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for row in part:
                    copy.write_row(row)
        if edit is not None:
            edit(table)
        for row in delta:
            marks = ", ".join(["%s"] * len(row))
            db.execute(f"INSERT INTO {table} VALUES ({marks})", row)
