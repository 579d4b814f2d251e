"""The distributed executor's counters of the local PostgreSQL on /metrics.

The backends that run distributed statements count them in shared memory
(``orochi.executor_counters()``); each scrape of ``/metrics`` reads them
from the sidecar's database (its ``dsn``, which needs the orochi extension)
and exports them as Prometheus counters:

- ``orochi_distributed_queries_total``: executions (a statement's tasks sent
  to the workers);
- ``orochi_shards_accessed_total``: the shards their tasks covered;
- ``orochi_executor_failures_total``: executions that failed.

They restart from zero when PostgreSQL restarts, which Prometheus treats as
a counter reset.  When PostgreSQL does not answer (or the database has no
orochi extension) the last values read stay, and
``orochi_executor_counters_up`` is 0.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from orochi_fdw.sidecar.metrics import Registry

logger = logging.getLogger("orochi.sidecar.metrics")

_NAMES = ("distributed_queries", "shards_accessed", "executor_failures")


class ExecutorCounters:
    """Reads ``orochi.executor_counters()`` into the registry on demand."""

    def __init__(self, registry: Registry, dsn: str, timeout: float = 2.0):
        self.dsn = dsn
        self.timeout = timeout
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self.counters = {
            "distributed_queries": registry.counter(
                "orochi_distributed_queries_total",
                "Distributed executions on the local PostgreSQL (a statement's tasks sent to the workers)."),
            "shards_accessed": registry.counter(
                "orochi_shards_accessed_total", "Shards the distributed executions' tasks covered."),
            "executor_failures": registry.counter(
                "orochi_executor_failures_total",
                "Distributed executions that failed (a worker's error, an unreachable worker, a cancellation)."),
        }
        self.up = registry.gauge("orochi_executor_counters_up",
                                 "1 when the last scrape read orochi.executor_counters() from PostgreSQL.")

    def collect(self) -> bool:
        """Read the counters now; whether it worked."""
        with self._lock:
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.timeout)),
                                     application_name="orochi-sidecar metrics") as conn:
                    row = conn.execute("SELECT distributed_queries, shards_accessed, executor_failures "
                                       "FROM orochi.executor_counters()").fetchone()
            except psycopg.Error as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if message != self._last_error:
                    logger.warning("reading orochi.executor_counters(): %s", message)
                    self._last_error = message
                self.up.set(0)
                return False
            self._last_error = None
            for name, value in zip(_NAMES, row):
                self.counters[name].set_total(float(value))
            self.up.set(1)
            return True
