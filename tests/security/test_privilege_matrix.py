"""The privilege matrix: (owner, granted, ungranted, superuser) x (every
orochi.* function, every DML and DDL on columnar tables and hypertables,
every catalog table; vector indexes, missing values, pipelines and CDC
subscriptions too).  Each cell either succeeds or fails with SQLSTATE
42501 (insufficient_privilege), as the table ``OPS`` says.

The actors are described in conftest.py: ``owner`` made the objects,
``granted`` holds SELECT, INSERT, UPDATE, DELETE and TRUNCATE on them (and
EXECUTE on the job procedure, SELECT on the continuous aggregate's view),
``ungranted`` holds nothing, ``superuser`` is the extension's owner.  A
pipeline's target is a heap table the owner grants INSERT on to
``granted``, so that creating one is allowed to it, and managing the
owner's is not.

Objects an operation changes are made afresh for its cell; the others are
shared by the cells of one setup kind (an actor refused wrongly changing a
shared object fails its own cell anyway).  ``test_every_function_is_in_the_matrix``
keeps the table complete: a new orochi.* function without a row fails it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

import psycopg
import pytest
from psycopg import sql

from security_helpers import ACTORS

#: a refusal that names Orochi's internals: the catalog reached with the caller's rights
_INTERNAL = re.compile(r"(table|sequence|function) (orochi\.)?(columnar_|hypertable|jobs|bgw_job_stat|continuous_agg"
                       r"|_chunk_compression_status|_direct_view|_materialized|vector_index_id_seq"
                       r"|pipeline\b|pipeline_(positions|stats|error_log|id_seq)|_pipeline"
                       r"|resource_pools|workload_(classes|role_classes)"
                       r"|cdc_(subscription\b|subscription_table|subscription_id_seq|stats|error_log|sync_publication"
                       r"|drop_replication))")

OWNER = frozenset({"owner", "superuser"})
READERS = frozenset({"owner", "granted", "superuser"})
ALL = frozenset(ACTORS)
SUPER = frozenset({"superuser"})

_CAGG_QUERY = "SELECT orochi.time_bucket('1 day', ts) AS day, count(*) AS n, sum(v) AS total FROM {h} GROUP BY 1"


@dataclass(frozen=True)
class Op:
    """One row of the matrix.

    Attributes:
        name: the row's name (pytest id).
        setup: the objects it needs (see ``_SETUPS``).
        action: SQL with placeholders ({t}, {t_lit}, {h}, {h_lit}, {chunk_lit},
            {job}, {proc_lit}, {cagg}, {cagg_lit}, {new}, {new_lit}, {delta},
            {query_lit}), or a callable (conn, names).
        allowed: the actors for whom it succeeds; the others get 42501.
        mutates: it changes its objects (the cell gets its own).
    """

    name: str
    setup: str
    action: str | Callable
    allowed: frozenset
    mutates: bool = False

    @property
    def internals(self) -> bool:
        """Whether it touches Orochi's internals directly (a refusal may name them)."""
        return self.name.startswith(("read_", "write_", "stripe_id_sequence", "columnar_", "continuous_aggregates_d",
                                     "chunk_compression_status", "vector_index_file_deleted", "internal_"))


def _copy_in(conn: psycopg.Connection, names: dict) -> None:
    with conn.cursor().copy(f"COPY {names['t']} (id, note) FROM STDIN") as copy:
        copy.write_row((7, "copied"))
        copy.write_row((8, "copied"))


def _copy_out(conn: psycopg.Connection, names: dict) -> None:
    with conn.cursor().copy(f"COPY (SELECT * FROM {names['t']}) TO STDOUT") as copy:
        for _ in copy:
            pass


def _copy_table_to(columns: str = ""):
    """COPY t [(columns)] TO STDOUT (Postgres refuses it for a foreign table;
    the bridge rewrites it, after COPY's own privilege check)."""
    def action(conn: psycopg.Connection, names: dict) -> None:
        with conn.cursor().copy(f"COPY {names['t']} {columns} TO STDOUT") as copy:
            for _ in copy:
                pass
    return action


def _vector_binary_io(conn: psycopg.Connection, names: dict) -> None:
    """orochi.vector's binary output and input (vector_send, vector_recv):
    COPY out and back in, binary."""
    with conn.cursor().copy(f"COPY (SELECT id, e FROM {names['t']} WHERE id <= 3) TO STDOUT (FORMAT binary)") as copy:
        data = b"".join(bytes(block) for block in copy)
    with conn.cursor().copy(f"COPY {names['t']} (id, e) FROM STDIN (FORMAT binary)") as copy:
        copy.write(data)


