-- Continuous aggregates (docs/continuous-aggregates.md): an aggregate query
-- over a hypertable, grouped by time bucket, materialized in an orochi
-- columnar table and refreshed bucket by bucket from the raw rows.
--
-- For each continuous aggregate:
--   <name>                        the view users query (real-time: the
--                                 materialized buckets below the watermark
--                                 UNION ALL the query on raw rows above it)
--   orochi._direct_view_<id>      the query as given, over the raw rows
--   orochi._materialized_<id>     the materialized buckets (columnar)

CREATE SEQUENCE orochi.continuous_agg_id_seq;

CREATE TABLE orochi.continuous_aggs (
    view_relid         regclass PRIMARY KEY,     -- the view users query
    direct_relid       regclass NOT NULL UNIQUE, -- the query over the raw rows
    mat_relid          regclass NOT NULL UNIQUE, -- the materialization table
    hypertable_relid   regclass NOT NULL,        -- (regclass: by name in dumps)
    bucket_column      name NOT NULL,            -- the view's column holding the bucket
    bucket_width       text NOT NULL,            -- the bucket width, as text
    materialized_only  boolean NOT NULL DEFAULT false,
    -- time key (as in orochi.hypertable_invalidation_log) of the end of the
    -- last materialized bucket; NULL while nothing is materialized
    watermark          bigint,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX continuous_aggs_hypertable_idx ON orochi.continuous_aggs (hypertable_relid);

-- Time ranges (time keys, inclusive) of a continuous aggregate whose buckets
-- must be recomputed: moved here from orochi.hypertable_invalidation_log by
-- each refresh, and cut by the ranges it refreshes.  A new continuous
-- aggregate starts with one row covering all time.
CREATE TABLE orochi.continuous_agg_invalidations (
    view_relid  regclass NOT NULL,
    lowest      bigint NOT NULL,
    greatest    bigint NOT NULL
);
CREATE INDEX continuous_agg_invalidations_view_idx ON orochi.continuous_agg_invalidations (view_relid);

-- The watermark as a value of the time column's type, for the real-time
-- views: -infinity (or the smallest bigint) while nothing is materialized.
-- A time key counts microseconds as time, never days, so that the session's
-- time zone cannot shift it.  The argument names the continuous aggregate
-- by its materialization table (the views name it as a regclass constant,
-- so that a dump restores it by name) or by its view.  The views run it as
-- their reader, hence SECURITY DEFINER: the end of the last materialized
-- bucket is shown to any role, as the aggregate's query is in pg_views.
CREATE FUNCTION orochi._cagg_watermark(view_relid oid)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.watermark FROM orochi.continuous_aggs c WHERE c.mat_relid = $1 OR c.view_relid = $1 $$;

CREATE FUNCTION orochi._cagg_watermark_timestamptz(view_relid oid)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT CASE WHEN w IS NULL THEN '-infinity'::timestamptz
            ELSE timestamptz '1970-01-01 00:00:00+00' + (w / 1000000) * interval '1 second'
                 + (w % 1000000) * interval '1 microsecond' END
  FROM (SELECT orochi._cagg_watermark($1) AS w) s
$$;

CREATE FUNCTION orochi._cagg_watermark_timestamp(view_relid oid)
RETURNS timestamp
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT CASE WHEN w IS NULL THEN '-infinity'::timestamp
            ELSE timestamp '1970-01-01 00:00:00' + (w / 1000000) * interval '1 second'
                 + (w % 1000000) * interval '1 microsecond' END
  FROM (SELECT orochi._cagg_watermark($1) AS w) s
$$;

CREATE FUNCTION orochi._cagg_watermark_date(view_relid oid)
RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT CASE WHEN w IS NULL THEN '-infinity'::date
            ELSE date '1970-01-01' + (w / 86400000000)::int END
  FROM (SELECT orochi._cagg_watermark($1) AS w) s
$$;

CREATE FUNCTION orochi._cagg_watermark_integer(view_relid oid)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(orochi._cagg_watermark($1), -9223372036854775808) $$;

-- Create a continuous aggregate: the view "name" over the query (see the
-- file's head).  Returns the view.
CREATE FUNCTION orochi.create_continuous_aggregate(name text, query text,
                                                   materialized_only boolean DEFAULT false,
                                                   with_data boolean DEFAULT true)
RETURNS regclass
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Recompute the buckets lying wholly inside [window_start, window_end)
-- (NULL: unbounded) that were never materialized or were written to since,
-- in the caller's transaction.  The bounds are of the time column's type
-- (timestamptz, timestamp or date for time columns, an integer for integer
-- time columns).
CREATE FUNCTION orochi.refresh_continuous_aggregate(continuous_aggregate regclass,
                                                    window_start "any", window_end "any")
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Switch a continuous aggregate between real-time and materialized only.
CREATE FUNCTION orochi.alter_continuous_aggregate(continuous_aggregate regclass,
                                                  materialized_only boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- DROP VIEW of the continuous aggregate (the event trigger below removes
-- the rest).
CREATE FUNCTION orochi.drop_continuous_aggregate(continuous_aggregate regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- A job refreshing [now() - start_offset, now() - end_offset) every
-- schedule_interval (offsets: intervals, or integers for integer time
-- columns; NULL: unbounded).  Returns the job id.
CREATE FUNCTION orochi.add_continuous_aggregate_policy(continuous_aggregate regclass,
                                                       start_offset "any", end_offset "any",
                                                       schedule_interval interval,
                                                       if_not_exists boolean DEFAULT false)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.remove_continuous_aggregate_policy(continuous_aggregate regclass,
                                                          if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Internal: forget the continuous aggregates whose view, query or
-- materialization table (or hypertable) was dropped, and drop what is left
-- of them.
CREATE FUNCTION orochi.continuous_aggregates_dropped(oid[])
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

REVOKE EXECUTE ON FUNCTION orochi.continuous_aggregates_dropped(oid[]) FROM PUBLIC;

-- As the extension owner, as the other event triggers (10_columnar.sql).
CREATE FUNCTION orochi.continuous_aggregates_on_sql_drop()
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
       AND objsubid = 0;
    IF dropped IS NOT NULL AND to_regclass('orochi.continuous_aggs') IS NOT NULL
       AND EXISTS (SELECT 1 FROM orochi.continuous_aggs c
                    WHERE c.view_relid = ANY (dropped) OR c.direct_relid = ANY (dropped)
                       OR c.mat_relid = ANY (dropped)) THEN
        PERFORM orochi.continuous_aggregates_dropped(dropped);
    END IF;
END;
$$;

CREATE EVENT TRIGGER orochi_continuous_aggregates_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.continuous_aggregates_on_sql_drop();

-- One row per continuous aggregate whose view the caller may read.
CREATE VIEW orochi.continuous_aggregates WITH (security_barrier) AS
SELECT n.nspname                          AS view_schema,
       v.relname                          AS view_name,
       c.view_relid::regclass             AS view,
       c.hypertable_relid::regclass       AS hypertable,
       c.mat_relid::regclass              AS materialization_table,
       c.bucket_column,
       c.bucket_width,
       CASE WHEN a.atttypid IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
            THEN c.watermark::text
            WHEN c.watermark IS NULL THEN NULL
            WHEN a.atttypid = 'timestamptz'::regtype THEN orochi._cagg_watermark_timestamptz(c.view_relid)::text
            WHEN a.atttypid = 'date'::regtype THEN orochi._cagg_watermark_date(c.view_relid)::text
            ELSE orochi._cagg_watermark_timestamp(c.view_relid)::text END AS watermark,
       c.materialized_only,
       pg_get_viewdef(c.direct_relid)     AS view_definition
  FROM orochi.continuous_aggs c
  JOIN pg_class v ON v.oid = c.view_relid
  JOIN pg_namespace n ON n.oid = v.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.mat_relid AND a.attname = c.bucket_column
 WHERE pg_catalog.has_table_privilege(c.view_relid, 'SELECT');

-- orochi.continuous_aggs and orochi.continuous_agg_invalidations are
-- granted to no one.
GRANT SELECT ON orochi.continuous_aggregates TO PUBLIC;
