"""Hash aggregation of column batches for aggregate pushdown.

:class:`HashAggregator` computes one pushed-down aggregation (the request dict
of docs/aggregate-pushdown.md) over batches of a scan, with the kernels of
:mod:`orochi_fdw.kernels.aggregate`, and returns one row per group as a
:class:`~orochi_fdw.bridge.batch.Batch` whose columns are the request's
outputs. :func:`supports` says which requests it computes exactly as Postgres
would; the wrapper declines the others and Postgres computes them.

Example:
    >>> import numpy as np
    >>> request = {
    ...     "group_by": [{"kind": "column", "column": "k", "type_oid": 23}],
    ...     "aggregates": [{"func": "avg", "schema": "pg_catalog", "star": False,
    ...                     "distinct": False, "column": "v", "arg_type_oid": 23,
    ...                     "result_type_oid": 1700, "args": []}],
    ...     "outputs": [{"name": "g0", "kind": "group", "index": 0, "type_oid": 23},
    ...                 {"name": "a1", "kind": "aggregate", "index": 0, "type_oid": 1700}],
    ... }
    >>> supports(request)
    True
    >>> agg = HashAggregator(request)
    >>> agg.add({"k": np.array([1, 2, 1], dtype=np.int32), "v": np.array([1, 5, 2], dtype=np.int32)})
    >>> agg.rows()
    [{'g0': 1, 'a1': Decimal('1.5000000000000000')}, {'g0': 2, 'a1': Decimal('5.0000000000000000')}]

Groups come out in order of first appearance. Semantics (result types, NULLs,
overflow errors, float NaN ordering, numeric scale) are those documented in
:mod:`orochi_fdw.kernels.aggregate`; float sums and averages equal
Postgres's when rows are added in the order Postgres would read them and
otherwise differ by summation order only.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from orochi_fdw.bridge.batch import (WIRE_DTYPES, Batch, Column, WireKind, to_column,
                                     wire_kind_for_type)
from orochi_fdw.errors import FeatureNotSupportedError, InvalidParameterError
from orochi_fdw.kernels import aggregate as K

__all__ = ["DictionaryColumn", "HashAggregator", "supports", "unsupported_reason"]

# Postgres type oids this module knows.
BOOL, BYTEA, INT8, INT2, INT4, TEXT, FLOAT4, FLOAT8 = 16, 17, 20, 21, 23, 25, 700, 701
VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ, NUMERIC = 1043, 1082, 1083, 1114, 1184, 1700
BPCHAR = 1042

_INTS = {INT2, INT4, INT8}
_FLOATS = {FLOAT4, FLOAT8}
_TEXTS = {TEXT, VARCHAR}
#: the wire kind of each column type the kernels read
_WIRE = {
    BOOL: WireKind.BOOL, INT2: WireKind.INT16, INT4: WireKind.INT32, INT8: WireKind.INT64,
    FLOAT4: WireKind.FLOAT32, FLOAT8: WireKind.FLOAT64, DATE: WireKind.DATE,
    TIME: WireKind.TIME, TIMESTAMP: WireKind.TIMESTAMP, TIMESTAMPTZ: WireKind.TIMESTAMP,
    TEXT: WireKind.TEXT, VARCHAR: WireKind.TEXT, BYTEA: WireKind.BYTEA,
    # numeric(p, s), p <= 18, as scaled int64: only when the request names the
    # scale (``arg_scale`` of an aggregate, ``scale`` of a group key), which a
    # wrapper that scans such columns adds (orochi_fdw.columnar.aggregate)
    NUMERIC: WireKind.DECIMAL64,
    # character(n) given without its trailing spaces (``stripped`` of a group
    # key, which the columnar wrapper adds): equal values are equal bytes
    BPCHAR: WireKind.CSTRING,
}
#: types whose equality is equality of their wire values (bytes for text:
#: deterministic collations), so they can be grouped and counted distinct
_HASHABLE = set(_WIRE)
#: types min/max compare as wire values
_ORDERED = _INTS | _FLOATS | {DATE, TIME, TIMESTAMP, TIMESTAMPTZ}
#: collations whose order is byte order
_BYTE_ORDER_COLLATIONS = {"C", "POSIX"}


@dataclass(frozen=True)
class DictionaryColumn:
    """A text or bytea column given as dictionary codes: row i is entry
    ``codes[i]`` of a dictionary of ``offsets`` (entries + 1) into ``data``.

    Attributes:
        kind: WireKind.TEXT or WireKind.BYTEA.
        codes: int32 per row (ignored where validity is 0, but in range).
        offsets: int64 offsets of the dictionary entries.
        data: uint8 bytes of the dictionary.
        validity: uint8 per row, nonzero where a value is present; None when
            every row has one.
    """

    kind: WireKind
    codes: np.ndarray
    offsets: np.ndarray
    data: np.ndarray
    validity: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.codes)


# --------------------------------------------------------------------- support


def _aggregate_reason(a: Mapping[str, Any]) -> str | None:
    func = a.get("func")
    if a.get("schema") == "orochi" and func in _SKETCH_AGGREGATES:
        return _sketch_reason(a)
    if a.get("schema", "pg_catalog") != "pg_catalog":
        return f"{a.get('schema')}.{func} is not a built-in aggregate"
    if a.get("args"):
        return f"{func} has constant arguments"
    result = a.get("result_type_oid")
    if a.get("star"):
        if func == "count" and result == INT8:
            return None
        return f"{func}(*) is not count(*)"
    arg = a.get("arg_type_oid")
    if not a.get("column"):
        return f"{func} has no column argument"
    distinct = bool(a.get("distinct"))
    # numeric is hashed and compared as scaled int64 only at a known scale;
    # bpchar's equality ignores trailing spaces, which its bytes may have
    scaled = arg == NUMERIC and a.get("arg_scale") is not None
    if func == "count":
        if result != INT8:
            return "count does not return int8"
        if distinct and (arg not in _HASHABLE or arg == BPCHAR or (arg == NUMERIC and not scaled)):
            return f"count(DISTINCT) of type {a.get('arg_type')} needs that type's equality"
        if distinct and a.get("collation_deterministic") is False:
            return f"count(DISTINCT) under the nondeterministic collation {a.get('collation')}"
        return None
    if distinct and func in ("sum", "avg"):
        return f"{func}(DISTINCT) is not computed here"
    if arg == NUMERIC and not scaled:
        return f"{func} of a numeric stored as text is not computed here"
    if arg == BPCHAR:
        return f"{func} of character(n) is not computed here"
    if func == "sum":
        expected = {INT2: INT8, INT4: INT8, INT8: NUMERIC, FLOAT4: FLOAT4, FLOAT8: FLOAT8,
                    NUMERIC: NUMERIC}
    elif func == "avg":
        expected = {INT2: NUMERIC, INT4: NUMERIC, INT8: NUMERIC, FLOAT4: FLOAT8, FLOAT8: FLOAT8,
                    NUMERIC: NUMERIC}
    elif func in ("min", "max"):
        if arg in _TEXTS:
            if a.get("collation") not in _BYTE_ORDER_COLLATIONS:
                return f"{func} of text follows its collation; only \"C\" and \"POSIX\" are byte order"
            expected = {arg: arg}
        else:
            expected = {t: t for t in _ORDERED | {NUMERIC}}
    elif func in ("bool_and", "bool_or", "every"):
        expected = {BOOL: BOOL}
    else:
        return f"aggregate {func} is not computed here"
    if arg not in expected:
        return f"{func} of type {a.get('arg_type') or arg} is not computed here"
    if result != expected[arg]:
        return f"{func}({a.get('arg_type') or arg}) returns type {result}, expected {expected[arg]}"
    return None


#: orochi's sketch aggregates computed here (docs/sketches.md)
_SKETCH_AGGREGATES = ("approx_count_distinct", "hll_agg", "approx_percentile", "tdigest_agg")


def _sketch_reason(a: Mapping[str, Any]) -> str | None:
    """Why a sketch aggregate is not computed here. Bad constant arguments
    are left to Postgres, whose aggregate raises the error."""
    from orochi_fdw.sketches import hll, tdigest

    func, args, arg = a["func"], list(a.get("args") or []), a.get("arg_type_oid")
    if a.get("distinct") or a.get("star") or not a.get("column"):
        return f"orochi.{func} has no plain column argument"
    try:
        if func in ("approx_count_distinct", "hll_agg"):
            if arg not in _HASHABLE or arg in (NUMERIC, BPCHAR):
                return f"orochi.{func} of type {a.get('arg_type') or arg} is not computed here"
            if a.get("collation_deterministic") is False:
                return f"orochi.{func} under the nondeterministic collation {a.get('collation')}"
            if func == "approx_count_distinct" and a.get("result_type_oid") != INT8:
                return "approx_count_distinct does not return int8"
            if len(args) > 1 or (args and not isinstance(args[0], int)):
                return f"orochi.{func} has unexpected arguments"
            if args:
                hll.check_precision(args[0])
            return None
        if arg != FLOAT8:
            return f"orochi.{func} of type {a.get('arg_type') or arg} is not computed here"
        if func == "approx_percentile":
            if a.get("result_type_oid") != FLOAT8 or not args or not isinstance(args[0], float):
                return "approx_percentile of an array of quantiles is not computed here"
            tdigest.check_quantile(args.pop(0))
        if len(args) > 1 or (args and not isinstance(args[0], int)):
            return f"orochi.{func} has unexpected arguments"
        if args:
            tdigest.check_compression(args[0])
    except InvalidParameterError as e:
        return str(e)
    return None


def unsupported_reason(request: Mapping[str, Any]) -> str | None:
    """Why :class:`HashAggregator` cannot compute a request exactly, or None
    if it can."""
    try:
        group_by = list(request["group_by"])
        aggregates = list(request["aggregates"])
        outputs = list(request["outputs"])
    except (KeyError, TypeError):
        return "malformed request"
    if len(group_by) > 64:
        return "more than 64 grouping keys"
    for g in group_by:
        make = _KEY_SOURCES.get(g.get("kind"))
        if make is None:
            return f"grouping by {g.get('kind')} is not computed here"
        if g.get("kind") in ("date_bin", "date_trunc"):
            reason = _bucket_reason(g, bool(request.get("at_execution")))
            if reason:
                return reason
        if g.get("type_oid") not in _HASHABLE or (g.get("type_oid") == NUMERIC and g.get("scale") is None) \
                or (g.get("type_oid") == BPCHAR and not g.get("stripped")):
            return f"grouping by a column of type {g.get('type', g.get('type_oid'))}"
        if g.get("collation_deterministic") is False:
            return f"grouping by text under the nondeterministic collation {g.get('collation')}"
    for a in aggregates:
        reason = _aggregate_reason(a)
        if reason:
            return reason
    for o in outputs:
        items = group_by if o.get("kind") == "group" else aggregates
        if o.get("kind") not in ("group", "aggregate") or not 0 <= o.get("index", -1) < len(items):
            return f"output {o.get('name')} refers to no group key or aggregate"
        item = items[o["index"]]
        if o.get("type_oid") != item.get("type_oid" if o["kind"] == "group" else "result_type_oid"):
            return f"output {o.get('name')} has a type its source does not produce"
    return None


def supports(request: Mapping[str, Any]) -> bool:
    """Whether :class:`HashAggregator` computes the request exactly as
    Postgres would (see :func:`unsupported_reason`)."""
    return unsupported_reason(request) is None


# ----------------------------------------------------------------- key sources


def _kernel_kind(kind: WireKind) -> str:
    if kind in (WireKind.FLOAT32, WireKind.FLOAT64):
        return "float"
    if kind.is_variable_width:
        return "bytes"
    return "int"


def _kernel_column(col: Column | DictionaryColumn) -> tuple:
    """A batch column as a kernel key / value tuple."""
    if isinstance(col, DictionaryColumn):
        return ("dict", col.codes, col.offsets, col.data, col.validity)
    if col.kind.is_variable_width:
        return ("text", col.offsets, col.values, col.validity)
    return ("fixed", col.values, col.validity)


class _ColumnKey:
    """GROUP BY a plain column: the key is the column's value.

    A key source turns a batch into the kernel key tuple of one grouping key
    and turns the table's key values back into an output column; grouping by
    an expression (date_trunc, time_bucket) is another source with the same
    two methods.
    """

    def __init__(self, spec: Mapping[str, Any]):
        self.column: str = spec["column"]
        self.input_kind = _WIRE[spec["type_oid"]]
        self.output_kind = self.input_kind
        self.table_kind = _kernel_kind(self.input_kind)
        self.scale = spec.get("scale")

    def key(self, columns: Mapping[str, Any]) -> tuple:
        return _kernel_column(columns[self.column])

    def output(self, table: K.GroupTable, c: int) -> Column:
        if self.table_kind == "bytes":
            offsets, data, validity = table.keys(c)
            return Column(self.output_kind, data, _validity_or_none(validity), offsets)
        values, validity = table.keys(c)
        if self.output_kind is WireKind.DECIMAL64:
            return _decimal_text(values.astype(np.int64), _validity_or_none(validity), self.scale)
        dtype = WIRE_DTYPES[self.output_kind]
        return Column(self.output_kind, values.astype(dtype), _validity_or_none(validity))


def _decimal_text(values: np.ndarray, validity: np.ndarray | None, scale: int) -> Column:
    """Scaled int64 numerics as the text numeric's input function reads."""
    from orochi_fdw.storage import decimal as dec

    offsets, data = dec.format_text(values, validity, scale)
    return Column(WireKind.CSTRING, data, validity, offsets)


