"""Nodes and distributed tables: add_node, remove_node,
create_distributed_table, create_reference_table, undistribute_table, and
DROP / ALTER of a distributed table carried to its shards.

Everything runs in the caller's transaction: the metadata through SPI, the
workers' DDL and data in the distributed transaction
(:mod:`orochi_fdw.cluster.transaction`), which commits the workers with the
coordinator (two-phase when more than one node is involved).  An error at
any step leaves nothing behind on any node.

Making a table distributed replaces it by an orochi foreign table of the
same name, columns (types, collations, NOT NULL, defaults), owner and
privileges, served by :class:`~orochi_fdw.cluster.table.DistributedTable`;
the old table's rows are inserted into it (and so routed to the shards) and
the old table is dropped.  undistribute_table does the reverse into a heap
table.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.cluster import connection as C
from orochi_fdw.cluster import executor, hashing, metadata, planner
from orochi_fdw.cluster.errors import DistributionError
from orochi_fdw.cluster.metadata import DistTable, Node
from orochi_fdw.cluster.transaction import current as txn

WRAPPER = "distributed"


def _relid(value: Any) -> int:
    if value is None:
        raise DistributionError("table_name must not be NULL", "22004")
    if isinstance(value, int):
        return value
    return int(spi.execute("SELECT $1::regclass::oid", [str(value)], types=["text"]).scalar())


def _relation_info(relid: int) -> dict:
    row = spi.execute(
        "SELECT c.relname::text, n.nspname::text, c.relkind::text, c.relowner::regrole::text,"
        "       pg_catalog.pg_has_role(c.relowner, 'USAGE'), c.relhastriggers, c.relrowsecurity,"
        "       c.relispartition, c.relhassubclass, c.relacl::text[], c.relpersistence::text"
        "  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = $1", [relid], types=["oid"]).rows[0]
    keys = ("relname", "nspname", "relkind", "owner", "is_owner", "triggers", "rls", "is_partition",
            "has_children", "acl", "persistence")
    return dict(zip(keys, row))


def _qualified(info: dict) -> str:
    return f"{spi.quote_ident(info['nspname'])}.{spi.quote_ident(info['relname'])}"


def _columns(relid: int) -> list[dict]:
    """The table's columns as the shards and the replacement table need
    them."""
    rows = spi.execute(
        "SELECT a.attnum, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid,"
        "       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation"
        "            THEN (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)"
        "                    FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn"
        "                      ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END,"
        "       (SELECT co.collname::text FROM pg_catalog.pg_collation co WHERE co.oid = a.attcollation),"
        "       a.attnotnull, pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text,"
        "       a.attgenerated::text"
        "  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
        "  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [relid], types=["oid"]).rows
    out = []
    for attnum, name, type_name, type_oid, collate, collname, notnull, default, identity, generated in rows:
        out.append({"attnum": int(attnum), "name": name, "type": type_name, "type_oid": int(type_oid),
                    "collate": collate, "collation": collname, "not_null": bool(notnull),
                    "default": default, "identity": identity or "", "generated": generated or ""})
    return out


def _column_ddl(col: dict, with_default: bool) -> str:
    text = f"{spi.quote_ident(col['name'])} {col['type']}"
    if col["collate"]:
        text += f" COLLATE {col['collate']}"
    if col["not_null"]:
        text += " NOT NULL"
    if with_default and col["default"] is not None:
        text += f" DEFAULT {col['default']}"
    return text


def _metadata_columns(cols: list[dict]) -> str:
    return json.dumps([{"attnum": c["attnum"], "name": c["name"], "type": c["type"],
                        "collation": c["collation"], "not_null": c["not_null"]} for c in cols])


# ------------------------------------------------------------------ checks


def _check_movable(relid: int, info: dict, what: str) -> None:
    """Refuse tables whose dependents or constraints could not follow them
    into a foreign table (0A000), rather than dropping anything silently."""
    name = info["relname"]

    def refuse(reason: str, hint: str) -> None:
        raise DistributionError(f'cannot {what} table "{name}": {reason}', "0A000", hint=hint)

    if info.get("persistence") == "t":
        refuse("it is a temporary table", "Distribute a permanent table.")
    if info["is_partition"] or info["relkind"] == "p" or info["has_children"]:
        refuse("it is part of a partitioning or inheritance hierarchy", "Distribute a plain table.")
    if info["triggers"]:
        refuse("it has triggers", "Drop its triggers first.")
    if info["rls"]:
        refuse("it has row level security enabled", "Disable row level security first.")
    views = spi.execute(
        "SELECT DISTINCT v.oid::regclass::text FROM pg_catalog.pg_depend d"
        "  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::regclass"
        "  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class"
        " WHERE d.refobjid = $1 AND d.refclassid = 'pg_catalog.pg_class'::regclass AND v.oid <> $1",
        [relid], types=["oid"]).rows
    if views:
        refuse(f"view {views[0][0]} depends on it", "Drop the views that use it first, and make them again after.")
    cons = spi.execute(
        "SELECT conname::text, contype::text FROM pg_catalog.pg_constraint"
        " WHERE (conrelid = $1 OR confrelid = $1) AND contype <> 'n' ORDER BY contype, conname",
        [relid], types=["oid"]).rows
    if cons:
        refuse(f'it has constraint "{cons[0][0]}"',
               "Distributed tables keep NOT NULL and defaults only: drop primary keys, unique, "
               "check, exclusion and foreign key constraints first.")
    idx = spi.execute("SELECT indexrelid::regclass::text FROM pg_catalog.pg_index WHERE indrelid = $1",
                      [relid], types=["oid"]).rows
    if idx:
        refuse(f"it has index {idx[0][0]}", "Distributed tables have no indexes on the coordinator: drop it first.")


def _check_source(relid: int, info: dict, what: str) -> None:
    if not info["is_owner"]:
        raise DistributionError(f'must be owner of table {info["relname"]}', "42501")
    if metadata.table(relid) is not None:
        raise DistributionError(f'table "{info["relname"]}" is already distributed', "42710",
                                hint="Use orochi.undistribute_table first to change how it is distributed.")
    kind = info["relkind"]
    if kind == "f":
        wrapper = spi.execute(
            "SELECT w.fdwhandler = 'orochi.orochi_fdw_handler'::regproc"
            "       AND coalesce((SELECT option_value FROM pg_catalog.pg_options_to_table(ft.ftoptions)"
            "                     WHERE option_name = 'wrapper'), '') = ''"
            "  FROM pg_catalog.pg_foreign_table ft"
            "  JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver"
            "  JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE ft.ftrelid = $1",
            [relid], types=["oid"]).scalar()
        if not wrapper:
            raise DistributionError(f'cannot {what} foreign table "{info["relname"]}"', "0A000",
                                    hint="Only ordinary tables and orochi columnar tables can be distributed.")
    elif kind not in ("r", "p"):
        raise DistributionError(f'"{info["relname"]}" is not a table', "42809")
    _check_movable(relid, info, what)
    for col in _columns(relid):
        if col["identity"]:
            raise DistributionError(f'cannot {what} table "{info["relname"]}": column "{col["name"]}" is an '
                                    "identity column", "0A000",
                                    hint="Use a sequence default (serial, bigserial) instead.")
        if col["generated"]:
            raise DistributionError(f'cannot {what} table "{info["relname"]}": column "{col["name"]}" is a '
                                    "generated column", "0A000")


def _active_nodes() -> list[Node]:
    nodes = metadata.active_nodes()
    if not nodes:
        raise DistributionError("there are no worker nodes", "55000",
                                hint="Add one with orochi.add_node(host, port).")
    return nodes


# ------------------------------------------------------------------ replace


def _replace_with(relid: int, info: dict, cols: list[dict], foreign: bool) -> int:
    """Rename the table aside and make its replacement (a distributed
    foreign table, or a heap table) with the same columns, owner and
    privileges; returns the new table's oid.  The old one is renamed
    ``<name>_orochi_old`` (cut to fit)."""
    old_name = (info["relname"].encode()[:50].decode("utf-8", "ignore")) + "_orochi_old"
    kind = "FOREIGN TABLE" if info["relkind"] == "f" else "TABLE"
    spi.execute(f"ALTER {kind} {_qualified(info)} RENAME TO {spi.quote_ident(old_name)}")
    coldefs = ", ".join(_column_ddl(c, True) for c in cols)
    if foreign:
        spi.execute(f"CREATE FOREIGN TABLE {_qualified(info)} ({coldefs}) SERVER orochi"
                    f" OPTIONS (wrapper '{WRAPPER}')")
    else:
        spi.execute(f"CREATE TABLE {_qualified(info)} ({coldefs})")
    new = int(spi.execute("SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
                          " ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                          [info["nspname"], info["relname"]], types=["name", "name"]).scalar())
    # sequences the old table's columns owned now belong to the new ones
    for seq, attname in spi.execute(
            "SELECT d.objid::regclass::text, a.attname::text FROM pg_catalog.pg_depend d"
            "  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
            " WHERE d.refobjid = $1 AND d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'a'"
            "   AND d.refobjsubid > 0", [relid], types=["oid"]).rows:
        spi.execute(f"ALTER SEQUENCE {seq} OWNED BY {_qualified(info)}.{spi.quote_ident(attname)}")
    kind = "FOREIGN TABLE" if foreign else "TABLE"
    spi.execute(f"ALTER {kind} {_qualified(info)} OWNER TO {spi.quote_ident(info['owner'])}")
    if info["acl"]:
        spi.execute(f"REVOKE ALL ON {_qualified(info)} FROM {spi.quote_ident(info['owner'])}")
        for grantee, privilege, grantable in spi.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(a.grantee::regrole::text) END,"
                "       a.privilege_type, a.is_grantable"
                "  FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a WHERE c.oid = $1",
                [relid], types=["oid"]).rows:
            spi.execute(f"GRANT {privilege} ON {_qualified(info)} TO {grantee}"
                        + (" WITH GRANT OPTION" if grantable else ""))
    return new


def _old_qualified(info: dict) -> str:
    old_name = (info["relname"].encode()[:50].decode("utf-8", "ignore")) + "_orochi_old"
    return f"{spi.quote_ident(info['nspname'])}.{spi.quote_ident(old_name)}"


# ------------------------------------------------------------------ shards


def shard_ddl(table: DistTable, shard, cols: list[dict]) -> sql.Composable:
    """CREATE [FOREIGN] TABLE of one shard."""
    defs = []
    for c in cols:
        frag = sql.SQL("{} {}").format(sql.Identifier(c["name"]), sql.SQL(c["type"]))
        if c.get("collate"):
            frag += sql.SQL(" COLLATE {}").format(sql.SQL(c["collate"]))
        if c["not_null"]:
            frag += sql.SQL(" NOT NULL")
        defs.append(frag)
    if table.is_reference:
        defs.append(sql.SQL("{} bigint NOT NULL").format(sql.Identifier("orochi_rowid")))
    ident = planner.shard_ident(table, shard)
    if table.shard_storage == "columnar":
        return sql.SQL("CREATE FOREIGN TABLE {} ({}) SERVER orochi").format(ident, sql.SQL(", ").join(defs))
    return sql.SQL("CREATE TABLE {} ({})").format(ident, sql.SQL(", ").join(defs))


def _run_per_node(statements: dict[int, list[sql.Composable]], write: bool = True) -> None:
    nodes = metadata.nodes()
    tasks = []
    for node_id, stmts in statements.items():
        if stmts:
            # cursors of earlier scans in this transaction would keep the shards "in use"
            text = sql.SQL("; ").join([sql.SQL("CLOSE ALL")] + stmts).as_bytes(None)
            tasks.append(planner.Task(nodes[node_id], [], text, None))  # several statements: no parameters
    executor.run(tasks, write=write)


def _schema_statements(schema: str, node_ids: set[int]) -> dict[int, list[sql.Composable]]:
    """Per node, ``CREATE SCHEMA`` where the schema is missing (asked of the
    nodes first: CREATE SCHEMA IF NOT EXISTS needs the right to create
    schemas even when it exists, which a table's owner need not have)."""
    nodes = metadata.nodes()
    tasks = [planner.Task(nodes[n], [], b"SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace"
                                        b" WHERE nspname = $1)", [schema.encode()]) for n in sorted(node_ids)]
    out: dict[int, list[sql.Composable]] = {}
    for run in executor.run(tasks):
        res = run.results[-1]
        missing = res.get_value(0, 0) == b"t"
        out[run.task.node.node_id] = ([sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))]
                                      if missing else [])
    return out