OPS = [
    # ---------------------------------------------------------------- columnar tables: DML
    Op("select", "table", "SELECT * FROM {t}", READERS),
    Op("select_aggregate", "table", "SELECT count(*), sum(v), max(note) FROM {t}", READERS),
    Op("select_delta_row", "table", "SELECT note FROM {t} WHERE id = 100", READERS),
    Op("copy_to", "table", _copy_out, READERS),
    Op("copy_table_to", "table", _copy_table_to(), READERS),
    Op("copy_table_columns_to", "table", _copy_table_to("(id, note)"), READERS),
    Op("insert_delta", "table", "INSERT INTO {t} VALUES (1000, 1, now(), 'x')", READERS, mutates=True),
    Op("insert_stripes", "table", "INSERT INTO {t} SELECT g, g, now(), 'y' FROM generate_series(1, 50) g",
       READERS, mutates=True),
    Op("insert_returning", "table", "INSERT INTO {t} VALUES (1001, 1, now(), 'r') RETURNING id, note",
       READERS, mutates=True),
    Op("copy_from", "table", _copy_in, READERS, mutates=True),
    Op("update_stripe_row", "table", "UPDATE {t} SET v = v + 1 WHERE id = 3", READERS, mutates=True),
    Op("update_delta_row", "table", "UPDATE {t} SET note = 'u' WHERE id = 100", READERS, mutates=True),
    Op("update_returning", "table", "UPDATE {t} SET v = 0 WHERE id = 5 RETURNING *", READERS, mutates=True),
    Op("delete", "table", "DELETE FROM {t} WHERE id = 4", READERS, mutates=True),
    Op("delete_delta_row", "table", "DELETE FROM {t} WHERE id = 100", READERS, mutates=True),
    Op("truncate", "table", "TRUNCATE {t}", READERS, mutates=True),
    # ---------------------------------------------------------------- columnar tables: DDL
    Op("create_table", "none", "CREATE FOREIGN TABLE {new} (id int, v float8) SERVER orochi", ALL, mutates=True),
    Op("create_table_with_options", "none",
       "CREATE FOREIGN TABLE {new} (id int) SERVER orochi OPTIONS (wrapper 'columnar', compression 'zstd')",
       ALL, mutates=True),
    Op("create_table_test_wrapper", "none",
       "CREATE FOREIGN TABLE {new} (id int) SERVER orochi OPTIONS (wrapper 'SeriesWrapper')", SUPER, mutates=True),
    Op("create_table_file_writing_wrapper", "none",
       "CREATE FOREIGN TABLE {new} (id int) SERVER orochi "
       "OPTIONS (wrapper 'orochi_fdw.testing.wrappers.HooksWrapper', log '/tmp/orochi-hooks-written-by-a-user')",
       SUPER, mutates=True),
    Op("create_server", "none", "CREATE SERVER {new} FOREIGN DATA WRAPPER orochi", SUPER, mutates=True),
    Op("alter_add_column", "table", "ALTER FOREIGN TABLE {t} ADD COLUMN extra int", OWNER, mutates=True),
    Op("alter_table_add_column", "table", "ALTER TABLE {t} ADD COLUMN extra2 int", OWNER, mutates=True),
    Op("alter_options", "table", "ALTER FOREIGN TABLE {t} OPTIONS (ADD compression 'zstd')", OWNER, mutates=True),
    Op("alter_add_column_default", "table", "ALTER TABLE {t} ADD COLUMN extra3 text DEFAULT 'kept'", OWNER,
       mutates=True),
    Op("alter_column_type", "table", "ALTER FOREIGN TABLE {t} ALTER COLUMN note TYPE varchar(20)", OWNER,
       mutates=True),
    Op("select_missing_value", "missing", "SELECT id, added FROM {t} WHERE added = 'kept'", READERS),
    Op("alter_wrapper_option", "table",
       "ALTER FOREIGN TABLE {t} OPTIONS (DROP delta_row_limit, ADD wrapper 'SeriesWrapper')", SUPER, mutates=True),
    Op("drop_table", "table", "DROP FOREIGN TABLE {t}", OWNER, mutates=True),
    Op("analyze", "table", "ANALYZE {t}", ALL),  # Postgres skips it with a WARNING for non-owners
    # ---------------------------------------------------------------- columnar tables: orochi.*
    Op("compact", "table", "SELECT * FROM orochi.compact({t_lit})", OWNER, mutates=True),
    Op("vacuum_table", "table", "SELECT * FROM orochi.vacuum({t_lit}, 0)", OWNER, mutates=True),
    Op("vacuum_orphans", "none", "SELECT * FROM orochi.vacuum()", SUPER),
    Op("table_size", "table", "SELECT orochi.table_size({t_lit})", ALL),
    Op("delta_size", "table", "SELECT * FROM orochi.delta_size({t_lit})", READERS),
    Op("stripes_view", "table", "SELECT * FROM orochi.stripes", ALL),
    Op("vacuum_progress_view", "none", "SELECT * FROM orochi.vacuum_progress", ALL),
    Op("maintenance_progress", "none", "SELECT * FROM orochi.maintenance_progress()", ALL),
    Op("sample_rows", "table", "SELECT * FROM orochi.sample(NULL::{t}, 0.5, 1)", READERS),
    Op("sample_by_name", "table",
       "SELECT * FROM orochi.sample({t_lit}::regclass, 0.5, 1) AS s(id int, v float8, ts timestamptz, note text)", READERS),
    Op("sample_query", "table", "SELECT orochi.sample_query({t_lit}, 0.5, 1), orochi.sample_cancel({t_lit}::regclass)",
       ALL),
    Op("sample_request", "table",
       "SELECT orochi.sample_request({t_lit}::regclass, 0.5, 1), orochi.sample_cancel({t_lit}::regclass)", ALL),
    Op("sampled_aggregates", "table",
       "SELECT orochi.sampled_sum(v, 0.5), orochi.sampled_count(v, 0.5, 0.9), orochi.sampled_avg(v, 0.5)"
       " FROM orochi.sample(NULL::{t}, 0.5, 1)", READERS),
    # ---------------------------------------------------------------- hypertables
    Op("create_hypertable", "empty_table", "SELECT * FROM orochi.create_hypertable({t_lit}, 'ts')", OWNER,
       mutates=True),
    Op("create_hypertable_migrate", "table",
       "SELECT * FROM orochi.create_hypertable({t_lit}, 'ts', migrate_data => true)", OWNER, mutates=True),
    Op("ht_select", "hypertable", "SELECT count(*), min(ts) FROM {h} WHERE ts >= '2024-01-02'", READERS),
    Op("ht_insert", "hypertable", "INSERT INTO {h} VALUES (1, 1, '2024-01-05', 'x')", READERS, mutates=True),
    Op("ht_update", "hypertable", "UPDATE {h} SET v = 0 WHERE id = 1", READERS, mutates=True),
    Op("ht_delete", "hypertable", "DELETE FROM {h} WHERE id = 2", READERS, mutates=True),
    Op("ht_truncate", "hypertable", "TRUNCATE {h}", READERS, mutates=True),
    Op("ht_drop", "hypertable", "DROP FOREIGN TABLE {h}", OWNER, mutates=True),
    Op("show_chunks", "hypertable", "SELECT orochi.show_chunks({h_lit})", READERS),
    Op("drop_chunks", "hypertable", "SELECT orochi.drop_chunks({h_lit}, older_than => '2024-01-02'::timestamptz)",
       OWNER, mutates=True),
    Op("compress_chunk", "hypertable", "SELECT orochi.compress_chunk({chunk_lit})", OWNER, mutates=True),
    Op("decompress_chunk", "compressed", "SELECT orochi.decompress_chunk({chunk_lit})", OWNER, mutates=True),
    Op("chunk_compression_stats", "compressed", "SELECT * FROM orochi.chunk_compression_stats({h_lit})", READERS),
    Op("hypertable_compression_stats", "compressed",
       "SELECT * FROM orochi.hypertable_compression_stats({h_lit})", READERS),
    Op("chunks_view", "compressed", "SELECT * FROM orochi.chunks", ALL),
    Op("hypertable_chunk_stats", "hypertable", "SELECT * FROM orochi.hypertable_chunk_stats()", ALL),
    Op("time_key_to_timestamptz", "none", "SELECT orochi._time_key_to_timestamptz(0)", ALL),
    Op("add_retention_policy", "hypertable", "SELECT orochi.add_retention_policy({h_lit}, interval '30 days')",
       OWNER, mutates=True),
    Op("remove_retention_policy", "retention", "SELECT orochi.remove_retention_policy({h_lit})", OWNER,
       mutates=True),
    Op("add_compression_policy", "hypertable",
       "SELECT orochi.add_compression_policy({h_lit}, interval '30 days')", OWNER, mutates=True),
    Op("remove_compression_policy", "compression", "SELECT orochi.remove_compression_policy({h_lit})", OWNER,
       mutates=True),
    # ---------------------------------------------------------------- jobs
    Op("add_job", "job", "SELECT orochi.add_job({proc_lit}, interval '1 hour')", READERS, mutates=True),
    Op("alter_job", "job", "SELECT * FROM orochi.alter_job({job}, scheduled => false)", OWNER, mutates=True),
    Op("delete_job", "job", "SELECT orochi.delete_job({job})", OWNER, mutates=True),
    Op("run_job", "job", "CALL orochi.run_job({job})", OWNER, mutates=True),
    Op("run_job_now", "job", "SELECT orochi.run_job_now({job})", OWNER, mutates=True),
    Op("run_job_background", "job", "SELECT * FROM orochi.run_job_background({job})", OWNER, mutates=True),
    Op("record_job_failure", "job", "SELECT orochi.record_job_failure({job}, 'failed elsewhere')", OWNER,
       mutates=True),
    Op("run_retention_policy", "retention", "CALL orochi.run_job({job})", OWNER, mutates=True),
    Op("run_compression_policy", "compression", "SELECT * FROM orochi.run_job_background({job})", OWNER,
       mutates=True),
    Op("job_stats_view", "job", "SELECT * FROM orochi.job_stats", ALL),
    Op("job_is_running", "job", "SELECT orochi.job_is_running({job})", ALL),
    Op("job_lock_keys", "job", "SELECT orochi.job_lock_key({job}), orochi.job_table_lock_key(0)", ALL),
    # ---------------------------------------------------------------- continuous aggregates
    Op("create_continuous_aggregate", "hypertable",
       "SELECT orochi.create_continuous_aggregate({new_lit}, {query_lit})", READERS, mutates=True),
    Op("select_continuous_aggregate", "cagg", "SELECT * FROM {cagg}", READERS),
    Op("refresh_continuous_aggregate", "cagg",
       "SELECT orochi.refresh_continuous_aggregate({cagg_lit}, NULL::timestamptz, NULL::timestamptz)", OWNER,
       mutates=True),
    Op("alter_continuous_aggregate", "cagg", "SELECT orochi.alter_continuous_aggregate({cagg_lit}, true)", OWNER,
       mutates=True),
    Op("add_continuous_aggregate_policy", "cagg",
       "SELECT orochi.add_continuous_aggregate_policy({cagg_lit}, interval '30 days', interval '1 day',"
       " interval '1 hour')", OWNER, mutates=True),
    Op("remove_continuous_aggregate_policy", "cagg_policy",
       "SELECT orochi.remove_continuous_aggregate_policy({cagg_lit})", OWNER, mutates=True),
    Op("run_continuous_aggregate_policy", "cagg_policy", "CALL orochi.run_job({job})", OWNER, mutates=True),
    Op("drop_continuous_aggregate", "cagg", "SELECT orochi.drop_continuous_aggregate({cagg_lit})", OWNER,
       mutates=True),
    Op("continuous_aggregates_view", "cagg", "SELECT * FROM orochi.continuous_aggregates", ALL),
    Op("cagg_watermarks", "cagg",
       "SELECT orochi._cagg_watermark({cagg_lit}::regclass::oid),"
       " orochi._cagg_watermark_timestamptz({cagg_lit}::regclass::oid),"
       " orochi._cagg_watermark_timestamp({cagg_lit}::regclass::oid),"
       " orochi._cagg_watermark_date({cagg_lit}::regclass::oid),"
       " orochi._cagg_watermark_integer({cagg_lit}::regclass::oid)", ALL),
    # ---------------------------------------------------------------- vector search
    Op("vector_functions", "none",
       "SELECT orochi.l2_distance(a, b), orochi.inner_product(a, b), orochi.vector_negative_inner_product(a, b),"
       " orochi.cosine_distance(a, b), orochi.vector_dims(a), orochi.vector_norm(a), orochi.l2_normalize(a),"
       " a OPERATOR(orochi.<->) b, a OPERATOR(orochi.<#>) b, a OPERATOR(orochi.<=>) b,"
       " orochi.vector(a, orochi.vector_typmod_in('{{3}}'::cstring[]), true),"
       " orochi.vector_to_float4(a, -1, false), orochi.array_to_vector(ARRAY[1, 2]::real[], -1, false),"
       " orochi.array_to_vector(ARRAY[1, 2]::float8[], -1, false), orochi.array_to_vector(ARRAY[1, 2], -1, false),"
       " orochi.vector_out(orochi.vector_in('[4,5]', 0, -1)), orochi.vector_send(b)"
       " FROM (SELECT '[1,2,3]'::orochi.vector AS a, ARRAY[3, 2, 1]::real[]::orochi.vector(3) AS b) v", ALL),
    Op("vector_binary_io", "vector_table", _vector_binary_io, READERS, mutates=True),
    Op("create_vector_index", "vector_table", "SELECT orochi.create_vector_index({t_lit}, 'e')", OWNER,
       mutates=True),
    Op("drop_vector_index", "vector_index", "SELECT orochi.drop_vector_index({t_lit}, 'e')", OWNER, mutates=True),
    Op("vector_index_merge", "vector_index", "SELECT orochi.vector_index_merge({t_lit})", OWNER, mutates=True),
    Op("knn_select", "vector_index", "SELECT id FROM {t} ORDER BY e OPERATOR(orochi.<->) '[1,1,1]' LIMIT 3",
       READERS),
    Op("vector_insert_indexed", "vector_index",
       "INSERT INTO {t} SELECT g, ARRAY[g % 89, g % 97, g % 101]::real[] FROM generate_series(1, 2100) g",
       READERS, mutates=True),
    Op("vector_vacuum_indexed", "vector_index", "SELECT * FROM orochi.vacuum({t_lit}, 0)", OWNER, mutates=True),
    Op("vector_drop_indexed_table", "vector_index", "DROP FOREIGN TABLE {t}", OWNER, mutates=True),
    Op("vector_indexes_view", "vector_index", "SELECT * FROM orochi.vector_indexes", ALL),
    Op("vector_index_file_deleted", "none", "SELECT orochi.vector_index_file_deleted('/nowhere/1.2.3.vindex')",
       SUPER),
    Op("read_columnar_vector_indexes", "none", "SELECT * FROM orochi.columnar_vector_indexes", SUPER),
    Op("read_columnar_vector_index_files", "none", "SELECT * FROM orochi.columnar_vector_index_files", SUPER),
    Op("write_columnar_vector_index_files", "none", "DELETE FROM orochi.columnar_vector_index_files WHERE false",
       SUPER),
    Op("read_vector_index_id_sequence", "none", "SELECT nextval('orochi.vector_index_id_seq')", SUPER),
    # ---------------------------------------------------------------- distributed tables (no worker here:
    # what needs workers is in tests/distributed/test_dist_privileges.py)
    Op("recover_prepared_transactions", "none", "SELECT orochi.recover_prepared_transactions()", SUPER),
    # ---------------------------------------------------------------- high availability (granted to pg_monitor)
    Op("replication_status", "none", "SELECT * FROM orochi.replication_status()", SUPER),
    Op("executor_counters", "none", "SELECT * FROM orochi.executor_counters()", SUPER),
    Op("nodes_view", "none", "SELECT * FROM orochi.nodes", ALL),
    Op("distributed_tables_view", "none", "SELECT * FROM orochi.distributed_tables", ALL),
    Op("shards_view", "none", "SELECT * FROM orochi.shards", ALL),
    Op("cluster_drop_tables", "table", "SELECT orochi.cluster_drop_tables(ARRAY[{t_lit}::regclass::oid])", ALL),
    Op("cluster_alter_tables", "table", "SELECT orochi.cluster_alter_tables(ARRAY[{t_lit}::regclass::oid])", ALL),
    Op("cluster_sync_privileges", "none", "SELECT orochi.cluster_sync_privileges()", ALL),
    Op("read_dist_node", "none", "SELECT * FROM orochi.dist_node", SUPER),
    Op("read_dist_table", "none", "SELECT * FROM orochi.dist_table", SUPER),
    Op("read_dist_shard", "none", "SELECT * FROM orochi.dist_shard", SUPER),
    Op("read_dist_placement", "none", "SELECT * FROM orochi.dist_placement", SUPER),
    Op("read_dist_colocation", "none", "SELECT * FROM orochi.dist_colocation", SUPER),
    Op("read_dist_transaction", "none", "SELECT * FROM orochi.dist_transaction", SUPER),
    Op("read_dist_coordinator", "none", "SELECT * FROM orochi.dist_coordinator", SUPER),
    Op("write_dist_transaction", "none", "DELETE FROM orochi.dist_transaction WHERE false", SUPER),
    Op("write_dist_node", "none", "UPDATE orochi.dist_node SET is_active = true WHERE false", SUPER),
    Op("read_dist_shard_id_sequence", "none", "SELECT nextval('orochi.dist_shard_id_seq')", SUPER),
    Op("read_dist_reference_rowid_sequence", "none", "SELECT nextval('orochi.dist_reference_rowid_seq')", SUPER),
    Op("get_rebalance_plan", "none", "SELECT * FROM orochi.get_rebalance_plan()", SUPER),
    Op("rebalance_table_shards", "none", "SELECT orochi.rebalance_table_shards()", SUPER),
    Op("rebalance_stop", "none", "SELECT orochi.rebalance_stop()", SUPER),
    Op("rebalance_progress_view", "none", "SELECT * FROM orochi.rebalance_progress", ALL),
    Op("read_dist_move", "none", "SELECT * FROM orochi.dist_move", SUPER),
    Op("write_dist_move", "none", "DELETE FROM orochi.dist_move WHERE false", SUPER),
    Op("read_dist_move_log", "none", "SELECT * FROM orochi.dist_move_log", SUPER),
    Op("write_dist_move_log", "none", "DELETE FROM orochi.dist_move_log WHERE false", SUPER),
    Op("read_dist_rebalance_job_sequence", "none", "SELECT nextval('orochi.dist_rebalance_job_seq')", SUPER),
    # ---------------------------------------------------------------- ingest pipelines
    Op("create_pipeline", "pipeline_target",
       "SELECT orochi.create_pipeline({new_lit}, 'kafka', {t_lit}, 'json', {popts_lit})", READERS, mutates=True),
    Op("start_pipeline", "pipeline", "SELECT orochi.start_pipeline({pipeline})", OWNER, mutates=True),
    Op("pause_pipeline", "pipeline_running", "SELECT orochi.pause_pipeline({pipeline})", OWNER, mutates=True),
    Op("resume_pipeline", "pipeline_paused", "SELECT orochi.resume_pipeline({pipeline})", OWNER, mutates=True),
    Op("stop_pipeline", "pipeline_running", "SELECT orochi.stop_pipeline({pipeline})", OWNER, mutates=True),
    Op("drop_pipeline", "pipeline", "SELECT orochi.drop_pipeline({pipeline})", OWNER, mutates=True),
    Op("drop_pipeline_target", "pipeline", "DROP TABLE {t}", OWNER, mutates=True),
    Op("pipeline_commit_batch", "pipeline_running",
       "SELECT orochi.pipeline_commit_batch({pipeline}, '[{{\"stream\": \"0\", \"from\": null, \"to\": 5}}]',"
       " 5, 50)", OWNER, mutates=True),
    Op("pipeline_state", "pipeline", "SELECT * FROM orochi.pipeline_state({pipeline})", OWNER),
    Op("pipeline_stream_positions", "pipeline", "SELECT * FROM orochi.pipeline_stream_positions({pipeline})",
       OWNER),
    Op("pipeline_report_worker", "pipeline", "SELECT orochi.pipeline_report_worker({pipeline}, 'here:1')", OWNER,
       mutates=True),
    Op("pipeline_report_error", "pipeline", "SELECT orochi.pipeline_report_error({pipeline}, 'broker down')",
       OWNER, mutates=True),
    Op("pipeline_fail", "pipeline_running", "SELECT orochi.pipeline_fail({pipeline}, 'gave up')", OWNER,
       mutates=True),
    Op("pipelines_view", "pipeline", "SELECT * FROM orochi.pipelines", ALL),
    Op("pipeline_errors_view", "pipeline", "SELECT * FROM orochi.pipeline_errors", ALL),
    Op("pipeline_value_functions", "pipeline",
       "SELECT orochi.pipeline_lock_key({pipeline}), orochi.pipeline_is_running({pipeline}),"
       " orochi.pipeline_masked_options('{{\"password\": \"x\"}}'), orochi.pipeline_record_text('ab'::bytea)",
       ALL),
    Op("internal_pipeline_commit_batch", "pipeline",
       "SELECT orochi._pipeline_commit_batch({pipeline}, '[]', 0, 0, '[]', '{{}}', NULL, NULL)", SUPER),
    Op("read_pipeline", "none", "SELECT * FROM orochi.pipeline", SUPER),
    Op("read_pipeline_positions", "none", "SELECT * FROM orochi.pipeline_positions", SUPER),
    Op("read_pipeline_stats", "none", "SELECT * FROM orochi.pipeline_stats", SUPER),
    Op("read_pipeline_error_log", "none", "SELECT * FROM orochi.pipeline_error_log", SUPER),
    Op("write_pipeline", "none", "UPDATE orochi.pipeline SET state = 'stopped' WHERE false", SUPER),
    Op("write_pipeline_positions", "none", "DELETE FROM orochi.pipeline_positions WHERE false", SUPER),
    Op("read_pipeline_id_sequence", "none", "SELECT nextval('orochi.pipeline_id_seq')", SUPER),
    # ---------------------------------------------------------------- change data capture
    Op("create_cdc_subscription", "cdc_table",
       "SELECT orochi.create_cdc_subscription({new_lit}, ARRAY[{t_lit}]::regclass[], 'webhook', 'json',"
       " {copts_lit})", READERS, mutates=True),
    Op("start_cdc_subscription", "cdc", "SELECT orochi.start_cdc_subscription({cdc_lit})", OWNER, mutates=True),
    Op("stop_cdc_subscription", "cdc_running", "SELECT orochi.stop_cdc_subscription({cdc_lit})", OWNER,
       mutates=True),
    Op("drop_cdc_subscription", "cdc", "SELECT orochi.drop_cdc_subscription({cdc_lit})", OWNER, mutates=True),
    Op("drop_cdc_table", "cdc", "DROP TABLE {t}", OWNER, mutates=True),
    Op("cdc_subscription_stats", "cdc", "SELECT * FROM orochi.cdc_subscription_stats({cdc_lit})", OWNER),
    Op("list_cdc_subscriptions", "cdc", "SELECT * FROM orochi.list_cdc_subscriptions()", ALL),
    Op("cdc_errors_view", "cdc", "SELECT * FROM orochi.cdc_errors", ALL),
    Op("cdc_message_key", "none", "SELECT orochi.cdc_message_key()", SUPER),
    Op("cdc_value_functions", "cdc",
       "SELECT orochi.cdc_lock_key({cdc_id}), orochi.cdc_is_running({cdc_id}),"
       " orochi.cdc_masked_options('{{\"secret\": \"x\"}}')", ALL),
    Op("internal_cdc_sync_publication", "cdc", "SELECT orochi.cdc_sync_publication({cdc_id})", SUPER),
    Op("internal_cdc_drop_replication", "none",
       "SELECT orochi.cdc_drop_replication('orochi_cdc_' || (SELECT oid FROM pg_database"
       " WHERE datname = current_database()) || '_999999', NULL)", SUPER),
    Op("read_cdc_subscription", "none", "SELECT * FROM orochi.cdc_subscription", SUPER),
    Op("read_cdc_subscription_table", "none", "SELECT * FROM orochi.cdc_subscription_table", SUPER),
    Op("read_cdc_stats", "none", "SELECT * FROM orochi.cdc_stats", SUPER),
    Op("read_cdc_error_log", "none", "SELECT * FROM orochi.cdc_error_log", SUPER),
    Op("write_cdc_subscription", "none", "UPDATE orochi.cdc_subscription SET state = 'stopped' WHERE false", SUPER),
    Op("write_cdc_subscription_table", "none", "UPDATE orochi.cdc_subscription_table SET capturing = true"
       " WHERE false", SUPER),
    Op("read_cdc_subscription_id_sequence", "none", "SELECT nextval('orochi.cdc_subscription_id_seq')", SUPER),
    # ---------------------------------------------------------------- the catalog and internals
    Op("read_columnar_stripes", "none", "SELECT * FROM orochi.columnar_stripes", SUPER),
    Op("read_columnar_stripe_columns", "none", "SELECT * FROM orochi.columnar_stripe_columns", SUPER),
    Op("read_columnar_retired_files", "none", "SELECT * FROM orochi.columnar_retired_files", SUPER),
    Op("write_columnar_stripes", "none", "DELETE FROM orochi.columnar_stripes WHERE false", SUPER),
    Op("read_delta_table", "table", "SELECT * FROM orochi.{delta}", SUPER),
    Op("write_delta_table", "table", "DELETE FROM orochi.{delta} WHERE false", SUPER),
    Op("read_hypertables", "none", "SELECT * FROM orochi.hypertables", SUPER),
    Op("read_hypertable_chunks", "none", "SELECT * FROM orochi.hypertable_chunks", SUPER),
    Op("read_invalidation_log", "none", "SELECT * FROM orochi.hypertable_invalidation_log", SUPER),
    Op("read_jobs", "none", "SELECT * FROM orochi.jobs", SUPER),
    Op("write_jobs", "none", "UPDATE orochi.jobs SET scheduled = false WHERE false", SUPER),
    Op("read_bgw_job_stat", "none", "SELECT * FROM orochi.bgw_job_stat", SUPER),
    Op("read_continuous_aggs", "none", "SELECT * FROM orochi.continuous_aggs", SUPER),
    Op("read_continuous_agg_invalidations", "none", "SELECT * FROM orochi.continuous_agg_invalidations", SUPER),
    Op("stripe_id_sequence", "none", "SELECT nextval('orochi.columnar_stripe_id_seq')", SUPER),
    Op("columnar_drop_tables", "table", "SELECT orochi.columnar_drop_tables(ARRAY[{t_lit}::regclass::oid])", SUPER),
    Op("columnar_check_tables", "table", "SELECT orochi.columnar_check_tables(ARRAY[{t_lit}::regclass::oid])",
       OWNER),
    Op("column_default", "missing", "SELECT * FROM orochi.column_default({t_lit}::regclass, 5::smallint)", OWNER),
    Op("read_columnar_missing_values", "none", "SELECT * FROM orochi.columnar_missing_values", SUPER),
    Op("write_columnar_missing_values", "none", "DELETE FROM orochi.columnar_missing_values WHERE false", SUPER),
    Op("columnar_before_drop_extension", "none", "SELECT orochi.columnar_before_drop_extension()", SUPER),
    Op("continuous_aggregates_dropped", "none", "SELECT orochi.continuous_aggregates_dropped(ARRAY[0::oid])",
       SUPER),
    Op("chunk_compression_status", "none", "SELECT orochi._chunk_compression_status(0, 0)", SUPER),
    Op("set_allow_test_wrappers", "none", "SET orochi.allow_test_wrappers = on", SUPER),
    Op("set_trusted_wrappers", "none", "SET orochi.trusted_wrappers = 'columnar, SeriesWrapper'", SUPER),
    # ---------------------------------------------------------------- workload management (docs/workload.md)
    # Pools and classes are server-wide and nobody's: superusers define them, in the
    # workload database only (those functions' cells are in tests/workload/test_privileges.py);
    # the monitoring functions are for everyone, in every database.
    Op("workload_monitoring", "none",
       "SELECT (SELECT count(*) FROM orochi.list_resource_pools()), (SELECT count(*) FROM orochi.pool_stats()),"
       " (SELECT count(*) FROM orochi.list_workload_classes()), (SELECT preloaded FROM orochi.workload_status()),"
       " (SELECT count(*) FROM orochi.session_resources()), (SELECT count(*) FROM orochi.queued_queries())", ALL),
    Op("workload_reload", "none", "SELECT orochi.workload_reload()", SUPER),
    Op("pool_stats_reset", "none", "SELECT orochi.pool_stats_reset()", SUPER),
    Op("assign_workload_class_own_session", "none", "SELECT orochi.assign_workload_class(NULL)", SUPER),
    Op("workload_assign_session", "none", "SELECT orochi.workload_assign_session(pg_backend_pid(), NULL)", SUPER),
    Op("set_workload_enabled", "none", "SET orochi.workload_enabled = off", SUPER),
    Op("set_default_query_timeout", "none", "SET orochi.default_query_timeout_ms = 0", SUPER),
    Op("read_resource_pools", "none", "SELECT * FROM orochi.resource_pools", SUPER),
    Op("read_workload_classes", "none", "SELECT * FROM orochi.workload_classes", SUPER),
    Op("read_workload_role_classes", "none", "SELECT * FROM orochi.workload_role_classes", SUPER),
    Op("write_resource_pools", "none", "DELETE FROM orochi.resource_pools WHERE false", SUPER),
    Op("write_workload_classes", "none", "UPDATE orochi.workload_classes SET priority = 0 WHERE false", SUPER),
    Op("read_resource_pool_id_sequence", "none", "SELECT nextval('orochi.resource_pools_pool_id_seq')", SUPER),
    # ---------------------------------------------------------------- functions of values, for everyone
    Op("python_info", "none", "SELECT * FROM orochi.python_info()", ALL),
    Op("time_bucket", "none",
       "SELECT orochi.time_bucket('1 hour', now()), orochi.time_bucket('1 month', now()::timestamp),"
       " orochi.time_bucket('1 day', current_date), orochi.time_bucket(10, 123),"
       " orochi.time_bucket(10::bigint, 123::bigint), orochi.time_bucket(10::smallint, 123::smallint),"
       " orochi.time_bucket('1 hour', now(), interval '5 minutes'),"
       " orochi.time_bucket('1 hour', now(), '2000-01-01'::timestamptz)", ALL),
    Op("sketches", "none",
       "SELECT orochi.approx_count_distinct(g), orochi.approx_count_distinct(g, 12),"
       " orochi.hll_cardinality(orochi.hll_agg(g)), orochi.hll_cardinality(orochi.hll_agg(g, 12)),"
       " orochi.hll_cardinality(orochi.hll_union(orochi.hll_agg(g), orochi.hll_agg(g))),"
       " orochi.tdigest_percentile(orochi.tdigest_agg(g::float8), 0.5),"
       " orochi.tdigest_percentile(orochi.tdigest_agg(g::float8, 50), ARRAY[0.1, 0.9]),"
       " orochi.tdigest_count(orochi.tdigest_agg(g::float8)),"
       " orochi.approx_percentile(g::float8, 0.5), orochi.approx_percentile(g::float8, 0.5, 50),"
       " orochi.approx_percentile(g::float8, ARRAY[0.5]), orochi.approx_percentile(g::float8, ARRAY[0.5], 50)"
       " FROM generate_series(1, 100) g", ALL),
    Op("sketch_unions", "none",
       "SELECT orochi.hll_cardinality(orochi.hll_union_agg(s)) FROM"
       " (SELECT orochi.hll_agg(g) s FROM generate_series(1, 10) g) x UNION ALL"
       " SELECT orochi.tdigest_count(orochi.tdigest_union_agg(d)) FROM"
       " (SELECT orochi.tdigest_agg(g::float8) d FROM generate_series(1, 10) g) y", ALL),
    Op("sampled_functions", "none",
       "SELECT orochi.sampled_check(0.5, 0.95), orochi.sampled_estimate(orochi.sampled_accum(NULL, 1, 0.5, 0.95)),"
       " orochi.sampled_final('sum', NULL, false)", ALL),
]

