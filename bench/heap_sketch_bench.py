"""Sketch aggregates on heap tables: Orochi against the Debian extensions
postgresql-hll and tdigest, on the same heap table in one run (issue 19,
"Sketch aggregates on heap tables").

One Postgres cluster, one session. The rows (10M by default), generated in
SQL from a fixed seed, are those of bench/sketch_bench.py:

- ``user_id int8``: uniform over rows / 5 values (about 1.8M distinct at 10M);
- ``latency float8``: lognormal, in ms.

Each query runs once warm, then is timed (median of --runs):

- distinct count: ``hll_cardinality(hll_add_agg(hll_hash_bigint(user_id)))``
  (postgresql-hll, log2m 11 by default) against
  ``orochi.approx_count_distinct(user_id)`` (p = 14), and the exact
  ``count(DISTINCT user_id)``;
- percentiles: ``tdigest_percentile(latency, 100, q)`` (tdigest, compression
  100) against ``orochi.approx_percentile(latency, q)`` (compression 100),
  and the exact ``percentile_cont``.

Orochi and the anchors are timed with no parallel workers and with
Postgres's default of 2 workers per gather (Orochi's sketch aggregates have
combine and serialization functions: a Partial Aggregate in the workers, a
Finalize Aggregate in the leader); the exact queries with none.

The anchors: the bench needs the ``hll`` and ``tdigest`` extensions in the
PostgreSQL it runs (OROCHI_PG_BINDIR / PG_CONFIG). On a machine where that
is the system's PostgreSQL, ``apt-get install postgresql-15-hll
postgresql-15-tdigest`` installs them. Otherwise (a private PostgreSQL
tree) --install-anchors downloads the two Debian packages with
``apt-get download`` and unpacks their library and extension files into that
tree's directories (``pg_config --pkglibdir``, ``--sharedir``). The tests do
not need them.

With --preload the cluster runs with ``shared_preload_libraries = 'orochi'``
(what WAL-logged columnar files need): the interpreter and numpy are loaded
in the postmaster, so parallel workers do not import them per query.

    python bench/heap_sketch_bench.py [--rows N] [--runs N] [--install-anchors] [--no-write] [--preload]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from orochi_fdw.testing.cluster import PostgresCluster, find_bindir  # noqa: E402
from sketch_bench import _table, load_heap, log, timed  # noqa: E402

RESULTS = os.path.join(HERE, "results", "heap_sketch.md")
SETTINGS = {"shared_buffers": "2GB", "jit": "off", "work_mem": "1GB", "max_wal_size": "8GB"}
ANCHOR_PACKAGES = ("postgresql-15-hll", "postgresql-15-tdigest")

# (name, anchor query, orochi query, exact query)
CASES = [
    ("distinct users",
     "SELECT hll_cardinality(hll_add_agg(hll_hash_bigint(user_id)))::int8 FROM heap",
     "SELECT orochi.approx_count_distinct(user_id) FROM heap",
     "SELECT count(DISTINCT user_id) FROM heap"),
    ("median latency",
     "SELECT tdigest_percentile(latency, 100, 0.5) FROM heap",
     "SELECT orochi.approx_percentile(latency, 0.5) FROM heap",
     "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) FROM heap"),
    ("p99 latency",
     "SELECT tdigest_percentile(latency, 100, 0.99) FROM heap",
     "SELECT orochi.approx_percentile(latency, 0.99) FROM heap",
     "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY latency) FROM heap"),
]

#: issue 19's figures before the transition functions were buffered (10M rows)
BEFORE = {"distinct users": 13.5, "median latency": 11.7}


def pg_config() -> str:
    return os.environ.get("PG_CONFIG") or os.path.join(find_bindir(), "pg_config")


def anchors_present() -> bool:
    share = subprocess.run([pg_config(), "--sharedir"], capture_output=True, text=True, check=True).stdout.strip()
    return all(os.path.exists(os.path.join(share, "extension", f"{e}.control")) for e in ("hll", "tdigest"))


def install_anchors() -> None:
    """Unpack the Debian packages' library and extension files into the
    PostgreSQL tree that PG_CONFIG describes."""
    pkglib = subprocess.run([pg_config(), "--pkglibdir"], capture_output=True, text=True, check=True).stdout.strip()
    share = subprocess.run([pg_config(), "--sharedir"], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", *ANCHOR_PACKAGES], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        root = os.path.join(tmp, "root")
        for deb in glob.glob(os.path.join(tmp, "*.deb")):
            subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        for so in glob.glob(os.path.join(root, "usr/lib/postgresql/*/lib/*.so")):
            shutil.copy(so, pkglib)
        for f in glob.glob(os.path.join(root, "usr/share/postgresql/*/extension/*")):
            shutil.copy(f, os.path.join(share, "extension"))
    log(f"installed {', '.join(ANCHOR_PACKAGES)} into {pkglib} and {share}/extension")


def load(conn, rows: int) -> float:
    for ext in ("orochi", "hll", "tdigest"):
        conn.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
    return load_heap(conn, rows)


def _cpu_seconds(backend: int, postmaster: int) -> float:
    """CPU seconds (user and system) used so far by the backend and by the
    postmaster's exited children (its parallel workers, once reaped)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def fields(pid):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    b, pm = fields(backend), fields(postmaster)
    return (int(b[11]) + int(b[12]) + int(pm[13]) + int(pm[14])) / ticks


