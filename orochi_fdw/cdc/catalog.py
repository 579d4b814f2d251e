"""The CDC catalog as the sidecar reads and writes it (psycopg).

The SQL functions users call live in :mod:`orochi_fdw.cdc.sqlapi` and run
in the backend; this module is the other side: what the sidecar's
connections ask of ``orochi.cdc_subscription`` and its companions.  The
sidecar's role must see every subscription (superuser, or BYPASSRLS) and
hold the REPLICATION attribute (for the slots).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import psycopg

from orochi_fdw.cdc.events import TableConfig, parse_lsn

RUNNABLE = """
SELECT s.subscription_id, s.name, s.sink, s.format, s.options::text, s.state,
       coalesce((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = s.owner)::text, s.owner::oid::text),
       s.slot_name, s.publication_name, orochi.cdc_is_running(s.subscription_id)
  FROM orochi.cdc_subscription s
 WHERE s.state = 'running' {where}
 ORDER BY s.subscription_id
"""


@dataclass(frozen=True)
class SubscriptionDef:
    """A subscription as the sidecar runs it."""

    subscription_id: int
    name: str
    sink: str
    format: str
    options: dict[str, Any]
    state: str
    owner: str
    slot_name: str
    publication: str
    claimed: bool = False

    @classmethod
    def from_row(cls, row: tuple) -> "SubscriptionDef":
        sid, name, sink, format, options, state, owner, slot, publication, claimed = row
        return cls(int(sid), name, sink, format, json.loads(options), state, owner, slot, publication,
                   bool(claimed))


def runnable(conn: psycopg.Connection, only: int | None = None) -> list[SubscriptionDef]:
    """Subscriptions in state running (``only``: that one)."""
    if only is None:
        rows = conn.execute(RUNNABLE.format(where="")).fetchall()
    else:
        rows = conn.execute(RUNNABLE.format(where="AND s.subscription_id = %s"), [only]).fetchall()
    return [SubscriptionDef.from_row(r) for r in rows]


@dataclass
class SubscriptionState:
    """What a worker re-reads each cycle."""

    state: str | None
    slot_lsn: int | None
    snapshot_done: bool
    confirmed_lsn: int | None
    tables: dict[int, TableConfig]
    ordered: list[int]
    denied: str | None  # a table the owner may no longer read


_STATE = """
SELECT s.state, s.slot_lsn::text, s.snapshot_done, s.confirmed_lsn::text,
       (SELECT coalesce(json_agg(json_build_array(t.relid, t.kind, t.key_columns) ORDER BY t.ordinal), '[]')
          FROM orochi.cdc_subscription_table t WHERE t.subscription_id = s.subscription_id)::text,
       (SELECT t.relid::regclass::text FROM orochi.cdc_subscription_table t
         WHERE t.subscription_id = s.subscription_id
           AND NOT has_table_privilege(s.owner::oid, t.relid, 'SELECT') LIMIT 1)
  FROM orochi.cdc_subscription s WHERE s.subscription_id = %s