#: orochi.* routines the matrix reaches through another row, or cannot call
EXEMPT = {
    "orochi_fdw_handler": "the foreign-data wrapper's handler: not callable from SQL",
    "orochi_fdw_validator": "the option validator: every CREATE ... OPTIONS row calls it",
    "columnar_on_sql_drop": "event trigger: drop_table, ht_drop",
    "columnar_on_ddl_end": "event trigger: create_table, alter_*",
    "columnar_on_drop_extension": "event trigger: DROP EXTENSION (superuser only)",
    "hypertables_on_sql_drop": "event trigger: ht_drop",
    "jobs_on_sql_drop": "event trigger: ht_drop",
    "continuous_aggregates_on_sql_drop": "event trigger: drop_continuous_aggregate",
    "pipelines_on_sql_drop": "event trigger: drop_pipeline_target",
    "cdc_on_sql_drop": "event trigger: drop_cdc_table",
    "columnar_vector_index_files_on_delete": "trigger of the catalog: drop_vector_index, vector_vacuum_indexed,"
                                             " vector_drop_indexed_table",
    "vector_recv": "binary input (takes internal): vector_binary_io",
    "_require_table_privilege": "raises for the caller's own missing privilege: chunk_compression_stats",
    "_time_bucket_error": "inlined into time_bucket",
    "_time_bucket_width_us": "inlined into time_bucket",
    "_time_bucket_months": "inlined into time_bucket",
    "_time_bucket_month_index": "inlined into time_bucket",
    "_file_path": "a catalog path shown as a path: the orochi.stripes view (stripes_view)",
    "_on_catalog_insert": "trigger of the catalog: create_hypertable, create_vector_index (internal inserts)",
    "_hypertable_inserted": "revoked from PUBLIC; called by the catalog's trigger: create_hypertable",
    "_hypertable_catalog_changed": "trigger of the catalog (invalidates the hypertable's relcache entry):"
                                   " create_hypertable, drop_chunks (internal writes)",
    "_vector_index_inserted": "revoked from PUBLIC; called by the catalog's trigger: create_vector_index",
    "_time_bucket_unsupported": "raises time_bucket's refusals: time_bucket",
    "_time_bucket_tstz_add": "inlined into time_bucket",
    "_time_bucket_is_time": "inlined into time_bucket",
    "_time_bucket_date_width": "inlined into time_bucket",
    "_time_bucket_date_offset": "inlined into time_bucket",
    "_time_bucket_tz": "inlined into time_bucket",
    "_time_bucket_tz_back": "inlined into time_bucket",
    "_time_bucket_tz_start": "inlined into time_bucket",
    "create_storage_target": "tiered storage needs an S3 server: tests/tiering/test_tiering_privileges.py"
                             " (owner, granted, ungranted, superuser)",
    "drop_storage_target": "tests/tiering/test_tiering_privileges.py",
    "tier_chunk": "needs an S3 server: tests/tiering/test_tiering_privileges.py",
    "untier_chunk": "needs an S3 server: tests/tiering/test_tiering_privileges.py",
    "add_tiering_policy": "needs a storage target: tests/tiering/test_tiering_privileges.py",
    "remove_tiering_policy": "tests/tiering/test_tiering_privileges.py",
    "create_distributed_table": "needs worker nodes: tests/distributed/test_dist_privileges.py (owner, granted,"
                                " ungranted, superuser)",
    "create_reference_table": "needs worker nodes: tests/distributed/test_dist_privileges.py",
    "undistribute_table": "needs worker nodes: tests/distributed/test_dist_privileges.py",
    "shard_status": "needs a distributed table, so worker nodes: tests/distributed/test_dist_privileges.py",
    "shard_placements": "the orochi.shards view (shards_view)",
    "add_node": "a superuser's succeeds only with a worker to add: tests/distributed/test_dist_privileges.py",
    "remove_node": "a superuser's succeeds only with a worker to remove: tests/distributed/test_dist_privileges.py",
    "raft_status": "asks the ha duty of a running orochi-sidecar: tests/ha (superuser, pg_monitor, 42501 else)",
    "raft_leader": "asks a running orochi-sidecar: tests/ha/test_ha_failover.py",
    "raft_cluster_info": "asks a running orochi-sidecar: tests/ha/test_ha_failover.py",
    "cluster_health": "asks a running orochi-sidecar: tests/ha/test_ha_failover.py",
    "move_shard": "needs worker nodes: tests/distributed/test_rebalance.py::test_bad_input (superuser only)",
    "drain_node": "needs worker nodes: tests/distributed/test_rebalance.py::test_bad_input (superuser only)",
    "dist_move_capture": "trigger of a shard while a move copies it (tests/distributed/test_rebalance.py)",
    "dist_move_fence": "trigger of a moved shard's source (tests/distributed/test_rebalance.py)",
    "cluster_options_validator": "the validator of server orochi_cluster's user mappings: test_dist_metadata.py",
    "cluster_on_sql_drop": "event trigger: drop_table, cluster_drop_tables",
    "cluster_on_ddl_end": "event trigger: alter_*, cluster_alter_tables",
    "cluster_on_grant": "event trigger: GRANT / REVOKE, cluster_sync_privileges",
    "sketch_check_hll": "domain check of orochi.hll: sketches",
    "sketch_check_tdigest": "domain check of orochi.tdigest: sketches",
    # defined only in the workload database (orochi.workload_database), a superuser's elsewhere
    # gets 55000: their four cells are tests/workload/test_privileges.py's
    "create_resource_pool": "workload database only: tests/workload/test_privileges.py",
    "alter_resource_pool": "workload database only: tests/workload/test_privileges.py",
    "drop_resource_pool": "workload database only: tests/workload/test_privileges.py",
    "create_workload_class": "workload database only: tests/workload/test_privileges.py",
    "alter_workload_class": "workload database only: tests/workload/test_privileges.py",
    "drop_workload_class": "workload database only: tests/workload/test_privileges.py",
    "workload_publish": "workload database only (internal): tests/workload/test_privileges.py",
}
_SUPPORT_PREFIXES = ("sketch_", "sampled_")  # aggregates' support functions: the sketches / sampled rows


