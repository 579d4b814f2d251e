"""Streaming replicas, base backups and point-in-time recovery for tests,
the demo and the benchmarks, on top of :class:`PostgresCluster`.

Everything runs on 127.0.0.1 with PostgreSQL's own programs
(``pg_basebackup``, ``pg_ctl promote``, ``pg_rewind``), as the same OS user
as the clusters (``postgres`` when the caller is root)::

    primary = PostgresCluster("primary", settings=REPLICATION_SETTINGS).start()
    standby = make_standby(primary)                 # pg_basebackup -R, started
    ...writes on the primary...
    wait_for_catchup(primary, standby)              # replayed up to the primary's LSN
    promote(standby)                                # a primary now
    rewind(primary, standby)                        # the old primary follows it

Point-in-time recovery::

    archive = enable_archiving(primary)             # archive_command into a folder
    backup = base_backup(primary)                   # a stopped cluster
    ...writes, note an LSN or a time...
    switch_wal(primary)                             # the segment holding it archived
    recover(backup, archive, target_lsn=lsn)        # started, promoted at the target

Waiting never sleeps for a fixed time: it polls the server's own positions
(``pg_last_wal_replay_lsn``, ``pg_stat_archiver``) with a deadline that only
guards against a test that would otherwise hang.

This module must not import pytest.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from orochi_fdw.testing.cluster import ClusterError, PostgresCluster

__all__ = [
    "REPLICATION_SETTINGS",
    "make_standby",
    "base_backup",
    "wait_for_catchup",
    "wait_for_lsn",
    "current_lsn",
    "promote",
    "rewind",
    "enable_archiving",
    "switch_wal",
    "wait_for_archived",
    "recover",
]

#: Settings of a primary that standbys follow and pg_rewind can rewind:
#: full page writes and hint bits in the WAL (pg_rewind needs both), WAL kept
#: for standbys that fall behind, hot standby for queries on the standby.
REPLICATION_SETTINGS: dict[str, Any] = {
    "full_page_writes": True,
    "wal_log_hints": True,
    "wal_keep_size": "1GB",
    "hot_standby": True,
    "max_standby_streaming_delay": "-1",
}


def current_lsn(cluster: PostgresCluster) -> str:
    """The primary's current WAL insert position."""
    return cluster.execute("SELECT pg_current_wal_lsn()::text")[0][0]


def _adopt(cluster: PostgresCluster) -> PostgresCluster:
    """Make a cluster whose data directory was filled by a copy (base backup)
    usable by the harness: nothing to initdb, files owned by the server user."""
    cluster.initialized = True
    return cluster


def base_backup(primary: PostgresCluster, name: str = "backup", *, standby: bool = False,
                settings: Mapping[str, Any] | None = None, slot: str | None = None,
                timeout: float = 600) -> PostgresCluster:
    """``pg_basebackup`` of a running primary into a new, stopped cluster.

    Args:
        primary: the cluster to copy (running).
        name: the new cluster's label.
        standby: write ``standby.signal`` and ``primary_conninfo`` (``-R``).
        settings: per-start settings of the new cluster (default
            :data:`REPLICATION_SETTINGS`, so that it can be promoted, rewound
            and followed in turn).
        slot: a physical replication slot to stream from (created if missing).
        timeout: seconds before giving up.

    Returns:
        The new cluster, not started (its data directory is the backup).
    """
    cluster = PostgresCluster(name, settings=dict(REPLICATION_SETTINGS if settings is None else settings),
                              bindir=primary.bindir)
    args = [cluster.bin("pg_basebackup"), "-D", cluster.datadir, "-h", primary.host,
            "-p", str(primary.port), "-U", primary.user, "-X", "stream", "-c", "fast",
            "--no-sync"]
    if standby:
        args.append("-R")
    if slot:
        args += ["-S", slot, "-C"] if not primary.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)) else ["-S", slot]
    try:
        cluster._run(args, timeout=timeout)
    except Exception:
        cluster.cleanup()
        raise
    return _adopt(cluster)


def make_standby(primary: PostgresCluster, name: str = "standby", *,
                 settings: Mapping[str, Any] | None = None, slot: str | None = None,
                 start: bool = True) -> PostgresCluster:
    """A streaming standby of ``primary`` (``pg_basebackup -R``), started
    unless ``start=False``; it accepts read-only queries once consistent."""
    standby = base_backup(primary, name, standby=True, settings=settings, slot=slot)
    if start:
        standby.start()
    return standby


def _in_recovery(cluster: PostgresCluster) -> bool:
    return bool(cluster.execute("SELECT pg_is_in_recovery()")[0][0])


def wait_for_lsn(standby: PostgresCluster, lsn: str, *, timeout: float = 120) -> None:
    """Wait until ``standby`` has replayed the WAL up to ``lsn``.

    Raises:
        ClusterError: not there after ``timeout`` seconds (with both positions).
    """
    deadline = time.monotonic() + timeout
    while True:
        replayed, done = standby.execute(
            "SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0]
        if done:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"{standby.name} replayed up to {replayed}, not {lsn}, after {timeout}s\n"
                               f"--- server log tail ---\n{standby.log_tail()}")
        time.sleep(0.02)


