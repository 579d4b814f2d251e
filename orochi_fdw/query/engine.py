"""The join engine: joins of columnar tables run in an embedded DuckDB.

When a join tree touches only local columnar tables, the bridge
(``GetForeignJoinPaths`` in ``pgext/fdw_scan.c``) describes it here: its
inputs (tables with their restriction clauses, or joins accepted before),
join types, join clauses and output columns, with PostgreSQL's row
estimates.  :func:`plan_join` accepts it only when every clause and output
is one :mod:`orochi_fdw.query.pushable` says DuckDB computes exactly as
PostgreSQL, and answers a cost and a plan: DuckDB SQL with ``$n``
parameters, and what to read from each table.

At execution each table is read by its ordinary columnar scan (the same
stripes, delete bitmaps, delta store and snapshot as any scan of it; simple
restrictions also prune stripes there), its decoded column batches handed
to DuckDB as Arrow arrays (numbers and text without copying): read ahead
while they fit in one hash table's work_mem (DuckDB then knows the row counts and
chooses the join order), streamed as DuckDB pulls them past that, the SQL
run on a cursor of a per-backend in-memory DuckDB database
(one thread by default; spilling under the data directory's pgsql_tmp), and
the result handed back in batches.  ORDER BY and LIMIT over a join or
aggregation it runs are planned by :func:`plan_order`; parameters of the
SQL that are PostgreSQL parameters get their values when the scan starts.  A cancel or statement_timeout
interrupts DuckDB (``interrupt()``) from a watcher thread that polls the
bridge's interrupt flag; DuckDB's errors become PostgreSQL errors with
SQLSTATEs (out of memory 53200, integer overflow 22003).  docs/query.md,
"The join engine".
"""

from __future__ import annotations

import ctypes
import datetime
import decimal
import functools
import itertools
import json
import os
import re
import signal
import threading
import time
import warnings
import weakref
from typing import Any, Callable, Iterator

import numpy as np

from orochi_fdw.bridge.api import ColumnDefinition, Qual
from orochi_fdw.bridge.batch import Batch, Column, CountedBatches, WireKind, to_column
from orochi_fdw.errors import OrochiError
from orochi_fdw.query import pushable
from orochi_fdw.query.pushable import Refused, quote_ident

#: rows per batch handed back to PostgreSQL
OUTPUT_BATCH_ROWS = 65_536
#: cost units of starting DuckDB for a query (about 2 ms at ~17 µs a unit)
ENGINE_STARTUP_COST = 100.0
#: the start of a run once per outer row (a correlated subquery's, a table
#: restricted by ``column = $param``): DuckDB's parse, plan and start over
#: its registered inputs take 15-30 ms however few rows it reads (TPC-H Q2
#: at SF1: 747 runs of 14 ms each against 7 s for the whole query in
#: PostgreSQL)
ENGINE_RESCAN_COST = 900.0
#: PostgreSQL's ParamKind of a value set during execution (an outer row's,
#: an InitPlan's), not a statement's ``$n``
PARAM_EXEC = 1
#: per input row of a join, and per row a join produces
ENGINE_ROW_COST = 0.002
ENGINE_OUTPUT_ROW_COST = 0.001
#: DuckDB reads a table streamed as Arrow batches without knowing its row
#: count (it takes every stream for one row): its join order and build
#: sides would be arbitrary.  The plan writes the joins in the order of
#: PostgreSQL's tree, the side PostgreSQL estimates smaller on the right
#: (DuckDB's build side), and a run with a streamed input keeps that order.
#: A run whose inputs were all read before it (:func:`_read_inputs`) gives
#: DuckDB their row counts and lets its optimizers choose (as on its own
#: tables: filtered tables joined first, the smaller side built, a semi
#: join's hash table on whichever side is smaller).
JOIN_ORDER_SETTINGS = "SET disabled_optimizers = 'join_order,build_side_probe_side'"
OWN_JOIN_ORDER_SETTINGS = "RESET disabled_optimizers"
#: a run with a correlated subquery keeps DuckDB's delim join, which its
#: deliminator optimizer would drop for the subquery's table grouped whole:
#: the subquery's rows are then joined with the outer rows' distinct keys
#: before they are grouped (TPC-H Q17 at SF1: lineitem's 6 million rows
#: grouped by l_partkey into 200,000 groups for the 204 parts asked, 295 ms
#: of DuckDB's CPU against 71 ms joined first)
CORRELATED_SETTINGS = {JOIN_ORDER_SETTINGS: "SET disabled_optimizers = 'join_order,build_side_probe_side,deliminator'",
                       OWN_JOIN_ORDER_SETTINGS: "SET disabled_optimizers = 'deliminator'"}
#: the least memory DuckDB gets (it needs some per operator)
MIN_MEMORY_LIMIT = 64 << 20

_JOIN_SQL = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN",
             "semi": "SEMI JOIN", "anti": "ANTI JOIN"}
_PG_EPOCH_DAYS = 10_957


class EngineError(OrochiError):
    """An error of the join engine, with the SQLSTATE PostgreSQL would use."""

    def __init__(self, message: str, sqlstate: str = "XX000", detail: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint


# ---------------------------------------------------------------------------
# planning


def _columnar(handle: Any) -> bool:
    from orochi_fdw.columnar.table import ColumnarTable

    return type(handle.instance) is ColumnarTable


def _scan_kind(coldef: ColumnDefinition) -> WireKind:
    from orochi_fdw.columnar.types import scan_wire_kind

    return scan_wire_kind(coldef)


_EXPECTED_KIND = {
    pushable.INT2: WireKind.INT16, pushable.INT4: WireKind.INT32, pushable.INT8: WireKind.INT64,
    pushable.BOOL: WireKind.BOOL, pushable.DATE: WireKind.DATE, pushable.TEXT: WireKind.TEXT,
    pushable.VARCHAR: WireKind.TEXT, pushable.FLOAT4: WireKind.FLOAT32, pushable.FLOAT8: WireKind.FLOAT64,
    pushable.NUMERIC: WireKind.DECIMAL64, pushable.BPCHAR: WireKind.CSTRING,
    pushable.TIMESTAMP: WireKind.TIMESTAMP, pushable.TIMESTAMPTZ: WireKind.TIMESTAMP,
}


@functools.lru_cache(maxsize=1024)
def _stored_as(type_oid: int, typmod: int, wanted_typmod: int) -> bool:
    """Whether a column of this type and modifier reaches the engine in the
    layout an expression of ``wanted_typmod`` expects (planning asks it of the
    same few columns for every pair of inputs offered)."""
    if type_oid == pushable.NUMERIC and \
            pushable.decimal64_type(type_oid, typmod) != pushable.decimal64_type(type_oid, wanted_typmod):
        return False
    return _scan_kind(ColumnDefinition("", type_oid, typmod)) is _EXPECTED_KIND.get(type_oid)


def _reaches_as(coldef: ColumnDefinition, type_oid: int, typmod: int) -> bool:
    """:func:`_stored_as` of a column of the expression's type: only built-in
    types reach the engine, whose layout the type and modifier decide."""
    return type_oid in _EXPECTED_KIND and _stored_as(type_oid, coldef.typmod, typmod)


_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)
#: DuckDB's infinite dates
_DUCK_DATE_INFINITY, _DUCK_DATE_NINFINITY = 2**31 - 1, -(2**31 - 1)
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
#: DuckDB's infinite timestamps
_DUCK_TS_INFINITY, _DUCK_TS_NINFINITY = 2**63 - 1, -(2**63 - 1)
#: microseconds from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's)
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400_000_000


