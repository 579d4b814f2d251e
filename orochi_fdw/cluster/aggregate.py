"""Aggregates over a distributed table: pushed to the shards, merged on
the coordinator.

A request (docs/aggregate-pushdown.md) runs in one of two ways:

- **whole**: every group lies in one shard (the grouping contains the
  distribution column, or the quals leave one shard, or the table is a
  reference table): each shard computes the request itself and the
  coordinator only concatenates the rows.
- **partial**: each shard groups by the same keys and computes partial
  states (``count``, ``sum``, ``sum`` and ``count`` for ``avg``, ``min``,
  ``max``, ``bool_and``/``bool_or``, a HyperLogLog or t-digest sketch); a
  ``count(DISTINCT x)`` adds x to the shards' grouping, so each shard sends
  its distinct values once.  The coordinator runs the final aggregation in
  SQL (SPI) over the partial rows: ``sum`` of counts, ``sum`` of sums, the
  numeric division ``avg`` does, ``min`` of minimums under the aggregate's
  collation, ``orochi.hll_union_agg`` / ``orochi.tdigest_union_agg`` of the
  sketches (the very union a single node uses), so every result has the
  type, NULL behaviour and overflow error Postgres gives.

Both shapes are sent as one statement per node (the node's shards joined by
UNION ALL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.batch import WireKind
from orochi_fdw.cluster import values as V

_INTS = ("smallint", "integer", "bigint")
_SUM_TYPES = {"smallint": "bigint", "integer": "bigint", "bigint": "numeric", "real": "real",
              "double precision": "double precision", "numeric": "numeric", "interval": "interval",
              "money": "money"}
_AVG_TYPES = ("smallint", "integer", "bigint", "real", "double precision", "numeric")
_SKETCHES = ("approx_count_distinct", "hll_agg", "approx_percentile", "tdigest_agg")

TEXT_OIDS = (25, 1043)


def output_kind(type_oid: int) -> WireKind:
    return WireKind.TEXT if type_oid in TEXT_OIDS else WireKind.CSTRING


@dataclass
class Partial:
    """One partial column a shard sends: its SQL over the shard, the type to
    read it back as on the coordinator, and how partials of it combine into
    one (``{}`` the column), which a node does over its own shards."""

    expr: sql.Composable
    type: str
    combine: str = "min({})"


@dataclass
class AggregateShape:
    """How one request is computed (see the module docstring)."""

    request: dict
    group_exprs: list[sql.Composable]
    group_types: list[str]
    #: per aggregate: its whole-mode SQL (None if not computable whole)
    whole: list[sql.Composable | None]
    #: per aggregate: partial columns and the final SQL template over them
    partials: list[list[Partial] | None]
    finals: list[Any] = field(default_factory=list)
    distinct_columns: list[str] = field(default_factory=list)
    params: list[str | None] = field(default_factory=list)

    def whole_ok(self) -> bool:
        return all(w is not None for w in self.whole)

    def partial_ok(self) -> bool:
        return all(p is not None for p in self.partials)


def _param(shape_params: list, text: str | None) -> sql.Composable:
    shape_params.append(text)
    return sql.SQL("${}").format(sql.SQL(str(len(shape_params))))


def build(request: dict, column_names: dict[str, str], dist_column: str | None) -> AggregateShape | str:
    """The shape of a request, or why it cannot be pushed (a string).

    ``column_names`` maps the request's column names to the shard's (the
    same names); the group keys' and aggregates' SQL refer to them quoted.
    """
    params: list[str | None] = []
    group_exprs = []
    group_types = []
    for g in request["group_by"]:
        col = g.get("column")
        if col not in column_names:
            return f"group key over an unknown column {col!r}"
        ident = sql.Identifier(col)
        kind = g["kind"]
        if kind == "column":
            expr = ident
        elif kind == "date_trunc":
            tz_sensitive = g.get("type") == "timestamp with time zone"
            expr = sql.SQL("pg_catalog.date_trunc({}::text, {})").format(_param(params, str(g["unit"])), ident)
            if tz_sensitive and not g.get("time_zone"):
                return "date_trunc of timestamptz with no time zone"
        elif kind == "date_bin":
            ttype = g.get("type")
            if ttype not in ("timestamp with time zone", "timestamp without time zone"):
                return f"date_bin over {ttype}"
            from orochi_fdw.cluster.copyformat import _timestamp_text

            origin = _timestamp_text(int(g["origin_us"]))
            if ttype == "timestamp without time zone":
                origin = origin.replace("+00", "")
            expr = sql.SQL("pg_catalog.date_bin({}::interval, {}, {}::{})").format(
                _param(params, f"{int(g['width_us'])} microseconds"), ident, _param(params, origin),
                sql.SQL(ttype))
        else:
            return f"group key of kind {kind}"
        group_exprs.append(expr)
        group_types.append(str(g["type"]))
    whole = []
    partials = []
    distinct_columns: list[str] = []
    for a in request["aggregates"]:
        w, p, reason = _aggregate(a, column_names, params, distinct_columns)
        if reason is not None:
            return reason
        whole.append(w)
        partials.append(p)
    return AggregateShape(request, group_exprs, group_types, whole, partials,
                          distinct_columns=distinct_columns, params=params)


def _aggregate(a: dict, column_names: dict[str, str], params: list,
               distinct_columns: list[str]) -> tuple[Any, Any, str | None]:
    """(whole SQL, partial columns, reason): whole / partial None when that
    way is not possible; reason set when neither is."""
    func = a["func"]
    schema = a.get("schema")
    star = bool(a.get("star"))
    distinct = bool(a.get("distinct"))
    col = a.get("column") or None
    if not star and col not in column_names:
        return None, None, f"{func} of an unknown column"
    ident = sql.Identifier(col) if col else None
    arg = V_base(a.get("arg_type") or "")
    args = list(a.get("args") or [])
    if schema == "orochi" and func in _SKETCHES:
        return _sketch(a, ident, params)
    if schema != "pg_catalog":
        return None, None, f"{schema}.{func} is not pushed to shards"
    if args:
        return None, None, f"{func} with constant arguments"
    dist_sql = sql.SQL("DISTINCT ") if distinct else sql.SQL("")
    if func == "count":
        if star:
            whole = sql.SQL("count(*)")
            return whole, [Partial(whole, "bigint", "sum({})::bigint")], None
        whole = sql.SQL("count({}{})").format(dist_sql, ident)
        if distinct:
            if a.get("collation_deterministic") is False:
                return whole, None, None
            if col not in distinct_columns:
                distinct_columns.append(col)
            return whole, [], None
        return whole, [Partial(whole, "bigint", "sum({})::bigint")], None
    if func == "sum":
        if arg not in _SUM_TYPES:
            return None, None, f"sum of {arg}"
        whole = sql.SQL("sum({}{})").format(dist_sql, ident)
        combine = "sum({})::bigint" if _SUM_TYPES[arg] == "bigint" else "sum({})"
        return whole, (None if distinct else [Partial(sql.SQL("sum({})").format(ident), _SUM_TYPES[arg],
                                                      combine)]), None
    if func == "avg":
        if arg not in _AVG_TYPES:
            return None, None, f"avg of {arg}"
        whole = sql.SQL("avg({}{})").format(dist_sql, ident)
        if distinct:
            return whole, None, None
        if arg in ("real", "double precision"):
            s = Partial(sql.SQL("sum({}::double precision)").format(ident), "double precision", "sum({})")
        else:
            s = Partial(sql.SQL("sum({}::numeric)").format(ident), "numeric", "sum({})")
        return whole, [s, Partial(sql.SQL("count({})").format(ident), "bigint", "sum({})::bigint")], None
    if func in ("min", "max"):
        whole = sql.SQL("{}({})").format(sql.SQL(func), ident)
        return whole, [Partial(whole, a.get("arg_type") or arg, func + "({})")], None
    if func in ("bool_and", "bool_or", "every"):
        name = "bool_and" if func in ("bool_and", "every") else "bool_or"
        whole = sql.SQL("{}({})").format(sql.SQL(name), ident)
        return whole, [Partial(whole, "boolean", name + "({})")], None
    return None, None, f"aggregate {func} is not pushed to shards"


def V_base(type_name: str) -> str:
    if "(" in type_name:
        head, _, tail = type_name.partition("(")
        type_name = head + tail.partition(")")[2]
    return type_name.strip()


def _sketch(a: dict, ident, params: list) -> tuple[Any, Any, str | None]:
    func = a["func"]
    args = list(a.get("args") or [])
    if a.get("distinct") or ident is None:
        return None, None, f"orochi.{func} without a plain column"
    if func in ("approx_count_distinct", "hll_agg"):
        if len(args) > 1 or (args and not isinstance(args[0], int)):
            return None, None, f"orochi.{func} with unexpected arguments"
        extra = [sql.SQL(", {}::integer").format(_param(params, str(args[0])))] if args else []
        whole = sql.SQL("orochi.{}({}{})").format(sql.SQL(func), ident, sql.Composed(extra))
        part = Partial(sql.SQL("orochi.hll_agg({}{})").format(ident, sql.Composed(extra)), "orochi.hll",
                       "orochi.hll_union_agg({})")
        return whole, [part], None
    if func in ("approx_percentile", "tdigest_agg"):
        extra = []
        quantile = None
        if func == "approx_percentile":
            if not args or not isinstance(args[0], float):
                return None, None, "approx_percentile of an array of quantiles"
            quantile = _param(params, V.to_text(args.pop(0)))
            extra.append(sql.SQL(", {}::double precision").format(quantile))
        if len(args) > 1 or (args and not isinstance(args[0], int)):
            return None, None, f"orochi.{func} with unexpected arguments"
        comp = [sql.SQL(", {}::integer").format(_param(params, str(args[0])))] if args else []
        whole = sql.SQL("orochi.{}({}{}{})").format(sql.SQL(func), ident, sql.Composed(extra), sql.Composed(comp))
        parts = [Partial(sql.SQL("orochi.tdigest_agg({}{})").format(ident, sql.Composed(comp)), "orochi.tdigest",
                         "orochi.tdigest_union_agg({})")]
        if quantile is not None:
            # every parameter of a statement must be used: the partial rows
            # carry the quantile too (the final query takes it from the request)
            parts.append(Partial(sql.SQL("{}::double precision").format(quantile), "double precision"))
        return whole, parts, None
    return None, None, f"orochi.{func}"


# ------------------------------------------------------------------ remote SQL


def shard_select(shape: AggregateShape, shard: sql.Composable, where: sql.Composable, whole: bool
                 ) -> sql.Composable:
    """The SELECT one shard runs: the request itself (whole) or its
    partial columns (group keys, distinct columns, partial states)."""
    request = shape.request
    ngroups = len(shape.group_exprs)
    if whole:
        items = []
        for out in request["outputs"]:
            if out["kind"] == "group":
                items.append(shape.group_exprs[out["index"]])
            else:
                items.append(shape.whole[out["index"]])
        groups = list(range(1, ngroups + 1))
        # outputs are in request order: group keys sit where the request puts them
        positions = [i + 1 for i, out in enumerate(request["outputs"]) if out["kind"] == "group"]
        groups = positions
    else:
        items = list(shape.group_exprs)
        items += [sql.Identifier(c) for c in shape.distinct_columns]
        for parts in shape.partials:
            items += [p.expr for p in parts]
        groups = list(range(1, ngroups + len(shape.distinct_columns) + 1))
    if not items:
        items = [sql.SQL("NULL")]
    query = sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(items), shard, where)
    if groups:
        query += sql.SQL(" GROUP BY ") + sql.SQL(", ").join(sql.SQL(str(g)) for g in groups)
    return query


def combine_node(shape: AggregateShape, branches: list[sql.Composable]) -> sql.Composable:
    """One node's shards' partial rows combined into one partial row per
    group on the node itself (each shard still aggregates on its own, where
    the columnar engine computes it): fewer rows for the coordinator to
    merge."""
    from orochi_fdw.cluster.planner import union_all

    ncols = len(partial_types(shape))
    nkeys = len(shape.group_exprs) + len(shape.distinct_columns)
    names = [sql.Identifier(f"c{i}") for i in range(ncols)]
    items = list(names[:nkeys])
    i = nkeys
    for parts in shape.partials:
        for p in parts:
            items.append(sql.SQL(p.combine.replace("{}", "p.c" + str(i))))
            i += 1
    query = sql.SQL("SELECT {} FROM ({}) AS p({})").format(
        sql.SQL(", ").join(items), union_all(branches), sql.SQL(", ").join(names))
    if nkeys:
        query += sql.SQL(" GROUP BY ") + sql.SQL(", ").join(sql.SQL(str(k + 1)) for k in range(nkeys))
    return query


def partial_types(shape: AggregateShape) -> list[str]:
    types = list(shape.group_types)
    agg_by_col = {a.get("column"): a for a in shape.request["aggregates"] if a.get("distinct")}
    for c in shape.distinct_columns:
        types.append(agg_by_col[c].get("arg_type") or "text")
    for parts in shape.partials:
        types += [p.type for p in parts]
    return types


def final_query(shape: AggregateShape) -> tuple[str, list[str], list[Any]]:
    """The coordinator's final aggregation over the partial rows, given as
    one text[] parameter per partial column: the query, the types of all
    its parameters, and the constant parameters that follow the columns."""
    types = partial_types(shape)
    n = len(types)
    cols = [f"p.c{i}" for i in range(n)]

    def col(i: int) -> str:
        return f"{cols[i]}::{types[i]}"

    extra: list[Any] = []
    extra_types: list[str] = []

    def const(value: Any, type_name: str) -> str:
        extra.append(value)
        extra_types.append(type_name)
        return f"${n + len(extra)}::{type_name}"

    ngroups = len(shape.group_exprs)
    pos = ngroups + len(shape.distinct_columns)
    finals = []
    for a, parts in zip(shape.request["aggregates"], shape.partials):
        func = a["func"]
        coll = _collate(a)
        if func == "count" and a.get("distinct"):
            i = ngroups + shape.distinct_columns.index(a["column"])
            finals.append(f"count(DISTINCT {col(i)}{coll})")
            continue
        if func == "count":
            finals.append(f"coalesce(sum({col(pos)}), 0)::bigint")
        elif func == "sum":
            result = a.get("result_type") or types[pos]
            finals.append(f"sum({col(pos)})::{result}")
        elif func == "avg":
            if types[pos] == "double precision":
                finals.append(f"(sum({col(pos)}) / nullif(sum({col(pos + 1)}), 0)::double precision)")
            else:
                finals.append(f"(CASE WHEN coalesce(sum({col(pos + 1)}), 0) = 0 THEN NULL"
                              f" ELSE sum({col(pos)}) / sum({col(pos + 1)})::numeric END)")
        elif func in ("min", "max"):
            finals.append(f"{func}({col(pos)}{coll})")
        elif func in ("bool_and", "every"):
            finals.append(f"bool_and({col(pos)})")
        elif func == "bool_or":
            finals.append(f"bool_or({col(pos)})")
        elif func == "approx_count_distinct":
            finals.append(f"coalesce(orochi.hll_cardinality(orochi.hll_union_agg({col(pos)})), 0)")
        elif func == "hll_agg":
            finals.append(f"orochi.hll_union_agg({col(pos)})")
        elif func == "approx_percentile":
            q = a["args"][0]
            finals.append(f"orochi.tdigest_percentile(orochi.tdigest_union_agg({col(pos)}), "
                          f"{const(float(q), 'double precision')})")
        elif func == "tdigest_agg":
            finals.append(f"orochi.tdigest_union_agg({col(pos)})")
        else:  # pragma: no cover - build() refused it
            raise AssertionError(func)
        pos += len(parts)
    items = []
    for out in shape.request["outputs"]:
        if out["kind"] == "group":
            items.append(col(out["index"]))
        else:
            items.append(finals[out["index"]])
    unnest = ", ".join(f"${i + 1}::text[]" for i in range(n))
    query = f"SELECT {', '.join(items) or 'NULL'} FROM unnest({unnest}) AS p({', '.join(f'c{i}' for i in range(n))})"
    if n == 0:
        query = f"SELECT {', '.join(items)}"
    if ngroups:
        query += " GROUP BY " + ", ".join(col(i) for i in range(ngroups))
    return query, ["text[]"] * n + extra_types, extra


def _collate(a: dict) -> str:
    coll = a.get("collation")
    if coll in (None, "", "default"):
        return ""
    return f" COLLATE {spi.quote_ident(coll) if coll not in ('C', 'POSIX') else chr(34) + coll + chr(34)}"
