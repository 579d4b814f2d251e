"""Fault points of the pipeline workers, for crash tests
(:mod:`orochi_fdw.sidecar.faults` says how they work).

``OROCHI_PIPELINE_FAULT=phase[:n][,...]`` and
``OROCHI_PIPELINE_FAULT_RELEASE=path``; a worker reaching one writes
``orochi-pipelines: fault point <phase> reached (pipeline <id>, batch <n>)``.

Phases, in the order of a batch: ``fetched`` (records read, nothing
written), ``copied`` (rows written, positions not), ``positioned``
(positions written, not committed), ``committed`` (after COMMIT).
"""

from __future__ import annotations

from orochi_fdw.sidecar.faults import WorkerFaults

_FAULTS = WorkerFaults("OROCHI_PIPELINE_FAULT", ("fetched", "copied", "positioned", "committed"),
                       "orochi-pipelines", "pipeline")
PHASES = _FAULTS.phases
FAULT_ENV = _FAULTS.env
RELEASE_ENV = _FAULTS.release_env


def fault_point(phase: str, pipeline_id: int, batch: int) -> None:
    """Stop here if the environment asks for it."""
    _FAULTS.point(phase, pipeline_id, batch)
