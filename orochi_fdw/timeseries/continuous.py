"""Continuous aggregates: an aggregate query over a hypertable, grouped by
time bucket, materialized in an orochi columnar table and refreshed bucket by
bucket from the raw rows (docs/continuous-aggregates.md).

Each continuous aggregate has three relations (sql/65_continuous_aggregates.sql):
the view users query, the *direct view* (the query as given, over the raw
rows) and the *materialization table*.  The query is analysed with pglast
(:mod:`orochi_fdw.timeseries.continuous_query`); a refresh takes it back from
the direct view (``pg_get_viewdef``, so renames and the search path do not
matter), restricts it to whole-bucket time ranges and replaces the
materialized rows of those buckets.

What must be recomputed is tracked in time keys
(:mod:`orochi_fdw.timeseries.timekeys`): writes to the hypertable log the
range of keys they touched in ``orochi.hypertable_invalidation_log``; a
refresh moves those rows into ``orochi.continuous_agg_invalidations`` (one
copy per continuous aggregate of the hypertable), recomputes the buckets of
the invalidated ranges that lie inside its window, and cuts the refreshed
window out of the log.  A new continuous aggregate starts with all time
invalidated.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Sequence

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.bridge.faults import fault_point
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.bridge.types import Interval, SpecialValue
from orochi_fdw.errors import SPIError
from orochi_fdw.timeseries import hypertable, timekeys
from orochi_fdw.timeseries.continuous_query import (Bucket, ContinuousAggregateError, ParsedQuery, find_bucket,
                                                    parse_query, with_time_range)
from orochi_fdw.timeseries.timekeys import KEY_MAX, KEY_MIN

#: the job kind of refresh policies (orochi_fdw.jobs.registry)
POLICY_PROC = "policy_refresh_continuous_aggregate"

#: an unbounded upper end of a range of keys (exclusive); the last key an
#: inclusive range can end at is UNBOUNDED_HIGH - 1
UNBOUNDED_HIGH = KEY_MAX
UNBOUNDED_LOW = KEY_MIN

#: the watermark function of the real-time view, by time column type
_WATERMARK_FUNCTIONS = {
    "timestamp with time zone": "orochi._cagg_watermark_timestamptz",
    "timestamp without time zone": "orochi._cagg_watermark_timestamp",
    "date": "orochi._cagg_watermark_date",
}


@dataclass(frozen=True)
class TimeDimension:
    """A hypertable's time column.

    Attributes:
        relid: the hypertable.
        column: the time column's name.
        type_name: its type as regtype text (``timestamp with time zone`` ...).
    """

    relid: int
    column: str
    type_name: str

    @property
    def is_integer(self) -> bool:
        return timekeys.is_integer_type(self.type_name)

    @property
    def watermark_function(self) -> str:
        return _WATERMARK_FUNCTIONS.get(self.type_name, "orochi._cagg_watermark_integer")


@dataclass(frozen=True)
class ContinuousAggregate:
    """A row of ``orochi.continuous_aggs``."""

    view_relid: int
    direct_relid: int
    mat_relid: int
    hypertable_relid: int
    bucket_column: str
    bucket_width: str
    materialized_only: bool
    watermark: int | None

    @property
    def name(self) -> str:
        """The view's name, qualified as needed."""
        return _relation_name(self.view_relid)


_CAGG_COLUMNS = ("view_relid::oid, direct_relid::oid, mat_relid::oid, hypertable_relid::oid, bucket_column, bucket_width, "
                 "materialized_only, watermark")


def _oid(rel: Any) -> int:
    """The oid of a regclass argument (the bridge passes its text form)."""
    if rel is None:
        raise ContinuousAggregateError("continuous_aggregate must not be NULL", "22004")
    if isinstance(rel, int):
        return rel
    return int(spi.execute("SELECT $1::regclass::oid", [str(rel)], types=["text"]).scalar())


def _relation_name(relid: int) -> str:
    return str(spi.execute("SELECT $1::regclass::text", [int(relid)], types=["oid"]).scalar())


def _cagg_from_row(row: Sequence[Any]) -> ContinuousAggregate:
    return ContinuousAggregate(int(row[0]), int(row[1]), int(row[2]), int(row[3]), str(row[4]), str(row[5]),
                               bool(row[6]), None if row[7] is None else int(row[7]))


def get(view_relid: int, lock: bool = False) -> ContinuousAggregate | None:
    """The continuous aggregate whose view is ``view_relid``, or None.

    Args:
        view_relid: the view's oid.
        lock: lock its catalog row (FOR UPDATE) until the end of the
            transaction, so that refreshes of one aggregate take turns.
    """
    suffix = " FOR UPDATE" if lock else ""
    rows = spi.execute(f"SELECT {_CAGG_COLUMNS} FROM orochi.continuous_aggs WHERE view_relid = $1{suffix}",
                       [int(view_relid)], types=["oid"], internal=True)
    return _cagg_from_row(rows[0]) if rows else None