class _Planner:
    def __init__(self, wide: bool = False) -> None:
        self.inputs: dict[int, dict] = {}
        self.translator = pushable.Translator(self._column_sql, self._column_ok, self._column_bound, wide=wide)
        self.translator.subquery = self._subquery
        self.subqueries = 0
        self._bounds: dict[tuple, int | None] = {}
        self.joins = 0
        self.work = 0.0
        self.descriptions: list[str] = []
        self.where: list[str] = []
        #: the subqueries taken as inputs (derived tables t<rti>): their
        #: columns c<position> by name, as (type, typmod)
        self.derived: dict[int, dict[str, tuple[int, int]]] = {}

    @staticmethod
    def _column_sql(rti: int, attname: str) -> str:
        return f"t{rti}.{quote_ident(attname)}"

    def _column_ok(self, rti: int, attname: str, type_oid: int, typmod: int) -> bool:
        if rti in self.derived:
            return self.derived[rti].get(attname) == (type_oid, typmod)
        inp = self.inputs.get(rti)
        if inp is None:
            return False
        coldef = inp["handle"].instance.columns.get(attname)
        if coldef is None or coldef.type_oid != type_oid:
            return False
        return _reaches_as(coldef, type_oid, typmod)

    def _column_bound(self, rti: int, attname: str) -> int | None:
        """The greatest absolute value of a numeric column (scaled), when the
        catalog's statistics bound every row of the table."""
        key = (rti, attname)
        if key not in self._bounds:
            inp = self.inputs.get(rti)
            ranges = inp["handle"].instance.value_ranges([attname], exact=True) if inp else {}
            lo_hi = ranges.get(attname)
            self._bounds[key] = None if lo_hi is None else max(abs(lo_hi[0]), abs(lo_hi[1]))
        return self._bounds[key]

    def _subquery(self, tr: pushable.Translator, kind: str, plan_id: int, tables: list, quals: list,
                  target: tuple, params: list, test: tuple | None = None,
                  test_params: list = ()) -> pushable.Typed:
        """A subquery as DuckDB's (correlated) subquery over scans of its own
        tables, which DuckDB decorrelates into joins; the correlation
        parameters become the outer row's expressions.  ``expr``: a scalar
        subquery, an ungrouped aggregation (one row whatever its input, NULL
        or count's 0 when nothing matches, as in PostgreSQL); ``any``:
        ``x = ANY (SELECT ...)`` (IN; NOT IN is its negation), whose NULL
        semantics DuckDB's IN shares (NULL when nothing is equal and either
        side has a NULL, false over no rows); ``exists``."""
        if kind not in ("expr", "any", "exists"):
            raise Refused(f"a {kind} subquery")
        any_left = None
        if kind == "any":
            # outer expression = $n, $n the subquery's one output
            if test is None or test[0] != "op" or test[2] != "=" or not test[3] or len(test[6]) != 2 \
                    or len(test_params) != 1:
                raise Refused("an ANY subquery that is not an equality with its one output")
            any_left, right = test[6]
            if right[0] != "param" or right[1] != pushable.PARAM_EXEC or right[2] != test_params[0] \
                    or _has_param_id(any_left, test_params[0]):
                raise Refused("an ANY subquery that is not an equality with its one output")
        keys = {}
        max_rows = 1
        for varno, handle, rows, cost in tables:
            if not _columnar(handle):
                raise Refused("a subquery over a table that is not columnar")
            key = SUBQUERY_RTI * plan_id + varno
            if key in self.inputs:
                raise Refused("a subquery used twice")
            keys[varno] = key
            self.inputs[key] = {"handle": handle, "clauses": [], "rows": rows, "cost": cost,
                                "relid": handle.relid, "quals": []}
            max_rows *= 10 * max(int(handle.instance.stored_rows()), 1)
        if not keys:
            raise Refused("a subquery without tables")
        quals = [_renumbered(q, keys) for q in quals]
        target = _renumbered(target, keys)
        saved_rows, tr.max_rows = tr.max_rows, max_rows
        conds = []
        try:
            with tr.correlated(params):
                for c in quals:
                    rtis = _vars_of(c)
                    q = _scan_qual(c) if len(rtis) == 1 and not _has_param(c) else None
                    if q is not None:
                        inp = self.inputs[next(iter(rtis))]
                        if _exact_scan_quals(inp["handle"], [q])[0]:
                            inp["quals"].append(q + [True])  # the scan applies it
                            continue
                        inp["quals"].append(q)  # prunes (DuckDB checks it)
                    conds.append(tr.condition(c))
                value = tr.expr(target) if kind != "exists" else pushable.Typed("1", pushable.INT4)
        finally:
            tr.max_rows = saved_rows
        if value.type_oid not in _OUTPUT_TYPES or value.scale_sql is not None:
            raise Refused("a subquery whose value's display scale differs per row")
        self.subqueries += 1
        self.work += sum(self.inputs[k]["rows"] for k in keys.values()) * ENGINE_GROUP_ROW_COST
        sources = ", ".join(f"{quote_ident(f'orochi_in_{k}')} AS t{k}" for k in keys.values())
        sql = f"(SELECT {value.sql} FROM {sources}" + (f" WHERE {' AND '.join(conds)})" if conds else ")")
        if kind == "exists":
            return pushable.Typed(f"(EXISTS {sql})", pushable.BOOL)
        if kind == "any":
            left = tr.expr(any_left)
            tr._check_comparison("=", left, value, test[5])
            if pushable.family(left.type_oid) == "numeric" and (
                    left.decimal is None or value.decimal is None
                    or tr._compared_width(left, value) > pushable.MAX_DECIMAL_PRECISION):
                raise Refused("IN over numerics wider than 38 digits together")
            return pushable.Typed(f"({left.sql} IN {sql})", pushable.BOOL)
        return pushable.Typed(sql, value.type_oid, value.typmod, value.collation, value.decimal,
                              compare_only=value.compare_only)

    def collect(self, node: tuple) -> None:
        """Register every table of the tree (before translating any clause;
        a subquery's, when its derived table is translated)."""
        if node[0] == "subquery":
            return
        if node[0] == "rel":
            _kind, rti, handle, clauses, rows, cost = node
            if not _columnar(handle):
                raise Refused("not a columnar table")
            self.inputs[rti] = {"handle": handle, "clauses": clauses, "rows": rows, "cost": cost}
        else:
            self.collect(node[2])
            self.collect(node[3])

    def from_item(self, node: tuple, top: bool) -> tuple[str, float, str]:
        """(FROM clause SQL, rows, description) of a tree node: as translated
        before in this planning when the bridge offers the same node again
        (it describes each input once; every join relation above it is
        offered with it) and its parameters come at the same positions."""
        if node[0] == "join" and node[5]:
            return self._from_item(node, top)  # (conditions above an outer join: only at the top)
        tr = self.translator
        start = len(tr.out.params)
        key = (id(node), tr.wide)
        found = _FROM_ITEMS.get(key)
        if found is not None and found.node is node and (found.start == start or not found.params
                                                         or found.shiftable):
            return found.replay(self, start)
        rtis = _rtis_of(node)
        before = set(self.inputs)
        before_derived = set(self.derived)
        narrowed = len(tr.out.narrowed)
        work, joins, subqueries = self.work, self.joins, self.subqueries
        item = self._from_item(node, top)
        added = {k: v for k, v in self.inputs.items() if k not in before}
        rtis |= set(added)
        if len(_FROM_ITEMS) >= FROM_ITEM_ENTRIES:
            _FROM_ITEMS.clear()
        _FROM_ITEMS[key] = _FromItem(
            node, start, item, tr.out.params[start:], {c for c in tr.out.columns if c[0] in rtis},
            tr.out.narrowed[narrowed:], {rti: list(self.inputs[rti]["quals"]) for rti in rtis},
            {k: {**v, "quals": []} for k, v in added.items()},
            self.work - work, self.joins - joins, self.subqueries - subqueries,
            {k: v for k, v in self.derived.items() if k not in before_derived})
        return item

    def _from_item(self, node: tuple, top: bool) -> tuple[str, float, str]:
        if node[0] == "subquery":
            return self._derived(node)
        if node[0] == "rel":
            _kind, rti, handle, clauses, rows, cost = node
            inp = self.inputs[rti]
            inp["quals"] = []
            conds = []
            scan_quals = [_scan_qual(c) for c in clauses]
            exact = _exact_scan_quals(handle, scan_quals)
            for c, q, is_exact in zip(clauses, scan_quals, exact):
                if is_exact:
                    # the scan applies it exactly (as for PostgreSQL's own
                    # scans): DuckDB neither rechecks it nor reads its columns
                    inp["quals"].append(q + [True])
                    continue
                conds.append(self.translator.condition(c))
                if q is None:
                    q = _param_scan_qual(c)
                    if q is not None and q[2]["param"][0] == PARAM_EXEC:
                        self.work += ENGINE_RESCAN_COST  # (an outer row's value)
                if q is not None:
                    inp["quals"].append(q)  # prunes (DuckDB checks it)
            source = f"{quote_ident(f'orochi_in_{rti}')} AS t{rti}"
            if conds:
                source = f"(SELECT * FROM {source} WHERE {' AND '.join(conds)}) AS t{rti}"
            return source, rows, handle.relname
        _kind, jointype, outer, inner, joinclauses, otherclauses, rows = node
        if jointype not in _JOIN_SQL:
            raise Refused(f"{jointype} join")
        if otherclauses and not top:
            raise Refused("conditions above an outer join below another join")
        osql, orows, odesc = self.from_item(outer, False)
        isql, irows, idesc = self.from_item(inner, False)
        if jointype == "inner" and orows < irows:
            # DuckDB runs the joins as written (it has no row counts of the
            # streamed inputs: JOIN_ORDER_SETTINGS), building each hash table
            # on the right: the smaller side by PostgreSQL's estimates
            osql, isql, outer, inner = isql, osql, inner, outer
        if inner[0] == "join":
            isql = f"({isql})"
        on = [self.translator.condition(c) for c in joinclauses]
        if otherclauses:
            self.where = [self.translator.condition(c) for c in otherclauses]
        self.joins += 1
        self.work += _join_work(_tree_rows(outer), _tree_rows(inner), _tree_rows(node))
        sql = f"{osql} {_JOIN_SQL[jointype]} {isql} ON {' AND '.join(on) if on else 'TRUE'}"
        return sql, rows, f"({odesc} {jointype} join {idesc})"

    def _derived(self, node: tuple) -> tuple[str, float, str]:
        """A subquery of the join tree (GROUP BY and HAVING over an orochi
        table or a join the engine runs) as a derived table t<rti>: the
        aggregation translated here over its own tables
        (numbered t<SUBQUERY_RTI × (DERIVED_PLAN_BASE + rti) + their range
        table index in the subquery>, read by the scan as a correlated
        subquery's are), its HAVING in DuckDB's SQL (every condition, or the
        subquery is refused: nothing checks them after), the group keys the
        query reads named c<their position in the subquery>, and the
        subquery rel's own restrictions over them."""
        _kind, rti, (tree, outputs_in, having, columns), clauses, rows, _cost = node
        if rti in self.derived:
            raise Refused("a subquery used twice")
        base = SUBQUERY_RTI * (DERIVED_PLAN_BASE + rti)
        keys = {r: base + r for r in _rtis_of(tree)}
        if not keys or any(k in self.inputs for k in keys.values()):
            raise Refused("a subquery used twice")
        tree = _renumbered_tree(tree, keys)
        outputs_in, having = _renumbered(outputs_in, keys), _renumbered(having, keys)
        self.collect(tree)
        max_rows = 1
        for k in keys.values():
            inp = self.inputs[k]
            inp["relid"] = inp["handle"].relid  # (its tables: opened by the scan)
            max_rows *= 10 * max(int(inp["handle"].instance.stored_rows()), 1)
        tr = self.translator
        saved_where, saved_rows, subqueries = self.where, tr.max_rows, self.subqueries
        self.where = []
        try:
            # (the renumbered tree is made anew each time: not kept by from_item)
            from_sql, in_rows, description = self._from_item(tree, True)
            where = self.where
            tr.max_rows = max_rows
            select, group_by, keys_typed = [], [], {}
            for i, (kind, expr) in enumerate(outputs_in):
                if kind == "group":
                    typed = tr.value(expr)
                    if typed.type_oid not in _OUTPUT_TYPES:
                        raise Refused(f"a group key of type {typed.type_oid}")
                    keys_typed[i] = typed
                    group_by.append(str(len(select) + 1))
                    select.append(typed.sql)
            if not group_by:
                raise Refused("a subquery without group keys")
            named = {}
            for attno, index in columns:
                typed = keys_typed.get(index)
                if typed is None:
                    raise Refused("a subquery output that is not a group key")
                name = f"c{attno}"
                named[name] = (typed.type_oid, typed.typmod)
                select.append(f"CAST({typed.sql} AS {pushable.column_type_sql(typed.type_oid, typed.typmod)})"
                              f" AS {quote_ident(name)}")
            conditions = [tr.condition(c) for c in having]
            if self.subqueries != subqueries:
                raise Refused("a subquery in a subquery taken as an input")
        finally:
            self.where, tr.max_rows = saved_where, saved_rows
        sql = _select_sql(select, from_sql, where) + f" GROUP BY {', '.join(group_by)}"
        if conditions:
            sql += f" HAVING {' AND '.join(conditions)}"
        self.derived[rti] = named
        self.work += in_rows * ENGINE_GROUP_ROW_COST
        source = f"({sql}) AS t{rti}"
        if clauses:
            source = (f"(SELECT * FROM {source} WHERE {' AND '.join(tr.condition(c) for c in clauses)})"
                      f" AS t{rti}")
        return source, rows, f"subquery (aggregate over {description})"


class _FromItem:
    """A tree node's translation (:meth:`_Planner.from_item`) with what it
    added to the planner, to add again when the same node comes back."""

    __slots__ = ("node", "start", "item", "params", "columns", "narrowed", "quals", "added", "work",
                 "joins", "subqueries", "derived", "shiftable")

    def __init__(self, node, start, item, params, columns, narrowed, quals, added, work, joins,
                 subqueries, derived) -> None:
        self.node, self.start, self.item, self.params = node, start, item, params
        self.columns, self.narrowed, self.quals, self.added = columns, narrowed, quals, added
        self.work, self.joins, self.subqueries, self.derived = work, joins, subqueries, derived
        # its SQL names its own parameters only, $<start + 1>...: they can be
        # renumbered unless a quoted column name holds a "$"
        self.shiftable = not any("$" in attname for _rti, attname in columns)

    def replay(self, planner: "_Planner", start: int) -> tuple[str, float, str]:
        if any(k in planner.inputs for k in self.added) or any(k in planner.derived for k in self.derived):
            raise Refused("a subquery used twice")
        for k, inp in self.added.items():
            planner.inputs[k] = dict(inp)
        planner.derived.update(self.derived)
        for rti, quals in self.quals.items():
            planner.inputs[rti]["quals"] = list(quals)
        out = planner.translator.out
        out.params.extend(self.params)
        out.columns |= self.columns
        out.narrowed.extend(self.narrowed)
        planner.work += self.work
        planner.joins += self.joins
        planner.subqueries += self.subqueries
        if start == self.start or not self.params:
            return self.item
        shift = start - self.start
        sql = _PARAM_REF.sub(lambda m: f"${int(m.group(1)) + shift}", self.item[0])
        return sql, self.item[1], self.item[2]


#: a parameter's reference in the engine's SQL
_PARAM_REF = re.compile(r"\$(\d+)")


#: translations of tree nodes by the node's identity (the bridge's objects
#: live through one planning; each entry keeps its node alive)
_FROM_ITEMS: dict[tuple, _FromItem] = {}
FROM_ITEM_ENTRIES = 256


def _rtis_of(node: tuple) -> set:
    """The tables of a tree node (a subquery's are added when translated)."""
    if node[0] == "subquery":
        return set()
    return {node[1]} if node[0] == "rel" else _rtis_of(node[2]) | _rtis_of(node[3])


#: a correlated subquery's tables are named t<SUBQUERY_RTI × plan id + their
#: range table index in the subquery> (apart from the join's own)
SUBQUERY_RTI = 1_000_000


#: a subquery taken as a join input (a derived table) numbers its tables as
#: a correlated subquery of this plan id would: DERIVED_PLAN_BASE + its rti
DERIVED_PLAN_BASE = 1_000_000


def _renumbered_tree(node: tuple, keys: dict[int, int]) -> tuple:
    """A subquery's join tree with its tables' range table indexes replaced
    by the engine's names for them (``keys``)."""
    if node[0] == "rel":
        _kind, rti, handle, clauses, rows, cost = node
        return ("rel", keys[rti], handle, _renumbered(clauses, keys), rows, cost)
    if node[0] == "join":
        _kind, jointype, outer, inner, joinclauses, otherclauses, rows = node
        return ("join", jointype, _renumbered_tree(outer, keys), _renumbered_tree(inner, keys),
                _renumbered(joinclauses, keys), _renumbered(otherclauses, keys), rows)
    raise Refused("a subquery taken as an input within another")


def _renumbered(e: Any, keys: dict[int, int]) -> Any:
    """An expression of a subquery with its columns' range table indexes
    replaced by the engine's names for its tables (``keys``)."""
    if isinstance(e, tuple):
        if e and e[0] == "var":
            return ("var", keys.get(e[1], -1)) + e[2:]
        if e and e[0] == "subplan":
            return e  # (another subquery's own numbering)
        return tuple(_renumbered(x, keys) for x in e)
    if isinstance(e, list):
        return [_renumbered(x, keys) for x in e]
    return e


