"""The expression JIT: aggregations over one columnar table whose WHERE
clauses or aggregate arguments are expressions, computed by one compiled
loop per batch of chunk groups (filter, expressions and aggregates fused,
no intermediate arrays).  docs/jit.md is the user's page.

What is computed here, and how exactly, is decided by
:mod:`orochi_fdw.query.pushable` (``kernel_expression`` /
``kernel_aggregate``); :mod:`orochi_fdw.jit.codegen` writes the kernel and
:mod:`orochi_fdw.jit.kernels` compiles and caches it.  A query this refuses
runs as before (the aggregate pushdown's kernels, or PostgreSQL).
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any, Iterator

import numpy as np

from orochi_fdw.bridge.api import Qual
from orochi_fdw.bridge.batch import Batch, Column, CountedBatches, WireKind, to_column, wire_kind_for_type
from orochi_fdw.errors import (DatetimeValueOutOfRangeError, DivisionByZeroError, NumericValueOutOfRangeError,
                               WrapperError)
from orochi_fdw.jit import codegen, kernels
from orochi_fdw.query import pushable as P
from orochi_fdw.query.pushable import Refused

#: PostgreSQL's cost of handing one row to the executor, and of one operator
CPU_TUPLE_COST = 0.01
CPU_OPERATOR_COST = 0.0025
#: the kernel's cost per row read (a few machine instructions: far below
#: what the scan's own estimate charges a row for decoding it)
KERNEL_ROW_COST = 0.00001
#: the share of a scan's cost that reading (not handing rows over) takes
KERNEL_SCAN_FRACTION = 0.8

_SCAN_KINDS = {P.INT2: WireKind.INT16, P.INT4: WireKind.INT32, P.INT8: WireKind.INT64,
               P.FLOAT4: WireKind.FLOAT32, P.FLOAT8: WireKind.FLOAT64, P.DATE: WireKind.DATE,
               P.TIMESTAMP: WireKind.TIMESTAMP, P.TIMESTAMPTZ: WireKind.TIMESTAMP}


def _log(message: str) -> None:
    try:
        from orochi_fdw.bridge import spi

        spi.log("debug", message)
    except Exception:  # noqa: BLE001 - outside a backend
        pass


def _typed(clauses: list, outputs: list) -> tuple[list, list]:
    return ([P.kernel_condition(c) for c in clauses], [P.kernel_aggregate(o) for o in outputs])


def _columns_of(t: Any, out: set) -> None:
    if isinstance(t, (tuple, list)):
        if len(t) == 3 and t[0] == "col" and isinstance(t[2], str):
            out.add((t[2], t[1]))
            return
        for x in t:
            _columns_of(x, out)


def _operators(t: Any) -> int:
    if isinstance(t, (tuple, list)):
        here = 1 if t and t[0] in ("arith", "neg", "cast", "cmp", "and", "or", "not", "isnull", "case",
                                   "coalesce", "dt") else 0
        return here + sum(_operators(x) for x in t)
    return 0


def _check_columns(handle: Any, typed: Any) -> None:
    from orochi_fdw.columnar.table import ColumnarTable
    from orochi_fdw.columnar.types import scan_wire_kind

    if type(handle.instance) is not ColumnarTable:
        raise Refused("not a columnar table")
    used: set = set()
    _columns_of(typed, used)
    for attname, type_oid in used:
        coldef = handle.instance.columns.get(attname)
        if coldef is None or coldef.type_oid != type_oid or scan_wire_kind(coldef) is not _SCAN_KINDS[type_oid]:
            raise Refused(f"column {attname} does not reach the kernel as its type")


def _prune_qual(raw: Any) -> list | None:
    """``integer column op integer constant`` (or a date / timestamp /
    timestamptz column against a finite constant of its type): a qual the
    scan may prune chunk groups with (the kernel still evaluates it), as
    [attname, op, value as JSON, type]."""
    comparison = P.column_comparison(raw)
    if comparison is None:
        return None
    left, op, right = comparison
    value = right[4]
    if type(value) is int and left[3] in P.INTEGER_TYPES:
        return [left[2], op, value, None]
    if left[3] == right[1] and left[3] == P.DATE and type(value) is datetime.date:
        return [left[2], op, value.isoformat(), P.DATE]
    if left[3] == right[1] and left[3] in (P.TIMESTAMP, P.TIMESTAMPTZ) and type(value) is datetime.datetime \
            and (value.tzinfo is None) == (left[3] == P.TIMESTAMP):
        return [left[2], op, value.isoformat(), left[3]]
    return None


def _prune_value(value: Any, type_oid: int | None) -> Any:
    if type_oid == P.DATE:
        return datetime.date.fromisoformat(value)
    if type_oid in (P.TIMESTAMP, P.TIMESTAMPTZ):
        return datetime.datetime.fromisoformat(value)
    return value


def plan_aggregate(handle: Any, rti: int, clauses: list, outputs: list, tuples: float, rows: float,
                   scan_cost: float) -> tuple[float, float, str, float] | None:
    """(startup_cost, total_cost, plan, rows) if a kernel computes these
    aggregates over the rows that pass ``clauses`` (in evaluation order),
    else None."""
    try:
        typed_clauses, aggs = _typed(clauses, outputs)
        _check_columns(handle, (typed_clauses, aggs))
        kernel = codegen.generate(typed_clauses, aggs, {})
        plan_text = json.dumps({"clauses": typed_clauses, "aggs": aggs})
    except Refused as reason:
        _log(f"orochi: expression JIT declined: {reason}")
        return None
    tuples = max(float(tuples), 0.0)
    ops = _operators((typed_clauses, aggs)) + len(aggs)
    pg_cost = tuples * (CPU_TUPLE_COST + ops * CPU_OPERATOR_COST)
    min_cost = float(kernels.setting("orochi.jit_min_cost", "50000"))
    if pg_cost < min_cost and not kernels.is_cached(kernel):
        _log(f"orochi: expression JIT: estimated cost {pg_cost:.0f} below orochi.jit_min_cost")
        return None
    # the rows the scan may prune with: the leading simple clauses (rows they
    # remove reach no later clause in PostgreSQL either)
    prune = []
    for raw in clauses:
        q = _prune_qual(raw)
        if q is None:
            break
        prune.append(q)
    # the typed trees (constants as the kernel takes them: JSON), and the
    # parameters the scan evaluates when it starts (runtime.engine_params)
    plan = {"jit": 1, "rti": rti, "relname": handle.relname, **json.loads(plan_text), "prune": prune,
            "params": kernel.params}
    # the kernel reads what the scan reads, but no row reaches PostgreSQL and
    # no expression is evaluated there: priced below the scan it replaces
    startup = scan_cost * KERNEL_SCAN_FRACTION + tuples * KERNEL_ROW_COST
    return startup, startup + 0.01, json.dumps(plan), 1.0


# ---------------------------------------------------------------------------
# execution


class Prepared:
    """A plan's kernel, compiled (or found in a cache) when the scan starts."""

    def __init__(self, plan: dict, handle: Any):
        self.plan = plan
        self.handle = handle
        self.clauses, self.aggs = plan["clauses"], plan["aggs"]
        self.kernel = codegen.generate(self.clauses, self.aggs, {})
        if self.kernel.params != plan["params"]:
            raise WrapperError("a JIT plan whose parameters differ from its kernel's")
        coldefs = handle.instance.columns
        self.types = [coldefs[c].type_oid for c in self.kernel.columns]
        self.consts = tuple(_const_arg(t, v) for t, v in self.kernel.constants)
        #: the parameters' arguments (value, is NULL), set when the scan starts
        self.param_args: tuple = tuple(x for key in self.kernel.params for x in _param_arg(key[2], None))
        values = [np.zeros(0, dtype=codegen.COLUMN_DTYPES[t]) for t in self.types]
        masks = [np.zeros(0, dtype=np.uint8) for _t in self.types]
        states = (np.zeros(max(self.kernel.n_int, 1), np.int64), np.zeros(max(self.kernel.n_float, 1), np.float64))
        tail = self.consts + self.param_args + states
        (self.func, self._fast_func), self.compile_seconds, self.compile_how = kernels.load(
            self.kernel, (0, *(x for pair in zip(values, masks) for x in pair)) + tail)
        self._fast_sample: tuple | None = (0, *values) + tail

    def fast_func(self) -> Any:
        """``kernel_fast``, compiled (or loaded from a cache) at the first
        batch without NULLs; the time it takes counts as compiling."""
        if self._fast_sample is not None:
            t0 = time.perf_counter()
            self._fast_func(*self._fast_sample)
            self.compile_seconds += time.perf_counter() - t0
            stats = getattr(self._fast_func, "stats", None)
            if stats is not None and not sum(stats.cache_hits.values()) and sum(stats.cache_misses.values()):
                self.compile_how = "compiled"  # the exact loop came from a cache, this one did not
            self._fast_sample = None
        return self._fast_func

    def bind(self, values: list | None) -> None:
        """The parameters' values (``plan["params"]`` order; runtime.engine_params)."""
        values = list(values or [])
        if len(values) != len(self.kernel.params):
            raise WrapperError(f"{len(values)} parameter values for {len(self.kernel.params)} parameters")
        self.param_args = tuple(x for key, value in zip(self.kernel.params, values)
                                for x in _param_arg(key[2], value))

    def columns(self) -> dict:
        from orochi_fdw.bridge.api import ColumnDefinition

        return {f"a{i}": ColumnDefinition(column_name=f"a{i}", type_oid=agg[1], attnum=i + 1)
                for i, agg in enumerate(self.aggs)}