def require(view_relid: int, lock: bool = False) -> ContinuousAggregate:
    """Like :func:`get`, for a relation that must be a continuous aggregate.

    Raises:
        ContinuousAggregateError: it is not one (42809, wrong_object_type).
    """
    cagg = get(view_relid, lock)
    if cagg is None:
        raise ContinuousAggregateError(f'relation "{_relation_name(view_relid)}" is not a continuous aggregate',
                                       "42809", hint="See the view orochi.continuous_aggregates.")
    return cagg


def _time_dimension(relid: int) -> TimeDimension | None:
    """The time column of a hypertable, or None if ``relid`` is not one."""
    table = hypertable.get(int(relid))
    if table is None:
        return None
    return TimeDimension(table.relid, table.time_column, str(table.time_type))


# ---------------------------------------------------------------- creation


def _resolve_hypertable(parsed: ParsedQuery) -> TimeDimension:
    relid = spi.execute("SELECT to_regclass($1)::oid", [parsed.relation_name], types=["text"]).scalar()
    if relid is None:
        raise ContinuousAggregateError(f'relation "{parsed.relation_name}" does not exist', "42P01")
    dimension = _time_dimension(int(relid))
    if dimension is None:
        raise ContinuousAggregateError(
            f'invalid continuous aggregate query: "{_relation_name(int(relid))}" is not a hypertable', "0A000",
            hint="A continuous aggregate reads one hypertable: see orochi.create_hypertable.")
    return dimension


def _quoted_name(name: str) -> str:
    """A possibly schema-qualified name given as text, quoted for SQL."""
    try:
        parts = spi.execute("SELECT parse_ident($1)", [name], types=["text"]).scalar()
    except SPIError as exc:
        raise ContinuousAggregateError(f'invalid continuous aggregate name "{name}"', "42602") from exc
    if not parts or len(parts) > 2:
        raise ContinuousAggregateError(f'invalid continuous aggregate name "{name}"', "42602")
    return ".".join(spi.quote_ident(p) for p in parts)


def _view_columns(relid: int, internal: bool = False) -> list[tuple[str, str]]:
    """(name, type SQL) of each column of a view, in order; ``internal``:
    the type names as internal statements (search path pg_catalog) need them."""
    return [(r[0], r[1]) for r in spi.execute(
        "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
        " WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum", [int(relid)], types=["oid"],
        internal=internal)]


def _require_owner(cagg: ContinuousAggregate, action: str) -> None:
    """Changing or refreshing a continuous aggregate is for its owner (the
    view's), as REFRESH MATERIALIZED VIEW is."""
    privileges.require_owner(cagg.view_relid, action)


_SCHEMA_OBJECTS = """
SELECT classid::oid, objid::oid FROM pg_catalog.pg_depend
 WHERE refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
   AND refobjid = 'orochi'::pg_catalog.regnamespace AND deptype = 'n'
"""


def _create_direct_view(direct_name: str, query: str) -> None:
    """CREATE VIEW orochi._direct_view_<id> AS <query>, then given to the
    extension owner (no other role owns anything in schema orochi: an owner
    could rename its object to a name Orochi gives meaning to).

    The query is parsed as the caller's statement (with the caller's search
    path and rights; parsing it with the extension owner's would run, as
    that role, whatever input functions its literals call).  A role without
    CREATE on schema orochi gets it for this one statement, within the
    transaction; anything else that appears in the schema meanwhile undoes
    the whole transaction.  The view is never queried: refreshes take its
    text back (pg_get_viewdef) and run it as their caller.
    """
    allowed = spi.execute("SELECT pg_catalog.has_schema_privilege('orochi', 'CREATE')").scalar()
    if allowed:
        spi.execute(f"CREATE VIEW {direct_name} AS {query}")
        spi.execute(f"ALTER VIEW {direct_name} OWNER TO CURRENT_USER", internal=True)
        return
    role = spi.quote_ident(str(spi.execute("SELECT current_user::text").scalar()))
    before = {tuple(r) for r in spi.execute(_SCHEMA_OBJECTS, internal=True).rows}
    spi.execute(f"GRANT CREATE ON SCHEMA orochi TO {role}", internal=True)
    try:
        spi.execute(f"CREATE VIEW {direct_name} AS {query}")
    finally:
        spi.execute(f"REVOKE CREATE ON SCHEMA orochi FROM {role}", internal=True)
    direct = int(spi.execute("SELECT $1::pg_catalog.regclass::oid", [direct_name], types=["text"],
                             internal=True).scalar())
    pg_class = int(spi.execute("SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::oid", internal=True).scalar())
    new = {tuple(r) for r in spi.execute(_SCHEMA_OBJECTS, internal=True).rows} - before
    if new - {(pg_class, direct)}:
        raise ContinuousAggregateError(
            "objects other than the continuous aggregate's own appeared in schema orochi while it was created",
            "42501")
    spi.execute(f"ALTER VIEW {direct_name} OWNER TO CURRENT_USER", internal=True)


