"""The time-series benchmark: device metrics ingested into a hypertable with
the compression policy on, against the same rows in a heap table.

One Postgres cluster with its default durability (fsync on), jit off, no
parallel workers. The rows are device metrics::

    ts timestamptz, device_id int, cpu float8, mem float8, temp float8, status text

``--devices`` devices each report every 10 s, in time order, so a day holds
``devices * 8640`` rows (864,000 with 100 devices); the hypertable has
1-day chunks. Measured:

1. ingest: batches of ``--batch`` rows (``INSERT ... SELECT`` from
   ``generate_series``, the same statement for both tables), in time order.
   On the hypertable the compression policy runs after each batch as the
   sidecar would (``CALL orochi.run_job(id)``), with ``compress_after`` one
   day behind the newest row (the data's own clock: the rows lie in the past
   of the real now()). Rows/s with and without the policy's time, and the
   final size (orochi: ``orochi.table_size``, stripes + delta store; heap:
   ``pg_total_relation_size``), with the size the chunks had before
   compression (``orochi.hypertable_compression_stats``).
2. hourly and daily rollups (avg / max per device and bucket) over the last
   7 days and over everything: from the raw hypertable (pushed-down
   aggregates), from the heap table, and from continuous aggregates
   (``orochi.create_continuous_aggregate``, read materialized only); median
   of 3 warm runs.
3. dropping the oldest 30 days: ``orochi.drop_chunks(older_than => ...)``
   against ``DELETE FROM heap WHERE ts < ...``.

Prints the tables and writes bench/results/timeseries.md.

    python bench/timeseries_bench.py [--rows N] [--batch N] [--devices N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time

from orochi_fdw.testing.cluster import PostgresCluster

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "timeseries.md")

SETTINGS = {
    "shared_buffers": "2GB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "64MB",
    "max_wal_size": "32GB",
    "checkpoint_timeout": "1h",
}

COLUMNS = "ts timestamptz NOT NULL, device_id int, cpu float8, mem float8, temp float8, status text"
SAMPLE_SECONDS = 10

#: rows first .. last (exclusive) of the metrics; parameters: the first ts, first, last
_ROWS = """
SELECT %s::timestamptz + (i / {devices}) * interval '{step} seconds',
       (i %% {devices})::int,
       floor(random() * 1000) / 10,
       floor((50 + 20 * sin((i / {devices}) / 360.0) + random() * 2) * 100) / 100,
       30 + ((i / {devices} + (i %% {devices}) * 7) %% 200) / 10.0,
       CASE WHEN random() < 0.01 THEN 'warn' ELSE 'ok' END
  FROM generate_series(%s::bigint, %s::bigint - 1) i
