"""The fence the ha duty puts on a primary that lost its lease: no write
gets through it, whichever way a client asks for a read-write transaction
(BEGIN READ WRITE, SET transaction_read_only, session characteristics),
whatever writes (heap and columnar tables, COPY, DDL, a function's SQL, a
prepared statement); nobody can SET it off; unfencing lets writes in again."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from orochi_fdw.ha import postgres as ha_pg
from orochi_fdw.testing.cluster import PostgresCluster

WRITES = [
    "INSERT INTO h VALUES (2)",
    "INSERT INTO t VALUES (2)",
    "UPDATE t SET x = x + 1",
    "DELETE FROM h",
    "WITH w AS (INSERT INTO h VALUES (3) RETURNING x) SELECT * FROM w",
    "SELECT write_h()",
    "EXECUTE ins",
    "CREATE TABLE other (x int)",
    "SELECT nextval('s')",
]


@pytest.fixture(scope="module")
def server():
    with PostgresCluster("fence-writes") as pg:
        pg.create_database("app")
        with pg.connect("app", autocommit=True) as conn:
            conn.execute("CREATE TABLE h (x int)")
            conn.execute("CREATE FOREIGN TABLE t (x int) SERVER orochi")
            conn.execute("INSERT INTO h VALUES (1)")
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("CREATE SEQUENCE s")
            conn.execute("CREATE FUNCTION write_h() RETURNS void LANGUAGE plpgsql "
                         "AS $$ BEGIN INSERT INTO h VALUES (4); END $$")
            conn.execute("CREATE ROLE app_user LOGIN")
            conn.execute("GRANT ALL ON h, t, s TO app_user")
        yield pg


def _refused(conn: psycopg.Connection, statement: str, *, begin: str | None = None) -> None:
    conn.execute("PREPARE ins AS INSERT INTO t VALUES (5)")
    try:
        with pytest.raises(errors.ReadOnlySqlTransaction):
            if begin:
                conn.execute(begin)
            conn.execute(statement)
    finally:
        conn.rollback() if not conn.autocommit else conn.execute("ROLLBACK")
        conn.execute("DEALLOCATE ins")


def test_no_write_gets_through_the_fence(server):
    dsn = server.dsn("app")
    with server.connect("app", autocommit=True) as before:
        ha_pg.fence(dsn)
        with pytest.raises(psycopg.OperationalError):  # sessions of before the fence are ended
            before.execute("SELECT 1")
    try:
        with ha_pg.connect(dsn) as conn:
            assert ha_pg.status(conn)["read_only"] is True
        for user in ("postgres", "app_user"):
            with psycopg.connect(server.dsn("app", user=user), autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM h").fetchone()[0] == 1
                assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1
                for statement in WRITES:
                    _refused(conn, statement, begin="BEGIN READ WRITE")
                conn.execute("SET default_transaction_read_only = off")
                conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
                for statement in WRITES[:3]:
                    _refused(conn, statement)
                    _refused(conn, statement, begin="BEGIN; SET TRANSACTION READ WRITE")
                with pytest.raises(errors.ReadOnlySqlTransaction):
                    with conn.cursor().copy("COPY h FROM STDIN") as copy:
                        copy.write_row((9,))
                with pytest.raises(errors.CantChangeRuntimeParam):
                    conn.execute("SET orochi.fence_writes = off")
                assert conn.execute("SELECT count(*) FROM h").fetchone()[0] == 1
    finally:
        ha_pg.unfence(dsn)
    with ha_pg.connect(dsn) as conn:
        assert ha_pg.status(conn)["read_only"] is False
    with server.connect("app", autocommit=True) as conn:
        conn.execute("INSERT INTO h VALUES (2)")
        conn.execute("INSERT INTO t VALUES (2)")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2
