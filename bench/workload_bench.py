"""The workload management benchmark: what admission costs, and what pools
do for OLTP latency beside analytical scans.

One cluster with orochi preloaded (shared memory for the pools), jit off, no
parallel workers; PostgreSQL 15's pgbench on its own tables (heap).

1. Admission overhead, with orochi.workload_enabled off and on (a pool and a
   class matching the client's application_name in force, so every statement
   is classified, admitted and released). Target (issue 21): at most 50 us
   per statement.
   a. The backend's CPU time per statement (from /proc/<pid>/schedstat, in
      ns, so other work on the machine moves it less than wall time): one
      connection alternating blocks of 2,000 prepared statements with
      admission off and on (SET by a superuser); the median of the pairs'
      differences.
   b. pgbench select-only (one SELECT by primary key per transaction), 1 and
      4 clients: TPS and mean latency, medians of the rounds (wall clock:
      on a shared machine the spread is wider than the cost measured in a).
2. Mixed workload: pgbench, 4 clients, select-only and then TPC-B-like
   (the default script: three UPDATEs, a SELECT and an INSERT per
   transaction, so writes and their commits), beside analytical clients
   looping a grouped scan of a 10M-row columnar table. Three runs, repeated
   in turn: OLTP alone; with the scans and no pools (workload management
   off); with pools (scans in a pool of concurrency 1, OLTP in a pool of its
   own with a higher priority). OLTP latency percentiles come from pgbench's
   per-transaction log. Target: with pools, OLTP p99 within 2x of alone.

Prints the tables and writes bench/results/workload.md.

    python bench/workload_bench.py [--seconds N] [--rounds N] [--rows N] [--scanners N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psycopg

from orochi_fdw.testing.cluster import PostgresCluster, find_bindir

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "workload.md")

SETTINGS = {
    "shared_buffers": "512MB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "64MB",
    "max_wal_size": "4GB",
    "max_connections": 100,
}

SCAN = "SELECT k, count(*), sum(v), max(ts) FROM facts WHERE v > 0.25 GROUP BY k"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pgbench(pg: PostgresCluster, args: list[str], seconds: int, clients: int) -> dict:
    """Run pgbench; tps, mean latency (ms) and per-transaction latency percentiles (ms)."""
    exe = os.path.join(find_bindir(), "pgbench")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        prefix = os.path.join(tmp, "log")
        cmd = [exe, "-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-n", "-c", str(clients),
               "-j", str(min(clients, 2)), "-T", str(seconds), "-l", "--log-prefix", prefix, *args, "bench"]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if out.returncode != 0:
            raise RuntimeError(f"pgbench failed: {out.stderr}")
        tps = mean = None
        for line in out.stdout.splitlines():
            if line.startswith("tps ="):
                tps = float(line.split("=")[1].split()[0])
            if line.startswith("latency average ="):
                mean = float(line.split("=")[1].split()[0])
        lat = []
        for name in glob.glob(prefix + "*"):
            with open(name) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        lat.append(int(parts[2]) / 1000.0)
        lat.sort()
        pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
        return {"tps": tps, "mean": mean, "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "n": len(lat)}


def set_enabled(pg: PostgresCluster, on: bool) -> None:
    with pg.connect("postgres", autocommit=True) as c:
        c.execute(f"ALTER SYSTEM SET orochi.workload_enabled = {'on' if on else 'off'}")
    pg.reload()


# ---------------------------------------------------------------- 1. admission overhead

CPU_STATEMENTS = {
    "SELECT 1": ("SELECT 1", None),
    "pgbench select-only": ("SELECT abalance FROM pgbench_accounts WHERE aid = %s", "aid"),
}


def backend_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def cpu_per_statement(pg: PostgresCluster, rounds: int, block: int = 2000) -> list[tuple]:
    """Backend CPU us per statement, workload management off and on: one
    connection switching orochi.workload_enabled (a superuser may) between
    blocks of statements, so that each "on" block has an "off" block next to
    it in time; the cost is the median of the pairs' differences."""
    import random
    rng = random.Random(1)
    rows = []
    set_enabled(pg, True)
    for label, (query, param) in CPU_STATEMENTS.items():
        pairs = rounds * 10
        log(f"CPU per statement, {label}: {pairs} pairs of blocks of {block:,}")
        off, on, diff = [], [], []
        with psycopg.connect(pg.dsn("bench", application_name="pgbench"), autocommit=True) as c:
            pid = c.info.backend_pid

            def run_block(enabled: bool) -> float:
                c.execute(f"SET orochi.workload_enabled = {'on' if enabled else 'off'}")
                params = [(rng.randint(1, 1_000_000),) if param else None for _ in range(block)]
                start = backend_cpu_ns(pid)
                for p in params:
                    c.execute(query, p, prepare=True)
                return (backend_cpu_ns(pid) - start) / block / 1000.0

            run_block(False)
            run_block(True)     # warm-up: plan cache, catalog caches, classification
            for i in range(pairs):
                first = i % 2 == 0
                a = run_block(first)
                b = run_block(not first)
                t_on, t_off = (a, b) if first else (b, a)
                on.append(t_on)
                off.append(t_off)
                diff.append(t_on - t_off)
        rows.append((label, f"{statistics.median(off):.2f}", f"{statistics.median(on):.2f}",
                     f"{statistics.median(diff):+.2f}",
                     f"{statistics.quantiles(diff, n=4)[0]:+.2f} .. {statistics.quantiles(diff, n=4)[2]:+.2f}"))
    set_enabled(pg, False)
    return rows


