"""``DistributedTable``: the coordinator side of a distributed or reference
table.

The table on the coordinator is an orochi foreign table whose wrapper is
this class; its rows are in the shards on the workers
(:mod:`orochi_fdw.cluster.metadata`).  Through the bridge:

- scans prune shards by the distribution column (one shard: the router
  path, one worker), ship the quals a worker applies exactly, and read every
  node at once (one statement per node over its shards);
- aggregations are pushed down (:mod:`orochi_fdw.cluster.aggregate`);
- INSERT, INSERT ... SELECT and COPY FROM arrive in batches, are routed by
  the distribution column's hash and sent as COPY to each shard (every
  placement of a reference table);
- UPDATE and DELETE work on rows a scan delivered with row ids: each row id
  names a (shard, remote ctid), and the changes go to the shards in batches;
  the distribution column may not change, nor be NULL;
- TRUNCATE truncates every shard;

all inside the distributed transaction (:mod:`orochi_fdw.cluster.transaction`).
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
from psycopg import sql

from orochi_fdw.bridge import runtime, spi
from orochi_fdw.bridge.api import ColumnDefinition, ForeignDataWrapper, Qual, SortKey
from orochi_fdw.bridge.batch import Batch, Column, WireKind
from orochi_fdw.cluster import aggregate as A
from orochi_fdw.cluster import copyformat, executor, hashing, metadata, planner
from orochi_fdw.cluster import values as V
from orochi_fdw.cluster.errors import ClusterError, DistributionError, UnsupportedDistributedQuery
from orochi_fdw.cluster.metadata import ColumnInfo, DistTable, Shard
from orochi_fdw.cluster.transaction import current as txn

#: rows per batch handed to the bridge
_BATCH_ROWS = 65_536
#: pending UPDATE / DELETE rows per shard before they are sent
_MODIFY_FLUSH = 10_000
#: rows of COPY text gathered per shard before they are sent (a columnar
#: shard writes a statement of more than its delta_row_limit as stripes)
_COPY_FLUSH_ROWS = 100_000
#: COPY text gathered over all shards before the largest buffers are sent
_COPY_BUFFER_BYTES = 128 << 20
#: the hidden column of reference tables' shards that names a row on every placement
REFERENCE_ROWID = "orochi_rowid"


@dataclass
class ScanPlan:
    """What a scan (or an aggregation) sends where."""

    table: DistTable
    shards: list[Shard]
    pruned: bool
    tasks: list[planner.Task]
    columns: list[str] = field(default_factory=list)
    local_quals: list[Qual] = field(default_factory=list)
    merge: str = ""
    shape: Any = None
    whole: bool = True
    rowids: bool = False
    sortkeys: list = field(default_factory=list)


@dataclass
class _Pending:
    """UPDATE / DELETE rows waiting to be sent to one shard."""

    deletes: list[int] = field(default_factory=list)
    updates: list[tuple[int, dict]] = field(default_factory=list)
    old_dist: list[bytes | None] = field(default_factory=list)


class DistributedTable(ForeignDataWrapper):
    """A distributed or reference table, served from the workers.

    Args:
        options: ``table_oid`` and ``table_name`` (from the bridge).
        columns: the coordinator table's columns.
    """

    options_spec = {"server": {}, "table": {}}

    def __init__(self, options: Mapping[str, Any], columns: Mapping[str, ColumnDefinition]):
        super().__init__(options, columns)
        self.relid = int(options["table_oid"])
        self.relname = str(options.get("table_name", self.relid))
        self._modify: str | None = None
        self._rowmap: list[tuple[np.ndarray, np.ndarray, list | None]] = []
        self._pending: dict[int, _Pending] = {}
        self._copy: dict[tuple[int, bytes], list] = {}

    # ------------------------------------------------------------ metadata

    def _table(self) -> DistTable:
        t = metadata.table(self.relid)
        if t is None:
            raise DistributionError(
                f'table "{self.relname}" is not a distributed table', "42809",
                hint="Its metadata is gone: drop the foreign table, or make it again with "
                     "orochi.create_distributed_table.")
        return t

    def _dist_column(self, t: DistTable) -> str | None:
        if t.dist_attnum is None:
            return None
        for name, col in self.columns.items():
            if col.attnum == t.dist_attnum:
                return name
        return None

    def _column_infos(self, t: DistTable) -> dict[str, ColumnInfo]:
        by_attnum = {c.attnum: c for c in t.columns}
        out = {}
        for name, col in self.columns.items():
            known = by_attnum.get(col.attnum)
            out[name] = ColumnInfo(col.attnum, name, col.type_name, known.collation if known else None,
                                   col.not_null)
        return out

    def _remote_quals(self, t: DistTable) -> planner.RemoteQuals:
        return planner.RemoteQuals(t, self._column_infos(t))

    # ------------------------------------------------------------ planning

    def get_rel_size(self, quals: list[Qual], columns: list[str]) -> tuple[float, int]:
        t = self._table()
        rows = self._row_estimate()
        shards, pruned = planner.prune(t, [q for q in quals if q.value is not runtime.UNKNOWN],
                                       self._dist_column(t))
        if pruned:
            rows = rows * len(shards) / max(t.shard_count, 1)
        elif any(q.field_name == self._dist_column(t) and q.operator_name == "=" for q in quals):
            rows = rows / max(t.shard_count, 1)  # a parameter: one shard at execution
        width = sum(8 if c not in ("text", "bytea") else 32 for c in (self._type(n) for n in columns)) or 8
        return (max(rows, 1.0), width)

    def _row_estimate(self) -> float:
        """The table's rows as ANALYZE last counted them, else a guess."""
        total = spi.execute("SELECT reltuples FROM pg_catalog.pg_class WHERE oid = $1", [self.relid],
                            types=["oid"]).scalar()
        return float(total) if total is not None and total >= 0 else 1000.0 * max(self._table().shard_count, 1)

    def _type(self, name: str) -> str:
        col = self.columns.get(name)
        return col.base_type_name if col is not None else ""

    def get_costs(self, quals: list[Qual], columns: list[str], rows: float, width: int) -> tuple[float, float]:
        # a round trip to the workers, then the rows over the network
        return (100.0, 100.0 + rows * (0.02 + width / 8192.0))

    def exact_quals(self, quals: list[Qual]) -> list[bool]:
        rq = self._remote_quals(self._table())
        return [rq.shippable(q) for q in quals]

    # ------------------------------------------------------------ reading

    def _plan_scan(self, quals: list[Qual], columns: list[str], limit: int | None,
                   rowids: bool, explain: bool = False, sortkeys: list[SortKey] | None = None) -> ScanPlan:
        """The tasks of a scan.  With ``rowids`` (UPDATE / DELETE) each row
        also brings what identifies it: the shard's index and the row's
        ctid (a reference table: its orochi_rowid, the same on every
        placement), and the distribution value (to check it does not
        change)."""
        t = self._table()
        dist = self._dist_column(t)
        shards, pruned = planner.prune(t, quals, dist)
        rq = self._remote_quals(t)
        fetch = [c for c in columns if c in self.columns]
        if rowids and dist is not None and dist not in fetch:
            fetch.append(dist)
        tasks = []
        rest: list[Qual] = []
        preferred = set(txn.sessions)
        order = _order_by(sortkeys, self.columns) if sortkeys else None
        for node, node_shards in planner.by_node(t, shards, preferred).values():
            params = planner.Params()
            where, rest = rq.where(quals, params) if not explain else _explain_where(rq, quals, params)
            limit_ph = params.add(str(int(limit))) if limit is not None else None
            branches = []
            for shard in node_shards:
                items = [sql.Identifier(c) for c in fetch]
                if rowids:
                    ident = sql.Identifier(REFERENCE_ROWID) if t.is_reference else sql.SQL("ctid")
                    items = [ident, sql.SQL("{}::integer").format(params.add(str(shard.shard_index)))] + items
                if order is not None:
                    items = items + order[0]
                q = sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(items), planner.shard_ident(t, shard),
                                                          where)
                if order is not None:
                    q += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(order[1])
                if limit_ph is not None:
                    q += sql.SQL(" LIMIT {}::bigint").format(limit_ph)
                branches.append(q)
            tasks.append(planner.Task(node, node_shards, planner.union_all(branches).as_bytes(None),
                                      list(params.values)))
        if not tasks:
            rest = [q for q in quals if rq.render(q, planner.Params()) is None]
        if not explain:
            _check_exact_sent(rest)
        plan = ScanPlan(t, shards, pruned, tasks, fetch, rest, rowids=rowids)
        plan.sortkeys = list(sortkeys or [])
        if plan.sortkeys:
            plan.merge = (f"sort of the shards' sorted rows (top {limit} of each)" if limit is not None
                          else "sort of the shards' sorted rows")
        return plan

    def can_sort(self, sortkeys: list[SortKey]) -> list[SortKey]:
        """The leading keys whose values the coordinator orders exactly as
        Postgres does: numbers, booleans, times (by their epoch) and text
        under a byte-order collation.  Each shard sorts (and with a LIMIT
        keeps its top rows); the coordinator sorts what they send."""
        out = []
        for key in sortkeys:
            col = self.columns.get(key.attname)
            if col is None or _sort_kind(col.base_type_name, key.collate) is None:
                break
            out.append(key)
        return out

    def execute(self, quals: list[Qual], columns: list[str], sortkeys: list[SortKey] | None = None,
                limit: int | None = None):
        rowids = self._modify in ("update", "delete")
        if sortkeys:
            sortkeys = self.can_sort(sortkeys)
        return _Scan(self, self._plan_scan(quals, columns, limit, rowids, sortkeys=sortkeys), limit)

    def explain(self, quals: list[Qual], columns: list[str], sortkeys: list[SortKey] | None = None,
                verbose: bool = False) -> list[str]:
        plan = self._plan_scan(quals, columns, None, False, explain=True,
                               sortkeys=self.can_sort(sortkeys) if sortkeys else None)
        return _explain_lines(plan, verbose)

    # ------------------------------------------------------------ aggregates

    def can_aggregate(self, request: dict, quals: list[Qual]) -> dict | None:
        t = self._table()
        rq = self._remote_quals(t)
        if not all(rq.shippable(q) for q in quals):
            return None
        shape = A.build(request, {n: n for n in self.columns}, self._dist_column(t))
        if isinstance(shape, str):
            return None
        if not shape.partial_ok() and not self._whole_guaranteed(t, shape, quals):
            return None
        rows = 1.0 if not request["group_by"] else 100.0
        return {"rows": rows, "startup_cost": 100.0, "total_cost": 100.0 + rows * 0.01, "exact": True}

    def _whole_guaranteed(self, t: DistTable, shape: A.AggregateShape, quals: list[Qual]) -> bool:
        """Whether each group surely lies in one shard (so a shard's own
        aggregate is final)."""
        if t.is_reference or t.shard_count <= 1:
            return True
        dist = self._dist_column(t)
        if any(g["kind"] == "column" and g["column"] == dist for g in shape.request["group_by"]):
            return True
        shards, pruned = planner.prune(t, [q for q in quals if q.value is not runtime.UNKNOWN], dist)
        return pruned and len(shards) <= 1

    def _plan_aggregate(self, request: dict, quals: list[Qual], explain: bool = False) -> ScanPlan:
        t = self._table()
        dist = self._dist_column(t)
        shape = A.build(request, {n: n for n in self.columns}, dist)
        if isinstance(shape, str):  # pragma: no cover - can_aggregate said yes
            raise UnsupportedDistributedQuery(f"cannot push this aggregation to the shards: {shape}")
        if quals is None:
            # the bridge's "no row can pass" (a strict qual got NULL at execution)
            shards, pruned, quals = [], True, []
        else:
            shards, pruned = planner.prune(t, quals, dist)
        rq = self._remote_quals(t)
        nothing = False
        if not shards and not request["group_by"]:
            # no shard can hold a row, but an aggregate without GROUP BY still
            # makes one row: one shard computes it over nothing
            shards = list(t.shards[:1])
            nothing = True
        whole = shape.whole_ok() and (
            t.is_reference or len(shards) == 1
            or any(g["kind"] == "column" and g["column"] == dist for g in request["group_by"]))
        if not shape.partial_ok():
            whole = True
        tasks = []
        preferred = set(txn.sessions)
        for node, node_shards in planner.by_node(t, shards, preferred).values():
            params = planner.Params()
            for p in shape.params:
                params.add(p)
            if nothing:
                where = sql.SQL(" WHERE false")
            else:
                where, rest = rq.where(quals, params) if not explain else _explain_where(rq, quals, params)
                if rest and not explain:  # pragma: no cover - can_aggregate checked them
                    raise ClusterError("a qual of a pushed-down aggregation could not be shipped", "XX000")
            branches = [A.shard_select(shape, planner.shard_ident(t, s), where, whole) for s in node_shards]
            query = (A.combine_node(shape, branches) if not whole and len(branches) > 1
                     else planner.union_all(branches))
            tasks.append(planner.Task(node, node_shards, query.as_bytes(None), list(params.values)))
        merge = ("concatenation: each group is computed whole on one shard" if whole
                 else "final aggregation on the coordinator over the shards' partial aggregates")
        return ScanPlan(t, shards, pruned, tasks, merge=merge, shape=shape, whole=whole)

    def explain_aggregate(self, request: dict, quals: list[Qual], verbose: bool = False) -> list[str]:
        """EXPLAIN of a pushed-down aggregation (the bridge's hook for
        wrappers whose aggregate plan differs from their scan)."""
        return _explain_lines(self._plan_aggregate(request, quals, explain=True), verbose)

    def aggregate(self, request: dict, quals: list[Qual] | None):
        """The pushed-down aggregation; ``quals`` None: over no rows."""
        if quals is None and request["group_by"]:
            return iter(())
        plan = self._plan_aggregate(request, quals)
        return _AggregateScan(plan)

    # ------------------------------------------------------------ joins

    def can_join(self, inner: "DistributedTable", request: dict, outer_quals: list[Qual],
                 inner_quals: list[Qual]) -> dict | None:
        """Whether the workers can run this join (see
        :mod:`orochi_fdw.cluster.join`)."""
        from orochi_fdw.cluster import join

        if join.why_not(self, inner, request, outer_quals, inner_quals) is not None:
            return None
        rows, startup, total = join.estimate(self, inner)
        return {"rows": rows, "startup_cost": startup, "total_cost": total}

    def execute_join(self, inner: "DistributedTable", request: dict, outer_quals: list[Qual],
                     inner_quals: list[Qual]):
        from orochi_fdw.cluster import join

        return join.JoinScan(join.plan(self, inner, request, outer_quals, inner_quals))

    def explain_join(self, inner: "DistributedTable", request: dict, outer_quals: list[Qual],
                     inner_quals: list[Qual], verbose: bool = False) -> list[str]:
        from orochi_fdw.cluster import join

        return join.explain_lines(join.plan(self, inner, request, outer_quals, inner_quals, explain=True))

    # ------------------------------------------------------------ writing

    @property
    def rowid_column(self) -> str:  # type: ignore[override]
        return "ctid"

    @property
    def insert_batch_size(self) -> int:  # type: ignore[override]
        return 100_000

    def begin_modify(self, operation: str) -> None:
        """The bridge's notice that an INSERT, UPDATE or DELETE on this table
        starts: scans of this statement then deliver row ids."""
        self._modify = operation
        self._rowmap = []
        self._pending = {}
        self._copy = {}

    def insert_batch(self, batch: Batch) -> None:
        """Route a batch: each row to its shard's buffer of COPY text; a
        buffer goes to its shard's placements when it holds
        _COPY_FLUSH_ROWS rows, when all buffers together pass
        _COPY_BUFFER_BYTES, and at the end of the statement."""
        t = self._table()
        names = [n for n in self.columns if n in batch.columns]
        n = batch.nrows
        if n == 0:
            return
        dist = self._dist_column(t)
        if t.is_reference:
            groups = [(t.shards[0], None)]
        else:
            col = batch.columns.get(dist)
            if col is None or (col.validity is not None and not np.asarray(col.validity).all()):
                raise _null_dist(dist, self.relname)
            fn = hashing.hash_function(t.dist_type)
            index = metadata.shard_index_for_hash(fn.hash_column(col, n), t.shard_count)
            order = np.argsort(index, kind="stable")
            sorted_index = index[order]
            bounds = np.flatnonzero(np.diff(sorted_index)) + 1
            starts = np.concatenate(([0], bounds))
            ends = np.concatenate((bounds, [n]))
            groups = [(t.shards[int(sorted_index[s])], np.sort(order[s:e])) for s, e in zip(starts, ends)]
        fields = [copyformat.column_text_fields(batch.columns[c], n) for c in names]
        copy_names = list(names)
        if t.is_reference:
            # the values themselves: another session's nextval calls may
            # interleave with these, so they need not be consecutive
            ids = np.array(str(metadata.catalog_write(
                "SELECT pg_catalog.string_agg(pg_catalog.nextval('orochi.dist_reference_rowid_seq')::text, ' ')"
                " FROM pg_catalog.generate_series(1, $1)", [n], types=["integer"]).scalar()).split(),
                dtype=np.int64)
            fields.append(copyformat.column_text_fields(Column(WireKind.INT64, ids), n))
            copy_names.append(REFERENCE_ROWID)
        fields = copyformat.prepare(fields)
        collist = sql.SQL(", ").join(sql.Identifier(c) for c in copy_names)
        full = []
        for shard, rows in groups:
            data = copyformat.encode_prepared(fields, n, rows)
            stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(planner.shard_ident(t, shard), collist).as_bytes(None)
            buf = self._copy.setdefault((shard.shard_index, stmt), [shard, [], 0, 0])
            buf[1].append(data)
            buf[2] += n if rows is None else len(rows)
            buf[3] += len(data)
            if buf[2] >= _COPY_FLUSH_ROWS:
                full.append((shard.shard_index, stmt))
        total = sum(b[3] for b in self._copy.values())
        if total > _COPY_BUFFER_BYTES:
            for key, buf in sorted(self._copy.items(), key=lambda kv: -kv[1][3]):
                if key not in full:
                    full.append(key)
                total -= buf[3]
                if total <= _COPY_BUFFER_BYTES // 2:
                    break
        if full:
            self._flush_copy(full)

    def _flush_copy(self, keys: list | None = None) -> None:
        """Send the COPY buffers of ``keys`` (all when None), the nodes at once."""
        nodes = metadata.nodes()
        pieces = []
        for key in list(self._copy) if keys is None else keys:
            buf = self._copy.pop(key, None)
            if buf is None:
                continue
            shard, chunks = buf[0], buf[1]
            for node_id in shard.node_ids:
                pieces.append((nodes[node_id], key[1], chunks))
        executor.copy_into(pieces)

    def update(self, oldvalues: Any, newvalues: dict[str, Any]) -> dict[str, Any] | None:
        shard_index, tid, old = self._row(int(oldvalues))
        t = self._table()
        dist = self._dist_column(t)
        if dist is not None and newvalues.get(dist) is None:
            raise _null_dist(dist, self.relname)
        p = self._pending.setdefault(shard_index, _Pending())
        p.updates.append((tid, newvalues))
        p.old_dist.append(old)
        if len(p.updates) >= _MODIFY_FLUSH:
            self._flush(t, shard_index)
        return None

    def delete(self, oldvalues: Any) -> None:
        shard_index, tid, _ = self._row(int(oldvalues))
        p = self._pending.setdefault(shard_index, _Pending())
        p.deletes.append(tid)
        if len(p.deletes) >= _MODIFY_FLUSH:
            self._flush(self._table(), shard_index)

    def _row(self, rowid: int) -> tuple[int, int, bytes | None]:
        batch, i = divmod(rowid, _BATCH_ROWS)
        shard_idx, tids, dist = self._rowmap[batch]
        return int(shard_idx[i]), int(tids[i]), (dist[i] if dist is not None else None)

    def end_modify(self) -> None:
        try:
            if self._copy:
                self._flush_copy()
            if self._pending:
                t = self._table()
                for shard_index in list(self._pending):
                    self._flush(t, shard_index)
        finally:
            self._pending = {}
            self._copy = {}
            self._rowmap = []
            self._modify = None

    def _flush(self, t: DistTable, shard_index: int) -> None:
        p = self._pending.pop(shard_index, None)
        if p is None:
            return
        shard = t.shards[shard_index]
        ident = planner.shard_ident(t, shard)
        nodes = metadata.nodes()
        tasks = []
        if p.deletes:
            params = planner.Params()
            if t.is_reference:
                ph = params.add(V.array_literal([str(x) for x in p.deletes]))
                stmt = sql.SQL("DELETE FROM {} WHERE {} = ANY ({}::bigint[])").format(
                    ident, sql.Identifier(REFERENCE_ROWID), ph).as_bytes(None)
            else:
                ph = params.add(V.array_literal([_tid_text(x) for x in p.deletes]))
                stmt = sql.SQL("DELETE FROM {} WHERE ctid = ANY ({}::tid[])").format(ident, ph).as_bytes(None)
            tasks += [planner.Task(nodes[nid], [shard], stmt, list(params.values)) for nid in shard.node_ids]
        if p.updates:
            self._check_dist_unchanged(t, p)
            tasks += self._update_tasks(t, shard, ident, p, nodes)
        executor.run(tasks, write=True)

    def _check_dist_unchanged(self, t: DistTable, p: _Pending) -> None:
        dist = self._dist_column(t)
        if dist is None:
            return
        changed = []
        for (_, new), old in zip(p.updates, p.old_dist):
            text = V.to_text(new.get(dist))
            if old is None or text.encode("utf-8") != old:
                changed.append((old, text))
        if not changed:
            return
        fn = hashing.hash_function(t.dist_type)
        olds = fn.hash_texts([None if o is None else o.decode("utf-8") for o, _ in changed])
        news = fn.hash_texts([n for _, n in changed])
        if any(a != b for a, b in zip(olds, news)):
            raise UnsupportedDistributedQuery(
                f'modifying the distribution column "{dist}" of table "{self.relname}" is not supported',
                detail="A row's distribution value decides its shard.",
                hint="Delete the row and insert it with the new value.")

    def _update_tasks(self, t: DistTable, shard: Shard, ident, p: _Pending, nodes) -> list[planner.Task]:
        dist = self._dist_column(t)
        names = [n for n in self.columns if n != dist]
        if not names:
            return []
        params = planner.Params()
        if t.is_reference:
            tid_ph = params.add(V.array_literal([str(tid) for tid, _ in p.updates]))
            key, key_type = sql.Identifier(REFERENCE_ROWID), sql.SQL("bigint")
        else:
            tid_ph = params.add(V.array_literal([_tid_text(tid) for tid, _ in p.updates]))
            key, key_type = sql.SQL("ctid"), sql.SQL("tid")
        phs = []
        for n in names:
            phs.append(params.add(V.array_literal([_text_or_none(new.get(n)) for _, new in p.updates])))
        targets = sql.SQL(", ").join(
            sql.SQL("{} = v.{}::{}").format(sql.Identifier(n), sql.Identifier(n), sql.SQL(self.columns[n].type_name))
            for n in names)
        unnest = sql.SQL(", ").join([sql.SQL("{}::{}[]").format(tid_ph, key_type)]
                                    + [sql.SQL("{}::text[]").format(ph) for ph in phs])
        alias = sql.SQL(", ").join([sql.Identifier("orochi_key")] + [sql.Identifier(n) for n in names])
        stmt = sql.SQL("UPDATE {} AS t SET {} FROM unnest({}) AS v({}) WHERE t.{} = v.orochi_key").format(
            ident, targets, unnest, alias, key).as_bytes(None)
        return [planner.Task(nodes[nid], [shard], stmt, list(params.values)) for nid in shard.node_ids]

    def truncate(self, behavior: str, restart_seqs: bool) -> None:
        t = self._table()
        tasks = []
        for node, shards in planner.by_node_all(t).values():
            # CLOSE ALL: cursors of earlier scans in this transaction keep shards in use
            stmt = sql.SQL("CLOSE ALL; TRUNCATE {}").format(
                sql.SQL(", ").join(planner.shard_ident(t, s) for s in shards)).as_bytes(None)
            tasks.append(planner.Task(node, shards, stmt, None))
        executor.run(tasks, write=True)

    # ------------------------------------------------------------ transactions

    def begin(self, serializable: bool) -> None:
        self._modify = None
        self._rowmap = []
        self._pending = {}
        self._copy = {}

    def sub_rollback(self, level: int) -> None:
        # a statement that failed inside the savepoint leaves nothing to send
        self._modify = None
        self._rowmap = []
        self._pending = {}
        self._copy = {}

    def rollback(self) -> None:
        self.begin(False)

    def commit(self) -> None:
        self.begin(False)


