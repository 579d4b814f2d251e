"""The sidecar's cdc duty: one worker thread per running subscription.

Every ``cdc.poll_interval`` seconds the duty reads the subscriptions that
are ``running`` and starts a worker for each one no worker runs yet (at most
``cdc.max_workers``); a worker claims its subscription with a session
advisory lock, so with several sidecars on one database each subscription
has one worker.  Workers end by themselves when their subscription is
stopped, dropped or fails.  Each cycle the duty also

- fails a subscription whose slot holds more WAL than its ``max_lag`` and
  drops the slot, whether a worker runs it or not (a stopped subscription's
  slot keeps WAL too);
- drops the slots (and publications) of subscriptions that no longer exist
  (a drop whose slot was in use, or rolled back after the slot went).

``orochi-sidecar --once`` runs, instead, one cycle of every running
subscription (its snapshot first if it has none yet, then what its slot
holds) and exits.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import psycopg

from orochi_fdw.cdc import catalog
from orochi_fdw.cdc.errors import InvalidCdcOptionError
from orochi_fdw.cdc.options import check_options
from orochi_fdw.cdc.sinks import SinkUnavailable
from orochi_fdw.cdc.worker import (CdcWorker, SubscriptionBusy, SubscriptionFailed, SubscriptionGone,
                                   first_line)
from orochi_fdw.sidecar.duties import DaemonContext, Duty

logger = logging.getLogger("orochi.sidecar.cdc")

_ORPHAN_PUBLICATIONS = """
SELECT p.pubname::text FROM pg_catalog.pg_publication p
 WHERE p.pubname ~ '^orochi_cdc_[0-9]+$'
   AND NOT EXISTS (SELECT 1 FROM orochi.cdc_subscription s WHERE s.publication_name = p.pubname)
