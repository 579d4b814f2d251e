"""``ORDER BY column <-> value [LIMIT k]`` on a columnar table, answered in
the scan.

The bridge hands the ordering over as a sort key with a function
(``orochi.l2_distance`` for ``<->``, ``orochi.cosine_distance`` for
``<=>``, ``orochi.vector_negative_inner_product`` for ``<#>``) and, when the
scan is the whole query, the LIMIT. :class:`KnnScan` then:

1. finds the rows the WHERE clause allows: with quals, a scan of only the
   quals' columns (the columnar filter kernels, deleted rows left out) gives
   their row ids; without, every live row;
2. per stripe: through its index file when the stripe has one for this
   column and distance, a LIMIT is known, and enough of its rows pass the
   filter (:data:`MIN_INDEX_SELECTIVITY`) - asking the index for more
   candidates (and a larger ef) until k of them pass the filter, or falling
   back to the exact search of the stripe; else exactly, by the kernel over
   the stripe's contiguous float32 vectors (only the chunk groups holding
   allowed rows);
3. the delta store's rows exactly;
4. merges the candidates by exact distance (the same float8 as the SQL
   operator; candidates an index found are re-ranked by it), NULL vectors
   and NaN distances last, ties by row id, and reads the other columns of
   the k rows kept (late materialisation).

Without a LIMIT (a WHERE clause Postgres must recheck, a join above) every
allowed row comes back, exactly ordered, in batches of growing size, so that
a LIMIT above stops the reading early.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from orochi_fdw.bridge import runtime, spi
from orochi_fdw.bridge.api import Qual, SortKey
from orochi_fdw.bridge.batch import Batch, Column
from orochi_fdw.columnar.deletes import DELTA_ROWID_BASE, STRIPE_OFFSET_BITS, DeletedOffsets, stripe_rowids
from orochi_fdw.columnar.scan import null_column
from orochi_fdw.columnar.topn import concat, take
from orochi_fdw.columnar.types import storage_kind, to_wire, wire_kind
from orochi_fdw.kernels import vector as kernels
from orochi_fdw.storage.stripe_format import StripeReader
from orochi_fdw.vector import catalog, indexes
from orochi_fdw.vector.errors import VectorError
from orochi_fdw.vector.reference import METRICS
from orochi_fdw.vector.types import DISTANCE_FUNCTIONS, parse_vector, payload_matrix

#: an index is used for a stripe only when at least this share of its rows
#: pass the filter (below, an exact search of the allowed rows is cheaper)
MIN_INDEX_SELECTIVITY = 0.02
#: the distance type of an index that serves each ordering
INDEX_DISTANCE = {"l2": "l2", "cosine": "cosine", "negative_inner_product": "inner_product"}


def _metric_of(key: SortKey) -> str | None:
    return DISTANCE_FUNCTIONS.get(key.function or "")


def searchable(table, key: SortKey) -> bool:
    """Whether the scan can produce rows in the order of ``key``."""
    column = table.columns.get(key.attname)
    return (column is not None and _metric_of(key) is not None and not key.is_reversed
            and not key.nulls_first and storage_kind(column) == "vector")


def can_sort(table, key: SortKey):
    """``([key], startup, total)`` when the scan orders by the distance, with
    a cost below reading every row and sorting it in Postgres."""
    if not searchable(table, key):
        return []
    column = table.columns[key.attname]
    # the scan's catalog records (one statement, kept per backend), not
    # three statements of their own
    cat, delta_rows, _ = catalog.scan_catalog(table.relid, {column.attnum}, column.attnum,
                                              INDEX_DISTANCE[_metric_of(key)], table.delta.name)
    live = sum(s.live_rows for s in cat.stripes) + (table.delta.count() if delta_rows else 0)
    dims = column.typmod
    indexed = cat.index is not None
    cost = 10.0 + live * (0.0005 if indexed else dims * 0.00005)
    return ([key], cost, cost)


def explain(table, key: SortKey) -> list[str]:
    metric = _metric_of(key)
    column = table.columns[key.attname]
    found = [i for i in catalog.table_indexes(table.relid)
             if i.attnum == column.attnum and i.distance_type == INDEX_DISTANCE[metric]]
    if found:
        i = found[0]
        how = f"{i.index_type} index {i.index_id} ({i.distance_type}), exact for the delta store"
    else:
        how = "exact scan (no index)"
    return [f"Vector Search: {key.attname} by {key.function}: {how}"]


@dataclass
class KnnCounters:
    stripes_by_index: int = 0
    stripes_exact: int = 0
    exact_from_files: int = 0
    index_rounds: int = 0
    vectors_compared: int = 0
    delta_rows: int = 0
    filtered: bool = False
    catalog_cached: bool | str = False
    notes: list[str] = field(default_factory=list)


def _settings() -> tuple[int, int]:
    """orochi.hnsw_ef_search and orochi.ivfflat_probes (read in C: no query)."""
    return int(spi.setting("orochi.hnsw_ef_search") or 0), int(spi.setting("orochi.ivfflat_probes") or 0)


class _Candidates:
    """Row ids and exact distances gathered from the stripes and the delta,
    and (with a LIMIT) the candidates' vectors where the search had them in
    hand: the rows kept then need no second read of their vector column's
    chunk groups."""

    def __init__(self, dims: int, keep_vectors: bool) -> None:
        self.dims = dims
        self.keep_vectors = keep_vectors
        self.rowids: list[np.ndarray] = []
        self.dist: list[np.ndarray] = []
        self.vectors: list[np.ndarray | None] = []
        #: whether the only part added so far is in order already
        self.in_order = False

    def add(self, rowids: np.ndarray, dist: np.ndarray, limit: int | None,
            vectors: np.ndarray | None = None) -> None:
        if len(rowids) == 0:
            return
        in_order = False
        if limit is not None and len(rowids) > limit:
            # an index's few candidates: sorted outright (their first k are
            # those of the final order); many: selected in linear time
            in_order = len(rowids) <= 1024
            keep = _order(dist, rowids)[:limit] if in_order else _best(dist, rowids, limit)
            rowids, dist = rowids[keep], dist[keep]
            if vectors is not None:
                vectors = vectors[keep]
        self.rowids.append(np.asarray(rowids, dtype=np.int64))
        self.dist.append(np.asarray(dist, dtype=np.float64))
        self.vectors.append(np.asarray(vectors, dtype=np.float32) if self.keep_vectors and vectors is not None
                            else None)
        self.in_order = in_order and len(self.rowids) == 1

    def ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(row ids, distances, vectors, whether each row's vector is there),
        in order; the last two None when no vectors were kept."""
        if not self.rowids:
            return np.zeros(0, np.int64), np.zeros(0), None, None
        if len(self.rowids) == 1:
            # one part (one index file, no delta row): no concatenation
            rowids, dist, vectors = self.rowids[0], self.dist[0], self.vectors[0]
            if self.in_order:
                return rowids, dist, vectors, None if vectors is None else np.ones(len(rowids), dtype=bool)
            order = _order(dist, rowids)
            if vectors is None:
                return rowids[order], dist[order], None, None
            return rowids[order], dist[order], vectors[order], np.ones(len(order), dtype=bool)
        rowids, dist = np.concatenate(self.rowids), np.concatenate(self.dist)
        order = _order(dist, rowids)
        if not self.keep_vectors or all(v is None for v in self.vectors):
            return rowids[order], dist[order], None, None
        vectors = np.concatenate([v if v is not None else np.zeros((len(r), self.dims), np.float32)
                                  for r, v in zip(self.rowids, self.vectors)])
        have = np.concatenate([np.full(len(r), v is not None) for r, v in zip(self.rowids, self.vectors)])
        return rowids[order], dist[order], vectors[order], have[order]


