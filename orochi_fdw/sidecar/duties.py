"""Duties: the kinds of background work the daemon does, and their registry.

A duty is an object the loop asks, again and again, to do one round of its
work (:meth:`Duty.run_cycle`), at the time it asked for
(:meth:`Duty.next_due`).  The jobs scheduler is one; Raft, ingest pipelines,
change capture and tiering plug in the same way, by registering a name::

    register_duty("pipelines", "orochi_fdw.sidecar.pipelines:PipelinesDuty")

and being listed in the ``duties`` setting.  The loop knows nothing else of
them.
"""

from __future__ import annotations

import abc
import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from orochi_fdw.sidecar.config import Config, ConfigError
from orochi_fdw.sidecar.metrics import Registry


@dataclass
class DaemonContext:
    """What the daemon shares with its duties.

    Attributes:
        config: the checked configuration.
        metrics: the registry /metrics renders.
        stopping: set when the daemon is shutting down; duties stop starting work.
        postgres_up: per duty, whether its last cycle reached Postgres.
        once: ``--once``: each duty does one round of its work in
            ``run_cycle`` and leaves nothing running.
        api_url: the REST API's address once it listens (``http://host:port``).
    """

    config: Config
    metrics: Registry
    stopping: threading.Event = field(default_factory=threading.Event)
    postgres_up: dict[str, bool] = field(default_factory=dict)
    once: bool = False
    api_url: str | None = None


class Duty(abc.ABC):
    """One kind of background work.

    Subclasses set :attr:`name` and implement :meth:`run_cycle`; the loop
    calls it from a single thread.  :meth:`cancel` and :meth:`snapshot` may
    be called from other threads (signal handling, the REST API).
    """

    name: str = "duty"

    def __init__(self, context: DaemonContext):
        self.context = context
        self._next_due = time.monotonic()

    def next_due(self) -> float:
        """When (``time.monotonic()``) the loop should call :meth:`run_cycle` next."""
        return self._next_due

    def schedule_in(self, seconds: float) -> None:
        """Ask to run again ``seconds`` from now."""
        self._next_due = time.monotonic() + max(0.0, seconds)

    @abc.abstractmethod
    def run_cycle(self) -> str:
        """Do one round of work.

        Returns:
            A human-readable status line, which the loop logs.  Unexpected
            exceptions are logged by the loop, which goes on.
        """

    def cancel(self) -> None:
        """Cancel the work running now (after the shutdown grace period)."""

    def snapshot(self) -> Any:
        """What the REST API shows of this duty (JSON-serializable), or None."""
        return None

    def close(self) -> None:
        """Release connections and other resources at shutdown."""


_DUTIES: dict[str, str] = {
    "jobs": "orochi_fdw.sidecar.jobs:JobsDuty",
    "recovery": "orochi_fdw.sidecar.recovery:RecoveryDuty",
    "pipelines": "orochi_fdw.pipelines.duty:PipelinesDuty",
    "cdc": "orochi_fdw.cdc.duty:CdcDuty",
    "ha": "orochi_fdw.ha.duty:HaDuty",
    "rebalance": "orochi_fdw.sidecar.rebalance:RebalanceDuty",
}


def register_duty(name: str, target: str) -> None:
    """Make a duty available under ``name``.

    Args:
        name: what the ``duties`` setting lists.
        target: ``"module:Class"`` of a :class:`Duty` subclass, imported when
            the daemon starts.
    """
    _DUTIES[name] = target


def duty_names() -> list[str]:
    """The registered duties' names."""
    return sorted(_DUTIES)


def load_duty(name: str) -> type[Duty]:
    """The class registered under ``name``.

    Raises:
        ConfigError: no such duty, or its class cannot be imported.
    """
    target = _DUTIES.get(name)
    if target is None:
        raise ConfigError(f"unknown duty {name!r} (known: {', '.join(duty_names())})")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"duty {name!r} cannot be loaded from {target}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Duty)):
        raise ConfigError(f"duty {name!r}: {target} is not a Duty")
    return cls
