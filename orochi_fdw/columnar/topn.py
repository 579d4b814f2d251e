"""ORDER BY plain columns (LIMIT n) over the rows of a columnar scan.

With a limit, :class:`TopNScan` drives the scan itself: it keeps the best
``n`` rows seen so far, skips stripes and chunk groups whose statistics
show none of their rows can do better, decodes the first sort column before
anything else, and reads the other columns for the ``n`` winners only.
Without one (or under ``orochi.sample``), :class:`SortedScan` orders the
batches of an ordinary scan, every row kept (with a limit, each batch
contributes only its own best ``n``).  The order is Postgres's: NULLs first
or last as asked, NaN above every other float, ties on every key in no
particular order (as in Postgres).
"""

from __future__ import annotations

import heapq
from typing import Iterable, Iterator

import numpy as np

from orochi_fdw.bridge.api import SortKey
from orochi_fdw.bridge.batch import Batch, Column, WireKind
from orochi_fdw.query.predicates import ALWAYS_TRUE

#: wire kinds whose values order as their numbers do
ORDERABLE = {WireKind.INT16, WireKind.INT32, WireKind.INT64, WireKind.FLOAT32, WireKind.FLOAT64,
             WireKind.DATE, WireKind.TIMESTAMP, WireKind.TIME, WireKind.BOOL,
             WireKind.DECIMAL64}  # scaled numerics; NaN (int64 max) last, as numeric sorts it


def take(col: Column, idx: np.ndarray) -> Column:
    """Rows ``idx`` of a column (any layout)."""
    validity = None if col.validity is None else col.validity[idx]
    if not col.kind.is_variable_width:
        return Column(col.kind, col.values[idx], validity)
    starts = col.offsets[idx]
    lengths = col.offsets[idx + 1] - starts
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # byte positions: for each output byte, its source position
    src = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return Column(col.kind, col.values[src], validity, offsets)


def concat(cols: list[Column]) -> Column:
    """Columns of one kind, one after the other."""
    kind = cols[0].kind
    if len(cols) == 1:
        return cols[0]
    validity = None
    if any(c.validity is not None for c in cols):
        validity = np.concatenate([c.validity if c.validity is not None else np.ones(len(c), np.uint8)
                                   for c in cols])
    if not kind.is_variable_width:
        return Column(kind, np.concatenate([c.values for c in cols]), validity)
    data = np.concatenate([c.values[c.offsets[0]:c.offsets[-1]] for c in cols])
    parts, base = [np.zeros(1, dtype=np.int64)], 0
    for c in cols:
        parts.append(c.offsets[1:] - c.offsets[0] + base)
        base += int(c.offsets[-1] - c.offsets[0])
    return Column(kind, data, validity, np.concatenate(parts))


def text_sort_values(col: Column, reversed_: bool = False) -> np.ndarray:
    """Per row of a text column, a numpy bytes (``S``) value ordering as the
    C collation orders the text (its bytes, a proper prefix first);
    ``reversed_``: ordering the other way round (every byte complemented
    and followed by 0xFF, so that a proper prefix comes after). NULLs get
    some value (the caller classes them apart)."""
    offsets = np.asarray(col.offsets, dtype=np.int64)
    n = len(offsets) - 1
    lengths = offsets[1:] - offsets[:-1]
    width = (int(lengths.max()) if n else 0) + (1 if reversed_ else 0)
    grid = np.zeros((n, max(width, 1)), dtype=np.uint8)
    inside = np.arange(grid.shape[1]) < lengths[:, None]
    data = np.asarray(col.values, dtype=np.uint8)[offsets[0]:offsets[-1]] if n else np.zeros(0, np.uint8)
    if reversed_:
        grid[inside] = 255 - data
        grid[np.arange(n), lengths] = 255
    else:
        grid[inside] = data
    return grid.view(f"S{grid.shape[1]}").reshape(n)


#: every byte complemented (255 - b)
_COMPLEMENT = bytes(range(255, -1, -1))


def text_bound(value: bytes, reversed_: bool) -> bytes:
    """A text bound of the statistics as :func:`text_sort_values` orders it."""
    if not reversed_:
        return bytes(value)
    return bytes(value).translate(_COMPLEMENT) + b"\xff"


def _keys(col: Column, key: SortKey) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a class (NULLs first or last, NaN above all floats) and a
    value, both ascending in the order ``key`` asks for; exact (int64 for
    integers and times, bitwise complement to reverse them). The value of a
    NULL or a NaN is 0 whatever its slot holds, so that rows of one class
    tie on this key and a later key decides between them."""
    values = col.values
    if col.kind.is_variable_width:  # text under the C collation
        vals = text_sort_values(col, key.is_reversed)
        cls = np.full(len(vals), 2, dtype=np.int8)
    elif values.dtype.kind == "f":
        nan = np.isnan(values)
        vals = values.astype(np.float64, copy=False)
        if key.is_reversed:
            vals = -vals
        if nan.any():
            vals = np.where(nan, 0.0, vals)
            cls = np.where(nan, np.int8(1 if key.is_reversed else 3), np.int8(2))
        else:
            cls = np.full(len(values), 2, dtype=np.int8)
    else:
        vals = values.astype(np.int64, copy=False)
        if key.is_reversed:
            vals = ~vals
        cls = np.full(len(values), 2, dtype=np.int8)
    if col.validity is not None:
        nulls = col.validity == 0
        if nulls.any():
            cls = np.where(nulls, np.int8(0 if key.nulls_first else 4), cls)
            vals = np.where(nulls, np.zeros(1, dtype=vals.dtype)[0], vals)
    return cls, vals


def _dictionary_keys(entries: Column, codes: np.ndarray, validity: np.ndarray | None,
                     key: SortKey, entry_vals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_keys` of a text column in dictionary form (its distinct
    values ``entries`` and a code per row): the sort values of the entries
    (``entry_vals`` if known), picked by the codes."""
    if entry_vals is None:
        entry_vals = text_sort_values(entries, key.is_reversed)
    vals = entry_vals[codes]
    cls = np.full(len(codes), 2, dtype=np.int8)
    if validity is not None and not validity.all():
        nulls = ~np.asarray(validity, dtype=bool)
        cls[nulls] = 0 if key.nulls_first else 4
        vals[nulls] = b""
    return cls, vals


