"""Text in databases that are not UTF-8."""

from __future__ import annotations

import psycopg
import pytest

WRAPPERS = "orochi_fdw.testing.wrappers."


@pytest.fixture
def latin1_db(pg_cluster, make_database):
    name = make_database(encoding="LATIN1")
    conn = pg_cluster.connect(name, autocommit=True)
    conn.execute("SET client_encoding = 'UTF8'")
    yield conn
    conn.close()


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_latin1_round_trip(latin1_db, mode):
    db = latin1_db
    db.execute(f"CREATE FOREIGN TABLE e (t text, v varchar(10), j jsonb) SERVER orochi "
               f"OPTIONS (wrapper '{WRAPPERS}EchoTypesWrapper', mode '{mode}')")
    db.execute("CREATE TABLE h (t text, v varchar(10), j jsonb)")
    db.execute("INSERT INTO h VALUES ('café crème', 'naïve', '{\"k\": \"é\"}'), ('', NULL, NULL)")
    db.execute("INSERT INTO e SELECT * FROM h")
    assert db.execute("SELECT * FROM e").fetchall() == db.execute("SELECT * FROM h").fetchall()


def test_latin1_quals_and_generated_text(latin1_db):
    db = latin1_db
    db.execute(f"CREATE FOREIGN TABLE q (field text, operator text, value text, pytype text, coll text) "
               f"SERVER orochi OPTIONS (wrapper '{WRAPPERS}QualsEchoWrapper')")
    assert db.execute("SELECT value FROM q WHERE value <> 'déjà'").fetchall() == [("'déjà'",)]


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_unrepresentable_text_is_a_clear_error(latin1_db, mode):
    db = latin1_db
    db.execute(f"CREATE FOREIGN TABLE e (t text) SERVER orochi "
               f"OPTIONS (wrapper '{WRAPPERS}EchoTypesWrapper', mode '{mode}')")
    # the euro sign has no LATIN1 form: the insert itself fails in conversion from the client
    with pytest.raises(psycopg.errors.UntranslatableCharacter):
        db.execute("INSERT INTO e VALUES ('€')")


def test_python_text_not_in_database_encoding(latin1_db):
    """Python produces a character LATIN1 cannot hold: a clear error."""
    db = latin1_db
    db.execute(f"CREATE FOREIGN TABLE f (t text) SERVER orochi "
               f"OPTIONS (wrapper '{WRAPPERS}ErrorWrapper', bad 'euro')")
    with pytest.raises(psycopg.errors.UntranslatableCharacter):
        db.execute("SELECT t FROM f")
    assert db.execute("SELECT 1").fetchone() == (1,)
