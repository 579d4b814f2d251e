"""HyperLogLog sketches of a stripe's columns, kept in the catalog
(``orochi.columnar_stripe_columns.hll``) for tables with the option
``stripe_sketches 'true'``.

A sketch is built when the stripe is written (INSERT, COPY, and the stripes
that compaction, UPDATE and DELETE write anew), from the values handed to
the stripe writer, in the form a scan hands them to the pushed-down
aggregation, at precision
:data:`PRECISION` with the hashing of ``orochi.hll_agg``: it is byte for byte
the sketch the aggregation builds by reading the stripe. An
``orochi.approx_count_distinct`` or ``orochi.hll_agg`` of a column over the
whole table (no WHERE, no GROUP BY; see :mod:`~orochi_fdw.columnar.statistics`)
then merges the sketches of the stripes without deleted rows (folded down to
the query's precision when it is lower: a sketch folded down is the sketch of
the same values at that precision) and reads only the rest: stripes with
deleted rows (a sketch cannot take values out), stripes written without a
sketch (before the option, or of a column added since), precisions above
:data:`PRECISION`, and the delta store's rows. Merging HLL sketches is exact,
so the result is the one reading every stripe gives.

A stored sketch is checked when read (its header and length); a corrupt one
is an error naming the stripe and column (22P03), never a wrong count.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from orochi_fdw.sketches.errors import CorruptSketchError

#: the precision of the stored sketches (the aggregates' default)
PRECISION = 14

_BYTEA = 17


def sketchable(column: Any) -> bool:
    """Whether a column's values get a stripe sketch: the types whose
    approx_count_distinct the pushed-down aggregation computes (not numeric
    nor char(n), whose values it does not hash as the aggregate does)."""
    from orochi_fdw.query.aggregate import _HASHABLE, BPCHAR, NUMERIC

    return column.type_oid in _HASHABLE and column.type_oid not in (NUMERIC, BPCHAR)


def build(table: Any, record: Any, columns: Mapping[str, tuple]) -> None:
    """Fill the ``hll`` of the sketchable columns of a stripe being written
    (``record``) from ``columns``, the values just handed to the stripe
    writer (name -> (values, validity) in storage form), put in the form a
    scan of the stripe would hand them to the pushed-down aggregation."""
    from orochi_fdw.bridge.batch import Batch
    from orochi_fdw.columnar.types import storage_kind, to_wire
    from orochi_fdw.query.aggregate import HashAggregator
    from orochi_fdw.storage.kinds import ColumnData, normalize_column

    names = [n for n, c in table.columns.items() if sketchable(c) and c.attnum in record.columns]
    if not names:
        return
    aggregates = [{"func": "hll_agg", "schema": "orochi", "column": n, "args": [PRECISION],
                   "arg_type_oid": table.columns[n].type_oid, "result_type_oid": _BYTEA}
                  for n in names]
    request = {"group_by": [], "aggregates": aggregates,
               "outputs": [{"kind": "aggregate", "index": i, "name": f"s{i}", "type_oid": _BYTEA}
                           for i in range(len(names))]}
    wire = {}
    for name in names:
        column = table.columns[name]
        kind = storage_kind(column)
        values, validity, _ = normalize_column(*columns[name], kind)
        wire[name] = to_wire(ColumnData(values, validity), kind, column, native=True)
    agg = HashAggregator(request)
    agg.add(Batch(record.row_count, wire))
    for name, acc in zip(names, agg._aggs):
        acc.grow(1)
        record.columns[table.columns[name].attnum].hll = acc.states[0].to_bytes()


def load(stripe_id: int, column: str, data: bytes):
    """A stored sketch, checked; CorruptSketchError (22P03) naming the
    stripe and column when it is not a valid sketch of :data:`PRECISION`."""
    from orochi_fdw.sketches.hll import Hll

    try:
        sketch = Hll.from_bytes(data)
    except CorruptSketchError as exc:
        raise CorruptSketchError(
            f'the HyperLogLog sketch of column "{column}" in stripe {stripe_id} is corrupt: {exc} '
            "(with the table option stripe_sketches 'false' the stripes are read instead)") from None
    if sketch.p != PRECISION:
        raise CorruptSketchError(
            f'the HyperLogLog sketch of column "{column}" in stripe {stripe_id} is corrupt: '
            f"precision {sketch.p}, expected {PRECISION}")
    return sketch


def usable(spec: Mapping[str, Any]) -> bool:
    """Whether stored sketches can answer an aggregate of the request:
    approx_count_distinct / hll_agg of a column at a precision up to
    :data:`PRECISION`."""
    if spec.get("schema") != "orochi" or spec.get("func") not in ("approx_count_distinct", "hll_agg"):
        return False
    args = list(spec.get("args") or [])
    p = args[0] if args else PRECISION
    return isinstance(p, int) and 4 <= p <= PRECISION and bool(spec.get("column"))


def nonnull(rows: int, nulls: int) -> np.int64:
    return np.int64(rows - nulls)
