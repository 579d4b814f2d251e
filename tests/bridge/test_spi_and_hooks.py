"""SPI from Python, SQL functions, transaction and sub-transaction hooks, options."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import sql


def test_spi_from_python(db, foreign_table):
    # catching SQL errors and writing need sub-transactions, which parallel mode
    # refuses (tests/safety/test_safety_parallel.py covers it)
    db.execute("SET force_parallel_mode = off")
    db.execute("CREATE TABLE target (x int)")
    foreign_table("probe", "step text, outcome text", "SpiProbeWrapper", target="target")
    rows = dict(db.execute("SELECT * FROM probe").fetchall())
    assert rows["params"] == "(42, 'xy', None)"
    assert rows["caught"] == "22012 division by zero"
    assert rows["after_subxacts"] == "(1, 1)"  # the rolled-back sub-transaction left nothing
    assert rows["prepared"] == "[0, 2, 4]"
    assert rows["typed"] == "5"
    assert db.execute("SELECT x FROM target").fetchall() == [(1,)]



def test_spi_table_wrapper_dml(db, foreign_table):
    db.execute("CREATE TABLE store (id bigserial PRIMARY KEY, name text, qty int CHECK (qty >= 0))")
    foreign_table("items", "id int8, name text, qty int", "SpiTableWrapper", target="public.store")
    assert db.execute("INSERT INTO items (name, qty) VALUES ('a', 1) RETURNING id, name, qty").fetchone() == (1, "a", 1)
    db.execute("INSERT INTO items (name, qty) SELECT 'n' || i, i FROM generate_series(1, 5) i")
    assert db.execute("UPDATE items SET qty = qty + 10 WHERE name = 'n3' RETURNING qty").fetchone() == (13,)
    assert db.execute("DELETE FROM items WHERE qty > 4").rowcount == 2
    assert db.execute("SELECT name, qty FROM items ORDER BY id").fetchall() == [
        ("a", 1), ("n1", 1), ("n2", 2), ("n4", 4)]
    # a Postgres error raised by SQL the wrapper ran keeps its SQLSTATE
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO items (name, qty) VALUES ('bad', -1)")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE items SET qty = -5 WHERE name = 'a'")
    assert db.execute("SELECT count(*) FROM store").fetchone() == (4,)


def test_insert_batches_and_transactions(db, foreign_table):
    db.execute("CREATE TABLE store (id bigserial PRIMARY KEY, name text, qty int)")
    foreign_table("items", "id int8, name text, qty int", "SpiTableWrapper", target="public.store", batch="true")
    db.execute("INSERT INTO items (name, qty) SELECT 'n' || i, i FROM generate_series(1, 2500) i")
    assert db.execute("SELECT count(*), sum(qty) FROM store").fetchone() == (2500, 3126250)
    db.execute("BEGIN")
    db.execute("INSERT INTO items (name, qty) SELECT 'r', 1 FROM generate_series(1, 10)")
    db.execute("ROLLBACK")
    assert db.execute("SELECT count(*) FROM store").fetchone() == (2500,)


def test_on_conflict_is_refused(db, foreign_table):
    db.execute("CREATE TABLE store (id bigserial PRIMARY KEY, name text, qty int)")
    foreign_table("items", "id int8, name text, qty int", "SpiTableWrapper", target="public.store")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="ON CONFLICT"):
        db.execute("INSERT INTO items VALUES (1, 'a', 1) ON CONFLICT DO NOTHING")


def test_read_only_wrapper_refuses_update(db, foreign_table):
    foreign_table("s", "id int8", "SeriesWrapper", rows=3)
    with pytest.raises(psycopg.Error, match="does not support UPDATE or DELETE"):
        db.execute("DELETE FROM s")


def _hooks(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def hooks_table(db, foreign_table, tmp_path_factory):
    import os
    import tempfile

    d = tempfile.mkdtemp(prefix="orochi-hooks-", dir="/tmp")
    os.chmod(d, 0o777)
    path = os.path.join(d, "hooks.jsonl")
    foreign_table("h", "x int", "HooksWrapper", log=path)
    return path


def test_commit_and_rollback_hooks(db, hooks_table):
    db.execute("SELECT * FROM h")
    assert _hooks(hooks_table) == [["begin", False], ["pre_commit"], ["commit"]]
    open(hooks_table, "w").close()
    db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    db.execute("SELECT * FROM h")
    db.execute("ROLLBACK")
    assert _hooks(hooks_table) == [["begin", True], ["rollback"]]
    open(hooks_table, "w").close()
    db.execute("BEGIN")
    db.execute("SELECT * FROM h")
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("SELECT 1/0")
    db.execute("ROLLBACK")
    assert _hooks(hooks_table) == [["begin", False], ["rollback"]]


def test_savepoint_hooks(db, hooks_table):
    db.execute("BEGIN")
    db.execute("SELECT * FROM h")
    db.execute("SAVEPOINT a")
    db.execute("SAVEPOINT b")
    db.execute("ROLLBACK TO SAVEPOINT b")
    db.execute("RELEASE SAVEPOINT a")
    db.execute("COMMIT")
    events = _hooks(hooks_table)
    assert events[0] == ["begin", False]
    assert ["sub_begin", 1] in events and ["sub_begin", 2] in events
    assert ["sub_rollback", 2] in events
    assert ["sub_commit", 1] in events
    assert events[-2:] == [["pre_commit"], ["commit"]]


def test_no_hooks_without_use(db, hooks_table):
    import os

    db.execute("SELECT 1")
    db.execute("BEGIN; SAVEPOINT s; RELEASE s; COMMIT")
    assert not os.path.exists(hooks_table)


@pytest.mark.parametrize(
    "ddl,error,message",
    [
        ("CREATE FOREIGN TABLE t (x int) SERVER orochi OPTIONS (wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', "
         "rows 'many')", psycopg.errors.FdwInvalidAttributeValue, 'invalid value for option "rows": "many"'),
        ("CREATE FOREIGN TABLE t (x int) SERVER orochi OPTIONS (wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', "
         "colour 'red')", psycopg.errors.FdwInvalidOptionName, 'invalid option "colour"'),
        ("CREATE FOREIGN TABLE t (x int) SERVER orochi OPTIONS (wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', "
         "mode 'sideways')", psycopg.errors.FdwInvalidAttributeValue, 'expected one of row, tuple, batch'),
        ("CREATE SERVER s2 FOREIGN DATA WRAPPER orochi OPTIONS (wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', "
         "rows '5')", psycopg.errors.FdwInvalidOptionName, 'invalid option "rows" for server'),
        ("ALTER FOREIGN DATA WRAPPER orochi OPTIONS (ADD x 'y')", psycopg.errors.FdwInvalidOptionName,
         'invalid option "x"'),
    ],
)
def test_bad_options_rejected_at_create(db, ddl, error, message):
    with pytest.raises(error) as exc:
        db.execute(ddl)
    assert message in str(exc.value)


def test_unknown_option_hint_lists_valid_ones(db):
    with pytest.raises(psycopg.errors.FdwInvalidOptionName) as exc:
        db.execute("CREATE FOREIGN TABLE t (x int) SERVER orochi OPTIONS "
                   "(wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', colour 'red')")
    assert exc.value.diag.message_hint == "Valid options in this context are: batch_size, mode, nulls, rows"


def test_alter_options_takes_effect(db, foreign_table):
    foreign_table("s", "id int8", "SeriesWrapper", rows=3)
    assert db.execute("SELECT count(*) FROM s").fetchone() == (3,)
    db.execute("ALTER FOREIGN TABLE s OPTIONS (SET rows '5')")
    assert db.execute("SELECT count(*) FROM s").fetchone() == (5,)


def test_python_info(db):
    info = dict(db.execute("SELECT * FROM orochi.python_info()").fetchall())
    assert info["python_version"].startswith("3.11")
    assert info["orochi_version"]


def test_row_ids_from_batches(db, foreign_table):
    foreign_table("r", "id int8", "RowidBatchWrapper", rows=50)
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    assert db.execute("DELETE FROM r WHERE id IN (0, 7, 49)").rowcount == 3
    assert sorted(notices) == sorted(f"delete {i * 3_000_000_007}" for i in (0, 7, 49))
    notices.clear()
    db.execute("UPDATE r SET id = id + 1000 WHERE id = 11")
    assert notices == [f"update {11 * 3_000_000_007} 1011"]


def test_import_foreign_schema(db):
    db.execute("CREATE SERVER gen FOREIGN DATA WRAPPER orochi "
               "OPTIONS (wrapper 'orochi_fdw.testing.wrappers.CatalogWrapper')")
    db.execute("CREATE SCHEMA imported")
    db.execute("IMPORT FOREIGN SCHEMA anything FROM SERVER gen INTO imported OPTIONS (rows '4')")
    assert db.execute("SELECT count(*), sum(id) FROM imported.numbers").fetchone() == (4, 6)
    assert db.execute('SELECT count(*) FROM imported."Mixed Case"').fetchone() == (10,)
    db.execute("CREATE SCHEMA only_one")
    db.execute("IMPORT FOREIGN SCHEMA anything LIMIT TO (numbers) FROM SERVER gen INTO only_one")
    assert db.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE nspname = 'only_one'").fetchall() == [("numbers",)]


def test_import_foreign_schema_type_names_are_type_names(db):
    """A wrapper's type names go into SQL text: anything more than one type
    name is refused, and nothing it carries runs."""
    db.execute("CREATE SERVER gen FOREIGN DATA WRAPPER orochi "
               "OPTIONS (wrapper 'orochi_fdw.testing.wrappers.CatalogWrapper')")
    db.execute("CREATE SCHEMA imported")
    for bad in ("bigint, extra text", "bigint) SERVER orochi OPTIONS (compression 'zstd'); --", "no_such_type"):
        with pytest.raises(psycopg.errors.FdwError, match="not a type name"):
            db.execute("IMPORT FOREIGN SCHEMA anything LIMIT TO (numbers) FROM SERVER gen INTO imported "
                       "OPTIONS (id_type %s)" % sql.Literal(bad).as_string(db))
    db.execute("IMPORT FOREIGN SCHEMA anything LIMIT TO (numbers) FROM SERVER gen INTO imported "
               "OPTIONS (id_type 'numeric(10,2)')")
    assert db.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                      "WHERE attrelid = 'imported.numbers'::regclass AND attname = 'id'").fetchone() == ("numeric(10,2)",)


def test_savepoint_opened_before_first_use(db, hooks_table):
    db.execute("BEGIN")
    db.execute("SAVEPOINT a")
    db.execute("SAVEPOINT b")
    db.execute("SELECT * FROM h")
    db.execute("ROLLBACK TO SAVEPOINT a")
    db.execute("COMMIT")
    events = _hooks(hooks_table)
    # the wrapper hears of the savepoints open when it joined, so the rollback matches
    assert events[:5] == [["begin", False], ["sub_begin", 1], ["sub_begin", 2],
                          ["sub_rollback", 2], ["sub_rollback", 1]], events
    assert events[-2:] == [["pre_commit"], ["commit"]]


def test_every_participant_hears_the_rollback(db, foreign_table, hooks_table):
    import os

    failing_log = os.path.join(os.path.dirname(hooks_table), "failing.jsonl")
    foreign_table("f", "x int", "HooksWrapper", log=failing_log, fail_in="rollback")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    db.execute("BEGIN")
    db.execute("SELECT * FROM f")
    db.execute("SELECT * FROM h")
    db.execute("ROLLBACK")
    assert _hooks(failing_log)[-1] == ["rollback"]
    assert _hooks(hooks_table)[-1] == ["rollback"]
    assert any("failing in rollback on purpose" in n for n in notices), notices
