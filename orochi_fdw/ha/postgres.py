"""What the ha duty does to PostgreSQL: look at it, fence it, promote it,
point it at a primary, rewind it, start and stop it.

SQL goes through psycopg with every value quoted by psycopg.sql (ALTER
SYSTEM takes no parameters); programs (pg_ctl, pg_rewind) run as the
server's OS user (through runuser when the sidecar is root).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

logger = logging.getLogger("orochi.sidecar.ha")

#: environment variables that would steer the Python embedded in the backends
_STRIPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE",
                 "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__")


def member_conninfo(base_dsn: str, host: str, port: int, **extra: Any) -> str:
    """The sidecar's DSN (user, database, options) aimed at another server."""
    params = conninfo_to_dict(base_dsn)
    params.pop("hostaddr", None)
    params.update(host=host, port=str(port))
    params.update({k: str(v) for k, v in extra.items()})
    return make_conninfo(**params)


def connect(conninfo: str, timeout: float = 2.0) -> psycopg.Connection:
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, int(round(timeout))),
                           application_name="orochi-sidecar-ha")


def status(conn: psycopg.Connection) -> dict[str, Any]:
    """Role and WAL positions of a server."""
    row = conn.execute(
        "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'"
        " OR coalesce(current_setting('orochi.fence_writes', true), 'off') = 'on',"
        " CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END::text,"
        " CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,"
        " current_setting('primary_conninfo'), current_setting('synchronous_standby_names')").fetchone()
    return {"in_recovery": row[0], "read_only": row[1], "receive_lsn": row[2], "replay_lsn": row[3],
            "primary_conninfo": row[4], "synchronous_standby_names": row[5]}


def lsn_value(lsn: str | None) -> int:
    if not lsn:
        return -1
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def _alter_system(conn: psycopg.Connection, name: str, value: str | None) -> None:
    if value is None:
        conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
    else:
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))


def _reload_and_wait(conn: psycopg.Connection, conninfo: str, name: str, expected: str,
                     timeout: float = 5.0) -> bool:
    """pg_reload_conf(), then wait until a new session sees ``name`` = ``expected``
    (the postmaster has re-read the files, so every later session has it)."""
    conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect(conninfo) as fresh:
            if fresh.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] == expected:
                return True
        time.sleep(0.01)
    return False


#: what fencing turns on: default_transaction_read_only tells clients, and
#: orochi.fence_writes makes every transaction read-only whatever it asks
#: for (BEGIN READ WRITE cannot get around it)
FENCE_SETTINGS = ("orochi.fence_writes", "default_transaction_read_only")


def fence(conninfo: str) -> None:
    """Make a primary refuse writes: FENCE_SETTINGS on in
    postgresql.auto.conf, reloaded, then every client session that was
    there before ended (they may hold a transaction that already wrote)."""
    with connect(conninfo) as conn:
        for name in FENCE_SETTINGS:
            _alter_system(conn, name, "on")
        _reload_and_wait(conn, conninfo, FENCE_SETTINGS[0], "on")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                     "AND application_name <> 'orochi-sidecar-ha'")


def _fenced_settings(conn: psycopg.Connection) -> list[str]:
    return [name for name in FENCE_SETTINGS
            if conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0] == "on"]


def unfence(conninfo: str) -> None:
    with connect(conninfo) as conn:
        fenced = _fenced_settings(conn)
        for name in fenced:
            _alter_system(conn, name, None)
        if fenced:
            _reload_and_wait(conn, conninfo, fenced[0], "off")


def promote(conninfo: str, timeout: int = 30) -> bool:
    """Unfence and promote a standby (pg_promote, waiting for the end of recovery)."""
    with connect(conninfo) as conn:
        for name in _fenced_settings(conn):
            _alter_system(conn, name, None)
        conn.execute("SELECT pg_reload_conf()")
        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            return True
        return bool(conn.execute("SELECT pg_promote(true, %s)", (timeout,)).fetchone()[0])


def ensure_setting(conninfo: str, name: str, value: str) -> bool:
    """ALTER SYSTEM SET name = value and reload, when it differs; True if changed."""
    with connect(conninfo) as conn:
        if conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] == value:
            return False
        _alter_system(conn, name, value)
        conn.execute("SELECT pg_reload_conf()")
        return True


def checkpoint(conninfo: str) -> None:
    with connect(conninfo, timeout=5) as conn:
        conn.execute("CHECKPOINT")


