"""ORDER BY one column (LIMIT n) over the batches of a columnar scan.

With a limit, each batch contributes only its own best ``n`` rows
(``np.argpartition``), so memory stays bounded by ``n`` rows per batch
whatever the table's size; without one, every row is kept.  The final order
is Postgres's: NULLs first or last as asked, NaN above every other float,
ties in no particular order (as in Postgres).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from orochi_fdw.bridge.api import SortKey
from orochi_fdw.bridge.batch import Batch, Column, WireKind

#: wire kinds whose values order as their numbers do
ORDERABLE = {WireKind.INT16, WireKind.INT32, WireKind.INT64, WireKind.FLOAT32, WireKind.FLOAT64,
             WireKind.DATE, WireKind.TIMESTAMP, WireKind.TIME, WireKind.BOOL,
             WireKind.DECIMAL64}  # scaled numerics; NaN (int64 max) last, as numeric sorts it


def take(col: Column, idx: np.ndarray) -> Column:
    """Rows ``idx`` of a column (any layout)."""
    validity = None if col.validity is None else col.validity[idx]
    if not col.kind.is_variable_width:
        return Column(col.kind, col.values[idx], validity)
    starts = col.offsets[idx]
    lengths = col.offsets[idx + 1] - starts
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # byte positions: for each output byte, its source position
    src = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return Column(col.kind, col.values[src], validity, offsets)


def concat(cols: list[Column]) -> Column:
    """Columns of one kind, one after the other."""
    kind = cols[0].kind
    if len(cols) == 1:
        return cols[0]
    validity = None
    if any(c.validity is not None for c in cols):
        validity = np.concatenate([c.validity if c.validity is not None else np.ones(len(c), np.uint8)
                                   for c in cols])
    if not kind.is_variable_width:
        return Column(kind, np.concatenate([c.values for c in cols]), validity)
    data = np.concatenate([c.values[c.offsets[0]:c.offsets[-1]] for c in cols])
    parts, base = [np.zeros(1, dtype=np.int64)], 0
    for c in cols:
        parts.append(c.offsets[1:] - c.offsets[0] + base)
        base += int(c.offsets[-1] - c.offsets[0])
    return Column(kind, data, validity, np.concatenate(parts))


def _keys(col: Column, key: SortKey) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a class (NULLs first or last, NaN above all floats) and a
    value, both ascending in the order ``key`` asks for; exact (int64 for
    integers and times, bitwise complement to reverse them)."""
    values = col.values
    if values.dtype.kind == "f":
        nan = np.isnan(values)
        vals = np.where(nan, 0.0, values.astype(np.float64))
        if key.is_reversed:
            vals = -vals
        cls = np.where(nan, 1 if key.is_reversed else 3, 2)
    else:
        vals = values.astype(np.int64)
        if key.is_reversed:
            vals = ~vals
        cls = np.full(len(values), 2)
    cls = np.where(col.null_mask(), 0 if key.nulls_first else 4, cls)
    return cls, vals


def _order(col: Column, key: SortKey) -> np.ndarray:
    """Row positions in the order ``key`` asks for."""
    cls, vals = _keys(col, key)
    return np.lexsort((vals, cls))


def _best(col: Column, key: SortKey, limit: int) -> np.ndarray:
    """Positions of the first ``limit`` rows in ``key`` order, unordered:
    whole classes while they fit, then ``np.argpartition`` inside the class
    that straddles the limit (linear time)."""
    cls, vals = _keys(col, key)
    parts = []
    remaining = limit
    for c in np.unique(cls):
        members = np.flatnonzero(cls == c)
        if len(members) <= remaining:
            parts.append(members)
            remaining -= len(members)
        else:
            parts.append(members[np.argpartition(vals[members], remaining - 1)[:remaining]])
            remaining = 0
        if remaining == 0:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class SortedScan:
    """The iterator of a sorted scan: :func:`sorted_batches` over ``scan``,
    with the scan's EXPLAIN ANALYZE lines."""

    def __init__(self, scan: Iterable[Batch], key: SortKey, columns: list[str], limit: int | None):
        self._scan = scan
        self._rows = sorted_batches(scan, key, columns, limit)
        self._key = key
        self._limit = limit

    def __iter__(self) -> "SortedScan":
        return self

    def __next__(self) -> Batch:
        return next(self._rows)

    def explain_analyze(self) -> list[str]:
        more = getattr(self._scan, "explain_analyze", None)
        order = f"Sorted by Orochi: {self._key.attname}{' DESC' if self._key.is_reversed else ''}"
        if self._limit is not None:
            order += f" (top {self._limit})"
        return [order] + (list(more()) if more is not None else [])


def sorted_batches(batches: Iterable[Batch], key: SortKey, columns: list[str],
                   limit: int | None) -> Iterator[Batch]:
    """The rows of ``batches`` ordered by ``key`` (the first ``limit`` of
    them), as one batch of ``columns``."""
    kept: dict[str, list[Column]] = {name: [] for name in columns}
    rowids: list[np.ndarray] = []
    sort_parts: list[Column] = []
    count = 0
    for batch in batches:
        if batch.nrows == 0:
            continue
        col = batch.columns[key.attname]
        idx = np.arange(batch.nrows)
        if limit is not None and batch.nrows > limit:
            idx = _best(col, key, limit)
        sort_parts.append(take(col, idx))
        for name in columns:
            kept[name].append(take(batch.columns[name], idx))
        if batch.rowids is not None:
            rowids.append(np.asarray(batch.rowids)[idx])
        count += len(idx)
        if limit is not None and count > 4 * max(limit, 1024):
            sort_parts, kept, rowids, count = _reduce(sort_parts, kept, rowids, key, limit)
    if not sort_parts:
        return
    sort_parts, kept, rowids, count = _reduce(sort_parts, kept, rowids, key, limit)
    yield Batch(count, {name: parts[0] for name, parts in kept.items()},
                rowids=rowids[0] if rowids else None)


def _reduce(sort_parts, kept, rowids, key, limit):
    """The candidates gathered so far, reduced to the best ``limit`` (all
    if None), in order."""
    sort_col = concat(sort_parts)
    idx = _order(sort_col, key)
    if limit is not None:
        idx = idx[:limit]
    return ([take(sort_col, idx)], {n: [take(concat(p), idx)] for n, p in kept.items()},
            [np.concatenate(rowids)[idx]] if rowids else [], len(idx))

