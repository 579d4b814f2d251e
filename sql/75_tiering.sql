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