def _create_shards(table: DistTable, cols: list[dict]) -> None:
    statements = _schema_statements(table.shard_schema, {n for s in table.shards for n in s.node_ids})
    for shard in table.shards:
        for node_id in shard.node_ids:
            statements[node_id].append(shard_ddl(table, shard, cols))
    _run_per_node(statements)


def _acl_statements(table: DistTable, relid: int, old_acl: str | None) -> dict[int, list[sql.Composable]]:
    """Per node, what makes its shards' privileges the table's: the owner's
    and grantees' privileges granted, those of roles no longer in the table's
    privileges (``old_acl``: as the shards had them) revoked.  The roles must
    exist on the workers."""
    rows = spi.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE a.grantee::regrole::text END, a.privilege_type, a.is_grantable"
        "  FROM pg_catalog.pg_class c, pg_catalog.aclexplode(coalesce(c.relacl,"
        "       pg_catalog.acldefault('r', c.relowner))) a WHERE c.oid = $1", [relid], types=["oid"]).rows
    olds: list = []
    if old_acl:
        olds = [r[0] for r in spi.execute(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN NULL ELSE a.grantee::regrole::text END"
            "  FROM pg_catalog.aclexplode($1::aclitem[]) a", [old_acl], types=["text"]).rows]

    def role(name: str | None) -> sql.Composable:
        return sql.SQL("PUBLIC") if name is None else sql.Identifier(name)

    grantees = sorted(set(olds) | {g for g, _, _ in rows}, key=lambda g: (g is not None, g or ""))
    per_node: dict[int, list[sql.Composable]] = {}
    for shard in table.shards:
        ident = planner.shard_ident(table, shard)
        stmts = [sql.SQL("REVOKE ALL ON {} FROM {}").format(ident, role(g)) for g in grantees]
        stmts += [sql.SQL("GRANT {} ON {} TO {}{}").format(sql.SQL(privilege), ident, role(grantee),
                                                           sql.SQL(" WITH GRANT OPTION" if grantable else ""))
                  for grantee, privilege, grantable in rows]
        for node_id in shard.node_ids:
            per_node.setdefault(node_id, []).extend(stmts)
    return per_node


