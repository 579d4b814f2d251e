"""The bridge between Postgres backends and Python wrappers.

Wrappers subclass :class:`ForeignDataWrapper`; scans yield rows or
:class:`Batch` objects; :mod:`orochi_fdw.bridge.spi` runs SQL in the current
transaction; :func:`sql_function` registers ``orochi.<name>`` handlers.
"""

from orochi_fdw.bridge.api import (
    ColumnDefinition,
    ForeignDataWrapper,
    OptionSpec,
    Qual,
    SortKey,
    TableDefinition,
    parse_bool,
)
from orochi_fdw.bridge.batch import Batch, Column, WireKind
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.bridge.types import Interval, SpecialValue

__all__ = [
    "Batch",
    "Column",
    "ColumnDefinition",
    "ForeignDataWrapper",
    "Interval",
    "OptionSpec",
    "Qual",
    "SortKey",
    "SpecialValue",
    "TableDefinition",
    "WireKind",
    "parse_bool",
    "sql_function",
]