_TS_MIN, _TS_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max  # -infinity, infinity
#: microseconds from 1970-01-01 (numpy's epoch) to 2000-01-01 (Postgres's)
_PG_EPOCH_US = 946_684_800 * 1_000_000
#: date_trunc units of fixed width: (width, origin), microseconds from 2000-01-01
_TRUNC_FIXED = {
    "microseconds": (1, 0), "milliseconds": (1_000, 0), "second": (1_000_000, 0),
    "minute": (60_000_000, 0), "hour": (3_600_000_000, 0), "day": (86_400_000_000, 0),
    "week": (7 * 86_400_000_000, 2 * 86_400_000_000),  # weeks start on Monday, 2000-01-03
}
#: date_trunc units by calendar: numpy datetime64 unit and how many of them
_TRUNC_CALENDAR = {"month": ("M", 1), "quarter": ("M", 3), "year": ("Y", 1)}
#: session time zones in which a timestamptz's wall clock is its UTC time
_UTC_ZONES = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Universal", "Etc/Universal",
              "Zulu", "Etc/Zulu", "GMT0", "Etc/GMT0", "Etc/GMT+0", "Etc/GMT-0", "Greenwich", "Etc/Greenwich"}


def _bucket_reason(g: Mapping[str, Any], at_execution: bool = False) -> str | None:
    """Why a time bucket is not computed here. date_trunc of a timestamptz
    in a session time zone other than UTC is offered only when a plan made
    in UTC runs after ``SET TimeZone`` (``at_execution``): Postgres then
    truncates the distinct values itself (:meth:`_BucketKey.bucket`), which
    is exact but slower than planning without the pushdown."""
    if g.get("type_oid") not in (TIMESTAMP, TIMESTAMPTZ):
        return f"{g.get('kind')} of a column of type {g.get('type', g.get('type_oid'))}"
    if g.get("kind") == "date_trunc":
        unit = str(g.get("unit", "")).lower()
        if unit not in _TRUNC_FIXED and unit not in _TRUNC_CALENDAR:
            return f"date_trunc('{unit}') is not computed here"
        if g.get("type_oid") == TIMESTAMPTZ and g.get("time_zone") not in _UTC_ZONES and not at_execution:
            return f"date_trunc of timestamptz follows the session time zone ({g.get('time_zone')}), not UTC"
    return None