"""

#: label -> (bucket width, filter); {week} is the literal time 7 days before the newest row
ROLLUPS = {
    "hourly, last 7 days": ("1 hour", "ts >= {week}"),
    "hourly, last 7 days, filter as an expression": ("1 hour", "ts >= {week} + interval '0 days'"),
    "daily, all rows": ("1 day", None),
    "hourly, all rows": ("1 hour", None),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(conn, sql: str, params=None) -> float:
    start = time.perf_counter()
    conn.execute(sql, params)
    return time.perf_counter() - start


def median_ms(conn, sql: str, runs: int = 3, warm: bool = True) -> float:
    if warm:
        conn.execute(sql)
    return statistics.median(timed(conn, sql) for _ in range(runs)) * 1000


def rollup_sql(table: str, width: str, where: str | None) -> str:
    cond = f" WHERE {where}" if where else ""
    return (f"SELECT orochi.time_bucket(interval '{width}', ts) AS bucket, device_id, avg(cpu), max(temp)"
            f" FROM {table}{cond} GROUP BY 1, 2")


def cagg_sql(name: str, where: str | None) -> str:
    cond = f" WHERE {where.replace('ts >=', 'bucket >=')}" if where else ""
    return f"SELECT bucket, device_id, avg_cpu, max_temp FROM {name}{cond}"


def run(rows: int, batch: int, devices: int, figures: dict) -> dict[str, list[tuple]]:
    pg = PostgresCluster("tsbench", settings=SETTINGS)
    tables: dict[str, list[tuple]] = {"ingest": [], "rollup": [], "drop": []}
    try:
        pg.start()
        pg.create_database("bench")
        conn = pg.connect("bench", autocommit=True)
        conn.execute(f"CREATE FOREIGN TABLE metrics ({COLUMNS}) SERVER orochi")
        conn.execute("SELECT orochi.create_hypertable('metrics', 'ts', chunk_time_interval => interval '1 day')")
        conn.execute(f"CREATE TABLE metrics_heap ({COLUMNS})")
        job = conn.execute("SELECT orochi.add_compression_policy('metrics', interval '1 day')").fetchone()[0]
        per_day = devices * 86400 // SAMPLE_SECONDS
        days = -(-rows // per_day)
        start = conn.execute("SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
                             " - %s * interval '1 day'", (days + 1,)).fetchone()[0]
        end = start + datetime.timedelta(seconds=(rows // devices) * SAMPLE_SECONDS)
        figures.update(days=days, per_day=per_day, start=start, end=end)
        insert = {t: f"INSERT INTO {t} " + _ROWS.format(devices=devices, step=SAMPLE_SECONDS)
                  for t in ("metrics", "metrics_heap")}

        # 1. ingest
        log(f"ingest: {rows:,} rows in batches of {batch:,}, {days} days of {per_day:,} rows ...")
        t_insert = {"metrics": 0.0, "metrics_heap": 0.0}
        t_policy = 0.0
        for first in range(0, rows, batch):
            last = min(rows, first + batch)
            for t in ("metrics", "metrics_heap"):
                t_insert[t] += timed(conn, insert[t], (start, first, last))
            newest = start + datetime.timedelta(seconds=((last - 1) // devices) * SAMPLE_SECONDS)
            # the policy's compress_after: one day behind the newest row, on the real clock
            lag = conn.execute("SELECT (now() - %s::timestamptz + interval '1 day')::text", (newest,)).fetchone()[0]
            conn.execute("SELECT orochi.alter_job(%s, config => jsonb_build_object('hypertable_id',"
                          " 'metrics'::regclass::oid, 'compress_after', %s::text))", (job, lag))
            t_policy += timed(conn, "CALL orochi.run_job(%s)", (job,))
            if (last // batch) % 10 == 0 or last == rows:
                log(f"  {last:,} rows: orochi insert {t_insert['metrics']:.0f} s + policy {t_policy:.0f} s,"
                    f" heap {t_insert['metrics_heap']:.0f} s")
        conn.execute("VACUUM ANALYZE metrics_heap")
        heap_bytes = conn.execute("SELECT pg_total_relation_size('metrics_heap')").fetchone()[0]
        orochi_bytes = conn.execute("SELECT orochi.table_size('metrics')").fetchone()[0]
        delta_rows = conn.execute("SELECT delta_rows FROM orochi.delta_size('metrics')").fetchone()[0]
        total, compressed, before, after = conn.execute(
            "SELECT * FROM orochi.hypertable_compression_stats('metrics')").fetchone()
        figures.update(heap_bytes=heap_bytes, orochi_bytes=orochi_bytes, chunks=total, compressed=compressed,
                       before=before or 0, after=after or 0, delta_rows=delta_rows)
        o_rate = rows / t_insert["metrics"]
        o_rate_all = rows / (t_insert["metrics"] + t_policy)
        h_rate = rows / t_insert["metrics_heap"]
        mb = 1024 * 1024
        tables["ingest"] += [
            ("rows/s, INSERT only", f"{h_rate:,.0f}", f"{o_rate:,.0f}", f"{o_rate / h_rate:.2f}x"),
            ("rows/s, INSERT + compression policy", f"{h_rate:,.0f}", f"{o_rate_all:,.0f}",
             f"{o_rate_all / h_rate:.2f}x"),
            ("seconds: INSERT / policy", f"{t_insert['metrics_heap']:.0f} / -",
             f"{t_insert['metrics']:.0f} / {t_policy:.0f}", ""),
            ("final size, MB", f"{heap_bytes / mb:,.1f}", f"{orochi_bytes / mb:,.1f}",
             f"heap is {heap_bytes / orochi_bytes:.1f}x"),
            ("bytes per row", f"{heap_bytes / rows:.1f}", f"{orochi_bytes / rows:.1f}", ""),
            ("compressed chunks: before -> after, MB", "",
             f"{figures['before'] / mb:,.1f} -> {figures['after'] / mb:,.1f}",
             f"{compressed} of {total} chunks, {figures['before'] / max(figures['after'], 1):.2f}x"),
        ]

        # 2. rollups
        week = (end - datetime.timedelta(days=7)).replace(minute=0, second=0, microsecond=0)
        week_sql = f"timestamptz '{week.isoformat()}'"
        log("continuous aggregates ...")
        caggs = {}
        for width, name in (("1 hour", "metrics_hourly"), ("1 day", "metrics_daily")):
            q = (f"SELECT orochi.time_bucket(interval '{width}', ts) AS bucket, device_id,"
                 " avg(cpu) AS avg_cpu, max(temp) AS max_temp FROM metrics GROUP BY bucket, device_id")
            secs = timed(conn, "SELECT orochi.create_continuous_aggregate(%s, %s, materialized_only => true)",
                         (name, q))
            caggs[width] = name
            figures[f"cagg_{name}_s"] = secs
        log("rollups ...")
        for label, (width, where) in ROLLUPS.items():
            w = where.format(week=week_sql) if where else None
            raw = median_ms(conn, rollup_sql("metrics", width, w))
            heap = median_ms(conn, rollup_sql("metrics_heap", width, w), runs=1, warm=False)
            cagg = median_ms(conn, cagg_sql(caggs[width], w))
            tables["rollup"].append((label, f"{heap:,.0f}", f"{raw:,.0f}", f"{cagg:,.1f}",
                                     f"{heap / raw:.1f}x", f"{heap / cagg:,.0f}x"))
            n = conn.execute(f"SELECT count(*) FROM ({rollup_sql('metrics', width, w)}) s").fetchone()[0]
            m = conn.execute(f"SELECT count(*) FROM ({cagg_sql(caggs[width], w)}) s").fetchone()[0]
            assert n == m, f"{label}: {n} groups from the raw rows, {m} from the continuous aggregate"

        # 3. drop a month
        cutoff = start + datetime.timedelta(days=30)
        log("drop a month ...")
        conn.execute("CHECKPOINT")
        t_drop = timed(conn, "SELECT orochi.drop_chunks('metrics', older_than => %s::timestamptz)", (cutoff,))
        t_delete = timed(conn, "DELETE FROM metrics_heap WHERE ts < %s", (cutoff,))
        left = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
        left_heap = conn.execute("SELECT count(*) FROM metrics_heap").fetchone()[0]
        assert left == left_heap, (left, left_heap)
        tables["drop"].append(("rows older than 30 days", f"{(rows - left):,} rows", f"{t_delete * 1000:,.0f}",
                               f"{t_drop * 1000:,.0f}", f"{t_delete / t_drop:,.0f}x"))
        conn.close()
    finally:
        pg.cleanup()
    return tables


def render(head: tuple, rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def _notes(args: argparse.Namespace, figures: dict) -> str:
    """What the figures say, written with them."""
    mb = 1024 * 1024
    return f"""
