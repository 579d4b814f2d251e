"""The metrics registry renders valid Prometheus text (no Postgres)."""

from __future__ import annotations

import math

from orochi_fdw.sidecar.metrics import Registry
from promtext import parse, value


def test_counters_gauges_and_histograms_render_and_parse():
    registry = Registry()
    runs = registry.counter("x_runs_total", "Runs.", ["status"])
    up = registry.gauge("x_up", "Up.")
    durations = registry.histogram("x_duration_seconds", "Durations.", ["proc"], buckets=(0.1, 1))
    runs.inc(status="Success")
    runs.inc(2, status='odd "quoted"\nvalue')
    up.set(1)
    for seconds in (0.05, 0.5, 5):
        durations.observe(seconds, proc="p")
    types, samples = parse(registry.render())
    assert types == {"x_runs_total": "counter", "x_up": "gauge", "x_duration_seconds": "histogram"}
    assert value(samples, "x_runs_total", status="Success") == 1
    assert value(samples, "x_runs_total", status='odd \\"quoted\\"\\nvalue') == 2
    assert value(samples, "x_up") == 1
    assert [value(samples, "x_duration_seconds_bucket", proc="p", le=le) for le in ("0.1", "1", "+Inf")] == [1, 2, 3]
    assert value(samples, "x_duration_seconds_count", proc="p") == 3
    assert math.isclose(value(samples, "x_duration_seconds_sum", proc="p"), 5.55)


def test_registering_twice_returns_the_same_metric():
    registry = Registry()
    assert registry.counter("a_total", "A.") is registry.counter("a_total", "A.")
    gauge = registry.gauge("g", "G.", ["job_id"])
    gauge.set(1, job_id="1")
    gauge.set(2, job_id="2")
    gauge.remove_other([{"job_id": "2"}])
    _, samples = parse(registry.render())
    assert value(samples, "g", job_id="1") is None and value(samples, "g", job_id="2") == 2