@sql_function("create_continuous_aggregate")
def create_continuous_aggregate(name: str, query: str, materialized_only: bool | None = False,
                                with_data: bool | None = True) -> int:
    """Create a continuous aggregate (``orochi.create_continuous_aggregate``).

    Args:
        name: the view's name (may be schema-qualified).
        query: the aggregate query over one hypertable.
        materialized_only: the view shows only materialized buckets (else
            real-time: the query on raw rows above the watermark too).
        with_data: refresh all buckets now.

    Returns:
        The view's oid.

    Raises:
        ContinuousAggregateError: a name already taken (42P07), a query of an
            unsupported shape (0A000) or over a relation that is not a
            hypertable.
        SPIError: the query does not run (Postgres's own error).
    """
    if name is None or query is None:
        raise ContinuousAggregateError("name and query of a continuous aggregate must not be NULL", "22004")
    view_name = _quoted_name(name)
    if spi.execute("SELECT to_regclass($1)", [view_name], types=["text"]).scalar() is not None:
        raise ContinuousAggregateError(f'relation "{name}" already exists', "42P07")
    parsed = parse_query(query)
    dimension = _resolve_hypertable(parsed)
    privileges.require_table_privilege(dimension.relid, "SELECT", "orochi.create_continuous_aggregate")
    bucket = find_bucket(parsed, dimension.column, dimension.type_name)
    agg_id = int(spi.execute("SELECT nextval('orochi.continuous_agg_id_seq')", internal=True).scalar())
    direct_name = f"orochi._direct_view_{agg_id}"
    mat_name = f"orochi._materialized_{agg_id}"
    _create_direct_view(direct_name, query)
    direct_relid = int(spi.execute("SELECT $1::regclass::oid", [direct_name], types=["text"]).scalar())
    columns = _view_columns(direct_relid)
    # the width as Postgres typed it ('1 hour' given for an interval shows as 01:00:00)
    typed_width = find_bucket(_parse_view(direct_relid), dimension.column, dimension.type_name).width_sql
    width_text = str(spi.execute(f"SELECT ({typed_width})::text").scalar())
    bucket_column = columns[bucket.position][0]
    # the materialization table: the extension owner's (only type names are
    # parsed), the caller granted what reading and refreshing need
    column_list = ", ".join(f"{spi.quote_ident(c)} {t}" for c, t in _view_columns(direct_relid, internal=True))
    spi.execute(f"CREATE FOREIGN TABLE {mat_name} ({column_list}) SERVER orochi", internal=True)
    creator = spi.quote_ident(str(spi.execute("SELECT current_user::text").scalar()))
    spi.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {mat_name} TO {creator}", internal=True)
    mat_relid = int(spi.execute("SELECT $1::regclass::oid", [mat_name], types=["text"]).scalar())
    spi.execute(f"CREATE VIEW {view_name} AS {_materialized_select(mat_name, columns)}")
    view_relid = int(spi.execute("SELECT $1::regclass::oid", [view_name], types=["text"]).scalar())
    spi.execute(
        "INSERT INTO orochi.continuous_aggs (view_relid, direct_relid, mat_relid, hypertable_relid, "
        " bucket_column, bucket_width, materialized_only) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [view_relid, direct_relid, mat_relid, dimension.relid, bucket_column, width_text,
         bool(materialized_only)],
        types=["oid", "oid", "oid", "oid", "name", "text", "bool"], internal=True)
    spi.execute("INSERT INTO orochi.continuous_agg_invalidations (view_relid, lowest, greatest) "
                "VALUES ($1, $2, $3)", [view_relid, UNBOUNDED_LOW, UNBOUNDED_HIGH - 1],
                types=["oid", "int8", "int8"], internal=True)
    spi.execute("UPDATE orochi.hypertables SET track_invalidations = true WHERE relid = $1 "
                "AND NOT track_invalidations", [dimension.relid], types=["oid"], internal=True)
    cagg = require(view_relid)
    if not materialized_only:
        _replace_view(cagg)
    if with_data is None or with_data:
        refresh(cagg.view_relid, None, None)
    return view_relid


