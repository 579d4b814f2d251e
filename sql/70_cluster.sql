-- Distributed tables (docs/distributed.md): the coordinator's metadata of
-- worker nodes, distributed and reference tables, their shards and
-- placements, co-location groups and the two-phase commit record; the SQL
-- API (Citus's names); the event triggers that carry DROP and ALTER of a
-- distributed table to its shards.
--
-- A distributed table is, on the coordinator, an orochi foreign table served
-- by orochi_fdw.cluster.DistributedTable: ordinary SQL on it goes through
-- the bridge, and the wrapper prunes, routes, fans out and merges.  Its rows
-- live in shards, tables "<table>_<shard id>" in the same schema on the
-- workers, each a PostgreSQL 15 with orochi.

-- Credentials for the connections to the workers: a user mapping on the
-- server orochi_cluster (options user, password, sslmode ...), else libpq's
-- usual files (~/.pgpass of the server's OS user).
CREATE FUNCTION orochi.cluster_options_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER orochi_cluster VALIDATOR orochi.cluster_options_validator;
CREATE SERVER orochi_cluster FOREIGN DATA WRAPPER orochi_cluster;

-- Worker nodes, as add_node registered them.
CREATE TABLE orochi.dist_node (
    node_id    serial PRIMARY KEY,
    host       text NOT NULL,
    port       integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    role       text NOT NULL DEFAULT 'worker' CHECK (role IN ('worker')),
    is_active  boolean NOT NULL DEFAULT true,
    added_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (host, port)
);

-- Tables of one co-location group have the same shard count and
-- distribution column type, and shard i of each lies on the same node: a
-- join on the distribution column runs shard by shard on the workers.
CREATE TABLE orochi.dist_colocation (
    colocation_id   serial PRIMARY KEY,
    shard_count     integer NOT NULL,
    dist_type       regtype NOT NULL,
    dist_collation  oid NOT NULL DEFAULT 0
);

-- One row per distributed ('h', hash) or reference ('r') table.  The
-- distribution column is kept by attnum (a RENAME COLUMN keeps it); its name
-- at the time of the last DDL is in columns.  columns is the coordinator
-- table's definition as the shards have it ([{attnum, name, type, collation,
-- not_null}]): the DDL trigger compares against it to find what an ALTER
-- changed.  Shards are named <shard_schema>.<shard_base>_<shard_id>.
CREATE TABLE orochi.dist_table (
    relid          oid PRIMARY KEY,
    method         "char" NOT NULL CHECK (method IN ('h', 'r')),
    dist_attnum    smallint,
    dist_type      regtype,
    colocation_id  integer REFERENCES orochi.dist_colocation,
    shard_storage  text NOT NULL CHECK (shard_storage IN ('columnar', 'heap')),
    shard_schema   name NOT NULL,
    shard_base     name NOT NULL,
    columns        jsonb NOT NULL,
    acl            text,                -- the table's privileges as its shards have them
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((method = 'h') = (dist_attnum IS NOT NULL))
);

-- Shard ids start where Citus's do.
CREATE SEQUENCE orochi.dist_shard_id_seq START 102008;

-- Rows of reference tables carry a hidden column orochi_rowid on the
-- workers, the same on every placement, by which UPDATE and DELETE find a
-- row on all of them.
CREATE SEQUENCE orochi.dist_reference_rowid_seq;

-- A hash shard holds the rows whose distribution value hashes (the type's
-- extended hash function with seed 0, low 32 bits) into [hash_min, hash_max];
-- a reference table has one shard with no range.
CREATE TABLE orochi.dist_shard (
    shard_id     bigint PRIMARY KEY DEFAULT nextval('orochi.dist_shard_id_seq'),
    relid        oid NOT NULL REFERENCES orochi.dist_table ON DELETE CASCADE,
    shard_index  integer NOT NULL,
    hash_min     integer,
    hash_max     integer,
    UNIQUE (relid, shard_index)
);
ALTER SEQUENCE orochi.dist_shard_id_seq OWNED BY orochi.dist_shard.shard_id;

-- Where each shard is: one node for a hash shard, every node for a
-- reference table's shard.
CREATE TABLE orochi.dist_placement (
    shard_id  bigint NOT NULL REFERENCES orochi.dist_shard ON DELETE CASCADE,
    node_id   integer NOT NULL REFERENCES orochi.dist_node,
    PRIMARY KEY (shard_id, node_id)
);
CREATE INDEX dist_placement_node_idx ON orochi.dist_placement (node_id);

-- The commit decision of a two-phase commit: written in the coordinator's
-- own transaction before the workers PREPARE, so it exists exactly when
-- that transaction committed.  recover_prepared_transactions() commits the
-- prepared transactions that have a row and rolls back the others.
CREATE TABLE orochi.dist_transaction (
    node_id  integer NOT NULL,
    gid      text NOT NULL,
    PRIMARY KEY (node_id, gid)
);

-- This database's identity as a coordinator, in the names of its prepared
-- transactions (orochi_<coordinator id>_<xid>_<node id>), so that recovery
-- touches only its own.
CREATE TABLE orochi.dist_coordinator (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    coordinator_id  integer NOT NULL,
    recovered_for   timestamptz          -- postmaster start of the last start-up recovery
);
INSERT INTO orochi.dist_coordinator (coordinator_id)
VALUES ((random() * 2147483646)::integer + 1);

