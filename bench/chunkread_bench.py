"""Column chunk read benchmark: the read layer of a columnar scan alone,
from "these chunk groups of this stripe are wanted" to decoded arrays.

One stripe of lineitem-like columns (--rows rows, 10,000-row chunk groups;
the codecs the writer picks: BITPACK integers, a date and a sorted key coded
RLE, random keys in short runs coded RLE, a DECIMAL float), page-cached, read every column of every chunk group:

- "group by group": ``StripeReader.read_chunk`` per column per chunk group
  (the scan's read before runs);
- "runs of N": ``StripeReader.read_column`` of N consecutive chunk groups
  per call, rows back to back (fewer calls; a scan still reads group by
  group: see docs/columnar.md).

Figures are column chunks (one column of one 10,000-row chunk group) per
second on one core, best of --repeat runs, checksums verified.

    python bench/chunkread_bench.py [--rows 1000000] [--repeat 5] [--title T] [--append]

Prints the table and writes bench/results/chunkread.md (``--append``: adds
its table, e.g. of another release's package read with the same script).
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

import numpy as np

from orochi_fdw.storage.stripe_format import StripeReader, StripeWriter

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "chunkread.md")


def make_columns(n: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "l_quantity (int64 1..50)": ("int64", rng.integers(1, 51, n)),
        "l_extendedprice (int64 cents)": ("int64", rng.integers(90_000, 10_000_000, n)),
        "l_discount (int64 0..10)": ("int64", rng.integers(0, 11, n)),
        "l_shipdate (date, sorted)": ("date", np.sort(rng.integers(8_000, 10_500, n)).astype(np.int32)),
        "l_orderkey (int32, runs of ~4)": ("int32", (np.arange(n) // 4).astype(np.int32)),
        "l_tax (float64, 2 decimals)": ("float64", np.round(rng.random(n) * 0.08, 2)),
        "o_custkey (int64, runs of 1-7)": ("int64", np.repeat(rng.integers(0, 10**9, n // 2),
                                                              rng.integers(1, 8, n // 2))[:n]),
    }


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--results", default=RESULTS, help="where to write the markdown results")
    ap.add_argument("--title", default="", help="a heading for this run's table (which code it read with)")
    ap.add_argument("--append", action="store_true", help="add this run's table to the results file")
    args = ap.parse_args()
    cols = make_columns(args.rows)
    names = {title: f"c{i}" for i, title in enumerate(cols)}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.stripe")
        with StripeWriter(path, {names[t]: kind for t, (kind, _v) in cols.items()}) as w:
            w.write_batch({names[t]: (v, None) for t, (_k, v) in cols.items()})
        lines = []
        with StripeReader(path) as r:
            groups = list(range(len(r.chunk_groups)))
            for title, (kind, _v) in cols.items():
                c = names[title]
                codec = r.metadata.chunk(c, 0).codec

                def by_group(c=c):
                    for g in groups:
                        r.read_chunk(c, g)

                row = [title, f"{codec}", len(groups) / best(by_group, args.repeat)]
                for n in (4, 16):
                    def by_runs(c=c, n=n):
                        for lo in range(0, len(groups), n):
                            r.read_column(c, groups[lo:lo + n])

                    row.append(len(groups) / best(by_runs, args.repeat))
                lines.append(row)
    load = os.getloadavg()
    head = f"{'column':<32}{'codec':>6}{'group by group':>16}{'runs of 4':>12}{'runs of 16':>12}"
    print(f"{args.rows:,} rows, 10,000-row chunk groups; column chunks per second, one core, best of "
          f"{args.repeat}; load average {load[0]:.2f}")
    print(head)
    print("-" * len(head))
    for title, codec, a, b, c in lines:
        print(f"{title:<32}{codec:>6}{a:>16,.0f}{b:>12,.0f}{c:>12,.0f}")
    with open(args.results, "a" if args.append else "w") as f:
        if not args.append:
            f.write("# Column chunk reads\n\n")
        if args.title:
            f.write(f"## {args.title}\n\n")
        f.write(f"`python bench/chunkread_bench.py --rows {args.rows} --repeat {args.repeat}`, "
                f"{datetime.date.today()}, one core, load average {load[0]:.2f}. Column chunks "
                "(one column of one 10,000-row chunk group) read, checksummed and decoded per second; "
                "codec ids of docs/FORMAT.md (1 BITPACK, 2 DELTA, 4 RLE, 8 DECIMAL).\n\n")
        f.write("| column | codec | group by group | runs of 4 | runs of 16 |\n|---|---:|---:|---:|---:|\n")
        for title, codec, a, b, c in lines:
            f.write(f"| {title} | {codec} | {a:,.0f} | {b:,.0f} | {c:,.0f} |\n")
        f.write("\n")


if __name__ == "__main__":
    main()
