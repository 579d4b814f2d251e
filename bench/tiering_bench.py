"""The tiering benchmark: a hypertable of device metrics with most of its
chunks moved to S3-compatible object storage (SeaweedFS's ``weed mini``, a
real server in its own process on loopback), against the same chunks hot
(local stripe files) and the same rows in a heap table.

One Postgres cluster (fsync on, jit off, no parallel workers). Rows::

    ts timestamptz, device_id int, cpu float8, mem float8, temp float8, status text

``--devices`` devices every 10 s; 1-day chunks. Measured:

1. the move: ``orochi.tier_chunk`` of every chunk but the newest two (upload,
   verify, catalog), MB/s of stripe files; and ``orochi.untier_chunk`` back.
2. queries (pushed-down aggregates, a top-N, a narrow time range), each
   run: hot (every chunk local), cold with an empty cache (a new session:
   the read cache and the footers are per backend), cold with a warm cache
   (the same session again), and on the heap table. From EXPLAIN ANALYZE of
   the empty-cache run: the bytes fetched from object storage against the
   bytes of the column chunks the query needs (the catalog's compressed
   bytes of its columns over the cold stripes it reads; target <= 1.2x).

Prints the tables and writes bench/results/tiering.md.

    python bench/tiering_bench.py [--rows N] [--devices N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import time

from orochi_fdw.testing.cluster import PostgresCluster
from orochi_fdw.testing.services import SeaweedS3

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "tiering.md")

SETTINGS = {
    "shared_buffers": "1GB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "64MB",
    "max_wal_size": "32GB",
    "checkpoint_timeout": "1h",
}

COLUMNS = "ts timestamptz NOT NULL, device_id int, cpu float8, mem float8, temp float8, status text"
SAMPLE_SECONDS = 10
T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)

#: the same rows in both tables (no random(): hashes of the row number)
_ROWS = """
SELECT %s::timestamptz + (i / {devices}) * interval '{step} seconds',
       (i %% {devices})::int,
       abs(hashint8(i) %% 10000) / 100.0,
       floor((50 + 20 * sin((i / {devices}) / 360.0) + abs(hashint8(-i) %% 200) / 100.0) * 100) / 100,
       30 + ((i / {devices} + (i %% {devices}) * 7) %% 200) / 10.0,
       CASE WHEN hashint8(i) %% 100 = 0 THEN 'warn' ELSE 'ok' END
  FROM generate_series(%s::bigint, %s::bigint - 1) i
