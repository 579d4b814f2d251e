"""The ``recovery`` duty: resolve the prepared transactions a coordinator
left on its workers (``orochi.recover_prepared_transactions()``), at start
and then every ``recovery.interval`` seconds, as Citus's maintenance daemon
does.  The work itself is the SQL function's (orochi_fdw.cluster.recovery);
this only calls it."""

from __future__ import annotations

import logging

import psycopg

from orochi_fdw.sidecar.duties import DaemonContext, Duty

logger = logging.getLogger("orochi.sidecar.recovery")


class RecoveryDuty(Duty):
    """Calls orochi.recover_prepared_transactions() on the coordinator."""

    name = "recovery"

    def __init__(self, context: DaemonContext):
        super().__init__(context)
        self.config = context.config
        self._conn: psycopg.Connection | None = None
        self._resolved = context.metrics.counter(
            "orochi_sidecar_prepared_transactions_recovered_total",
            "Prepared transactions on workers committed or rolled back by recovery.")

    def run_cycle(self) -> str:
        interval = self.config["recovery.interval"]
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.config["dsn"], autocommit=True,
                                             connect_timeout=self.config["connect_timeout"],
                                             application_name=self.config["application_name"])
            try:
                n = self._conn.execute("SELECT orochi.recover_prepared_transactions()").fetchone()[0]
            except psycopg.errors.UndefinedFunction:
                self.schedule_in(interval)
                return "no distributed tables here (orochi.recover_prepared_transactions is missing)"
        except psycopg.OperationalError as exc:
            self.close()
            self.context.postgres_up[self.name] = False
            self.schedule_in(min(interval, self.config["reconnect.max_delay"]))
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("postgres unreachable: %s", first)
            return f"postgres unreachable ({first})"
        self.context.postgres_up[self.name] = True
        self._resolved.inc(n)
        self.schedule_in(interval)
        return f"recovered {n} prepared transaction{'s' if n != 1 else ''}" if n else "nothing to recover"

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self._conn = None
