"""Wrappers the bridge benchmark (bench/bridge_bench.py) scans.

They live in the package, not in bench/, because a backend imports a wrapper
by its dotted path from the installed package.

All three serve the same rows, ``id int8, v float8, t text``::

    id = 0 .. rows-1
    v  = (id % 10007) * 0.125      (exact in binary: sums do not depend on order)
    t  = 'row-' || id

which a heap table can hold too (``INSERT ... SELECT generate_series``), so
every result can be checked against the heap.  The data are generated once per
backend and shared by the wrappers (module-level cache), so a benchmark that
warms up first measures the bridge, not the generation.

- :class:`BatchBenchWrapper`: numpy columns in the bridge's wire layout
  (text as offsets into one UTF-8 buffer), yielded as :class:`Batch` slices
  of ``batch_size`` rows; nothing is copied or converted per batch.
- :class:`RowBenchWrapper`: the per-row path, tuples of Python values
  (``int``, ``float``, ``str``) from precomputed lists; columns the query
  does not need are None.
- :class:`TextRowBenchWrapper`: a Multicorn-style row path: every value
  becomes a ``str`` (``str(value)``, done at C speed by ``map``, as Multicorn
  does in C) and reaches Postgres through the column type's input function.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import numpy as np

from orochi_fdw.bridge import Batch, Column, ForeignDataWrapper, OptionSpec, WireKind

_cache: dict[tuple[int, str], Any] = {}


def _ids_and_values(rows: int) -> tuple[np.ndarray, np.ndarray]:
    key = (rows, "numeric")
    if key not in _cache:
        ids = np.arange(rows, dtype=np.int64)
        values = (ids % 10007).astype(np.float64) * 0.125
        _cache[key] = (ids, values)
    return _cache[key]


def python_lists(rows: int) -> tuple[list[int], list[float], list[str]]:
    """The rows as three lists of Python values (made once per backend)."""
    key = (rows, "lists")
    if key not in _cache:
        ids, values = _ids_and_values(rows)
        id_list = ids.tolist()
        _cache[key] = (id_list, values.tolist(), [f"row-{i}" for i in id_list])
    return _cache[key]


def wire_columns(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, values, text bytes, text offsets) in wire layout (made once per backend)."""
    key = (rows, "wire")
    if key not in _cache:
        ids, values = _ids_and_values(rows)
        texts = python_lists(rows)[2]
        data = np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8)
        offsets = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=rows), out=offsets[1:])
        _cache[key] = (ids, values, data, offsets)
    return _cache[key]


class _BenchWrapper(ForeignDataWrapper):
    options_spec = {
        "table": {
            "rows": OptionSpec(int, "rows to serve"),
            "batch_size": OptionSpec(int, "rows per batch (batch wrapper)"),
        },
        "server": {},
    }

    def __init__(self, options, columns):
        super().__init__(options, columns)
        self.rows = int(options.get("rows", 1_000_000))
        self.batch_size = int(options.get("batch_size", 65_536))
        self.names = list(columns)

    def get_rel_size(self, quals, columns):
        return (self.rows, 8 + 8 + 12)


class BatchBenchWrapper(_BenchWrapper):
    """Column batches straight from precomputed numpy buffers."""

    def execute(self, quals, columns, sortkeys=None):
        ids, values, data, offsets = wire_columns(self.rows)
        want_id, want_v, want_t = "id" in columns, "v" in columns, "t" in columns
        step = self.batch_size
        for start in range(0, self.rows, step):
            stop = min(start + step, self.rows)
            cols = {}
            if want_id:
                cols["id"] = Column(WireKind.INT64, ids[start:stop])
            if want_v:
                cols["v"] = Column(WireKind.FLOAT64, values[start:stop])
            if want_t:
                # offsets index into the whole buffer: no copy, no rebasing
                cols["t"] = Column(WireKind.TEXT, data, None, offsets[start:stop + 1])
            yield Batch(stop - start, cols)


def _needed(columns, name, values, convert=None):
    """The values of a column the query needs, else NULLs (as a wrapper that
    honours ``columns`` would do)."""
    if name not in columns:
        return repeat(None, len(values))
    return map(convert, values) if convert is not None else values


class RowBenchWrapper(_BenchWrapper):
    """One tuple of Python values per row (int, float, str)."""

    def execute(self, quals, columns, sortkeys=None):
        ids, values, texts = python_lists(self.rows)
        return zip(_needed(columns, "id", ids), _needed(columns, "v", values), _needed(columns, "t", texts))