class LocalServer:
    """The PostgreSQL this sidecar looks after, by its data directory."""

    def __init__(self, data_dir: str, bindir: str, os_user: str, logfile: str):
        self.data_dir = data_dir
        self.bindir = bindir or _pg_bindir()
        self.logfile = logfile or os.path.join(data_dir, "log", "orochi-sidecar-postgres.log")
        self.as_root = os.geteuid() == 0
        self.os_user = os_user or "postgres"
        if self.as_root:
            import pwd
            pw = pwd.getpwnam(self.os_user)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid

    # ------------------------------------------------------------- processes

    def postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def postmaster_alive(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        state = stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3]
        return state not in (b"Z", b"X")

    def _processes_in_data_dir(self) -> list[int]:
        target = os.path.realpath(self.data_dir)
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/cwd") == target:
                        pids.append(int(entry))
                except OSError:
                    continue
        return pids

    def remove_stale_pid_file(self) -> None:
        """Remove the postmaster.pid a killed postmaster left, once no server
        process is left in the data directory.  PostgreSQL removes stale ones
        itself, except when the dead postmaster is a zombie nobody reaps (a
        container whose init does not reap orphans): its pid still exists."""
        pid = self.postmaster_pid()
        if pid is None or self.postmaster_alive():
            return
        deadline = time.monotonic() + 10
        while any(self._alive(p) for p in self._processes_in_data_dir()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"server processes {self._processes_in_data_dir()} are still running in "
                                   f"{self.data_dir} though postmaster {pid} is dead")
            time.sleep(0.02)
        try:
            os.unlink(os.path.join(self.data_dir, "postmaster.pid"))
        except FileNotFoundError:
            pass

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        return stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3] not in (b"Z", b"X")

    def is_standby(self) -> bool:
        return os.path.exists(os.path.join(self.data_dir, "standby.signal"))

    def run(self, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV and not k.startswith("PG")}
        env["OPENBLAS_NUM_THREADS"] = "1"
        proc = subprocess.run(cmd, cwd=os.path.dirname(self.data_dir.rstrip("/")) or "/", env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed (exit {proc.returncode}): {proc.stdout.strip()}")
        return proc

    def start(self) -> None:
        self.remove_stale_pid_file()
        os.makedirs(os.path.dirname(self.logfile), exist_ok=True)
        self.run(["pg_ctl", "start", "-D", self.data_dir, "-l", self.logfile, "-W"])

    def stop(self, mode: str = "fast") -> None:
        if self.postmaster_alive():
            self.run(["pg_ctl", "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", "60"])

    def _write(self, path: str, text: str, append: bool = False) -> None:
        with open(path, "a" if append else "w", encoding="utf-8") as f:
            f.write(text)
        if self.as_root:
            os.chown(path, self.uid, self.gid)

    def rejoin(self, source_conninfo: str, primary_conninfo: str) -> str:
        """Make this (stopped or running) former primary a standby of the
        server ``source_conninfo`` names: stop it, pg_rewind from the source
        (crash recovery first when it was killed), keep its own configuration
        files (pg_rewind copies the source's), write standby.signal and
        primary_conninfo, start it.  Returns pg_rewind's last line."""
        self.stop("fast")
        self.remove_stale_pid_file()
        kept = {}
        for name in os.listdir(self.data_dir):
            if name.endswith(".conf"):
                with open(os.path.join(self.data_dir, name), encoding="utf-8") as f:
                    kept[name] = f.read()
        checkpoint(source_conninfo)  # the source's control file names its new timeline
        out = self.run(["pg_rewind", "-D", self.data_dir, f"--source-server={source_conninfo}", "--no-sync"])
        for name, text in kept.items():
            self._write(os.path.join(self.data_dir, name), text)
        self.write_standby_config(primary_conninfo)
        self.start()
        lines = out.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def write_standby_config(self, primary_conninfo: str) -> None:
        """standby.signal, and primary_conninfo as the last line of postgresql.auto.conf."""
        self._write(os.path.join(self.data_dir, "standby.signal"), "")
        value = primary_conninfo.replace("\\", "\\\\").replace("'", "''")
        self._write(os.path.join(self.data_dir, "postgresql.auto.conf"),
                    f"primary_conninfo = '{value}'\n", append=True)


def _pg_bindir() -> str:
    pg_config = os.environ.get("PG_CONFIG") or shutil.which("pg_config")
    if pg_config:
        try:
            return subprocess.run([pg_config, "--bindir"], check=True, capture_output=True,
                                  text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return "/usr/lib/postgresql/15/bin"
