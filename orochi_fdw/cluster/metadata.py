"""The coordinator's metadata (sql/70_cluster.sql), read through SPI.

:class:`Node`, :class:`Shard` and :class:`DistTable` are immutable views of
the rows.  Reads are cached until :func:`invalidate` (called when a
transaction that used distributed tables begins, and after every metadata
write), so one statement's planning and execution see one version of the
metadata and pay for it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from orochi_fdw.bridge import spi

#: the hash space: shards cut [INT32_MIN, INT32_MAX] into equal ranges
INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1
HASH_TOKEN_COUNT = 2 ** 32

#: limits of create_distributed_table's shard_count
MAX_SHARD_COUNT = 10_000


@dataclass(frozen=True)
class Node:
    """A worker node."""

    node_id: int
    host: str
    port: int
    is_active: bool = True

    @property
    def name(self) -> str:
        """host:port, as errors name the node."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Shard:
    """One shard: its id, its position among the table's shards, its hash
    range (None for a reference table) and the nodes holding it."""

    shard_id: int
    shard_index: int
    hash_min: int | None
    hash_max: int | None
    node_ids: tuple[int, ...]


@dataclass(frozen=True)
class ColumnInfo:
    """A column as the shards have it."""

    attnum: int
    name: str
    type: str
    collation: str | None = None
    not_null: bool = False


@dataclass(frozen=True)
class DistTable:
    """A distributed (method 'h') or reference (method 'r') table."""

    relid: int
    method: str
    dist_attnum: int | None
    dist_type: int | None
    colocation_id: int | None
    shard_storage: str
    shard_schema: str
    shard_base: str
    columns: tuple[ColumnInfo, ...]
    shards: tuple[Shard, ...] = field(default_factory=tuple)

    @property
    def is_reference(self) -> bool:
        return self.method == "r"

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    def shard_name(self, shard: Shard) -> tuple[str, str]:
        """(schema, table) of a shard on its workers."""
        return (self.shard_schema, shard_relation_name(self.shard_base, shard.shard_id))

    def column_by_attnum(self, attnum: int) -> ColumnInfo | None:
        return next((c for c in self.columns if c.attnum == attnum), None)


def shard_relation_name(base: str, shard_id: int) -> str:
    """``<base>_<shard id>``, the base cut so the name fits in NAMEDATALEN - 1
    bytes."""
    suffix = f"_{shard_id}"
    raw = base.encode("utf-8")
    room = 63 - len(suffix)
    if len(raw) > room:
        raw = raw[:room]
        base = raw.decode("utf-8", "ignore")
    return base + suffix


def hash_ranges(shard_count: int) -> list[tuple[int, int]]:
    """The [min, max] hash range of each shard index: equal ranges over the
    int32 space, the last one taking the remainder (as Citus cuts them)."""
    step = HASH_TOKEN_COUNT // shard_count
    out = []
    for i in range(shard_count):
        lo = INT32_MIN + i * step
        hi = INT32_MAX if i == shard_count - 1 else lo + step - 1
        out.append((lo, hi))
    return out


