"""The registry of built-in job bodies (no Postgres)."""

from __future__ import annotations

import pytest

from orochi_fdw.jobs import registry
from orochi_fdw.jobs.errors import JobError


def _body(job_id: int, relid: int, config: dict) -> str:
    return f"ran {job_id} on {relid} with {config}"


def test_known_kinds_and_their_targets():
    assert {k.proc_name: k.target for k in registry.kinds()}.items() >= {
        "policy_retention": "orochi_fdw.timeseries.policies:run_retention",
        "policy_compression": "orochi_fdw.timeseries.policies:run_compression",
        "policy_refresh_continuous_aggregate": "orochi_fdw.timeseries.continuous:run_refresh",
    }.items()
    assert registry.kind("policy_retention").application_name == "Retention Policy"
    assert registry.kind("nope") is None


def test_resolve_imports_lazily_and_reports_what_is_missing():
    kind = registry.register(registry.JobKind("test_body", f"{__name__}:_body", "Test", "test job"))
    try:
        assert registry.resolve("test_body")(1000, 1, {"a": 1}) == "ran 1000 on 1 with {'a': 1}"
        registry.register(registry.JobKind("test_body", f"{__name__}:_missing", "Test", "test job"))
        with pytest.raises(JobError, match=r'body of job kind "test_body" is missing'):
            registry.resolve("test_body")
        registry.register(registry.JobKind("test_body", "no_such_module:run", "Test", "test job"))
        with pytest.raises(JobError, match=r'body of job kind "test_body" cannot be imported'):
            registry.resolve("test_body")
    finally:
        registry._KINDS.pop(kind.proc_name, None)
    with pytest.raises(JobError, match='no built-in job is named "test_body"'):
        registry.resolve("test_body")