def _param_arg(type_oid: int, value: Any) -> tuple:
    """A parameter's kernel arguments: its value in the kernel's type and
    whether it is NULL."""
    if value is None:
        return (_const_arg(type_oid, 0), True)
    if type_oid in P.KERNEL_DATETIME:
        value = P.kernel_datetime_value(type_oid, value)
    elif type_oid in P.FLOAT_TYPES:
        value = float(value)
    elif type_oid != P.BOOL and type(value) is not int:
        raise WrapperError(f"a parameter value {value!r} of type {type_oid}")
    return (_const_arg(type_oid, value), False)


def _const_arg(type_oid: int, value: Any) -> Any:
    if type_oid == P.FLOAT4:
        return np.float32(value)
    if type_oid == P.FLOAT8:
        return np.float64(value)
    if type_oid == P.BOOL:
        return bool(value)
    return np.int64(value)


class Run(CountedBatches):
    """The iterator of a kernel's aggregation (one row), with what EXPLAIN
    ANALYZE shows: rows and batches read, seconds reading and in the kernel."""

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        counters: dict[str, Any] = {"rows": 0, "batches": 0, "no_nulls": 0, "fast": 0, "redone": 0,
                                    "read": 0.0, "kernel": 0.0}
        super().__init__(_run(prepared, counters), counters)

    def explain_analyze(self) -> list[str]:
        c = self.counters
        return [f"JIT Rows Read: {c['rows']:,} in {c['batches']} batches",
                f"JIT Batches Without NULLs: {c['no_nulls']}, {c['fast']} by the fast loop "
                f"({c['redone']} computed again row by row)",
                f"JIT Time: reading {c['read'] * 1000:.1f} ms, kernel {c['kernel'] * 1000:.1f} ms"]


