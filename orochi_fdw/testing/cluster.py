"""A throwaway PostgreSQL 15 cluster for tests, the demo and the benchmarks.

``PostgresCluster`` runs ``initdb`` into a fresh directory under ``/tmp``, starts the
server on a free loopback TCP port with a private unix-socket directory, and hands out
psycopg 3 connections. It can stop, crash (SIGKILL of the postmaster), restart and reload
the server, and read the server log.

PostgreSQL refuses to run as root. When this process is root, every server program
(``initdb``, ``pg_ctl``, ``postgres``) runs as the ``postgres`` OS user through
``runuser``, on directories chowned to that user; otherwise they run as the current user.
The database superuser is always called ``postgres``; authentication is ``trust``.

The postmaster's environment has ``PYTHONPATH``, ``PYTHONHOME`` and ``VIRTUAL_ENV`` (and
a few other interpreter-steering variables) removed, because the Python embedded in each
backend would pick them up, and ``OPENBLAS_NUM_THREADS=1`` set.

Typical use::

    with PostgresCluster(settings={"work_mem": "64MB"}) as pg:   # initdb + start
        pg.create_database("app")                                 # + CREATE EXTENSION orochi
        with pg.connect("app", autocommit=True) as conn:
            conn.execute("SELECT 1")

This module must not import pytest: the demo and the benchmarks use it too.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Iterable, Mapping

import psycopg
from psycopg import sql

__all__ = [
    "PostgresCluster",
    "ClusterError",
    "DEFAULT_BINDIR",
    "DEFAULT_SETTINGS",
    "ENV_INITDB_TEMPLATE",
    "ENV_SETTINGS",
    "env_settings",
    "find_bindir",
    "find_free_port",
    "remove_initdb_templates",
]

DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"

#: Server settings every harness cluster gets unless overridden (``settings=`` or
#: ``initdb_settings=`` win). Chosen for tests: English messages, UTC, durable commits
#: (``synchronous_commit`` stays on so a SIGKILL never loses a committed row) but no
#: fsync, logical decoding and two-phase commit available without a restart, and
#: orochi preloaded (its WAL resource manager, which columnar writes need, exists
#: only then).
DEFAULT_SETTINGS: dict[str, Any] = {
    "shared_preload_libraries": "orochi",
    "fsync": False,
    "full_page_writes": False,
    "lc_messages": "C",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "datestyle": "iso, mdy",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_min_messages": "warning",
    "log_min_error_statement": "error",
    "wal_level": "logical",
    "max_wal_senders": 10,
    "max_replication_slots": 20,
    "max_prepared_transactions": 64,
    "max_connections": 100,
    # the test wrappers of orochi_fdw.testing (never on in production)
    "orochi.allow_test_wrappers": True,
}

#: Environment variable with extra settings for every cluster made here:
#: ``name=value`` pairs separated by ``;`` or newlines (e.g.
#: ``force_parallel_mode=regress``), to run a whole test suite under a setting.
#: They override :data:`DEFAULT_SETTINGS`; a cluster's own ``initdb_settings``
#: and ``settings`` override them.
ENV_SETTINGS = "OROCHI_PG_SETTINGS"


def env_settings() -> dict[str, str]:
    """The settings of :data:`ENV_SETTINGS`, parsed (an unparsable pair is an error)."""
    out: dict[str, str] = {}
    for pair in re.split(r"[;\n]", os.environ.get(ENV_SETTINGS, "")):
        pair = pair.strip()
        if not pair:
            continue
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name.strip()):
            raise ValueError(f"{ENV_SETTINGS}: expected name=value, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


#: Environment variable: ``1`` makes :meth:`PostgresCluster.init` copy a data
#: directory made by one ``initdb`` per process (and set of initdb options) instead of
#: running ``initdb`` for every cluster; the test suite's conftest sets it.
ENV_INITDB_TEMPLATE = "OROCHI_INITDB_TEMPLATE"


# Variables that steer a Python interpreter; the embedded one must not see the test
# runner's values.
_STRIPPED_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
    "__PYVENV_LAUNCHER__",
    "PGDATA",
)

_SERVER_USER = "postgres"  # OS user when we are root
_SUPERUSER = "postgres"  # database superuser name, always

_HARNESS_CONF = "orochi_harness.conf"

_CRASH_RE = re.compile(r"\(PID (\d+)\) was terminated by signal (\d+)")


class ClusterError(RuntimeError):
    """A server program failed; the message carries its output and the log tail."""


def find_bindir() -> str:
    """The PostgreSQL bin directory: ``$OROCHI_PG_BINDIR``, ``$PG_CONFIG --bindir``, or
    :data:`DEFAULT_BINDIR`."""
    env = os.environ.get("OROCHI_PG_BINDIR")
    if env:
        return env
    pg_config = os.environ.get("PG_CONFIG")
    if pg_config:
        out = subprocess.run(
            [pg_config, "--bindir"], check=True, capture_output=True, text=True
        )
        return out.stdout.strip()
    return DEFAULT_BINDIR


_reserved_ports: set[int] = set()
_ports_lock = threading.Lock()


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, never handed out twice by this process."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _reserved_ports:
                _reserved_ports.add(port)
                return port
    raise ClusterError("no free TCP port found")


def _release_port(port: int | None) -> None:
    with _ports_lock:
        _reserved_ports.discard(port)


def _conf_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple, set)):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _render_conf(settings: Mapping[str, Any], header: str) -> str:
    lines = [f"# {header}"]
    for name, value in settings.items():
        lines.append(f"{name} = {_conf_value(value)}")
    return "\n".join(lines) + "\n"


def _process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (an orphan nobody reaps stays a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # Field 3 follows the command name in parentheses, which may itself contain ')'.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def _processes_in(directory: str) -> list[int]:
    """Live processes whose working directory is ``directory`` (every PostgreSQL server
    process chdirs into its data directory)."""
    target = os.path.realpath(directory)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == target and _process_alive(int(entry)):
            pids.append(int(entry))
    return pids


# Clusters not cleaned up yet, stopped and removed at interpreter exit as a safety net
# (only by the process that made them, not by a forked child).
_live_clusters: "set[PostgresCluster]" = set()


@atexit.register
def _cleanup_at_exit() -> None:  # pragma: no cover - safety net
    for cluster in list(_live_clusters):
        if cluster._owner_pid != os.getpid():
            continue
        try:
            cluster.cleanup()
        except Exception:
            pass


# ---------------------------------------------------------------- initdb templates
# initdb costs about a second of a loaded machine's time (bootstrap in single-user
# mode); copying its result costs a tenth of that. A copy is the same cluster but for
# the system identifier, which initdb draws at random and which must differ between
# clusters (a coordinator tells itself from its workers by it), so a copy gets a new
# one: in pg_control (with its CRC) and in the long header of the one WAL segment
# initdb leaves.

_initdb_templates: dict[tuple, str] = {}  # initdb options -> template data directory
_initdb_lock = threading.Lock()
_template_dirs: list[tuple[int, str]] = []  # (pid, dir) made here, removed at exit

_CONTROL_FILE = os.path.join("global", "pg_control")
_WAL_SYSID_OFFSET = 24  # XLogLongPageHeaderData.xlp_sysid, after the 24-byte short header
_XLOG_PAGE_MAGIC_PG15 = 0xD110


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _control_crc_offset(control: bytes) -> int | None:
    """Where pg_control's CRC (of every byte before it) is: found, not assumed."""
    for offset in range(8, 1024, 4):
        if int.from_bytes(control[offset : offset + 4], "little") == _crc32c(control[:offset]):
            return offset
    return None


