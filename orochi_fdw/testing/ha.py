"""An HA group on 127.0.0.1 for tests and the benchmark: a PostgreSQL
primary, its streaming standbys (:mod:`replica`) and one orochi-sidecar
subprocess per member running the ``ha`` duty, forming a Raft group::

    group = HaGroup(standbys=2).start()       # members m1 (primary), m2, m3
    group.wait_ready()                        # a leader, m1 primary, standbys following
    group.kill_postmaster("m1")               # kill -9 of the primary's postmaster
    group.wait_failover(previous_generation)  # a new primary takes writes
    group.kill_sidecar(group.leader())        # kill -9 of a sidecar
    group.partition("m2") / group.heal("m2")  # the member drops all Raft traffic

Every wait polls the sidecars' REST API or the servers; the deadlines only
keep a broken test from hanging.

This module must not import pytest.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import psycopg

from orochi_fdw.ha.state import PARTITION_ENV
from orochi_fdw.testing import replica
from orochi_fdw.testing.cluster import PostgresCluster, find_free_port

SIDECAR = os.path.join(os.path.dirname(sys.executable), "orochi-sidecar")

#: primary settings: WAL for standbys and pg_rewind, quick detection of a dead peer
HA_SETTINGS: dict[str, Any] = {
    **replica.REPLICATION_SETTINGS,
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "100ms",
    "wal_sender_timeout": "5s",
    "wal_receiver_timeout": "5s",
}


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "a condition",
               interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something true; returns that."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - polled again
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


class SidecarProcess:
    """One orochi-sidecar subprocess; stderr collected line by line."""

    def __init__(self, config_path: str, env: dict[str, str], log_path: str):
        self.config_path = config_path
        self.env = env
        self.log_path = log_path
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self) -> "SidecarProcess":
        self.lines = []
        self.proc = subprocess.Popen([SIDECAR, "--config", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **self.env})
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        match = self.wait_for_log(r"REST API listening on http://127\.0\.0\.1:(\d+)")
        self.port = int(match.group(1))
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in proc.stderr:
                self.lines.append(line.rstrip("\n"))
                log.write(line)
                log.flush()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for_log(self, pattern: str, timeout: float = 60.0, start: int = 0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                match = regex.search(line)
                if match:
                    return match
            if self.proc is not None and self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise TimeoutError(f"no log line matches {pattern!r}; log:\n" + "\n".join(self.lines[-60:]))

    def get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
            return json.loads(response.read().decode())

    def kill9(self) -> None:
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)

    def sigstop(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def sigcont(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def terminate(self, timeout: float = 30.0) -> int | None:
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)


class HaGroup:
    """A primary, ``standbys`` standbys and their sidecars (members m1, m2, ...).

    Attributes:
        clusters: member id -> its :class:`PostgresCluster`.
        sidecars: member id -> its :class:`SidecarProcess`.
    """

    def __init__(self, standbys: int = 2, *, name: str = "ha", group: str = "default",
                 synchronous_mode: str = "quorum", lease_ttl: float = 3.0, extra: str = "",
                 settings: dict[str, Any] | None = None, databases: tuple[str, ...] = (),
                 groups: dict[str, int] | None = None, ha_options: dict[str, Any] | None = None):
        """``groups``: node group -> number of standbys (members ``<group>-1``
        (the primary), ``<group>-2`` ...); without it one group ``group`` of
        members m1 (the primary), m2 ...  ``ha_options``: more ``[ha]``
        settings of every sidecar (``raft_min_timeout`` ...)."""
        self.name = name
        self.databases = databases
        if groups is None:
            self.group = group
            self.member_group = {f"m{i + 1}": group for i in range(standbys + 1)}
        else:
            self.group = next(iter(groups))
            self.member_group = {f"{g}-{i + 1}": g for g, n in groups.items() for i in range(n + 1)}
        self.members = list(self.member_group)
        self.synchronous_mode = synchronous_mode
        self.lease_ttl = lease_ttl
        self.ha_options = dict(ha_options or {})
        self.extra = extra
        self.settings = {**HA_SETTINGS, **(settings or {})}
        self.base = tempfile.mkdtemp(prefix=f"orochi-{name}-")
        self.clusters: dict[str, PostgresCluster] = {}
        self.sidecars: dict[str, SidecarProcess] = {}
        self.raft_ports = {m: find_free_port() for m in self.members}
        # the group's Raft traffic is encrypted and authenticated, as in production
        self.raft_password_file = os.path.join(self.base, "raft.secret")
        with open(os.open(self.raft_password_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")

    def group_members(self, group: str | None = None) -> list[str]:
        group = group or self.group
        return [m for m in self.members if self.member_group[m] == group]

    def groups(self) -> list[str]:
        return list(dict.fromkeys(self.member_group.values()))

    # ------------------------------------------------------------------ setup

    def start(self) -> "HaGroup":
        for group in self.groups():
            first, *standbys = self.group_members(group)
            primary = PostgresCluster(f"{self.name}-{first}", settings=self.settings)
            primary.start()
            self.clusters[first] = primary
            for db in self.databases:  # with orochi, before the standbys copy the primary
                primary.create_database(db)
            for m in standbys:
                self.clusters[m] = replica.make_standby(primary, f"{self.name}-{m}", settings=self.settings)
        for m in self.members:
            self.sidecars[m] = SidecarProcess(self.write_config(m), self.sidecar_env(m),
                                              os.path.join(self.base, f"sidecar-{m}.log"))
        for m in self.members:
            self.sidecars[m].start()
        return self

    def peers(self) -> list[str]:
        return [f"{m}=127.0.0.1:{self.raft_ports[m]}" for m in self.members]

    def config_text(self, member: str, **overrides: Any) -> str:
        c = self.clusters[member]
        ha = {
            "member_id": member,
            "peers": self.peers(),
            "node_group": self.member_group[member],
            "initial_role": "primary" if member == self.group_members(self.member_group[member])[0] else "standby",
            "data_dir": c.datadir,
            "journal_dir": os.path.join(self.base, f"raft-{member}"),
            "pg_bindir": c.bindir,
            "pg_log": c.logfile,
            "synchronous_mode": self.synchronous_mode,
            "lease_ttl": self.lease_ttl,
            "metadata_databases": list(self.databases),
            "raft_password_file": self.raft_password_file,
            **self.ha_options,
            **overrides,
        }
        # the sidecar's database: the first with orochi (its executor counters), else postgres
        dbname = self.databases[0] if self.databases else "postgres"
        lines = [f'dsn = "host=127.0.0.1 port={c.port} user=postgres dbname={dbname}"',
                 'log_level = "info"', 'duties = ["ha"]', "[http]", "port = 0", "[ha]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in ha.items()]
        return "\n".join(lines) + "\n" + self.extra

    def write_config(self, member: str, **overrides: Any) -> str:
        path = os.path.join(self.base, f"sidecar-{member}.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.config_text(member, **overrides))
        return path

    def partition_file(self, member: str) -> str:
        return os.path.join(self.base, f"partition-{member}")

    def sidecar_env(self, member: str) -> dict[str, str]:
        return {PARTITION_ENV: self.partition_file(member)}

    def cleanup(self) -> None:
        for s in self.sidecars.values():
            try:
                s.sigcont()
            except Exception:  # noqa: BLE001
                pass
            try:
                s.kill9()
            except Exception:  # noqa: BLE001
                pass
        stoppers = [threading.Thread(target=c.stop, args=("immediate",)) for c in self.clusters.values()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(120)
        for c in self.clusters.values():
            c.cleanup()
        if os.environ.get("OROCHI_KEEP_CLUSTER") != "1":
            shutil.rmtree(self.base, ignore_errors=True)

    def add_standby(self, member: str, group: str | None = None) -> "SidecarProcess":
        """A new member of ``group``: a standby made from the group's current
        primary and its sidecar's configuration (every member in ``ha.peers``),
        not started: add it to the Raft group first (``--once member-add``)."""
        group = group or self.group
        primary = self.primary(group=group)
        self.member_group[member] = group
        self.members.append(member)
        self.raft_ports[member] = find_free_port()
        self.clusters[member] = replica.make_standby(self.clusters[primary], f"{self.name}-{member}",
                                                     settings=self.settings)
        self.sidecars[member] = SidecarProcess(self.write_config(member), self.sidecar_env(member),
                                               os.path.join(self.base, f"sidecar-{member}.log"))
        return self.sidecars[member]

    def forget_member(self, member: str) -> None:
        """Stop a member's sidecar and PostgreSQL and drop it from this group
        (after ``--once member-remove``)."""
        self.sidecars.pop(member).kill9()
        cluster = self.clusters.pop(member)
        cluster.stop("immediate")
        cluster.cleanup()
        self.members.remove(member)
        del self.member_group[member]

    def __enter__(self) -> "HaGroup":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ looking

    def any_sidecar(self, exclude: tuple[str, ...] = ()) -> SidecarProcess:
        for m in self.members:
            s = self.sidecars[m]
            if m not in exclude and s.alive() and not os.path.exists(self.partition_file(m)):
                return s
        raise RuntimeError("no sidecar running")

    def state(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        return self.any_sidecar(exclude).get("/cluster")

    def group_state(self, exclude: tuple[str, ...] = (), group: str | None = None) -> dict[str, Any] | None:
        return self.state(exclude)["groups"].get(group or self.group)

    def leader(self, exclude: tuple[str, ...] = ()) -> str | None:
        return self.any_sidecar(exclude).get("/raft/leader")["leader"]

    def primary(self, exclude: tuple[str, ...] = (), group: str | None = None) -> str:
        return self.group_state(exclude, group)["primary"]

    def generation(self, exclude: tuple[str, ...] = (), group: str | None = None) -> int:
        return self.group_state(exclude, group)["generation"]

    def in_recovery(self, member: str) -> bool | None:
        try:
            with psycopg.connect(self.clusters[member].dsn("postgres"), autocommit=True, connect_timeout=2) as c:
                return c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error:
            return None

    def writable(self, member: str) -> bool:
        """Whether the member's server acknowledges a write now: a commit
        that waits for synchronous standbys longer than a few seconds (its
        wait cancelled, the commit not acknowledged as durable) is not.

        The wait is cancelled from the client: statement_timeout does not
        reach it (PostgreSQL stops the statement's timer before the commit
        waits for the standbys)."""
        notices: list[str] = []
        try:
            with psycopg.connect(self.clusters[member].dsn("postgres"), autocommit=True, connect_timeout=2,
                                 options="-c statement_timeout=5000") as c:
                c.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
                for statement, params in (
                        ("CREATE TABLE IF NOT EXISTS ha_probe (member text, at timestamptz DEFAULT now())", None),
                        ("INSERT INTO ha_probe (member) VALUES (%s)", (member,))):
                    timer = threading.Timer(5.0, c.cancel_safe)
                    timer.start()
                    try:
                        c.execute(statement, params)
                    finally:
                        timer.cancel()
        except psycopg.Error:
            return False
        return not any("synchronous replication" in n for n in notices)

    def streaming(self, primary: str) -> set[str]:
        """Members streaming from ``primary`` (pg_stat_replication's application_name)."""
        with psycopg.connect(self.clusters[primary].dsn("postgres"), autocommit=True, connect_timeout=2) as c:
            return {r[0] for r in c.execute("SELECT application_name FROM pg_stat_replication "
                                             "WHERE state = 'streaming'").fetchall()}

    def synchronous(self, primary: str) -> set[str]:
        """Members that are synchronous candidates of ``primary`` (sync_state quorum or sync)."""
        with psycopg.connect(self.clusters[primary].dsn("postgres"), autocommit=True, connect_timeout=2) as c:
            return {r[0] for r in c.execute("SELECT application_name FROM pg_stat_replication "
                                             "WHERE sync_state IN ('quorum', 'sync')").fetchall()}

    def multihost_dsn(self, dbname: str = "postgres", group: str | None = None, **extra: Any) -> str:
        members = self.group_members(group)
        hosts = ",".join("127.0.0.1" for _ in members)
        ports = ",".join(str(self.clusters[m].port) for m in members)
        params = {"host": hosts, "port": ports, "user": "postgres", "dbname": dbname,
                  "target_session_attrs": "read-write", "connect_timeout": "2", **extra}
        return " ".join(f"{k}={v}" for k, v in params.items())

    # ------------------------------------------------------------------ waiting

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Until every node group has a primary that takes writes and every
        other member of the group streams from it in recovery (as a
        synchronous candidate in quorum mode); returns the primary of the
        first group."""
        def ready() -> str | None:
            state = self.state()
            if set(state["members"]) != set(self.members):
                return None
            for group in self.groups():
                g = state["groups"].get(group)
                if not g:
                    return None
                p = g["primary"]
                others = set(self.group_members(group)) - {p}
                if not self.writable(p) or not others <= self.streaming(p):
                    return None
                if others and self.synchronous_mode == "quorum" and not others <= self.synchronous(p):
                    return None
            return state["groups"][self.group]["primary"]
        return wait_until(ready, timeout, "the HA group to be ready")

    def wait_leader(self, exclude: tuple[str, ...] = (), timeout: float = 60.0) -> str:
        def elected() -> str | None:
            leader = self.leader(exclude)
            return leader if leader and leader not in exclude else None
        return wait_until(elected, timeout, "a Raft leader")

    def wait_failover(self, generation: int, exclude: tuple[str, ...] = (), timeout: float = 60.0,
                      group: str | None = None) -> str:
        """Until the group's generation is past ``generation``; returns the new primary."""
        def moved() -> str | None:
            g = self.group_state(exclude, group)
            return g["primary"] if g and g["generation"] > generation else None
        return wait_until(moved, timeout, f"a failover past generation {generation}")

    # ------------------------------------------------------------------ faults

    def kill_postmaster(self, member: str) -> int:
        """kill -9 of the member's postmaster (its children exit by themselves)."""
        pid = self.clusters[member].postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_sidecar(self, member: str) -> None:
        self.sidecars[member].kill9()

    def restart_sidecar(self, member: str) -> None:
        self.sidecars[member].start()

    def partition(self, member: str) -> None:
        open(self.partition_file(member), "w").close()

    def heal(self, member: str) -> None:
        try:
            os.unlink(self.partition_file(member))
        except FileNotFoundError:
            pass
