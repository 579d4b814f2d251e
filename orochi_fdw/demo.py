"""A private PostgreSQL with Orochi, sample data and sample queries.

    python -m orochi_fdw.demo            # start (or reuse) the demo server, load, query
    python -m orochi_fdw.demo --stop     # stop it

The server's files live under one folder (``/var/tmp/orochi-demo`` unless
``--dir`` or ``OROCHI_DEMO_DIR`` says otherwise): ``data/`` (the cluster),
``sock/`` (its unix socket), ``postgres.log``.  A later run reuses the folder
and, if the server is still running, the server.  The server stays up when the
demo ends, so that you can connect to it; ``--stop`` stops it.

Each run rebuilds the database ``orochi_demo`` (it drops it first, ending any
session connected to it), so the sample data always match the installed
extension.  Other databases you create in the demo server are left alone.

The demo is a list of sections, one per capability; each creates its sample
tables and runs its queries.  A new capability adds a :class:`Section` to
:data:`SECTIONS`.
"""

from __future__ import annotations

import argparse
import decimal
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from orochi_fdw.testing.cluster import ClusterError, PostgresCluster, find_free_port

DEFAULT_DIR = "/var/tmp/orochi-demo"
DATABASE = "orochi_demo"
PREFERRED_PORT = 55432

#: the demo server's settings: durable (unlike the test harness's), small, and
#: orochi preloaded (columnar files go through its WAL resource manager)
DEMO_SETTINGS: dict[str, Any] = {
    "shared_preload_libraries": "orochi",
    "fsync": True,
    "full_page_writes": True,
    "shared_buffers": "256MB",
}


# ---------------------------------------------------------------------------
# sections


@dataclass
class Query:
    """A sample query: what it shows, and the SQL."""

    title: str
    sql: str


@dataclass
class Section:
    """One capability of Orochi: the SQL that creates its sample data, and the
    queries that show it off."""

    title: str
    intro: str
    setup: list[str] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)


BRIDGE = Section(
    title="Python foreign tables (the bridge)",
    intro=(
        "A foreign table of the server `orochi` names a Python class (OPTIONS (wrapper ...)),\n"
        "which Postgres backends run through the embedded interpreter. SeriesWrapper\n"
        "generates rows: id, v = id * 0.5, t = 'row-<id>'; in batch mode it hands them over\n"
        "as numpy column batches, in row mode one Python dict per row."
    ),
    setup=[
        "CREATE SCHEMA demo",
        "CREATE FOREIGN TABLE demo.series (id int8, v float8, t text) SERVER orochi"
        " OPTIONS (wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', rows '1000000', mode 'batch')",
        "CREATE FOREIGN TABLE demo.series_rows (id int8, v float8, t text) SERVER orochi"
        " OPTIONS (wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', rows '20', mode 'row', nulls 'true')",
        "CREATE TABLE demo.labels (id int8 PRIMARY KEY, label text)",
        "INSERT INTO demo.labels VALUES (0, 'zero'), (1, 'one'), (2, 'two'), (3, 'three')",
    ],
    queries=[
        Query("The Python this backend runs", "SELECT key, value FROM orochi.python_info()"),
        Query("A million rows from Python, in column batches",
              "SELECT count(*), sum(v), avg(id) FROM demo.series"),
        Query("Rows one by one (every 7th value NULL)", "SELECT * FROM demo.series_rows LIMIT 8"),
        Query("Quals reach the wrapper; Postgres rechecks them",
              "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM demo.series WHERE id < 3 AND t LIKE 'row-%'"),
        Query("A join with an ordinary heap table",
              "SELECT s.id, s.v, l.label FROM demo.series_rows s JOIN demo.labels l USING (id) ORDER BY s.id"),
    ],
)

