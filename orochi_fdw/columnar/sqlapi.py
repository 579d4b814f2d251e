"""SQL functions of columnar tables: the DDL check the event trigger of
sql/10_columnar.sql runs after CREATE / ALTER FOREIGN TABLE (which also keeps
each table's delta store in step with its columns), and the HTAP functions
of sql/20_htap.sql: orochi.compact, orochi.vacuum(regclass, ...),
orochi.maintenance_progress, orochi.delta_size."""

from __future__ import annotations

from orochi_fdw.bridge import runtime, spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.columnar import delta
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
    if definition.wrapper and definition.wrapper != runtime.DEFAULT_WRAPPER:
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


@sql_function("columnar_check_tables")
def columnar_check_tables(relids: list[int]) -> None:
    for relid in relids:
        if relid is not None:
            check_table(int(relid))


def _relid(value) -> int:
    if isinstance(value, int):
        return value
    return int(spi.execute("SELECT $1::regclass::oid", [str(value)], types=["text"]).scalar())


@sql_function("compact")
def compact(rel) -> tuple[int, int]:
    result = maintenance.compact(_relid(rel))
    return (result.moved_rows, result.stripes_written)


def vacuum_table(rel, min_deleted_fraction=0.2) -> tuple:
    r = maintenance.vacuum_table(_relid(rel), 0.2 if min_deleted_fraction is None else float(min_deleted_fraction))
    return (r.stripes_rewritten, r.rows_removed, r.bytes_before, r.bytes_after, r.removed_files,
            r.removed_bytes)


@sql_function("maintenance_progress")
def maintenance_progress() -> list[tuple]:
    return maintenance.progress_rows()


@sql_function("delta_size")
def delta_size(rel) -> tuple[int, int]:
    relid = _relid(rel)
    return delta.DeltaStore(relid, {}).size()
