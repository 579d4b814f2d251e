"""The rebalancer benchmark (issue 15, "Benchmark"): move rate and the
longest write stall of a client inserting every 10 ms while a shard moves,
for Orochi's online move and, in the same run, for the anchor: a move that
blocks the shard's writers for the whole copy (what Citus does without
logical replication: block writes, copy, switch the metadata).

Three PostgreSQL clusters on this machine (a coordinator and two workers,
:class:`orochi_fdw.testing.distributed.LocalCluster`).  A table distributed
over 2 shards (one per worker, columnar shards) is filled with ``--rows``
rows of about 170 bytes in COPY's binary form (``--rows 12000000``: ~1 GB
per shard, the issue's size; the default is smaller for this shared
machine).  Then, for each kind of move, shard 1 moves to the other worker
while a client inserts one row every 10 ms (keys spread over both shards)
and records each INSERT's latency:

- ``online``: orochi.move_shard run by the rebalancer (copy while writes go
  on, catch-up, switch under the group's lock);
- ``blocking``: the anchor, done here with the same building blocks: the
  group's lock taken before the copy and held until the metadata points at
  the target.

Reported: the bytes copied (COPY binary), the move's wall time and rate
(MB/s), the switch's lock-held time, and the writer's latency (p50, p99,
max) during the move and before it.

    python bench/rebalance_bench.py [--rows N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bridge_bench import git_commit, load_average, log  # noqa: E402

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from orochi_fdw.cluster import mover as M  # noqa: E402
from orochi_fdw.cluster.rebalance import GROUP_LOCK  # noqa: E402
from orochi_fdw.testing.distributed import LocalCluster  # noqa: E402

RESULTS = os.path.join(HERE, "results", "rebalance.md")
SETTINGS = {"shared_buffers": "512MB", "max_wal_size": "8GB", "jit": "off"}


class Writer:
    """Inserts a row every 10 ms; records (start time, latency)."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        key = 10_000_000
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                key += 1
                t0 = time.perf_counter()
                try:
                    c.execute("INSERT INTO m (k, v, pad) VALUES (%s, %s, 'writer')", (key, key))
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                lat = time.perf_counter() - t0
                self.samples.append((t0, lat))
                time.sleep(max(0.0, 0.010 - lat))

    def window(self, t0: float, t1: float) -> list[float]:
        return [lat * 1000 for start, lat in self.samples if t0 <= start + lat and start <= t1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def shard_and_nodes(conn) -> tuple[int, int, int, int]:
    shard_id, node = conn.execute(
        "SELECT s.shard_id, p.node_id FROM orochi.dist_shard s JOIN orochi.dist_placement p USING (shard_id)"
        " WHERE s.relid = 'm'::regclass ORDER BY s.shard_index LIMIT 1").fetchone()
    other = conn.execute("SELECT node_id FROM orochi.dist_node WHERE node_id <> %s ORDER BY node_id LIMIT 1",
                         (node,)).fetchone()[0]
    coloc = conn.execute("SELECT colocation_id FROM orochi.dist_table WHERE relid = 'm'::regclass").fetchone()[0]
    return int(shard_id), int(node), int(other), int(coloc)


def online_move(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True) as c:
        shard, src, dst, _ = shard_and_nodes(c)
        c.execute("SELECT orochi.move_shard(%s, %s)", (shard, dst))
    phases: dict[str, float] = {}
    runner = M.Runner(dsn, on_phase=lambda p, m: phases.setdefault(p, time.perf_counter()))
    t0 = time.perf_counter()
    try:
        result = runner.run_pending()
    finally:
        runner.close()
    t1 = time.perf_counter()
    assert [o for _, o in result] == ["done"], result
    with psycopg.connect(dsn, autocommit=True) as c:
        copied, switch_ms, applied = c.execute(
            "SELECT bytes_copied, switch_ms, changes_applied FROM orochi.dist_move ORDER BY move_id DESC LIMIT 1"
        ).fetchone()
    return {"t0": t0, "t1": t1, "bytes": int(copied), "lock_ms": float(switch_ms), "applied": int(applied),
            "copy_s": phases.get("copied", t1) - t0, "phases": phases}


def stall_phase(r: dict, samples: list[tuple[float, float]]) -> str:
    """The fault points passed during the longest stall of the writer (or
    the last one before it): where the stall happened."""
    phases = r.get("phases")
    window = [(start, lat) for start, lat in samples if r["t0"] <= start + lat and start <= r["t1"]]
    if not phases or not window:
        return "-"
    start, lat = max(window, key=lambda x: x[1])
    inside = [p for p, t in sorted(phases.items(), key=lambda x: x[1]) if start <= t <= start + lat]
    if inside:
        return "during " + ", ".join(inside)
    before = [p for p, t in sorted(phases.items(), key=lambda x: x[1]) if t < start]
    return f"after {before[-1]}" if before else "before setup"


def blocking_move(dsn: str) -> dict:
    """The anchor: the group's writers blocked from before the copy until
    the metadata points at the target."""
    runner = M.Runner(dsn)
    runner.open()
    coord = runner.coord
    shard, src_node, dst_node, coloc = shard_and_nodes(coord)
    move_id = -1
    m = M.Move(move_id, 0, coloc, [shard], src_node, dst_node, "copy", False)
    schema, base, storage, dist = coord.execute(
        "SELECT shard_schema::text, shard_base::text, shard_storage,"
        " (SELECT attname::text FROM pg_attribute WHERE attrelid = relid AND attnum = dist_attnum)"
        " FROM orochi.dist_table WHERE relid = 'm'::regclass").fetchone()
    s = M.ShardInfo(shard, schema, M._shard_name(base, shard), storage, dist, "m")
    src, tgt = runner.node(src_node), runner.node(dst_node)
    lock = psycopg.connect(dsn, autocommit=False)
    t0 = time.perf_counter()
    lock.execute("SELECT pg_advisory_xact_lock(%s, %s)", (GROUP_LOCK, coloc))  # writers wait from here
    t_locked = time.perf_counter()
    copied = 0
    with src.transaction(), tgt.transaction():
        for stmt in M._definition(src, s):
            tgt.execute(stmt)
        with src.cursor().copy(sql.SQL("COPY (SELECT * FROM ONLY {}) TO STDOUT (FORMAT binary)").format(s.ident)) as cout, \
                tgt.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(s.ident)) as cin:
            for data in cout:
                cin.write(data)
                copied += len(data)
    lock.execute("UPDATE orochi.dist_placement SET node_id = %s WHERE shard_id = %s", (dst_node, shard))
    lock.commit()
    t_unlocked = time.perf_counter()
    src.execute(sql.SQL("DROP FOREIGN TABLE {}").format(s.ident))
    t1 = time.perf_counter()
    for c in (src, tgt, lock):
        c.close()
    runner.close()
    del m
    return {"t0": t0, "t1": t1, "bytes": copied, "lock_ms": (t_unlocked - t_locked) * 1000, "applied": 0,
            "copy_s": t_unlocked - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="rows in the table (half per shard)")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/rebalance.md")
    args = parser.parse_args(argv)
    load_start = load_average()
    lc = LocalCluster(workers=2, name="rebalbench", settings=SETTINGS)
    lc.start()
    try:
        dsn = lc.coordinator.dsn(lc.dbname)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE TABLE m (k bigint NOT NULL, v bigint, ts timestamptz, pad text)")
            c.execute("SELECT orochi.create_distributed_table('m', 'k', 2, colocate_with => 'none')")
            log(f"loading {args.rows:,} rows")
            t = time.perf_counter()
            c.execute("INSERT INTO m SELECT g, g * 7, timestamptz '2026-01-01' + g * interval '1 second',"
                      " md5(g::text) || md5((g * 3)::text) || md5((g * 5)::text) || md5((g * 11)::text)"
                      " FROM generate_series(1, %s) g", (args.rows,))
            log(f"loaded in {time.perf_counter() - t:.1f} s")
        results = {}
        for kind, fn in (("online", online_move), ("blocking", blocking_move)):
            writer = Writer(dsn)
            writer.thread.start()
            time.sleep(3.0)  # latency before the move
            before_end = time.perf_counter()
            log(f"{kind} move ...")
            r = fn(dsn)
            time.sleep(1.0)
            writer.stop.set()
            writer.thread.join(30)
            during = writer.window(r["t0"], r["t1"])
            before = [lat * 1000 for start, lat in writer.samples[5:] if start + lat < before_end]  # warm
            r.update(during=during, before=before, errors=list(writer.errors), n=len(writer.samples),
                     where=stall_phase(r, writer.samples))
            results[kind] = r
            log(f"{kind}: {r['bytes'] / 1e6:.1f} MB in {r['t1'] - r['t0']:.2f} s, lock held {r['lock_ms']:.1f} ms,"
                f" writer max {max(during or [0]):.1f} ms, p99 {pct(during, 0.99):.1f} ms, errors {len(writer.errors)}")
        with psycopg.connect(dsn, autocommit=True) as c:
            total = c.execute("SELECT count(*) FROM m").fetchone()[0]
        writes = sum(r["n"] - len(r["errors"]) for r in results.values())
    finally:
        lc.cleanup()
    load_end = load_average()
    lines = [
        "# Rebalancer benchmark",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {git_commit()},"
        f" load average {load_start} at the start, {load_end} at the end (2 cores, shared).",
        "",
        f"A coordinator and 2 workers on this machine; table `m` over 2 columnar shards, {args.rows:,} rows;"
        " shard 1 moves to the other worker while a client inserts a row every 10 ms (both shards).",
        "",
        "| move | bytes copied | wall time | rate | copy until switch | lock held | changes caught up |"
        " writer p50 | writer p99 | writer max (longest stall) | longest stall at | writer p99 before | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for kind, r in results.items():
        wall = r["t1"] - r["t0"]
        lines.append(
            f"| {kind} | {r['bytes'] / 1e6:.1f} MB | {wall:.2f} s | {r['bytes'] / 1e6 / wall:.1f} MB/s |"
            f" {r['copy_s']:.2f} s | {r['lock_ms']:.1f} ms | {r['applied']} |"
            f" {pct(r['during'], 0.5):.1f} ms | {pct(r['during'], 0.99):.1f} ms | {max(r['during'] or [0]):.1f} ms |"
            f" {r['where']} |"
            f" {pct(r['before'], 0.99):.1f} ms | {len(r['errors'])} |")
    lines += ["", f"Rows after both moves: {total:,} ({writes:,} single-row INSERTs by the writer, none lost:"
                  f" {total - args.rows == writes}).", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