def _materialized_select(mat_name: str, columns: Sequence[tuple[str, str]], where: str | None = None) -> str:
    select = f"SELECT {', '.join(spi.quote_ident(c) for c, _ in columns)} FROM {mat_name}"
    return select if where is None else f"{select} WHERE {where}"


def _current_query(cagg: ContinuousAggregate, dimension: TimeDimension) -> tuple[ParsedQuery, Bucket]:
    """The query of a continuous aggregate as it is now (names as the
    current search path needs them), parsed, and its bucket."""
    parsed = _parse_view(cagg.direct_relid)
    return parsed, find_bucket(parsed, dimension.column, dimension.type_name)


def _parse_view(relid: int) -> ParsedQuery:
    """The query of a view as Postgres prints it now, parsed."""
    definition = spi.execute("SELECT pg_get_viewdef($1)", [int(relid)], types=["oid"]).scalar()
    return parse_query(definition.strip().rstrip(";"))


def _dimension_of(cagg: ContinuousAggregate) -> TimeDimension:
    dimension = _time_dimension(cagg.hypertable_relid)
    if dimension is None:
        raise ContinuousAggregateError(
            f'the hypertable of continuous aggregate "{cagg.name}" is no longer a hypertable', "55000")
    return dimension


def _replace_view(cagg: ContinuousAggregate) -> None:
    """(Re)define the view users query, real-time or materialized only."""
    mat_name = _relation_name(cagg.mat_relid)
    columns = _view_columns(cagg.mat_relid)
    view_name = _relation_name(cagg.view_relid)
    if cagg.materialized_only:
        sql = _materialized_select(mat_name, columns)
    else:
        dimension = _dimension_of(cagg)
        parsed, _ = _current_query(cagg, dimension)
        # a scalar subquery: computed once per query (an InitPlan), a parameter for the scans;
        # the aggregate named by its materialization table as a regclass constant, which a
        # dump prints by name (an oid would name nothing in the restored database)
        mat_literal = spi.execute("SELECT quote_literal($1)", [mat_name], types=["text"]).scalar()
        watermark = f"(SELECT {dimension.watermark_function}({mat_literal}::regclass))"
        materialized = _materialized_select(mat_name, columns,
                                            f"{spi.quote_ident(cagg.bucket_column)} < {watermark}")
        live = with_time_range(parsed, dimension.column, watermark, None)
        sql = f"{materialized} UNION ALL {live}"
    spi.execute(f"CREATE OR REPLACE VIEW {view_name} AS {sql}")


@sql_function("alter_continuous_aggregate")
def alter_continuous_aggregate(view_relid: int, materialized_only: bool | None) -> None:
    """Switch a continuous aggregate between real-time and materialized only.

    Raises:
        ContinuousAggregateError: not a continuous aggregate (42809).
    """
    cagg = require(_oid(view_relid), lock=True)
    _require_owner(cagg, "orochi.alter_continuous_aggregate")
    if materialized_only is None or bool(materialized_only) == cagg.materialized_only:
        return
    spi.execute("UPDATE orochi.continuous_aggs SET materialized_only = $2 WHERE view_relid = $1",
                [cagg.view_relid, bool(materialized_only)], types=["oid", "bool"], internal=True)
    _replace_view(require(cagg.view_relid))


# ---------------------------------------------------------------- refresh


@dataclass
class RefreshResult:
    """What a refresh did.

    Attributes:
        ranges: the time ranges (keys, [start, end), unbounded ends at the
            key scale's extremes) whose buckets were recomputed.
        deleted_rows: materialized rows removed.
        inserted_rows: materialized rows written.
    """

    ranges: list[tuple[int, int]]
    deleted_rows: int = 0
    inserted_rows: int = 0


class _Buckets:
    """Bucket arithmetic of one continuous aggregate, in SQL (the bucket
    function as the query calls it) on keys."""

    def __init__(self, bucket: Bucket, dimension: TimeDimension):
        self.dimension = dimension
        value = f"CAST($1 AS {dimension.type_name})"
        self._start_sql = f"SELECT {bucket.applied_to(value)}"
        start = bucket.applied_to("v")
        self._bounds_sql = (f"SELECT {start}, CAST({start} + {bucket.width_sql} AS {dimension.type_name}) "
                            f"FROM unnest(CAST($1 AS {dimension.type_name}[])) AS u(v)")

    def _key(self, value: Any) -> int:
        return timekeys.key_from_value(value, self.dimension.type_name, self.dimension.column)

    def _value(self, key: int) -> Any:
        return timekeys.param_value(key, self.dimension.type_name)

    def bounds(self, keys: Sequence[int]) -> list[tuple[int, int]]:
        """(start, end) keys of the bucket holding each key."""
        if not keys:
            return []
        rows = spi.execute(self._bounds_sql, [[self._value(k) for k in keys]])
        return [(self._key(s), self._key(e)) for s, e in rows]

    def ceil(self, key: int) -> int:
        """The first bucket start at or after ``key``."""
        start, end = self.bounds([key])[0]
        return key if start == key else end

    def floor(self, key: int) -> int:
        """The start of the bucket holding ``key``."""
        return self.bounds([key])[0][0]