"""


def read_state(conn: psycopg.Connection, subscription_id: int) -> SubscriptionState:
    row = conn.execute(_STATE, [subscription_id]).fetchone()
    if row is None:
        return SubscriptionState(None, None, False, None, {}, [], None)
    state, slot_lsn, done, confirmed, tables, denied = row
    configs = {}
    ordered = []
    for relid, kind, keys in json.loads(tables):
        configs[int(relid)] = TableConfig(int(relid), kind, tuple(keys or ()))
        ordered.append(int(relid))
    return SubscriptionState(state, parse_lsn(slot_lsn) if slot_lsn else None, bool(done),
                             parse_lsn(confirmed) if confirmed else None, configs, ordered, denied)


def try_claim(conn: psycopg.Connection, subscription_id: int) -> bool:
    return bool(conn.execute("SELECT pg_try_advisory_lock(orochi.cdc_lock_key(%s))", [subscription_id]).fetchone()[0])


def report_worker(conn: psycopg.Connection, subscription_id: int, worker: str) -> None:
    conn.execute(
        "INSERT INTO orochi.cdc_stats AS s (subscription_id, worker, worker_started_at) VALUES (%s, %s, now()) "
        "ON CONFLICT (subscription_id) DO UPDATE SET worker = excluded.worker, "
        "worker_started_at = excluded.worker_started_at", [subscription_id, worker])


def report_error(conn: psycopg.Connection, subscription_id: int, error: str | None, count: bool = False,
                 pending_since: datetime.datetime | None = None) -> None:
    """Show (or clear, with None) the current error; ``count``: one more error."""
    conn.execute(
        "UPDATE orochi.cdc_stats SET current_error = %s, last_error = coalesce(%s, last_error), "
        "last_error_at = CASE WHEN %s::text IS NULL THEN last_error_at ELSE now() END, "
        "errors = errors + %s, pending_since = coalesce(%s, pending_since) WHERE subscription_id = %s",
        [error, error, error, 1 if count else 0, pending_since, subscription_id])


def mark_failed(conn: psycopg.Connection, subscription_id: int, error: str) -> None:
    with conn.transaction():
        conn.execute("UPDATE orochi.cdc_subscription SET state = 'failed', state_changed_at = now() "
                     "WHERE subscription_id = %s AND state = 'running'", [subscription_id])
        report_error(conn, subscription_id, error, count=True)


def drop_slot(conn: psycopg.Connection, slot: str) -> bool:
    """Drop a replication slot, disconnecting a session that holds it."""
    for _ in range(100):
        row = conn.execute("SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                           [slot]).fetchone()
        if row is None:
            return False
        if row[0] is None:
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                return True
            except psycopg.errors.UndefinedObject:
                return False
            except psycopg.errors.ObjectInUse:
                continue
        conn.execute("SELECT pg_terminate_backend(%s)", [row[0]])
        conn.execute("SELECT pg_sleep(0.05)")
    return False


def fail_and_drop_slot(conn: psycopg.Connection, subscription_id: int, slot: str, reason: str) -> None:
    """The subscription fails and gives up its slot (max_lag): the WAL it
    held can go; starting it again takes a new snapshot."""
    with conn.transaction():
        conn.execute("UPDATE orochi.cdc_subscription SET state = 'failed', state_changed_at = now(), "
                     "slot_lsn = NULL, snapshot_done = false, confirmed_lsn = NULL WHERE subscription_id = %s",
                     [subscription_id])
        conn.execute("UPDATE orochi.cdc_subscription_table SET capturing = false WHERE subscription_id = %s",
                     [subscription_id])
        report_error(conn, subscription_id, reason, count=True)
    drop_slot(conn, slot)


def record_slot(conn: psycopg.Connection, subscription_id: int, lsn: int | None, snapshot_done: bool) -> None:
    from orochi_fdw.cdc.events import lsn_text

    conn.execute("UPDATE orochi.cdc_subscription SET slot_lsn = %s::pg_lsn, snapshot_done = %s, "
                 "confirmed_lsn = CASE WHEN %s THEN confirmed_lsn ELSE NULL END WHERE subscription_id = %s",
                 [None if lsn is None else lsn_text(lsn), snapshot_done, snapshot_done, subscription_id])


@dataclass
class Progress:
    """What a worker delivered since it last recorded its position."""

    events: int = 0
    snapshot_events: int = 0
    transactions: int = 0
    bytes: int = 0
    batches: int = 0
    last_commit_lsn: int | None = None
    last_commit_ms: int | None = None
    refused: list = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.refused is None:
            self.refused = []

    def empty(self) -> bool:
        return not (self.events or self.snapshot_events or self.transactions or self.refused)


def record_progress(conn: psycopg.Connection, subscription_id: int, confirmed: int | None, progress: Progress,
                    pending_since: datetime.datetime | None, clear_error: bool = True) -> None:
    """Commit the position the sink has acknowledged up to, the counters and
    the refused events, in one transaction."""
    from orochi_fdw.cdc.events import lsn_text

    with conn.transaction():
        if confirmed is not None:
            conn.execute("UPDATE orochi.cdc_subscription SET confirmed_lsn = %s::pg_lsn WHERE subscription_id = %s "
                         "AND (confirmed_lsn IS NULL OR confirmed_lsn < %s::pg_lsn)",
                         [lsn_text(confirmed), subscription_id, lsn_text(confirmed)])
        commit_time = None if progress.last_commit_ms is None else \
            datetime.datetime.fromtimestamp(progress.last_commit_ms / 1000, datetime.timezone.utc)
        conn.execute(
            "UPDATE orochi.cdc_stats SET events_sent = events_sent + %s, snapshot_events = snapshot_events + %s, "
            "transactions = transactions + %s, bytes_sent = bytes_sent + %s, batches = batches + %s, "
            "errors = errors + %s, "
            "last_commit_lsn = coalesce(%s::pg_lsn, last_commit_lsn), "
            "last_commit_time = coalesce(%s, last_commit_time), "
            "last_delivery_at = CASE WHEN %s > 0 THEN now() ELSE last_delivery_at END, "
            "pending_since = %s, current_error = CASE WHEN %s THEN NULL ELSE current_error END "
            "WHERE subscription_id = %s",
            [progress.events, progress.snapshot_events, progress.transactions, progress.bytes, progress.batches,
             len(progress.refused),
             None if progress.last_commit_lsn is None else lsn_text(progress.last_commit_lsn), commit_time,
             progress.events + progress.snapshot_events, pending_since, clear_error, subscription_id])
        if progress.refused:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO orochi.cdc_error_log (subscription_id, event_id, table_name, op, status, response, "
                    "event) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)",
                    [(subscription_id, r.event.id, f"{r.event.schema}.{r.event.table}", r.event.op, r.status,
                      r.response, r.value.decode("utf-8", errors="replace")) for r in progress.refused])


#: the columns of a table a snapshot reads (as pgoutput sends them: no generated columns)
SNAPSHOT_COLUMNS = """
SELECT a.attname::text, a.atttypid::int, a.atttypmod
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 ORDER BY a.attnum
"""

IDENTITY_COLUMNS = """
SELECT a.attname::text
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_index i ON i.indrelid = c.oid
       AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))
  JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, pos) ON true
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
 WHERE c.oid = %s
 ORDER BY k.pos
"""

TABLE_NAME = """
SELECT n.nspname::text, c.relname::text, c.relkind::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s
"""

TYPE_ROW = """
SELECT t.typname::text, n.nspname::text, t.typtype::text, t.typbasetype::int, t.typelem::int,
       t.typcategory::text, t.typtypmod
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = %s
"""

RETAINED = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), r.restart_lsn)::bigint, r.active_pid
  FROM pg_catalog.pg_replication_slots r WHERE r.slot_name = %s
"""

#: subscriptions whose slot holds WAL, with their max_lag (for the duty)
WITH_SLOTS = """
SELECT s.subscription_id, s.name, s.sink, s.format, s.options::text, s.slot_name,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.restart_lsn)::bigint
  FROM orochi.cdc_subscription s JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name
"""

#: slots of this database's subscriptions that no subscription owns any more
ORPHAN_SLOTS = """
SELECT r.slot_name, r.active_pid
  FROM pg_catalog.pg_replication_slots r
 WHERE r.database = current_database()
   AND r.slot_name ~ ('^orochi_cdc_' || (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
                      || '_[0-9]+$')
   AND NOT EXISTS (SELECT 1 FROM orochi.cdc_subscription s WHERE s.slot_name = r.slot_name)
"""
