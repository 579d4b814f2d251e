"""Resolving the prepared transactions a coordinator left on its workers.

Citus's algorithm, per worker, in this order:

1. P = this coordinator's prepared transactions on the worker (gids
   ``orochi_<coordinator id>_<xid>_<node id>``);
2. the status of each one's coordinator transaction (``pg_xact_status`` of
   the xid in its gid): one still in progress is left alone;
3. R = the commit records (``orochi.dist_transaction``) of that worker;
4. Q = the prepared transactions again.

A gid in both P and Q is committed if its record exists, else rolled
back -- the record alone is the commit decision.  (The xid's status is
only asked to leave alone a transaction still running, or one that
committed after the snapshot the records are read with: after a crash that lost
the tail of the coordinator's WAL, an xid a lost transaction had used is
handed out again, and its new owner's commit says nothing about the
prepared transaction named after it.)  A record whose gid
is in neither P nor Q was resolved already and is deleted; a gid only in Q
appeared meanwhile and waits for the next round.  Running it again is
harmless: recovery is idempotent.
"""

from __future__ import annotations

from psycopg import sql

from orochi_fdw.bridge import spi
from orochi_fdw.cluster import connection as C
from orochi_fdw.cluster import metadata
from orochi_fdw.cluster.errors import NodeConnectionError, RemoteError
from orochi_fdw.cluster.transaction import parse_gid


def _prepared(session: C.Session, coordinator_id: int) -> set[str]:
    (res,) = C.drive([(session, C.command(
        session, b"SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE database = current_database()"
                 b" AND gid LIKE $1", [f"orochi\\_{coordinator_id}\\_%".encode()]))])
    return {res[0].get_value(r, 0).decode() for r in range(res[0].ntuples)}


def recover() -> int:
    """Resolve this coordinator's prepared transactions on every active
    node; returns how many were committed or rolled back.  A node that
    cannot be reached is skipped with a WARNING."""
    metadata.catalog("LOCK TABLE orochi.dist_transaction IN SHARE UPDATE EXCLUSIVE MODE")
    coordinator_id = metadata.coordinator_id()
    user, database = spi.execute("SELECT current_user::text, current_database()::text").rows[0]
    total = 0
    for node in metadata.active_nodes():
        try:
            sessions = C._connect_all([node], str(user), str(database), C.user_mapping(),
                                      C.connect_timeout_ms() / 1000.0)
        except NodeConnectionError as exc:
            spi.log("warning", f"orochi: transaction recovery skipped node {node.name}: {exc}")
            continue
        session = sessions[0]
        try:
            total += _recover_node(session, node.node_id, coordinator_id)
        except (RemoteError, NodeConnectionError) as exc:
            spi.log("warning", f"orochi: transaction recovery failed on node {node.name}: {exc}")
        finally:
            session.close()
    return total


def _recover_node(session: C.Session, node_id: int, coordinator_id: int) -> int:
    first = _prepared(session, coordinator_id)
    xids = {}
    for gid in first:
        parsed = parse_gid(gid)
        if parsed is not None:
            xids[gid] = parsed[1]
    status = {}
    if xids:
        for gid, st in spi.execute(
                # an xid past the newest assigned (this transaction's,
                # assigned here) belonged to a transaction a crash lost
                # before its commit: aborted.  One that committed after the
                # snapshot the records are read with (a REPEATABLE READ
                # caller) would have its record unseen: it waits for the
                # next round
                "SELECT g, CASE WHEN x::text::xid8 >= pg_catalog.pg_current_xact_id()"
                "               THEN 'aborted'"
                "               WHEN pg_catalog.pg_xact_status(x::text::xid8) = 'committed'"
                "                AND NOT pg_catalog.pg_visible_in_snapshot(x::text::xid8, pg_catalog.pg_current_snapshot())"
                "               THEN 'in progress'"
                "               ELSE pg_catalog.pg_xact_status(x::text::xid8) END"
                "  FROM unnest($1::text[], $2::bigint[]) AS u(g, x)",
                [list(xids), list(xids.values())], types=["text[]", "bigint[]"]).rows:
            status[gid] = st
    records = {r[0] for r in metadata.catalog("SELECT gid FROM orochi.dist_transaction WHERE node_id = $1",
                                         [node_id], types=["integer"]).rows}
    second = _prepared(session, coordinator_id)
    done = 0
    resolved: list[str] = []
    for gid in sorted(first & second):
        st = status.get(gid)
        if st == "in progress":
            continue
        commit = gid in records
        verb = b"COMMIT PREPARED " if commit else b"ROLLBACK PREPARED "
        try:
            C.drive([(session, C.command(session, verb + sql.Literal(gid).as_bytes(None)))])
        except RemoteError as exc:
            if exc.sqlstate != "42704":  # 42704: resolved meanwhile by someone else
                raise
        else:
            spi.log("log", f"orochi: recovered prepared transaction {gid} on node {session.node.name}: "
                           f"{'committed' if commit else 'rolled back'}")
            done += 1
        if gid in records:
            resolved.append(gid)
    # a record whose gid is no longer prepared was resolved; one whose gid
    # appeared only in the second read waits for the next round
    resolved += [g for g in records if g not in second]
    if resolved:
        metadata.catalog("DELETE FROM orochi.dist_transaction WHERE node_id = $1 AND gid = ANY ($2::text[])",
                    [node_id, resolved], types=["integer", "text[]"])
    return done


def recover_at_start() -> None:
    """Once per server start: the first backend of a superuser that uses
    distributed tables resolves what a crash may have left (errors become a
    WARNING).  Only a superuser's: recovery connects to the workers as the
    current user, and finishing another role's prepared transaction needs a
    superuser there (the sidecar's recovery duty connects as one)."""
    if not spi.is_superuser():
        return
    row = metadata.catalog("SELECT recovered_for IS DISTINCT FROM pg_catalog.pg_postmaster_start_time()"
                           " FROM orochi.dist_coordinator").rows
    if not row or not row[0][0]:
        return
    try:
        with spi.subtransaction():
            claimed = metadata.catalog(
                "UPDATE orochi.dist_coordinator SET recovered_for = pg_catalog.pg_postmaster_start_time()"
                " WHERE recovered_for IS DISTINCT FROM pg_catalog.pg_postmaster_start_time()").rowcount
            if claimed:
                recover()
    except Exception as exc:  # noqa: BLE001 - never fail the user's statement for this
        spi.log("warning", f"orochi: transaction recovery at start-up failed: {exc}")