def _template_usable(datadir: str) -> bool:
    """True if the system identifier of ``datadir`` is where :func:`_set_system_identifier`
    rewrites it (else clusters are made by initdb, as without templates)."""
    try:
        with open(os.path.join(datadir, _CONTROL_FILE), "rb") as f:
            control = f.read()
        segments = [n for n in os.listdir(os.path.join(datadir, "pg_wal")) if len(n) == 24]
        if len(segments) != 1:
            return False
        with open(os.path.join(datadir, "pg_wal", segments[0]), "rb") as f:
            page = f.read(_WAL_SYSID_OFFSET + 8)
    except OSError:
        return False
    return (
        _control_crc_offset(control) is not None
        and int.from_bytes(page[:2], "little") == _XLOG_PAGE_MAGIC_PG15
        and page[_WAL_SYSID_OFFSET : _WAL_SYSID_OFFSET + 8] == control[:8]
    )


def _set_system_identifier(datadir: str, sysid: int) -> None:
    path = os.path.join(datadir, _CONTROL_FILE)
    with open(path, "r+b") as f:
        control = bytearray(f.read())
        offset = _control_crc_offset(bytes(control))
        if offset is None:
            raise ClusterError(f"{path}: no valid CRC found")
        control[:8] = sysid.to_bytes(8, "little")
        control[offset : offset + 4] = _crc32c(bytes(control[:offset])).to_bytes(4, "little")
        f.seek(0)
        f.write(control)
    wal = os.path.join(datadir, "pg_wal")
    (segment,) = [n for n in os.listdir(wal) if len(n) == 24]
    with open(os.path.join(wal, segment), "r+b") as f:
        f.seek(_WAL_SYSID_OFFSET)
        f.write(sysid.to_bytes(8, "little"))


