"""numeric(15,2) and char(1) columns: heap against orochi before and after
numeric(p, s) became scaled int64 and char(n) a kind of its own (issue 22).

One Postgres cluster, one database, one session, no parallel workers. The
same rows (3M by default, numpy, fixed seed), TPC-H lineitem-like:

- ``price numeric(15,2)``: uniform in 900.00 .. 105000.00;
- ``disc numeric(15,2)``: 0.00 .. 0.10;
- ``qty numeric(15,2)``: whole numbers 1 .. 50;
- ``flag char(1)``: 'A', 'N', 'R';
- ``ship date``: ascending (the table's load order, as lineitem's is near
  l_orderkey's), for a filter that prunes.

loaded into

- ``heap``: a heap table (COPY, VACUUM (FREEZE, ANALYZE), pg_prewarm);
- ``orochi_text``: an orochi table with ``numeric`` and ``bpchar`` columns
  (no precision, no length): stored as their text form, which is how
  numeric(15,2) and char(1) were stored before (no filter on them pushed,
  no aggregate of them pushed: every row crosses into PostgreSQL);
- ``orochi``: an orochi table with the declared types: scaled int64 and
  char without padding.

Each query runs once warm, then --runs times; the median wall time is
reported, with results compared against the heap's (as text). EXPLAIN says
whether the aggregation was pushed down. Prints a table and writes
bench/results/numeric.md.

    python bench/numeric_bench.py [--rows N] [--runs N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bridge_bench import git_commit, load_average, log  # noqa: E402

from orochi_fdw.testing.cluster import PostgresCluster  # noqa: E402

RESULTS = os.path.join(HERE, "results", "numeric.md")
SETTINGS = {"shared_buffers": "2GB", "max_parallel_workers_per_gather": 0, "jit": "off",
            "work_mem": "64MB", "max_wal_size": "8GB"}
SEED = 22
TABLES = {
    "heap": "CREATE TABLE heap (price numeric(15,2), disc numeric(15,2), qty numeric(15,2),"
            " flag char(1), ship date)",
    "orochi_text": "CREATE FOREIGN TABLE orochi_text (price numeric, disc numeric, qty numeric,"
                   " flag bpchar, ship date) SERVER orochi",
    "orochi": "CREATE FOREIGN TABLE orochi (price numeric(15,2), disc numeric(15,2), qty numeric(15,2),"
              " flag char(1), ship date) SERVER orochi",
}
QUERIES = [
    ("filter", "numeric range, count", "SELECT count(*) FROM {t} WHERE price BETWEEN 50000 AND 50100"),
    ("sum_avg", "sum / avg over every row", "SELECT sum(price), avg(price), avg(disc) FROM {t}"),
    ("q1_like", "TPC-H Q1 shape (filter, GROUP BY char, sums)",
     "SELECT flag, sum(qty), sum(price), avg(price), avg(disc), count(*) FROM {t}"
     " WHERE ship <= date '2024-06-01' GROUP BY flag ORDER BY flag"),
    ("q6_like", "TPC-H Q6 shape (ranges on numeric, one sum)",
     "SELECT sum(price) FROM {t} WHERE disc BETWEEN 0.05 AND 0.07 AND qty < 24"),
    ("rows_out", "rows out (values formatted)", "SELECT price, flag FROM {t} WHERE price > 104900"),
    ("char_eq", "char(1) equality, count", "SELECT count(*) FROM {t} WHERE flag = 'R'"),
]


def generate(rows: int) -> bytes:
    rng = np.random.default_rng(SEED)
    price = rng.integers(90_000, 10_500_001, rows)
    disc = rng.integers(0, 11, rows)
    qty = rng.integers(1, 51, rows)
    flag = np.array(["A", "N", "R"])[rng.integers(0, 3, rows)]
    days = np.sort(rng.integers(0, 365 * 2, rows))
    ship = (np.datetime64("2023-01-01") + days.astype("timedelta64[D]")).astype(str)
    out = io.StringIO()
    for p, d, q, f, s in zip(price.tolist(), disc.tolist(), qty.tolist(), flag.tolist(), ship.tolist()):
        out.write(f"{p // 100}.{p % 100:02d},0.{d:02d},{q}.00,{f},{s}\n")
    return out.getvalue().encode()


def timed(conn, sql: str) -> tuple[float, list]:
    t0 = time.perf_counter()
    rows = conn.execute(sql).fetchall()
    return time.perf_counter() - t0, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    load_before = load_average()
    log(f"generating {args.rows:,} rows ...")
    csv = generate(args.rows)
    figures: dict[str, dict[str, float]] = {}
    pushed: dict[str, dict[str, bool]] = {}
    mismatches: list[str] = []
    load_times: dict[str, float] = {}
    with PostgresCluster("bench-numeric", settings=SETTINGS) as pg:
        pg.create_database("bench")
        with pg.connect("bench", autocommit=True) as conn:
            for name, ddl in TABLES.items():
                conn.execute(ddl)
            t0 = time.perf_counter()
            with conn.cursor().copy("COPY heap FROM STDIN (FORMAT csv)") as cp:
                for i in range(0, len(csv), 1 << 24):
                    cp.write(csv[i:i + (1 << 24)])
            conn.execute("VACUUM (FREEZE, ANALYZE) heap")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            conn.execute("SELECT pg_prewarm('heap')")
            load_times["heap"] = time.perf_counter() - t0
            for name in ("orochi_text", "orochi"):
                t0 = time.perf_counter()
                conn.execute(f"INSERT INTO {name} SELECT * FROM heap")
                load_times[name] = time.perf_counter() - t0
                log(f"{name}: loaded in {load_times[name]:.1f} s")
            sizes = {
                "heap": conn.execute("SELECT pg_size_pretty(pg_table_size('heap'))").fetchone()[0],
                "orochi_text": conn.execute("SELECT pg_size_pretty(orochi.table_size('orochi_text'))").fetchone()[0],
                "orochi": conn.execute("SELECT pg_size_pretty(orochi.table_size('orochi'))").fetchone()[0],
            }
            for key, _title, sql in QUERIES:
                figures[key], pushed[key] = {}, {}
                want = None
                for name in TABLES:
                    q = sql.format(t=name)
                    _, rows = timed(conn, q)  # warm
                    times = [timed(conn, q)[0] for _ in range(args.runs)]
                    figures[key][name] = statistics.median(times)
                    text = [tuple(map(str, r)) for r in rows]
                    if want is None:
                        want = text
                    elif text != want:
                        mismatches.append(f"{key} on {name}")
                    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (VERBOSE, COSTS OFF) " + q))
                    pushed[key][name] = "Aggregates:" in plan
                    log(f"{key} {name}: {figures[key][name] * 1000:.1f} ms")
    load = f"{load_before} at the start, {load_average()} at the end (1, 5, 15 min)"

    def ms(v: float) -> str:
        return f"{v * 1000:,.1f}"

    header = ["query", "heap ms", "orochi before (text) ms", "orochi after ms", "heap / after",
              "before / after", "aggregate pushed (before, after)"]
    lines = []
    for key, title, _sql in QUERIES:
        f = figures[key]
        lines.append([f"{key}: {title}", ms(f["heap"]), ms(f["orochi_text"]), ms(f["orochi"]),
                      f"{f['heap'] / f['orochi']:.1f}x", f"{f['orochi_text'] / f['orochi']:.1f}x",
                      f"{'yes' if pushed[key]['orochi_text'] else 'no'}, {'yes' if pushed[key]['orochi'] else 'no'}"])
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header] + lines)
    print()
    print(f"numeric(15,2) / char(1): {args.rows:,} rows, median of {args.runs} warm runs, one session")
    print(f"sizes: {sizes}; load {load}")
    print(table)
    if mismatches:
        print("MISMATCHES against the heap: " + ", ".join(mismatches))
    if not args.no_write:
        md = [
            "# numeric and char(n) benchmark", "",
            f"`python bench/numeric_bench.py --rows {args.rows} --runs {args.runs}`, commit {git_commit()}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
            "Machine: 2 cores, shared with other work; load average " + load + ".", "",
            "Tables: `heap` (numeric(15,2), char(1)); `orochi_text` (numeric, bpchar: the text "
            "layout numeric(15,2) and char(1) had before, nothing on them pushed down); `orochi` "
            "(numeric(15,2) as scaled int64, char(1) without padding).", "",
            "Load (s): " + ", ".join(f"{k} {v:.1f}" for k, v in load_times.items()) + ". Sizes: "
            + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ".", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
        ] + ["| " + " | ".join(r) + " |" for r in lines] + [
            "", "Results equal the heap's (as text) for every query and table."
            if not mismatches else "Mismatches: " + ", ".join(mismatches), "",
            "Queries:", "",
        ] + [f"- {key}: `{sql.format(t='t')}`" for key, _t, sql in QUERIES] + [""]
        with open(RESULTS, "w", encoding="utf-8") as f:
            f.write("\n".join(md))
        print(f"written to {os.path.relpath(RESULTS)}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