def _ident(conn, name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def _lit(conn, value: str) -> str:
    return sql.Literal(value).as_string(conn)


def _setup_table(a, conn, name: str, rows: bool = True) -> dict:
    t = _ident(conn, name)
    conn.execute(f"CREATE FOREIGN TABLE {t} (id int, v float8, ts timestamptz, note text)"
                 " SERVER orochi OPTIONS (delta_row_limit '5')")
    if rows:
        conn.execute(f"INSERT INTO {t} SELECT g, g * 0.5, '2024-01-01'::timestamptz + g * interval '3 hours',"
                     " 'n' || g FROM generate_series(1, 20) g")  # stripes
        conn.execute(f"INSERT INTO {t} VALUES (100, 1, '2024-01-02 12:00', 'delta')")  # the delta store
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {}").format(
        sql.Identifier(name), a.ident("granted")))
    oid = conn.execute("SELECT %s::regclass::oid", [t]).fetchone()[0]
    return {"t": t, "t_lit": _lit(conn, t), "delta": f"columnar_delta_{oid}"}


def _setup_missing(a, conn, name: str) -> dict:
    """A table with rows stored before a column was added with a default
    (attnum 5: the value they read is kept in orochi.columnar_missing_values)."""
    names = _setup_table(a, conn, name)
    conn.execute(f"ALTER TABLE {names['t']} ADD COLUMN added text DEFAULT 'kept'")
    return names


