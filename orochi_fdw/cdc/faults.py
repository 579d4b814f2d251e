"""Fault points of the change data capture workers, for crash tests
(:mod:`orochi_fdw.sidecar.faults` says how they work).

``OROCHI_CDC_FAULT=phase[:n][,...]`` and ``OROCHI_CDC_FAULT_RELEASE=path``;
a worker reaching one writes ``orochi-cdc: fault point <phase> reached
(subscription <id>, batch <n>)``.

Phases, in the order of a batch: ``fetched`` (changes read from the slot,
nothing sent), ``delivered`` (the sink acknowledged a batch of events, the
position is not recorded), ``recorded`` (the position committed in the
catalog, the slot not advanced), ``advanced`` (the slot advanced); and
``snapshot`` (a batch of the initial snapshot delivered, the snapshot not
finished).
"""

from __future__ import annotations

from orochi_fdw.sidecar.faults import WorkerFaults

_FAULTS = WorkerFaults("OROCHI_CDC_FAULT", ("fetched", "delivered", "recorded", "advanced", "snapshot"),
                       "orochi-cdc", "subscription")
PHASES = _FAULTS.phases
FAULT_ENV = _FAULTS.env
RELEASE_ENV = _FAULTS.release_env


def fault_point(phase: str, subscription_id: int, batch: int) -> None:
    """Stop here if the environment asks for it."""
    _FAULTS.point(phase, subscription_id, batch)
