"""Aggregate pushdown for columnar tables (docs/aggregate-pushdown.md).

The table's own scan produces the batches (stripes and chunk groups pruned,
rows filtered exactly by the quals the table applies, deleted rows left out,
delta rows included); :class:`~orochi_fdw.query.aggregate.HashAggregator`
folds them into one row per group with the aggregation kernels.  A request
is accepted only when the aggregator computes it exactly as Postgres would
and every qual is applied exactly by the scan, since nothing is rechecked
above a pushed-down aggregation.
"""

from __future__ import annotations

from typing import Any, Mapping

from orochi_fdw.bridge.api import Qual, method_takes
from orochi_fdw.bridge.batch import Batch
from orochi_fdw.query.aggregate import HashAggregator, supports

#: groups assumed for planning per grouping key when nothing better is known
_GROUPS_PER_KEY = 200
#: how much cheaper the kernels are than the executor's Agg over the same scan
_KERNEL_SPEEDUP = 5.0


class AggregatePushdown:
    """Mixin for a wrapper whose ``execute`` yields exact batches: it adds
    ``can_aggregate`` and ``aggregate`` for the bridge."""

    def _with_scales(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The request with the scale of each numeric column stored as scaled
        int64 (the scans hand those as DECIMAL64), which the aggregator needs."""
        from orochi_fdw.columnar.types import decimal_type

        def scale(name: Any) -> int | None:
            column = self.columns.get(name) if isinstance(name, str) else None
            ps = None if column is None else decimal_type(column)
            return None if ps is None else ps[1]

        aggs = [dict(a, arg_scale=scale(a.get("column"))) if a.get("arg_type_oid") == 1700 else a
                for a in request.get("aggregates", ())]
        def stripped(name: Any) -> bool:
            from orochi_fdw.columnar.types import storage_kind

            column = self.columns.get(name) if isinstance(name, str) else None
            return column is not None and storage_kind(column) == "char"

        keys = []
        for g in request.get("group_by", ()):
            if g.get("kind") == "column" and g.get("type_oid") == 1700:
                g = dict(g, scale=scale(g.get("column")))
            elif g.get("kind") == "column" and g.get("type_oid") == 1042:
                g = dict(g, stripped=stripped(g.get("column")))
            keys.append(g)
        return {**request, "aggregates": aggs, "group_by": keys}

    def can_aggregate(self, request: Mapping[str, Any], quals: list[Qual]) -> dict[str, float] | None:
        request = self._with_scales(request)
        if not supports(request):
            return None
        if quals and not all(self.exact_quals(quals)):
            return None
        from orochi_fdw.query import estimates

        columns = sorted(HashAggregator(request).columns)
        # what the scan reads and decodes, without handing rows to Postgres
        shape, _ = self.scan_shape(quals, columns)
        rows = shape.scanned_rows
        groups = 1.0 if not request["group_by"] else min(max(rows, 1.0),
                                                         float(_GROUPS_PER_KEY ** len(request["group_by"])))
        startup, total = estimates.scan_cost(shape, 0.0, 0)
        cost = startup + (total - startup) / _KERNEL_SPEEDUP
        return {"rows": groups, "startup_cost": cost, "total_cost": cost + groups * 0.01}

    def aggregate(self, request: Mapping[str, Any], quals: list[Qual] | None,
                  scan_cache: dict | None = None) -> "AggregateScan":
        """The aggregation over the rows the quals let through; ``quals`` is
        None when none can (a comparison with NULL): the result over no rows.
        ``scan_cache``: the scan node's, kept across its rescans (a
        correlated subquery's aggregation, run once per outer row), handed
        to ``execute`` (its rescan index)."""
        agg = HashAggregator(self._with_scales(request))
        if quals is not None and agg.range_columns:
            agg.hint_ranges(self.value_ranges(agg.range_columns))
        return AggregateScan(agg, iter(()) if quals is None else
                             self._execute_for_aggregate(quals, sorted(agg.columns), scan_cache))

    def _execute_for_aggregate(self, quals: list[Qual], columns: list[str], scan_cache: dict | None = None):
        """The scan an aggregation folds: without row ids when the
        wrapper's execute() can leave them out (nothing above reads them),
        with the scan node's cache when it takes one."""
        kwargs: dict[str, Any] = {}
        if method_takes(self, "rowids"):
            kwargs["rowids"] = False
        if scan_cache is not None and method_takes(self, "scan_cache"):
            kwargs["scan_cache"] = scan_cache
        return self.execute(quals, columns, **kwargs)

    def value_ranges(self, columns: list[str]) -> dict[str, tuple[int, int]]:
        """The least and greatest value of integer ``columns`` that the
        table's statistics know of (values outside are still possible: the
        aggregator counts them exactly); none by default."""
        return {}


class AggregateScan:
    """Iterator of a pushed-down aggregation: folds the scan's batches in on
    first use and yields the groups as one batch; EXPLAIN ANALYZE shows what
    the scan read."""

    def __init__(self, aggregator: HashAggregator, scan: Any):
        self._agg = aggregator
        self._scan = scan
        self._done = False

    def __iter__(self) -> "AggregateScan":
        return self

    def __next__(self) -> Batch:
        if self._done:
            raise StopIteration
        for batch in self._scan:
            self._agg.add(batch)
        self._done = True
        return self._agg.result()

    def explain_analyze(self) -> list[str]:
        lines = [f"Groups: {self._agg.ngroups}"]
        lines += [f"Distinct Bitmap: {column} ({bits} bits)" for column, bits in self._agg.bitmaps]
        if self._agg.dense_key is not None:
            lines.append("Group Ids By Value: {} ({} values)".format(*self._agg.dense_key))
        more = getattr(self._scan, "explain_analyze", None)
        return lines + (list(more()) if more is not None else [])