def _setup_vector_table(a, conn, name: str, index: bool = False) -> dict:
    """A table of 2,100 vectors in a stripe (enough for an index file) and one
    in the delta store; with ``index``, an HNSW index on them."""
    t = _ident(conn, name)
    conn.execute(f"CREATE FOREIGN TABLE {t} (id int, e orochi.vector(3)) SERVER orochi"
                 " OPTIONS (delta_row_limit '5')")
    conn.execute(f"INSERT INTO {t} SELECT g, ARRAY[g % 97, (g * 7) % 101, (g * 13) % 103]::real[]"
                 " FROM generate_series(1, 2100) g")
    conn.execute(f"INSERT INTO {t} VALUES (9999, '[1,1,1]')")
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {}").format(
        sql.Identifier(name), a.ident("granted")))
    if index:
        conn.execute(f"SELECT orochi.create_vector_index({_lit(conn, t)}, 'e')")
    return {"t": t, "t_lit": _lit(conn, t)}


#: a Kafka pipeline's options (nothing connects to the broker in these tests)
_PIPELINE_OPTIONS = {"bootstrap_servers": "127.0.0.1:9", "topic": "privileges"}


def _setup_pipeline_target(a, conn, name: str) -> dict:
    t = _ident(conn, name)
    conn.execute(f"CREATE TABLE {t} (id int, note text)")
    conn.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(name), a.ident("granted")))
    return {"t": t, "t_lit": _lit(conn, t)}