def _raise(code: int) -> None:
    sqlstate, message = codegen.ERRORS[code]
    if sqlstate == "22008":
        raise DatetimeValueOutOfRangeError(message)
    if sqlstate == "22012":
        raise DivisionByZeroError(message)
    raise NumericValueOutOfRangeError(message)


def _batches(prepared: Prepared) -> Iterator[tuple[int, list, list | None]]:
    """(rows, values of each kernel column, their validity masks or None
    where no column has a NULL) of each batch the scan yields."""
    instance = prepared.handle.instance
    names = prepared.kernel.columns
    kinds = [_SCAN_KINDS[t] for t in prepared.types]
    quals = [Qual(name, op, _prune_value(value, t), None, False) for name, op, value, t in prepared.plan["prune"]]
    pending: list = []
    # the kernel reads no row ids: the scan builds none
    scan = instance.execute(quals, list(names), rowids=False)
    for item in scan or ():
        if not isinstance(item, Batch):
            pending.append(item)
            continue
        yield (item.nrows, *_arrays([to_column(k, item.columns[n]) for n, k in zip(names, kinds)]))
    if pending:
        if isinstance(pending[0], dict):
            cols = [[r.get(n) for r in pending] for n in names]
        else:
            order = list(instance.columns)
            cols = [[r[order.index(n)] for r in pending] for n in names]
        yield (len(pending), *_arrays([Column.from_pylist(k, c) for k, c in zip(kinds, cols)]))


