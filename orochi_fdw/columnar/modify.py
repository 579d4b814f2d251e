"""INSERT, UPDATE and DELETE on columnar tables: what one statement writes.

The bridge hands a statement's rows over one call at a time (``insert_batch``,
``update``, ``delete``) and then calls ``end_modify``. A :class:`StatementWrites`
gathers them and writes at the end (and on the way, for big statements):

- **INSERT**: a statement of at most ``delta_row_limit`` rows goes to the delta
  store (a heap table: cheap for one row, WAL-durable, transactional); a larger
  one writes stripe files, as soon as it is known to be larger.
- **DELETE**: delta rows are deleted from the delta table; stripe rows are set
  in their stripe's delete bitmap, merged into the latest bitmap under a row
  lock on the stripe's catalog row (``SELECT ... FOR NO KEY UPDATE``), so
  deleters of one stripe take turns and never lose each other's deletions.
- **UPDATE**: the old row is deleted as above, the new one inserted into the
  delta store.

Write conflicts: a row that another transaction has deleted, updated, moved
(compaction) or rewritten (vacuum) since this statement's snapshot cannot be
followed to its new version as Postgres does for heap rows, so the statement
fails with SQLSTATE 40001 (serialization_failure) in every isolation level:
the first writer wins, the second retries. See docs/htap.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pyroaring import BitMap

from orochi_fdw.catalog import store
from orochi_fdw.cdc import capture
from orochi_fdw.columnar import deletes
from orochi_fdw.errors import OrochiError

if TYPE_CHECKING:  # pragma: no cover
    from orochi_fdw.bridge.batch import Batch
    from orochi_fdw.columnar.table import ColumnarTable

#: new row versions of an UPDATE kept in memory before they are written
UPDATE_FLUSH_ROWS = 5_000


class SerializationFailure(OrochiError):
    """A row this statement modifies was changed by a concurrent transaction
    (SQLSTATE 40001): retry the transaction."""

    sqlstate = "40001"

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail
        self.hint = "Retry the transaction."


class StatementWrites:
    """The writes of one INSERT / UPDATE / DELETE statement on one table."""

    def __init__(self, table: "ColumnarTable", level: int):
        self.table = table
        self.level = level                      # savepoint depth when it started
        self.insert_buffer: list["Batch"] = []  # small INSERT, kept until its size is known
        self.insert_rows = 0
        self.to_stripes = False
        self.stripe_deletes: dict[int, BitMap] = {}   # not written yet
        self.delta_deletes: set[int] = set()
        self.stripe_done: dict[int, BitMap] = {}      # every row this statement deleted
        self.delta_done: set[int] = set()
        self.flushed = False                          # flush() ran: rows from now on go to the delta
        self.new_rows: dict[str, list] = {}    # UPDATE's new rows, column by column
        self.new_count = 0
        self.router = table.chunk_router()      # a table extension's router (columnar.extensions), or None
        self.new_keys: list[int] = []          # routing keys of UPDATE's new rows (with a router)
        self.capture = capture.for_statement(table)  # change capture, None unless a subscription covers it

    # -- INSERT --------------------------------------------------------------

    def insert_batch(self, batch: "Batch") -> None:
        if self.capture is not None:
            self.capture.inserted(batch)
        self.insert_rows += batch.nrows
        limit = self.table.settings.delta_row_limit
        if not self.to_stripes and (self.insert_rows <= limit or self.flushed):
            if self.router is not None:
                self._route_to_delta(batch)
            self.insert_buffer.append(batch)
            return
        self.to_stripes = True
        for pending in self.insert_buffer:
            self.table.write_stripes(pending, self.router)
        self.insert_buffer.clear()
        self.table.write_stripes(batch, self.router)

    def _route_to_delta(self, batch: "Batch") -> None:
        """A routed table's rows bound for the delta store: check their keys
        and make the parts they fall in exist."""
        from orochi_fdw.columnar.types import from_wire

        router = self.router
        wire = batch.columns.get(router.column)
        if wire is None:
            keys = router.keys(np.zeros(batch.nrows, dtype=np.int64), np.zeros(batch.nrows, dtype=bool),
                               self.table.relname)
        else:
            values, validity = from_wire(wire, router.kind)
            keys = router.keys(values, validity, self.table.relname)
        router.ensure_for_keys(keys)

    # -- DELETE / UPDATE -----------------------------------------------------

    def delete(self, rowid: int) -> bool:
        """Mark a row deleted; False if this statement already did."""
        r = deletes.decode(rowid)
        if r.delta:
            if r.ident in self.delta_done:
                return False
            self.delta_done.add(r.ident)
            self.delta_deletes.add(r.ident)
            return True
        done = self.stripe_done.get(r.ident)
        if done is None:
            done = self.stripe_done[r.ident] = BitMap()
        elif r.offset in done:
            return False
        done.add(r.offset)
        self.stripe_deletes.setdefault(r.ident, BitMap()).add(r.offset)
        return True

    def update(self, rowid: int, values: dict[str, Any]) -> bool:
        """Delete the old version and keep the new one; False (nothing done)
        if this statement already updated the row (a join matching it twice)."""
        if not self.delete(rowid):
            return False
        if self.capture is not None:
            self.capture.updated(rowid, values)
        if self.router is not None:
            self.new_keys.append(self.router.key_of_value(values.get(self.router.column), self.table.relname))
        if not self.new_rows:
            self.new_rows = {name: [] for name in self.table.columns}
        for name, column in self.new_rows.items():
            column.append(values.get(name))
        self.new_count += 1
        if self.new_count >= UPDATE_FLUSH_ROWS:
            self._flush_new_rows()
        return True

    # -- the end of the statement -----------------------------------------------

    def flush(self) -> None:
        """Write what is pending (deletions, UPDATE's new rows, small INSERTs
        into the delta store) so that queries run from now on see it; more
        rows may follow. Rows inserted after a flush go to the delta store:
        they arrive a few at a time (a trigger or function runs for each)."""
        self._flush_deletes()
        self._flush_new_rows()
        for batch in self.insert_buffer:
            self.table.delta.insert_batch(batch)
        self.insert_buffer.clear()
        self.flushed = True

    def finish(self) -> None:
        self.flush()
        if self.router is not None:
            self.router.finish()

    def _flush_new_rows(self) -> None:
        if self.new_count:
            if self.router is not None:
                self.router.ensure_for_keys(np.array(self.new_keys, dtype=np.int64))
                self.new_keys = []
            self.table.delta.insert_values(list(self.new_rows), self.new_rows, self.new_count)
            self.new_rows = {}
            self.new_count = 0

    def _flush_deletes(self) -> None:
        name = self.table.relname
        if self.capture is not None:
            self.capture.deleting(self.stripe_deletes, self.delta_deletes)
        if self.router is not None:
            self.router.deleted(self.table, self.delta_deletes, list(self.stripe_deletes))
        if self.delta_deletes:
            gone = self.delta_deletes - self.table.delta.delete(self.delta_deletes)
            if gone:
                raise SerializationFailure(
                    f'could not serialize access to table "{name}" due to concurrent update',
                    detail=f"{len(gone)} row(s) of its delta store were deleted, updated or compacted "
                           "by another transaction since this statement started.")
            self.delta_deletes = set()
        if self.stripe_deletes:
            locked = store.lock_stripes(list(self.stripe_deletes))
            for stripe_id in sorted(self.stripe_deletes):
                mine = self.stripe_deletes[stripe_id]
                current = locked.get(stripe_id)
                if current is None:
                    raise SerializationFailure(
                        f'could not serialize access to table "{name}" due to concurrent update',
                        detail=f"Stripe {stripe_id} was rewritten (orochi.vacuum) or removed by another "
                               "transaction since this statement started.")
                row_count, _, raw = current
                bitmap = deletes.load(raw)
                if bitmap.intersection_cardinality(mine):
                    raise SerializationFailure(
                        f'could not serialize access to table "{name}" due to concurrent update',
                        detail=f"Rows of stripe {stripe_id} were deleted or updated by another transaction "
                               "since this statement started.")
                if mine.max() >= row_count:
                    raise OrochiError(f"row offset {mine.max()} is beyond stripe {stripe_id}'s "
                                      f"{row_count} rows")
                bitmap |= mine
                store.set_deletes(stripe_id, len(bitmap), deletes.dump(bitmap))
            self.stripe_deletes = {}