-- The catalog belongs to the extension owner and is granted to no one
-- (docs/SECURITY.md): Orochi reads and writes it as that owner, after
-- checking the caller's rights; users see it through the views below.


-- ------------------------------------------------------------------ views

CREATE VIEW orochi.nodes WITH (security_barrier) AS
SELECT node_id, host, port, role, is_active
  FROM orochi.dist_node;

-- The distributed tables the caller may read (SELECT on them), as
-- orochi.stripes shows columnar tables.
CREATE VIEW orochi.distributed_tables WITH (security_barrier) AS
SELECT t.relid::regclass AS table_name,
       CASE t.method WHEN 'h' THEN 'hash' ELSE 'reference' END AS distribution_type,
       (SELECT a.attname FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = t.relid AND a.attnum = t.dist_attnum) AS distribution_column,
       (SELECT count(*) FROM orochi.dist_shard s WHERE s.relid = t.relid)::integer AS shard_count,
       t.colocation_id,
       t.shard_storage
  FROM orochi.dist_table t
 WHERE pg_catalog.has_table_privilege(t.relid, 'SELECT');

-- Per shard and placement: live figures read from the workers.
CREATE FUNCTION orochi.shard_status(table_name regclass,
    OUT shard_id bigint, OUT shard_index integer, OUT hash_min integer, OUT hash_max integer,
    OUT node_id integer, OUT host text, OUT port integer, OUT shard_name text,
    OUT rows bigint, OUT bytes bigint, OUT status text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.shard_placements(
    OUT shard_id bigint, OUT table_name regclass, OUT shard_index integer,
    OUT hash_min integer, OUT hash_max integer, OUT node_id integer, OUT host text,
    OUT port integer, OUT shard_name text, OUT rows bigint, OUT bytes bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The shards of the distributed tables the caller may read.
CREATE VIEW orochi.shards WITH (security_barrier) AS
SELECT * FROM orochi.shard_placements();

GRANT SELECT ON orochi.nodes, orochi.distributed_tables, orochi.shards TO PUBLIC;

-- ---------------------------------------------------------------- the API

-- Register a worker: it must answer, have the orochi extension in a
-- database of the coordinator's name, and accept prepared transactions.
CREATE FUNCTION orochi.add_node(host text, port integer)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Forget a worker that holds no shard.
CREATE FUNCTION orochi.remove_node(host text, port integer)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Spread a table over the workers in shard_count hash shards; its rows move
-- to the shards in the same transaction.
CREATE FUNCTION orochi.create_distributed_table(table_name regclass, distribution_column text,
                                                shard_count integer DEFAULT 32,
                                                colocate_with text DEFAULT 'default',
                                                shard_storage text DEFAULT 'columnar')
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- A copy of the table on every worker.
CREATE FUNCTION orochi.create_reference_table(table_name regclass,
                                              shard_storage text DEFAULT 'columnar')
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Bring a distributed or reference table's rows back into one local heap
-- table of the same name; its shards are dropped.
CREATE FUNCTION orochi.undistribute_table(table_name regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Commit or roll back the prepared transactions this coordinator left on
-- its workers, from orochi.dist_transaction; returns how many it resolved.
CREATE FUNCTION orochi.recover_prepared_transactions()
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- ---------------------------------------------------- DDL on the coordinator

CREATE FUNCTION orochi.cluster_drop_tables(oid[])
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.cluster_alter_tables(oid[])
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.cluster_on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
AS $$
DECLARE
    dropped oid[];
BEGIN
    SELECT array_agg(objid) INTO dropped
      FROM pg_event_trigger_dropped_objects()
     WHERE classid = 'pg_catalog.pg_class'::regclass
       AND objsubid = 0
       AND object_type = 'foreign table';
    -- the catalog is read by the function, as the extension owner
    IF dropped IS NOT NULL THEN
        PERFORM orochi.cluster_drop_tables(dropped);
    END IF;
END;
$$;

CREATE EVENT TRIGGER orochi_cluster_sql_drop ON sql_drop
    EXECUTE FUNCTION orochi.cluster_on_sql_drop();

CREATE FUNCTION orochi.cluster_on_ddl_end()
RETURNS event_trigger
LANGUAGE plpgsql
AS $$
DECLARE
    tables oid[];
BEGIN
    SELECT array_agg(DISTINCT c.objid) INTO tables
      FROM pg_event_trigger_ddl_commands() c
      JOIN pg_catalog.pg_foreign_table f ON f.ftrelid = c.objid
     WHERE c.classid = 'pg_catalog.pg_class'::regclass;
    IF tables IS NOT NULL THEN
        PERFORM orochi.cluster_alter_tables(tables);
    END IF;
END;
$$;

CREATE EVENT TRIGGER orochi_cluster_ddl_end ON ddl_command_end
    WHEN TAG IN ('ALTER FOREIGN TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION orochi.cluster_on_ddl_end();

-- GRANT and REVOKE on a distributed table: its shards get the same
-- privileges (the coordinator connects to the workers as the current user).
CREATE FUNCTION orochi.cluster_sync_privileges()
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.cluster_on_grant()
RETURNS event_trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM orochi.cluster_sync_privileges();  -- it reads the catalog as the extension owner
END;
$$;

CREATE EVENT TRIGGER orochi_cluster_grant ON ddl_command_end
    WHEN TAG IN ('GRANT', 'REVOKE')
    EXECUTE FUNCTION orochi.cluster_on_grant();
