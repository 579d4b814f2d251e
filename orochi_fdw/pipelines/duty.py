"""The sidecar's pipelines duty: one worker thread per running pipeline.

Every ``pipelines.poll_interval`` seconds the duty reads the pipelines that
are ``running`` or ``paused`` and starts a worker for each one that no
worker runs yet (at most ``pipelines.max_workers``); a worker claims its
pipeline with a session advisory lock, so that with several sidecars on one
database each pipeline has one worker.  Workers end by themselves when their
pipeline is stopped, dropped or fails; pausing keeps the worker (and its
source connection) but loads nothing.

``orochi-sidecar --once`` runs, instead, one batch of every running pipeline
(reading until the source has nothing more or the batch is full) and exits.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg

from orochi_fdw.pipelines import catalog
from orochi_fdw.pipelines.errors import InvalidPipelineOptionError
from orochi_fdw.pipelines.sources.base import SourceUnavailable
from orochi_fdw.pipelines.worker import (BatchResult, PipelineBusy, PipelineFailed, PipelineGone, PipelineWorker,
                                         _first_line)
from orochi_fdw.sidecar.duties import DaemonContext, Duty

logger = logging.getLogger("orochi.sidecar.pipelines")


class _Running:
    """A worker and its thread."""

    def __init__(self, worker: PipelineWorker, thread: threading.Thread):
        self.worker = worker
        self.thread = thread


class PipelinesDuty(Duty):
    """Runs the pipelines of the database (see the module docstring)."""

    name = "pipelines"

    def __init__(self, context: DaemonContext):
        super().__init__(context)
        self.config = context.config
        self._control: psycopg.Connection | None = None
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._reconnect_delay = self.config["reconnect.min_delay"]
        self._waiting: list[int] = []
        metrics = context.metrics
        self._rows = metrics.counter("orochi_sidecar_pipeline_rows_total", "Rows loaded by each pipeline.",
                                     ["pipeline"])
        self._errors = metrics.counter("orochi_sidecar_pipeline_bad_records_total",
                                       "Records of each pipeline sent to orochi.pipeline_errors.", ["pipeline"])
        self._batches = metrics.histogram("orochi_sidecar_pipeline_batch_duration_seconds",
                                          "Duration of pipeline batches (fetch excluded), in seconds.",
                                          ["pipeline"])
        self._workers = metrics.gauge("orochi_sidecar_pipeline_workers", "Pipeline workers running.")

    # ------------------------------------------------------------ helpers
    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.config["dsn"], autocommit=True, connect_timeout=self.config["connect_timeout"],
                               application_name=self.config["application_name"])

    def _worker(self, definition: catalog.PipelineDef, stop: threading.Event | None = None) -> PipelineWorker:
        worker = PipelineWorker(definition, self.config["dsn"], application_name=self.config["application_name"],
                                connect_timeout=self.config["connect_timeout"], stop=stop,
                                min_delay=self.config["reconnect.min_delay"],
                                max_delay=self.config["reconnect.max_delay"],
                                client_check_interval=self.config["jobs.client_check_interval"])
        label = str(definition.pipeline_id)

        def counted(result: BatchResult, elapsed: float) -> None:
            self._rows.inc(result.rows, pipeline=label)
            if result.errors:
                self._errors.inc(result.errors, pipeline=label)
            self._batches.observe(elapsed, pipeline=label)
        worker.on_batch = counted
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
        return f"postgres unreachable ({_first_line(exc)}); retrying in {delay:.1f}s"

    # ------------------------------------------------------------ the cycle
    def run_cycle(self) -> str:
        try:
            if self._control is None or self._control.closed:
                self._control = self._connect()
            try:
                pipelines = catalog.runnable_pipelines(self._control)
            except psycopg.errors.UndefinedTable:
                self.context.postgres_up[self.name] = True
                self.schedule_in(self.config["pipelines.poll_interval"])
                return "the orochi extension (with pipelines) is not installed in this database"
        except psycopg.OperationalError as exc:
            return self._unreachable(exc)
        self.context.postgres_up[self.name] = True
        self._reconnect_delay = self.config["reconnect.min_delay"]
        if getattr(self.context, "once", False):
            return self._run_once(pipelines)
        status = self._reconcile(pipelines)
        self.schedule_in(self.config["pipelines.poll_interval"])
        return status

    def _reconcile(self, pipelines: list[catalog.PipelineDef]) -> str:
        with self._lock:
            for pid, running in list(self._running.items()):
                if not running.thread.is_alive():
                    del self._running[pid]
            wanted = {p.pipeline_id: p for p in pipelines}
            for pid, running in self._running.items():
                current = wanted.get(pid)
                if current is None or (current.options, current.owner, current.target, current.source,
                                       current.format) != (running.worker.definition.options,
                                                           running.worker.definition.owner,
                                                           running.worker.definition.target,
                                                           running.worker.definition.source,
                                                           running.worker.definition.format):
                    running.worker.stop.set()  # ends after its batch; a changed one starts again next cycle
            self._waiting = []
            for definition in pipelines:
                pid = definition.pipeline_id
                if pid in self._running or definition.claimed or self.context.stopping.is_set():
                    continue
                if len(self._running) >= self.config["pipelines.max_workers"]:
                    self._waiting.append(pid)
                    continue
                try:
                    worker = self._worker(definition, threading.Event())
                except InvalidPipelineOptionError as exc:
                    self._fail_invalid(definition, str(exc))
                    continue
                thread = threading.Thread(target=worker.run, name=f"pipeline-{pid}", daemon=True)
                self._running[pid] = _Running(worker, thread)
                thread.start()
                logger.info("pipeline %d (%s): worker started (%s from %s into %s)", pid, definition.name,
                            definition.format, definition.source, definition.target)
            self._workers.set(len(self._running))
            names = [f"{r.worker.definition.name} ({r.worker.status})" for r in self._running.values()]
        if not names and not self._waiting:
            return "no pipeline running"
        text = f"{len(names)} worker{'s' if len(names) != 1 else ''}: " + ", ".join(names) if names else "no worker"
        if self._waiting:
            text += f"; {len(self._waiting)} waiting for a free worker (pipelines.max_workers)"
        return text

    def _fail_invalid(self, definition: catalog.PipelineDef, message: str) -> None:
        assert self._control is not None
        try:
            catalog.mark_failed(self._control, definition.pipeline_id, f"invalid options: {message}")
        except psycopg.Error as exc:
            logger.warning("pipeline %d: could not record its failure: %s", definition.pipeline_id, _first_line(exc))

    def _run_once(self, pipelines: list[catalog.PipelineDef]) -> str:
        """One batch of every running pipeline, here and now."""
        lines = []
        for definition in pipelines:
            if definition.state != "running" or definition.claimed:
                continue
            label = f"{definition.name} ({definition.pipeline_id})"
            try:
                worker = self._worker(definition)
            except InvalidPipelineOptionError as exc:
                self._fail_invalid(definition, str(exc))
                lines.append(f"{label}: invalid options")
                continue
            try:
                worker.start()
                result = worker.run_batch(until_caught_up=True)
                worker._show_error(worker.source.current_error if worker.source else None)
                lines.append(f"{label}: {result.describe()}")
            except PipelineBusy:
                lines.append(f"{label}: run by another worker")
            except PipelineGone as exc:
                lines.append(f"{label}: {exc}")
            except PipelineFailed as exc:
                worker._fail(str(exc))
                lines.append(f"{label}: failed: {exc}")
            except SourceUnavailable as exc:
                worker._show_error(str(exc))
                lines.append(f"{label}: {exc}")
            except psycopg.OperationalError as exc:
                lines.append(f"{label}: postgres unreachable: {_first_line(exc)}")
            except psycopg.Error as exc:
                if (exc.sqlstate or "")[:2] in ("42", "0A"):
                    worker._fail(_first_line(exc))
                else:
                    worker._show_error(_first_line(exc))
                lines.append(f"{label}: batch failed: {_first_line(exc)}")
            finally:
                worker.close()
        return "; ".join(lines) if lines else "no pipeline running"

    # ------------------------------------------------------------ other threads
    def snapshot(self) -> Any:
        with self._lock:
            return {"as_of": time.time(), "workers": [
                {"pipeline_id": pid, "name": r.worker.definition.name, "status": r.worker.status,
                 "rows_loaded": r.worker.rows_total, "batches": r.worker.batches}
                for pid, r in sorted(self._running.items())], "waiting": list(self._waiting)}

    def cancel(self) -> None:
        with self._lock:
            for running in self._running.values():
                running.worker.stop.set()

    def close(self) -> None:
        with self._lock:
            running = list(self._running.values())
        for item in running:
            item.worker.stop.set()
        deadline = time.monotonic() + float(self.config["pipelines.shutdown_grace"])
        for item in running:
            item.thread.join(max(0.0, deadline - time.monotonic()))
            if item.thread.is_alive():
                logger.warning("pipeline %d: worker still busy at shutdown; its batch rolls back",
                               item.worker.pipeline_id)
                item.worker.close()
        if self._control is not None:
            try:
                self._control.close()
            except Exception:
                pass
            self._control = None