COLUMNAR = Section(
    title="Columnar tables: compressed storage, pushed-down filters and aggregates",
    intro=(
        "A foreign table of the server `orochi` that names no wrapper is a compressed\n"
        "columnar table. Two million device readings (a week at one per 0.3 s, 200 devices)\n"
        "go in with one INSERT ... SELECT; WHERE clauses skip stripes and chunk groups by\n"
        "min/max and are applied by filter kernels; GROUP BY and aggregates run in\n"
        "hash-aggregation kernels; UPDATE and DELETE work through row ids."
    ),
    setup=[
        "CREATE FOREIGN TABLE demo.metrics (ts timestamptz, device int4, cpu float8, status text)"
        " SERVER orochi",
        "INSERT INTO demo.metrics SELECT '2024-01-01 00:00+00'::timestamptz + g * interval '300 ms',"
        " g % 200, round((50 + 40 * sin(g / 5000.0) + (g % 17))::numeric, 2)::float8,"
        " (ARRAY['ok', 'ok', 'ok', 'warn', 'error'])[1 + (g / 7) % 5] FROM generate_series(1, 2000000) g",
        "CREATE TABLE demo.metrics_heap AS SELECT * FROM demo.metrics",
        "UPDATE demo.metrics SET status = 'ok' WHERE device = 199 AND status = 'error'",
        "DELETE FROM demo.metrics WHERE device = 198 AND status = 'warn'",
    ],
    queries=[
        Query("Size: columnar against the same rows in a heap table",
              "SELECT pg_size_pretty(orochi.table_size('demo.metrics')) AS columnar,"
              " pg_size_pretty(pg_total_relation_size('demo.metrics_heap')) AS heap"),
        Query("Hourly averages of one device (time_bucket pushed down)",
              "SELECT orochi.time_bucket('1 hour', ts) AS hour, round(avg(cpu)::numeric, 2) AS cpu,"
              " count(*) FROM demo.metrics WHERE device = 7 AND ts < '2024-01-01 06:00+00'"
              " GROUP BY 1 ORDER BY 1"),
        Query("What the scan skipped and what ran in the kernels",
              "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT status, count(*), max(cpu)"
              " FROM demo.metrics WHERE ts >= '2024-01-03' AND ts < '2024-01-04' GROUP BY status"),
        Query("Top 5 readings (a top-N in the scan)",
              "SELECT ts, device, cpu FROM demo.metrics ORDER BY cpu DESC LIMIT 5"),
        Query("Approximate distinct devices (HyperLogLog) next to the exact count",
              "SELECT orochi.approx_count_distinct(device) AS approx, count(DISTINCT device) AS exact"
              " FROM demo.metrics"),
        Query("After UPDATE and DELETE on columnar rows (done in the setup)",
              "SELECT device, status, count(*) FROM demo.metrics WHERE device IN (198, 199)"
              " GROUP BY 1, 2 ORDER BY 1, 2"),
    ],
)