def shard_index_for_hash(hashes, shard_count: int):
    """The shard index of each int32 hash (an int or a numpy array) under
    the uniform ranges of :func:`hash_ranges`."""
    import numpy as np

    step = HASH_TOKEN_COUNT // shard_count
    if isinstance(hashes, int):
        return min((hashes - INT32_MIN) // step, shard_count - 1)
    index = (np.asarray(hashes, dtype=np.int64) - INT32_MIN) // step
    return np.minimum(index, shard_count - 1)


# ---------------------------------------------------------------- reading

_tables: dict[int, DistTable | None] = {}
_nodes: dict[int, Node] | None = None


def invalidate() -> None:
    """Forget what was read; the next read goes to the catalog."""
    global _nodes
    _tables.clear()
    _nodes = None


def nodes() -> dict[int, Node]:
    """Every registered node by id, in id order."""
    global _nodes
    if _nodes is None:
        rows = catalog("SELECT node_id, host, port, is_active FROM orochi.dist_node ORDER BY node_id").rows
        _nodes = {int(r[0]): Node(int(r[0]), str(r[1]), int(r[2]), bool(r[3])) for r in rows}
    return _nodes


def active_nodes() -> list[Node]:
    return [n for n in nodes().values() if n.is_active]


def node(node_id: int) -> Node:
    return nodes()[node_id]


def _columns(raw: Any) -> tuple[ColumnInfo, ...]:
    data = json.loads(raw) if isinstance(raw, str) else raw
    return tuple(ColumnInfo(int(c["attnum"]), str(c["name"]), str(c["type"]), c.get("collation"),
                            bool(c.get("not_null"))) for c in data)


def table(relid: int) -> DistTable | None:
    """The distributed or reference table ``relid``, or None."""
    relid = int(relid)
    _join_transaction()
    if relid in _tables:
        return _tables[relid]
    rows = catalog(
        "SELECT method::text, dist_attnum, dist_type::oid, colocation_id, shard_storage,"
        "       shard_schema::text, shard_base::text, columns::text"
        "  FROM orochi.dist_table WHERE relid = $1", [relid], types=["oid"]).rows
    if not rows:
        _tables[relid] = None
        return None
    method, attnum, dtype, coloc, storage, schema, base, columns = rows[0]
    if method == "h" and coloc is not None:
        _hold_group(int(coloc))
    placements: dict[int, list[int]] = {}
    for shard_id, node_id in catalog(
            "SELECT p.shard_id, p.node_id FROM orochi.dist_placement p"
            "  JOIN orochi.dist_shard s USING (shard_id) WHERE s.relid = $1 ORDER BY p.node_id",
            [relid], types=["oid"]).rows:
        placements.setdefault(int(shard_id), []).append(int(node_id))
    shards = tuple(
        Shard(int(sid), int(index), None if lo is None else int(lo), None if hi is None else int(hi),
              tuple(placements.get(int(sid), ())))
        for sid, index, lo, hi in catalog(
            "SELECT shard_id, shard_index, hash_min, hash_max FROM orochi.dist_shard"
            " WHERE relid = $1 ORDER BY shard_index", [relid], types=["oid"]).rows)
    t = DistTable(relid, str(method), None if attnum is None else int(attnum),
                  None if dtype is None else int(dtype), None if coloc is None else int(coloc),
                  str(storage), str(schema), str(base), _columns(columns), shards)
    _tables[relid] = t
    return t


def _join_transaction() -> None:
    """Tie the cache to the current transaction: joining it (once per
    transaction) empties the cache, so placements read by an earlier
    transaction are never used (a shard may have moved since)."""
    from orochi_fdw.cluster.transaction import current

    current._join()


def _hold_group(colocation_id: int) -> None:
    """Hold the co-location group's placements for the rest of the
    transaction: a shared advisory lock, which a shard move's switch
    (orochi_fdw.cluster.mover) takes exclusively.  A transaction thus never
    writes through placements that a move has switched meanwhile, and a
    switch waits for the transactions that read the old ones.  (In parallel
    mode no lock can be taken; such a statement only reads.)"""
    from orochi_fdw.cluster.rebalance import GROUP_LOCK

    if spi._pg().in_parallel_mode():
        return
    catalog("SELECT pg_catalog.pg_advisory_xact_lock_shared($1, $2)", [GROUP_LOCK, colocation_id],
            types=["integer", "integer"])


def is_distributed(relid: int) -> bool:
    return table(relid) is not None


def coordinator_id() -> int:
    """This database's coordinator id (in the names of its prepared
    transactions)."""
    return int(catalog("SELECT coordinator_id FROM orochi.dist_coordinator").scalar())


def catalog(query: str, params: list | None = None, types: list[str] | None = None):
    """A statement on the cluster's catalog (tables and sequences of schema
    orochi, owned by the extension's owner and granted to no one), run as
    that owner (docs/SECURITY.md), for a caller whose right to it was
    checked before (the table's owner distributing it, a superuser managing
    nodes, anyone reading the metadata of a table it may use or writing the
    commit record of its own transaction)."""
    return spi.execute(query, params, types=types, internal=True)


catalog_write = catalog