# ------------------------------------------------------------------ sorting

_NUMERIC_SORT = {"smallint": "int", "integer": "int", "bigint": "int", "real": "float",
                 "double precision": "float", "numeric": "decimal", "boolean": "bool"}
_TIME_SORT = ("date", "timestamp without time zone", "timestamp with time zone")


def _sort_kind(type_name: str, collation: str | None) -> str | None:
    """How the coordinator orders a sort key's values, or None if it cannot
    match Postgres's order."""
    if type_name in _NUMERIC_SORT:
        return _NUMERIC_SORT[type_name]
    if type_name in _TIME_SORT:
        return "epoch"
    if type_name in ("text", "character varying") and (
            collation in ("C", "POSIX") or (collation in (None, "default") and _default_collation_is_c())):
        return "bytes"
    return None


_default_c: bool | None = None


def _default_collation_is_c() -> bool:
    global _default_c
    if _default_c is None:
        _default_c = bool(spi.execute(
            "SELECT datcollate IN ('C', 'POSIX') FROM pg_catalog.pg_database WHERE datname = current_database()"
        ).scalar())
    return _default_c


def _order_by(sortkeys: list[SortKey], columns: dict[str, ColumnDefinition]) -> tuple[list, list]:
    """(extra select items giving each key's orderable value, ORDER BY items)."""
    items, order = [], []
    for key in sortkeys:
        ident = sql.Identifier(key.attname)
        kind = _sort_kind(columns[key.attname].base_type_name, key.collate)
        items.append(sql.SQL("EXTRACT(epoch FROM {})").format(ident) if kind == "epoch" else ident)
        term = ident
        if kind == "bytes":
            term = sql.SQL("{} COLLATE \"C\"").format(ident)
        term += sql.SQL(" DESC" if key.is_reversed else " ASC")
        term += sql.SQL(" NULLS FIRST" if key.nulls_first else " NULLS LAST")
        order.append(term)
    return items, order