def _sync_acl(table: DistTable, relid: int, old_acl: str | None) -> None:
    """Give the shards the table's privileges and remember them."""
    _run_per_node(_acl_statements(table, relid, old_acl))
    metadata.catalog_write("UPDATE orochi.dist_table t SET acl = c.relacl::text FROM pg_catalog.pg_class c"
                " WHERE c.oid = t.relid AND t.relid = $1", [relid], types=["oid"])


def sync_privileges() -> None:
    """The GRANT / REVOKE trigger: carry changed privileges to the shards."""
    for relid, old in metadata.catalog(
            "SELECT t.relid, t.acl FROM orochi.dist_table t JOIN pg_catalog.pg_class c ON c.oid = t.relid"
            " WHERE t.acl IS DISTINCT FROM c.relacl::text").rows:
        t = metadata.table(int(relid))
        if t is not None:
            # the shards take the table's privileges as they now are (the GRANT
            # or REVOKE that fired this was checked by Postgres), sent as the
            # current user, whose rights the workers check in turn
            _sync_acl(t, int(relid), old)


def drop_shards(table: DistTable) -> None:
    statements: dict[int, list[sql.Composable]] = {}
    kind = "FOREIGN TABLE" if table.shard_storage == "columnar" else "TABLE"
    for shard in table.shards:
        for node_id in shard.node_ids:
            statements.setdefault(node_id, []).append(
                sql.SQL("DROP {} IF EXISTS {}").format(sql.SQL(kind), planner.shard_ident(table, shard)))
    _run_per_node(statements)


