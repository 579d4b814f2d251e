"""The workload catalog: resource pools, workload classes and role
assignments, in ``orochi.resource_pools``, ``orochi.workload_classes`` and
``orochi.workload_role_classes`` of the workload database.

Every change takes the catalog's lock (SHARE ROW EXCLUSIVE, which conflicts
with itself) and asks the C side to publish the catalog when the transaction
commits (``orochi.workload_publish()``): changes are serialised, the state
read at pre-commit is the latest, and a rolled-back change is never in force.

Validation lives here; the limits are those of the shared memory the C side
keeps (pgext/workload.c).

The catalog tables belong to the extension owner and are granted to no one
(docs/SECURITY.md): every entry point first checks, as the caller, that the
caller is a superuser, then reads and writes them with internal statements.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from orochi_fdw.bridge import privileges, spi
from orochi_fdw.errors import SPIError
from orochi_fdw.workload.errors import (DefaultPoolError, DependentClassesError, DuplicateWorkloadObjectError,
                                        InvalidWorkloadArgumentError, PoolInUseError,
                                        UndefinedDatabaseError, UndefinedWorkloadObjectError,
                                        WorkloadLimitError, WrongDatabaseError)

#: limits of the shared memory (pgext/workload.c WL_MAX_*)
MAX_POOLS = 64
MAX_CLASSES = 128
MAX_ROLE_CLASSES = 256
MAX_MATCH_VALUES = 8

#: the pool of statements no class takes; configured by settings
DEFAULT_POOL = "default"

#: statement kinds, as the bits of ``match_kinds`` (pgext/workload.c WL_KIND_*)
KINDS = {"read": 1, "write": 2, "ddl": 4}

#: the criteria a class's ``match`` may use
MATCH_KEYS = ("role", "database", "application_name", "kind", "min_cost")

#: bytes in a name (NAMEDATALEN - 1); application_name is cut to the same
NAME_BYTES = 63

_LOCK = ("LOCK TABLE orochi.resource_pools, orochi.workload_classes, orochi.workload_role_classes "
         "IN SHARE ROW EXCLUSIVE MODE")


# ---------------------------------------------------------------- checks shared by every change

def _catalog(query: str, params: list | None = None, types: list[str] | None = None) -> spi.Result:
    """A statement on the workload catalog tables, run as the extension owner
    (internal); the caller's rights are checked before (require_superuser)."""
    return spi.execute(query, params, types=types, internal=True)


def require_superuser(action: str) -> None:
    """Raises InsufficientPrivilegeError (42501) unless the caller is a superuser."""
    privileges.require_superuser(action, hint="Resource pools and workload classes apply to the whole "
                                              "server; only superusers define them.")


def require_workload_database() -> None:
    """Raises WrongDatabaseError unless this is the database whose catalog holds the pools."""
    current, wanted = spi.execute(
        "SELECT current_database()::text, pg_catalog.current_setting('orochi.workload_database')").rows[0]
    if current != wanted:
        raise WrongDatabaseError(
            f'resource pools and workload classes are defined in database "{wanted}"',
            detail=f'This is database "{current}"; orochi.workload_database names the database whose '
                   "catalog the server reads.",
            hint=f'Connect to database "{wanted}" to change them.')


def begin_change(action: str) -> None:
    """Checks and locks for a change of the catalog, and publishes it at commit."""
    require_superuser(action)
    require_workload_database()
    _catalog(_LOCK)
    spi.execute("SELECT orochi.workload_publish()")


# ---------------------------------------------------------------- argument checks

def check_name(value: Any, what: str) -> str:
    """A pool or class name: a non-empty string of at most 63 bytes."""
    if value is None:
        raise InvalidWorkloadArgumentError(f"{what} name cannot be NULL")
    if not isinstance(value, str) or value == "":
        raise InvalidWorkloadArgumentError(f"{what} name cannot be empty")
    if len(value.encode("utf-8")) > NAME_BYTES:
        raise InvalidWorkloadArgumentError(f'{what} name "{value}" is too long',
                                           detail=f"Names are at most {NAME_BYTES} bytes.")
    return value


def check_concurrency(value: Any) -> int:
    if value is None:
        raise InvalidWorkloadArgumentError("max_concurrency cannot be NULL",
                                           hint="A pool runs at least one statement at a time.")
    if value < 1:
        raise InvalidWorkloadArgumentError(f"max_concurrency must be at least 1, not {value}",
                                           hint="A pool runs at least one statement at a time; "
                                                "use max_queue => 0 to refuse statements once it is full.")
    return int(value)


