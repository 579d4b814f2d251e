-- Change data capture (docs/cdc.md): ordered, transactional change streams
-- of heap and orochi tables, sent by orochi-sidecar to Kafka, webhooks or
-- files in Debezium's format.
--
-- Each subscription has a logical replication slot (created by the sidecar,
-- which needs the REPLICATION attribute) decoded with pgoutput: heap tables
-- through the publication orochi_cdc_<id> (row changes), orochi tables
-- through the signed transactional messages their write path emits
-- (orochi_fdw/cdc/capture.py).  Both arrive at the transaction's commit, in
-- commit order.
--
-- Privileges: as for pipelines, every role reads and writes the rows of the
-- subscriptions it owns (row-level security); the options (webhook secrets,
-- broker passwords) are not readable by other roles.  Which tables are
-- captured is readable by everyone: every writer of an orochi table asks it.

CREATE SEQUENCE orochi.cdc_subscription_id_seq;

-- One row per subscription.  state is what its owner asked for last, or
-- 'failed' when it stopped itself (max_lag, lost privileges).
CREATE TABLE orochi.cdc_subscription (
    subscription_id  integer PRIMARY KEY DEFAULT nextval('orochi.cdc_subscription_id_seq'),
    name             text NOT NULL UNIQUE CHECK (name <> ''),
    sink             text NOT NULL CHECK (sink IN ('kafka', 'webhook', 'file')),
    format           text NOT NULL CHECK (format IN ('debezium', 'json')),
    options          jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'created'
                     CHECK (state IN ('created', 'running', 'stopped', 'failed')),
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    owner            regrole NOT NULL DEFAULT current_user::regrole,
    created_at       timestamptz NOT NULL DEFAULT now(),
    slot_name        text NOT NULL UNIQUE,       -- orochi_cdc_<database oid>_<subscription id>
    publication_name text NOT NULL,              -- orochi_cdc_<subscription id>
    slot_lsn         pg_lsn,                     -- the slot's consistent point (the snapshot's), once made
    snapshot_done    boolean NOT NULL DEFAULT false,
    confirmed_lsn    pg_lsn                      -- end of the last transaction the sink acknowledged
);
ALTER SEQUENCE orochi.cdc_subscription_id_seq OWNED BY orochi.cdc_subscription.subscription_id;

-- The tables of each subscription.  key_columns: the columns of the event
-- key (the primary key or replica identity of a heap table; the given
-- key_columns, else every column, of an orochi table).
CREATE TABLE orochi.cdc_subscription_table (
    subscription_id integer NOT NULL REFERENCES orochi.cdc_subscription ON DELETE CASCADE,
    relid           oid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('heap', 'orochi')),
    key_columns     text[] NOT NULL,
    ordinal         integer NOT NULL,
    capturing       boolean NOT NULL DEFAULT false,  -- started at least once, and its slot not dropped
    PRIMARY KEY (subscription_id, relid)
);
-- what the write path of orochi tables asks, once per transaction and table
CREATE INDEX cdc_subscription_table_relid ON orochi.cdc_subscription_table (relid) WHERE capturing;

-- Progress and health, one row per subscription (written by the sidecar).
CREATE TABLE orochi.cdc_stats (
    subscription_id   integer PRIMARY KEY REFERENCES orochi.cdc_subscription ON DELETE CASCADE,
    events_sent       bigint NOT NULL DEFAULT 0,   -- change events acknowledged by the sink
    snapshot_events   bigint NOT NULL DEFAULT 0,   -- of which the initial snapshot's (op r)
    transactions      bigint NOT NULL DEFAULT 0,
    bytes_sent        bigint NOT NULL DEFAULT 0,
    batches           bigint NOT NULL DEFAULT 0,
    errors            bigint NOT NULL DEFAULT 0,   -- failed deliveries and events refused by the sink
    last_commit_lsn   pg_lsn,                      -- commit LSN of the last transaction delivered
    last_commit_time  timestamptz,                 -- its commit time
    last_delivery_at  timestamptz,
    pending_since     timestamptz,                 -- commit time of the oldest change not delivered, as last seen
    current_error     text,
    last_error        text,
    last_error_at     timestamptz,
    worker            text,                        -- host:pid of the sidecar running it
    worker_started_at timestamptz
);

