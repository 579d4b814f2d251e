-- Workload management (docs/workload.md): resource pools with admission
-- control, priorities, a queue and per-pool timeouts; workload classes that
-- route statements to pools.  The definitions live in the tables below, in
-- the database named by orochi.workload_database (default postgres); the C
-- side mirrors them into shared memory (orochi must be preloaded) and admits
-- every statement of the server against them.

-- One row per pool.  NULL means "no limit" for max_queue and queue_timeout_ms,
-- and "orochi.default_query_timeout_ms" for query_timeout_ms (0: none).
CREATE SEQUENCE orochi.resource_pools_pool_id_seq;
CREATE TABLE orochi.resource_pools (
    pool_id          integer PRIMARY KEY DEFAULT nextval('orochi.resource_pools_pool_id_seq'),
    pool_name        name NOT NULL UNIQUE CHECK (pool_name <> 'default'),
    max_concurrency  integer NOT NULL CHECK (max_concurrency > 0),
    max_queue        integer CHECK (max_queue >= 0),
    queue_timeout_ms integer CHECK (queue_timeout_ms > 0),
    query_timeout_ms integer CHECK (query_timeout_ms >= 0),
    priority         integer NOT NULL DEFAULT 0,
    work_mem_kb      integer CHECK (work_mem_kb >= 64),
    created_at       timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE orochi.resource_pools_pool_id_seq OWNED BY orochi.resource_pools.pool_id;

-- One row per class.  match is the criteria as given (normalized); the
-- match_* columns are what the C side tests: roles (the session user is a
-- member), databases, application_name LIKE patterns, statement kinds (bits:
-- 1 read, 2 write, 4 ddl; 0 any), the plan's estimated cost at least
-- match_min_cost.  An empty criterion matches everything.  Classes are tried
-- in order of specificity (number of criteria), then name.  pool_id NULL is
-- the default pool.
CREATE SEQUENCE orochi.workload_classes_class_id_seq;
CREATE TABLE orochi.workload_classes (
    class_id                integer PRIMARY KEY DEFAULT nextval('orochi.workload_classes_class_id_seq'),
    class_name              name NOT NULL UNIQUE,
    pool_id                 integer REFERENCES orochi.resource_pools ON DELETE RESTRICT,
    priority                integer,
    match                   jsonb NOT NULL DEFAULT '{}',
    match_roles             oid[] NOT NULL DEFAULT '{}',
    match_databases         oid[] NOT NULL DEFAULT '{}',
    match_application_names text[] NOT NULL DEFAULT '{}',
    match_kinds             integer NOT NULL DEFAULT 0 CHECK (match_kinds BETWEEN 0 AND 7),
    match_min_cost          float8 CHECK (match_min_cost >= 0),
    specificity             integer NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE orochi.workload_classes_class_id_seq OWNED BY orochi.workload_classes.class_id;

-- Roles whose sessions all go to one class (assign_workload_class(class, role)).
CREATE TABLE orochi.workload_role_classes (
    role     oid PRIMARY KEY,
    class_id integer NOT NULL REFERENCES orochi.workload_classes ON DELETE CASCADE
);

-- pg_dump keeps the definitions.
SELECT pg_catalog.pg_extension_config_dump('orochi.resource_pools', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.resource_pools_pool_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.workload_classes', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.workload_classes_class_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orochi.workload_role_classes', '');

-- ---------------------------------------------------------------- administration (superusers)

CREATE FUNCTION orochi.create_resource_pool(name text, max_concurrency integer,
                                            max_queue integer DEFAULT NULL,
                                            queue_timeout_ms integer DEFAULT NULL,
                                            query_timeout_ms integer DEFAULT NULL,
                                            priority integer DEFAULT 0,
                                            work_mem text DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- NULL leaves a setting as it is; -1 removes a limit (max_queue,
-- queue_timeout_ms, query_timeout_ms), work_mem => 'default' the pool's work_mem.
CREATE FUNCTION orochi.alter_resource_pool(name text,
                                           max_concurrency integer DEFAULT NULL,
                                           max_queue integer DEFAULT NULL,
                                           queue_timeout_ms integer DEFAULT NULL,
                                           query_timeout_ms integer DEFAULT NULL,
                                           priority integer DEFAULT NULL,
                                           work_mem text DEFAULT NULL,
                                           new_name text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.drop_resource_pool(name text, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.create_workload_class(name text, pool text, match jsonb DEFAULT '{}',
                                             priority integer DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- NULL leaves a setting as it is.
CREATE FUNCTION orochi.alter_workload_class(name text, pool text DEFAULT NULL,
                                            match jsonb DEFAULT NULL,
                                            priority integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.drop_workload_class(name text, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- A role's sessions (role =>), or one session (pid =>; this one when neither is
-- given) all go to the class; class_name NULL removes the assignment.
CREATE FUNCTION orochi.assign_workload_class(class_name text, role name DEFAULT NULL,
                                             pid integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Read the catalog again and put it in force (after restoring a dump, or
-- after a failed load: see workload_status()).
CREATE FUNCTION orochi.workload_reload()
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_workload_reload'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.pool_stats_reset(pool_name text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_pool_stats_reset'
LANGUAGE C VOLATILE;

-- Internal: this transaction changed the catalog; publish it at commit.
CREATE FUNCTION orochi.workload_publish()
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_workload_publish'
LANGUAGE C VOLATILE;

-- Internal: assign_workload_class(class, pid => ...).
CREATE FUNCTION orochi.workload_assign_session(pid integer, class_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_workload_assign_session'
LANGUAGE C VOLATILE;

REVOKE EXECUTE ON FUNCTION orochi.create_resource_pool(text, integer, integer, integer, integer, integer, text),
                           orochi.alter_resource_pool(text, integer, integer, integer, integer, integer, text, text),
                           orochi.drop_resource_pool(text, boolean),
                           orochi.create_workload_class(text, text, jsonb, integer),
                           orochi.alter_workload_class(text, text, jsonb, integer),
                           orochi.drop_workload_class(text, boolean),
                           orochi.assign_workload_class(text, name, integer),
                           orochi.workload_reload(),
                           orochi.pool_stats_reset(text),
                           orochi.workload_publish(),
                           orochi.workload_assign_session(integer, text)
    FROM PUBLIC;

-- ---------------------------------------------------------------- monitoring (everyone)

-- The pools in force (from shared memory: the same in every database).
CREATE FUNCTION orochi.list_resource_pools(OUT pool_name text, OUT max_concurrency integer,
                                           OUT max_queue integer, OUT queue_timeout_ms integer,
                                           OUT query_timeout_ms integer, OUT priority integer,
                                           OUT work_mem text, OUT is_default boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_list_resource_pools'
LANGUAGE C VOLATILE;

-- The classes in force, in the order they are tried.
CREATE FUNCTION orochi.list_workload_classes(OUT class_name text, OUT pool_name text,
                                             OUT priority integer, OUT roles text[],
                                             OUT databases text[], OUT application_names text[],
                                             OUT kinds text[], OUT min_cost float8,
                                             OUT assigned_roles text[], OUT evaluation_order integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_list_workload_classes'
LANGUAGE C VOLATILE;

-- Live counts and statistics per pool: waited = admitted after queueing;
-- canceled = left the queue on cancel, statement_timeout or exit;
-- lock_admitted = admitted beyond the limit because a running statement of
-- the pool waited for its locks; waits in ms over every admitted statement.
CREATE FUNCTION orochi.pool_stats(OUT pool_name text, OUT max_concurrency integer,
                                  OUT running integer, OUT queued integer,
                                  OUT admitted bigint, OUT waited bigint, OUT rejected bigint,
                                  OUT timed_out bigint, OUT canceled bigint,
                                  OUT lock_admitted bigint, OUT mean_wait_ms float8,
                                  OUT p95_wait_ms float8, OUT stats_reset timestamptz,
                                  OUT dropped boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_pool_stats'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.workload_status(OUT enabled boolean, OUT preloaded boolean,
                                       OUT workload_database text, OUT loaded boolean,
                                       OUT loaded_at timestamptz, OUT generation bigint,
                                       OUT pools integer, OUT classes integer,
                                       OUT running integer, OUT queued integer,
                                       OUT load_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_workload_status'
LANGUAGE C VOLATILE;

-- Per backend that has been admitted: state is idle, queued or running;
-- waited_ms is the current statement's wait so far, or the last one's.
CREATE FUNCTION orochi.session_resources(OUT pid integer, OUT pool_name text, OUT class_name text,
                                         OUT priority integer, OUT state text,
                                         OUT waited_ms float8, OUT running_ms float8)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_session_resources'
LANGUAGE C VOLATILE;

-- The statements waiting for a slot; queue_position 1 is admitted next.
CREATE FUNCTION orochi.queued_queries(OUT pid integer, OUT pool_name text, OUT class_name text,
                                      OUT priority integer, OUT queue_position integer,
                                      OUT waited_ms float8, OUT enqueued_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_queued_queries'
LANGUAGE C VOLATILE;
