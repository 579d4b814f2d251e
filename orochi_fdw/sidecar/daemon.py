"""The daemon's loop: runs each duty's cycle when it is due.

:meth:`Daemon.run_cycle` runs the duties that are due and returns their
status lines joined; an exception a duty raises is logged with its traceback
and reported in the status, and the loop goes on.
"""

from __future__ import annotations

import logging
import time

from orochi_fdw.sidecar.config import Config
from orochi_fdw.sidecar.duties import DaemonContext, Duty, load_duty
from orochi_fdw.sidecar.executor_metrics import ExecutorCounters
from orochi_fdw.sidecar.metrics import Registry

logger = logging.getLogger("orochi.sidecar")

#: longest sleep between two looks at the duties, so a stop is noticed soon
_MAX_SLEEP = 1.0


class Daemon:
    """The loop over the configured duties, and what /health reports of it."""

    def __init__(self, config: Config, duties: list[Duty] | None = None):
        self.context = DaemonContext(config=config, metrics=Registry())
        metrics = self.context.metrics
        self._up = metrics.gauge("orochi_sidecar_postgres_up",
                                 "1 when the last cycle reached Postgres, else 0.")
        self._cycles = metrics.counter("orochi_sidecar_cycles_total", "Cycles of the daemon's loop.")
        self._cycle_errors = metrics.counter("orochi_sidecar_cycle_errors_total",
                                             "Duty cycles that raised an unexpected exception.", ["duty"])
        self._started = metrics.gauge("orochi_sidecar_start_time_seconds",
                                      "When the daemon started (Unix time).")
        self._started.set(time.time())
        self.executor_counters = ExecutorCounters(metrics, config["dsn"])
        self.duties = duties if duties is not None else [load_duty(name)(self.context)
                                                        for name in config["duties"]]
        self.last_status: str | None = None
        self.last_cycle_at: float | None = None

    @property
    def stopping(self) -> bool:
        return self.context.stopping.is_set()

    def postgres_reachable(self) -> bool:
        """Whether the last cycle of every duty that uses Postgres reached it."""
        ups = self.context.postgres_up
        return bool(ups) and all(ups.values())

    def run_cycle(self) -> str:
        """Run every duty that is due.

        Returns:
            The duties' status lines (``jobs: ran 2 of 2 due jobs (2 success)``),
            or ``idle`` when none was due.
        """
        now = time.monotonic()
        statuses = []
        for duty in self.duties:
            if duty.next_due() > now or self.stopping:
                continue
            try:
                status = duty.run_cycle()
            except Exception as exc:  # a bug in a duty must not stop the daemon
                logger.exception("duty %s failed", duty.name)
                self._cycle_errors.inc(duty=duty.name)
                duty.schedule_in(self.context.config["reconnect.min_delay"])
                status = f"unexpected error: {type(exc).__name__}: {exc}"
            statuses.append(f"{duty.name}: {status}")
        self._cycles.inc()
        self._up.set(1 if self.postgres_reachable() else 0)
        self.last_cycle_at = time.time()
        status = "; ".join(statuses) if statuses else "idle"
        if statuses:
            self.last_status = status
        return status

    def collect_metrics(self) -> None:
        """Read what /metrics shows from elsewhere (PostgreSQL's executor
        counters), right before it is rendered."""
        self.executor_counters.collect()

    def sleep_time(self) -> float:
        """Seconds until a duty is due, at most a second."""
        if not self.duties:
            return _MAX_SLEEP
        wait = min(d.next_due() for d in self.duties) - time.monotonic()
        return min(max(wait, 0.0), _MAX_SLEEP)

    def run(self) -> None:
        """Loop until :meth:`stop`."""
        while not self.stopping:
            status = self.run_cycle()
            if status != "idle":
                logger.debug("cycle: %s", status)
            self.context.stopping.wait(self.sleep_time())

    def stop(self) -> None:
        """Ask the loop to stop after the work it is doing."""
        self.context.stopping.set()

    def cancel_running(self) -> None:
        """Cancel what the duties are running (the grace period is over)."""
        for duty in self.duties:
            try:
                duty.cancel()
            except Exception:
                logger.exception("duty %s: cancelling failed", duty.name)

    def close(self) -> None:
        """Release the duties' resources."""
        for duty in self.duties:
            try:
                duty.close()
            except Exception:
                logger.exception("duty %s: closing failed", duty.name)
