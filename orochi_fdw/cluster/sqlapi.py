"""SQL functions of the cluster layer (sql/70_cluster.sql)."""

from __future__ import annotations

from typing import Any, Iterator

from psycopg import sql

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.cluster import connection as C
from orochi_fdw.cluster import ddl, metadata, planner, rebalance, recovery  # noqa: F401 (rebalance: its SQL functions)
from orochi_fdw.cluster.errors import ClusterError, DistributionError
from orochi_fdw.cluster.transaction import current as txn
from orochi_fdw.errors import InvalidOptionError

_USER_MAPPING_CATALOG = 1418


@sql_function("cluster_options_validator")
def cluster_options_validator(options: list[str], catalog: int) -> None:
    """Options of server orochi_cluster's user mappings: libpq's connection
    options (user, password, sslmode ...); nothing elsewhere."""
    allowed = C.MAPPING_OPTIONS if int(catalog) == _USER_MAPPING_CATALOG else ()
    for item in options or []:
        name = str(item).partition("=")[0]
        if name not in allowed:
            raise InvalidOptionError(
                f'invalid option "{name}"',
                hint=("Valid options in this context are: " + ", ".join(allowed)) if allowed
                else "Only user mappings of server orochi_cluster take options.")


def _require_superuser(function: str) -> None:
    """The node functions and recovery act for every user of the cluster
    (recovery commits other users' prepared transactions): superusers
    only, checked before anything is done or any node is contacted."""
    privileges.require_superuser(f"call orochi.{function}",
                                 hint="Only a superuser may manage the cluster's nodes and transactions.")


@sql_function("add_node")
def add_node(host: Any, port: Any) -> int:
    _require_superuser("add_node")
    return ddl.add_node(host, port)


@sql_function("remove_node")
def remove_node(host: Any, port: Any) -> None:
    _require_superuser("remove_node")
    ddl.remove_node(host, port)


@sql_function("create_distributed_table")
def create_distributed_table(table_name: Any, distribution_column: Any, shard_count: Any = 32,
                             colocate_with: Any = "default", shard_storage: Any = "columnar") -> None:
    ddl.create_distributed_table(table_name, distribution_column, shard_count, colocate_with, shard_storage)


@sql_function("create_reference_table")
def create_reference_table(table_name: Any, shard_storage: Any = "columnar") -> None:
    ddl.create_distributed_table(table_name, None, 1, "none", shard_storage, reference=True)


@sql_function("undistribute_table")
def undistribute_table(table_name: Any) -> None:
    ddl.undistribute_table(table_name)


@sql_function("recover_prepared_transactions")
def recover_prepared_transactions() -> int:
    _require_superuser("recover_prepared_transactions")
    return recovery.recover()


@sql_function("cluster_drop_tables")
def cluster_drop_tables(relids: list[int]) -> None:
    ddl.drop_tables(relids)


@sql_function("cluster_sync_privileges")
def cluster_sync_privileges() -> None:
    ddl.sync_privileges()


@sql_function("cluster_alter_tables")
def cluster_alter_tables(relids: list[int]) -> None:
    ddl.alter_tables(relids)


def _status_rows(relid: int) -> Iterator[tuple]:
    t = metadata.table(relid)
    if t is None:
        name = spi.execute("SELECT $1::regclass::text", [relid], types=["oid"]).scalar()
        raise DistributionError(f'table "{name}" is not distributed', "42809")
    nodes = metadata.nodes()
    size = "orochi.table_size" if t.shard_storage == "columnar" else "pg_catalog.pg_total_relation_size"
    per_node: dict[int, list] = {}
    for shard in t.shards:
        for node_id in shard.node_ids:
            per_node.setdefault(node_id, []).append(shard)
    results: dict[tuple[int, int], tuple] = {}
    for node_id, shards in per_node.items():
        node = nodes[node_id]
        params = planner.Params()
        branches = []
        for shard in shards:
            schema, name = t.shard_name(shard)
            branches.append(sql.SQL("SELECT {}::bigint, (SELECT count(*) FROM {}), {}({}::regclass)::bigint").format(
                params.add(str(shard.shard_id)), sql.Identifier(schema, name), sql.SQL(size),
                params.add(f"{spi.quote_ident(schema)}.{spi.quote_ident(name)}")))
        try:
            sessions = txn.sessions_for([node])
            (res,) = C.drive([(sessions[node_id], C.command(
                sessions[node_id], planner.union_all(branches).as_bytes(None), params.values))])
            for r in range(res[0].ntuples):
                sid = int(res[0].get_value(r, 0))
                results[(sid, node_id)] = (int(res[0].get_value(r, 1)), int(res[0].get_value(r, 2)), "ok")
        except ClusterError as exc:
            for shard in shards:
                results[(shard.shard_id, node_id)] = (None, None, f"error: {exc}")
            if txn.broken:
                raise
    for shard in t.shards:
        for node_id in shard.node_ids:
            node = nodes[node_id]
            rows, size_bytes, status = results[(shard.shard_id, node_id)]
            schema, name = t.shard_name(shard)
            yield (shard.shard_id, shard.shard_index, shard.hash_min, shard.hash_max, node_id, node.host,
                   node.port, f"{spi.quote_ident(schema)}.{spi.quote_ident(name)}", rows, size_bytes, status)


@sql_function("shard_status")
def shard_status(table_name: Any) -> list[tuple]:
    relid = ddl._relid(table_name)
    privileges.require_table_privilege(relid, "SELECT", "orochi.shard_status")
    return list(_status_rows(relid))


@sql_function("shard_placements")
def shard_placements() -> list[tuple]:
    out = []
    for (relid,) in metadata.catalog("SELECT relid FROM orochi.dist_table ORDER BY relid::regclass::text").rows:
        if not privileges.has_table_privilege(int(relid), "SELECT"):
            continue  # the view shows the tables the caller may read
        for row in _status_rows(int(relid)):
            shard_id, index, lo, hi, node_id, host, port, name, rows, size_bytes, _ = row
            out.append((shard_id, int(relid), index, lo, hi, node_id, host, port, name, rows, size_bytes))
    return out