def _setup_pipeline(state: str | None = None):
    def setup(a, conn, name: str) -> dict:
        names = _setup_pipeline_target(a, conn, name)
        pid = conn.execute("SELECT orochi.create_pipeline(%s, 'kafka', %s::regclass, 'json', %s::jsonb)",
                           [name, names["t"], json.dumps(_PIPELINE_OPTIONS)]).fetchone()[0]
        if state in ("running", "paused"):
            conn.execute("SELECT orochi.start_pipeline(%s)", [pid])
        if state == "paused":
            conn.execute("SELECT orochi.pause_pipeline(%s)", [pid])
        return {**names, "pipeline": str(pid)}
    return setup


#: a webhook subscription's options (nothing connects to the receiver in these tests)
_CDC_OPTIONS = {"url": "http://127.0.0.1:9/", "verify_sink": False, "secret": "s"}


def _setup_cdc_table(a, conn, name: str) -> dict:
    t = _ident(conn, name)
    conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, note text)")
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(name), a.ident("granted")))
    return {"t": t, "t_lit": _lit(conn, t)}


def _setup_cdc(state: str | None = None):
    def setup(a, conn, name: str) -> dict:
        names = _setup_cdc_table(a, conn, name)
        sid = conn.execute("SELECT orochi.create_cdc_subscription(%s, ARRAY[%s]::regclass[], 'webhook', 'json',"
                           " %s::jsonb)", [name, names["t"], json.dumps(_CDC_OPTIONS)]).fetchone()[0]
        if state == "running":
            conn.execute("SELECT orochi.start_cdc_subscription(%s)", [name])
        return {**names, "cdc_lit": _lit(conn, name), "cdc_id": str(sid)}
    return setup


