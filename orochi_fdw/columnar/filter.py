"""Row filtering of columnar scans with the filter kernels.

The quals the table applies exactly (:func:`orochi_fdw.query.predicates.bind_quals`)
are evaluated on every batch the scan produces (stripe chunk groups and delta
rows alike) into a row mask; only the selected rows of the needed columns go
on, and Postgres does not check those quals again.
"""

from __future__ import annotations

from typing import Any

from orochi_fdw.bridge.batch import Batch
from orochi_fdw.columnar.pruning import CollationInfo
from orochi_fdw.columnar.topn import take
from orochi_fdw.query.predicates import ALWAYS_TRUE, BooleanExpression, CollationPolicy, evaluate, selection


def collation_policy(info: CollationInfo) -> CollationPolicy:
    """The predicate layer's view of the database's collations."""
    return CollationPolicy(default_collation="C" if info.default_is_c else "",
                           utf8=info.utf8, is_deterministic=info.deterministic)


class FilteredScan:
    """Batches of ``scan`` reduced to the rows where ``expr`` is true, with
    only the ``needed`` columns (row ids kept)."""

    def __init__(self, scan: Any, expr: BooleanExpression, needed: list[str]):
        self.scan = scan
        self.expr = expr
        self.needed = needed
        self.removed = 0

    def __iter__(self) -> "FilteredScan":
        return self

    def __next__(self) -> Batch:
        while True:
            batch = next(self.scan)
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
