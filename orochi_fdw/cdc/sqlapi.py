"""SQL functions of change data capture (sql/90_cdc.sql), run in the
backend as the calling role.

- ``orochi.create_cdc_subscription(name, tables, sink, format, options)``:
  checks everything that can be checked now (wal_level, each table, its
  key, the caller's SELECT on it, the options, that the sink answers) so
  that a mistake is an ERROR here, not a failed subscription later.  The
  caller becomes the owner.
- ``start_cdc_subscription``, ``stop_cdc_subscription``,
  ``drop_cdc_subscription``, ``cdc_subscription_stats``: for roles with the
  rights of the owner role (its members inheriting them, superusers).
- ``list_cdc_subscriptions``: the subscriptions the caller has the owner's
  rights of, options with secrets masked.
- ``cdc_message_key``: the key that signs orochi tables' change messages,
  for the sidecar (roles with REPLICATION, superusers).

Privileges (docs/SECURITY.md): the catalog tables belong to the extension
owner and are granted to no one.  Every function checks the caller's rights
first, in a statement of the caller's (``current_user`` is the calling
role: the owner a new subscription gets, the role whose rights are
checked), and then works on the catalog with internal statements only.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

from orochi_fdw.bridge import privileges, spi, wrappers
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.cdc.errors import (CdcPrivilegeError, CdcStateError, DuplicateSubscriptionError,
                                   InvalidCdcOptionError, SinkUnreachableError, SubscriptionNotFoundError)
from orochi_fdw.cdc.options import CdcOptions, check_options

#: seconds a sink may take to accept a connection at creation
CONNECT_TIMEOUT = 3.0

_TABLE_INFO = """
SELECT c.relkind::text, c.relpersistence::text, c.relreplident::text, c.relrowsecurity, c.relforcerowsecurity,
       n.nspname::text, c.relname::text, c.oid::regclass::text, c.relowner
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = $1
"""

_COLUMNS = """
SELECT a.attname::text FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 ORDER BY a.attnum
"""

_INDEX_COLUMNS = """
SELECT a.attname::text
  FROM pg_catalog.pg_index i
  JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, pos) ON true
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = $1 AND {which}
 ORDER BY k.pos
"""

_FOREIGN = """
SELECT w.fdwname::text,
       (SELECT split_part(o, '=', 2) FROM unnest(ft.ftoptions) o WHERE o LIKE 'wrapper=%'),
       (SELECT split_part(o, '=', 2) FROM unnest(s.srvoptions) o WHERE o LIKE 'wrapper=%')
  FROM pg_catalog.pg_foreign_table ft
  JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver
  JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
 WHERE ft.ftrelid = $1
