"""Joins run on the workers (the bridge's join pushdown,
``can_join`` / ``execute_join``).

A join of two distributed tables is computed shard by shard when each
shard of one can only meet the same shard of the other:

- two hash-distributed tables of one co-location group, joined (among
  other equalities) on their distribution columns: shard i with shard i,
  on the node that holds both; any join type;
- a hash-distributed table and a reference table: each shard with the
  node's copy of the reference table, unless the reference table is the
  side an outer join preserves (its unmatched rows would come once per
  shard);
- two reference tables: on one node.

Every other join is left to the coordinator, which reads both tables (a
correct answer, not a fast one).  Each shard pair runs

    SELECT <outputs> FROM (SELECT ... FROM <outer shard> WHERE <its quals>) o
      <JOIN> (SELECT ... FROM <inner shard> WHERE <its quals>) i ON o.a = i.b ...

so that each table's own conditions filter it before the join, also under
outer joins; the shard pairs of one node go as one statement.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from orochi_fdw.bridge.api import Qual
from orochi_fdw.bridge.batch import Batch
from orochi_fdw.cluster import executor, metadata, planner
from orochi_fdw.cluster.aggregate import output_kind
from orochi_fdw.cluster.metadata import Shard
from orochi_fdw.cluster.transaction import current as txn

_JOIN_SQL = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN"}


class JoinPlan:
    """The tasks of a pushed-down join and what EXPLAIN says of it."""

    def __init__(self, tasks: list[planner.Task], request: dict, how: str, shards: int, total: int):
        self.tasks = tasks
        self.request = request
        self.how = how
        self.shards = shards
        self.total = total


def why_not(outer, inner, request: dict, outer_quals: list[Qual], inner_quals: list[Qual]) -> str | None:
    """Why the join cannot run on the workers, or None if it can."""
    ot, it = outer._table(), inner._table()
    jointype = request["jointype"]
    if jointype not in _JOIN_SQL:
        return f"{jointype} join"
    for wrapper, table, quals in ((outer, ot, outer_quals), (inner, it, inner_quals)):
        rq = wrapper._remote_quals(table)
        if not all(rq.shippable(q) for q in quals):
            return "a condition the workers cannot apply exactly"
    if ot.is_reference and it.is_reference:
        return None
    if not ot.is_reference and not it.is_reference:
        if ot.colocation_id != it.colocation_id:
            return "the tables are not co-located"
        od, idist = outer._dist_column(ot), inner._dist_column(it)
        for c in request["clauses"]:
            if c["outer"] == od and c["inner"] == idist:
                return None
        return "no equality of the distribution columns"
    # one hash-distributed table and a reference table
    preserved = {"inner": (), "left": ("outer",), "right": ("inner",), "full": ("outer", "inner")}[jointype]
    ref_side = "outer" if ot.is_reference else "inner"
    if ref_side in preserved:
        return "the reference table is the side the outer join preserves"
    return None


def plan(outer, inner, request: dict, outer_quals: list[Qual], inner_quals: list[Qual],
         explain: bool = False) -> JoinPlan:
    ot, it = outer._table(), inner._table()
    jointype = request["jointype"]
    # the sides whose conditions may prune shards: those the join does not null-extend
    prunable = {"inner": ("outer", "inner"), "left": ("outer",), "right": ("inner",), "full": ()}[jointype]
    hashed = [(side, w, t, q) for side, w, t, q in (("outer", outer, ot, outer_quals), ("inner", inner, it, inner_quals))
              if not t.is_reference]
    nodes = metadata.nodes()
    pairs: list[tuple[Any, Shard, Shard]] = []  # (node, outer shard, inner shard)
    total = 0
    if not hashed:
        node = planner.placement(ot, ot.shards[0], nodes, set(txn.sessions))
        pairs.append((node, ot.shards[0], it.shards[0]))
        total = 1
        how = "both reference tables, on one node"
    else:
        keep: set[int] | None = None
        base = hashed[0][2]
        total = base.shard_count
        for side, w, t, q in hashed:
            if side not in prunable:
                continue
            shards, pruned = planner.prune(t, q, w._dist_column(t))
            if pruned:
                idx = {s.shard_index for s in shards}
                keep = idx if keep is None else keep & idx
        for shard in base.shards:
            if keep is not None and shard.shard_index not in keep:
                continue
            node = nodes[shard.node_ids[0]]
            o = ot.shards[shard.shard_index] if not ot.is_reference else ot.shards[0]
            i = it.shards[shard.shard_index] if not it.is_reference else it.shards[0]
            pairs.append((node, o, i))
        how = ("co-located shards" if len(hashed) == 2 else "each shard with the node's reference table")
    by_node: dict[int, list] = {}
    for node, o, i in pairs:
        by_node.setdefault(node.node_id, []).append((node, o, i))
    tasks = []
    oq_r, iq_r = outer._remote_quals(ot), inner._remote_quals(it)
    outputs = request["outputs"]
    outer_cols = _side_columns(request, "outer")
    inner_cols = _side_columns(request, "inner")
    for items in by_node.values():
        params = planner.Params()
        if explain:
            from orochi_fdw.cluster.table import _explain_where

            ow, _ = _explain_where(oq_r, outer_quals, params)
            iw, _ = _explain_where(iq_r, inner_quals, params)
        else:
            ow, _ = oq_r.where(outer_quals, params)
            iw, _ = iq_r.where(inner_quals, params)
        branches = []
        for node, o, i in items:
            select = sql.SQL(", ").join(
                sql.SQL("{}.{}").format(sql.Identifier("o" if out["side"] == "outer" else "i"),
                                        sql.Identifier(out["column"])) for out in outputs)
            on = sql.SQL(" AND ").join(
                sql.SQL("o.{} = i.{}").format(sql.Identifier(c["outer"]), sql.Identifier(c["inner"]))
                for c in request["clauses"])
            q = sql.SQL("SELECT {} FROM (SELECT {} FROM {}{}) AS o {} (SELECT {} FROM {}{}) AS i ON {}").format(
                select, _cols(outer_cols), planner.shard_ident(ot, o), ow, sql.SQL(_JOIN_SQL[jointype]),
                _cols(inner_cols), planner.shard_ident(it, i), iw, on)
            branches.append(q)
        node = items[0][0]
        tasks.append(planner.Task(node, [o for _, o, _ in items], planner.union_all(branches).as_bytes(None),
                                  list(params.values)))
    return JoinPlan(tasks, request, f"{jointype} join of {how}", len(pairs), total)


def _side_columns(request: dict, side: str) -> list[str]:
    cols = []
    for out in request["outputs"]:
        if out["side"] == side and out["column"] not in cols:
            cols.append(out["column"])
    for c in request["clauses"]:
        if c[side] not in cols:
            cols.append(c[side])
    return cols


def _cols(names: list[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


class JoinScan:
    """The joined rows, with EXPLAIN ANALYZE's per-node figures."""

    def __init__(self, plan: JoinPlan):
        self.plan = plan
        self.runs: list[executor.TaskRun] = []
        self._iter = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._iter is None:
            self._iter = self._rows()
        return next(self._iter)

    def _rows(self):
        self.runs = executor.run(self.plan.tasks)
        outputs = self.plan.request["outputs"]
        kinds = [output_kind(o["type_oid"]) for o in outputs]
        for run in self.runs:
            for res in run.results:
                n = res.ntuples
                for start in range(0, n, 65_536):
                    end = min(n, start + 65_536)
                    cols = {}
                    for c, (o, kind) in enumerate(zip(outputs, kinds)):
                        cols[o["name"]] = executor.to_column([res.get_value(r, c) for r in range(start, end)], kind)
                    yield Batch(end - start, cols)

    def explain_analyze(self) -> list[str]:
        return [f"Node {r.task.node.name}: {len(r.task.shards)} shard pair(s), {r.rows} rows, "
                f"{r.seconds * 1000:.3f} ms" for r in self.runs]


def explain_lines(p: JoinPlan) -> list[str]:
    lines = [f"Distributed Join: {p.how}",
             f"Shard Pairs: {p.shards} of {p.total}" + (f" ({p.total - p.shards} pruned)" if p.shards < p.total else ""),
             f"Task Count: {len(p.tasks)}"]
    if p.tasks:
        lines.append(f"Task Node: {p.tasks[0].node.name}")
        lines.append(f"Remote SQL: {p.tasks[0].sql.decode('utf-8')}")
    return lines


def estimate(outer, inner) -> tuple[float, float, float]:
    """(rows, startup, total) of a pushed join: its rows cross the network
    once, where the coordinator's own join would read both tables."""
    rows = max(outer._row_estimate(), inner._row_estimate())
    return rows, 100.0, 100.0 + rows * 0.02
