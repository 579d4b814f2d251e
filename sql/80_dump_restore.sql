-- Dump and restore: what pg_dump carries of Orochi (docs/STORAGE.md, "Dump
-- and restore").
--
-- The rows of columnar tables travel as the rows of their foreign tables
-- (pg_dump --include-foreign-data=orochi); stripe files, the stripe catalog
-- and the delta stores are rebuilt by the restore's COPY.  The definitions
-- that are not objects of their own travel as the rows of these catalog
-- tables, which pg_dump dumps as extension configuration tables.  They name
-- relations by regclass columns, which a dump writes by name, so that a
-- restore, where every oid is new, finds them again; and sequences whose
-- values name objects (the continuous aggregates' hidden views and tables)
-- go with them.  Hypertable chunks are not dumped: the restore's COPY makes
-- the same chunks again (same ranges), from the time column.

SELECT pg_catalog.pg_extension_config_dump('orochi.hypertables', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.hypertable_invalidation_log', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.continuous_aggs', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.continuous_agg_invalidations', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.continuous_agg_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.jobs_job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.columnar_vector_indexes', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.vector_index_id_seq', '');

-- pg_restore loads the tables' rows in the order of their schemas' names: a
-- table may get its rows before the catalog row that makes it a hypertable
-- (or gives it a vector index).  These triggers put such rows in order when
-- the catalog row arrives; they are also how create_hypertable(...,
-- migrate_data => true) and create_vector_index treat the rows already there.
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
