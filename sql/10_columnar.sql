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
    file_path          text NOT NULL UNIQUE,    -- the stripe file (orochi._file_path)
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
    hll                bytea,                   -- HyperLogLog sketch of the values (p = 14), with the
                                                -- table option stripe_sketches (docs/sketches.md)
    PRIMARY KEY (stripe_id, attnum)
);
CREATE INDEX columnar_stripe_columns_relid_idx
    ON orochi.columnar_stripe_columns (relid, attnum);

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

-- Where a file named in the catalog is: the catalog names a file relative to
-- its database's folder, orochi/<database oid>/ in the data directory, so
-- that a copy of the data directory (standby, base backup) or of the
-- database (CREATE DATABASE ... TEMPLATE copies the folder) finds its own
-- files; a file under a server's data_dir outside the data directory is
-- named by its absolute path.  The result is relative to the data directory
-- (as pg_ls_dir and pg_stat_file take it) or absolute.
CREATE FUNCTION orochi._file_path(file_path text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN file_path LIKE '/%' THEN file_path
            ELSE 'orochi/' || (SELECT d.oid FROM pg_catalog.pg_database d
                                WHERE d.datname = pg_catalog.current_database()) || '/' || file_path END;

-- Each stripe of each columnar table the caller may read (SELECT on it),
-- column by column.  security_barrier: the privilege test comes before any
-- condition of the caller's query, so no function of theirs sees other rows.
CREATE VIEW orochi.stripes WITH (security_barrier) AS
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

-- The catalog tables themselves (whose per column bounds are values of the
-- tables' data, like pg_statistic's) are granted to no one.
GRANT SELECT ON orochi.stripes TO PUBLIC;

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

-- Internal: a column's default as ALTER TABLE ... ADD COLUMN evaluates it
-- for the rows already stored: kind is 'none' (no default), 'constant'
-- (evaluated once: value, NULL for a NULL default), 'volatile' (a value per
-- row) or 'generated' (a generated column).  For the table's owner: it
-- evaluates the default with the caller's rights, as ALTER TABLE does.
CREATE FUNCTION orochi.column_default(regclass, smallint, OUT kind text, OUT value text)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_column_default'
LANGUAGE C STRICT VOLATILE;

-- Internal: check the options of new or altered columnar tables (table,
-- column and server options together) and keep their delta stores in step.
-- Called by the DDL event trigger below, as the role that ran the command
-- (a new column's default is evaluated with its rights, as for a heap
-- table); for the tables' owners only.
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
CREATE FUNCTION orochi.columnar_on_sql_drop()
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

CREATE EVENT TRIGGER orochi_columnar_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.columnar_on_sql_drop();

CREATE FUNCTION orochi.columnar_on_ddl_end()
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

CREATE EVENT TRIGGER orochi_columnar_ddl_end ON ddl_command_end
    WHEN TAG IN ('CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION orochi.columnar_on_ddl_end();

-- A failure here (Python missing, say) must not keep anyone from dropping
-- an extension: the files are then left for the operator.
CREATE FUNCTION orochi.columnar_on_drop_extension()
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

CREATE EVENT TRIGGER orochi_columnar_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION orochi.columnar_on_drop_extension();
