"""What a role that is neither superuser nor owner may do once the extension
is installed: use the schema's functions and views, drop its own tables
(the extension's event triggers run for every DROP), and no more."""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def plain_user(db, db_name, new_connection):
    role = f"plain_{db_name}"[:63]
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    db.execute(f'GRANT CREATE ON SCHEMA public TO "{role}"')
    conn = new_connection(user=role)
    yield conn
    conn.close()
    db.execute(f'DROP OWNED BY "{role}"')
    db.execute(f'DROP ROLE "{role}"')


def test_plain_user_drops_its_own_tables(plain_user):
    plain_user.execute("CREATE TABLE mine (id int)")
    plain_user.execute("DROP TABLE mine")
    plain_user.execute("CREATE TABLE mine2 (id int)")
    plain_user.execute("DROP TABLE mine2 CASCADE")


def test_plain_user_calls_time_bucket_and_sketches(plain_user):
    plain_user.execute("CREATE TABLE t AS SELECT g AS v, '2024-01-01'::timestamptz + g * interval '1 hour' AS ts"
                       " FROM generate_series(1, 100) g")
    row = plain_user.execute(
        "SELECT count(DISTINCT orochi.time_bucket('1 day', ts)), orochi.approx_count_distinct(v) FROM t").fetchone()
    exact = plain_user.execute(
        "SELECT count(DISTINCT date_trunc('day', ts AT TIME ZONE 'UTC')), count(DISTINCT v) FROM t").fetchone()
    assert row == exact  # the sketch is exact while it is sparse


def test_plain_user_cannot_write_the_catalog(plain_user):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        plain_user.execute("DELETE FROM orochi.columnar_stripes")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        plain_user.execute("SELECT * FROM orochi.columnar_stripe_columns")
