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
-- compression), given the number of delta rows in the chunk's range.  The
-- rule is written twice, here (for Python, which calls it as the extension
-- owner) and in the view orochi.chunks, which reads the catalog with its
-- owner's rights; keep them in step.
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

REVOKE EXECUTE ON FUNCTION orochi._chunk_compression_status(bigint, bigint) FROM PUBLIC;

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

-- Every chunk of every hypertable the caller may read (SELECT on it): its
-- range, rows, bytes and compression state (like
-- timescaledb_information.chunks), and what its last compression did.
CREATE VIEW orochi.chunks WITH (security_barrier) AS
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

GRANT SELECT ON orochi.chunks TO PUBLIC;

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
CREATE FUNCTION orochi.chunk_compression_stats(hypertable regclass)
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
