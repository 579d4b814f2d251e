"""Row filtering of columnar scans with the filter kernels.

The quals the table applies exactly (:func:`orochi_fdw.query.predicates.bind_quals`)
are evaluated on every batch the scan produces (stripe chunk groups and delta
rows alike) into a row mask; only the selected rows of the needed columns go
on, and Postgres does not check those quals again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orochi_fdw.bridge.api import ColumnDefinition
from orochi_fdw.bridge.batch import Batch, Column, WireKind
from orochi_fdw.columnar.pruning import CollationInfo
from orochi_fdw.columnar.scan import FilteredBatch
from orochi_fdw.columnar.topn import take
from orochi_fdw.query.predicates import (ALWAYS_TRUE, BooleanExpression, CollationPolicy, DictionaryColumn, evaluate,
                                         selection)


def collation_policy(info: CollationInfo) -> CollationPolicy:
    """The predicate layer's view of the database's collations."""
    return CollationPolicy(default_collation="C" if info.default_is_c else "",
                           utf8=info.utf8, is_deterministic=info.deterministic)


#: how text from a stripe written before ALTER COLUMN ... TYPE becomes a number
_PARSE = {WireKind.INT16: int, WireKind.INT32: int, WireKind.INT64: int,
          WireKind.FLOAT32: float, WireKind.FLOAT64: float}


def _as_kind(col: Column, kind: WireKind) -> Column:
    """A column a stripe delivered as text (its type was changed since) in
    the layout of the column's current numeric type."""
    parse = _PARSE[kind]
    return Column.from_pylist(kind, [None if v is None else parse(v) for v in col.to_pylist()])


class FilteredScan:
    """Batches of ``scan`` reduced to the rows where ``expr`` is true, with
    only the ``needed`` columns (row ids kept).  Columns of numeric type
    that older stripes deliver as text (ALTER COLUMN ... TYPE since) are
    converted first, so filters and aggregates see one layout per column.

    Args:
        scan: the batches.
        expr: what to keep (the exact quals).
        needed: the columns to pass on.
        kinds: each column's layout for its current type
            (:func:`~orochi_fdw.columnar.types.scan_wire_kind`).
        columns: the table's columns (numeric text, from the delta store,
            becomes DECIMAL64 at its column's scale).
        filter_columns: the columns the filter reads, when the scan may
            apply it to a chunk group before decoding the others
            (:meth:`mask`).
    """

    def __init__(self, scan: Any, expr: BooleanExpression, needed: list[str],
                 kinds: dict[str, WireKind] | None = None,
                 columns: dict[str, ColumnDefinition] | None = None, filter_columns: Any = None):
        self.scan = scan
        self.expr = expr
        self.needed = needed
        self.numeric = {n: k for n, k in (kinds or {}).items()
                        if k in _PARSE or k is WireKind.DECIMAL64}
        self.columns = columns or {}
        self.removed = 0
        #: the columns the filter reads, when the scan may apply it to a
        #: chunk group before decoding its other columns (:meth:`select`)
        self.filters = sorted(filter_columns) if filter_columns and expr is not ALWAYS_TRUE else []

    def mask(self, column: Any, nrows: int, dictionary: Any = None) -> np.ndarray:
        """The rows of ``nrows`` that pass, as a uint8 mask (``column(name)``:
        a column of all of them; ``dictionary(name)``: a text column in its
        dictionary form, or None, which the filter evaluates once per
        distinct value without decoding the rows)."""
        cols = {}
        for n in self.filters:
            coded = None if dictionary is None or n in self.numeric else dictionary(n)
            if coded is not None:
                cols[n] = DictionaryColumn(*coded)
                continue
            col = column(n)
            if n in self.numeric and col.kind.is_variable_width:
                col = self._convert(n, col)
            cols[n] = col
        return evaluate(self.expr, cols, nrows)

    def _convert(self, name: str, col: Column) -> Column:
        kind = self.numeric[name]
        if kind is WireKind.DECIMAL64:
            from orochi_fdw.columnar.types import cstring_to_decimal

            return cstring_to_decimal(col, self.columns[name])
        return _as_kind(col, kind)

    def _normalized(self, batch: Batch) -> Batch:
        changed = {n: self._convert(n, c) for n, c in batch.columns.items()
                   if n in self.numeric and c.kind.is_variable_width}
        if not changed:
            return batch
        return Batch(batch.nrows, {**batch.columns, **changed}, rowids=getattr(batch, "rowids", None))

    def __iter__(self) -> "FilteredScan":
        return self

    def __next__(self) -> Batch:
        while True:
            batch = next(self.scan)
            filtered = isinstance(batch, FilteredBatch)  # filtered by the scan already (select)
            batch = self._normalized(batch)
            if filtered:
                return Batch(batch.nrows, {n: batch.columns[n] for n in self.needed}, rowids=batch.rowids)
            rowids = getattr(batch, "rowids", None)
            if self.expr is ALWAYS_TRUE or batch.nrows == 0:
                return Batch(batch.nrows, {n: batch.columns[n] for n in self.needed}, rowids=rowids)
            mask = evaluate(self.expr, batch.columns, batch.nrows)
            idx = selection(mask)
            self.removed += batch.nrows - len(idx)
            if len(idx) == 0:
                continue
            if len(idx) == batch.nrows:
                return Batch(batch.nrows, {n: batch.columns[n] for n in self.needed}, rowids=rowids)
            return Batch(len(idx), {n: take(batch.columns[n], idx) for n in self.needed},
                         rowids=None if rowids is None else rowids[idx])

    def explain_analyze(self) -> list[str]:
        more = getattr(self.scan, "explain_analyze", None)
        lines = list(more()) if more is not None else []
        if self.expr is not ALWAYS_TRUE:
            lines.append(f"Rows Removed by Orochi Filter: {self.removed}")
        return lines