Notes on this run:

- Command: `python bench/timeseries_bench.py --rows {args.rows} --batch {args.batch} --devices {args.devices}`.
  The default is 50M rows of 100 devices; the total time of the run is in the
  header above.
- Ingest: both tables take the same `INSERT ... SELECT` (its row generation is part of both
  times). The hypertable splits each batch into one stripe per chunk; the policy then
  compresses each chunk once, when it is a whole day behind the newest row, so every
  chunk is rewritten exactly once.
- Size: most of the gain over the heap ({figures['heap_bytes'] / max(figures['orochi_bytes'], 1):.0f}x) is the
  columnar format's own: time-ordered stripes with light-weight codecs. Compressing the
  chunks (sorted, merged, zstd level 9) took them from {figures['before'] / mb:,.1f} to
  {figures['after'] / mb:,.1f} MB: the metrics are random-valued floats, which no codec
  shrinks much; the time and device columns were already small.
- Rollups: the hypertable answers through pushed-down aggregates over the columns it
  needs, skipping the chunks outside the filter. A filter written as an expression
  (`ts >= timestamptz '...' + interval '0 days'`) is evaluated when the scan starts and,
  its value having the column's type, applied exactly in the scan, so the aggregate is
  pushed down as with a constant (compare the two "last 7 days" rows). Continuous
  aggregates read their materialized buckets (one row per device and bucket).