"""


def _options(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str):
        return json.loads(value)
    return value


def _relids(tables: Any) -> list[int]:
    if tables is None:
        raise InvalidCdcOptionError("tables cannot be NULL")
    out: list[int] = []
    for t in tables:
        if t is None:
            raise InvalidCdcOptionError("tables cannot hold NULL")
        relid = t if isinstance(t, int) else int(spi.execute("SELECT $1::regclass::oid", [str(t)],
                                                             types=["text"]).scalar())
        if relid in out:
            name = spi.execute("SELECT $1::regclass::text", [relid], types=["oid"]).scalar()
            raise InvalidCdcOptionError(f'table "{name}" is listed twice')
        out.append(relid)
    if not out:
        raise InvalidCdcOptionError("a CDC subscription needs at least one table")
    return out


def _key_columns_option(options: CdcOptions) -> dict[int, list[str]]:
    """The key_columns option by table oid."""
    out: dict[int, list[str]] = {}
    for name, cols in (options["key_columns"] or {}).items():
        relid = spi.execute("SELECT to_regclass($1)::oid", [name], types=["text"]).scalar()
        if relid is None:
            raise InvalidCdcOptionError(f'option "key_columns" names table "{name}", which does not exist',
                                        sqlstate="42P01")
        out[int(relid)] = list(cols)
    return out


def _identity_columns(relid: int, replident: str) -> list[str] | None:
    """The columns a heap table's deletions and key changes carry (its
    replica identity); None when every column (REPLICA IDENTITY FULL)."""
    if replident == "f":
        return None
    if replident == "n":
        return []
    which = "i.indisprimary" if replident == "d" else "i.indisreplident"
    return [r[0] for r in spi.execute(_INDEX_COLUMNS.format(which=which), [relid], types=["oid"]).rows]


def _check_table(relid: int, key_option: list[str] | None) -> tuple[str, list[str]]:
    """(kind, key columns) of a table a subscription may capture.

    Raises:
        InvalidCdcOptionError, CdcPrivilegeError, CdcStateError.
    """
    row = spi.execute(_TABLE_INFO, [relid], types=["oid"]).rows
    if not row:
        raise InvalidCdcOptionError(f"relation with OID {relid} does not exist", sqlstate="42P01")
    relkind, persistence, replident, rls, force_rls, _schema, _table, name, owner = row[0]
    if relkind == "r":
        kind = "heap"
        if persistence == "t":
            raise InvalidCdcOptionError(f'table "{name}" is temporary: its changes are not in the WAL',
                                        sqlstate="0A000")
        if persistence == "u":
            raise InvalidCdcOptionError(f'table "{name}" is unlogged: its changes are not in the WAL',
                                        sqlstate="0A000", hint="ALTER TABLE ... SET LOGGED first.")
    elif relkind == "f":
        fdw, table_wrapper, server_wrapper = spi.execute(_FOREIGN, [relid], types=["oid"]).rows[0]
        if fdw != "orochi" or not wrappers.is_default(table_wrapper or server_wrapper):
            raise InvalidCdcOptionError(f'foreign table "{name}" is not an orochi table', sqlstate="42809",
                                        hint="Only heap tables and orochi (columnar) tables can be captured.")
        kind = "orochi"
    elif relkind == "p":
        raise InvalidCdcOptionError(f'"{name}" is a partitioned table', sqlstate="0A000",
                                    hint="Capture its partitions.")
    else:
        raise InvalidCdcOptionError(f'"{name}" is not a table', sqlstate="42809")
    if not privileges.has_table_privilege(relid, "SELECT"):
        raise CdcPrivilegeError(f"permission denied for table {name}",
                                detail="Creating a CDC subscription needs SELECT on each of its tables.")
    if rls:
        bypass = spi.execute("SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles"
                             " WHERE oid = current_user::pg_catalog.regrole").scalar()
        owns = spi.execute("SELECT pg_catalog.pg_has_role($1, 'USAGE')", [owner], types=["oid"]).scalar()
        if not (bypass or (owns and not force_rls)):
            raise CdcPrivilegeError(
                f'table "{name}" has row-level security, which its change stream would not apply',
                detail="A change stream carries every row; only roles that bypass the table's row-level "
                       "security may subscribe to it.")
    columns = [r[0] for r in spi.execute(_COLUMNS, [relid], types=["oid"]).rows]
    if not columns:
        raise CdcStateError(f'table "{name}" has no columns to key its events by')
    if key_option is not None:
        unknown = [c for c in key_option if c not in columns]
        if unknown:
            raise InvalidCdcOptionError(f'option "key_columns": column "{unknown[0]}" of table "{name}" '
                                        "does not exist", sqlstate="42703")
    if kind == "orochi":
        return kind, key_option or []  # empty: every column, as the table has them when a row changes
    identity = _identity_columns(relid, replident)
    if identity == []:
        raise CdcStateError(
            f'table "{name}" has no usable key: no primary key or replica identity',
            detail="Its deletions and updates would not say which row they change.",
            hint=f"Add a primary key, or ALTER TABLE {name} REPLICA IDENTITY FULL (or USING INDEX).")
    if key_option is not None:
        if identity is not None and any(c not in identity for c in key_option):
            raise InvalidCdcOptionError(
                f'option "key_columns" of table "{name}" must be among its replica identity columns '
                f"({', '.join(identity)})",
                hint="Deletions carry only those columns; REPLICA IDENTITY FULL makes any column usable.")
        return kind, key_option
    # the primary key (also under REPLICA IDENTITY FULL), else the identity's
    # index, else (FULL) every column: an empty list
    return kind, _identity_columns(relid, "d") or identity or []


def _check_wal_level() -> None:
    level = spi.execute("SELECT current_setting('wal_level')").scalar()
    if level != "logical":
        raise CdcStateError(f'logical decoding requires wal_level "logical" (it is "{level}")',
                            hint="Set wal_level = logical in postgresql.conf and restart the server.")


def _check_slots() -> None:
    used, limit = spi.execute("SELECT (SELECT count(*) FROM pg_catalog.pg_replication_slots),"
                              " current_setting('max_replication_slots')::int").rows[0]
    if int(used) >= int(limit):
        raise CdcStateError(f"all replication slots are in use ({limit})", sqlstate="53400",
                            hint="Increase max_replication_slots, or drop a slot that is not needed.")


def _connects(host: str, port: int) -> str | None:
    """None when a TCP connection to host:port opens, else why not."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _check_sink(options: CdcOptions) -> None:
    """Whether the sink answers now (a TCP connection: nothing that starts
    threads runs in a backend)."""
    import os

    sink = options.sink
    if sink == "kafka":
        problems = []
        for server in str(options["bootstrap_servers"]).split(","):
            server = server.strip()
            if "://" in server:
                server = server.split("://", 1)[1]
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise InvalidCdcOptionError(f'option "bootstrap_servers": "{server}" is not host:port')
            problem = _connects(host.strip("[]"), int(port))
            if problem is None:
                return
            problems.append(f"{server}: {problem}")
        raise SinkUnreachableError("no Kafka broker of the subscription answers",
                                   detail="; ".join(problems),
                                   hint='Start the broker, or set "verify_sink": false to create it anyway.')
    if sink == "webhook":
        parts = urlsplit(options["url"])
        port = parts.port or (443 if parts.scheme == "https" else 80)
        problem = _connects(parts.hostname, port)
        if problem is not None:
            raise SinkUnreachableError(f"the webhook {parts.scheme}://{parts.netloc} does not answer",
                                       detail=problem,
                                       hint='Start the receiver, or set "verify_sink": false to create it anyway.')
    if sink == "file" and not os.path.isdir(options["directory"]):
        raise SinkUnreachableError(f'directory "{options["directory"]}" does not exist',
                                   hint='Create it (writable by orochi-sidecar), or set "verify_sink": false.')