class TextRowBenchWrapper(_BenchWrapper):
    """One tuple of str per row: each value through its type's input function."""

    def execute(self, quals, columns, sortkeys=None):
        ids, values, texts = python_lists(self.rows)
        return zip(_needed(columns, "id", ids, str), _needed(columns, "v", values, str),
                   _needed(columns, "t", texts))


# ---------------------------------------------------------------------------
# The WAL benchmark (bench/wal_bench.py): the columnar table with its files
# written as before they went through the WAL, and a prototype of the other
# design the issue named (stripe bytes in a heap table's TOAST).


class _FilesNotLogged:
    """Within the block, stripe files are written without their WAL records
    (as before the resource manager): for measuring, never for data."""

    def __enter__(self):
        from orochi_fdw.catalog import files

        self._saved = files.log_new_file, files.require_wal
        files.log_new_file = lambda path: None
        files.require_wal = lambda what="": None
        return self

    def __exit__(self, *exc):
        from orochi_fdw.catalog import files

        files.log_new_file, files.require_wal = self._saved


def _columnar():
    from orochi_fdw.columnar.table import ColumnarTable

    return ColumnarTable


class UnloggedColumnarTable(_columnar()):
    """The columnar table as it was before its files went through the WAL:
    stripe files written, fsynced and linked, and nothing logged."""

    def write_stripe_columns(self, *args, **kwargs):
        with _FilesNotLogged():
            return super().write_stripe_columns(*args, **kwargs)


class ToastColumnarTable(_columnar()):
    """Prototype of the other design: each stripe's bytes in a heap table
    (``blob_table`` option, ``(stripe_id bigint, data bytea)`` with ``data``
    STORAGE EXTERNAL), so that PostgreSQL's own WAL carries them as TOAST
    chunks; the stripe file is written as today, moved into the heap row,
    and removed. Writes only: a scan of such a table finds no files."""

    options_spec = {
        **_columnar().options_spec,
        "table": {**_columnar().options_spec["table"],
                  "blob_table": OptionSpec(str, "heap table holding the stripes' bytes")},
    }

    def write_stripe_columns(self, *args, **kwargs):
        import os

        from orochi_fdw.bridge import spi

        with _FilesNotLogged():
            record = super().write_stripe_columns(*args, **kwargs)
        with open(record.file_path, "rb") as f:
            data = f.read()
        table = spi.execute("SELECT $1::regclass::text", [self.options["blob_table"]],
                            types=["text"]).scalar()  # quoted as needed
        spi.prepared(f"INSERT INTO {table} (stripe_id, data) VALUES ($1, $2)",
                     ["bigint", "bytea"]).execute([record.stripe_id, data])
        os.unlink(record.file_path)
        return record


class StripeFetchWrapper(ForeignDataWrapper):
    """One row ``(bytes bigint, seconds float8)``: the time to bring every
    stripe of a table into Python, from its files (``mode 'files'``, the
    ``source`` table's stripe files) or from a heap table's TOAST (``mode
    'toast'``, the ``source`` heap table's ``data`` column, through SPI)."""

    options_spec = {
        "table": {"source": OptionSpec(str, "the columnar table or the blob table"),
                  "mode": OptionSpec(str, "files or toast", choices=("files", "toast"))},
        "server": {},
    }

    def execute(self, quals, columns, sortkeys=None):
        import os
        import time

        from orochi_fdw.bridge import spi
        from orochi_fdw.catalog import store

        source, mode = self.options["source"], self.options["mode"]
        started = time.perf_counter()
        total = 0
        if mode == "toast":
            table = spi.execute("SELECT $1::regclass::text", [source], types=["text"]).scalar()
            for (data,) in spi.execute(f"SELECT data FROM {table}").rows:
                total += len(data)
        else:
            relid = int(spi.execute("SELECT $1::regclass::oid", [source], types=["text"]).scalar())
            for stripe in store.table_stripes(relid):
                fd = os.open(stripe.file_path, os.O_RDONLY)
                try:
                    total += len(os.pread(fd, os.fstat(fd).st_size, 0))
                finally:
                    os.close(fd)
        yield (total, time.perf_counter() - started)


__all__ = ["BatchBenchWrapper", "RowBenchWrapper", "TextRowBenchWrapper", "python_lists", "wire_columns",
           "UnloggedColumnarTable", "ToastColumnarTable", "StripeFetchWrapper"]
