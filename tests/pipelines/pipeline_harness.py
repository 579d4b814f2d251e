"""Helpers of the pipeline tests: running batches in this process, reading
the target back, orochi-sidecar as a subprocess with fault points."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg

from orochi_fdw.pipelines import catalog
from orochi_fdw.pipelines.worker import BatchResult, PipelineWorker

SIDECAR = os.path.join(os.path.dirname(sys.executable), "orochi-sidecar")

#: settings of the test daemons: fast polls, a free port, quick reconnects
SIDECAR_SETTINGS = """
log_level = "debug"
duties = ["pipelines"]
[http]
port = 0
[pipelines]
poll_interval = 0.2
shutdown_grace = 5
[jobs]
client_check_interval = 0.5
[reconnect]
min_delay = 0.1
max_delay = 0.5
"""


def create_pipeline(db: psycopg.Connection, name: str, source: str, target: str, format: str,
                    options: dict[str, Any], start: bool = True) -> int:
    pid = db.execute("SELECT orochi.create_pipeline(%s, %s, %s::regclass, %s, %s::jsonb)",
                     [name, source, target, format, json.dumps(options)]).fetchone()[0]
    if start:
        db.execute("SELECT orochi.start_pipeline(%s)", [pid])
    return pid


def definition(dsn: str, pipeline_id: int) -> catalog.PipelineDef:
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = catalog.runnable_pipelines(conn, only=pipeline_id)
    assert found, f"pipeline {pipeline_id} is not running"
    return found[0]


def run_batches(dsn: str, pipeline_id: int, max_batches: int = 1000) -> list[BatchResult]:
    """Run batches of a running pipeline in this process until its source
    has nothing more (what ``orochi-sidecar --once`` does, repeated)."""
    worker = PipelineWorker(definition(dsn, pipeline_id), dsn)
    worker.start()
    results = []
    try:
        for _ in range(max_batches):
            result = worker.run_batch(until_caught_up=True)
            results.append(result)
            if result.caught_up or result.failed:
                break
        else:
            raise AssertionError(f"pipeline {pipeline_id} did not catch up in {max_batches} batches")
    finally:
        worker.close()
    return results


def run_one_batch(dsn: str, pipeline_id: int) -> BatchResult:
    worker = PipelineWorker(definition(dsn, pipeline_id), dsn)
    worker.start()
    try:
        return worker.run_batch(until_caught_up=True)
    finally:
        worker.close()


def pipeline_row(db: psycopg.Connection, pipeline_id: int) -> dict[str, Any]:
    cur = db.execute("SELECT * FROM orochi.pipelines WHERE pipeline_id = %s", [pipeline_id])
    row = cur.fetchone()
    assert row is not None, f"pipeline {pipeline_id} not in orochi.pipelines"
    return dict(zip([d.name for d in cur.description], row))


def dead_letters(db: psycopg.Connection, pipeline_id: int) -> list[dict[str, Any]]:
    cur = db.execute("SELECT * FROM orochi.pipeline_errors WHERE pipeline_id = %s ORDER BY error_id",
                     [pipeline_id])
    return [dict(zip([d.name for d in cur.description], row)) for row in cur.fetchall()]


def positions(db: psycopg.Connection, pipeline_id: int) -> dict[str, int]:
    return dict(db.execute("SELECT stream, position FROM orochi.pipeline_positions WHERE pipeline_id = %s",
                           [pipeline_id]).fetchall())


class Sidecar:
    """orochi-sidecar as a subprocess; its stderr collected line by line."""

    def __init__(self, dsn: str, config_path: str, args: list[str] | None = None,
                 env: dict[str, str] | None = None, wait_ready: bool = True):
        self.proc = subprocess.Popen([SIDECAR, "--dsn", dsn, "--config", config_path, *(args or [])],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True)
        self._out_reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 120.0, start: int = 0) -> re.Match:
        """The first log line from line ``start`` on matching ``pattern`` (the
        timeout only ends a test that would hang)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                match = regex.search(line)
                if match:
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no log line matches {pattern!r}; log:\n{self.log()[-5000:]}")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)


def wait_until(predicate: Any, timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true (the timeout only
    ends a test that would hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sidecar_once(dsn: str) -> str:
    """One cycle of the pipelines duty as ``orochi-sidecar --once`` runs it,
    in this process; returns its status line."""
    from orochi_fdw.sidecar import config as configuration
    from orochi_fdw.sidecar.daemon import Daemon

    config = configuration.load(environ={}, overrides={"dsn": dsn, "duties": "pipelines"})
    daemon = Daemon(config)
    daemon.context.once = True
    try:
        return daemon.run_cycle()
    finally:
        daemon.close()