def _timed_value(conn, sql: str, runs: int, pids: tuple[int, int]):
    """The median wall time, the median CPU time of the backend and its
    parallel workers, and the first value of the query's result."""
    conn.execute(sql).fetchall()  # warm
    times, cpu, rows = [], [], None
    for _ in range(runs):
        time.sleep(0.1)  # the last run's workers reaped
        c0 = _cpu_seconds(*pids)
        t0 = time.perf_counter()
        rows = conn.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
        time.sleep(0.1)
        cpu.append(_cpu_seconds(*pids) - c0)
    return statistics.median(times), statistics.median(cpu), rows[0][0]


def _partial(conn, sql: str) -> bool:
    """Whether Postgres plans the query with a Partial Aggregate (workers)."""
    plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}").fetchall())
    return "Partial Aggregate" in plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--install-anchors", action="store_true",
                    help="unpack the Debian hll and tdigest packages into PG_CONFIG's tree if missing")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--preload", action="store_true",
                    help="shared_preload_libraries = 'orochi' (the setting the WAL-logged columnar files "
                         "need): parallel workers start with Python and numpy already imported")
    args = ap.parse_args(argv)
    if not anchors_present():
        if not args.install_anchors:
            log("the hll and tdigest extensions are missing: apt-get install "
                + " ".join(ANCHOR_PACKAGES) + ", or run with --install-anchors")
            return 2
        install_anchors()
    load_avg = os.getloadavg()
    out = []
    initdb_settings = {"shared_preload_libraries": "orochi"} if args.preload else None
    with PostgresCluster("bench-heapsketch", initdb_settings=initdb_settings, settings=SETTINGS) as pg:
        pg.create_database("bench")
        with pg.connect("bench", autocommit=True) as conn:
            t_load = load(conn, args.rows)
            log(f"heap loaded in {t_load:.1f} s")
            t_count, _ = timed(conn, "SELECT count(latency) FROM heap", args.runs)
            log(f"scan floor count(latency): {t_count * 1000:.0f} ms")
            pids = (conn.execute("SELECT pg_backend_pid()").fetchone()[0], pg.postmaster_pid())
            for name, anchor_sql, orochi_sql, exact_sql in CASES:
                conn.execute("SET max_parallel_workers_per_gather = 2")
                plans = {k: _partial(conn, q) for k, q in (("anchor", anchor_sql), ("orochi", orochi_sql))}
                t_anchor_par, c_anchor_par, v_anchor_par = _timed_value(conn, anchor_sql, args.runs, pids)
                t_orochi_par, c_orochi_par, v_orochi_par = _timed_value(conn, orochi_sql, args.runs, pids)
                conn.execute("SET max_parallel_workers_per_gather = 0")
                t_anchor, c_anchor, v_anchor = _timed_value(conn, anchor_sql, args.runs, pids)
                t_orochi, c_orochi, v_orochi = _timed_value(conn, orochi_sql, args.runs, pids)
                t_exact, _, v_exact = _timed_value(conn, exact_sql, args.runs, pids)
                err = lambda v: f"{abs(float(v) - float(v_exact)) / abs(float(v_exact)):.3%}"  # noqa: E731
                same = "same" if v_orochi_par == v_orochi else f"differs: {float(v_orochi_par):.6g}"
                out.append([name, f"{t_orochi * 1000:.0f}", f"{t_anchor * 1000:.0f}",
                            f"{t_orochi / t_anchor:.2f}x",
                            f"{t_orochi_par * 1000:.0f}" + ("" if plans["orochi"] else " (serial plan)"),
                            f"{t_anchor_par * 1000:.0f}" + ("" if plans["anchor"] else " (serial plan)"),
                            f"{t_orochi_par / t_anchor_par:.2f}x", same,
                            f"{c_orochi * 1000:.0f} / {c_anchor * 1000:.0f}",
                            f"{c_orochi_par * 1000:.0f} / {c_anchor_par * 1000:.0f}",
                            f"{t_exact * 1000:.0f}", f"{float(v_orochi):.6g} ({err(v_orochi)})",
                            f"{float(v_anchor):.6g} ({err(v_anchor)})", f"{float(v_exact):.6g}",
                            f"{BEFORE[name] * 1000:.0f}" if name in BEFORE and args.rows == 10_000_000 else "-"])
                log(f"{name}: orochi {t_orochi * 1000:.0f} ms ({t_orochi_par * 1000:.0f} ms with 2 workers), "
                    f"anchor {t_anchor * 1000:.0f} ms ({t_anchor_par * 1000:.0f} ms with 2 workers), "
                    f"exact {t_exact * 1000:.0f} ms")
    head = ["query", "orochi, 0 workers (ms)", "anchor, 0 workers (ms)", "orochi / anchor",
            "orochi, 2 workers (ms)", "anchor, 2 workers (ms)", "orochi / anchor, 2 workers",
            "orochi 2 workers vs 0", "CPU orochi / anchor, 0 workers (ms)",
            "CPU orochi / anchor, 2 workers (ms)", "exact (ms)", "orochi value (error)", "anchor value (error)",
            "exact value", "orochi before (ms)"]
    load_end = os.getloadavg()
    load_text = (f"load average at start {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}, "
                 f"at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    table = _table(head, out)
    print(f"{args.rows:,} heap rows, median of {args.runs} warm runs, {load_text}")
    print("\n".join(table))
    print(f"scan floor `SELECT count(latency) FROM heap`: {t_count * 1000:.0f} ms")
    if not args.no_write:
        md = ["# Sketch aggregates on heap tables", "",
              f"`python bench/heap_sketch_bench.py --rows {args.rows}"
              f"{f' --runs {args.runs}' if args.runs != 3 else ''}{' --preload' if args.preload else ''}`: "
              f"{args.rows:,} rows in a heap "
              f"table, median of {args.runs} warm runs, one session, each query with "
              f"max_parallel_workers_per_gather 0 and 2 (a Partial Aggregate in the workers; "
              f"\"(serial plan)\" when Postgres chose none); "
              f"{'orochi preloaded (shared_preload_libraries); ' if args.preload else ''}"
              f"2-core shared machine, {load_text}.", "",
              "Anchors: postgresql-hll 2.17 (`hll_cardinality(hll_add_agg(hll_hash_bigint(x)))`, "
              "log2m 11) and tdigest 1.4 (`tdigest_percentile(x, 100, q)`), the Debian packages. "
              "Orochi: `orochi.approx_count_distinct(x)` (HyperLogLog p = 14) and "
              "`orochi.approx_percentile(x, q)` (t-digest, compression 100); their transition "
              "function buffers the values in C and hands them to the HLL sketch in batches of "
              "65,536, while a t-digest state keeps them all (in the aggregate's memory context) "
              "and they are sorted once, at the end; with workers, each worker's state travels to "
              "the leader as its HLL sketch or its t-digest values sorted in the worker (raw "
              "float8), which the leader merges and compresses in one pass (\"orochi 2 workers vs "
              "0\": the parallel result against the serial). "
              "\"before\": issue 19's figures with one Python call per row. CPU: the median CPU "
              "time (user and system) of the backend and its parallel workers, less sensitive "
              "than the wall time to the machine's load.", "",
              *table, "",
              f"Scan floor `SELECT count(latency) FROM heap`: {t_count * 1000:.0f} ms; "
              f"heap load {t_load:.0f} s."]
        with open(RESULTS, "w") as f:
            f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
