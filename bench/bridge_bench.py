"""The bridge benchmark: how fast rows cross from Python into Postgres.

One Postgres cluster, one database, one session.  The same rows
(``id int8, v float8, t text``; see orochi_fdw/testing/bench_wrappers.py)
are served by

- ``heap``: an ordinary heap table, fully in shared buffers (the reference);
- ``batch``: a wrapper yielding column batches from precomputed numpy buffers;
- ``per-row``: a wrapper yielding one tuple of Python values per row;
- ``multicorn-style``: a wrapper yielding one tuple of ``str`` per row, so
  that every value goes through its type's input function, as with Multicorn.

and three queries run on each: ``count(*), sum(v)``; ``COPY (SELECT *) TO
'/dev/null'`` (server-side); an aggregate over every column.  The wrappers
generate their data once per backend; every table is warmed up before timing;
figures are medians of several runs: the wall-clock time measured at the
client, and the backend's own CPU time (from /proc/<pid>/schedstat), which
other work on the machine does not inflate.  Results are checked to be equal
on all four tables.

Server settings: shared_buffers 2GB (the heap table is well under a quarter
of it, so sequential scans read it from shared buffers rather than through a
ring buffer), max_parallel_workers_per_gather 0 (the heap is scanned on one
core, like the wrappers), jit off (no compile time in the figures).

Targets (issue 2): the batch path at least as fast as the heap table on all
three queries; the per-row path at least 4x faster than the Multicorn-style
text round trip.

Prints the tables and writes bench/results/bridge.md, keeping the figures of
the previous run alongside for comparison.

    python bench/bridge_bench.py [--rows N] [--runs N] [--slow-runs N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

from orochi_fdw.testing.cluster import PostgresCluster

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "bridge.md")

SETTINGS = {
    "shared_buffers": "2GB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "64MB",
}

#: (label, SQL with {t} for the table)
QUERIES = [
    ("count(*), sum(v)", "SELECT count(*), sum(v) FROM {t}"),
    ("COPY (SELECT *) TO /dev/null", "COPY (SELECT * FROM {t}) TO '/dev/null'"),
    ("count, sum(id), sum(v), max(t)", "SELECT count(*), sum(id), sum(v), max(t) FROM {t}"),
]

#: (key, label, table, wrapper class or None for the heap table)
PATHS = [
    ("heap", "heap", "bench_heap", None),
    ("batch", "batch", "bench_batch", "BatchBenchWrapper"),
    ("row", "per-row", "bench_row", "RowBenchWrapper"),
    ("text", "multicorn-style", "bench_text", "TextRowBenchWrapper"),
]

WRAPPER_MODULE = "orochi_fdw.testing.bench_wrappers"
DATA_MARKER = "bench-data:"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                             text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def backend_cpu_seconds(pid: int) -> float | None:
    """CPU time the backend has used so far (first field of /proc/<pid>/schedstat,
    in ns), or None where the kernel does not provide it."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def run_query(conn, sql: str):
    """Run sql; return (wall seconds, backend CPU seconds or None, result), the
    result being the rows or the COPY row count."""
    pid = conn.info.backend_pid
    cpu_start = backend_cpu_seconds(pid)
    start = time.perf_counter()
    cur = conn.execute(sql)
    result = cur.fetchall() if cur.description else cur.rowcount
    wall = time.perf_counter() - start
    cpu_end = backend_cpu_seconds(pid)
    cpu = cpu_end - cpu_start if cpu_start is not None and cpu_end is not None else None
    return wall, cpu, result


def setup(conn, rows: int, batch_size: int) -> None:
    log(f"loading {rows:,} rows into the heap table ...")
    conn.execute(
        "CREATE TABLE bench_heap AS SELECT g::int8 AS id, (g %% 10007) * 0.125::float8 AS v,"
        " 'row-' || g AS t FROM generate_series(0, %s) AS g",
        (rows - 1,),
    )
    conn.execute("VACUUM (FREEZE, ANALYZE) bench_heap")
    for _key, _label, table, wrapper in PATHS:
        if wrapper is None:
            continue
        conn.execute(
            f"CREATE FOREIGN TABLE {table} (id int8, v float8, t text) SERVER orochi "
            f"OPTIONS (wrapper '{WRAPPER_MODULE}.{wrapper}', rows '{rows}', batch_size '{batch_size}')"
        )


