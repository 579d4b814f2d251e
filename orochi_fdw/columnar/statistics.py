"""Aggregates answered from statistics.

``count(*)``, ``count(col)``, ``min(col)`` and ``max(col)`` of a columnar
table without WHERE or GROUP BY read the statistics a stripe keeps of each
column (rows, NULLs, min, max) instead of its values: a stripe without
deleted rows is answered from its catalog rows alone (its file is not
opened), a chunk group without deleted rows from its stripe file's footer.
With the table option ``stripe_sketches``, ``orochi.approx_count_distinct``
and ``orochi.hll_agg`` of a column are answered the same way from the
stripes' stored HyperLogLog sketches
(:mod:`~orochi_fdw.columnar.stripe_sketches`), merged into the sketch the
rows read build. What the statistics cannot answer is read and aggregated as usual: chunk
groups with deleted rows, columns a stripe does not hold in their current
type (added or retyped since), float columns holding NaN (Postgres sorts NaN
above every number, which min / max leave out), and the delta store's rows.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from orochi_fdw.bridge.batch import Batch, Column
from orochi_fdw.columnar import stripe_sketches
from orochi_fdw.columnar.scan import ColumnarScan
from orochi_fdw.columnar.types import storage_kind
from orochi_fdw.query.aggregate import _ORDERED, HashAggregator

_STATS_AGGREGATES = ("count", "min", "max")


def answerable(request: Mapping[str, Any], sketches: bool = False) -> bool:
    """Whether statistics can answer the request (no GROUP BY; only
    count(*), count(col), min and max of columns ordered as numbers, and
    with ``sketches`` (the table keeps stripe sketches) approx_count_distinct
    and hll_agg that the stored sketches can answer)."""
    if request.get("group_by"):
        return False
    for a in request["aggregates"]:
        if sketches and stripe_sketches.usable(a):
            continue
        if a.get("schema", "pg_catalog") != "pg_catalog" or a.get("distinct") or a.get("args") \
                or a.get("func") not in _STATS_AGGREGATES:
            return False
        if a.get("star"):
            continue
        if a.get("func") != "count" and a.get("arg_type_oid") not in _ORDERED:
            return False
    return bool(request["aggregates"])


class _Folded:
    """What the statistics answered so far, per aggregate."""

    def __init__(self, request: Mapping[str, Any]):
        self.specs = list(request["aggregates"])
        self.values: list[Any] = [0 if a["func"] == "count" else None for a in self.specs]
        # sketch aggregates: the merged stored sketch and its non-NULL rows
        self.sketch = [stripe_sketches.usable(a) for a in self.specs]
        self.counts = [0] * len(self.specs)

    def usable(self, stats_of, sketch_of=None) -> bool:
        """Whether every aggregate can take these rows from ``stats_of(column)``
        ((rows, nulls, min, max, has_nan), or None when unknown) and, for the
        sketch aggregates, ``sketch_of(column)`` (the stored sketch or None)."""
        for i, a in enumerate(self.specs):
            if a.get("star"):
                continue
            st = stats_of(a["column"])
            if st is None:
                return False
            if self.sketch[i]:
                if sketch_of is None or sketch_of(a["column"]) is None:
                    return False
                continue
            rows, nulls, lo, hi, has_nan = st
            if a["func"] != "count" and rows > nulls and (has_nan or lo is None or hi is None):
                return False
        return True

    def fold(self, rows: int, stats_of, sketch_of=None) -> None:
        for i, a in enumerate(self.specs):
            if a.get("star"):
                self.values[i] += rows
                continue
            n, nulls, lo, hi, _nan = stats_of(a["column"])
            if self.sketch[i]:
                sketch = sketch_of(a["column"])
                if self.values[i] is None:
                    args = list(a.get("args") or [])
                    self.values[i] = sketch.reduced(args[0] if args else stripe_sketches.PRECISION)
                else:
                    self.values[i].merge(sketch)
                self.counts[i] += n - nulls
            elif a["func"] == "count":
                self.values[i] += n - nulls
            elif n > nulls:
                v, cur = (hi, self.values[i]) if a["func"] == "max" else (lo, self.values[i])
                if cur is None or (v > cur if a["func"] == "max" else v < cur):
                    self.values[i] = v


class StatisticsAggregate:
    """Iterator of an aggregation answered from statistics where they can
    (see the module docstring), the rest aggregated from the rows."""

    def __init__(self, table, request: Mapping[str, Any]):
        self.table = table
        self.request = request
        self.agg = HashAggregator(request)
        self.folded = _Folded(request)
        self.columns = sorted(self.agg.columns)
        self.from_sketches = 0
        self._done = False

    def __iter__(self) -> "StatisticsAggregate":
        return self

    def __next__(self) -> Batch:
        if self._done:
            raise StopIteration
        self._done = True
        return self._run()

    def explain_analyze(self) -> list[str]:
        scan = getattr(self, "scan", None)
        lines = [f"Groups: {self.agg.ngroups}"]
        if any(self.folded.sketch):
            lines.append(f"Stripes Answered From Sketches: {self.from_sketches}")
        return lines + (scan.explain_analyze() if scan else [])

    def _run(self) -> Batch:
        from orochi_fdw.catalog import store

        t = self.table
        attnums = {t.columns[c].attnum for c in self.columns}
        stripes, chunk_counts = t._exclude_chunks(store.table_stripes(t.relid, attnums), [])
        self.scan = scan = ColumnarScan(t.relname, t.columns, stripes, self.columns, [],
                                        missing=t.missing_values(), rowids=False)
        scan.counters.chunks = chunk_counts  # a hypertable's: none excluded
        folded = self.folded
        sketch_columns = {a["column"] for a, s in zip(folded.specs, folded.sketch) if s}
        stored = store.column_sketches(t.relid, [t.columns[c].attnum for c in sketch_columns]) \
            if sketch_columns and stripes else {}
        for stripe in stripes:
            if stripe.delete_bitmap is None:
                def stats(name, stripe=stripe):
                    column = t.columns[name]
                    rec = stripe.columns.get(column.attnum)
                    if rec is None or rec.kind != storage_kind(column):
                        return None
                    return stripe.row_count, rec.null_count, rec.min_value, rec.max_value, rec.has_nan

                loaded: dict[str, Any] = {}

                def sketch_of(name, stripe=stripe, loaded=loaded):
                    if name not in loaded:
                        data = stored.get((stripe.stripe_id, t.columns[name].attnum))
                        loaded[name] = None if data is None else \
                            stripe_sketches.load(stripe.stripe_id, name, data)
                    return loaded[name]
                if folded.usable(stats, sketch_of):
                    folded.fold(stripe.row_count, stats, sketch_of)
                    if any(folded.sketch):
                        self.from_sketches += 1
                    else:
                        scan.counters.stripes_from_stats += 1
                    continue
            scan.counters.stripes += 1
            reader = scan._open(stripe)
            try:
                for group in scan.chunk_groups(stripe, reader):
                    whole = group.deleted.count_in(group.first_row, group.first_row + group.nrows) == 0

                    def gstats(name, group=group):
                        st = group.stats(name)
                        return None if st is None else (st.row_count, st.null_count, st.min, st.max,
                                                        st.has_nan)
                    if whole and folded.usable(gstats):
                        folded.fold(group.nrows, gstats)
                        scan.counters.chunk_groups -= 1  # counted as read when yielded
                        scan.counters.chunk_groups_from_stats += 1
                        continue
                    cols = {name: group.column(name) for name in self.columns}
                    batch = scan._apply_deletes(stripe, group.deleted, group.first_row,
                                                Batch(group.nrows, cols))
                    if batch is not None:
                        scan.counters.rows += batch.nrows
                        self.agg.add(batch)
            finally:
                reader.close()
        for batch in t.delta.scan(self.columns, []):
            scan.counters.delta_rows += batch.nrows
            self.agg.add(batch)
        for i, acc in enumerate(self.agg._aggs):
            if folded.sketch[i] and folded.values[i] is not None:
                acc.grow(1)
                acc.states[0].merge(folded.values[i])
                acc.counts[0] += folded.counts[i]
        return self._combined(self.agg.result())

    def _combined(self, rows: Batch) -> Batch:
        """The aggregator's one row with what the statistics answered."""
        out = {}
        for o in self.request["outputs"]:
            i = o["index"]
            col = rows.columns[o["name"]]
            a, v = self.folded.specs[i], self.folded.values[i]
            if self.folded.sketch[i]:
                out[o["name"]] = col  # merged into the aggregator's sketch
                continue
            if a["func"] == "count":
                out[o["name"]] = Column(col.kind, np.asarray(col.values) + v, col.validity)
                continue
            has = col.validity is None or bool(col.validity[0])
            if v is None:
                out[o["name"]] = col
                continue
            if has:
                cur = col.values[0].item()
                if a["func"] == "max" and cur != cur:  # NaN: above every number
                    v = cur
                elif (cur > v) if a["func"] == "max" else (cur < v):
                    v = cur
            out[o["name"]] = Column(col.kind, np.array([v], dtype=np.asarray(col.values).dtype), None)
        return Batch(1, out)