# ------------------------------------------------------------------ colocation


def _colocation(colocate_with: str, shard_count: int, dist_type: int, collation: int,
                table_name: str) -> tuple[int, dict[int, int] | None]:
    """(colocation id, shard index -> node of the group's existing tables)."""
    target = (colocate_with or "default").strip()
    if target.lower() == "none":
        cid = metadata.catalog_write("INSERT INTO orochi.dist_colocation (shard_count, dist_type, dist_collation)"
                          " VALUES ($1, $2, $3) RETURNING colocation_id",
                          [shard_count, dist_type, collation], types=["integer", "oid", "oid"]).scalar()
        return int(cid), None
    if target.lower() == "default":
        row = metadata.catalog("SELECT colocation_id FROM orochi.dist_colocation WHERE shard_count = $1"
                          " AND dist_type = $2 AND dist_collation = $3 ORDER BY colocation_id LIMIT 1",
                          [shard_count, dist_type, collation], types=["integer", "oid", "oid"]).rows
        if row and _group_placements(int(row[0][0])) is not None:
            return int(row[0][0]), _group_placements(int(row[0][0]))
        cid = metadata.catalog_write("INSERT INTO orochi.dist_colocation (shard_count, dist_type, dist_collation)"
                          " VALUES ($1, $2, $3) RETURNING colocation_id",
                          [shard_count, dist_type, collation], types=["integer", "oid", "oid"]).scalar()
        return int(cid), None
    other = _relid(target)
    t = metadata.table(other)
    if t is None or t.is_reference:
        raise DistributionError(f'cannot colocate table "{table_name}" with "{target}": it is not a hash '
                                "distributed table", "55000")
    info = metadata.catalog("SELECT shard_count, dist_type::oid, dist_collation FROM orochi.dist_colocation"
                       " WHERE colocation_id = $1", [t.colocation_id], types=["integer"]).rows[0]
    if int(info[1]) != dist_type or int(info[2]) != collation:
        raise DistributionError(f'cannot colocate table "{table_name}" with "{target}": their distribution '
                                "columns have different types or collations", "55000")
    if int(info[0]) != shard_count:
        raise DistributionError(f'cannot colocate table "{table_name}" with "{target}": it has {info[0]} '
                                f"shards, not {shard_count}", "55000",
                                hint=f"Pass shard_count => {info[0]}.")
    return int(t.colocation_id), _group_placements(int(t.colocation_id))


def _group_placements(colocation_id: int) -> dict[int, int] | None:
    rows = metadata.catalog(
        "SELECT s.shard_index, min(p.node_id) FROM orochi.dist_table t"
        "  JOIN orochi.dist_shard s ON s.relid = t.relid JOIN orochi.dist_placement p USING (shard_id)"
        " WHERE t.colocation_id = $1 AND t.relid = (SELECT min(relid) FROM orochi.dist_table"
        "                                            WHERE colocation_id = $1)"
        " GROUP BY s.shard_index", [colocation_id], types=["integer"]).rows
    return {int(i): int(n) for i, n in rows} if rows else None