@sql_function("create_cdc_subscription")
def create_cdc_subscription(name: str | None, tables: Any, sink: str | None, format: str | None = "debezium",
                            options: Any = None) -> int:
    """orochi.create_cdc_subscription: a new subscription, state ``created``.

    Returns:
        The subscription's id.
    """
    for label, value in (("name", name), ("sink", sink), ("format", format)):
        if value is None:
            raise InvalidCdcOptionError(f"{label} cannot be NULL")
    if not str(name).strip():
        raise InvalidCdcOptionError("a CDC subscription's name cannot be empty")
    sink = str(sink).lower()
    format = str(format).lower()
    try:
        raw = _options(options)
    except ValueError as exc:
        raise InvalidCdcOptionError(f"options are not valid JSON: {exc}") from None
    checked = check_options(sink, format, raw)
    _check_wal_level()
    relids = _relids(tables)
    keys_given = _key_columns_option(checked)
    unknown = [r for r in keys_given if r not in relids]
    if unknown:
        other = spi.execute("SELECT $1::regclass::text", [unknown[0]], types=["oid"]).scalar()
        raise InvalidCdcOptionError(f'option "key_columns" names table "{other}", which the subscription '
                                    "does not capture")
    described = [(relid, *_check_table(relid, keys_given.get(relid))) for relid in relids]
    if sink == "file":
        allowed = spi.execute("SELECT pg_catalog.pg_has_role('pg_write_server_files', 'MEMBER')").scalar()
        if not allowed:
            raise CdcPrivilegeError("permission denied to create a subscription that writes files on the server",
                                    detail="Only superusers and members of pg_write_server_files may.")
    # names are unique among all subscriptions (as among roles): a name taken
    # by another role's subscription is refused without telling whose it is
    if _find(name) is not None:
        raise DuplicateSubscriptionError(f'CDC subscription "{name}" already exists')
    _check_slots()
    if checked["verify_sink"]:
        _check_sink(checked)
    owner = spi.current_user_oid()  # the caller, not the internal statement's role
    subscription_id = int(spi.execute("SELECT pg_catalog.nextval('orochi.cdc_subscription_id_seq')",
                                      internal=True).scalar())
    dboid = int(spi.backend_info()["database_oid"])
    spi.execute(
        "INSERT INTO orochi.cdc_subscription (subscription_id, name, sink, format, options, owner, slot_name, "
        "publication_name) VALUES ($1, $2, $3, $4, $5::jsonb, $6::pg_catalog.oid::pg_catalog.regrole, $7, $8)",
        [subscription_id, name, sink, format, json.dumps(raw), owner, f"orochi_cdc_{dboid}_{subscription_id}",
         f"orochi_cdc_{subscription_id}"], types=["int4", "text", "text", "text", "text", "oid", "text", "text"],
        internal=True)
    for ordinal, (relid, kind, key) in enumerate(described):
        spi.execute("INSERT INTO orochi.cdc_subscription_table (subscription_id, relid, kind, key_columns, ordinal) "
                    "VALUES ($1, $2, $3, $4, $5)", [subscription_id, relid, kind, key, ordinal],
                    types=["int4", "oid", "text", "text[]", "int4"], internal=True)
    spi.execute("INSERT INTO orochi.cdc_stats (subscription_id) VALUES ($1)", [subscription_id], types=["int4"],
                internal=True)
    spi.execute("SELECT orochi.cdc_sync_publication($1)", [subscription_id], types=["int4"], internal=True)
    return subscription_id