def _setup_hypertable(a, conn, name: str) -> dict:
    names = _setup_table(a, conn, name, rows=False)
    conn.execute(f"SELECT orochi.create_hypertable({names['t_lit']}, 'ts', interval '1 day')")
    conn.execute(f"INSERT INTO {names['t']} SELECT g, g * 0.5, '2024-01-01'::timestamptz + g * interval '3 hours',"
                 " 'n' || g FROM generate_series(1, 20) g")
    conn.execute(f"INSERT INTO {names['t']} VALUES (100, 1, '2024-01-02 12:00', 'delta')")
    chunk = conn.execute(f"SELECT orochi.show_chunks({names['t_lit']}) LIMIT 1").fetchone()[0]
    return {**names, "h": names["t"], "h_lit": names["t_lit"], "chunk_lit": _lit(conn, chunk),
            "query_lit": _lit(conn, _CAGG_QUERY.format(h=names["t"]))}


def _setup_compressed(a, conn, name: str) -> dict:
    names = _setup_hypertable(a, conn, name)
    conn.execute(f"SELECT orochi.compress_chunk({names['chunk_lit']})")
    return names


def _setup_policy(kind: str):
    def setup(a, conn, name: str) -> dict:
        names = _setup_hypertable(a, conn, name)
        job = conn.execute(f"SELECT orochi.add_{kind}_policy({names['h_lit']}, interval '1 day')").fetchone()[0]
        return {**names, "job": str(job)}
    return setup


