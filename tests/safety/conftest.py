"""Fixtures for the safety tests: no SQL may crash a backend or corrupt its
embedded Python.  Every test here runs under the crash watcher of the root
conftest (a server process killed by a signal fails the test)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from psycopg import sql

WRAPPERS = "orochi_fdw.testing.wrappers."


@pytest.fixture
def wrapper_table(db):
    """create(name, columns_sql, wrapper_class_name, **options) -> name: a
    foreign table served by one of orochi_fdw.testing.wrappers."""

    def create(name: str, columns: str, wrapper: str, **options: object) -> str:
        opts = {"wrapper": WRAPPERS + wrapper, **{k: str(v) for k, v in options.items()}}
        db.execute(
            sql.SQL("CREATE FOREIGN TABLE {} (" + columns + ") SERVER orochi OPTIONS ({})").format(
                sql.Identifier(name),
                sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v))
                                   for k, v in opts.items()),
            )
        )
        return name

    return create


@pytest.fixture
def htap_table(db):
    """make(name, heap_name) -> (name, heap_name): a columnar table holding
    rows in stripes, in the delta store, deleted (bitmaps) and updated, and a
    heap table with the same rows (the oracle)."""

    def make(name: str = "ct", heap: str = "ht") -> tuple[str, str]:
        for table, kind in ((name, "columnar"), (heap, "heap")):
            if kind == "columnar":
                db.execute(sql.SQL("CREATE FOREIGN TABLE {} (id int8, g int4, v float8, t text) "
                                   "SERVER orochi OPTIONS (delta_row_limit '100', chunk_group_size '1000')")
                           .format(sql.Identifier(table)))
            else:
                db.execute(sql.SQL("CREATE TABLE {} (id int8, g int4, v float8, t text)").format(sql.Identifier(table)))
            ident = sql.Identifier(table)
            # stripes
            db.execute(sql.SQL("INSERT INTO {} SELECT i, i % 7, i * 0.25, 't' || (i % 13) "
                               "FROM generate_series(1, 5000) i").format(ident))
            # delta rows
            db.execute(sql.SQL("INSERT INTO {} SELECT i, i % 7, NULL, NULL FROM generate_series(5001, 5050) i")
                       .format(ident))
            # delete bitmaps and an update (delete + delta insert)
            db.execute(sql.SQL("DELETE FROM {} WHERE id % 10 = 3").format(ident))
            db.execute(sql.SQL("UPDATE {} SET v = -v WHERE id % 100 = 7").format(ident))
        return name, heap

    return make


@pytest.fixture
def shared_dir():
    """A directory under /tmp that the server's OS user can write to (a
    pytest tmp_path may not be reachable by it)."""
    d = tempfile.mkdtemp(prefix="orochi-safety-", dir="/tmp")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)
