"""The pipelines benchmark: JSON records from Kafka into an orochi hypertable.

A Kafka-protocol broker (noida-db) and one PostgreSQL cluster (default
durability: fsync on, synchronous_commit on) on this machine. The records are
device metrics, one JSON object per message, over 4 partitions::

    {"ts": "2024-05-01T00:00:00.000000+00:00", "device": 17, "seq": 123,
     "temp": 21.5, "load": 0.73, "status": "ok"}

into ``m (ts timestamptz NOT NULL, device int, seq int8, temp float8,
load float8, status text)``, a hypertable with 1-day chunks.

1. Throughput on one core: ``--rows`` records already in the topic, loaded
   by one pipeline worker (``PipelineWorker.run_batch`` in this process,
   batches of ``--batch`` records) with this process **and** the PostgreSQL
   server pinned to the same CPU (the broker on another); rows/s from the
   first fetch to the last commit, and the worker's own CPU time. Against:
   ``COPY m FROM STDIN`` of the same rows as CSV text, and in binary from
   Python values already converted, both pinned the same way (the COPY
   loads no Kafka and parses no JSON: it is the floor).
2. Latency at a steady rate: a producer sends ``--rate`` records/s for
   ``--seconds`` s, each carrying its send time; a sidecar worker (thread,
   ``max_latency`` ``--max-latency`` s) loads them; a poller asks
   ``SELECT max(seq) FROM m WHERE ts > ...`` every 5 ms and takes, for each
   record, the time it first saw it minus its send time: p50 / p99 / max of
   produce-to-visible.

Prints the tables and writes bench/results/pipelines.md.

    python bench/pipeline_bench.py [--rows N] [--batch N] [--rate N] [--seconds S] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import resource
import statistics
import sys
import threading
import time

import psycopg

from orochi_fdw.pipelines import catalog
from orochi_fdw.pipelines.worker import PipelineWorker
from orochi_fdw.testing.cluster import PostgresCluster
from orochi_fdw.testing.services import KafkaBroker

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "pipelines.md")
SETTINGS = {"shared_buffers": "1GB", "jit": "off", "max_wal_size": "16GB", "checkpoint_timeout": "1h",
            "fsync": True, "full_page_writes": True}
COLUMNS = "ts timestamptz NOT NULL, device int, seq int8, temp float8, load float8, status text"
BASE = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
PARTITIONS = 4
LOADER_CPU = 0
BROKER_CPU = 1


def record(i: int, ts: datetime.datetime | None = None) -> dict:
    ts = ts or BASE + datetime.timedelta(milliseconds=10 * i)
    return {"ts": ts.isoformat(), "device": i % 1000, "seq": i, "temp": round(15 + (i % 200) / 10, 1),
            "load": (i % 997) / 997, "status": "ok" if i % 50 else "warn"}


def pin(pid: int, cpu: int) -> None:
    """Pin a process (and what it forks later) to one CPU, when the machine has it."""
    if cpu < os.cpu_count():
        os.sched_setaffinity(pid, {cpu})


def pin_cluster(pg: PostgresCluster, cpu: int) -> None:
    for pid in [pg.postmaster_pid()] + pg.backend_pids():
        try:
            pin(pid, cpu)
        except (ProcessLookupError, PermissionError):
            pass
    # background processes (checkpointer, walwriter ...) too
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().split(") ", 1)[1].split()[1])
                if ppid == pg.postmaster_pid():
                    pin(int(entry), cpu)
            except (OSError, ValueError, IndexError):
                pass


def make_table(conn: psycopg.Connection, name: str = "m", kind: str = "hypertable") -> None:
    conn.execute(f"DROP FOREIGN TABLE IF EXISTS {name}")
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    if kind == "heap":
        conn.execute(f"CREATE TABLE {name} ({COLUMNS})")
        return
    conn.execute(f"CREATE FOREIGN TABLE {name} ({COLUMNS}) SERVER orochi")
    conn.execute(f"SELECT orochi.create_hypertable('{name}', 'ts', chunk_time_interval => interval '1 day')")


def unpin_cluster(pg: PostgresCluster) -> None:
    """Let the server use every CPU again (backends forked later inherit it)."""
    everything = set(range(os.cpu_count() or 1))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().split(") ", 1)[1].split()[1])
                if ppid == pg.postmaster_pid() or int(entry) == pg.postmaster_pid():
                    os.sched_setaffinity(int(entry), everything)
            except (OSError, ValueError, IndexError):
                pass


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def definition(dsn: str, pid: int) -> catalog.PipelineDef:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return catalog.runnable_pipelines(conn, only=pid)[0]


def throughput(pg: PostgresCluster, broker: KafkaBroker, rows: int, batch: int) -> list[tuple]:
    dsn = pg.dsn("bench")
    topic = f"metrics_{rows}_{batch}"
    broker.create_topic(topic, partitions=PARTITIONS)
    print(f"producing {rows:,} records ...", flush=True)
    values = [json.dumps(record(i)) for i in range(rows)]
    broker.produce(topic, values, partitions=PARTITIONS, timeout=600)
    results = []
    with pg.connect("bench", autocommit=True) as conn:
        make_table(conn)
        pid = conn.execute("SELECT orochi.create_pipeline('bench', 'kafka', 'm', 'json', %s::jsonb)",
                           [json.dumps({"bootstrap_servers": broker.bootstrap, "topic": topic,
                                        "batch_size": batch})]).fetchone()[0]
        conn.execute("SELECT orochi.start_pipeline(%s)", [pid])
    me = os.getpid()
    old_affinity = os.sched_getaffinity(me)
    pin(me, LOADER_CPU)
    try:
        worker = PipelineWorker(definition(dsn, pid), dsn)
        worker.start()
        pin_cluster(pg, LOADER_CPU)
        backend = worker.conn.info.backend_pid
        backend0 = process_cpu(backend)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        loaded = 0
        batches = 0
        while loaded < rows:
            result = worker.run_batch(until_caught_up=True)
            loaded += result.rows
            batches += 1
            if result.caught_up and loaded < rows:
                continue
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        server_cpu = process_cpu(backend) - backend0
        worker.close()
        results.append((f"pipeline: Kafka JSON → hypertable, batch {batch:,}", rows / (cpu + server_cpu),
                        rows / elapsed, cpu, server_cpu, f"{batches} batches"))
        with pg.connect("bench", autocommit=True) as conn:
            assert conn.execute("SELECT count(*), count(DISTINCT seq) FROM m").fetchone() == (rows, rows)

        # COPY of the same rows, as CSV text, and in binary from converted Python values
        csv_data = io.StringIO()
        for i in range(rows):
            r = record(i)
            csv_data.write(f'{r["ts"]},{r["device"]},{r["seq"]},{r["temp"]},{r["load"]},{r["status"]}\n')
        payload = csv_data.getvalue().encode()
        converted = [(BASE + datetime.timedelta(milliseconds=10 * i), i % 1000, i, round(15 + (i % 200) / 10, 1),
                      (i % 997) / 997, "ok" if i % 50 else "warn") for i in range(rows)]
        for label, binary in (("COPY FROM STDIN (csv text)", False), ("COPY FROM STDIN (binary, values ready)", True)):
            with pg.connect("bench", autocommit=True) as conn:
                make_table(conn, "c")
                pin_cluster(pg, LOADER_CPU)
                backend = conn.info.backend_pid
                backend0 = process_cpu(backend)
                cpu0 = time.process_time()
                t0 = time.perf_counter()
                with conn.transaction():
                    with conn.cursor() as cur:
                        if binary:
                            with cur.copy("COPY c FROM STDIN (FORMAT binary)") as copy:
                                copy.set_types(["timestamptz", "int4", "int8", "float8", "float8", "text"])
                                for row in converted:
                                    copy.write_row(row)
                        else:
                            with cur.copy("COPY c FROM STDIN (FORMAT csv)") as copy:
                                for start in range(0, len(payload), 1 << 20):
                                    copy.write(payload[start:start + (1 << 20)])
                elapsed = time.perf_counter() - t0
                cpu = time.process_time() - cpu0
                server_cpu = process_cpu(backend) - backend0
                results.append((label + " → hypertable", rows / (cpu + server_cpu), rows / elapsed, cpu, server_cpu,
                                "one transaction"))
    finally:
        os.sched_setaffinity(me, old_affinity)
        unpin_cluster(pg)
    return results


def latency(pg: PostgresCluster, broker: KafkaBroker, rate: int, seconds: float, max_latency: float,
            kind: str = "hypertable") -> dict:
    dsn = pg.dsn("bench")
    topic = f"steady_{rate}_{kind}"
    broker.create_topic(topic, partitions=PARTITIONS)
    with pg.connect("bench", autocommit=True) as conn:
        make_table(conn, kind=kind)
        conn.execute("DELETE FROM orochi.pipeline")
        pid = conn.execute("SELECT orochi.create_pipeline('steady', 'kafka', 'm', 'json', %s::jsonb)",
                           [json.dumps({"bootstrap_servers": broker.bootstrap, "topic": topic,
                                        "batch_size": 10000, "max_latency": max_latency})]).fetchone()[0]
        conn.execute("SELECT orochi.start_pipeline(%s)", [pid])
    stop = threading.Event()
    worker = PipelineWorker(definition(dsn, pid), dsn, stop=stop)
    loader = threading.Thread(target=worker.run, daemon=True)
    loader.start()
    total = int(rate * seconds)
    sent_at = [0.0] * total
    start_wall = datetime.datetime.now(datetime.timezone.utc)

    def produce() -> None:
        producer = broker.producer(**{"linger.ms": 1})
        t0 = time.perf_counter()
        for i in range(total):
            target = t0 + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            now = time.perf_counter()
            sent_at[i] = now
            ts = start_wall + datetime.timedelta(seconds=now - t0)
            producer.produce(topic, json.dumps(record(i, ts)).encode(), partition=i % PARTITIONS)
            if i % 100 == 0:
                producer.poll(0)
        producer.flush(60)

    time.sleep(2.0)  # the worker's consumer is connected and idle
    producer = threading.Thread(target=produce)
    producer.start()
    seen_at = [0.0] * total
    visible = 0
    with pg.connect("bench", autocommit=True) as conn:
        query = "SELECT max(seq) FROM m WHERE ts >= %s"
        deadline = time.perf_counter() + seconds + 60
        while visible < total and time.perf_counter() < deadline:
            top = conn.execute(query, [start_wall]).fetchone()[0]
            now = time.perf_counter()
            if top is not None and top + 1 > visible:
                # partitions commit together in one batch: every record up to max(seq) is in
                for i in range(visible, top + 1):
                    seen_at[i] = now
                visible = top + 1
            time.sleep(0.005)
        count = conn.execute("SELECT count(*) FROM m WHERE ts >= %s", [start_wall]).fetchone()[0]
    producer.join()
    stop.set()
    loader.join(30)
    lat = sorted((seen_at[i] - sent_at[i]) * 1000 for i in range(visible) if seen_at[i])
    q = statistics.quantiles(lat, n=100)
    return {"rate": rate, "seconds": seconds, "records": total, "visible": visible, "count": count,
            "p50": q[49], "p99": q[98], "max": lat[-1], "mean": statistics.fmean(lat),
            "batches": worker.batches, "max_latency": max_latency, "kind": kind}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-latency", type=float, default=0.05)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    with KafkaBroker() as broker, PostgresCluster("pipebench", settings=SETTINGS) as pg:
        if broker.proc is not None:
            pin(broker.proc.pid, BROKER_CPU)
        pg.create_database("bench")
        rows_table = []
        for batch in args.batch:
            rows_table += throughput(pg, broker, args.rows, batch)
        steady = [latency(pg, broker, args.rate, args.seconds, args.max_latency, kind)
                  for kind in ("hypertable", "heap")]
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]

    lines = ["# Pipelines benchmark", "",
             f"Run on {datetime.date.today().isoformat()}: {os.cpu_count()} cores, load average at the end "
             f"{' '.join(load)}; `python bench/pipeline_bench.py --rows {args.rows} "
             f"--batch {' '.join(map(str, args.batch))} --rate {args.rate} --seconds {args.seconds:g} "
             f"--max-latency {args.max_latency:g}`.", "",
             "## Throughput on one core", "",
             "Loader and PostgreSQL pinned to one CPU (the broker to the other). rows/s per CPU-second is "
             f"{args.rows:,} rows over the CPU time of the loader process plus its PostgreSQL backend; wall "
             "rows/s also counts waiting (for the broker, for fsync).", "",
             "| load | rows/s per CPU-second | wall rows/s | loader CPU s | backend CPU s | notes |",
             "|---|---:|---:|---:|---:|---|"]
    for label, per_cpu, wall, cpu, server, note in rows_table:
        lines.append(f"| {label} | {per_cpu:,.0f} | {wall:,.0f} | {cpu:.2f} | {server:.2f} | {note} |")
    lines += ["", f"## Produce-to-visible latency at a steady {args.rate:,} records/s", "",
              "| target | records | batches | p50 | p99 | max | mean |", "|---|---:|---:|---:|---:|---:|---:|"]
    for st in steady:
        lines.append(f"| {st['kind']} | {st['records']:,} | {st['batches']} | {st['p50']:.1f} ms | "
                     f"{st['p99']:.1f} ms | {st['max']:.1f} ms | {st['mean']:.1f} ms |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with open(RESULTS, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