# ------------------------------------------------------------------ API


def create_distributed_table(table_name: Any, distribution_column: Any, shard_count: Any = 32,
                             colocate_with: Any = "default", shard_storage: Any = "columnar",
                             reference: bool = False) -> None:
    relid = _relid(table_name)
    info = _relation_info(relid)
    what = "distribute"
    shard_storage = "columnar" if shard_storage is None else str(shard_storage)
    if shard_storage not in ("columnar", "heap"):
        raise DistributionError(f'invalid shard_storage "{shard_storage}"', "22023",
                                hint="Use 'columnar' or 'heap'.")
    if not reference:
        if distribution_column is None:
            raise DistributionError("distribution_column must not be NULL", "22004")
        if shard_count is None or not 1 <= int(shard_count) <= metadata.MAX_SHARD_COUNT:
            raise DistributionError(f"shard_count must be between 1 and {metadata.MAX_SHARD_COUNT}", "22023",
                                    detail=f"shard_count is {shard_count}.")
    _check_source(relid, info, what)
    cols = _columns(relid)
    dist = None
    if not reference:
        dist = next((c for c in cols if c["name"] == str(distribution_column)), None)
        if dist is None:
            raise DistributionError(f'column "{distribution_column}" of relation "{info["relname"]}" does not '
                                    "exist", "42703")
        hashing.hash_function(dist["type_oid"])
    nodes = _active_nodes()
    # metadata first (the new table's oid is needed), then shards, then rows
    new = _replace_with(relid, info, cols, foreign=True)
    new_cols = _columns(new)
    if reference:
        metadata.catalog_write("INSERT INTO orochi.dist_table (relid, method, shard_storage, shard_schema, shard_base,"
                    " columns) VALUES ($1, 'r', $2, $3, $4, $5::jsonb)",
                    [new, shard_storage, info["nspname"], info["relname"], _metadata_columns(new_cols)],
                    types=["oid", "text", "name", "name", "text"])
        shard_id = int(metadata.catalog_write("INSERT INTO orochi.dist_shard (relid, shard_index) VALUES ($1, 0)"
                                   " RETURNING shard_id", [new], types=["oid"]).scalar())
        for node in nodes:
            metadata.catalog_write("INSERT INTO orochi.dist_placement (shard_id, node_id) VALUES ($1, $2)",
                        [shard_id, node.node_id], types=["bigint", "integer"])
    else:
        count = int(shard_count)
        coll_oid = int(spi.execute("SELECT attcollation FROM pg_catalog.pg_attribute WHERE attrelid = $1"
                                   " AND attnum = $2", [new, dist["attnum"]], types=["oid", "smallint"]).scalar())
        cid, existing = _colocation(str(colocate_with if colocate_with is not None else "default"), count,
                                    dist["type_oid"], coll_oid, info["relname"])
        metadata.catalog_write("INSERT INTO orochi.dist_table (relid, method, dist_attnum, dist_type, colocation_id,"
                    " shard_storage, shard_schema, shard_base, columns)"
                    " VALUES ($1, 'h', $2, $3, $4, $5, $6, $7, $8::jsonb)",
                    [new, dist["attnum"], dist["type_oid"], cid, shard_storage, info["nspname"], info["relname"],
                     _metadata_columns(new_cols)],
                    types=["oid", "smallint", "oid", "integer", "text", "name", "name", "text"])
        active = {n.node_id for n in nodes}
        for index, (lo, hi) in enumerate(metadata.hash_ranges(count)):
            shard_id = int(metadata.catalog_write("INSERT INTO orochi.dist_shard (relid, shard_index, hash_min, hash_max)"
                                       " VALUES ($1, $2, $3, $4) RETURNING shard_id", [new, index, lo, hi],
                                       types=["oid", "integer", "integer", "integer"]).scalar())
            node_id = existing.get(index) if existing else None
            if node_id is None or node_id not in active and existing is None:
                node_id = nodes[index % len(nodes)].node_id
            metadata.catalog_write("INSERT INTO orochi.dist_placement (shard_id, node_id) VALUES ($1, $2)",
                        [shard_id, node_id], types=["bigint", "integer"])
    metadata.invalidate()
    table = metadata.table(new)
    _create_shards(table, new_cols)
    _sync_acl(table, new, None)
    names = ", ".join(spi.quote_ident(c["name"]) for c in new_cols)
    spi.execute(f"INSERT INTO {_qualified(info)} ({names}) SELECT {names} FROM {_old_qualified(info)}")
    spi.execute(f"DROP {'FOREIGN TABLE' if info['relkind'] == 'f' else 'TABLE'} {_old_qualified(info)}")


