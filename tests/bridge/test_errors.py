"""Python errors become clean Postgres ERRORs; bad data from Python never
crashes a backend; failing queries do not leak."""

from __future__ import annotations

import psycopg
import pytest


def test_exception_names_python_error_with_traceback(db, foreign_table):
    foreign_table("f", "id int8", "ErrorWrapper", fail_in="execute")
    with pytest.raises(psycopg.errors.ExternalRoutineException) as exc:
        db.execute("SELECT * FROM f")
    diag = exc.value.diag
    assert diag.message_primary == "ZeroDivisionError: failing in execute on purpose"
    assert "Traceback (most recent call last)" in diag.message_detail
    assert "wrappers.py" in diag.message_detail and "in execute" in diag.message_detail
    assert db.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("where,exc_name", [("init", "ValueError"), ("iterate", "KeyError")])
def test_exceptions_elsewhere(db, foreign_table, where, exc_name):
    foreign_table("f", "id int8", "ErrorWrapper", fail_in=where)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT * FROM f")
    assert exc.value.diag.message_primary.startswith(exc_name)


def test_error_in_insert(db, foreign_table):
    foreign_table("f", "id int8", "ErrorWrapper")
    with pytest.raises(psycopg.errors.ExternalRoutineException, match="failing in insert"):
        db.execute("INSERT INTO f VALUES (1)")


@pytest.mark.parametrize(
    "bad,message",
    [
        ("scalar", "yielded a int"),
        ("short_tuple", "row of 1 values for a table of 2 columns"),
        ("bad_batch_length", 'batch column "id" has 3 values for 5 rows'),
        ("bad_offsets", "offsets"),
        ("bad_utf8", "invalid byte sequence"),
        ("wrong_kind", "wire kind 6"),
    ],
)
def test_wrong_shapes_are_errors_not_crashes(db, foreign_table, bad, message):
    foreign_table("f", "id int8, t text", "ErrorWrapper", bad=bad)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT * FROM f")
    assert message in str(exc.value)
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_wrong_value_type_names_the_column(db, foreign_table):
    foreign_table("f", "id int8, t text", "ErrorWrapper", bad="wrong_type")
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT * FROM f")
    assert 'column "id"' in (exc.value.diag.context or "")


def test_missing_wrapper_class(db):
    # only declared wrappers load: a class that is not one is never imported
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue, match="not a declared orochi wrapper"):
        db.execute("CREATE FOREIGN TABLE f (id int) SERVER orochi "
                   "OPTIONS (wrapper 'orochi_fdw.testing.wrappers.NoSuchWrapper')")
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue, match="not a declared orochi wrapper"):
        db.execute("CREATE FOREIGN TABLE f (id int) SERVER orochi OPTIONS (wrapper 'no_such_module.X')")


def _backend_memory_kb(db, pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_failing_queries_keep_memory_flat(db, foreign_table):
    foreign_table("f", "id int8", "ErrorWrapper", fail_in="execute")
    foreign_table("g", "id int8, t text", "ErrorWrapper", bad="bad_batch_length")
    pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]

    def fail(n):
        for i in range(n):
            with pytest.raises(psycopg.Error):
                db.execute("SELECT * FROM f" if i % 2 else "SELECT * FROM g")

    fail(200)  # warm up: caches, allocator high-water marks
    before = _backend_memory_kb(db, pid)
    fail(1000)
    after = _backend_memory_kb(db, pid)
    assert after - before < 2048, f"backend grew by {after - before} kB over 1,000 failing queries"


def test_missing_virtualenv_is_a_clear_error(make_cluster):
    # backends start Python themselves only when orochi is not preloaded (with
    # preloading, the postmaster's interpreter and its setting count)
    pg = make_cluster("lazy", initdb_settings={"shared_preload_libraries": ""})
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as conn:
        conn.execute("CREATE FOREIGN TABLE s (id int8) SERVER orochi OPTIONS"
                     " (wrapper 'orochi_fdw.testing.wrappers.SeriesWrapper', rows '3')")
    fresh = pg.connect("app", autocommit=True)
    fresh.execute("SET orochi.python_venv = '/nonexistent/venv'")
    with pytest.raises(psycopg.errors.ExternalRoutineException) as exc:
        fresh.execute("SELECT * FROM s")
    assert "/nonexistent/venv/bin/python3" in exc.value.diag.message_primary
    assert "orochi.python_venv" in exc.value.diag.message_hint
    assert fresh.execute("SELECT 1").fetchone() == (1,)
    fresh.execute("RESET orochi.python_venv")
    assert fresh.execute("SELECT count(*) FROM s").fetchone() == (3,)
    fresh.close()