def check_optional(value: Any, name: str, minimum: int, *, allow_unset: bool = False) -> int | None:
    """None stays None; -1 means "remove the limit" where allow_unset (alter)."""
    if value is None:
        return None
    if allow_unset and value == -1:
        return -1
    if value < minimum:
        extra = " (or -1 to remove the limit)" if allow_unset else ""
        raise InvalidWorkloadArgumentError(f"{name} must be at least {minimum}{extra}, not {value}")
    return int(value)


class _Discard(Exception):
    """Rolls a subtransaction back on purpose."""


def work_mem_kb(value: str) -> int:
    """A work_mem value ('64MB', '65536' in kB) in kB, parsed and range-checked
    by PostgreSQL's own setting (its units, limits and messages)."""
    result: list[int] = []
    try:
        with spi.subtransaction():
            spi.execute("SELECT pg_catalog.set_config('work_mem', $1, true)", [value], types=["text"])
            result.append(int(spi.execute(
                "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'work_mem'").scalar()))
            raise _Discard
    except _Discard:
        pass
    except SPIError as exc:
        raise InvalidWorkloadArgumentError(f'invalid value for work_mem: "{value}"',
                                           detail=exc.message, hint=exc.hint) from None
    return result[0]


# ---------------------------------------------------------------- pools

@dataclass(frozen=True)
class Pool:
    """One row of ``orochi.resource_pools``."""

    pool_id: int
    name: str
    max_concurrency: int
    max_queue: int | None
    queue_timeout_ms: int | None
    query_timeout_ms: int | None
    priority: int
    work_mem_kb: int | None


_POOL_COLUMNS = ("pool_id, pool_name::text, max_concurrency, max_queue, queue_timeout_ms, "
                 "query_timeout_ms, priority, work_mem_kb")


def get_pool(name: str) -> Pool | None:
    rows = _catalog(f"SELECT {_POOL_COLUMNS} FROM orochi.resource_pools WHERE pool_name = $1",
                    [name], types=["name"]).rows
    return Pool(*rows[0]) if rows else None


def _refuse_default(name: str, action: str) -> None:
    if name == DEFAULT_POOL:
        raise DefaultPoolError(f'cannot {action} the default pool',
                               detail="The default pool takes the statements no workload class takes.",
                               hint="Set orochi.default_pool_concurrency and orochi.default_query_timeout_ms "
                                    "to configure it.")


def create_pool(name: str, max_concurrency: int, max_queue: int | None, queue_timeout_ms: int | None,
                query_timeout_ms: int | None, priority: int, work_mem: str | None) -> int:
    """Insert a pool; returns its id."""
    _refuse_default(name, "create")
    if get_pool(name) is not None:
        raise DuplicateWorkloadObjectError(f'resource pool "{name}" already exists')
    count = _catalog("SELECT count(*) FROM orochi.resource_pools").scalar()
    if count >= MAX_POOLS:
        raise WorkloadLimitError(f"too many resource pools (at most {MAX_POOLS})")
    kb = work_mem_kb(work_mem) if work_mem is not None else None
    return int(_catalog(
        "INSERT INTO orochi.resource_pools (pool_name, max_concurrency, max_queue, queue_timeout_ms, "
        "query_timeout_ms, priority, work_mem_kb) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING pool_id",
        [name, max_concurrency, max_queue, queue_timeout_ms, query_timeout_ms, priority, kb],
        types=["name", "int4", "int4", "int4", "int4", "int4", "int4"]).scalar())


