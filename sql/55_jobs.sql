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
    relid             regclass,                 -- the table a policy is for (by name in dumps)
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

-- The jobs of the roles the caller is a member of (all of them for
-- superusers), with their statistics.
CREATE VIEW orochi.job_stats WITH (security_barrier) AS
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

-- orochi.jobs and orochi.bgw_job_stat are granted to no one.
GRANT SELECT ON orochi.job_stats TO PUBLIC;
