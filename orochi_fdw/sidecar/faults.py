"""Fault points of the sidecar's workers, for crash tests: a worker stops at
a named phase of a batch and waits for the test, which then kills the
sidecar or the postmaster.

Test-only, set by environment variables of the sidecar (``<ENV>`` is the
worker kind's prefix, e.g. ``OROCHI_PIPELINE_FAULT``):

- ``<ENV>=phase[:n][,phase[:n]...]``: stop the n-th time (default: the
  first) any worker of the kind reaches ``phase``;
- ``<ENV>_RELEASE=path``: when set, the stopped worker goes on once ``path``
  exists (the test creates it); otherwise it waits until the process is
  killed.

On reaching a fault point the worker writes one line to standard error,
``<label>: fault point <phase> reached (<what> <id>, batch <n>)``, which the
test waits for.  Nothing here depends on time.  The kinds and their phases:
:mod:`orochi_fdw.pipelines.faults`, :mod:`orochi_fdw.cdc.faults`.
"""

from __future__ import annotations

import os
import sys
import threading
import time


class WorkerFaults:
    """The fault points of one kind of worker."""

    def __init__(self, env: str, phases: tuple[str, ...], label: str, what: str) -> None:
        self.env = env
        self.release_env = f"{env}_RELEASE"
        self.phases = phases
        self.label = label
        self.what = what
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def _wanted(self) -> dict[str, int]:
        spec = os.environ.get(self.env, "").strip()
        wanted: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            phase, _, nth = item.partition(":")
            if phase not in self.phases:
                raise ValueError(f"{self.env}: unknown phase {phase!r} (phases: {', '.join(self.phases)})")
            wanted[phase] = int(nth) if nth else 1
        return wanted

    def point(self, phase: str, owner_id: int, batch: int) -> None:
        """Stop here if the environment asks for it (see the module docstring)."""
        if self.env not in os.environ:
            return
        wanted = self._wanted()
        if phase not in wanted:
            return
        with self._lock:
            self._counts[phase] = self._counts.get(phase, 0) + 1
            hit = self._counts[phase] == wanted[phase]
        if not hit:
            return
        sys.stderr.write(f"{self.label}: fault point {phase} reached ({self.what} {owner_id}, batch {batch})\n")
        sys.stderr.flush()
        release = os.environ.get(self.release_env)
        if not release:
            threading.Event().wait()  # until killed
        while not os.path.exists(release):  # the test's signal, not a deadline
            time.sleep(0.01)