"""

#: label -> (query on {t}, the columns it needs); {lo}/{hi}: literal times
QUERIES = {
    "avg/max per device, 3 cold days": (
        "SELECT device_id, avg(cpu), max(temp) FROM {t} WHERE ts >= {lo3} AND ts < {hi3} GROUP BY device_id",
        ("ts", "device_id", "cpu", "temp")),
    "sum of one column, every row": ("SELECT sum(mem) FROM {t}", ("mem",)),
    "daily buckets, 2 columns, cold days": (
        "SELECT orochi.time_bucket('1 day', ts), count(*), avg(cpu) FROM {t} WHERE ts < {cold_end} GROUP BY 1",
        ("ts", "cpu")),
    "top 10 by cpu, one cold day": (
        "SELECT ts, device_id, cpu FROM {t} WHERE ts >= {lo1} AND ts < {hi1} ORDER BY cpu DESC, ts LIMIT 10",
        ("ts", "device_id", "cpu")),
    "one hour, every column": (
        "SELECT * FROM {t} WHERE ts >= {lo1} + interval '5 hours' AND ts < {lo1} + interval '6 hours'",
        ("ts", "device_id", "cpu", "mem", "temp", "status")),
}


#: the first query of each new session before the measured one: it starts
#: Python and the S3 client (the import of boto3) on one chunk group of the
#: first day, so that "empty cache" measures the reads, not the session's start
WARMUP = "SELECT max(cpu) FROM metrics WHERE ts < timestamptz '2024-01-01 00:00:10+00'"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(conn, sql: str, params=None) -> float:
    start = time.perf_counter()
    cur = conn.execute(sql, params)
    if cur.description is not None:
        cur.fetchall()
    return time.perf_counter() - start


def lit(ts: datetime.datetime) -> str:
    return f"timestamptz '{ts.isoformat()}'"


def same(conn, sql: str, names: dict) -> bool:
    """The hypertable's answer equals the heap table's (floats to 10 digits:
    sums in another order)."""
    def norm(rows):
        return sorted(tuple(f"{v:.10g}" if isinstance(v, float) else str(v) for v in r) for r in rows)
    return norm(conn.execute(sql.format(t="metrics", **names)).fetchall()) == \
        norm(conn.execute(sql.format(t="metrics_heap", **names)).fetchall())


def fetched_bytes(conn, sql: str) -> tuple[float, int, int, int]:
    """(seconds, bytes fetched, requests, cache hits) of one EXPLAIN ANALYZE run."""
    start = time.perf_counter()
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql).fetchall())
    seconds = time.perf_counter() - start
    got = [(int(a), int(b), int(c)) for a, b, c in re.findall(
        r"Object Storage: \d+ objects, (\d+) requests, (\d+) bytes fetched, cache hits (\d+)", plan)]
    return seconds, sum(g[1] for g in got), sum(g[0] for g in got), sum(g[2] for g in got)


def cold_footers(conn, s3) -> list:
    """The parsed footers of every cold stripe (read from the object store
    here, outside PostgreSQL)."""
    from orochi_fdw.storage import stripe_format as sf

    client = s3.client()
    out = []
    for path, size in conn.execute("SELECT file_path, file_bytes FROM orochi.columnar_stripes"
                                   " WHERE file_path LIKE 'tier:%'").fetchall():
        key = path.split("/", 1)[1]
        trailer = client.get_object(Bucket="orochi-bench", Key=key,
                                    Range=f"bytes={size - sf.TRAILER.size}-{size - 1}")["Body"].read()
        flen = sf.TRAILER.unpack(trailer)[0]
        start = size - sf.TRAILER.size - flen
        footer = client.get_object(Bucket="orochi-bench", Key=key,
                                   Range=f"bytes={start}-{start + flen - 1}")["Body"].read()
        out.append(sf._parse_footer(footer, key, size, start))
    return out


_EPOCH_2000 = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


def needed_bytes(footers: list, columns: tuple[str, ...], lo: datetime.datetime | None,
                 hi: datetime.datetime | None) -> int:
    """The stored bytes of ``columns`` in the chunk groups of cold stripes
    whose time range meets [lo, hi): what a scan must read at the least."""
    def us(t):
        return None if t is None else int((t - _EPOCH_2000).total_seconds() * 1_000_000)
    lo_us, hi_us = us(lo), us(hi)
    total = 0
    for meta in footers:
        ts = meta.column_index("ts")
        for g, chunks in enumerate(meta.chunks):
            st = chunks[ts].stats
            if (lo_us is not None and st.max < lo_us) or (hi_us is not None and st.min >= hi_us):
                continue
            total += sum(c.length for c in chunks if c.column in columns)
    return total


def run(rows: int, devices: int, figures: dict) -> dict[str, list[tuple]]:
    pg = PostgresCluster("tierbench", settings=SETTINGS)
    s3 = SeaweedS3()
    tables: dict[str, list[tuple]] = {"move": [], "query": []}
    try:
        pg.start()
        s3.start()
        s3.client().create_bucket(Bucket="orochi-bench")
        pg.create_database("bench")
        conn = pg.connect("bench", autocommit=True)
        conn.execute(f"CREATE FOREIGN TABLE metrics ({COLUMNS}) SERVER orochi")
        conn.execute("SELECT orochi.create_hypertable('metrics', 'ts', chunk_time_interval => interval '1 day')")
        conn.execute(f"CREATE TABLE metrics_heap ({COLUMNS})")
        conn.execute("SELECT orochi.create_storage_target('bench', %s, 'orochi-bench', 'pg', 'us-east-1',"
                     " jsonb_build_object('access_key_id', 'k', 'secret_access_key', 's'))", (s3.endpoint,))
        per_day = devices * 86400 // SAMPLE_SECONDS
        days = -(-rows // per_day)
        figures.update(days=days, per_day=per_day)
        log(f"load: {rows:,} rows, {days} days of {per_day:,} rows ...")
        t_load = {"metrics": 0.0, "metrics_heap": 0.0}
        batch = 2_000_000
        for first in range(0, rows, batch):
            last = min(rows, first + batch)
            for t in t_load:
                t_load[t] += timed(conn, f"INSERT INTO {t} " + _ROWS.format(devices=devices, step=SAMPLE_SECONDS),
                                   (T0, first, last))
        conn.execute("VACUUM ANALYZE metrics_heap")
        figures["load"] = {t: rows / s for t, s in t_load.items()}
        chunks = [r[0] for r in conn.execute("SELECT chunk_name FROM orochi.chunks ORDER BY range_start").fetchall()]
        cold = chunks[:-2]
        cold_end = conn.execute("SELECT range_end FROM orochi.chunks WHERE chunk_name = %s", (cold[-1],)).fetchone()[0]
        lo3, hi3 = T0 + datetime.timedelta(days=1), T0 + datetime.timedelta(days=4)
        lo1, hi1 = T0 + datetime.timedelta(days=2), T0 + datetime.timedelta(days=3)
        names = dict(lo3=lit(lo3), hi3=lit(hi3), lo1=lit(lo1), hi1=lit(hi1), cold_end=lit(cold_end))
        ranges = {"avg/max per device, 3 cold days": (lo3, hi3), "sum of one column, every row": (None, None),
                  "daily buckets, 2 columns, cold days": (None, cold_end),
                  "top 10 by cpu, one cold day": (lo1, hi1),
                  "one hour, every column": (lo1 + datetime.timedelta(hours=5), lo1 + datetime.timedelta(hours=6))}
        figures["stripes"] = conn.execute("SELECT count(*), sum(file_bytes) FROM orochi.columnar_stripes").fetchone()
        figures["chunks"] = (len(chunks), len(cold))

        log("hot queries ...")
        hot = {}
        heap = {}
        for label, (sql, _) in QUERIES.items():
            conn.execute(sql.format(t="metrics", **names)).fetchall()
            hot[label] = statistics.median(timed(conn, sql.format(t="metrics", **names)) for _ in range(3))
            conn.execute(sql.format(t="metrics_heap", **names)).fetchall()
            heap[label] = statistics.median(timed(conn, sql.format(t="metrics_heap", **names)) for _ in range(3))
            assert same(conn, sql, names), label

        log(f"tier {len(cold)} chunks ...")
        moved = int(conn.execute("SELECT coalesce(sum(file_bytes), 0) FROM orochi.columnar_stripes s"
                                 " JOIN orochi.chunks c USING (chunk_id) WHERE c.chunk_name = ANY (%s)",
                                 (cold,)).fetchone()[0])
        start = time.perf_counter()
        for c in cold:
            conn.execute("SELECT orochi.tier_chunk(%s, 'bench')", (c,))
        t_tier = time.perf_counter() - start
        conn.execute("SELECT * FROM orochi.vacuum()")  # the local files go
        tables["move"].append(("tier_chunk (upload, verify, catalog)", len(cold), moved / 1e6, t_tier,
                               moved / 1e6 / t_tier))

        footers = cold_footers(conn, s3)
        log("cold queries ...")
        warmup: list[float] = []
        for label, (sql, cols) in QUERIES.items():
            q = sql.format(t="metrics", **names)
            with pg.connect("bench", autocommit=True) as fresh:  # empty cache
                fresh.execute(WARMUP)
                _, nbytes, requests, _ = fetched_bytes(fresh, q)
            with pg.connect("bench", autocommit=True) as fresh:
                warmup.append(timed(fresh, WARMUP))
                t_empty_plain = timed(fresh, q)
                t_warm = statistics.median(timed(fresh, q) for _ in range(3))
                _, warm_bytes, _, hits = fetched_bytes(fresh, q)
            need = needed_bytes(footers, cols, *ranges[label])
            tables["query"].append((label, hot[label] * 1000, t_empty_plain * 1000, t_warm * 1000,
                                    heap[label] * 1000, nbytes / 1e6, need / 1e6,
                                    (nbytes / need) if need else float("nan"), requests, warm_bytes, hits))
            assert same(conn, sql, names), label

        figures["warmup"] = statistics.median(warmup)
        log("untier ...")
        start = time.perf_counter()
        for c in cold:
            conn.execute("SELECT orochi.untier_chunk(%s)", (c,))
        t_untier = time.perf_counter() - start
        tables["move"].append(("untier_chunk (download, verify, write, WAL)", len(cold), moved / 1e6, t_untier,
                               moved / 1e6 / t_untier))
        conn.close()
        return tables
    except Exception:
        log(pg.log_tail(60))
        log(s3.log_tail(20))
        raise
    finally:
        s3.cleanup()
        pg.cleanup()


def render(args, figures: dict, tables: dict, load: tuple) -> str:
    out = ["# Tiering benchmark", "",
           f"`python bench/tiering_bench.py --rows {args.rows} --devices {args.devices}` on "
           f"{datetime.date.today().isoformat()}: 2 cores shared with other work, load average "
           f"{load[0]:.2f} before / {load[1]:.2f} after the run. Object store: SeaweedFS (`weed mini`) "
           "on loopback, in its own process; PostgreSQL 15, fsync on.", "",
           f"{args.rows:,} rows in {figures['days']} daily chunks ({figures['per_day']:,} rows a day), "
           f"{figures['stripes'][0]} stripes, {int(figures['stripes'][1]) / 1e6:.1f} MB of stripe files; "
           f"{figures['chunks'][1]} of {figures['chunks'][0]} chunks moved to object storage. "
           f"Load: hypertable {figures['load']['metrics']:,.0f} rows/s, heap {figures['load']['metrics_heap']:,.0f} rows/s.",
           "", f"The first query of each new session that reads object storage (one chunk group of the first "
           f"day: it starts Python and imports boto3) took {figures['warmup'] * 1000:.0f} ms (median); the "
           "empty-cache runs below come after it, in the same session.",
           "", "## Moves", "",
           "| move | chunks | MB | seconds | MB/s |", "|---|---:|---:|---:|---:|"]
    for name, n, mb, s, rate in tables["move"]:
        out.append(f"| {name} | {n} | {mb:.1f} | {s:.2f} | {rate:.1f} |")
    out += ["", "## Queries", "",
            "Milliseconds (hot and warm: median of 3). *fetched*: bytes read from object storage by the "
            "empty-cache run (footers included); *needed*: the stored bytes of the query's columns in the "
            "chunk groups of cold stripes whose time range meets the query's (from the footers); *ratio*: fetched / needed (target ≤ 1.2).", "",
            "| query | hot | cold, empty cache | cold, warm cache | heap | fetched MB | needed MB | ratio "
            "| requests | warm: bytes fetched | warm: cache hits |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (label, hot, empty, warm, heap, fetched, need, ratio, requests, wbytes, hits) in tables["query"]:
        out.append(f"| {label} | {hot:.0f} | {empty:.0f} | {warm:.0f} | {heap:.0f} | {fetched:.2f} | {need:.2f} "
                   f"| {ratio:.3f} | {requests} | {wbytes} | {hits} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    figures: dict = {}
    tables = run(args.rows, args.devices, figures)
    text = render(args, figures, tables, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        with open(RESULTS, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
