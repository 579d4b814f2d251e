"""Plain-Python reference for hash aggregation, for tests.

Written independently of the kernels, one value at a time, to state Postgres's
semantics as directly as possible: Python ints for exact sums, fractions for
numeric division, ``numpy.float32`` scalars for float4 arithmetic, dicts for
groups. Slow; meant for small inputs.

Values are Python objects, None for NULL: int, float, bool, str or bytes,
datetime objects (anything hashable and ordered for min/max).

Example:
    >>> avg_int([1, 2])
    Decimal('1.5000000000000000')
    >>> group_ids([[3, None, 3, 1.0]])
    ([0, 1, 0, 2], [0, 1, 3])
"""

from __future__ import annotations

import decimal
import math
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from orochi_fdw.errors import NumericValueOutOfRangeError

INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1

_NAN = ("NaN",)  # stands for every float NaN in a key: they are all one group


def canonical(v: Any) -> Any:
    """A value as a dict key under SQL grouping equality: every NaN is one
    key; -0.0 == 0.0 already holds for Python floats."""
    if isinstance(v, (float, np.floating)):
        return _NAN if math.isnan(v) else float(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    return v


def selected(n: int, selection: Sequence | None) -> list[int]:
    """Row numbers a selection picks: all, a mask, or explicit indices."""
    if selection is None:
        return list(range(n))
    sel = list(np.asarray(selection).tolist())
    if np.asarray(selection).dtype in (np.bool_, np.uint8):
        return [i for i in range(n) if sel[i]]
    return [int(i) for i in sel]


def group_ids(keys: Sequence[Sequence[Any]], selection: Sequence | None = None
              ) -> tuple[list[int], list[int]]:
    """(group id per selected row, first row of each group); ids count up
    from 0 in order of first appearance; NULL (None) is a key like any other."""
    n = len(keys[0])
    ids: dict[tuple, int] = {}
    out, first = [], []
    for i in selected(n, selection):
        key = tuple(canonical(col[i]) for col in keys)
        if key not in ids:
            ids[key] = len(ids)
            first.append(i)
        out.append(ids[key])
    return out, first


# ------------------------------------------------------------------ aggregates


def numeric_div_scale(s: int, n: int) -> int:
    """Postgres's select_div_scale for two integers (display scale 0): the
    result scale giving at least 16 significant digits, estimated from the
    base-10000 weights and leading base-10000 digits of |s| and |n|."""

    def weight_and_first(x: int) -> tuple[int, int]:
        if x == 0:
            return 0, 0
        digits = str(abs(x))
        digits = "0" * (-len(digits) % 4) + digits
        groups = [int(digits[j:j + 4]) for j in range(0, len(digits), 4)]
        return len(groups) - 1, groups[0]

    w1, f1 = weight_and_first(s)
    w2, f2 = weight_and_first(n)
    qweight = w1 - w2 - (1 if f1 <= f2 else 0)
    return min(max(16 - 4 * qweight, 0), 1000)


def avg_int(values: Iterable[int | None]) -> decimal.Decimal | None:
    """avg(int2|int4|int8): numeric_div(sum, count), rounded half away from zero."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    s, n = sum(vals), len(vals)
    scale = numeric_div_scale(s, n)
    q = Fraction(s, n) * 10**scale
    rounded = math.floor(abs(q) + Fraction(1, 2))
    return decimal.Decimal((0 if q >= 0 or rounded == 0 else 1,
                            tuple(int(c) for c in str(rounded)), -scale))


def sum_int(values: Iterable[int | None], arg_type: int) -> int | decimal.Decimal | None:
    """sum of integers: int8 for int2/int4 (range-checked), numeric for int8."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    total = sum(vals)
    if arg_type == 20:
        return decimal.Decimal(total)
    if not INT8_MIN <= total <= INT8_MAX:
        raise NumericValueOutOfRangeError("bigint out of range")
    return total


def sum_float(values: Iterable[float | None], float4: bool) -> float | None:
    """float4pl / float8pl in row order; finite + finite = inf is an error."""
    state = None
    for v in values:
        if v is None:
            continue
        v = np.float32(v) if float4 else float(v)
        if state is None:
            state = v
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            result = state + v
        if math.isinf(result) and not math.isinf(state) and not math.isinf(v):
            raise NumericValueOutOfRangeError("value out of range: overflow")
        state = result
    return None if state is None else float(state)


def avg_float(values: Iterable[float | None]) -> float | None:
    """float8_accum (Youngs-Cramer N, Sx, Sxx, in float8) then Sx / N."""
    n, sx, sxx = 0.0, 0.0, 0.0
    for v in values:
        if v is None:
            continue
        v = float(v)
        n_old, sx_old = n, sx
        n = n + 1.0
        sx = sx + v
        if n_old > 0.0:
            tmp = v * n - sx
            sxx = sxx + tmp * tmp / (n * n_old)
            if math.isinf(sx) or math.isinf(sxx):
                if not math.isinf(sx_old) and not math.isinf(v):
                    raise NumericValueOutOfRangeError("value out of range: overflow")
                sxx = math.nan
        elif math.isnan(v) or math.isinf(v):
            sxx = math.nan
    return None if n == 0.0 else sx / n


def _float_greater(a: float, b: float) -> bool:
    """float8_gt: NaN is above every other value and equal to NaN."""
    if math.isnan(a):
        return not math.isnan(b)
    if math.isnan(b):
        return False
    return a > b


def min_max(values: Iterable[Any], is_max: bool) -> Any:
    """min/max in the argument's type; floats in Postgres's order with the
    later of equal values kept (float8larger / float8smaller); text by bytes."""
    best = None
    for v in values:
        if v is None:
            continue
        if best is None:
            best = v
        elif isinstance(v, float):
            keep_best = _float_greater(best, v) if is_max else _float_greater(v, best)
            if not keep_best:
                best = v
        elif isinstance(v, str):
            if (v.encode() > best.encode()) if is_max else (v.encode() < best.encode()):
                best = v
        elif (v > best) if is_max else (v < best):
            best = v
    return best


def aggregate(spec: Mapping[str, Any], values: Sequence[Any] | None, nrows: int) -> Any:
    """One aggregate (request format) over one group's values (None: count(*))."""
    func, arg = spec["func"], spec.get("arg_type_oid")
    if func == "count":
        if spec.get("star"):
            return nrows
        present = [v for v in values if v is not None]
        return len({canonical(v) for v in present}) if spec.get("distinct") else len(present)
    if func == "sum" and arg in (21, 23, 20):
        return sum_int(values, arg)
    if func == "avg" and arg in (21, 23, 20):
        return avg_int(values)
    if func == "sum":
        return sum_float(values, arg == 700)
    if func == "avg":
        return avg_float(values)
    if func in ("min", "max"):
        return min_max(values, func == "max")
    if func in ("bool_and", "every", "bool_or"):
        present = [bool(v) for v in values if v is not None]
        if not present:
            return None
        return all(present) if func != "bool_or" else any(present)
    raise ValueError(f"no reference for {func}")


def aggregate_rows(request: Mapping[str, Any], columns: Mapping[str, Sequence[Any]],
                   nrows: int, selection: Sequence | None = None) -> list[dict[str, Any]]:
    """The rows a pushed-down aggregation must return, groups in order of
    first appearance; without GROUP BY exactly one row."""
    rows = selected(nrows, selection)
    group_by = request["group_by"]
    groups: dict[tuple, list[int]] = {}
    keys: dict[tuple, tuple] = {}
    for i in rows:
        raw = tuple(columns[g["column"]][i] for g in group_by)
        key = tuple(canonical(v) for v in raw)
        if key not in groups:
            groups[key] = []
            keys[key] = raw
        groups[key].append(i)
    if not group_by and not groups:
        groups[()] = []
        keys[()] = ()
    out = []
    for key, members in groups.items():
        results = []
        for spec in request["aggregates"]:
            values = None if spec.get("star") else [columns[spec["column"]][i] for i in members]
            results.append(aggregate(spec, values, len(members)))
        row = {}
        for o in request["outputs"]:
            row[o["name"]] = keys[key][o["index"]] if o["kind"] == "group" else results[o["index"]]
        out.append(row)
    return out


def distinct_bitmap_update(bits: np.ndarray, lo: int, values: np.ndarray, validity=None, selection=None
                           ) -> tuple[int, np.ndarray | None]:
    """numpy reference of the kernel ``distinct_bitmap_update``: the same
    in-place bitmap update and the same result, written with whole-array
    operations (Python ints for the range test, so no wrap-around)."""
    n = len(values)
    rows = np.asarray(selected(n, selection), dtype=np.int64)
    if validity is not None:
        rows = rows[np.asarray(validity, dtype=bool)[rows]]
    v = np.asarray(values)[rows].astype(object)
    nbits = 64 * len(bits)
    inside = np.array([lo <= int(x) < lo + nbits for x in v], dtype=bool)
    outside = np.zeros(n, dtype=np.uint8)
    outside[rows[~inside]] = 1
    offs = np.unique(np.array([int(x) - lo for x in v[inside]], dtype=np.int64))
    words, masks = offs >> 6, np.left_shift(np.uint64(1), (offs & 63).astype(np.uint64))
    before = (bits[words] & masks) != 0
    np.bitwise_or.at(bits, words, masks)
    return int(np.count_nonzero(~before)), (outside if outside.any() else None)


def dense_group_ids(values: np.ndarray, lo: int, nslots: int, seen: np.ndarray, validity=None,
                    selection=None) -> tuple[np.ndarray, int]:
    """numpy reference of the kernel ``dense_group_ids``: the same group ids
    and the same ``seen`` update, with whole-array operations (Python ints
    for the range test, so no wrap-around)."""
    rows = np.asarray(selected(len(values), selection), dtype=np.int64)
    v = np.asarray(values)[rows].astype(object)
    present = np.ones(len(rows), dtype=bool) if validity is None \
        else np.asarray(validity, dtype=bool)[rows]
    inside = np.array([p and lo <= int(x) < lo + nslots for x, p in zip(v, present)], dtype=bool)
    gids = np.full(len(rows), -1, dtype=np.int64)
    gids[~present] = nslots
    gids[inside] = np.array([int(x) - lo for x in v[inside]], dtype=np.int64)
    seen[gids[gids >= 0]] = 1
    return gids, int(np.count_nonzero(gids == -1))
