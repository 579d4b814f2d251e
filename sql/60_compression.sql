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
       c.compressed_at,
       c.created_at                                       AS chunk_creation_time
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
