"""Vector search: QPS and recall@10 at k = 10 of a columnar table through its
HNSW index (default settings, then fixed ef_search values), the same table
searched exactly (no index), and a heap table with the same vectors and an
exact ORDER BY; index build time and size.

    python bench/vector_bench.py --rows 1000000 --data clustered random --out bench/results/vector.md

With ``--keep`` the cluster's folder is kept (its path printed) and
``--reuse FOLDER`` runs the queries again on it (same ``--rows`` and
``--data``, one data set), without loading the rows or building the index:
the build's time is then the one the index files' catalog rows recorded,
and the exact scan without an index is not run.

Prints a Markdown section per data set (and appends it to ``--out``), with the
machine's load average at the start and the end of the run. One backend, one
query at a time, no parallel workers: QPS is single-core (the index build may
use both cores). Beside the wall-clock QPS, the backend's CPU per query (from
/proc) and the QPS one core would give spending the backend's and this
client's CPU per query: on a shared, loaded machine the wall clock also
counts the time other processes ran. Recall is against the exact answer
computed here with numpy.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time

import numpy as np
from psycopg import sql

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "vector"))
from vector_helpers import clustered_vectors, random_vectors, recall, text  # noqa: E402

from orochi_fdw.testing.cluster import PostgresCluster  # noqa: E402
from orochi_fdw.vector import reference  # noqa: E402

K = 10


def load(conn, table: str, X: np.ndarray, batch: int = 20_000) -> None:
    """COPY (id, e) in binary: int4 id, vector in pgvector's binary form."""
    n, d = X.shape
    row = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i4"), ("l2", ">i4"), ("dim", ">i2"),
                    ("unused", ">i2"), ("v", ">f4", (d,))])
    stmt = sql.SQL("COPY {} (id, e) FROM STDIN (FORMAT binary)").format(sql.Identifier(table))
    with conn.cursor().copy(stmt) as cp:
        cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            a = np.zeros(hi - lo, dtype=row)
            a["nf"], a["l1"], a["id"], a["l2"], a["dim"] = 2, 4, np.arange(lo, hi), 4 + 4 * d, d
            a["v"] = X[lo:hi]
            cp.write(a.tobytes())
        cp.write(struct.pack(">h", -1))


def exact_truth(X: np.ndarray, Q: np.ndarray, k: int) -> list[list[int]]:
    """The exact k nearest (l2) of each query: candidates by a float32 matrix
    product, re-ranked by the reference distances (the kernels' arithmetic)."""
    sq = np.einsum("ij,ij->i", X, X)
    out = []
    for q in Q:
        approx = sq - 2.0 * (X @ q)
        cand = np.argpartition(approx, 200)[:200]
        out.append(reference.knn(X[cand], q, k, "l2", ids=cand).tolist())
    return out


def backend_cpu(conn) -> float:
    """CPU seconds the connection's backend has used: from the scheduler's
    count in nanoseconds (/proc/PID/schedstat) where the kernel keeps it,
    else user + system time in clock ticks (10 ms: 0.05 ms a query over
    200 queries)."""
    pid = conn.info.backend_pid
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: CPU per query of the last run_queries: (backend, this client)
LAST_CPU = [0.0, 0.0]


def run_queries(conn, table: str, Q: np.ndarray) -> tuple[float, list[list[int]]]:
    """QPS (wall clock) and the answers; LAST_CPU gets the backend's and the
    client's CPU seconds per query (what one core would spend: on a shared,
    loaded machine the wall clock also counts the time others ran)."""
    stmt = sql.SQL("SELECT id FROM {} ORDER BY e <-> %s LIMIT {}").format(sql.Identifier(table), sql.Literal(K))
    out = []
    texts = [text(q) for q in Q]        # the client's input, made before the clock starts
    cpu0, own0 = backend_cpu(conn), time.process_time()
    start = time.perf_counter()
    for t in texts:
        out.append([r[0] for r in conn.execute(stmt, [t]).fetchall()])
    wall = time.perf_counter() - start
    LAST_CPU[0] = (backend_cpu(conn) - cpu0) / len(Q)
    LAST_CPU[1] = (time.process_time() - own0) / len(Q)
    return len(Q) / wall, out


