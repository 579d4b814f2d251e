"""SQL from Python, in the backend's current transaction.

Only usable inside a Postgres backend (the bridge provides ``_orochi_pg``).
Every statement runs in an internal sub-transaction: a Postgres error arrives
as :class:`~orochi_fdw.errors.SPIError` and may be caught; an uncaught one
reaches the client exactly as Postgres reported it.

Values are always passed as parameters, never pasted into SQL text::

    rows = execute("SELECT id, name FROM orochi.tables WHERE relid = $1", [relid])

Parameter types are taken from the Python values where unambiguous (int is
int8, float is float8, datetime is timestamp[tz] ...) and otherwise inferred
from the statement, as for untyped libpq parameters; ``types`` names them
explicitly.

Whose rights a statement has (docs/SECURITY.md):

- by default the current role's, as if the caller had typed the statement;
- with ``internal=True`` the extension owner's, with ``search_path`` pinned to
  ``pg_catalog, pg_temp`` and as a security-restricted operation: for
  Orochi's own catalog and delta tables, which no other role may touch.  Such
  a statement names every object schema-qualified (or by oid), takes every
  value as a parameter, and never touches a user's table or calls a user's
  function: it must check the caller's rights first, as a separate
  statement without ``internal``;
- inside ``with running_as(role):`` that role's (a job's owner), which code
  in the block cannot shed (SET ROLE, RESET ROLE, SET SESSION
  AUTHORIZATION are refused).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

try:
    import _orochi_pg
except ImportError:  # outside a backend
    _orochi_pg = None


def _pg():
    if _orochi_pg is None:
        raise RuntimeError("orochi_fdw.bridge.spi is only available inside a Postgres backend")
    return _orochi_pg


def available() -> bool:
    """Whether this code runs inside a backend (SPI usable)."""
    return _orochi_pg is not None


@dataclass
class Result:
    """Rows of a statement (tuples), how many rows it processed, and the
    names of its result columns."""

    rows: list[tuple]
    rowcount: int
    columns: list[str]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple:
        return self.rows[i]

    def scalar(self) -> Any:
        """The first column of the first row, or None if there is no row."""
        return self.rows[0][0] if self.rows else None


class Plan:
    """A prepared statement, kept for the life of the backend; an internal
    one (see the module docstring) always runs as the extension owner."""

    __slots__ = ("query", "internal", "_plan")

    def __init__(self, query: str, types: Sequence[str] | None = None, internal: bool = False):
        self.query = query
        self.internal = internal
        self._plan = _pg().prepare(query, types, internal) if internal else _pg().prepare(query, types)

    def execute(self, params: Sequence[Any] | None = None, limit: int = 0, read_only: bool = False) -> Result:
        """Run the plan; ``read_only`` as for :func:`execute`."""
        if self.internal:
            return Result(*_pg().execute(self._plan, params, limit, None, read_only, True))
        if read_only:
            return Result(*_pg().execute(self._plan, params, limit, None, True))
        return Result(*_pg().execute(self._plan, params, limit))


_plans: dict[tuple[str, tuple | None, bool], Plan] = {}


def execute(query: str, params: Sequence[Any] | None = None, limit: int = 0,
            types: Sequence[str] | None = None, read_only: bool = False, internal: bool = False) -> Result:
    """Run one statement with parameters ($1, $2 ...).

    ``read_only=True`` runs a plain SELECT under the snapshot of the SQL
    statement being executed (a scan's, a function call's) instead of a new
    one, without advancing the command counter: in READ COMMITTED, the
    queries a scan makes this way all see the same data, and none sees rows
    the statement itself has written since it started.

    ``internal=True`` runs it as the extension owner (module docstring)."""
    if internal:
        return Result(*_pg().execute(query, params, limit, types, read_only, True))
    if read_only:
        return Result(*_pg().execute(query, params, limit, types, True))
    return Result(*_pg().execute(query, params, limit, types))


def prepared(query: str, types: Sequence[str] | None = None, internal: bool = False) -> Plan:
    """A plan for query, prepared once per backend and reused; ``internal``
    as for :func:`execute`."""
    key = (query, tuple(types) if types is not None else None, bool(internal))
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = Plan(query, types, bool(internal))
    return plan


@contextlib.contextmanager
def running_as(role_oid: int) -> Iterator[None]:
    """Run the block's SQL (and the bridge callbacks it causes) as the role
    ``role_oid``, as a security-restricted operation: SET ROLE, RESET ROLE
    and SET SESSION AUTHORIZATION are refused inside, and settings changed
    inside are rolled back at its end (as VACUUM and REFRESH MATERIALIZED
    VIEW run as the table's owner)."""
    pg = _pg()
    token = pg.become_user(int(role_oid))
    try:
        yield
    finally:
        pg.restore_user(token)


def is_superuser() -> bool:
    """Whether the current role is a superuser (outside a backend: True)."""
    return True if _orochi_pg is None else bool(_orochi_pg.is_superuser())


def current_user_oid() -> int:
    """The oid of the current role (``current_user``)."""
    return int(_pg().current_user_oid())


def setting(name: str) -> str | None:
    """A server setting's value as text (as current_setting shows it), or
    None if there is no such setting."""
    return _pg().setting(name)


@contextlib.contextmanager
def subtransaction() -> Iterator[None]:
    """A savepoint around a block: an exception rolls the block's SQL back
    and propagates; normal exit keeps it."""
    pg = _pg()
    pg.subxact_begin()
    try:
        yield
    except BaseException:
        pg.subxact_end(False)
        raise
    pg.subxact_end(True)


def log(level: str, message: str) -> None:
    """Log at debug, log, info, notice or warning."""
    _pg().log(level, message)


def notice(message: str) -> None:
    _pg().log("notice", message)


def quote_ident(name: str) -> str:
    """An identifier quoted the way Postgres's quote_ident does."""
    if _orochi_pg is not None:
        return _orochi_pg.quote_ident(name)
    if name.isidentifier() and name == name.lower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


def backend_info() -> dict[str, Any]:
    """data_directory, pid, database_encoding, database_oid, server_version_num."""
    return _pg().backend_info()


def transaction_id() -> int:
    """The current top-level transaction id (assigned if need be)."""
    return _pg().transaction_id()


def snapshot_key() -> bytes | None:
    """What decides which row versions the active snapshot sees (its xmin,
    xmax and in-progress transaction ids), or None when that is not all
    (no active snapshot, or this transaction has an id: its own changes are
    seen too). Two statements with equal keys see the same rows of every
    table, so a result read under one holds under the other."""
    return _pg().snapshot_key()


def xid_is_current(xid: int) -> bool:
    """Whether ``xid`` is this transaction's or one of its subtransactions'
    (a row whose xmin it is was written by this transaction)."""
    return bool(_pg().xid_is_current(int(xid)))


def durable_transaction_id() -> int:
    """The top-level transaction's full id, made durable first: a WAL record
    carrying it is written and flushed, so that after a crash the id is known
    to recovery and never handed out again (an id that never reached the
    disk would be). Costs one WAL flush."""
    return int(_pg().durable_transaction_id())


def agg_state_watch(state_id: int) -> bool:
    """When called from an aggregate's transition function: have ``state_id``
    listed by :func:`released_agg_states` once the memory context holding the
    aggregate's transition values goes (the group, window partition or query
    is over, or failed). Returns whether the call is an aggregate's."""
    return bool(_pg().agg_state_watch(int(state_id)))


def released_agg_states() -> list[int]:
    """The ids given to :func:`agg_state_watch` whose context went since the
    last call."""
    return list(_pg().released_agg_states())


def invalidate_relcache(relid: int = 0) -> None:
    """Every backend forgets what it keeps about the relation (0: about
    every relation) once this transaction commits: Postgres's relcache, and
    the bridge's per-backend facts about orochi tables (the single-row
    INSERT fast path, pgext/fdw_modify.c). A no-op outside a backend."""
    if _orochi_pg is not None:
        _orochi_pg.invalidate_relcache(int(relid))


def fault_injection() -> str:
    """The orochi.fault_injection setting ('' outside a backend)."""
    return _orochi_pg.fault_injection() if _orochi_pg is not None else ""