def measure(conn, runs: int, slow_runs: int, slow_seconds: float) -> tuple[dict, dict | None]:
    """Median wall-clock and backend-CPU milliseconds per (query, path), with
    the results checked equal across paths."""
    log("warming up (the wrappers build their data in the backend) ...")
    for _key, label, table, _w in PATHS:
        elapsed, _cpu, _ = run_query(conn, f"SELECT count(*) FROM {table}")
        log(f"  {label}: {elapsed * 1000:.0f} ms")
    for _label, sql in QUERIES:
        run_query(conn, sql.format(t="bench_heap"))

    wall: dict[str, dict[str, float]] = {}
    cpu: dict[str, dict[str, float]] | None = {}
    for qlabel, sql in QUERIES:
        wall[qlabel] = {}
        if cpu is not None:
            cpu[qlabel] = {}
        expected = None
        for key, label, table, _w in PATHS:
            elapsed, used, result = run_query(conn, sql.format(t=table))
            times, cpus = [elapsed], [used]
            if expected is None:
                expected = result
            elif result != expected:
                raise SystemExit(f"{label} returned {result!r} for {qlabel!r}; the heap table returned {expected!r}")
            n = slow_runs if elapsed > slow_seconds else runs
            while len(times) < n:
                elapsed, used, _ = run_query(conn, sql.format(t=table))
                times.append(elapsed)
                cpus.append(used)
            wall[qlabel][key] = statistics.median(times) * 1000
            if cpu is not None and None not in cpus:
                cpu[qlabel][key] = statistics.median(cpus) * 1000
            else:
                cpu = None
            log(f"  {qlabel:<32} {label:<16} {wall[qlabel][key]:9.0f} ms"
                + (f" (backend CPU {cpu[qlabel][key]:.0f} ms)" if cpu is not None else "")
                + f"  runs: {', '.join(f'{t * 1000:.0f}' for t in times)}")
    return wall, cpu


def ratios(f: dict[str, float]) -> tuple[float, float]:
    """(batch speed relative to heap, per-row speed relative to multicorn-style)"""
    return f["heap"] / f["batch"], f["text"] / f["row"]


HEADERS = ["query", "heap ms", "batch ms", "per-row ms", "multicorn-style ms", "batch/heap", "per-row vs mc"]


def table_rows(figures: dict) -> list[list[str]]:
    rows = []
    for qlabel, _sql in QUERIES:
        f = figures[qlabel]
        batch_ratio, row_ratio = ratios(f)
        rows.append([qlabel, f"{f['heap']:.0f}", f"{f['batch']:.0f}", f"{f['row']:.0f}", f"{f['text']:.0f}",
                     f"{batch_ratio:.2f}x", f"{row_ratio:.1f}x"])
    return rows


def targets(figures: dict) -> list[str]:
    batch = [ratios(figures[q])[0] for q, _ in QUERIES]
    row = [ratios(figures[q])[1] for q, _ in QUERIES]
    return [
        f"batch path at least as fast as heap on all three: {'MET' if min(batch) >= 1.0 else 'NOT MET'} "
        f"(worst {min(batch):.2f}x)",
        f"per-row path at least 4x faster than multicorn-style: {'MET' if min(row) >= 4.0 else 'NOT MET'} "
        f"(worst {min(row):.1f}x)",
    ]


