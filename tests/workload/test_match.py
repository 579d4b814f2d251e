"""A class's ``match``, checked and normalized in Python (no server): every
input is either accepted in a canonical form or refused with the API's own
errors, never anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orochi_fdw.workload.catalog import KINDS, MATCH_KEYS, Match, parse_match
from orochi_fdw.workload.errors import InvalidWorkloadArgumentError, WorkloadLimitError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

match_like = st.dictionaries(st.sampled_from(MATCH_KEYS + ("other",)), json_values, max_size=5)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, match_like))
def test_any_json_is_accepted_canonically_or_refused_cleanly(value):
    try:
        m = parse_match(json.dumps(value))
    except (InvalidWorkloadArgumentError, WorkloadLimitError):
        return
    assert isinstance(value, dict)
    canonical = m.as_json()
    # the canonical form parses to itself
    assert parse_match(json.dumps(canonical)) == m
    assert m.specificity == len(canonical)
    assert set(canonical) <= set(MATCH_KEYS)
    assert m.kind_bits == sum(KINDS[k] for k in m.kinds)
    for key in ("roles", "databases", "application_names", "kinds"):
        values = getattr(m, key)
        assert len(values) == len(set(values)) <= 8
        assert all(isinstance(v, str) and v and len(v.encode()) <= 63 for v in values)


@pytest.mark.parametrize("text, expected", [
    ("{}", Match()),
    ('{"kind": "WRITE"}', Match(kinds=["write"])),
    ('{"kind": ["ddl", "read", "read"]}', Match(kinds=["read", "ddl"])),
    ('{"role": ["a", "b", "a"]}', Match(roles=["a", "b"])),
    ('{"min_cost": 0}', Match(min_cost=0.0)),
    ('{"application_name": "etl-%", "database": "dw"}', Match(application_names=["etl-%"], databases=["dw"])),
])
def test_normal_forms(text, expected):
    assert parse_match(text) == expected


def test_specificity_counts_criteria():
    assert parse_match('{"role": "a", "kind": "read", "min_cost": 5}').specificity == 3
    assert parse_match("{}").specificity == 0
