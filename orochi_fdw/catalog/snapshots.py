"""What a backend read of the catalog, kept for as long as statements see
the same rows: planning asks for a table's stripe records, delta row count
or index identities many times over a statement's join relations and paths
(TPC-H Q8: eight tables, a few dozen times each), and the scans that follow
ask again.

A value is kept with the snapshot it was read under
(:func:`~orochi_fdw.bridge.spi.snapshot_key`) and serves again while the
statement's snapshot is that one to the byte: such a snapshot sees the same
rows of every table. Nothing is kept without a key (no active snapshot, or a
transaction with an id, whose own changes are seen too).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable

from orochi_fdw.bridge import spi

_MISSING = object()


class SnapshotReads:
    """Values by key, each with the snapshot key it was read under; the
    least recently used go past ``entries``."""

    def __init__(self, entries: int):
        self.entries = entries
        self._kept: "OrderedDict[Hashable, tuple[bytes, Any]]" = OrderedDict()

    def get(self, key: Hashable, snapshot: bytes | None, default: Any = None) -> Any:
        """The value kept for ``key`` if it was read under ``snapshot``."""
        found = self._kept.get(key)
        if snapshot is None or found is None or found[0] != snapshot:
            return default
        self._kept.move_to_end(key)
        return found[1]

    def put(self, key: Hashable, snapshot: bytes | None, value: Any) -> Any:
        """Keep ``value``, read under ``snapshot``, for ``key``; returns it."""
        if snapshot is not None:
            self._kept[key] = (snapshot, value)
            self._kept.move_to_end(key)
            while len(self._kept) > self.entries:
                self._kept.popitem(last=False)
        return value

    def read(self, key: Hashable, read: Callable[[], Any]) -> Any:
        """``read()``, or what it answered under the statement's snapshot
        before (shared: callers only read it)."""
        snapshot = spi.snapshot_key()
        found = self.get(key, snapshot, _MISSING)
        if found is not _MISSING:
            return found
        return self.put(key, snapshot, read())

    def clear(self) -> None:
        self._kept.clear()