def _arrays(cols: list[Column]) -> tuple[list, list | None]:
    """The values of each column as the kernel takes them, and their
    validity masks (None where no column has a NULL: the fast kernel's batch)."""
    values = [np.ascontiguousarray(col.values) for col in cols]
    masks = [None if col.validity is None or col.validity.all() else
             np.ascontiguousarray(col.validity, dtype=np.uint8) for col in cols]
    return values, None if all(m is None for m in masks) else masks


def _kernel_args(n: int, values: list, masks: list | None, ones: dict) -> list:
    """``kernel``'s column arguments: values and validity of each (a column
    without NULLs gets an all-ones mask, made once per row count: the
    kernel only reads it)."""
    out = [n]
    for j, v in enumerate(values):
        m = None if masks is None else masks[j]
        if m is None:
            m = ones.get(n)
            if m is None:
                m = ones[n] = np.ones(n, dtype=np.uint8)
        out += [v, m]
    return out


class _Chooser:
    """Which loop computes the batches without NULLs: the first
    :data:`TRIALS` of them by each loop in turn (the fast one first; both
    give the same results), timed, then the one that took the least time a
    row.  The fast loop computes every expression on every row: behind a
    filter that passes few rows the exact loop, which skips them, may be
    the faster."""

    TRIALS = 2

    def __init__(self) -> None:
        self.seconds: dict[bool, list[float]] = {True: [], False: []}
        self.choice: bool | None = None

    def use_fast(self) -> bool:
        if self.choice is not None:
            return self.choice
        return len(self.seconds[True]) <= len(self.seconds[False])

    def record(self, fast: bool, seconds: float, rows: int) -> None:
        if self.choice is not None or rows == 0:
            return
        self.seconds[fast].append(seconds / rows)
        if min(len(x) for x in self.seconds.values()) >= self.TRIALS:
            self.choice = min(self.seconds[True]) <= min(self.seconds[False])


