"""Per-stripe HyperLogLog sketches (table option ``stripe_sketches``): what
they cost when stripes are written and what they save when
``orochi.approx_count_distinct`` runs over the whole table (issue 19,
"per-stripe HyperLogLog sketches").

One Postgres cluster, one session, no parallel workers. The rows of
bench/sketch_bench.py (2M by default: ``user_id int8``, ``region int4``,
``latency float8``) plus a text column ``tag`` (``'t' || user_id % 50000``)
are loaded into a heap table (the anchor, and the source) and then, timed,
into two columnar tables, one without and one with ``stripe_sketches``
(``INSERT INTO ... SELECT * FROM heap``; median of --loads loads, each
into a new table). Then each table answers
``orochi.approx_count_distinct`` of each column (median of --runs warm
runs): the heap table through the aggregate's transition function, the
plain columnar table by reading its stripes, the one with sketches from
them (its EXPLAIN "Stripes Answered From Sketches" line is checked). The
three must give the same counts.

    python bench/stripe_sketch_bench.py [--rows N] [--runs N] [--loads N] [--no-write]
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
from sketch_bench import _table, load_heap, log, timed  # noqa: E402

RESULTS = os.path.join(HERE, "results", "stripe_sketches.md")
SETTINGS = {"shared_buffers": "1GB", "max_parallel_workers_per_gather": 0, "jit": "off",
            "work_mem": "512MB", "max_wal_size": "8GB"}
COLUMNS = ("user_id", "region", "latency", "tag")
TABLE = "(user_id int8, region int4, latency float8, tag text)"


def load_columnar(conn, name: str, sketches: bool, loads: int) -> float:
    """Median seconds of loading the heap's rows into a new columnar table;
    the last one stays as ``name``."""
    opts = " OPTIONS (stripe_sketches 'true')" if sketches else ""
    times = []
    for i in range(loads):
        conn.execute(f"DROP FOREIGN TABLE IF EXISTS {name}")
        conn.execute(f"CREATE FOREIGN TABLE {name} {TABLE} SERVER orochi{opts}")
        t0 = time.perf_counter()
        conn.execute(f"INSERT INTO {name} SELECT * FROM heap")
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    load_avg = os.getloadavg()
    out = []
    with PostgresCluster("bench-stripesketch", settings=SETTINGS) as pg:
        pg.create_database("bench")
        with pg.connect("bench", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS orochi")
            load_heap(conn, args.rows)
            conn.execute("ALTER TABLE heap ADD COLUMN tag text")
            conn.execute("UPDATE heap SET tag = 't' || (user_id % 50000)")
            conn.execute("VACUUM (FREEZE, ANALYZE) heap")
            t_plain = load_columnar(conn, "plain", False, args.loads)
            t_sketch = load_columnar(conn, "sketched", True, args.loads)
            stripes = conn.execute("SELECT count(*) FROM orochi.columnar_stripes "
                                   "WHERE relid = 'sketched'::regclass").fetchone()[0]
            size = conn.execute("SELECT sum(length(hll)) FROM orochi.columnar_stripe_columns "
                                "WHERE relid = 'sketched'::regclass").fetchone()[0]
            log(f"load: {t_plain:.2f} s without sketches, {t_sketch:.2f} s with "
                f"({stripes} stripes, {size} bytes of sketches)")
            for column in COLUMNS:
                q = f"SELECT orochi.approx_count_distinct({column}) FROM {{t}}"
                plan = "\n".join(r[0] for r in conn.execute(
                    "EXPLAIN (ANALYZE, COSTS OFF) " + q.format(t="sketched")).fetchall())
                answered = f"Stripes Answered From Sketches: {stripes}" in plan
                res = {t: timed(conn, q.format(t=t), args.runs) for t in ("heap", "plain", "sketched")}
                same = len({repr(r[1]) for r in res.values()}) == 1
                out.append([column, f"{res['heap'][0] * 1000:.0f}", f"{res['plain'][0] * 1000:.1f}",
                            f"{res['sketched'][0] * 1000:.1f}",
                            f"{res['plain'][0] / res['sketched'][0]:.1f}x",
                            "yes" if answered else "NO", "same" if same else "DIFFER",
                            str(res["sketched"][1][0][0])])
                log(f"{column}: heap {res['heap'][0] * 1000:.0f} ms, plain {res['plain'][0] * 1000:.1f} ms, "
                    f"sketches {res['sketched'][0] * 1000:.1f} ms ({'same' if same else 'DIFFERENT'})")
    load_end = os.getloadavg()
    load_text = (f"load average at start {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}, "
                 f"at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    head = ["column", "heap (ms)", "columnar, reading (ms)", "columnar, sketches (ms)",
            "reading / sketches", "all stripes from sketches", "results", "approx_count_distinct"]
    table = _table(head, out)
    cost = f"{(t_sketch / t_plain - 1) * 100:+.0f}%"
    summary = (f"Load (INSERT ... SELECT of {args.rows:,} rows, median of {args.loads}): "
               f"{t_plain:.2f} s without sketches, {t_sketch:.2f} s with ({cost}); {stripes} stripes, "
               f"{size:,} bytes of sketches in the catalog.")
    print(f"{args.rows:,} rows, median of {args.runs} warm runs, {load_text}")
    print(summary)
    print("\n".join(table))
    if not args.no_write:
        md = ["# Per-stripe HyperLogLog sketches", "",
              f"`python bench/stripe_sketch_bench.py --rows {args.rows}`: one session, no parallel "
              f"workers; 2-core shared machine, {load_text}.", "",
              summary, "", *table, ""]
        with open(RESULTS, "w") as f:
            f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
