"""A foreign table's definition read from the catalog through SPI: its name,
server and table options, and columns (with their options), the way the
bridge hands them to a wrapper.  For SQL functions that work on a table by
oid outside a scan (the DDL check, compaction, vacuum)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.api import ColumnDefinition

_TABLE = """
SELECT c.relname::text, ft.ftoptions, s.srvoptions
  FROM pg_catalog.pg_foreign_table ft
  JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver
  JOIN pg_catalog.pg_class c ON c.oid = ft.ftrelid
 WHERE ft.ftrelid = $1
"""

_COLUMNS = """
SELECT attname::text, attnum, atttypid, atttypmod, format_type(atttypid, atttypmod), attnotnull,
       attfdwoptions
  FROM pg_catalog.pg_attribute
 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum
"""


def parse_options(raw) -> dict[str, str]:
    """Options as the catalog keeps them ({"key=value", ...}) as a dict."""
    out = {}
    for item in raw or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


@dataclass
class ForeignTableDefinition:
    relid: int
    relname: str
    table_options: dict[str, str]
    server_options: dict[str, str]
    columns: dict[str, ColumnDefinition] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, str]:
        """Server and table options merged (table options win), less the
        bridge's own, as a wrapper instance receives them."""
        from orochi_fdw.bridge.runtime import BRIDGE_OPTIONS

        return {k: v for k, v in {**self.server_options, **self.table_options}.items()
                if k not in BRIDGE_OPTIONS}

    @property
    def wrapper(self) -> str | None:
        """The wrapper the table or its server names, if any."""
        return self.table_options.get("wrapper") or self.server_options.get("wrapper")


def read_definition(relid: int) -> ForeignTableDefinition | None:
    """The foreign table ``relid``, or None if it is not one."""
    rows = spi.execute(_TABLE, [relid], types=["oid"]).rows
    if not rows:
        return None
    relname, ftoptions, srvoptions = rows[0]
    definition = ForeignTableDefinition(relid, relname, parse_options(ftoptions), parse_options(srvoptions))
    for name, attnum, typoid, typmod, type_name, notnull, fdwoptions in spi.execute(
            _COLUMNS, [relid], types=["oid"]).rows:
        definition.columns[name] = ColumnDefinition(
            column_name=name, type_oid=int(typoid), typmod=int(typmod), type_name=type_name,
            attnum=int(attnum), not_null=bool(notnull), options=parse_options(fdwoptions))
    return definition