def overhead(pg: PostgresCluster, seconds: int, rounds: int) -> tuple[list[tuple], list[tuple]]:
    with pg.connect("postgres", autocommit=True) as c:
        c.execute("SELECT orochi.create_resource_pool('oltp', 64)")
        c.execute("""SELECT orochi.create_workload_class('oltp', 'oltp', '{"application_name": "pgbench"}')""")
    cpu = cpu_per_statement(pg, rounds)
    rows = []
    for clients in (1, 4):
        for mode in ("prepared",):
            res: dict[bool, list[dict]] = {False: [], True: []}
            log(f"select-only, {clients} client(s), -M {mode}: {rounds} rounds of off/on")
            for r in range(rounds):
                for on in ((False, True) if r % 2 == 0 else (True, False)):
                    set_enabled(pg, on)
                    res[on].append(pgbench(pg, ["-S", "-M", mode], seconds, clients))
            off_mean = statistics.median(x["mean"] for x in res[False]) * 1000
            on_mean = statistics.median(x["mean"] for x in res[True]) * 1000
            off_tps = statistics.median(x["tps"] for x in res[False])
            on_tps = statistics.median(x["tps"] for x in res[True])
            spread_off = (min(x["mean"] for x in res[False]) * 1000, max(x["mean"] for x in res[False]) * 1000)
            spread_on = (min(x["mean"] for x in res[True]) * 1000, max(x["mean"] for x in res[True]) * 1000)
            rows.append((f"{clients} client(s), -M {mode}", f"{off_tps:,.0f}", f"{on_tps:,.0f}",
                         f"{off_mean:.1f} ({spread_off[0]:.1f}-{spread_off[1]:.1f})",
                         f"{on_mean:.1f} ({spread_on[0]:.1f}-{spread_on[1]:.1f})",
                         f"{on_mean - off_mean:+.1f}"))
    with pg.connect("postgres", autocommit=True) as c:
        stats = c.execute("SELECT admitted FROM orochi.pool_stats() WHERE pool_name = 'oltp'").fetchone()[0]
        c.execute("SELECT orochi.drop_workload_class('oltp')")
        c.execute("SELECT orochi.drop_resource_pool('oltp')")
    log(f"statements admitted in pool oltp: {stats:,}")
    return cpu, rows


# ---------------------------------------------------------------- 2. mixed workload

class Scanners:
    """Analytical clients looping SCAN until stopped."""

    def __init__(self, pg: PostgresCluster, n: int):
        self.pg = pg
        self.n = n
        self.done = 0
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        with psycopg.connect(self.pg.dsn("bench", application_name="analytics"), autocommit=True) as c:
            while not self._stop.is_set():
                t = time.perf_counter()
                c.execute(SCAN).fetchall()
                with self._lock:
                    self.done += 1
                    self.durations.append(time.perf_counter() - t)

    def __enter__(self) -> "Scanners":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(600)


#: the OLTP sides of the mixed runs: pgbench's built-in scripts
OLTP_SCRIPTS = {
    "select-only": ["-S", "-M", "prepared"],
    "TPC-B-like (writes)": ["-M", "prepared"],
}