def wait_for_catchup(primary: PostgresCluster, standby: PostgresCluster, *,
                     timeout: float = 120) -> str:
    """Wait until ``standby`` has replayed everything ``primary`` had written
    when this was called; returns that LSN."""
    lsn = current_lsn(primary)
    wait_for_lsn(standby, lsn, timeout=timeout)
    return lsn


def promote(standby: PostgresCluster, *, timeout: float = 120) -> None:
    """Promote a standby (``pg_ctl promote``) and wait until it takes writes."""
    standby._run([standby.bin("pg_ctl"), "promote", "-D", standby.datadir, "-w",
                  "-t", str(int(timeout))], timeout=timeout + 30)
    deadline = time.monotonic() + timeout
    while _in_recovery(standby):
        if time.monotonic() > deadline:
            raise ClusterError(f"{standby.name} still in recovery after promotion\n{standby.log_tail()}")
        time.sleep(0.02)


def rewind(old_primary: PostgresCluster, new_primary: PostgresCluster, *,
           start: bool = True, timeout: float = 600) -> None:
    """Re-attach a former primary as a standby of ``new_primary``: stop it
    (cleanly, as pg_rewind needs), checkpoint the new primary, ``pg_rewind
    -R`` the old one from it (which writes ``standby.signal`` and
    ``primary_conninfo``), start it. pg_rewind copies every file that is no
    relation file whole from the source, the columnar folder included, and
    removes the files the source does not have."""
    if old_primary.is_running():
        old_primary.stop("fast")
    # pg_rewind reads the source's timeline from its control file, which a
    # fresh promotion updates only at its first checkpoint
    new_primary.execute("CHECKPOINT")
    source = new_primary.dsn("postgres")
    old_primary._run([old_primary.bin("pg_rewind"), "-D", old_primary.datadir,
                      f"--source-server={source}", "-R", "--no-sync"], timeout=timeout)
    if start:
        old_primary.start()


# ------------------------------------------------------------------ archiving and PITR


def enable_archiving(primary: PostgresCluster, archive_dir: str | None = None) -> str:
    """Archive every finished WAL segment of ``primary`` into a folder
    (``archive_command`` copying there; restarts the server, since
    ``archive_mode`` needs it). Returns the folder."""
    folder = archive_dir or os.path.join(primary.base, "archive")
    os.makedirs(folder, exist_ok=True)
    if primary._as_root:
        os.chown(folder, primary._uid, primary._gid)
    command = f"test ! -f '{folder}/%f' && cp '%p' '{folder}/%f'"
    primary.restart({"archive_mode": "on", "archive_command": command})
    return folder


def switch_wal(primary: PostgresCluster) -> str:
    """End the current WAL segment (so that it is archived); returns the
    name of the segment that was ended."""
    return primary.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]


def wait_for_archived(primary: PostgresCluster, segment: str, *, timeout: float = 120) -> None:
    """Wait until ``segment`` (a WAL file name) or a later one is archived."""
    deadline = time.monotonic() + timeout
    while True:
        last, failed = primary.execute(
            "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")[0]
        if last is not None and last[8:] >= segment[8:]:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"{primary.name}: segment {segment} not archived after {timeout}s "
                               f"(last archived {last}, last failed {failed})\n{primary.log_tail()}")
        time.sleep(0.02)


def recover(backup: PostgresCluster, archive_dir: str, *, target_lsn: str | None = None,
            target_time: str | None = None, target_xid: str | None = None,
            inclusive: bool = True, timeout: float = 300) -> None:
    """Point-in-time recovery: start ``backup`` (a stopped cluster made by
    :func:`base_backup`) replaying the archived WAL up to the target, then
    promote it there; returns once it takes writes. Without a target it
    replays the whole archive."""
    settings: dict[str, Any] = {
        "restore_command": f"cp '{archive_dir}/%f' '%p'",
        "recovery_target_action": "promote",
        "recovery_target_inclusive": bool(inclusive),
        "archive_mode": "off",
    }
    if target_lsn is not None:
        settings["recovery_target_lsn"] = target_lsn
    if target_time is not None:
        settings["recovery_target_time"] = target_time
    if target_xid is not None:
        settings["recovery_target_xid"] = target_xid
    signal = os.path.join(backup.datadir, "recovery.signal")
    backup._write_file(signal, "")
    backup.start(settings, timeout=timeout)
    deadline = time.monotonic() + timeout
    while _in_recovery(backup):
        if time.monotonic() > deadline:
            raise ClusterError(f"{backup.name} still recovering after {timeout}s\n{backup.log_tail()}")
        time.sleep(0.05)
    # the recovery settings must not apply at a later restart
    for name in ("restore_command", "recovery_target_action", "recovery_target_inclusive",
                 "recovery_target_lsn", "recovery_target_time", "recovery_target_xid"):
        backup.settings.pop(name, None)
