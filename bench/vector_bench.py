"""Vector search: QPS and recall@10 at k = 10 of a columnar table through its
HNSW index, the same table searched exactly (no index), and a heap table with
the same vectors and an exact ORDER BY; index build time and size.

    python bench/vector_bench.py --rows 1000000 --data random --queries 200

Prints a Markdown table (the results go to bench/results/vector.md). One
backend, one query at a time: QPS is single-core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "vector"))
from vector_helpers import clustered_vectors, random_vectors, recall, text  # noqa: E402

from orochi_fdw.testing.cluster import PostgresCluster  # noqa: E402
from orochi_fdw.vector import reference  # noqa: E402


def load(conn, table: str, X: np.ndarray) -> None:
    with conn.cursor().copy(f"COPY {table} (id, e) FROM STDIN") as cp:
        for i, v in enumerate(X):
            cp.write_row((i, text(v)))


def run_queries(conn, table: str, Q: np.ndarray, k: int) -> tuple[float, list[list[int]]]:
    out = []
    start = time.perf_counter()
    for q in Q:
        out.append([r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY e <-> %s LIMIT {k}",
                                               [text(q)]).fetchall()])
    return len(Q) / (time.perf_counter() - start), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--data", choices=["random", "clustered"], default="clustered")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--heap-queries", type=int, default=10)
    ap.add_argument("--index-type", default="hnsw")
    args = ap.parse_args()
    n, d, k = args.rows, args.dims, 10
    X = random_vectors(n, d, 1) if args.data == "random" else clustered_vectors(n, d, 1, clusters=1000)
    rng = np.random.default_rng(2)
    Q = random_vectors(args.queries, d, 3) if args.data == "random" else \
        (X[rng.integers(0, n, args.queries)] + 0.1 * rng.normal(size=(args.queries, d))).astype(np.float32)
    truth = [reference.knn(X, q, k, "l2").tolist() for q in Q]
    rows = []
    with PostgresCluster("vbench", settings={"shared_buffers": "2GB"}) as pg:
        pg.create_database("b")
        conn = pg.connect("b", autocommit=True)
        conn.execute("SET search_path = public, orochi")
        conn.execute(f"CREATE FOREIGN TABLE t (id int, e vector({d})) SERVER orochi")
        t0 = time.perf_counter()
        load(conn, "t", X)
        load_s = time.perf_counter() - t0
        qps, got = run_queries(conn, "t", Q, k)
        rows.append(("columnar, exact scan (no index)", qps, recall(got, truth), "", ""))
        t0 = time.perf_counter()
        conn.execute("SELECT orochi.create_vector_index('t', 'e', index_type => %s)", [args.index_type])
        build = time.perf_counter() - t0
        size, efs = conn.execute("SELECT sum(file_bytes), string_agg(search_ef::text, ',')"
                                 " FROM orochi.columnar_vector_index_files").fetchone()
        qps, got = run_queries(conn, "t", Q, k)
        rows.append((f"columnar, {args.index_type} index (defaults; recorded ef {efs})", qps, recall(got, truth),
                     f"{build:.1f} s", f"{float(size or 0) / 1e6:.1f} MB"))
        for ef in (40, 100, 200, 400):
            conn.execute(f"SET orochi.hnsw_ef_search = {ef}")
            qps, got = run_queries(conn, "t", Q, k)
            rows.append((f"columnar, {args.index_type} index, ef_search {ef}", qps, recall(got, truth), "", ""))
        conn.execute("RESET orochi.hnsw_ef_search")
        conn.execute(f"CREATE TABLE h (id int, e vector({d}))")
        load(conn, "h", X)
        conn.execute("VACUUM ANALYZE h")
        qps, got = run_queries(conn, "h", Q[:args.heap_queries], k)
        rows.append(("heap, exact ORDER BY", qps, recall(got, truth[:args.heap_queries]), "", ""))
    print(f"{n:,} × {d} {args.data} vectors, k = {k}, {args.queries} queries (heap: {args.heap_queries}); "
          f"COPY into the columnar table {load_s:.1f} s\n")
    print("| search | QPS | recall@10 | build | index size |")
    print("|---|---|---|---|---|")
    for name, qps, rec, build, size in rows:
        print(f"| {name} | {qps:.1f} | {rec:.3f} | {build} | {size} |")


if __name__ == "__main__":
    main()