class _Rev:
    """A value ordered the other way round."""

    __slots__ = ("v",)

    def __init__(self, v: Any):
        self.v = v

    def __lt__(self, other: "_Rev") -> bool:
        return other.v < self.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.v == other.v


def _sort_value(raw: bytes | None, kind: str, key: SortKey) -> tuple:
    """A sort key component: (class, value): NULLs first or last, NaN above
    every number (Postgres's order), the value reversed for DESC."""
    if raw is None:
        return (0 if key.nulls_first else 4, 0)
    if kind == "int":
        v: Any = int(raw)
    elif kind == "float":
        v = float(raw)
        if v != v:
            return (1 if key.is_reversed else 3, 0)
    elif kind in ("decimal", "epoch"):
        v = decimal.Decimal(raw.decode())
        if v.is_nan():
            return (1 if key.is_reversed else 3, 0)
    elif kind == "bool":
        v = raw == b"t"
    else:
        v = raw
    return (2, _Rev(v) if key.is_reversed else v)


def _check_exact_sent(rest: list[Qual]) -> None:
    """A qual the plan counts on the workers to apply (it said so at plan
    time, so Postgres does not recheck it) must have been sent: rather an
    error than rows it should have filtered out."""
    for q in rest:
        if q.exact:
            raise ClusterError(f"a condition on column {q.field_name} could not be sent to the workers", "XX000",
                               detail=f"The condition is {q!r}; the plan relies on the workers applying it.")