def cpu_cells() -> tuple[str, str]:
    """(backend CPU ms per query, QPS of one core spending backend + client CPU)."""
    total = LAST_CPU[0] + LAST_CPU[1]
    return f"{LAST_CPU[0] * 1e3:.3f}", (f"{1.0 / total:.0f}" if total > 0 else "")


def how_searched(conn, table: str, q) -> str:
    stmt = sql.SQL("EXPLAIN ANALYZE SELECT id FROM {} ORDER BY e <-> %s LIMIT {}").format(
        sql.Identifier(table), sql.Literal(K))
    lines = [r[0] for r in conn.execute(stmt, [text(q)]).fetchall()]
    return next((ln.split("Vector Search:", 1)[1].strip() for ln in lines if "stripe(s) by index" in ln), "?")


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def kept_cluster(folder: str, settings: dict) -> PostgresCluster:
    """The cluster a run with ``--keep`` left in ``folder``."""
    pg = PostgresCluster("vbench", settings=settings, keep=True)
    os.rmdir(pg.socket_dir)
    os.rmdir(pg.base)
    pg.base = folder
    pg.datadir = os.path.join(folder, "data")
    pg.socket_dir = os.path.join(folder, "sock")
    pg.logfile = os.path.join(folder, "postgres.log")
    pg.initialized = True
    return pg


def bench(kind: str, n: int, d: int, nq: int, exact_q: int, heap_q: int, efs: list[int],
          keep: bool = False, reuse: str | None = None) -> str:
    load_start = loadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    both = random_vectors(n + nq, d, 1) if kind == "random" else clustered_vectors(n + nq, d, 1, clusters=1000)
    X, Q = both[:n], both[n:]              # queries held out from the data's distribution
    truth = exact_truth(X, Q, K)
    settings = {"shared_buffers": "2GB", "max_parallel_workers_per_gather": 0, "work_mem": "256MB"}
    pg = kept_cluster(reuse, settings) if reuse else PostgresCluster("vbench", settings=settings, keep=keep)
    if keep:
        print(f"cluster kept in {pg.base}", file=sys.stderr, flush=True)
    with pg:
        try:
            return _bench_in(pg, kind, n, d, X, Q, truth, exact_q, heap_q, efs, load_start, started, reuse)
        except Exception:
            print(pg.log_tail(40), file=sys.stderr)
            raise


