"""The CDC benchmark: change events of heap and orochi tables, from the
writing transaction to the sink, end to end.

One PostgreSQL cluster (default durability: fsync on, synchronous_commit on),
orochi-sidecar as its own process (the cdc duty, ``poll_interval`` 0.05 s)
and a sink: a Kafka-protocol broker (noida-db) by default, or ``--sink
file`` (JSON lines, fsynced).  Tables (``bh`` heap with a primary key, ``bo``
orochi keyed by ``id``)::

    (id bigint, dev int, v float8, note text, ts timestamptz)

1. **Bulk inserts**: one ``INSERT ... SELECT`` of ``--rows`` rows; events/s
   from the start of the INSERT until the sink has acknowledged the last
   event (``orochi.cdc_subscription_stats``), and the sidecar's CPU time.
2. **Single-row updates**: ``--updates`` transactions of one ``UPDATE ...
   WHERE id = $1`` each, from one client; events/s from the first update to
   the last event acknowledged.

   Both *online* (the sidecar running while the writes happen) and *drain*
   (the writes committed while the subscription is stopped, then timed from
   ``start_cdc_subscription``: what a worker can do, without the writer's
   own pace).
3. **Commit-to-sink latency** at a steady ``--rate`` single-row inserts/s
   for ``--seconds`` s, into a webhook receiver in this process: for each
   event, the time it arrived minus the time the client's COMMIT returned:
   p50 / p99 / max.
4. **What capture costs the writer**: single-row INSERT and UPDATE
   statements and bulk INSERTs into three orochi tables taking turns: one a
   subscription covers, one it does not (in the same database), one in a
   database where no subscription ever started; medians.

Prints the tables and writes bench/results/cdc.md.

    python bench/cdc_bench.py [--rows N] [--updates N] [--rate N] [--seconds S] [--sink kafka|file] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from orochi_fdw.testing.cluster import PostgresCluster, find_free_port
from orochi_fdw.testing.services import KafkaBroker

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "cdc.md")
SETTINGS = {"shared_buffers": "512MB", "jit": "off", "max_wal_size": "8GB", "checkpoint_timeout": "1h",
            "fsync": True, "full_page_writes": True}
COLUMNS = "id bigint, dev int, v float8, note text, ts timestamptz"
SIDECAR = os.path.join(os.path.dirname(sys.executable), "orochi-sidecar")
SIDECAR_CONFIG = """
log_level = "info"
duties = ["cdc"]
[http]
enabled = false
[cdc]
poll_interval = 0.2
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Receiver:
    """A webhook receiver noting when each event arrives."""

    def __init__(self) -> None:
        self.port = find_free_port()
        self.arrivals: dict[int, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.time()
                for event in json.loads(body):
                    if event.get("after"):
                        receiver.arrivals.setdefault(event["after"]["id"], now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pg = PostgresCluster("cdcbench", settings=SETTINGS)
        self.broker: KafkaBroker | None = None
        self.out_dir = tempfile.mkdtemp(prefix="orochi-cdc-bench-", dir="/tmp")
        os.chmod(self.out_dir, 0o777)
        self.sidecar: subprocess.Popen | None = None
        self.config = os.path.join(self.out_dir, "sidecar.toml")
        with open(self.config, "w") as f:
            f.write(SIDECAR_CONFIG)

    def __enter__(self) -> "Bench":
        self.pg.start()
        self.pg.create_database("bench")
        self.dsn = self.pg.dsn("bench")
        self.db = psycopg.connect(self.dsn, autocommit=True)
        if self.args.sink == "kafka":
            self.broker = KafkaBroker().start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_sidecar()
        self.db.close()
        with self.pg.connect("bench", autocommit=True) as c:
            for (slot,) in c.execute("SELECT slot_name FROM pg_replication_slots").fetchall():
                c.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        self.pg.cleanup()
        if self.broker is not None:
            self.broker.cleanup()
        shutil.rmtree(self.out_dir, ignore_errors=True)

    # ------------------------------------------------------------ plumbing
    def start_sidecar(self) -> None:
        self.stop_sidecar()
        self.log = open(os.path.join(self.out_dir, "sidecar.log"), "ab")
        self.sidecar = subprocess.Popen([SIDECAR, "--dsn", self.dsn, "--config", self.config],
                                        stdout=self.log, stderr=self.log)

    def stop_sidecar(self) -> None:
        if self.sidecar is not None:
            self.sidecar.terminate()
            self.sidecar.wait(60)
            self.sidecar = None

    def tables(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS bh")
        self.db.execute("DROP FOREIGN TABLE IF EXISTS bo")
        self.db.execute(f"CREATE TABLE bh ({COLUMNS.replace('id bigint', 'id bigint PRIMARY KEY')})")
        self.db.execute(f"CREATE FOREIGN TABLE bo ({COLUMNS}) SERVER orochi")

    def subscribe(self, name: str, table: str, sink: str | None = None, **more) -> None:
        sink = sink or self.args.sink
        options = {"batch_size": self.args.batch, "poll_interval": 0.05, "snapshot": "never",
                   "key_columns": {table: ["id"]}, **more}
        if sink == "kafka":
            options |= {"bootstrap_servers": self.broker.bootstrap, "tombstones": False}
        elif sink == "file":
            options |= {"directory": self.out_dir}
        self.db.execute("SELECT orochi.create_cdc_subscription(%s, %s::regclass[], %s, 'debezium', %s::jsonb)",
                        [name, [table], sink, json.dumps(options)])
        self.db.execute("SELECT orochi.start_cdc_subscription(%s)", [name])

    def drop(self, name: str) -> None:
        self.db.execute("SELECT orochi.drop_cdc_subscription(%s)", [name])

    def sent(self, name: str) -> int:
        return int(self.db.execute("SELECT events_sent + snapshot_events FROM orochi.cdc_subscription_stats(%s)",
                                   [name]).fetchone()[0])

    def wait_started(self, name: str) -> None:
        while not self.db.execute("SELECT snapshot_done FROM orochi.cdc_subscription WHERE name = %s",
                                  [name]).fetchone()[0]:
            time.sleep(0.05)

    def wait_sent(self, name: str, count: int, timeout: float = 1800) -> float:
        deadline = time.monotonic() + timeout
        while self.sent(name) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: {self.sent(name)} of {count} events after {timeout} s")
            time.sleep(0.02)
        return time.perf_counter()

    # ------------------------------------------------------------ 1, 2
    def throughput(self) -> list[tuple]:
        """Per table and load: online (the sidecar running while the writes
        happen: from the first write to the last event acknowledged) and
        drain (the writes committed while the subscription is stopped, the
        sidecar up: from start_cdc_subscription to the last event
        acknowledged, i.e. what a worker can do; the sidecar's own start-up
        is not in it)."""
        rows = []
        n, u = self.args.rows, self.args.updates
        for table in ("bh", "bo"):
            self.tables()
            name = f"tp_{table}"
            self.subscribe(name, table)
            self.start_sidecar()
            self.wait_started(name)
            expected = 0
            for load, write in (("bulk insert", lambda: self.bulk(table, 1, n)),
                                ("single-row updates", lambda: self.updates(table, u, n))):
                count = n if load == "bulk insert" else u
                # online
                cpu0 = cpu_seconds(self.sidecar.pid)
                start = time.perf_counter()
                write()
                written = time.perf_counter() - start
                expected += count
                done = self.wait_sent(name, expected) - start
                rows.append((load, table, "online", count, written, done, count / done,
                             cpu_seconds(self.sidecar.pid) - cpu0))
                # drain
                self.pause(name)
                if load == "bulk insert":
                    self.db.execute(f"DELETE FROM {table} WHERE id > %s", [n // 2])  # rows for the next bulk
                    expected += n - n // 2
                    self.bulk(table, n // 2 + 1, n)
                else:
                    self.updates(table, u, n)
                expected += count if load != "bulk insert" else n - n // 2
                cpu0 = cpu_seconds(self.sidecar.pid)
                start = time.perf_counter()
                self.db.execute("SELECT orochi.start_cdc_subscription(%s)", [name])
                done = self.wait_sent(name, expected) - start
                drained = count if load != "bulk insert" else 2 * (n - n // 2)
                rows.append((load, table, "drain", drained, None, done, drained / done,
                             cpu_seconds(self.sidecar.pid) - cpu0))
            self.stop_sidecar()
            self.drop(name)
        return rows

    def pause(self, name: str) -> None:
        """Stop the subscription (its slot kept) and wait until its worker
        has let it go."""
        self.db.execute("SELECT orochi.stop_cdc_subscription(%s)", [name])
        while self.db.execute("SELECT orochi.cdc_is_running(subscription_id) FROM orochi.list_cdc_subscriptions()"
                              " WHERE name = %s", [name]).fetchone()[0]:
            time.sleep(0.02)

    def bulk(self, table: str, first: int, last: int) -> None:
        self.db.execute(f"INSERT INTO {table} SELECT g, g %% 1000, g * 0.5, 'note ' || g, "
                        "timestamptz '2024-01-01' + g * interval '1 s' FROM generate_series(%s::int, %s::int) g",
                        [first, last])

    def updates(self, table: str, count: int, n: int) -> None:
        for i in range(1, count + 1):
            self.db.execute(f"UPDATE {table} SET v = v + 1 WHERE id = %s", [i * 7 % (n // 2) + 1])

    # ------------------------------------------------------------ 3
    def latency(self) -> list[tuple]:
        out = []
        receiver = Receiver()
        try:
            for table in ("bh", "bo"):
                self.tables()
                name = f"lat_{table}"
                receiver.arrivals.clear()
                self.subscribe(name, table, sink="webhook", url=receiver.url)
                self.start_sidecar()
                self.wait_started(name)
                commits: dict[int, float] = {}
                interval = 1.0 / self.args.rate
                total = int(self.args.rate * self.args.seconds)
                next_at = time.perf_counter()
                for i in range(1, total + 1):
                    self.db.execute(f"INSERT INTO {table} VALUES (%s, 1, 1.0, 'x', now())", [i])
                    commits[i] = time.time()
                    next_at += interval
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                deadline = time.monotonic() + 600
                while len(receiver.arrivals) < total and time.monotonic() < deadline:
                    time.sleep(0.05)
                lat = sorted((receiver.arrivals[i] - commits[i]) * 1000 for i in commits if i in receiver.arrivals)
                out.append((table, total, len(lat), _pct(lat, 50), _pct(lat, 99), lat[-1], statistics.mean(lat)))
                self.stop_sidecar()
                self.drop(name)
        finally:
            receiver.stop()
        return out

    # ------------------------------------------------------------ 4
    def overhead(self) -> list[tuple]:
        """Single-row statements and bulk inserts into three orochi tables,
        taking turns (so that the machine's load weighs on each alike):
        one a subscription covers, one it does not (same database: one
        catalog lookup per transaction), one in a database where no
        subscription ever started."""
        k = self.args.statements
        self.tables()
        self.db.execute(f"CREATE FOREIGN TABLE IF NOT EXISTS bo_free ({COLUMNS}) SERVER orochi")
        self.pg.create_database("other")
        other = psycopg.connect(self.pg.dsn("other"), autocommit=True)
        other.execute(f"CREATE FOREIGN TABLE bo ({COLUMNS}) SERVER orochi")
        self.subscribe("ovh", "bo", sink="file")
        self.start_sidecar()  # makes the slot
        self.wait_started("ovh")
        self.stop_sidecar()
        targets = [("covered by a subscription", self.db, "bo"),
                   ("not covered (a subscription in the database)", self.db, "bo_free"),
                   ("no subscription in the database", other, "bo")]
        times = {label: {"insert": [], "update": [], "bulk": []} for label, _, _ in targets}
        for conn, table in [(c, t) for _, c, t in targets]:
            conn.execute(f"INSERT INTO {table} SELECT g, 1, 1.0, 'x', now() FROM generate_series(1, %s) g", [k])
        for i in range(k):
            for label, conn, table in targets:
                t = time.perf_counter()
                conn.execute(f"INSERT INTO {table} VALUES (%s, 2, 2.0, 'y', now())", [k + i + 1])
                times[label]["insert"].append(time.perf_counter() - t)
        for i in range(1, k + 1):
            for label, conn, table in targets:
                t = time.perf_counter()
                conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = %s", [i])
                times[label]["update"].append(time.perf_counter() - t)
        for _ in range(3):
            for label, conn, table in targets:
                t = time.perf_counter()
                conn.execute(f"INSERT INTO {table} SELECT g, 1, 1.0, 'note ' || g, now() "
                             "FROM generate_series(1, %s) g", [self.args.rows])
                times[label]["bulk"].append(time.perf_counter() - t)
        other.close()
        self.drop("ovh")
        return [(label, statistics.median(t["insert"]) * 1e6, statistics.median(t["update"]) * 1e6,
                 statistics.median(t["bulk"])) for label, t in times.items()]


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--updates", type=int, default=3_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--statements", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--sink", choices=("kafka", "file"), default="kafka")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with Bench(args) as bench:
        tp = bench.throughput()
        lat = bench.latency()
        ovh = bench.overhead()
    load = os.getloadavg()
    lines = [
        "# CDC benchmark", "",
        f"Run on {datetime.date.today().isoformat()}: {os.cpu_count()} cores, load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; `python bench/cdc_bench.py {' '.join(sys.argv[1:])}`.", "",
        f"## Throughput, end to end ({args.sink} sink, batches of {args.batch} events)", "",
        "*online*: the sidecar runs while the writes happen, from the first write to the sink's "
        "acknowledgement of the last event (the writes' own time beside); *drain*: the writes committed "
        "while the subscription is stopped, then from `start_cdc_subscription` to the last acknowledgement "
        "(what a worker can do, its start included: the sidecar looks for started subscriptions every 0.2 s, "
        "a new worker connects and opens its sink). The sidecar's "
        "CPU time over the same span.", "",
        "| load | table | how | events | writes done | all delivered | events/s | sidecar CPU s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for what, table, how, n, written, done, rate, cpu in tp:
        kind = "heap" if table == "bh" else "orochi"
        shown = "" if written is None else f"{written:.2f} s"
        lines.append(f"| {what} | {kind} | {how} | {n:,} | {shown} | {done:.2f} s | {rate:,.0f} | {cpu:.2f} |")
    lines += ["", f"## Commit-to-sink latency at {args.rate:g} single-row inserts/s for {args.seconds:g} s "
                  "(webhook sink)", "",
              "| table | events | received | p50 | p99 | max | mean |", "|---|---:|---:|---:|---:|---:|---:|"]
    for table, total, got, p50, p99, mx, mean in lat:
        kind = "heap" if table == "bh" else "orochi"
        lines.append(f"| {kind} | {total:,} | {got:,} | {p50:.1f} ms | {p99:.1f} ms | {mx:.1f} ms | {mean:.1f} ms |")
    lines += ["", f"## What capture costs the writer (orochi tables; medians of {args.statements:,} statements "
                  "each, the three tables taking turns, one client)", "",
              "| | single-row INSERT | single-row UPDATE | INSERT ... SELECT of "
              f"{args.rows:,} rows |", "|---|---:|---:|---:|"]
    for label, ins, upd, bulk in ovh:
        lines.append(f"| {label} | {ins:.0f} µs | {upd:.0f} µs | {bulk:.2f} s |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        notes = ""
        if os.path.exists(RESULTS):
            old = open(RESULTS).read()
            if "\n## Notes" in old:
                notes = old[old.index("\n## Notes"):]
        with open(RESULTS, "w") as f:
            f.write(text + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