def _text_or_none(v: Any) -> str | None:
    return V.to_text(v)


def _tid_text(tid: int) -> str:
    return f"({tid >> 16},{tid & 0xFFFF})"


def _parse_tid(raw: bytes) -> int:
    block, _, offset = raw.strip(b"()").partition(b",")
    return (int(block) << 16) | int(offset)


def _null_dist(dist: str | None, relname: str) -> ClusterError:
    return ClusterError(f'null value in column "{dist}" of relation "{relname}" violates not-null constraint',
                        "23502", detail="The distribution column of a distributed table cannot be NULL.")


def _explain_where(rq: planner.RemoteQuals, quals: list[Qual], params: planner.Params):
    """The WHERE clause EXPLAIN shows: values not known yet as $n."""
    parts = []
    rest = []
    for q in quals:
        if q.value is runtime.UNKNOWN and rq.shippable(q):
            col = rq.columns[q.field_name]
            ph = params.add(None)
            vt = (q.value_type or "unknown").replace("[]", "")
            if q.is_list_operator:
                frag = sql.SQL("{} {} {} ({}::{}[])").format(sql.Identifier(col.name), sql.SQL(q.operator_name),
                                                            sql.SQL("ANY" if q.list_any_or_all else "ALL"), ph,
                                                            sql.SQL(vt))
            else:
                frag = sql.SQL("{} {} {}::{}").format(sql.Identifier(col.name), sql.SQL(q.operator_name), ph,
                                                     sql.SQL(vt))
            parts.append(frag)
            continue
        frag = rq.render(q, params)
        if frag is None:
            rest.append(q)
        else:
            parts.append(frag)
    if not parts:
        return sql.SQL(""), rest
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), rest


