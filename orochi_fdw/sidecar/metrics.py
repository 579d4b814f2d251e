"""Metrics in the Prometheus text exposition format (version 0.0.4).

A small registry of counters, gauges and histograms with labels, safe to
update from the daemon's loop while the REST API renders it from another
thread.
"""

from __future__ import annotations

import math
import threading
from typing import Iterable

#: histogram buckets of job durations, in seconds
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: tuple[str, ...], values: LabelValues, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = list(zip(names, values)) + list(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in pairs) + "}"


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"metric {self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def render(self) -> list[str]:
        """The metric's exposition lines (HELP, TYPE, samples)."""
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            lines += self._samples()
        return lines

    def _samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()):
        super().__init__(name, documentation, labelnames)
        self._values: dict[LabelValues, float] = {} if self.labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the series named by ``labels``."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set_total(self, value: float, **labels: str) -> None:
        """Set the series to a total counted elsewhere (a counter PostgreSQL
        keeps, read at each scrape; it restarts from zero with the server)."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def value(self, **labels: str) -> float:
        """The series' current value (0 when never incremented)."""
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def _samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}"
                for k, v in sorted(self._values.items())]


class Gauge(Counter):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        """Set the series named by ``labels``."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def remove_other(self, keep: Iterable[dict[str, str]]) -> None:
        """Forget every series but those named in ``keep`` (jobs deleted since)."""
        kept = {self._key(labels) for labels in keep}
        with self._lock:
            for key in list(self._values):
                if key not in kept:
                    del self._values[key]


class Histogram(_Metric):
    """Observations counted in cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (),
                 buckets: Iterable[float] = DEFAULT_BUCKETS):
        super().__init__(name, documentation, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets)) + (math.inf,)
        self._series: dict[LabelValues, list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, **labels: str) -> None:
        """Count one observation in the series named by ``labels``."""
        key = self._key(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def _samples(self) -> list[str]:
        lines = []
        for key, series in sorted(self._series.items()):
            for i, bound in enumerate(self.buckets):
                le = (("le", _format_value(bound)),)
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {_format_value(series[i])}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_format_value(series[-2])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {_format_value(series[-1])}")
        return lines


class Registry:
    """The daemon's metrics, rendered in registration order."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is not None:
                if type(existing) is not type(metric) or existing.labelnames != metric.labelnames:
                    raise ValueError(f"metric {metric.name} is already registered differently")
                return existing
            self._metrics[metric.name] = metric
            return metric

    def counter(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> Counter:
        """A counter (the existing one if already registered)."""
        return self._add(Counter(name, documentation, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> Gauge:
        """A gauge (the existing one if already registered)."""
        return self._add(Gauge(name, documentation, labelnames))  # type: ignore[return-value]

    def histogram(self, name: str, documentation: str, labelnames: Iterable[str] = (),
                  buckets: Iterable[float] = DEFAULT_BUCKETS) -> Histogram:
        """A histogram (the existing one if already registered)."""
        return self._add(Histogram(name, documentation, labelnames, buckets))  # type: ignore[return-value]

    def render(self) -> str:
        """Every metric in the text exposition format."""
        with self._lock:
            metrics = list(self._metrics.values())
        lines: list[str] = []
        for metric in metrics:
            lines += metric.render()
        return "\n".join(lines) + "\n"