def _run(prepared: Prepared, counters: dict) -> Iterator[Batch]:
    clock = time.perf_counter
    k = prepared.kernel
    ai = np.zeros(max(k.n_int, 1), np.int64)
    af = np.zeros(max(k.n_float, 1), np.float64)
    # the exact integer sums, folded from the kernel's halves after each batch
    exact = {i: [0, 0] for i, slot in enumerate(k.layout)
             if slot["name"] in ("sum", "avg") and slot["arg_type"] in codegen._INT}
    ones: dict[int, np.ndarray] = {}
    tail = (*prepared.consts, *prepared.param_args, ai, af)
    row_by_row, fast = prepared.func, None
    chooser = _Chooser()
    t0 = clock()
    for n, values, masks in _batches(prepared):
        if masks is None and fast is None:
            # compiled at the first batch without NULLs: neither reading nor the kernel's time
            c = clock()
            fast = prepared.fast_func()
            t0 += clock() - c
        t1 = clock()
        counters["read"] += t1 - t0
        # a batch without NULLs: the fast kernel (if it is the faster), unless
        # it asks for the exact one (a possible error, a non-finite sum: it
        # stored nothing)
        use_fast = masks is None and chooser.use_fast()
        code = fast(n, *values, *tail) if use_fast else codegen.REDO
        if code == codegen.REDO:
            counters["redone"] += use_fast
            code = row_by_row(*_kernel_args(n, values, masks, ones), *tail)
        t0 = clock()
        if masks is None:
            counters["no_nulls"] += 1
            counters["fast"] += use_fast
            chooser.record(use_fast, t0 - t1, n)
        counters["kernel"] += t0 - t1
        counters["rows"] += n
        counters["batches"] += 1
        if code:
            _raise(int(code))
        for i, acc in exact.items():
            s = k.layout[i]["i"]
            acc[0] += int(ai[s])
            acc[1] += (int(ai[s + 1]) << 32) + int(ai[s + 2])
            ai[s:s + 3] = 0
    counters["read"] += clock() - t0
    values = []
    for i, slot in enumerate(k.layout):
        name, s, f = slot["name"], slot["i"], slot["f"]
        arg_type = slot["arg_type"]
        if name == "count":
            values.append(int(ai[s]))
        elif i in exact:
            n, total = exact[i]
            if n == 0:
                values.append(None)
            elif name == "avg":
                from orochi_fdw.query.aggregate import _decimal_avg

                values.append(_decimal_avg(total, 0, n))
            elif slot["type"] == P.INT8:
                if not -(2**63) <= total < 2**63:
                    raise NumericValueOutOfRangeError("bigint out of range")
                values.append(total)
            else:
                values.append(str(total))
        elif name == "avg":
            values.append(None if af[f] == 0 else float(af[f + 1] / af[f]))
        elif ai[s] == 0:
            values.append(None)
        elif arg_type in codegen._INTLIKE:
            values.append(int(ai[s + 1]))
        else:
            values.append(float(np.float32(af[f])) if arg_type == P.FLOAT4 else float(af[f]))
    columns = {}
    for i, (agg, value) in enumerate(zip(prepared.aggs, values)):
        if agg[1] in _SCAN_KINDS and agg[1] in P.KERNEL_DATETIME:
            # min / max of dates and times: PostgreSQL's own integers
            kind = _SCAN_KINDS[agg[1]]
            columns[f"a{i}"] = Column(kind, np.array([value or 0], dtype=codegen.COLUMN_DTYPES[agg[1]]),
                                      None if value is not None else np.zeros(1, dtype=np.uint8))
        else:
            columns[f"a{i}"] = Column.from_pylist(wire_kind_for_type(agg[1]), [value])
    yield Batch(1, columns)


def run(prepared: Prepared, values: list | None = None) -> Run:
    """The aggregation, with the parameters' values (``plan["params"]`` order)."""
    prepared.bind(values)
    return Run(prepared)


# ---------------------------------------------------------------------------
# EXPLAIN

_OPS = {"and": " AND ", "or": " OR "}
_TYPE_NAMES = {P.INT2: "smallint", P.INT4: "integer", P.INT8: "bigint", P.FLOAT4: "real",
               P.FLOAT8: "double precision", P.BOOL: "boolean", P.DATE: "date",
               P.TIMESTAMP: "timestamp", P.TIMESTAMPTZ: "timestamptz"}


