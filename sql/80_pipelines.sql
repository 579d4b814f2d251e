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
