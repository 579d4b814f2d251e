-- Orochi: the foreign-data wrapper, its default server, and the SQL entry
-- point shared by every function written in Python.

\echo Use "CREATE EXTENSION orochi" to load this file. \quit

CREATE FUNCTION orochi.orochi_fdw_handler()
RETURNS fdw_handler
AS 'MODULE_PATHNAME', 'orochi_fdw_handler'
LANGUAGE C STRICT;

CREATE FUNCTION orochi.orochi_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER orochi
  HANDLER orochi.orochi_fdw_handler
  VALIDATOR orochi.orochi_fdw_validator;

CREATE SERVER orochi FOREIGN DATA WRAPPER orochi;

-- Everyone may use what the schema offers (time_bucket, sketches, the views);
-- what each object allows is then up to its own privileges: the catalog
-- tables are readable where that is safe and writable by their owner only.
GRANT USAGE ON SCHEMA orochi TO PUBLIC;

-- Facts about the Python side of this backend: the interpreter, the
-- virtualenv and the orochi package in use.
CREATE FUNCTION orochi.python_info(OUT key text, OUT value text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;
-- Columnar tables: the catalog of stripes, the SQL API, and the event
-- triggers that keep stripe files in step with DROP and DROP EXTENSION.
--
-- The catalog is written through SPI in the writer's own transaction, so a
-- stripe becomes visible exactly when that transaction commits.  Stripe
-- files are written, fsynced and linked into place before their rows are
-- inserted; a file with no committed row is an orphan for orochi.vacuum().

-- Stripe ids are never reused (a sequence is not rolled back), so a file of
-- an aborted writer never clashes with a later stripe.
CREATE SEQUENCE orochi.columnar_stripe_id_seq;

-- One row per stripe file.
CREATE TABLE orochi.columnar_stripes (
    stripe_id          bigint PRIMARY KEY,
    relid              oid NOT NULL,            -- the foreign table
    file_path          text NOT NULL UNIQUE,    -- absolute path of the stripe file
    row_count          bigint NOT NULL,
    chunk_group_count  integer NOT NULL,
    chunk_group_size   integer NOT NULL,        -- rows per chunk group when written
    file_bytes         bigint NOT NULL,         -- size of the file
    raw_bytes          bigint NOT NULL,         -- values before encoding and compression
    compression        text NOT NULL,           -- the table's setting when written
    compression_level  integer,
    created_xid        xid8 NOT NULL,           -- top-level transaction that wrote it
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX columnar_stripes_relid_idx ON orochi.columnar_stripes (relid, stripe_id);

-- One row per column of a stripe: where it is in the file, and the stripe's
-- min / max over it (per chunk group min / max are in the file's footer).
-- Columns are matched to the table by attnum: a column renamed since keeps
-- its data, a column added since reads as NULL in older stripes.
CREATE TABLE orochi.columnar_stripe_columns (
    stripe_id          bigint NOT NULL,
    relid              oid NOT NULL,
    attnum             smallint NOT NULL,
    column_name        text NOT NULL,           -- name of the column in the stripe file
    kind               text NOT NULL,           -- storage kind (int64, text, timestamptz ...)
    type_name          text NOT NULL,           -- the column's type when written
    null_count         bigint NOT NULL,
    min_value          bytea,                   -- lower bound of the non-NULL values
    max_value          bytea,                   -- upper bound of the non-NULL values
    has_nan            boolean NOT NULL DEFAULT false,
    compressed_bytes   bigint NOT NULL,         -- column chunk bytes in the file
    raw_bytes          bigint NOT NULL,         -- values before encoding and compression
    codecs             text[] NOT NULL,         -- codecs chosen, e.g. {delta,dictionary+lz4}
    PRIMARY KEY (stripe_id, attnum)
);
CREATE INDEX columnar_stripe_columns_relid_idx
    ON orochi.columnar_stripe_columns (relid, attnum);

-- Each stripe of each columnar table, column by column.
CREATE VIEW orochi.stripes AS
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
       s.file_path
  FROM orochi.columnar_stripes s
  JOIN orochi.columnar_stripe_columns c USING (stripe_id)
  LEFT JOIN pg_attribute a
         ON a.attrelid = s.relid AND a.attnum = c.attnum AND NOT a.attisdropped;

-- The per column bounds (min_value, max_value) are values of the tables'
-- data: like pg_statistic, orochi.columnar_stripe_columns is not readable
-- by everyone.
GRANT SELECT ON orochi.columnar_stripes, orochi.stripes TO PUBLIC;

-- Bytes a columnar table takes on disk: its stripe files and its delta store,
-- like pg_total_relation_size.
CREATE FUNCTION orochi.table_size(regclass)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Remove stripe files that no committed catalog row refers to and whose
-- writer has finished (aborted transactions, crashes, dropped tables and
-- databases).  Files of transactions still running are kept.
CREATE FUNCTION orochi.vacuum(OUT removed_files bigint, OUT removed_bytes bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Internal: forget the stripes of dropped tables and remove their files
-- when the dropping transaction commits.
CREATE FUNCTION orochi.columnar_drop_tables(oid[])
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Internal: check the options of new or altered columnar tables (table,
-- column and server options together).
CREATE FUNCTION orochi.columnar_check_tables(oid[])
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Internal: before DROP EXTENSION, note which folders hold columnar data so
-- that they are removed if the extension is gone at commit.
CREATE FUNCTION orochi.columnar_before_drop_extension()
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The event trigger functions are PL/pgSQL so that Python starts only when
-- an orochi table is involved.
CREATE FUNCTION orochi.columnar_on_sql_drop()
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
    IF dropped IS NOT NULL AND (
        EXISTS (SELECT 1 FROM orochi.columnar_stripes WHERE relid = ANY (dropped))
        OR EXISTS (SELECT 1 FROM unnest(dropped) AS d(relid)
                    WHERE to_regclass('orochi.columnar_delta_' || d.relid) IS NOT NULL)) THEN
        PERFORM orochi.columnar_drop_tables(dropped);
    END IF;
END;
$$;

CREATE EVENT TRIGGER orochi_columnar_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.columnar_on_sql_drop();

CREATE FUNCTION orochi.columnar_on_ddl_end()
RETURNS event_trigger
LANGUAGE plpgsql
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

CREATE EVENT TRIGGER orochi_columnar_ddl_end ON ddl_command_end
    WHEN TAG IN ('CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION orochi.columnar_on_ddl_end();

-- A failure here (Python missing, say) must not keep anyone from dropping
-- an extension: the files are then left for the operator.
CREATE FUNCTION orochi.columnar_on_drop_extension()
RETURNS event_trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM orochi.columnar_before_drop_extension();
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'orochi: columnar files will not be removed: %', SQLERRM;
END;
$$;

CREATE EVENT TRIGGER orochi_columnar_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION orochi.columnar_on_drop_extension();
-- HTAP writes on columnar tables: delete bitmaps, the delta store, compaction,
-- vacuum of stripes and its progress (docs/htap.md).

-- Each stripe's deleted rows: a roaring bitmap (pyroaring's portable format)
-- of row offsets in the stripe, NULL while nothing is deleted.  UPDATE and
-- DELETE change it under a row lock on the stripe's row (SELECT ... FOR
-- UPDATE), so concurrent deleters of one stripe take turns and never lose
-- each other's deletions; readers see it through their snapshot like any row.
ALTER TABLE orochi.columnar_stripes
    ADD COLUMN deleted_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN delete_bitmap bytea;

-- Ids of delta rows (never reused): a delta row's row id is 2^46 + its id.
CREATE SEQUENCE orochi.columnar_delta_rowid_seq;

-- Stripe files replaced by orochi.vacuum(regclass): their rows are gone, but a
-- snapshot taken before that vacuum committed may still read them.  The file
-- is removed once no backend's snapshot is that old (at the next vacuum).
CREATE TABLE orochi.columnar_retired_files (
    file_path     text PRIMARY KEY,
    relid         oid NOT NULL,
    stripe_id     bigint NOT NULL,
    file_bytes    bigint NOT NULL,
    retired_xid   xid8 NOT NULL,              -- the vacuum that replaced it
    retired_at    timestamptz NOT NULL DEFAULT now()
);

-- Fold the delta store of an orochi table into stripes, in the caller's
-- transaction.  Returns the rows moved and the stripes written.
CREATE FUNCTION orochi.compact(rel regclass, OUT moved_rows bigint, OUT stripes_written bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Rewrite the stripes of an orochi table whose deleted fraction is at least
-- min_deleted_fraction (dropping deleted rows), and remove the files of
-- earlier rewrites that no snapshot can read any more.
CREATE FUNCTION orochi.vacuum(rel regclass, min_deleted_fraction float8 DEFAULT 0.2,
                              OUT stripes_rewritten bigint, OUT rows_removed bigint,
                              OUT bytes_before bigint, OUT bytes_after bigint,
                              OUT removed_files bigint, OUT removed_bytes bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Progress of the compactions and vacuums running now, one row each.
CREATE FUNCTION orochi.maintenance_progress(
    OUT pid integer, OUT command text, OUT table_name regclass, OUT phase text,
    OUT stripes_done bigint, OUT stripes_total bigint, OUT rows_done bigint,
    OUT started_at timestamptz, OUT updated_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE VIEW orochi.vacuum_progress AS
SELECT * FROM orochi.maintenance_progress();

-- Rows and bytes of each orochi table's delta store.
CREATE FUNCTION orochi.delta_size(rel regclass, OUT delta_rows bigint, OUT delta_bytes bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

GRANT SELECT ON orochi.vacuum_progress TO PUBLIC;
-- orochi.time_bucket: TimescaleDB's time_bucket, same names, arguments and
-- results.  Written as single SQL expressions so that the planner inlines
-- them (no function call per row).
--
-- * Widths without months: buckets are counted in microseconds from the
--   origin, by default 2000-01-03 00:00 (a Monday), with date_bin; for
--   timestamptz the buckets are computed on the absolute time (UTC), as
--   TimescaleDB does without a time zone argument.  A day is 24 hours.
-- * Widths in months (and years): buckets are counted in calendar months from
--   the origin, by default 2000-01-01; for timestamptz in UTC.  A width may
--   not mix months with days or time.
-- * "offset" shifts the buckets: time_bucket(w, ts - offset) + offset.
-- * Infinite timestamps and dates come back unchanged; NULL gives NULL.
-- * The functions are not declared STRICT: the planner inlines a STRICT SQL
--   function only if its body is strict, and a CASE is not (every operator
--   in the bodies is strict, so NULL still gives NULL).

-- Raises message.  The argument "width" is only there so that the call is not
-- folded to its error while planning a branch that is never taken.
CREATE FUNCTION orochi._time_bucket_error(message text, width anyelement)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = message;
END;
$$;

-- The width in microseconds, checked: positive, and either only months or no months.
CREATE FUNCTION orochi._time_bucket_width_us(bucket_width interval)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN extract(month FROM bucket_width) <> 0 OR extract(year FROM bucket_width) <> 0
        THEN orochi._time_bucket_error('month intervals cannot have day or time component', bucket_width)
    WHEN bucket_width <= interval '0'
        THEN orochi._time_bucket_error('bucket width must be greater than zero', bucket_width)
    ELSE (extract(epoch FROM bucket_width) * 1000000)::bigint
END;

-- Whole months in bucket_width, or NULL if it has none; an error if it mixes.
CREATE FUNCTION orochi._time_bucket_months(bucket_width interval)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width) = 0 THEN NULL
    WHEN extract(day FROM bucket_width) <> 0
         OR extract(epoch FROM bucket_width - make_interval(
                months => (extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width))::int)) <> 0
        THEN orochi._time_bucket_error('month intervals cannot have day or time component', bucket_width)::int
    WHEN extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width) < 0
        THEN orochi._time_bucket_error('bucket width must be greater than zero', bucket_width)::int
    ELSE (extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width))::int
END;

-- Months since year 0 (there is no year 0 in the calendar: 1 BC is year -1).
-- date_part (double precision) rather than extract (numeric): much faster,
-- and exact for whole numbers this small.
CREATE FUNCTION orochi._time_bucket_month_index(t timestamp)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((date_part('year', t) + CASE WHEN date_part('year', t) < 0 THEN 1 ELSE 0 END) * 12
        + date_part('month', t) - 1)::bigint;

-- Start of the bucket of ts (timestamp without time zone), from origin.
-- Without months: date_bin, once the width is checked (the check folds away
-- for a constant width).  With months: origin plus the whole buckets of
-- months before ts.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp, origin timestamp)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_months(bucket_width) IS NULL THEN
        date_bin(CASE WHEN orochi._time_bucket_width_us(bucket_width) > 0 THEN bucket_width END, ts, origin)
    WHEN NOT isfinite(ts) THEN ts
    ELSE
        origin + make_interval(months => (floor(
            (orochi._time_bucket_month_index(ts) - orochi._time_bucket_month_index(origin)
             - CASE WHEN ts < origin + make_interval(months => (orochi._time_bucket_month_index(ts)
                                                                - orochi._time_bucket_month_index(origin))::int)
                    THEN 1 ELSE 0 END)::float8
            / orochi._time_bucket_months(bucket_width)) * orochi._time_bucket_months(bucket_width))::int)
END;

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts,
    CASE WHEN orochi._time_bucket_months(bucket_width) IS NULL
         THEN timestamp '2000-01-03 00:00:00' ELSE timestamp '2000-01-01 00:00:00' END);

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp, "offset" interval)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts - "offset") + "offset" END;

