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
    relid          regclass NOT NULL,
    attnum         smallint NOT NULL,
    dimensions     integer NOT NULL,
    index_type     text NOT NULL CHECK (index_type IN ('hnsw', 'ivfflat')),
    distance_type  text NOT NULL CHECK (distance_type IN ('l2', 'cosine', 'inner_product')),
    options        jsonb NOT NULL,          -- m, ef_construction / lists, as used
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (relid, attnum, distance_type)
);

-- A stripe's index file, one row per stripe it indexes (a file built over
-- several stripes at once, a segment, has one row for each, all naming it).
-- Deleting the stripe's row (DROP, TRUNCATE, vacuum, drop_chunks ...)
-- deletes this row too, and the trigger below has the file removed when that
-- transaction commits and no row names it any more; a file left without a
-- row (a crash) is an orphan that orochi.vacuum() collects.
CREATE TABLE orochi.columnar_vector_index_files (
    index_id       bigint NOT NULL REFERENCES orochi.columnar_vector_indexes ON DELETE CASCADE,
    stripe_id      bigint NOT NULL REFERENCES orochi.columnar_stripes ON DELETE CASCADE,
    relid          oid NOT NULL,
    file_path      text NOT NULL,           -- as in columnar_stripes (orochi._file_path)
    file_bytes     bigint NOT NULL,         -- the file's size on its first stripe's row, 0 on the others
    row_count      bigint NOT NULL,         -- vectors of this stripe in the file
    search_ef      integer NOT NULL,        -- ef at which its build-time recall check passed
    build_ms       bigint NOT NULL,
    created_xid    xid8 NOT NULL,
    PRIMARY KEY (index_id, stripe_id)
);
CREATE INDEX columnar_vector_index_files_stripe_idx
    ON orochi.columnar_vector_index_files (stripe_id);
CREATE INDEX columnar_vector_index_files_path_idx
    ON orochi.columnar_vector_index_files (file_path);

-- Both tables, as the rest of the catalog, belong to the extension owner and
-- are granted to no one: Orochi reads and writes them with internal
-- statements after checking the caller's rights (docs/SECURITY.md), and
-- orochi.vector_indexes shows each role the indexes of the tables it may read.

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
SET search_path = pg_catalog, pg_temp
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

-- Merge a table's small vector index files (the per-stripe files written
-- since its indexes were built) into segments; returns the files written.
-- The table's owner only.
CREATE FUNCTION orochi.vector_index_merge("table" regclass)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The vector indexes of the tables the caller may read (SELECT on them).
-- security_barrier: the privilege test comes before any condition of the
-- caller's query.
CREATE VIEW orochi.vector_indexes WITH (security_barrier) AS
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

GRANT SELECT ON orochi.vector_indexes TO PUBLIC;
