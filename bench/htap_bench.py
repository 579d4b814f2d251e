"""The HTAP writes benchmark: small writes on orochi tables against heap tables.

One Postgres cluster with its default durability (fsync on, synchronous_commit
on), jit off, no parallel workers; pgbench (PostgreSQL 15's) runs the custom
scripts, one client unless said otherwise. Measured, heap vs orochi:

1. single-row INSERT (``INSERT ... VALUES`` of one row, prepared): TPS and the
   median latency from pgbench's per-transaction log. Orochi's rows go to the
   delta store (a heap table). Target (issue 5): orochi's median latency at
   most 2x the heap's.
2. UPDATE by key on a 1M-row table (``UPDATE t SET k = k + 1 WHERE id = :id``,
   ids random): the heap table with a primary key (an index lookup) and
   without one (a sequential scan), the orochi table (no indexes: min/max
   pruning picks the chunk group, then a scan of it; the new row goes to the
   delta store).
3. DELETE of 10% of the rows by a range of ids, one statement, on a fresh
   1M-row table (median of three disjoint ranges).
4. compaction: ``orochi.compact`` of a delta store of 200,000 rows: rows/s.
5. vacuum: ``orochi.vacuum`` of the 1M-row table after 30% of its rows were
   deleted (every stripe past the threshold): MB of stripe files read per
   second, and the space given back; the heap's plain ``VACUUM`` of the same
   deletions for comparison.

Prints the table and writes bench/results/htap.md.

    python bench/htap_bench.py [--seconds N] [--rows N] [--no-write]
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
import time

from orochi_fdw.testing.cluster import PostgresCluster

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "htap.md")
PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"

SETTINGS = {
    "shared_buffers": "1GB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "64MB",
    "max_wal_size": "4GB",
}

COLS = "id int, k int, v text, ts timestamptz"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pgbench(pg: PostgresCluster, script: str, seconds: int, clients: int = 1) -> tuple[float, float]:
    """(tps, median latency in ms) of a pgbench run of ``script``."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        path = os.path.join(tmp, "script.sql")
        with open(path, "w") as f:
            f.write(script)
        prefix = os.path.join(tmp, "pgbench_log")
        cmd = [PGBENCH, "-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-n", "-M", "prepared",
               "-c", str(clients), "-j", str(clients), "-T", str(seconds), "-f", path, "-l",
               "--log-prefix", prefix, "bench"]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if out.returncode != 0:
            raise RuntimeError(f"pgbench failed: {out.stderr}")
        tps = None
        for line in out.stdout.splitlines():
            if line.startswith("tps ="):
                tps = float(line.split("=")[1].split()[0])
        latencies = []
        for name in glob.glob(prefix + "*"):
            with open(name) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        latencies.append(int(parts[2]))
        return tps, statistics.median(latencies) / 1000.0


def timed(conn, sql: str, params=None) -> tuple[float, tuple | None]:
    start = time.perf_counter()
    cur = conn.execute(sql, params)
    row = cur.fetchone() if cur.description else None
    return time.perf_counter() - start, row


def fill(conn, table: str, rows: int) -> None:
    conn.execute(f"INSERT INTO {table} SELECT g, g % 1000, md5(g::text), "
                 f"'2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, {rows}) g")


