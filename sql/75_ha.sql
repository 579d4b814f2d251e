-- High availability (docs/ha.md): what the local orochi-sidecar's ha duty
-- knows of the Raft group and the node groups, and the standbys of this
-- server.  The raft_* functions and cluster_health ask the sidecar's REST
-- API (loopback), whose address it writes into the data directory; they are
-- for superusers and members of pg_monitor.

-- This member's Raft node: member id, leader / follower / candidate, term,
-- commit index, last applied entry, the leader, and each peer's match index.
CREATE FUNCTION orochi.raft_status()
RETURNS TABLE (member_id text, state text, term bigint, commit_index bigint, last_applied bigint,
               leader text, has_quorum boolean, peers jsonb)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The member id of the Raft leader (NULL during an election).
CREATE FUNCTION orochi.raft_leader()
RETURNS text
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The replicated state: each member, its node group, whether it is the
-- group's primary, the group's generation and its last failover.
CREATE FUNCTION orochi.raft_cluster_info()
RETURNS TABLE (node_group text, member_id text, role text, host text, port integer, generation bigint,
               raft_address text, last_failover_at timestamptz)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- Per member: role, whether its PostgreSQL answers, whether it is fenced,
-- replay lag behind its primary, its sidecar, generation, last failover.
CREATE FUNCTION orochi.cluster_health()
RETURNS TABLE (node_group text, member_id text, role text, host text, port integer, reachable boolean,
               fenced boolean, lag_bytes bigint, sidecar text, generation bigint, last_failover_at timestamptz)
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

-- The standbys streaming from this server (pg_stat_replication, with the
-- caller's rights: without pg_read_all_stats the positions are NULL).
CREATE FUNCTION orochi.replication_status()
RETURNS TABLE (standby text, client_addr inet, state text, sent_lsn pg_lsn, write_lsn pg_lsn,
               flush_lsn pg_lsn, replay_lsn pg_lsn, lag_bytes numeric, lag_seconds double precision,
               sync_state text)
LANGUAGE sql STABLE
AS $$
SELECT r.application_name::text, r.client_addr, r.state, r.sent_lsn, r.write_lsn, r.flush_lsn, r.replay_lsn,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.replay_lsn),
       extract(epoch FROM r.replay_lag)::double precision, r.sync_state
  FROM pg_catalog.pg_stat_replication r
 ORDER BY 1
$$;

REVOKE ALL ON FUNCTION orochi.raft_status(), orochi.raft_leader(), orochi.raft_cluster_info(),
    orochi.cluster_health(), orochi.replication_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION orochi.raft_status(), orochi.raft_leader(), orochi.raft_cluster_info(),
    orochi.cluster_health(), orochi.replication_status() TO pg_monitor;

-- Counters of the distributed executor on this server, since it started
-- (shared memory; orochi must be in shared_preload_libraries): executions
-- (each time a statement's tasks are sent to the workers: a scan, a join, a
-- flush of modified rows, a COPY batch, DDL), the shards their tasks covered,
-- and the executions that failed (a worker's error, an unreachable worker, a
-- cancellation).  The orochi-sidecar exports them on /metrics.
CREATE FUNCTION orochi.executor_counters(OUT distributed_queries bigint, OUT shards_accessed bigint,
                                         OUT executor_failures bigint, OUT since timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_executor_counters'
LANGUAGE C VOLATILE STRICT;

REVOKE ALL ON FUNCTION orochi.executor_counters() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION orochi.executor_counters() TO pg_monitor;