def _vars_of(e: Any, found: set | None = None) -> set:
    found = set() if found is None else found
    if isinstance(e, tuple) and e and e[0] == "var":
        found.add(e[1])
    elif isinstance(e, (tuple, list)):
        for x in e:
            _vars_of(x, found)
    return found


def _has_param_id(e: Any, paramid: int) -> bool:
    if isinstance(e, tuple) and e and e[0] == "param":
        return e[2] == paramid
    return isinstance(e, (tuple, list)) and any(_has_param_id(x, paramid) for x in e)


def _has_param(e: Any) -> bool:
    if isinstance(e, tuple) and e and e[0] in ("param", "subplan"):
        return True
    return isinstance(e, (tuple, list)) and any(_has_param(x) for x in e)


def subquery_relids(plan: dict) -> list[int]:
    """The relation OIDs of the tables a plan reads in correlated subqueries."""
    return [inp["relid"] for inp in plan["inputs"] if "relid" in inp]


def _declined(what: str, reason: Refused) -> None:
    """Say at DEBUG1 why the engine declined (SET client_min_messages = debug1)."""
    try:
        from orochi_fdw.bridge import spi

        spi.log("debug", f"orochi: the join engine declined {what}: {reason}")
    except Exception:  # outside a backend
        pass


def _planned_from(tree: tuple, wide: bool = False) -> tuple["_Planner", str, float, str]:
    """A planner that has collected the join tree's inputs, and the tree's
    FROM item: (planner, from_sql, rows, description).

    Raises:
        Refused: something in the tree the engine does not run exactly.
    """
    planner = _Planner(wide)
    planner.collect(tree)
    from_sql, rows, description = planner.from_item(tree, True)
    return planner, from_sql, rows, description


def _with_wide_variant(make: Callable[..., tuple | None]) -> Callable[..., tuple | None]:
    """``make`` (a planning function answering (startup, total, plan, rows)
    or None, with a ``wide`` keyword), whose plans that narrowed numeric
    columns carry their ``wide`` translation too: its SQL and parameters,
    for :func:`_run` to take when values outgrew the narrowing (a generic
    plan reused after rows were added)."""

    @functools.wraps(make)
    def planned(*args: Any) -> tuple | None:
        made = make(*args)
        if made is None or '"narrowed": [[' not in made[2]:
            return made
        plan = json.loads(made[2])
        wide = make(*args, wide=True)
        if wide is not None:
            other = json.loads(wide[2])
            if plan_params(other) == plan_params(plan):
                plan["wide"] = {"sql": other["sql"], "params": other["params"]}
        return made[0], made[1], json.dumps(plan), made[3]
    return planned


@_with_wide_variant
def plan_join(tree: tuple, targets: list[tuple], wide: bool = False) -> tuple[float, float, str, float] | None:
    """(startup_cost, total_cost, plan, rows) if the engine runs this join, else None."""
    try:
        planner, from_sql, rows, description = _planned_from(tree, wide)
        outputs = []
        select = []
        for i, t in enumerate(targets):
            typed = planner.translator.output(t)
            name = f"j{i}"
            outputs.append({"name": name, "type_oid": typed.type_oid, "typmod": typed.typmod,
                            "columns": [len(select)]})
            select.append(f"{typed.sql} AS {quote_ident(name)}")
    except Refused as reason:
        _declined("a join", reason)
        return None
    sql = _select_sql(select or ["TRUE AS orochi_row"], from_sql, planner.where)
    if planner.subqueries and tree[0] == "join":
        # PostgreSQL's estimate of a condition comparing with a subquery's
        # value is an equality's with an unknown value (TPC-H Q2's
        # ps_supplycost = (SELECT min(...)): 1 row of 160,000 at SF1), and
        # the plan above then rescans other tables once per row; the
        # engine's path counts at least a tenth of its smaller side
        sides = [n[6] if n[0] == "join" else n[4] for n in (tree[2], tree[3])]
        rows = max(rows, min(sides) * SUBQUERY_MIN_FRACTION)
    # (an anti join's floor, wherever it is in the tree)
    rows = max(rows, _tree_rows(tree))
    return _finish(planner, sql, outputs, description, rows, rows * 0.01)


def _tree_rows(node: tuple) -> float:
    """The rows of a tree node: PostgreSQL's estimate, but an anti join
    counts at least a tenth of its outer side (PostgreSQL's estimate of an
    anti join whose clauses hold for nearly every pair, TPC-H Q21's same
    order and other supplier, is often 1 row, and a plan above it then
    rescans other tables once per row), and a join above such an input
    scales PostgreSQL's estimate as that input's rows were scaled (Q21's
    anti join then joined to supplier: 1 row estimated)."""
    return _node_rows(node, {})[0]


def tree_work(node: tuple, memo: dict | None = None) -> float:
    """What the joins of a tree cost the engine (the rows each takes in and
    produces): what differs between the trees of the pairs of inputs of one
    join relation (the same tables, restrictions and conditions), to rank
    them (:func:`_node_rows`' ranked rows); the tree must also cost less by
    PostgreSQL's estimates to be kept (the path's cost)."""
    if node[0] != "join":
        return 0.0
    memo = {} if memo is None else memo
    return (tree_work(node[2], memo) + tree_work(node[3], memo)
            + _join_work(_node_rows(node[2], memo)[1], _node_rows(node[3], memo)[1],
                         _node_rows(node, memo)[1]))


def _node_rows(node: tuple, memo: dict) -> tuple[float, float]:
    """(:func:`_tree_rows`, ranked rows) of a tree node, each subtree worked
    out once (``memo``, by the node's identity, for one walk of one tree).

    The ranked rows rank trees: the tree rows, but an inner join on two or
    more conditions at least its larger input's (each row of it finding one
    match, as on a composite key), and a join above it scaled as much:
    PostgreSQL's estimate of a join on several columns multiplies their
    selectivities as if independent (TPC-H Q9's lineitem and partsupp on
    part and supplier: 2,387 rows for 1.8 million at SF 0.3), and a tree
    joining those first looks cheapest while it joins the two largest
    tables in full (Q9 at SF1: 3.1-3.9 s, against 0.45-0.7 s joining part's
    few rows to lineitem first)."""
    got = memo.get(id(node))
    if got is not None:
        return got
    if node[0] != "join":
        got = (node[4], node[4])
    else:
        sides = [(side, *_node_rows(side, memo)) for side in (node[2], node[3])]
        rows = node[6]
        for side, tree, _ranked in sides:
            estimated = side[6] if side[0] == "join" else side[4]
            rows *= max(tree / max(estimated, 1.0), 1.0)
        if node[1] == "anti":
            rows = max(rows, sides[0][1] * ANTI_JOIN_MIN_FRACTION)
        ranked = rows
        for _side, tree, side_ranked in sides:
            ranked *= max(side_ranked / max(tree, 1.0), 1.0)
        if node[1] == "inner" and len(node[4]) >= 2:
            ranked = max(ranked, sides[0][2], sides[1][2])
        got = (rows, ranked)
    memo[id(node)] = got
    return got


def _join_work(orows: float, irows: float, rows: float) -> float:
    """What one join costs the engine: the rows it takes in and produces."""
    return (orows + irows) * ENGINE_ROW_COST + rows * ENGINE_OUTPUT_ROW_COST


def _select_sql(select: list[str], from_sql: str, where: list[str]) -> str:
    """DuckDB's SELECT of translated items over the join's FROM and WHERE."""
    sql = f"SELECT {', '.join(select)} FROM {from_sql}"
    return sql + f" WHERE {' AND '.join(where)}" if where else sql


#: the least fraction of its smaller side a join with a subquery in its
#: conditions run by the engine is taken to return
SUBQUERY_MIN_FRACTION = 0.1
#: the least fraction of its outer rows an anti join run by the engine is taken to return
ANTI_JOIN_MIN_FRACTION = 0.1
#: what an aggregation over one table costs the engine beyond a join's
#: start: the table read as Arrow batches and DuckDB's start over them, where
#: PostgreSQL's aggregation over the same scan starts at once (TPC-H Q6 at
#: SF 0.1, 11,618 rows aggregated: 32 ms in PostgreSQL, 46-61 ms in the
#: engine; Q1's 600,000 rows: 0.6 s and 0.53 s)
ENGINE_ONE_TABLE_COST = 1000.0
#: cost of grouping, per input row
ENGINE_GROUP_ROW_COST = 0.002
#: an aggregation the engine runs over a tree of joins costs this fraction
#: of the join's input scans: it saves handing every joined row back and
#: grouping it in PostgreSQL, which the joins' row estimates (often far too
#: low for TPC-H's: Q9's lineitem-partsupp join on two columns is estimated
#: at 2,387 rows for 1.8 million at SF 0.3) understate; without it the two
#: paths fall within add_path's 1% fuzz and PostgreSQL's sorted
#: GroupAggregate, or a plan that joins the engine's rows further, wins
ENGINE_AGGREGATE_SCAN_FRACTION = 0.97
#: and this much again for each join past the second: each join PostgreSQL
#: runs above the engine's rows is planned from the same low estimates, so a
#: plan joining them further understates its cost more the more joins it
#: has (Q9's six tables at SF1: at 97%, a nested loop over orders' rescans,
#: per the 95-215 rows estimated, above the engine's lineitem-partsupp join
#: won by 1-2%, and ran past 60 s)
ENGINE_AGGREGATE_JOIN_FRACTION = 0.9
#: over a single join the estimate is usually right and reading the tables
#: as Arrow batches costs about what PostgreSQL's scans of them do: the
#: scans count in full (TPC-H Q19 ran in the engine at 1.7 times the CPU of
#: PostgreSQL's hash join at SF 0.1)
ENGINE_AGGREGATE_ONE_JOIN_SCAN_FRACTION = 1.0


@_with_wide_variant
def plan_aggregate(tree: tuple, outputs_in: list[tuple], groups: float,
                   having: list[tuple] = (), wide: bool = False) -> tuple[float, float, str, float] | None:
    """(startup_cost, total_cost, plan, rows) if the engine computes the group keys
    and aggregates ``outputs_in`` (``("group" | "aggregate", expr)``, named
    g<i> / a<i> by position) over this join (or one table), else None.  The
    HAVING conditions (``having``) go into DuckDB's SQL when all translate,
    so that only the groups that pass come back (the scan checks them again
    all the same)."""
    try:
        planner, from_sql, rows, description = _planned_from(tree, wide)
        outputs = []
        select = []
        group_by = []
        tr = planner.translator
        if tree[0] == "rel":
            # one table: its rows bound every sum (ten times them: rows added
            # later under a reused plan)
            tr.max_rows = 10 * tree[2].instance.stored_rows()
            planner.work += ENGINE_ONE_TABLE_COST
        for i, (kind, expr) in enumerate(outputs_in):
            if kind == "group":
                typed = tr.value(expr)
                if typed.type_oid not in _OUTPUT_TYPES:
                    raise Refused(f"a group key of type {typed.type_oid}")
                # (a HAVING condition may name the key's column: grouped by the value)
                keyed = None if having else tr.group_key(expr, typed)
                group_by.append(str(len(select) + 1) if keyed is None else keyed[1])
                outputs.append({"name": f"g{i}", "type_oid": typed.type_oid, "typmod": typed.typmod,
                                "columns": [len(select)]})
                select.append(typed.sql if keyed is None else keyed[0])
            else:
                items, out = tr.aggregate(expr)
                if expr[1] is not None and expr[0] == "agg" and expr[2] in ("min", "max") and expr[8]:
                    arg = expr[8][0]
                    if arg[0] == "var" and arg[3] == pushable.BPCHAR:
                        out["pad"] = arg[4] - 4 if arg[4] >= 4 else None
                out.pop("decimal", None)
                outputs.append({"name": f"a{i}", "typmod": -1, **out,
                                "columns": list(range(len(select), len(select) + len(items)))})
                select.extend(items)
    except Refused as reason:
        _declined("an aggregation", reason)
        return None
    sql = _select_sql(select or ["count(*)"], from_sql, planner.where)
    if group_by:
        sql += f" GROUP BY {', '.join(group_by)}"
    conditions = _having(tr, having)
    if conditions:
        sql += f" HAVING {' AND '.join(conditions)}"
    planner.work += rows * ENGINE_GROUP_ROW_COST
    return _finish(planner, sql, outputs, f"aggregate over {description}", groups, groups * 0.01,
                   aggregation=not group_by,
                   scan_fraction=ENGINE_AGGREGATE_SCAN_FRACTION * ENGINE_AGGREGATE_JOIN_FRACTION ** (planner.joins - 2)
                   if planner.joins > 1
                   else ENGINE_AGGREGATE_ONE_JOIN_SCAN_FRACTION)


