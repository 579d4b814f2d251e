"""SQL functions written in Python.

Each ``orochi.<name>(...)`` created in sql/ with ``AS 'MODULE_PATHNAME',
'orochi_py_call'`` lands here: the bridge passes the function's name and its
arguments (converted to Python), and the registered handler's return value
goes back converted to the declared result type (rows of tuples or dicts for
``RETURNS TABLE`` / ``SETOF record``).

    @sql_function("python_info")
    def python_info():
        yield ("python", sys.version)
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from orochi_fdw.errors import WrapperError

_registry: dict[str, Callable[..., Any]] = {}

#: modules whose import registers the SQL API's functions
SQL_API_MODULES: list[str] = ["orochi_fdw.bridge.info", "orochi_fdw.catalog.sqlapi", "orochi_fdw.columnar.sqlapi",
                              "orochi_fdw.sketches.sqlapi", "orochi_fdw.timeseries.sqlapi",
                              "orochi_fdw.timeseries.policies", "orochi_fdw.timeseries.continuous",
                              "orochi_fdw.jobs.sqlapi", "orochi_fdw.vector.sqlapi", "orochi_fdw.pipelines.sqlapi",
                              "orochi_fdw.workload.sqlapi", "orochi_fdw.cluster.sqlapi",
                              "orochi_fdw.cdc.sqlapi", "orochi_fdw.ha.sqlapi", "orochi_fdw.tiering.sqlapi"]
_loaded = False


def sql_function(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a handler for ``orochi.<name>``."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        _registry[name] = func
        return func

    return register


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in SQL_API_MODULES:
            importlib.import_module(module)
        _loaded = True


#: the module to import first for names with these prefixes: a backend that
#: calls only them (a parallel worker of a sketch aggregate) skips importing
#: every other module (~0.4 s)
_MODULE_HINTS: dict[str, str] = {"sketch_": "orochi_fdw.sketches.sqlapi"}


def call(name: str, *args: Any) -> Any:
    """Dispatch a call of orochi.<name>."""
    if name not in _registry:
        for prefix, module in _MODULE_HINTS.items():
            if name.startswith(prefix):
                importlib.import_module(module)
        if name not in _registry:
            _load()
    try:
        func = _registry[name]
    except KeyError:
        raise WrapperError(f"no Python handler is registered for SQL function orochi.{name}") from None
    return func(*args)
