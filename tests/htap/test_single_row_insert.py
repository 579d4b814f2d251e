"""One-row INSERTs into a columnar table, which the bridge writes straight
into the delta store once Python has allowed it for the table
(pgext/fdw_modify.c, ColumnarTable.fast_insert_layout): the rows must be
those the heap table gets, and whatever Python decides on (constraints,
RETURNING, triggers, hypertable routing, privileges) must still hold, also
when it changes under a backend that has learned the table's layout."""

from __future__ import annotations

import psycopg
import pytest

COLS = ("i int4, b int8, f float8, n numeric(12,3), s text, v varchar(8), d date, "
        "ts timestamp, tz timestamptz, flag bool, u uuid, j jsonb, arr int4[]")
ROWS = [
    (1, 10, 1.5, "12.345", "héllo", "short", "2024-02-29", "2024-01-01 10:00", "2024-01-01 10:00+00", True,
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", '{"k": [1, 2]}', "{1,2,3}"),
    (2, None, float("nan"), None, "", None, "infinity", None, "-infinity", None, None, None, "{}"),
    (None, -9223372036854775808, -0.0, "-0.001", "x" * 5000, "12345678", None, "1999-12-31 23:59:59.999999",
     None, False, None, "null", None),
]
INSERT = ("INSERT INTO {} (i, b, f, n, s, v, d, ts, tz, flag, u, j, arr) "
          "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
SELECT = "SELECT i, b, f::text, n, s, v, d::text, ts::text, tz::text, flag, u, j, arr FROM {} ORDER BY s, i NULLS FIRST"


def test_one_row_inserts_equal_heap_and_stay_modifiable(db):
    db.execute(f"CREATE TABLE h ({COLS})")
    db.execute(f"CREATE FOREIGN TABLE c ({COLS}) SERVER orochi")
    db.execute(f"CREATE FOREIGN TABLE slow ({COLS}) SERVER orochi")
    with db.cursor() as cur:
        for _ in range(2):            # the first statement learns the layout, the rest use it
            for row in ROWS:
                for t in ("h", "c"):
                    cur.execute(INSERT.format(t), row, prepare=True)
        cur.execute("SET orochi.insert_fast_path = off")
        for _ in range(2):
            for row in ROWS:
                cur.execute(INSERT.format("slow"), row, prepare=True)
        cur.execute("RESET orochi.insert_fast_path")
    assert db.execute(SELECT.format("c")).fetchall() == db.execute(SELECT.format("h")).fetchall()
    assert db.execute(SELECT.format("slow")).fetchall() == db.execute(SELECT.format("h")).fetchall()
    # the rows are ordinary delta rows: UPDATE and DELETE find them by row id
    for t in ("h", "c"):
        db.execute(f"UPDATE {t} SET s = s || '!' WHERE i = 1")
        db.execute(f"DELETE FROM {t} WHERE i = 2")
    assert db.execute(SELECT.format("c")).fetchall() == db.execute(SELECT.format("h")).fetchall()
    # a rolled back one-row INSERT leaves nothing
    with pytest.raises(psycopg.errors.DivisionByZero):
        with db.transaction():
            db.execute("INSERT INTO c (i, s) VALUES (99, 'gone')")
            db.execute("SELECT 1 / 0")
    assert db.execute("SELECT count(*) FROM c WHERE i = 99").fetchone() == (0,)
    # in one transaction, each statement sees the rows before it
    with db.transaction():
        for k in range(3):
            db.execute("INSERT INTO c (i, s) VALUES (%s, 'tx')", (100 + k,))
            assert db.execute("SELECT count(*) FROM c WHERE s = 'tx'").fetchone() == (k + 1,)


def test_constraints_returning_triggers_and_privileges(db, new_connection):
    db.execute("CREATE FOREIGN TABLE k (id int NOT NULL CHECK (id > 0), note text) SERVER orochi")
    db.execute("INSERT INTO k VALUES (1, 'a')")
    db.execute("INSERT INTO k VALUES (2, 'b')")
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.execute("INSERT INTO k VALUES (NULL, 'x')")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO k VALUES (-1, 'x')")
    assert db.execute("INSERT INTO k VALUES (3, 'c') RETURNING id, note").fetchall() == [(3, "c")]
    db.execute("CREATE TABLE seen (id int)")
    db.execute("CREATE FUNCTION k_seen() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN INSERT INTO seen SELECT count(*) FROM k; RETURN NEW; END $$")
    db.execute("CREATE TRIGGER k_after AFTER INSERT ON k FOR EACH ROW EXECUTE FUNCTION k_seen()")
    db.execute("INSERT INTO k VALUES (4, 'd')")
    assert db.execute("SELECT id FROM seen").fetchall() == [(4,)]   # the trigger saw the new row
    db.execute("DROP TRIGGER k_after ON k")
    db.execute("INSERT INTO k VALUES (5, 'e')")
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM k").fetchone() == ([1, 2, 3, 4, 5],)
    db.execute("CREATE ROLE k_reader LOGIN")
    db.execute("GRANT SELECT ON k TO k_reader")
    other = new_connection(user="k_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        other.execute("INSERT INTO k VALUES (6, 'f')")
    db.execute("GRANT INSERT ON k TO k_reader")
    other.execute("INSERT INTO k VALUES (6, 'f')")
    other.execute("INSERT INTO k VALUES (7, 'g')")
    assert db.execute("SELECT count(*) FROM k").fetchone() == (7,)


def test_table_becoming_a_hypertable_under_a_writer(db, new_connection):
    """A backend that learned the table's layout must route its next one-row
    INSERT into a chunk once another session made the table a hypertable."""
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi")
    writer = new_connection()
    for k in range(3):
        writer.execute("INSERT INTO m VALUES (%s, %s)", ("2024-01-01 00:00+00", k), prepare=True)
    db.execute("SELECT orochi.create_hypertable('m', 'ts', interval '1 day', migrate_data => true)")
    chunks = "SELECT count(*) FROM orochi.show_chunks('m')"
    before = db.execute(chunks).fetchone()[0]
    writer.execute("INSERT INTO m VALUES (%s, %s)", ("2024-03-05 12:00+00", 9), prepare=True)
    assert db.execute(chunks).fetchone()[0] == before + 1
    assert db.execute("SELECT count(*), sum(v) FROM m").fetchone() == (4, 12)
    assert db.execute("SELECT v FROM m WHERE ts >= '2024-03-05' AND ts < '2024-03-06'").fetchall() == [(9,)]
    # and a column added under the writer is written too
    db.execute("ALTER FOREIGN TABLE m ADD COLUMN w text")
    writer.execute("INSERT INTO m VALUES ('2024-03-05 13:00+00', 10, 'new')")
    assert db.execute("SELECT w FROM m WHERE v = 10").fetchall() == [("new",)]


def test_column_added_under_a_writer_of_a_plain_table(db, new_connection):
    db.execute("CREATE FOREIGN TABLE p (a int) SERVER orochi")
    writer = new_connection()
    writer.execute("INSERT INTO p VALUES (1)")
    writer.execute("INSERT INTO p VALUES (2)")
    db.execute("ALTER FOREIGN TABLE p ADD COLUMN b text")
    writer.execute("INSERT INTO p VALUES (3, 'three')")
    db.execute("ALTER FOREIGN TABLE p DROP COLUMN a")
    writer.execute("INSERT INTO p VALUES ('four')")
    assert db.execute("SELECT b FROM p ORDER BY b NULLS FIRST").fetchall() == [(None,), (None,), ("four",), ("three",)]
