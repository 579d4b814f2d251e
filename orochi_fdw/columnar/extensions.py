"""Table extensions: layers that plug into the columnar table.

The columnar table (:class:`~orochi_fdw.columnar.table.ColumnarTable`) knows
rows, stripes, the delta store and the catalog; it knows nothing of what a
layer above makes of a table. A layer that partitions a table's rows (the
hypertables of :mod:`orochi_fdw.timeseries` cut them into chunks by time)
registers a :class:`TableExtension` here, and the table asks the registered
extensions at its few seams:

- **writing**: :meth:`TableExtension.write_router` gives a statement's
  :class:`WriteRouter`, which checks the rows, assigns each to a part (the
  stripe's ``chunk_id`` in the catalog) and is told of deletions and of the
  statement's end;
- **scanning**: :meth:`TableExtension.exclude_stripes` leaves out the stripes
  of parts the quals rule out;
- **TRUNCATE**: :meth:`TableExtension.truncated`;
- **the single-row INSERT fast path** (pgext/fdw_modify.c):
  :meth:`TableExtension.fast_insert_layout` refuses it or adds what the
  bridge needs to route a row itself.

At most one extension claims a table (the first whose answer is not None).
Nothing in :mod:`orochi_fdw.columnar` imports an extension; the package that
composes the engine loads them (the built-in ``columnar`` wrapper's plugins,
:mod:`orochi_fdw.bridge.wrappers`, and the SQL API modules,
:mod:`orochi_fdw.bridge.sqlfunc`), and an extension module registers itself
when it is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from orochi_fdw.catalog import store
    from orochi_fdw.columnar.table import ColumnarTable
    from orochi_fdw.query.predicates import BoundQuals


class WriteRouter(Protocol):
    """What one writing statement needs of a partitioned table.

    ``column`` names the column whose values choose the part, ``kind`` is its
    storage kind; a part id is what the stripe's catalog row keeps
    (``columnar_stripes.chunk_id``)."""

    column: str
    kind: str

    def keys(self, values: Any, validity: Any, relname: str) -> "np.ndarray":
        """The routing keys of storage values of ``column`` (checked: e.g. no NULL)."""

    def key_of_value(self, value: Any, relname: str) -> int:
        """The routing key of one Python value of ``column`` (UPDATE's new rows)."""

    def ensure_for_keys(self, keys: "np.ndarray") -> None:
        """Rows with these keys go to the delta store: make their parts exist."""

    def split(self, keys: "np.ndarray") -> list[tuple[int, "np.ndarray | None"]]:
        """(part id, row indices in order, or None for all rows) per part."""

    def deleted(self, table: "ColumnarTable", delta_ids: set[int], stripe_ids: Sequence[int]) -> None:
        """The statement deletes these delta rows and rows of these stripes."""

    def finish(self) -> None:
        """The statement's writes are done."""


class TableExtension(Protocol):
    """A layer over columnar tables (see the module's text). Each method
    returns None for a table the extension does not claim."""

    def write_router(self, table: "ColumnarTable") -> WriteRouter | None:
        """The router of a statement writing into ``table`` (read in the
        current transaction; may lock against concurrent part drops)."""

    def exclude_stripes(self, table: "ColumnarTable", stripes: list["store.StripeRecord"], bound: "BoundQuals"
                        ) -> tuple[list["store.StripeRecord"], tuple[int, int]] | None:
        """The stripes a scan with these bound quals must read (prune with
        ``bound.prune``), and (parts, parts excluded)."""

    def truncated(self, table: "ColumnarTable") -> None:
        """``table`` was truncated (its stripes and delta rows are gone)."""

    def fast_insert_layout(self, table: "ColumnarTable", base: Callable[[], tuple]) -> tuple | bool | None:
        """For a table it claims: False to refuse the one-row INSERT fast
        path, or the plain table's layout (``base()``) extended with what
        the bridge needs to route a row (see pgext/fdw_modify.c); None for a
        table it does not claim."""


_extensions: list[TableExtension] = []


def register(extension: TableExtension) -> None:
    """Add an extension (once; registering it again does nothing)."""
    if not any(e is extension for e in _extensions):
        _extensions.append(extension)


def registered() -> tuple[TableExtension, ...]:
    """The registered extensions, in registration order."""
    return tuple(_extensions)