def load_facts(pg: PostgresCluster, rows: int) -> float:
    """The columnar table the scanners read; seconds one scan takes alone."""
    log(f"loading {rows:,} rows into the columnar table ...")
    with pg.connect("bench", autocommit=True) as c:
        c.execute("CREATE FOREIGN TABLE facts (id int8, k int4, v float8, ts timestamptz) SERVER orochi")
        start = time.perf_counter()
        step = 1_000_000
        for lo in range(1, rows + 1, step):
            c.execute("INSERT INTO facts SELECT g, g %% 1000, random(), "
                      "'2024-01-01'::timestamptz + g * interval '1 second' "
                      "FROM generate_series(%s::int8, %s::int8) g", (lo, min(rows, lo + step - 1)))
        log(f"  loaded in {time.perf_counter() - start:.0f} s")
        t = time.perf_counter()
        c.execute(SCAN).fetchall()
        c.execute(SCAN).fetchall()
        scan_alone = (time.perf_counter() - t) / 2
    with pg.connect("postgres", autocommit=True) as c:
        c.execute("SELECT orochi.create_resource_pool('olap', 1)")
        c.execute("SELECT orochi.create_resource_pool('oltp', 32, priority => 10)")
        c.execute("""SELECT orochi.create_workload_class('analytics', 'olap', '{"application_name": "analytics"}')""")
        c.execute("""SELECT orochi.create_workload_class('oltp', 'oltp', '{"application_name": "pgbench"}')""")
    return scan_alone


def mixed(pg: PostgresCluster, seconds: int, scanners: int, rounds: int,
          script: list[str]) -> tuple[list[tuple], dict]:
    """OLTP (pgbench with ``script``) alone, beside the scanners without
    pools, and with pools, ``rounds`` times in turn."""
    with pg.connect("postgres", autocommit=True) as c:
        c.execute("SELECT orochi.pool_stats_reset()")
    figures: dict = {}
    scenarios = (("OLTP alone", False, False),
                 (f"OLTP + {scanners} scanners, no pools", True, False),
                 (f"OLTP + {scanners} scanners, pools (olap: 1 slot)", True, True))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in scenarios}
    scans: dict[str, list[int]] = {label: [] for label, _, _ in scenarios}
    scan_time: dict[str, list[float]] = {label: [] for label, _, _ in scenarios}
    for r in range(rounds):
        for label, with_scans, pools in scenarios:
            set_enabled(pg, pools)
            log(f"round {r + 1}/{rounds}: {label} ...")
            pgbench(pg, script, 2, 4)    # warm-up
            if with_scans:
                with Scanners(pg, scanners) as s:
                    time.sleep(1)
                    res = pgbench(pg, script, seconds, 4)
                    scans[label].append(s.done)
                scan_time[label].extend(s.durations)
            else:
                res = pgbench(pg, script, seconds, 4)
            runs[label].append(res)
    out = []
    for label, with_scans, _ in scenarios:
        rs = runs[label]
        p99s = [x["p99"] for x in rs]
        res = {k: statistics.median(x[k] for x in rs) for k in ("tps", "p50", "p95", "p99")}
        figures[label] = res
        scan_info = (f"{statistics.median(scans[label]):.0f} per run, {statistics.median(scan_time[label]):.2f} s "
                     "median each" if with_scans else "-")
        out.append((label, f"{res['tps']:,.0f}", f"{res['p50']:.3f}", f"{res['p95']:.3f}",
                    f"{res['p99']:.3f} ({min(p99s):.3f}-{max(p99s):.3f})", scan_info))
    with pg.connect("postgres", autocommit=True) as c:
        olap = c.execute("SELECT admitted, waited, mean_wait_ms FROM orochi.pool_stats() "
                         "WHERE pool_name = 'olap'").fetchone()
    figures["olap"] = olap
    set_enabled(pg, False)
    return out, figures


NOTES = """
Notes:

- Admission's cost per statement is the backend's CPU time with it on minus off, measured
  in one connection that alternates blocks of statements, so that both sides of each pair
  see the same machine. What it does per statement: compare the session's cached
  classification (definitions generation, session user, application_name), test kind and
  cost against the cached classes, take the one LWLock, count the statement in, and at
  the end count it out (and hand the slot to the head of the queue, if any). Python is not
  called; a session is classified again only when one of those three changed.
- The pgbench wall-clock rows are there for scale: their spread between rounds on this
  shared machine is far wider than the cost measured above.
- OLTP latency beside the scans is bounded below by the machine: other work on the same
  two cores (see the load averages) preempts any backend, and the p99 of OLTP running
  alone is already set by that. Pools bound how many scans run at once (the scanners
  beyond the pool's one slot wait in its queue, taking no CPU); they do not lower the
  priority of a running scan.
- A scan's time in the "analytical scans" column is what its client saw: with pools it
  includes the wait in the queue.
"""


