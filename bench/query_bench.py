"""The query benchmark: analytic SQL on a device-metrics table, heap against
orochi against DuckDB (issue 4, "Benchmark").

One Postgres cluster, one database, one session.  The same rows, 10M by
default, generated once with numpy from a fixed seed:

- ``ts timestamptz``: one reading a second from 2024-01-01 00:00 UTC with
  +-50 ms jitter (10M rows span about 116 days), in arrival order;
- ``device_id int4``: 1,000 devices, each row from a random one;
- ``cpu``, ``mem``, ``temp float8``: per-device levels plus noise (temperature
  with a daily cycle), rounded to 2 decimals;
- ``status text``: 'ok' (90%), 'warning', 'critical', 'offline'.

They are loaded into

- ``heap``: an ordinary heap table (``COPY ... FROM STDIN`` of CSV, then
  ``VACUUM (FREEZE, ANALYZE)`` and ``pg_prewarm``; shared_buffers is large
  enough that sequential scans read it from shared buffers);
- ``orochi``: a columnar table of ``SERVER orochi`` with default options,
  filled by ``INSERT INTO ... SELECT * FROM`` the heap table;
- ``duckdb``: DuckDB in-process (a bench-only dependency: what an analyst
  would reach for instead), from the very Arrow table the CSV was written
  from; one thread (``SET threads = 1``), as Postgres scans on one core here.
  Its time zone is UTC, as the Postgres session's.

and the queries of ``QUERIES`` run on each: warm (every query runs once
before it is timed), median of several runs (fewer for runs slower than
--slow-seconds).  Figures: wall-clock time measured at the client and, for
Postgres, the backend's own CPU time (from /proc/<pid>/schedstat), which
other work on the machine does not inflate; for DuckDB the CPU time of this
process.  An extra column gives the heap table with parallel workers
(max_parallel_workers_per_gather 2, Postgres's default) and an extra DuckDB
column uses two threads.

Results are compared: orochi's and DuckDB's against the heap table's (floats
within 1e-9 relative; for the top-10 queries only the sort keys, since ties may
be broken differently); a mismatch prints a warning line and is recorded,
it does not abort.  EXPLAIN (VERBOSE) of each orochi query says whether the
aggregation was pushed down (an "Aggregates:" line); EXPLAIN (ANALYZE,
VERBOSE) of each is written to the results file.

Targets (issue 19), checked on the wall-clock and on the CPU figures: every
query on orochi at most 1.5 x (DuckDB + 10 ms); the top-N queries (Q7, Q7b,
Q7c, Q7d) at least 20x faster than on the heap table.

Issue 19's expression queries (E1-E5: arithmetic, CASE and comparisons of
columns in WHERE and in aggregate arguments; E5 a time range with interval
arithmetic) run on orochi twice more, with
the expression JIT off (``SET orochi.jit_enabled = off``) and on: the first
run with the JIT on compiles the kernel (or loads it from the on-disk
cache) and is reported apart; ``--jit`` runs only these and writes
bench/results/query_jit.md.

Prints the tables, writes bench/results/query.md (keeping the figures of
the previous run alongside for comparison) and the chart
bench/results/query.png.

    python bench/query_bench.py [--rows N] [--runs N] [--slow-runs N] [--no-write]

Needs duckdb, pyarrow and matplotlib.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import statistics
import sys
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
except ImportError:  # pragma: no cover - bench-only dependencies
    raise SystemExit("query_bench needs duckdb and pyarrow: pip install duckdb pyarrow matplotlib") from None

from bridge_bench import backend_cpu_seconds, git_commit, load_average, log, read_previous  # noqa: E402

from orochi_fdw.testing.cluster import PostgresCluster  # noqa: E402

RESULTS = os.path.join(HERE, "results", "query.md")
CHART = os.path.join(HERE, "results", "query.png")
DATA_MARKER = "bench-data:"

SETTINGS = {
    "shared_buffers": "4GB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "256MB",
    "max_wal_size": "8GB",
}

SEED = 20240101
DEVICES = 1000
T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
STATUSES = ["ok", "warning", "critical", "offline"]
STATUS_P = [0.90, 0.07, 0.02, 0.01]
COLUMNS = [("ts", "timestamptz"), ("device_id", "int4"), ("cpu", "float8"), ("mem", "float8"),
           ("temp", "float8"), ("status", "text")]

HEAP, OROCHI, DUCK = "metrics_heap", "metrics_orochi", "metrics"

#: the query keys that are aggregations
AGGREGATE_QUERIES = ["Q1", "Q2", "Q3", "Q4a", "Q4b", "Q5", "Q5b", "Q8"]
#: issue 19: every query on orochi at most 1.5 x (DuckDB + 10 ms)
DUCKDB_FACTOR = 1.5
DUCKDB_SLACK_MS = 10.0
#: the ORDER BY ... LIMIT queries (issue 19: at least 20x faster than heap)
TOPN_QUERIES = ["Q7", "Q7b", "Q7c", "Q7d"]
TOPN_TARGET = 20.0
#: the expression queries (issue 19, expression JIT): orochi with the JIT off and on
EXPRESSION_QUERIES = ["E1", "E2", "E3", "E4", "E5"]
JIT_RESULTS = os.path.join(HERE, "results", "query_jit.md")


def ts_literal(seconds: float) -> str:
    return (T0 + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S+00")


def queries(rows: int) -> list[dict]:
    """Each: key, label, pg (SQL with {t}), duck (DuckDB SQL), and compare
    (indices of the columns compared, None for all)."""
    q2_lo, q2_hi = ts_literal(rows * 0.45), ts_literal(rows * 0.55)
    q6_lo, q6_hi = ts_literal(rows * 0.30), ts_literal(rows * 0.30 + 6 * 3600)
    return [
        {"key": "Q1", "label": "count(*)", "pg": "SELECT count(*) FROM {t}"},
        {"key": "Q2", "label": "sum, avg; 10% time range",
         "pg": f"SELECT sum(cpu), avg(cpu) FROM {{t}} WHERE ts BETWEEN timestamptz '{q2_lo}' "
               f"AND timestamptz '{q2_hi}'"},
        {"key": "Q3", "label": "GROUP BY device_id",
         "pg": "SELECT device_id, count(*), avg(cpu), max(temp) FROM {t} GROUP BY device_id ORDER BY device_id"},
        {"key": "Q4a", "label": "GROUP BY time_bucket 1h",
         "pg": "SELECT orochi.time_bucket('1 hour', ts) AS h, avg(cpu) FROM {t} GROUP BY 1 ORDER BY 1",
         "duck": "SELECT time_bucket(INTERVAL '1 hour', ts) AS h, avg(cpu) FROM {t} GROUP BY 1 ORDER BY 1"},
        {"key": "Q4b", "label": "GROUP BY date_trunc hour",
         "pg": "SELECT date_trunc('hour', ts) AS h, avg(cpu) FROM {t} GROUP BY 1 ORDER BY 1"},
        {"key": "Q5", "label": "count(DISTINCT device_id)", "pg": "SELECT count(DISTINCT device_id) FROM {t}"},
        {"key": "Q5b", "label": "approx_count_distinct(device_id)",
         "pg": "SELECT orochi.approx_count_distinct(device_id) FROM {t}",
         "duck": "SELECT approx_count_distinct(device_id) FROM {t}", "approx": 0.05},
        {"key": "Q6", "label": "one device, 6 hours",
         "pg": f"SELECT * FROM {{t}} WHERE device_id = 42 AND ts >= timestamptz '{q6_lo}' "
               f"AND ts < timestamptz '{q6_hi}' ORDER BY ts"},
        {"key": "Q7", "label": "top-10 by cpu", "pg": "SELECT * FROM {t} ORDER BY cpu DESC LIMIT 10",
         "compare": [2]},
        {"key": "Q7b", "label": "top-10 by cpu DESC, ts",
         "pg": "SELECT * FROM {t} ORDER BY cpu DESC, ts LIMIT 10", "compare": [0, 2]},
        {"key": "Q7c", "label": "top-10 by temp, device DESC; WHERE",
         "pg": "SELECT * FROM {t} WHERE status = 'critical' AND mem > 50 "
               "ORDER BY temp, device_id DESC LIMIT 10", "compare": [1, 4]},
        {"key": "Q7d", "label": "top-10 by status DESC, mem (text key)",
         "pg": "SELECT * FROM {t} ORDER BY status DESC, mem LIMIT 10", "compare": [3, 5]},
        {"key": "E1", "label": "sum(a*b) WHERE a + b > c",
         "pg": "SELECT sum(cpu * mem) FROM {t} WHERE cpu + mem > temp"},
        {"key": "E2", "label": "avg(CASE ...)",
         "pg": "SELECT avg(CASE WHEN cpu > 50 THEN mem ELSE temp - 20 END) FROM {t}"},
        {"key": "E3", "label": "count(*) WHERE x*2 > y",
         "pg": "SELECT count(*) FROM {t} WHERE cpu * 2 > mem"},
        {"key": "E4", "label": "integer: sum(id*3), max WHERE id % 7 = 1",
         "pg": "SELECT sum(device_id * 3), max(device_id - 1) FROM {t} WHERE device_id % 7 = 1"},
        {"key": "E5", "label": "timestamptz: sum(a*b) WHERE ts >= x AND ts + interval < y",
         "pg": f"SELECT count(*), sum(cpu * mem) FROM {{t}} WHERE ts >= timestamptz '{q2_lo}' "
               f"AND ts + interval '30 minutes' < timestamptz '{q2_hi}'"},
        {"key": "Q8", "label": "min/max of 4 columns",
         "pg": "SELECT min(cpu), max(cpu), min(mem), max(mem), min(temp), max(temp), min(ts), max(ts) FROM {t}"},
    ]


# ================================================================ data

def generate(rows: int) -> pa.Table:
    """The rows, as an Arrow table (ts as timestamp[us, UTC])."""
    rng = np.random.default_rng(SEED)
    i = np.arange(rows, dtype=np.int64)
    t0_us = int(T0.timestamp()) * 1_000_000
    ts = t0_us + i * 1_000_000 + rng.integers(-50_000, 50_001, rows)
    device = rng.integers(1, DEVICES + 1, rows).astype(np.int32)
    d = device - 1
    day = np.sin(2 * np.pi * ((i % 86_400) / 86_400.0))
    cpu_base = rng.uniform(5, 60, DEVICES)
    cpu = np.round(np.clip(cpu_base[d] + 10 * day + rng.normal(0, 12, rows), 0, 100), 2)
    mem_base = rng.uniform(20, 80, DEVICES)
    mem = np.round(np.clip(mem_base[d] + rng.normal(0, 5, rows), 0, 100), 2)
    temp_base = rng.uniform(35, 60, DEVICES)
    temp = np.round(temp_base[d] + 8 * day + rng.normal(0, 1.5, rows), 2)
    status_codes = rng.choice(len(STATUSES), rows, p=STATUS_P).astype(np.int32)
    status = pa.DictionaryArray.from_arrays(pa.array(status_codes), pa.array(STATUSES)).cast(pa.string())
    return pa.table({
        "ts": pa.array(ts, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "device_id": pa.array(device),
        "cpu": pa.array(cpu), "mem": pa.array(mem), "temp": pa.array(temp),
        "status": status,
    })


def csv_chunks(table: pa.Table, chunk_rows: int = 500_000):
    """CSV bytes of the table, chunk by chunk, ts as '2024-01-01 00:00:00.123456+00'
    (Arrow formats time-zone-aware timestamps far slower than naive ones)."""
    for start in range(0, table.num_rows, chunk_rows):
        part = table.slice(start, chunk_rows)
        naive = part["ts"].cast(pa.int64()).cast(pa.timestamp("us"))
        ts_text = pc.binary_join_element_wise(naive.cast(pa.string()), pa.scalar("+00"), "")
        part = part.set_column(0, "ts", ts_text)
        buf = io.BytesIO()
        pa_csv.write_csv(part, buf, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
        yield buf.getvalue()


# ================================================================ timing

def timed_pg(conn, sql: str):
    """(wall seconds, backend CPU seconds or None, rows or row count)."""
    pid = conn.info.backend_pid
    cpu0 = backend_cpu_seconds(pid)
    t0 = time.perf_counter()
    cur = conn.execute(sql)
    result = cur.fetchall() if cur.description else cur.rowcount
    wall = time.perf_counter() - t0
    cpu1 = backend_cpu_seconds(pid)
    return wall, (cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None), result


def timed_duck(con, sql: str):
    """(wall seconds, CPU seconds of this process, rows)."""
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    result = con.execute(sql).fetchall()
    wall = time.perf_counter() - t0
    return wall, time.process_time() - cpu0, result


def load_postgres(conn, table: pa.Table) -> dict:
    """Create and fill the three tables; seconds each step took."""
    cols = ", ".join(f"{c} {t}" for c, t in COLUMNS)
    conn.execute(f"CREATE TABLE {HEAP} ({cols})")
    conn.execute(f"CREATE FOREIGN TABLE {OROCHI} ({cols}) SERVER orochi")
    times: dict[str, float] = {}

    log(f"COPY of {table.num_rows:,} rows into the heap table ...")
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        with cur.copy(f"COPY {HEAP} FROM STDIN (FORMAT csv)") as copy:
            for chunk in csv_chunks(table):
                copy.write(chunk)
    times["heap COPY (CSV from the client)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    conn.execute(f"VACUUM (FREEZE, ANALYZE) {HEAP}")
    times["heap VACUUM (FREEZE, ANALYZE)"] = time.perf_counter() - t0
    log(f"  {times['heap COPY (CSV from the client)']:.1f} s, VACUUM {times['heap VACUUM (FREEZE, ANALYZE)']:.1f} s")

    log("INSERT INTO the orochi table SELECT * FROM the heap table ...")
    wall, cpu, count = timed_pg(conn, f"INSERT INTO {OROCHI} SELECT * FROM {HEAP}")
    if count != table.num_rows:
        log(f"WARNING: INSERT INTO {OROCHI} inserted {count} rows, expected {table.num_rows}")
    times["orochi INSERT ... SELECT * FROM heap"] = wall
    log(f"  {wall:.1f} s (backend CPU {cpu:.1f} s), {table.num_rows / wall:,.0f} rows/s")

    t0 = time.perf_counter()
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    conn.execute(f"SELECT pg_prewarm('{HEAP}')")
    times["heap pg_prewarm"] = time.perf_counter() - t0
    return times


def load_duckdb(table: pa.Table, threads: int):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {threads}")
    t0 = time.perf_counter()
    con.register("src", table)
    con.execute(f"CREATE TABLE {DUCK} AS SELECT * FROM src")
    con.unregister("src")
    return con, time.perf_counter() - t0


# ================================================================ comparing

def _norm(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return ("ts", v)
    if hasattr(v, "as_tuple"):  # Decimal
        return float(v)
    return v


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, (float, int)) or isinstance(b, float) and isinstance(a, int):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return a == b


def same_result(got, want, compare: list[int] | None, approx: float | None = None) -> str | None:
    """None when equal (numbers within the relative ``approx`` when given:
    approximate aggregates of different engines), else a short description
    of the first difference."""
    if approx is not None and isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        flat = [(g, w) for gr, wr in zip(got, want) for g, w in zip(gr, wr)]
        if all(isinstance(g, (int, float)) and isinstance(w, (int, float))
               and abs(g - w) <= approx * max(abs(w), 1) for g, w in flat):
            return None
    if not isinstance(got, list) or not isinstance(want, list):
        return None if got == want else f"{got!r} != {want!r}"
    if len(got) != len(want):
        return f"{len(got)} rows, expected {len(want)}"
    for n, (g, w) in enumerate(zip(got, want)):
        g = [_norm(x) for x in g]
        w = [_norm(x) for x in w]
        if compare is not None:
            g, w = [g[i] for i in compare], [w[i] for i in compare]
        if len(g) != len(w) or not all(_close(x, y) for x, y in zip(g, w)):
            return f"row {n}: {tuple(g)!r}, expected {tuple(w)!r}"
    return None


# ================================================================ measuring

def runs_for(first: float, args) -> int:
    return args.slow_runs if first > args.slow_seconds else args.runs


def measure_pg(conn, q: dict, table: str, args, label: str):
    sql = q["pg"].format(t=table)
    first, _cpu, result = timed_pg(conn, sql)  # warm-up, and the result
    times, cpus = [], []
    for _ in range(runs_for(first, args)):
        wall, cpu, _ = timed_pg(conn, sql)
        times.append(wall)
        cpus.append(cpu)
    wall = statistics.median(times) * 1000
    cpu = statistics.median(cpus) * 1000 if None not in cpus else None
    log(f"  {q['key']:<4} {label:<10} {wall:9.1f} ms" + (f" (CPU {cpu:.1f} ms)" if cpu is not None else "")
        + f"  runs: {', '.join(f'{t * 1000:.1f}' for t in times)}")
    return wall, cpu, result


def measure_duck(con, q: dict, args, label: str):
    sql = q.get("duck", q["pg"].replace("timestamptz '", "TIMESTAMPTZ '")).format(t=DUCK)
    first, _cpu, result = timed_duck(con, sql)
    times, cpus = [], []
    for _ in range(runs_for(first, args)):
        wall, cpu, _ = timed_duck(con, sql)
        times.append(wall)
        cpus.append(cpu)
    wall, cpu = statistics.median(times) * 1000, statistics.median(cpus) * 1000
    log(f"  {q['key']:<4} {label:<10} {wall:9.1f} ms (CPU {cpu:.1f} ms)"
        f"  runs: {', '.join(f'{t * 1000:.1f}' for t in times)}")
    return wall, cpu, result


def explain(conn, sql: str, analyze: bool = False) -> str:
    opts = "ANALYZE, VERBOSE, TIMING OFF" if analyze else "VERBOSE"
    return "\n".join(r[0] for r in conn.execute(f"EXPLAIN ({opts}) {sql}").fetchall())


def measure(conn, duck1, duck2, qs: list[dict], args) -> dict:
    wall: dict[str, dict[str, float]] = {}
    cpu: dict[str, dict[str, float]] = {}
    pushed: dict[str, str] = {}
    plans: dict[str, str] = {}
    mismatches: list[str] = []
    for q in qs:
        k = q["key"]
        wall[k], cpu[k] = {}, {}
        log(f"{k}: {q['label']}")
        # psycopg prepares a statement run five times, and a prepared plan
        # keeps the settings it was planned under (as in Postgres): the
        # expression queries, timed with the JIT off and on, are not prepared
        conn.prepare_threshold = None if k in EXPRESSION_QUERIES else 5
        plan = explain(conn, q["pg"].format(t=OROCHI))
        if "Aggregates:" in plan:
            pushed[k] = "yes"
        elif k in AGGREGATE_QUERIES:
            pushed[k] = "NO"
        else:
            pushed[k] = "–"

        conn.execute("SET max_parallel_workers_per_gather = 0")
        wall[k]["heap"], cpu[k]["heap"], want = measure_pg(conn, q, HEAP, args, "heap")
        conn.execute("SET max_parallel_workers_per_gather = 2")
        wall[k]["heap_par"], _c, got = measure_pg(conn, q, HEAP, args, "heap par")
        conn.execute("SET max_parallel_workers_per_gather = 0")
        if (diff := same_result(got, want, q.get("compare"), q.get("approx"))) is not None:
            mismatches.append(f"{k} heap (parallel) differs from heap: {diff}")
        if k in EXPRESSION_QUERIES:
            conn.execute("SET orochi.jit_enabled = off")
            wall[k]["orochi_nojit"], cpu[k]["orochi_nojit"], got = measure_pg(conn, q, OROCHI, args, "no JIT")
            if (diff := same_result(got, want, q.get("compare"), q.get("approx"))) is not None:
                mismatches.append(f"{k} orochi without the JIT differs from heap: {diff}")
            conn.execute("SET orochi.jit_enabled = on")
            # at 1M rows a kernel not yet compiled is below orochi.jit_min_cost's
            # default (compiling would not pay for one run): compile it anyway,
            # the first run compiles it (or loads it from the disk cache)
            conn.execute("SET orochi.jit_min_cost = 0")
            jit_plan = explain(conn, q["pg"].format(t=OROCHI))
            pushed[k] = "JIT" if "JIT Aggregates" in jit_plan else "no JIT"
            compiled = [line for line in jit_plan.splitlines() if "JIT Compile:" in line]
            wall[k]["jit_compile"] = compiled[0].split("JIT Compile:")[1].strip() if compiled else "–"
        wall[k]["orochi"], cpu[k]["orochi"], got = measure_pg(conn, q, OROCHI, args, "orochi")
        if (diff := same_result(got, want, q.get("compare"), q.get("approx"))) is not None:
            mismatches.append(f"{k} orochi differs from heap: {diff}")
        conn.execute("RESET orochi.jit_min_cost")
        wall[k]["duckdb"], cpu[k]["duckdb"], got = measure_duck(duck1, q, args, "duckdb")
        if (diff := same_result(got, want, q.get("compare"), q.get("approx"))) is not None:
            mismatches.append(f"{k} duckdb differs from heap: {diff}")
        wall[k]["duckdb2"], _c, _r = measure_duck(duck2, q, args, "duckdb 2t")
        plans[k] = explain(conn, q["pg"].format(t=OROCHI), analyze=True)
        for m in mismatches:
            if m.startswith(k + " "):
                log("WARNING: " + m)
    return {"wall": wall, "cpu": cpu, "pushed": pushed, "plans": plans, "mismatches": mismatches}


# ================================================================ reporting

HEADERS = ["query", "heap ms", "orochi ms", "duckdb ms", "heap/orochi", "orochi/duckdb", "agg pushed",
           "heap par ms", "duckdb 2t ms"]
CPU_HEADERS = ["query", "heap ms", "orochi ms", "duckdb ms", "heap/orochi", "orochi/duckdb"]


JIT_HEADERS = ["query", "heap ms", "orochi no JIT ms", "orochi JIT ms", "JIT compile", "duckdb ms",
               "heap/JIT", "no JIT/JIT", "JIT/duckdb", "plan"]


def jit_rows(qs, figures, pushed) -> list[list[str]]:
    rows = []
    for q in qs:
        f = figures.get(q["key"])
        if q["key"] not in EXPRESSION_QUERIES or not f:
            continue
        rows.append([f"{q['key']} {q['label']}", _ms(f["heap"]), _ms(f["orochi_nojit"]), _ms(f["orochi"]),
                     f["jit_compile"], _ms(f["duckdb"]), f"{f['heap'] / f['orochi']:.1f}x",
                     f"{f['orochi_nojit'] / f['orochi']:.1f}x", f"{f['orochi'] / f['duckdb']:.1f}x",
                     pushed[q["key"]]])
    return rows


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def table_rows(qs, figures, pushed, cpu: bool = False) -> list[list[str]]:
    rows = []
    for q in qs:
        f = figures[q["key"]]
        row = [f"{q['key']} {q['label']}", _ms(f["heap"]), _ms(f["orochi"]), _ms(f["duckdb"]),
               f"{f['heap'] / f['orochi']:.1f}x", f"{f['orochi'] / f['duckdb']:.1f}x"]
        if not cpu:
            row += [pushed[q["key"]], _ms(f.get("heap_par")), _ms(f.get("duckdb2"))]
        rows.append(row)
    return rows


def targets(qs, figures) -> list[str]:
    """Issue 19's targets, over the figures of this run (wall clock or CPU):
    every query on orochi at most DUCKDB_FACTOR x (its DuckDB time +
    DUCKDB_SLACK_MS); the top-N queries at least TOPN_TARGET x faster than
    on the heap table."""
    keys = [q["key"] for q in qs if figures[q["key"]].get("orochi") is not None
            and figures[q["key"]].get("duckdb") is not None]
    bound = {k: DUCKDB_FACTOR * (figures[k]["duckdb"] + DUCKDB_SLACK_MS) for k in keys}
    miss_duck = [f"{k} {_ms(figures[k]['orochi'])} ms > {_ms(bound[k])} ms" for k in keys
                 if figures[k]["orochi"] > bound[k]]
    topn = [k for k in TOPN_QUERIES if k in figures and figures[k].get("orochi")]
    miss_topn = [f"{k} {figures[k]['heap'] / figures[k]['orochi']:.1f}x" for k in topn
                 if figures[k]["heap"] / figures[k]["orochi"] < TOPN_TARGET]
    out = [f"every query at most {DUCKDB_FACTOR:g} x (DuckDB + {DUCKDB_SLACK_MS:.0f} ms): "
           f"{'MET' if not miss_duck else 'NOT MET'} ({len(keys) - len(miss_duck)} of {len(keys)}"
           + (f"; missed: {', '.join(miss_duck)}" if miss_duck else "") + ")"]
    if topn:
        out.append(f"top-N at least {TOPN_TARGET:.0f}x faster than heap: {'MET' if not miss_topn else 'NOT MET'} "
                   f"({len(topn) - len(miss_topn)} of {len(topn)}"
                   + (f"; missed: {', '.join(miss_topn)}" if miss_topn else "") + ")")
    return out


def format_text_table(headers, rows) -> str:
    rows = [headers] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md_table(headers, rows) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _md_previous(title, qs, figures, prev) -> list[str]:
    out = [f"### {title}", ""]
    if not prev:
        return out + ["Not recorded in the previous run.", ""]
    out += ["| query | engine | ms | previous ms | change |", "|---|---|---:|---:|---:|"]
    for q in qs:
        for eng in ("heap", "orochi", "duckdb"):
            now = figures[q["key"]].get(eng)
            before = prev.get(q["key"], {}).get(eng)
            if now is None:
                continue
            if before:
                out.append(f"| {q['key']} | {eng} | {_ms(now)} | {_ms(before)} | {(now / before - 1) * 100:+.0f}% |")
            else:
                out.append(f"| {q['key']} | {eng} | {_ms(now)} | – | – |")
    return out + [""]


def write_chart(path: str, qs, figures, cpu, rows: int) -> None:
    """Grouped bars (log scale) of the three engines per query: wall-clock
    time above, CPU time below. Without matplotlib, a line saying so (the
    results file is written already)."""
    try:
        import matplotlib
    except ImportError:
        log(f"no chart written to {path}: matplotlib is not installed (pip install -r requirements-bench.txt)")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = [("heap", "heap (1 core)", "#8c8c8c"), ("orochi", "orochi (1 core)", "#d62728"),
               ("duckdb", "DuckDB (1 thread)", "#1f77b4")]
    panels = [("median wall-clock ms", figures)] + ([("median CPU ms (backend / DuckDB process)", cpu)] if cpu else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 5.2 * len(panels)), squeeze=False)
    x = np.arange(len(qs))
    w = 0.27
    for ax, (ylabel, figs) in zip(axes[:, 0], panels):
        vals_all = [figs[q["key"]][e] for q in qs for e, _l, _c in engines]
        for n, (eng, label, color) in enumerate(engines):
            vals = [figs[q["key"]][eng] for q in qs]
            bars = ax.bar(x + (n - 1) * w, vals, w, label=label, color=color)
            for b, v in zip(bars, vals):
                ax.text(b.get_x() + b.get_width() / 2, v * 1.1, _ms(v), ha="center", va="bottom", fontsize=7,
                        rotation=90)
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(0.5, min(vals_all) / 2), top=max(vals_all) * 12)
        ax.set_ylabel(ylabel + "\n(log scale; lower is better)")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{q['key']}\n" + textwrap.fill(q["label"], 14) for q in qs], fontsize=8)
        ax.grid(axis="y", which="major", alpha=0.3)
    axes[0, 0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.16 if len(panels) == 1 else -0.2), ncol=4,
                      fontsize=9, frameon=False)
    axes[0, 0].set_title(f"Device metrics, {rows:,} rows: warm, one session, median per query")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(path: str, data: dict, qs, previous: dict | None) -> None:
    wall, cpu, pushed = data["figures"], data["cpu"], data["pushed"]
    out = [
        "# Query benchmark",
        "",
        "Written by `bench/query_bench.py` (`make bench`); do not edit by hand. Chart: `query.png`.",
        "",
        f"- run: {data['date']}, commit {data['commit']}; load average {data['load']}",
        f"- {data['rows']:,} device-metrics rows (ts timestamptz, device_id int4 with {DEVICES:,} devices, "
        "cpu/mem/temp float8, status text); median of "
        f"{data['runs']} runs ({data['slow_runs']} for runs slower than {data['slow_seconds']:.1f} s); warm; "
        "one session",
        f"- server: PostgreSQL {data['server_version']}, "
        + ", ".join(f"{k}={v}" for k, v in data["settings"].items()),
        f"- heap: {data['sizes']['heap']}, prewarmed; orochi: {data['sizes']['orochi']} "
        f"({data['sizes']['stripes']} stripes), default options; DuckDB {data['duckdb_version']}, in memory, "
        "1 thread (2 in the last column)",
        "- heap/orochi = heap ms / orochi ms (above 1: orochi is faster); orochi/duckdb = orochi ms / duckdb ms "
        "(below 1: orochi is faster); agg pushed: EXPLAIN VERBOSE of the orochi query shows an `Aggregates:` line",
        "- heap par: the heap table with max_parallel_workers_per_gather 2 (on this machine's "
        f"{os.cpu_count()} cores)",
        "",
        "## Queries",
        "",
    ]
    for q in qs:
        out.append(f"- {q['key']}: `{q['pg'].format(t='t')}`")
    out += ["", "## Wall-clock time (what the client waits)", ""]
    out += _md_table(HEADERS, table_rows(qs, wall, pushed))
    out += ["", "Targets:", ""] + [f"- {t}" for t in targets(qs, wall)]
    out += ["", "## CPU time", "",
            "Postgres: the backend's own CPU time (`/proc/<pid>/schedstat`), which does not grow when other",
            "work competes for the cores; DuckDB: this process's CPU time.", ""]
    out += _md_table(CPU_HEADERS, table_rows(qs, cpu, pushed, cpu=True))
    out += ["", "Targets:", ""] + [f"- {t}" for t in targets(qs, cpu)]
    out += ["", "## Results compared", ""]
    if data["mismatches"]:
        out += [f"- WARNING: {m}" for m in data["mismatches"]]
    else:
        out.append("Every query returned the same result on heap, heap (parallel), orochi and DuckDB "
                   "(floats within 1e-9 relative; Q7, Q7b, Q7c: the sort keys).")
    out += ["", "## Load", "", "| step | seconds |", "|---|---:|"]
    out += [f"| {k} | {v:.1f} |" for k, v in data["load_times"].items()]
    out += ["", "## Against the previous run", ""]
    if previous and previous.get("figures"):
        out.append(f"Previous run: {previous.get('date', '?')}, commit {previous.get('commit', '?')}, "
                   f"{previous.get('rows', 0):,} rows, load average {previous.get('load', '?')}.")
        out.append("")
        out += _md_previous("Wall-clock ms", qs, wall, previous.get("figures"))
        out += _md_previous("CPU ms", qs, cpu, previous.get("cpu"))
        if previous.get("load_times"):
            out += ["### Load seconds", "", "| step | s | previous s |", "|---|---:|---:|"]
            for k, v in data["load_times"].items():
                p = previous["load_times"].get(k)
                out.append(f"| {k} | {v:.1f} | {p:.1f} |" if p is not None else f"| {k} | {v:.1f} | – |")
            out.append("")
    else:
        out += ["No previous run recorded.", ""]
    out += ["## orochi plans (EXPLAIN ANALYZE, VERBOSE, TIMING OFF)", ""]
    for q in qs:
        out += [f"{q['key']}:", "", "```", data["plans"][q["key"]], "```", ""]
    stored = {k: v for k, v in data.items() if k != "plans"}
    out += [f"<!-- {DATA_MARKER} {json.dumps(stored, sort_keys=True)} -->", ""]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query and engine")
    parser.add_argument("--slow-runs", type=int, default=2,
                        help="timed runs when the warm-up run takes longer than --slow-seconds")
    parser.add_argument("--slow-seconds", type=float, default=1.0)
    parser.add_argument("--only", help="comma-separated query keys to run (e.g. Q1,Q6); implies --no-write")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file and chart")
    parser.add_argument("--jit", action="store_true",
                        help="only the expression queries (E1-E5), written to results/query_jit.md")
    parser.add_argument("--results", default=RESULTS, help="where to write the markdown results")
    parser.add_argument("--chart", default=CHART, help="where to write the PNG chart")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the chart from the figures recorded in the results file")
    args = parser.parse_args(argv)
    if args.replot:
        data = read_previous(args.results)
        if not data:
            raise SystemExit(f"no figures recorded in {args.results}")
        qs = [q for q in queries(data["rows"]) if q["key"] in data["figures"]]
        write_chart(args.chart, qs, data["figures"], data.get("cpu"), data["rows"])
        print(f"written to {os.path.relpath(args.chart)}")
        return 0
    qs = queries(args.rows)
    if args.only:
        wanted = set(args.only.split(","))
        qs = [q for q in qs if q["key"] in wanted]
        args.no_write = True
    if args.jit:
        qs = [q for q in qs if q["key"] in EXPRESSION_QUERIES]

    started = time.perf_counter()
    load_before = load_average()
    commit = git_commit()
    log(f"generating {args.rows:,} rows ...")
    t0 = time.perf_counter()
    table = generate(args.rows)
    gen_seconds = time.perf_counter() - t0
    with PostgresCluster("bench-query", settings=SETTINGS) as pg:
        pg.create_database("bench")
        with pg.connect("bench", autocommit=True) as conn:
            load_times = {"generate (numpy)": gen_seconds}
            load_times.update(load_postgres(conn, table))
            duck1, t = load_duckdb(table, 1)
            load_times["duckdb CREATE TABLE AS (from Arrow)"] = t
            duck2, _t = load_duckdb(table, 2)
            del table
            version = conn.execute("SHOW server_version").fetchone()[0]
            sizes = {
                "heap": conn.execute(f"SELECT pg_size_pretty(pg_table_size('{HEAP}'))").fetchone()[0],
                "orochi": conn.execute(f"SELECT pg_size_pretty(orochi.table_size('{OROCHI}'))").fetchone()[0],
                "stripes": conn.execute("SELECT count(*) FROM orochi.columnar_stripes "
                                        f"WHERE relid = '{OROCHI}'::regclass").fetchone()[0],
            }
            log(f"sizes: {sizes}; load {load_average()}")
            res = measure(conn, duck1, duck2, qs, args)
    load = f"{load_before} at the start, {load_average()} at the end (1, 5, 15 min)"

    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "rows": args.rows,
        "runs": args.runs,
        "slow_runs": args.slow_runs,
        "slow_seconds": args.slow_seconds,
        "settings": SETTINGS,
        "server_version": version,
        "duckdb_version": duckdb.__version__,
        "sizes": sizes,
        "load": load,
        "load_times": load_times,
        "figures": res["wall"],
        "cpu": res["cpu"],
        "pushed": res["pushed"],
        "mismatches": res["mismatches"],
        "plans": res["plans"],
    }
    print()
    print(f"Query benchmark: {args.rows:,} device-metrics rows; median of {args.runs} runs "
          f"({args.slow_runs} when a run takes over {args.slow_seconds:.1f} s); warm; one session")
    print()
    print("Load: " + "; ".join(f"{k} {v:.1f} s" for k, v in load_times.items()))
    print(f"Sizes: heap {sizes['heap']}, orochi {sizes['orochi']} ({sizes['stripes']} stripes)")
    print()
    print("Wall-clock ms")
    print(format_text_table(HEADERS, table_rows(qs, res["wall"], res["pushed"])))
    for line in targets(qs, res["wall"]):
        print("  " + line)
    print()
    print("CPU ms (Postgres backend from /proc/<pid>/schedstat; DuckDB: this process)")
    print(format_text_table(CPU_HEADERS, table_rows(qs, res["cpu"], res["pushed"], cpu=True)))
    for line in targets(qs, res["cpu"]):
        print("  " + line)
    print()
    jit_table = None
    if any(q["key"] in EXPRESSION_QUERIES for q in qs):
        jit_table = format_text_table(JIT_HEADERS, jit_rows(qs, res["wall"], res["pushed"]))
        print("Expression queries (issue 19): orochi with the expression JIT off and on, wall-clock ms")
        print(jit_table)
        print()
    for m in res["mismatches"]:
        print("WARNING: " + m)
    if not res["mismatches"]:
        print("results: heap, heap parallel, orochi and DuckDB agree on every query")
    print("heap/orochi = heap ms / orochi ms; orochi/duckdb = orochi ms / duckdb ms; "
          "heap par = 2 parallel workers; duckdb 2t = 2 threads")
    print(f"load average: {load}; total {time.perf_counter() - started:.0f} s")
    if args.jit:
        if not args.no_write:
            with open(JIT_RESULTS, "w") as f:
                f.write(f"# Expression JIT: issue 19's expression queries\n\n{data['date']}, commit {commit}, "
                        f"{args.rows:,} rows (bench/query_bench.py --jit --rows {args.rows}); median of "
                        f"{args.runs} warm runs; PostgreSQL {version}, DuckDB {duckdb.__version__} "
                        f"(1 thread).\nLoad average: {load}.\n\n")
                f.write("\n".join(_md_table(JIT_HEADERS, jit_rows(qs, res["wall"], res["pushed"]))) + "\n\n")
                f.write("- JIT compile: the kernel's compile time as EXPLAIN showed it when the query was first planned with the JIT on in the session (the first one includes importing numba into the backend); later runs find the kernel in the backend's cache.\n")
                for m in res["mismatches"]:
                    f.write(f"- WARNING: {m}\n")
                f.write("\n## EXPLAIN (ANALYZE, VERBOSE) of the orochi queries\n\n")
                for q in qs:
                    f.write(f"### {q['key']} {q['label']}\n\n```\n{res['plans'][q['key']]}\n```\n\n")
            print(f"written to {os.path.relpath(JIT_RESULTS)}")
    elif not args.no_write:
        previous = read_previous(args.results)
        write_markdown(args.results, data, qs, previous)
        write_chart(args.chart, qs, res["wall"], res["cpu"], args.rows)
        print(f"written to {os.path.relpath(args.results)} and {os.path.relpath(args.chart)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