-- timestamptz: on the absolute time (UTC), whatever the session's time zone.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, origin timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC', origin AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, "offset" interval)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC', "offset") AT TIME ZONE 'UTC';

-- date: the bucket of the date's midnight, as a date.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date, origin date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts::timestamp, origin::timestamp)::date END;

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts::timestamp)::date END;

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date, "offset" interval)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts::timestamp, "offset")::date END;

-- integers: floor((ts - offset) / width) * width + offset
CREATE FUNCTION orochi.time_bucket(bucket_width bigint, ts bigint, "offset" bigint DEFAULT 0)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN bucket_width <= 0 THEN orochi._time_bucket_error('bucket width must be greater than zero', bucket_width)
    ELSE (ts - "offset") - ((ts - "offset") % bucket_width)
         - CASE WHEN (ts - "offset") % bucket_width < 0 THEN bucket_width ELSE 0 END + "offset"
END;

CREATE FUNCTION orochi.time_bucket(bucket_width int, ts int, "offset" int DEFAULT 0)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width::bigint, ts::bigint, "offset"::bigint)::int;

CREATE FUNCTION orochi.time_bucket(bucket_width smallint, ts smallint, "offset" smallint DEFAULT 0)
RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width::bigint, ts::bigint, "offset"::bigint)::smallint;
-- Sketches: HyperLogLog distinct counts and t-digest percentiles
-- (docs/sketches.md).
--
-- orochi.hll and orochi.tdigest are domains over bytea: a sketch is stored,
-- copied, dumped and restored as its documented serialized bytes with no C
-- type (input/output/send/receive functions) to maintain, and the domain's
-- CHECK validates a value when it becomes a sketch.  The Python functions
-- take and return plain bytea; the typed functions users call are SQL
-- wrappers around them.

