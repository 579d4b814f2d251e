"""Sketch benchmark: approximate aggregates pushed down into a columnar
(orochi) table against the exact answers on a heap table (issue 7,
"Benchmark").

One Postgres cluster, one session, no parallel workers. The same rows, 10M
by default, generated in SQL from a fixed seed (``setseed``):

- ``user_id int8``: uniform over rows / 5 values (about 1.8M distinct at 10M
  rows);
- ``region int4``: 10 values;
- ``latency float8``: lognormal (exp of a sum of uniforms), in ms.

loaded into ``heap`` (an ordinary table, VACUUM FREEZE ANALYZE) and
``orochi`` (``INSERT INTO orochi SELECT * FROM heap``). Each query runs once
warm, then is timed (median of --runs). Exact answers: ``count(DISTINCT)``
and ``percentile_cont`` on the heap table; approximate ones:
``orochi.approx_count_distinct`` and ``orochi.approx_percentile`` pushed down
into the orochi table (the EXPLAIN "Aggregates:" line is checked). Errors:
relative error of the distinct count; rank error of a percentile (the
fraction of rows <= the estimate, minus q).

Target (issue 7): approx_count_distinct at least 20x faster than the heap
table's count(DISTINCT) at no more than 1% error.

    python bench/sketch_bench.py [--rows N] [--runs N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from orochi_fdw.testing.cluster import PostgresCluster  # noqa: E402

RESULTS_DIR = os.path.join(HERE, "results")


def results_path(rows: int) -> str:
    """bench/results/sketches.md for the default 10M rows, sketches_<rows>.md otherwise."""
    name = "sketches.md" if rows == 10_000_000 else f"sketches_{rows // 1_000_000}m.md"
    return os.path.join(RESULTS_DIR, name)
SETTINGS = {"shared_buffers": "2GB", "max_parallel_workers_per_gather": 0, "jit": "off",
            "work_mem": "1GB", "max_wal_size": "8GB"}

CASES = [
    # (name, exact query on heap, approximate query on orochi, kind)
    ("distinct users", "SELECT count(DISTINCT user_id) FROM heap",
     "SELECT orochi.approx_count_distinct(user_id) FROM orochi", "distinct"),
    ("distinct users per region",
     "SELECT region, count(DISTINCT user_id) FROM heap GROUP BY region ORDER BY region",
     "SELECT region, orochi.approx_count_distinct(user_id) FROM orochi GROUP BY region ORDER BY region",
     "distinct"),
    ("median latency", "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) FROM heap",
     "SELECT orochi.approx_percentile(latency, 0.5) FROM orochi", "percentile:0.5"),
    ("p99 latency", "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY latency) FROM heap",
     "SELECT orochi.approx_percentile(latency, 0.99) FROM orochi", "percentile:0.99"),
]

#: sampled estimates: fractions, the seed, and the exact answer's query
SAMPLE_FRACTIONS = (0.01, 0.1)
SAMPLE_SEED = 1
SAMPLED_EXACT = "SELECT sum(latency), avg(latency), count(*) FROM {}"
SAMPLED = ("SELECT orochi.sampled_sum(latency, {f}), orochi.sampled_avg(latency, {f}), "
           "orochi.sampled_count(1, {f}) FROM orochi.sample(NULL::{t}, {f}, {seed})")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(conn, sql: str, runs: int):
    conn.execute(sql).fetchall()  # warm
    times, rows = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = conn.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rows


def load_heap(conn, rows: int) -> float:
    """The heap table ``heap`` (user_id, region, latency) of ``rows`` random
    rows, the same at every run; the seconds it took."""
    conn.execute("CREATE TABLE heap (user_id int8, region int4, latency float8)")
    conn.execute("SELECT setseed(0.20261125)")
    t0 = time.perf_counter()
    conn.execute(f"INSERT INTO heap SELECT (random() * {rows // 5})::int8, (random() * 9)::int4, "
                 f"round((exp((random() + random() + random() - 1.5) * 2) * 20)::numeric, 3)::float8 "
                 f"FROM generate_series(1, {rows})")
    conn.execute("VACUUM (FREEZE, ANALYZE) heap")
    return time.perf_counter() - t0


def load(conn, rows: int) -> dict[str, float]:
    conn.execute("CREATE EXTENSION IF NOT EXISTS orochi")
    loads = {"heap": load_heap(conn, rows)}
    log(f"heap loaded in {loads['heap']:.1f} s")
    conn.execute("CREATE FOREIGN TABLE orochi (user_id int8, region int4, latency float8) SERVER orochi")
    t0 = time.perf_counter()
    conn.execute("INSERT INTO orochi SELECT * FROM heap")
    loads["orochi"] = time.perf_counter() - t0
    log(f"orochi loaded in {loads['orochi']:.1f} s")
    return loads


def error_of(conn, kind: str, exact, approx) -> str:
    if kind == "distinct":
        errs = [abs(a[-1] - e[-1]) / e[-1] for a, e in zip(approx, exact)]
        return f"{max(errs):.3%} (max relative)"
    q = float(kind.split(":")[1])
    est = approx[0][0]
    below = conn.execute("SELECT avg((latency <= %s)::int) FROM heap", (est,)).fetchone()[0]
    return f"{abs(float(below) - q):.4f} (rank), value {est:.3f} vs {exact[0][0]:.3f}"


def _estimate(value) -> tuple[float, float, float]:
    """(estimate, lower, upper) of an orochi.estimate as psycopg returns it."""
    if isinstance(value, str):
        value = value.strip("()").split(",")
    return float(value[0]), float(value[1]), float(value[2])


def sampled_cases(conn, runs: int, heap_sample: bool) -> tuple[list[list[str]], float, float]:
    """Time and error of the sampled sum / avg / count at each fraction.

    Returns:
        The table's rows, and the exact query's time on the heap and on
        the orochi table (pushed down).
    """
    t_heap, exact = timed(conn, SAMPLED_EXACT.format("heap"), runs)
    t_orochi, _ = timed(conn, SAMPLED_EXACT.format("orochi"), runs)
    truth = [float(v) for v in exact[0]]
    out = []
    for f in SAMPLE_FRACTIONS:
        t_sample, got = timed(conn, SAMPLED.format(f=f, t="orochi", seed=SAMPLE_SEED), runs)
        t_heap_sample = None
        if heap_sample:
            t_heap_sample, got_heap = timed(conn, SAMPLED.format(f=f, t="heap", seed=SAMPLE_SEED), runs)
            assert got_heap == got, "the heap table's sample differs from the orochi table's"
        errors, covered = [], 0
        for name, value, true in zip(("sum", "avg", "count"), got[0], truth):
            est, lower, upper = _estimate(value)
            errors.append(f"{name} {abs(est - true) / abs(true):.3%}")
            covered += lower <= true <= upper
        sampled = conn.execute(f"SELECT count(*) FROM orochi.sample(NULL::orochi, {f}, {SAMPLE_SEED})").fetchone()[0]
        out.append([f"{f:g}", f"{sampled:,}", f"{t_sample * 1000:.0f}",
                    "-" if t_heap_sample is None else f"{t_heap_sample * 1000:.0f}",
                    ", ".join(errors), f"{covered}/3"])
        log(f"sampled f={f}: orochi {t_sample * 1000:.0f} ms, errors {errors}")
    return out, t_heap, t_orochi


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-heap-sample", action="store_true",
                    help="do not time orochi.sample on the heap table (a full scan with row_number)")
    args = ap.parse_args(argv)
    lines = []
    with PostgresCluster("bench-sketch", settings=SETTINGS) as pg:
        pg.create_database("bench")
        with pg.connect("bench", autocommit=True) as conn:
            loads = load(conn, args.rows)
            floor, _ = timed(conn, "SELECT count(user_id) FROM orochi", args.runs)
            log(f"scan floor (count(user_id) pushed down): {floor * 1000:.0f} ms")
            for name, exact_sql, approx_sql, kind in CASES:
                plan = "\n".join(r[0] for r in conn.execute("EXPLAIN VERBOSE " + approx_sql).fetchall())
                pushed = "Aggregates:" in plan
                t_exact, exact = timed(conn, exact_sql, args.runs)
                t_approx, approx = timed(conn, approx_sql, args.runs)
                lines.append((name, t_exact, t_approx, t_exact / t_approx, error_of(conn, kind, exact, approx),
                              "yes" if pushed else "NO"))
                log(f"{name}: exact {t_exact * 1000:.0f} ms, approx {t_approx * 1000:.0f} ms")
            sampled, t_exact_heap, t_exact_orochi = sampled_cases(conn, args.runs, not args.no_heap_sample)
    head = ["query", "heap exact (ms)", "orochi approx (ms)", "speedup", "error", "pushed down"]
    rows = [[n, f"{a * 1000:.0f}", f"{b * 1000:.0f}", f"{s:.1f}x", e, p] for n, a, b, s, e, p in lines]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [head] + rows)
    note = (f"Scan floor: `SELECT count(user_id) FROM orochi` (pushed down, reads the same column) "
            f"takes {floor * 1000:.0f} ms. Load: heap (INSERT ... SELECT from generate_series, then "
            f"VACUUM FREEZE ANALYZE) {loads['heap']:.0f} s, orochi (INSERT INTO orochi SELECT * FROM heap) "
            f"{loads['orochi']:.0f} s.")
    sampled_head = ["fraction", "sampled rows", "orochi sample (ms)", "heap sample (ms)",
                    "relative error", "95% intervals covering"]
    sampled_note = (f"Exact `{SAMPLED_EXACT.format('heap')}`: {t_exact_heap * 1000:.0f} ms on the heap table, "
                    f"{t_exact_orochi * 1000:.0f} ms on the orochi table (pushed down). Sampled: "
                    f"`{SAMPLED.format(f='f', t='orochi', seed=SAMPLE_SEED)}`.")
    print(f"{args.rows:,} rows, median of {args.runs} warm runs\n{text}\n{note}")
    print("\n".join(_table(sampled_head, sampled)) + "\n" + sampled_note)
    if not args.no_write:
        md = ["# Sketch benchmark", "",
              f"`python bench/sketch_bench.py --rows {args.rows}"
              f"{f' --runs {args.runs}' if args.runs != 3 else ''}"
              f"{' --no-heap-sample' if args.no_heap_sample else ''}`: {args.rows:,} rows, median of "
              f"{args.runs} warm runs, one backend, no parallel workers. Exact on the heap table "
              "(count(DISTINCT), percentile_cont) against approximate aggregates pushed down into "
              "the orochi table (HyperLogLog p = 14, t-digest compression 100).", "",
              *_table(head, rows)]
        md += ["", note, "", "## Sampled estimates", "",
               "Horvitz-Thompson estimates from a Bernoulli sample (orochi.sample, seed "
               f"{SAMPLE_SEED}) against the exact answers"
               + ("; the heap and orochi samples are the same rows (checked)." if not args.no_heap_sample
                  else " (the heap table's sample not taken: --no-heap-sample)."),
               "", *_table(sampled_head, sampled), "", sampled_note]
        with open(results_path(args.rows), "w") as f:
            f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
