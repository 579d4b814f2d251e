"""An in-memory index a rescanned scan builds for itself (docs/query.md,
"Rescans").

A parameterized scan is rescanned once per outer row with a new value of
its ``column = value`` quals.  When Postgres underestimates the outer rows
(join selectivities of correlated columns: TPC-H Q9, Q21) a scan planned for
a few rescans gets hundreds of thousands.  So the scan counts what its
rescans cost, as rows read plus a fixed charge per rescan, and once that
reaches the rows of one full scan (the ski-rental rule: never more than
about twice the better choice) it reads the table once with the other
quals, sorts the parameter's column (the rows stay in place, reached
through the permutation), and answers every later rescan by binary search.  The rows and row ids are exactly those the
scan would have read; only integer columns are indexed (their equality is
the numbers'), and only within ``work_mem × hash_mem_multiplier`` (as a hash
join's table); otherwise rescans go on scanning.  A scan rescanned with the
same quals every time (no parameter) keeps, by the same rule, a copy of
its rows (:class:`RescanCopy`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from orochi_fdw.bridge.batch import Batch, WireKind
from orochi_fdw.columnar.topn import concat, take

#: what one rescan costs beyond its rows, in rows read (about 1 ms)
RESCAN_OVERHEAD_ROWS = 20_000
INTEGER_KINDS = {WireKind.INT16, WireKind.INT32, WireKind.INT64}


def _signature(quals) -> list[tuple]:
    out = []
    for q in quals:
        v = q.value
        try:
            hash(v)
        except TypeError:
            v = repr(v)
        out.append((q.field_name, repr(q.operator), type(v).__name__, v))
    return out


class RescanIndex:
    """Rows of a scan sorted by one integer column."""

    def __init__(self, position: int, signature: list[tuple], keys: np.ndarray,
                 columns: dict[str, Any], rowids: np.ndarray | None, needed: list[str], column: str,
                 order: np.ndarray, others: list[tuple[int, str]]):
        self.position = position  # of the varying qual
        self.signature = signature
        self.keys = keys
        self.columns = columns
        self.rowids = rowids
        self.needed = needed
        self.column = column
        self.order = order  # row positions in key order
        self.others = others  # (qual position, column) of the other varying quals
        self.lookups = 0

    def fits(self, signature: list[tuple]) -> bool:
        varying = {self.position} | {i for i, _ in self.others}
        return len(signature) == len(self.signature) and all(
            a == b for i, (a, b) in enumerate(zip(signature, self.signature)) if i not in varying) \
            and all(signature[i][2] == "int" for i in varying)

    def describe(self) -> str:
        return f"Rescan Index: {self.column}, {len(self.keys)} rows, {self.lookups} lookups"

    def lookup(self, quals) -> "IndexedRows":
        self.lookups += 1
        value = quals[self.position].value
        if not -2**63 <= value < 2**63:
            return IndexedRows(self, np.zeros(0, dtype=np.int64))
        v = np.int64(value)  # the keys are int64: no conversion of the array per lookup
        lo = int(self.keys.searchsorted(v, "left"))
        hi = int(self.keys.searchsorted(v, "right"))
        rows = np.sort(self.order[lo:hi])  # in scan order, as a scan yields them
        for i, name in self.others:
            col = self.columns[name]
            other = quals[i].value
            keep = np.asarray(col.values[rows]).astype(np.int64) == other \
                if -2**63 <= other < 2**63 else np.zeros(len(rows), dtype=bool)
            if col.validity is not None:
                keep &= np.asarray(col.validity[rows], dtype=bool)
            rows = rows[keep]
        return IndexedRows(self, rows)


class RescanCopy:
    """Every row of a scan rescanned with the same quals (no parameter:
    the inner side of a nested loop that PostgreSQL did not materialize,
    TPC-H Q2's supplier and nation below a join it estimated at one row)."""

    def __init__(self, signature: list[tuple], columns: dict[str, Any], rowids: np.ndarray | None,
                 needed: list[str], nrows: int):
        self.signature = signature
        self.columns = columns
        self.rowids = rowids
        self.needed = needed
        self.nrows = nrows
        self.lookups = 0

    def fits(self, signature: list[tuple]) -> bool:
        return signature == self.signature

    def describe(self) -> str:
        return f"Rescan Copy: {self.nrows} rows, {self.lookups} rescans"

    def lookup(self, quals) -> "IndexedRows":
        self.lookups += 1
        return IndexedRows(self, None if self.nrows else np.zeros(0, dtype=np.int64))


class IndexedRows:
    """The iterator a rescan answered from the index (or the copy) returns;
    ``rows`` None: all of them."""

    def __init__(self, index: "RescanIndex | RescanCopy", rows: np.ndarray | None):
        self.index = index
        self.rows = rows
        self.done = rows is not None and len(rows) == 0

    def __iter__(self) -> "IndexedRows":
        return self

    def __next__(self) -> Batch:
        if self.done:
            raise StopIteration
        self.done = True
        ix = self.index
        rows = self.rows
        if rows is None:
            return Batch(ix.nrows, {n: ix.columns[n] for n in ix.needed}, ix.rowids)
        cols = {n: take(ix.columns[n], rows) for n in ix.needed}
        return Batch(len(rows), cols, None if ix.rowids is None else ix.rowids[rows])

    def explain_analyze(self) -> list[str]:
        return [self.index.describe()]


def indexed_rescan(cache: dict, quals, kinds: dict[str, WireKind], total_rows: int,
                   full_scan: Callable[[list, list[str]], Any], needed: list[str],
                   memory_limit: Callable[[], int]) -> IndexedRows | None:
    """The rows of this rescan from the scan's index (built now if the
    rescans so far cost a full scan), or None to scan as usual.

    ``cache`` is the scan's cache (runtime ``scan_cache``); ``full_scan(quals,
    columns)`` runs the scan without the index; ``memory_limit()`` the bytes
    the index may take."""
    sig = _signature(quals)
    index = cache.get("rescan_index")
    if index is not None:
        if index.fits(sig):
            return index.lookup(quals)
        # another qual varies now (partsupp's suppliers of one part, then the
        # next part): build again over both, at most twice
        cache.pop("rescan_index")
        cache["rebuilds"] = cache.get("rebuilds", 0) + 1
        if cache["rebuilds"] > 2:
            cache["rescan_index_off"] = True
            return None
        cache.pop("rescan_index_off", None)
    first = cache.get("first_quals")
    if first is None:
        cache["first_quals"] = sig
        cache["rescans"] = 0
        return None
    cache["rescans"] += 1
    if len(first) != len(sig):
        cache["rescan_index_off"] = True
    if cache.get("rescan_index_off"):
        return None
    varying = cache.setdefault("varying", set())
    varying.update(i for i, (a, b) in enumerate(zip(first, sig)) if a != b)
    spent = cache.get("rows_read", 0) + cache["rescans"] * RESCAN_OVERHEAD_ROWS
    if spent < total_rows or cache["rescans"] < 4:
        return None
    cache["rescan_index_off"] = True  # one attempt per scan
    if not varying:
        return _copy(cache, quals, sig, full_scan, needed, memory_limit())
    if len(varying) > 4:
        return None
    for i in varying:
        q = quals[i]
        if q.operator != "=" or not isinstance(q.value, int) or isinstance(q.value, bool) \
                or kinds.get(q.field_name) not in INTEGER_KINDS:
            return None
    # the first varying qual is the key; the others filter what it finds
    pos, *others = sorted(varying)
    q = quals[pos]
    limit = memory_limit()
    column = q.field_name
    read = sorted(set(needed) | {quals[i].field_name for i in varying})
    got = _read_all(full_scan([x for i, x in enumerate(quals) if i not in varying], read), read, limit)
    if got is None:
        return None
    parts, rowids, _rows = got
    if not parts[column]:
        keys = np.zeros(0, dtype=np.int64)
        columns: dict[str, Any] = {}
    else:
        columns = {n: concat(parts[n]) for n in read}
        key = columns[column]
        keys = np.asarray(key.values).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        if key.validity is not None:  # a NULL key never equals a value
            order = order[np.asarray(key.validity, dtype=bool)[order]]
        keys = keys[order]
        # the rows stay where they are: a lookup takes its few rows through
        # the permutation (no sorted copy of every column to build)
        rowids = None if rowids is None else np.concatenate(rowids)
    if not columns:
        return None
    index: RescanIndex | RescanCopy = RescanIndex(pos, sig, keys, columns, rowids, [n for n in needed], column, order,
                        [(i, quals[i].field_name) for i in others])
    cache["rescan_index"] = index
    cache.pop("rescan_index_off", None)
    return index.lookup(quals)


def _read_all(scan, read: list[str], limit: int) -> tuple[dict[str, list], list | None, int] | None:
    """The batches of ``scan`` as column parts, row id parts and rows, or
    None past ``limit`` bytes."""
    parts: dict[str, list] = {n: [] for n in read}
    rowids: list[np.ndarray] | None = []
    used = rows = 0
    for batch in scan:
        if batch.nrows == 0:
            continue
        rows += batch.nrows
        for n in read:
            col = batch.columns[n]
            parts[n].append(col)
            used += col.values.nbytes + (0 if col.validity is None else col.validity.nbytes) \
                + (0 if getattr(col, "offsets", None) is None else col.offsets.nbytes)
        if rowids is not None:
            if batch.rowids is None:
                rowids = None
            else:
                rowids.append(np.asarray(batch.rowids))
                used += batch.rowids.nbytes
        if used > limit:
            return None
    return parts, rowids, rows


def _copy(cache: dict, quals, sig: list[tuple], full_scan: Callable[[list, list[str]], Any],
          needed: list[str], limit: int) -> IndexedRows | None:
    """Rescans with the same quals each time: read the rows once more, keep
    them (within ``limit`` bytes) and answer this rescan and the next from
    them."""
    read = sorted(set(needed))
    got = _read_all(full_scan(list(quals), read), read, limit)
    if got is None:
        return None
    parts, rowids, rows = got
    columns = {n: concat(parts[n]) for n in read} if rows else {}
    copy = RescanCopy(sig, columns, None if rowids is None or not rows else np.concatenate(rowids),
                      list(needed), rows)
    cache["rescan_index"] = copy
    cache.pop("rescan_index_off", None)
    return copy.lookup(quals)