# ------------------------------------------------------------------ scans


class _Scan:
    """The rows of a scan plan, one batch at a time, with what EXPLAIN
    ANALYZE shows."""

    def __init__(self, wrapper: DistributedTable, plan: ScanPlan, limit: int | None):
        self.wrapper = wrapper
        self.plan = plan
        self.limit = limit
        self.runs: list[executor.TaskRun] = []
        self._iter: Iterator | None = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter)

    def _results(self):
        """The scan's libpq results, as they come: through cursors when
        several shards are read (bounded memory), else in one go."""
        plan = self.plan
        if len(plan.shards) > 1:
            yield from (res for _, res in executor.fetch(plan.tasks, runs=self.runs))
            return
        self.runs = executor.run(plan.tasks)
        for run in self.runs:
            yield from run.results

    def _batches(self):
        plan = self.plan
        if plan.sortkeys:
            self.runs = executor.run(plan.tasks)
            yield from self._sorted_batches()
            return
        cols = plan.columns
        kinds = [A.output_kind(self.wrapper.columns[c].type_oid) for c in cols]
        offset = 2 if plan.rowids else 0
        returned = 0
        dist = self.wrapper._dist_column(plan.table) if plan.rowids else None
        for res in self._results():
            n = res.ntuples
            if n == 0:
                continue
            for start in range(0, n, _BATCH_ROWS):
                end = min(n, start + _BATCH_ROWS)
                if self.limit is not None and returned >= self.limit:
                    return
                columns = {}
                for i, (c, kind) in enumerate(zip(cols, kinds)):
                    values = [res.get_value(r, offset + i) for r in range(start, end)]
                    columns[c] = executor.to_column(values, kind)
                batch = Batch(end - start, columns)
                if plan.rowids:
                    if plan.table.is_reference:
                        keys = np.fromiter((int(res.get_value(r, 0)) for r in range(start, end)),
                                           dtype=np.int64, count=end - start)
                    else:
                        keys = np.fromiter((_parse_tid(res.get_value(r, 0)) for r in range(start, end)),
                                           dtype=np.int64, count=end - start)
                    shard_of_row = np.fromiter((int(res.get_value(r, 1)) for r in range(start, end)),
                                               dtype=np.int32, count=end - start)
                    dist_values = None
                    if dist is not None:
                        di = offset + cols.index(dist)
                        dist_values = [res.get_value(r, di) for r in range(start, end)]
                    number = len(self.wrapper._rowmap)
                    self.wrapper._rowmap.append((shard_of_row, keys, dist_values))
                    batch.rowids = np.arange(end - start, dtype=np.int64) + number * _BATCH_ROWS
                returned += batch.nrows
                yield batch

    def _sorted_batches(self):
        """The shards' sorted rows in one order (the sort keys' values come
        as extra columns after the fetched ones)."""
        plan = self.plan
        cols = plan.columns
        nkeys = len(plan.sortkeys)
        first_key = len(cols)
        kinds = [_sort_kind(self.wrapper.columns[k.attname].base_type_name, k.collate) for k in plan.sortkeys]
        entries = []
        for run in self.runs:
            for res in run.results:
                get = res.get_value
                for r in range(res.ntuples):
                    key = tuple(_sort_value(get(r, first_key + i), kinds[i], k)
                                for i, k in enumerate(plan.sortkeys))
                    entries.append((key, res, r))
        del nkeys
        entries.sort(key=lambda e: e[0])
        if self.limit is not None:
            entries = entries[:self.limit]
        out_kinds = [A.output_kind(self.wrapper.columns[c].type_oid) for c in cols]
        for start in range(0, len(entries), _BATCH_ROWS):
            part = entries[start:start + _BATCH_ROWS]
            columns = {}
            for i, (c, kind) in enumerate(zip(cols, out_kinds)):
                columns[c] = executor.to_column([res.get_value(r, i) for _, res, r in part], kind)
            yield Batch(len(part), columns)

    def explain_analyze(self) -> list[str]:
        lines = []
        for run in self.runs:
            lines.append(f"Node {run.task.node.name}: {len(run.task.shards)} shard(s), {run.rows} rows, "
                         f"{run.seconds * 1000:.3f} ms")
        return lines