def _window_key(value: Any, dimension: TimeDimension, which: str) -> int | None:
    """The key of a refresh window bound, None for unbounded (NULL, infinity).

    Raises:
        ContinuousAggregateError: a value of a type that does not fit the time
            column (42804, datatype_mismatch).
    """
    if value is None:
        return None
    if isinstance(value, str):  # an untyped literal: read as the time column's type
        value = spi.execute(f"SELECT CAST($1 AS {dimension.type_name})", [value], types=["text"]).scalar()
    if isinstance(value, SpecialValue) and value.is_infinite:
        return None
    fits = (isinstance(value, int) and not isinstance(value, bool)) if dimension.is_integer else \
        isinstance(value, (datetime.date, SpecialValue))
    if not fits:
        expected = "an integer" if dimension.is_integer else "a timestamptz, timestamp or date"
        raise ContinuousAggregateError(
            f'invalid {which} for the time column "{dimension.column}" of type {dimension.type_name}', "42804",
            hint=f"Pass {expected}, or NULL for no bound.")
    if not dimension.is_integer and not isinstance(value, SpecialValue):
        # a timestamptz for a timestamp column (or the reverse) means what a cast means
        value = spi.execute(f"SELECT CAST($1 AS {dimension.type_name})", [value]).scalar()
    return timekeys.key_from_value(value, dimension.type_name, dimension.column)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent ranges ([start, end)) covering the same keys."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _move_invalidations(hypertable_relid: int) -> None:
    """Move the hypertable's logged writes into the invalidation log of each
    of its continuous aggregates."""
    spi.execute(
        "WITH moved AS (DELETE FROM orochi.hypertable_invalidation_log WHERE relid = $1 "
        "               RETURNING lowest, greatest) "
        "INSERT INTO orochi.continuous_agg_invalidations (view_relid, lowest, greatest) "
        "SELECT c.view_relid, m.lowest, m.greatest FROM moved m "
        "  JOIN orochi.continuous_aggs c ON c.hypertable_relid = $1",
        [int(hypertable_relid)], types=["oid"], internal=True)


def _invalidated_ranges(cagg: ContinuousAggregate, buckets: _Buckets, low: int, high: int) -> list[tuple[int, int]]:
    """The whole-bucket ranges inside [low, high) to recompute."""
    rows = spi.execute(
        "SELECT lowest, greatest FROM orochi.continuous_agg_invalidations "
        " WHERE view_relid = $1 AND greatest >= $2 AND lowest < $3",
        [cagg.view_relid, low, high], types=["oid", "int8", "int8"], internal=True)
    # inclusive key ranges clipped to the window, merged before asking SQL for buckets
    clipped = _merge([(max(lo, low), min(hi, high - 1) + 1) for lo, hi in rows])
    finite = [k for start, end in clipped for k in (start, end - 1)
              if UNBOUNDED_LOW < k < UNBOUNDED_HIGH - 1]
    bounds = dict(zip(finite, buckets.bounds(finite)))
    ranges = []
    for start, end in clipped:
        first = start if start == UNBOUNDED_LOW else bounds[start][0]
        stop = UNBOUNDED_HIGH if end - 1 >= UNBOUNDED_HIGH - 1 else bounds[end - 1][1]
        ranges.append((max(first, low), min(stop, high)))
    return _merge(ranges)


def _range_condition(column: str, start: int, end: int, dimension: TimeDimension) -> tuple[str, list[Any]]:
    """SQL of ``start <= column < end`` with its parameters (the unbounded
    sides left out), and an always-true condition for an unbounded range."""
    parts, params = [], []
    if start != UNBOUNDED_LOW:
        params.append(timekeys.param_value(start, dimension.type_name))
        parts.append(f"{column} >= CAST(${len(params)} AS {dimension.type_name})")
    if end != UNBOUNDED_HIGH:
        params.append(timekeys.param_value(end, dimension.type_name))
        parts.append(f"{column} < CAST(${len(params)} AS {dimension.type_name})")
    return (" AND ".join(parts) or "true"), params


