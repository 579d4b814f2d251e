"""Helpers for columnar table tests: a heap table is the oracle."""

from __future__ import annotations

import os

import psycopg


def data_dir(conn: psycopg.Connection) -> str:
    """The default columnar data directory of the connection's database."""
    pgdata = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
    dboid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    return os.path.join(pgdata, "orochi", str(dboid))


def files_on_disk(conn: psycopg.Connection, root: str | None = None) -> set[str]:
    """Every file under the database's folder of a data directory."""
    base = data_dir(conn) if root is None else root
    out = set()
    for dirpath, _, names in os.walk(base):
        out.update(os.path.join(dirpath, n) for n in names)
    return out


def catalog_files(conn: psycopg.Connection, table: str | None = None) -> set[str]:
    """The paths of the stripe files the catalog names (it names them
    relative to the database's folder: orochi._file_path)."""
    pgdata = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
    if table is None:
        rows = conn.execute("SELECT orochi._file_path(file_path) FROM orochi.columnar_stripes").fetchall()
    else:
        rows = conn.execute("SELECT orochi._file_path(file_path) FROM orochi.columnar_stripes"
                            " WHERE relid = %s::regclass", (table,)).fetchall()
    return {os.path.join(pgdata, r[0]) for r in rows}


def rows_as_text(conn: psycopg.Connection, table: str, where: str = "") -> list[str]:
    """Rows of a table as their text form, sorted (an order-free comparison)."""
    return [r[0] for r in conn.execute(
        f"SELECT x::text FROM {table} x {where} ORDER BY 1").fetchall()]


def assert_same_rows(conn: psycopg.Connection, columnar: str, heap: str, where: str = "") -> None:
    got = rows_as_text(conn, columnar, where)
    want = rows_as_text(conn, heap, where)
    assert len(got) == len(want), f"{columnar} {where}: {len(got)} rows, heap has {len(want)}"
    assert got == want, f"{columnar} {where}: rows differ from the heap table"


def stripes_only(cluster, dbname: str) -> None:
    """Every INSERT into the database's orochi tables writes stripes (the
    server option delta_row_limit '0')."""
    conn = cluster.connect(dbname, autocommit=True)
    try:
        conn.execute("ALTER SERVER orochi OPTIONS (ADD delta_row_limit '0')")
    finally:
        conn.close()
