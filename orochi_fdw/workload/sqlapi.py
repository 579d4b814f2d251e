"""SQL functions of workload management (sql/80_workload.sql): creating,
changing and dropping resource pools and workload classes, and assigning
roles and sessions to classes. The monitoring functions (pool_stats,
queued_queries ...) read shared memory and are C (pgext/workload.c)."""

from __future__ import annotations

from typing import Any

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.workload import catalog
from orochi_fdw.workload.errors import InvalidWorkloadArgumentError


@sql_function("create_resource_pool")
def create_resource_pool(name: str | None, max_concurrency: int | None, max_queue: int | None = None,
                         queue_timeout_ms: int | None = None, query_timeout_ms: int | None = None,
                         priority: int | None = 0, work_mem: str | None = None) -> int:
    """orochi.create_resource_pool: a pool running at most max_concurrency
    statements at once.

    Returns:
        The new pool's id.

    Raises:
        InvalidWorkloadArgumentError: a concurrency below 1, a negative queue
            size or timeout, a bad work_mem.
        DuplicateWorkloadObjectError: the name is taken (or is "default").
    """
    catalog.begin_change("create resource pools")
    name = catalog.check_name(name, "resource pool")
    return catalog.create_pool(
        name, catalog.check_concurrency(max_concurrency),
        catalog.check_optional(max_queue, "max_queue", 0),
        catalog.check_optional(queue_timeout_ms, "queue_timeout_ms", 1),
        catalog.check_optional(query_timeout_ms, "query_timeout_ms", 0),
        0 if priority is None else int(priority), work_mem)


@sql_function("alter_resource_pool")
def alter_resource_pool(name: str | None, max_concurrency: int | None = None, max_queue: int | None = None,
                        queue_timeout_ms: int | None = None, query_timeout_ms: int | None = None,
                        priority: int | None = None, work_mem: str | None = None,
                        new_name: str | None = None) -> None:
    """orochi.alter_resource_pool: change the settings given; -1 removes a
    limit, work_mem => 'default' the pool's work_mem."""
    catalog.begin_change("alter resource pools")
    name = catalog.check_name(name, "resource pool")
    if new_name is not None:
        new_name = catalog.check_name(new_name, "resource pool")
    catalog.alter_pool(
        name,
        max_concurrency=None if max_concurrency is None else catalog.check_concurrency(max_concurrency),
        max_queue=catalog.check_optional(max_queue, "max_queue", 0, allow_unset=True),
        queue_timeout_ms=catalog.check_optional(queue_timeout_ms, "queue_timeout_ms", 1, allow_unset=True),
        query_timeout_ms=catalog.check_optional(query_timeout_ms, "query_timeout_ms", 0, allow_unset=True),
        priority=priority, work_mem=work_mem, new_name=new_name)


@sql_function("drop_resource_pool")
def drop_resource_pool(name: str | None, if_exists: bool | None = False) -> None:
    """orochi.drop_resource_pool: remove a pool that no class names and no
    statement runs or waits in."""
    catalog.begin_change("drop resource pools")
    catalog.drop_pool(catalog.check_name(name, "resource pool"), bool(if_exists))


@sql_function("create_workload_class")
def create_workload_class(name: str | None, pool: str | None, match: Any = "{}",
                          priority: int | None = None) -> int:
    """orochi.create_workload_class: statements meeting ``match`` go to ``pool``.

    Returns:
        The new class's id.
    """
    catalog.begin_change("create workload classes")
    return catalog.create_class(catalog.check_name(name, "workload class"), pool, match, priority)


@sql_function("alter_workload_class")
def alter_workload_class(name: str | None, pool: str | None = None, match: Any = None,
                         priority: int | None = None) -> None:
    """orochi.alter_workload_class: change the pool, criteria or priority given."""
    catalog.begin_change("alter workload classes")
    catalog.alter_class(catalog.check_name(name, "workload class"), pool, match, priority)


@sql_function("drop_workload_class")
def drop_workload_class(name: str | None, if_exists: bool | None = False) -> None:
    """orochi.drop_workload_class: remove a class (and the roles assigned to it)."""
    catalog.begin_change("drop workload classes")
    catalog.drop_class(catalog.check_name(name, "workload class"), bool(if_exists))


@sql_function("assign_workload_class")
def assign_workload_class(class_name: str | None, role: str | None = None, pid: int | None = None) -> None:
    """orochi.assign_workload_class: every statement of a role's sessions
    (durable, in the catalog) or of one session (until it ends; this one
    when neither role nor pid is given) goes to the class. A NULL class
    removes the assignment."""
    if role is not None and pid is not None:
        raise InvalidWorkloadArgumentError("give either a role or a pid, not both")
    if role is not None:
        catalog.begin_change("assign roles to workload classes")
        catalog.assign_role(class_name, role)
        return
    catalog.require_superuser("assign sessions to workload classes")
    if pid is None:
        pid = int(spi.execute("SELECT pg_catalog.pg_backend_pid()").scalar())
    spi.execute("SELECT orochi.workload_assign_session($1, $2)", [pid, class_name], types=["int4", "text"])