def run(seconds: int, rows: int, figures: dict) -> list[tuple[str, str, str, str]]:
    pg = PostgresCluster("htapbench", settings=SETTINGS)
    out: list[tuple[str, str, str, str]] = []
    try:
        pg.start()
        pg.create_database("bench")
        conn = pg.connect("bench", autocommit=True)

        # 1. single-row INSERT
        log("single-row INSERT ...")
        conn.execute(f"CREATE TABLE ins_heap ({COLS})")
        conn.execute(f"CREATE FOREIGN TABLE ins_orochi ({COLS}) SERVER orochi")
        script = ("\\set id random(1, 1000000)\n"
                  "INSERT INTO {t} VALUES (:id, :id % 1000, 'row ' || :id, now());\n")
        res = {}
        for t in ("ins_heap", "ins_orochi"):
            pgbench(pg, script.format(t=t), 3)  # warm-up: backends, caches
            res[t] = pgbench(pg, script.format(t=t), seconds)
        h, o = res["ins_heap"], res["ins_orochi"]
        figures["insert_ratio"] = o[1] / h[1]
        figures["insert_heap_ms"] = h[1]
        figures["insert_extra_ms"] = o[1] - h[1]
        out.append(("single-row INSERT, 1 client", f"{h[0]:,.0f} TPS, median {h[1]:.3f} ms",
                    f"{o[0]:,.0f} TPS, median {o[1]:.3f} ms", f"latency {o[1] / h[1]:.2f}x heap"))
        res4 = {t: pgbench(pg, script.format(t=t), seconds, clients=4) for t in ("ins_heap", "ins_orochi")}
        h4, o4 = res4["ins_heap"], res4["ins_orochi"]
        out.append(("single-row INSERT, 4 clients", f"{h4[0]:,.0f} TPS, median {h4[1]:.3f} ms",
                    f"{o4[0]:,.0f} TPS, median {o4[1]:.3f} ms", f"latency {o4[1] / h4[1]:.2f}x heap"))

        # 2. UPDATE by key on a 1M-row table
        log(f"UPDATE by key on {rows:,} rows ...")
        conn.execute(f"CREATE TABLE upd_heap ({COLS})")
        conn.execute(f"CREATE TABLE upd_heap_noindex ({COLS})")
        conn.execute(f"CREATE FOREIGN TABLE upd_orochi ({COLS}) SERVER orochi")
        for t in ("upd_heap", "upd_heap_noindex", "upd_orochi"):
            fill(conn, t, rows)
        conn.execute("ALTER TABLE upd_heap ADD PRIMARY KEY (id)")
        conn.execute("VACUUM ANALYZE upd_heap")
        conn.execute("VACUUM ANALYZE upd_heap_noindex")
        script = (f"\\set id random(1, {rows})\n"
                  "UPDATE {t} SET k = k + 1 WHERE id = :id;\n")
        upd = {}
        for t in ("upd_heap", "upd_heap_noindex", "upd_orochi"):
            pgbench(pg, script.format(t=t), 2)
            upd[t] = pgbench(pg, script.format(t=t), seconds)
        delta_after = conn.execute("SELECT delta_rows FROM orochi.delta_size('upd_orochi')").fetchone()[0]
        out.append((f"UPDATE by key, {rows:,} rows", f"{upd['upd_heap'][0]:,.0f} TPS, median "
                    f"{upd['upd_heap'][1]:.3f} ms (primary key)",
                    f"{upd['upd_orochi'][0]:,.0f} TPS, median {upd['upd_orochi'][1]:.3f} ms",
                    f"heap without index: {upd['upd_heap_noindex'][0]:,.1f} TPS, median "
                    f"{upd['upd_heap_noindex'][1]:.1f} ms; orochi delta after: {delta_after:,} rows"))
        for t in ("upd_heap", "upd_heap_noindex"):
            conn.execute(f"DROP TABLE {t}")
        conn.execute("DROP FOREIGN TABLE upd_orochi")

        # 3. DELETE of 10% by range, on fresh tables
        log("DELETE 10% by range ...")
        conn.execute(f"CREATE TABLE del_heap ({COLS})")
        conn.execute(f"CREATE FOREIGN TABLE del_orochi ({COLS}) SERVER orochi")
        for t in ("del_heap", "del_orochi"):
            fill(conn, t, rows)
        conn.execute("VACUUM ANALYZE del_heap")
        tenth = rows // 10
        times = {"del_heap": [], "del_orochi": []}
        for i, start in enumerate((1, 4 * tenth + 1, 8 * tenth + 1)):
            for t in times:
                dt, _ = timed(conn, f"DELETE FROM {t} WHERE id BETWEEN %s AND %s", (start, start + tenth - 1))
                times[t].append(dt)
        dh, do = statistics.median(times["del_heap"]), statistics.median(times["del_orochi"])
        out.append((f"DELETE 10% by range ({tenth:,} rows)", f"{dh * 1000:,.0f} ms ({tenth / dh:,.0f} rows/s)",
                    f"{do * 1000:,.0f} ms ({tenth / do:,.0f} rows/s)", f"{dh / do:.1f}x heap's speed"))

        # 5. vacuum after 30% deleted
        log("vacuum ...")
        heap_bytes = conn.execute("SELECT pg_table_size('del_heap')").fetchone()[0]
        dt_heap, _ = timed(conn, "VACUUM del_heap")
        dt_vac, r = timed(conn, "SELECT * FROM orochi.vacuum('del_orochi', 0.1)")
        rewritten, removed, before, after, _, _ = r
        _, r2 = timed(conn, "SELECT * FROM orochi.vacuum('del_orochi', 0.1)")  # the old files go now
        size_after = conn.execute("SELECT orochi.table_size('del_orochi')").fetchone()[0]
        mb = before / 1e6
        out.append(("vacuum after 30% deleted", f"VACUUM: {heap_bytes / 1e6 / dt_heap:,.0f} MB/s "
                    f"({heap_bytes / 1e6:,.0f} MB in {dt_heap:.2f} s; space kept for reuse)",
                    f"{mb / dt_vac:,.1f} MB/s ({mb:,.1f} MB in {dt_vac:.2f} s, {rewritten} stripe(s))",
                    f"{removed:,} rows dropped; files {before / 1e6:,.1f} -> {after / 1e6:,.1f} MB, "
                    f"{r2[5] / 1e6:,.1f} MB given back at the next vacuum; table now {size_after / 1e6:,.1f} MB"))

        # 4. compaction
        log("compaction ...")
        n = 200_000
        conn.execute(f"CREATE FOREIGN TABLE cmp ({COLS}) SERVER orochi OPTIONS (delta_row_limit '1000000')")
        dt_fill, _ = timed(conn, f"INSERT INTO cmp SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, {n}) g")
        dt_cmp, r = timed(conn, "SELECT * FROM orochi.compact('cmp')")
        assert r[0] == n
        out.append((f"compaction of {n:,} delta rows", f"(writing them to the delta: {n / dt_fill:,.0f} rows/s)",
                    f"{n / dt_cmp:,.0f} rows/s ({dt_cmp:.2f} s)", f"{r[1]} stripe(s) written"))
        conn.close()
    finally:
        pg.cleanup()
    return out


