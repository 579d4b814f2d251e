"""Row estimates and costs of scans of columnar tables (docs/query.md,
"Estimates and costs").

Rows come from Postgres: the bridge hands over the selectivity its own
estimators give the scan's conditions (``clauselist_selectivity`` over the
statistics ANALYZE gathered, as postgres_fdw without remote estimates), and
the table's row count is the catalog's (exact: live rows of the stripes plus
the delta store).  Costs come from here, in Postgres's units, and follow the
work a scan does:

- a fixed start (the call into Python, binding the quals) and a little per
  stripe file opened;
- reading: the compressed bytes of the columns read (needed and filtered
  columns only) in the stripes min/max pruning keeps, as sequential pages;
- decoding: per value of each column read, per row of the kept stripes;
- filtering: per pushed qual per row read (vectorized kernels);
- handing rows to Postgres: ``cpu_tuple_cost`` per row returned plus a
  little per column.

A parameterized scan (a join condition ``column = outer.value`` evaluated at
each rescan) reads only the chunk groups whose min/max can hold the value.
How many that is follows from how clustered the column is: for each stripe,
the chunk groups' [min, max] ranges from the stripe file's metadata (files
are immutable, so this is cached by path), from which the expected rows one
point lookup reads is computed.  A column whose chunk groups all span the
whole range (not clustered) gains nothing: no parameterized path is offered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orochi_fdw.catalog import store

#: Postgres's defaults of the same names (cost units: one sequential page read)
SEQ_PAGE_COST = 1.0
CPU_TUPLE_COST = 0.01
CPU_OPERATOR_COST = 0.0025

#: entering Python, reading the catalog, binding the quals (about 0.7 ms)
SCAN_STARTUP_COST = 40.0
#: a rescan (a parameterized scan's, per outer row; about 1 ms measured): the quals' new values,
#: pruning over cached metadata; the stripe list is not read again
RESCAN_STARTUP_COST = 35.0
#: opening a stripe file and reading its metadata
STRIPE_COST = 1.0
#: decoding one value of one column (vectorized codecs)
DECODE_VALUE_COST = 0.0008
#: one pushed qual on one row (vectorized filter kernels)
FILTER_VALUE_COST = 0.0004
#: converting one value of a returned row into a Datum
OUTPUT_VALUE_COST = 0.0010
#: handing a batch of rows to Postgres (one per chunk group read)
BATCH_COST = 1.0

#: a parameterized path is offered only when one scan reads at most this
#: share of the rows a full scan reads
PARAM_USEFUL_FRACTION = 0.25
#: stripes whose chunk group ranges are looked at to judge clustering
CLUSTER_SAMPLE_STRIPES = 8

_cluster_cache: dict[tuple[str, str], list[tuple[float, float, int]] | None] = {}


@dataclass
class ScanShape:
    """What a scan would read."""

    total_rows: float  # live rows in the table (stripes + delta)
    scanned_rows: float  # rows of the stripes kept by pruning (+ delta)
    stripes: int  # stripes kept
    read_bytes: float  # compressed bytes of the columns read, in the kept stripes
    read_columns: int
    pushed_quals: int


def scan_cost(shape: ScanShape, rows: float, out_columns: int, startup: float = SCAN_STARTUP_COST
              ) -> tuple[float, float]:
    """(startup, total) of a scan that reads ``shape`` and returns ``rows``."""
    run = (shape.stripes * STRIPE_COST
           + shape.read_bytes / 8192.0 * SEQ_PAGE_COST
           + shape.scanned_rows * (shape.read_columns * DECODE_VALUE_COST + shape.pushed_quals * FILTER_VALUE_COST)
           + rows * (CPU_TUPLE_COST + out_columns * OUTPUT_VALUE_COST)
           + (BATCH_COST * max(1.0, shape.scanned_rows / 10_000.0) if rows > 0 else 0.0))
    return startup, startup + run


def read_bytes(stripes: list[store.StripeRecord], attnums: set[int]) -> float:
    """Compressed bytes of columns ``attnums`` in ``stripes`` (a column the
    catalog has no size for counts 8 bytes a row)."""
    total = 0.0
    for s in stripes:
        for a in attnums:
            rec = s.columns.get(a)
            total += rec.compressed_bytes if rec is not None and rec.compressed_bytes else 8 * s.live_rows
    return total


def _chunk_ranges(stripe: store.StripeRecord, column_name: str) -> list[tuple[float, float, int]] | None:
    """The (min, max, rows) of each chunk group of a column in a stripe
    file, as numbers; None when they are not numbers (or the file cannot be
    read: then nothing is concluded)."""
    key = (stripe.file_path, column_name)
    if key in _cluster_cache:
        return _cluster_cache[key]
    from orochi_fdw.storage.stripe_format import StripeReader

    ranges: list[tuple[float, float, int]] | None = []
    try:
        reader = StripeReader(stripe.file_path)
        try:
            meta = reader.metadata
            ci = meta.column_index(column_name)
            for g in range(len(meta.chunk_groups)):
                st = meta.chunks[g][ci].stats
                if st.min is None or st.max is None:
                    continue  # all NULL: never matches an equality
                ranges.append((float(st.min), float(st.max), int(st.row_count)))
        finally:
            reader.close()
    except Exception:
        ranges = None
    if len(_cluster_cache) > 4096:
        _cluster_cache.clear()
    _cluster_cache[key] = ranges
    return ranges


def point_lookup_rows(stripes: list[store.StripeRecord], attnum: int) -> float | None:
    """Expected rows a scan with ``column = value`` reads when the value is
    drawn from the column's range: per stripe, the chance the value falls in
    its range times the rows of the chunk groups whose range holds it.  None
    when the column's bounds are not numbers."""
    sample = stripes
    if len(stripes) > CLUSTER_SAMPLE_STRIPES:
        step = len(stripes) / CLUSTER_SAMPLE_STRIPES
        sample = [stripes[int(i * step)] for i in range(CLUSTER_SAMPLE_STRIPES)]
    per_stripe: list[tuple[float, float, float]] = []  # (lo, hi, expected rows read given a hit)
    lo_all, hi_all = math.inf, -math.inf
    for s in sample:
        rec = s.columns.get(attnum)
        if rec is None:
            continue
        ranges = _chunk_ranges(s, rec.column_name)
        if ranges is None:
            return None
        if not ranges:
            continue
        lo = min(r[0] for r in ranges)
        hi = max(r[1] for r in ranges)
        width = hi - lo + 1.0
        # a value uniform over [lo, hi]: each chunk group is read with the
        # chance its range is hit
        expected = sum(r[2] * min(1.0, (r[1] - r[0] + 1.0) / width) for r in ranges)
        per_stripe.append((lo, hi, expected))
        lo_all, hi_all = min(lo_all, lo), max(hi_all, hi)
    if not per_stripe:
        return 0.0
    width_all = hi_all - lo_all + 1.0
    scale = len(stripes) / len(sample)
    return scale * sum(min(1.0, (hi - lo + 1.0) / width_all) * e for lo, hi, e in per_stripe)
