"""The ``rebalance`` duty: run the shard moves queued by
``orochi.move_shard``, ``rebalance_table_shards`` and ``drain_node``, one
at a time in a thread of their own, and finish or roll back the moves
whose runner died (a killed sidecar, a restarted coordinator) every
``rebalance.poll_interval`` seconds.  The work is
:class:`orochi_fdw.cluster.mover.Runner`'s; with ``--once`` the cycle runs
the queue to its end before returning."""

from __future__ import annotations

import logging
import threading

import psycopg

from orochi_fdw.sidecar.duties import DaemonContext, Duty

logger = logging.getLogger("orochi.sidecar.rebalance")


class RebalanceDuty(Duty):
    """Runs the queued shard moves of the coordinator database."""

    name = "rebalance"

    def __init__(self, context: DaemonContext):
        super().__init__(context)
        self.config = context.config
        self._thread: threading.Thread | None = None
        self._last = "idle"
        self._moves = context.metrics.counter("orochi_sidecar_shard_moves_total",
                                              "Shard moves run to their end (done, failed or stopped).")

    def _work(self) -> None:
        from orochi_fdw.cluster.mover import Runner

        runner = Runner(self.config["dsn"], stopping=self.context.stopping,
                        application_name=self.config["application_name"])
        try:
            results = runner.run_pending()
            self._moves.inc(len(results))
            self._last = (", ".join(f"move {m}: {o}" for m, o in results) if results else "no move queued")
            self.context.postgres_up[self.name] = True
        except psycopg.OperationalError as exc:
            self.context.postgres_up[self.name] = False
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._last = f"postgres unreachable ({first})"
            logger.warning("rebalance: %s", self._last)
        except psycopg.errors.UndefinedTable:
            self.context.postgres_up[self.name] = True
            self._last = "no rebalancer here (orochi.dist_move is missing)"
        finally:
            runner.close()

    def run_cycle(self) -> str:
        self.schedule_in(self.config["rebalance.poll_interval"])
        if self.context.once:
            self._work()
            return self._last
        if self._thread is not None and self._thread.is_alive():
            return "a move is running"
        status = self._last
        self._thread = threading.Thread(target=self._work, name="rebalance", daemon=True)
        self._thread.start()
        return status

    def snapshot(self):
        return {"last": self._last, "running": bool(self._thread and self._thread.is_alive())}

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(5.0)
