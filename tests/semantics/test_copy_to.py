"""COPY t TO and psql's \\copy t to on orochi tables: the same bytes as from a
heap table holding the same rows, with column lists and options; the SELECT
privilege on the table or the columns is what it takes."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
from psycopg import sql

COLUMNS = "k int, t text, f float8, d date, n numeric, j jsonb"


@pytest.fixture
def tables(db):
    opts = "OPTIONS (stripe_row_limit '40', chunk_group_size '8', delta_row_limit '10')"
    db.execute(f"CREATE FOREIGN TABLE ct ({COLUMNS}) SERVER orochi {opts}")
    db.execute(f"CREATE TABLE ct_h ({COLUMNS})")
    rows = ("SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE 'a;b \"q\" ' || i || E'\\\\t\\nx' END, i / 3.0,"
            " date '2024-02-28' + i, i * 1.25, jsonb_build_object('i', i) FROM generate_series({}, {}) i")
    for t in ("ct", "ct_h"):
        db.execute(f"INSERT INTO {t} " + rows.format(1, 100))  # stripes
        db.execute(f"INSERT INTO {t} " + rows.format(101, 105))  # delta rows
        db.execute(f"DELETE FROM {t} WHERE k % 7 = 0")
        db.execute(f"UPDATE {t} SET n = -n WHERE k % 9 = 0")
    return db


def _copy_out(conn, statement: str) -> bytes:
    with conn.cursor().copy(statement) as cp:
        return b"".join(bytes(chunk) for chunk in cp)


def _sorted_lines(data: bytes, header: bool = False) -> list[bytes]:
    lines = data.split(b"\n")
    return lines[:1] + sorted(lines[1:]) if header else sorted(lines)


@pytest.mark.parametrize("columns,options,header", [
    ("", "", False),
    ("", "(FORMAT csv, HEADER)", True),
    ("(t, k)", "(FORMAT csv, HEADER true, DELIMITER ';', QUOTE '''', FORCE_QUOTE (k))", True),
    ("(j, d, n)", "(FORMAT text, NULL 'nil', DELIMITER '|')", False),
    ("(k, f)", "(FORMAT csv, FORCE_QUOTE *, ESCAPE '\\')", False),
    ("", "(FORMAT csv, HEADER, ENCODING 'LATIN1')", True),
])
def test_copy_to_like_heap(tables, columns, options, header):
    db = tables
    got = _copy_out(db, f"COPY ct {columns} TO STDOUT {'WITH ' + options if options else ''}")
    want = _copy_out(db, f"COPY ct_h {columns} TO STDOUT {'WITH ' + options if options else ''}")
    assert got
    assert _sorted_lines(got, header) == _sorted_lines(want, header)


def test_copy_to_binary(tables):
    db = tables
    rows = {}
    for t in ("ct", "ct_h"):
        with db.cursor().copy(f"COPY {t} (k, t, n) TO STDOUT (FORMAT binary)") as cp:
            cp.set_types(["int4", "text", "numeric"])
            rows[t] = sorted(cp.rows(), key=repr)
    assert rows["ct"] == rows["ct_h"] and rows["ct"]


def test_copy_to_a_file_and_errors(tables, pg_cluster):
    db = tables
    path = {t: os.path.join(pg_cluster.base, f"{t}.csv") for t in ("ct", "ct_h")}
    for t in ("ct", "ct_h"):
        assert db.execute(sql.SQL("COPY {} TO {} (FORMAT csv)").format(
            sql.Identifier(t), sql.Literal(path[t]))).rowcount == 90
    with open(path["ct"], "rb") as f, open(path["ct_h"], "rb") as g:
        assert sorted(f.read().split(b"\n")) == sorted(g.read().split(b"\n"))
    # a column that does not exist, or named twice: COPY's own errors
    for bad, error in (("(k, nope)", psycopg.errors.UndefinedColumn), ("(k, k)", psycopg.errors.DuplicateColumn)):
        for t in ("ct", "ct_h"):
            with pytest.raises(error) as exc:
                db.execute(f"COPY {t} {bad} TO STDOUT")
            assert t in str(exc.value) or "specified more than once" in str(exc.value)
    # the table alone (ONLY), as COPY reads it
    db.execute("CREATE FOREIGN TABLE ct_child (x int) INHERITS (ct) SERVER orochi")
    db.execute("INSERT INTO ct_child (k) VALUES (-1)")
    assert b"-1\t" not in _copy_out(db, "COPY ct TO STDOUT")


def test_copy_to_privileges(tables, new_connection):
    db = tables
    db.execute("CREATE ROLE copier LOGIN")
    try:
        conn = new_connection()
        conn.execute("SET ROLE copier")
        for t in ("ct", "ct_h"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                _copy_out(conn, f"COPY {t} TO STDOUT")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                _copy_out(conn, f"COPY {t} (k) TO STDOUT")
        # writing a server file needs that right first, whatever the table
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="pg_write_server_files"):
            conn.execute("COPY ct TO '/tmp/never-written.csv'")
        conn.execute("RESET ROLE")
    finally:
        db.execute("DROP OWNED BY copier")
        db.execute("DROP ROLE copier")


def test_psql_copy_in_a_new_session(tables, pg_cluster, db_name, tmp_path):
    """psql's \\copy t to ... from a fresh connection: the bridge must be loaded
    in the session (here with session_preload_libraries; see sql-reference.md)."""
    db = tables
    db.execute(sql.SQL("ALTER DATABASE {} SET session_preload_libraries = 'orochi'").format(
        sql.Identifier(db_name)))
    psql = os.path.join(pg_cluster.bindir, "psql")
    out = {}
    for t in ("ct", "ct_h"):
        target = tmp_path / f"{t}.csv"
        subprocess.run([psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", pg_cluster.dsn(db_name),
                        "-c", f"\\copy {t} (k, t, d) to '{target}' with (format csv, header)"],
                       check=True, capture_output=True, timeout=60)
        out[t] = target.read_bytes()
    assert _sorted_lines(out["ct"], True) == _sorted_lines(out["ct_h"], True)
    assert out["ct"].startswith(b"k,t,d\n")
