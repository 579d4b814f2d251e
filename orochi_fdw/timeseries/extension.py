"""Hypertables as a table extension of the columnar table
(:mod:`orochi_fdw.columnar.extensions`): chunk routing for writes, chunk
exclusion for scans, TRUNCATE of the chunk rows, and the single-row INSERT
fast path's refusal. Importing :mod:`orochi_fdw.timeseries` registers it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

from orochi_fdw.columnar import extensions
from orochi_fdw.columnar.scan import prune_expression
from orochi_fdw.errors import FeatureNotSupportedError
from orochi_fdw.query.predicates import referenced_columns
from orochi_fdw.timeseries import chunks, hypertable, timekeys

if TYPE_CHECKING:  # pragma: no cover
    from orochi_fdw.catalog import store
    from orochi_fdw.columnar.table import ColumnarTable


def _time_column(table: "ColumnarTable", ht: hypertable.Hypertable) -> str | None:
    """The name of the hypertable's time column in the table's current columns."""
    return next((n for n, c in table.columns.items() if c.attnum == ht.time_attnum), None)


class Hypertables:
    """The :class:`~orochi_fdw.columnar.extensions.TableExtension` of hypertables."""

    def write_router(self, table: "ColumnarTable") -> chunks.ChunkRouter | None:
        """The chunk router of a statement writing into a hypertable (read in
        the current transaction; locks the hypertable against drop_chunks)."""
        ht = hypertable.get_for_write(table.relid)
        if ht is None:
            return None
        name = _time_column(table, ht)
        if name is None or table.kinds[name] not in timekeys.TIME_TYPES.values():
            raise FeatureNotSupportedError(
                f'the time column "{ht.time_column}" of hypertable "{table.relname}" was dropped or changed type')
        return chunks.ChunkRouter(dataclasses.replace(ht, time_column=name), table.kinds[name])

    def exclude_stripes(self, table: "ColumnarTable", stripes: list["store.StripeRecord"], bound: Any
                        ) -> tuple[list["store.StripeRecord"], tuple[int, int]] | None:
        """Chunk exclusion: the stripes not in a chunk whose time range rules
        the bound quals (``BoundQuals``, or its prune expression; ``[]``: none)
        out, and (chunks, excluded chunks)."""
        from orochi_fdw.columnar.table import _planning_read

        # (asked for each path planned over the table: read once per snapshot)
        ht = _planning_read(("hypertable", table.relid), lambda: hypertable.get(table.relid, read_only=True))
        if ht is None:
            return None
        name = _time_column(table, ht)
        all_chunks = chunks.list_chunks(table.relid, read_only=True)
        prune = prune_expression(bound)
        if name is None or name not in referenced_columns(prune):
            return stripes, (len(all_chunks), 0)
        excluded = chunks.excluded_chunks(name, all_chunks, prune, table.kinds[name])
        if not excluded:
            return stripes, (len(all_chunks), 0)
        return [s for s in stripes if s.chunk_id not in excluded], (len(all_chunks), len(excluded))

    def truncated(self, table: "ColumnarTable") -> None:
        chunks.truncate_chunks(table.relid)

    def fast_insert_layout(self, table: "ColumnarTable", base: Callable[[], tuple]) -> tuple | bool | None:
        """The one-row INSERT fast path of a hypertable (pgext/fdw_modify.c):
        the plain table's layout plus the time column's attnum and kind, the
        inclusive ranges of time column values of the chunks that exist now,
        and the key of the writers' advisory lock (hypertable.get_for_write).
        A row in one of those chunks is written by the bridge; any other
        takes the ordinary path, which creates its chunk (and so invalidates
        the table's relcache entry: every backend learns the chunks again,
        chunks.ensure_chunks). False (the ordinary path for every row) when
        the hypertable logs invalidations for continuous aggregates or its
        time column changed."""
        ht = hypertable.get(table.relid)
        if ht is None:
            return None
        name = _time_column(table, ht)
        if ht.track_invalidations or name is None or table.kinds[name] not in _ROUTING_KINDS:
            return False
        layout = base()
        if layout is None:
            return False
        kind = table.kinds[name]
        ranges = []
        for c in chunks.list_chunks(table.relid):
            lo, hi = timekeys.storage_bounds(kind, c.range_start, c.range_end)
            if lo <= hi:
                ranges.append((int(lo), int(hi)))
        return (*layout, int(ht.time_attnum), _ROUTING_KINDS[kind], ranges, hypertable.write_lock_key())


#: the time column's storage kind -> its code in the fast path's layout
_ROUTING_KINDS = {"timestamptz": "t", "timestamp": "t", "date": "d", "int16": "s", "int32": "i", "int64": "l"}


HYPERTABLES = Hypertables()
extensions.register(HYPERTABLES)