CREATE FUNCTION orochi.sketch_check_hll(bytea)
RETURNS boolean
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_check_tdigest(bytea)
RETURNS boolean
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE DOMAIN orochi.hll AS bytea CHECK (orochi.sketch_check_hll(VALUE));
CREATE DOMAIN orochi.tdigest AS bytea CHECK (orochi.sketch_check_tdigest(VALUE));

-- ----------------------------------------------------------- scalar functions

CREATE FUNCTION orochi.sketch_hll_cardinality(bytea)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_hll_union(bytea, bytea)
RETURNS bytea
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_tdigest_percentile(bytea, float8)
RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_tdigest_percentile(bytea, float8[])
RETURNS float8[]
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_tdigest_count(bytea)
RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

-- Estimated distinct values of a sketch (exact while it is sparse).
CREATE FUNCTION orochi.hll_cardinality(orochi.hll)
RETURNS bigint
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_hll_cardinality($1::bytea) $$;

-- The union of two sketches, at the lower of their precisions.
CREATE FUNCTION orochi.hll_union(orochi.hll, orochi.hll)
RETURNS orochi.hll
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_hll_union($1::bytea, $2::bytea)::orochi.hll $$;

-- The estimated q-quantile (0 <= q <= 1) of the values a digest summarizes.
CREATE FUNCTION orochi.tdigest_percentile(orochi.tdigest, float8)
RETURNS float8
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_tdigest_percentile($1::bytea, $2) $$;

CREATE FUNCTION orochi.tdigest_percentile(orochi.tdigest, float8[])
RETURNS float8[]
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_tdigest_percentile($1::bytea, $2) $$;

-- How many values a digest summarizes.
CREATE FUNCTION orochi.tdigest_count(orochi.tdigest)
RETURNS float8
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_tdigest_count($1::bytea) $$;

-- ------------------------------------------------- aggregate support functions
-- The state is a token naming a builder in the backend's Python (see
-- orochi_fdw/sketches/sqlapi.py); '' until the first non-NULL row.  The
-- final functions consume the builder (FINALFUNC_MODIFY = READ_WRITE, so
-- Postgres never shares a state between two aggregates).