def _bench_in(pg, kind, n, d, X, Q, truth, exact_q, heap_q, efs, load_start, started, reuse=None) -> str:
    nq = len(Q)
    rows = []
    notes = []
    if not reuse:
        pg.create_database("b")
    conn = pg.connect("b", autocommit=True)
    conn.execute("SET search_path = public, orochi")
    if reuse:
        load_s = float("nan")
        build = float(conn.execute("SELECT max(build_ms) FROM orochi.columnar_vector_index_files").fetchone()[0]) / 1e3
    else:
        conn.execute(f"CREATE FOREIGN TABLE t (id int, e vector({d})) SERVER orochi OPTIONS (delta_row_limit '0')")
        t0 = time.perf_counter()
        load(conn, "t", X)
        load_s = time.perf_counter() - t0
    stripes = conn.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE relid = 't'::regclass"
                           ).fetchone()[0]
    if not reuse:
        run_queries(conn, "t", Q[:1])      # warm the backend
        qps, got = run_queries(conn, "t", Q[:exact_q])
        rows.append((f"columnar, exact scan (no index; {exact_q} queries)", qps, *cpu_cells(),
                     recall(got, truth[:exact_q]), "", ""))
        t0 = time.perf_counter()
        conn.execute("SELECT orochi.create_vector_index('t', 'e')")      # hnsw, l2, the default M and ef_construction
        build = time.perf_counter() - t0
    size, recorded = conn.execute("SELECT sum(file_bytes), string_agg(search_ef::text, ',')"
                                  " FROM orochi.columnar_vector_index_files").fetchone()
    files = conn.execute("SELECT count(DISTINCT file_path) FROM orochi.columnar_vector_index_files").fetchone()[0]
    per_m = 1e6 / n
    run_queries(conn, "t", Q[:1])
    # the first pass of the backend over the index maps the file's pages
    # into it (a page fault each: ~800 MB per 1M vectors), the later ones
    # run on pages already mapped, as a long-lived connection does
    qps, got = run_queries(conn, "t", Q)
    rows.append(("columnar, hnsw index, default settings, the backend's first pass", qps, *cpu_cells(),
                 recall(got, truth), "", ""))
    qps, got = run_queries(conn, "t", Q)
    rows.append((f"columnar, hnsw index, default settings (recorded ef {recorded})", qps, *cpu_cells(), recall(got, truth),
                 f"{build:.1f} s ({build * per_m:.0f} s per 1M)",
                 f"{float(size or 0) / 1e6:.1f} MB ({float(size or 0) / 1e6 * per_m:.0f} MB per 1M)"))
    notes.append(f"default settings: {how_searched(conn, 't', Q[0])}")
    for ef in efs:
        conn.execute(sql.SQL("SET orochi.hnsw_ef_search = {}").format(sql.Literal(ef)))
        qps, got = run_queries(conn, "t", Q)
        rows.append((f"columnar, hnsw index, ef_search {ef}", qps, *cpu_cells(), recall(got, truth), "", ""))
    conn.execute("RESET orochi.hnsw_ef_search")
    if conn.execute("SELECT to_regclass('h') IS NULL").fetchone()[0]:
        conn.execute(f"CREATE TABLE h (id int, e vector({d}))")
        load(conn, "h", X)
        conn.execute("VACUUM ANALYZE h")
    run_queries(conn, "h", Q[:1])
    qps, got = run_queries(conn, "h", Q[:heap_q])
    rows.append((f"heap, exact ORDER BY ({heap_q} queries)", qps, *cpu_cells(), recall(got, truth[:heap_q]), "", ""))
    out = [f"### {n:,} × {d} {kind} vectors\n",
           f"Run {started}; load average (1, 5, 15 min) {load_start} at the start, {loadavg()} at the end. "
           f"k = {K}, {nq} held-out queries; "
           + (f"the table and index of an earlier run (build time from its catalog rows), "
              if reuse else f"COPY (binary) into the columnar table {load_s:.1f} s, ")
           + f"{stripes} stripe(s), {files} index file(s).\n",
           "| search | QPS | backend CPU ms/query | one-core QPS (CPU) | recall@10 | build | index size |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {name} | {qps:.1f} | {cpu} | {cq} | {rec:.3f} | {b} | {s} |" for name, qps, cpu, cq, rec, b, s in rows]
    out += [""] + [f"EXPLAIN ANALYZE, {note}" for note in notes] + [""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--data", choices=["random", "clustered"], nargs="+", default=["clustered"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=20)
    ap.add_argument("--heap-queries", type=int, default=10)
    ap.add_argument("--ef", type=int, nargs="*", default=[40, 100, 200, 400, 800])
    ap.add_argument("--out", help="append the results to this Markdown file")
    ap.add_argument("--keep", action="store_true", help="keep the cluster's folder (printed)")
    ap.add_argument("--reuse", metavar="FOLDER", help="run the queries on a kept cluster (one data set)")
    args = ap.parse_args()
    for kind in args.data:
        section = bench(kind, args.rows, args.dims, args.queries, args.exact_queries, args.heap_queries, args.ef,
                        keep=args.keep, reuse=args.reuse)
        print(section, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write("\n" + section)


if __name__ == "__main__":
    main()
