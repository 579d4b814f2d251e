"""EXPLAIN shows only qual values that were evaluated.

A correlated subplan that never ran (its outer table is empty, or every
outer row skips it) has parameters that were never set; EXPLAIN ANALYZE used
to evaluate them anyway and crashed on a text parameter (a NULL pointer).
Values a scan did run with are shown; the others as the unknown sentinel.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def tables(db):
    db.execute("CREATE FOREIGN TABLE ct (id int8, t text) SERVER orochi")
    db.execute("INSERT INTO ct SELECT i, 't' || (i % 5) FROM generate_series(1, 2000) i")
    db.execute("CREATE TABLE h (t text, flag bool)")


def _explain(db, q):
    return "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) " + q))


def test_subplan_never_run_because_outer_is_empty(db, tables):
    q = "SELECT (SELECT count(*) FROM ct WHERE ct.t = h.t) FROM h"
    for _ in range(3):
        plan = _explain(db, q)
        assert "never executed" in plan
        assert "t = $param" in plan, plan
    assert db.execute(q).fetchall() == []


def test_subplan_skipped_by_every_row(db, tables):
    db.execute("INSERT INTO h VALUES ('t1', false), ('t2', false), (NULL, false)")
    q = "SELECT CASE WHEN flag THEN (SELECT count(*) FROM ct WHERE ct.t = h.t) END FROM h"
    plan = _explain(db, q)
    assert "never executed" in plan
    assert "t = $param" in plan, plan
    assert db.execute(q).fetchall() == [(None,)] * 3


def test_subplan_that_ran_shows_its_last_value(db, tables):
    db.execute("INSERT INTO h VALUES ('t1', true), ('t3', true)")
    q = "SELECT (SELECT count(*) FROM ct WHERE ct.t = h.t) FROM h"
    plan = _explain(db, q)
    assert "'t3'" in plan, plan
    assert "$param" not in plan, plan
    assert db.execute(q).fetchall() == [(400,), (400,)]


def test_initplan_of_a_scan_that_never_started_is_not_run(db, tables):
    """A LIMIT 0 above the scan: the scan never starts, its parameter comes
    from an InitPlan that EXPLAIN must not run to show a value."""
    db.execute("INSERT INTO h VALUES ('t2', true)")
    q = "SELECT * FROM ct WHERE t = (SELECT max(t) FROM h WHERE 1 / (CASE WHEN flag THEN 0 ELSE 1 END) = 1) LIMIT 0"
    plan = _explain(db, q)
    assert "t = $param" in plan, plan


def test_prepared_statement_shows_the_parameter(db, tables):
    db.execute("PREPARE p(text) AS SELECT count(*) FROM ct WHERE t = $1")
    for _ in range(7):  # past the custom plans, to the generic plan with a parameter
        assert db.execute("EXECUTE p('t4')").fetchone() == (400,)
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE p('t4')"))
    assert "'t4'" in plan, plan