def _setup_job(a, conn, name: str) -> dict:
    proc = _ident(conn, name)
    conn.execute(f"CREATE PROCEDURE {proc}(job_id int, config jsonb) LANGUAGE plpgsql"
                 " AS $$ BEGIN PERFORM job_id; END $$")
    conn.execute(f"REVOKE EXECUTE ON PROCEDURE {proc}(int, jsonb) FROM PUBLIC")
    conn.execute(sql.SQL("GRANT EXECUTE ON PROCEDURE {}(int, jsonb) TO {}").format(
        sql.Identifier(name), a.ident("granted")))
    job = conn.execute(f"SELECT orochi.add_job({_lit(conn, proc)}, interval '1 hour')").fetchone()[0]
    return {"proc_lit": _lit(conn, proc), "job": str(job)}


def _setup_cagg(a, conn, name: str, policy: bool = False) -> dict:
    names = _setup_hypertable(a, conn, name + "_h")
    cagg = _ident(conn, name)
    conn.execute(f"SELECT orochi.create_continuous_aggregate({_lit(conn, cagg)}, {names['query_lit']})")
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(name), a.ident("granted")))
    names = {**names, "cagg": cagg, "cagg_lit": _lit(conn, cagg)}
    if policy:
        job = conn.execute(f"SELECT orochi.add_continuous_aggregate_policy({names['cagg_lit']}, interval '30 days',"
                           " interval '1 day', interval '1 hour')").fetchone()[0]
        names["job"] = str(job)
    return names


_SETUPS = {
    "none": lambda a, conn, name: {},
    "table": _setup_table,
    "empty_table": lambda a, conn, name: _setup_table(a, conn, name, rows=False),
    "hypertable": _setup_hypertable,
    "compressed": _setup_compressed,
    "retention": _setup_policy("retention"),
    "compression": _setup_policy("compression"),
    "job": _setup_job,
    "cagg": _setup_cagg,
    "cagg_policy": lambda a, conn, name: _setup_cagg(a, conn, name, policy=True),
    "missing": _setup_missing,
    "vector_table": _setup_vector_table,
    "vector_index": lambda a, conn, name: _setup_vector_table(a, conn, name, index=True),
    "pipeline_target": _setup_pipeline_target,
    "pipeline": _setup_pipeline(),
    "pipeline_running": _setup_pipeline("running"),
    "pipeline_paused": _setup_pipeline("paused"),
    "cdc_table": _setup_cdc_table,
    "cdc": _setup_cdc(),
    "cdc_running": _setup_cdc("running"),
}

_shared: dict[tuple[str, str], dict] = {}


def _names_for(actors, op: Op, actor: str) -> dict:
    owner = actors.conns["owner"]
    if op.mutates:
        base = f"{op.name}_{actor}"[:40]
        names = _SETUPS[op.setup](actors, owner, base)
    else:
        key = (actors.db, op.setup)
        if key not in _shared:
            _shared[key] = _SETUPS[op.setup](actors, owner, f"shared_{op.setup}")
        names = _shared[key]
    new = f"new_{op.name}_{actor}"[:50]
    return {**names, "new": _ident(owner, new), "new_lit": _lit(owner, new),
            "popts_lit": _lit(owner, json.dumps(_PIPELINE_OPTIONS)),
            "copts_lit": _lit(owner, json.dumps(_CDC_OPTIONS))}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_privilege_matrix(actors, op: Op, actor: str):
    names = _names_for(actors, op, actor)
    conn = actors.conns[actor]
    try:
        if callable(op.action):
            op.action(conn, names)
        else:
            cur = conn.execute(op.action.format(**names))
            if cur.description:
                cur.fetchall()
    except psycopg.Error as exc:
        if actor in op.allowed:
            pytest.fail(f"{op.name} as {actor} should succeed, got {exc.sqlstate}: {exc}")
        assert exc.sqlstate == "42501", f"{op.name} as {actor}: expected 42501, got {exc.sqlstate}: {exc}"
        if not op.internals:
            # refused by a check of the caller's rights, not by reaching the catalog as the caller
            assert not _INTERNAL.search(str(exc)), f"{op.name} as {actor}: refused by the catalog: {exc}"
        return
    assert actor in op.allowed, f"{op.name} as {actor} should fail with 42501, but succeeded"


def test_every_function_is_in_the_matrix(actors):
    """Each orochi.* routine is called by some row of OPS (or exempted with a
    reason), so a new SQL function cannot miss its privilege row."""
    names = {r[0] for r in actors.conns["superuser"].execute(
        "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'orochi'::regnamespace")}
    text = " ".join(op.action if isinstance(op.action, str) else "" for op in OPS)
    called = set(re.findall(r"orochi\.(\w+)", text)) | {"run_job_now", "run_job", "run_job_background"}
    missing = sorted(n for n in names - called - set(EXEMPT) if not n.startswith(_SUPPORT_PREFIXES))
    assert not missing, f"orochi functions without a row in the privilege matrix: {missing}"