class _BucketKey(_ColumnKey):
    """GROUP BY a time bucket of a timestamp[tz] column: date_bin (what
    orochi.time_bucket becomes once the planner inlines it) or date_trunc.
    Computed on the stored microseconds; infinities stay themselves."""

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__(spec)
        self.input_kind = self.output_kind = WireKind.TIMESTAMP
        self.table_kind = "int"
        self._zone_unit: str | None = None  # date_trunc in the session's zone, by Postgres
        if spec["kind"] == "date_bin":
            self._fixed = (int(spec["width_us"]), int(spec["origin_us"]))
            self._calendar = None
        else:
            unit = str(spec["unit"]).lower()
            self._fixed = _TRUNC_FIXED.get(unit)
            self._calendar = _TRUNC_CALENDAR.get(unit)
            if spec.get("type_oid") == TIMESTAMPTZ and spec.get("time_zone") not in _UTC_ZONES:
                self._zone_unit = unit

    def _truncate_in_zone(self, values: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """date_trunc of timestamptz values in the session's time zone, by
        Postgres itself (its time zone data, its rules for the hours that
        daylight saving time skips or repeats), once per distinct value."""
        from orochi_fdw.bridge import spi

        out = values.copy()
        uniq, inverse = np.unique(values[finite], return_inverse=True)
        if len(uniq):
            rows = spi.prepared(
                "SELECT ((extract(epoch FROM date_trunc($1, timestamptz '2000-01-01 00:00:00+00'"
                "         + (x || ' microseconds')::interval)) - 946684800) * 1000000)::int8"
                "  FROM unnest($2::int8[]) WITH ORDINALITY AS u(x, i) ORDER BY i",
                ["text", "int8[]"]).execute([self._zone_unit, uniq.tolist()], read_only=True).rows
            out[finite] = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))[inverse]
        return out

    def bucket(self, values: np.ndarray) -> np.ndarray:
        """The bucket start of each value (microseconds since 2000-01-01)."""
        finite = (values != _TS_MIN) & (values != _TS_MAX)
        if self._zone_unit is not None:
            return self._truncate_in_zone(values, finite)
        v = np.where(finite, values, 0)
        if self._fixed is not None:
            width, origin = self._fixed
            out = (v - origin) // width * width + origin
        else:
            unit, step = self._calendar
            t = (v + _PG_EPOCH_US).astype("datetime64[us]").astype(f"datetime64[{unit}]")
            if step > 1:
                t = (t.astype(np.int64) // step * step).astype(f"datetime64[{unit}]")
            out = t.astype("datetime64[us]").astype(np.int64) - _PG_EPOCH_US
        return np.where(finite, out, values)

    def key(self, columns: Mapping[str, Any]) -> tuple:
        col = columns[self.column]
        return ("fixed", self.bucket(np.asarray(col.values, dtype=np.int64)), col.validity)


#: group_by "kind" -> key source
_KEY_SOURCES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "column": _ColumnKey, "date_bin": _BucketKey, "date_trunc": _BucketKey}


def _validity_or_none(validity: np.ndarray) -> np.ndarray | None:
    return None if validity.all() else validity


# ---------------------------------------------------------------- accumulators