def _order(dist: np.ndarray, rowids: np.ndarray) -> np.ndarray:
    """Ascending distance, NaN (and NULL, as NaN) last, ties by row id."""
    nan = np.isnan(dist)
    return np.lexsort((rowids, np.where(nan, 0.0, dist), nan))


def _best(dist: np.ndarray, rowids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k first in :func:`_order` (unordered), in linear
    time but for the ties at the k-th distance."""
    key = np.where(np.isnan(dist), np.inf, dist)
    kth = np.partition(key, k - 1)[k - 1]
    below = np.flatnonzero(key < kth)
    at = np.flatnonzero(key == kth)
    if len(below) + len(at) > k:
        at = at[np.argsort(rowids[at], kind="stable")][:k - len(below)]
    return np.concatenate([below, at])


class KnnScan:
    """The iterator of a nearest-neighbour scan (see the module docstring)."""

    def __init__(self, table, quals: list[Qual], columns: list[str], key: SortKey, limit: int | None):
        self.table = table
        self.quals = quals
        self.needed = [c for c in columns if c in table.columns]
        self.key = key
        self.limit = None if limit is None or limit < 0 else int(limit)
        self.metric = _metric_of(key)
        self.column = table.columns[key.attname]
        self.dims = self.column.typmod
        self.counters = KnnCounters(filtered=bool(quals))
        self._iter = self._run()

    def __iter__(self) -> "KnnScan":
        return self

    def __next__(self) -> Batch:
        return next(self._iter)

    def explain_analyze(self) -> list[str]:
        c = self.counters
        return [f"Vector Search: {c.stripes_by_index} stripe(s) by index ({c.index_rounds} round(s)), "
                f"{c.stripes_exact} exactly"
                + (f" ({c.exact_from_files} over index files' vectors)" if c.exact_from_files else "")
                + f"; {c.vectors_compared} exact distances; delta rows {c.delta_rows}"
                + (" (filtered)" if c.filtered else "")
                + ("; catalog read" if not c.catalog_cached else "; catalog cached"
                   + (f" ({c.catalog_cached})" if isinstance(c.catalog_cached, str) else ""))] + c.notes

    # ------------------------------------------------------------------

    def _run(self) -> Iterator[Batch]:
        table = self.table
        if self.key.value is None:
            # every distance is NULL: any order is the order
            yield from table.execute(self.quals, self.needed, limit=self.limit) \
                if self.limit is not None else table.execute(self.quals, self.needed)
            return
        q = parse_vector(self.key.value, self.dims, "query vector")
        kmetric = METRICS[self.metric]
        attnum = self.column.attnum
        # the columns read: those returned, the searched one and the filter's
        # (whose scan gets the same records: no catalog statement of its own)
        attnums = {attnum} | {table.columns[c].attnum for c in self.needed} \
            | {table.columns[q.field_name].attnum for q in self.quals if q.field_name in table.columns}
        cat, delta_rows, cached = catalog.scan_catalog(table.relid, attnums, attnum, INDEX_DISTANCE[self.metric],
                                                       table.delta.name)
        self.counters.catalog_cached = cached
        stripes = cat.stripes
        allowed_stripes, allowed_delta = self._allowed(cat.stripes, delta_rows)
        if allowed_stripes is not None:
            stripes = [s for s in stripes if s.stripe_id in allowed_stripes]
        index = cat.index
        files = cat.files if index is not None and self.limit is not None else {}
        ef_setting, probes_setting = _settings() if files else (0, 0)
        found = _Candidates(self.dims, keep_vectors=self.limit is not None)
        k = self.limit
        if k == 0:
            groups, exact = [], []
        elif allowed_stripes is None:
            # every live row: what to search depends on the catalog records
            # only, kept with them
            memo_key = ("groups", bool(files))
            kept = cat.memo.get(memo_key)
            if kept is None:
                kept = cat.memo[memo_key] = _group_stripes(
                    stripes, files, lambda stripe: cat.live_mask(stripe))
            groups, exact = kept
        else:
            groups, exact = _group_stripes(
                stripes, files, lambda stripe: self._live_mask(stripe, allowed_stripes[stripe.stripe_id]))
        for stripe, mask in exact:
            self._exact(stripe, q, kmetric, mask, found)
        for group in groups:
            done = self._by_index(index, group, q, found,
                                  probes_setting if index.index_type == "ivfflat" else ef_setting)
            if not done and not self._exact_from_file(index, group.members, q, kmetric, found):
                for stripe, _, mask, _ in group.members:
                    self._exact(stripe, q, kmetric, mask, found)
        delta_batches = self._delta(q, kmetric, allowed_delta, found) if delta_rows else []
        rowids, dist, vectors, have = found.ordered()
        if k is not None:
            rowids, dist = rowids[:k], dist[:k]
            if vectors is not None:
                vectors, have = vectors[:k], have[:k]
        size = len(rowids) if k is not None else 1024
        start = 0
        while start < len(rowids):
            part = rowids[start:start + size]
            yield self._materialize(part, cat.by_id, delta_batches,
                                    None if vectors is None else (vectors[start:start + size],
                                                                  have[start:start + size]))
            start += size
            size *= 4

    def _allowed(self, stripes: list, delta_rows: bool) -> tuple[dict[int, np.ndarray] | None, set[int] | None]:
        """Row offsets per stripe and delta row ids that the quals allow, or
        (None, None) without quals (every live row). The filter's scan reads
        ``stripes`` (the scan's catalog records, with the quals' columns)
        and the delta store only when ``delta_rows``."""
        if not self.quals:
            return None, None
        per_stripe: dict[int, list[np.ndarray]] = {}
        delta: set[int] = set()
        for batch in self.table.execute(self.quals, [], stripes=(stripes, delta_rows)):
            ids = np.asarray(batch.rowids, dtype=np.int64)
            is_delta = ids >= DELTA_ROWID_BASE
            if is_delta.any():
                delta.update((ids[is_delta] - DELTA_ROWID_BASE).tolist())
            ids = ids[~is_delta]
            if len(ids):
                sids = ids >> STRIPE_OFFSET_BITS
                for sid in np.unique(sids):
                    per_stripe.setdefault(int(sid), []).append(ids[sids == sid] & ((1 << STRIPE_OFFSET_BITS) - 1))
        return {s: np.concatenate(v) for s, v in per_stripe.items()}, delta

    @staticmethod
    def _live_mask(stripe, allowed: np.ndarray | None) -> np.ndarray | None:
        """Per row of the stripe, whether it may be returned (None: all)."""
        if allowed is not None:
            mask = np.zeros(stripe.row_count, dtype=bool)
            mask[allowed] = True
            return mask
        deleted = DeletedOffsets(stripe.delete_bitmap)
        return deleted.live_mask(0, stripe.row_count)

    def _exact(self, stripe, q: np.ndarray, kmetric: int, mask: np.ndarray | None, found: _Candidates) -> None:
        groups = None
        if mask is not None:
            groups = [i for i, (_, lo, n) in enumerate(_chunk_groups(stripe.file_path)) if mask[lo:lo + n].any()]
        X, rows = indexes.stripe_vectors(stripe, self.column.attnum, self.dims, groups)
        if mask is not None and len(rows):
            keep = mask[rows]
            X, rows = X[keep], rows[keep]
        self.counters.stripes_exact += 1
        if len(rows) == 0:
            return
        X = np.ascontiguousarray(X)
        dist = np.empty(len(rows), dtype=np.float64)
        kernels.distances(X, q, kmetric, dist)
        self.counters.vectors_compared += len(rows)
        found.add(stripe_rowids(stripe.stripe_id, rows), dist, self.limit, X)

    def _exact_from_file(self, index, members, q, kmetric: int, found: _Candidates) -> bool:
        """Search stripes exactly over the float32 vectors their index file
        stores, in place (nothing decoded: the stripes' chunks would be read
        and copied); False when the file cannot serve (gone, another layout)."""
        if self.limit is None:
            return False
        fv = indexes.file_vectors(index, members[0][1].file_path)
        if fv is None:
            return False
        parts = []
        for stripe, _, mask, _ in members:
            slots, offsets = fv.stripe_slots(stripe.stripe_id, stripe.row_count)
            parts.append(slots if mask is None else slots[mask[offsets]])
        positions = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.counters.stripes_exact += len(members)
        self.counters.exact_from_files += len(members)
        if len(positions) == 0:
            return True
        if len(positions) == len(fv.keys):
            dist = np.empty(len(positions), dtype=np.float64)
            kernels.distances(fv.matrix, q, kmetric, dist)
            rowids, vectors = fv.keys, fv.matrix
        else:
            positions = np.sort(positions)          # the map read in order
            dist = np.empty(len(positions), dtype=np.float64)
            kernels.distances_rows(fv.matrix, positions, q, kmetric, dist)
            rowids, vectors = fv.keys[positions], _Rows(fv.matrix, positions)
        self.counters.vectors_compared += len(positions)
        found.add(rowids, dist, self.limit, vectors)
        return True

    def _by_index(self, index, group: "_FileGroup", q, found, setting: int) -> bool:
        """Search stripes through the index file they share (one stripe, or
        a segment's that this snapshot sees); False to search them exactly
        instead (the file is gone, says exact, or the filter lets too few of
        the index's answers through).

        The file's keys are row ids: a candidate is kept when its stripe is
        one of ``members`` and its row is allowed there (not deleted, passes
        the filter), so rows of stripes the snapshot does not see (rewritten
        by a compaction, dropped) and deleted rows are never returned."""
        members = group.members
        file = members[0][1]
        graph = indexes.open_index(index, group.path)
        search_ef = setting if setting > 0 else file.search_ef
        if graph is None or search_ef <= 0:
            return False
        k = self.limit
        nallowed = group.nallowed
        size = indexes.indexed_count(graph)
        if k >= nallowed or nallowed < MIN_INDEX_SELECTIVITY * size:
            # every allowed row is wanted, or too few pass: reading them is exact and cheaper
            return False
        share = nallowed / size
        count = min(size, max(k, math.ceil(k / share * 1.5) + 8))
        if self.quals and setting <= 0 and index.index_type == "hnsw":
            m = int({**indexes.HNSW_DEFAULTS, **index.options}["m"])
            if max(search_ef * max(1, math.ceil(k / 10)), count) * m * 4 >= nallowed:
                # the build-time check's cost rule: a graph search at this ef
                # computes about as many distances as the allowed rows (a
                # filter on a file whose check needed a large ef, as on
                # uniform random data): reading them is exact and no dearer
                return False
        single = group.single
        allow = group.filter()
        while True:
            self.counters.index_rounds += 1
            if index.index_type == "hnsw":
                raw = indexes.hnsw_search(graph, q, count, max(search_ef * max(1, math.ceil(k / 10)), count))
                rowids = _row_ids(raw, single)
                keep = allow.mask(rowids)
                keys, stored = rowids[keep], raw[keep]
                if len(keys) < k and count >= size:
                    return False    # the graph reaches fewer rows than wanted (not every node is reachable)
                if len(keys) >= k:
                    vectors = indexes.hnsw_vectors(graph, stored, self.dims)
                    dist = np.empty(len(keys), dtype=np.float64)
                    kernels.distances(vectors, q, METRICS[self.metric], dist)
                    self.counters.vectors_compared += len(keys)
                    found.add(keys, dist, k, vectors)
                    self.counters.stripes_by_index += len(members)
                    return True
            else:
                L = len(graph.offsets) - 1
                probes = min(L, max(1, search_ef) * max(1, math.ceil(count / max(k, 1))))
                rows, dist = graph.search(q, probes, self.metric if self.metric != "negative_inner_product"
                                          else "inner_product")
                rows = _row_ids(np.asarray(rows, dtype=np.int64), single)
                keep = allow.mask(rows)
                rows, dist = rows[keep], dist[keep]
                self.counters.vectors_compared += len(rows)
                if len(rows) >= k or probes >= L:
                    found.add(rows, dist, k)
                    self.counters.stripes_by_index += len(members)
                    return True
            if count * 4 >= size // 2:
                return False
            count *= 4

    def _delta(self, q: np.ndarray, kmetric: int, allowed: set[int] | None, found: _Candidates) -> list[Batch]:
        """The delta rows' distances (exact); their batches, for the rows'
        other columns."""
        name = self.key.attname
        read = sorted(set(self.needed) | {name})
        kept = []
        for batch in self.table.delta.scan(read, self.quals):
            ids = np.asarray(batch.ids, dtype=np.int64)
            col = batch.columns[name]
            sel = np.ones(batch.nrows, dtype=bool) if allowed is None else np.isin(ids, list(allowed))
            valid = sel & ~col.null_mask()
            dist = np.full(batch.nrows, np.nan)
            if valid.any():
                lengths = np.diff(col.offsets)
                if (lengths[valid] != 4 * self.dims).any():
                    raise VectorError(f"a vector of the delta store of \"{self.table.relname}\" does not have "
                                      f"{self.dims} dimensions")
                rows = np.flatnonzero(valid)
                data = np.concatenate([col.values[col.offsets[r]:col.offsets[r + 1]] for r in rows]) \
                    if len(rows) < batch.nrows else col.values[col.offsets[0]:col.offsets[-1]]
                X = np.ascontiguousarray(payload_matrix(data, self.dims))
                d = np.empty(len(rows), dtype=np.float64)
                kernels.distances(X, q, kmetric, d)
                dist[rows] = d
                self.counters.vectors_compared += len(rows)
            self.counters.delta_rows += int(sel.sum())
            found.add(np.asarray(batch.rowids)[sel], dist[sel], self.limit)
            kept.append(batch)
        return kept

    # ------------------------------------------------------------------ the rows' other columns

    def _materialize(self, rowids: np.ndarray, by_id: dict, delta_batches: list[Batch],
                     known: tuple[np.ndarray, np.ndarray] | None = None) -> Batch:
        """The needed columns of rows ``rowids`` (distinct); ``known``
        (vectors, whether each is there) gives the searched column of the
        rows whose vector the search already read (the stripe's chunks are
        not read again for it). The rows are grouped by stripe in Python:
        a LIMIT keeps few of them, and numpy's grouping costs more than the
        loop at that size."""
        n = len(rowids)
        if not self.needed or n == 0:
            return Batch(n, {}, rowids=rowids.copy())
        name = self.key.attname
        per_stripe: dict[int, list[tuple[int, int]]] = {}
        delta_pos: dict[int, int] = {}
        for i, r in enumerate(rowids.tolist()):
            if r >= DELTA_ROWID_BASE:
                delta_pos[r] = i
            else:
                per_stripe.setdefault(r >> STRIPE_OFFSET_BITS, []).append((r & _OFFSET_MASK, i))
        # the searched column of every row from the vectors the search holds,
        # in one piece, when it has them all (no delta row) and every stripe
        # stores the column as vectors
        whole = known is not None and name in self.needed and not delta_pos and bool(known[1].all()) \
            and all((rec := by_id[sid].columns.get(self.column.attnum)) is not None and rec.kind == "vector"
                    for sid in per_stripe)
        if whole:
            columns = self._from_whole_columns(n, per_stripe, by_id)
            if columns is not None:
                columns[name] = _vector_column(known[0], self.table.columns[name])
                return Batch(n, {c: columns[c] for c in self.needed}, rowids=rowids.copy())
        positions: list[np.ndarray] = []
        parts: list[dict[str, Column]] = []
        for sid, items in per_stripe.items():
            items.sort()
            offsets = [o for o, _ in items]
            pos = np.array([i for _, i in items], dtype=np.int64)
            stripe = by_id[sid]
            rec = stripe.columns.get(self.column.attnum)
            if whole:
                cols = self._fetch(stripe, offsets, skip=name)
            elif known is not None and name in self.needed and rec is not None and rec.kind == "vector" \
                    and bool(known[1][pos].all()):
                cols = self._fetch(stripe, offsets, skip=name)
                cols[name] = _vector_column(known[0][pos], self.table.columns[name])
            else:
                cols = self._fetch(stripe, offsets)
            positions.append(pos)
            parts.append(cols)
        if delta_pos:
            for batch in delta_batches:
                ids = np.asarray(batch.rowids, dtype=np.int64)
                sel = [j for j, r in enumerate(ids.tolist()) if r in delta_pos]
                if sel:
                    positions.append(np.array([delta_pos[int(ids[j])] for j in sel], dtype=np.int64))
                    sel_a = np.array(sel, dtype=np.int64)
                    parts.append({c: take(batch.columns[c], sel_a) for c in self.needed})
        where = positions[0] if len(positions) == 1 else np.concatenate(positions or [np.zeros(0, np.int64)])
        if len(where) != n:
            raise RuntimeError(f"vector search: {n - len(where)} of the rows kept were not found")
        columns = {}
        order = None
        for c in self.needed:
            if whole and c == name:
                columns[c] = _vector_column(known[0], self.table.columns[name])
                continue
            cols = [p[c] for p in parts]
            if all(col.validity is None and not col.kind.is_variable_width for col in cols) \
                    and len({col.values.dtype for col in cols}) == 1:
                values = np.empty(n, dtype=cols[0].values.dtype)     # each part's rows put in place
                for pos, col in zip(positions, cols):
                    values[pos] = col.values
                columns[c] = Column(cols[0].kind, values)
                continue
            if order is None:
                order = np.argsort(where, kind="stable")
            columns[c] = take(cols[0] if len(cols) == 1 else concat(cols), order)
        return Batch(n, columns, rowids=rowids.copy())

    def _from_whole_columns(self, n: int, per_stripe: dict[int, list[tuple[int, int]]],
                            by_id: dict) -> dict[str, Column] | None:
        """The needed columns but the searched one of the rows ``per_stripe``
        (stripe id -> (offset, position in the result)), when each is a
        fixed-width column without NULLs kept whole for every stripe
        (:func:`_whole_column`): each stripe's rows are put in place by
        one step per column. None otherwise (read per chunk group)."""
        columns: dict[str, Column] = {}
        rows = [(by_id[sid], [o for o, _ in items], [i for _, i in items]) for sid, items in per_stripe.items()]
        for name in self.needed:
            if name == self.key.attname:
                continue
            column = self.table.columns[name]
            values = kind = None
            for stripe, offsets, positions in rows:
                rec = stripe.columns.get(column.attnum)
                whole = _whole_column(stripe, column, rec) if rec is not None else None
                if whole is None or whole.validity is not None:
                    return None
                if values is None:
                    values, kind = np.empty(n, dtype=whole.values.dtype), whole.kind
                elif whole.kind != kind or whole.values.dtype != values.dtype:
                    return None
                values[positions] = whole.values[offsets]
            columns[name] = Column(kind, values if values is not None else np.zeros(0))
        return columns

    def _fetch(self, stripe, offsets: list[int], skip: str | None = None) -> dict[str, Column]:
        """The needed columns (but ``skip``) of rows ``offsets`` (ascending)
        of a stripe; the chunks' wire form comes from this backend's
        :data:`_chunks` when a query read them before (a stripe file never
        changes). The rows' chunk groups are found per row (a LIMIT keeps
        few rows of a stripe of many chunk groups)."""
        taken: dict[str, Column] = {}
        needed = []
        rows = None
        for name in self.needed:
            if name == skip:
                continue
            column = self.table.columns[name]
            rec = stripe.columns.get(column.attnum)
            whole = _whole_column(stripe, column, rec) if rec is not None else None
            if whole is None:
                needed.append(name)
                continue
            if rows is None:
                rows = np.array(offsets, dtype=np.int64)
            taken[name] = Column(whole.kind, whole.values[rows],
                                 None if whole.validity is None else whole.validity[rows])
        if not needed:
            return taken
        groups, starts = _chunk_groups(stripe.file_path), _group_starts(stripe.file_path)
        by_group: dict[int, list[int]] = {}
        for o in offsets:
            g = bisect.bisect_right(starts, o) - 1
            by_group.setdefault(g, []).append(o - starts[g])
        out: dict[str, list[Column]] = {n: [] for n in needed}
        reader = None
        try:
            for g, local in by_group.items():
                index = groups[g][0]
                local_rows = np.array(local, dtype=np.int64)
                for name in needed:
                    column = self.table.columns[name]
                    rec = stripe.columns.get(column.attnum)
                    if rec is None:
                        out[name].append(null_column(column, len(local)))
                        continue
                    kind = storage_kind(column)
                    key = (stripe.file_path, rec.column_name, index, kind, rec.kind, column.type_oid, column.typmod)
                    wire = _chunks.get(key)
                    if wire is None:
                        if reader is None:
                            reader = StripeReader(stripe.file_path)
                        wire = to_wire(reader.read_chunk(rec.column_name, index), kind, column, rec.kind)
                        _chunks.put(key, wire, _wire_bytes(wire))
                    out[name].append(take(wire, local_rows))
        finally:
            if reader is not None:
                reader.close()
        taken.update({n: cols[0] if len(cols) == 1 else concat(cols) for n, cols in out.items()})
        return taken


class _ChunkCache:
    """Decoded column chunks of stripe files, least recently used first out,
    up to a byte budget (per backend). A stripe file never changes (a
    rewrite is a new file under a new name), so an entry needs no
    invalidation; a file removed since is never asked for again."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.entries: "OrderedDict[tuple, tuple[object, int]]" = OrderedDict()

    def get(self, key: tuple):
        found = self.entries.get(key)
        if found is None:
            return None
        self.entries.move_to_end(key)
        return found[0]

    def put(self, key: tuple, value, nbytes: int) -> None:
        if nbytes > self.budget // 8:
            return
        self.entries[key] = (value, nbytes)
        self.used += nbytes
        while self.used > self.budget:
            _, (_, n) = self.entries.popitem(last=False)
            self.used -= n


#: chunks the kept rows' other columns were read from, in wire form (k rows
#: of a nearest-neighbour query read a whole chunk group of each column)
CHUNK_CACHE_BYTES = 64 << 20
_chunks = _ChunkCache(CHUNK_CACHE_BYTES)
#: stripe file -> its chunk groups (index, first row, rows)
_groups: "OrderedDict[str, list[tuple[int, int, int]]]" = OrderedDict()
#: stripe file -> its chunk groups' first rows
_starts: dict[str, list[int]] = {}


#: keys of stripe columns :func:`_whole_column` does not keep whole
#: (variable width, too large for the chunk cache, or built too often)
_not_whole: "OrderedDict[tuple, None]" = OrderedDict()
#: how many times :func:`_whole_column` built each key: one evicted from
#: the chunk cache and asked for again is built again, up to
#: WHOLE_COLUMN_BUILDS times; after that its stripe column is read per
#: chunk group (queries whose kept rows' columns are more than the cache
#: holds would otherwise decode whole stripe columns on every query)
_whole_builds: "OrderedDict[tuple, int]" = OrderedDict()
WHOLE_COLUMN_BUILDS = 2


def _whole_column(stripe, column, rec) -> Column | None:
    """A fixed-width column of a stripe, every row, in wire form (its chunk
    groups' values one after the other), kept in :data:`_chunks`: the rows
    a LIMIT keeps are then taken by their offsets in one step, without
    finding each row's chunk group. None for a variable-width column or
    one too large to keep (read per chunk group instead)."""
    kind = storage_kind(column)
    key = ("whole", stripe.file_path, rec.column_name, kind, rec.kind, column.type_oid, column.typmod)
    found = _chunks.get(key)
    if found is not None or key in _not_whole:
        return found
    builds = _whole_builds.get(key, 0)
    if builds >= WHOLE_COLUMN_BUILDS:
        _not_whole[key] = None
        if len(_not_whole) > 4096:
            _not_whole.popitem(last=False)
        return None
    _whole_builds[key] = builds + 1
    if len(_whole_builds) > 4096:
        _whole_builds.popitem(last=False)
    groups = _chunk_groups(stripe.file_path)
    parts: list[Column] = []
    reader = None
    try:
        for index, first, rows in groups:
            if first != sum(len(p) for p in parts):
                parts = []
                break
            wire = _chunks.get((stripe.file_path, rec.column_name, index, kind, rec.kind, column.type_oid,
                                column.typmod))
            if wire is None:
                if reader is None:
                    reader = StripeReader(stripe.file_path)
                wire = to_wire(reader.read_chunk(rec.column_name, index), kind, column, rec.kind)
            if wire.kind.is_variable_width or len(wire) != rows \
                    or _wire_bytes(wire) * len(groups) > CHUNK_CACHE_BYTES // 8:
                parts = []
                break
            parts.append(wire)
    finally:
        if reader is not None:
            reader.close()
    if not parts:
        _not_whole[key] = None
        if len(_not_whole) > 4096:
            _not_whole.popitem(last=False)
        return None
    found = concat(parts) if len(parts) > 1 else parts[0]
    if _wire_bytes(found) > CHUNK_CACHE_BYTES // 8:
        _not_whole[key] = None
        return None
    _chunks.put(key, found, _wire_bytes(found))
    return found


def _group_starts(path: str) -> list[int]:
    """The first row of each of a stripe file's chunk groups (ascending)."""
    found = _starts.get(path)
    if found is None:
        found = _starts[path] = [first for _, first, _ in _chunk_groups(path)]
        if len(_starts) > 4096:
            _starts.pop(next(iter(_starts)))
    return found


def _chunk_groups(path: str) -> list[tuple[int, int, int]]:
    found = _groups.get(path)
    if found is None:
        reader = StripeReader(path)
        try:
            found = [(g.index, g.first_row, g.row_count) for g in reader.metadata.chunk_groups]
        finally:
            reader.close()
        _groups[path] = found
        if len(_groups) > 4096:
            _groups.popitem(last=False)
    else:
        _groups.move_to_end(path)
    return found


def _wire_bytes(col: Column) -> int:
    """Bytes a chunk in wire form holds."""
    return max(1024, sum(p.nbytes for p in (col.values, col.validity, col.offsets) if isinstance(p, np.ndarray)))


_OFFSET_MASK = (1 << STRIPE_OFFSET_BITS) - 1


class _Rows:
    """Rows ``positions`` of a matrix, taken only when indexed (the
    candidates kept), not copied whole."""

    def __init__(self, matrix: np.ndarray, positions: np.ndarray) -> None:
        self.matrix = matrix
        self.positions = positions

    def __getitem__(self, keep) -> np.ndarray:
        return np.asarray(self.matrix[self.positions[keep]], dtype=np.float32)

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.matrix[self.positions], dtype=np.float32)
        return out if dtype is None else out.astype(dtype)


def _row_ids(keys: np.ndarray, single: int | None) -> np.ndarray:
    """An index file's keys as row ids: files of one stripe written before
    segments keyed rows by their offset in the stripe (below 2**20, which no
    row id is: stripe ids start at 1)."""
    if single is not None and len(keys) and int(keys.max()) <= _OFFSET_MASK:
        return stripe_rowids(single, keys)
    return keys


class _FileGroup:
    """The stripes an index file covers that a scan searches (one, or a
    segment's that the snapshot sees), each as (stripe record, its file
    row, its allowed rows' mask or None for all, how many are allowed)."""

    __slots__ = ("path", "members", "nallowed", "single", "_filter")

    def __init__(self, path: str, members: list[tuple]) -> None:
        self.path = path
        self.members = members
        self.nallowed = sum(m[3] for m in members)
        self.single = members[0][0].stripe_id if len(members) == 1 else None
        self._filter = None

    def filter(self) -> "_KeyFilter":
        if self._filter is None:
            self._filter = _KeyFilter(self.members)
        return self._filter


def _group_stripes(stripes: list, files: dict, mask_of) -> tuple[list[_FileGroup], list[tuple]]:
    """(the stripes to search through each index file, by file; the
    stripes without one, each with its mask) of the stripes with an
    allowed row; ``mask_of(stripe)`` is the stripe's allowed rows (None:
    all)."""
    by_file: dict[str, list[tuple]] = {}
    exact = []
    for stripe in stripes:
        mask = mask_of(stripe)
        nallowed = int(mask.sum()) if mask is not None else stripe.row_count
        if nallowed == 0:
            continue
        file = files.get(stripe.stripe_id)
        if file is not None:
            by_file.setdefault(file.file_path, []).append((stripe, file, mask, nallowed))
        else:
            exact.append((stripe, mask))
    return [_FileGroup(path, members) for path, members in by_file.items()], exact


class _KeyFilter:
    """Which row ids (an index's candidates) a search may return: a row of
    one of the stripes searched that is allowed there."""

    def __init__(self, members) -> None:
        self.masks = {stripe.stripe_id: (stripe.row_count, mask) for stripe, _, mask, _ in members}

    def mask(self, rowids: np.ndarray) -> np.ndarray:
        if len(rowids) <= 256:
            # an index's candidates for a LIMIT: fewer Python steps one by one
            ok = np.zeros(len(rowids), dtype=bool)
            masks = self.masks
            for j, r in enumerate(rowids.tolist()):
                member = masks.get(r >> STRIPE_OFFSET_BITS)
                if member is not None:
                    o = r & _OFFSET_MASK
                    if o < member[0] and (member[1] is None or member[1][o]):
                        ok[j] = True
            return ok
        sids = rowids >> STRIPE_OFFSET_BITS
        offs = rowids & _OFFSET_MASK
        ok = np.zeros(len(rowids), dtype=bool)
        for sid in np.unique(sids).tolist():
            member = self.masks.get(int(sid))
            if member is None:
                continue            # a stripe this snapshot does not see
            nrows, live = member
            sel = np.flatnonzero(sids == sid)
            o = offs[sel]
            inside = o < nrows
            good = inside.copy()
            if live is not None:
                good[inside] = live[o[inside]]
            ok[sel] = good
        return ok


def _vector_column(X: np.ndarray, column) -> Column:
    """Vectors (m x d float32) as a wire column: each value its payload of
    little-endian float32, as a stripe's chunk decodes to."""
    X = np.ascontiguousarray(X, dtype="<f4")
    width = 4 * X.shape[1]
    return Column(wire_kind(column), X.reshape(-1).view(np.uint8),
                  None, np.arange(len(X) + 1, dtype=np.int64) * width)



def estimate(table, columns: list[str], selectivity: float) -> dict:
    """``ColumnarTable.estimate`` of a scan without quals of a table with a
    vector column, from the records the nearest-neighbour scan keeps
    (:func:`catalog.scan_catalog`, under the same key as the scan of the
    same columns): planning such a query made three catalog statements of
    its own (the stripes, the delta store's count, the columns' raw bytes).
    Without quals no stripe is left out: a table extension's part exclusion
    (a hypertable's chunks) works from the quals, and so does min/max
    pruning."""
    from orochi_fdw.query import estimates

    vector = next(c for c in table.columns.values() if storage_kind(c) == "vector")
    needed = [c for c in columns if c in table.columns]
    attnums = {table.columns[c].attnum for c in needed}
    cat, delta_rows, _ = catalog.scan_catalog(table.relid, attnums | {vector.attnum}, vector.attnum,
                                              "l2", table.delta.name)
    kept = cat.stripes
    raw = cat.memo.get("raw_bytes")
    if raw is None:
        raw = {}
        for s in cat.stripes:
            for a, rec in s.columns.items():
                raw[a] = raw.get(a, 0) + (rec.raw_bytes or 0)
        raw = cat.memo["raw_bytes"] = raw
    delta = table.delta.count() if delta_rows else 0
    stored = sum(s.live_rows for s in cat.stripes)
    shape = estimates.ScanShape(stored + delta, stored + delta, len(kept), estimates.read_bytes(kept, attnums),
                                len(set(needed)), 0)
    rows = min(shape.total_rows * max(0.0, min(1.0, selectivity)), shape.scanned_rows)
    startup, total_cost = estimates.scan_cost(shape, rows, len(needed))
    return {"rows": rows, "width": table._width(needed, stored, raw if stored else {}),
            "startup_cost": startup, "total_cost": total_cost, "tuples": shape.total_rows}