def _refresh_range(cagg: ContinuousAggregate, parsed: ParsedQuery, dimension: TimeDimension,
                   mat_name: str, start: int, end: int, result: RefreshResult) -> None:
    """Replace the materialized rows of the buckets in [start, end) by the
    query's rows over that time range."""
    where, params = _range_condition(spi.quote_ident(cagg.bucket_column), start, end, dimension)
    deleted = spi.execute(f"DELETE FROM {mat_name} WHERE {where}", params)
    bounds = [f"CAST(${i + 1} AS {dimension.type_name})" for i in range(len(params))]
    lower = bounds.pop(0) if start != UNBOUNDED_LOW else None
    upper = bounds.pop(0) if end != UNBOUNDED_HIGH else None
    query = with_time_range(parsed, dimension.column, lower, upper)
    inserted = spi.execute(f"INSERT INTO {mat_name} {query}", params)
    result.deleted_rows += deleted.rowcount
    result.inserted_rows += inserted.rowcount


def _cut_invalidations(cagg: ContinuousAggregate, low: int, high: int) -> None:
    """Remove [low, high) from the continuous aggregate's invalidation log."""
    spi.execute(
        "WITH cut AS (DELETE FROM orochi.continuous_agg_invalidations "
        "              WHERE view_relid = $1 AND greatest >= $2 AND lowest < $3 RETURNING lowest, greatest) "
        "INSERT INTO orochi.continuous_agg_invalidations (view_relid, lowest, greatest) "
        "SELECT $1, lowest, $4 FROM cut WHERE lowest < $2 "
        "UNION ALL SELECT $1, $3, greatest FROM cut WHERE greatest >= $3",
        [cagg.view_relid, low, high, max(low - 1, KEY_MIN)], types=["oid", "int8", "int8", "int8"], internal=True)


def _update_watermark(cagg: ContinuousAggregate, bucket: Bucket, dimension: TimeDimension, mat_name: str) -> None:
    """The watermark: the end of the last materialized bucket."""
    column = spi.quote_ident(cagg.bucket_column)
    end = spi.execute(f"SELECT CAST(max({column}) + {bucket.width_sql} AS {dimension.type_name}) "
                      f"FROM {mat_name}").scalar()
    key = None if end is None else timekeys.key_from_value(end, dimension.type_name, dimension.column)
    spi.execute("UPDATE orochi.continuous_aggs SET watermark = $2 WHERE view_relid = $1",
                [cagg.view_relid, key], types=["oid", "int8"], internal=True)


def _lock_for_refresh(cagg: ContinuousAggregate) -> ContinuousAggregate:
    """Lock the catalog rows of every continuous aggregate of the hypertable
    until the end of the transaction, and read the aggregate again.

    Refreshes of one hypertable's aggregates take turns: each moves the
    hypertable's log into all of their logs, and cuts its own log by what it
    read, which a concurrent move into it would make unsound.
    """
    spi.execute("SELECT 1 FROM orochi.continuous_aggs WHERE hypertable_relid = $1 ORDER BY view_relid FOR UPDATE",
                [cagg.hypertable_relid], types=["oid"], internal=True)
    return require(cagg.view_relid)


def refresh(view_relid: int, window_start: Any, window_end: Any) -> RefreshResult:
    """Refresh the buckets of a continuous aggregate lying wholly inside
    [window_start, window_end), in the current transaction.

    Args:
        view_relid: the continuous aggregate's view.
        window_start: inclusive lower bound (a value of the time column's
            kind), None for unbounded.
        window_end: exclusive upper bound, None for unbounded.

    Returns:
        What was refreshed.

    Raises:
        ContinuousAggregateError: not a continuous aggregate, or bounds of the
            wrong type.
    """
    cagg = require(view_relid)
    _require_owner(cagg, "orochi.refresh_continuous_aggregate")
    cagg = _lock_for_refresh(cagg)
    dimension = _dimension_of(cagg)
    _renew_view_of_0_1(cagg)
    start_key = _window_key(window_start, dimension, "window_start")
    end_key = _window_key(window_end, dimension, "window_end")
    if start_key is not None and end_key is not None and start_key >= end_key:
        raise ContinuousAggregateError(
            f'invalid refresh window for continuous aggregate "{cagg.name}": window_start must be before window_end',
            "22023")
    parsed, bucket = _current_query(cagg, dimension)
    buckets = _Buckets(bucket, dimension)
    low = UNBOUNDED_LOW if start_key is None else buckets.ceil(start_key)
    high = UNBOUNDED_HIGH if end_key is None else buckets.floor(end_key)
    result = RefreshResult([])
    if low >= high:
        spi.notice(f'continuous aggregate "{cagg.name}" is already up-to-date: '
                   "the window holds no whole bucket")
        return result
    _move_invalidations(cagg.hypertable_relid)
    result.ranges = _invalidated_ranges(cagg, buckets, low, high)
    mat_name = _relation_name(cagg.mat_relid)
    for start, end in result.ranges:
        _refresh_range(cagg, parsed, dimension, mat_name, start, end, result)
    _cut_invalidations(cagg, low, high)
    if result.ranges:
        _update_watermark(cagg, bucket, dimension, mat_name)
    else:
        spi.notice(f'continuous aggregate "{cagg.name}" is already up-to-date')
    fault_point("refresh:before_commit")
    return result