class _AggregateScan:
    """The groups of a pushed-down aggregation."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan
        self.runs: list[executor.TaskRun] = []
        self.partial_rows = 0
        self._iter: Iterator | None = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._iter is None:
            self._iter = self._rows()
        return next(self._iter)

    def _rows(self):
        plan = self.plan
        request = plan.shape.request
        outputs = request["outputs"]
        self.runs = executor.run(plan.tasks)
        results = [res for run in self.runs for res in run.results]
        if plan.whole:
            kinds = [A.output_kind(o["type_oid"]) for o in outputs]
            n = sum(r.ntuples for r in results)
            cols = executor.text_columns(results, kinds)
            yield Batch(n, {o["name"]: c for o, c in zip(outputs, cols)})
            return
        ntypes = len(A.partial_types(plan.shape))
        arrays = []
        for i in range(ntypes):
            arrays.append([None if v is None else v.decode("utf-8") for v in executor.text_values(results, i)])
        self.partial_rows = len(arrays[0]) if arrays else 0
        query, types, extra = A.final_query(plan.shape)
        rows = spi.execute(query, arrays + extra, types=types, read_only=False).rows
        for row in rows:
            yield {o["name"]: v for o, v in zip(outputs, row)}

    def explain_analyze(self) -> list[str]:
        lines = []
        for run in self.runs:
            lines.append(f"Node {run.task.node.name}: {len(run.task.shards)} shard(s), {run.rows} rows, "
                         f"{run.seconds * 1000:.3f} ms")
        if not self.plan.whole:
            lines.append(f"Partial rows merged: {self.partial_rows}")
        return lines


def _explain_lines(plan: ScanPlan, verbose: bool) -> list[str]:
    t = plan.table
    lines = []
    kind = "reference table" if t.is_reference else f"hash distributed, {t.shard_count} shards"
    lines.append(f"Distributed Table: {kind}")
    pruned = t.shard_count - len(plan.shards)
    lines.append(f"Shards: {len(plan.shards)} of {t.shard_count}" + (f" ({pruned} pruned)" if pruned else ""))
    lines.append(f"Task Count: {len(plan.tasks)}" + (" (router)" if len(plan.tasks) == 1 and not t.is_reference
                                                       and len(plan.shards) == 1 else ""))
    if plan.merge:
        lines.append(f"Merge: {plan.merge}")
    if plan.tasks:
        task = plan.tasks[0]
        lines.append(f"Task Node: {task.node.name}")
        lines.append(f"Remote SQL: {task.sql.decode('utf-8')}")
    if plan.local_quals and verbose:
        lines.append("Rechecked on the coordinator: " + ", ".join(repr(q) for q in plan.local_quals))
    return lines