def render(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("what", "heap", "orochi", "note")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=15, help="seconds per pgbench run")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the UPDATE / DELETE tables")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/htap.md")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    figures: dict = {}
    rows = run(args.seconds, args.rows, figures)
    table = render(rows)
    print(table)
    ratio = figures["insert_ratio"]
    verdict = "met" if ratio <= 2 else "missed"
    notes = f"""
Notes on this run:

- Single-row INSERT: median latency {ratio:.1f}x the heap's, target (at most 2x) {verdict}.
  The heap's median here is {figures['insert_heap_ms']:.3f} ms with fsync on: commits cost
  little on this machine, so orochi's fixed cost per statement, {figures['insert_extra_ms']:.2f} ms,
  shows in full. It is the bridge's calls into Python (wrapper lookup, the batch's
  conversion into wire columns, transaction hooks) and one SPI INSERT into the delta
  table inside its own sub-transaction. Where a durable commit takes a millisecond the
  same overhead is within 2x; here it needs a one-row INSERT path that does not enter
  Python (writing the delta row from C), which this version does not have.
- UPDATE by key has no index to use: min/max pruning leaves one chunk group of 10,000
  rows, which is decoded and filtered; the heap without an index reads all the rows.
- DELETE calls the wrapper once per row, then merges one bitmap per stripe; the heap
  marks tuples in place.
- Vacuum rewrites stripes (decode, re-encode, compress, fsync): its MB/s is the
  columnar writer's, not the heap's in-place pruning; it gives the file space back
  (the heap's VACUUM keeps it for reuse), once no snapshot can read the old files.
"""
    print(notes)
    if not args.no_write:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            f.write("# HTAP writes: heap vs orochi\n\n")
            f.write(f"`python bench/htap_bench.py` at commit {commit}, "
                    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
                    f"{os.cpu_count()} cores shared with other work; pgbench {args.seconds} s per run; "
                    "fsync and synchronous_commit on (defaults), jit off, no parallel workers.\n\n")
            f.write(table + "\n" + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
