"""Aggregation kernel benchmark: GROUP BY throughput on one core.

A 10M-row device-metrics column set (int32 device_id, 1,000 devices in random
order; float64 metric) aggregated as

    SELECT device_id, count(*), sum(metric), avg(metric), max(metric)
    GROUP BY device_id

by Orochi's kernels and, for scale, by two numpy formulations:

* orochi HashAggregator: the query-layer driver, fed in batches of 10,000
  rows (the default chunk group) and of 1,000,000 rows; Postgres semantics
  (float overflow checks, float8_accum for avg, NaN order for max).
* orochi kernels only: GroupTable.assign plus the group_* kernels called
  directly on 1,000,000-row batches (no driver).
* numpy bincount: the keys are already dense 0..999, so there is no hashing at
  all: np.bincount for count and sum, np.maximum.at for max. A best case numpy
  cannot reach for arbitrary keys.
* numpy sort-based: np.unique(return_inverse) to group arbitrary keys, then
  bincount for count/sum and a stable sort + np.maximum.reduceat for max.

Rows/s is input rows per second, best of --repeat runs; every method's
results are checked against the first.

    python bench/aggregate_kernel_bench.py [--rows 10000000] [--groups 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from orochi_fdw.kernels import aggregate as K
from orochi_fdw.query.aggregate import HashAggregator

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "aggregate_kernel.md")


def make_data(n: int, groups: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    device = rng.integers(0, groups, n).astype(np.int32)
    metric = np.round(50 + rng.normal(0, 10, n), 2)
    return device, metric


REQUEST = {
    "group_by": [{"kind": "column", "column": "device_id", "type_oid": 23}],
    "aggregates": [
        {"func": "count", "schema": "pg_catalog", "star": True, "distinct": False, "column": "",
         "arg_type_oid": 0, "result_type_oid": 20, "args": []},
        {"func": "sum", "schema": "pg_catalog", "star": False, "distinct": False,
         "column": "metric", "arg_type_oid": 701, "result_type_oid": 701, "args": []},
        {"func": "avg", "schema": "pg_catalog", "star": False, "distinct": False,
         "column": "metric", "arg_type_oid": 701, "result_type_oid": 701, "args": []},
        {"func": "max", "schema": "pg_catalog", "star": False, "distinct": False,
         "column": "metric", "arg_type_oid": 701, "result_type_oid": 701, "args": []},
    ],
    "outputs": [
        {"name": "g0", "kind": "group", "index": 0, "type_oid": 23},
        {"name": "a1", "kind": "aggregate", "index": 0, "type_oid": 20},
        {"name": "a2", "kind": "aggregate", "index": 1, "type_oid": 701},
        {"name": "a3", "kind": "aggregate", "index": 2, "type_oid": 701},
        {"name": "a4", "kind": "aggregate", "index": 3, "type_oid": 701},
    ],
}


def by_key(keys, count, total, avg, mx) -> dict[str, np.ndarray]:
    """Results reordered by key, for comparing methods."""
    order = np.argsort(keys, kind="stable")
    return {"key": np.asarray(keys)[order], "count": np.asarray(count)[order],
            "sum": np.asarray(total)[order], "avg": np.asarray(avg)[order],
            "max": np.asarray(mx)[order]}


def orochi_driver(device, metric, batch_rows):
    agg = HashAggregator(REQUEST)
    for lo in range(0, len(device), batch_rows):
        agg.add({"device_id": device[lo:lo + batch_rows], "metric": metric[lo:lo + batch_rows]})
    cols = agg.result().columns
    return by_key(*(cols[name].values for name in ("g0", "a1", "a2", "a3", "a4")))


def orochi_kernels(device, metric, batch_rows=1_000_000):
    table = K.GroupTable(["int"])
    cap = 1024
    counts = np.zeros(cap, np.int64)
    sums, sum_counts = np.full(cap, -0.0), np.zeros(cap, np.int64)
    avg_counts, sx, sxx = np.zeros(cap, np.int64), np.zeros(cap), np.zeros(cap)
    mx, mx_counts = np.zeros(cap), np.zeros(cap, np.int64)
    for lo in range(0, len(device), batch_rows):
        d, m = device[lo:lo + batch_rows], metric[lo:lo + batch_rows]
        gids, _ = table.assign([("fixed", d, None)])
        if table.ngroups > cap:
            raise SystemExit("more groups than the bench's state arrays")
        K.group_count(counts, gids)
        K.group_sum_float(sums, sum_counts, gids, m)
        K.group_avg_float(avg_counts, sx, sxx, gids, m)
        K.group_minmax(mx, mx_counts, gids, m, True)
    ng = table.ngroups
    avg, valid = np.empty(ng), np.empty(ng, np.uint8)
    K.finalize_avg_float(avg, valid, avg_counts[:ng], sx[:ng])
    return by_key(table.keys(0)[0], counts[:ng], sums[:ng], avg, mx[:ng])


def numpy_bincount(device, metric, groups):
    count = np.bincount(device, minlength=groups)
    total = np.bincount(device, weights=metric, minlength=groups)
    mx = np.full(groups, -np.inf)
    np.maximum.at(mx, device, metric)
    present = count > 0
    keys = np.flatnonzero(present)
    return by_key(keys, count[present], total[present], total[present] / count[present], mx[present])


def numpy_sorted(device, metric):
    keys, inverse = np.unique(device, return_inverse=True)
    count = np.bincount(inverse)
    total = np.bincount(inverse, weights=metric)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    mx = np.maximum.reduceat(metric[order], starts)
    return by_key(keys, count, total, total / count, mx)


def check(name, got, want):
    assert np.array_equal(got["key"], want["key"]), name
    assert np.array_equal(got["count"], want["count"]), name
    assert np.array_equal(got["max"], want["max"]), name
    # sums in another order (bincount) differ in the last bits
    assert np.allclose(got["sum"], want["sum"], rtol=1e-9, atol=0), name
    assert np.allclose(got["avg"], want["avg"], rtol=1e-9, atol=0), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", default=RESULTS, help="where to write the markdown table")
    args = parser.parse_args()

    device, metric = make_data(args.rows, args.groups)
    methods = [
        ("orochi HashAggregator, 10k-row batches", lambda: orochi_driver(device, metric, 10_000)),
        ("orochi HashAggregator, 1M-row batches", lambda: orochi_driver(device, metric, 1_000_000)),
        ("orochi kernels only, 1M-row batches", lambda: orochi_kernels(device, metric)),
        ("numpy bincount (dense keys, no hashing)", lambda: numpy_bincount(device, metric, args.groups)),
        ("numpy sort-based (np.unique + reduceat)", lambda: numpy_sorted(device, metric)),
    ]
    rows = []
    reference = None
    for name, run in methods:
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = run()
            best = min(best, time.perf_counter() - start)
        if reference is None:
            reference = result
        else:
            check(name, result, reference)
        rows.append((name, best))

    base = rows[0][1]
    header = f"{'method':<42} {'seconds':>8} {'M rows/s':>9} {'vs driver 10k':>14}"
    lines = [f"GROUP BY device_id: count(*), sum, avg, max of a float8 metric; "
             f"{args.rows:,} rows, {args.groups:,} groups, one core, best of {args.repeat}",
             "", header, "-" * len(header)]
    for name, secs in rows:
        lines.append(f"{name:<42} {secs:>8.3f} {args.rows / secs / 1e6:>9.1f} {base / secs:>13.2f}x")
    print("\n".join(lines))

    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        f.write("# Aggregation kernels\n\n`python bench/aggregate_kernel_bench.py`\n\n```\n")
        f.write("\n".join(lines) + "\n```\n")
    print(f"written to {os.path.relpath(args.results)}")


if __name__ == "__main__":
    main()
