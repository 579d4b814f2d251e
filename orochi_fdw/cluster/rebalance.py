"""The rebalancer's SQL functions (sql/72_rebalance.sql): check, plan and
queue shard moves.  The moves themselves run in orochi-sidecar's
``rebalance`` duty (:mod:`orochi_fdw.cluster.mover`), outside the caller's
session.

A move concerns a **shard group**: the shards of one shard index in a
co-location group, which must stay on one node together (joins on the
distribution column run shard by shard).  Plans are computed over shard
groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.cluster import metadata
from orochi_fdw.cluster.errors import DistributionError

STRATEGIES = ("by_shard_count", "by_disk_size")

#: advisory lock keys (pg_advisory_lock(int, int)): a move's runner holds
#: (MOVE_LOCK, move_id) for the move's life; the switch holds
#: (GROUP_LOCK, colocation_id) exclusively, every transaction that reads a
#: hash table's placements holds it shared (orochi_fdw.cluster.metadata)
MOVE_LOCK = 1869575729
GROUP_LOCK = 1869575730


def _require_superuser(function: str) -> None:
    privileges.require_superuser(f"call orochi.{function}",
                                 hint="Only a superuser may move shards between the cluster's nodes.")


@dataclass
class Unit:
    """A shard group: what moves together."""

    colocation_id: int
    shard_index: int
    node_id: int
    shard_ids: list[int]
    relids: list[int]
    size: int = 0


def _units(colocation_id: int | None = None) -> list[Unit]:
    """The shard groups of hash tables (of one co-location group), each with
    its node."""
    rows = metadata.catalog(
        "SELECT t.colocation_id, s.shard_index, p.node_id, s.shard_id, t.relid"
        "  FROM orochi.dist_table t JOIN orochi.dist_shard s USING (relid)"
        "  JOIN orochi.dist_placement p USING (shard_id)"
        " WHERE t.method = 'h' AND ($1::integer IS NULL OR t.colocation_id = $1)"
        " ORDER BY t.colocation_id, s.shard_index, t.relid", [colocation_id], types=["integer"]).rows
    units: dict[tuple[int, int], Unit] = {}
    for coloc, index, node_id, shard_id, relid in rows:
        key = (int(coloc), int(index))
        u = units.get(key)
        if u is None:
            u = units[key] = Unit(int(coloc), int(index), int(node_id), [], [])
        u.shard_ids.append(int(shard_id))
        u.relids.append(int(relid))
    return list(units.values())


def _sizes(units: list[Unit]) -> None:
    """Each unit's size on its worker (the shards' storage size)."""
    from orochi_fdw.cluster import sqlapi

    size_of: dict[int, int] = {}
    for relid in sorted({r for u in units for r in u.relids}):
        for row in sqlapi._status_rows(relid):
            shard_id, size, status = row[0], row[9], row[10]
            if status != "ok":
                raise DistributionError(f"the size of shard {shard_id} cannot be read: {status}", "08006")
            size_of[int(shard_id)] = int(size or 0)
    for u in units:
        u.size = sum(size_of.get(s, 0) for s in u.shard_ids)


def _open_moves() -> dict[tuple[int, int], int]:
    """(colocation id, shard index) → job id of the moves queued or running."""
    rows = metadata.catalog(
        "SELECT DISTINCT m.job_id, m.colocation_id, s.shard_index FROM orochi.dist_move m"
        "  JOIN orochi.dist_shard s ON s.shard_id = ANY (m.shard_ids)"
        " WHERE m.phase NOT IN ('done', 'failed', 'stopped')").rows
    return {(int(coloc), int(index)): int(job_id) for job_id, coloc, index in rows}


def _active_node_ids() -> list[int]:
    return [n.node_id for n in metadata.active_nodes()]


def _check_node(node_id: Any, what: str = "node") -> int:
    if node_id is None:
        raise DistributionError(f"{what} must not be NULL", "22004")
    node_id = int(node_id)
    nodes = metadata.nodes()
    if node_id not in nodes:
        raise DistributionError(f"node {node_id} does not exist", "42704",
                                hint="The nodes are listed in orochi.nodes.")
    return node_id


def plan(table_name: Any = None, strategy: Any = "by_shard_count", max_shard_moves: Any = None,
         drain_node: Any = None) -> list[tuple[Unit, int]]:
    """The moves (unit, target node) that even out the shard groups over the
    active nodes (``drain_node`` excluded: all its groups go elsewhere)."""
    strategy = "by_shard_count" if strategy is None else str(strategy)
    if strategy not in STRATEGIES:
        raise DistributionError(f'unknown rebalance strategy "{strategy}"', "22023",
                                hint="Strategies: " + ", ".join(STRATEGIES) + ".")
    if max_shard_moves is not None and int(max_shard_moves) < 0:
        raise DistributionError("max_shard_moves must not be negative", "22023")
    coloc = None
    if table_name is not None:
        from orochi_fdw.cluster import ddl

        relid = ddl._relid(table_name)
        t = metadata.table(relid)
        if t is None or t.is_reference:
            name = spi.execute("SELECT $1::regclass::text", [relid], types=["oid"]).scalar()
            raise DistributionError(f'table "{name}" is not a hash-distributed table', "42809")
        coloc = t.colocation_id
    nodes = [n for n in _active_node_ids() if n != drain_node]
    if not nodes and drain_node is None:
        return []  # no worker: nothing to balance
    if not nodes:
        raise DistributionError(f"node {drain_node} is the last active node: its shards have nowhere to go",
                                "55000", hint="Add a node with orochi.add_node first.")
    units = _units(coloc)
    if strategy == "by_disk_size":
        _sizes(units)
    busy = _open_moves()
    units = [u for u in units if (u.colocation_id, u.shard_index) not in busy]
    weight = (lambda u: u.size) if strategy == "by_disk_size" else (lambda u: 1)
    load = {n: 0 for n in nodes}
    on: dict[int, list[Unit]] = {n: [] for n in nodes}
    moves: list[tuple[Unit, int]] = []
    homeless = []
    for u in units:
        if u.node_id in load:
            load[u.node_id] += weight(u)
            on[u.node_id].append(u)
        else:
            homeless.append(u)  # on the drained node or on an inactive one
    limit = None if max_shard_moves is None else int(max_shard_moves)

    def room() -> bool:
        return limit is None or len(moves) < limit

    for u in sorted(homeless, key=lambda u: (-weight(u), u.colocation_id, u.shard_index)):
        if not room():
            break
        target = min(nodes, key=lambda n: (load[n], n))
        load[target] += weight(u)
        on[target].append(u)
        moves.append((u, target))
    while room():
        hi = max(nodes, key=lambda n: (load[n], -n))
        lo = min(nodes, key=lambda n: (load[n], n))
        gap = load[hi] - load[lo]
        # the biggest group whose move narrows the gap
        if strategy == "by_shard_count":
            fits = list(on[hi]) if gap > 1 else []
        else:
            fits = [u for u in on[hi] if 0 < u.size < gap]
        if not fits:
            break
        u = max(fits, key=lambda u: (weight(u), -u.colocation_id, -u.shard_index))
        on[hi].remove(u)
        on[lo].append(u)
        load[hi] -= weight(u)
        load[lo] += weight(u)
        moves.append((u, lo))
    return moves


def _enqueue(kind: str, moves: list[tuple[Unit, int]]) -> int | None:
    if not moves:
        return None
    job_id = int(metadata.catalog_write("SELECT nextval('orochi.dist_rebalance_job_seq')").scalar())
    for position, (u, target) in enumerate(moves, 1):
        metadata.catalog_write(
            "INSERT INTO orochi.dist_move (job_id, job_kind, position, colocation_id, shard_ids,"
            " source_node, target_node) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [job_id, kind, position, u.colocation_id, "{" + ",".join(str(s) for s in u.shard_ids) + "}",
             u.node_id, target],
            types=["bigint", "text", "integer", "integer", "bigint[]", "integer", "integer"])
    spi.execute("SELECT pg_catalog.pg_notify('orochi_rebalance', $1)", [str(job_id)], types=["text"])
    return job_id


# ------------------------------------------------------------------ SQL


@sql_function("move_shard")
def move_shard(shard_id: Any, target_node: Any) -> int:
    _require_superuser("move_shard")
    shard_id = int(shard_id)
    rows = metadata.catalog(
        "SELECT t.method::text, t.colocation_id, s.shard_index FROM orochi.dist_shard s"
        "  JOIN orochi.dist_table t USING (relid) WHERE s.shard_id = $1", [shard_id], types=["bigint"]).rows
    if not rows:
        raise DistributionError(f"shard {shard_id} does not exist", "42704",
                                hint="The shards are listed in orochi.shards.")
    method, coloc, index = rows[0]
    if method != "h":
        raise DistributionError(f"shard {shard_id} belongs to a reference table, which has a copy on every node",
                                "0A000")
    target = _check_node(target_node, "target_node")
    if not metadata.nodes()[target].is_active:
        raise DistributionError(f"node {target} is not active", "55000")
    unit = next(u for u in _units(int(coloc)) if u.shard_index == int(index))
    if unit.node_id == target:
        raise DistributionError(f"shard {shard_id} is already on node {target}", "55000")
    busy = _open_moves()
    if (unit.colocation_id, unit.shard_index) in busy:
        raise DistributionError(f"shard {shard_id} is already being moved (job {busy[(unit.colocation_id, unit.shard_index)]})",
                                "55006", hint="Wait for that job, or stop it with orochi.rebalance_stop().")
    # the named shard first: the progress view shows it
    unit.shard_ids.sort(key=lambda s: (s != shard_id, s))
    return _enqueue("move", [(unit, target)])


@sql_function("get_rebalance_plan")
def get_rebalance_plan(table_name: Any = None, strategy: Any = "by_shard_count", max_shard_moves: Any = None,
                       drain_node: Any = None) -> list[tuple]:
    _require_superuser("get_rebalance_plan")
    if drain_node is not None:
        drain_node = _check_node(drain_node, "drain_node")
    out = []
    for u, target in plan(table_name, strategy, max_shard_moves, drain_node):
        out.append((u.relids[0], u.shard_ids[0], "{" + ",".join(map(str, u.shard_ids)) + "}",
                    u.size if u.size else None, u.node_id, target))
    return out


@sql_function("rebalance_table_shards")
def rebalance_table_shards(table_name: Any = None, strategy: Any = "by_shard_count",
                           max_shard_moves: Any = None) -> int | None:
    _require_superuser("rebalance_table_shards")
    job = _enqueue("rebalance", plan(table_name, strategy, max_shard_moves))
    if job is None:
        spi.notice("the shards are balanced: nothing to move")
    return job


@sql_function("drain_node")
def drain_node(node_id: Any) -> int | None:
    _require_superuser("drain_node")
    node_id = _check_node(node_id)
    others = [n for n in _active_node_ids() if n != node_id]
    if not others:
        raise DistributionError(f"node {node_id} is the last active node: its shards have nowhere to go",
                                "55000", hint="Add a node with orochi.add_node first.")
    job = _enqueue("drain", [(u, t) for u, t in plan(None, "by_shard_count", None, node_id)
                             if u.node_id == node_id])
    if job is None:
        spi.notice(f"node {node_id} holds no shard of a distributed table: nothing to move")
    return job


@sql_function("rebalance_stop")
def rebalance_stop(job_id: Any = None) -> int:
    _require_superuser("rebalance_stop")
    res = metadata.catalog_write(
        "UPDATE orochi.dist_move SET stop_requested = true,"
        "       phase = CASE WHEN phase = 'queued' THEN 'stopped' ELSE phase END,"
        "       finished_at = CASE WHEN phase = 'queued' THEN now() ELSE finished_at END"
        " WHERE phase NOT IN ('done', 'failed', 'stopped') AND NOT switched"
        "   AND ($1::bigint IS NULL OR job_id = $1) RETURNING move_id",
        [None if job_id is None else int(job_id)], types=["bigint"])
    return len(res.rows)
