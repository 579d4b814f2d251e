-- orochi 0.1.0 -> 0.2.0: columnar data in the WAL, paths relative to the
-- database's folder, dump and restore; then the privilege model, columns
-- added with defaults, time_bucket, moving sketch aggregates, show_chunks /
-- drop_chunks arguments, compression statistics, ingest pipelines, workload
-- management (resource pools and workload classes), distributed tables,
-- change data capture.  What it makes is what sql/*.sql makes for 0.2.0,
-- object by object
-- (tests/wal/test_upgrade.py); docs/STORAGE.md, "Versions and updating".
--
-- ALTER EXTENSION orochi UPDATE TO '0.2.0';   (the server must preload orochi)

\echo Use "ALTER EXTENSION orochi UPDATE TO '0.2.0'" to load this file. \quit

-- ---------------------------------------------------------------- file paths
-- 0.1.0 named files by absolute paths into this cluster's data directory; a
-- copy of the data directory (standby, base backup) then read the original's
-- files.  Files under this database's folder are now named relative to it;
-- files elsewhere (a server's data_dir, or another database's folder for a
-- database made from a template under 0.1.0, which shared its template's
-- files) keep their absolute paths.

CREATE FUNCTION orochi._file_path(file_path text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN file_path LIKE '/%' THEN file_path
            ELSE 'orochi/' || (SELECT d.oid FROM pg_catalog.pg_database d
                                WHERE d.datname = pg_catalog.current_database()) || '/' || file_path END;

DO $$
DECLARE
    folder text := pg_catalog.current_setting('data_directory') || '/orochi/'
                   || (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
                   || '/';
BEGIN
    UPDATE orochi.columnar_stripes SET file_path = substr(file_path, length(folder) + 1)
     WHERE starts_with(file_path, folder);
    UPDATE orochi.columnar_retired_files SET file_path = substr(file_path, length(folder) + 1)
     WHERE starts_with(file_path, folder);
    UPDATE orochi.columnar_vector_index_files SET file_path = substr(file_path, length(folder) + 1)
     WHERE starts_with(file_path, folder);
END;
$$;

-- Each stripe of each columnar table the caller may read (SELECT on it),
-- column by column.  security_barrier: the privilege test comes before any
-- condition of the caller's query, so no function of theirs sees other rows.
CREATE OR REPLACE VIEW orochi.stripes WITH (security_barrier) AS
SELECT s.relid::regclass                     AS table_name,
       s.stripe_id,
       s.row_count,
       s.chunk_group_count,
       c.attnum,
       coalesce(a.attname::text, c.column_name) AS column_name,
       c.type_name,
       c.null_count,
       c.compressed_bytes,
       c.raw_bytes,
       c.codecs,
       s.compression,
       s.file_bytes,
       orochi._file_path(s.file_path) AS file_path
  FROM orochi.columnar_stripes s
  JOIN orochi.columnar_stripe_columns c USING (stripe_id)
  LEFT JOIN pg_attribute a
         ON a.attrelid = s.relid AND a.attnum = c.attnum AND NOT a.attisdropped
 WHERE pg_catalog.has_table_privilege(s.relid, 'SELECT');

-- ---------------------------------------------------------------- regclass columns
-- Relation references of the catalog tables that pg_dump dumps become
-- regclass (dumped by name).  The views and functions over them are saved,
-- dropped and made again around the change.

DO $$
DECLARE
    views text[] := ARRAY['orochi.chunks', 'orochi.continuous_aggregates', 'orochi.job_stats',
                          'orochi.vector_indexes'];
    functions text[] := ARRAY['orochi.hypertable_compression_stats(regclass)',
                              'orochi.chunk_compression_stats(regclass)'];
    view_sql text[] := '{}';
    function_sql text[] := '{}';
    name text;
BEGIN
    FOREACH name IN ARRAY views LOOP
        view_sql := view_sql || format('CREATE VIEW %s AS %s', name, pg_catalog.pg_get_viewdef(name::regclass));
    END LOOP;
    FOREACH name IN ARRAY functions LOOP
        function_sql := function_sql || pg_catalog.pg_get_functiondef(name::regprocedure);
    END LOOP;
    FOREACH name IN ARRAY functions LOOP
        EXECUTE format('DROP FUNCTION %s', name);
    END LOOP;
    FOREACH name IN ARRAY views LOOP
        EXECUTE format('DROP VIEW %s', name);
    END LOOP;

    ALTER TABLE orochi.hypertables ALTER COLUMN relid TYPE regclass;
    ALTER TABLE orochi.hypertable_invalidation_log ALTER COLUMN relid TYPE regclass;
    ALTER TABLE orochi.jobs ALTER COLUMN relid TYPE regclass;
    ALTER TABLE orochi.continuous_aggs
        ALTER COLUMN view_relid TYPE regclass, ALTER COLUMN direct_relid TYPE regclass,
        ALTER COLUMN mat_relid TYPE regclass, ALTER COLUMN hypertable_relid TYPE regclass;
    ALTER TABLE orochi.continuous_agg_invalidations ALTER COLUMN view_relid TYPE regclass;
    ALTER TABLE orochi.columnar_vector_indexes ALTER COLUMN relid TYPE regclass;

    FOREACH name IN ARRAY view_sql LOOP
        EXECUTE name;
    END LOOP;
    FOR i IN REVERSE array_length(function_sql, 1)..1 LOOP   -- the ones others call first
        EXECUTE function_sql[i];
    END LOOP;
    FOREACH name IN ARRAY views LOOP
        EXECUTE format('GRANT SELECT ON %s TO PUBLIC', name);
    END LOOP;
END;
$$;

-- The real-time views named their aggregate by the view's oid; they now
-- name it by the materialization table as a regclass constant (dumped by
-- name).  An extension script may not replace the users' views: each is
-- made again at its aggregate's next refresh.  The views run it as their
-- reader, hence SECURITY DEFINER (sql/65_continuous_aggregates.sql).
CREATE OR REPLACE FUNCTION orochi._cagg_watermark(view_relid oid)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.watermark FROM orochi.continuous_aggs c WHERE c.mat_relid = $1 OR c.view_relid = $1 $$;

-- ---------------------------------------------------------------- dump and restore
-- (as sql/80_dump_restore.sql)

SELECT pg_catalog.pg_extension_config_dump('orochi.hypertables', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.hypertable_invalidation_log', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.continuous_aggs', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.continuous_agg_invalidations', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.continuous_agg_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.jobs_job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.columnar_vector_indexes', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.vector_index_id_seq', '');

CREATE FUNCTION orochi._hypertable_inserted(regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi._vector_index_inserted(bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

REVOKE EXECUTE ON FUNCTION orochi._hypertable_inserted(regclass), orochi._vector_index_inserted(bigint)
    FROM PUBLIC;

CREATE FUNCTION orochi._on_catalog_insert()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_TABLE_NAME = 'hypertables' THEN
        PERFORM orochi._hypertable_inserted(NEW.relid);
    ELSE
        PERFORM orochi._vector_index_inserted(NEW.index_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER hypertables_inserted AFTER INSERT ON orochi.hypertables
    FOR EACH ROW EXECUTE FUNCTION orochi._on_catalog_insert();
CREATE TRIGGER columnar_vector_indexes_inserted AFTER INSERT ON orochi.columnar_vector_indexes
    FOR EACH ROW EXECUTE FUNCTION orochi._on_catalog_insert();

-- ================================================================ since the WAL work
-- The definitions below are those of the files named in each section: a
-- change there is made here too.

-- ---------------------------------------------------------------- privileges
-- (docs/SECURITY.md; sql/00_bridge.sql)  The catalog tables, granted to
-- PUBLIC for reading in 0.1.0, are granted to no one: Orochi reads them as
-- the extension owner, and the views (made again below with
-- security_barrier and a privilege test) show each role its own rows.
GRANT USAGE ON FOREIGN SERVER orochi TO PUBLIC;
REVOKE SELECT ON orochi.columnar_stripes, orochi.hypertables, orochi.hypertable_chunks,
                 orochi.jobs, orochi.bgw_job_stat, orochi.continuous_aggs,
                 orochi.columnar_vector_indexes, orochi.columnar_vector_index_files
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION orochi._chunk_compression_status(bigint, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION orochi.continuous_aggregates_dropped(oid[]) FROM PUBLIC;

-- The delta stores (orochi.columnar_delta_<oid>, extension members) belong
-- to the extension owner, and keep a column whose type is neither
-- pg_catalog's nor one of Orochi's base types and domains as its text form
-- (orochi_fdw/columnar/delta.py, whose rule this repeats).  0.1.0 made them
-- as the role that created the table, with the columns' own types.
DO $$
DECLARE
    owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = 'orochi');
    d record;
    col record;
BEGIN
    FOR d IN SELECT c.oid, c.relowner
               FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'orochi'::pg_catalog.regnamespace AND c.relkind = 'r'
                AND c.relname ~ '^columnar_delta_[0-9]+$'
    LOOP
        IF d.relowner <> owner THEN
            EXECUTE format('ALTER TABLE %s OWNER TO %s', d.oid::regclass, owner::regrole);
        END IF;
        FOR col IN SELECT a.attname
                     FROM pg_catalog.pg_attribute a
                     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                    WHERE a.attrelid = d.oid AND a.attnum > 0 AND NOT a.attisdropped
                      AND a.attname ~ '^c[0-9]+$'
                      AND NOT (t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
                               OR (t.typnamespace = 'orochi'::pg_catalog.regnamespace AND t.typtype IN ('b', 'd')
                                   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e
                                                    WHERE e.oid = t.typelem AND e.typtype NOT IN ('b', 'd'))))
                    ORDER BY a.attnum
        LOOP
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE text COLLATE pg_catalog."default" USING %I::text',
                           d.oid::regclass, col.attname, col.attname);
        END LOOP;
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------- columnar tables
-- (sql/10_columnar.sql)  Columns added to a table under 0.1.0 read as NULL
-- in the stripes written before: no row of orochi.columnar_missing_values,
-- so they still do.

-- The value that rows stored before ALTER TABLE ... ADD COLUMN ... DEFAULT
-- read in the new column: the default evaluated once, when the column was
-- added (Postgres's attmissingval, which it keeps for heap tables only), in
-- its text form.  Stripes written since hold the column themselves.
CREATE TABLE orochi.columnar_missing_values (
    relid              oid NOT NULL,
    attnum             smallint NOT NULL,
    value              text NOT NULL,
    PRIMARY KEY (relid, attnum)
);

-- Internal: a column's default as ALTER TABLE ... ADD COLUMN evaluates it
-- for the rows already stored: kind is 'none' (no default), 'constant'
-- (evaluated once: value, NULL for a NULL default), 'volatile' (a value per
-- row) or 'generated' (a generated column).  For the table's owner: it
-- evaluates the default with the caller's rights, as ALTER TABLE does.
CREATE FUNCTION orochi.column_default(regclass, smallint, OUT kind text, OUT value text)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_column_default'
LANGUAGE C STRICT VOLATILE;

REVOKE EXECUTE ON FUNCTION orochi.columnar_drop_tables(oid[]), orochi.columnar_before_drop_extension()
    FROM PUBLIC;

-- The event trigger functions are PL/pgSQL so that Python starts only when
-- an orochi table is involved.  Those of DROP run as the extension owner
-- (SECURITY DEFINER, search path pinned), as they read the catalog and call
-- internal functions; what they do is decided by the objects Postgres
-- reports dropped, never by their caller.  That of CREATE and ALTER runs as
-- the role that ran the command, since it evaluates what that role wrote (a
-- new column's default); it reads pg_catalog only, and the function it
-- calls checks that the role owns the tables and works on the catalog with
-- internal statements.
CREATE OR REPLACE FUNCTION orochi.columnar_on_sql_drop()
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
    IF dropped IS NOT NULL AND (
        EXISTS (SELECT 1 FROM orochi.columnar_stripes WHERE relid = ANY (dropped))
        OR EXISTS (SELECT 1 FROM unnest(dropped) AS d(relid)
                    WHERE to_regclass('orochi.columnar_delta_' || d.relid) IS NOT NULL)) THEN
        PERFORM orochi.columnar_drop_tables(dropped);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION orochi.columnar_on_ddl_end()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables oid[];
BEGIN
    SELECT array_agg(DISTINCT c.objid) INTO tables
      FROM pg_event_trigger_ddl_commands() c
      JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = c.objid
      JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver
      JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
     WHERE c.classid = 'pg_catalog.pg_class'::regclass
       AND w.fdwhandler = 'orochi.orochi_fdw_handler'::regproc;
    IF tables IS NOT NULL THEN
        PERFORM orochi.columnar_check_tables(tables);
    END IF;
END;
$$;

-- The trigger fires on ALTER TABLE as well (ALTER TABLE ... ADD COLUMN on a
-- foreign table): its tags cannot be altered, it is made again.
DROP EVENT TRIGGER orochi_columnar_ddl_end;
CREATE EVENT TRIGGER orochi_columnar_ddl_end ON ddl_command_end
    WHEN TAG IN ('CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION orochi.columnar_on_ddl_end();

-- A failure here (Python missing, say) must not keep anyone from dropping
-- an extension: the files are then left for the operator.
CREATE OR REPLACE FUNCTION orochi.columnar_on_drop_extension()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM orochi.columnar_before_drop_extension();
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'orochi: columnar files will not be removed: %', SQLERRM;
END;
$$;

-- ---------------------------------------------------------------- time_bucket
-- (sql/30_time_bucket.sql)  New helpers and the time zone form; the changed
-- bodies are replaced (same signatures).

-- Raises message with SQLSTATE 0A000 (feature_not_supported), as
-- TimescaleDB does for the widths and offsets of dates it does not take.
CREATE FUNCTION orochi._time_bucket_unsupported(message text, width anyelement)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = message;
END;
$$;

-- Start of the bucket of ts (timestamp without time zone), from origin.
-- Without months: date_bin, once the width is checked (the check folds away
-- for a constant width).  With months: the first of the month whose index
-- (months since year 0) is a whole number of buckets away from the index of
-- the origin's month; 2000-01-01 is month 24000.
CREATE OR REPLACE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp, origin timestamp)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_months(bucket_width) IS NULL THEN
        date_bin(CASE WHEN orochi._time_bucket_width_us(bucket_width) > 0 THEN bucket_width END, ts, origin)
    WHEN origin IS NULL THEN NULL
    WHEN NOT isfinite(ts) THEN ts
    ELSE
        timestamp '2000-01-01 00:00:00' + make_interval(months => (
            floor((orochi._time_bucket_month_index(ts) - orochi._time_bucket_month_index(origin))::float8
                  / orochi._time_bucket_months(bucket_width)) * orochi._time_bucket_months(bucket_width)
            + orochi._time_bucket_month_index(origin) - 24000)::int)
END;

CREATE OR REPLACE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp, "offset" interval)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN "offset" IS NULL THEN NULL
            WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts - "offset") + "offset" END;

-- timestamptz plus an interval as PostgreSQL adds them (days and months in
-- the session's time zone), which is how TimescaleDB applies the offsets of
-- timestamptz buckets and moves a bucket start back.  Declared immutable as
-- TimescaleDB's time_bucket is; written in PL/pgSQL so that the planner does
-- not look inside.  COST 1: an argument holding a call of it stays cheap
-- enough for the planner to inline the SQL functions around it.
CREATE FUNCTION orochi._time_bucket_tstz_add(ts timestamptz, delta interval)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE COST 1
AS $$
BEGIN
    RETURN ts + delta;
END;
$$;

-- Whether an interval has no days, months or years: adding it to a
-- timestamptz does not depend on the time zone.
CREATE FUNCTION orochi._time_bucket_is_time(delta interval)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN extract(day FROM delta) = 0 AND extract(month FROM delta) = 0 AND extract(year FROM delta) = 0;

-- An offset with days or months is taken off and added back as PostgreSQL
-- adds intervals to timestamptz (in the session's time zone), as TimescaleDB
-- does; without, on the UTC clock (the same thing).
CREATE OR REPLACE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, "offset" interval)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_is_time("offset") THEN
        orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC', "offset") AT TIME ZONE 'UTC'
    WHEN "offset" IS NULL THEN NULL
    WHEN NOT isfinite(ts) THEN ts
    ELSE orochi._time_bucket_tstz_add(
        orochi.time_bucket(bucket_width, orochi._time_bucket_tstz_add(ts, - "offset")), "offset")
END;

-- date: the bucket of the date's midnight, as a date.  A width must be whole
-- months or whole days; an offset whole days (TimescaleDB's errors, SQLSTATE
-- 0A000).

-- The width of a date bucket, checked.
CREATE FUNCTION orochi._time_bucket_date_width(bucket_width interval)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_months(bucket_width) IS NOT NULL THEN bucket_width
    WHEN extract(epoch FROM bucket_width) < 86400
        THEN bucket_width + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval must not have sub-day precision', bucket_width))
    WHEN extract(epoch FROM bucket_width) % 86400 <> 0
        THEN bucket_width + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval must be a multiple of a day', bucket_width))
    ELSE bucket_width
END;

-- The offset of a date bucket, checked: whole days (of either sign).
CREATE FUNCTION orochi._time_bucket_date_offset("offset" interval)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN "offset" IS NULL THEN NULL
    WHEN extract(year FROM "offset") <> 0 OR extract(month FROM "offset") <> 0
        THEN "offset" + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval defined in terms of month, year, century etc. not supported', "offset"))
    WHEN extract(epoch FROM "offset") % 86400 = 0 THEN "offset"
    WHEN abs(extract(epoch FROM "offset")) < 86400
        THEN "offset" + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval must not have sub-day precision', "offset"))
    ELSE "offset" + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval must be a multiple of a day', "offset"))
END;

CREATE OR REPLACE FUNCTION orochi.time_bucket(bucket_width interval, ts date, origin date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN origin IS NULL THEN NULL
            WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(orochi._time_bucket_date_width(bucket_width), ts::timestamp,
                                    origin::timestamp)::date END;

CREATE OR REPLACE FUNCTION orochi.time_bucket(bucket_width interval, ts date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(orochi._time_bucket_date_width(bucket_width), ts::timestamp)::date END;

-- The offset is checked even for an infinite date, as TimescaleDB does.
CREATE OR REPLACE FUNCTION orochi.time_bucket(bucket_width interval, ts date, "offset" interval)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN orochi._time_bucket_date_offset("offset") IS NULL THEN NULL
            WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(orochi._time_bucket_date_width(bucket_width), ts::timestamp,
                                    orochi._time_bucket_date_offset("offset"))::date END;

-- timestamptz in a time zone: TimescaleDB's
-- time_bucket(width, ts, timezone [, origin] [, "offset"]).  The time (less
-- the offset) is read as the wall clock in the time zone, bucketed there (the
-- origin read in the same zone; months from the month of its date there),
-- and the bucket's start turned back into an absolute time; where that wall
-- clock time happens twice or not at all (daylight saving), PostgreSQL's
-- reading (the later instant) can fall after the time itself, and then the
-- start moves back by whole widths until it does not.  The offset is taken
-- off before and added back after, on the absolute time, as timestamptz
-- arithmetic does it (an offset with days or months, like a width with days
-- when a start moves back, counts them in the session's time zone: as in
-- TimescaleDB, the result then depends on the TimeZone setting).  origin
-- and "offset" may be NULL (not given); NULL width, time or time zone give
-- NULL.

-- Move r back by whole widths until it is not after t.
CREATE FUNCTION orochi._time_bucket_tz_back(r timestamptz, t timestamptz, bucket_width interval)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF r > t AND orochi._time_bucket_is_time(bucket_width) THEN
        -- all the widths at once: they are fixed numbers of microseconds
        r := r - bucket_width * ceil(extract(epoch FROM r - t) / extract(epoch FROM bucket_width));
    END IF;
    WHILE r > t LOOP
        r := r - bucket_width;
    END LOOP;
    RETURN r;
END;
$$;

-- The start of the bucket of t on the time zone's wall clock, as an
-- absolute time (PostgreSQL's reading of that wall clock time).
CREATE FUNCTION orochi._time_bucket_tz_start(bucket_width interval, t timestamptz, timezone text,
                                             origin timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN timezone(timezone, CASE WHEN origin IS NULL THEN orochi.time_bucket(bucket_width, timezone(timezone, t))
                               ELSE orochi.time_bucket(bucket_width, timezone(timezone, t), timezone(timezone, origin))
                          END);

-- The bucket of t in the time zone, without offset: the start, moved back if
-- it is after t (rare: only around daylight saving changes; the common case
-- stays an inlined expression, the start written out where it is used so
-- that the planner inlines it whatever the width).
CREATE FUNCTION orochi._time_bucket_tz(bucket_width interval, t timestamptz, timezone text,
                                       origin timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_tz_start(bucket_width, t, timezone, origin) <= t
        THEN orochi._time_bucket_tz_start(bucket_width, t, timezone, origin)
    ELSE orochi._time_bucket_tz_back(orochi._time_bucket_tz_start(bucket_width, t, timezone, origin), t, bucket_width)
END;

-- An offset without days or months is added on the UTC clock (the same
-- thing, inlined); one with days or months as PostgreSQL adds it.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, timezone text,
                                   origin timestamptz DEFAULT NULL, "offset" interval DEFAULT NULL)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN "offset" IS NULL THEN orochi._time_bucket_tz(bucket_width, ts, timezone, origin)
    WHEN orochi._time_bucket_is_time("offset") THEN
        timezone('UTC', timezone('UTC', orochi._time_bucket_tz(
            bucket_width, timezone('UTC', timezone('UTC', ts) - "offset"), timezone, origin)) + "offset")
    ELSE orochi._time_bucket_tstz_add(orochi._time_bucket_tz(
            bucket_width, orochi._time_bucket_tstz_add(ts, - "offset"), timezone, origin), "offset")
END;

-- ---------------------------------------------------------------- sketches
-- (sql/40_sketches.sql)  The moving-aggregate support functions, and the
-- aggregates redefined with them (CREATE OR REPLACE AGGREGATE keeps each
-- aggregate's oid: views and continuous aggregates using it stay).

-- Moving-aggregate forms, used when the aggregates run as window functions
-- (PostgreSQL then always uses them: the plain final functions consume their
-- state).  The state names a window builder that keeps the frame's rows;
-- the inverse functions take the oldest row out; the final functions leave
-- the state as it is, since they may run once per row of the window.
CREATE FUNCTION orochi.sketch_hll_mtrans(bytea, anyelement)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_mtrans(bytea, anyelement, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_minv(bytea, anyelement)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_minv(bytea, anyelement, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_union_mtrans(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_union_minv(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_mtrans(bytea, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_mtrans(bytea, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_minv(bytea, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_minv(bytea, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_union_mtrans(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_union_minv(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mtrans(bytea, float8, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mtrans(bytea, float8, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mtrans(bytea, float8, float8[])
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mtrans(bytea, float8, float8[], integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_minv(bytea, float8, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_minv(bytea, float8, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_minv(bytea, float8, float8[])
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_minv(bytea, float8, float8[], integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.sketch_hll_mfinal(bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_hll_count_mfinal(bytea)
RETURNS bigint AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_mfinal(bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mfinal(bytea)
RETURNS float8 AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_percentiles_mfinal(bytea)
RETURNS float8[] AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_hll_agg_mfinal(bytea)
RETURNS orochi.hll LANGUAGE sql VOLATILE
AS $$ SELECT orochi.sketch_hll_mfinal($1)::orochi.hll $$;
CREATE FUNCTION orochi.sketch_tdigest_agg_mfinal(bytea)
RETURNS orochi.tdigest LANGUAGE sql VOLATILE
AS $$ SELECT orochi.sketch_tdigest_mfinal($1)::orochi.tdigest $$;

-- How many sketch aggregate states this backend's Python keeps (the states
-- of aggregates that are over are dropped first).
CREATE FUNCTION orochi.sketch_open_states()
RETURNS bigint AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;

-- ------------------------------------------------------------------ aggregates

-- A HyperLogLog sketch of the non-NULL values (precision 4..18, default 14).
CREATE OR REPLACE AGGREGATE orochi.hll_agg(anyelement) (
    SFUNC = orochi.sketch_hll_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_agg_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_hll_mtrans, MINVFUNC = orochi.sketch_hll_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE OR REPLACE AGGREGATE orochi.hll_agg(anyelement, integer) (
    SFUNC = orochi.sketch_hll_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_agg_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_hll_mtrans, MINVFUNC = orochi.sketch_hll_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- The union of sketches, at the lowest of their precisions.
CREATE OR REPLACE AGGREGATE orochi.hll_union_agg(orochi.hll) (
    SFUNC = orochi.sketch_hll_union_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_agg_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_hll_union_mtrans, MINVFUNC = orochi.sketch_hll_union_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- Estimated count(DISTINCT x): 0.81% standard error at the default p = 14.
CREATE OR REPLACE AGGREGATE orochi.approx_count_distinct(anyelement) (
    SFUNC = orochi.sketch_hll_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_count_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_hll_mtrans, MINVFUNC = orochi.sketch_hll_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_count_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE OR REPLACE AGGREGATE orochi.approx_count_distinct(anyelement, integer) (
    SFUNC = orochi.sketch_hll_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_count_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_hll_mtrans, MINVFUNC = orochi.sketch_hll_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_count_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- A t-digest of the finite values (compression 10..10000, default 100).
CREATE OR REPLACE AGGREGATE orochi.tdigest_agg(float8) (
    SFUNC = orochi.sketch_tdigest_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_tdigest_agg_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_tdigest_mtrans, MINVFUNC = orochi.sketch_tdigest_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_tdigest_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE OR REPLACE AGGREGATE orochi.tdigest_agg(float8, integer) (
    SFUNC = orochi.sketch_tdigest_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_tdigest_agg_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_tdigest_mtrans, MINVFUNC = orochi.sketch_tdigest_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_tdigest_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- The union of digests.
CREATE OR REPLACE AGGREGATE orochi.tdigest_union_agg(orochi.tdigest) (
    SFUNC = orochi.sketch_tdigest_union_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_tdigest_agg_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_tdigest_union_mtrans, MINVFUNC = orochi.sketch_tdigest_union_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_tdigest_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- Estimated percentile_cont(q) WITHIN GROUP (ORDER BY value), 0 <= q <= 1,
-- and the array form for several quantiles.
CREATE OR REPLACE AGGREGATE orochi.approx_percentile(float8, float8) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_percentile_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_percentile_mtrans, MINVFUNC = orochi.sketch_percentile_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_percentile_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE OR REPLACE AGGREGATE orochi.approx_percentile(float8, float8, integer) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_percentile_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_percentile_mtrans, MINVFUNC = orochi.sketch_percentile_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_percentile_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE OR REPLACE AGGREGATE orochi.approx_percentile(float8, float8[]) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_percentiles_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_percentile_mtrans, MINVFUNC = orochi.sketch_percentile_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_percentiles_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE OR REPLACE AGGREGATE orochi.approx_percentile(float8, float8[], integer) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_percentiles_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_percentile_mtrans, MINVFUNC = orochi.sketch_percentile_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_percentiles_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- ---------------------------------------------------------------- hypertables
-- (sql/50_hypertables.sql)  Chunks keep the creation time 0.1.0 recorded
-- (the start of the transaction that made them, now()); new ones record the
-- clock.  show_chunks and drop_chunks take TimescaleDB's further arguments:
-- new signatures, the old functions dropped.
ALTER TABLE orochi.hypertable_chunks ALTER COLUMN created_at SET DEFAULT clock_timestamp();

DROP FUNCTION orochi.show_chunks(regclass, "any", "any");
DROP FUNCTION orochi.drop_chunks(regclass, "any", "any");

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

-- ---------------------------------------------------------------- jobs
-- (sql/55_jobs.sql)

-- The jobs of the roles the caller is a member of (all of them for
-- superusers), with their statistics.
CREATE OR REPLACE VIEW orochi.job_stats WITH (security_barrier) AS
WITH running AS (           -- jobs whose advisory lock some session holds
    SELECT DISTINCT l.objid::bigint::integer AS job_id
      FROM pg_catalog.pg_locks l
     WHERE l.locktype = 'advisory' AND l.granted
       AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
       AND l.classid = x'4f524f4a'::bigint::oid AND l.objsubid = 1)
SELECT j.job_id,
       j.application_name,
       j.proc_schema,
       j.proc_name,
       j.relid::regclass                      AS hypertable_name,
       s.last_run_started_at,
       s.last_successful_finish,
       CASE WHEN r.job_id IS NOT NULL THEN 'Running' ELSE s.last_run_status END AS last_run_status,
       CASE WHEN r.job_id IS NOT NULL THEN 'Running'
            WHEN NOT j.scheduled THEN 'Paused'
            ELSE 'Scheduled' END              AS job_status,
       s.last_run_duration,
       j.next_start,
       s.total_runs,
       s.total_successes,
       s.total_failures,
       s.consecutive_failures,
       s.last_error,
       s.last_summary,
       j.owner,
       j.schedule_interval,
       j.config
  FROM orochi.jobs j
  LEFT JOIN orochi.bgw_job_stat s ON s.job_id = j.job_id
  LEFT JOIN running r ON r.job_id = j.job_id
 WHERE pg_catalog.pg_has_role(j.owner, 'MEMBER');

-- ---------------------------------------------------------------- compression
-- (sql/60_compression.sql)

-- Every chunk of every hypertable the caller may read (SELECT on it): its
-- range, rows, bytes and compression state (like
-- timescaledb_information.chunks), and what its last compression did.
CREATE OR REPLACE VIEW orochi.chunks WITH (security_barrier) AS
SELECT h.relid::regclass                                  AS hypertable_name,
       '_hyper_' || c.relid || '_' || c.chunk_id || '_chunk' AS chunk_name,
       c.chunk_id,
       h.time_column                                      AS primary_dimension,
       h.time_type                                        AS primary_dimension_type,
       CASE WHEN h.time_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
            THEN NULL ELSE orochi._time_key_to_timestamptz(c.range_start) END AS range_start,
       CASE WHEN h.time_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
            THEN NULL ELSE orochi._time_key_to_timestamptz(c.range_end) END   AS range_end,
       c.range_start                                      AS range_start_integer,
       c.range_end                                        AS range_end_integer,
       coalesce(s.stripes, 0)                             AS stripes,
       coalesce(s.stripe_rows, 0) + coalesce(s.delta_rows, 0) AS rows,
       coalesce(s.before_compression_bytes, 0)            AS before_compression_bytes,
       coalesce(s.after_compression_bytes, 0)             AS after_compression_bytes,
       st.status = 'Compressed'                           AS is_compressed,
       st.status                                          AS compression_status,
       c.compressed_at,
       c.compressed_rows,
       c.uncompressed_bytes                               AS compressed_from_bytes,
       c.compressed_bytes                                 AS compressed_to_bytes,
       c.created_at                                       AS chunk_creation_time
  FROM orochi.hypertable_chunks c
  JOIN orochi.hypertables h ON h.relid = c.relid
  LEFT JOIN orochi.hypertable_chunk_stats() s ON s.chunk_id = c.chunk_id
  CROSS JOIN LATERAL (
    -- orochi._chunk_compression_status, on the view owner's rights
    SELECT CASE
             WHEN c.compressed_at IS NULL THEN 'Uncompressed'
             WHEN coalesce(s.delta_rows, 0) > 0
               OR (SELECT count(*) FILTER (WHERE cs.created_xid <> c.compressed_xid OR cs.deleted_count > 0) > 0
                       OR count(*) <> c.compressed_stripes
                     FROM orochi.columnar_stripes cs
                    WHERE cs.chunk_id = c.chunk_id)
             THEN 'Partially compressed'
             ELSE 'Compressed'
           END AS status) st
 WHERE pg_catalog.has_table_privilege(h.relid, 'SELECT');

-- Raise insufficient_privilege (42501) unless the caller holds privilege on
-- the table, as a statement on it would (for the SQL functions below, which
-- read views that would only hide the rows).
CREATE FUNCTION orochi._require_table_privilege(rel regclass, privilege text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rel IS NOT NULL AND NOT has_table_privilege(rel, privilege) THEN
        RAISE EXCEPTION 'permission denied for table %', rel
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- Per chunk of a hypertable: its compression state and the bytes its last
-- compression started from and ended with (TimescaleDB's name).  Needs
-- SELECT on the hypertable.
CREATE OR REPLACE FUNCTION orochi.chunk_compression_stats(hypertable regclass)
RETURNS TABLE (chunk_name text, compression_status text, before_compression_total_bytes bigint,
               after_compression_total_bytes bigint, compressed_rows bigint,
               compressed_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM orochi._require_table_privilege(hypertable, 'SELECT');
    RETURN QUERY
    SELECT v.chunk_name, v.compression_status, v.compressed_from_bytes, v.compressed_to_bytes,
           v.compressed_rows, v.compressed_at
      FROM orochi.chunks v
     WHERE v.hypertable_name = hypertable
     ORDER BY v.range_start_integer;
END
$$;

-- ---------------------------------------------------------------- continuous aggregates
-- (sql/65_continuous_aggregates.sql)

-- As the extension owner, as the other event triggers (10_columnar.sql).
CREATE OR REPLACE FUNCTION orochi.continuous_aggregates_on_sql_drop()
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

-- One row per continuous aggregate whose view the caller may read.
CREATE OR REPLACE VIEW orochi.continuous_aggregates WITH (security_barrier) AS
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

-- A continuous aggregate's hidden view and materialization table belong to
-- the extension owner, its creator granted what reading and refreshing the
-- materialization table needs (orochi_fdw/timeseries/continuous.py); 0.1.0
-- left them to their creator.  The grant comes after the change of owner,
-- which would fold it into the new owner's rights.
DO $$
DECLARE
    owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = 'orochi');
    c record;
BEGIN
    FOR c IN SELECT a.direct_relid, d.relowner AS direct_owner, a.mat_relid, m.relowner AS mat_owner
               FROM orochi.continuous_aggs a
               JOIN pg_catalog.pg_class d ON d.oid = a.direct_relid
               JOIN pg_catalog.pg_class m ON m.oid = a.mat_relid
    LOOP
        IF c.direct_owner <> owner THEN
            EXECUTE format('ALTER VIEW %s OWNER TO %s', c.direct_relid, owner::regrole);
        END IF;
        IF c.mat_owner <> owner THEN
            EXECUTE format('ALTER FOREIGN TABLE %s OWNER TO %s', c.mat_relid, owner::regrole);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %s TO %s',
                           c.mat_relid, c.mat_owner::regrole);
        END IF;
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------- vector indexes
-- (sql/70_vector.sql)

CREATE OR REPLACE FUNCTION orochi.columnar_vector_index_files_on_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM orochi.vector_index_file_deleted(OLD.file_path);
    RETURN OLD;
END;
$$;

-- The vector indexes of the tables the caller may read (SELECT on them).
-- security_barrier: the privilege test comes before any condition of the
-- caller's query.
CREATE OR REPLACE VIEW orochi.vector_indexes WITH (security_barrier) AS
SELECT i.relid::regclass                      AS table_name,
       a.attname                              AS column_name,
       i.index_id,
       i.index_type,
       i.distance_type,
       i.dimensions,
       i.options,
       count(f.stripe_id)                     AS stripes_indexed,
       (SELECT count(*) FROM orochi.columnar_stripes s WHERE s.relid = i.relid) AS stripes,
       coalesce(sum(f.file_bytes), 0)::bigint AS index_bytes,
       coalesce(sum(f.row_count), 0)::bigint  AS rows_indexed,
       i.created_at
  FROM orochi.columnar_vector_indexes i
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.relid AND a.attnum = i.attnum
  LEFT JOIN orochi.columnar_vector_index_files f ON f.index_id = i.index_id
 WHERE pg_catalog.has_table_privilege(i.relid, 'SELECT')
 GROUP BY i.index_id, a.attname;

-- ---------------------------------------------------------------- ingest pipelines
-- (sql/80_pipelines.sql, new in 0.2.0)

-- Ingest pipelines (docs/pipelines.md): Kafka topics, S3 objects and watched
-- files loaded into tables by orochi-sidecar, exactly once.  Each batch of
-- rows and the source position after it are committed in one transaction:
-- the positions live here, next to the data they describe.
--
-- Privileges (docs/SECURITY.md), as for the rest of the catalog: the tables
-- belong to the extension owner and are granted to no one.  The SQL
-- functions (orochi_fdw/pipelines/sqlapi.py) check the caller's rights first
-- (a pipeline is managed, and loaded, with the rights of its owner role) and
-- then read and write them with internal statements; the views show each
-- role the pipelines whose owner's rights it has, options with secrets
-- masked.

CREATE SEQUENCE orochi.pipeline_id_seq;

-- One row per pipeline.  state is what its owner asked for last (or 'failed'
-- when the pipeline stopped itself); the sidecar runs the pipelines that are
-- 'running' or 'paused'.
CREATE TABLE orochi.pipeline (
    pipeline_id      integer PRIMARY KEY DEFAULT nextval('orochi.pipeline_id_seq'),
    name             text NOT NULL UNIQUE CHECK (name <> ''),
    source           text NOT NULL CHECK (source IN ('kafka', 's3', 'file')),
    target           oid NOT NULL,
    format           text NOT NULL CHECK (format IN ('json', 'jsonl', 'csv')),
    options          jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'created'
                     CHECK (state IN ('created', 'running', 'paused', 'stopped', 'failed')),
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    owner            regrole NOT NULL,  -- the role that created it (never the extension owner's default)
    created_at       timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE orochi.pipeline_id_seq OWNED BY orochi.pipeline.pipeline_id;
CREATE INDEX pipeline_target ON orochi.pipeline (target);

-- Where each stream of a pipeline stands: a Kafka partition, an S3 object, a
-- file.  Updated in the transaction that loads the rows before it.
CREATE TABLE orochi.pipeline_positions (
    pipeline_id integer NOT NULL REFERENCES orochi.pipeline ON DELETE CASCADE,
    stream      text NOT NULL,    -- kafka: the partition; s3: the object key; file: 'device:inode'
    position    bigint NOT NULL,  -- kafka: the next offset to read; s3, file: the byte offset of the next record
    stream_end  bigint,           -- kafka: the high watermark; s3, file: the size, as last seen
    done        boolean NOT NULL DEFAULT false,  -- read to its end (objects, files not followed)
    name        text,             -- s3: the object key; file: its path when last seen
    identity    text,             -- s3: the object's ETag
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline_id, stream)
);

-- Counters and health, one row per pipeline; the counters are written in the
-- transactions that load the rows.
CREATE TABLE orochi.pipeline_stats (
    pipeline_id         integer PRIMARY KEY REFERENCES orochi.pipeline ON DELETE CASCADE,
    rows_loaded         bigint NOT NULL DEFAULT 0,
    bytes_loaded        bigint NOT NULL DEFAULT 0,   -- bytes of the records loaded (and rejected)
    batches             bigint NOT NULL DEFAULT 0,
    errors              bigint NOT NULL DEFAULT 0,   -- records sent to pipeline_errors, in all
    errors_since_start  bigint NOT NULL DEFAULT 0,   -- since the last start or resume: what max_errors counts
    last_batch_at       timestamptz,
    last_batch_rows     integer,
    last_batch_duration interval,
    current_error       text,                        -- a problem now (source unreachable ...); NULL once over
    last_error          text,
    last_error_at       timestamptz,
    worker              text,                        -- the sidecar worker that runs it (host:pid)
    worker_started_at   timestamptz
);

-- Dead letters: records that could not be loaded, with where they were.
CREATE TABLE orochi.pipeline_error_log (
    error_id    bigserial PRIMARY KEY,
    pipeline_id integer NOT NULL REFERENCES orochi.pipeline ON DELETE CASCADE,
    stream      text,             -- as in pipeline_positions
    name        text,             -- file path / object key
    position    bigint,           -- kafka: the offset; s3, file: the byte offset where the record starts
    raw_record  bytea,            -- the record (its first max_record_bytes bytes when larger)
    raw_size    bigint,           -- its size in bytes
    error       text NOT NULL,
    sqlstate    text,
    column_name text,
    error_time  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pipeline_error_log_pipeline ON orochi.pipeline_error_log (pipeline_id, error_id);

-- Advisory lock key of a pipeline (class 'ORPI' in the high 32 bits): the
-- sidecar worker that runs a pipeline holds it for its session, so that at
-- most one worker runs a pipeline.
CREATE FUNCTION orochi.pipeline_lock_key(pipeline_id integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (x'4f525049'::bigint << 32) | pipeline_id::bigint $$;

-- Whether some worker runs the pipeline now (holds its advisory lock).
CREATE FUNCTION orochi.pipeline_is_running(pipeline_id integer) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
           AND classid = x'4f525049'::bigint::oid
           AND objid = pipeline_id::oid AND objsubid = 1)
$$;

-- Options as shown to everyone: values of keys that look like secrets
-- (passwords, secret keys, tokens, private keys) masked, at any depth.
CREATE FUNCTION orochi.pipeline_masked_options(options jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    masked jsonb := '{}';
    k text;
    v jsonb;
BEGIN
    IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
        RETURN options;
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(options) LOOP
        IF k ~* '(password|passwd|secret|token|credential|private|\.pem$|^ssl\.key)' THEN
            masked := masked || jsonb_build_object(k, '********');
        ELSE
            masked := masked || jsonb_build_object(k, orochi.pipeline_masked_options(v));
        END IF;
    END LOOP;
    RETURN masked;
END
$$;

-- Text of a dead letter when it is valid UTF-8, else NULL.
CREATE FUNCTION orochi.pipeline_record_text(raw bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN convert_from(raw, 'UTF8');
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
    RETURN NULL;
END
$$;

-- The pipelines the caller has the rights of the owner of (superusers: all),
-- with their status, positions, progress and health.  status is the state
-- asked for, except that a 'running' pipeline no sidecar has picked up yet
-- is 'starting'.  lag: what the streams hold past the positions, in records
-- (kafka) or bytes (s3, file), as last seen by the worker.  security_barrier:
-- the privilege test comes before any condition of the caller's query.
CREATE VIEW orochi.pipelines WITH (security_barrier) AS
SELECT p.pipeline_id,
       p.name,
       p.owner,
       p.source,
       p.target::regclass                                   AS target,
       p.format,
       CASE WHEN p.state = 'running' AND NOT orochi.pipeline_is_running(p.pipeline_id)
            THEN 'starting' ELSE p.state END                AS status,
       p.state_changed_at,
       pos.positions,
       coalesce(s.rows_loaded, 0)                           AS rows_loaded,
       coalesce(s.bytes_loaded, 0)                          AS bytes_loaded,
       coalesce(s.batches, 0)                               AS batches,
       coalesce(s.errors, 0)                                AS errors,
       pos.lag,
       CASE p.source WHEN 'kafka' THEN 'records' ELSE 'bytes' END AS lag_unit,
       s.last_batch_at,
       s.last_batch_rows,
       s.last_batch_duration,
       s.current_error,
       s.last_error,
       s.last_error_at,
       s.worker,
       orochi.pipeline_masked_options(p.options)            AS options,
       p.created_at
  FROM orochi.pipeline p
  LEFT JOIN orochi.pipeline_stats s ON s.pipeline_id = p.pipeline_id
  LEFT JOIN LATERAL (
       SELECT coalesce(jsonb_agg(jsonb_build_object(
                  'stream', x.stream, 'name', x.name, 'position', x.position,
                  'end', x.stream_end, 'done', x.done) ORDER BY x.stream), '[]'::jsonb) AS positions,
              sum(CASE WHEN x.done THEN 0 ELSE greatest(coalesce(x.stream_end, x.position) - x.position, 0) END)::bigint
                  AS lag
         FROM orochi.pipeline_positions x
        WHERE x.pipeline_id = p.pipeline_id) pos ON true
 WHERE pg_catalog.pg_has_role(p.owner::oid, 'USAGE');

-- Dead letters of the pipelines the caller has the rights of the owner of.
CREATE VIEW orochi.pipeline_errors WITH (security_barrier) AS
SELECT e.error_id,
       e.pipeline_id,
       e.stream,
       e.name,
       e.position,
       e.error,
       e.sqlstate,
       e.column_name,
       e.raw_record,
       orochi.pipeline_record_text(e.raw_record) AS raw_text,
       e.raw_size,
       e.error_time
  FROM orochi.pipeline_error_log e
  JOIN orochi.pipeline p ON p.pipeline_id = e.pipeline_id
 WHERE pg_catalog.pg_has_role(p.owner::oid, 'USAGE');

GRANT SELECT ON orochi.pipelines, orochi.pipeline_errors TO PUBLIC;

-- Internal: the body of orochi.pipeline_commit_batch (below), which checks
-- the caller's rights and then runs this as the extension owner.
CREATE FUNCTION orochi._pipeline_commit_batch(pipeline integer, positions jsonb,
                                             batch_rows bigint, batch_bytes bigint,
                                             dead_letters jsonb DEFAULT '[]',
                                             forget text[] DEFAULT '{}',
                                             duration interval DEFAULT NULL,
                                             fail_with text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p jsonb;
    n integer;
    errors_now bigint := jsonb_array_length(coalesce(dead_letters, '[]'));
    state_now text;
BEGIN
    SELECT x.state INTO state_now FROM orochi.pipeline x WHERE x.pipeline_id = $1 FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pipeline % does not exist', $1 USING ERRCODE = 'undefined_object';
    END IF;
    FOR p IN SELECT * FROM jsonb_array_elements(coalesce(positions, '[]')) LOOP
        IF p->'from' IS NULL OR p->'from' = 'null' THEN
            INSERT INTO orochi.pipeline_positions AS t
                        (pipeline_id, stream, position, stream_end, done, name, identity)
            VALUES ($1, p->>'stream', (p->>'to')::bigint, (p->>'end')::bigint,
                    coalesce((p->>'done')::boolean, false), p->>'name', p->>'identity')
            ON CONFLICT DO NOTHING;
        ELSE
            UPDATE orochi.pipeline_positions t
               SET position = (p->>'to')::bigint,
                   stream_end = coalesce((p->>'end')::bigint, t.stream_end),
                   done = coalesce((p->>'done')::boolean, t.done),
                   name = coalesce(p->>'name', t.name),
                   identity = coalesce(p->>'identity', t.identity),
                   updated_at = now()
             WHERE t.pipeline_id = $1 AND t.stream = p->>'stream'
               AND t.position = (p->>'from')::bigint;
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'pipeline %: the position of stream % moved under this batch', $1, p->>'stream'
                USING ERRCODE = 'serialization_failure',
                      DETAIL = 'Another worker loaded the same records; this batch is discarded.';
        END IF;
    END LOOP;
    IF forget IS NOT NULL AND cardinality(forget) > 0 THEN
        DELETE FROM orochi.pipeline_positions t WHERE t.pipeline_id = $1 AND t.stream = ANY (forget);
    END IF;
    IF errors_now > 0 THEN
        INSERT INTO orochi.pipeline_error_log
               (pipeline_id, stream, name, position, raw_record, raw_size, error, sqlstate, column_name)
        SELECT $1, d->>'stream', d->>'name', (d->>'position')::bigint, decode(d->>'raw', 'base64'),
               (d->>'size')::bigint, d->>'error', d->>'sqlstate', d->>'column'
          FROM jsonb_array_elements(dead_letters) d;
    END IF;
    INSERT INTO orochi.pipeline_stats AS s (pipeline_id) VALUES ($1) ON CONFLICT DO NOTHING;
    UPDATE orochi.pipeline_stats s
       SET rows_loaded = s.rows_loaded + batch_rows,
           bytes_loaded = s.bytes_loaded + batch_bytes,
           batches = s.batches + CASE WHEN batch_rows > 0 OR errors_now > 0 THEN 1 ELSE 0 END,
           errors = s.errors + errors_now,
           errors_since_start = s.errors_since_start + errors_now,
           last_batch_at = CASE WHEN batch_rows > 0 OR errors_now > 0 THEN now() ELSE s.last_batch_at END,
           last_batch_rows = CASE WHEN batch_rows > 0 OR errors_now > 0 THEN batch_rows::integer
                                  ELSE s.last_batch_rows END,
           last_batch_duration = CASE WHEN batch_rows > 0 OR errors_now > 0 THEN duration
                                      ELSE s.last_batch_duration END,
           current_error = CASE WHEN fail_with IS NULL THEN NULL ELSE fail_with END,
           last_error = coalesce(fail_with, s.last_error),
           last_error_at = CASE WHEN fail_with IS NULL THEN s.last_error_at ELSE now() END
     WHERE s.pipeline_id = $1;
    IF fail_with IS NOT NULL AND state_now IN ('running', 'paused') THEN
        UPDATE orochi.pipeline x SET state = 'failed', state_changed_at = now() WHERE x.pipeline_id = $1;
    END IF;
    RETURN (SELECT s.errors_since_start FROM orochi.pipeline_stats s WHERE s.pipeline_id = $1);
END
$$;

REVOKE EXECUTE ON FUNCTION orochi._pipeline_commit_batch(integer, jsonb, bigint, bigint, jsonb, text[],
                                                         interval, text) FROM PUBLIC;

-- The sidecar's commit of one batch, called by its worker (connected as the
-- pipeline's owner) in the transaction that wrote the rows.  positions:
-- [{stream, from, to, end, done, name, identity}]: each stream moves from
-- "from" (NULL: a stream not seen before) to "to"; a stream whose position
-- is not "from" any more (another worker loaded it) makes the whole
-- transaction fail (SQLSTATE 40001), so that no record is loaded twice.
-- forget: streams gone from the source (files deleted).  dead_letters:
-- [{stream, name, position, raw (base64), size, error, sqlstate, column}].
-- For roles with the rights of the pipeline's owner.
CREATE FUNCTION orochi.pipeline_commit_batch(pipeline integer, positions jsonb,
                                             batch_rows bigint, batch_bytes bigint,
                                             dead_letters jsonb DEFAULT '[]',
                                             forget text[] DEFAULT '{}',
                                             duration interval DEFAULT NULL,
                                             fail_with text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- What the sidecar's worker reads and reports, as the pipeline's owner (for
-- roles with the rights of the pipeline's owner): the state asked for and
-- the bad records counted since the last start (NULLs for a pipeline that
-- is gone), the streams' committed positions, which worker runs it, the
-- problem it has now (NULL: none), and that it stops itself (failed).
CREATE FUNCTION orochi.pipeline_state(pipeline_id integer, OUT state text, OUT errors_since_start bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.pipeline_stream_positions(pipeline_id integer)
RETURNS TABLE (stream text, "position" bigint, stream_end bigint, done boolean, name text, identity text)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.pipeline_report_worker(pipeline_id integer, worker text)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.pipeline_report_error(pipeline_id integer, error text)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.pipeline_fail(pipeline_id integer, error text)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- A dropped table takes its pipelines with it (their positions, statistics
-- and dead letters too); a worker loading into it stops at its next batch.
-- SECURITY DEFINER (the catalog is the extension owner's): whoever may drop
-- a table may drop its pipelines; what goes is decided by the objects
-- Postgres reports dropped.
CREATE FUNCTION orochi.pipelines_on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
BEGIN
    SELECT array_agg(objid) INTO dropped
      FROM pg_event_trigger_dropped_objects()
     WHERE classid = 'pg_catalog.pg_class'::regclass AND objsubid = 0;
    IF dropped IS NOT NULL AND to_regclass('orochi.pipeline') IS NOT NULL THEN
        DELETE FROM orochi.pipeline WHERE target = ANY (dropped);
    END IF;
END
$$;

CREATE EVENT TRIGGER orochi_pipelines_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.pipelines_on_sql_drop();

-- The SQL surface (orochi_fdw/pipelines/sqlapi.py).
CREATE FUNCTION orochi.create_pipeline(name text, source text, target regclass, format text,
                                       options jsonb DEFAULT '{}')
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.start_pipeline(pipeline_id integer)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.pause_pipeline(pipeline_id integer)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.resume_pipeline(pipeline_id integer)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.stop_pipeline(pipeline_id integer)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.drop_pipeline(pipeline_id integer, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- ---------------------------------------------------------------- workload management
-- (docs/workload.md; sql/80_workload.sql)  Resource pools and workload
-- classes, new in 0.2.0: their catalog, the functions that define them
-- (superusers) and the monitoring functions (everyone).

-- One row per pool.  NULL means "no limit" for max_queue and queue_timeout_ms,
-- and "orochi.default_query_timeout_ms" for query_timeout_ms (0: none).
CREATE SEQUENCE orochi.resource_pools_pool_id_seq;
CREATE TABLE orochi.resource_pools (
    pool_id          integer PRIMARY KEY DEFAULT nextval('orochi.resource_pools_pool_id_seq'),
    pool_name        name NOT NULL UNIQUE CHECK (pool_name <> 'default'),
    max_concurrency  integer NOT NULL CHECK (max_concurrency > 0),
    max_queue        integer CHECK (max_queue >= 0),
    queue_timeout_ms integer CHECK (queue_timeout_ms > 0),
    query_timeout_ms integer CHECK (query_timeout_ms >= 0),
    priority         integer NOT NULL DEFAULT 0,
    work_mem_kb      integer CHECK (work_mem_kb >= 64),
    created_at       timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE orochi.resource_pools_pool_id_seq OWNED BY orochi.resource_pools.pool_id;

-- One row per class.  match is the criteria as given (normalized); the
-- match_* columns are what the C side tests: roles (the session user is a
-- member), databases, application_name LIKE patterns, statement kinds (bits:
-- 1 read, 2 write, 4 ddl; 0 any), the plan's estimated cost at least
-- match_min_cost.  An empty criterion matches everything.  Classes are tried
-- in order of specificity (number of criteria), then name.  pool_id NULL is
-- the default pool.
CREATE SEQUENCE orochi.workload_classes_class_id_seq;
CREATE TABLE orochi.workload_classes (
    class_id                integer PRIMARY KEY DEFAULT nextval('orochi.workload_classes_class_id_seq'),
    class_name              name NOT NULL UNIQUE,
    pool_id                 integer REFERENCES orochi.resource_pools ON DELETE RESTRICT,
    priority                integer,
    match                   jsonb NOT NULL DEFAULT '{}',
    match_roles             oid[] NOT NULL DEFAULT '{}',
    match_databases         oid[] NOT NULL DEFAULT '{}',
    match_application_names text[] NOT NULL DEFAULT '{}',
    match_kinds             integer NOT NULL DEFAULT 0 CHECK (match_kinds BETWEEN 0 AND 7),
    match_min_cost          float8 CHECK (match_min_cost >= 0),
    specificity             integer NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE orochi.workload_classes_class_id_seq OWNED BY orochi.workload_classes.class_id;

-- Roles whose sessions all go to one class (assign_workload_class(class, role)).
CREATE TABLE orochi.workload_role_classes (
    role     oid PRIMARY KEY,
    class_id integer NOT NULL REFERENCES orochi.workload_classes ON DELETE CASCADE
);

-- pg_dump keeps the definitions.
SELECT pg_catalog.pg_extension_config_dump('orochi.resource_pools', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.resource_pools_pool_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.workload_classes', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.workload_classes_class_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.workload_role_classes', '');

-- ---------------------------------------------------------------- administration (superusers)

CREATE FUNCTION orochi.create_resource_pool(name text, max_concurrency integer,
                                            max_queue integer DEFAULT NULL,
                                            queue_timeout_ms integer DEFAULT NULL,
                                            query_timeout_ms integer DEFAULT NULL,
                                            priority integer DEFAULT 0,
                                            work_mem text DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- NULL leaves a setting as it is; -1 removes a limit (max_queue,
-- queue_timeout_ms, query_timeout_ms), work_mem => 'default' the pool's work_mem.
CREATE FUNCTION orochi.alter_resource_pool(name text,
                                           max_concurrency integer DEFAULT NULL,
                                           max_queue integer DEFAULT NULL,
                                           queue_timeout_ms integer DEFAULT NULL,
                                           query_timeout_ms integer DEFAULT NULL,
                                           priority integer DEFAULT NULL,
                                           work_mem text DEFAULT NULL,
                                           new_name text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.drop_resource_pool(name text, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.create_workload_class(name text, pool text, match jsonb DEFAULT '{}',
                                             priority integer DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- NULL leaves a setting as it is.
CREATE FUNCTION orochi.alter_workload_class(name text, pool text DEFAULT NULL,
                                            match jsonb DEFAULT NULL,
                                            priority integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.drop_workload_class(name text, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- A role's sessions (role =>), or one session (pid =>; this one when neither is
-- given) all go to the class; class_name NULL removes the assignment.
CREATE FUNCTION orochi.assign_workload_class(class_name text, role name DEFAULT NULL,
                                             pid integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Read the catalog again and put it in force (after restoring a dump, or
-- after a failed load: see workload_status()).
CREATE FUNCTION orochi.workload_reload()
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_workload_reload'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.pool_stats_reset(pool_name text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_pool_stats_reset'
LANGUAGE C VOLATILE;

-- Internal: this transaction changed the catalog; publish it at commit.
CREATE FUNCTION orochi.workload_publish()
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_workload_publish'
LANGUAGE C VOLATILE;

-- Internal: assign_workload_class(class, pid => ...).
CREATE FUNCTION orochi.workload_assign_session(pid integer, class_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_workload_assign_session'
LANGUAGE C VOLATILE;

REVOKE EXECUTE ON FUNCTION orochi.create_resource_pool(text, integer, integer, integer, integer, integer, text),
                           orochi.alter_resource_pool(text, integer, integer, integer, integer, integer, text, text),
                           orochi.drop_resource_pool(text, boolean),
                           orochi.create_workload_class(text, text, jsonb, integer),
                           orochi.alter_workload_class(text, text, jsonb, integer),
                           orochi.drop_workload_class(text, boolean),
                           orochi.assign_workload_class(text, name, integer),
                           orochi.workload_reload(),
                           orochi.pool_stats_reset(text),
                           orochi.workload_publish(),
                           orochi.workload_assign_session(integer, text)
    FROM PUBLIC;

-- ---------------------------------------------------------------- monitoring (everyone)

-- The pools in force (from shared memory: the same in every database).
CREATE FUNCTION orochi.list_resource_pools(OUT pool_name text, OUT max_concurrency integer,
                                           OUT max_queue integer, OUT queue_timeout_ms integer,
                                           OUT query_timeout_ms integer, OUT priority integer,
                                           OUT work_mem text, OUT is_default boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_list_resource_pools'
LANGUAGE C VOLATILE;

-- The classes in force, in the order they are tried.
CREATE FUNCTION orochi.list_workload_classes(OUT class_name text, OUT pool_name text,
                                             OUT priority integer, OUT roles text[],
                                             OUT databases text[], OUT application_names text[],
                                             OUT kinds text[], OUT min_cost float8,
                                             OUT assigned_roles text[], OUT evaluation_order integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_list_workload_classes'
LANGUAGE C VOLATILE;

-- Live counts and statistics per pool: waited = admitted after queueing;
-- canceled = left the queue on cancel, statement_timeout or exit;
-- lock_admitted = admitted beyond the limit because a running statement of
-- the pool waited for its locks; waits in ms over every admitted statement.
CREATE FUNCTION orochi.pool_stats(OUT pool_name text, OUT max_concurrency integer,
                                  OUT running integer, OUT queued integer,
                                  OUT admitted bigint, OUT waited bigint, OUT rejected bigint,
                                  OUT timed_out bigint, OUT canceled bigint,
                                  OUT lock_admitted bigint, OUT mean_wait_ms float8,
                                  OUT p95_wait_ms float8, OUT stats_reset timestamptz,
                                  OUT dropped boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_pool_stats'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.workload_status(OUT enabled boolean, OUT preloaded boolean,
                                       OUT workload_database text, OUT loaded boolean,
                                       OUT loaded_at timestamptz, OUT generation bigint,
                                       OUT pools integer, OUT classes integer,
                                       OUT running integer, OUT queued integer,
                                       OUT load_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_workload_status'
LANGUAGE C VOLATILE;

-- Per backend that has been admitted: state is idle, queued or running;
-- waited_ms is the current statement's wait so far, or the last one's.
CREATE FUNCTION orochi.session_resources(OUT pid integer, OUT pool_name text, OUT class_name text,
                                         OUT priority integer, OUT state text,
                                         OUT waited_ms float8, OUT running_ms float8)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_session_resources'
LANGUAGE C VOLATILE;

-- The statements waiting for a slot; queue_position 1 is admitted next.
CREATE FUNCTION orochi.queued_queries(OUT pid integer, OUT pool_name text, OUT class_name text,
                                      OUT priority integer, OUT queue_position integer,
                                      OUT waited_ms float8, OUT enqueued_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_queued_queries'
LANGUAGE C VOLATILE;

-- ---------------------------------------------------------------- distributed tables
-- New in 0.2.0: sql/70_cluster.sql as it is.

-- Distributed tables (docs/distributed.md): the coordinator's metadata of
-- worker nodes, distributed and reference tables, their shards and
-- placements, co-location groups and the two-phase commit record; the SQL
-- API (Citus's names); the event triggers that carry DROP and ALTER of a
-- distributed table to its shards.
--
-- A distributed table is, on the coordinator, an orochi foreign table served
-- by orochi_fdw.cluster.DistributedTable: ordinary SQL on it goes through
-- the bridge, and the wrapper prunes, routes, fans out and merges.  Its rows
-- live in shards, tables "<table>_<shard id>" in the same schema on the
-- workers, each a PostgreSQL 15 with orochi.

-- Credentials for the connections to the workers: a user mapping on the
-- server orochi_cluster (options user, password, sslmode ...), else libpq's
-- usual files (~/.pgpass of the server's OS user).
CREATE FUNCTION orochi.cluster_options_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER orochi_cluster VALIDATOR orochi.cluster_options_validator;
CREATE SERVER orochi_cluster FOREIGN DATA WRAPPER orochi_cluster;

-- Worker nodes, as add_node registered them.
CREATE TABLE orochi.dist_node (
    node_id    serial PRIMARY KEY,
    host       text NOT NULL,
    port       integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    role       text NOT NULL DEFAULT 'worker' CHECK (role IN ('worker')),
    is_active  boolean NOT NULL DEFAULT true,
    added_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (host, port)
);

-- Tables of one co-location group have the same shard count and
-- distribution column type, and shard i of each lies on the same node: a
-- join on the distribution column runs shard by shard on the workers.
CREATE TABLE orochi.dist_colocation (
    colocation_id   serial PRIMARY KEY,
    shard_count     integer NOT NULL,
    dist_type       regtype NOT NULL,
    dist_collation  oid NOT NULL DEFAULT 0
);

-- One row per distributed ('h', hash) or reference ('r') table.  The
-- distribution column is kept by attnum (a RENAME COLUMN keeps it); its name
-- at the time of the last DDL is in columns.  columns is the coordinator
-- table's definition as the shards have it ([{attnum, name, type, collation,
-- not_null}]): the DDL trigger compares against it to find what an ALTER
-- changed.  Shards are named <shard_schema>.<shard_base>_<shard_id>.
CREATE TABLE orochi.dist_table (
    relid          oid PRIMARY KEY,
    method         "char" NOT NULL CHECK (method IN ('h', 'r')),
    dist_attnum    smallint,
    dist_type      regtype,
    colocation_id  integer REFERENCES orochi.dist_colocation,
    shard_storage  text NOT NULL CHECK (shard_storage IN ('columnar', 'heap')),
    shard_schema   name NOT NULL,
    shard_base     name NOT NULL,
    columns        jsonb NOT NULL,
    acl            text,                -- the table's privileges as its shards have them
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((method = 'h') = (dist_attnum IS NOT NULL))
);

-- Shard ids start where Citus's do.
CREATE SEQUENCE orochi.dist_shard_id_seq START 102008;

-- Rows of reference tables carry a hidden column orochi_rowid on the
-- workers, the same on every placement, by which UPDATE and DELETE find a
-- row on all of them.
CREATE SEQUENCE orochi.dist_reference_rowid_seq;

-- A hash shard holds the rows whose distribution value hashes (the type's
-- extended hash function with seed 0, low 32 bits) into [hash_min, hash_max];
-- a reference table has one shard with no range.
CREATE TABLE orochi.dist_shard (
    shard_id     bigint PRIMARY KEY DEFAULT nextval('orochi.dist_shard_id_seq'),
    relid        oid NOT NULL REFERENCES orochi.dist_table ON DELETE CASCADE,
    shard_index  integer NOT NULL,
    hash_min     integer,
    hash_max     integer,
    UNIQUE (relid, shard_index)
);
ALTER SEQUENCE orochi.dist_shard_id_seq OWNED BY orochi.dist_shard.shard_id;

-- Where each shard is: one node for a hash shard, every node for a
-- reference table's shard.
CREATE TABLE orochi.dist_placement (
    shard_id  bigint NOT NULL REFERENCES orochi.dist_shard ON DELETE CASCADE,
    node_id   integer NOT NULL REFERENCES orochi.dist_node,
    PRIMARY KEY (shard_id, node_id)
);
CREATE INDEX dist_placement_node_idx ON orochi.dist_placement (node_id);

-- The commit decision of a two-phase commit: written in the coordinator's
-- own transaction before the workers PREPARE, so it exists exactly when
-- that transaction committed.  recover_prepared_transactions() commits the
-- prepared transactions that have a row and rolls back the others.
CREATE TABLE orochi.dist_transaction (
    node_id  integer NOT NULL,
    gid      text NOT NULL,
    PRIMARY KEY (node_id, gid)
);

-- This database's identity as a coordinator, in the names of its prepared
-- transactions (orochi_<coordinator id>_<xid>_<node id>), so that recovery
-- touches only its own.
CREATE TABLE orochi.dist_coordinator (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    coordinator_id  integer NOT NULL,
    recovered_for   timestamptz          -- postmaster start of the last start-up recovery
);
INSERT INTO orochi.dist_coordinator (coordinator_id)
VALUES ((random() * 2147483646)::integer + 1);

-- The catalog belongs to the extension owner and is granted to no one
-- (docs/SECURITY.md): Orochi reads and writes it as that owner, after
-- checking the caller's rights; users see it through the views below.


-- ------------------------------------------------------------------ views

CREATE VIEW orochi.nodes WITH (security_barrier) AS
SELECT node_id, host, port, role, is_active
  FROM orochi.dist_node;

-- The distributed tables the caller may read (SELECT on them), as
-- orochi.stripes shows columnar tables.
CREATE VIEW orochi.distributed_tables WITH (security_barrier) AS
SELECT t.relid::regclass AS table_name,
       CASE t.method WHEN 'h' THEN 'hash' ELSE 'reference' END AS distribution_type,
       (SELECT a.attname FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = t.relid AND a.attnum = t.dist_attnum) AS distribution_column,
       (SELECT count(*) FROM orochi.dist_shard s WHERE s.relid = t.relid)::integer AS shard_count,
       t.colocation_id,
       t.shard_storage
  FROM orochi.dist_table t
 WHERE pg_catalog.has_table_privilege(t.relid, 'SELECT');

-- Per shard and placement: live figures read from the workers.
CREATE FUNCTION orochi.shard_status(table_name regclass,
    OUT shard_id bigint, OUT shard_index integer, OUT hash_min integer, OUT hash_max integer,
    OUT node_id integer, OUT host text, OUT port integer, OUT shard_name text,
    OUT rows bigint, OUT bytes bigint, OUT status text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.shard_placements(
    OUT shard_id bigint, OUT table_name regclass, OUT shard_index integer,
    OUT hash_min integer, OUT hash_max integer, OUT node_id integer, OUT host text,
    OUT port integer, OUT shard_name text, OUT rows bigint, OUT bytes bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The shards of the distributed tables the caller may read.
CREATE VIEW orochi.shards WITH (security_barrier) AS
SELECT * FROM orochi.shard_placements();

GRANT SELECT ON orochi.nodes, orochi.distributed_tables, orochi.shards TO PUBLIC;

-- ---------------------------------------------------------------- the API

-- Register a worker: it must answer, have the orochi extension in a
-- database of the coordinator's name, and accept prepared transactions.
CREATE FUNCTION orochi.add_node(host text, port integer)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Forget a worker that holds no shard.
CREATE FUNCTION orochi.remove_node(host text, port integer)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Spread a table over the workers in shard_count hash shards; its rows move
-- to the shards in the same transaction.
CREATE FUNCTION orochi.create_distributed_table(table_name regclass, distribution_column text,
                                                shard_count integer DEFAULT 32,
                                                colocate_with text DEFAULT 'default',
                                                shard_storage text DEFAULT 'columnar')
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- A copy of the table on every worker.
CREATE FUNCTION orochi.create_reference_table(table_name regclass,
                                              shard_storage text DEFAULT 'columnar')
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Bring a distributed or reference table's rows back into one local heap
-- table of the same name; its shards are dropped.
CREATE FUNCTION orochi.undistribute_table(table_name regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Commit or roll back the prepared transactions this coordinator left on
-- its workers, from orochi.dist_transaction; returns how many it resolved.
CREATE FUNCTION orochi.recover_prepared_transactions()
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- ---------------------------------------------------- DDL on the coordinator

CREATE FUNCTION orochi.cluster_drop_tables(oid[])
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.cluster_alter_tables(oid[])
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.cluster_on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
AS $$
DECLARE
    dropped oid[];
BEGIN
    SELECT array_agg(objid) INTO dropped
      FROM pg_event_trigger_dropped_objects()
     WHERE classid = 'pg_catalog.pg_class'::regclass
       AND objsubid = 0
       AND object_type = 'foreign table';
    -- the catalog is read by the function, as the extension owner
    IF dropped IS NOT NULL THEN
        PERFORM orochi.cluster_drop_tables(dropped);
    END IF;
END;
$$;

CREATE EVENT TRIGGER orochi_cluster_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.cluster_on_sql_drop();

CREATE FUNCTION orochi.cluster_on_ddl_end()
RETURNS event_trigger
LANGUAGE plpgsql
AS $$
DECLARE
    tables oid[];
BEGIN
    SELECT array_agg(DISTINCT c.objid) INTO tables
      FROM pg_event_trigger_ddl_commands() c
      JOIN pg_catalog.pg_foreign_table f ON f.ftrelid = c.objid
     WHERE c.classid = 'pg_catalog.pg_class'::regclass;
    IF tables IS NOT NULL THEN
        PERFORM orochi.cluster_alter_tables(tables);
    END IF;
END;
$$;

CREATE EVENT TRIGGER orochi_cluster_ddl_end ON ddl_command_end
    WHEN TAG IN ('ALTER FOREIGN TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION orochi.cluster_on_ddl_end();

-- GRANT and REVOKE on a distributed table: its shards get the same
-- privileges (the coordinator connects to the workers as the current user).
CREATE FUNCTION orochi.cluster_sync_privileges()
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.cluster_on_grant()
RETURNS event_trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM orochi.cluster_sync_privileges();  -- it reads the catalog as the extension owner
END;
$$;

CREATE EVENT TRIGGER orochi_cluster_grant ON ddl_command_end
    WHEN TAG IN ('GRANT', 'REVOKE')
    EXECUTE FUNCTION orochi.cluster_on_grant();


-- ---------------------------------------------------------------- change data capture
-- New in 0.2.0: the objects of sql/90_cdc.sql, as a new install makes them.

-- Change data capture (docs/cdc.md): ordered, transactional change streams
-- of heap and orochi tables, sent by orochi-sidecar to Kafka, webhooks or
-- files in Debezium's format.
--
-- Each subscription has a logical replication slot (created by the sidecar,
-- which needs the REPLICATION attribute) decoded with pgoutput: heap tables
-- through the publication orochi_cdc_<id> (row changes), orochi tables
-- through the signed transactional messages their write path emits
-- (orochi_fdw/cdc/capture.py).  Both arrive at the transaction's commit, in
-- commit order.
--
-- Privileges (docs/SECURITY.md), as for the rest of the catalog: the tables
-- belong to the extension owner and are granted to no one.  The SQL
-- functions (orochi_fdw/cdc/sqlapi.py) check the caller's rights first (a
-- subscription is managed by roles with the rights of its owner) and then
-- read and write them with internal statements; the writers of orochi
-- tables ask which tables are captured with an internal statement too.
-- orochi-sidecar, which streams the subscriptions, connects as a superuser.

CREATE SEQUENCE orochi.cdc_subscription_id_seq;

-- One row per subscription.  state is what its owner asked for last, or
-- 'failed' when it stopped itself (max_lag, lost privileges).
CREATE TABLE orochi.cdc_subscription (
    subscription_id  integer PRIMARY KEY DEFAULT nextval('orochi.cdc_subscription_id_seq'),
    name             text NOT NULL UNIQUE CHECK (name <> ''),
    sink             text NOT NULL CHECK (sink IN ('kafka', 'webhook', 'file')),
    format           text NOT NULL CHECK (format IN ('debezium', 'json')),
    options          jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'created'
                     CHECK (state IN ('created', 'running', 'stopped', 'failed')),
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    owner            regrole NOT NULL,  -- the role that created it (never the extension owner's default)
    created_at       timestamptz NOT NULL DEFAULT now(),
    slot_name        text NOT NULL UNIQUE,       -- orochi_cdc_<database oid>_<subscription id>
    publication_name text NOT NULL,              -- orochi_cdc_<subscription id>
    slot_lsn         pg_lsn,                     -- the slot's consistent point (the snapshot's), once made
    snapshot_done    boolean NOT NULL DEFAULT false,
    confirmed_lsn    pg_lsn                      -- end of the last transaction the sink acknowledged
);
ALTER SEQUENCE orochi.cdc_subscription_id_seq OWNED BY orochi.cdc_subscription.subscription_id;

-- The tables of each subscription.  key_columns: the columns of the event
-- key (the primary key or replica identity of a heap table; the given
-- key_columns, else every column, of an orochi table).
CREATE TABLE orochi.cdc_subscription_table (
    subscription_id integer NOT NULL REFERENCES orochi.cdc_subscription ON DELETE CASCADE,
    relid           oid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('heap', 'orochi')),
    key_columns     text[] NOT NULL,
    ordinal         integer NOT NULL,
    capturing       boolean NOT NULL DEFAULT false,  -- started at least once, and its slot not dropped
    PRIMARY KEY (subscription_id, relid)
);
-- what the write path of orochi tables asks, once per transaction and table
CREATE INDEX cdc_subscription_table_relid ON orochi.cdc_subscription_table (relid) WHERE capturing;

-- Progress and health, one row per subscription (written by the sidecar).
CREATE TABLE orochi.cdc_stats (
    subscription_id   integer PRIMARY KEY REFERENCES orochi.cdc_subscription ON DELETE CASCADE,
    events_sent       bigint NOT NULL DEFAULT 0,   -- change events acknowledged by the sink
    snapshot_events   bigint NOT NULL DEFAULT 0,   -- of which the initial snapshot's (op r)
    transactions      bigint NOT NULL DEFAULT 0,
    bytes_sent        bigint NOT NULL DEFAULT 0,
    batches           bigint NOT NULL DEFAULT 0,
    errors            bigint NOT NULL DEFAULT 0,   -- failed deliveries and events refused by the sink
    last_commit_lsn   pg_lsn,                      -- commit LSN of the last transaction delivered
    last_commit_time  timestamptz,                 -- its commit time
    last_delivery_at  timestamptz,
    pending_since     timestamptz,                 -- commit time of the oldest change not delivered, as last seen
    current_error     text,
    last_error        text,
    last_error_at     timestamptz,
    worker            text,                        -- host:pid of the sidecar running it
    worker_started_at timestamptz
);

-- Events a sink refused for good (a webhook's 4xx other than 429).
CREATE TABLE orochi.cdc_error_log (
    error_id        bigserial PRIMARY KEY,
    subscription_id integer NOT NULL REFERENCES orochi.cdc_subscription ON DELETE CASCADE,
    event_id        text NOT NULL,                 -- <commit lsn>:<index>
    table_name      text,
    op              text,
    status          integer,                       -- the HTTP status
    response        text,                          -- the first 4 kB of the response body
    event           jsonb,
    error_time      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cdc_error_log_subscription ON orochi.cdc_error_log (subscription_id, error_id);

-- Advisory lock key of a subscription (class 'ORCD' in the high 32 bits):
-- the sidecar worker that streams it holds it for its session.
CREATE FUNCTION orochi.cdc_lock_key(subscription_id integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (x'4f524344'::bigint << 32) | subscription_id::bigint $$;

CREATE FUNCTION orochi.cdc_is_running(subscription_id integer) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
           AND classid = x'4f524344'::bigint::oid
           AND objid = subscription_id::oid AND objsubid = 1)
$$;

-- Internal: make the publication of a subscription hold exactly its heap
-- tables (orochi tables are foreign tables, which publications cannot hold:
-- their changes come as messages).  Called by create_cdc_subscription as
-- the extension owner (adding a table to a publication needs its
-- ownership, which the subscription's owner, who needs only SELECT, may
-- lack); what it publishes is what the catalog says, and each table is
-- checked against the owner's privileges here.
CREATE FUNCTION orochi.cdc_sync_publication(subscription integer) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
    heap oid[];
    t oid;
BEGIN
    SELECT x.publication_name, x.owner INTO s FROM orochi.cdc_subscription x WHERE x.subscription_id = subscription;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'CDC subscription % does not exist', subscription USING ERRCODE = 'undefined_object';
    END IF;
    SELECT coalesce(array_agg(relid ORDER BY ordinal), '{}') INTO heap
      FROM orochi.cdc_subscription_table WHERE subscription_id = subscription AND kind = 'heap';
    FOREACH t IN ARRAY heap LOOP
        IF NOT has_table_privilege(s.owner::oid, t, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied for table %', t::regclass USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = s.publication_name) THEN
        EXECUTE format('CREATE PUBLICATION %I WITH (publish = ''insert, update, delete, truncate'')',
                       s.publication_name);
    END IF;
    IF cardinality(heap) > 0 THEN
        EXECUTE format('ALTER PUBLICATION %I SET TABLE %s', s.publication_name,
                       (SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ')
                          FROM unnest(heap) u(relid)
                          JOIN pg_catalog.pg_class c ON c.oid = u.relid
                          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace));
    END IF;
END
$$;

-- Internal: drop a subscription's publication and replication slot, once
-- its row is gone (in this transaction).  The slot's drop is not undone by
-- a rollback, as pg_drop_replication_slot's is not; a worker using the slot
-- is disconnected first.  Called as the extension owner by
-- drop_cdc_subscription and by orochi-sidecar (a superuser).
CREATE FUNCTION orochi.cdc_drop_replication(slot text, publication text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    holder integer;
    tries integer := 0;
BEGIN
    IF slot !~ ('^orochi_cdc_' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '_[0-9]+$') THEN
        RAISE EXCEPTION '"%" is not the replication slot of a CDC subscription of this database', slot
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM orochi.cdc_subscription WHERE slot_name = slot) THEN
        RAISE EXCEPTION 'replication slot "%" belongs to a CDC subscription', slot
            USING ERRCODE = 'object_in_use';
    END IF;
    IF publication IS NOT NULL AND publication ~ '^orochi_cdc_[0-9]+$'
       AND NOT EXISTS (SELECT 1 FROM orochi.cdc_subscription WHERE publication_name = publication) THEN
        EXECUTE format('DROP PUBLICATION IF EXISTS %I', publication);
    END IF;
    LOOP
        SELECT active_pid INTO holder FROM pg_catalog.pg_replication_slots WHERE slot_name = slot;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        EXIT WHEN holder IS NULL;
        IF tries >= 100 THEN
            RAISE WARNING 'replication slot "%" is in use by process %; orochi-sidecar drops it later', slot, holder;
            RETURN false;
        END IF;
        PERFORM pg_terminate_backend(holder);
        PERFORM pg_sleep(0.05);
        tries := tries + 1;
    END LOOP;
    PERFORM pg_drop_replication_slot(slot);
    RETURN true;
EXCEPTION WHEN undefined_object THEN
    RETURN false;
END
$$;

-- A dropped table leaves the subscriptions that capture it (its
-- publication membership goes with it).  SECURITY DEFINER: whoever may drop
-- a table may stop its capture.
CREATE FUNCTION orochi.cdc_on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
BEGIN
    SELECT array_agg(objid) INTO dropped
      FROM pg_event_trigger_dropped_objects()
     WHERE classid = 'pg_catalog.pg_class'::regclass AND objsubid = 0;
    IF dropped IS NOT NULL AND to_regclass('orochi.cdc_subscription_table') IS NOT NULL THEN
        DELETE FROM orochi.cdc_subscription_table WHERE relid = ANY (dropped);
    END IF;
END
$$;

CREATE EVENT TRIGGER orochi_cdc_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.cdc_on_sql_drop();

REVOKE EXECUTE ON FUNCTION orochi.cdc_sync_publication(integer), orochi.cdc_drop_replication(text, text)
    FROM PUBLIC;

-- The SQL surface (orochi_fdw/cdc/sqlapi.py).
CREATE FUNCTION orochi.create_cdc_subscription(name text, tables regclass[], sink text,
                                               format text DEFAULT 'debezium', options jsonb DEFAULT '{}')
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.drop_cdc_subscription(name text, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.start_cdc_subscription(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.stop_cdc_subscription(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- The key that signs the change messages of orochi tables, for the sidecar:
-- only sessions of a role that may read the WAL anyway (REPLICATION or
-- superuser) get it.
CREATE FUNCTION orochi.cdc_message_key()
RETURNS bytea
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Options as shown to everyone: values of keys that look like secrets
-- (passwords, webhook secrets, tokens, authorization headers, private keys)
-- masked, at any depth.
CREATE FUNCTION orochi.cdc_masked_options(options jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    masked jsonb := '{}';
    k text;
    v jsonb;
BEGIN
    IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
        RETURN options;
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(options) LOOP
        IF k ~* '(password|passwd|secret|token|credential|private|authorization|api[-_]?key|\.pem$|^ssl\.key)' THEN
            masked := masked || jsonb_build_object(k, '********');
        ELSE
            masked := masked || jsonb_build_object(k, orochi.cdc_masked_options(v));
        END IF;
    END LOOP;
    RETURN masked;
END
$$;

-- The subscriptions the caller has the rights of the owner of (superusers:
-- all), options masked.
CREATE FUNCTION orochi.list_cdc_subscriptions()
RETURNS TABLE (subscription_id integer, name text, owner regrole, sink text, format text, tables regclass[],
               status text, slot_name text, snapshot_done boolean, created_at timestamptz, options jsonb)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STABLE;

-- Statistics of one subscription (for roles with the rights of its owner).
-- lag_bytes: WAL written since the last transaction the sink acknowledged;
-- lag_seconds: how long the oldest change not delivered has waited (as last
-- seen by the worker); retained_wal_bytes: the WAL the slot keeps from
-- being removed.
CREATE FUNCTION orochi.cdc_subscription_stats(name text)
RETURNS TABLE (name text, status text, events_sent bigint, snapshot_events bigint, transactions bigint,
               bytes_sent bigint, last_committed_lsn pg_lsn, last_commit_time timestamptz,
               lag_bytes numeric, lag_seconds double precision, retained_wal_bytes numeric,
               wal_status text, errors bigint, current_error text, last_error text, last_error_at timestamptz,
               worker text)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STABLE;

-- Events refused by the sinks of the subscriptions the caller has the
-- rights of the owner of.  security_barrier: the privilege test comes
-- before any condition of the caller's query.
CREATE VIEW orochi.cdc_errors WITH (security_barrier) AS
SELECT e.error_id, s.name AS subscription, e.event_id, e.table_name, e.op, e.status, e.response, e.event,
       e.error_time
  FROM orochi.cdc_error_log e
  JOIN orochi.cdc_subscription s ON s.subscription_id = e.subscription_id
 WHERE pg_catalog.pg_has_role(s.owner::oid, 'USAGE');

GRANT SELECT ON orochi.cdc_errors TO PUBLIC;

-- ---------------------------------------------------------------- vector index segments
-- (sql/70_vector.sql)  An index file may be built over several stripes at
-- once: one row per stripe, all naming the file, so file_path is no longer
-- unique (an index keeps looking it up).
ALTER TABLE orochi.columnar_vector_index_files DROP CONSTRAINT columnar_vector_index_files_file_path_key;
CREATE INDEX columnar_vector_index_files_path_idx
    ON orochi.columnar_vector_index_files (file_path);

-- New in 0.2.0: sql/75_ha.sql as it is.

-- High availability (docs/ha.md): what the local orochi-sidecar's ha duty
-- knows of the Raft group and the node groups, and the standbys of this
-- server.  The raft_* functions and cluster_health ask the sidecar's REST
-- API (loopback), whose address it writes into the data directory; they are
-- for superusers and members of pg_monitor.

-- This member's Raft node: member id, leader / follower / candidate, term,
-- commit index, last applied entry, the leader, and each peer's match index.
CREATE FUNCTION orochi.raft_status()
RETURNS TABLE (member_id text, state text, term bigint, commit_index bigint, last_applied bigint,
               leader text, has_quorum boolean, peers jsonb)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The member id of the Raft leader (NULL during an election).
CREATE FUNCTION orochi.raft_leader()
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The replicated state: each member, its node group, whether it is the
-- group's primary, the group's generation and its last failover.
CREATE FUNCTION orochi.raft_cluster_info()
RETURNS TABLE (node_group text, member_id text, role text, host text, port integer, generation bigint,
               raft_address text, last_failover_at timestamptz)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Per member: role, whether its PostgreSQL answers, whether it is fenced,
-- replay lag behind its primary, its sidecar, generation, last failover.
CREATE FUNCTION orochi.cluster_health()
RETURNS TABLE (node_group text, member_id text, role text, host text, port integer, reachable boolean,
               fenced boolean, lag_bytes bigint, sidecar text, generation bigint, last_failover_at timestamptz)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The standbys streaming from this server (pg_stat_replication, with the
-- caller's rights: without pg_read_all_stats the positions are NULL).
CREATE FUNCTION orochi.replication_status()
RETURNS TABLE (standby text, client_addr inet, state text, sent_lsn pg_lsn, write_lsn pg_lsn,
               flush_lsn pg_lsn, replay_lsn pg_lsn, lag_bytes numeric, lag_seconds double precision,
               sync_state text)
LANGUAGE sql STABLE
AS $$
SELECT r.application_name::text, r.client_addr, r.state, r.sent_lsn, r.write_lsn, r.flush_lsn, r.replay_lsn,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.replay_lsn),
       extract(epoch FROM r.replay_lag)::double precision, r.sync_state
  FROM pg_catalog.pg_stat_replication r
 ORDER BY 1
$$;

REVOKE ALL ON FUNCTION orochi.raft_status(), orochi.raft_leader(), orochi.raft_cluster_info(),
    orochi.cluster_health(), orochi.replication_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION orochi.raft_status(), orochi.raft_leader(), orochi.raft_cluster_info(),
    orochi.cluster_health(), orochi.replication_status() TO pg_monitor;

-- Tiered storage (docs/tiering.md): hypertable chunks whose stripe files move
-- to S3-compatible object storage and stay readable with ranged reads.
--
-- A cold stripe keeps its row in orochi.columnar_stripes; its file_path names
-- the object, 'tier:<target id>/<object key>'.  The object key carries the
-- database, the table, the stripe and the id of the transaction that
-- uploaded it plus a random part, so a retried move never overwrites an
-- object, and an object no row names whose uploader has ended is an orphan
-- that orochi.vacuum() deletes.

CREATE SEQUENCE orochi.storage_target_id_seq;

-- Object storage targets.  Granted to no one: the credentials
-- (access_key_id, secret_access_key) are read only by Orochi itself (as the
-- extension owner) and by superusers; orochi.storage_targets shows the rest.
CREATE TABLE orochi.storage_target (
    target_id          integer PRIMARY KEY DEFAULT nextval('orochi.storage_target_id_seq'),
    name               text NOT NULL UNIQUE,
    owner              oid NOT NULL,
    endpoint           text,                    -- NULL: AWS's own endpoint for the region
    bucket             text NOT NULL,
    prefix             text NOT NULL DEFAULT '',
    region             text,
    options            jsonb NOT NULL DEFAULT '{}',   -- without the credentials
    access_key_id      text,
    secret_access_key  text,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- A chunk's last move to or from object storage.
ALTER TABLE orochi.hypertable_chunks
    ADD COLUMN tier_target_id integer,        -- the target of its last tier_chunk (NULL: never tiered)
    ADD COLUMN tiered_at      timestamptz,    -- when it last became cold (NULL: hot)
    ADD COLUMN tiered_bytes   bigint;         -- bytes it moved then

-- Where a file named in the catalog is (see 10_columnar.sql); an object of a
-- storage target is named as the catalog names it.
CREATE OR REPLACE FUNCTION orochi._file_path(file_path text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN file_path LIKE '/%' OR file_path LIKE 'tier:%' THEN file_path
            ELSE 'orochi/' || (SELECT d.oid FROM pg_catalog.pg_database d
                                WHERE d.datname = pg_catalog.current_database()) || '/' || file_path END;

-- Create a storage target.  options: connect_timeout, read_timeout (seconds),
-- max_attempts (retries, boto3's standard mode), addressing_style ('path' or
-- 'virtual'), and the credentials access_key_id / secret_access_key, which
-- are kept apart from the other options.
CREATE FUNCTION orochi.create_storage_target(name text, endpoint text, bucket text, prefix text DEFAULT '',
                                             region text DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Drop a storage target (its owner or a superuser); refused while a stripe
-- lives in it.
CREATE FUNCTION orochi.drop_storage_target(name text, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Every storage target, without its credentials.
CREATE VIEW orochi.storage_targets WITH (security_barrier) AS
SELECT t.name, t.owner::regrole AS owner, t.endpoint, t.bucket, t.prefix, t.region, t.options,
       t.access_key_id IS NOT NULL AS has_credentials, t.created_at
  FROM orochi.storage_target t;

GRANT SELECT ON orochi.storage_targets TO PUBLIC;

-- Move a chunk's stripe files to a storage target (upload, verify, then the
-- catalog), and back.  The caller must own the hypertable and the target
-- (or be a member of its owner, or a superuser).
CREATE FUNCTION orochi.tier_chunk(chunk text, target text, if_not_tiered boolean DEFAULT true)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.untier_chunk(chunk text, if_tiered boolean DEFAULT true)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- A job moving a hypertable's chunks older than move_after to a target.
CREATE FUNCTION orochi.add_tiering_policy(relation regclass, move_after "any", target text,
                                          schedule_interval interval DEFAULT interval '1 day',
                                          if_not_exists boolean DEFAULT false,
                                          initial_start timestamptz DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.remove_tiering_policy(relation regclass, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The chunks view, with each chunk's tier ('hot', 'cold', or 'mixed': some
-- stripes local, as rows written into a cold chunk after its move and then
-- compacted) and where its objects are.
CREATE OR REPLACE VIEW orochi.chunks WITH (security_barrier) AS
SELECT h.relid::regclass                                  AS hypertable_name,
       '_hyper_' || c.relid || '_' || c.chunk_id || '_chunk' AS chunk_name,
       c.chunk_id,
       h.time_column                                      AS primary_dimension,
       h.time_type                                        AS primary_dimension_type,
       CASE WHEN h.time_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
            THEN NULL ELSE orochi._time_key_to_timestamptz(c.range_start) END AS range_start,
       CASE WHEN h.time_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
            THEN NULL ELSE orochi._time_key_to_timestamptz(c.range_end) END   AS range_end,
       c.range_start                                      AS range_start_integer,
       c.range_end                                        AS range_end_integer,
       coalesce(s.stripes, 0)                             AS stripes,
       coalesce(s.stripe_rows, 0) + coalesce(s.delta_rows, 0) AS rows,
       coalesce(s.before_compression_bytes, 0)            AS before_compression_bytes,
       coalesce(s.after_compression_bytes, 0)             AS after_compression_bytes,
       st.status = 'Compressed'                           AS is_compressed,
       st.status                                          AS compression_status,
       c.compressed_at,
       c.compressed_rows,
       c.uncompressed_bytes                               AS compressed_from_bytes,
       c.compressed_bytes                                 AS compressed_to_bytes,
       c.created_at                                       AS chunk_creation_time,
       CASE WHEN coalesce(ts.cold_stripes, 0) = 0 THEN 'hot'
            WHEN ts.hot_stripes = 0 THEN 'cold'
            ELSE 'mixed' END                              AS tier,
       ts.target                                          AS storage_target,
       ts.location                                        AS location,
       coalesce(ts.cold_bytes, 0)                         AS cold_bytes,
       c.tiered_at
  FROM orochi.hypertable_chunks c
  JOIN orochi.hypertables h ON h.relid = c.relid
  LEFT JOIN orochi.hypertable_chunk_stats() s ON s.chunk_id = c.chunk_id
  LEFT JOIN (
    -- per chunk: its stripes in object storage and their bytes, where they are
    SELECT s.chunk_id,
           count(*) FILTER (WHERE s.file_path LIKE 'tier:%'),
           count(*) FILTER (WHERE s.file_path NOT LIKE 'tier:%'),
           coalesce(sum(s.file_bytes) FILTER (WHERE s.file_path LIKE 'tier:%'), 0)::bigint,
           coalesce(sum(s.file_bytes) FILTER (WHERE s.file_path NOT LIKE 'tier:%'), 0)::bigint,
           min(t.name),
           min(CASE WHEN t.target_id IS NOT NULL
                    THEN 's3://' || t.bucket || '/' ||
                         regexp_replace(substr(s.file_path, strpos(s.file_path, '/') + 1), '/[^/]*$', '/') END)
      FROM orochi.columnar_stripes s
      LEFT JOIN orochi.storage_target t
             ON s.file_path LIKE 'tier:%'
            AND t.target_id = CASE WHEN s.file_path LIKE 'tier:%'
                                   THEN split_part(substr(s.file_path, 6), '/', 1)::integer END
     WHERE s.chunk_id IS NOT NULL
     GROUP BY s.chunk_id
  ) ts(chunk_id, cold_stripes, hot_stripes, cold_bytes, hot_bytes, target, location)
         ON ts.chunk_id = c.chunk_id
  CROSS JOIN LATERAL (
    -- orochi._chunk_compression_status, on the view owner's rights
    SELECT CASE
             WHEN c.compressed_at IS NULL THEN 'Uncompressed'
             WHEN coalesce(s.delta_rows, 0) > 0
               OR (SELECT count(*) FILTER (WHERE cs.created_xid <> c.compressed_xid OR cs.deleted_count > 0) > 0
                       OR count(*) <> c.compressed_stripes
                     FROM orochi.columnar_stripes cs
                    WHERE cs.chunk_id = c.chunk_id)
             THEN 'Partially compressed'
             ELSE 'Compressed'
           END AS status) st
 WHERE pg_catalog.has_table_privilege(h.relid, 'SELECT');

-- Per hypertable the caller may read: chunks and bytes per tier, and per
-- target the objects and bytes in it.
CREATE VIEW orochi.tiering_stats WITH (security_barrier) AS
SELECT v.hypertable_name,
       count(*)                                           AS total_chunks,
       count(*) FILTER (WHERE v.tier = 'hot')             AS hot_chunks,
       count(*) FILTER (WHERE v.tier = 'cold')            AS cold_chunks,
       count(*) FILTER (WHERE v.tier = 'mixed')           AS mixed_chunks,
       sum(v.after_compression_bytes - v.cold_bytes)::bigint AS hot_bytes,
       sum(v.cold_bytes)::bigint                          AS cold_bytes,
       array_agg(DISTINCT v.storage_target) FILTER (WHERE v.storage_target IS NOT NULL) AS storage_targets,
       max(v.tiered_at)                                   AS last_tiered_at
  FROM orochi.chunks v
 GROUP BY v.hypertable_name;

GRANT SELECT ON orochi.tiering_stats TO PUBLIC;

-- New in 0.2.0: sql/72_rebalance.sql as it is.

-- The shard rebalancer (docs/rebalancer.md): moves of a hash shard (with
-- the shards co-located with it) from one worker to another while the table
-- is written, jobs of moves (move_shard, rebalance_table_shards,
-- drain_node), their progress, and what a move needs on a worker (the
-- change log filled by a trigger on the shard being copied, and the fence
-- left on a source shard once its rows live elsewhere).
--
-- The SQL functions only check and plan and queue the moves; the moves are
-- run by orochi-sidecar's "rebalance" duty (or `python -m
-- orochi_fdw.cluster.mover`), which also finishes or rolls back a move whose
-- runner died (orochi_fdw/cluster/mover.py).

-- ------------------------------------------------------------ coordinator

-- One row per move of one shard group (the shards of one shard index in a
-- co-location group) from source_node to target_node.  A job is the moves
-- one call queued, run in position order.  switched is set in the same
-- transaction that points the placements at the target: it is the move's
-- commit decision (recovery finishes a switched move and rolls back any
-- other).
CREATE SEQUENCE orochi.dist_rebalance_job_seq;

CREATE TABLE orochi.dist_move (
    move_id         bigserial PRIMARY KEY,
    job_id          bigint NOT NULL,
    job_kind        text NOT NULL CHECK (job_kind IN ('move', 'rebalance', 'drain')),
    position        integer NOT NULL,
    colocation_id   integer,
    shard_ids       bigint[] NOT NULL,
    source_node     integer NOT NULL,
    target_node     integer NOT NULL,
    phase           text NOT NULL DEFAULT 'queued'
                    CHECK (phase IN ('queued', 'setup', 'copy', 'catchup', 'switch', 'cleanup',
                                     'done', 'failed', 'stopped')),
    switched        boolean NOT NULL DEFAULT false,
    stop_requested  boolean NOT NULL DEFAULT false,
    bytes_total     bigint,
    bytes_copied    bigint NOT NULL DEFAULT 0,
    rows_copied     bigint NOT NULL DEFAULT 0,
    changes_applied bigint NOT NULL DEFAULT 0,
    switch_ms       double precision,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    switched_at     timestamptz,
    finished_at     timestamptz,
    UNIQUE (job_id, position)
);
CREATE INDEX dist_move_open_idx ON orochi.dist_move (move_id)
    WHERE phase NOT IN ('done', 'failed', 'stopped');

-- The moves, as the caller may see them (cluster administration is for
-- superusers; the progress carries no row data).
CREATE VIEW orochi.rebalance_progress WITH (security_barrier) AS
SELECT m.job_id, m.move_id, m.job_kind, m.position, m.shard_ids[1] AS shard_id, m.shard_ids,
       m.source_node, m.target_node, m.phase, m.bytes_copied, m.bytes_total, m.rows_copied,
       m.changes_applied, m.switch_ms, m.error, m.created_at, m.started_at, m.switched_at, m.finished_at
  FROM orochi.dist_move m;

GRANT SELECT ON orochi.rebalance_progress TO PUBLIC;

-- Move shard_id (and the shards co-located with it) to target_node; returns
-- the job id.
CREATE FUNCTION orochi.move_shard(shard_id bigint, target_node integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- The moves that would even out the shards (of one table's co-location
-- group, or of every group), nothing done.
CREATE FUNCTION orochi.get_rebalance_plan(table_name regclass DEFAULT NULL,
                                          strategy text DEFAULT 'by_shard_count',
                                          max_shard_moves integer DEFAULT NULL,
                                          drain_node integer DEFAULT NULL,
    OUT table_name regclass, OUT shard_id bigint, OUT shard_ids bigint[], OUT shard_size bigint,
    OUT source_node integer, OUT target_node integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Queue the moves of get_rebalance_plan; returns the job id (NULL when
-- nothing needs to move).
CREATE FUNCTION orochi.rebalance_table_shards(table_name regclass DEFAULT NULL,
                                              strategy text DEFAULT 'by_shard_count',
                                              max_shard_moves integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Queue the moves of every shard off node_id, to the other active nodes.
CREATE FUNCTION orochi.drain_node(node_id integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Stop the queued and running moves (of one job, or all): a running move
-- that has not switched is rolled back by its runner.  Returns how many.
CREATE FUNCTION orochi.rebalance_stop(job_id bigint DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- ------------------------------------------------------------ workers

-- The changes written to a shard while a move copies it: one row per row
-- inserted, updated or deleted, the rows in their text form.  Filled by
-- the trigger orochi_move_capture in the writer's transaction; read and
-- emptied by the move.
CREATE TABLE orochi.dist_move_log (
    move_id   bigint NOT NULL,
    seq       bigserial,
    shard_id  bigint NOT NULL,
    op        "char" NOT NULL,
    old_row   text,
    new_row   text,
    PRIMARY KEY (move_id, seq)
);

-- The writer need not be allowed to write the log: the function runs as
-- the extension owner.  A trigger function cannot be called directly.
CREATE FUNCTION orochi.dist_move_capture()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the rows' text forms must not depend on the writer's settings: the move
-- reads them back with the same ones
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 3 SET bytea_output = 'hex'
AS $$
BEGIN
    INSERT INTO orochi.dist_move_log (move_id, shard_id, op, old_row, new_row)
    VALUES (TG_ARGV[0]::bigint, TG_ARGV[1]::bigint, substr(TG_OP, 1, 1),
            CASE WHEN TG_OP <> 'INSERT' THEN OLD::text END,
            CASE WHEN TG_OP <> 'DELETE' THEN NEW::text END);
    RETURN NULL;
END;
$$;

-- A source shard after its switch: a writer that still has the old
-- placement (a REPEATABLE READ transaction whose snapshot predates the
-- switch) gets a serialization failure and retries.
CREATE FUNCTION orochi.dist_move_fence()
RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'shard % was moved to another node', TG_ARGV[0]
        USING ERRCODE = '40001',
              HINT = 'Retry the transaction: it will use the shard''s new placement.';
END;
$$;

-- Sketch aggregates: the transition functions buffer the values of a group
-- in C and hand them to the Python builder in batches (pgext/sketch_agg.c).
CREATE OR REPLACE FUNCTION orochi.sketch_hll_trans(bytea, anyelement)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C STRICT VOLATILE;
CREATE OR REPLACE FUNCTION orochi.sketch_hll_trans(bytea, anyelement, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C STRICT VOLATILE;
CREATE OR REPLACE FUNCTION orochi.sketch_tdigest_trans(bytea, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C STRICT VOLATILE;
CREATE OR REPLACE FUNCTION orochi.sketch_tdigest_trans(bytea, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C STRICT VOLATILE;
CREATE OR REPLACE FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C STRICT VOLATILE;
CREATE OR REPLACE FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C STRICT VOLATILE;
CREATE OR REPLACE FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8[])
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C STRICT VOLATILE;
CREATE OR REPLACE FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8[], integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C STRICT VOLATILE;

-- Counters of the distributed executor on this server, since it started
-- (shared memory; orochi must be in shared_preload_libraries): executions
-- (each time a statement's tasks are sent to the workers: a scan, a join, a
-- flush of modified rows, a COPY batch, DDL), the shards their tasks covered,
-- and the executions that failed (a worker's error, an unreachable worker, a
-- cancellation).  The orochi-sidecar exports them on /metrics.
CREATE FUNCTION orochi.executor_counters(OUT distributed_queries bigint, OUT shards_accessed bigint,
                                         OUT executor_failures bigint, OUT since timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_executor_counters'
LANGUAGE C VOLATILE STRICT;

REVOKE ALL ON FUNCTION orochi.executor_counters() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION orochi.executor_counters() TO pg_monitor;

-- Sketch aggregates in parallel: hll_agg, approx_count_distinct, tdigest_agg
-- and approx_percentile keep an internal state with combine and
-- serialization functions.  A state's type cannot change with ALTER
-- AGGREGATE, and dropping the aggregates would drop the views of users that
-- call them: their pg_aggregate rows (and dependencies on their support
-- functions) are changed in place, as CREATE AGGREGATE would have made them
-- (a view's stored query names the aggregate, not its state type).  The
-- bytea-state transition and final functions they used go.
CREATE FUNCTION orochi.sketch_hll_trans(internal, anyelement)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_hll_trans(internal, anyelement, integer)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_tdigest_trans(internal, float8)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_tdigest_trans(internal, float8, integer)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_trans(internal, float8, float8)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_trans(internal, float8, float8, integer)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_trans(internal, float8, float8[])
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_trans(internal, float8, float8[], integer)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION orochi.sketch_hll_final(internal)
RETURNS orochi.hll AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_hll_count_final(internal)
RETURNS bigint AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_tdigest_final(internal)
RETURNS orochi.tdigest AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_final(internal)
RETURNS float8 AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentiles_final(internal)
RETURNS float8[] AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;

-- Parallel aggregation: a worker's state as bytes and back, and two states
-- made one (the second's builder folded into the first's).
CREATE FUNCTION orochi.sketch_serialize(internal)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_serialize' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_deserialize(bytea, internal)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_deserialize' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_combine(internal, internal)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_combine' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE TEMPORARY TABLE orochi_sketch_aggs (agg regprocedure, trans regprocedure, final regprocedure);
INSERT INTO orochi_sketch_aggs VALUES
    ('orochi.hll_agg(anyelement)', 'orochi.sketch_hll_trans(internal, anyelement)', 'orochi.sketch_hll_final(internal)'),
    ('orochi.hll_agg(anyelement, integer)', 'orochi.sketch_hll_trans(internal, anyelement, integer)', 'orochi.sketch_hll_final(internal)'),
    ('orochi.approx_count_distinct(anyelement)', 'orochi.sketch_hll_trans(internal, anyelement)', 'orochi.sketch_hll_count_final(internal)'),
    ('orochi.approx_count_distinct(anyelement, integer)', 'orochi.sketch_hll_trans(internal, anyelement, integer)', 'orochi.sketch_hll_count_final(internal)'),
    ('orochi.tdigest_agg(float8)', 'orochi.sketch_tdigest_trans(internal, float8)', 'orochi.sketch_tdigest_final(internal)'),
    ('orochi.tdigest_agg(float8, integer)', 'orochi.sketch_tdigest_trans(internal, float8, integer)', 'orochi.sketch_tdigest_final(internal)'),
    ('orochi.approx_percentile(float8, float8)', 'orochi.sketch_percentile_trans(internal, float8, float8)', 'orochi.sketch_percentile_final(internal)'),
    ('orochi.approx_percentile(float8, float8, integer)', 'orochi.sketch_percentile_trans(internal, float8, float8, integer)', 'orochi.sketch_percentile_final(internal)'),
    ('orochi.approx_percentile(float8, float8[])', 'orochi.sketch_percentile_trans(internal, float8, float8[])', 'orochi.sketch_percentiles_final(internal)'),
    ('orochi.approx_percentile(float8, float8[], integer)', 'orochi.sketch_percentile_trans(internal, float8, float8[], integer)', 'orochi.sketch_percentiles_final(internal)');
-- the old support functions as dependencies of the aggregates go
DELETE FROM pg_catalog.pg_depend d
 USING orochi_sketch_aggs a, pg_catalog.pg_aggregate g
 WHERE g.aggfnoid = a.agg AND d.classid = 'pg_proc'::regclass AND d.objid = a.agg
   AND d.refclassid = 'pg_proc'::regclass AND d.deptype = 'n'
   AND d.refobjid IN (g.aggtransfn, g.aggfinalfn);
UPDATE pg_catalog.pg_aggregate g
   SET aggtransfn = a.trans, aggfinalfn = a.final,
       aggcombinefn = 'orochi.sketch_combine(internal, internal)'::regprocedure,
       aggserialfn = 'orochi.sketch_serialize(internal)'::regprocedure,
       aggdeserialfn = 'orochi.sketch_deserialize(bytea, internal)'::regprocedure,
       aggtranstype = 'internal'::regtype, agginitval = NULL
  FROM orochi_sketch_aggs a
 WHERE g.aggfnoid = a.agg;
UPDATE pg_catalog.pg_proc p SET proparallel = 's' FROM orochi_sketch_aggs a WHERE p.oid = a.agg;
INSERT INTO pg_catalog.pg_depend (classid, objid, objsubid, refclassid, refobjid, refobjsubid, deptype)
SELECT DISTINCT 'pg_proc'::regclass, a.agg, 0, 'pg_proc'::regclass, f.fn, 0, 'n'
  FROM orochi_sketch_aggs a
 CROSS JOIN LATERAL (VALUES (a.trans::oid), (a.final::oid),
                            ('orochi.sketch_combine(internal, internal)'::regprocedure::oid),
                            ('orochi.sketch_serialize(internal)'::regprocedure::oid),
                            ('orochi.sketch_deserialize(bytea, internal)'::regprocedure::oid)) f(fn);
DROP TABLE orochi_sketch_aggs;
DROP FUNCTION orochi.sketch_hll_trans(bytea, anyelement);
DROP FUNCTION orochi.sketch_hll_trans(bytea, anyelement, integer);
DROP FUNCTION orochi.sketch_tdigest_trans(bytea, float8);
DROP FUNCTION orochi.sketch_tdigest_trans(bytea, float8, integer);
DROP FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8);
DROP FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8, integer);
DROP FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8[]);
DROP FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8[], integer);
DROP FUNCTION orochi.sketch_hll_count_final(bytea);
DROP FUNCTION orochi.sketch_percentile_final(bytea);
DROP FUNCTION orochi.sketch_percentiles_final(bytea);

-- Per-stripe HyperLogLog sketches of the columns of tables with the option
-- stripe_sketches (orochi_fdw/columnar/stripe_sketches.py).
ALTER TABLE orochi.columnar_stripe_columns ADD COLUMN hll bytea;

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

-- Merge a table's small vector index files (the per-stripe files written
-- since its indexes were built) into segments; returns the files written.
-- The table's owner only.
CREATE FUNCTION orochi.vector_index_merge("table" regclass)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;