CREATE FUNCTION orochi.sketch_hll_trans(bytea, anyelement)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_trans(bytea, anyelement, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_union_trans(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_trans(bytea, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_trans(bytea, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_union_trans(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8[])
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_trans(bytea, float8, float8[], integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.sketch_hll_final(bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_hll_count_final(bytea)
RETURNS bigint AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_final(bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_final(bytea)
RETURNS float8 AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_percentiles_final(bytea)
RETURNS float8[] AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.sketch_hll_agg_final(bytea)
RETURNS orochi.hll LANGUAGE sql VOLATILE
AS $$ SELECT orochi.sketch_hll_final($1)::orochi.hll $$;
CREATE FUNCTION orochi.sketch_tdigest_agg_final(bytea)
RETURNS orochi.tdigest LANGUAGE sql VOLATILE
AS $$ SELECT orochi.sketch_tdigest_final($1)::orochi.tdigest $$;

-- ------------------------------------------------------------------ aggregates

-- A HyperLogLog sketch of the non-NULL values (precision 4..18, default 14).
CREATE AGGREGATE orochi.hll_agg(anyelement) (
    SFUNC = orochi.sketch_hll_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_agg_final, FINALFUNC_MODIFY = READ_WRITE);
CREATE AGGREGATE orochi.hll_agg(anyelement, integer) (
    SFUNC = orochi.sketch_hll_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_agg_final, FINALFUNC_MODIFY = READ_WRITE);

-- The union of sketches, at the lowest of their precisions.
CREATE AGGREGATE orochi.hll_union_agg(orochi.hll) (
    SFUNC = orochi.sketch_hll_union_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_agg_final, FINALFUNC_MODIFY = READ_WRITE);

-- Estimated count(DISTINCT x): 0.81% standard error at the default p = 14.
CREATE AGGREGATE orochi.approx_count_distinct(anyelement) (
    SFUNC = orochi.sketch_hll_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_count_final, FINALFUNC_MODIFY = READ_WRITE);
CREATE AGGREGATE orochi.approx_count_distinct(anyelement, integer) (
    SFUNC = orochi.sketch_hll_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_count_final, FINALFUNC_MODIFY = READ_WRITE);

-- A t-digest of the finite values (compression 10..10000, default 100).
CREATE AGGREGATE orochi.tdigest_agg(float8) (
    SFUNC = orochi.sketch_tdigest_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_tdigest_agg_final, FINALFUNC_MODIFY = READ_WRITE);
CREATE AGGREGATE orochi.tdigest_agg(float8, integer) (
    SFUNC = orochi.sketch_tdigest_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_tdigest_agg_final, FINALFUNC_MODIFY = READ_WRITE);

-- The union of digests.
CREATE AGGREGATE orochi.tdigest_union_agg(orochi.tdigest) (
    SFUNC = orochi.sketch_tdigest_union_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_tdigest_agg_final, FINALFUNC_MODIFY = READ_WRITE);

-- Estimated percentile_cont(q) WITHIN GROUP (ORDER BY value), 0 <= q <= 1,
-- and the array form for several quantiles.
CREATE AGGREGATE orochi.approx_percentile(float8, float8) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_percentile_final, FINALFUNC_MODIFY = READ_WRITE);
CREATE AGGREGATE orochi.approx_percentile(float8, float8, integer) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_percentile_final, FINALFUNC_MODIFY = READ_WRITE);
CREATE AGGREGATE orochi.approx_percentile(float8, float8[]) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_percentiles_final, FINALFUNC_MODIFY = READ_WRITE);
CREATE AGGREGATE orochi.approx_percentile(float8, float8[], integer) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_percentiles_final, FINALFUNC_MODIFY = READ_WRITE);
-- Sampling: Bernoulli samples of a table's rows (orochi.sample) and
-- Horvitz-Thompson estimates with confidence intervals over them
-- (orochi.sampled_sum / sampled_count / sampled_avg); docs/sketches.md.
--
-- A row is sampled when hashint8extended(ordinal, seed), the Postgres hash
-- of its position in the table's scan order, has its low 32 bits below
-- fraction * 2^32.  Heap tables (and any other relation) compute that in
-- SQL over row_number() OVER (); columnar tables compute the same hash in
-- the scan and drop the other rows before they become tuples.  The
-- functions run as the caller (never SECURITY DEFINER): reading the sample
-- needs SELECT on the table.

CREATE FUNCTION orochi.sample_request(oid, float8, integer)
RETURNS boolean AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.sample_cancel(oid)
RETURNS boolean AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;

-- (kind 'sum' | 'count' | 'avg', aggregate state, state from float8_regr_accum?)
-- -> {estimate, lower, upper, standard error, sampled values}
CREATE FUNCTION orochi.sampled_final(text, float8[], boolean)
RETURNS float8[] AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C IMMUTABLE;

-- The query orochi.sample runs for a relation ($1 = fraction, $2 = seed);
-- for a columnar table it also registers the sample request its scan takes.
CREATE FUNCTION orochi.sample_query(relation regclass, fraction float8, seed integer)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    kind "char";
    wrapper name;
BEGIN
    IF fraction IS NULL OR fraction <= 0 OR fraction > 1 OR fraction = 'NaN'::float8 THEN
        RAISE EXCEPTION 'sampling fraction must be greater than 0 and at most 1, got %',
                        coalesce(fraction::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A fraction of 0.01 samples about 1% of the rows.';
    END IF;
    IF seed IS NULL THEN
        RAISE EXCEPTION 'sampling seed must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The same seed gives the same sample of the same rows.';
    END IF;
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation to sample must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = relation;
    IF kind IS NULL OR kind NOT IN ('r', 'p', 'm', 'f', 'v') THEN
        RAISE EXCEPTION '"%" is not a table, view or materialized view', relation
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF kind = 'f' THEN
        SELECT w.fdwname INTO wrapper
        FROM pg_catalog.pg_foreign_table t
        JOIN pg_catalog.pg_foreign_server s ON s.oid = t.ftserver
        JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
        WHERE t.ftrelid = relation;
        IF wrapper = 'orochi' THEN
            PERFORM orochi.sample_request(relation, fraction, seed);
            RETURN format('SELECT * FROM %s', relation);
        END IF;
    END IF;
    IF kind IN ('r', 'm') THEN
        -- number only the row addresses, then fetch the sampled rows by
        -- address (a TID scan returns them in the table's order): rows not
        -- sampled never become whole tuples
        RETURN format('SELECT * FROM %1$s WHERE ctid = ANY (ARRAY('
                      'SELECT s.ctid FROM (SELECT ctid, pg_catalog.row_number() OVER () AS n FROM %1$s) s '
                      'WHERE (pg_catalog.hashint8extended(s.n, $2) & 4294967295)::float8 '
                      '< $1 * 4294967296.0))', relation);
    END IF;
    RETURN format('SELECT (s.r).* FROM (SELECT r, pg_catalog.row_number() OVER () AS n FROM %s r) s '
                  'WHERE (pg_catalog.hashint8extended(s.n, $2) & 4294967295)::float8 '
                  '< $1 * 4294967296.0', relation);
END
$$;

-- A Bernoulli sample of the rows of the table whose row type the first
-- argument has: SELECT * FROM orochi.sample(NULL::events, 0.01, 42).
CREATE FUNCTION orochi.sample(relation anyelement, fraction float8, seed integer)
RETURNS SETOF anyelement
LANGUAGE plpgsql VOLATILE
SET max_parallel_workers_per_gather = 0
SET synchronize_seqscans = off
AS $$
DECLARE
    rel regclass;
BEGIN
    SELECT NULLIF(t.typrelid, 0) INTO rel FROM pg_catalog.pg_type t WHERE t.oid = pg_typeof(relation);
    IF rel IS NULL THEN
        RAISE EXCEPTION 'orochi.sample needs a row of the table to sample, got a value of type %',
                        pg_typeof(relation)
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Pass NULL cast to the table''s row type: orochi.sample(NULL::my_table, 0.01, 42).';
    END IF;
    BEGIN
        RETURN QUERY EXECUTE orochi.sample_query(rel, fraction, seed) USING fraction, seed;
    EXCEPTION WHEN OTHERS THEN
        PERFORM orochi.sample_cancel(rel);
        RAISE;
    END;
    PERFORM orochi.sample_cancel(rel);
END
$$;

-- The same by relation name; returns record, so the caller lists the
-- columns: SELECT * FROM orochi.sample('events', 0.01, 42) AS s(id int, v float8).
CREATE FUNCTION orochi.sample(relation regclass, fraction float8, seed integer)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET max_parallel_workers_per_gather = 0
SET synchronize_seqscans = off
AS $$
BEGIN
    BEGIN
        RETURN QUERY EXECUTE orochi.sample_query(relation, fraction, seed) USING fraction, seed;
    EXCEPTION WHEN OTHERS THEN
        PERFORM orochi.sample_cancel(relation);
        RAISE;
    END;
    PERFORM orochi.sample_cancel(relation);
END
$$;

-- ------------------------------------------------------- sampled aggregates

-- What a sampled aggregate returns: the estimate, the bounds of its
-- normal-approximation confidence interval, its standard error, and how
-- many sampled values it rests on.
CREATE TYPE orochi.estimate AS (
    estimate float8,
    lower float8,
    upper float8,
    standard_error float8,
    sampled_values bigint
);

CREATE FUNCTION orochi.sampled_check(fraction float8, confidence float8)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF fraction IS NULL OR fraction <= 0 OR fraction > 1 OR fraction = 'NaN'::float8 THEN
        RAISE EXCEPTION 'sampling fraction must be greater than 0 and at most 1, got %',
                        coalesce(fraction::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the fraction the rows were sampled with.';
    END IF;
    IF confidence IS NULL OR confidence <= 0 OR confidence >= 1 OR confidence = 'NaN'::float8 THEN
        RAISE EXCEPTION 'confidence level must be between 0 and 1 (exclusive), got %',
                        coalesce(confidence::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- State: {non-NULL values n, their sum, the sum of their squared deviations
-- from their mean (Youngs-Cramer, as float8_accum), fraction, confidence}.
CREATE FUNCTION orochi.sampled_accum(state float8[], x float8, fraction float8, confidence float8)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    n float8;
    d float8;
BEGIN
    IF state IS NULL THEN
        PERFORM orochi.sampled_check(fraction, confidence);
        state := ARRAY[0, 0, 0, fraction, confidence]::float8[];
    END IF;
    IF x IS NULL THEN
        RETURN state;
    END IF;
    n := state[1] + 1;
    state[1] := n;
    state[2] := state[2] + x;
    IF n > 1 THEN
        d := x * n - state[2];
        -- below 1e-150 the square would underflow (an error in SQL) and
        -- adds nothing a float8 sum of squares can hold
        IF abs(d) > 1e-150 THEN
            state[3] := state[3] + d * d / (n * (n - 1));
        END IF;
    END IF;
    RETURN state;
END
$$;

-- The two-argument aggregates use Postgres's own float8_regr_accum(state,
-- x, fraction) (as regr_sxx etc.: C, no per-row function call of ours):
-- state {n, sum(fraction), squared deviations of fraction, sum(x), squared
-- deviations of x, cross term}; rows where x or fraction is NULL are left
-- out.  The final functions (Python, orochi_fdw/sketches/sampling.py) check
-- the fraction (the same in every row, in (0, 1]) and compute the estimate
-- and its interval:
--   sum:   sum(x) / f,  variance (1 - f) / f^2 * sum(x^2)
--   count: n / f,       variance (1 - f) / f^2 * n
--   avg:   sum(x) / n,  variance (1 - f) * sum((x - mean)^2) / n^2 (linearized)
CREATE FUNCTION orochi.sampled_estimate(result float8[])
RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN result IS NULL THEN NULL
           ELSE ROW(result[1], result[2], result[3], result[4], result[5]::bigint)::orochi.estimate END
$$;

CREATE FUNCTION orochi.sampled_sum_final(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('sum', $1, false)) $$;
CREATE FUNCTION orochi.sampled_count_final(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('count', $1, false)) $$;
CREATE FUNCTION orochi.sampled_avg_final(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('avg', $1, false)) $$;
CREATE FUNCTION orochi.sampled_sum_final_95(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('sum', $1, true)) $$;
CREATE FUNCTION orochi.sampled_count_final_95(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('count', $1, true)) $$;
CREATE FUNCTION orochi.sampled_avg_final_95(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('avg', $1, true)) $$;

-- Estimated sum(x) over the whole table from the rows of a sample taken
-- with this fraction (confidence of the interval: 0.95 unless given).
CREATE AGGREGATE orochi.sampled_sum(float8, float8) (
    SFUNC = pg_catalog.float8_regr_accum, STYPE = float8[], INITCOND = '{0,0,0,0,0,0}',
    FINALFUNC = orochi.sampled_sum_final_95);
CREATE AGGREGATE orochi.sampled_sum(float8, float8, float8) (
    SFUNC = orochi.sampled_accum, STYPE = float8[], FINALFUNC = orochi.sampled_sum_final);

-- Estimated count(x) of a numeric x (count(*): sampled_count(1, fraction)).
CREATE AGGREGATE orochi.sampled_count(float8, float8) (
    SFUNC = pg_catalog.float8_regr_accum, STYPE = float8[], INITCOND = '{0,0,0,0,0,0}',
    FINALFUNC = orochi.sampled_count_final_95);
CREATE AGGREGATE orochi.sampled_count(float8, float8, float8) (
    SFUNC = orochi.sampled_accum, STYPE = float8[], FINALFUNC = orochi.sampled_count_final);

-- Estimated avg(x).
CREATE AGGREGATE orochi.sampled_avg(float8, float8) (
    SFUNC = pg_catalog.float8_regr_accum, STYPE = float8[], INITCOND = '{0,0,0,0,0,0}',
    FINALFUNC = orochi.sampled_avg_final_95);
CREATE AGGREGATE orochi.sampled_avg(float8, float8, float8) (
    SFUNC = orochi.sampled_accum, STYPE = float8[], FINALFUNC = orochi.sampled_avg_final);
-- Hypertables: orochi columnar tables cut into chunks by a time column
-- (docs/hypertables.md).  Time keys are TimescaleDB's: microseconds since
-- 1970-01-01 for timestamptz, timestamp (its wall clock read as UTC) and
-- date (its midnight); the value itself for smallint, integer and bigint.

CREATE TABLE orochi.hypertables (
    relid               oid PRIMARY KEY,          -- the orochi foreign table
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
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (relid, range_start)
);

-- The chunk a stripe belongs to; NULL outside hypertables.
ALTER TABLE orochi.columnar_stripes ADD COLUMN chunk_id bigint;
CREATE INDEX columnar_stripes_chunk_idx ON orochi.columnar_stripes (chunk_id) WHERE chunk_id IS NOT NULL;

-- One row per writing statement into a hypertable whose track_invalidations
-- is true: the lowest and greatest time key it wrote, updated or deleted
-- (inclusive).
CREATE TABLE orochi.hypertable_invalidation_log (
    relid     oid NOT NULL,
    lowest    bigint NOT NULL,
    greatest  bigint NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hypertable_invalidation_log_relid_idx ON orochi.hypertable_invalidation_log (relid);

GRANT SELECT ON orochi.hypertables, orochi.hypertable_chunks TO PUBLIC;

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
-- timestamp or date; an integer for integer time columns).
CREATE FUNCTION orochi.show_chunks(relation regclass, older_than "any" DEFAULT NULL,
                                   newer_than "any" DEFAULT NULL)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STABLE;

-- Drop those chunks: their stripes and the delta rows in their ranges.
CREATE FUNCTION orochi.drop_chunks(relation regclass, older_than "any" DEFAULT NULL,
                                   newer_than "any" DEFAULT NULL)
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
-- Background jobs (docs/jobs.md): the jobs catalog and its run statistics,
-- user-defined actions, the retention and compression policies' SQL, and
-- running a job now.  orochi-sidecar runs the jobs that are due.

-- Job ids start at 1000, as TimescaleDB's do.
CREATE SEQUENCE orochi.jobs_job_id_seq MINVALUE 1000 START 1000;

-- One row per job.  A job runs proc_schema.proc_name: a policy whose body is
-- Python (orochi_fdw.jobs.registry) when proc_schema is 'orochi', otherwise a
-- user procedure called as CALL proc(job_id, config).  relid is the table the
-- job works on (a hypertable, a continuous aggregate's materialization
-- table), NULL for user-defined actions.
CREATE TABLE orochi.jobs (
    job_id            integer PRIMARY KEY DEFAULT nextval('orochi.jobs_job_id_seq'),
    application_name  text NOT NULL,
    proc_schema       name NOT NULL,
    proc_name         name NOT NULL,
    relid             oid,
    schedule_interval interval NOT NULL CHECK (schedule_interval > interval '0'),
    max_runtime       interval NOT NULL DEFAULT interval '0'      -- 0 = no limit
                      CHECK (max_runtime >= interval '0'),
    max_retries       integer NOT NULL DEFAULT -1 CHECK (max_retries >= -1),  -- -1 = forever
    retry_period      interval NOT NULL DEFAULT interval '5 minutes'
                      CHECK (retry_period > interval '0'),
    scheduled         boolean NOT NULL DEFAULT true,
    config            jsonb,
    next_start        timestamptz NOT NULL DEFAULT now(),
    owner             regrole NOT NULL DEFAULT current_user::regrole,
    created_at        timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE orochi.jobs_job_id_seq OWNED BY orochi.jobs.job_id;

-- At most one policy of a kind per table.
CREATE UNIQUE INDEX jobs_one_policy_per_table ON orochi.jobs (proc_schema, proc_name, relid)
    WHERE relid IS NOT NULL;
CREATE INDEX jobs_next_start ON orochi.jobs (next_start) WHERE scheduled;

-- What the runs of each job did; one row per job, written in the job's own
-- transaction (a run that rolls back leaves no trace but its failure).
CREATE TABLE orochi.bgw_job_stat (
    job_id                 integer PRIMARY KEY REFERENCES orochi.jobs ON DELETE CASCADE,
    last_run_started_at    timestamptz,
    last_successful_finish timestamptz,
    last_finish            timestamptz,
    last_run_status        text,            -- 'Success' / 'Failed'
    last_run_duration      interval,
    last_summary           text,            -- the body's one-line summary of its last success
    last_error             text,            -- the error message of the last failure
    total_runs             bigint NOT NULL DEFAULT 0,
    total_successes        bigint NOT NULL DEFAULT 0,
    total_failures         bigint NOT NULL DEFAULT 0,
    consecutive_failures   integer NOT NULL DEFAULT 0
);

-- Advisory lock keys (bigint form: class in the high 32 bits, id in the low
-- 32): a job being run holds its job's key and, when it works on a table,
-- that table's key, for its transaction.  "At most one job at a time per
-- table."
CREATE FUNCTION orochi.job_lock_key(job_id integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (x'4f524f4a'::bigint << 32) | job_id::bigint $$;

CREATE FUNCTION orochi.job_table_lock_key(relid oid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (x'4f524f54'::bigint << 32) | relid::bigint $$;

-- Whether some session runs the job now (holds its advisory lock).
CREATE FUNCTION orochi.job_is_running(job_id integer) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
           AND classid = x'4f524f4a'::bigint::oid
           AND objid = job_id::oid AND objsubid = 1)
$$;

CREATE VIEW orochi.job_stats AS
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
       s.last_summary
  FROM orochi.jobs j
  LEFT JOIN orochi.bgw_job_stat s ON s.job_id = j.job_id
  LEFT JOIN running r ON r.job_id = j.job_id;

-- A dropped table takes its jobs with it.  SECURITY DEFINER: whoever may
-- drop a table may drop its jobs, without any right on orochi.jobs (and a
-- role without one can still drop its own tables).
CREATE FUNCTION orochi.jobs_on_sql_drop()
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
    IF dropped IS NOT NULL THEN
        DELETE FROM orochi.jobs WHERE relid = ANY (dropped);
    END IF;
END
$$;

CREATE EVENT TRIGGER orochi_jobs_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.jobs_on_sql_drop();

-- User-defined actions, as TimescaleDB's add_job: proc is a procedure taking
-- (job_id integer, config jsonb), called as CALL proc(job_id, config).
CREATE FUNCTION orochi.add_job(proc regproc, schedule_interval interval,
                               config jsonb DEFAULT NULL,
                               initial_start timestamptz DEFAULT NULL,
                               scheduled boolean DEFAULT true)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Change a job's schedule or config; NULL arguments leave a setting as it is.
CREATE FUNCTION orochi.alter_job(job_id integer,
                                 schedule_interval interval DEFAULT NULL,
                                 max_runtime interval DEFAULT NULL,
                                 max_retries integer DEFAULT NULL,
                                 retry_period interval DEFAULT NULL,
                                 scheduled boolean DEFAULT NULL,
                                 config jsonb DEFAULT NULL,
                                 next_start timestamptz DEFAULT NULL,
                                 if_exists boolean DEFAULT false,
                                 OUT job_id integer, OUT schedule_interval interval,
                                 OUT max_runtime interval, OUT max_retries integer,
                                 OUT retry_period interval, OUT scheduled boolean,
                                 OUT config jsonb, OUT next_start timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.delete_job(job_id integer)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Run a job now, in the caller's transaction, waiting for the job's and its
-- table's lock; an error reaches the caller (naming the job).
CREATE FUNCTION orochi.run_job_now(job_id integer)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE PROCEDURE orochi.run_job(job_id integer)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM orochi.run_job_now(job_id);
END
$$;

-- The scheduler's way to run a job (orochi-sidecar): never raises.  Takes
-- the locks without waiting (busy: status 'Skipped'), runs the body in a
-- subtransaction, and records success or failure (with the retry backoff)
-- in the same transaction.
CREATE FUNCTION orochi.run_job_background(job_id integer,
                                          OUT status text, OUT message text,
                                          OUT duration interval, OUT next_start timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Record a failed run whose transaction could not record it itself (it was
-- cancelled, or its connection was lost): the scheduler calls this after.
CREATE FUNCTION orochi.record_job_failure(job_id integer, message text,
                                          started_at timestamptz DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Policies (TimescaleDB's names and argument order).  drop_after and
-- compress_after are an interval, or an integer for hypertables whose time
-- column is an integer: hence "any".
CREATE FUNCTION orochi.add_retention_policy(relation regclass, drop_after "any",
                                            schedule_interval interval DEFAULT interval '1 day',
                                            if_not_exists boolean DEFAULT false,
                                            initial_start timestamptz DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.remove_retention_policy(relation regclass, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.add_compression_policy(relation regclass, compress_after "any",
                                              schedule_interval interval DEFAULT interval '1 day',
                                              if_not_exists boolean DEFAULT false,
                                              initial_start timestamptz DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.remove_compression_policy(relation regclass, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

GRANT SELECT ON orochi.jobs, orochi.bgw_job_stat, orochi.job_stats TO PUBLIC;
-- Chunk compression of hypertables (docs/compression.md).

-- What the last compression of a chunk did; compressed_at is NULL while the
-- chunk is not compressed.  The chunk stays "Compressed" while its stripes
-- are exactly the compressed_stripes that transaction wrote, none has
-- deleted rows, and no delta row lies in its range.
ALTER TABLE orochi.hypertable_chunks
    ADD COLUMN compressed_at      timestamptz,
    ADD COLUMN compressed_xid     xid8,
    ADD COLUMN compressed_stripes integer,
    ADD COLUMN compressed_rows    bigint,
    ADD COLUMN uncompressed_bytes bigint,   -- stripe file bytes + raw bytes of delta rows, before
    ADD COLUMN compressed_bytes   bigint;   -- stripe file bytes, after

-- 'Uncompressed', 'Compressed' or 'Partially compressed' (written since its
-- compression), given the number of delta rows in the chunk's range.
CREATE FUNCTION orochi._chunk_compression_status(chunk bigint, delta_rows bigint)
RETURNS text
LANGUAGE sql STABLE
RETURN (
    SELECT CASE
             WHEN c.compressed_at IS NULL THEN 'Uncompressed'
             WHEN coalesce(delta_rows, 0) > 0
               OR (SELECT count(*) FILTER (WHERE s.created_xid <> c.compressed_xid OR s.deleted_count > 0) > 0
                       OR count(*) <> c.compressed_stripes
                     FROM orochi.columnar_stripes s
                    WHERE s.chunk_id = c.chunk_id)
             THEN 'Partially compressed'
             ELSE 'Compressed'
           END
      FROM orochi.hypertable_chunks c
     WHERE c.chunk_id = chunk);

-- Compress a chunk (its name as orochi.show_chunks gives it): its stripes and
-- the delta rows in its range become stripes sorted by time, with zstd.
CREATE FUNCTION orochi.compress_chunk(chunk text, if_not_compressed boolean DEFAULT true)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Rewrite a compressed chunk with the table's own codecs.
CREATE FUNCTION orochi.decompress_chunk(chunk text, if_compressed boolean DEFAULT true)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Every chunk of every hypertable: its range, rows, bytes and compression
-- state (like timescaledb_information.chunks).
CREATE VIEW orochi.chunks AS
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
       orochi._chunk_compression_status(c.chunk_id, s.delta_rows) = 'Compressed' AS is_compressed,
       orochi._chunk_compression_status(c.chunk_id, s.delta_rows) AS compression_status,
       c.compressed_at
  FROM orochi.hypertable_chunks c
  JOIN orochi.hypertables h ON h.relid = c.relid
  LEFT JOIN orochi.hypertable_chunk_stats() s ON s.chunk_id = c.chunk_id;

GRANT SELECT ON orochi.chunks TO PUBLIC;

-- Per chunk of a hypertable: its compression state and the bytes its last
-- compression started from and ended with (TimescaleDB's name).
CREATE FUNCTION orochi.chunk_compression_stats(hypertable regclass)
RETURNS TABLE (chunk_name text, compression_status text, before_compression_total_bytes bigint,
               after_compression_total_bytes bigint, compressed_rows bigint,
               compressed_at timestamptz)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT v.chunk_name, v.compression_status, c.uncompressed_bytes, c.compressed_bytes,
           c.compressed_rows, c.compressed_at
      FROM orochi.chunks v
      JOIN orochi.hypertable_chunks c ON c.chunk_id = v.chunk_id
     WHERE c.relid = hypertable
     ORDER BY c.range_start;
END;

-- Totals over the chunks of a hypertable (TimescaleDB's name).
CREATE FUNCTION orochi.hypertable_compression_stats(hypertable regclass)
RETURNS TABLE (total_chunks bigint, number_compressed_chunks bigint,
               before_compression_total_bytes bigint, after_compression_total_bytes bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT count(*), count(*) FILTER (WHERE s.compression_status = 'Compressed'),
           sum(s.before_compression_total_bytes)::bigint, sum(s.after_compression_total_bytes)::bigint
      FROM orochi.chunk_compression_stats(hypertable) s;
END;
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
    view_relid         oid PRIMARY KEY,          -- the view users query
    direct_relid       oid NOT NULL UNIQUE,      -- the query over the raw rows
    mat_relid          oid NOT NULL UNIQUE,      -- the materialization table
    hypertable_relid   oid NOT NULL,
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
    view_relid  oid NOT NULL,
    lowest      bigint NOT NULL,
    greatest    bigint NOT NULL
);
CREATE INDEX continuous_agg_invalidations_view_idx ON orochi.continuous_agg_invalidations (view_relid);

-- The watermark as a value of the time column's type, for the real-time
-- views: -infinity (or the smallest bigint) while nothing is materialized.
-- A time key counts microseconds as time, never days, so that the session's
-- time zone cannot shift it.
CREATE FUNCTION orochi._cagg_watermark(view_relid oid)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT c.watermark FROM orochi.continuous_aggs c WHERE c.view_relid = $1 $$;

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

CREATE FUNCTION orochi.continuous_aggregates_on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
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

-- One row per continuous aggregate.
CREATE VIEW orochi.continuous_aggregates AS
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
  LEFT JOIN pg_attribute a ON a.attrelid = c.mat_relid AND a.attname = c.bucket_column;

-- Real-time views read the watermark with their reader's rights.
GRANT SELECT ON orochi.continuous_aggs, orochi.continuous_aggregates TO PUBLIC;
-- Vector search: the orochi.vector type with pgvector's operators and
-- functions, and approximate-nearest-neighbour indexes over the stripes of
-- columnar tables (docs/vector.md).

-- ---------------------------------------------------------------------------
-- The type: float4 elements, its dimension as type modifier: vector(3)

CREATE TYPE orochi.vector;

CREATE FUNCTION orochi.vector_in(cstring, oid, integer) RETURNS orochi.vector
AS 'MODULE_PATHNAME', 'orochi_vector_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.vector_out(orochi.vector) RETURNS cstring
AS 'MODULE_PATHNAME', 'orochi_vector_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.vector_typmod_in(cstring[]) RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_vector_typmod_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.vector_recv(internal, oid, integer) RETURNS orochi.vector
AS 'MODULE_PATHNAME', 'orochi_vector_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.vector_send(orochi.vector) RETURNS bytea
AS 'MODULE_PATHNAME', 'orochi_vector_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE orochi.vector (
    INPUT = orochi.vector_in,
    OUTPUT = orochi.vector_out,
    TYPMOD_IN = orochi.vector_typmod_in,
    RECEIVE = orochi.vector_recv,
    SEND = orochi.vector_send,
    STORAGE = external,
    ALIGNMENT = int
);

-- vector(n): the length coercion that checks the dimension
CREATE FUNCTION orochi.vector(orochi.vector, integer, boolean) RETURNS orochi.vector
AS 'MODULE_PATHNAME', 'orochi_vector_coerce' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE CAST (orochi.vector AS orochi.vector)
    WITH FUNCTION orochi.vector(orochi.vector, integer, boolean) AS IMPLICIT;

-- casts from and to arrays, as pgvector's
CREATE FUNCTION orochi.array_to_vector(real[], integer, boolean) RETURNS orochi.vector
AS 'MODULE_PATHNAME', 'orochi_array_to_vector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION orochi.array_to_vector(double precision[], integer, boolean) RETURNS orochi.vector
AS 'MODULE_PATHNAME', 'orochi_array_to_vector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION orochi.array_to_vector(integer[], integer, boolean) RETURNS orochi.vector
AS 'MODULE_PATHNAME', 'orochi_array_to_vector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION orochi.vector_to_float4(orochi.vector, integer, boolean) RETURNS real[]
AS 'MODULE_PATHNAME', 'orochi_vector_to_float4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE CAST (real[] AS orochi.vector)
    WITH FUNCTION orochi.array_to_vector(real[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (double precision[] AS orochi.vector)
    WITH FUNCTION orochi.array_to_vector(double precision[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (integer[] AS orochi.vector)
    WITH FUNCTION orochi.array_to_vector(integer[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (orochi.vector AS real[])
    WITH FUNCTION orochi.vector_to_float4(orochi.vector, integer, boolean) AS IMPLICIT;

-- ---------------------------------------------------------------------------
-- Functions and operators (distances in double precision)

CREATE FUNCTION orochi.l2_distance(orochi.vector, orochi.vector) RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_vector_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.inner_product(orochi.vector, orochi.vector) RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_vector_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.vector_negative_inner_product(orochi.vector, orochi.vector) RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_vector_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.cosine_distance(orochi.vector, orochi.vector) RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_vector_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.vector_dims(orochi.vector) RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_vector_dims' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.vector_norm(orochi.vector) RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_vector_norm' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION orochi.l2_normalize(orochi.vector) RETURNS orochi.vector
AS 'MODULE_PATHNAME', 'orochi_vector_l2_normalize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR orochi.<-> (
    LEFTARG = orochi.vector, RIGHTARG = orochi.vector,
    FUNCTION = orochi.l2_distance, COMMUTATOR = OPERATOR(orochi.<->)
);

CREATE OPERATOR orochi.<#> (
    LEFTARG = orochi.vector, RIGHTARG = orochi.vector,
    FUNCTION = orochi.vector_negative_inner_product, COMMUTATOR = OPERATOR(orochi.<#>)
);

CREATE OPERATOR orochi.<=> (
    LEFTARG = orochi.vector, RIGHTARG = orochi.vector,
    FUNCTION = orochi.cosine_distance, COMMUTATOR = OPERATOR(orochi.<=>)
);

-- ---------------------------------------------------------------------------
-- Indexes of columnar tables: one definition per (table, column, distance),
-- one file per stripe beside the stripe's file.

CREATE SEQUENCE orochi.vector_index_id_seq;

CREATE TABLE orochi.columnar_vector_indexes (
    index_id       bigint PRIMARY KEY,
    relid          oid NOT NULL,
    attnum         smallint NOT NULL,
    dimensions     integer NOT NULL,
    index_type     text NOT NULL CHECK (index_type IN ('hnsw', 'ivfflat')),
    distance_type  text NOT NULL CHECK (distance_type IN ('l2', 'cosine', 'inner_product')),
    options        jsonb NOT NULL,          -- m, ef_construction / lists, as used
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (relid, attnum, distance_type)
);

-- A stripe's index file.  Deleting the stripe's row (DROP, TRUNCATE, vacuum,
-- drop_chunks ...) deletes this row too, and the trigger below has the file
-- removed when that transaction commits; a file left without a row (a
-- crash) is an orphan that orochi.vacuum() collects.
CREATE TABLE orochi.columnar_vector_index_files (
    index_id       bigint NOT NULL REFERENCES orochi.columnar_vector_indexes ON DELETE CASCADE,
    stripe_id      bigint NOT NULL REFERENCES orochi.columnar_stripes ON DELETE CASCADE,
    relid          oid NOT NULL,
    file_path      text NOT NULL UNIQUE,
    file_bytes     bigint NOT NULL,
    row_count      bigint NOT NULL,
    search_ef      integer NOT NULL,        -- ef at which its build-time recall check passed
    build_ms       bigint NOT NULL,
    created_xid    xid8 NOT NULL,
    PRIMARY KEY (index_id, stripe_id)
);
CREATE INDEX columnar_vector_index_files_stripe_idx
    ON orochi.columnar_vector_index_files (stripe_id);

GRANT SELECT ON orochi.columnar_vector_indexes, orochi.columnar_vector_index_files TO PUBLIC;

-- Internal: an index file's row is gone (with its stripe or its index):
-- remove the file if the transaction commits.
CREATE FUNCTION orochi.vector_index_file_deleted(text)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

REVOKE EXECUTE ON FUNCTION orochi.vector_index_file_deleted(text) FROM PUBLIC;

CREATE FUNCTION orochi.columnar_vector_index_files_on_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM orochi.vector_index_file_deleted(OLD.file_path);
    RETURN OLD;
END;
$$;

CREATE TRIGGER columnar_vector_index_files_delete
    AFTER DELETE ON orochi.columnar_vector_index_files
    FOR EACH ROW EXECUTE FUNCTION orochi.columnar_vector_index_files_on_delete();

-- Build an index of a vector(n) or real[] column of an orochi columnar table:
-- a file per stripe now, and for every stripe written later (INSERT, COPY,
-- compaction, vacuum).  The table's owner only.
CREATE FUNCTION orochi.create_vector_index(
    "table" regclass, "column" text, dimensions integer DEFAULT NULL,
    index_type text DEFAULT 'hnsw', distance_type text DEFAULT 'l2',
    options jsonb DEFAULT '{}')
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Drop the index (all of them on that column when distance_type is NULL);
-- its files go when the transaction commits.  The table's owner only.
CREATE FUNCTION orochi.drop_vector_index("table" regclass, "column" text,
                                         distance_type text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE VIEW orochi.vector_indexes AS
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
 GROUP BY i.index_id, a.attname;

GRANT SELECT ON orochi.vector_indexes TO PUBLIC;