def alter_pool(name: str, *, max_concurrency: int | None, max_queue: int | None,
               queue_timeout_ms: int | None, query_timeout_ms: int | None, priority: int | None,
               work_mem: str | None, new_name: str | None) -> None:
    """Change the settings given (not None); -1 (or work_mem 'default') removes one."""
    _refuse_default(name, "alter")
    pool = get_pool(name)
    if pool is None:
        raise UndefinedWorkloadObjectError(f'resource pool "{name}" does not exist')
    if new_name is not None and new_name != name:
        _refuse_default(new_name, "rename a pool to")
        if get_pool(new_name) is not None:
            raise DuplicateWorkloadObjectError(f'resource pool "{new_name}" already exists')

    def pick(new: int | None, old: int | None) -> int | None:
        if new is None:
            return old
        return None if new == -1 else new

    kb = pool.work_mem_kb
    if work_mem is not None:
        kb = None if work_mem.strip().lower() == "default" else work_mem_kb(work_mem)
    _catalog(
        "UPDATE orochi.resource_pools SET pool_name = $2, max_concurrency = $3, max_queue = $4, "
        "queue_timeout_ms = $5, query_timeout_ms = $6, priority = $7, work_mem_kb = $8 WHERE pool_id = $1",
        [pool.pool_id, new_name if new_name is not None else name,
         max_concurrency if max_concurrency is not None else pool.max_concurrency,
         pick(max_queue, pool.max_queue), pick(queue_timeout_ms, pool.queue_timeout_ms),
         pick(query_timeout_ms, pool.query_timeout_ms),
         priority if priority is not None else pool.priority, kb],
        types=["int4", "name", "int4", "int4", "int4", "int4", "int4", "int4"])


def pool_activity(name: str) -> tuple[int, int]:
    """(running, queued) of a pool in shared memory; (0, 0) when the server
    has no workload management (orochi not preloaded) or the pool is not in force."""
    preloaded = spi.execute("SELECT preloaded FROM orochi.workload_status()").scalar()
    if not preloaded:
        return 0, 0
    rows = spi.execute("SELECT running, queued FROM orochi.pool_stats() WHERE pool_name = $1 AND NOT dropped",
                       [name], types=["text"]).rows
    if not rows:
        return 0, 0
    # the statement asking holds a slot too, perhaps of this pool
    mine = spi.execute("SELECT count(*) FROM orochi.session_resources() WHERE pid = pg_catalog.pg_backend_pid() "
                       "AND pool_name = $1 AND state = 'running'", [name], types=["text"]).scalar()
    return int(rows[0][0]) - int(mine), int(rows[0][1])


def drop_pool(name: str, if_exists: bool) -> None:
    """Remove a pool no class names and no statement uses."""
    _refuse_default(name, "drop")
    pool = get_pool(name)
    if pool is None:
        if if_exists:
            spi.notice(f'resource pool "{name}" does not exist, skipping')
            return
        raise UndefinedWorkloadObjectError(f'resource pool "{name}" does not exist')
    classes = [r[0] for r in _catalog(
        "SELECT class_name::text FROM orochi.workload_classes WHERE pool_id = $1 ORDER BY class_name",
        [pool.pool_id], types=["int4"])]
    if classes:
        listed = ", ".join(f'"{c}"' for c in classes)
        raise DependentClassesError(
            f'cannot drop resource pool "{name}" because workload classes use it',
            detail=f"Workload classes {listed} send their statements to it.",
            hint="Drop those classes, or move them to another pool with orochi.alter_workload_class, first.")
    running, queued = pool_activity(name)
    if running or queued:
        raise PoolInUseError(
            f'resource pool "{name}" is in use',
            detail=f"{running} statements run in it and {queued} wait in its queue.",
            hint="Drop it when they are done; orochi.session_resources() lists them.")
    _catalog("DELETE FROM orochi.resource_pools WHERE pool_id = $1", [pool.pool_id], types=["int4"])


# ---------------------------------------------------------------- classes

@dataclass
class Match:
    """A class's criteria, normalized: names resolved to oids, kinds to bits."""

    roles: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    application_names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    min_cost: float | None = None

    @property
    def specificity(self) -> int:
        """How many criteria the class sets: classes with more are tried first."""
        return sum(1 for v in (self.roles, self.databases, self.application_names, self.kinds) if v) + \
            (self.min_cost is not None)

    @property
    def kind_bits(self) -> int:
        bits = 0
        for kind in self.kinds:
            bits |= KINDS[kind]
        return bits

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.roles:
            out["role"] = self.roles
        if self.databases:
            out["database"] = self.databases
        if self.application_names:
            out["application_name"] = self.application_names
        if self.kinds:
            out["kind"] = self.kinds
        if self.min_cost is not None:
            out["min_cost"] = self.min_cost
        return out


