"""Failover time and replication cost of Orochi's HA (docs/ha.md), beside
Patroni + etcd when they can be run here.

Failover time: from kill -9 of the primary's postmaster to the first
successful INSERT of a client that retries through a libpq multi-host
string with target_session_attrs=read-write (a new connection each try,
connect_timeout 1 s), over --kills kills; median and p95.  Between kills the
old primary rejoins as a standby (not counted).

Insert throughput: one client, one row per autocommit transaction, for
--seconds seconds, with synchronous_commit = on (the sidecar's quorum
synchronous replication: ANY 1 of the standbys) and = local (asynchronous);
the same for pg_auto_failover (its default replication quorum is also
ANY 1 of the secondaries).

    python bench/ha_bench.py [--kills 10] [--seconds 5] [--peers patroni,pg_auto_failover]
                             [--peer-kills 3] [--paf-kills 10] [--out bench/results/ha.md]

Setup of the peers (bench only, not needed by the tests):

- Patroni + etcd: ``apt-get install etcd-server``; ``pip install -r requirements-bench.txt``.
- pg_auto_failover: ``apt-get install postgresql-15-auto-failover pg-auto-failover-cli``
  (the pgautofailover extension and pg_autoctl).  For a PostgreSQL tree of its
  own (``$PG_CONFIG``), unpack the two packages into that tree's root instead:
  ``apt-get download postgresql-15-auto-failover pg-auto-failover-cli`` then
  ``dpkg -x <each .deb> <root>`` (the root holds ``usr/lib/postgresql/15``).

Everything runs on 127.0.0.1 on this machine; the figures depend on its load
(printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import psycopg

from orochi_fdw.testing.cluster import PostgresCluster, find_free_port
from orochi_fdw.testing.ha import HaGroup, wait_until


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def _first_write_after(dsn: str, t0: float, timeout: float = 120.0) -> float:
    """Seconds from ``t0`` to the first acknowledged INSERT through ``dsn``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO bench_failover (at) VALUES (now())")
                return time.monotonic() - t0
        except psycopg.Error:
            time.sleep(0.005)
    raise TimeoutError("no write succeeded after the kill")