- Dropping a month: `orochi.drop_chunks` deletes the chunks' catalog rows, stripes and
  delta rows (their files are removed by the next `orochi.vacuum(table)`, once no snapshot
  can read them); the heap's DELETE writes every deleted tuple (and leaves the space to
  VACUUM).
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000_000, help="rows to ingest (default 50M)")
    ap.add_argument("--batch", type=int, default=1_000_000, help="rows per INSERT batch")
    ap.add_argument("--devices", type=int, default=100, help="devices, each reporting every 10 s")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/timeseries.md")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    began = time.perf_counter()
    load_before = os.getloadavg()
    figures: dict = {}
    tables = run(args.rows, args.batch, args.devices, figures)
    elapsed = time.perf_counter() - began
    load_after = os.getloadavg()
    out = [
        "## Ingest",
        "",
        render(("what", "heap", "orochi hypertable", "orochi vs heap"), tables["ingest"]),
        "",
        "## Rollups (ms: hypertable and continuous aggregate the median of 3 warm runs, heap one run)",
        "",
        render(("rollup", "heap ms", "hypertable ms", "continuous aggregate ms", "heap / hypertable",
                "heap / cagg"), tables["rollup"]),
        "",
        "## Dropping a month",
        "",
        render(("what", "rows", "heap DELETE ms", "orochi drop_chunks ms", "heap / orochi"), tables["drop"]),
    ]
    text = "\n".join(out)
    print(text)
    notes = _notes(args, figures)
    print(notes)
    if not args.no_write:
        caggs = ", ".join(f"{k[5:-2]} {v:.1f} s" for k, v in figures.items() if k.startswith("cagg_"))
        with open(RESULTS, "w") as f:
            f.write("# Time series: hypertable with compression vs heap\n\n")
            f.write("Written by `bench/timeseries_bench.py`; do not edit by hand.\n\n")
            f.write(f"- run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit};"
                    f" {os.cpu_count()} cores shared with other work; load average {load_before[0]:.1f} at the"
                    f" start, {load_after[0]:.1f} at the end; total {elapsed:.0f} s\n")
            f.write(f"- data: {args.rows:,} rows, {args.devices} devices every {SAMPLE_SECONDS} s"
                    f" ({figures['per_day']:,} rows a day, {figures['days']} days, 1-day chunks),"
                    f" batches of {args.batch:,} rows (`INSERT ... SELECT` from generate_series)\n")
            f.write("- server: PostgreSQL 15, fsync on, jit off, no parallel workers, shared_buffers 2GB\n")
            f.write(f"- continuous aggregates created (with their first refresh over all rows): {caggs}\n")
            f.write(f"- after the ingest: {figures['compressed']} of {figures['chunks']} chunks compressed,"
                    f" {figures['delta_rows']} rows in the delta store\n\n")
            f.write(text + "\n" + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