"""


class _Running:
    def __init__(self, worker: CdcWorker, thread: threading.Thread):
        self.worker = worker
        self.thread = thread


class CdcDuty(Duty):
    """Runs the CDC subscriptions of the database (see the module docstring)."""

    name = "cdc"

    def __init__(self, context: DaemonContext):
        super().__init__(context)
        self.config = context.config
        self._control: psycopg.Connection | None = None
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._reconnect_delay = self.config["reconnect.min_delay"]
        self._waiting: list[int] = []
        metrics = context.metrics
        self._events = metrics.counter("orochi_sidecar_cdc_events_total", "Change events delivered by each "
                                       "subscription.", ["subscription"])
        self._deliveries = metrics.histogram("orochi_sidecar_cdc_delivery_seconds",
                                             "Duration of deliveries to the sinks, in seconds.", ["subscription"])
        self._workers = metrics.gauge("orochi_sidecar_cdc_workers", "CDC workers running.")

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.config["dsn"], autocommit=True, connect_timeout=self.config["connect_timeout"],
                               application_name=self.config["application_name"])

    def _worker(self, definition: catalog.SubscriptionDef, stop: threading.Event | None = None) -> CdcWorker:
        worker = CdcWorker(definition, self.config["dsn"], application_name=self.config["application_name"],
                           connect_timeout=self.config["connect_timeout"], stop=stop,
                           min_delay=self.config["reconnect.min_delay"], max_delay=self.config["reconnect.max_delay"],
                           client_check_interval=self.config["jobs.client_check_interval"],
                           peek_changes=self.config["cdc.peek_changes"])
        label = definition.name

        def counted(events: int, elapsed: float) -> None:
            self._events.inc(events, subscription=label)
            self._deliveries.observe(elapsed, subscription=label)
        worker.on_delivery = counted
        return worker

    def _unreachable(self, exc: BaseException) -> str:
        if self._control is not None:
            try:
                self._control.close()
            except Exception:
                pass
        self._control = None
        self.context.postgres_up[self.name] = False
        delay = self._reconnect_delay
        self._reconnect_delay = min(delay * 2, self.config["reconnect.max_delay"])
        self.schedule_in(delay)
        return f"postgres unreachable ({first_line(exc)}); retrying in {delay:.1f}s"

    # ------------------------------------------------------------ the cycle
    def run_cycle(self) -> str:
        try:
            if self._control is None or self._control.closed:
                self._control = self._connect()
            try:
                subscriptions = catalog.runnable(self._control)
            except psycopg.errors.UndefinedTable:
                self.context.postgres_up[self.name] = True
                self.schedule_in(self.config["cdc.poll_interval"])
                return "the orochi extension (with cdc) is not installed in this database"
            housekeeping = self._housekeeping()
        except psycopg.OperationalError as exc:
            return self._unreachable(exc)
        self.context.postgres_up[self.name] = True
        self._reconnect_delay = self.config["reconnect.min_delay"]
        if getattr(self.context, "once", False):
            status = self._run_once([s for s in subscriptions if s.subscription_id not in housekeeping])
        else:
            status = self._reconcile(subscriptions)
            self.schedule_in(self.config["cdc.poll_interval"])
        return status

    def _housekeeping(self) -> set[int]:
        """max_lag of every slot; orphaned slots and publications.  Returns
        the subscriptions failed now."""
        assert self._control is not None
        conn = self._control
        failed = set()
        for sid, name, sink, format, options, slot, retained in conn.execute(catalog.WITH_SLOTS).fetchall():
            try:
                limit = check_options(sink, format, json.loads(options)).max_lag_bytes
            except InvalidCdcOptionError:
                continue
            if limit is not None and retained is not None and int(retained) > limit:
                reason = (f"the replication slot held {int(retained)} bytes of WAL, more than max_lag ({limit}): "
                          "the slot was dropped; start the subscription again for a new snapshot")
                logger.error("subscription %d (%s): %s", sid, name, reason)
                catalog.fail_and_drop_slot(conn, sid, slot, reason)
                failed.add(int(sid))
        for slot, _pid in conn.execute(catalog.ORPHAN_SLOTS).fetchall():
            if catalog.drop_slot(conn, slot):
                logger.info("dropped replication slot %s: its subscription no longer exists", slot)
        for (publication,) in conn.execute(_ORPHAN_PUBLICATIONS).fetchall():
            try:
                conn.execute(psycopg.sql.SQL("DROP PUBLICATION IF EXISTS {}").format(psycopg.sql.Identifier(publication)))
            except psycopg.Error as exc:
                logger.warning("could not drop publication %s: %s", publication, first_line(exc))
        return failed

    def _reconcile(self, subscriptions: list[catalog.SubscriptionDef]) -> str:
        with self._lock:
            for sid, running in list(self._running.items()):
                if not running.thread.is_alive():
                    del self._running[sid]
            wanted = {s.subscription_id: s for s in subscriptions}
            for sid, running in self._running.items():
                current = wanted.get(sid)
                old = running.worker.definition
                if current is None or (current.options, current.owner, current.sink, current.format) != \
                        (old.options, old.owner, old.sink, old.format):
                    running.worker.stop.set()  # a changed one starts again next cycle
            self._waiting = []
            for definition in subscriptions:
                sid = definition.subscription_id
                if sid in self._running or definition.claimed or self.context.stopping.is_set():
                    continue
                if len(self._running) >= self.config["cdc.max_workers"]:
                    self._waiting.append(sid)
                    continue
                try:
                    worker = self._worker(definition, threading.Event())
                except InvalidCdcOptionError as exc:
                    self._fail_invalid(definition, str(exc))
                    continue
                thread = threading.Thread(target=worker.run, name=f"cdc-{sid}", daemon=True)
                self._running[sid] = _Running(worker, thread)
                thread.start()
                logger.info("subscription %d (%s): worker started (%s to %s)", sid, definition.name,
                            definition.format, definition.sink)
            self._workers.set(len(self._running))
            names = [f"{r.worker.definition.name} ({r.worker.status})" for r in self._running.values()]
        if not names and not self._waiting:
            return "no subscription running"
        text = f"{len(names)} worker{'s' if len(names) != 1 else ''}: " + ", ".join(names) if names else "no worker"
        if self._waiting:
            text += f"; {len(self._waiting)} waiting for a free worker (cdc.max_workers)"
        return text

    def _fail_invalid(self, definition: catalog.SubscriptionDef, message: str) -> None:
        assert self._control is not None
        try:
            catalog.mark_failed(self._control, definition.subscription_id, f"invalid options: {message}")
        except psycopg.Error as exc:
            logger.warning("subscription %d: could not record its failure: %s", definition.subscription_id,
                           first_line(exc))

    def _run_once(self, subscriptions: list[catalog.SubscriptionDef]) -> str:
        """One cycle of every running subscription, here and now, until its
        slot has nothing more."""
        lines = []
        for definition in subscriptions:
            if definition.claimed:
                lines.append(f"{definition.name}: run by another worker")
                continue
            label = definition.name
            try:
                worker = self._worker(definition)
            except InvalidCdcOptionError as exc:
                self._fail_invalid(definition, str(exc))
                lines.append(f"{label}: invalid options")
                continue
            try:
                worker.start()
                total = snapshot = 0
                while True:
                    result = worker.run_cycle()
                    total += result.events
                    snapshot += result.snapshot_events
                    if result.caught_up:
                        break
                lines.append(f"{label}: {total} event{'s' if total != 1 else ''}"
                             + (f" and {snapshot} snapshot event{'s' if snapshot != 1 else ''}" if snapshot else ""))
            except SubscriptionBusy:
                lines.append(f"{label}: run by another worker")
            except SubscriptionGone as exc:
                lines.append(f"{label}: {exc}")
            except SubscriptionFailed as exc:
                worker._fail(str(exc))
                lines.append(f"{label}: failed: {exc}")
            except SinkUnavailable as exc:
                worker._show_error(f"sink unavailable: {first_line(exc)}", count=True)
                lines.append(f"{label}: sink unavailable: {first_line(exc)}")
            except psycopg.OperationalError as exc:
                lines.append(f"{label}: postgres unreachable: {first_line(exc)}")
            except psycopg.Error as exc:
                worker._show_error(first_line(exc), count=True)
                lines.append(f"{label}: cycle failed: {first_line(exc)}")
            finally:
                worker.close()
        return "; ".join(lines) if lines else "no subscription running"

    # ------------------------------------------------------------ other threads
    def snapshot(self) -> Any:
        with self._lock:
            return {"as_of": time.time(), "workers": [
                {"subscription_id": sid, "name": r.worker.definition.name, "status": r.worker.status,
                 "events": r.worker.events_total, "batches": r.worker.batches}
                for sid, r in sorted(self._running.items())], "waiting": list(self._waiting)}

    def cancel(self) -> None:
        with self._lock:
            for running in self._running.values():
                running.worker.stop.set()

    def close(self) -> None:
        with self._lock:
            running = list(self._running.values())
        for item in running:
            item.worker.stop.set()
        deadline = time.monotonic() + float(self.config["cdc.shutdown_grace"])
        for item in running:
            item.thread.join(max(0.0, deadline - time.monotonic()))
            if item.thread.is_alive():
                logger.warning("subscription %d: worker still busy at shutdown", item.worker.subscription_id)
                item.worker.close()
        if self._control is not None:
            try:
                self._control.close()
            except Exception:
                pass
            self._control = None