def format_text_table(figures: dict) -> str:
    rows = [HEADERS] + table_rows(figures)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def read_previous(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    m = re.search(r"<!-- " + re.escape(DATA_MARKER) + r" (.*?) -->", text, re.S)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:
        return None


def _md_table(figures: dict) -> list[str]:
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
    for r in table_rows(figures):
        out.append("| " + " | ".join(r) + " |")
    return out


def _md_previous(title: str, figures: dict, prev: dict | None) -> list[str]:
    out = [f"### {title}", ""]
    if not prev:
        return out + ["Not recorded in the previous run.", ""]
    out.append("| query | path | ms | previous ms | change |")
    out.append("|---|---|---:|---:|---:|")
    for qlabel, _sql in QUERIES:
        for key, label, _t, _w in PATHS:
            now = figures[qlabel][key]
            before = prev.get(qlabel, {}).get(key)
            if before:
                out.append(f"| {qlabel} | {label} | {now:.0f} | {before:.0f} | {(now / before - 1) * 100:+.0f}% |")
            else:
                out.append(f"| {qlabel} | {label} | {now:.0f} | – | – |")
    out += ["", "| query | batch/heap | previous | per-row vs mc | previous |", "|---|---:|---:|---:|---:|"]
    for qlabel, _sql in QUERIES:
        b, r = ratios(figures[qlabel])
        if qlabel in prev and all(k in prev[qlabel] for k in ("heap", "batch", "row", "text")):
            pb, pr = ratios(prev[qlabel])
            out.append(f"| {qlabel} | {b:.2f}x | {pb:.2f}x | {r:.1f}x | {pr:.1f}x |")
        else:
            out.append(f"| {qlabel} | {b:.2f}x | – | {r:.1f}x | – |")
    return out + [""]


def write_markdown(path: str, data: dict, previous: dict | None) -> None:
    wall, cpu = data["figures"], data.get("cpu")
    out = [
        "# Bridge benchmark",
        "",
        "Written by `bench/bridge_bench.py` (`make bench`); do not edit by hand.",
        "",
        f"- run: {data['date']}, commit {data['commit']}; load average {data['load']}",
        f"- {data['rows']:,} rows (int8, float8, text); median of {data['runs']} runs "
        f"({data['slow_runs']} for paths slower than {data['slow_seconds']:.0f} s a run); warm; one session",
        f"- server: PostgreSQL {data['server_version']}, "
        + ", ".join(f"{k}={v}" for k, v in data["settings"].items()),
        f"- heap table: {data['heap_size']}; batch size {data['batch_size']:,} rows",
        "- batch/heap = heap time / batch time (above 1: the batch path is faster);"
        " per-row vs mc = multicorn-style time / per-row time",
        "",
        "## Wall-clock time (what the client waits)",
        "",
    ]
    out += _md_table(wall)
    out += ["", "Targets:", ""] + [f"- {t}" for t in targets(wall)]
    if cpu:
        out += ["", "## Backend CPU time", "",
                "The server process's own CPU time (`/proc/<pid>/schedstat`); unlike wall-clock time it does",
                "not grow when other work competes for the cores.", ""]
        out += _md_table(cpu)
        out += ["", "Targets:", ""] + [f"- {t}" for t in targets(cpu)]

    out += ["", "## Against the previous run", ""]
    if previous and previous.get("figures"):
        out.append(f"Previous run: {previous.get('date', '?')}, commit {previous.get('commit', '?')}, "
                   f"{previous.get('rows', 0):,} rows, load average {previous.get('load', '?')}.")
        out.append("")
        out += _md_previous("Wall-clock ms", wall, previous.get("figures"))
        if cpu:
            out += _md_previous("Backend CPU ms", cpu, previous.get("cpu"))
    else:
        out.append("No previous run recorded.")
        out.append("")
    out += [f"<!-- {DATA_MARKER} {json.dumps(data, sort_keys=True)} -->", ""]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query and path")
    parser.add_argument("--slow-runs", type=int, default=3,
                        help="timed runs for a path whose first run takes longer than --slow-seconds")
    parser.add_argument("--slow-seconds", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=65_536, help="rows per batch of the batch wrapper")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {os.path.relpath(RESULTS)}")
    parser.add_argument("--results", default=RESULTS, help="where to write the markdown results")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_before = load_average()
    commit = git_commit()
    with PostgresCluster("bench-bridge", settings=SETTINGS) as pg:
        pg.create_database("bench")
        with pg.connect("bench", autocommit=True) as conn:
            setup(conn, args.rows, args.batch_size)
            heap_size = conn.execute("SELECT pg_size_pretty(pg_table_size('bench_heap'))").fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
            wall, cpu = measure(conn, args.runs, args.slow_runs, args.slow_seconds)
    load = f"{load_before} at the start, {load_average()} at the end (1, 5, 15 min)"

    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "rows": args.rows,
        "runs": args.runs,
        "slow_runs": args.slow_runs,
        "slow_seconds": args.slow_seconds,
        "batch_size": args.batch_size,
        "settings": SETTINGS,
        "server_version": version,
        "heap_size": heap_size,
        "load": load,
        "figures": wall,
        "cpu": cpu,
    }
    print()
    print(f"Bridge benchmark: {args.rows:,} rows (int8, float8, text); median of {args.runs} runs "
          f"({args.slow_runs} when a run takes over {args.slow_seconds:.0f} s); warm; one session")
    print()
    print("Wall-clock ms")
    print(format_text_table(wall))
    for line in targets(wall):
        print("  " + line)
    if cpu:
        print()
        print("Backend CPU ms (not inflated by other load on the machine)")
        print(format_text_table(cpu))
        for line in targets(cpu):
            print("  " + line)
    print()
    print("batch/heap = heap ms / batch ms; per-row vs mc = multicorn-style ms / per-row ms")
    print(f"load average: {load}; total {time.perf_counter() - started:.0f} s")
    if not args.no_write:
        previous = read_previous(args.results)
        write_markdown(args.results, data, previous)
        print(f"written to {os.path.relpath(args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