def undistribute_table(table_name: Any) -> None:
    relid = _relid(table_name)
    info = _relation_info(relid)
    if not info["is_owner"]:
        raise DistributionError(f'must be owner of table {info["relname"]}', "42501")
    if metadata.table(relid) is None:
        raise DistributionError(f'table "{info["relname"]}" is not distributed', "42809")
    _check_movable(relid, {**info, "triggers": False}, "undistribute")
    cols = _columns(relid)
    _replace_with(relid, info, cols, foreign=False)
    names = ", ".join(spi.quote_ident(c["name"]) for c in cols)
    spi.execute(f"INSERT INTO {_qualified(info)} ({names}) SELECT {names} FROM {_old_qualified(info)}")
    spi.execute(f"DROP FOREIGN TABLE {_old_qualified(info)}")


def drop_tables(relids: list[int]) -> None:
    """The sql_drop trigger: drop the shards of dropped distributed tables
    and forget them."""
    for relid in relids:
        if relid is None:
            continue
        if spi.execute("SELECT 1 FROM pg_catalog.pg_class WHERE oid = $1", [int(relid)], types=["oid"]).rows:
            continue  # not dropped: only what the trigger reports gone is forgotten (anyone may call this)
        t = metadata.table(int(relid))
        if t is None:
            continue
        drop_shards(t)
        metadata.catalog_write("DELETE FROM orochi.dist_table WHERE relid = $1", [int(relid)], types=["oid"])
        metadata.catalog_write("DELETE FROM orochi.dist_colocation c WHERE c.colocation_id = $1 AND NOT EXISTS"
                    " (SELECT 1 FROM orochi.dist_table t WHERE t.colocation_id = c.colocation_id)",
                    [t.colocation_id], types=["integer"])
    metadata.invalidate()


def alter_tables(relids: list[int]) -> None:
    """The ddl_command_end trigger: carry ADD / DROP / RENAME COLUMN (and
    SET / DROP NOT NULL) of distributed tables to their shards."""
    for relid in relids:
        if relid is None:
            continue
        relid = int(relid)
        t = metadata.table(relid)
        if t is None:
            continue
        if not privileges.owns(relid):  # the ALTER that fired this needed ownership; a direct call too
            raise DistributionError(f"must be owner of table {privileges.relation_text(relid)}", "42501")
        _alter_one(t, relid)
    metadata.invalidate()


def _alter_one(t: DistTable, relid: int) -> None:
    cols = _columns(relid)
    now = {c["attnum"]: c for c in cols}
    before = {c.attnum: c for c in t.columns}
    relname = _relation_info(relid)["relname"]
    stmts: list[sql.Composable] = []
    updates: list[tuple[str, str, str]] = []  # (column, value text, type)
    for attnum, old in before.items():
        new = now.get(attnum)
        if new is None:
            if attnum == t.dist_attnum:
                raise DistributionError(f'cannot drop the distribution column "{old.name}" of table "{relname}"',
                                        "0A000", hint="Undistribute the table first.")
            stmts.append(sql.SQL("DROP COLUMN {}").format(sql.Identifier(old.name)))
            continue
        if new["type"] != old.type or new["collation"] != old.collation:
            raise DistributionError(f'cannot change the type or collation of column "{new["name"]}" of '
                                    f'distributed table "{relname}"', "0A000",
                                    hint="Add a new column, copy the values with UPDATE, and drop the old one.")
        if new["name"] != old.name:
            stmts.append(sql.SQL("RENAME COLUMN {} TO {}").format(sql.Identifier(old.name),
                                                                  sql.Identifier(new["name"])))
        if new["not_null"] != old.not_null:
            stmts.append(sql.SQL("ALTER COLUMN {} {} NOT NULL").format(
                sql.Identifier(new["name"]), sql.SQL("SET" if new["not_null"] else "DROP")))
    for attnum, new in now.items():
        if attnum in before:
            continue
        frag = sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(new["name"]), sql.SQL(new["type"]))
        if new["collate"]:
            frag += sql.SQL(" COLLATE {}").format(sql.SQL(new["collate"]))
        stmts.append(frag)
        if new["default"] is not None:
            if _default_is_volatile(relid, attnum):
                raise DistributionError(f'cannot add column "{new["name"]}" with a volatile default to '
                                        f'distributed table "{relname}"', "0A000",
                                        hint="Add the column without a default, then set it with UPDATE.")
            value = spi.execute(f"SELECT ({new['default']})::text").scalar()
            if value is not None:
                updates.append((new["name"], value, new["type"]))
    if stmts or updates:
        kind = sql.SQL("ALTER FOREIGN TABLE" if t.shard_storage == "columnar" else "ALTER TABLE")
        per_node: dict[int, list[sql.Composable]] = {}
        for shard in t.shards:
            for node_id in shard.node_ids:
                if stmts:
                    per_node.setdefault(node_id, []).append(
                        sql.SQL("{} {} {}").format(kind, planner.shard_ident(t, shard), sql.SQL(", ").join(stmts)))
        _run_per_node(per_node)
        if updates:
            _fill_new_columns(t, updates)
    metadata.catalog_write("UPDATE orochi.dist_table SET columns = $2::jsonb WHERE relid = $1",
                [relid, _metadata_columns(cols)], types=["oid", "text"])