def _renew_view_of_0_1(cagg: ContinuousAggregate) -> None:
    """A real-time view made by orochi 0.1 names its aggregate by the view's
    oid, which a dump cannot carry; it is made again in the current form
    (the extension's update script may not replace users' views)."""
    if cagg.materialized_only:
        return
    definition = spi.execute("SELECT pg_get_viewdef($1)", [cagg.view_relid], types=["oid"]).scalar() or ""
    if f"(({cagg.view_relid})::oid)" in definition:
        _replace_view(cagg)


@sql_function("refresh_continuous_aggregate")
def refresh_continuous_aggregate(view_relid: int, window_start: Any, window_end: Any) -> None:
    """``orochi.refresh_continuous_aggregate(regclass, window_start, window_end)``."""
    refresh(_oid(view_relid), window_start, window_end)


# ---------------------------------------------------------------- drop


@sql_function("drop_continuous_aggregate")
def drop_continuous_aggregate(view_relid: int) -> None:
    """DROP VIEW of a continuous aggregate; the event trigger removes the rest.

    Raises:
        ContinuousAggregateError: not a continuous aggregate (42809).
    """
    cagg = require(_oid(view_relid))
    _require_owner(cagg, "orochi.drop_continuous_aggregate")
    spi.execute(f"DROP VIEW {_relation_name(cagg.view_relid)}")


def _exists(relid: int) -> bool:
    return bool(spi.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = $1)", [int(relid)],
                            types=["oid"]).scalar())


@sql_function("continuous_aggregates_dropped")
def continuous_aggregates_dropped(dropped: list[int]) -> None:
    """Forget the continuous aggregates any of whose relations was dropped,
    drop their remaining relations and their refresh policy."""
    rows = spi.execute(
        f"DELETE FROM orochi.continuous_aggs WHERE view_relid = ANY ($1) OR direct_relid = ANY ($1) "
        f"OR mat_relid = ANY ($1) RETURNING {_CAGG_COLUMNS}", [[int(r) for r in dropped]], types=["oid[]"], internal=True)
    for cagg in map(_cagg_from_row, rows):
        spi.execute("DELETE FROM orochi.continuous_agg_invalidations WHERE view_relid = $1",
                    [cagg.view_relid], types=["oid"], internal=True)
        _delete_policy(cagg.mat_relid)
        for relid, kind in ((cagg.view_relid, "VIEW"), (cagg.direct_relid, "VIEW"),
                            (cagg.mat_relid, "FOREIGN TABLE")):
            if _exists(relid):
                spi.execute(f"DROP {kind} {_relation_name(relid)}")
        remaining = spi.execute("SELECT 1 FROM orochi.continuous_aggs WHERE hypertable_relid = $1",
                                [cagg.hypertable_relid], types=["oid"], internal=True)
        if not remaining and _exists(cagg.hypertable_relid):
            spi.execute("UPDATE orochi.hypertables SET track_invalidations = false WHERE relid = $1",
                        [cagg.hypertable_relid], types=["oid"], internal=True)
            spi.execute("DELETE FROM orochi.hypertable_invalidation_log WHERE relid = $1",
                        [cagg.hypertable_relid], types=["oid"], internal=True)


# ---------------------------------------------------------------- policies


def _delete_policy(mat_relid: int) -> None:
    """Delete the refresh policy of a materialization table, if any."""
    if spi.execute("SELECT to_regclass('orochi.jobs')", internal=True).scalar() is None:
        return
    from orochi_fdw.jobs import catalog as jobs

    existing = spi.execute("SELECT 1 FROM orochi.jobs WHERE proc_name = $1 AND relid = $2",
                           [POLICY_PROC, int(mat_relid)], types=["name", "oid"], internal=True)
    if existing:
        jobs.delete_jobs(POLICY_PROC, int(mat_relid), if_exists=True)


def _offset_config(value: Any, dimension: TimeDimension, which: str) -> Any:
    """A policy offset as stored in the job's config: an interval's text, an
    integer, or None.

    Raises:
        ContinuousAggregateError: an offset of the wrong type (42804).
    """
    if value is None:
        return None
    if dimension.is_integer:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        raise ContinuousAggregateError(f'invalid {which} for the integer time column "{dimension.column}"', "42804",
                                       hint=f"Pass an integer {which}, or NULL for no bound.")
    if isinstance(value, Interval):
        return str(spi.execute("SELECT $1::text", [value], types=["interval"]).scalar())
    raise ContinuousAggregateError(
        f'invalid {which} for the time column "{dimension.column}" of type {dimension.type_name}', "42804",
        hint=f"Pass an interval {which}, or NULL for no bound.")