def _new_system_identifier() -> int:
    # initdb's recipe (seconds in the high half) with random low bits
    return (int(time.time()) << 32) | int.from_bytes(os.urandom(4), "little")


def _copy_initdb_template(cluster: "PostgresCluster") -> bool:
    """Make ``cluster``'s data directory a copy of this process's initdb template for
    its options (made first if needed). False when a template cannot be used."""
    env = tuple(sorted((k, v) for k, v in cluster.extra_env.items()
                       if k == "TZ" or k.startswith(("LC_", "LANG"))))  # what initdb reads
    key = (cluster.bindir, cluster.encoding, cluster.locale, cluster.user,
           tuple(cluster.initdb_args), env, cluster._as_root, os.path.dirname(cluster.base))
    with _initdb_lock:
        template = _initdb_templates.get(key)
        if template is None:
            parent = tempfile.mkdtemp(prefix="orochi-pg-initdb-", dir=os.path.dirname(cluster.base))
            _template_dirs.append((os.getpid(), parent))
            if cluster._as_root:
                os.chown(parent, cluster._uid, cluster._gid)
            template = os.path.join(parent, "data")
            cluster._run(cluster._initdb_command(template))  # its errors are the cluster's
            if not _template_usable(template):
                template = ""
            _initdb_templates[key] = template
    if not template:
        return False
    cluster._run(["cp", "-a", "--", template, cluster.datadir])
    _set_system_identifier(cluster.datadir, _new_system_identifier())
    return True


@atexit.register
def remove_initdb_templates() -> None:
    """Remove this process's initdb templates (the next cluster makes a new one).
    Done at exit too; the test suite calls it at the end of its session, before a
    worker process may be stopped in the middle of its exit."""
    with _initdb_lock:
        for pid, path in list(_template_dirs):
            if pid == os.getpid():  # not by a forked child
                shutil.rmtree(path, ignore_errors=True)
                _template_dirs.remove((pid, path))
        _initdb_templates.clear()