def _find(name: str) -> int | None:
    """The id of the subscription called ``name`` (whoever owns it), or None."""
    found = spi.execute("SELECT subscription_id FROM orochi.cdc_subscription WHERE name = $1", [name],
                        types=["text"], internal=True).scalar()
    return None if found is None else int(found)


def _require(name: str | None, lock: bool = True) -> tuple[int, str]:
    """(id, state) of a subscription the caller may manage (it has the
    rights of the subscription's owner role, as Postgres's ownership checks
    ask); ``lock``: its row locked FOR UPDATE.

    Raises:
        SubscriptionNotFoundError, CdcPrivilegeError.
    """
    if name is None:
        raise InvalidCdcOptionError("name cannot be NULL")
    row = spi.execute("SELECT s.subscription_id, s.owner::pg_catalog.oid, s.owner::pg_catalog.text, s.state"
                      "  FROM orochi.cdc_subscription s WHERE s.name = $1" + (" FOR UPDATE" if lock else ""),
                      [name], types=["text"], internal=True).rows
    if not row:
        raise SubscriptionNotFoundError(f'CDC subscription "{name}" does not exist')
    subscription_id, owner_oid, owner, state = row[0]
    privileges.require_role_member(int(owner_oid), f'must be owner of CDC subscription "{name}"',
                                   detail=f"The subscription belongs to role {owner}.")
    return int(subscription_id), state


@sql_function("start_cdc_subscription")
def start_cdc_subscription(name: str) -> str:
    """orochi.start_cdc_subscription: created, stopped or failed → running."""
    subscription_id, state = _require(name)
    if state == "running":
        spi.notice(f'CDC subscription "{name}" is already running')
        return state
    spi.execute("UPDATE orochi.cdc_subscription SET state = 'running', state_changed_at = pg_catalog.now() "
                "WHERE subscription_id = $1", [subscription_id], types=["int4"], internal=True)
    # its slot gone (max_lag, dropped by hand): a new slot and a new snapshot
    spi.execute("UPDATE orochi.cdc_subscription s SET slot_lsn = NULL, snapshot_done = false, confirmed_lsn = NULL "
                "WHERE s.subscription_id = $1 AND s.slot_lsn IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM pg_catalog.pg_replication_slots r WHERE r.slot_name = s.slot_name)",
                [subscription_id], types=["int4"], internal=True)
    _mark_database()
    spi.execute("UPDATE orochi.cdc_subscription_table SET capturing = true WHERE subscription_id = $1",
                [subscription_id], types=["int4"], internal=True)
    spi.execute("UPDATE orochi.cdc_stats SET current_error = NULL WHERE subscription_id = $1",
                [subscription_id], types=["int4"], internal=True)
    return "running"


@sql_function("stop_cdc_subscription")
def stop_cdc_subscription(name: str) -> str:
    """orochi.stop_cdc_subscription: → stopped (the worker ends; the slot
    stays and keeps the changes for the next start)."""
    subscription_id, state = _require(name)
    if state in ("stopped", "created", "failed"):
        spi.notice(f'CDC subscription "{name}" is not running ({state})')
        return state
    spi.execute("UPDATE orochi.cdc_subscription SET state = 'stopped', state_changed_at = pg_catalog.now() "
                "WHERE subscription_id = $1", [subscription_id], types=["int4"], internal=True)
    return "stopped"


@sql_function("drop_cdc_subscription")
def drop_cdc_subscription(name: str | None, if_exists: bool | None = False) -> None:
    """orochi.drop_cdc_subscription: the subscription, its statistics, its
    replication slot and publication.  The slot's drop is not undone by a
    ROLLBACK (as ``pg_drop_replication_slot``'s is not)."""
    try:
        subscription_id, _ = _require(name)
    except SubscriptionNotFoundError:
        if if_exists:
            spi.notice(f'CDC subscription "{name}" does not exist, skipping')
            return None
        raise
    slot, publication = spi.execute(
        "DELETE FROM orochi.cdc_subscription WHERE subscription_id = $1 RETURNING slot_name, publication_name",
        [subscription_id], types=["int4"], internal=True).rows[0]
    spi.execute("SELECT orochi.cdc_drop_replication($1, $2)", [slot, publication], types=["text", "text"],
                internal=True)
    return None