TIMESERIES = Section(
    title="Time series: hypertables, compression and retention policies, continuous aggregates",
    intro=(
        "A columnar table becomes a hypertable: its rows are cut into one-day chunks by\n"
        "their time, and a condition on the time column skips whole chunks. 30 days of\n"
        "readings of 50 sensors (one every 2 minutes, up to now) go in with one INSERT.\n"
        "An hourly continuous aggregate is materialized at once and stays real-time; a\n"
        "compression policy and a retention policy are added and run now, as the\n"
        "orochi-sidecar daemon would run them on their schedule."
    ),
    setup=[
        "CREATE FOREIGN TABLE demo.readings (ts timestamptz NOT NULL, sensor int4, temp float8)"
        " SERVER orochi",
        "SELECT orochi.create_hypertable('demo.readings', 'ts', chunk_time_interval => interval '1 day')",
        "INSERT INTO demo.readings SELECT t, s,"
        " round((20 + 5 * sin(extract(epoch FROM t) / 13751) + s % 7 + (s * 7919 + extract(minute FROM t)) % 3)"
        "::numeric, 2)::float8"
        " FROM generate_series(date_trunc('hour', now()) - interval '30 days',"
        " date_trunc('hour', now()) - interval '2 minutes', interval '2 minutes') t,"
        " generate_series(1, 50) s",
        "SELECT orochi.create_continuous_aggregate('demo.readings_hourly',"
        " 'SELECT orochi.time_bucket(''1 hour'', ts) AS hour, sensor, avg(temp) AS avg_temp,"
        " max(temp) AS max_temp, count(*) AS readings FROM demo.readings GROUP BY 1, 2')",
        "SELECT orochi.add_compression_policy('demo.readings', compress_after => interval '7 days')",
        "SELECT orochi.add_retention_policy('demo.readings', drop_after => interval '21 days')",
    ],
    queries=[
        Query("The newest chunks",
              "SELECT chunk_name, range_start, rows, pg_size_pretty(after_compression_bytes) AS size,"
              " compression_status FROM orochi.chunks WHERE hypertable_name = 'demo.readings'::regclass"
              " ORDER BY range_start DESC LIMIT 3"),
        Query("The last six hours: every other chunk is excluded before anything is read",
              "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT sensor, max(temp) FROM demo.readings"
              " WHERE ts > now() - interval '6 hours' GROUP BY sensor"),
        Query("Run the compression policy now (chunks older than 7 days)",
              "SELECT orochi.run_job_now(job_id) FROM orochi.jobs"
              " WHERE proc_name = 'policy_compression' AND relid = 'demo.readings'::regclass"),
        Query("Run the retention policy now (chunks older than 21 days)",
              "SELECT orochi.run_job_now(job_id) FROM orochi.jobs"
              " WHERE proc_name = 'policy_retention' AND relid = 'demo.readings'::regclass"),
        Query("Chunks by compression status, bytes before and after",
              "SELECT compression_status, count(*) AS chunks, sum(rows) AS rows,"
              " pg_size_pretty(sum(before_compression_bytes)) AS before,"
              " pg_size_pretty(sum(after_compression_bytes)) AS after FROM orochi.chunks"
              " WHERE hypertable_name = 'demo.readings'::regclass GROUP BY 1 ORDER BY 1"),
        Query("Daily maxima from the hourly continuous aggregate (materialized plus recent rows)",
              "SELECT orochi.time_bucket('1 day', hour) AS day, max(max_temp) AS max_temp,"
              " sum(readings) AS readings FROM demo.readings_hourly WHERE sensor = 7"
              " GROUP BY 1 ORDER BY 1 DESC LIMIT 5"),
        Query("A late correction to an old bucket, then a refresh recomputes only that bucket",
              "UPDATE demo.readings SET temp = temp + 100 WHERE sensor = 7"
              " AND ts >= date_trunc('hour', now()) - interval '5 days'"
              " AND ts < date_trunc('hour', now()) - interval '5 days' + interval '10 minutes'"),
        Query("Refresh (the whole window; only invalidated buckets are recomputed)",
              "SELECT orochi.refresh_continuous_aggregate('demo.readings_hourly', NULL, NULL)"),
        Query("The corrected hour, from the aggregate and from the raw rows",
              "SELECT 'aggregate' AS source, max_temp FROM demo.readings_hourly WHERE sensor = 7"
              " AND hour = date_trunc('hour', now()) - interval '5 days' UNION ALL"
              " SELECT 'raw rows', max(temp) FROM demo.readings WHERE sensor = 7"
              " AND ts >= date_trunc('hour', now()) - interval '5 days'"
              " AND ts < date_trunc('hour', now()) - interval '5 days' + interval '1 hour'"),
        Query("The jobs and their last runs",
              "SELECT job_id, application_name, last_run_status, total_runs, next_start"
              " FROM orochi.job_stats ORDER BY job_id"),
    ],
)

#: every capability the demo shows, in order
SECTIONS: list[Section] = [BRIDGE, COLUMNAR, TIMESERIES]


# ---------------------------------------------------------------------------
# the demo server


