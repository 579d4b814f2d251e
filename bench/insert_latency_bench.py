"""Single-row INSERT latency: pgbench with a prepared one-row INSERT, one
client, into a heap table, an orochi (columnar) table and an orochi
hypertable, in one run (issue 19, "Single-row INSERT latency").

One Postgres cluster; each table (and the orochi table and the hypertable
again with ``orochi.insert_fast_path = off``: the path through Python) gets
``pgbench -n -M prepared -c 1 -T SECONDS`` of

    INSERT INTO <table> (ts, device, v) VALUES (now(), :id, random())

with ``synchronous_commit = off`` (the commit's WAL flush, the same for
every table, would otherwise dominate, as fsync latency of the disk), after a
warm-up run of a second. pgbench's own "latency average" is reported, with
the ratio to the heap table's. The runs alternate between the tables
(--rounds rounds) and each table's median is taken.

Every row of a run falls in the chunk of the day it runs (one-day chunks):
after the first row, which makes the chunk, the hypertable's rows take the
fast path as a plain table's do.

Target (issue 19): orochi table and hypertable <= 2x heap.

    python bench/insert_latency_bench.py [--seconds N] [--rounds N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from orochi_fdw.testing.cluster import PostgresCluster  # noqa: E402

RESULTS = os.path.join(HERE, "results", "insert_latency.md")
SETTINGS = {"shared_buffers": "512MB", "synchronous_commit": "off", "jit": "off"}
TABLES = {
    "heap": "CREATE TABLE heap_t (ts timestamptz, device int4, v float8)",
    "orochi": "CREATE FOREIGN TABLE orochi_t (ts timestamptz, device int4, v float8) SERVER orochi",
    "orochi hypertable": (
        "CREATE FOREIGN TABLE hyper_t (ts timestamptz, device int4, v float8) SERVER orochi;"
        "SELECT orochi.create_hypertable('hyper_t', 'ts', interval '1 day')"),
}
# label -> (table, PGOPTIONS of the pgbench session)
RUNS = {
    "heap": ("heap_t", ""),
    "orochi": ("orochi_t", ""),
    "orochi, fast path off": ("orochi_t", "-c orochi.insert_fast_path=off"),
    "orochi hypertable": ("hyper_t", ""),
    "orochi hypertable, fast path off": ("hyper_t", "-c orochi.insert_fast_path=off"),
}
BEFORE = {"heap": 0.074, "orochi": 0.315}   # issue 19's figures, ms
TARGET = 2.0                                 # x heap (issue 19)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pgbench(pg, table: str, seconds: int, pgoptions: str = "") -> tuple[float, float]:
    """(latency average in ms, tps) of one pgbench run."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("\\set id random(1, 1000)\n"
                f"INSERT INTO {table} (ts, device, v) VALUES (now(), :id, random());\n")
        script = f.name
    try:
        out = subprocess.run(
            [pg.bin("pgbench"), "-n", "-M", "prepared", "-c", "1", "-T", str(seconds), "-f", script,
             "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "bench"],
            capture_output=True, text=True, check=True, env={**pg.server_env(), "PGOPTIONS": pgoptions}).stdout
    finally:
        os.unlink(script)
    lat = float(re.search(r"latency average = ([0-9.]+) ms", out).group(1))
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    return lat, tps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    load_avg = os.getloadavg()
    lat: dict[str, list[float]] = {k: [] for k in RUNS}
    tps: dict[str, list[float]] = {k: [] for k in RUNS}
    with PostgresCluster("bench-insert", settings=SETTINGS) as pg:
        pg.create_database("bench")
        with pg.connect("bench", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS orochi")
            for sql in TABLES.values():
                for stmt in sql.split(";"):
                    conn.execute(stmt)
        for name, (table, options) in RUNS.items():
            pgbench(pg, table, 1, options)   # warm-up
        for r in range(args.rounds):
            for name, (table, options) in RUNS.items():
                a, b = pgbench(pg, table, args.seconds, options)
                lat[name].append(a)
                tps[name].append(b)
                log(f"round {r + 1}: {name}: {a:.3f} ms, {b:.0f} tps")
        with pg.connect("bench", autocommit=True) as conn:
            counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t, _ in RUNS.values()}
    heap = statistics.median(lat["heap"])
    head = ["table", "latency average (ms)", "tps", "x heap", "target", "rows in the table", "issue 19 (ms)"]
    rows = []
    for name, (table, _) in RUNS.items():
        m = statistics.median(lat[name])
        target = "-" if name == "heap" or name.endswith("off") else (
            f"<= {TARGET:g}x: " + ("met" if m / heap <= TARGET else "missed"))
        rows.append([name, f"{m:.3f}", f"{statistics.median(tps[name]):.0f}", f"{m / heap:.2f}x", target,
                     f"{counts[table]:,}", f"{BEFORE[name]:.3f}" if name in BEFORE else "-"])
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    end_avg = os.getloadavg()
    load_text = (f"load average at start {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}, "
                 f"at the end {end_avg[0]:.2f} {end_avg[1]:.2f} {end_avg[2]:.2f}")
    print(f"pgbench -M prepared -c 1 -T {args.seconds:g}, median of {args.rounds} rounds, {load_text}")
    print("\n".join(table))
    if not args.no_write:
        md = ["# Single-row INSERT latency", "",
              f"`python bench/insert_latency_bench.py --seconds {args.seconds:g} --rounds {args.rounds}`: "
              f"`pgbench -n -M prepared -c 1 -T {args.seconds:g}` of a one-row "
              "`INSERT INTO t (ts, device, v) VALUES (now(), :id, random())`, "
              "synchronous_commit off, median of the rounds (alternating tables); "
              f"2-core shared machine, {load_text}. \"fast path off\": the same table with "
              "`orochi.insert_fast_path = off` (every INSERT through the Python wrapper, as before "
              "the fast path); \"issue 19\": the figures the issue measured.", "",
              *table]
        with open(RESULTS, "w") as f:
            f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