@sql_function("add_continuous_aggregate_policy")
def add_continuous_aggregate_policy(view_relid: int, start_offset: Any, end_offset: Any,
                                    schedule_interval: Any, if_not_exists: bool | None = False) -> int:
    """Add a job refreshing [now() - start_offset, now() - end_offset).

    Returns:
        The job id.

    Raises:
        ContinuousAggregateError: not a continuous aggregate, offsets of the
            wrong type or a window of less than one bucket.
        DuplicateJobError: the continuous aggregate already has a policy.
    """
    from orochi_fdw.jobs import catalog as jobs

    cagg = require(_oid(view_relid))
    _require_owner(cagg, "orochi.add_continuous_aggregate_policy")
    dimension = _dimension_of(cagg)
    start = _offset_config(start_offset, dimension, "start_offset")
    end = _offset_config(end_offset, dimension, "end_offset")
    if schedule_interval is None:
        raise ContinuousAggregateError("schedule_interval must not be NULL", "22004")
    if start is not None and end is not None:
        if dimension.is_integer:
            too_small = start <= end
        else:
            too_small = bool(spi.execute("SELECT $1::interval <= $2::interval", [start, end],
                                         types=["text", "text"]).scalar())
        if too_small:
            raise ContinuousAggregateError(
                "policy refresh window too small: start_offset must be greater than end_offset", "22023",
                hint="The policy refreshes [now() - start_offset, now() - end_offset).")
    config = {"start_offset": start, "end_offset": end, "mat_hypertable_id": cagg.mat_relid}
    return jobs.add_job(POLICY_PROC, cagg.mat_relid, schedule_interval, config,
                        "Refresh Continuous Aggregate Policy", bool(if_not_exists))


@sql_function("remove_continuous_aggregate_policy")
def remove_continuous_aggregate_policy(view_relid: int, if_exists: bool | None = False) -> None:
    """Remove the refresh policy of a continuous aggregate.

    Raises:
        ContinuousAggregateError: not a continuous aggregate.
        JobNotFoundError: it has no policy and ``if_exists`` is false.
    """
    from orochi_fdw.jobs import catalog as jobs

    cagg = require(_oid(view_relid))
    _require_owner(cagg, "orochi.remove_continuous_aggregate_policy")
    jobs.delete_jobs(POLICY_PROC, cagg.mat_relid, bool(if_exists))


def _policy_now(dimension: TimeDimension) -> Any:
    """"now" of a policy window: now() for time columns, the greatest time
    value of the hypertable for integer time columns (None if it is empty)."""
    if not dimension.is_integer:
        return spi.execute("SELECT now()").scalar()
    return spi.execute(f"SELECT max({spi.quote_ident(dimension.column)}) "
                       f"FROM {_relation_name(dimension.relid)}").scalar()


def run_refresh(job_id: int, relid: int, config: dict) -> str:
    """The body of refresh policies: refresh [now() - start_offset,
    now() - end_offset) of the continuous aggregate whose materialization
    table is ``relid``.

    Args:
        job_id: the job.
        relid: the materialization table.
        config: ``start_offset``, ``end_offset`` (interval text, integers or None).

    Returns:
        A one-line summary.

    Raises:
        ContinuousAggregateError: ``relid`` is no continuous aggregate's.
    """
    row = spi.execute("SELECT view_relid::oid FROM orochi.continuous_aggs WHERE mat_relid = $1", [int(relid)],
                      types=["oid"], internal=True).scalar()
    if row is None:
        raise ContinuousAggregateError(f"job {job_id}: table {relid} is not a continuous aggregate's "
                                       "materialization table", "42809")
    cagg = require(int(row))
    dimension = _dimension_of(cagg)
    now = _policy_now(dimension)
    if dimension.is_integer and now is None:
        return f"continuous aggregate {cagg.name}: hypertable is empty, nothing to refresh"
    bounds = []
    for key in ("start_offset", "end_offset"):
        offset = (config or {}).get(key)
        if offset is None:
            bounds.append(None)
        elif dimension.is_integer:
            bounds.append(int(now) - int(offset))
        else:
            bounds.append(spi.execute("SELECT $1::timestamptz - $2::interval", [now, str(offset)],
                                      types=["timestamptz", "text"]).scalar())
    result = refresh(cagg.view_relid, bounds[0], bounds[1])
    return (f"refreshed continuous aggregate {cagg.name} in [{bounds[0]}, {bounds[1]}): "
            f"{len(result.ranges)} range(s), {result.deleted_rows} rows deleted, {result.inserted_rows} inserted")
