"""The distributed benchmark: the query benchmark's metrics table on one
node against the same rows over three workers (issue 12, "Benchmark").

Four PostgreSQL clusters on this machine: a coordinator and three workers
(:class:`orochi_fdw.testing.distributed.LocalCluster`).  The rows are those
of bench/query_bench.py (10M by default, numpy from a fixed seed):

- ``metrics_local``: an orochi columnar table on the coordinator alone
  (one node);
- ``metrics``: a distributed table over the three workers, by
  ``device_id``, 32 shards (columnar shards), co-located nothing else.

Both are filled by ``COPY ... FROM STDIN`` (CSV from the client): the rows/s
of each is the COPY figure.  Then, warm, median of several runs:

- Q1-Q8 of bench/query_bench.py on both (results compared);
- the routed one-shard query's overhead: Q6 (one device, six hours) and a
  primary-key-style lookup on a heap-sharded table, each through the
  coordinator and directly on the worker that holds the shard (the same
  statement on the shard table);
- two-phase commit's cost: an autocommit INSERT of one row (one worker: one
  phase), of two rows on two workers (two-phase), and of two rows into a
  local heap table;
- per-worker times of Q3 (EXPLAIN ANALYZE's "Node" lines), the inputs of
  the scaling model in docs/distributed.md.

All nodes share this machine's two cores: three workers scanning "in
parallel" share them, so the figures say what the design costs, not what
three machines would give; docs/distributed.md turns the per-worker
figures into a model for real machines.

Prints the tables and writes bench/results/distributed.md.

    python bench/distributed_bench.py [--rows N] [--runs N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bridge_bench import backend_cpu_seconds, git_commit, load_average, log  # noqa: E402
from query_bench import COLUMNS, csv_chunks, generate, queries  # noqa: E402

from orochi_fdw.testing.distributed import LocalCluster  # noqa: E402

RESULTS = os.path.join(HERE, "results", "distributed.md")

SETTINGS = {
    "shared_buffers": "1GB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "256MB",
    "max_wal_size": "8GB",
}

WORKERS = 3
SHARDS = 32
LOCAL, DIST = "metrics_local", "metrics"


def timed(conn, sql: str, params=None):
    """(wall seconds, backend CPU seconds, rows)."""
    pid = conn.info.backend_pid
    cpu0 = backend_cpu_seconds(pid)
    t0 = time.perf_counter()
    cur = conn.execute(sql, params)
    rows = cur.fetchall() if cur.description else cur.rowcount
    wall = time.perf_counter() - t0
    cpu1 = backend_cpu_seconds(pid)
    return wall, (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None, rows


def median_ms(conn, sql: str, runs: int, params=None) -> tuple[float, float | None, object]:
    timed(conn, sql, params)  # warm
    walls, cpus, rows = [], [], None
    for _ in range(runs):
        wall, cpu, rows = timed(conn, sql, params)
        walls.append(wall * 1000)
        if cpu is not None:
            cpus.append(cpu * 1000)
    return statistics.median(walls), (statistics.median(cpus) if cpus else None), rows


def close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return a == b
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if hasattr(a, "as_tuple") or hasattr(b, "as_tuple"):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def same(got, want, compare) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        idx = compare if compare is not None else range(len(w))
        if not all(close(g[i], w[i]) for i in idx):
            return False
    return True


def load(conn, table: str, data) -> float:
    """COPY the CSV into ``table``; seconds."""
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy:
            for chunk in data:
                copy.write(chunk)
    return time.perf_counter() - t0


def shard_of(conn, table: str, device: int) -> tuple[str, int]:
    """(qualified shard name, node index) of the shard holding a device."""
    name, node = conn.execute(
        "SELECT shard_name, node_id FROM orochi.shards s WHERE s.table_name = %s::regclass AND"
        " (SELECT (hashint4extended(%s, 0) & 4294967295)::bigint - CASE WHEN (hashint4extended(%s, 0)"
        "  & 4294967295)::bigint >= 2147483648 THEN 4294967296 ELSE 0 END) BETWEEN s.hash_min AND s.hash_max",
        (table, device, device)).fetchone()
    return name, node - 1


def node_lines(conn, sql: str) -> list[str]:
    plan = [r[0] for r in conn.execute("EXPLAIN (ANALYZE) " + sql)]
    return [line.strip() for line in plan if re.search(r"Node 127\.0\.0\.1:\d+:", line) or "Execution Time" in line
            or "Partial rows" in line]


def run(args) -> dict:
    out: dict = {"rows": args.rows, "workers": WORKERS, "shards": SHARDS, "load": {}, "queries": [],
                 "router": [], "commit": [], "nodes": {}}
    log(f"generating {args.rows:,} rows ...")
    table = generate(args.rows)
    chunks = list(csv_chunks(table))
    del table
    lc = LocalCluster(workers=WORKERS, settings=SETTINGS, name="distbench")
    try:
        log("starting a coordinator and three workers ...")
        lc.start()
        with lc.connect() as conn:
            cols = ", ".join(f"{c} {t}" for c, t in COLUMNS)
            conn.execute(f"CREATE FOREIGN TABLE {LOCAL} ({cols}) SERVER orochi")
            conn.execute(f"CREATE TABLE {DIST} ({cols})")
            conn.execute(f"SELECT orochi.create_distributed_table('{DIST}', 'device_id', {SHARDS})")

            log("COPY into the local columnar table ...")
            secs = load(conn, LOCAL, chunks)
            out["load"]["one node (columnar)"] = (secs, args.rows / secs)
            log(f"  {secs:.1f} s, {args.rows / secs:,.0f} rows/s")
            log("COPY into the distributed table ...")
            secs = load(conn, DIST, chunks)
            out["load"][f"distributed ({WORKERS} workers, {SHARDS} shards)"] = (secs, args.rows / secs)
            log(f"  {secs:.1f} s, {args.rows / secs:,.0f} rows/s")
            del chunks
            for c in lc.all():
                c.execute("CHECKPOINT")

            for q in queries(args.rows):
                local_sql, dist_sql = q["pg"].format(t=LOCAL), q["pg"].format(t=DIST)
                runs = args.runs
                lw, lc_cpu, lrows = median_ms(conn, local_sql, runs)
                dw, dc_cpu, drows = median_ms(conn, dist_sql, runs)
                ok = same(drows, lrows, q.get("compare"))
                out["queries"].append({"key": q["key"], "label": q["label"], "local": lw, "dist": dw,
                                       "dist_cpu": dc_cpu, "ok": ok})
                log(f"  {q['key']:4s} one node {lw:9.1f} ms  distributed {dw:9.1f} ms"
                    f"  (coordinator CPU {dc_cpu or 0:.1f} ms){'' if ok else '  RESULTS DIFFER'}")
            out["nodes"]["Q3"] = node_lines(conn, queries(args.rows)[2]["pg"].format(t=DIST))
            out["nodes"]["Q1"] = node_lines(conn, queries(args.rows)[0]["pg"].format(t=DIST))

            # the router path: through the coordinator against directly on the worker
            q6 = next(q for q in queries(args.rows) if q["key"] == "Q6")["pg"]
            shard, node = shard_of(conn, DIST, 42)
            with lc.worker_connect(node) as w:
                direct, direct_cpu, _ = median_ms(w, q6.format(t=shard), args.router_runs)
            routed, routed_cpu, _ = median_ms(conn, q6.format(t=DIST), args.router_runs)
            out["router"].append(("Q6 (one device, 6 hours; columnar shard)", routed, direct, routed_cpu, direct_cpu))

            conn.execute("CREATE TABLE kv (k int NOT NULL, v text)")
            conn.execute("SELECT orochi.create_distributed_table('kv', 'k', 32, shard_storage => 'heap')")
            conn.execute("INSERT INTO kv SELECT i, 'value ' || i FROM generate_series(1, 100000) i")
            for c in lc.workers:
                c.execute("VACUUM ANALYZE", dbname=lc.dbname)
            shard, node = shard_of(conn, "kv", 4242)
            with lc.worker_connect(node) as w:
                w.execute(f"CREATE INDEX ON {shard} (k)")
                direct, direct_cpu, _ = median_ms(w, f"SELECT * FROM {shard} WHERE k = 4242", args.router_runs)
            routed, routed_cpu, _ = median_ms(conn, "SELECT * FROM kv WHERE k = 4242", args.router_runs)
            conn.execute("PREPARE lookup(int) AS SELECT * FROM kv WHERE k = $1")
            prepared, prepared_cpu, _ = median_ms(conn, "EXECUTE lookup(4242)", args.router_runs)
            out["router"].append(("key lookup (heap shard with an index)", routed, direct, routed_cpu, direct_cpu))
            out["router"].append(("key lookup, prepared statement", prepared, direct, prepared_cpu, direct_cpu))

            # two-phase commit
            a, b = 1, 2
            while shard_of(conn, "kv", b)[1] == shard_of(conn, "kv", a)[1]:
                b += 1
            conn.execute("CREATE TABLE kv_local (k int, v text)")
            n = args.router_runs
            one, one_cpu, _ = median_ms(conn, f"INSERT INTO kv VALUES ({a}, 'x')", n)
            two, two_cpu, _ = median_ms(conn, f"INSERT INTO kv VALUES ({a}, 'x'), ({b}, 'y')", n)
            local, local_cpu, _ = median_ms(conn, "INSERT INTO kv_local VALUES (1, 'x'), (2, 'y')", n)
            out["commit"] = [("one row, one worker (one-phase commit)", one, one_cpu),
                             ("two rows on two workers (two-phase commit)", two, two_cpu),
                             ("two rows into a local heap table", local, local_cpu)]
            conn.execute("SELECT orochi.recover_prepared_transactions()")
    finally:
        lc.cleanup()
    return out


def render(data: dict) -> str:
    lines = [f"# Distributed tables: one node against {data['workers']} workers", ""]
    lines += [f"Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {git_commit()},"
              f" load average before the run {data.get('load_average', '?')}; {data['rows']:,} rows of"
              " bench/query_bench.py's metrics table; every node a PostgreSQL 15 on this 2-core machine"
              " (the workers share its two cores); `python bench/distributed_bench.py`.", ""]
    lines += ["## Load (COPY FROM STDIN, CSV from the client)", "", "| target | seconds | rows/s |", "|---|---:|---:|"]
    for k, (secs, rate) in data["load"].items():
        lines.append(f"| {k} | {secs:.1f} | {rate:,.0f} |")
    lines += ["", "## Queries (warm, median ms)", "",
              "| query | | one node (columnar) | distributed | ratio | coordinator CPU (ms) | results |",
              "|---|---|---:|---:|---:|---:|---|"]
    for q in data["queries"]:
        ratio = q["dist"] / q["local"] if q["local"] else float("nan")
        lines.append(f"| {q['key']} | {q['label']} | {q['local']:.1f} | {q['dist']:.1f} | {ratio:.2f} |"
                     f" {q['dist_cpu'] or 0:.1f} | {'same' if q['ok'] else 'DIFFER'} |")
    lines += ["", "## The routed one-shard query (median ms)", "",
              "Wall time at the client, and the CPU time of the backend the client talks to (the"
              " coordinator's, or the worker's for the direct query): the coordinator's CPU is what the"
              " routing costs the coordinator, untouched by other work on the machine.", "",
              "| query | through the coordinator | directly on the worker | overhead (wall) |"
              " coordinator CPU | worker CPU (direct) |", "|---|---:|---:|---:|---:|---:|"]
    for label, routed, direct, routed_cpu, direct_cpu in data["router"]:
        lines.append(f"| {label} | {routed:.3f} | {direct:.3f} | {routed - direct:.3f} |"
                     f" {routed_cpu or 0:.3f} | {direct_cpu or 0:.3f} |")
    lines += ["", "## Commit (autocommit INSERT, median ms)", "", "| statement | wall | backend CPU |",
              "|---|---:|---:|"]
    for label, ms, cpu in data["commit"]:
        lines.append(f"| {label} | {ms:.3f} | {cpu or 0:.3f} |")
    lines += ["", "## Per-worker times (EXPLAIN ANALYZE)", ""]
    for key, node_lines in data["nodes"].items():
        lines.append(f"{key}:")
        lines.append("```")
        lines += node_lines
        lines.append("```")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--router-runs", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    load_before = load_average()
    data = run(args)
    data["load_average"] = load_before
    text = render(data)
    print(text)
    if not args.no_write:
        with open(RESULTS, "w") as f:
            f.write(text)
        log(f"wrote {RESULTS}")
    return 0 if all(q["ok"] for q in data["queries"]) else 1


if __name__ == "__main__":
    sys.exit(main())