class PostgresCluster:
    """One PostgreSQL cluster in a private temporary directory.

    Parameters
    ----------
    name:
        A label used in the directory name and in messages.
    encoding, locale:
        Passed to ``initdb`` (``-E``, ``--locale``); default UTF8 and C.
    initdb_settings:
        Written into ``postgresql.conf`` right after ``initdb`` (e.g.
        ``shared_preload_libraries``); they stay for the cluster's life.
    settings:
        Initial server settings; :meth:`start` and :meth:`configure` add to them.
    env:
        Extra environment variables for the server programs.
    bindir:
        PostgreSQL bin directory; default :func:`find_bindir`.
    base_dir:
        Parent of the cluster's directory; default ``/tmp`` (it must be traversable by
        the ``postgres`` OS user, so not a pytest ``tmp_path``).
    keep:
        Do not delete the directory on :meth:`cleanup` (also ``OROCHI_KEEP_CLUSTER=1``).
    extension_templates:
        :meth:`create_database` with an extension copies a template database in
        which that extension was created once (see :meth:`extension_template`)
        instead of running ``CREATE EXTENSION`` in every new database. For clusters
        that make many databases (the test suite's session cluster).

    Layout of :attr:`base`: ``data/`` (PGDATA), ``sock/`` (unix sockets),
    ``postgres.log`` (server log, appended across restarts).
    """

    def __init__(
        self,
        name: str = "pg",
        *,
        encoding: str = "UTF8",
        locale: str = "C",
        initdb_settings: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        bindir: str | None = None,
        base_dir: str = "/tmp",
        keep: bool | None = None,
        initdb_args: Iterable[str] = (),
        extension_templates: bool = False,
    ) -> None:
        self.name = name
        self.extension_templates = extension_templates
        self._templates: set[str] = set()
        self.encoding = encoding
        self.locale = locale
        self.initdb_settings: dict[str, Any] = dict(initdb_settings or {})
        self.settings: dict[str, Any] = dict(settings or {})
        self.extra_env: dict[str, str] = dict(env or {})
        self.bindir = bindir or find_bindir()
        self.initdb_args = list(initdb_args)
        self.keep = (
            keep if keep is not None else os.environ.get("OROCHI_KEEP_CLUSTER") == "1"
        )
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.user = _SUPERUSER

        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
        self.base = tempfile.mkdtemp(prefix=f"orochi-pg-{safe}-", dir=base_dir)
        os.chmod(self.base, 0o700)
        self.datadir = os.path.join(self.base, "data")
        self.socket_dir = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "postgres.log")
        os.mkdir(self.socket_dir, 0o700)

        self._as_root = os.geteuid() == 0
        if self._as_root:
            import pwd

            try:
                pw = pwd.getpwnam(_SERVER_USER)
            except KeyError:
                shutil.rmtree(self.base, ignore_errors=True)
                raise ClusterError(
                    f"running as root needs an OS user {_SERVER_USER!r} to run PostgreSQL"
                ) from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            for path in (self.base, self.socket_dir):
                os.chown(path, self._uid, self._gid)
        self.initialized = False
        self._cleaned = False
        self._owner_pid = os.getpid()
        _live_clusters.add(self)

    # ------------------------------------------------------------------ plumbing

    def __repr__(self) -> str:
        return f"<PostgresCluster {self.name} port={self.port} base={self.base}>"

    def bin(self, program: str) -> str:
        return os.path.join(self.bindir, program)

    def server_env(self) -> dict[str, str]:
        """The environment the server programs (and so the postmaster) run with."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _STRIPPED_ENV and not k.startswith("PG")
        }
        env["OPENBLAS_NUM_THREADS"] = "1"
        env.update(self.extra_env)
        return env

    def _run(
        self, args: list[str], *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", _SERVER_USER, "--"] + cmd
        proc = subprocess.run(
            cmd,
            cwd=self.base,
            env=self.server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{os.path.basename(args[0])} failed for cluster {self.name} "
                f"(exit {proc.returncode}):\n{proc.stdout}\n"
                f"--- server log tail ---\n{self.log_tail()}"
            )
        return proc

    def _write_file(self, path: str, text: str, append: bool = False) -> None:
        with open(path, "a" if append else "w", encoding="utf-8") as f:
            f.write(text)
        if self._as_root:
            os.chown(path, self._uid, self._gid)

    # ------------------------------------------------------------------ lifecycle

    def _initdb_command(self, datadir: str) -> list[str]:
        return [
            self.bin("initdb"),
            "-D",
            datadir,
            "--no-sync",
            "-A",
            "trust",
            "-E",
            self.encoding,
            f"--locale={self.locale}",
            "-U",
            self.user,
            "--no-instructions",
            *self.initdb_args,
        ]

    def init(self) -> "PostgresCluster":
        """Run ``initdb`` and write the configuration. Idempotent.

        With ``OROCHI_INITDB_TEMPLATE=1`` (the test suite sets it) ``initdb`` runs
        once per process for each set of initdb options, and every further cluster
        is a copy of that data directory with a system identifier of its own (see
        :func:`_copy_initdb_template`)."""
        if self.initialized:
            return self
        if not (os.environ.get(ENV_INITDB_TEMPLATE) == "1" and _copy_initdb_template(self)):
            self._run(self._initdb_command(self.datadir))
        conf = {**DEFAULT_SETTINGS, **env_settings(), **self.initdb_settings}
        self._write_file(
            os.path.join(self.datadir, "postgresql.conf"),
            "\n"
            + _render_conf(conf, "orochi test harness: settings given at initdb time")
            + f"include_if_exists = '{_HARNESS_CONF}'\n",
            append=True,
        )
        self.initialized = True
        return self

    def _write_harness_conf(self) -> None:
        conf = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": self.socket_dir,
            "logging_collector": False,
            **self.settings,
        }
        text = _render_conf(conf, "orochi test harness: per-start settings")
        self._write_file(os.path.join(self.datadir, _HARNESS_CONF), text)

    def start(
        self, settings: Mapping[str, Any] | None = None, *, timeout: float = 60
    ) -> "PostgresCluster":
        """Start the server (``initdb`` first if needed) and wait until it accepts
        connections. ``settings`` are added to :attr:`settings` and kept for later
        restarts. Raises :class:`ClusterError` with the log tail if it does not start."""
        if self._cleaned:
            raise ClusterError(f"cluster {self.name} was cleaned up")
        if settings:
            self.settings.update(settings)
        self.init()
        if self.is_running():
            raise ClusterError(f"cluster {self.name} is already running")
        self._remove_stale_lock_files()
        attempts = 0
        while True:
            attempts += 1
            if self.port is None:
                self.port = find_free_port(self.host)
            self._write_harness_conf()
            offset = self.log_offset()
            proc = self._run(
                [
                    self.bin("pg_ctl"),
                    "start",
                    "-D",
                    self.datadir,
                    "-l",
                    self.logfile,
                    "-w",
                    "-t",
                    str(int(timeout)),
                ],
                check=False,
                timeout=timeout + 30,
            )
            if proc.returncode == 0:
                break
            log = self.log_since(offset)
            if attempts < 5 and (
                "could not bind" in log or "Address already in use" in log
            ):
                _release_port(self.port)
                self.port = None
                continue
            raise ClusterError(
                f"cluster {self.name} did not start (pg_ctl exit {proc.returncode}):\n"
                f"{proc.stdout}\n--- server log tail ---\n{self.log_tail()}"
            )
        self.wait_until_ready(timeout=timeout)
        return self

    def stop(self, mode: str = "fast", *, timeout: float = 60) -> None:
        """Stop the server (``pg_ctl stop -m mode``); falls back to immediate, then
        SIGKILL. A no-op when it is not running."""
        if not self.initialized or not self.is_running():
            return
        proc = self._run(
            [self.bin("pg_ctl"), "stop", "-D", self.datadir, "-m", mode, "-w",
             "-t", str(int(timeout))],
            check=False,
            timeout=timeout + 30,
        )
        if proc.returncode != 0 and self.is_running():
            if mode != "immediate":
                self.stop("immediate", timeout=timeout)
            if self.is_running():
                self.kill9()

    def restart(
        self, settings: Mapping[str, Any] | None = None, *, mode: str = "fast",
        timeout: float = 60,
    ) -> "PostgresCluster":
        """Stop (if running) and start again, with ``settings`` added."""
        self.stop(mode)
        return self.start(settings, timeout=timeout)

    def kill9(self, *, wait: float = 15.0, kill_children: bool = False) -> int:
        """Crash the server: SIGKILL the postmaster, then wait until its children have
        exited too (they notice the postmaster's death), so that :meth:`start` can run
        crash recovery. Children still alive after ``wait`` seconds get SIGKILL.

        With ``kill_children=True`` every server process dies at the same instant, as
        in a machine crash: all are stopped (SIGSTOP) before any is killed, so that no
        backend sees the postmaster die and exits cleanly (a backend waiting for a lock
        notices the postmaster's death and aborts its transaction, running its
        clean-up). Returns the postmaster's pid."""
        pid = self.postmaster_pid()
        if pid is None or not _process_alive(pid):
            raise ClusterError(f"cluster {self.name} is not running")
        if kill_children:
            self._signal([pid], signal.SIGSTOP)
            stopped = {pid}
            while True:  # children the postmaster forked before it stopped
                children = [p for p in _processes_in(self.datadir) if p not in stopped]
                if not children:
                    break
                self._signal(children, signal.SIGSTOP)
                stopped.update(children)
            children = [p for p in stopped if p != pid]
        else:
            children = [p for p in _processes_in(self.datadir) if p != pid]
        os.kill(pid, signal.SIGKILL)
        if kill_children:
            self._sigkill(children)
        deadline = time.monotonic() + wait
        pending = [pid, *children]
        while True:
            pending = [p for p in pending if _process_alive(p)]
            if not pending:
                break
            if time.monotonic() > deadline:
                self._sigkill(pending)
                deadline = time.monotonic() + wait
            time.sleep(0.02)
        self._remove_stale_lock_files()
        return pid

    @staticmethod
    def _sigkill(pids: Iterable[int]) -> None:
        PostgresCluster._signal(pids, signal.SIGKILL)

    @staticmethod
    def _signal(pids: Iterable[int], sig: int) -> None:
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass

    def _remove_stale_lock_files(self, wait: float = 15.0) -> None:
        """After the postmaster died, remove ``postmaster.pid`` and the socket lock
        files it left. PostgreSQL removes stale ones itself, except when the dead
        postmaster is a zombie nobody reaps (a container whose init does not reap
        orphans): its pid still "exists" and the new server would refuse to start.
        Only done once no process is left in the data directory, so the new server
        cannot share it with survivors of the old one."""
        pid = self.postmaster_pid()
        if pid is None or _process_alive(pid):
            return
        deadline = time.monotonic() + wait
        while _processes_in(self.datadir):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"cluster {self.name}: postmaster {pid} is gone but server processes "
                    f"{_processes_in(self.datadir)} are still running in its data directory"
                )
            time.sleep(0.05)
        for path in [os.path.join(self.datadir, "postmaster.pid")] + [
            os.path.join(self.socket_dir, f)
            for f in os.listdir(self.socket_dir)
            if f.startswith(".s.PGSQL.") and f.endswith(".lock")
        ]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def reload(self) -> None:
        """Re-read the configuration (SIGHUP) and wait until the postmaster has done so,
        i.e. until a new connection reports a newer ``pg_conf_load_time()``."""
        with self.connect(autocommit=True) as conn:
            before = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]
        self._run([self.bin("pg_ctl"), "reload", "-D", self.datadir])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.connect(autocommit=True) as conn:
                now = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]
            if now > before:
                return
            time.sleep(0.02)
        raise ClusterError(f"cluster {self.name} did not reload its configuration")

    def configure(self, settings: Mapping[str, Any], *, reload: bool = True) -> None:
        """Add ``settings`` to the cluster's configuration and, if running, reload.
        (Settings that need a restart take effect at the next :meth:`restart`.)"""
        self.settings.update(settings)
        if self.initialized and self.port is not None:
            self._write_harness_conf()
            if reload and self.is_running():
                self.reload()

    def cleanup(self) -> None:
        """Stop the server and delete the directory (unless ``keep``). Idempotent."""
        if self._cleaned:
            return
        try:
            self.stop("fast", timeout=30)
        except Exception:
            pid = self.postmaster_pid()
            if pid and _process_alive(pid):
                self.kill9(kill_children=True)
        finally:
            self._cleaned = True
            _release_port(self.port)
            _live_clusters.discard(self)
            if not self.keep:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "PostgresCluster":
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ state

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid`` (which may be stale after a crash)."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (FileNotFoundError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _process_alive(pid)

    def wait_until_ready(self, timeout: float = 60) -> None:
        """Wait until a connection succeeds (e.g. after a backend crash made the
        postmaster reinitialise, or crash recovery)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ClusterError(
                    f"cluster {self.name} is not running\n--- server log tail ---\n"
                    f"{self.log_tail()}"
                )
            try:
                with psycopg.connect(self.dsn(connect_timeout=5), autocommit=True) as c:
                    c.execute("SELECT 1")
                return
            except psycopg.OperationalError as e:
                last = e
                time.sleep(0.05)
        raise ClusterError(
            f"cluster {self.name} not ready after {timeout}s: {last}\n"
            f"--- server log tail ---\n{self.log_tail()}"
        )

    def ensure_running(self) -> None:
        """Start the server if it is down (e.g. a test crashed it), else wait until it
        accepts connections."""
        if self.is_running():
            self.wait_until_ready()
        else:
            self.start()

    # ------------------------------------------------------------------ clients

    def dsn(self, dbname: str = "postgres", **params: Any) -> str:
        """A libpq connection string over TCP to ``dbname``; ``params`` are added
        (e.g. ``application_name``, or ``host=cluster.socket_dir`` for the socket)."""
        if self.port is None:
            raise ClusterError(f"cluster {self.name} has no port yet (not started)")
        base = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname,
        }
        base.update(params)
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in base.items()})

    def connect(
        self, dbname: str = "postgres", *, autocommit: bool = False, **kwargs: Any
    ) -> psycopg.Connection:
        """A new psycopg connection to ``dbname``. ``kwargs`` go to
        ``psycopg.connect`` (connection parameters or e.g. ``row_factory``)."""
        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit, **kwargs)

    def execute(
        self, query: Any, params: Any = None, *, dbname: str = "postgres"
    ) -> list[tuple]:
        """Run one statement on a fresh autocommit connection; return its rows
        (empty list when it returns none)."""
        with self.connect(dbname, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def create_database(
        self,
        name: str,
        extension: bool | str = True,
        *,
        encoding: str | None = None,
        locale: str | None = None,
        template: str | None = None,
    ) -> str:
        """``CREATE DATABASE name`` and, when ``extension``, ``CREATE EXTENSION orochi``
        in it (a string names another extension); if that fails the database is dropped
        again and the error raised. With ``encoding`` (e.g. ``'LATIN1'``, ``'SQL_ASCII'``) the database is
        made from ``template0`` with ``LC_COLLATE``/``LC_CTYPE`` = ``locale`` (default
        C). Returns ``name``.

        On a cluster made with ``extension_templates=True`` a database with the
        extension and no other option is copied from :meth:`extension_template`
        (the same catalog contents as a ``CREATE EXTENSION`` in it, in a tenth of
        the time)."""
        if extension and self.extension_templates and (encoding, locale, template) == (None, None, None):
            extname = "orochi" if extension is True else str(extension)
            template = self.extension_template(extname)
            extension = False
        parts = [sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))]
        if encoding is not None or locale is not None:
            template = template or "template0"
            loc = locale or "C"
            if encoding is not None:
                parts.append(sql.SQL("ENCODING {}").format(sql.Literal(encoding)))
            parts.append(
                sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(
                    sql.Literal(loc), sql.Literal(loc)
                )
            )
        if template is not None:
            parts.append(sql.SQL("TEMPLATE {}").format(sql.Identifier(template)))
        self.execute(sql.SQL(" ").join(parts))
        if extension:
            extname = "orochi" if extension is True else str(extension)
            try:
                self.execute(
                    sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(extname)),
                    dbname=name,
                )
            except Exception:
                self.drop_database(name)
                raise
        return name

    def extension_template(self, extension: str = "orochi") -> str:
        """The name of a template database of this cluster with ``extension``
        created in it, made the first time it is asked for (an error creating the
        extension is raised, and leaves no template behind). It is marked as a
        template that accepts no connections (like ``template0``), so that nothing
        keeps a session in it and every ``CREATE DATABASE ... TEMPLATE`` from it
        can copy it."""
        name = f"orochi_tpl_{extension}"[:63]
        if name in self._templates:
            return name
        ready = self.execute(
            "SELECT datistemplate AND NOT datallowconn FROM pg_database WHERE datname = %s",
            (name,),
        )
        if ready != [(True,)]:
            if ready:  # a template left half made
                self._drop_template(name)
            self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                self.execute(
                    sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(extension)),
                    dbname=name,
                )
                self.execute(
                    sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
                    .format(sql.Identifier(name))
                )
            except Exception:
                self._drop_template(name)
                raise
        self._templates.add(name)
        return name

    def _drop_template(self, name: str) -> None:
        self.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name))
        )
        self.drop_database(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even if it is in use: prepared transactions are rolled back,
        its replication slots dropped, its sessions terminated (``WITH (FORCE)``)."""
        with self.connect(autocommit=True) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                return
            gids = [
                r[0]
                for r in admin.execute(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,)
                )
            ]
            if gids:
                with self.connect(name, autocommit=True) as conn:
                    for gid in gids:
                        conn.execute(
                            sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid))
                        )
            for slot, active_pid in admin.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots"
                " WHERE database = %s",
                (name,),
            ).fetchall():
                if active_pid:
                    admin.execute("SELECT pg_terminate_backend(%s, 5000)", (active_pid,))
                admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )

    # ------------------------------------------------------------------ backends

    @staticmethod
    def backend_pid(conn: psycopg.Connection) -> int:
        """The server process id serving ``conn``."""
        return conn.info.backend_pid

    def backend_pids(self, dbname: str | None = None) -> list[int]:
        """Pids of client backends (optionally of one database), excluding the one
        asking."""
        rows = self.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid() AND (%s::text IS NULL OR datname = %s)",
            (dbname, dbname),
        )
        return [r[0] for r in rows]

    def kill_backend(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one server process. SIGKILL of a backend makes the postmaster
        reset every session; call :meth:`wait_until_ready` afterwards."""
        os.kill(pid, sig)

    # ------------------------------------------------------------------ log

    def log_offset(self) -> int:
        """Current size of the server log; pass it to :meth:`log_since` later."""
        try:
            return os.path.getsize(self.logfile)
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int = 0) -> str:
        """The server log written after ``offset``."""
        try:
            with open(self.logfile, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def read_log(self) -> str:
        return self.log_since(0)

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the server log."""
        size = self.log_offset()
        text = self.log_since(max(0, size - 256 * 1024))
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_log(
        self, pattern: str, *, since: int = 0, timeout: float = 10
    ) -> re.Match:
        """Wait until the log after ``since`` matches the regex ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_since(since))
            if m:
                return m
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{pattern!r} not in the log of {self.name} after {timeout}s\n"
                    f"--- server log tail ---\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def crashes_since(self, offset: int = 0, *, ignore_signals: Iterable[int] = (9,)
                      ) -> list[str]:
        """Log lines reporting a server process terminated by a signal (a crash) after
        ``offset``; SIGKILL (deliberate kills) is ignored by default."""
        ignore = set(ignore_signals)
        out = []
        for line in self.log_since(offset).splitlines():
            m = _CRASH_RE.search(line)
            if m and int(m.group(2)) not in ignore:
                out.append(line)
        return out