def _throughput(dsn: str, seconds: float, synchronous_commit: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('synchronous_commit', %s, false)", (synchronous_commit,))
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.execute("INSERT INTO bench_failover (at) VALUES (now())")
            n += 1
    return n / seconds


def bench_orochi(kills: int, seconds: float) -> dict[str, Any]:
    # fsync on, as the peers have it (the test harness turns it off)
    group = HaGroup(standbys=2, name="habench", settings={"fsync": True})
    try:
        group.start()
        primary = group.wait_ready()
        dsn = group.multihost_dsn(connect_timeout="1")
        with psycopg.connect(group.clusters[primary].dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_failover (id bigserial, at timestamptz)")
        tput = {mode: _throughput(dsn, seconds, mode) for mode in ("on", "local")}
        times = []
        for i in range(kills):
            old = group.wait_ready(timeout=300)
            generation = group.generation()
            t0 = time.monotonic()
            group.kill_postmaster(old)
            took = _first_write_after(dsn, t0)
            new = group.wait_failover(generation)
            times.append(took)
            print(f"orochi kill {i + 1}: {old} -> {new}: first write after {took:.3f} s", flush=True)
            wait_until(lambda: group.in_recovery(old) is True and old in group.streaming(new), 300,
                       f"{old} to rejoin")
        return {"name": "Orochi (orochi-sidecar, pysyncobj Raft)", "times": times, "throughput": tput,
                "settings": f"lease_ttl {group.lease_ttl} s, renew 0.25 s, Raft election 0.4-1.2 s, "
                            "loop 0.1 s; synchronous_standby_names ANY 1 (standbys); fsync on"}
    finally:
        group.cleanup()


# ---------------------------------------------------------------------- Patroni + etcd


def _kill_postmasters_and_remove(setup) -> None:
    """kill -9 of every node's postmaster left by a peer's setup, then its folder."""
    for node in setup.nodes:
        try:
            os.kill(setup.postmaster_pid(node), signal.SIGKILL)
        except Exception:  # noqa: BLE001
            pass
    shutil.rmtree(setup.base, ignore_errors=True)


class PatroniSetup:
    """etcd (one member) and three Patroni nodes, each bootstrapping or
    cloning its own PostgreSQL, on 127.0.0.1, with Patroni's default timing
    (ttl 30, loop_wait 10, retry_timeout 10)."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.base = tempfile.mkdtemp(prefix="orochi-patroni-")
        os.chmod(self.base, 0o755)
        self.etcd_port = find_free_port()
        self.etcd_peer = find_free_port()
        self.nodes = [{"name": f"p{i + 1}", "pg_port": find_free_port(), "api_port": find_free_port()}
                      for i in range(3)]
        self.procs: list[subprocess.Popen] = []
        self.patroni: dict[str, subprocess.Popen] = {}

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> None:
        etcd_dir = os.path.join(self.base, "etcd")
        os.makedirs(etcd_dir)
        self.procs.append(subprocess.Popen(
            ["etcd", "--name", "e1", "--data-dir", etcd_dir,
             "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer}",
             "--initial-cluster", f"e1=http://127.0.0.1:{self.etcd_peer}", "--enable-v2=true"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.base, "etcd.log"), "w")))
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        for node in self.nodes:
            self._start_node(node)

    def _config(self, node: dict[str, Any]) -> str:
        name = node["name"]
        data = os.path.join(self.base, name, "data")
        return json.dumps({
            "scope": "bench", "name": name,
            "restapi": {"listen": f"127.0.0.1:{node['api_port']}", "connect_address": f"127.0.0.1:{node['api_port']}"},
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {"dcs": {"postgresql": {"use_pg_rewind": True,
                                                 "parameters": {"wal_log_hints": "on", "max_wal_senders": 10,
                                                                "hot_standby": "on"}}},
                          "initdb": [{"encoding": "UTF8"}, {"locale": "C"}]},
            "postgresql": {
                "listen": f"127.0.0.1:{node['pg_port']}", "connect_address": f"127.0.0.1:{node['pg_port']}",
                "data_dir": data, "bin_dir": self.bindir,
                "pgpass": os.path.join(self.base, name, "pgpass"),
                "authentication": {"superuser": {"username": "postgres", "password": "postgres"},
                                   "replication": {"username": "replicator", "password": "rep"},
                                   "rewind": {"username": "postgres", "password": "postgres"}},
                "pg_hba": ["local all all trust", "host all all 127.0.0.1/32 trust",
                           "host replication all 127.0.0.1/32 trust"],
                "parameters": {"unix_socket_directories": os.path.join(self.base, name)},
            },
        })

    def _start_node(self, node: dict[str, Any]) -> None:
        folder = os.path.join(self.base, node["name"])
        os.makedirs(folder, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        path = os.path.join(folder, "patroni.yml")
        with open(path, "w") as f:
            f.write(self._config(node))  # JSON is YAML
        patroni = os.path.join(os.path.dirname(sys.executable), "patroni")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in ("PYTHONPATH",)}
        self.patroni[node["name"]] = subprocess.Popen(
            self._as_postgres([patroni, path]), cwd=folder, env=env, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(folder, "patroni.log"), "a"), start_new_session=True)

    def _api(self, node: dict[str, Any], path: str) -> Any:
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node['api_port']}{path}", timeout=2) as r:
                return json.loads(r.read().decode())
        except Exception as exc:  # noqa: BLE001 - 503 of replicas, refused connections
            body = getattr(exc, "read", None)
            return json.loads(body().decode()) if body else None

    def roles(self) -> dict[str, str]:
        out = {}
        for node in self.nodes:
            info = self._api(node, "/patroni")
            out[node["name"]] = (info or {}).get("role", "down") + "/" + (info or {}).get("state", "")
        return out

    def primary(self) -> dict[str, Any] | None:
        for node in self.nodes:
            info = self._api(node, "/patroni")
            if info and info.get("role") in ("master", "primary") and info.get("state") == "running":
                return node
        return None

    def ready(self) -> bool:
        roles = self.roles()
        return (sum(r.startswith(("master", "primary")) and r.endswith("running") for r in roles.values()) == 1
                and sum(r.startswith("replica") and r.endswith(("running", "streaming")) for r in roles.values()) == 2)

    def dsn(self) -> str:
        ports = ",".join(str(n["pg_port"]) for n in self.nodes)
        return (f"host={','.join('127.0.0.1' for _ in self.nodes)} port={ports} user=postgres password=postgres "
                "dbname=postgres target_session_attrs=read-write connect_timeout=1")

    def postmaster_pid(self, node: dict[str, Any]) -> int:
        with open(os.path.join(self.base, node["name"], "data", "postmaster.pid")) as f:
            return int(f.readline())

    def cleanup(self) -> None:
        for p in self.patroni.values():  # runuser and the patroni under it: their session
            try:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
            except Exception:  # noqa: BLE001
                pass
        for p in self.procs:
            try:
                p.kill()
                p.wait(10)
            except Exception:  # noqa: BLE001
                pass
        _kill_postmasters_and_remove(self)


def bench_patroni(kills: int, bindir: str) -> dict[str, Any]:
    setup = PatroniSetup(bindir)
    try:
        setup.start()
        wait_until(setup.ready, 300, "Patroni's cluster to form")
        with psycopg.connect(setup.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_failover (id bigserial, at timestamptz)")
        times = []
        outcomes: list[str] = []
        for i in range(kills):
            wait_until(setup.ready, 600, "Patroni's cluster to be whole again")
            old = setup.primary()
            t0 = time.monotonic()
            os.kill(setup.postmaster_pid(old), signal.SIGKILL)
            took = _first_write_after(setup.dsn(), t0, timeout=300)
            times.append(took)
            new = wait_until(setup.primary, 300, "Patroni's primary to be running")
            outcomes.append("restarted in place" if new["name"] == old["name"] else "failover")
            print(f"patroni kill {i + 1}: {old['name']} -> {new['name']}: first write after "
                  f"{took:.3f} s", flush=True)
        return {"name": "Patroni 4 + etcd 3.4 (defaults: ttl 30, loop_wait 10)", "times": times,
                "throughput": None,
                "settings": "Patroni defaults; outcomes: " + ", ".join(outcomes)}
    finally:
        setup.cleanup()


# ---------------------------------------------------------------------- pg_auto_failover


def find_pg_autoctl(bindir: str) -> str | None:
    """pg_autoctl beside the PostgreSQL of ``bindir`` (its tree's usr/bin when
    the packages were unpacked into it), else on PATH; None without it or
    without the pgautofailover extension in that PostgreSQL."""
    root = os.path.normpath(os.path.join(bindir, "..", "..", "..", ".."))  # <root>/usr/lib/postgresql/NN/bin
    candidates = [os.path.join(bindir, "pg_autoctl"), os.path.join(root, "bin", "pg_autoctl"),
                  shutil.which("pg_autoctl") or ""]
    ctl = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if ctl is None:
        return None
    sharedir = subprocess.run([os.path.join(bindir, "pg_config"), "--sharedir"], capture_output=True,
                              text=True).stdout.strip()
    if not os.path.exists(os.path.join(sharedir, "extension", "pgautofailover.control")):
        return None
    return ctl


class PgAutoFailoverSetup:
    """pg_auto_failover: a monitor and three nodes (a primary, two
    secondaries), each under its own ``pg_autoctl ... --run`` keeper, on
    127.0.0.1 in a temporary directory, with pg_auto_failover's defaults
    (replication quorum: ANY 1 of the secondaries, synchronous)."""

    def __init__(self, bindir: str, ctl: str):
        self.bindir = bindir
        self.ctl = ctl
        self.base = tempfile.mkdtemp(prefix="orochi-paf-")
        os.chmod(self.base, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.monitor_port = find_free_port()
        self.nodes = [{"name": f"n{i + 1}", "pg_port": find_free_port()} for i in range(3)]
        self.procs: list[subprocess.Popen] = []

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "PYTHONPATH"}
        env.update(XDG_CONFIG_HOME=os.path.join(self.base, "config"), XDG_DATA_HOME=os.path.join(self.base, "share"),
                   PATH=self.bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin"))
        return env

    def _cmd(self, args: list[str]) -> list[str]:
        cmd = [self.ctl, *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _spawn(self, name: str, args: list[str]) -> None:
        self.procs.append(subprocess.Popen(
            self._cmd(args), cwd=self.base, env=self._env(), stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.base, f"{name}.log"), "a"), stderr=subprocess.STDOUT,
            start_new_session=True))

    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@127.0.0.1:{self.monitor_port}/pg_auto_failover?sslmode=disable"

    def state(self) -> list[dict[str, Any]]:
        out = subprocess.run(self._cmd(["show", "state", "--pgdata", os.path.join(self.base, "monitor"), "--json"]),
                             cwd=self.base, env=self._env(), capture_output=True, text=True, timeout=30)
        try:
            return json.loads(out.stdout) if out.returncode == 0 else []
        except ValueError:
            return []

    def settled(self, count: int) -> bool:
        """``count`` nodes, one primary, the others secondaries, all as assigned."""
        nodes = self.state()
        states = sorted(n["current_group_state"] for n in nodes)
        if len(nodes) != count or any(n["current_group_state"] != n["assigned_group_state"] for n in nodes):
            return False
        return states == (["single"] if count == 1 else ["primary"] + ["secondary"] * (count - 1))

    def start(self) -> None:
        common = ["--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl",
                  "--pgctl", os.path.join(self.bindir, "pg_ctl")]
        self._spawn("monitor", ["create", "monitor", "--pgdata", os.path.join(self.base, "monitor"),
                                "--pgport", str(self.monitor_port), *common, "--run"])
        wait_until(self._monitor_up, 300, "pg_auto_failover's monitor")
        for i, node in enumerate(self.nodes):
            self._spawn(node["name"], ["create", "postgres", "--pgdata", self.datadir(node), "--pgport",
                                       str(node["pg_port"]), "--name", node["name"], "--monitor",
                                       self.monitor_uri(), *common, "--run"])
            wait_until(lambda: self.settled(i + 1), 300, f"pg_auto_failover node {node['name']} to join")

    def _monitor_up(self) -> bool:
        try:
            with psycopg.connect(f"host=127.0.0.1 port={self.monitor_port} user=autoctl_node "
                                 "dbname=pg_auto_failover connect_timeout=1") as conn:
                conn.execute("SELECT count(*) FROM pgautofailover.formation")
                return True
        except psycopg.Error:
            return False

    def datadir(self, node: dict[str, Any]) -> str:
        return os.path.join(self.base, node["name"])

    def primary(self) -> dict[str, Any] | None:
        names = [n["nodename"] for n in self.state() if n["current_group_state"] == "primary"]
        return next((n for n in self.nodes if names and n["name"] == names[0]), None)

    def dsn(self) -> str:
        ports = ",".join(str(n["pg_port"]) for n in self.nodes)
        return (f"host={','.join('127.0.0.1' for _ in self.nodes)} port={ports} user=postgres "
                "dbname=postgres target_session_attrs=read-write connect_timeout=1")

    def postmaster_pid(self, node: dict[str, Any]) -> int:
        with open(os.path.join(self.datadir(node), "postmaster.pid")) as f:
            return int(f.readline())

    def cleanup(self) -> None:
        for p in reversed(self.procs):  # nodes first, the monitor last
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
            except Exception:  # noqa: BLE001
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except Exception:  # noqa: BLE001
                    pass
        _kill_postmasters_and_remove(self)


def bench_pg_auto_failover(kills: int, seconds: float, bindir: str, ctl: str) -> dict[str, Any]:
    setup = PgAutoFailoverSetup(bindir, ctl)
    try:
        setup.start()
        dsn = setup.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_failover (id bigserial, at timestamptz)")
        tput = {mode: _throughput(dsn, seconds, mode) for mode in ("on", "local")}
        times = []
        outcomes: list[str] = []
        for i in range(kills):
            wait_until(lambda: setup.settled(len(setup.nodes)), 600, "pg_auto_failover's group to be whole again")
            old = setup.primary()
            t0 = time.monotonic()
            os.kill(setup.postmaster_pid(old), signal.SIGKILL)
            took = _first_write_after(dsn, t0, timeout=300)
            times.append(took)
            with psycopg.connect(dsn, autocommit=True) as conn:
                port = conn.execute("SELECT inet_server_port()").fetchone()[0]
            new = next(n for n in setup.nodes if n["pg_port"] == port)
            outcomes.append("restarted in place" if new is old else "failover")
            print(f"pg_auto_failover kill {i + 1}: {old['name']} -> {new['name']}: first write after "
                  f"{took:.3f} s", flush=True)
        return {"name": "pg_auto_failover 2.0 (defaults)", "times": times, "throughput": tput,
                "settings": "pg_auto_failover defaults (monitor health checks every 5 s; "
                            "number_sync_standbys 0, replication quorum ANY 1 of the secondaries); "
                            f"outcomes: {outcomes.count('failover')} failovers, "
                            f"{outcomes.count('restarted in place')} restarts in place"}
    finally:
        setup.cleanup()


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--peer-kills", type=int, default=3, help="kills for Patroni (its failover is slow)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--paf-kills", type=int, default=10, help="kills for pg_auto_failover")
    parser.add_argument("--peers", default="patroni,pg_auto_failover",
                        help="comma-separated: patroni, pg_auto_failover, or none")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ha.md"))
    args = parser.parse_args(argv)
    load_before = _load()
    results = [bench_orochi(args.kills, args.seconds)]
    notes = []
    from orochi_fdw.testing.cluster import find_bindir
    for peer in filter(None, (p.strip() for p in args.peers.split(","))):
        if peer == "none":
            continue
        if peer == "patroni":
            if shutil.which("etcd") is None or not os.path.exists(os.path.join(os.path.dirname(sys.executable),
                                                                               "patroni")):
                notes.append("Patroni + etcd: not run (etcd or patroni missing: apt-get install etcd-server; "
                             "pip install -r requirements-bench.txt)")
                continue
            try:
                results.append(bench_patroni(args.peer_kills, find_bindir()))
            except Exception as exc:  # noqa: BLE001 - reported as not run
                notes.append(f"Patroni + etcd: failed to run here: {type(exc).__name__}: {exc}")
        elif peer == "pg_auto_failover":
            bindir = find_bindir()
            ctl = find_pg_autoctl(bindir)
            if ctl is None:
                notes.append("pg_auto_failover: not run (pg_autoctl or the pgautofailover extension missing: "
                             "see the setup step at the top of bench/ha_bench.py)")
                continue
            try:
                results.append(bench_pg_auto_failover(args.paf_kills, args.seconds, bindir, ctl))
            except Exception as exc:  # noqa: BLE001 - reported as not run
                notes.append(f"pg_auto_failover: failed to run here: {type(exc).__name__}: {exc}")
        else:
            notes.append(f"{peer}: not supported by this script")
    lines = ["# HA failover benchmark (bench/ha_bench.py)", "",
             f"Machine: 2 cores, shared; load average before {load_before}, after {_load()}.", "",
             "Failover time: kill -9 of the primary's postmaster -> first acknowledged INSERT through a libpq "
             "multi-host string with target_session_attrs=read-write (new connection per try, "
             "connect_timeout 1 s).", "",
             "| system | kills | median s | p95 s | min s | max s | settings |", "|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["times"]
        lines.append(f"| {r['name']} | {len(t)} | {statistics.median(t):.3f} | {_p95(t):.3f} | {min(t):.3f} | "
                     f"{max(t):.3f} | {r['settings']} |")
    lines += ["", "Insert throughput (one client, one row per autocommit transaction; Patroni, asynchronous "
              "by default, not measured):", "",
              "| system | synchronous_commit = on (quorum sync) rows/s | local (async) rows/s |", "|---|---|---|"]
    for r in results:
        if r["throughput"]:
            lines.append(f"| {r['name']} | {r['throughput']['on']:.0f} | {r['throughput']['local']:.0f} |")
    lines += ["", "Each failover time:", ""]
    for r in results:
        lines.append(f"- {r['name']}: " + ", ".join(f"{x:.3f}" for x in r["times"]))
    if notes:
        lines += ["", "Not run:", ""] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
