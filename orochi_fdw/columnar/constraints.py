"""CHECK constraints added to a columnar table that already holds rows.

PostgreSQL takes a foreign table's CHECK constraint on trust: ``ALTER FOREIGN
TABLE ... ADD CONSTRAINT`` records it without looking at the rows (the data
lives elsewhere). A columnar table's rows are Orochi's own, so it does what
PostgreSQL does for a heap table: a constraint added without ``NOT VALID``
is checked against every stored row, and the ALTER fails (23514, PostgreSQL's
message) if one breaks it. New inserts and updates are checked by PostgreSQL
as for any table.

The DDL event trigger (sql/10_columnar.sql) runs this after each ALTER of
the table, as the role that ran it (its owner). The constraints to check
are the table's validated CHECK constraints whose catalog row this
transaction wrote (added now, or re-created by ALTER COLUMN ... TYPE); one
added in an earlier statement of the same transaction is checked again,
which costs a scan and changes nothing. The scan covers the table's
inheritance children (a hypertable's chunks) as PostgreSQL's ALTER does.

The check is ``SELECT 1 FROM t WHERE NOT (expression) LIMIT 1`` with the
expression as ``pg_get_expr`` deparses the constraint (the form pg_dump
writes, every identifier quoted by PostgreSQL), run with the caller's
rights: the expression may call the caller's functions.
"""

from __future__ import annotations

from orochi_fdw.bridge import spi
from orochi_fdw.errors import CheckViolationError

_NEW_CHECKS = """
SELECT c.conname::text, c.xmin::text, pg_catalog.pg_get_expr(c.conbin, c.conrelid),
       pg_catalog.format('%I.%I', n.nspname, r.relname), r.relname::text
  FROM pg_catalog.pg_constraint c
  JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
 WHERE c.conrelid = $1 AND c.contype = 'c' AND c.convalidated
 ORDER BY c.conname
"""


def check_new_constraints(relid: int) -> None:
    """Check the stored rows against the CHECK constraints this transaction
    added to the table.

    Raises:
        CheckViolationError: a row breaks one (the first by name).
    """
    for name, xmin, expression, table, relname in spi.execute(
            _NEW_CHECKS, [relid], types=["oid"], internal=True).rows:
        if not spi.xid_is_current(int(xmin)):
            continue
        # the expression is PostgreSQL's own deparse of the constraint
        if spi.execute(f"SELECT 1 FROM {table} WHERE NOT ({expression}) LIMIT 1").rows:
            raise CheckViolationError(f'check constraint "{name}" of relation "{relname}" is violated by some row')