def dictionary_take(entries: Column, codes: np.ndarray, validity: np.ndarray | None,
                    idx: np.ndarray) -> Column:
    """Rows ``idx`` of a column in dictionary form, as a plain column (NULLs
    empty)."""
    picked = codes[idx]
    starts = entries.offsets[picked]
    lengths = entries.offsets[picked + 1] - starts
    valid = None
    if validity is not None:
        valid = np.asarray(validity, dtype=np.uint8)[idx]
        lengths = np.where(valid != 0, lengths, 0)
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    src = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return Column(entries.kind, np.asarray(entries.values)[src], valid, offsets)


def _best(col: Column, key: SortKey, limit: int) -> np.ndarray:
    """Positions of the first ``limit`` rows in ``key`` order, unordered:
    whole classes while they fit, then ``np.argpartition`` inside the class
    that straddles the limit (linear time)."""
    cls, vals = _keys(col, key)
    parts = []
    remaining = limit
    for c in np.unique(cls):
        members = np.flatnonzero(cls == c)
        if len(members) <= remaining:
            parts.append(members)
            remaining -= len(members)
        else:
            parts.append(members[np.argpartition(vals[members], remaining - 1)[:remaining]])
            remaining = 0
        if remaining == 0:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _describe(keys: list[SortKey]) -> str:
    return ", ".join(k.attname + (" DESC" if k.is_reversed else "")
                     + (" NULLS FIRST" if k.nulls_first and not k.is_reversed else "")
                     + (" NULLS LAST" if not k.nulls_first and k.is_reversed else "")
                     for k in keys)


class SortedScan:
    """The iterator of a sorted scan: :func:`sorted_batches` over ``scan``,
    with the scan's EXPLAIN ANALYZE lines."""

    def __init__(self, scan: Iterable[Batch], keys: list[SortKey], columns: list[str], limit: int | None):
        self._scan = scan
        self._rows = sorted_batches(scan, keys, columns, limit)
        self._keys = keys
        self._limit = limit

    def __iter__(self) -> "SortedScan":
        return self

    def __next__(self) -> Batch:
        return next(self._rows)

    def explain_analyze(self) -> list[str]:
        more = getattr(self._scan, "explain_analyze", None)
        order = f"Sorted by Orochi: {_describe(self._keys)}"
        if self._limit is not None:
            order += f" (top {self._limit})"
        return [order] + (list(more()) if more is not None else [])


def sorted_batches(batches: Iterable[Batch], keys: list[SortKey], columns: list[str],
                   limit: int | None) -> Iterator[Batch]:
    """The rows of ``batches`` ordered by ``keys`` (the first ``limit`` of
    them), as one batch of ``columns``."""
    names = list(dict.fromkeys(k.attname for k in keys))
    kept: dict[str, list[Column]] = {name: [] for name in columns}
    rowids: list[np.ndarray] = []
    with_rowids = True  # every batch has row ids (a scan without them has none)
    sort_parts: dict[str, list[Column]] = {name: [] for name in names}
    count = 0
    for batch in batches:
        if batch.nrows == 0:
            continue
        idx = np.arange(batch.nrows)
        if limit is not None and batch.nrows > limit:
            if len(keys) == 1:
                idx = _best(batch.columns[keys[0].attname], keys[0], limit)
            else:
                idx = lex_order([_keys(batch.columns[k.attname], k) for k in keys])[:limit]
        for name in names:
            sort_parts[name].append(take(batch.columns[name], idx))
        for name in columns:
            kept[name].append(take(batch.columns[name], idx))
        if batch.rowids is None:
            with_rowids, rowids = False, []
        elif with_rowids:
            rowids.append(np.asarray(batch.rowids)[idx])
        count += len(idx)
        if limit is not None and count > 4 * max(limit, 1024):
            sort_parts, kept, rowids, count = _reduce(sort_parts, kept, rowids, keys, limit)
    if not count:
        return
    sort_parts, kept, rowids, count = _reduce(sort_parts, kept, rowids, keys, limit)
    yield Batch(count, {name: parts[0] for name, parts in kept.items()},
                rowids=rowids[0] if rowids else None)


def _reduce(sort_parts, kept, rowids, keys, limit):
    """The candidates gathered so far, reduced to the best ``limit`` (all
    if None), in order."""
    sort_cols = {name: concat(parts) for name, parts in sort_parts.items()}
    idx = lex_order([_keys(sort_cols[k.attname], k) for k in keys])
    if limit is not None:
        idx = idx[:limit]
    return ({name: [take(col, idx)] for name, col in sort_cols.items()},
            {n: [take(concat(p), idx)] for n, p in kept.items()},
            [np.concatenate(rowids)[idx]] if rowids else [], len(idx))


# ---------------------------------------------------------------------- top-N