def _grown(arr: np.ndarray, n: int, fill) -> np.ndarray:
    """arr, or a copy at least n long (doubling) with new entries = fill."""
    if len(arr) >= n:
        return arr
    out = np.full(max(n, 2 * len(arr), 16), fill, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class _Accumulator:
    """State of one aggregate over all groups; `update` folds a batch in,
    `finish` returns the result column for groups 0..ngroups-1."""

    output_kind: WireKind

    def __init__(self, spec: Mapping[str, Any]):
        self.column: str | None = None if spec.get("star") else spec["column"]
        self.arg_type: int | None = spec.get("arg_type_oid")
        self.counts = np.zeros(0, dtype=np.int64)

    def grow(self, ngroups: int) -> None:
        self.counts = _grown(self.counts, ngroups, 0)

    def update(self, gids: np.ndarray, ngroups: int, col: Any, selection: Any) -> None:
        raise NotImplementedError

    def finish(self, ngroups: int) -> Column:
        raise NotImplementedError

    def _validity(self, ngroups: int) -> np.ndarray | None:
        return _validity_or_none((self.counts[:ngroups] > 0).astype(np.uint8))


class _Count(_Accumulator):
    output_kind = WireKind.INT64

    def update(self, gids, ngroups, col, selection):
        validity = None if col is None else col.validity
        if validity is None and ngroups == 1:
            self.counts[0] += len(gids)  # one group, no NULLs to skip: just the rows
            return
        K.group_count(self.counts, gids, validity, selection if validity is not None else None)

    def finish(self, ngroups):
        return Column(WireKind.INT64, self.counts[:ngroups].copy())


#: widest value range (max - min + 1) count(DISTINCT) of integers keeps in a
#: bitmap (2 MB) instead of a hash set
BITMAP_MAX_RANGE = 1 << 24


class _CountDistinct(_Accumulator):
    """count(DISTINCT col): a hash set of (group, value) pairs; without GROUP
    BY, for integers whose range the scan knows from its statistics
    (:meth:`HashAggregator.hint_ranges`), a bitmap of that range, values
    outside it (rows the statistics did not cover, the delta store's) going
    to the hash set: the two hold disjoint values, their counts add up."""

    output_kind = WireKind.INT64

    def __init__(self, spec):
        super().__init__(spec)
        self.set = K.DistinctCounter(_kernel_kind(_WIRE[self.arg_type]))
        self.bits: np.ndarray | None = None
        self.lo = 0

    def use_range(self, lo: int, hi: int) -> bool:
        """Keep values in [lo, hi] in a bitmap (before any update; one group)."""
        if self.arg_type not in _INTS or not 0 <= hi - lo < BITMAP_MAX_RANGE:
            return False
        self.bits = np.zeros((hi - lo) // 64 + 1, dtype=np.uint64)
        self.lo = int(lo)
        return True

    def update(self, gids, ngroups, col, selection):
        if self.bits is not None:
            added, outside = K.distinct_bitmap_update(self.bits, self.lo, col.values, col.validity,
                                                      selection)
            self.counts[0] += added
            if outside is None:
                return
            selection = np.flatnonzero(outside)
            gids = np.zeros(len(selection), dtype=np.int64)
        self.set.update(self.counts, gids, _kernel_column(col), selection)

    def finish(self, ngroups):
        return Column(WireKind.INT64, self.counts[:ngroups].copy())


class _IntSum(_Accumulator):
    """sum/avg of integers: exact (sums, carries) state; the result is int8
    (sum of int2/int4), or numeric text (sum of int8, avg)."""

    def __init__(self, spec, mode: str):
        super().__init__(spec)
        self.mode = mode  # "int8", "numeric_sum" or "numeric_avg"
        self.output_kind = WireKind.INT64 if mode == "int8" else WireKind.CSTRING
        self.sums = np.zeros(0, dtype=np.int64)
        self.carries = np.zeros(0, dtype=np.int64)

    def grow(self, ngroups):
        super().grow(ngroups)
        self.sums = _grown(self.sums, ngroups, 0)
        self.carries = _grown(self.carries, ngroups, 0)

    def update(self, gids, ngroups, col, selection):
        K.group_sum_int(self.sums, self.carries, self.counts, gids, col.values, col.validity,
                        selection)

    def finish(self, ngroups):
        counts, sums, carries = self.counts[:ngroups], self.sums[:ngroups], self.carries[:ngroups]
        if self.mode == "int8":
            out = np.empty(ngroups, dtype=np.int64)
            validity = np.empty(ngroups, dtype=np.uint8)
            K.finalize_sum_int8(out, validity, sums, carries, counts)
            return Column(WireKind.INT64, out, _validity_or_none(validity))
        text = K.numeric_avg_text if self.mode == "numeric_avg" else K.numeric_sum_text
        offsets, data, validity = text(sums, carries, counts)
        return Column(WireKind.CSTRING, data, _validity_or_none(validity), offsets)


class _FloatSum(_Accumulator):
    def __init__(self, spec):
        super().__init__(spec)
        self.output_kind = _WIRE[self.arg_type]
        self.sums = np.zeros(0, dtype=WIRE_DTYPES[self.output_kind])

    def grow(self, ngroups):
        super().grow(ngroups)
        self.sums = _grown(self.sums, ngroups, -0.0)

    def update(self, gids, ngroups, col, selection):
        K.group_sum_float(self.sums, self.counts, gids, col.values, col.validity, selection)

    def finish(self, ngroups):
        return Column(self.output_kind, self.sums[:ngroups].copy(), self._validity(ngroups))


class _FloatAvg(_Accumulator):
    """avg(float4|float8): float8_accum's (N, Sx, Sxx). While every value so
    far is within K.AVG_FAST_BOUND (or NaN), batches only count and sum (Sxx
    serves only Postgres's overflow check, which such values cannot trip);
    after the first batch beyond it, every batch takes the exact loop, with
    Sxx of the groups summed so far known to lie in [sxx, sxx_hi]."""

    output_kind = WireKind.FLOAT64

    def __init__(self, spec):
        super().__init__(spec)
        self.sx = np.zeros(0, dtype=np.float64)
        self.sxx = np.zeros(0, dtype=np.float64)
        self.bounded = True  # every value so far within the bound
        self.sxx_hi: np.ndarray | None = None

    def grow(self, ngroups):
        super().grow(ngroups)
        self.sx = _grown(self.sx, ngroups, 0.0)
        self.sxx = _grown(self.sxx, ngroups, 0.0)
        if self.sxx_hi is not None:
            self.sxx_hi = _grown(self.sxx_hi, ngroups, 0.0)

    def update(self, gids, ngroups, col, selection):
        if self.bounded:
            if K.group_avg_float(self.counts, self.sx, self.sxx, gids, col.values, col.validity,
                                 selection, fast=True):
                return
            self.bounded = False
            self.sxx_hi = np.where(self.counts > 0, K.AVG_SXX_BOUND, self.sxx)
        K.group_avg_float(self.counts, self.sx, self.sxx, gids, col.values, col.validity,
                          selection, self.sxx_hi)

    def finish(self, ngroups):
        out = np.empty(ngroups, dtype=np.float64)
        validity = np.empty(ngroups, dtype=np.uint8)
        K.finalize_avg_float(out, validity, self.counts[:ngroups], self.sx[:ngroups])
        return Column(WireKind.FLOAT64, out, _validity_or_none(validity))


class _MinMax(_Accumulator):
    def __init__(self, spec):
        super().__init__(spec)
        self.is_max = spec["func"] == "max"
        self.output_kind = _WIRE[self.arg_type]
        self.state = np.zeros(0, dtype=WIRE_DTYPES[self.output_kind])

    def grow(self, ngroups):
        super().grow(ngroups)
        self.state = _grown(self.state, ngroups, 0)

    def update(self, gids, ngroups, col, selection):
        K.group_minmax(self.state, self.counts, gids, col.values, self.is_max, col.validity,
                       selection)

    def finish(self, ngroups):
        return Column(self.output_kind, self.state[:ngroups].copy(), self._validity(ngroups))


class _TextMinMax(_Accumulator):
    def __init__(self, spec):
        super().__init__(spec)
        self.output_kind = _WIRE[self.arg_type]
        self.best = K.TextExtremes(spec["func"] == "max")

    def update(self, gids, ngroups, col, selection):
        self.best.update(gids, ngroups, _kernel_column(col), selection)

    def finish(self, ngroups):
        offsets, data, validity = self.best.result(ngroups)
        return Column(self.output_kind, data, _validity_or_none(validity), offsets)


class _BoolAgg(_Accumulator):
    output_kind = WireKind.BOOL

    def __init__(self, spec):
        super().__init__(spec)
        self.is_and = spec["func"] in ("bool_and", "every")
        self.state = np.zeros(0, dtype=np.uint8)

    def grow(self, ngroups):
        super().grow(ngroups)
        self.state = _grown(self.state, ngroups, 0)

    def update(self, gids, ngroups, col, selection):
        K.group_bool(self.state, self.counts, gids, col.values, self.is_and, col.validity,
                     selection)

    def finish(self, ngroups):
        return Column(WireKind.BOOL, self.state[:ngroups].copy(), self._validity(ngroups))


class _SketchAccumulator(_Accumulator):
    """Per-group sketches of orochi's sketch aggregates, built exactly as the
    heap-table aggregates build them (docs/sketches.md), so that results and
    sketch bytes are identical."""

    def __init__(self, spec):
        super().__init__(spec)
        self.func = spec["func"]
        self.args = list(spec.get("args") or [])
        self.kind = _WIRE[self.arg_type]
        self.bytes_out = self.func in ("hll_agg", "tdigest_agg")
        self.output_kind = WireKind.CSTRING if self.bytes_out else (
            WireKind.INT64 if self.func == "approx_count_distinct" else WireKind.FLOAT64)
        self.states: list[Any] = []

    def grow(self, ngroups):
        super().grow(ngroups)
        while len(self.states) < ngroups:
            self.states.append(self._new_state())

    def _new_state(self):
        raise NotImplementedError

    def _select(self, values: np.ndarray, col, gids, selection):
        """(values, group ids) of the selected rows that are not NULL."""
        gids = np.asarray(gids)
        if selection is not None:
            sel = np.asarray(selection)
            idx = np.flatnonzero(sel) if sel.dtype in (np.bool_, np.uint8) else sel.astype(np.int64)
            values = values[idx]
            validity = None if col.validity is None else np.asarray(col.validity)[idx]
        else:
            validity = col.validity
        if validity is not None:
            valid = np.asarray(validity) != 0
            if not valid.all():
                return values[valid], gids[valid]
        return values, gids

    def _count(self, g: np.ndarray, ngroups: int) -> None:
        if ngroups == 1:
            self.counts[0] += len(g)
        else:
            self.counts[:ngroups] += np.bincount(g, minlength=ngroups)[:ngroups]

    def _by_group(self, gids: np.ndarray, values: np.ndarray, ngroups: int):
        """(group, values of that group) for each group with values."""
        if not len(values):
            return
        if ngroups == 1:
            yield 0, values
            return
        # order within a group does not matter (sketches are order-free);
        # small integer types make numpy's stable sort a radix sort
        key = gids.astype(np.uint8 if ngroups <= 256 else np.uint16 if ngroups <= 65536 else np.int64,
                          copy=False)
        order = np.argsort(key, kind="stable")
        g, v = gids[order], values[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        ends = np.r_[starts[1:], len(g)]
        for a, b in zip(starts, ends):
            yield int(g[a]), v[a:b]


class _HllAccumulator(_SketchAccumulator):
    def __init__(self, spec):
        super().__init__(spec)
        from orochi_fdw.sketches import hashing, hll
        self._hashing = hashing
        self._hll = hll
        self.p = self.args[0] if self.args else hll.DEFAULT_PRECISION
        self.bits: np.ndarray | None = None  # see use_range
        self.lo = 0
        self.folded = False  # the bitmap's values are in the sketch

    def _new_state(self):
        return self._hll.Hll(self.p)

    def _hashes(self, col) -> np.ndarray:
        H = self._hashing
        if isinstance(col, DictionaryColumn):
            entries = H.hash_varlen(col.offsets, col.data)
            return entries[np.clip(col.codes, 0, max(len(entries) - 1, 0))] if len(entries) else \
                np.zeros(len(col.codes), dtype=np.uint64)
        if col.kind.is_variable_width:
            return H.hash_varlen(col.offsets, col.values)
        if col.kind in (WireKind.FLOAT32, WireKind.FLOAT64):
            return H.hash_ints(H.canonical_float_bits(col.values))
        return H.hash_ints(np.asarray(col.values).astype(np.int64, copy=False))

    def _int64_values(self, col) -> np.ndarray | None:
        """A fixed-width column's canonical int64 values (hashing.canonical),
        or None for byte strings."""
        if isinstance(col, DictionaryColumn) or col.kind.is_variable_width:
            return None
        if col.kind in (WireKind.FLOAT32, WireKind.FLOAT64):
            return self._hashing.canonical_float_bits(col.values)
        return np.asarray(col.values).astype(np.int64, copy=False)

    def use_range(self, lo: int, hi: int) -> bool:
        """Collect the values in [lo, hi] in a bitmap and fold each distinct
        one into the sketch once, at the end (before any update; one group;
        integers): the sketch depends only on the set of values it saw."""
        if self.arg_type not in _INTS or not 0 <= hi - lo < BITMAP_MAX_RANGE:
            return False
        self.bits = np.zeros((hi - lo) // 64 + 1, dtype=np.uint64)
        self.lo = int(lo)
        return True

    def update(self, gids, ngroups, col, selection):
        if self.bits is not None:
            _added, outside = K.distinct_bitmap_update(self.bits, self.lo, col.values, col.validity,
                                                       selection)
            self.counts[0] += _present(col.validity, selection, len(col))
            if outside is not None:  # beyond the statistics' range: straight into the sketch
                self.states[0].add_int64(np.asarray(col.values)[outside != 0].astype(np.int64))
            return
        ints = self._int64_values(col)
        if ints is not None:
            values, g = self._select(ints, col, gids, selection)
            add = "add_int64"
        else:
            values, g = self._select(self._hashes(col), col, gids, selection)
            add = "add_hashes"
        self._count(g, ngroups)
        for group, v in self._by_group(g, values, ngroups):
            getattr(self.states[group], add)(v)

    def finish(self, ngroups):
        if self.bits is not None and ngroups and not self.folded:
            self.states[0].add_int64(bitmap_values(self.bits, self.lo))
            self.folded = True
        if self.bytes_out:
            values = ["\\x" + s.to_bytes().hex() if c else None
                      for s, c in zip(self.states[:ngroups], self.counts[:ngroups])]
            return Column.from_pylist(WireKind.CSTRING, values)
        return Column(WireKind.INT64, np.array([s.cardinality() for s in self.states[:ngroups]],
                                               dtype=np.int64))


class _TDigestAccumulator(_SketchAccumulator):
    def __init__(self, spec):
        super().__init__(spec)
        from orochi_fdw.sketches import tdigest
        self._tdigest = tdigest
        args = list(self.args)
        self.q = args.pop(0) if self.func == "approx_percentile" else None
        self.compression = args[0] if args else tdigest.DEFAULT_COMPRESSION

    def _new_state(self):
        return []

    def update(self, gids, ngroups, col, selection):
        values, g = self._select(np.asarray(col.values, dtype=np.float64), col, gids, selection)
        self._count(g, ngroups)
        for group, v in self._by_group(g, values, ngroups):
            self.states[group].append(v)

    def finish(self, ngroups):
        out = []
        for parts in self.states[:ngroups]:
            digest = self._tdigest.TDigest.from_values(
                np.concatenate(parts) if parts else np.zeros(0), self.compression)
            if not len(digest.means):
                out.append(None)
            elif self.bytes_out:
                out.append("\\x" + digest.to_bytes().hex())
            else:
                out.append(digest.quantile(self.q))
        return Column.from_pylist(self.output_kind, out)


class _DecimalSum(_Accumulator):
    """sum / avg of a numeric(p, s) column stored as scaled int64: exact
    128-bit sums (the integer kernel's sums and carries), NaN counted apart;
    the result as numeric's own functions give it (see :func:`_decimal_avg`)."""

    output_kind = WireKind.CSTRING

    def __init__(self, spec, avg: bool):
        super().__init__(spec)
        self.avg = avg
        self.scale = int(spec["arg_scale"])
        self.sums = np.zeros(0, dtype=np.int64)
        self.carries = np.zeros(0, dtype=np.int64)
        self.nans = np.zeros(0, dtype=np.int64)

    def grow(self, ngroups):
        super().grow(ngroups)
        self.sums = _grown(self.sums, ngroups, 0)
        self.carries = _grown(self.carries, ngroups, 0)
        self.nans = _grown(self.nans, ngroups, 0)

    def update(self, gids, ngroups, col, selection):
        from orochi_fdw.storage.decimal import NAN

        values = col.values
        nan = values == NAN
        if nan.any():
            # NaN rows: counted apart (the result is NaN), summed as 0
            K.group_count(self.nans, gids, nan.astype(np.uint8) if col.validity is None
                          else (nan & (np.asarray(col.validity) != 0)).astype(np.uint8), selection)
            values = np.where(nan, 0, values)
        K.group_sum_int(self.sums, self.carries, self.counts, gids, values, col.validity, selection)

    def finish(self, ngroups):
        texts: list[str | None] = []
        for g in range(ngroups):
            n = int(self.counts[g])
            if n == 0:
                texts.append(None)
            elif self.nans[g]:
                texts.append("NaN")
            else:
                total = int(self.carries[g]) * (1 << 64) + int(self.sums[g])
                texts.append(_decimal_avg(total, self.scale, n - int(self.nans[g])) if self.avg
                             else _scaled_text(total, self.scale))
        return Column.from_pylist(WireKind.CSTRING, texts)


def _scaled_text(value: int, scale: int) -> str:
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(scale + 1, "0")
    return sign + (digits if scale == 0 else f"{digits[:-scale]}.{digits[-scale:]}")


def _nbase_lead(value: int, scale: int) -> tuple[int, int]:
    """Weight and leading digit of ``value / 10^scale`` (value >= 0) in
    numeric's base 10000, digits aligned at the decimal point ((0, 0) for zero),
    as select_div_scale reads them."""
    if value == 0:
        return 0, 0
    ip = value // 10 ** scale
    if ip > 0:
        w = (len(str(ip)) - 1) // 4
        return w, ip // 10000 ** w
    w = 0
    while True:
        w -= 1
        first = value * 10000 ** (-w) // 10 ** scale
        if first > 0:
            return w, first


def _decimal_avg(total: int, scale: int, n: int) -> str:
    """avg of numeric values whose display scale is ``scale``: numeric_div of
    their sum (display scale ``scale``) by the count (scale 0): the result
    scale select_div_scale picks (at least 16 significant digits,
    NUMERIC_MIN_SIG_DIGITS, estimated from the base-10000 weights and leading
    digits; not below either input's display scale; at most 1000), the exact
    quotient rounded half away from zero."""
    w1, f1 = _nbase_lead(abs(total), scale)
    w2, f2 = _nbase_lead(n, 0)
    qweight = w1 - w2 - (1 if f1 <= f2 else 0)
    rscale = min(max(16 - 4 * qweight, scale, 0), 1000)
    num = abs(total) * 10 ** rscale
    den = 10 ** scale * n
    q, r = divmod(num, den)
    if 2 * r >= den:
        q += 1
    return _scaled_text(-q if total < 0 else q, rscale)


class _DecimalMinMax(_MinMax):
    """min / max of scaled int64 numerics (NaN, int64 max, is the largest, as
    in numeric's order), given back as numeric text."""

    def __init__(self, spec):
        super().__init__(spec)
        self.scale = int(spec["arg_scale"])
        self.output_kind = WireKind.CSTRING
        self.state = np.zeros(0, dtype=np.int64)

    def finish(self, ngroups):
        return _decimal_text(self.state[:ngroups].copy(), self._validity(ngroups), self.scale)


#: widest range of a GROUP BY integer key grouped by value - min (flat
#: state arrays of that many groups) instead of hashing
DENSE_MAX_GROUPS = 1 << 16
#: accumulators whose state is flat arrays, finished for every group by kernels
_FLAT_ACCUMULATORS = (_Count, _CountDistinct, _IntSum, _FloatSum, _FloatAvg, _MinMax, _BoolAgg)


def _accumulator(spec: Mapping[str, Any]) -> _Accumulator:
    func, arg = spec["func"], spec.get("arg_type_oid")
    if arg == NUMERIC and func in ("sum", "avg"):
        return _DecimalSum(spec, func == "avg")
    if arg == NUMERIC and func in ("min", "max"):
        return _DecimalMinMax(spec)
    if spec.get("schema") == "orochi":
        return _HllAccumulator(spec) if func in ("approx_count_distinct", "hll_agg") \
            else _TDigestAccumulator(spec)
    if func == "count":
        return _CountDistinct(spec) if spec.get("distinct") else _Count(spec)
    if func == "sum" and arg in _INTS:
        return _IntSum(spec, "numeric_sum" if arg == INT8 else "int8")
    if func == "avg" and arg in _INTS:
        return _IntSum(spec, "numeric_avg")
    if func == "sum":
        return _FloatSum(spec)
    if func == "avg":
        return _FloatAvg(spec)
    if func in ("min", "max"):
        return _TextMinMax(spec) if arg in _TEXTS else _MinMax(spec)
    return _BoolAgg(spec)


# ------------------------------------------------------------------ the driver


class HashAggregator:
    """One pushed-down aggregation, fed batch by batch.

    Args:
        request: the aggregation request (docs/aggregate-pushdown.md), with
            outputs named and typed as the bridge hands them to
            ``aggregate()``.

    Raises:
        FeatureNotSupportedError: the request is not one :func:`supports`
            accepts.
    """

    def __init__(self, request: Mapping[str, Any]):
        reason = unsupported_reason(request)
        if reason:
            raise FeatureNotSupportedError(f"aggregate not computed by Orochi: {reason}")
        self.request = request
        self._keys = [_KEY_SOURCES[g["kind"]](g) for g in request["group_by"]]
        self._aggs = [_accumulator(a) for a in request["aggregates"]]
        self._table = K.GroupTable([k.table_kind for k in self._keys]) if self._keys else None
        # column -> the wire kind it must have; None: any (count(col) reads
        # only NULLs), converting non-Column input with the type's kind
        self._expected: dict[str, WireKind | None] = {}
        self._fallback: dict[str, WireKind] = {}
        for spec, acc in zip(request["aggregates"], self._aggs):
            if acc.column is not None:
                kind = _WIRE.get(spec.get("arg_type_oid"))
                any_kind = spec["func"] == "count" and not spec.get("distinct")
                if not any_kind or acc.column not in self._expected:
                    self._expected[acc.column] = None if any_kind else kind
                self._fallback[acc.column] = wire_kind_for_type(spec.get("arg_type_oid") or 0)
        for k in self._keys:
            self._expected[k.column] = k.input_kind
        self._ngroups = 0 if self._keys else 1
        #: GROUP BY one small-range integer column (:meth:`hint_ranges`):
        #: (lo, slots); group ids are value - lo, NULL is group ``slots``, and
        #: values outside the range go to the hash table, their ids after those
        self._dense: tuple[int, int] | None = None
        self._seen: np.ndarray | None = None  # per dense group: has a row
        for acc in self._aggs:
            acc.grow(self._ngroups)

    @property
    def range_columns(self) -> list[str]:
        """Integer columns whose value range :meth:`hint_ranges` can use
        (count(DISTINCT), orochi.approx_count_distinct and orochi.hll_agg
        without GROUP BY)."""
        if self._keys:
            return [self._keys[0].column] if self._dense_candidate() else []
        return sorted({acc.column for acc in self._aggs
                       if isinstance(acc, (_CountDistinct, _HllAccumulator)) and acc.arg_type in _INTS})

    def _dense_candidate(self) -> bool:
        """GROUP BY one plain integer column, aggregates whose states are
        flat arrays (cheap for every group of a range)."""
        return len(self._keys) == 1 and type(self._keys[0]) is _ColumnKey \
            and self.request["group_by"][0].get("type_oid") in _INTS \
            and all(type(acc) in _FLAT_ACCUMULATORS for acc in self._aggs)

    @property
    def dense_key(self) -> tuple[str, int] | None:
        """(column, values in its range) when groups are numbered by the
        key's value (:meth:`hint_ranges`), else None."""
        return None if self._dense is None else (self._keys[0].column, self._dense[1])

    @property
    def bitmaps(self) -> list[tuple[str, int]]:
        """The count(DISTINCT) columns kept in bitmaps, with their bits."""
        return [(acc.column, 64 * len(acc.bits)) for acc in self._aggs
                if isinstance(acc, (_CountDistinct, _HllAccumulator)) and acc.bits is not None]

    def hint_ranges(self, ranges: Mapping[str, tuple[int, int]]) -> list[str]:
        """Before the first :meth:`add`: the least and greatest value (that
        the caller knows of) of integer columns; count(DISTINCT) (and the
        HyperLogLog aggregates) of such a column without GROUP BY keeps a
        bitmap of a small range, and GROUP BY such a column alone numbers its
        groups by value (no hashing; aggregates of flat states). Values
        outside the range are still aggregated exactly. Returns the columns
        taken."""
        taken = []
        if self._keys:
            key = self._keys[0].column
            if self._dense_candidate() and key in ranges and self._ngroups == 0:
                lo, hi = ranges[key]
                if 0 <= hi - lo < DENSE_MAX_GROUPS:
                    self._dense = (int(lo), int(hi - lo + 1))
                    self._seen = np.zeros(hi - lo + 2, dtype=np.uint8)
                    taken.append(key)
            return taken
        for spec, acc in zip(self.request["aggregates"], self._aggs):
            if isinstance(acc, (_CountDistinct, _HllAccumulator)) and acc.column in ranges:
                lo, hi = ranges[acc.column]
                if acc.use_range(lo, hi):
                    taken.append(acc.column)
        return taken

    @property
    def columns(self) -> list[str]:
        """The batch columns :meth:`add` needs."""
        return list(self._expected)

    @property
    def ngroups(self) -> int:
        """Groups so far (1 without GROUP BY)."""
        if self._dense is not None:
            return int(np.count_nonzero(self._seen)) + self._table.ngroups
        return self._ngroups

    def add(self, columns: Mapping[str, Any] | Batch, selection: np.ndarray | None = None,
            nrows: int | None = None) -> None:
        """Fold a batch in.

        Args:
            columns: column name to :class:`Column`, :class:`DictionaryColumn`,
                numpy array or list (converted to the column's wire kind), or a
                :class:`Batch`. Columns not in :attr:`columns` are ignored.
            selection: None (every row), a bool/uint8 mask or int32/int64 row
                indices: only those rows are aggregated.
            nrows: the batch's row count; needed only when no column is
                passed (``count(*)`` without GROUP BY).

        Raises:
            NumericValueOutOfRangeError: a float sum overflowed, as in Postgres.
            InvalidParameterError: a needed column is missing or of the wrong
                kind or length.
        """
        if isinstance(columns, Batch):
            nrows = columns.nrows if nrows is None else nrows
            columns = columns.columns
        cols = self._columns(columns, nrows)
        if cols:
            nrows = len(next(iter(cols.values())))
        elif nrows is None:
            raise InvalidParameterError("a batch without columns needs its row count")
        if self._dense is not None:
            gids = self._dense_ids(cols, selection, nrows)
        elif self._table is not None:
            gids, _ = self._table.assign([k.key(cols) for k in self._keys], selection)
            self._ngroups = self._table.ngroups
        else:
            gids = _zero_gids(_selected(selection, nrows))
        for acc in self._aggs:
            acc.grow(self._ngroups)
            acc.update(gids, self._ngroups, None if acc.column is None else cols[acc.column],
                       selection)

    def _dense_ids(self, cols: Mapping[str, Any], selection: np.ndarray | None, nrows: int) -> np.ndarray:
        """Group ids of a batch in dense mode (see ``_dense``)."""
        lo, slots = self._dense
        key = self._keys[0]
        col = cols[key.column]
        gids, outside = K.dense_group_ids(col.values, lo, slots, self._seen, col.validity, selection)
        if outside:
            out = gids < 0
            rows = np.arange(nrows) if selection is None else np.asarray(selection)
            if rows.dtype == np.bool_ or rows.dtype == np.uint8:
                rows = np.flatnonzero(rows)
            hashed, _ = self._table.assign([key.key(cols)], rows[out].astype(np.int64))
            gids[out] = hashed + (slots + 1)
        self._ngroups = slots + 1 + self._table.ngroups
        return gids

    def _dense_result(self) -> Batch:
        """The result in dense mode: the range's groups that have rows (in
        key order, then NULL), then the hashed ones."""
        lo, slots = self._dense
        space = slots + 1 + self._table.ngroups
        dense = np.flatnonzero(self._seen[:slots + 1])
        rows = np.concatenate([dense, np.arange(slots + 1, space)]).astype(np.int64)
        key = self._keys[0]
        hashed = key.output(self._table, 0)
        values = np.concatenate([dense + lo, np.asarray(hashed.values, dtype=np.int64)])
        valid = np.concatenate([dense < slots, np.ones(len(hashed), dtype=bool) if hashed.validity is None
                                else np.asarray(hashed.validity, dtype=bool)])
        group_cols = [Column(key.output_kind, values.astype(WIRE_DTYPES[key.output_kind]),
                             _validity_or_none(valid.astype(np.uint8)))]
        agg_cols = [_take_rows(acc.finish(space), rows) for acc in self._aggs]
        out = {}
        for o in self.request["outputs"]:
            out[o["name"]] = (group_cols if o["kind"] == "group" else agg_cols)[o["index"]]
        return Batch(len(rows), out)

    def _columns(self, columns: Mapping[str, Any], nrows: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kind in self._expected.items():
            if name not in columns:
                raise InvalidParameterError(f'batch has no column "{name}"')
            col = columns[name]
            if not isinstance(col, (Column, DictionaryColumn)):
                col = to_column(kind or self._fallback[name], col)
            if kind is not None and col.kind is not kind:
                raise InvalidParameterError(
                    f'column "{name}" is {col.kind.name}, expected {kind.name}')
            if nrows is None:
                nrows = len(col)
            elif len(col) != nrows:
                raise InvalidParameterError(f'column "{name}" has {len(col)} rows, expected {nrows}')
            out[name] = col
        return out

    def result(self) -> Batch:
        """One row per group (first-appearance order), columns named and
        typed by the request's outputs.

        Raises:
            NumericValueOutOfRangeError: an int8 sum is out of range.
        """
        if self._dense is not None:
            return self._dense_result()
        n = self._ngroups
        group_cols = [k.output(self._table, c) for c, k in enumerate(self._keys)]
        agg_cols = [acc.finish(n) for acc in self._aggs]
        out = {}
        for o in self.request["outputs"]:
            out[o["name"]] = (group_cols if o["kind"] == "group" else agg_cols)[o["index"]]
        return Batch(n, out)

    def rows(self) -> list[dict[str, Any]]:
        """The result as dicts of Python values (numeric as decimal.Decimal)."""
        batch = self.result()
        numeric = [o["name"] for o in self.request["outputs"] if o["type_oid"] == NUMERIC]
        rows = batch.to_pylist()
        for row in rows:
            for name in numeric:
                if row[name] is not None:
                    row[name] = decimal.Decimal(row[name])
        return rows


_ZEROS = np.zeros(0, dtype=np.int64)


def _zero_gids(n: int) -> np.ndarray:
    """Group ids of n rows without GROUP BY: a read-only view of one shared
    array of zeros, grown when needed (kernels only read group ids)."""
    global _ZEROS
    if len(_ZEROS) < n:
        _ZEROS = np.zeros(max(n, 2 * len(_ZEROS)), dtype=np.int64)
        _ZEROS.flags.writeable = False
    return _ZEROS[:n]


def _take_rows(col: Column, rows: np.ndarray) -> Column:
    """Rows ``rows`` of a result column."""
    validity = None if col.validity is None else np.asarray(col.validity)[rows]
    if not col.kind.is_variable_width:
        return Column(col.kind, np.asarray(col.values)[rows], validity)
    offsets = np.asarray(col.offsets, dtype=np.int64)
    starts, lengths = offsets[:-1][rows], np.diff(offsets)[rows]
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    data = col.values if isinstance(col.values, np.ndarray) else np.frombuffer(col.values, np.uint8)
    gather = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(int(new_offsets[-1]), dtype=np.int64)
    return Column(col.kind, np.asarray(data, dtype=np.uint8)[gather], validity, new_offsets)


def bitmap_values(bits: np.ndarray, lo: int) -> np.ndarray:
    """The int64 values whose bits are set in a distinct bitmap (bit ``j``
    of word ``w`` is value ``lo + 64 * w + j``), ascending."""
    words = np.ascontiguousarray(bits, dtype="<u8").view(np.uint8)
    return np.flatnonzero(np.unpackbits(words, bitorder="little")).astype(np.int64) + lo


def _present(validity: np.ndarray | None, selection: np.ndarray | None, nrows: int) -> int:
    """Selected rows (of nrows) that are not NULL."""
    if validity is None:
        return _selected(selection, nrows)
    valid = np.asarray(validity) != 0
    if selection is None:
        return int(np.count_nonzero(valid))
    sel = np.asarray(selection)
    if sel.dtype == np.bool_ or sel.dtype == np.uint8:
        return int(np.count_nonzero(valid & (sel != 0)))
    return int(np.count_nonzero(valid[sel]))


def _selected(selection: np.ndarray | None, nrows: int) -> int:
    """Rows a selection picks out of nrows."""
    if selection is None:
        return nrows
    sel = np.asarray(selection)
    if sel.dtype == np.bool_ or sel.dtype == np.uint8:
        if len(sel) != nrows:
            raise InvalidParameterError(f"selection mask has {len(sel)} entries for {nrows} rows")
        return int(np.count_nonzero(sel))
    if len(sel) and (sel.min() < 0 or sel.max() >= nrows):
        raise InvalidParameterError(f"selection index out of range for {nrows} rows")
    return len(sel)
