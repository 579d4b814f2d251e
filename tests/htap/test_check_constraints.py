"""ALTER TABLE ... ADD CONSTRAINT CHECK on a columnar table checks the rows
already stored (stripes and delta store, deleted rows left out) as
PostgreSQL does for a heap table: the same success or the same 23514 error,
for the same rows in a heap table of the same name (the oracle)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

ROWS = "(1, 'a'), (2, 'it''s'), (NULL, 'b'), (0, NULL), (-5, 'c')"

CONSTRAINTS = [
    "x > -10",             # holds
    "x > 0",               # broken by 0 and -5 (NULL passes)
    "x IS NOT NULL",       # broken by the NULL row
    "\"My Col\" <> 'it''s'",  # broken by a row of the stripes
    "coalesce(x, 0) >= -5 AND \"My Col\" IS DISTINCT FROM 'zz'",  # holds
    "x <> -5",             # broken by the stripe row -5, not by the deleted one
]


@pytest.fixture(scope="module")
def tables(pg_cluster, module_database):
    """One database for the module; each test's ALTERs are rolled back."""
    db = pg_cluster.connect(module_database, autocommit=True)
    db.execute("CREATE SCHEMA heap; CREATE SCHEMA col")
    db.execute("CREATE TABLE heap.t (x int, \"My Col\" text)")
    db.execute("CREATE FOREIGN TABLE col.t (x int, \"My Col\" text) SERVER orochi")
    for schema in ("heap", "col"):
        db.execute(f"INSERT INTO {schema}.t VALUES {ROWS}")
    db.execute("SELECT orochi.compact('col.t')")           # these rows in a stripe
    for schema in ("heap", "col"):
        db.execute(f"INSERT INTO {schema}.t VALUES (7, 'd'), (NULL, NULL)")  # these in the delta store
        db.execute(f"INSERT INTO {schema}.t VALUES (-5, 'gone')")
        db.execute(f"DELETE FROM {schema}.t WHERE \"My Col\" = 'gone'")
    yield db
    db.close()


def _outcome(db: psycopg.Connection, statement: str) -> str:
    """What the statement gives, in a transaction rolled back after it."""
    db.execute("BEGIN")
    try:
        db.execute(statement)
        return "ok"
    except psycopg.Error as exc:
        return f"{exc.sqlstate}: {exc.diag.message_primary}"
    finally:
        db.execute("ROLLBACK")


@pytest.mark.parametrize("check", CONSTRAINTS)
def test_added_constraint_checks_the_rows_as_the_heap(tables, check):
    outcomes = {schema: _outcome(tables, f"ALTER TABLE {schema}.t ADD CONSTRAINT c CHECK ({check})")
                for schema in ("heap", "col")}
    assert outcomes["col"] == outcomes["heap"]
    assert outcomes["heap"].startswith("23514") == (check not in (CONSTRAINTS[0], CONSTRAINTS[4]))


def test_deleted_stripe_rows_and_delta_rows(tables):
    for schema in ("heap", "col"):
        # -5 stays in the stripe as a row without its deletion being seen only in this transaction
        assert _outcome(tables, f"DELETE FROM {schema}.t WHERE x <= 0; "
                                f"ALTER TABLE {schema}.t ADD CONSTRAINT c CHECK (x > 0)") == "ok"
        # a delta-store row breaks this one
        assert _outcome(tables, f"ALTER TABLE {schema}.t ADD CONSTRAINT d CHECK (x < 7)").startswith("23514")


def test_not_valid_savepoints_and_later_rows(tables):
    db = tables
    for schema in ("heap", "col"):
        assert _outcome(db, f"ALTER TABLE {schema}.t ADD CONSTRAINT nv CHECK (x > 100) NOT VALID; "
                            "SELECT 1 / (SELECT count(*)::int FROM pg_constraint WHERE conname = 'nv' AND NOT convalidated)"
                            ) == "ok"
    assert _outcome(db, "SAVEPOINT a; ALTER FOREIGN TABLE col.t ADD CONSTRAINT s CHECK (x > 0)") == \
        '23514: check constraint "s" of relation "t" is violated by some row'
    # a row written after the constraint is checked by PostgreSQL itself
    assert _outcome(db, "ALTER TABLE col.t ADD CONSTRAINT ok CHECK (x > -10); "
                        "INSERT INTO col.t VALUES (-11, 'e')").startswith("23514: new row")