def lex_order(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Row positions in the order of several keys (each a (class, value)
    pair of :func:`_keys`), the first key first."""
    seq = []
    for cls, vals in reversed(parts):
        seq += [vals, cls]
    return np.lexsort(seq)


def key_bound(key: SortKey, is_float: bool, rows: int, nulls: int, lo, hi, has_nan: bool,
              is_text: bool = False) -> tuple | None:
    """The best (class, value) of :func:`_keys` any of ``rows`` rows can
    have, from their statistics (``lo``/``hi``: min / max of the values that
    are neither NULL nor NaN; for text, bytes that bound them, exact or
    not); None when the statistics cannot tell."""
    best = []
    zero = b"" if is_text else 0  # the value of a NULL's (or a NaN's) keys, as :func:`_keys` gives it
    if nulls > 0:
        best.append((0 if key.nulls_first else 4, zero))
    if has_nan:
        best.append((1 if key.is_reversed else 3, zero))
    if rows > nulls and not (lo is None and hi is None and has_nan):  # values other than NaN
        v = hi if key.is_reversed else lo
        if v is None:
            return None
        best.append(value_bound(key, is_float, is_text, v))
    return min(best) if best else None


def value_bound(key: SortKey, is_float: bool, is_text: bool, v) -> tuple:
    """The (class, value) of :func:`_keys` of a number (or text) ``v``."""
    if is_text:
        return 2, text_bound(v, key.is_reversed)
    if is_float:
        return 2, -float(v) if key.is_reversed else float(v)
    return 2, ~int(v) if key.is_reversed else int(v)


def _bounds_order(bounds: list) -> tuple:
    """A sort key of the bounds of a stripe or chunk group: unknown bounds
    first, as they may hold anything (a bound's class is 0 to 4)."""
    return tuple(bounds) if None not in bounds else tuple((-1,) if b is None else b for b in bounds)


def _column_bounds(meta, ci: int, key: SortKey, is_float: bool, is_text: bool) -> list[tuple | None]:
    """The bound (:func:`key_bound`) of sort key ``key`` over each chunk group
    of a stripe (``meta``: its footer) by the statistics of column ``ci``."""
    reversed_ = key.is_reversed
    # the common case of key_bound (numbers only, the least), as value_bound makes it
    if is_text:
        conv = lambda v: text_bound(v, reversed_)  # noqa: E731
    elif is_float:
        conv = (lambda v: -float(v)) if reversed_ else float
    else:
        conv = (lambda v: ~int(v)) if reversed_ else int
    out: list[tuple | None] = []
    for chunks in meta.chunks:
        st = chunks[ci].stats
        if st is None:
            out.append(None)
            continue
        v = st.max if reversed_ else st.min
        if v is not None and not st.null_count and not st.has_nan and st.row_count:
            out.append((2, conv(v)))
        else:
            out.append(key_bound(key, is_float, st.row_count, st.null_count, st.min, st.max, st.has_nan,
                                 is_text=is_text))
    return out


def cannot_improve(bounds: list[tuple | None], threshold: list[tuple]) -> bool:
    """Whether rows whose keys are each at least ``bounds`` (per key, None:
    unknown) can be left out when the candidates are full up to
    ``threshold`` (the keys of the last one): every such row sorts after the
    threshold or ties with it on every key (and ties may come out in any
    order, as in Postgres)."""
    for b, t in zip(bounds, threshold):
        if b is None:
            return False
        if b != t:
            return b > t
    return True


class _Threshold:
    """The keys of the ``limit``-th candidate, those after the first worked
    out (``fill()``) when first asked for: rows rarely tie with it on the
    first key."""

    __slots__ = ("keys", "fill", "source")

    def __init__(self, keys: list, fill, source: int):
        self.keys = keys
        self.fill = fill
        self.source = source

    def __getitem__(self, j: int) -> tuple:
        if self.keys[j] is None:
            self.keys[1:] = self.fill()
            self.fill = None
        return self.keys[j]

    def __iter__(self):
        return (self[j] for j in range(len(self.keys)))


class _Candidates:
    """The best rows seen so far: their keys, their source (an index into
    the scan's list of chunk groups and delta batches) and their position in
    it, cut back to ``limit`` from time to time; ``threshold`` is the keys of
    the ``limit``-th once that many were seen.

    The keys after the first of a source's rows may be left to work out
    (:meth:`add` with ``later``): they are, for the rows whose first key ties
    with another candidate's where the order needs it, and for the
    threshold when it is asked for them."""

    def __init__(self, nkeys: int, limit: int):
        self.limit = limit
        self.nkeys = nkeys
        # (keys, sources, positions, pending: None or, per row, whether its
        # keys after the first are still to work out)
        self.parts: list[tuple[list, np.ndarray, np.ndarray, np.ndarray | None]] = []
        self.count = 0
        self.threshold: list[tuple] | _Threshold | None = None
        self._later: dict[int, object] = {}  # source -> its rows' keys after the first, given their positions

    def add(self, keys: list[tuple[np.ndarray, np.ndarray]], source: int, positions: np.ndarray,
            later=None) -> None:
        """Rows of one source; ``later``: None if ``keys`` are whole, else
        ``keys`` after the first are placeholders (class 0, value 0) and
        ``later(positions)`` gives them."""
        pending = None
        if later is not None:
            pending = np.ones(len(positions), dtype=bool)
            self._later[source] = later
        self.parts.append((keys, np.full(len(positions), source, dtype=np.int32), positions, pending))
        self.count += len(positions)
        # a small limit: cut back at once (cheap), so the threshold is always
        # the best known; a large one: once the excess is as large
        if self.count >= self.limit and (self.threshold is None or self.limit <= 256
                                         or self.count > 2 * self.limit):
            self.reduce()

    def reduce(self) -> None:
        """Keep the best ``limit``, in order."""
        if not self.parts:
            return
        if len(self.parts) == 1:
            keys, sources, positions, pending = self.parts[0]
        else:
            keys = [(np.concatenate([p[0][j][0] for p in self.parts]),
                     np.concatenate([p[0][j][1] for p in self.parts])) for j in range(self.nkeys)]
            sources = np.concatenate([p[1] for p in self.parts])
            positions = np.concatenate([p[2] for p in self.parts])
            pending = None
            if any(p[3] is not None for p in self.parts):
                pending = np.concatenate([np.zeros(len(p[2]), dtype=bool) if p[3] is None else p[3]
                                          for p in self.parts])
        if len(sources) > 4 * self.limit:
            # many rows (a first chunk group): the ones not after the
            # limit-th on the first key, found in linear time, then sorted
            cls, vals = keys[0]
            if vals.dtype.kind in "fiu" and cls.min() == cls.max():
                kth = np.partition(vals, self.limit - 1)[self.limit - 1]
                pick = np.flatnonzero(vals <= kth)
                keys = [(c[pick], v[pick]) for c, v in keys]
                sources, positions = sources[pick], positions[pick]
                pending = None if pending is None else pending[pick]
        if pending is not None and pending.any():
            self._fill_ties(keys, sources, positions, pending)
        order = lex_order(keys)[:self.limit]
        keys = [(c[order], v[order]) for c, v in keys]
        sources, positions = sources[order], positions[order]
        if pending is not None:
            pending = pending[order]
            if not pending.any():
                pending = None
        self.parts = [(keys, sources, positions, pending)]
        self.count = len(order)
        if self._later:
            waiting = set() if pending is None else set(np.unique(sources[pending]).tolist())
            self._later = {s: f for s, f in self._later.items() if s in waiting}
        if self.count >= self.limit:
            last = self.count - 1
            if pending is not None and pending[last]:
                fill = self._later[int(sources[last])]
                at = positions[last:last + 1]
                self.threshold = _Threshold(
                    [(int(keys[0][0][last]), keys[0][1][last].item())] + [None] * (self.nkeys - 1),
                    lambda: [(int(c[0]), v[0].item()) for c, v in fill(at)], int(sources[last]))
            else:
                self.threshold = [(int(c[last]), v[last].item()) for c, v in keys]  # bytes for text

    def _fill_ties(self, keys: list, sources: np.ndarray, positions: np.ndarray, pending: np.ndarray) -> None:
        """Work out the keys after the first of the pending rows whose first
        key ties with another row's, among the rows not after the
        ``limit``-th on the first key (the others' later keys cannot change
        which rows are kept, nor their order)."""
        c0, v0 = keys[0]
        by_first = np.lexsort([v0, c0])
        top = by_first[min(self.limit, len(by_first)) - 1]
        inside = by_first[:np.count_nonzero((c0 < c0[top]) | ((c0 == c0[top]) & (v0 <= v0[top])))]
        cs, vs = c0[inside], v0[inside]
        same = (cs[1:] == cs[:-1]) & (vs[1:] == vs[:-1])
        if not same.any():
            return
        tied = np.zeros(len(inside), dtype=bool)
        tied[1:] |= same
        tied[:-1] |= same
        rows = inside[tied]
        self._fill(keys, sources, positions, pending, rows[pending[rows]])

    def _fill(self, keys: list, sources: np.ndarray, positions: np.ndarray, pending: np.ndarray,
              rows: np.ndarray) -> None:
        """The keys after the first of ``rows`` (pending ones) worked out."""
        for s in np.unique(sources[rows]).tolist():
            mine = rows[sources[rows] == s]
            for j, (c, v) in enumerate(self._later[s](positions[mine]), start=1):
                keys[j][0][mine] = c
                keys[j][1][mine] = v
            pending[mine] = False

    def pending_sources(self) -> list[int]:
        """The sources whose rows have keys left to work out."""
        return list(self._later)

    def settle(self, done: set[int]) -> None:
        """Work out the keys after the first of the pending rows of sources
        ``done`` (and of the threshold, if one of them), which are about to
        be closed."""
        done = done & self._later.keys()
        if not done:
            return
        for keys, sources, positions, pending in self.parts:
            if pending is not None:
                self._fill(keys, sources, positions, pending,
                           np.flatnonzero(pending & np.isin(sources, list(done))))
        thr = self.threshold
        if isinstance(thr, _Threshold) and thr.fill is not None and thr.source in done:
            thr[1]  # noqa: B018 - worked out now
        for s in done:
            del self._later[s]


#: the filter answers a top-N keeps per distinct text value, at most
VALUE_ANSWERS = 4096


class TopNScan:
    """``ORDER BY`` plain columns ``LIMIT n`` over a columnar scan, reading
    as little as it can.

    The delta store's rows come first; then the stripes, the most promising
    first by their catalog statistics, and their chunk groups likewise. Once
    ``n`` candidates are known, the keys of the ``n``-th are a threshold: a
    stripe or chunk group whose statistics show that none of its rows can
    sort before it is skipped without reading anything, and so is every one
    after it in that order (the scan stops there). In a group that is
    read, the first sort column is decoded first and only the rows not
    after the threshold in it go on to the filter and the other sort
    columns; the other columns the query wants are read at the end, for the
    ``n`` winners only. Ties on every key come out in no particular order
    (as in Postgres); NULLs first or last as asked, NaN above every number.

    Args:
        scan: the columnar scan (its stripes pruned by the quals already;
            its ``needed`` columns are not read by it).
        keys: the sort keys (columns whose values order as numbers).
        columns: the columns to return.
        limit: the number of rows wanted.
        expr: the exact quals, applied to every candidate.
        filter_columns: the columns ``expr`` reads.
        kinds: each column's wire kind for its current type.
        delta: the delta store's rows (with every column of ``columns``,
            ``filter_columns`` and the keys).
    """

    def __init__(self, scan, keys: list[SortKey], columns: list[str], limit: int, expr, filter_columns,
                 kinds: dict[str, WireKind], delta=None):
        self.scan = scan
        self.keys = keys
        self.columns = columns
        self.limit = limit
        self.expr = expr
        self.filter_columns = sorted(filter_columns)
        self.kinds = kinds
        self.delta = delta
        self.removed = 0
        self._floats = [kinds[k.attname] in (WireKind.FLOAT32, WireKind.FLOAT64) for k in keys]
        self._texts = [kinds[k.attname].is_variable_width for k in keys]
        self._stages: dict[frozenset, list] = {}
        self._entry_cache: dict[tuple, np.ndarray] = {}
        #: the columns of fixed width (never dictionary-coded; one not in ``kinds`` is text)
        self._fixed_columns = {n for n, k in kinds.items() if not k.is_variable_width}
        self._filter_cache: dict[tuple, tuple] = {}
        #: id(entries) -> (entries, expression, its _filter_cache value)
        self._filter_known: dict[int, tuple] = {}
        #: id(expression) -> (expression, {a text value: whether it passes}, whether NULL passes)
        self._value_answers: dict[int, tuple] = {}
        self._rows = self._run()

    def __iter__(self) -> "TopNScan":
        return self

    def __next__(self) -> Batch:
        return next(self._rows)

    def explain_analyze(self) -> list[str]:
        lines = [f"Sorted by Orochi: {_describe(self.keys)} (top {self.limit})"] + list(self.scan.explain_analyze())
        from orochi_fdw.query.predicates import ALWAYS_TRUE

        if self.expr is not ALWAYS_TRUE:
            lines.append(f"Rows Removed by Orochi Filter: {self.removed}")
        return lines

    # ------------------------------------------------------------------

    def _normalized(self, name: str, col: Column) -> Column:
        """A column older stripes deliver as text (its type changed since to
        a numeric one) in the layout of its current type."""
        kind = self.kinds.get(name)
        if col.kind.is_variable_width and kind in ORDERABLE:
            from orochi_fdw.columnar.filter import _as_kind

            return _as_kind(col, kind)
        return col

    def _bounds(self, stats_of) -> list[tuple | None]:
        out = []
        for key, is_float, is_text in zip(self.keys, self._floats, self._texts):
            st = stats_of(key.attname)
            out.append(None if st is None else key_bound(key, is_float, *st, is_text=is_text))
        return out

    def _stripe_bounds(self, stripe) -> list[tuple | None]:
        from orochi_fdw.columnar.types import storage_kind

        def stats(name):
            column = self.scan.table_columns[name]
            rec = stripe.columns.get(column.attnum)
            if rec is None or rec.kind != storage_kind(column):
                return None
            return stripe.row_count, rec.null_count, rec.min_value, rec.max_value, rec.has_nan
        return self._bounds(stats)

    def _ranked(self, reader, present: dict, groups: list) -> list:
        """The chunk groups ``groups`` of one stripe (as :meth:`_groups_bounds`
        takes them), best bounds first, as (order, position, footer record,
        bounds); worked out once per footer and sort (a new list each time)."""
        from orochi_fdw.columnar.types import storage_kind

        meta = reader.metadata
        where = tuple(None if (found := present.get(k.attname)) is None
                      or found[1] != storage_kind(self.scan.table_columns[k.attname]) else found[0]
                      for k in self.keys)
        shape = tuple((w, k.is_reversed, k.nulls_first, f, t)
                      for w, k, f, t in zip(where, self.keys, self._floats, self._texts))
        return list(meta.derived(
            ("topn ranked", shape, tuple(g.index for g in groups)),
            lambda: sorted((_bounds_order(bounds), i, g, bounds) for i, (g, bounds)
                           in enumerate(zip(groups, self._groups_bounds(reader, present, groups))))))

    def _groups_bounds(self, reader, present: dict, groups: list) -> list[list]:
        """Per chunk group of one stripe (open in ``reader``; ``groups``: their
        footer records, ``present``: where the stripe holds each column), the
        best keys its rows can have by the footer's statistics
        (:func:`key_bound`; None for a key the stripe does not hold in its
        current type)."""
        if not groups:
            return []
        from orochi_fdw.columnar.types import storage_kind

        meta = reader.metadata
        columns = []  # per key, the bound of every group of the stripe
        for key, is_float, is_text in zip(self.keys, self._floats, self._texts):
            found = present.get(key.attname)
            if found is None or found[1] != storage_kind(self.scan.table_columns[key.attname]):
                columns.append(None)
                continue
            ci = meta.column_index(found[0])
            # worked out once per footer (footers are cached across scans)
            columns.append(meta.derived(("topn bounds", ci, key.is_reversed, key.nulls_first, is_float, is_text),
                                        lambda: _column_bounds(meta, ci, key, is_float, is_text)))
        return [[None if col is None else col[g.index] for col in columns] for g in groups]

    def _dictionary(self, group, name: str):
        """A chunk group's text column ``name`` in dictionary form, or None
        (not a chunk group, not DICTIONARY-coded, or a changed type)."""
        if group is None or name in self._fixed_columns:
            return None
        return group.dictionary(name)

    def _filter_stages(self, coded: set[str]) -> list[tuple]:
        """The filter as (expression, its columns) to apply one after the
        other: the conjuncts that read only ``coded`` columns, then the
        rest."""
        stages = self._stages.get(frozenset(coded))
        if stages is None:
            from orochi_fdw.query.predicates import ALWAYS_TRUE, And, referenced_columns

            children = list(self.expr.children) if isinstance(self.expr, And) else [self.expr]
            cheap = [c for c in children if coded and referenced_columns(c) <= coded]
            rest = [c for c in children if not (coded and referenced_columns(c) <= coded)]
            stages = [(e, sorted(referenced_columns(e))) for e in (And(*cheap), And(*rest))
                      if e is not ALWAYS_TRUE]
            self._stages[frozenset(coded)] = stages
        return stages

    def _entry_states(self, entries: Column, j: int, threshold_key: tuple, single: bool) -> np.ndarray:
        """Per distinct value of a dictionary-coded text key ``j``: 2 if it
        sorts strictly before ``threshold_key``, 1 if it ties with it (0
        when the limit's ties cannot improve: ``single``), else 0; kept per
        dictionary content, since a stripe's chunk groups often share one."""
        ck = (j, single, threshold_key, entries.offsets.tobytes(), np.asarray(entries.values).tobytes())
        states = self._entry_cache.get(ck)
        if states is None:
            tc, tv = threshold_key
            vals = text_sort_values(entries, self.keys[j].is_reversed)
            states = np.where((2 < tc) | ((2 == tc) & (vals < tv)), 2,
                              np.where((2 == tc) & (vals == tv) & (not single), 1, 0)).astype(np.uint8)
            if len(self._entry_cache) > 256:
                self._entry_cache.clear()
            self._entry_cache[ck] = states
        return states

    def _against(self, group, column, j: int, idx: np.ndarray | None, threshold_key: tuple,
                 single: bool = False) -> np.ndarray:
        """Where the rows ``idx`` (None: all) of one source stand against the
        threshold's key ``j``: uint8 2 (strictly before), 1 (tie; never with
        ``single``, a tie on the only key not improving), 0 (after). Compares
        the stored values (dictionary codes, numbers) with the threshold
        rather than building the rows' sort keys."""
        key = self.keys[j]
        tc, tv = threshold_key
        null_state = None
        d = self._dictionary(group, key.attname)
        if d is not None:
            entries, codes, validity = d
            states = self._entry_states(entries, j, threshold_key, single)
            out = states[codes if idx is None else codes[idx]]
            if validity is not None:
                valid = validity if idx is None else validity[idx]
                null_state = valid
        else:
            col = self._normalized(key.attname, column(key.attname))
            values = col.values
            kind = getattr(values, "dtype", np.dtype("O")).kind
            if tc == 2 and not col.kind.is_variable_width and kind in "fiu":
                v = values if idx is None else values[idx]
                if kind == "f":
                    t = np.float64(-tv if key.is_reversed else tv)
                    # NaN: above every number (after ascending, before descending)
                    if key.is_reversed:
                        lt = (v > t) | np.isnan(v)
                    else:
                        lt = v < t
                else:
                    t = np.int64(~tv if key.is_reversed else tv)
                    lt = (v > t) if key.is_reversed else (v < t)
                out = lt.view(np.uint8) * np.uint8(2)
                if not single:
                    out |= (v == t).view(np.uint8)
            else:
                part = col if idx is None else take(col, idx)
                cls, vals = _keys(part, key)
                out = np.where((cls < tc) | ((cls == tc) & (vals < tv)), 2,
                               np.where((cls == tc) & (vals == tv) & (not single), 1, 0)).astype(np.uint8)
            if col.validity is not None:
                null_state = col.validity if idx is None else col.validity[idx]
        if null_state is not None and not np.all(null_state):
            # a NULL's slot holds anything: its class decides
            nc = 0 if key.nulls_first else 4
            state = 2 if nc < tc else (1 if nc == tc and not single else 0)
            out = np.where(np.asarray(null_state, dtype=bool), out, np.uint8(state))
        return out

    def _near(self, group, column, threshold_key: tuple, single: bool) -> tuple[np.ndarray, bool | None]:
        """Bool mask of the rows of one source not after the threshold on the
        first key (:meth:`_against` not 0), in as few passes over the stored
        values as it takes; and whether those rows all tie with it (True),
        none does (False), or it depends (None)."""
        key = self.keys[0]
        tc, tv = threshold_key
        d = self._dictionary(group, key.attname)
        ties = False if single else None
        if d is not None:
            entries, codes, validity = d
            states = self._entry_states(entries, 0, threshold_key, single)
            near = (states != 0).take(codes)
            if ties is None and validity is None:
                ties = True if not (states == 2).any() else (False if not (states == 1).any() else None)
        else:
            col = self._normalized(key.attname, column(key.attname))
            values = col.values
            kind = getattr(values, "dtype", np.dtype("O")).kind
            if tc != 2 or col.kind.is_variable_width or kind not in "fiu":
                return self._against(group, column, 0, None, threshold_key, single) != 0, ties
            if kind == "f":
                t = np.float64(-tv if key.is_reversed else tv)
                if key.is_reversed:  # NaN sorts before every number
                    near = ((values > t) if single else (values >= t)) | np.isnan(values)
                else:
                    near = (values < t) if single else (values <= t)
            else:
                t = np.int64(~tv if key.is_reversed else tv)
                if key.is_reversed:
                    near = (values > t) if single else (values >= t)
                else:
                    near = (values < t) if single else (values <= t)
            validity = col.validity
        if validity is not None and not np.all(validity):
            nc = 0 if key.nulls_first else 4
            if nc < tc or (nc == tc and not single):
                near |= ~np.asarray(validity, dtype=bool)
            else:
                near &= np.asarray(validity, dtype=bool)
        return near, ties

    def _key_values(self, group, column, j: int, idx: np.ndarray, whole: bool) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_keys` of sort key ``j`` for the rows ``idx`` of one source
        (``whole``: every row)."""
        key = self.keys[j]
        d = self._dictionary(group, key.attname)
        if d is not None:
            entries, codes, validity = d
            return _dictionary_keys(entries, codes[idx], None if validity is None else validity[idx], key)
        col = self._normalized(key.attname, column(key.attname))
        return _keys(col if whole else take(col, idx), key)

    def _consider(self, cand: _Candidates, source: int, nrows: int, column, live: np.ndarray | None,
                  group=None) -> bool:
        """Offer the rows of one source (``column(name)``: a column of all
        its rows; ``group``: the :class:`~orochi_fdw.columnar.scan.ChunkGroup`
        it is, if one) to the candidates: the first sort key of every row
        against the threshold first (:meth:`_against`), then, for the rows
        not after it, the filter (dictionary-coded text columns on their
        codes), then the later keys for the rows tying on the first; the sort
        keys are built for the rows kept only (those before the threshold).
        Whether any row was."""
        single = len(self.keys) == 1
        threshold = cand.threshold
        tie = None  # per row of idx: whether it ties with the threshold on the first key
        if threshold is None:
            idx = np.arange(nrows) if live is None else np.flatnonzero(live)
        else:
            near, ties = self._near(group, column, threshold[0], single)
            if live is not None:
                near &= np.asarray(live, dtype=bool)
            idx = np.flatnonzero(near)
        if len(idx) == 0:
            return False
        whole = len(idx) == nrows

        if self.expr is not ALWAYS_TRUE:
            sel = self._filter(group, column, idx, whole, nrows)
            if sel is not None:
                if len(sel) == 0:
                    return False
                idx = idx[sel]
                whole = len(idx) == nrows
        if threshold is not None:
            if ties:
                tie = np.ones(len(idx), dtype=bool)
            elif ties is None:
                tie = self._against(group, column, 0, idx, threshold[0]) == 1
        if tie is not None and tie.any():
            # rows tying on the first key: the later keys decide
            keep = ~tie
            pending = np.flatnonzero(tie)
            for j in range(1, len(self.keys)):
                st = self._against(group, column, j, idx[pending], threshold[j])
                keep[pending[st == 2]] = True
                pending = pending[st == 1]
                if len(pending) == 0:
                    break
            # rows still pending tie with the threshold on every key: left out
            if not keep.all():
                idx = idx[keep]
                if len(idx) == 0:
                    return False
                whole = False
        if len(self.keys) > 1 and group is not None and self.limit <= self.HOLD_LIMIT \
                and not any(self._texts[1:]):
            # the keys after the first only when a tie on the first needs them
            # (the group stays open while it holds candidates)
            n = len(idx)
            keys = [self._key_values(group, column, 0, idx, whole)] + [
                (np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.float64 if is_float else np.int64))
                for is_float in self._floats[1:]]
            cand.add(keys, source, idx, lambda rows, group=group, column=column: [
                self._key_values(group, column, j, rows, False) for j in range(1, len(self.keys))])
            return True
        keys = [self._key_values(group, column, j, idx, whole) for j in range(len(self.keys))]
        cand.add(keys, source, idx)
        return True

    def _filter(self, group, column, idx: np.ndarray, whole: bool, nrows: int) -> np.ndarray | None:
        """The positions in ``idx`` of the rows that pass the filter (None:
        all of them): the conjuncts on dictionary-coded columns first, on
        their codes; the other columns are decoded only if a row passes
        them."""
        from orochi_fdw.query.predicates import DictionaryColumn, evaluate, selection

        def filter_column(name: str, idx: np.ndarray, whole: bool):
            d = self._dictionary(group, name)
            if d is not None:
                col = DictionaryColumn(*d)
                return col if whole else col.take(idx)
            col = self._normalized(name, column(name))
            return col if whole else take(col, idx)

        coded_names = {n for n in self.filter_columns if self._dictionary(group, n) is not None}
        before = len(idx)
        picked = None  # positions in the original idx
        for expr, names in self._filter_stages(coded_names):
            if len(names) == 1 and names[0] in coded_names:
                sel = np.flatnonzero(self._coded_filter(expr, names[0], self._dictionary(group, names[0]), idx))
            else:
                sel = selection(evaluate(expr, {n: filter_column(n, idx, whole) for n in names}, len(idx)))
            if len(sel) == 0:
                self.removed += before
                return sel
            if len(sel) < len(idx):
                idx = idx[sel]
                whole = len(idx) == nrows
                picked = sel if picked is None else picked[sel]
        self.removed += before - len(idx)
        return picked

    def _coded_filter(self, expr, name: str, coded: tuple, idx: np.ndarray) -> np.ndarray:
        """Bool mask of the rows ``idx`` that pass ``expr`` (a filter on
        dictionary-coded column ``name`` only): the filter's result per
        distinct value (and for NULL) worked out once per dictionary content,
        then picked by the rows' codes."""
        from orochi_fdw.query.predicates import evaluate, selection

        entries, codes, validity = coded
        known = self._filter_known.get(id(entries))
        hit = known is not None and known[0] is entries and known[1] is expr
        if hit:
            found = known[2]  # the scan hands out one object per small dictionary
        else:
            ck = (id(expr), entries.offsets.tobytes(), np.asarray(entries.values).tobytes())
            found = self._filter_cache.get(ck)
        if found is None:
            n = len(entries.offsets) - 1
            answers = self._value_answers.get(id(expr))
            if answers is None or answers[0] is not expr:
                null = Column(entries.kind, np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=bool),
                              np.zeros(2, dtype=np.int64))
                answers = self._value_answers[id(expr)] = (
                    expr, {}, len(selection(evaluate(expr, {name: null}, 1))) == 1)
            by_value = answers[1]
            if n <= 64:
                # a few distinct values (in another order, or some new): each
                # one's answer is kept, so that only new values are evaluated
                offs = entries.offsets.tolist()
                data = np.asarray(entries.values).tobytes()
                values = [data[offs[i]:offs[i + 1]] for i in range(n)]
                new = [v for v in dict.fromkeys(values) if v not in by_value]
                if len(by_value) + len(new) > VALUE_ANSWERS:
                    by_value.clear()  # (many distinct values over the groups: start again)
                    new = list(dict.fromkeys(values))
                if new:
                    new_offsets = np.zeros(len(new) + 1, dtype=np.int64)
                    np.cumsum([len(v) for v in new], out=new_offsets[1:])
                    col = Column(entries.kind, np.frombuffer(b"".join(new), dtype=np.uint8), None, new_offsets)
                    mask = evaluate(expr, {name: col}, len(new))
                    by_value.update(zip(new, mask.astype(bool).tolist()))
                passing = np.array([by_value[v] for v in values], dtype=bool)
            else:
                passing = np.zeros(n, dtype=bool)
                passing[selection(evaluate(expr, {name: entries}, n))] = True
            found = (passing, answers[2])
            if len(self._filter_cache) > 256:
                self._filter_cache.clear()
            self._filter_cache[ck] = found
        if not hit:
            if len(self._filter_known) > 256:
                self._filter_known.clear()
            self._filter_known[id(entries)] = (entries, expr, found)
        passing, null_passes = found
        out = passing.take(codes[idx])
        if validity is not None:
            valid = np.asarray(validity, dtype=bool)[idx]
            out = (out & valid) | (~valid if null_passes else False)
        return out

    #: a limit up to which the chunk groups holding candidates stay open, their
    #: decoded columns reused for the winners
    HOLD_LIMIT = 64

    def _run(self) -> Iterator[Batch]:
        from orochi_fdw.columnar.scan import ChunkGroup

        scan = self.scan
        counters = scan.counters
        cand = _Candidates(len(self.keys), self.limit)
        sources: list = []  # a DeltaBatch, or (stripe, group index, first row)
        held: dict[int, object] = {}  # source -> its ChunkGroup, while it holds candidates
        if self.delta is not None:
            for batch in self.delta():
                counters.delta_rows += batch.nrows
                if batch.nrows == 0:
                    continue
                sources.append(batch)
                self._consider(cand, len(sources) - 1, batch.nrows, batch.columns.__getitem__, None)

        # one queue, best bounds first, of the stripes not yet opened and the
        # chunk groups of those opened (a group before a stripe of equal
        # bounds): a stripe's groups are no better than the stripe, so the
        # groups of every stripe come in one order
        queue: list[tuple] = []
        seq = 0
        for stripe in scan.stripes:
            queue.append((_bounds_order(self._stripe_bounds(stripe)), 1, seq, stripe, None))
            seq += 1
        heapq.heapify(queue)
        # stripe id -> [reader, its chunk groups as (order, position, footer
        # record, bounds) in order, how many of them went into the queue,
        # where the stripe holds each column, its deleted offsets]: a
        # stripe's next group goes in when the one before it comes out
        readers: dict[int, list] = {}
        try:
            while queue:
                _order, _rank, _seq, stripe, group = queue[0]
                if cand.threshold is not None and cannot_improve(
                        self._stripe_bounds(stripe) if group is None else group[1], cand.threshold):
                    # the queue's order is the bounds' order: nothing after
                    # this one can improve either (the threshold only gets
                    # better)
                    for entry in queue:
                        if entry[4] is None:
                            counters.stripes_skipped_topn += 1
                        else:
                            counters.chunk_groups_skipped_topn += 1
                    for _reader, ranked, queued, *_where in readers.values():
                        counters.chunk_groups_skipped_topn += len(ranked) - queued
                    break
                heapq.heappop(queue)
                if group is None:
                    counters.stripes += 1
                    reader = scan._open(stripe)
                    present, deleted, groups = scan._live_groups(stripe, reader, prune=False)
                    if not groups:
                        reader.close()
                        continue
                    ranked = self._ranked(reader, present, groups)
                    # a group's ChunkGroup is made when it is read (most never are)
                    readers[stripe.stripe_id] = [reader, ranked, 1, present, deleted]
                    heapq.heappush(queue, (ranked[0][0], 0, seq, stripe, ranked[0][2:]))
                    ranked[0] = None  # in the queue now: let it go (and what it decodes) once read
                    seq += 1
                    continue
                info, bounds = group
                reader, _ranked, _queued, present, deleted = readers[stripe.stripe_id]
                group = ChunkGroup(scan, stripe, reader, present, deleted, info)
                if scan.may_match(group):
                    counters.chunk_groups += 1
                    live = group.live()
                    if live is not None:
                        counters.deleted_rows_skipped += group.nrows - int(np.count_nonzero(live))
                    sources.append((stripe, group.index, group.first_row))
                    added = self._consider(cand, len(sources) - 1, group.nrows, group.column, live, group)
                    if added and self.limit <= self.HOLD_LIMIT:
                        held[len(sources) - 1] = group
                        if len(held) > 2 * self.HOLD_LIMIT:
                            self._release(held, cand)
                entry = readers[stripe.stripe_id]
                reader, ranked, queued = entry[:3]
                if queued < len(ranked):
                    heapq.heappush(queue, (ranked[queued][0], 0, seq, stripe, ranked[queued][2:]))
                    ranked[queued] = None
                    seq += 1
                    entry[2] += 1
                else:
                    # the keys its candidates left to work out need it open
                    cand.settle({s for s in cand.pending_sources() if sources[s][0] is stripe})
                    readers.pop(stripe.stripe_id)[0].close()
            cand.reduce()  # before the readers close: it may work out keys left pending
        finally:
            for reader, *_rest in readers.values():
                reader.close()
        if cand.count == 0:
            return
        self._release(held, cand)
        yield self._materialize(cand, sources, held)

    @staticmethod
    def _release(held: dict, cand: _Candidates) -> None:
        """Let go of the chunk groups no candidate comes from any more."""
        cand.reduce()
        keep = set(np.unique(cand.parts[0][1]).tolist()) if cand.parts else set()
        for s in [s for s in held if s not in keep]:
            del held[s]

    def _materialize(self, cand: _Candidates, sources: list, held: dict | None = None) -> Batch:
        """The winners' rows: each needed column read once per chunk group
        that holds a winner (columns the scan decoded already are reused,
        dictionary-coded ones gathered for the winners only)."""
        from orochi_fdw.columnar.scan import ChunkGroup

        held = held or {}
        _keys_, src, pos, _pending = cand.parts[0]
        n = len(src)
        pieces: dict[str, list[Column]] = {name: [] for name in self.columns}
        rowids = np.zeros(n, dtype=np.int64)
        order_parts = []
        by_stripe: dict[int, list[int]] = {}
        for s in np.unique(src):
            source = sources[int(s)]
            if isinstance(source, tuple):
                by_stripe.setdefault(id(source[0]), []).append(int(s))
            else:
                rows = np.flatnonzero(src == s)
                p = pos[rows]
                for name in self.columns:
                    pieces[name].append(take(self._normalized(name, source.columns[name]), p))
                rowids[rows] = np.asarray(source.rowids)[p]
                order_parts.append(rows)
        for group_sources in by_stripe.values():
            stripe = sources[group_sources[0]][0]
            reader = self.scan._open(stripe)
            try:
                present = {}
                for name, column in self.scan.table_columns.items():
                    rec = stripe.columns.get(column.attnum)
                    if rec is not None:
                        present[name] = (rec.column_name, rec.kind)
                meta = reader.metadata
                for s in group_sources:
                    _stripe, index, _first = sources[s]
                    group = ChunkGroup(self.scan, stripe, reader, present, None, meta.chunk_groups[index])
                    old = held.get(s)
                    if old is not None:  # what the scan decoded of it
                        group._cols.update(old._cols)
                        group._dicts.update(old._dicts)
                    rows = np.flatnonzero(src == s)
                    p = pos[rows]
                    for name in self.columns:
                        d = None if name in group._cols else self._dictionary(group, name)
                        if d is not None:
                            pieces[name].append(dictionary_take(*d, p))
                        else:
                            pieces[name].append(take(self._normalized(name, group.column(name)), p))
                    rowids[rows] = group.rowids(p)
                    order_parts.append(rows)
            finally:
                reader.close()
        # pieces are in source order; put the rows back in sort order
        back = np.empty(n, dtype=np.int64)
        back[np.concatenate(order_parts)] = np.arange(n)
        cols = {name: take(concat(parts), back) for name, parts in pieces.items()} if n else {}
        self.scan.counters.rows += n
        return Batch(n, cols, rowids=rowids)