-- Events a sink refused for good (a webhook's 4xx other than 429).
CREATE TABLE orochi.cdc_error_log (
    error_id        bigserial PRIMARY KEY,
    subscription_id integer NOT NULL REFERENCES orochi.cdc_subscription ON DELETE CASCADE,
    event_id        text NOT NULL,                 -- <commit lsn>:<index>
    table_name      text,
    op              text,
    status          integer,                       -- the HTTP status
    response        text,                          -- the first 4 kB of the response body
    event           jsonb,
    error_time      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cdc_error_log_subscription ON orochi.cdc_error_log (subscription_id, error_id);

-- The owner of a subscription (NULL when there is none), past row-level security.
CREATE FUNCTION orochi.cdc_subscription_owner(subscription_id integer) RETURNS regrole
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT s.owner FROM orochi.cdc_subscription s WHERE s.subscription_id = $1 $$;

-- A subscription's id by name (NULL when there is none), past row-level security.
CREATE FUNCTION orochi.cdc_subscription_id(name text) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT s.subscription_id FROM orochi.cdc_subscription s WHERE s.name = $1 $$;

ALTER TABLE orochi.cdc_subscription ENABLE ROW LEVEL SECURITY;
ALTER TABLE orochi.cdc_subscription_table ENABLE ROW LEVEL SECURITY;
ALTER TABLE orochi.cdc_stats ENABLE ROW LEVEL SECURITY;
ALTER TABLE orochi.cdc_error_log ENABLE ROW LEVEL SECURITY;

CREATE POLICY cdc_owner ON orochi.cdc_subscription
    USING (orochi.pipeline_owned(owner)) WITH CHECK (orochi.pipeline_owned(owner));
CREATE POLICY cdc_read ON orochi.cdc_subscription_table FOR SELECT USING (true);
CREATE POLICY cdc_insert ON orochi.cdc_subscription_table FOR INSERT
    WITH CHECK (orochi.pipeline_owned(orochi.cdc_subscription_owner(subscription_id)));
CREATE POLICY cdc_update ON orochi.cdc_subscription_table FOR UPDATE
    USING (orochi.pipeline_owned(orochi.cdc_subscription_owner(subscription_id)));
CREATE POLICY cdc_delete ON orochi.cdc_subscription_table FOR DELETE
    USING (orochi.pipeline_owned(orochi.cdc_subscription_owner(subscription_id)));
CREATE POLICY cdc_owner ON orochi.cdc_stats
    USING (orochi.pipeline_owned(orochi.cdc_subscription_owner(subscription_id)))
    WITH CHECK (orochi.pipeline_owned(orochi.cdc_subscription_owner(subscription_id)));
CREATE POLICY cdc_owner ON orochi.cdc_error_log
    USING (orochi.pipeline_owned(orochi.cdc_subscription_owner(subscription_id)))
    WITH CHECK (orochi.pipeline_owned(orochi.cdc_subscription_owner(subscription_id)));

GRANT SELECT (subscription_id, name, sink, format, state, state_changed_at, owner, created_at, slot_name,
              publication_name, slot_lsn, snapshot_done, confirmed_lsn),
      INSERT, UPDATE (state, state_changed_at, slot_lsn, snapshot_done, confirmed_lsn), DELETE
   ON orochi.cdc_subscription TO PUBLIC;
GRANT SELECT, INSERT, UPDATE (capturing), DELETE ON orochi.cdc_subscription_table TO PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON orochi.cdc_stats, orochi.cdc_error_log TO PUBLIC;
GRANT USAGE ON SEQUENCE orochi.cdc_subscription_id_seq, orochi.cdc_error_log_error_id_seq TO PUBLIC;

-- Advisory lock key of a subscription (class 'ORCD' in the high 32 bits):
-- the sidecar worker that streams it holds it for its session.
CREATE FUNCTION orochi.cdc_lock_key(subscription_id integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (x'4f524344'::bigint << 32) | subscription_id::bigint $$;

CREATE FUNCTION orochi.cdc_is_running(subscription_id integer) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
           AND classid = x'4f524344'::bigint::oid
           AND objid = subscription_id::oid AND objsubid = 1)
$$;

-- Make the publication of a subscription hold exactly its heap tables
-- (orochi tables are foreign tables, which publications cannot hold: their
-- changes come as messages).  SECURITY DEFINER: adding a table to a
-- publication needs its ownership, which the subscription's owner (who
-- needs only SELECT) may lack; what it publishes is what the catalog says,
-- whose rows only their owners write, and each table is checked against
-- the owner's privileges here.
CREATE FUNCTION orochi.cdc_sync_publication(subscription integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
    heap oid[];
    t oid;
BEGIN
    SELECT x.publication_name, x.owner INTO s FROM orochi.cdc_subscription x WHERE x.subscription_id = subscription;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'CDC subscription % does not exist', subscription USING ERRCODE = 'undefined_object';
    END IF;
    SELECT coalesce(array_agg(relid ORDER BY ordinal), '{}') INTO heap
      FROM orochi.cdc_subscription_table WHERE subscription_id = subscription AND kind = 'heap';
    FOREACH t IN ARRAY heap LOOP
        IF NOT has_table_privilege(s.owner::oid, t, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied for table %', t::regclass USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = s.publication_name) THEN
        EXECUTE format('CREATE PUBLICATION %I WITH (publish = ''insert, update, delete, truncate'')',
                       s.publication_name);
    END IF;
    IF cardinality(heap) > 0 THEN
        EXECUTE format('ALTER PUBLICATION %I SET TABLE %s', s.publication_name,
                       (SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ')
                          FROM unnest(heap) u(relid)
                          JOIN pg_catalog.pg_class c ON c.oid = u.relid
                          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace));
    END IF;
END
$$;

-- Drop a subscription's publication and replication slot, once its row is
-- gone (in this transaction).  The slot's drop is not undone by a rollback,
-- as pg_drop_replication_slot's is not; a worker using the slot is
-- disconnected first.  SECURITY DEFINER: dropping a slot needs REPLICATION.
CREATE FUNCTION orochi.cdc_drop_replication(slot text, publication text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    holder integer;
    tries integer := 0;
BEGIN
    IF slot !~ ('^orochi_cdc_' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '_[0-9]+$') THEN
        RAISE EXCEPTION '"%" is not the replication slot of a CDC subscription of this database', slot
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM orochi.cdc_subscription WHERE slot_name = slot) THEN
        RAISE EXCEPTION 'replication slot "%" belongs to a CDC subscription', slot
            USING ERRCODE = 'object_in_use';
    END IF;
    IF publication IS NOT NULL AND publication ~ '^orochi_cdc_[0-9]+$'
       AND NOT EXISTS (SELECT 1 FROM orochi.cdc_subscription WHERE publication_name = publication) THEN
        EXECUTE format('DROP PUBLICATION IF EXISTS %I', publication);
    END IF;
    LOOP
        SELECT active_pid INTO holder FROM pg_catalog.pg_replication_slots WHERE slot_name = slot;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        EXIT WHEN holder IS NULL;
        IF tries >= 100 THEN
            RAISE WARNING 'replication slot "%" is in use by process %; orochi-sidecar drops it later', slot, holder;
            RETURN false;
        END IF;
        PERFORM pg_terminate_backend(holder);
        PERFORM pg_sleep(0.05);
        tries := tries + 1;
    END LOOP;
    PERFORM pg_drop_replication_slot(slot);
    RETURN true;
EXCEPTION WHEN undefined_object THEN
    RETURN false;
END
$$;

-- A dropped table leaves the subscriptions that capture it (its
-- publication membership goes with it).  SECURITY DEFINER: whoever may drop
-- a table may stop its capture.
CREATE FUNCTION orochi.cdc_on_sql_drop()
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
    IF dropped IS NOT NULL AND to_regclass('orochi.cdc_subscription_table') IS NOT NULL THEN
        DELETE FROM orochi.cdc_subscription_table WHERE relid = ANY (dropped);
    END IF;
END
$$;

CREATE EVENT TRIGGER orochi_cdc_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.cdc_on_sql_drop();

-- The SQL surface (orochi_fdw/cdc/sqlapi.py).
CREATE FUNCTION orochi.create_cdc_subscription(name text, tables regclass[], sink text,
                                               format text DEFAULT 'debezium', options jsonb DEFAULT '{}')
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.drop_cdc_subscription(name text, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.start_cdc_subscription(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.stop_cdc_subscription(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- The key that signs the change messages of orochi tables, for the sidecar:
-- only sessions of a role that may read the WAL anyway (REPLICATION or
-- superuser) get it.
CREATE FUNCTION orochi.cdc_message_key()
RETURNS bytea
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Options as shown to everyone (secrets masked, as for pipelines).
CREATE FUNCTION orochi.cdc_masked_options(subscription integer) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT orochi.pipeline_masked_options(s.options) FROM orochi.cdc_subscription s
       WHERE s.subscription_id = subscription $$;

-- Every subscription the current role may see (its own; all of them for a
-- superuser).
CREATE FUNCTION orochi.list_cdc_subscriptions()
RETURNS TABLE (subscription_id integer, name text, owner regrole, sink text, format text, tables regclass[],
               status text, slot_name text, snapshot_done boolean, created_at timestamptz, options jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.subscription_id, s.name, s.owner, s.sink, s.format,
           (SELECT coalesce(array_agg(t.relid::regclass ORDER BY t.ordinal), '{}')
              FROM orochi.cdc_subscription_table t WHERE t.subscription_id = s.subscription_id),
           CASE WHEN s.state = 'running' AND NOT orochi.cdc_is_running(s.subscription_id)
                THEN 'starting' ELSE s.state END,
           s.slot_name, s.snapshot_done, s.created_at, orochi.cdc_masked_options(s.subscription_id)
      FROM orochi.cdc_subscription s
     ORDER BY s.subscription_id
$$;

-- Statistics of one subscription.  lag_bytes: WAL written since the last
-- transaction the sink acknowledged; lag_seconds: how long the oldest
-- change not delivered has waited (as last seen by the worker);
-- retained_wal_bytes: the WAL the slot keeps from being removed.
CREATE FUNCTION orochi.cdc_subscription_stats(name text)
RETURNS TABLE (name text, status text, events_sent bigint, snapshot_events bigint, transactions bigint,
               bytes_sent bigint, last_committed_lsn pg_lsn, last_commit_time timestamptz,
               lag_bytes numeric, lag_seconds double precision, retained_wal_bytes numeric,
               wal_status text, errors bigint, current_error text, last_error text, last_error_at timestamptz,
               worker text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.name,
           CASE WHEN s.state = 'running' AND NOT orochi.cdc_is_running(s.subscription_id)
                THEN 'starting' ELSE s.state END,
           coalesce(st.events_sent, 0), coalesce(st.snapshot_events, 0), coalesce(st.transactions, 0),
           coalesce(st.bytes_sent, 0), coalesce(s.confirmed_lsn, s.slot_lsn), st.last_commit_time,
           CASE WHEN r.slot_name IS NULL THEN NULL
                ELSE greatest(pg_wal_lsn_diff(pg_current_wal_lsn(),
                                              coalesce(s.confirmed_lsn, r.confirmed_flush_lsn)), 0) END,
           CASE WHEN st.pending_since IS NULL THEN 0
                ELSE greatest(extract(epoch FROM clock_timestamp() - st.pending_since), 0)::float8 END,
           CASE WHEN r.slot_name IS NULL THEN NULL
                ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), r.restart_lsn) END,
           r.wal_status,
           coalesce(st.errors, 0), st.current_error, st.last_error, st.last_error_at, st.worker
      FROM orochi.cdc_subscription s
      LEFT JOIN orochi.cdc_stats st ON st.subscription_id = s.subscription_id
      LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name
     WHERE s.name = cdc_subscription_stats.name
$$;

-- Events refused by the sinks of the subscriptions the current role owns.
CREATE VIEW orochi.cdc_errors WITH (security_invoker = true) AS
SELECT e.error_id, s.name AS subscription, e.event_id, e.table_name, e.op, e.status, e.response, e.event,
       e.error_time
  FROM orochi.cdc_error_log e
  JOIN orochi.cdc_subscription s ON s.subscription_id = e.subscription_id;

GRANT SELECT ON orochi.cdc_errors TO PUBLIC;
