"""SQL functions of hypertables and their chunks (sql/50_hypertables.sql):
``orochi.create_hypertable``, ``orochi.show_chunks``, ``orochi.drop_chunks``
and the internal ``orochi.hypertable_chunk_stats`` behind the
``orochi.chunks`` view."""

from __future__ import annotations

from typing import Any, Iterator

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.bridge.types import Interval
from orochi_fdw.catalog import store
from orochi_fdw.errors import OrochiError
from orochi_fdw.timeseries import chunks, hypertable, timekeys


class HypertableError(OrochiError):
    """A hypertable function's argument does not fit (the SQLSTATE is given
    per case)."""

    def __init__(self, message: str, sqlstate: str, hint: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint
        self.detail = detail


def _relid(value: Any) -> int:
    """A regclass argument (the bridge passes its text form)."""
    if isinstance(value, int):
        return value
    return int(spi.execute("SELECT $1::regclass::oid", [str(value)], types=["text"]).scalar())


def _relation_text(relid: int) -> str:
    return str(spi.execute("SELECT $1::regclass::text", [relid], types=["oid"]).scalar())


def check_owner(relid: int) -> None:
    """Changing a hypertable's definition, dropping or compressing its
    chunks is for the table's owner (42501 otherwise), as ALTER TABLE and
    TRUNCATE are."""
    owner = spi.execute("SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c"
                        " WHERE c.oid = $1", [relid], types=["oid"]).scalar()
    if not owner:
        raise HypertableError(f'must be owner of table "{_relation_text(relid)}"', "42501")


def _open_columnar(relid: int):
    """The ColumnarTable of ``relid``, or a clear error (42809) if it is not
    an orochi columnar table."""
    from orochi_fdw.columnar.maintenance import open_table
    from orochi_fdw.errors import InvalidParameterError

    try:
        return open_table(relid)
    except InvalidParameterError:
        raise HypertableError(f'table "{_relation_text(relid)}" is not an orochi columnar table', "42809",
                              hint="Hypertables are made of orochi foreign tables: "
                                   "CREATE FOREIGN TABLE ... SERVER orochi.") from None


def _chunk_interval(value: Any, time_type: str, column: str) -> int:
    """chunk_time_interval in time keys.

    Raises:
        HypertableError: an interval for an integer column, a value that is
            not positive.
    """
    if isinstance(value, Interval):
        if timekeys.is_integer_type(time_type):
            raise HypertableError(
                f'invalid chunk_time_interval for integer time column "{column}"', "22023",
                hint="Pass an integer chunk_time_interval, e.g. chunk_time_interval => 1000.")
        try:
            return timekeys.interval_microseconds(value)
        except timekeys.InvalidTimeArgumentError as exc:
            raise HypertableError(str(exc), "22023") from None
    interval = int(value)
    if interval <= 0 and not timekeys.is_integer_type(time_type):
        raise HypertableError("invalid chunk_time_interval: must be greater than zero", "22023")
    try:
        return timekeys.check_integer_interval(interval, time_type)
    except timekeys.InvalidTimeArgumentError as exc:
        raise HypertableError(str(exc), "22023", hint=exc.hint) from None


@sql_function("create_hypertable")
def create_hypertable(relation: Any, time_column: str, chunk_time_interval: Any = None,
                      if_not_exists: bool | None = False, migrate_data: bool | None = False) -> tuple:
    """orochi.create_hypertable: make an orochi columnar table a hypertable.

    Args:
        relation: the table.
        time_column: the time column's name.
        chunk_time_interval: an interval (timestamp-like columns) or an
            integer (time keys: microseconds for timestamp-like columns, values
            for integer columns).
        if_not_exists: a hypertable already: NOTICE and no error.
        migrate_data: rewrite the rows already stored into chunks.

    Returns:
        (hypertable_id (the table's oid), schema_name, table_name, created).

    Raises:
        HypertableError: not an orochi columnar table, no such column, a time
            column of another type, an interval that does not fit, a table
            that holds rows without migrate_data, already a hypertable.
    """
    if relation is None or time_column is None:
        raise HypertableError("relation and time_column must not be NULL", "22004")
    relid = _relid(relation)
    check_owner(relid)
    table = _open_columnar(relid)
    schema, name = spi.execute(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c"
        "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        [relid], types=["oid"]).rows[0]
    from orochi_fdw.columnar.maintenance import lock_table_maintenance

    lock_table_maintenance(relid)  # one at a time with compaction and vacuum
    if hypertable.get(relid) is not None:
        if if_not_exists:
            spi.notice(f'table "{name}" is already a hypertable, skipping')
            return (relid, schema, name, False)
        raise HypertableError(f'table "{name}" is already a hypertable', "42710")
    column = table.columns.get(str(time_column))
    if column is None:
        raise HypertableError(f'column "{time_column}" does not exist', "42703")
    time_type = spi.execute("SELECT $1::regtype::text", [column.type_oid], types=["oid"]).scalar()
    if time_type not in timekeys.TIME_TYPES:
        raise HypertableError(
            f'invalid type for dimension "{time_column}"', "42804",
            detail=f"The column is of type {time_type}.",
            hint="Use a column of type timestamptz, timestamp, date, smallint, integer or bigint.")
    interval = _chunk_interval(interval_or_default(chunk_time_interval), time_type, str(time_column))
    stripes, stripe_rows, _ = store.table_totals(relid)
    delta_rows = table.delta.count(read_only=False)
    if (stripe_rows or delta_rows) and not migrate_data:
        raise HypertableError(f'table "{name}" is not empty', "55000",
                              hint="You can migrate data by specifying 'migrate_data => true' "
                                   "when calling this function.")
    # the catalog row's trigger moves the stored rows into chunks (hypertable_inserted)
    spi.prepared(
        "INSERT INTO orochi.hypertables (relid, time_column, time_attnum, time_type, chunk_interval)"
        " VALUES ($1, $2, $3, $4::regtype, $5)", ["oid", "name", "smallint", "text", "bigint"],
        internal=True).execute(
        [relid, str(time_column), column.attnum, time_type, interval])
    return (relid, schema, name, True)


@sql_function("_hypertable_inserted")
def hypertable_inserted(relid: Any) -> None:
    """The trigger on ``orochi.hypertables``: a table that became a
    hypertable with stripes outside chunks (create_hypertable with
    migrate_data, or pg_restore loading a table's rows before the catalog
    row that makes it a hypertable) gets them rewritten into chunks."""
    relid = _relid(relid)
    # its one-row INSERTs must now be routed to chunks: every backend forgets
    # that the bridge may write them straight into the delta store
    spi.invalidate_relcache(relid)
    loose = spi.execute("SELECT EXISTS (SELECT 1 FROM orochi.columnar_stripes"
                        " WHERE relid = $1 AND chunk_id IS NULL)", [relid], types=["oid"]).scalar()
    table = _open_columnar(relid)
    if loose or table.delta.count(read_only=False):
        _migrate(table)


def interval_or_default(value: Any) -> Any:
    """chunk_time_interval, 7 days when NULL."""
    return Interval(0, 7, 0) if value is None else value


def _migrate(table) -> None:
    """Rewrite a new hypertable's stripes and delta rows into chunked
    stripes; the old stripes' files are retired (removed by a later
    orochi.vacuum(rel) once no snapshot reads them)."""
    from orochi_fdw.columnar import deletes, maintenance

    router = table.chunk_router()
    attnums = [c.attnum for c in table.columns.values()]
    old = [s for s in store.table_stripes(table.relid, attnums, read_only=False) if s.chunk_id is None]
    for stripe in old:
        live = maintenance.live_columns(table, stripe, deletes.load(stripe.delete_bitmap))
        if live is None:
            raise HypertableError(
                f'cannot migrate stripe {stripe.stripe_id} of table "{table.relname}"', "0A000",
                detail="It holds a column in the type it had before an ALTER COLUMN ... TYPE.")
        columns, _, nlive = live
        if nlive:
            table.write_stripes_by_chunk(columns, router)
    maintenance.retire_stripes(table.relid, [s.stripe_id for s in old])
    maintenance.compact(table.relid)


def _time_argument(ht: hypertable.Hypertable, value: Any) -> int | None:
    return None if value is None else timekeys.cutoff_key(ht, value)


def _hypertable_for(relation: Any) -> hypertable.Hypertable:
    if relation is None:
        raise HypertableError("invalid hypertable: NULL", "22004")
    relid = _relid(relation)
    ht = hypertable.get(relid)
    if ht is None:
        raise HypertableError(f'table "{_relation_text(relid)}" is not a hypertable', "42809",
                              hint="Make it one with orochi.create_hypertable.")
    return ht


_MIXED = ('cannot specify "older_than" or "newer_than" together with "created_before" or "created_after"')
_MIXED_HINT = ('"older_than" and "newer_than" select chunks by their time range, "created_before" and '
               '"created_after" by when the chunks were created; use one pair.')


def _selection(relation: Any, older_than: Any, newer_than: Any, created_before: Any, created_after: Any,
               need_one: bool) -> tuple[hypertable.Hypertable, chunks.ChunkSelection]:
    """The hypertable and the chunks the arguments of show_chunks /
    drop_chunks select, checked as TimescaleDB checks them.

    Raises:
        HypertableError: not a hypertable (42809); both pairs of bounds, no
            bound at all for drop_chunks, a range whose end is not after its
            start (22023).
        InvalidTimeArgumentError: a bound of a type that does not fit.
    """
    ht = _hypertable_for(relation)
    by_time = older_than is not None or newer_than is not None
    by_creation = created_before is not None or created_after is not None
    if by_time and by_creation:
        raise HypertableError(_MIXED, "22023", hint=_MIXED_HINT)
    if need_one and not by_time and not by_creation:
        raise HypertableError("invalid time range for dropping chunks", "22023",
                              hint="At least one of older_than/newer_than or created_before/created_after"
                                   " must be given.")
    if by_creation:
        before = timekeys.creation_cutoff(created_before, "created_before") if created_before is not None else None
        after = timekeys.creation_cutoff(created_after, "created_after") if created_after is not None else None
        if before is not None and after is not None and before <= after:
            raise HypertableError("invalid chunk creation time range", "22023",
                                  hint="The start of the time range must be before the end.")
        return ht, chunks.ChunkSelection(created_before=before, created_after=after)
    older, newer = _time_argument(ht, older_than), _time_argument(ht, newer_than)
    if older is not None and newer is not None and older <= newer:
        raise HypertableError("invalid time range", "22023",
                              hint="The start of the time range must be before the end.")
    return ht, chunks.ChunkSelection(older_than=older, newer_than=newer)


@sql_function("show_chunks")
def show_chunks(relation: Any, older_than: Any = None, newer_than: Any = None,
                created_before: Any = None, created_after: Any = None) -> list[str]:
    """orochi.show_chunks: the names of the chunks lying wholly before
    older_than and / or wholly at or after newer_than, or created before
    created_before and / or at or after created_after, in time order (for
    roles with SELECT on the hypertable)."""
    if relation is not None:
        privileges.require_table_privilege(_relid(relation), "SELECT", "orochi.show_chunks")
    ht, selection = _selection(relation, older_than, newer_than, created_before, created_after, need_one=False)
    return [c.name for c in chunks.select_chunks(ht.relid, selection)]


@sql_function("drop_chunks")
def drop_chunks(relation: Any, older_than: Any = None, newer_than: Any = None, verbose: bool | None = False,
                created_before: Any = None, created_after: Any = None) -> list[str]:
    """orochi.drop_chunks: drop those chunks (stripes and delta rows) and
    return their names; ``verbose`` reports each one (INFO)."""
    ht, selection = _selection(relation, older_than, newer_than, created_before, created_after, need_one=True)
    check_owner(ht.relid)
    dropped = chunks.drop_chunks(ht.relid, selection)
    if verbose:
        for name in dropped:
            spi.log("info", f"dropping chunk {name}")
    return dropped


_STRIPE_STATS = """
SELECT c.chunk_id, count(s.stripe_id), coalesce(sum(s.row_count - s.deleted_count), 0),
       coalesce(sum(s.raw_bytes), 0), coalesce(sum(s.file_bytes), 0)
  FROM orochi.hypertable_chunks c
  LEFT JOIN orochi.columnar_stripes s ON s.chunk_id = c.chunk_id
 WHERE c.relid = ANY ($1)
 GROUP BY c.chunk_id
"""


@sql_function("hypertable_chunk_stats")
def hypertable_chunk_stats() -> Iterator[tuple]:
    """Per chunk of the hypertables the caller may read (SELECT on the
    table): (chunk_id, stripes, live stripe rows, delta rows in its range,
    raw bytes, file bytes) — the numbers of the ``orochi.chunks`` view."""
    from orochi_fdw.columnar import delta

    readable = set()
    for (relid,) in spi.execute("SELECT relid::oid FROM orochi.hypertables", internal=True).rows:
        if privileges.has_table_privilege(int(relid), "SELECT"):
            readable.add(int(relid))
    if not readable:
        return
    stats = {int(r[0]): [int(r[1]), int(r[2]), 0, int(r[3]), int(r[4])]
             for r in spi.execute(_STRIPE_STATS, [sorted(readable)], types=["oid[]"], internal=True).rows}
    for ht_row in spi.execute("SELECT relid::oid, time_attnum, time_type::text, chunk_interval"
                              "  FROM orochi.hypertables WHERE relid = ANY ($1)",
                              [sorted(readable)], types=["oid[]"], internal=True).rows:
        relid, attnum, time_type, interval = int(ht_row[0]), int(ht_row[1]), ht_row[2], int(ht_row[3])
        if not delta.exists(relid):
            continue
        starts = {int(s): int(c) for c, s in spi.prepared(
            "SELECT chunk_id, range_start FROM orochi.hypertable_chunks WHERE relid = $1",
            ["oid"], internal=True).execute([relid]).rows}
        for value, count in spi.execute(
                f"SELECT c{int(attnum)}, count(*) FROM {delta.qualified_name(relid)} GROUP BY 1",
                internal=True).rows:
            if value is None:
                continue
            try:
                key = timekeys.key_from_value(value, time_type)
            except OrochiError:
                continue
            chunk_id = starts.get(timekeys.chunk_start(key, interval))
            if chunk_id is not None and chunk_id in stats:
                stats[chunk_id][2] += int(count)
    for chunk_id, (nstripes, rows, delta_rows, raw, file_bytes) in stats.items():
        yield (chunk_id, nstripes, rows, delta_rows, raw, file_bytes)