def _mark_database() -> None:
    """Make this database's writers of orochi tables ask which tables are
    captured (orochi_fdw/cdc/capture.py)."""
    from orochi_fdw.cdc.capture import make_marker

    info = spi.backend_info()
    make_marker(info["data_directory"], info["database_oid"])
    # writers that skip the capture check (the bridge's one-row INSERT path)
    # learn it at this transaction's commit
    spi.invalidate_relcache(0)


@sql_function("cdc_message_key")
def cdc_message_key() -> bytes:
    """orochi.cdc_message_key: the key signing orochi tables' change messages."""
    from orochi_fdw.cdc.capture import load_or_create_key

    allowed = spi.execute("SELECT rolsuper OR rolreplication FROM pg_catalog.pg_roles"
                          " WHERE oid = current_user::pg_catalog.regrole").scalar()
    if not allowed:
        raise CdcPrivilegeError("permission denied to read the change message key",
                                detail="Only roles with the REPLICATION attribute and superusers may.")
    if spi.execute("SELECT EXISTS (SELECT 1 FROM orochi.cdc_subscription_table WHERE capturing)",
                   internal=True).scalar():
        _mark_database()  # (a restored data directory may lack it)
    return load_or_create_key(spi.backend_info()["data_directory"])


_LIST = """
SELECT s.subscription_id, s.name, s.owner::pg_catalog.oid, s.sink, s.format,
       (SELECT coalesce(pg_catalog.array_agg(t.relid ORDER BY t.ordinal), '{}')
          FROM orochi.cdc_subscription_table t WHERE t.subscription_id = s.subscription_id),
       CASE WHEN s.state = 'running' AND NOT orochi.cdc_is_running(s.subscription_id)
            THEN 'starting' ELSE s.state END,
       s.slot_name, s.snapshot_done, s.created_at, orochi.cdc_masked_options(s.options)::pg_catalog.text
  FROM orochi.cdc_subscription s
 WHERE pg_catalog.pg_has_role($1, s.owner::pg_catalog.oid, 'USAGE')
 ORDER BY s.subscription_id
"""


@sql_function("list_cdc_subscriptions")
def list_cdc_subscriptions() -> list[tuple]:
    """orochi.list_cdc_subscriptions: the subscriptions the caller has the
    rights of the owner of (superusers: all), options masked."""
    rows = spi.execute(_LIST, [spi.current_user_oid()], types=["oid"], internal=True).rows
    return [(sid, name, owner, sink, fmt, [int(t) for t in tables], status, slot, done, created,
             None if options is None else json.loads(options))
            for sid, name, owner, sink, fmt, tables, status, slot, done, created, options in rows]


_STATS = """
SELECT s.name,
       CASE WHEN s.state = 'running' AND NOT orochi.cdc_is_running(s.subscription_id)
            THEN 'starting' ELSE s.state END,
       coalesce(st.events_sent, 0), coalesce(st.snapshot_events, 0), coalesce(st.transactions, 0),
       coalesce(st.bytes_sent, 0), coalesce(s.confirmed_lsn, s.slot_lsn)::pg_catalog.text, st.last_commit_time,
       CASE WHEN r.slot_name IS NULL THEN NULL
            ELSE greatest(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(),
                                     coalesce(s.confirmed_lsn, r.confirmed_flush_lsn)), 0) END,
       CASE WHEN st.pending_since IS NULL THEN 0
            ELSE greatest(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - st.pending_since),
                                     0)::float8 END,
       CASE WHEN r.slot_name IS NULL THEN NULL
            ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.restart_lsn) END,
       r.wal_status,
       coalesce(st.errors, 0), st.current_error, st.last_error, st.last_error_at, st.worker
  FROM orochi.cdc_subscription s
  LEFT JOIN orochi.cdc_stats st ON st.subscription_id = s.subscription_id
  LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name
 WHERE s.subscription_id = $1
"""


@sql_function("cdc_subscription_stats")
def cdc_subscription_stats(name: str | None) -> list[tuple]:
    """orochi.cdc_subscription_stats: one row of progress and health, for
    roles with the rights of the subscription's owner."""
    subscription_id, _ = _require(name, lock=False)
    return [tuple(r) for r in spi.execute(_STATS, [subscription_id], types=["int4"], internal=True).rows]