def _interval_text(days: int, usecs: int) -> str:
    """An interval of days and microseconds as PostgreSQL writes it."""
    sign = "-" if usecs < 0 else ""
    hours, rest = divmod(abs(usecs), 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}" + (f".{fraction:06d}".rstrip("0") if fraction else "")
    return f"{days} days {text}" if days else text


def _datetime_text(type_oid: int, value: int) -> str:
    """A kernel's date or time value as text, for EXPLAIN (UTC for timestamptz)."""
    limit = 2**31 - 1 if type_oid == P.DATE else 2**63 - 1
    if value in (limit, -limit - 1):
        return "infinity" if value > 0 else "-infinity"
    try:
        if type_oid == P.DATE:
            return (datetime.date(2000, 1, 1) + datetime.timedelta(days=value)).isoformat()
        text = (datetime.datetime(2000, 1, 1) + datetime.timedelta(microseconds=value)).isoformat(" ")
        return text + "+00" if type_oid == P.TIMESTAMPTZ else text
    except OverflowError:
        return f"{value} {'days' if type_oid == P.DATE else 'microseconds'} after 2000-01-01"


def deparse(t: Any) -> str:
    """The text of a typed tree, for EXPLAIN."""
    kind = t[0]
    if kind == "col":
        return t[2]
    if kind == "const":
        if t[2] is None:
            return "NULL"
        if t[1] in P.KERNEL_DATETIME:
            return f"'{_datetime_text(t[1], t[2])}'::{_TYPE_NAMES[t[1]]}"
        return repr(t[2])
    if kind == "param":
        return f"${t[2][1]}"
    if kind == "dt":
        fn, args = t[2], t[3]
        if fn == "ts_mi":
            return f"({deparse(args[0])} - {deparse(args[1])})"
        if fn in ("date2ts", "datekey"):
            return f"({deparse(args[0])})::timestamp"
        if fn.startswith("part_"):
            return f"date_part('{fn[len('part_'):]}', {deparse(args[0])})"
        if fn == "ts_pl":
            return f"({deparse(args[0])} + '{_interval_text(args[1][2], args[2][2])}'::interval)"
        return f"({deparse(args[0])} {'+' if fn == 'date_pli' else '-'} {deparse(args[1])})"
    if kind == "arith":
        return f"({deparse(t[3])} {t[2]} {deparse(t[4])})"
    if kind == "neg":
        return f"(- {deparse(t[2])})"
    if kind == "cast":
        return f"({deparse(t[2])})::{_TYPE_NAMES[t[1]]}"
    if kind == "cmp":
        return f"({deparse(t[2])} {t[1]} {deparse(t[3])})"
    if kind in _OPS:
        return "(" + _OPS[kind].join(deparse(a) for a in t[1]) + ")"
    if kind == "not":
        return f"(NOT {deparse(t[1])})"
    if kind == "isnull":
        return f"({deparse(t[2])} IS {'' if t[1] else 'NOT '}NULL)"
    if kind == "case":
        whens = " ".join(f"WHEN {deparse(c)} THEN {deparse(v)}" for c, v in t[2])
        return f"CASE {whens} ELSE {deparse(t[3])} END"
    if kind == "coalesce":
        return "COALESCE(" + ", ".join(deparse(a) for a in t[2]) + ")"
    return kind


def explain(prepared: Prepared, verbose: bool) -> list[str]:
    aggs = []
    for name, _rtype, arg in prepared.aggs:
        aggs.append(f"{name}({'*' if arg is None else deparse(arg)})")
    lines = [f"JIT Aggregates: {', '.join(aggs)}"]
    if prepared.clauses:
        lines.append("JIT Filter: " + " AND ".join(deparse(c) for c in prepared.clauses))
    lines.append(f"JIT Compile: {prepared.compile_seconds * 1000:.1f} ms ({prepared.compile_how})")
    if verbose:
        lines.append(f"JIT Kernel Key: {kernels.key(prepared.kernel, kernels.optimization_level())}")
    return lines
