"""Helpers for the bridge's tests: foreign tables over the test wrappers."""

from __future__ import annotations

import pytest
from psycopg import sql

WRAPPERS = "orochi_fdw.testing.wrappers."


@pytest.fixture
def foreign_table(db):
    """create(name, columns_sql, wrapper_class_name, **options) -> name"""

    def create(name: str, columns: str, wrapper: str, **options: object) -> str:
        opts = {"wrapper": WRAPPERS + wrapper, **{k: str(v) for k, v in options.items()}}
        db.execute(
            sql.SQL("CREATE FOREIGN TABLE {} (" + columns + ") SERVER orochi OPTIONS ({})").format(
                sql.Identifier(name),
                sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in opts.items()),
            )
        )
        return name

    return create
