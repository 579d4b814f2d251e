-- The shard rebalancer (docs/rebalancer.md): moves of a hash shard (with
-- the shards co-located with it) from one worker to another while the table
-- is written, jobs of moves (move_shard, rebalance_table_shards,
-- drain_node), their progress, and what a move needs on a worker (the
-- change log filled by a trigger on the shard being copied, and the fence
-- left on a source shard once its rows live elsewhere).
--
-- The SQL functions only check and plan and queue the moves; the moves are
-- run by orochi-sidecar's "rebalance" duty (or `python -m
-- orochi_fdw.cluster.mover`), which also finishes or rolls back a move whose
-- runner died (orochi_fdw/cluster/mover.py).

-- ------------------------------------------------------------ coordinator

-- One row per move of one shard group (the shards of one shard index in a
-- co-location group) from source_node to target_node.  A job is the moves
-- one call queued, run in position order.  switched is set in the same
-- transaction that points the placements at the target: it is the move's
-- commit decision (recovery finishes a switched move and rolls back any
-- other).
CREATE SEQUENCE orochi.dist_rebalance_job_seq;

CREATE TABLE orochi.dist_move (
    move_id         bigserial PRIMARY KEY,
    job_id          bigint NOT NULL,
    job_kind        text NOT NULL CHECK (job_kind IN ('move', 'rebalance', 'drain')),
    position        integer NOT NULL,
    colocation_id   integer,
    shard_ids       bigint[] NOT NULL,
    source_node     integer NOT NULL,
    target_node     integer NOT NULL,
    phase           text NOT NULL DEFAULT 'queued'
                    CHECK (phase IN ('queued', 'setup', 'copy', 'catchup', 'switch', 'cleanup',
                                     'done', 'failed', 'stopped')),
    switched        boolean NOT NULL DEFAULT false,
    stop_requested  boolean NOT NULL DEFAULT false,
    bytes_total     bigint,
    bytes_copied    bigint NOT NULL DEFAULT 0,
    rows_copied     bigint NOT NULL DEFAULT 0,
    changes_applied bigint NOT NULL DEFAULT 0,
    switch_ms       double precision,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    switched_at     timestamptz,
    finished_at     timestamptz,
    UNIQUE (job_id, position)
);
CREATE INDEX dist_move_open_idx ON orochi.dist_move (move_id)
    WHERE phase NOT IN ('done', 'failed', 'stopped');

-- The moves, as the caller may see them (cluster administration is for
-- superusers; the progress carries no row data).
CREATE VIEW orochi.rebalance_progress WITH (security_barrier) AS
SELECT m.job_id, m.move_id, m.job_kind, m.position, m.shard_ids[1] AS shard_id, m.shard_ids,
       m.source_node, m.target_node, m.phase, m.bytes_copied, m.bytes_total, m.rows_copied,
       m.changes_applied, m.switch_ms, m.error, m.created_at, m.started_at, m.switched_at, m.finished_at
  FROM orochi.dist_move m;

GRANT SELECT ON orochi.rebalance_progress TO PUBLIC;

-- Move shard_id (and the shards co-located with it) to target_node; returns
-- the job id.
CREATE FUNCTION orochi.move_shard(shard_id bigint, target_node integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- The moves that would even out the shards (of one table's co-location
-- group, or of every group), nothing done.
CREATE FUNCTION orochi.get_rebalance_plan(table_name regclass DEFAULT NULL,
                                          strategy text DEFAULT 'by_shard_count',
                                          max_shard_moves integer DEFAULT NULL,
                                          drain_node integer DEFAULT NULL,
    OUT table_name regclass, OUT shard_id bigint, OUT shard_ids bigint[], OUT shard_size bigint,
    OUT source_node integer, OUT target_node integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Queue the moves of get_rebalance_plan; returns the job id (NULL when
-- nothing needs to move).
CREATE FUNCTION orochi.rebalance_table_shards(table_name regclass DEFAULT NULL,
                                              strategy text DEFAULT 'by_shard_count',
                                              max_shard_moves integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Queue the moves of every shard off node_id, to the other active nodes.
CREATE FUNCTION orochi.drain_node(node_id integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Stop the queued and running moves (of one job, or all): a running move
-- that has not switched is rolled back by its runner.  Returns how many.
CREATE FUNCTION orochi.rebalance_stop(job_id bigint DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- ------------------------------------------------------------ workers

-- The changes written to a shard while a move copies it: one row per row
-- inserted, updated or deleted, the rows in their text form.  Filled by
-- the trigger orochi_move_capture in the writer's transaction; read and
-- emptied by the move.
CREATE TABLE orochi.dist_move_log (
    move_id   bigint NOT NULL,
    seq       bigserial,
    shard_id  bigint NOT NULL,
    op        "char" NOT NULL,
    old_row   text,
    new_row   text,
    PRIMARY KEY (move_id, seq)
);

-- The writer need not be allowed to write the log: the function runs as
-- the extension owner.  A trigger function cannot be called directly.
CREATE FUNCTION orochi.dist_move_capture()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the rows' text forms must not depend on the writer's settings: the move
-- reads them back with the same ones
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 3 SET bytea_output = 'hex'
AS $$
BEGIN
    INSERT INTO orochi.dist_move_log (move_id, shard_id, op, old_row, new_row)
    VALUES (TG_ARGV[0]::bigint, TG_ARGV[1]::bigint, substr(TG_OP, 1, 1),
            CASE WHEN TG_OP <> 'INSERT' THEN OLD::text END,
            CASE WHEN TG_OP <> 'DELETE' THEN NEW::text END);
    RETURN NULL;
END;
$$;

-- A source shard after its switch: a writer that still has the old
-- placement (a REPEATABLE READ transaction whose snapshot predates the
-- switch) gets a serialization failure and retries.
CREATE FUNCTION orochi.dist_move_fence()
RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'shard % was moved to another node', TG_ARGV[0]
        USING ERRCODE = '40001',
              HINT = 'Retry the transaction: it will use the shard''s new placement.';
END;
$$;
