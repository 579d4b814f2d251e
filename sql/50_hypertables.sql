-- Hypertables: orochi columnar tables cut into chunks by a time column
-- (docs/hypertables.md).  Time keys are TimescaleDB's: microseconds since
-- 1970-01-01 for timestamptz, timestamp (its wall clock read as UTC) and
-- date (its midnight); the value itself for smallint, integer and bigint.

CREATE TABLE orochi.hypertables (
    relid               regclass PRIMARY KEY,     -- the orochi foreign table (by name in dumps)
    time_column         name NOT NULL,
    time_attnum         smallint NOT NULL,
    time_type           regtype NOT NULL,         -- timestamptz, timestamp, date, smallint, integer, bigint
    chunk_interval      bigint NOT NULL,          -- in time keys
    track_invalidations boolean NOT NULL DEFAULT false,  -- set by continuous aggregates
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE orochi.hypertable_chunk_id_seq;

-- One row per chunk: the time keys [range_start, range_end).
CREATE TABLE orochi.hypertable_chunks (
    chunk_id     bigint PRIMARY KEY DEFAULT nextval('orochi.hypertable_chunk_id_seq'),
    relid        oid NOT NULL,
    range_start  bigint NOT NULL,   -- time key, inclusive
    range_end    bigint NOT NULL,   -- time key, exclusive
    -- when the chunk was created (the clock, as TimescaleDB's creation_time:
    -- show_chunks / drop_chunks select by it with created_before / created_after)
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (relid, range_start)
);

-- The chunk a stripe belongs to; NULL outside hypertables.
ALTER TABLE orochi.columnar_stripes ADD COLUMN chunk_id bigint;
CREATE INDEX columnar_stripes_chunk_idx ON orochi.columnar_stripes (chunk_id) WHERE chunk_id IS NOT NULL;

-- One row per writing statement into a hypertable whose track_invalidations
-- is true: the lowest and greatest time key it wrote, updated or deleted
-- (inclusive).
CREATE TABLE orochi.hypertable_invalidation_log (
    relid     regclass NOT NULL,
    lowest    bigint NOT NULL,
    greatest  bigint NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hypertable_invalidation_log_relid_idx ON orochi.hypertable_invalidation_log (relid);

-- (Granted to no one: orochi.chunks shows each role the chunks of the
-- hypertables it may read.)

-- Make an orochi columnar table a hypertable chunked by time_column.
-- Timestamp-like time columns (timestamptz, timestamp, date) take an
-- interval; integer time columns take the overload with an integer
-- chunk_time_interval.
CREATE FUNCTION orochi.create_hypertable(
    relation regclass, time_column name,
    chunk_time_interval interval DEFAULT interval '7 days',
    if_not_exists boolean DEFAULT false, migrate_data boolean DEFAULT false,
    OUT hypertable_id oid, OUT schema_name name, OUT table_name name, OUT created boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.create_hypertable(
    relation regclass, time_column name, chunk_time_interval bigint,
    if_not_exists boolean DEFAULT false, migrate_data boolean DEFAULT false,
    OUT hypertable_id oid, OUT schema_name name, OUT table_name name, OUT created boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Chunks of a hypertable lying wholly before older_than and / or wholly at
-- or after newer_than (an interval: now() minus it; a timestamptz,
-- timestamp or date; an integer for integer time columns), or created
-- before created_before and / or at or after created_after (an interval:
-- now() minus it; a timestamptz, timestamp or date).  TimescaleDB's
-- arguments, in its order.
CREATE FUNCTION orochi.show_chunks(relation regclass, older_than "any" DEFAULT NULL,
                                   newer_than "any" DEFAULT NULL, created_before "any" DEFAULT NULL,
                                   created_after "any" DEFAULT NULL)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STABLE;

-- Drop those chunks: their stripes and the delta rows in their ranges
-- (verbose: an INFO line per chunk dropped).
CREATE FUNCTION orochi.drop_chunks(relation regclass, older_than "any" DEFAULT NULL,
                                   newer_than "any" DEFAULT NULL, verbose boolean DEFAULT false,
                                   created_before "any" DEFAULT NULL, created_after "any" DEFAULT NULL)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Internal: per chunk, the stripe count, live stripe rows, raw and file
-- bytes, and the delta rows in its range.
CREATE FUNCTION orochi.hypertable_chunk_stats(
    OUT chunk_id bigint, OUT stripes bigint, OUT stripe_rows bigint, OUT delta_rows bigint,
    OUT before_compression_bytes bigint, OUT after_compression_bytes bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STABLE;

-- A time key as timestamptz (the chunk ranges of timestamp-like time columns).
CREATE FUNCTION orochi._time_key_to_timestamptz(key bigint)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN key >= 9223372036854775807 THEN 'infinity'::timestamptz
            WHEN key <= -9223372036854775807 THEN '-infinity'::timestamptz
            -- computed on timestamp (no time zone, so no daylight saving
            -- shifts in the session's zone) and then read as UTC
            ELSE (timestamp '1970-01-01 00:00:00'
                  + make_interval(days => (key / 86400000000)::int)
                  + make_interval(secs => (key % 86400000000) / 1000000.0)) AT TIME ZONE 'UTC' END;

-- The view orochi.chunks (every chunk with its range, rows, bytes and
-- compression state) is made in 60_compression.sql, with the compression
-- columns of the chunks.

-- DROP of a hypertable forgets its hypertable and chunk rows.  SECURITY
-- DEFINER: whoever may drop the table may forget its rows (only rows of
-- tables really dropped are touched).
CREATE FUNCTION orochi.hypertables_on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
BEGIN
    SELECT array_agg(objid) INTO dropped
      FROM pg_event_trigger_dropped_objects()
     WHERE classid = 'pg_catalog.pg_class'::regclass
       AND objsubid = 0
       AND object_type = 'foreign table';
    IF dropped IS NOT NULL AND to_regclass('orochi.hypertables') IS NOT NULL THEN
        DELETE FROM orochi.hypertable_chunks WHERE relid = ANY (dropped);
        DELETE FROM orochi.hypertable_invalidation_log WHERE relid = ANY (dropped);
        DELETE FROM orochi.hypertables WHERE relid = ANY (dropped);
    END IF;
END;
$$;

CREATE EVENT TRIGGER orochi_hypertables_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.hypertables_on_sql_drop();

-- A change of a hypertable's catalog rows (a chunk made, dropped or
-- compressed; invalidation logging switched on or off) invalidates the
-- table's relcache entry: the bridge's one-row INSERT fast path routes rows
-- into the chunks it last learned (pgext/fdw_modify.c).
CREATE FUNCTION orochi._hypertable_catalog_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'orochi_hypertable_catalog_changed'
LANGUAGE C;

CREATE TRIGGER hypertables_changed AFTER UPDATE OR DELETE ON orochi.hypertables
    FOR EACH ROW EXECUTE FUNCTION orochi._hypertable_catalog_changed();
CREATE TRIGGER hypertable_chunks_changed AFTER INSERT OR UPDATE OR DELETE ON orochi.hypertable_chunks
    FOR EACH ROW EXECUTE FUNCTION orochi._hypertable_catalog_changed();
