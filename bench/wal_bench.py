"""WAL benchmark (issue 13): what putting columnar files through the WAL costs.

One dataset, the time series of ``bench/columnar_bench.py`` (``ts
timestamptz``, ``device_id int4``, five ``float8`` metrics, ``status text``,
``note text``; 5M rows by default), written once as a server-side CSV file,
then loaded with ``COPY t FROM '<file>' (FORMAT csv)`` into:

- ``before``: an orochi table whose stripe files are written as before this
  issue (written, fsynced, linked into place, nothing in the WAL:
  ``orochi_fdw.testing.bench_wrappers.UnloggedColumnarTable``, the same code
  with the logging call left out);
- ``after``: an orochi table as shipped: each stripe file logged whole to the
  WAL by Orochi's custom resource manager (design 1);
- ``toast``: the prototype of design 2: each stripe's bytes stored in a heap
  table's ``bytea`` column with STORAGE EXTERNAL, so PostgreSQL's own WAL
  carries them as TOAST chunks (``ToastColumnarTable``);
- ``heap``: a plain heap table, for reference.

--runs times each, rotating the order, each after a TRUNCATE and a
CHECKPOINT: rows/s from the median wall-clock time, the backend's CPU time,
the WAL written (``pg_current_wal_lsn()`` before and after), the bytes stored
(stripe file bytes; for ``toast`` the bytea bytes) and their ratio.

Reading: a scan of the ``after`` table (``count(*), sum(cpu)``, the read
path is the same before and after: the same files), and the time to bring
every stripe's bytes into Python from the files (``pread``) versus from the
TOAST table (SPI: the detoasted ``bytea`` copied into a Python bytes object),
``StripeFetchWrapper``.

Replication: a streaming standby (``pg_basebackup -R``) follows while the
``after`` table takes --lag-loads more COPYs of the file back to back; the
replay lag (bytes between the primary's insert position and the standby's
replay position, and ``pg_stat_replication.replay_lag``) is sampled every
0.1 s; after the last COPY commits, the time until the standby has replayed
it; then the time to promote the standby (``pg_ctl promote -w``) until it
takes a write.

Server: fsync on, full_page_writes on (the production defaults; the test
harness turns both off), shared_buffers 1GB, max_wal_size large enough that
no checkpoint falls inside a timed COPY, no parallel workers, jit off, and
autovacuum off: the WAL is measured for the whole cluster, and a vacuum of
the heap table loaded just before (with wal_log_hints, full page images of
all its pages) would be counted against the next COPY.

Targets (issue 13): COPY at least 0.8x the rate before; WAL bytes at most
1.2x the compressed bytes written.

    python bench/wal_bench.py [--rows N] [--runs N] [--lag-loads N] [--no-write]

Needs pyarrow (requirements-bench.txt).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import pyarrow.csv as pa_csv
except ImportError:  # pragma: no cover - a bench-only dependency
    raise SystemExit("wal_bench needs pyarrow: pip install -r requirements-bench.txt") from None

from bridge_bench import backend_cpu_seconds, git_commit, load_average, log  # noqa: E402
from columnar_bench import TS_COLUMNS, csv_view, make_timeseries  # noqa: E402

from orochi_fdw.testing import replica  # noqa: E402
from orochi_fdw.testing.cluster import PostgresCluster  # noqa: E402

RESULTS_MD = os.path.join(HERE, "results", "wal.md")

SETTINGS = {
    **replica.REPLICATION_SETTINGS,
    "shared_buffers": "1GB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "64MB",
    "fsync": True,
    "full_page_writes": True,
    "max_wal_size": "32GB",
    "checkpoint_timeout": "1h",
    "wal_buffers": "16MB",
    "autovacuum": "off",
}

ARMS = ("before", "after", "toast", "heap")
WRAPPERS = "orochi_fdw.testing.bench_wrappers"


def timed(conn, sql: str):
    """(wall seconds, backend CPU seconds or None, row count)."""
    pid = conn.info.backend_pid
    cpu0 = backend_cpu_seconds(pid)
    t0 = time.perf_counter()
    cur = conn.execute(sql)
    result = cur.fetchall() if cur.description else cur.rowcount
    wall = time.perf_counter() - t0
    cpu1 = backend_cpu_seconds(pid)
    return wall, (cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None), result


def lsn(conn) -> str:
    return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def wal_between(conn, a: str, b: str) -> int:
    return int(conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (b, a)).fetchone()[0])


def create_tables(conn) -> None:
    cols = ", ".join(f"{c} {t}" for c, t in TS_COLUMNS)
    conn.execute(f"CREATE TABLE t_heap ({cols})")
    conn.execute(f"CREATE FOREIGN TABLE t_after ({cols}) SERVER orochi")
    conn.execute(f"CREATE FOREIGN TABLE t_before ({cols}) SERVER orochi"
                 f" OPTIONS (wrapper '{WRAPPERS}.UnloggedColumnarTable')")
    conn.execute("CREATE TABLE blobs (stripe_id bigint PRIMARY KEY, data bytea)")
    conn.execute("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL")
    conn.execute(f"CREATE FOREIGN TABLE t_toast ({cols}) SERVER orochi"
                 f" OPTIONS (wrapper '{WRAPPERS}.ToastColumnarTable', blob_table 'blobs')")
    for mode, source in (("files", "t_after"), ("toast", "blobs")):
        conn.execute(f"CREATE FOREIGN TABLE fetch_{mode} (bytes bigint, seconds float8) SERVER orochi"
                     f" OPTIONS (wrapper '{WRAPPERS}.StripeFetchWrapper', source '{source}', mode '{mode}')")


def stored_bytes(conn, arm: str) -> int:
    if arm == "heap":
        return int(conn.execute("SELECT pg_total_relation_size('t_heap')").fetchone()[0])
    if arm == "toast":
        return int(conn.execute("SELECT coalesce(sum(octet_length(data)), 0) FROM blobs").fetchone()[0])
    return int(conn.execute("SELECT coalesce(sum(file_bytes), 0) FROM orochi.columnar_stripes"
                            " WHERE relid = %s::regclass", (f"t_{arm}",)).fetchone()[0])


def copy_runs(conn, path: str, nrows: int, runs: int) -> dict:
    figures = {arm: {"walls": [], "cpus": [], "wal": [], "stored": []} for arm in ARMS}
    for run in range(runs):
        order = list(ARMS[run % len(ARMS):] + ARMS[:run % len(ARMS)])
        for arm in order:
            conn.execute(f"TRUNCATE t_{arm}")
            if arm == "toast":
                conn.execute("TRUNCATE blobs")
            conn.execute("CHECKPOINT")
            start = lsn(conn)
            wall, cpu, count = timed(conn, f"COPY t_{arm} FROM '{path}' (FORMAT csv)")
            end = lsn(conn)
            if count != nrows:
                raise SystemExit(f"COPY into t_{arm} loaded {count} rows, expected {nrows}")
            f = figures[arm]
            f["walls"].append(wall)
            f["cpus"].append(cpu)
            f["wal"].append(wal_between(conn, start, end))
            f["stored"].append(stored_bytes(conn, arm))
            log(f"  COPY t_{arm}: {wall:.1f} s (CPU {cpu or 0:.1f} s), {nrows / wall:,.0f} rows/s, "
                f"WAL {f['wal'][-1] / 1e6:,.1f} MB, stored {f['stored'][-1] / 1e6:,.1f} MB")
    out = {}
    for arm, f in figures.items():
        wall = statistics.median(f["walls"])
        cpu = statistics.median(f["cpus"]) if None not in f["cpus"] else None
        wal = statistics.median(f["wal"])
        stored = statistics.median(f["stored"])
        out[arm] = {"seconds": wall, "rows_s": nrows / wall, "cpu": cpu, "wal": wal, "stored": stored,
                    "wal_per_row": wal / nrows, "wal_ratio": wal / stored if stored else None,
                    "runs": [round(w, 2) for w in f["walls"]]}
    return out


def check_same(conn) -> None:
    q = "SELECT count(*), sum(device_id), round(sum(cpu)::numeric, 4), sum(length(status)) FROM {}"
    heap = conn.execute(q.format("t_heap")).fetchone()
    for arm in ("before", "after"):
        got = conn.execute(q.format(f"t_{arm}")).fetchone()
        if got != heap:
            raise SystemExit(f"t_{arm} differs from the heap table: {got} vs {heap}")


def read_figures(conn, runs: int) -> dict:
    scans = []
    timed(conn, "SELECT count(*), sum(cpu) FROM t_after")
    for _ in range(runs):
        scans.append(timed(conn, "SELECT count(*), sum(cpu) FROM t_after")[0])
    fetch = {}
    for mode in ("files", "toast"):
        conn.execute(f"SELECT * FROM fetch_{mode}").fetchall()  # warm
        results = [conn.execute(f"SELECT * FROM fetch_{mode}").fetchone() for _ in range(runs)]
        nbytes = results[0][0]
        seconds = statistics.median(r[1] for r in results)
        fetch[mode] = {"bytes": nbytes, "seconds": seconds, "gb_s": nbytes / seconds / 1e9}
    return {"scan_ms": statistics.median(scans) * 1000, "fetch": fetch}


def replication_figures(pg: PostgresCluster, path: str, nrows: int, loads: int) -> dict:
    log("  making a standby (pg_basebackup -R) ...")
    t0 = time.perf_counter()
    standby = replica.make_standby(pg, "walbench-standby", settings=dict(SETTINGS))
    backup_seconds = time.perf_counter() - t0
    try:
        replica.wait_for_catchup(pg, standby, timeout=600)
        samples: list[tuple[float, int, float | None]] = []
        done = threading.Event()

        def sample() -> None:
            with pg.connect("bench", autocommit=True) as mon, standby.connect("bench", autocommit=True) as sb:
                while not done.is_set():
                    primary_lsn = lsn(mon)
                    replayed = sb.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
                    lag_bytes = max(0, wal_between(mon, replayed, primary_lsn))
                    row = mon.execute("SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication").fetchone()
                    samples.append((time.perf_counter(), lag_bytes,
                                    float(row[0]) if row and row[0] is not None else None))
                    time.sleep(0.1)

        with pg.connect("bench", autocommit=True) as conn:
            conn.execute("TRUNCATE t_after")
            conn.execute("CHECKPOINT")
            start = lsn(conn)
            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            t0 = time.perf_counter()
            for _ in range(loads):
                conn.execute(f"COPY t_after FROM '{path}' (FORMAT csv)")
            load_seconds = time.perf_counter() - t0
            end = lsn(conn)
        t1 = time.perf_counter()
        replica.wait_for_lsn(standby, end, timeout=600)
        catchup = time.perf_counter() - t1
        done.set()
        thread.join()
        with standby.connect("bench", autocommit=True) as sb, pg.connect("bench", autocommit=True) as p:
            q = "SELECT count(*), round(sum(cpu)::numeric, 4) FROM t_after"
            if sb.execute(q).fetchone() != p.execute(q).fetchone():
                raise SystemExit("the standby's t_after differs from the primary's")
            wal = wal_between(p, start, end)
        lags = [b for _, b, _ in samples]
        times = [s for _, _, s in samples if s is not None]
        t0 = time.perf_counter()
        replica.promote(standby)
        with standby.connect("bench", autocommit=True) as sb:
            sb.execute("INSERT INTO t_heap (device_id) VALUES (1)")
        promote_seconds = time.perf_counter() - t0
    finally:
        standby.cleanup()
    return {"loads": loads, "rows": loads * nrows, "load_seconds": load_seconds,
            "rows_s": loads * nrows / load_seconds, "wal": wal, "wal_mb_s": wal / load_seconds / 1e6,
            "lag_max_mb": max(lags, default=0) / 1e6, "lag_median_mb": statistics.median(lags) / 1e6 if lags else 0,
            "lag_max_s": max(times, default=None), "lag_median_s": statistics.median(times) if times else None,
            "catchup_s": catchup, "promote_s": promote_seconds, "basebackup_s": backup_seconds,
            "samples": len(samples)}


# ---------------------------------------------------------------- reporting

def mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def report(data: dict) -> list[str]:
    c = data["copy"]
    before = c["before"]["rows_s"]
    lines = [
        "# WAL benchmark",
        "",
        "Written by `bench/wal_bench.py`; do not edit by hand.",
        "",
        f"- run: {data['date']}, commit {data['commit']}; load average {data['load']}; "
        f"{data['cpus']} cores; total {data['total_seconds']:.0f} s",
        f"- data: the time series of bench/columnar_bench.py, {data['rows']:,} rows, CSV "
        f"{mb(data['csv_bytes'])} MB",
        f"- server: {data['server_version']}; "
        + ", ".join(f"{k}={v}" for k, v in data["settings"].items()),
        f"- COPY: `COPY t FROM '<file>' (FORMAT csv)`, median of {data['runs']} runs per table, "
        "order rotated, each after TRUNCATE and CHECKPOINT",
        "",
        "## COPY and WAL",
        "",
        "before: stripe files written as before (nothing in the WAL); after: each stripe file logged whole "
        "by the custom resource manager; toast: design 2's prototype (stripe bytes in a heap table's "
        "TOAST); heap: a plain heap table. Stored: stripe file bytes (toast: bytea bytes; heap: "
        "pg_total_relation_size).",
        "",
        "rows/s: from the median wall-clock time; CPU: the backend's own CPU time (median), which other "
        "work on a shared machine does not inflate, and the rows/s it gives.",
        "",
        "| table | rows/s | vs before | backend CPU s | rows/s (CPU) | vs before (CPU) | WAL MB | stored MB "
        "| WAL / stored | WAL B/row | runs (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    cpu_before = c["before"]["cpu"]
    for arm in ARMS:
        a = c[arm]
        cpu = "?" if a["cpu"] is None else f"{a['cpu']:.1f}"
        cpu_rate = "?" if a["cpu"] is None else f"{data['rows'] / a['cpu']:,.0f}"
        cpu_vs = "?" if a["cpu"] is None or cpu_before is None else f"{cpu_before / a['cpu']:.2f}x"
        lines.append(
            f"| {arm} | {a['rows_s']:,.0f} | {a['rows_s'] / before:.2f}x | {cpu} | {cpu_rate} | {cpu_vs} | "
            f"{mb(a['wal'])} | {mb(a['stored'])} | {a['wal_ratio']:.2f} | {a['wal_per_row']:.2f} | {a['runs']} |")
    after = c["after"]
    cpu_target = ("" if after["cpu"] is None or cpu_before is None
                  else f" (by backend CPU time **{cpu_before / after['cpu']:.2f}x**)")
    lines += [
        "",
        f"Targets: COPY after / before = **{after['rows_s'] / before:.2f}x**{cpu_target} (target >= 0.8x); "
        f"WAL / compressed bytes after = **{after['wal_ratio']:.2f}** (target <= 1.2).",
        "",
        "## Reading",
        "",
        f"Scan of the after table, `count(*), sum(cpu)`, warm, median of {data['runs']}: "
        f"{data['read']['scan_ms']:.0f} ms (the same files as before: the read path did not change).",
        "",
        "Every stripe's bytes into Python, warm, median of runs:",
        "",
        "| from | MB | ms | GB/s |",
        "|---|---:|---:|---:|",
    ]
    for mode, label in (("files", "stripe files (pread)"), ("toast", "TOAST (SPI, detoast + copy)")):
        f = data["read"]["fetch"][mode]
        lines.append(f"| {label} | {mb(f['bytes'])} | {f['seconds'] * 1000:.0f} | {f['gb_s']:.2f} |")
    r = data["replication"]
    lag_s = "n/a" if r["lag_max_s"] is None else f"{r['lag_median_s']:.2f} s median, {r['lag_max_s']:.2f} s max"
    lines += [
        "",
        "## Streaming standby",
        "",
        f"{r['loads']} COPYs of the file back to back into the after table ({r['rows']:,} rows, "
        f"{r['rows_s']:,.0f} rows/s, WAL {mb(r['wal'])} MB at {r['wal_mb_s']:.1f} MB/s) while a standby "
        f"(made by pg_basebackup -R in {r['basebackup_s']:.1f} s) replays; {r['samples']} samples, every 0.1 s:",
        "",
        f"- replay lag in bytes: {r['lag_median_mb']:.1f} MB median, {r['lag_max_mb']:.1f} MB max",
        f"- replay lag in time (pg_stat_replication.replay_lag): {lag_s}",
        f"- from the last COPY's commit until the standby has replayed it: {r['catchup_s']:.2f} s",
        f"- promotion (pg_ctl promote -w, then a first write): {r['promote_s']:.2f} s",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the time series")
    parser.add_argument("--runs", type=int, default=3, help="timed COPY runs per table")
    parser.add_argument("--lag-loads", type=int, default=3, help="COPYs while the standby follows")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/wal.md")
    parser.add_argument("--results", default=RESULTS_MD, help="where to write the markdown results")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_before = load_average()
    tmpdir = tempfile.mkdtemp(prefix="orochi-wal-bench-")
    os.chmod(tmpdir, 0o777)
    try:
        log(f"generating {args.rows:,} rows ...")
        path = os.path.join(tmpdir, "timeseries.csv")
        pa_csv.write_csv(csv_view(make_timeseries(args.rows)), path,
                         pa_csv.WriteOptions(include_header=False))
        os.chmod(path, 0o644)
        with PostgresCluster("walbench", settings=SETTINGS) as pg:
            pg.create_database("bench")
            with pg.connect("bench", autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
                create_tables(conn)
                conn.execute("SELECT count(*) FROM t_after")  # Python started in the backend
                copy = copy_runs(conn, path, args.rows, args.runs)
                check_same(conn)
                read = read_figures(conn, args.runs)
            replication = replication_figures(pg, path, args.rows, args.lag_loads)
        csv_bytes = os.path.getsize(path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(), "cpus": os.cpu_count(), "rows": args.rows, "runs": args.runs,
        "load": f"{load_before} at the start, {load_average()} at the end (1, 5, 15 min)",
        "settings": {k: ("on" if v is True else v) for k, v in SETTINGS.items()},
        "server_version": version, "csv_bytes": csv_bytes, "copy": copy, "read": read,
        "replication": replication, "total_seconds": time.perf_counter() - started,
    }
    text = "\n".join(report(data))
    print(text)
    if not args.no_write:
        with open(args.results, "w") as f:
            f.write(text)
        print(f"written to {os.path.relpath(args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