def _default_is_volatile(relid: int, attnum: int) -> bool:
    """Whether a column default calls a volatile function (its expression
    tree names the functions it calls by oid)."""
    import re

    tree = spi.execute("SELECT adbin::text FROM pg_catalog.pg_attrdef WHERE adrelid = $1 AND adnum = $2",
                       [relid, attnum], types=["oid", "smallint"]).scalar() or ""
    oids = sorted({int(x) for x in re.findall(r":(?:funcid|opfuncid) (\d+)", tree)})
    if not oids:
        return False
    return bool(spi.execute("SELECT coalesce(bool_or(provolatile = 'v'), false) FROM pg_catalog.pg_proc"
                            " WHERE oid = ANY ($1::oid[])", [oids], types=["oid[]"]).scalar())


def _fill_new_columns(t: DistTable, updates: list[tuple[str, str, str]]) -> None:
    """Existing rows of an added column take its default, as on a heap
    table: one UPDATE per shard, the value as a parameter."""
    nodes = metadata.nodes()
    tasks = []
    for shard in t.shards:
        params = planner.Params()
        sets = sql.SQL(", ").join(sql.SQL("{} = {}::{}").format(sql.Identifier(c), params.add(v), sql.SQL(ty))
                                  for c, v, ty in updates)
        stmt = sql.SQL("UPDATE {} SET {}").format(planner.shard_ident(t, shard), sets).as_bytes(None)
        for node_id in shard.node_ids:
            tasks.append(planner.Task(nodes[node_id], [shard], stmt, list(params.values)))
    executor.run(tasks, write=True)


# ------------------------------------------------------------------ nodes


def add_node(host: Any, port: Any) -> int:
    if host is None or port is None:
        raise DistributionError("host and port must not be NULL", "22004")
    host, port = str(host), int(port)
    if not 1 <= port <= 65535:
        raise DistributionError(f"invalid port {port}", "22023")
    existing = metadata.catalog("SELECT node_id FROM orochi.dist_node WHERE host = $1 AND port = $2",
                           [host, port], types=["text", "integer"]).scalar()
    if existing is not None:
        spi.notice(f"node {host}:{port} is already registered")
        return int(existing)
    node = Node(0, host, port)
    user, database = spi.execute("SELECT current_user::text, current_database()::text").rows[0]
    sessions = C._connect_all([node], str(user), str(database), C.user_mapping(), C.connect_timeout_ms() / 1000.0)
    session = sessions[0]
    try:
        C.drive([(session, C.command(session, b"BEGIN"))])
        (res,) = C.drive([(session, C.command(
            session, b"SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'orochi'),"
                     b" current_setting('max_prepared_transactions')::integer,"
                     b" pg_catalog.pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text,"
                     b" (SELECT system_identifier::text FROM pg_catalog.pg_control_system())"
                     b" FROM pg_catalog.pg_database d WHERE d.datname = current_database()"))])
        row = [None if v is None else v.decode() for v in (res[0].get_value(0, i) for i in range(6))]
        C.drive([(session, C.command(session, b"ROLLBACK"))])
    finally:
        session.close()
    version, max_prepared, encoding, collate, ctype, sysid = row
    name = f"{host}:{port}"
    if version is None:
        raise DistributionError(f"node {name} does not have the orochi extension in database {database}", "55000",
                                hint=f"Run CREATE EXTENSION orochi in database {database} on that node.")
    if int(max_prepared) <= 0:
        raise DistributionError(f"node {name} does not accept prepared transactions", "55000",
                                detail="max_prepared_transactions is 0 there; distributed writes commit with "
                                       "two-phase commit.",
                                hint="Set max_prepared_transactions (e.g. to max_connections) on that node "
                                     "and restart it.")
    here = spi.execute("SELECT pg_catalog.pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text,"
                       " (SELECT system_identifier::text FROM pg_catalog.pg_control_system())"
                       " FROM pg_catalog.pg_database WHERE datname = current_database()").rows[0]
    if sysid == here[3]:
        raise DistributionError(f"node {name} is this coordinator's own server", "55000",
                                hint="Workers are other PostgreSQL servers.")
    if (encoding, collate, ctype) != tuple(here[:3]):
        raise DistributionError(f"node {name} has database {database} in encoding {encoding} with collation "
                                f"{collate}, the coordinator's is in {here[0]} with {here[1]}", "55000",
                                hint="Workers need the coordinator's encoding and collation, so that text "
                                     "compares and hashes alike everywhere.")
    node_id = int(metadata.catalog_write("INSERT INTO orochi.dist_node (host, port) VALUES ($1, $2) RETURNING node_id",
                              [host, port], types=["text", "integer"]).scalar())
    metadata.invalidate()
    _replicate_reference_tables(metadata.node(node_id))
    return node_id


