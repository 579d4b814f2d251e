-- orochi 0.1.0 -> 0.2.0: columnar data in the WAL, paths relative to the
-- database's folder, dump and restore.
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

CREATE OR REPLACE VIEW orochi.stripes AS
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
         ON a.attrelid = s.relid AND a.attnum = c.attnum AND NOT a.attisdropped;

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
-- made again at its aggregate's next refresh.
CREATE OR REPLACE FUNCTION orochi._cagg_watermark(view_relid oid)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
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