class DemoCluster(PostgresCluster):
    """A :class:`PostgresCluster` kept in a fixed folder across runs.

    The harness's cluster lives in a fresh temporary folder and is removed when
    the process exits; this one reuses ``directory`` (initdb only the first
    time) and is never stopped or removed unless :meth:`stop` is called.
    """

    def __init__(self, directory: str) -> None:
        directory = os.path.abspath(directory)
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        # preloading also in the per-start settings: a folder made by an older demo lacks it
        super().__init__("demo", keep=True, base_dir=parent, initdb_settings=DEMO_SETTINGS,
                         settings={"shared_preload_libraries": "orochi"})
        # Move from the temporary folder the harness made to the fixed one.
        os.rmdir(self.socket_dir)
        os.rmdir(self.base)
        self.base = directory
        self.datadir = os.path.join(directory, "data")
        self.socket_dir = os.path.join(directory, "sock")
        self.logfile = os.path.join(directory, "postgres.log")
        self.port_file = os.path.join(directory, "port")
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            for path in (directory, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.initialized = os.path.exists(os.path.join(self.datadir, "PG_VERSION"))
        self.port = self._running_port() or self._saved_port()

    def _running_port(self) -> int | None:
        """The port in postmaster.pid (4th line) if the server is running."""
        if not self.is_running():
            return None
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                lines = f.read().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def _saved_port(self) -> int | None:
        try:
            with open(self.port_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start_or_reuse(self) -> bool:
        """Start the server unless it runs already; returns True if it was started."""
        if self.is_running():
            self.wait_until_ready()
            preloaded = self.execute("SHOW shared_preload_libraries")[0][0]
            if "orochi" in [name.strip() for name in preloaded.split(",")]:
                return False
            self.stop()  # started by an older demo, without preloading
        if self.port is None:
            self.port = PREFERRED_PORT if _port_free(PREFERRED_PORT) else find_free_port(self.host)
        elif not _port_free(self.port):
            self.port = find_free_port(self.host)
        self.start()
        with open(self.port_file, "w") as f:
            f.write(f"{self.port}\n")
        return True

    def cleanup(self) -> None:
        """Never: the demo server outlives the process that started it."""


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------
# output


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 80) -> str:
    """Rows as psql prints them (aligned, with a row count)."""

    def cell(v: Any) -> str:
        s = "" if v is None else str(v)
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    def numeric(i: int) -> bool:
        values = [row[i] for row in rows if row[i] is not None]
        return bool(values) and all(isinstance(v, (int, float, decimal.Decimal)) for v in values)

    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in texts]) for i, c in enumerate(columns)]
    right = [numeric(i) for i in range(len(columns))]
    lines = [" " + " | ".join(c.center(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("-" + "-+-".join("-" * w for w in widths) + "-")
    for r in texts:
        cells = [v.rjust(w) if rj else v.ljust(w) for v, w, rj in zip(r, widths, right)]
        lines.append((" " + " | ".join(cells)).rstrip())
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def run_section(conn, section: Section) -> None:
    print(f"\n== {section.title}\n")
    print(section.intro)
    for statement in section.setup:
        conn.execute(statement)
    for query in section.queries:
        print(f"\n-- {query.title}")
        print(f"{query.sql};")
        start = time.perf_counter()
        cur = conn.execute(query.sql)
        elapsed = (time.perf_counter() - start) * 1000
        if cur.description:
            columns = [d.name for d in cur.description]
            rows = cur.fetchall()
            if columns == ["QUERY PLAN"]:
                print("\n".join(r[0] for r in rows))
            else:
                print(format_table(columns, rows))
        print(f"Time: {elapsed:.1f} ms")


def psql_command(cluster: DemoCluster) -> str:
    psql = shutil.which("psql") or os.path.join(cluster.bindir, "psql")
    return f"{psql} -h {cluster.socket_dir} -p {cluster.port} -U postgres {DATABASE}"


def print_connection(cluster: DemoCluster, directory: str) -> None:
    print(f"""
== The demo server is running

  data:       {cluster.datadir}
  log:        {cluster.logfile}
  port:       {cluster.port} (TCP on {cluster.host}; unix socket in {cluster.socket_dir})
  user:       postgres (no password: trust authentication, local connections only)
  database:   {DATABASE} (rebuilt by each demo run; create your own databases beside it)

Connect with psql:

  {psql_command(cluster)}
  psql "host={cluster.host} port={cluster.port} user=postgres dbname={DATABASE}"

Stop it:

  {_self_command()} --stop{'' if directory == DEFAULT_DIR else f' --dir {directory}'}
""")


def _self_command() -> str:
    return f"{sys.executable} -m orochi_fdw.demo"


# ---------------------------------------------------------------------------
# main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orochi_fdw.demo",
        description="Start a private PostgreSQL with Orochi, load sample data, run sample queries.",
    )
    parser.add_argument("--dir", default=os.environ.get("OROCHI_DEMO_DIR", DEFAULT_DIR),
                        help=f"folder of the demo server's files (default {DEFAULT_DIR})")
    parser.add_argument("--stop", action="store_true", help="stop the demo server and exit")
    args = parser.parse_args(argv)
    directory = os.path.abspath(args.dir)

    if args.stop:
        if not os.path.isdir(os.path.join(directory, "data")):
            print(f"no demo server in {directory}")
            return 0
        cluster = DemoCluster(directory)
        if not cluster.is_running():
            print(f"the demo server in {directory} is not running")
            return 0
        cluster.stop("fast")
        print(f"stopped the demo server in {directory} (its files stay there; delete the folder to discard them)")
        return 0

    cluster = DemoCluster(directory)
    try:
        started = cluster.start_or_reuse()
    except ClusterError as exc:
        print(f"could not start the demo server:\n{exc}", file=sys.stderr)
        return 1
    print(f"{'started' if started else 'reusing'} the demo server in {directory} on port {cluster.port}")

    cluster.drop_database(DATABASE)
    try:
        cluster.create_database(DATABASE)
    except Exception as exc:  # the extension cannot be created: say why, keep the server
        print(f"could not CREATE EXTENSION orochi: {exc}\n(is the extension installed? run `make install`)",
              file=sys.stderr)
        print_connection(cluster, directory)
        return 1
    with cluster.connect(DATABASE, autocommit=True) as conn:
        for section in SECTIONS:
            run_section(conn, section)
    print_connection(cluster, directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
