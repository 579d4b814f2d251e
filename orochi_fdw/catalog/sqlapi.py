"""SQL functions of the catalog: ``orochi.table_size``, ``orochi.vacuum``,
and the internal ones the event triggers of sql/10_columnar.sql call."""

from __future__ import annotations

import os

from orochi_fdw.bridge import privileges, runtime, spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.catalog import files, store, vacuum
from orochi_fdw.catalog.ledger import ledger


def _relid(value) -> int:
    """A regclass argument (the bridge passes it in its text form)."""
    if isinstance(value, int):
        return value
    return int(spi.execute("SELECT $1::regclass::oid", [str(value)], types=["text"]).scalar())


@sql_function("table_size")
def table_size(rel) -> int:
    """Bytes a table takes on local disk: its stripe files (not those in
    object storage) and delta store for an orochi table, else what
    pg_total_relation_size says."""
    relid = _relid(rel)
    relkind = spi.execute("SELECT relkind::text FROM pg_catalog.pg_class WHERE oid = $1",
                          [relid], types=["oid"]).scalar()
    if relkind != "f":
        return int(spi.execute("SELECT pg_total_relation_size($1)", [relid], types=["oid"]).scalar() or 0)
    delta = spi.execute("SELECT coalesce(pg_total_relation_size(to_regclass($1)), 0)",
                        [f"orochi.columnar_delta_{relid}"], types=["text"]).scalar()
    cold = spi.execute("SELECT coalesce(sum(file_bytes), 0) FROM orochi.columnar_stripes"
                       " WHERE relid = $1 AND file_path LIKE 'tier:%'", [relid], types=["oid"],
                       internal=True).scalar()  # in object storage (docs/tiering.md): not on this disk
    return store.table_totals(relid)[2] - int(cold or 0) + int(delta or 0)


@sql_function("vacuum")
def vacuum_(*args) -> tuple:
    """orochi.vacuum(): orphan collection (superusers only: it removes files
    of every table and of dropped databases); orochi.vacuum(regclass,
    fraction): the rewrite of one columnar table's stripes, for its owner
    (orochi_fdw.columnar.maintenance)."""
    if args:
        from orochi_fdw.columnar.sqlapi import vacuum_table

        return vacuum_table(*args)
    privileges.require_superuser("collect orphan stripe files",
                                 hint="A table's owner may vacuum it: orochi.vacuum('table').")
    result = vacuum.collect_orphans()
    return (result.removed_files, result.removed_bytes)


@sql_function("columnar_drop_tables")
def columnar_drop_tables(relids: list[int]) -> None:
    """sql_drop: forget the dropped tables' stripes; their files go when the
    dropping transaction commits.  Called by the event trigger (as the
    extension owner; no other role may call it), and only for tables that
    are gone."""
    relids = [int(r) for r in relids if r is not None]
    if relids:
        still_there = {int(r[0]) for r in spi.execute(
            "SELECT oid FROM pg_catalog.pg_class WHERE oid = ANY ($1)", [relids], types=["oid[]"]).rows}
        relids = [r for r in relids if r not in still_there]
    from orochi_fdw.columnar import delta

    stripes = store.delete_tables(relids)
    table_dirs = sorted({os.path.dirname(path) for _, path in stripes})
    ledger.rows_deleted(stripes, table_dirs)
    for relid in relids:
        delta.drop(relid)
        runtime.forget(relid)
    from orochi_fdw.columnar import missing

    missing.forget(relids)


@sql_function("columnar_before_drop_extension")
def columnar_before_drop_extension() -> None:
    """ddl_command_start of DROP EXTENSION: remember this database's folders;
    they are removed at commit if orochi is gone by then."""
    ledger.extension_dropping([files.database_dir(root) for root in vacuum.known_data_dirs()])