def _replicate_reference_tables(node: Node) -> None:
    """Copy every reference table to a new node (shard and rows), so that
    every node keeps holding all of them."""
    relids = [int(r[0]) for r in metadata.catalog("SELECT relid FROM orochi.dist_table WHERE method = 'r'"
                                            " ORDER BY relid").rows]
    for relid in relids:
        t = metadata.table(relid)
        shard = t.shards[0]
        source = planner.placement(t, shard, metadata.nodes(), set(txn.sessions))
        cols = [{"name": c.name, "type": c.type, "collate": _collate_of(relid, c.attnum), "not_null": c.not_null}
                for c in t.columns]
        ident = planner.shard_ident(t, shard)
        statements = _schema_statements(t.shard_schema, {node.node_id})
        statements[node.node_id].append(shard_ddl(t, shard, cols))
        _run_per_node(statements)
        names = sql.SQL(", ").join([sql.Identifier(c.name) for c in t.columns] + [sql.Identifier("orochi_rowid")])
        sessions = txn.sessions_for([source, node])
        (data,) = C.drive([(sessions[source.node_id], C.copy_out(
            sessions[source.node_id], sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(names, ident).as_bytes(None)))])
        executor.copy_into([(node, sql.SQL("COPY {} ({}) FROM STDIN").format(ident, names).as_bytes(None), [data])])
        metadata.catalog_write("INSERT INTO orochi.dist_placement (shard_id, node_id) VALUES ($1, $2)",
                    [shard.shard_id, node.node_id], types=["bigint", "integer"])
    metadata.invalidate()


def _collate_of(relid: int, attnum: int) -> str | None:
    for c in _columns(relid):
        if c["attnum"] == attnum:
            return c["collate"]
    return None


def remove_node(host: Any, port: Any) -> None:
    if host is None or port is None:
        raise DistributionError("host and port must not be NULL", "22004")
    row = metadata.catalog("SELECT node_id FROM orochi.dist_node WHERE host = $1 AND port = $2",
                      [str(host), int(port)], types=["text", "integer"]).rows
    if not row:
        raise DistributionError(f"node {host}:{port} is not registered", "42704")
    node_id = int(row[0][0])
    held = metadata.catalog(
        "SELECT DISTINCT s.relid::regclass::text FROM orochi.dist_placement p"
        "  JOIN orochi.dist_shard s USING (shard_id) JOIN orochi.dist_table t ON t.relid = s.relid"
        " WHERE p.node_id = $1 AND t.method = 'h' ORDER BY 1", [node_id], types=["integer"]).rows
    if held:
        raise DistributionError(f"cannot remove node {host}:{port}: it holds shards of "
                                + ", ".join(r[0] for r in held), "2BP01",
                                hint="Undistribute or drop those tables first.")
    lonely = metadata.catalog(
        "SELECT s.relid::regclass::text FROM orochi.dist_placement p JOIN orochi.dist_shard s USING (shard_id)"
        " WHERE p.node_id = $1 AND NOT EXISTS (SELECT 1 FROM orochi.dist_placement q"
        "  WHERE q.shard_id = p.shard_id AND q.node_id <> p.node_id)", [node_id], types=["integer"]).rows
    if lonely:
        raise DistributionError(f"cannot remove node {host}:{port}: it holds the only copy of reference table "
                                f"{lonely[0][0]}", "2BP01", hint="Undistribute or drop it first.")
    # reference tables: drop this node's copies
    statements: list[sql.Composable] = []
    for relid, shard_id in metadata.catalog(
            "SELECT s.relid, s.shard_id FROM orochi.dist_placement p JOIN orochi.dist_shard s USING (shard_id)"
            " WHERE p.node_id = $1", [node_id], types=["integer"]).rows:
        t = metadata.table(int(relid))
        shard = next(s for s in t.shards if s.shard_id == int(shard_id))
        kind = "FOREIGN TABLE" if t.shard_storage == "columnar" else "TABLE"
        statements.append(sql.SQL("DROP {} IF EXISTS {}").format(sql.SQL(kind), planner.shard_ident(t, shard)))
    if statements:
        _run_per_node({node_id: statements})
    metadata.catalog_write("DELETE FROM orochi.dist_placement WHERE node_id = $1", [node_id], types=["integer"])
    metadata.catalog_write("DELETE FROM orochi.dist_node WHERE node_id = $1", [node_id], types=["integer"])
    metadata.invalidate()
