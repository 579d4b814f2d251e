"""Running tasks on the workers and turning their results into batches.

A statement's tasks (one per node, see :mod:`orochi_fdw.cluster.planner`)
all start at once on the sessions of the current distributed transaction
(:mod:`orochi_fdw.cluster.transaction`); results come back as libpq
results in text form.  :func:`text_columns` turns them into the bridge's
wire columns without a Python object per value beyond the bytes libpq
hands out: TEXT for text columns, CSTRING (through the type's input
function, which reads back exactly what the worker's output function
wrote) for the others.

Every execution (a call of :func:`run`, :func:`fetch` or :func:`copy_into`
with tasks) adds to the server's executor counters in shared memory
(``orochi.executor_counters()``, the sidecar's ``/metrics``): one query,
the shards its tasks cover, and one failure if it raised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orochi_fdw.bridge.batch import Column, WireKind
from orochi_fdw.cluster import connection as C
from orochi_fdw.cluster.planner import Task
from orochi_fdw.cluster.transaction import current as txn

try:  # the bridge's module, in a backend only
    import _orochi_stats
except ImportError:  # pragma: no cover - outside a backend
    _orochi_stats = None


def _count(queries: int, shards: int, failures: int = 0) -> None:
    """Add to the server's executor counters (nothing outside a backend)."""
    if _orochi_stats is not None:
        _orochi_stats.add(queries, shards, failures)


@dataclass
class TaskRun:
    """A task's results and timing (EXPLAIN ANALYZE)."""

    task: Task
    results: list = field(default_factory=list)
    seconds: float = 0.0

    results_rows: int = 0

    @property
    def rows(self) -> int:
        return sum(r.ntuples for r in self.results) + self.results_rows


def run(tasks: list[Task], *, write: bool = False) -> list[TaskRun]:
    """Run the tasks, all nodes at once, in the current distributed
    transaction (``write``: they modify, so the transaction commits them
    with the right protocol).

    Raises:
        RemoteError: a worker's error, as the worker reported it.
        NodeConnectionError: a worker could not be reached.
    """
    if not tasks:
        return []
    _count(1, sum(len(t.shards) for t in tasks))
    try:
        sessions = txn.sessions_for([t.node for t in tasks])
        if write:
            txn.mark_written(sessions[t.node.node_id] for t in tasks)
        jobs = [C.Job(sessions[t.node.node_id], C.command(sessions[t.node.node_id], t.sql, t.params))
                for t in tasks]
        _run_or_raise(jobs)
    except BaseException:
        _count(0, 0, 1)
        raise
    return [TaskRun(t, j.result or [], j.finished - j.started) for t, j in zip(tasks, jobs)]


_cursors = iter(range(1, 1 << 62))


def fetch(tasks: list[Task], rows_per_fetch: int = 20_000, runs: list | None = None):
    """Run the tasks' SELECTs as cursors on their nodes and yield
    ``(task, result)`` as the rows come, ``rows_per_fetch`` per node and
    round (all nodes at once): the coordinator holds at most that many rows
    per node, whatever the scan's size.  A scan abandoned early leaves its
    cursors to the end of the remote transactions.  ``runs`` collects the
    per-task timing (EXPLAIN ANALYZE)."""
    if not tasks:
        return
    _count(1, sum(len(t.shards) for t in tasks))
    try:
        yield from _fetch(tasks, rows_per_fetch, runs)
    except GeneratorExit:  # abandoned early: not a failure
        raise
    except BaseException:
        _count(0, 0, 1)
        raise


def _fetch(tasks: list[Task], rows_per_fetch: int, runs: list | None):
    name = f"orochi_cursor_{next(_cursors)}".encode()
    sessions = txn.sessions_for([t.node for t in tasks])
    declares = [C.Job(sessions[t.node.node_id], C.command(
        sessions[t.node.node_id], b"DECLARE " + name + b" NO SCROLL CURSOR FOR " + t.sql, t.params))
        for t in tasks]
    timings = {id(t): TaskRun(t) for t in tasks}
    if runs is not None:
        runs.extend(timings.values())
    _run_or_raise(declares)
    for t, job in zip(tasks, declares):
        timings[id(t)].seconds += job.finished - job.started
    fetch_sql = f"FETCH {int(rows_per_fetch)} FROM ".encode() + name
    active = list(tasks)
    while active:
        jobs = [C.Job(sessions[t.node.node_id], C.command(sessions[t.node.node_id], fetch_sql)) for t in active]
        _run_or_raise(jobs)
        still = []
        for t, job in zip(active, jobs):
            timing = timings[id(t)]
            timing.seconds += job.finished - job.started
            for res in job.result or []:
                timing.results_rows = getattr(timing, "results_rows", 0) + res.ntuples
                if res.ntuples:
                    yield t, res
                if res.ntuples >= rows_per_fetch:
                    still.append(t)
        active = still


def _run_or_raise(jobs: list) -> None:
    try:
        error = C.run_jobs(jobs)
    except BaseException:
        txn._lost("a command was interrupted")
        raise
    if error is not None:
        txn._lost(str(error))
        raise error


def copy_into(pieces: list[tuple[Any, bytes, list[bytes]]]) -> list[TaskRun]:
    """COPY FROM STDIN: ``(node, copy statement, chunks)`` per shard; the
    shards of one node one after the other, nodes at once."""
    if not pieces:
        return []
    _count(1, len(pieces))  # a piece is one shard placement's rows
    try:
        sessions = txn.sessions_for([p[0] for p in pieces])
        txn.mark_written(sessions[p[0].node_id] for p in pieces)
        jobs = [C.Job(sessions[node.node_id], C.copy_in(sessions[node.node_id], stmt, chunks))
                for node, stmt, chunks in pieces]
        try:
            error = C.run_jobs(jobs)
        except BaseException:
            txn._lost("a COPY was interrupted")
            raise
        if error is not None:
            txn._lost(str(error))
            raise error
    except BaseException:
        _count(0, 0, 1)
        raise
    return [TaskRun(Task(node, [], stmt), j.result or [], j.finished - j.started)
            for (node, stmt, _), j in zip(pieces, jobs)]


def text_values(results: list, column: int) -> list[bytes | None]:
    """One column of results, as the bytes of each value (None for NULL)."""
    out: list[bytes | None] = []
    for res in results:
        get = res.get_value
        out.extend(get(r, column) for r in range(res.ntuples))
    return out


def to_column(values: list[bytes | None], kind: WireKind) -> Column:
    """Text values as a TEXT or CSTRING wire column."""
    n = len(values)
    lengths = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(v for v in values if v is not None), dtype=np.uint8)
    validity = None
    if any(v is None for v in values):
        validity = np.fromiter((v is not None for v in values), dtype=np.uint8, count=n)
    return Column(kind, data, validity, offsets)


def text_columns(results: list, kinds: list[WireKind], first: int = 0) -> list[Column]:
    """Columns ``first``.. of results as wire columns of the given kinds
    (TEXT for text columns, CSTRING for any other)."""
    return [to_column(text_values(results, first + i), kind) for i, kind in enumerate(kinds)]


def now() -> float:
    return time.perf_counter()
