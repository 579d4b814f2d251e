"""The caller's rights, checked explicitly by every SQL function that works
on a table (docs/SECURITY.md).

Orochi's catalog statements run as the extension owner
(``spi.execute(..., internal=True)``), so they cannot be where a caller's
rights are enforced: each entry point first asks Postgres, as the caller,
whether the caller may do what it asked, with the same rules and the same
messages as Postgres's own commands:

- maintenance (compact, vacuum, create_hypertable, compress_chunk,
  drop_chunks, policies) is for the table's owner, as ALTER TABLE, VACUUM
  and TRUNCATE ... are: ``must be owner of table t``;
- reading what a table holds (row counts, chunk lists) needs SELECT on it:
  ``permission denied for table t``;
- some things are for superusers only.

All three raise :class:`~orochi_fdw.errors.InsufficientPrivilegeError`
(SQLSTATE 42501).  The statements here run as the caller (never
``internal``): ``current_user`` is the role whose rights count.
"""

from __future__ import annotations

from orochi_fdw.bridge import spi
from orochi_fdw.errors import InsufficientPrivilegeError

#: privileges a table can be asked for (has_table_privilege's names)
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

_KIND_WORDS = {"f": "foreign table", "v": "view", "m": "materialized view", "r": "table",
               "p": "table", "S": "sequence"}


def relation_text(relid: int) -> str:
    """A relation's name as Postgres prints a regclass."""
    return str(spi.execute("SELECT $1::pg_catalog.regclass::text", [int(relid)], types=["oid"]).scalar())


def _relation(relid: int) -> tuple[str, str, bool] | None:
    """(name, kind word, whether the caller owns it) of a relation, or None."""
    rows = spi.execute(
        "SELECT c.oid::pg_catalog.regclass::text, c.relkind::text,"
        "       pg_catalog.pg_has_role(c.relowner, 'USAGE')"
        "  FROM pg_catalog.pg_class c WHERE c.oid = $1", [int(relid)], types=["oid"]).rows
    if not rows:
        return None
    name, kind, owner = rows[0]
    return name, _KIND_WORDS.get(kind, "relation"), bool(owner)


def relation_exists(relid: int) -> bool:
    """Whether a relation with that oid exists."""
    return _relation(relid) is not None


def owns(relid: int) -> bool:
    """Whether the current role has the rights of the relation's owner
    (superusers do)."""
    found = _relation(relid)
    return found is not None and found[2]


def require_owner(relid: int, action: str | None = None) -> None:
    """Refuse a caller without the rights of the relation's owner, as
    Postgres refuses ALTER TABLE.

    Args:
        relid: the relation.
        action: what was asked, for the DETAIL (e.g. "orochi.compact").

    Raises:
        InsufficientPrivilegeError: ``must be owner of table t``.
    """
    found = _relation(relid)
    if found is None:
        return  # gone: the caller's next statement reports it as Postgres does
    name, kind, owner = found
    if not owner:
        raise InsufficientPrivilegeError(
            f"must be owner of {'table' if kind == 'foreign table' else kind} {name}",
            detail=f"Only the owner of {name} (or a superuser) may call {action}." if action else None)


def has_table_privilege(relid: int, privilege: str) -> bool:
    """Whether the current role holds ``privilege`` on the whole relation
    (a grant on some of its columns only does not count)."""
    if privilege not in TABLE_PRIVILEGES:
        raise ValueError(f"unknown table privilege {privilege!r}")
    return bool(spi.execute("SELECT pg_catalog.has_table_privilege($1, $2)", [int(relid), privilege],
                            types=["oid", "text"]).scalar())


def require_table_privilege(relid: int, privilege: str, action: str | None = None) -> None:
    """Refuse a caller without ``privilege`` on the whole table, as a
    statement reading or writing every column would be refused.

    Raises:
        InsufficientPrivilegeError: ``permission denied for table t``.
    """
    if has_table_privilege(relid, privilege):
        return
    found = _relation(relid)
    if found is None:
        return
    name, kind, _ = found
    raise InsufficientPrivilegeError(
        f"permission denied for {'table' if kind == 'foreign table' else kind} {name}",
        detail=f"{action} needs the {privilege} privilege on {name}." if action else None)


def require_superuser(action: str, hint: str | None = None) -> None:
    """Refuse a caller that is not a superuser.

    Raises:
        InsufficientPrivilegeError: ``must be superuser to ...``.
    """
    if not spi.is_superuser():
        raise InsufficientPrivilegeError(f"must be superuser to {action}", hint=hint)


def require_role_member(role_oid: int, message: str, detail: str | None = None) -> None:
    """Refuse a caller that does not have the rights of ``role_oid`` (is not
    that role, a member inheriting from it, or a superuser).

    Raises:
        InsufficientPrivilegeError: with ``message``.
    """
    allowed = spi.execute("SELECT pg_catalog.pg_has_role($1, 'USAGE')", [int(role_oid)],
                          types=["oid"]).scalar()
    if not allowed:
        raise InsufficientPrivilegeError(message, detail=detail)