def _strings(key: str, value: Any) -> list[str]:
    """One string or a non-empty list of strings, at most MAX_MATCH_VALUES."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise InvalidWorkloadArgumentError(f'match criterion "{key}" cannot be an empty list')
    if len(values) > MAX_MATCH_VALUES:
        raise WorkloadLimitError(f'match criterion "{key}" lists {len(values)} values (at most {MAX_MATCH_VALUES})')
    for v in values:
        if not isinstance(v, str) or v == "":
            raise InvalidWorkloadArgumentError(
                f'match criterion "{key}" must be a non-empty string or a list of them',
                detail=f"Got {json.dumps(v)}.")
        if len(v.encode("utf-8")) > NAME_BYTES:
            raise InvalidWorkloadArgumentError(f'match criterion "{key}": "{v}" is longer than {NAME_BYTES} bytes')
    # keep the given order, without repeats
    return list(dict.fromkeys(values))


def _check_pattern(pattern: str) -> None:
    """An application_name pattern must be a valid LIKE pattern: LIKE's one
    error about a pattern is an escape character (backslash) at its end."""
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    if trailing % 2 == 1:
        raise InvalidWorkloadArgumentError(f'invalid application_name pattern "{pattern}"',
                                           detail="LIKE pattern must not end with escape character.",
                                           hint="Write \\\\ for a backslash.")

def parse_match(text: Any) -> Match:
    """A class's ``match`` (jsonb text or a Python object) checked for shape.

    Keys: ``role``, ``database``, ``application_name`` (LIKE patterns),
    ``kind`` (``read``, ``write``, ``ddl``), each a string or a list of
    strings, and ``min_cost`` (a number, at least 0). ``{}`` matches every
    statement.

    Raises:
        InvalidWorkloadArgumentError: not an object, an unknown key, a value
            of the wrong type, an unknown kind.
        WorkloadLimitError: too many values for one key.
    """
    if text is None:
        return Match()
    obj = json.loads(text) if isinstance(text, str) else text
    if not isinstance(obj, dict):
        raise InvalidWorkloadArgumentError("match must be a JSON object",
                                           detail=f"Got {json.dumps(obj)}.",
                                           hint='For example {"role": "analyst", "kind": "read"}.')
    unknown = [k for k in obj if k not in MATCH_KEYS]
    if unknown:
        raise InvalidWorkloadArgumentError(f'unknown match criterion "{unknown[0]}"',
                                           hint="Valid criteria: " + ", ".join(MATCH_KEYS) + ".")
    m = Match()
    if "role" in obj:
        m.roles = _strings("role", obj["role"])
    if "database" in obj:
        m.databases = _strings("database", obj["database"])
    if "application_name" in obj:
        m.application_names = _strings("application_name", obj["application_name"])
        for pattern in m.application_names:
            _check_pattern(pattern)
    if "kind" in obj:
        kinds = [k.lower() for k in _strings("kind", obj["kind"])]
        for k in kinds:
            if k not in KINDS:
                raise InvalidWorkloadArgumentError(f'unknown statement kind "{k}"',
                                                   hint="Valid kinds: " + ", ".join(KINDS) + ".")
        m.kinds = [k for k in KINDS if k in kinds]
    if "min_cost" in obj:
        cost = obj["min_cost"]
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            raise InvalidWorkloadArgumentError('match criterion "min_cost" must be a number of at least 0',
                                               detail=f"Got {json.dumps(cost)}.")
        m.min_cost = float(cost)
    return m


def _role_oid(name: str) -> int:
    oid = spi.execute("SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1", [name], types=["name"]).scalar()
    if oid is None:
        raise UndefinedWorkloadObjectError(f'role "{name}" does not exist')
    return int(oid)


def _database_oid(name: str) -> int:
    oid = spi.execute("SELECT oid FROM pg_catalog.pg_database WHERE datname = $1", [name],
                      types=["name"]).scalar()
    if oid is None:
        raise UndefinedDatabaseError(f'database "{name}" does not exist')
    return int(oid)


def _pool_id(pool: Any) -> int | None:
    """The id of the pool a class names; None for the default pool."""
    if pool is None:
        raise InvalidWorkloadArgumentError("pool cannot be NULL",
                                           hint=f'Name a resource pool, or "{DEFAULT_POOL}".')
    if pool == DEFAULT_POOL:
        return None
    found = get_pool(pool)
    if found is None:
        raise UndefinedWorkloadObjectError(f'resource pool "{pool}" does not exist',
                                           hint="Create it with orochi.create_resource_pool first.")
    return found.pool_id


def _class_id(name: str) -> int | None:
    value = _catalog("SELECT class_id FROM orochi.workload_classes WHERE class_name = $1", [name],
                     types=["name"]).scalar()
    return int(value) if value is not None else None



def _write_class(class_id: int | None, name: str, pool_id: int | None, priority: int | None,
                 m: Match) -> int:
    params = [name, pool_id, priority, json.dumps(m.as_json()), [_role_oid(r) for r in m.roles],
              [_database_oid(d) for d in m.databases], m.application_names, m.kind_bits, m.min_cost,
              m.specificity]
    types = ["name", "int4", "int4", "jsonb", "oid[]", "oid[]", "text[]", "int4", "float8", "int4"]
    if class_id is None:
        return int(_catalog(
            "INSERT INTO orochi.workload_classes (class_name, pool_id, priority, match, match_roles, "
            "match_databases, match_application_names, match_kinds, match_min_cost, specificity) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING class_id", params, types=types).scalar())
    _catalog(
        "UPDATE orochi.workload_classes SET class_name = $1, pool_id = $2, priority = $3, match = $4, "
        "match_roles = $5, match_databases = $6, match_application_names = $7, match_kinds = $8, "
        "match_min_cost = $9, specificity = $10 WHERE class_id = $11", params + [class_id], types=types + ["int4"])
    return class_id


def create_class(name: str, pool: Any, match: Any, priority: int | None) -> int:
    """Insert a class; returns its id."""
    if _class_id(name) is not None:
        raise DuplicateWorkloadObjectError(f'workload class "{name}" already exists')
    pool_id = _pool_id(pool)
    m = parse_match(match)
    if _catalog("SELECT count(*) FROM orochi.workload_classes").scalar() >= MAX_CLASSES:
        raise WorkloadLimitError(f"too many workload classes (at most {MAX_CLASSES})")
    return _write_class(None, name, pool_id, priority, m)


def alter_class(name: str, pool: Any, match: Any, priority: int | None) -> None:
    """Change the pool, the criteria or the priority (those given)."""
    row = _catalog("SELECT class_id, pool_id, priority, match::text FROM orochi.workload_classes "
                   "WHERE class_name = $1", [name], types=["name"]).rows
    if not row:
        raise UndefinedWorkloadObjectError(f'workload class "{name}" does not exist')
    class_id, pool_id, old_priority, old_match = row[0]
    if pool is not None:
        pool_id = _pool_id(pool)
    m = parse_match(match if match is not None else old_match)
    _write_class(class_id, name, pool_id, priority if priority is not None else old_priority, m)


def drop_class(name: str, if_exists: bool) -> None:
    """Remove a class, and the assignments of roles to it."""
    class_id = _class_id(name)
    if class_id is None:
        if if_exists:
            spi.notice(f'workload class "{name}" does not exist, skipping')
            return
        raise UndefinedWorkloadObjectError(f'workload class "{name}" does not exist')
    roles = [r[0] for r in _catalog(
        "SELECT coalesce((SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = role), role::text) "
        "FROM orochi.workload_role_classes WHERE class_id = $1 ORDER BY 1", [class_id], types=["int4"])]
    if roles:
        spi.notice(f'workload class "{name}" is no longer assigned to roles ' + ", ".join(roles))
    _catalog("DELETE FROM orochi.workload_classes WHERE class_id = $1", [class_id], types=["int4"])


def assign_role(class_name: str | None, role: str) -> None:
    """Every session of the role goes to the class (None: the usual rules again)."""
    role_oid = _role_oid(role)
    if class_name is None:
        _catalog("DELETE FROM orochi.workload_role_classes WHERE role = $1", [role_oid], types=["oid"])
        return
    class_id = _class_id(class_name)
    if class_id is None:
        raise UndefinedWorkloadObjectError(f'workload class "{class_name}" does not exist')
    exists = _catalog("SELECT 1 FROM orochi.workload_role_classes WHERE role = $1", [role_oid],
                      types=["oid"]).rows
    if not exists and _catalog("SELECT count(*) FROM orochi.workload_role_classes").scalar() >= MAX_ROLE_CLASSES:
        raise WorkloadLimitError(f"too many roles assigned to workload classes (at most {MAX_ROLE_CLASSES})")
    _catalog("INSERT INTO orochi.workload_role_classes (role, class_id) VALUES ($1, $2) "
             "ON CONFLICT (role) DO UPDATE SET class_id = EXCLUDED.class_id",
             [role_oid, class_id], types=["oid", "int4"])