def _having(tr: pushable.Translator, having: list[tuple]) -> list[str]:
    """The HAVING conditions as DuckDB SQL, or none if one does not
    translate (the scan checks them all over the groups)."""
    if not having:
        return []
    params, columns = list(tr.out.params), set(tr.out.columns)
    try:
        return [tr.condition(c) for c in having]
    except Refused as reason:
        tr.out.params[:], tr.out.columns = params, columns
        _declined("a HAVING condition (the scan checks it)", reason)
        return []


#: cost of sorting in the engine, per row and comparison
ENGINE_SORT_ROW_COST = 0.0005
#: output types DuckDB orders as PostgreSQL's default btree operator class
#: does (text and char(n) only under the C collation: byte order)
_ORDERED_FAMILIES = {"int", "numeric", "date", "timestamp", "timestamptz", "bool", "text", "bpchar"}


def plan_order(plan_text: str, keys: list[tuple], count: int | None, offset: int | None, rows: float,
               startup: float, total: float) -> tuple[float, float, str, float] | None:
    """A plan that sorts the outputs of ``plan_text`` by ``keys`` (output
    index, descending, nulls first, btree operator family, collation) and
    keeps ``count`` rows after ``offset``, or None if DuckDB would not order
    exactly as PostgreSQL."""
    import math

    plan = json.loads(plan_text)
    try:
        order = []
        for index, desc, nulls_first, opfamily, collation in keys:
            out = plan["outputs"][index]
            fam = pushable.family(out["type_oid"])
            if fam not in _ORDERED_FAMILIES or out.get("post") == "avg":
                raise Refused(f"ordering by a value of type {out['type_oid']}")
            if opfamily not in _DEFAULT_BTREE_FAMILIES.get(fam, ()):
                raise Refused(f"ordering by operator family {opfamily}")
            if fam in ("text", "bpchar") and (collation is None or not collation[1]):
                raise Refused("text ordering under a collation other than C")
            order.append(f"{out['columns'][0] + 1} {'DESC' if desc else 'ASC'} "
                         f"NULLS {'FIRST' if nulls_first else 'LAST'}")
    except Refused as reason:
        _declined("an ordering", reason)
        return None

    def ordered(sql: str, params: list) -> str:
        """The SQL ordered and limited (the limit's values added to ``params``)."""
        if plan.get("order"):
            pass  # already ordered: only the limit is added
        elif order:
            sql = f"SELECT * FROM ({sql}) AS orochi_q ORDER BY " + ", ".join(order)
        else:
            sql = f"SELECT * FROM ({sql}) AS orochi_q"
        if count is not None:
            params.append(int(count))
            sql += f" LIMIT CAST(${len(params)} AS BIGINT)"
        if offset:
            params.append(int(offset))
            sql += f" OFFSET CAST(${len(params)} AS BIGINT)"
        return sql

    sql = ordered(plan["sql"], plan["params"])
    if plan.get("wide"):
        plan["wide"]["sql"] = ordered(plan["wide"]["sql"], plan["wide"]["params"])
    out_rows = rows
    if count is not None:
        out_rows = max(min(rows - (offset or 0), count), 1.0)
    # the input's startup is DuckDB's work, the rest handing its rows back: a
    # sort adds to the work (a limit over it makes it a top-N, cheaper than
    # the full sort counted before); a limit hands back fewer rows
    sort_cost = rows * ENGINE_SORT_ROW_COST * max(math.log2(max(rows, 2.0)), 1.0) if order else 0.0
    first = startup + sort_cost
    if count is not None and plan.get("order"):
        first -= plan.get("sort_cost", 0.0) * 0.5
    last = first + (total - startup) * min(out_rows / max(rows, 1.0), 1.0)
    plan = {**plan, "sql": sql, "order": plan.get("order") or bool(order), "sort_cost": sort_cost,
            "description": plan["description"] + (" order by" if order else "") +
            (" limit" if count is not None or offset else "")}
    return first, last, json.dumps(plan), out_rows


#: the default btree operator families of the ordered families (pg_opfamily
#: OIDs, fixed in PostgreSQL's catalog): integer_ops, numeric_ops,
#: datetime_ops (date, timestamp, timestamptz), bool_ops, text_ops, bpchar_ops
_DEFAULT_BTREE_FAMILIES = {"int": (1976,), "numeric": (1988,), "date": (434,), "timestamp": (434,),
                           "timestamptz": (434,), "bool": (424,), "text": (1994,), "bpchar": (426,)}


_OUTPUT_TYPES = {pushable.INT2, pushable.INT4, pushable.INT8, pushable.BOOL, pushable.DATE, pushable.TEXT,
                 pushable.VARCHAR, pushable.FLOAT4, pushable.FLOAT8, pushable.NUMERIC, pushable.BPCHAR,
                 pushable.TIMESTAMP, pushable.TIMESTAMPTZ}


def _finish(planner: "_Planner", sql: str, outputs: list, description: str, rows: float, out_cost: float,
            aggregation: bool = False, scan_fraction: float = 1.0) -> tuple[float, float, str, float]:
    used: dict[int, set] = {}
    for rti, attname in planner.translator.out.columns:
        used.setdefault(rti, set()).add(attname)
    inputs = []
    scan_cost = 0.0
    for rti, inp in sorted(planner.inputs.items()):
        scan_cost += inp["cost"]
        inputs.append({"rti": rti, "relname": inp["handle"].relname, "columns": sorted(used.get(rti, ())),
                       "quals": inp.get("quals", [])})
        if "relid" in inp:
            inputs[-1]["relid"] = inp["relid"]  # (a subquery's: opened by the scan)
    plan = {"sql": sql, "params": [_encode(v) for v in planner.translator.out.params], "inputs": inputs,
            "outputs": outputs, "joins": planner.joins, "description": description,
            "narrowed": planner.translator.out.narrowed}
    startup = ENGINE_STARTUP_COST + scan_cost * scan_fraction + planner.work
    total = startup + out_cost
    return startup, total, json.dumps(plan), rows


def _exact_scan_quals(handle: Any, scan_quals: list) -> list[bool]:
    """Which of a table's restrictions (their :func:`_scan_qual` readings,
    None for others) its scan applies exactly, by its ``exact_quals``."""
    known = [q for q in scan_quals if q is not None]
    if not known:
        return [False] * len(scan_quals)
    instance = handle.instance
    # the same restrictions of each table, offered again with every pair of
    # inputs its join relations are planned from: bound once (the answer
    # follows from the quals and the table's columns)
    key = (id(instance), repr(known))
    found = _EXACT_QUALS.get(key)
    if found is not None and found[0] is instance and found[1] is instance.columns:
        flags = found[2]
    else:
        flags = [bool(x) for x in instance.exact_quals([_qual(q) for q in known])]
        if len(_EXACT_QUALS) >= EXACT_QUALS_ENTRIES:
            _EXACT_QUALS.clear()
        _EXACT_QUALS[key] = (instance, instance.columns, flags)
    answers = iter(flags)
    return [False if q is None else next(answers) for q in scan_quals]


#: :func:`_exact_scan_quals`'s answers by table instance and quals
_EXACT_QUALS: dict[tuple, tuple] = {}
EXACT_QUALS_ENTRIES = 256


def _qual(q: list) -> Qual:
    """A plan's scan qual [column, op, value, collation(, exact)] as the scan takes it."""
    exact = len(q) > 4 and bool(q[4])
    if isinstance(q[1], list):
        return Qual(q[0], tuple(q[1]), [_decode(v) for v in q[2]], q[3], exact)
    return Qual(q[0], q[1], _decode(q[2]), q[3], exact)


def _scan_qual(expr: tuple) -> list | None:
    """A restriction ``column op constant`` as a qual the columnar scan may
    prune with, and filter with when it applies it exactly
    (:func:`_exact_scan_quals`; DuckDB applies every other restriction)."""
    if expr[0] == "nulltest" and expr[2][0] == "var":
        return [expr[2][2], "=" if expr[1] else "<>", None, None]
    if expr[0] == "op" and not expr[3]:
        return None  # (an operator of another schema: not the scan's to apply)
    if expr[0] == "saop":
        # column IN (constants): prunes as the scan's own ANY quals do
        _kind, _opno, opname, builtin, use_or, collation, args = expr
        if not (builtin and opname == "=" and use_or and len(args) == 2 and args[0][0] == "var"
                and args[1][0] == "const" and isinstance(args[1][4], list)):
            return None
        values = args[1][4]
        if not all(v is None or (isinstance(v, (int, str, decimal.Decimal, datetime.date))
                                 and not isinstance(v, bool)) for v in values):
            return None
        name = collation[0] if collation is not None else None
        if name not in (None, "default", "C", "POSIX"):
            return None
        return [args[0][2], ["=", True], [_encode(v) for v in values], name]
    comparison = pushable.column_comparison(expr)
    if comparison is None:
        return None
    left, op, right = comparison
    if right[4] is None:
        return None
    value = right[4]
    # (timestamps too: TPC-H's date '1995-09-01' + interval '1 month' is one,
    # which the scan compares with a date column as PostgreSQL does)
    if not isinstance(value, (int, str, decimal.Decimal, datetime.date)) or isinstance(value, bool):
        return None
    collation = expr[5][0] if expr[5] is not None else None
    if collation not in (None, "default", "C", "POSIX"):
        return None
    return [left[2], op, _encode(value), collation]


