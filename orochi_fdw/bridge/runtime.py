"""The entry points the C bridge calls.

C does plumbing only: it passes plain values (options as dicts, columns and
quals as tuples, batches as buffers) to the functions here, and these build
the objects a wrapper sees (:class:`Qual`, :class:`SortKey`,
:class:`ColumnDefinition`, :class:`Batch`), pick and cache the wrapper
instance of each table, and dispatch transaction events to the instances
that took part in the transaction.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from orochi_fdw.bridge import sqlfunc, wrappers
from orochi_fdw.bridge.api import ColumnDefinition, ForeignDataWrapper, Qual, SortKey, method_takes
from orochi_fdw.bridge.batch import WIRE_DTYPES, Batch, Column, WireKind, to_column, wire_kind_for_type
from orochi_fdw.errors import (FeatureNotSupportedError, InvalidOptionError, OrochiError, SPIError,
                               StatementAborted, WrapperError)

#: the wrapper of tables whose server and table name none (a declared
#: wrapper's name: orochi_fdw.bridge.wrappers)
DEFAULT_WRAPPER = wrappers.DEFAULT

#: a plan-time qual value that is only known when the scan starts
UNKNOWN = type("UnknownValue", (), {"__repr__": lambda self: "<unknown until execution>"})()

#: options the bridge itself reads, at server and table level
BRIDGE_OPTIONS = ("wrapper",)


# ---------------------------------------------------------------------------
# errors


def describe_exception(exc: BaseException) -> tuple[str | None, str, str | None, str | None]:
    """(sqlstate, message, detail, hint) of an exception reaching C.

    Orochi's own errors carry their SQLSTATE and a message for users; any other
    exception is a bug or a wrapper's failure: its message names the Python
    error and the traceback goes in DETAIL.
    """
    if isinstance(exc, (SPIError, StatementAborted)):
        return (exc.sqlstate, exc.message, exc.detail, exc.hint)
    if isinstance(exc, OrochiError):
        return (
            getattr(exc, "sqlstate", "XX000"),
            str(exc),
            getattr(exc, "detail", None),
            getattr(exc, "hint", None),
        )
    name = type(exc).__qualname__
    module = type(exc).__module__
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return ("38000", f"{name}: {exc}", tb, None)


# ---------------------------------------------------------------------------
# tables and their wrapper instances


@dataclass
class TableHandle:
    """A foreign table's wrapper instance and what the bridge needs of it."""

    relid: int
    relname: str
    instance: Any
    columns: dict[str, ColumnDefinition]
    natts: int
    key: tuple
    kinds: dict[str, WireKind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kinds = {name: wire_kind_for_type(c.type_oid) for name, c in self.columns.items()}


@dataclass
class AggregateHandle(TableHandle):
    """A pushed-down aggregation over a table: its "columns" are the outputs
    (group keys ``g<i>`` and aggregates ``a<i>``, i their position)."""

    request: dict = field(default_factory=dict)


@dataclass
class JoinHandle(TableHandle):
    """A pushed-down join of two tables: its "columns" are the outputs
    ``j<i>``; ``inner`` is the inner table's wrapper instance and ``sides``
    says which table each qual (in order) belongs to (0 outer, 1 inner)."""

    inner: Any = None
    request: dict = field(default_factory=dict)
    sides: list = field(default_factory=list)

    def split_quals(self, raw: list[tuple]) -> tuple[list[Qual], list[Qual]]:
        return (_quals([q for q, s in zip(raw, self.sides) if s == 0]),
                _quals([q for q, s in zip(raw, self.sides) if s == 1]))


@dataclass
class EngineJoinHandle(TableHandle):
    """A join run by the join engine (orochi_fdw.query.engine): its
    "columns" are the outputs ``j<i>``; ``tables`` the handles of its
    tables by range table index."""

    plan: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    shared: dict = field(default_factory=dict)


def _describe_output(request: dict, kind: str, index: int) -> str:
    if kind == "g":
        g = request["group_by"][index]
        if g["kind"] == "column":
            return g["column"]
        if g["kind"] == "date_trunc":
            return f"date_trunc('{g['unit']}', {g['column']})"
        return f"date_bin({g['width_us']} us, {g['column']}, origin {g['origin_us']} us)"
    a = request["aggregates"][index]
    if a["star"]:
        return f"{a['func']}(*)"
    return f"{a['func']}({'DISTINCT ' if a['distinct'] else ''}{a['column']})"


def _prepare_request(request: dict) -> dict:
    """Name the outputs (position order) and give each its type."""
    outputs = []
    for i, (kind, index) in enumerate(request["outputs"]):
        item = (request["group_by"] if kind == "g" else request["aggregates"])[index]
        outputs.append({
            "name": f"{kind}{i}",
            "kind": "group" if kind == "g" else "aggregate",
            "index": index,
            "type_oid": item["type_oid"] if kind == "g" else item["result_type_oid"],
            "text": _describe_output(request, kind, index),
        })
    return {**request, "outputs": outputs}


_handles: dict[int, TableHandle] = {}


def load_wrapper_class(name: str) -> type:
    """The class of a declared wrapper, by its name or its class's dotted
    path (only declared wrappers load: :mod:`orochi_fdw.bridge.wrappers`)."""
    return wrappers.load(name)


def instance_for(relid: int, server_name: str, server_options: dict, table_options: dict,
                 columns: list[tuple], relname: str, natts: int) -> TableHandle:
    """The wrapper instance of a table, made once and kept while its options
    and columns stay the same."""
    key = (server_name, tuple(sorted(server_options.items())), tuple(sorted(table_options.items())),
           tuple((c[0], c[1], c[2], c[4], tuple(sorted(c[6].items()))) for c in columns))
    handle = _handles.get(relid)
    if handle is None or handle.key != key:
        path = table_options.get("wrapper") or server_options.get("wrapper") or DEFAULT_WRAPPER
        cls = load_wrapper_class(path)
        coldefs = {
            c[0]: ColumnDefinition(column_name=c[0], type_oid=c[1], typmod=c[2], type_name=c[3],
                                   attnum=c[4], not_null=c[5], options=c[6])
            for c in columns
        }
        validate = getattr(cls, "validate_options", None)
        if validate is not None:
            for col in coldefs.values():
                if col.options:
                    validate("column", col.options)
        options = {k: v for k, v in {**server_options, **table_options}.items() if k not in BRIDGE_OPTIONS}
        options.setdefault("table_name", relname)
        options.setdefault("table_oid", str(relid))
        instance = cls(options, coldefs)
        handle = TableHandle(relid, relname, instance, coldefs, natts, key)
        _handles[relid] = handle
    _transaction.join(handle)
    return handle


def forget(relid: int) -> None:
    """Drop a table's cached instance (after DROP or ALTER)."""
    _handles.pop(relid, None)


# ---------------------------------------------------------------------------
# planning


def _quals(raw: list[tuple]) -> list[Qual]:
    quals = []
    for attname, op, is_list, use_or, value, known, collation, exact in raw:
        quals.append(Qual(attname, (op, bool(use_or)) if is_list else op, value if known else UNKNOWN,
                          collation, bool(exact), None if known else value))
    return quals


def _sortkeys(raw: list[tuple]) -> list[SortKey]:
    keys = []
    for t in raw:
        name, attnum, rev, nf, coll = t[:5]
        if len(t) > 5:  # an expression f(column, value): a distance, say
            function, value, known, column_first = t[5:]
            keys.append(SortKey(name, attnum, bool(rev), bool(nf), coll, function, value if known else UNKNOWN,
                                bool(column_first), None if known else value))
        else:
            keys.append(SortKey(name, attnum, bool(rev), bool(nf), coll))
    return keys


def get_rel_size(handle: TableHandle, quals: list[tuple], columns: list[str], selectivity: float = 1.0,
                 tuples: float = -1.0) -> tuple[float, float, float, float, float]:
    """(rows, width, startup_cost, total_cost, tuples) of a scan.

    ``selectivity`` is Postgres's estimate for all the scan's conditions
    (clauselist_selectivity over the ANALYZE statistics), ``tuples`` the
    table's row count pg_class records (-1: never analyzed).  A wrapper with
    ``estimate(quals, columns, selectivity)`` (a dict: rows, width,
    startup_cost, total_cost, tuples) decides from them; else its Multicorn
    ``get_rel_size`` and ``get_costs`` do, and the tuples stay Postgres's."""
    q = _quals(quals)
    estimate = getattr(handle.instance, "estimate", None)
    if estimate is not None:
        e = estimate(q, columns, selectivity)
        return (float(e["rows"]), float(e["width"]), float(e["startup_cost"]), float(e["total_cost"]),
                float(e.get("tuples", tuples)))
    rows, width = handle.instance.get_rel_size(q, columns)
    get_costs = getattr(handle.instance, "get_costs", None)
    if get_costs is not None:
        startup, total = get_costs(q, columns, rows, width)
    else:
        startup, total = ForeignDataWrapper.get_costs(handle.instance, q, columns, rows, width)
    return (float(rows), float(width), float(startup), float(total), float(tuples))


def param_scan_cost(handle: TableHandle, quals: list[tuple], columns: list[str], rows: float
                    ) -> tuple[float, float] | None:
    """(startup_cost, total_cost) of one scan of a parameterized path: the
    quals include join conditions whose values (unknown at plan time) come
    from the outer row at each rescan; ``rows`` is Postgres's estimate of the
    rows one scan returns.  None when the wrapper does not gain from the
    parameters (``param_scan_cost`` absent, or it answers None)."""
    method = getattr(handle.instance, "param_scan_cost", None)
    if method is None:
        return None
    answer = method(_quals(quals), columns, rows)
    if answer is None:
        return None
    startup, total = answer
    return (float(startup), float(max(total, startup)))


def can_sort(handle: TableHandle, sortkeys: list[tuple]) -> int | tuple[int, float, float]:
    """How many of the leading sort keys the wrapper produces in order; with
    the sorted scan's (startup, total) cost if the wrapper gives them."""
    keys = _sortkeys(sortkeys)
    method = getattr(handle.instance, "can_sort", None)
    answer = method(keys) if method else []
    costs = None
    if isinstance(answer, tuple):
        answer, startup, total = answer
        costs = (float(startup), float(total))
    handled = list(answer or [])
    n = 0
    for key in keys:
        if key not in handled:
            break
        n += 1
    return (n, *costs) if costs is not None and n else n


def exact_quals(handle: TableHandle, quals: list[tuple]) -> list[bool]:
    method = getattr(handle.instance, "exact_quals", None)
    if method is None:
        return [False] * len(quals)
    answer = [bool(x) for x in method(_quals(quals))]
    if len(answer) != len(quals):
        raise WrapperError("exact_quals must return one answer per qual")
    return answer


def can_aggregate(handle: TableHandle, request: dict, quals: list[tuple]) -> tuple[float, float, float] | None:
    """Whether the wrapper computes this aggregation itself (its
    ``can_aggregate(request, quals)``); (rows, startup_cost, total_cost) if so."""
    method = getattr(handle.instance, "can_aggregate", None)
    if method is None or not callable(getattr(handle.instance, "aggregate", None)):
        return None
    answer = method(_prepare_request(request), _quals(quals))
    if not answer:
        return None
    return (float(answer["rows"]), float(answer["startup_cost"]), float(answer["total_cost"]))


def aggregate_handle(handle: TableHandle, request: dict) -> AggregateHandle:
    """The handle an aggregate scan works through. The request is rebuilt
    from the plan when the scan starts, with the session's settings of that
    moment (its time zone), and marked ``at_execution``: a wrapper must then
    compute it even if a setting changed since planning (``SET TimeZone``
    before a prepared statement runs again) made it one it would not have
    accepted at plan time."""
    request = {**_prepare_request(request), "at_execution": True}
    columns = {
        out["name"]: ColumnDefinition(column_name=out["name"], type_oid=out["type_oid"], attnum=i + 1)
        for i, out in enumerate(request["outputs"])
    }
    return AggregateHandle(handle.relid, handle.relname, handle.instance, columns, len(columns),
                           handle.key, request=request)


def can_join(outer: TableHandle, inner: TableHandle, request: dict, outer_quals: list[tuple],
             inner_quals: list[tuple]) -> tuple[float, float, float] | None:
    """Whether the outer table's wrapper runs this join of two of its tables
    itself (``can_join(inner_instance, request, outer_quals,
    inner_quals)``, both tables served by the same wrapper class);
    (rows, startup_cost, total_cost) if so."""
    method = getattr(outer.instance, "can_join", None)
    if (method is None or type(outer.instance) is not type(inner.instance)
            or not callable(getattr(outer.instance, "execute_join", None))):
        return None
    answer = method(inner.instance, request, _quals(outer_quals), _quals(inner_quals))
    if not answer:
        return None
    return (float(answer["rows"]), float(answer["startup_cost"]), float(answer["total_cost"]))


def join_handle(outer: TableHandle, inner: TableHandle, request: dict, sides: list[int]) -> JoinHandle:
    """The handle a pushed-down join's scan works through."""
    columns = {
        out["name"]: ColumnDefinition(column_name=out["name"], type_oid=out["type_oid"], attnum=i + 1)
        for i, out in enumerate(request["outputs"])
    }
    return JoinHandle(outer.relid, outer.relname, outer.instance, columns, len(columns), outer.key,
                      inner=inner.instance, request=request, sides=list(sides))


def engine_join(tree: tuple, targets: list[tuple], kept: tuple | None = None
                ) -> tuple[float, float, str, float] | None:
    """Whether the join engine runs this join (orochi_fdw.query.engine):
    (startup_cost, total_cost, plan, rows) if so.  ``kept``: the tree of
    another pair of inputs of the same join relation the engine accepted
    before; None when this tree is no cheaper to run (that one stays)."""
    from orochi_fdw.query import engine

    if kept is not None and engine.tree_work(tree) >= engine.tree_work(kept):
        return None
    return engine.plan_join(tree, targets)


def engine_aggregate(tree: tuple, outputs: list[tuple], groups: float,
                     having: list[tuple] = ()) -> tuple[float, float, str, float] | None:
    """Whether the join engine computes these group keys and aggregates
    over a join it runs (or one table), with the HAVING conditions when it
    can: (startup_cost, total_cost, plan, rows) if so."""
    from orochi_fdw.query import engine

    return engine.plan_aggregate(tree, outputs, groups, having)


def engine_order(plan: str, keys: list[tuple], count: int | None, offset: int | None, rows: float,
                 startup: float, total: float) -> tuple[float, float, str, float] | None:
    """Whether the join engine sorts (ORDER BY) and limits (LIMIT/OFFSET) the
    rows of a join or aggregation it runs: (startup_cost, total_cost, plan,
    rows) if so."""
    from orochi_fdw.query import engine

    return engine.plan_order(plan, keys, count, offset, rows, startup, total)


def engine_params(plan: str) -> list[tuple[int, int, int, int]]:
    """The parameters a join the engine runs takes at execution:
    (kind, id, type, typmod) each; their values come as the scan's quals.
    A JIT plan (same slot of the scan, ``{"jit": ...}``) lists its own."""
    from orochi_fdw.query import engine

    decoded = json.loads(plan)
    if "jit" in decoded:
        return [tuple(p) for p in decoded.get("params", [])]
    return engine.plan_params(decoded)


def engine_subquery_relids(plan: str) -> list[int]:
    """The relation OIDs of the tables a plan of the join engine reads in
    correlated subqueries (not scans of the join: the scan opens them)."""
    from orochi_fdw.query import engine

    return engine.subquery_relids(json.loads(plan))


def engine_join_handle(plan: str, tables: dict[int, TableHandle],
                       subquery_tables: dict[int, TableHandle] | None = None,
                       statement: tuple | None = None) -> EngineJoinHandle:
    """The handle a join run by the engine works through; ``subquery_tables``
    the handles of the tables its correlated subqueries read, by relation OID;
    ``statement`` says which statement it runs in (None: one that writes),
    whose joins may read a table once for all of them."""
    from orochi_fdw.query import engine

    decoded = json.loads(plan)
    columns = engine.output_columns(decoded)
    first = next(iter(tables.values()))
    # the plan names tables by their range table index at planning; the
    # executor's (a subquery's tables are renumbered when the plan's range
    # tables are flattened) keep their order
    planned = sorted(inp["rti"] for inp in decoded["inputs"] if "relid" not in inp)
    given = sorted(tables)
    if len(planned) != len(given):
        raise WrapperError(f"a join planned over {len(planned)} tables runs over {len(given)}")
    handles = {p: tables[g] for p, g in zip(planned, given)}
    for inp in decoded["inputs"]:
        if "relid" in inp:
            handle = (subquery_tables or {}).get(inp["relid"])
            if handle is None:
                raise WrapperError(f"a join planned with a subquery over table {inp['relid']} runs without it")
            handles[inp["rti"]] = handle
    return EngineJoinHandle(first.relid, first.relname, first.instance, columns, len(columns), first.key,
                            plan=decoded, tables=handles, shared=engine.share_reads(decoded, handles, statement))


def jit_aggregate(handle: TableHandle, rti: int, clauses: list[tuple], outputs: list[tuple], tuples: float,
                  rows: float, scan_cost: float) -> tuple[float, float, str, float] | None:
    """Whether a compiled kernel computes these aggregates over the rows of
    one table that pass ``clauses`` (orochi_fdw.jit): (startup_cost,
    total_cost, plan, rows) if so."""
    from orochi_fdw import jit

    return jit.plan_aggregate(handle, rti, clauses, outputs, tuples, rows, scan_cost)


@dataclass
class JitHandle(TableHandle):
    """An aggregation computed by a compiled kernel (orochi_fdw.jit): its
    "columns" are the aggregates ``a<i>``; ``prepared`` the kernel."""

    prepared: Any = None


def jit_handle(plan: str, tables: dict[int, TableHandle]) -> JitHandle:
    """The handle of a kernel's aggregation; the kernel is compiled (or
    found in a cache) here, so that EXPLAIN shows the time it took."""
    from orochi_fdw import jit

    table = next(iter(tables.values()))
    prepared = jit.Prepared(json.loads(plan), table)
    columns = prepared.columns()
    return JitHandle(table.relid, table.relname, table.instance, columns, len(columns), table.key,
                     prepared=prepared)


# ---------------------------------------------------------------------------
# scanning


def execute(handle: TableHandle, quals: list[tuple] | None, columns: list[str], sortkeys: list[tuple],
            limit: int = -1, scan_cache: dict | None = None, rowids: bool = True) -> Iterator:
    """Start a scan.  ``limit`` (when >= 0) is the most rows the query can
    use: the scan is the whole query and nothing above it filters or sorts,
    so a wrapper may stop after that many rows (in ``sortkeys`` order).

    ``quals`` is None when no row can pass them (a strict comparison got a
    NULL value at execution): a scan then yields nothing, and an aggregation
    is asked for its result over no rows (``aggregate(request, None)``: one
    row without GROUP BY, none with it).  A pushed-down join always gets its
    quals (a NULL empties its own side only).

    ``scan_cache`` is a dict that lives as long as the scan node: the same
    one at every rescan (a parameterized scan's, once per outer row), so a
    wrapper whose execute() takes ``scan_cache`` keeps there what need not
    be read again (the catalog's stripe list, file metadata).

    ``rowids`` is false when the plan does not read the rows' ctid (no
    UPDATE or DELETE, no ``SELECT ctid``): a wrapper whose execute() takes
    ``rowids`` may then yield batches without row ids."""
    if isinstance(handle, EngineJoinHandle):
        from orochi_fdw.query import engine

        return engine.run(handle.plan, handle.tables, quals, scan_cache, handle.shared)
    if isinstance(handle, JitHandle):
        from orochi_fdw import jit

        return jit.run(handle.prepared, quals)
    if isinstance(handle, JoinHandle):
        outer_quals, inner_quals = handle.split_quals(quals or [])
        result = handle.instance.execute_join(handle.inner, handle.request, outer_quals, inner_quals)
    elif isinstance(handle, AggregateHandle):
        kwargs = {}
        if scan_cache is not None and method_takes(handle.instance, "scan_cache", "aggregate"):
            # from its first rescan on (a correlated subquery's: TPC-H Q17,
            # Q20): an aggregation run once reads as it always did
            scan_cache["runs"] = scan_cache.get("runs", 0) + 1
            if scan_cache["runs"] > 1:
                kwargs["scan_cache"] = scan_cache
        if "scan_cache" in kwargs and not handle.request.get("group_by"):
            # one row per run: kept by the runs' values, within the statement
            # (TPC-H Q17's avg per part, asked once per lineitem row of it)
            memo = scan_cache.setdefault("aggregate_results", {})
            key = repr(quals)
            rows = memo.get(key)
            if rows is None:
                if len(memo) >= AGGREGATE_MEMO_ENTRIES:
                    memo.clear()
                rows = memo[key] = list(handle.instance.aggregate(
                    handle.request, None if quals is None else _quals(quals), **kwargs) or ())
            return iter(rows)
        result = handle.instance.aggregate(handle.request, None if quals is None else _quals(quals), **kwargs)
    elif quals is None:
        return iter(())
    else:
        kwargs: dict[str, Any] = {}
        if limit >= 0 and method_takes(handle.instance, "limit", any_keyword=True):
            kwargs["limit"] = limit
        if scan_cache is not None and method_takes(handle.instance, "scan_cache"):
            kwargs["scan_cache"] = scan_cache
        if not rowids and method_takes(handle.instance, "rowids"):
            kwargs["rowids"] = False
        result = handle.instance.execute(_quals(quals), columns, _sortkeys(sortkeys) or None, **kwargs)
    return iter(result if result is not None else ())


#: the most results of a rescanned aggregation without GROUP BY kept by
#: their parameter values
AGGREGATE_MEMO_ENTRIES = 100_000




def batch_to_wire(handle: TableHandle, item: Any) -> tuple[int, list, Any]:
    """A yielded Batch as (nrows, per-attribute wire tuples, rowids)."""
    if not isinstance(item, Batch):
        raise WrapperError(
            f"{type(handle.instance).__name__}.execute yielded a {type(item).__name__}; "
            "expected a dict, tuple or list (one row) or a Batch"
        )
    wire: list[Any] = [None] * handle.natts
    for name, data in item.columns.items():
        coldef = handle.columns.get(name)
        if coldef is None:
            raise WrapperError(f'a batch has column "{name}", which table {handle.relname} does not have')
        col = to_column(handle.kinds[name], data)
        kind = int(col.kind)
        if col.kind is WireKind.DECIMAL64:
            from orochi_fdw.columnar.types import decimal_to_cstring, decimal_type

            ps = decimal_type(coldef)
            if ps is None:
                col = decimal_to_cstring(col, coldef)  # (raises: not a numeric(p, s))
                kind = int(col.kind)
            else:
                kind += ps[1]  # the bridge makes the numerics: kind 64 + scale
        if len(col) != item.nrows:
            raise WrapperError(f'batch column "{name}" has {len(col)} values for {item.nrows} rows')
        wire[coldef.attnum - 1] = (kind, col.values, col.validity, col.offsets)
    rowids = item.rowids
    if rowids is not None:
        rowids = np.ascontiguousarray(rowids, dtype=np.int64)
    return (item.nrows, wire, rowids)


def explain(handle: TableHandle, quals: list[tuple], columns: list[str], sortkeys: list[tuple],
            verbose: bool, analyze: bool, iterator: Any, rows: int) -> list[str]:
    lines = []
    if isinstance(handle, AggregateHandle):
        outs = handle.request["outputs"]
        lines.append("Aggregates: " + ", ".join(o["text"] for o in outs if o["kind"] == "aggregate"))
        groups = [o["text"] for o in outs if o["kind"] == "group"]
        if groups:
            lines.append("Group by: " + ", ".join(groups))
    explain_aggregate = getattr(handle.instance, "explain_aggregate", None)
    if isinstance(handle, JitHandle):
        from orochi_fdw import jit

        lines += jit.explain(handle.prepared, bool(verbose))
    elif isinstance(handle, EngineJoinHandle):
        from orochi_fdw.query import engine

        lines += engine.explain(handle.plan, bool(verbose))
    elif isinstance(handle, JoinHandle):
        outer_quals, inner_quals = handle.split_quals(quals)
        explain_join = getattr(handle.instance, "explain_join", None)
        if explain_join is not None:
            lines += list(explain_join(handle.inner, handle.request, outer_quals, inner_quals,
                                       verbose=bool(verbose)) or [])
    elif isinstance(handle, AggregateHandle) and explain_aggregate is not None:
        lines += list(explain_aggregate(handle.request, _quals(quals), verbose=bool(verbose)) or [])
    else:
        lines += list(handle.instance.explain(_quals(quals), columns, sortkeys=_sortkeys(sortkeys) or None,
                                              verbose=bool(verbose)) or [])
    if analyze and iterator is not None:
        more = getattr(iterator, "explain_analyze", None)
        if more is not None:
            lines.extend(more())
    return [str(line) for line in lines]


def analyze_sample(handle: TableHandle, targrows: int) -> tuple[Any, float | None]:
    """Rows for ANALYZE and the table's row count: the wrapper's
    ``analyze_sample(targrows)`` if it has one, else a scan of every column
    (the bridge keeps a uniform sample of targrows and counts the rows)."""
    method = getattr(handle.instance, "analyze_sample", None)
    if method is not None:
        rows, total = method(targrows)
        return (rows, None if total is None else float(total))
    return (handle.instance.execute([], list(handle.columns), None) or (), None)


# ---------------------------------------------------------------------------
# modifying


def rowid_column(handle: TableHandle) -> str | None:
    return getattr(handle.instance, "rowid_column", None)


def begin_modify(handle: TableHandle, operation: str) -> None:
    """An INSERT, UPDATE or DELETE ("insert", "update", "delete") on the
    table starts: the wrapper's ``begin_modify(operation)``, if it has one,
    is called before any scan of the statement yields a row."""
    method = getattr(handle.instance, "begin_modify", None)
    if method is not None:
        method(operation)


def insert_batch_size(handle: TableHandle) -> int:
    """Rows per insert_batch call, or 0 if the wrapper takes rows one by one."""
    method = getattr(type(handle.instance), "insert_batch", None)
    if method is None or method is ForeignDataWrapper.insert_batch:
        return 0
    return int(getattr(handle.instance, "insert_batch_size", 10_000))


def _wire_to_column(kind: int, values: bytes, validity: bytes | None, offsets: bytes | None) -> Column:
    k = WireKind(kind)
    dtype = np.uint8 if k.is_variable_width else WIRE_DTYPES[k]
    valid = None
    if validity is not None:
        valid = np.frombuffer(validity, dtype=np.uint8)
        if valid.all():
            valid = None
    return Column(k, np.frombuffer(values, dtype=dtype), valid,
                  np.frombuffer(offsets, dtype=np.int64) if offsets is not None else None)


def insert_batch(handle: TableHandle, wire: tuple) -> None:
    nrows, cols, _ = wire
    columns = {}
    for coldef in handle.columns.values():
        raw = cols[coldef.attnum - 1]
        if raw is not None:
            columns[coldef.column_name] = _wire_to_column(*raw)
    handle.instance.insert_batch(Batch(nrows, columns))


def fast_insert_layout(handle: TableHandle) -> Any:
    """Whether one-row INSERTs into the table may be written by the bridge
    directly (pgext/fdw_modify.c, asked once per table and backend until the
    table's relcache entry is invalidated): the wrapper's
    ``fast_insert_layout()``, or None."""
    method = getattr(handle.instance, "fast_insert_layout", None)
    return None if method is None else method()


def insert(handle: TableHandle, values: dict) -> Any:
    return handle.instance.insert(values)


def update(handle: TableHandle, rowid: Any, values: dict) -> Any:
    return handle.instance.update(rowid, values)


def delete(handle: TableHandle, rowid: Any) -> Any:
    return handle.instance.delete(rowid)


def flush_writes(handle: TableHandle) -> None:
    """Make the rows the running statement handed over so far visible to the
    queries that follow (a trigger, a function called for the next row); the
    statement goes on (see the wrapper's ``flush_writes``)."""
    method = getattr(handle.instance, "flush_writes", None)
    if method is not None:
        method()


def end_modify(handle: TableHandle) -> None:
    method = getattr(handle.instance, "end_modify", None)
    if method is not None:
        method()


def truncate(handles: list[TableHandle], behavior: str, restart_seqs: bool) -> None:
    """TRUNCATE of foreign tables: each wrapper's truncate(behavior,
    restart_seqs), behavior being "restrict" or "cascade"."""
    for handle in handles:
        method = getattr(handle.instance, "truncate", None)
        if method is None:
            raise FeatureNotSupportedError(f'foreign table "{handle.relname}" does not support TRUNCATE')
        method(behavior, bool(restart_seqs))


# ---------------------------------------------------------------------------
# transactions


class _Transaction:
    """The wrapper instances (and other participants) that took part in the
    current transaction.

    A participant that joins inside savepoints is first told of each open one
    (``sub_begin(1..depth)``): it had no state when they opened, so its later
    ``sub_rollback`` / ``sub_commit`` of any of them is consistent.  Hooks after
    the outcome is decided (commit, rollback, sub_commit, sub_rollback) reach
    every participant even if one raises; the errors are reported together.
    """

    def __init__(self) -> None:
        self.participants: list[Any] = []

    def join(self, handle: TableHandle) -> None:
        self.add(handle.instance)

    def add(self, instance: Any) -> None:
        if any(p is instance for p in self.participants):
            return
        begin = getattr(instance, "begin", None)
        if begin is not None:
            # a participant whose begin failed took no part: no other hook
            # of this transaction (or a later one) is called on it
            begin(_serializable())
        self.participants.append(instance)
        sub_begin = getattr(instance, "sub_begin", None)
        if sub_begin is not None:
            for level in range(1, _savepoint_depth() + 1):
                sub_begin(level)

    def each(self, hook: str, *args: Any, fallback: str | None = None, all_: bool = False) -> None:
        """Call ``hook`` (or ``fallback``) on each participant; with ``all_``,
        on every one even after an error, raising the errors afterwards."""
        errors: list[BaseException] = []
        for instance in list(self.participants):
            method = getattr(instance, hook, None) or (getattr(instance, fallback, None) if fallback else None)
            if method is None:
                continue
            if not all_:
                method(*args)
                continue
            try:
                method(*args)
            except Exception as exc:  # noqa: BLE001 - reported below, after every participant ran
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise WrapperError(f"{len(errors)} participants failed in {hook}: "
                               + "; ".join(f"{type(e).__name__}: {e}" for e in errors))

    def end(self) -> None:
        self.participants.clear()


def _serializable() -> bool:
    try:
        import _orochi_pg

        return bool(_orochi_pg.uses_transaction_snapshot())
    except (ImportError, AttributeError):
        return False


def _savepoint_depth() -> int:
    try:
        import _orochi_pg

        return int(_orochi_pg.savepoint_depth())
    except (ImportError, AttributeError):
        return 0


_transaction = _Transaction()


def join_transaction(participant: Any) -> None:
    """Have ``participant``'s hooks (begin, pre_commit, commit, rollback,
    pre_prepare / prepare if it has them, sub_*) called for the current
    transaction, as a wrapper instance's are.  For state that is not one
    table's, e.g. files to remove when the transaction ends."""
    _transaction.add(participant)


def xact_event(event: str) -> None:
    """pre_commit, pre_prepare, commit, prepare or rollback of the transaction."""
    try:
        if event == "pre_commit":
            _transaction.each("pre_commit")
        elif event == "pre_prepare":
            _transaction.each("pre_prepare", fallback="pre_commit")
        elif event == "commit":
            _transaction.each("commit", all_=True)
        elif event == "prepare":
            _transaction.each("prepare", fallback="commit", all_=True)
        elif event == "rollback":
            _transaction.each("rollback", all_=True)
    finally:
        if event in ("commit", "prepare", "rollback"):
            _transaction.end()


def subxact_event(event: str, level: int) -> None:
    """sub_begin, sub_pre_commit, sub_commit or sub_rollback of the savepoint
    at nesting ``level`` (1 for the outermost)."""
    if event == "sub_begin":
        _transaction.each("sub_begin", level)
    elif event in ("sub_commit", "sub_rollback"):
        _transaction.each(event, level, all_=True)


# ---------------------------------------------------------------------------
# options, schema import, SQL functions


def validate_options(kind: str, options: dict) -> None:
    """Reject unknown options and values of the wrong type at CREATE/ALTER time.

    Column options are checked when the table is first used, against the
    table's own wrapper (a column's validator cannot see the table).
    """
    if kind in ("wrapper", "user_mapping"):
        if options:
            name = next(iter(options))
            raise InvalidOptionError(f'invalid option "{name}" for the orochi {kind.replace("_", " ")}',
                                     hint="Options of the orochi foreign-data wrapper go on servers and tables.")
        return
    if kind == "column":
        return
    rest = {k: v for k, v in options.items() if k not in BRIDGE_OPTIONS}
    if not rest and "wrapper" not in options:
        return
    if "wrapper" in options:
        wrappers.check_may_use(options["wrapper"])  # declared, and allowed to this role
    cls = load_wrapper_class(options.get("wrapper") or DEFAULT_WRAPPER)
    validate = getattr(cls, "validate_options", None)
    if validate is not None:
        validate(kind, rest)


def import_schema(server_name: str, server_options: dict, remote_schema: str, local_schema: str,
                  restriction: tuple[str, list[str]], options: dict) -> list[str]:
    """CREATE FOREIGN TABLE statements for IMPORT FOREIGN SCHEMA."""
    from orochi_fdw.bridge.spi import quote_ident

    list_type, tables = restriction
    cls = load_wrapper_class(server_options.get("wrapper") or DEFAULT_WRAPPER)
    definitions = cls.import_schema(remote_schema, server_options, options,
                                    None if list_type == "all" else list_type, tables)
    statements = []
    for table in definitions or []:
        cols = ", ".join(f"{quote_ident(c.column_name)} {_type_name(c.type_name)}" for c in table.columns)
        opts = ""
        if table.options:
            opts = " OPTIONS (" + ", ".join(
                f"{quote_ident(k)} {_quote_literal(str(v))}" for k, v in table.options.items()) + ")"
        statements.append(
            f"CREATE FOREIGN TABLE {quote_ident(local_schema)}.{quote_ident(table.table_name)} ({cols}) "
            f"SERVER {quote_ident(server_name)}{opts}"
        )
    return statements


def _type_name(name: str) -> str:
    """A type name a wrapper gave (it goes into SQL text, so it must be one
    type name and nothing else: Postgres's own type-name parser says so).

    Raises:
        WrapperError: it is not a type name.
    """
    from orochi_fdw.bridge import spi

    try:
        with spi.subtransaction():
            known = spi.execute("SELECT pg_catalog.to_regtype($1) IS NOT NULL", [str(name)], types=["text"]).scalar()
    except OrochiError:
        known = False
    if not known:
        raise WrapperError(f'import_schema gave "{name}", which is not a type name')
    return str(name)


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def call_sql_function(name: str, *args: Any) -> Any:
    """orochi.<name>(args...)"""
    return sqlfunc.call(name, *args)


#: modules that nearly every query of a columnar table imports (about 0.3 s):
#: imported with the runtime, so that an interpreter started in the
#: postmaster (preloading) hands them to every backend, whose first query
#: then skips that.  None of them starts a thread (pyarrow and duckdb do:
#: they are imported at the join engine's first run in each backend).
PRELOADED_MODULES = ("orochi_fdw.columnar.table", "orochi_fdw.columnar.scan", "orochi_fdw.columnar.filter",
                     "orochi_fdw.query.engine", "orochi_fdw.query.estimates", "orochi_fdw.query.aggregate")


def _preload() -> None:
    import importlib

    for name in PRELOADED_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - reported where the module is used
            pass


_preload()