def render(head: tuple, rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="seconds per pgbench run")
    ap.add_argument("--rounds", type=int, default=5, help="off/on rounds of the overhead runs")
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the columnar table")
    ap.add_argument("--scanners", type=int, default=4, help="analytical clients")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/workload.md")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    load_before = loadavg()
    pg = PostgresCluster("wlbench", initdb_settings={"shared_preload_libraries": "orochi"}, settings=SETTINGS)
    try:
        pg.start()
        pg.execute("CREATE EXTENSION orochi")
        pg.create_database("bench")
        subprocess.run([os.path.join(find_bindir(), "pgbench"), "-i", "-q", "-s", "10", "-h", pg.host,
                        "-p", str(pg.port), "-U", "postgres", "bench"], check=True, capture_output=True)
        cpu, over = overhead(pg, args.seconds, args.rounds)
        load_mid = loadavg()
        scan_alone = load_facts(pg, args.rows)
        mixes = {name: mixed(pg, args.seconds * 2, args.scanners, min(args.rounds, 3), script)
                 for name, script in OLTP_SCRIPTS.items()}
    finally:
        pg.cleanup()
    load_after = loadavg()

    t0 = render(("statement (prepared)", "backend CPU off, us", "backend CPU on, us",
                 "admission cost, us/statement (median of pairs)", "interquartile range of pairs"), cpu)
    t1 = render(("pgbench select-only", "TPS off", "TPS on", "mean latency off, us (min-max)",
                 "mean latency on, us (min-max)", "difference, us"), over)
    mixed_text = []
    for name, (mix, figures) in mixes.items():
        t2 = render(("run", "OLTP TPS", "OLTP p50 ms", "OLTP p95 ms", "OLTP p99 ms (min-max)", "analytical scans"),
                    mix)
        alone = figures["OLTP alone"]["p99"]
        keys = [k for k in figures if k.startswith("OLTP +")]
        nopools, pools = figures[keys[0]]["p99"], figures[keys[1]]["p99"]
        olap = figures["olap"]
        summary = (f"OLTP p99: alone {alone:.3f} ms; beside the scans without pools {nopools:.3f} ms "
                   f"({nopools / alone:.1f}x); with pools {pools:.3f} ms ({pools / alone:.1f}x, target at most 2x: "
                   f"{'met' if pools <= 2 * alone else 'missed'}). One scan alone took {scan_alone:.2f} s; "
                   f"in the pooled runs the olap pool admitted {olap[0]} scans, {olap[1]} after waiting "
                   f"(mean wait {olap[2] or 0:.0f} ms).")
        mixed_text.append((name, t2, summary))
    print(t0)
    print()
    print(t1)
    for name, t2, summary in mixed_text:
        print()
        print(f"pgbench {name}:")
        print(t2)
        print()
        print(summary)
    if not args.no_write:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            f.write("# Workload management: admission cost and OLTP beside analytical scans\n\n")
            f.write(f"`python bench/workload_bench.py --seconds {args.seconds} --rounds {args.rounds} "
                    f"--rows {args.rows} --scanners {args.scanners}` at commit {commit}, "
                    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, 2 cores shared with "
                    f"other work (load average {load_before} before, {load_mid} between the parts, "
                    f"{load_after} after); orochi preloaded, jit off, no parallel workers, pgbench scale 10.\n\n")
            f.write("## Admission overhead\n\n")
            f.write("orochi.workload_enabled off and on, a pool and a class matching the client in force; "
                    "medians of the rounds, min-max in brackets.\n\n")
            f.write("The backend's CPU time per statement (/proc/<pid>/schedstat), one connection "
                    f"alternating blocks of 2,000 statements with admission off and on ({args.rounds * 10} "
                    "pairs); medians:\n\n")
            f.write(t0 + "\n\n")
            f.write("pgbench select-only, wall clock:\n\n")
            f.write(t1 + "\n\n")
            f.write("## OLTP beside analytical scans\n\n")
            f.write(f"pgbench, 4 clients, prepared, {args.seconds * 2} s per run, "
                    f"{min(args.rounds, 3)} rounds of the three runs in turn (medians; p99 min-max in brackets); "
                    f"{args.scanners} clients looping `{SCAN}` over {args.rows:,} columnar rows.\n")
            for name, t2, summary in mixed_text:
                f.write(f"\n### pgbench {name}\n\n")
                f.write(t2 + "\n\n" + summary + "\n")
            f.write(NOTES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