def _encode(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime.datetime):
        return {"timestamp": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"date": value.isoformat()}
    if isinstance(value, float):
        return {"float": repr(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "decimal" in value:
            return decimal.Decimal(value["decimal"])
        if "timestamp" in value:
            return datetime.datetime.fromisoformat(value["timestamp"])
        if "date" in value:
            return datetime.date.fromisoformat(value["date"])
        if "float" in value:
            return float(value["float"])
    return value


# ---------------------------------------------------------------------------
# execution


def output_columns(plan: dict) -> dict[str, ColumnDefinition]:
    return {o["name"]: ColumnDefinition(column_name=o["name"], type_oid=o["type_oid"], typmod=o["typmod"],
                                        attnum=i + 1)
            for i, o in enumerate(plan["outputs"])}


_database = None


def _duckdb():
    import duckdb

    return duckdb


def database():
    """The backend's in-memory DuckDB database (made at its first use)."""
    global _database
    if _database is None:
        db = _duckdb().connect(":memory:", config={"threads": 1})
        for macro in _MACROS:
            db.execute(macro)
        _applied.clear()
        _database = db
    return _database


#: PostgreSQL's avg of numerics in DuckDB's integers (pushable's
#: ``_exact_avg``): numeric_div of the sum ``t`` (a HUGEINT, the values
#: scaled by 10^s) by the count ``n``, at select_div_scale's result scale
#: (16 significant digits estimated from the base-10000 weights and leading
#: digits of both, at least s), rounded half away from zero, and given
#: scaled by 10^x (x: the largest scale the plan allows for)
_MACROS = [
    "CREATE OR REPLACE MACRO orochi_pow10(k) AS CAST('1' || repeat('0', CAST(k AS BIGINT)) AS HUGEINT)",
    "CREATE OR REPLACE MACRO orochi_nbase_weight(digits, scale) AS "
    "CAST(floor((length(digits) - 1 - scale) / 4) AS INTEGER)",
    # the leading base-10000 digit: the group's decimal digits from the
    # first one, zeros past the value's last
    "CREATE OR REPLACE MACRO orochi_nbase_lead(digits, scale) AS CAST(substr(rpad(digits, CAST("
    "(length(digits) - 1 - scale) - 4 * orochi_nbase_weight(digits, scale) + 1 AS INTEGER), '0'), 1, "
    "(length(digits) - 1 - scale) - 4 * orochi_nbase_weight(digits, scale) + 1) AS INTEGER)",
    "CREATE OR REPLACE MACRO orochi_div_scale(tdigits, ndigits, s) AS least(greatest(16 - 4 * ("
    "(CASE WHEN tdigits = '' THEN 0 ELSE orochi_nbase_weight(tdigits, s) END) - orochi_nbase_weight(ndigits, 0) - "
    "(CASE WHEN (CASE WHEN tdigits = '' THEN 0 ELSE orochi_nbase_lead(tdigits, s) END) <= "
    "orochi_nbase_lead(ndigits, 0) THEN 1 ELSE 0 END)), s, 0), 1000)",
    "CREATE OR REPLACE MACRO orochi_div_round(num, den) AS "
    "num // den + (CASE WHEN 2 * (num % den) >= den THEN 1 ELSE 0 END)",
    "CREATE OR REPLACE MACRO orochi_numeric_avg_at(t, n, s, x, r) AS CASE WHEN r > x THEN "
    "error('avg at a scale beyond the one planned for (more rows than when the plan was made): "
    "plan the statement again (DISCARD PLANS), or SET orochi.duckdb_join_enabled = off') ELSE "
    "CAST(sign(t) AS HUGEINT) * orochi_div_round(abs(t) * orochi_pow10(r - s), CAST(n AS HUGEINT)) "
    "* orochi_pow10(x - r) END",
    "CREATE OR REPLACE MACRO orochi_numeric_avg(t, n, s, x) AS CASE WHEN n = 0 THEN NULL ELSE "
    "orochi_numeric_avg_at(t, n, s, x, orochi_div_scale(CASE WHEN t = 0 THEN '' ELSE CAST(abs(t) AS VARCHAR) END, "
    "CAST(n AS VARCHAR), s)) END",
]


def _setting_bytes(text: str | None, default: int) -> int:
    if not text:
        return default
    units = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[:-len(unit)].strip().lstrip("-").isdigit():
            return int(text[:-len(unit)]) * units[unit]
    return int(text) * 1024 if text.lstrip("-").isdigit() else default


def hash_memory(joins: int) -> int:
    """What PostgreSQL would give the joins' hash tables: work_mem ×
    hash_mem_multiplier each (bytes)."""
    from orochi_fdw.bridge import spi

    work_mem = _setting_bytes(spi.setting("work_mem"), 4 << 20)
    try:
        multiplier = float(spi.setting("hash_mem_multiplier") or 2.0)
    except ValueError:
        multiplier = 2.0
    return int(work_mem * multiplier * max(joins, 1))


def memory_limit(joins: int) -> int:
    """Bytes DuckDB may use: :func:`hash_memory`, at least MIN_MEMORY_LIMIT."""
    return max(hash_memory(joins), MIN_MEMORY_LIMIT)


#: where DuckDB spills (relative to the data directory, the backend's working
#: directory): under PostgreSQL's own temporary directory, named with its
#: prefix so that a restart after a crash removes what is left
SPILL_DIRECTORY = os.path.join("base", "pgsql_tmp", "pgsql_tmp_orochi_duckdb")


def _set_spilling(cursor) -> None:
    """DuckDB spills what exceeds its memory limit to files under
    SPILL_DIRECTORY/<backend pid>, at most temp_file_limit of them
    (PostgreSQL's limit on a session's temporary files; -1, the default:
    DuckDB's own limit; 0: no spilling, so a join beyond the memory limit
    fails with the out-of-memory error)."""
    from orochi_fdw.bridge import spi

    directory = os.path.abspath(os.path.join(SPILL_DIRECTORY, str(os.getpid())))
    os.makedirs(directory, exist_ok=True)
    # (DuckDB's setting is its database's, and fixed once it spilled)
    _apply(cursor, "temp_directory", directory, "SET temp_directory = $1", [directory])
    text = (spi.setting("temp_file_limit") or "-1").strip()
    if text != "-1":
        _apply(cursor, "max_temp_directory_size", text,
               f"SET max_temp_directory_size = '{_setting_bytes(text, 0)}B'")
    else:
        _apply(cursor, "max_temp_directory_size", text, "RESET max_temp_directory_size")


#: the settings applied to the backend's DuckDB database (all of them the
#: database's, not a connection's): {name: value}, so that a run sets only
#: what changed since the run before
_applied: dict[str, Any] = {}


def _apply(cursor, name: str, value: Any, statement: str, params: list | None = None) -> None:
    if _applied.get(name, _applied) != value:
        _applied.pop(name, None)  # (unknown if the statement fails)
        cursor.execute(statement, params)
        _applied[name] = value


def _configure(cursor, limit: int, own_order: bool = False, correlated: bool = False) -> None:
    """The database's settings for a run: its memory limit (``limit``
    bytes), the join order of the plan's SQL (JOIN_ORDER_SETTINGS) or, with
    ``own_order`` (every input's row count known), DuckDB's own
    (OWN_JOIN_ORDER_SETTINGS), its delim joins kept for a plan with a
    ``correlated`` subquery (CORRELATED_SETTINGS), no insertion order kept,
    spilling (:func:`_set_spilling`)."""
    _apply(cursor, "memory_limit", int(limit), f"SET memory_limit = '{int(limit)}B'")
    _apply(cursor, "preserve_insertion_order", False, "SET preserve_insertion_order = false")
    order = OWN_JOIN_ORDER_SETTINGS if own_order else JOIN_ORDER_SETTINGS
    if correlated:
        order = CORRELATED_SETTINGS[order]
    _apply(cursor, "disabled_optimizers", order, order)
    _set_spilling(cursor)


def _read_inputs(tables: dict[Any, Any], budget: int, sizes: dict[Any, int], used: int = 0) -> list:
    """Read the inputs (Arrow readers, ``tables``) into Arrow tables before
    the run, the smallest (``sizes``: values a scan reads at most) first,
    while their buffers together (with ``used`` bytes of inputs read
    before) stay within ``budget`` bytes: DuckDB then knows every input's
    row count (JOIN_ORDER_SETTINGS).  The input that would pass the budget
    and those after it stay streams (what was read of it handed over
    first); answers those streamed inputs."""
    import pyarrow as pa

    order = sorted(tables, key=lambda k: sizes.get(k, 0))
    for i, rti in enumerate(order):
        reader = tables[rti]
        kept = []
        for rb in reader:
            kept.append(rb)
            used += rb.get_total_buffer_size()
            if used > budget:
                tables[rti] = pa.RecordBatchReader.from_batches(reader.schema, itertools.chain(kept, reader))
                return order[i:]
        tables[rti] = pa.Table.from_batches(kept, schema=reader.schema)
    return []


def _interrupt_flag():
    """The bridge's interrupt flag (set when a cancel reached running Python)."""
    try:
        import _orochi_pg
    except ImportError:
        return None
    capsule = getattr(_orochi_pg, "interrupt_flag", None)
    if capsule is None:
        return None
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return ctypes.c_int.from_address(get(capsule, b"orochi._orochi_pg.interrupt_flag"))


class _Watch:
    """While DuckDB runs (the GIL released), a thread polls the interrupt
    flag and interrupts the cursor; it blocks every signal, so PostgreSQL's
    handlers keep running in the backend's own thread."""

    POLL_SECONDS = 0.02

    def __init__(self, cursor, flag) -> None:
        self.cursor = cursor
        self.flag = flag
        self.thread = None
        self.fired = False

    def __enter__(self):
        if self.flag is None:
            return self
        self.stop = threading.Event()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self.thread = threading.Thread(target=self._run, name="orochi-duckdb-watch", daemon=True)
            self.thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return self

    def _run(self) -> None:
        while not self.stop.wait(self.POLL_SECONDS):
            if self.flag.value:
                self.fired = True
                self.cursor.interrupt()
                return

    def __exit__(self, *exc) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join()


def _param_scan_qual(expr: tuple) -> list | None:
    """A restriction ``integer column op $param`` (a correlated subquery's
    ``p_partkey = ps_partkey``, the outer row's value as a parameter) as a
    qual the scan prunes with once the value is known at execution
    (:func:`_run_quals`); DuckDB checks it all the same."""
    comparison = pushable.column_comparison(expr, "param") if expr[0] == "op" and expr[3] else None
    if comparison is None:
        return None
    left, op, right = comparison
    if op == "<>" or pushable.family(left[3]) != "int" or pushable.family(right[3]) != "int":
        return None
    return [left[2], op, {"param": [right[1], right[2]]}, None]


def _run_quals(inp: dict, params: dict) -> list[list]:
    """An input's scan quals at execution (as the plan writes them): a
    parameter's value in place of its slot; a qual over a NULL value left
    out (DuckDB's condition then holds for no row)."""
    quals = []
    for q in inp["quals"]:
        if isinstance(q[2], dict) and "param" in q[2]:
            value = params.get(tuple(q[2]["param"]))
            if type(value) is not int:
                continue
            q = [q[0], q[1], value, q[3]]
        quals.append(q)
    return quals


def _exact(q: list) -> bool:
    """Whether the scan applies a plan's qual exactly (DuckDB does not check it)."""
    return len(q) > 4 and bool(q[4])


def _quals_key(quals: list[list]) -> str:
    return json.dumps(sorted(json.dumps(q) for q in quals))


# ---------------------------------------------------------------------------
# a table read once for several inputs
#
# Several inputs of one run (a self-join, a correlated subquery over a table
# of the join: TPC-H Q2, Q17, Q21) or of the runs of one statement (an
# InitPlan's and the query's: Q11, Q15) often read the same table with the
# same quals.  Such a table is read once, the union of the inputs' columns
# with the quals its scan applies exactly (the same for all of them) and
# the pruning quals they all have (DuckDB checks those anyway), into one
# Arrow table registered under each input's name; for the runs that come
# later it is kept (within the budget of the inputs read ahead) until they
# took it.  A table read as a stream (past that budget) is not shared.


class _Statement:
    """The tables the engine joins of one statement read, by (relation,
    quals the scan applies exactly): kept by the joins' handles only, so
    gone with them (the statement's end, or its abort: the scans' memory
    context callbacks drop the handles)."""

    __slots__ = ("reads", "kept", "settled", "__weakref__")

    def __init__(self) -> None:
        self.reads: dict[tuple, _SharedRead] = {}
        self.kept = 0  # bytes of the tables kept for runs to come
        self.settled = False  # (:func:`_settle`, at its first run)


class _SharedRead:
    """One table as several inputs of a statement read it: the union of
    their columns, the scan's exact quals (``exact``), the pruning quals
    they all have (``pruning``, JSON), the inputs yet to take it
    (``waiting``: (join, rti)); ``table`` once read and kept.  ``extra``:
    the exact quals of inputs with more of them than ``exact`` (read from
    this table filtered: :func:`_settle`), by input; ``into``: the entry
    this one's inputs were moved to."""

    __slots__ = ("relname", "relid", "coldefs", "exact", "pruning", "columns", "waiting", "table", "size",
                 "declined", "reader", "extra", "into")

    def __init__(self, relname: str, relid: int, coldefs: dict, exact: list) -> None:
        self.relname = relname
        self.relid = relid
        self.coldefs = coldefs
        self.extra: dict[tuple, list] = {}
        self.into: _SharedRead | None = None
        self.exact = exact
        self.pruning: set | None = None
        self.columns: set = set()
        self.waiting: set = set()
        self.table = None
        self.size = 0
        self.declined = False  # streamed or past the budget: each input reads on its own
        self.reader = ""  # the input that read it (EXPLAIN ANALYZE)

    def quals(self) -> list[list]:
        return self.exact + [json.loads(q) for q in sorted(self.pruning or ())]

    def release(self, statement: _Statement) -> None:
        if self.table is not None:
            statement.kept -= self.size
            self.table = None


#: the statements running (their executor states: C's engine_statement)
#: whose engine joins share reads, weakly (each lives as long as its joins)
_STATEMENTS: "weakref.WeakValueDictionary[tuple, _Statement]" = weakref.WeakValueDictionary()
_JOIN_IDS = itertools.count(1)


def share_reads(plan: dict, handles: dict[int, Any], statement: tuple | None) -> dict:
    """Register a join's inputs with its statement's shared reads, when its
    scan begins (every scan of a statement begins before any runs: an
    InitPlan's, a subquery's and the query's): {"join": its id,
    "statement": the statement's reads, rti: _SharedRead} for each input
    whose quals are known before it runs (none over a parameter).  An
    empty dict for a statement that writes (``statement`` None): its
    joins share reads within a run only; {"off": True} with
    orochi.duckdb_shared_reads off (none shared)."""
    from orochi_fdw.bridge import spi

    if spi.setting("orochi.duckdb_shared_reads") == "off":
        return {"off": True}
    if statement is None:
        return {}
    stmt = _STATEMENTS.get(statement)
    if stmt is None:
        stmt = _STATEMENTS[statement] = _Statement()
    join = next(_JOIN_IDS)
    out: dict[Any, Any] = {"join": join, "statement": stmt}
    for inp in plan["inputs"]:
        if any(isinstance(q[2], dict) and "param" in q[2] for q in inp["quals"]):
            continue
        handle = handles[inp["rti"]]
        exact = [q for q in inp["quals"] if _exact(q)]
        key = (handle.relid, _quals_key(exact))
        shared = stmt.reads.get(key)
        if shared is None:
            shared = stmt.reads[key] = _SharedRead(inp["relname"], handle.relid, handle.instance.columns, exact)
        pruning = {json.dumps(q) for q in inp["quals"] if not _exact(q)}
        shared.pruning = pruning if shared.pruning is None else shared.pruning & pruning
        shared.columns.update(inp["columns"])
        shared.waiting.add((join, inp["rti"]))
        out[inp["rti"]] = shared
    return out


#: what :func:`_arrow_filter` applies exactly as the scan does: comparisons
#: of integers, numerics and dates with a value of the column's own type
_FILTER_TYPES = {pushable.INT2, pushable.INT4, pushable.INT8, pushable.NUMERIC, pushable.DATE}
_FILTER_OPS = {"=": "equal", "<>": "not_equal", "<": "less", "<=": "less_equal", ">": "greater",
               ">=": "greater_equal"}


def _filter_values(q: list, coldefs: dict) -> list | None:
    """A qual's values as Arrow scalars of its column's type (none for a
    NULL test), or None when :func:`_arrow_filter` cannot apply it."""
    import pyarrow as pa

    c = coldefs.get(q[0])
    if c is None:
        return None
    if q[2] is None and q[1] in ("=", "<>"):
        return []  # IS NULL, IS NOT NULL
    if c.type_oid not in _FILTER_TYPES:
        return None
    if isinstance(q[1], list):
        if q[1] != ["=", True] or not isinstance(q[2], list):
            return None
        values = [_decode(v) for v in q[2] if v is not None]
    elif q[1] in _FILTER_OPS:
        values = [_decode(q[2])]
    else:
        return None
    typ = _arrow_type(c)
    out = []
    for v in values:
        if c.type_oid == pushable.DATE:
            ok = type(v) is datetime.date
        elif c.type_oid == pushable.NUMERIC:
            ok = type(v) is int or (isinstance(v, decimal.Decimal) and v.is_finite())
        else:
            ok = type(v) is int
        if not ok:
            return None
        try:
            scalar = pa.scalar(v, typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            return None  # (a value the column's type cannot hold exactly)
        if scalar.as_py() != v:
            return None
        out.append(scalar)
    return out


def _arrow_filter(table, quals: list[list], coldefs: dict):
    """The rows of ``table`` that pass ``quals`` (exact quals that
    :func:`_filter_values` takes), NULLs passing no comparison, as the scan
    applies them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = None
    for q in quals:
        col = table[q[0]]
        values = _filter_values(q, coldefs)
        if values is None:
            raise EngineError(f"the join engine cannot filter {q[0]} {q[1]} {q[2]!r}", "XX000")
        if q[2] is None:
            m = pc.is_null(col) if q[1] == "=" else pc.is_valid(col)
        elif isinstance(q[1], list):
            m = pc.is_in(col, value_set=pa.array([v.as_py() for v in values], col.type), skip_nulls=True)
        else:
            m = getattr(pc, _FILTER_OPS[q[1]])(col, values[0])
        mask = m if mask is None else pc.and_kleene(mask, m)
    return table if mask is None else table.filter(mask)


def _settle(stmt: _Statement) -> None:
    """Before the first run of a statement (every join registered): an
    entry whose exact quals include all of another's over the same table,
    and whose inputs read no column that other does not (its extra quals'
    included), is read from the other's table with its extra quals applied
    to it (:func:`_arrow_filter`): the other reads those rows anyway, and
    filtering them costs less than reading them again (TPC-H Q22's
    customer, ``c_acctbal > 0`` in the InitPlan only)."""
    stmt.settled = True
    entries = list(stmt.reads.values())
    for narrow in entries:
        mine = {json.dumps(q) for q in narrow.exact}
        for broad in entries:
            theirs = {json.dumps(q) for q in broad.exact}
            if broad is narrow or broad.into is not None or broad.relid != narrow.relid or not theirs < mine:
                continue
            extra = [q for q in narrow.exact if json.dumps(q) not in theirs]
            if not narrow.columns | {q[0] for q in extra} <= broad.columns \
                    or any(_filter_values(q, broad.coldefs) is None for q in extra):
                continue
            for consumer in narrow.waiting:
                broad.extra[consumer] = extra + narrow.extra.get(consumer, [])
            broad.waiting |= narrow.waiting
            broad.pruning = (broad.pruning or set()) & (narrow.pruning or set())
            narrow.waiting = set()
            narrow.into = broad
            break


def _entry(shared: dict, rti: int) -> "_SharedRead | None":
    """The entry an input reads from (after :func:`_settle`)."""
    entry = shared.get(rti)
    while entry is not None and entry.into is not None:
        entry = entry.into
    return entry


def shared_reads() -> tuple[int, int]:
    """(statements with shared reads, bytes of tables kept for them): none
    once the statements ended."""
    statements = list(_STATEMENTS.values())
    return len(statements), sum(s.kept for s in statements)


class _Read:
    """One scan of a run, for the inputs ``rtis`` (one, or several over the
    same table with the same exact quals); ``source``: an Arrow reader, or
    the table another run read (``taken``)."""

    __slots__ = ("rtis", "inp", "shared", "keep", "source", "taken")

    def __init__(self, rtis: list[int], inp: dict, shared: _SharedRead | None = None) -> None:
        self.rtis = rtis
        self.inp = inp
        self.shared = shared
        self.keep = False
        self.source = None
        self.taken = False


def _plan_reads(plan: dict, handles: dict[int, Any], by_slot: dict, caches: dict, shared: dict) -> list[_Read]:
    """The scans of a run: one per input, but one for the inputs over the
    same table with the same exact quals (the union of their columns, the
    pruning quals they all have), or the table an earlier run of the
    statement read for them."""
    groups: dict[tuple, list[tuple[dict, list]]] = {}
    join = shared.get("join")
    statement = shared.get("statement")
    if statement is not None and not statement.settled:
        _settle(statement)
    for inp in plan["inputs"]:
        rti = inp["rti"]
        quals = _run_quals(inp, by_slot)
        exact_key = _quals_key([q for q in quals if _exact(q)])
        entry = _entry(shared, rti)
        extra = entry.extra.get((join, rti), []) if entry is not None else []
        if entry is not None and (join, rti) in entry.waiting and not entry.declined \
                and exact_key == _quals_key(entry.exact + extra) \
                and set(inp["columns"]) | {q[0] for q in extra} <= entry.columns:
            key: tuple = ("statement", id(entry))
        elif rti in caches or "off" in shared:
            key = ("own", rti)  # (a rescan: its scan's cache)
        else:
            key = (handles[rti].relid, exact_key)
        groups.setdefault(key, []).append((inp, quals))
    reads = []
    for key, members in groups.items():
        first, quals = members[0]
        if key[0] == "statement":
            entry = _entry(shared, first["rti"])
            read = _Read([m[0]["rti"] for m in members],
                         {**first, "columns": sorted(entry.columns), "quals": entry.quals()}, entry)
            if entry.table is not None:
                read.source, read.taken = entry.table, True
            else:
                # the first of the statement's runs to read it: kept for the others
                read.keep = bool(entry.waiting - {(join, rti) for rti in read.rtis})
        elif len(members) > 1:
            common = set.intersection(*({json.dumps(q) for q in m[1] if not _exact(q)} for m in members))
            columns = sorted(set().union(*(m[0]["columns"] for m in members)))
            read = _Read([m[0]["rti"] for m in members],
                         {**first, "columns": columns,
                          "quals": [q for q in quals if _exact(q)] + [json.loads(q) for q in sorted(common)]})
        else:
            read = _Read([first["rti"]], {**first, "quals": quals})
        reads.append(read)
    return reads


def _arrow_input(handle: Any, inp: dict, counters: dict | None = None, quals: list[Qual] | None = None,
                 scan_cache: dict | None = None):
    """The rows of one table, read by its columnar scan as DuckDB pulls them:
    an Arrow RecordBatchReader over the scan's batches (one stripe's decoded
    columns at a time in memory, not the table's).  DuckDB pulls from the
    thread that runs the query (the backend's: one DuckDB thread), where the
    scan may call into PostgreSQL; any other thread is refused."""
    import pyarrow as pa

    from orochi_fdw.bridge.runtime import UNKNOWN  # noqa: F401  (the scan's module is loaded)
    from orochi_fdw.columnar.scan import DictionaryColumn
    from orochi_fdw.columnar.types import cstring_to_decimal, decimal_type, storage_kind

    instance = handle.instance
    names = inp["columns"]
    coldefs = [instance.columns[n] for n in names]
    kinds = [_scan_kind(c) for c in coldefs]
    # text crosses as Arrow dictionary arrays: a DICTIONARY-coded chunk's
    # distinct values and codes as they are (DuckDB keeps them as a
    # dictionary vector), other batches as a dictionary of their own rows
    texts = {n for n, k in zip(names, kinds) if k in (WireKind.TEXT, WireKind.CSTRING)
             and coldefs[names.index(n)].type_oid in (pushable.TEXT, pushable.VARCHAR, pushable.BPCHAR)}
    types = [pa.dictionary(pa.int32(), _arrow_type(c)) if n in texts else _arrow_type(c)
             for n, c in zip(names, coldefs)]
    # character(n) is stored without its padding (stripes, a column's
    # missing value) and the delta store hands it over as text (bpchar::text
    # drops the padding too): the scan's batches need no trimming, only
    # rows handed over as Python values and bpchar without a length
    trimmed = [c.type_oid == pushable.BPCHAR and storage_kind(c) == "char" for c in coldefs]
    if quals is None:
        quals = [_qual(q) for q in inp["quals"]]
    fields = [pa.field(n, t) for n, t in zip(names, types)] or [pa.field("orochi_row", pa.bool_())]
    schema = pa.schema(fields)
    owner = threading.get_ident()
    key = f"t{inp['rti']} {inp['relname']}"
    # what each batch's columns are made with, worked out once
    layouts = list(zip(names, coldefs, kinds, types, trimmed, [decimal_type(c) is not None for c in coldefs]))

    def make(nrows: int, columns: dict, scanned: bool = True):
        if not names:
            return pa.record_batch([pa.array(np.zeros(nrows, dtype=bool))], schema=schema)
        arrays = []
        for n, c, k, t, trim, dec in layouts:
            col = columns.get(n)
            if isinstance(col, DictionaryColumn):
                arrays.append(_dictionary_to_arrow(col, c, nrows, t, trimmed=trim and scanned))
                continue
            col = to_column(k, col) if col is not None else _null_column(k, nrows)
            if dec and col.kind is WireKind.CSTRING:
                col = cstring_to_decimal(col, c)
            if n in texts:
                arrays.append(_dictionary_to_arrow(DictionaryColumn(col, None, col.validity), c, nrows, t,
                                                   trimmed=trim and scanned))
                continue
            arrays.append(_to_arrow(col, c, nrows, t, trimmed=trim and scanned))
        return pa.record_batch(arrays, schema=schema)

    def batches():
        clock = time.perf_counter
        pending_rows: list = []
        if scan_cache is not None:
            # (a rescan: the stripe list kept, the rows indexed by a varying
            # parameter's column or copied once the rescans cost a full scan)
            items = iter(instance.execute(quals, names, scan_cache=scan_cache, rowids=False) or ())
        else:
            items = iter(instance.execute(quals, names, rowids=False, dictionaries=frozenset(texts)) or ())
        while True:
            if threading.get_ident() != owner:
                raise EngineError("the join engine read a table from another thread", "XX000")
            t0 = clock()
            try:
                item = next(items)
            except StopIteration:
                break
            finally:
                if counters is not None:
                    counters["read"] += clock() - t0
            if isinstance(item, Batch):
                if counters is not None:
                    counters["rows_in"][key] = counters["rows_in"].get(key, 0) + item.nrows
                yield make(item.nrows, item.columns)
            else:
                pending_rows.append(item)
        if pending_rows:
            if isinstance(pending_rows[0], dict):
                cols = {n: [r.get(n) for r in pending_rows] for n in names}
            else:
                order = list(instance.columns)
                cols = {n: [r[order.index(n)] for r in pending_rows] for n in names}
            if counters is not None:
                counters["rows_in"][key] = counters["rows_in"].get(key, 0) + len(pending_rows)
            yield make(len(pending_rows), {n: Column.from_pylist(k, cols[n]) for n, k in zip(names, kinds)},
                       scanned=False)

    if counters is not None:
        counters["rows_in"].setdefault(key, 0)
    return pa.RecordBatchReader.from_batches(schema, batches())


def _null_column(kind: WireKind, n: int) -> Column:
    return Column.from_pylist(kind, [None] * n)


def _arrow_type(c: ColumnDefinition):
    import pyarrow as pa

    oid = c.type_oid
    if oid == pushable.NUMERIC:
        # (the scan's scaled int64 as they are: DuckDB reads Arrow's decimal64)
        p, s = pushable.decimal64_type(oid, c.typmod)
        return pa.decimal64(max(p, 1), s)
    return {
        pushable.INT2: pa.int16(), pushable.INT4: pa.int32(), pushable.INT8: pa.int64(),
        pushable.BOOL: pa.bool_(), pushable.DATE: pa.date32(), pushable.TEXT: pa.large_string(),
        pushable.VARCHAR: pa.large_string(), pushable.FLOAT4: pa.float32(), pushable.FLOAT8: pa.float64(),
        pushable.BPCHAR: pa.large_string(), pushable.TIMESTAMP: pa.timestamp("us"),
        pushable.TIMESTAMPTZ: pa.timestamp("us"),  # the UTC instant
    }[oid]


def _to_arrow(col: Column, c: ColumnDefinition, n: int, typ=None, trimmed: bool = False):
    """One wire column as an Arrow array (of type ``typ``, by default
    :func:`_arrow_type`'s): fixed-width values (numerics' scaled int64 too)
    and text are wrapped without copying; validity bytes become a bitmap.
    ``trimmed``: a character(n) column's values are known to have no
    padding."""
    import pyarrow as pa

    bitmap = _arrow_bitmap(col.validity)
    if typ is None:
        typ = _arrow_type(c)
    kind = col.kind
    if kind in (WireKind.TEXT, WireKind.CSTRING):
        offsets = np.ascontiguousarray(col.offsets, dtype=np.int64)
        arr = pa.Array.from_buffers(typ, n, [bitmap, pa.py_buffer(offsets),
                                             pa.py_buffer(np.ascontiguousarray(col.values))])
        if c.type_oid == pushable.BPCHAR and not trimmed:
            import pyarrow.compute as pc

            arr = pc.utf8_rtrim(arr, characters=" ")  # char(n) without its padding
        return arr
    values = np.asarray(col.values)
    if kind is WireKind.BOOL:
        buf = pa.py_buffer(np.packbits(values != 0, bitorder="little"))
    elif kind is WireKind.DATE:
        days = values.astype(np.int32, copy=True)
        days += _PG_EPOCH_DAYS  # wraps only near the infinities, replaced here
        if n and (values.max() > _INT32_MAX - _PG_EPOCH_DAYS or values.min() == _INT32_MIN):
            days[values == _INT32_MAX] = _DUCK_DATE_INFINITY
            days[values == _INT32_MIN] = _DUCK_DATE_NINFINITY
        buf = pa.py_buffer(days)
    elif kind is WireKind.TIMESTAMP:
        v = values.astype(np.int64, copy=False)
        us = v + _PG_EPOCH_US  # wraps only at the infinities, replaced here
        us[v == _INT64_MAX] = _DUCK_TS_INFINITY
        us[v == _INT64_MIN] = _DUCK_TS_NINFINITY
        buf = pa.py_buffer(us)
    elif kind is WireKind.DECIMAL64:
        buf = pa.py_buffer(np.ascontiguousarray(values, dtype=np.int64))
    else:
        buf = pa.py_buffer(np.ascontiguousarray(values))
    return pa.Array.from_buffers(typ, n, [bitmap, buf])


def _arrow_bitmap(validity):
    """Validity bytes as an Arrow validity bitmap, or None when every value is there."""
    import pyarrow as pa

    if validity is None:
        return None
    valid = np.asarray(validity).astype(bool, copy=False)
    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _dictionary_to_arrow(col: Any, c: ColumnDefinition, n: int, typ, trimmed: bool):
    """A text column as an Arrow dictionary array of type ``typ``: a
    :class:`~orochi_fdw.columnar.scan.DictionaryColumn`'s entries and codes
    (checked against the entries when the chunk was decoded); a column
    without codes (a decoded chunk, delta rows) as a dictionary of its own
    rows, in order."""
    import pyarrow as pa

    entries = col.entries
    dictionary = _to_arrow(Column(entries.kind, entries.values, None, entries.offsets), c, len(entries.offsets) - 1,
                           typ.value_type, trimmed)
    codes = np.arange(n, dtype=np.int32) if col.codes is None else np.ascontiguousarray(col.codes, dtype=np.int32)
    indices = pa.Array.from_buffers(pa.int32(), n, [_arrow_bitmap(col.validity), pa.py_buffer(codes)])
    return pa.DictionaryArray.from_arrays(indices, dictionary, safe=False)


def _from_arrow(arr, out: dict) -> Column:
    """One result column in the bridge's wire layout."""
    import pyarrow as pa

    n = len(arr)
    validity = None
    if arr.null_count:
        validity = np.asarray(arr.is_valid()).astype(np.uint8)
    oid = out["type_oid"]
    if oid in pushable.TEXT_TYPES or oid == pushable.BPCHAR:
        if oid == pushable.BPCHAR and out.get("pad"):
            import pyarrow.compute as pc

            arr = pc.utf8_rpad(arr.cast(pa.large_string()), width=out["pad"], padding=" ")
        arr = arr.cast(pa.large_string())
        bufs = arr.buffers()
        offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset:arr.offset + n + 1]
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        return Column(WireKind.CSTRING if oid == pushable.BPCHAR else WireKind.TEXT, data, validity, offsets)
    if oid == pushable.NUMERIC:
        # numeric's text at the value's scale (the type's display scale: every value has it)
        text = arr.cast(pa.large_string())
        bufs = text.buffers()
        offsets = np.frombuffer(bufs[1], dtype=np.int64)[text.offset:text.offset + n + 1]
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        return Column(WireKind.CSTRING, data, validity, offsets)
    if oid == pushable.DATE:
        raw = np.asarray(arr.cast(pa.int32()).fill_null(0)).astype(np.int64)
        days = raw - _PG_EPOCH_DAYS
        days[raw == _DUCK_DATE_INFINITY] = _INT32_MAX
        days[raw == _DUCK_DATE_NINFINITY] = _INT32_MIN
        return Column(WireKind.DATE, days.astype(np.int32), validity)
    if oid in (pushable.TIMESTAMP, pushable.TIMESTAMPTZ):
        raw = np.asarray(arr.cast(pa.int64()).fill_null(0)).astype(np.int64)
        with np.errstate(over="ignore"):
            us = raw - _PG_EPOCH_US
        us[raw == _DUCK_TS_INFINITY] = _INT64_MAX
        us[raw == _DUCK_TS_NINFINITY] = _INT64_MIN
        return Column(WireKind.TIMESTAMP, us, validity)
    if oid == pushable.BOOL:
        return Column(WireKind.BOOL, np.asarray(arr.fill_null(False)).astype(np.uint8), validity)
    kind = {pushable.INT2: WireKind.INT16, pushable.INT4: WireKind.INT32, pushable.INT8: WireKind.INT64,
            pushable.FLOAT4: WireKind.FLOAT32, pushable.FLOAT8: WireKind.FLOAT64}[oid]
    return Column(kind, np.ascontiguousarray(np.asarray(arr.fill_null(0))), validity)


def _output(rb, out: dict) -> Column:
    if out.get("post") == "avg":
        from orochi_fdw.query.aggregate import _decimal_avg

        sums = rb.column(out["columns"][0]).to_pylist()
        counts = rb.column(out["columns"][1]).to_pylist()
        scale = out["scale"]
        if len(out["columns"]) > 2:
            # values of differing display scales: the sum's is the largest
            scales = rb.column(out["columns"][2]).to_pylist()
            texts = [None if not n else _decimal_avg(int(total.scaleb(sc)), sc, int(n))
                     for total, n, sc in zip(sums, counts, scales)]
        else:
            texts = [None if not n else _decimal_avg(int(total.scaleb(scale)), scale, int(n))
                     for total, n in zip(sums, counts)]
        return Column.from_pylist(WireKind.CSTRING, texts)
    if out.get("post") == "rescale":
        sums = rb.column(out["columns"][0]).to_pylist()
        scales = rb.column(out["columns"][1]).to_pylist()
        with decimal.localcontext() as ctx:
            ctx.prec = 80
            texts = [None if total is None else str(total.quantize(decimal.Decimal(1).scaleb(-sc)))
                     for total, sc in zip(sums, scales)]
        return Column.from_pylist(WireKind.CSTRING, texts)
    return _from_arrow(rb.column(out["columns"][0]), out)


def _engine_error(exc: BaseException, limit: int, watch: _Watch | None) -> BaseException:
    duckdb = _duckdb()
    text = str(exc)
    if isinstance(exc, duckdb.InterruptException):
        if watch is not None and watch.fired:
            return KeyboardInterrupt()  # the bridge reports the cancel's real reason
        return EngineError("canceling statement: the join engine was interrupted", "57014")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return EngineError(
            f"the join engine ran out of memory (limit {limit >> 20} MB)", "53200",
            detail=text.splitlines()[0] if text else None,
            hint="The limit is work_mem × hash_mem_multiplier per join, beyond which it spills up to "
                 "temp_file_limit; raise work_mem, or SET orochi.duckdb_join_enabled = off to run the "
                 "join in PostgreSQL.")
    if isinstance(exc, duckdb.OutOfRangeException) and "DECIMAL" not in text:
        return EngineError("integer out of range", "22003", detail=text)
    if (isinstance(exc, duckdb.ConversionException) and "out of range" in text and "DECIMAL" in text) or \
            isinstance(exc, duckdb.OutOfRangeException):
        # a numeric column beyond the precision its statistics gave when
        # the plan was made (pushable.Translator._narrowed; a product of
        # DuckDB's own types past 18 digits, Translator._native_arithmetic):
        # rows added since
        return EngineError("numeric field overflow", "22003", detail=text,
                           hint="The plan was made when the table's values were smaller; plan the "
                                "statement again (DISCARD PLANS), or SET orochi.duckdb_join_enabled = off.")
    return EngineError(f"the join engine failed: {text}", "XX000")


class Run(CountedBatches):
    """The iterator of a join the engine runs, with what EXPLAIN ANALYZE
    shows of it: the rows read from each table, the seconds spent reading
    them, in DuckDB and handing rows back."""

    def __init__(self, plan: dict, handles: dict[int, Any], values: list, scan_cache: dict | None = None,
                 shared: dict | None = None) -> None:
        counters: dict[str, Any] = {"read": 0.0, "engine": 0.0, "output": 0.0, "rows_in": {}, "rows_out": 0,
                                    "shared": {}}
        super().__init__(_run(plan, handles, counters, values, scan_cache, shared or {}), counters)

    def explain_analyze(self) -> list[str]:
        c = self.counters
        notes = c.get("shared", {})
        rows_in = ", ".join(f"{name} {n:,}" + (f" ({notes[name]})" if name in notes else "")
                            for name, n in c["rows_in"].items())
        lines = [f"Engine Rows Read: {rows_in}",
                 f"Engine Time: reading {c['read'] * 1000:.1f} ms, DuckDB {c['engine'] * 1000:.1f} ms, "
                 f"handing back {c['output'] * 1000:.1f} ms"]
        if c.get("streamed"):
            lines.append(f"Engine Join Order: the plan's (streamed past work_mem: {', '.join(c['streamed'])})")
        elif "streamed" in c and not c.get("own_order", True):
            lines.append("Engine Join Order: the plan's (a read shared with a subquery's input: past "
                         "work_mem counted once per input)")
        elif "streamed" in c:
            lines.append("Engine Join Order: DuckDB's (every input read ahead)")
        if c.get("wide"):
            lines.append("Engine Numerics: 38 digits (values outgrew the plan's narrowed columns)")
        return lines


def run(plan: dict, handles: dict[int, Any], values: list | None = None, scan_cache: dict | None = None,
        shared: dict | None = None) -> Run:
    """Execute a planned join: read the tables, run the SQL, yield batches.
    ``values``: the parameters' values (:func:`plan_params` order);
    ``scan_cache``: a dict kept across the rescans of the plan node;
    ``shared``: :func:`share_reads`'s answer for the join."""
    return Run(plan, handles, values or [], scan_cache, shared)


def plan_params(plan: dict) -> list[tuple[int, int, int, int]]:
    """The parameters a plan takes at execution, (kind, id, type, typmod)
    each, in the order their values are given to :func:`run`."""
    return [tuple(p["param"]) for p in plan["params"] if isinstance(p, dict) and "param" in p]


def _param_value(slot: list, value: Any) -> Any:
    """A parameter's value as the engine takes it (as :mod:`pushable`'s
    constants), or an error when the engine cannot hold it exactly."""
    _kind, _id, type_oid, _typmod = slot
    if value is None:
        return None
    fam = pushable.family(type_oid)
    ok = True
    if fam == "numeric":
        ok = isinstance(value, decimal.Decimal) and value.is_finite() and \
            len(value.as_tuple().digits) + max(value.as_tuple().exponent, 0) <= pushable.MAX_DECIMAL_PRECISION
    elif fam == "date":
        ok = type(value) is datetime.date
    elif fam == "timestamp":
        ok = type(value) is datetime.datetime and value.tzinfo is None
    elif fam == "timestamptz":
        ok = type(value) is datetime.datetime and value.tzinfo is not None
        if ok:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    elif fam == "bpchar":
        ok = isinstance(value, str)
        if ok:
            value = value.rstrip(" ")
    elif fam == "float":
        ok = isinstance(value, float)
    elif fam == "int":
        ok = type(value) is int
    elif fam == "bool":
        ok = type(value) is bool
    elif fam == "text":
        ok = isinstance(value, str)
    if not ok:
        raise EngineError(f"the join engine cannot take the parameter value {value!r}", "0A000",
                          hint="SET orochi.duckdb_join_enabled = off to run the join in PostgreSQL.")
    return value


def _params(plan: dict, values: list) -> list:
    out = []
    given = iter(values)
    for p in plan["params"]:
        if isinstance(p, dict) and "param" in p:
            out.append(_param_value(p["param"], next(given, None)))
        else:
            out.append(_decode(p))
    return out


def _outgrown(plan: dict, handles: dict[int, Any]) -> bool:
    """Whether a value of a column the plan narrowed has more digits than
    the narrowing holds (or the table's bounds are no longer known: rows in
    its delta store)."""
    by_table: dict[int, dict[str, int]] = {}
    for rti, attname, digits in plan.get("narrowed", ()):
        columns = by_table.setdefault(rti, {})
        columns[attname] = min(digits, columns.get(attname, digits))
    for rti, columns in by_table.items():
        ranges = handles[rti].instance.value_ranges(sorted(columns), exact=True)
        for attname, digits in columns.items():
            lo_hi = ranges.get(attname)
            if lo_hi is None or len(str(max(abs(int(lo_hi[0])), abs(int(lo_hi[1]))))) > digits:
                return True
    return False


def _run(plan: dict, handles: dict[int, Any], counters: dict, values: list,
         scan_cache: dict | None = None, shared: dict | None = None) -> Iterator[Batch]:
    if plan.get("wide"):
        # (asked once for every rescan of the statement)
        outgrown = None if scan_cache is None else scan_cache.get("narrowing_outgrown")
        if outgrown is None:
            outgrown = _outgrown(plan, handles)
            if scan_cache is not None:
                scan_cache["narrowing_outgrown"] = outgrown
        if outgrown:
            plan = {**plan, **plan["wide"]}
            counters["wide"] = True
    params = _params(plan, values)
    by_slot = {(p["param"][0], p["param"][1]): v for p, v in zip(plan["params"], params)
               if isinstance(p, dict) and "param" in p}
    caches: dict = {}
    if scan_cache is not None:
        # from the second run on (a correlated subquery's, once per outer
        # row): each table's scan keeps what its rescans need not read again
        scan_cache["runs"] = scan_cache.get("runs", 0) + 1
        if scan_cache["runs"] > 1:
            caches = {inp["rti"]: scan_cache.setdefault(("input", inp["rti"]), {}) for inp in plan["inputs"]}
    if scan_cache is not None:
        key = tuple(_memo_key(v) for v in params)
        memo = scan_cache.get("memo")
        if memo is not None and memo[0] == key:
            # the same parameter values as the run before (Q2's subquery, once
            # per partsupp row of one part): the same rows, within one statement
            counters["rows_out"] += sum(b.nrows for b in memo[1])
            yield from memo[1]
            return
        scan_cache.pop("memo", None)
        kept: list | None = []
    else:
        key, kept = None, None
    for batch in _run_engine(plan, handles, counters, params, by_slot, caches, shared or {}):
        if kept is not None:
            kept.append(batch)
            if len(kept) > 1 or batch.nrows > MEMO_MAX_ROWS:
                kept = None
        yield batch
    if kept is not None:
        scan_cache["memo"] = (key, kept)


#: the most rows a rescan's result keeps for the next rescan with the same
#: parameter values
MEMO_MAX_ROWS = 1_000


def _memo_key(value: Any) -> Any:
    # (1 and 1.0 and True are equal keys in Python, not equal values here)
    return (type(value).__name__, value)


def _stored_rows(handle: Any) -> int:
    """The rows a scan of the input reads at most (0: not known)."""
    stored_rows = getattr(handle.instance, "stored_rows", None)
    return int(stored_rows()) if stored_rows is not None else 0


def _open_reads(plan: dict, handles: dict[int, Any], counters: dict, by_slot: dict, caches: dict,
                shared: dict) -> tuple[dict[int, Any], list[int], bool]:
    """The inputs of a run by rti (Arrow tables read ahead or readers),
    those streamed, and whether DuckDB chooses the join order.  The inputs
    are read ahead while they fit in one hash table's memory (the budget:
    reading more ahead costs more than DuckDB's join order gains, TPC-H Q8,
    Q9, Q17 at SF1), but for one input alone (no join order to choose: its
    stream as it is) unless it is read for another input too (of this run:
    registered twice; or of a later run of the statement: kept).  DuckDB
    chooses the join order when nothing is streamed, unless a read serves
    both a subquery's input and the query's and the inputs, counted once
    per input that reads them, pass the budget: the order is then the one
    separate reads would have given (TPC-H Q17 at SF1: lineitem read once
    for the query and its correlated subquery, 80 ms of DuckDB's time in
    the plan's order against 300 ms in its own; Q21's self-join, no
    subquery, keeps DuckDB's order, 420 ms against 515 ms)."""
    import pyarrow as pa

    reads = _plan_reads(plan, handles, by_slot, caches, shared)
    by_rti = {inp["rti"]: inp for inp in plan["inputs"]}
    for rti, inp in by_rti.items():
        counters["rows_in"].setdefault(f"t{rti} {inp['relname']}", 0)  # (EXPLAIN's order)
    budget = hash_memory(1)
    used = 0
    for read in reads:
        if read.taken:
            used += read.shared.size
        else:
            read.source = _arrow_input(handles[read.rtis[0]], read.inp, counters,
                                       [_qual(q) for q in read.inp["quals"]], caches.get(read.rtis[0]))
    pending = {i: r.source for i, r in enumerate(reads) if not r.taken}
    if len(reads) < 2 and not any(r.keep or len(r.rtis) > 1 for r in reads):
        streamed_reads = list(pending)
    else:
        streamed_reads = _read_inputs(pending, budget, {
            i: _stored_rows(handles[reads[i].rtis[0]]) * max(len(reads[i].inp["columns"]), 1)
            for i in pending}, used)
    tables: dict[int, Any] = {}
    streamed: list[int] = []
    join = shared.get("join")
    statement = shared.get("statement")
    for i, read in enumerate(reads):
        entry = read.shared
        # (inputs with more exact quals than the read: its rows that pass them)
        extras = {rti: entry.extra.get((join, rti)) for rti in read.rtis} if entry is not None else {}
        if i in streamed_reads:
            if entry is not None:
                entry.declined = True  # (a stream is never shared)
            plain = [rti for rti in read.rtis if not extras.get(rti)]
            for rti in read.rtis:
                if plain and rti == plain[0]:
                    tables[rti] = pending[i]
                else:
                    # (each other input as it would have read on its own)
                    inp = by_rti[rti]
                    tables[rti] = _arrow_input(handles[rti], inp, counters,
                                               [_qual(q) for q in _run_quals(inp, by_slot)])
                streamed.append(rti)
            continue
        table = read.source if read.taken else pending[i]
        names = {rti: f"t{rti} {by_rti[rti]['relname']}" for rti in read.rtis}
        for rti, name in names.items():
            extra = extras.get(rti)
            tables[rti] = _arrow_filter(table, extra, entry.coldefs) if extra else table
            if extra or read.taken or rti != read.rtis[0]:
                counters["rows_in"][name] = tables[rti].num_rows
            notes = []
            if read.taken:
                notes.append("read by another join of the statement"
                             + (f" as {entry.reader}" if entry.reader != name else ""))
            elif len(names) > 1:
                notes.append("read once with " + ", ".join(f"t{r}" for r in read.rtis if r != rti))
            if extra:
                notes.append(f"{len(extra)} of its conditions applied to the rows read")
            if notes:
                counters["shared"][name] = ", ".join(notes)
        names = list(names.values())
        if read.keep:
            size = table.get_total_buffer_size()
            if statement.kept + size <= budget:
                entry.table, entry.size, entry.reader = table, size, names[0]
                statement.kept += size
                counters["shared"][names[0]] = ", ".join(
                    filter(None, [counters["shared"].get(names[0]), "kept for another join of the statement"]))
            else:
                entry.declined = True
    for read in reads:
        if read.shared is not None:
            read.shared.waiting -= {(join, rti) for rti in read.rtis}
            if not read.shared.waiting:
                read.shared.release(statement)  # (the last input that needed it took it)
    spans = any(min(r.rtis) < SUBQUERY_RTI <= max(r.rtis) for r in reads)
    own_order = not streamed and (not spans or sum(
        t.get_total_buffer_size() for t in tables.values() if not isinstance(t, pa.RecordBatchReader)) <= budget)
    return tables, streamed, own_order


def _run_engine(plan: dict, handles: dict[int, Any], counters: dict, params: list, by_slot: dict,
                caches: dict, shared: dict) -> Iterator[Batch]:
    clock = time.perf_counter
    names = [o["name"] for o in plan["outputs"]]
    # (a correlated subquery's tables are joined too, once DuckDB decorrelates it)
    joins = max(plan["joins"], len(plan["inputs"]) - 1)
    limit = memory_limit(joins)
    flag = _interrupt_flag()
    cursor = database().cursor()
    watch = None
    try:
        try:
            # (the time counted as reading: the scans' and the Arrow arrays')
            t0 = clock()
            read0 = counters["read"]
            tables, streamed, own_order = _open_reads(plan, handles, counters, by_slot, caches, shared)
            counters["read"] = read0 + clock() - t0
            if len(tables) > 1:
                by_rti = {inp["rti"]: inp for inp in plan["inputs"]}
                counters["streamed"] = [f"t{rti} {by_rti[rti]['relname']}" for rti in streamed]
                counters["own_order"] = own_order
            _configure(cursor, limit, own_order=own_order,
                       correlated=any(inp["rti"] >= SUBQUERY_RTI for inp in plan["inputs"]))
            for rti, table in tables.items():
                cursor.register(f"orochi_in_{rti}", table)
            del tables
            t0 = clock()
            read0 = counters["read"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with _Watch(cursor, flag) as watch:
                    reader = cursor.sql(plan["sql"], params=params or None).to_arrow_reader(OUTPUT_BATCH_ROWS)
            # (the inputs are read while DuckDB runs: their time is not DuckDB's)
            counters["engine"] += clock() - t0 - (counters["read"] - read0)
            while True:
                t0 = clock()
                read0 = counters["read"]
                with _Watch(cursor, flag) as watch:
                    try:
                        rb = reader.read_next_batch()
                    except StopIteration:
                        break
                    finally:
                        counters["engine"] += clock() - t0 - (counters["read"] - read0)
                if rb.num_rows == 0:
                    continue
                counters["rows_out"] += rb.num_rows
                t0 = clock()
                if not names:
                    batch = Batch(rb.num_rows, {})
                else:
                    batch = Batch(rb.num_rows, {out["name"]: _output(rb, out) for out in plan["outputs"]})
                counters["output"] += clock() - t0
                yield batch
        except _duckdb().Error as exc:
            raise _engine_error(exc, limit, watch) from None
        except RuntimeError as exc:
            # a cancel that reached Python while DuckDB pulled from an input
            if (watch is not None and watch.fired) or (flag is not None and flag.value):
                raise KeyboardInterrupt() from None
            raise EngineError(f"the join engine failed: {exc}", "XX000") from None
    finally:
        cursor.close()


def explain(plan: dict, verbose: bool) -> list[str]:
    subqueries = [inp["relname"] for inp in plan["inputs"] if "relid" in inp]
    lines = [f"Orochi Join (DuckDB): {plan['description']}"
             + (f" with a subquery over {', '.join(subqueries)}" if subqueries else "")]
    if verbose:
        lines.append("DuckDB SQL: " + plan["sql"])
        for inp in plan["inputs"]:
            filtered = sum(1 for q in inp["quals"] if len(q) > 4 and q[4])
            lines.append(f"Input t{inp['rti']}: {inp['relname']} ({', '.join(inp['columns']) or 'no columns'})"
                         + (f", {filtered} condition{'s' if filtered > 1 else ''} applied by its scan"
                            if filtered else ""))
    return lines

