"""Fault points for crash tests, as the pipelines have them
(orochi_fdw/pipelines/faults.py): a worker stops at a named phase of a
batch and waits for the test, which then kills the sidecar or the
postmaster.

Test-only, set by environment variables of the sidecar:

- ``OROCHI_CDC_FAULT=phase[:n][,phase[:n]...]``: stop the n-th time (default:
  the first) any worker reaches ``phase``;
- ``OROCHI_CDC_FAULT_RELEASE=path``: the stopped worker goes on once
  ``path`` exists; otherwise it waits until the process is killed.

On reaching one the worker writes ``orochi-cdc: fault point <phase> reached
(subscription <id>, batch <n>)`` to standard error.  Nothing here depends
on time.

Phases, in the order of a batch: ``fetched`` (changes read from the slot,
nothing sent), ``delivered`` (the sink acknowledged a batch of events, the
position is not recorded), ``recorded`` (the position committed in the
catalog, the slot not advanced), ``advanced`` (the slot advanced); and
``snapshot`` (a batch of the initial snapshot delivered, the snapshot not
finished).
"""

from __future__ import annotations

import os
import sys
import threading
import time

PHASES = ("fetched", "delivered", "recorded", "advanced", "snapshot")
FAULT_ENV = "OROCHI_CDC_FAULT"
RELEASE_ENV = "OROCHI_CDC_FAULT_RELEASE"

_lock = threading.Lock()
_counts: dict[str, int] = {}


def _wanted() -> dict[str, int]:
    spec = os.environ.get(FAULT_ENV, "").strip()
    wanted: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        phase, _, nth = item.partition(":")
        if phase not in PHASES:
            raise ValueError(f"{FAULT_ENV}: unknown phase {phase!r} (phases: {', '.join(PHASES)})")
        wanted[phase] = int(nth) if nth else 1
    return wanted


def fault_point(phase: str, subscription_id: int, batch: int) -> None:
    """Stop here if the environment asks for it (see the module docstring)."""
    if FAULT_ENV not in os.environ:
        return
    wanted = _wanted()
    if phase not in wanted:
        return
    with _lock:
        _counts[phase] = _counts.get(phase, 0) + 1
        hit = _counts[phase] == wanted[phase]
    if not hit:
        return
    sys.stderr.write(f"orochi-cdc: fault point {phase} reached (subscription {subscription_id}, batch {batch})\n")
    sys.stderr.flush()
    release = os.environ.get(RELEASE_ENV)
    if not release:
        threading.Event().wait()  # until killed
    while not os.path.exists(release):  # the test's signal, not a deadline
        time.sleep(0.01)
