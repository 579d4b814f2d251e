"""SQL functions of columnar tables: the DDL check the event trigger of
sql/10_columnar.sql runs after CREATE / ALTER FOREIGN TABLE (which also keeps
each table's delta store in step with its columns and checks the rows against
CHECK constraints just added), and the HTAP functions
of sql/20_htap.sql: orochi.compact, orochi.vacuum(regclass, ...),
orochi.maintenance_progress, orochi.delta_size."""

from __future__ import annotations

from orochi_fdw.bridge import privileges, runtime, spi, wrappers
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.columnar import constraints, delta
from orochi_fdw.columnar import maintenance
from orochi_fdw.columnar import options as opts
from orochi_fdw.columnar.definition import read_definition
from orochi_fdw.errors import InvalidOptionError

def check_table(relid: int) -> None:
    """Check a columnar table's server, table and column options together.

    Raises:
        InvalidOptionError: an option a column does not accept.
        InvalidOptionValueError: a value of the wrong type, out of range, or a
            compression level that does not fit its compression.
    """
    definition = read_definition(relid)
    if definition is None:
        return
    if not wrappers.is_default(definition.wrapper):
        return
    valid = ", ".join(sorted(opts.OPTIONS_SPEC["column"]))
    for name, column in definition.columns.items():
        for key in column.options:
            if key not in opts.OPTIONS_SPEC["column"]:
                raise InvalidOptionError(
                    f'invalid option "{key}" for column "{name}" of columnar table "{definition.relname}"',
                    hint=f"Valid options in this context are: {valid}")
    opts.resolve(definition.options, definition.columns)
    delta.sync(relid)
    constraints.check_new_constraints(relid)


@sql_function("columnar_check_tables")
def columnar_check_tables(relids: list[int]) -> None:
    """ddl_command_end of CREATE FOREIGN TABLE, ALTER FOREIGN TABLE and ALTER
    TABLE: an event trigger running as the role that ran the command, which
    owns the tables (Postgres checked it), so that a new column's default is
    evaluated with that role's rights, as for a heap table.  Anyone may call
    it, for tables they own: it only does what the command implied."""
    for relid in relids:
        if relid is not None:
            privileges.require_owner(int(relid), "orochi.columnar_check_tables")
            check_table(int(relid))


def _relid(value) -> int:
    if isinstance(value, int):
        return value
    return int(spi.execute("SELECT $1::regclass::oid", [str(value)], types=["text"]).scalar())


@sql_function("compact")
def compact(rel) -> tuple[int, int]:
    """orochi.compact(rel): for the table's owner."""
    relid = _relid(rel)
    privileges.require_owner(relid, "orochi.compact")
    result = maintenance.compact(relid)
    return (result.moved_rows, result.stripes_written)


def vacuum_table(rel, min_deleted_fraction=0.2) -> tuple:
    """orochi.vacuum(rel, fraction): for the table's owner."""
    relid = _relid(rel)
    privileges.require_owner(relid, "orochi.vacuum")
    r = maintenance.vacuum_table(relid, 0.2 if min_deleted_fraction is None else float(min_deleted_fraction))
    return (r.stripes_rewritten, r.rows_removed, r.bytes_before, r.bytes_after, r.removed_files,
            r.removed_bytes)


@sql_function("maintenance_progress")
def maintenance_progress() -> list[tuple]:
    """The compactions and vacuums running now, of the tables the caller may
    read (SELECT) or owns."""
    rows = maintenance.progress_rows()
    visible = {}
    out = []
    for row in rows:
        relid = int(row[2])
        if relid not in visible:
            visible[relid] = privileges.relation_exists(relid) and (
                privileges.owns(relid) or privileges.has_table_privilege(relid, "SELECT"))
        if visible[relid]:
            out.append(row)
    return out


@sql_function("delta_size")
def delta_size(rel) -> tuple[int, int]:
    """orochi.delta_size(rel): the delta store's rows and bytes, for roles
    that may read the table (it counts its rows)."""
    relid = _relid(rel)
    privileges.require_table_privilege(relid, "SELECT", "orochi.delta_size")
    return delta.DeltaStore(relid, {}).size()
