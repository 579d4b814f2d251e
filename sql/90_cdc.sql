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
-- Privileges (docs/SECURITY.md), as for the rest of the catalog: the tables
-- belong to the extension owner and are granted to no one.  The SQL
-- functions (orochi_fdw/cdc/sqlapi.py) check the caller's rights first (a
-- subscription is managed by roles with the rights of its owner) and then
-- read and write them with internal statements; the writers of orochi
-- tables ask which tables are captured with an internal statement too.
-- orochi-sidecar, which streams the subscriptions, connects as a superuser.

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
    owner            regrole NOT NULL,  -- the role that created it (never the extension owner's default)
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

-- Internal: make the publication of a subscription hold exactly its heap
-- tables (orochi tables are foreign tables, which publications cannot hold:
-- their changes come as messages).  Called by create_cdc_subscription as
-- the extension owner (adding a table to a publication needs its
-- ownership, which the subscription's owner, who needs only SELECT, may
-- lack); what it publishes is what the catalog says, and each table is
-- checked against the owner's privileges here.
CREATE FUNCTION orochi.cdc_sync_publication(subscription integer) RETURNS void
LANGUAGE plpgsql
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

-- Internal: drop a subscription's publication and replication slot, once
-- its row is gone (in this transaction).  The slot's drop is not undone by
-- a rollback, as pg_drop_replication_slot's is not; a worker using the slot
-- is disconnected first.  Called as the extension owner by
-- drop_cdc_subscription and by orochi-sidecar (a superuser).
CREATE FUNCTION orochi.cdc_drop_replication(slot text, publication text) RETURNS boolean
LANGUAGE plpgsql
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

REVOKE EXECUTE ON FUNCTION orochi.cdc_sync_publication(integer), orochi.cdc_drop_replication(text, text)
    FROM PUBLIC;

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

-- Options as shown to everyone: values of keys that look like secrets
-- (passwords, webhook secrets, tokens, authorization headers, private keys)
-- masked, at any depth.
CREATE FUNCTION orochi.cdc_masked_options(options jsonb) RETURNS jsonb
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
        IF k ~* '(password|passwd|secret|token|credential|private|authorization|api[-_]?key|\.pem$|^ssl\.key)' THEN
            masked := masked || jsonb_build_object(k, '********');
        ELSE
            masked := masked || jsonb_build_object(k, orochi.cdc_masked_options(v));
        END IF;
    END LOOP;
    RETURN masked;
END
$$;

-- The subscriptions the caller has the rights of the owner of (superusers:
-- all), options masked.
CREATE FUNCTION orochi.list_cdc_subscriptions()
RETURNS TABLE (subscription_id integer, name text, owner regrole, sink text, format text, tables regclass[],
               status text, slot_name text, snapshot_done boolean, created_at timestamptz, options jsonb)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STABLE;

-- Statistics of one subscription (for roles with the rights of its owner).
-- lag_bytes: WAL written since the last transaction the sink acknowledged;
-- lag_seconds: how long the oldest change not delivered has waited (as last
-- seen by the worker); retained_wal_bytes: the WAL the slot keeps from
-- being removed.
CREATE FUNCTION orochi.cdc_subscription_stats(name text)
RETURNS TABLE (name text, status text, events_sent bigint, snapshot_events bigint, transactions bigint,
               bytes_sent bigint, last_committed_lsn pg_lsn, last_commit_time timestamptz,
               lag_bytes numeric, lag_seconds double precision, retained_wal_bytes numeric,
               wal_status text, errors bigint, current_error text, last_error text, last_error_at timestamptz,
               worker text)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STABLE;

-- Events refused by the sinks of the subscriptions the caller has the
-- rights of the owner of.  security_barrier: the privilege test comes
-- before any condition of the caller's query.
CREATE VIEW orochi.cdc_errors WITH (security_barrier) AS
SELECT e.error_id, s.name AS subscription, e.event_id, e.table_name, e.op, e.status, e.response, e.event,
       e.error_time
  FROM orochi.cdc_error_log e
  JOIN orochi.cdc_subscription s ON s.subscription_id = e.subscription_id
 WHERE pg_catalog.pg_has_role(s.owner::oid, 'USAGE');

GRANT SELECT ON orochi.cdc_errors TO PUBLIC;
