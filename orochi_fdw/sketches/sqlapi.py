"""SQL functions behind the sketch types and aggregates (sql/40_sketches.sql).

Aggregates over heap tables get their rows from Postgres one at a time.
Their state is a small *token* naming a builder kept in this backend's
Python (copying a growing bytea state on every row would be quadratic): for
hll_agg, approx_count_distinct, tdigest_agg and approx_percentile an
``internal`` state that is a bytea in the aggregate's memory context (the
bridge hands it to Python as bytes), for the union aggregates a bytea. The
plain transition functions are C (``orochi_sketch_trans``,
pgext/sketch_agg.c): the group's first row comes here and creates the
builder; the values of the common fixed-size types (integers, booleans,
floats, dates, times, timestamps) then stay in the state beside the token,
8 bytes each, and reach the builder in batches (:func:`buffer_add`, and the
final function takes the rest), so Python runs per batch, not per row. Other
types, and values the bridge converts specially (infinite dates), still
come here one row at a time. A builder buffers the canonical values of its group (8 bytes per value for
numbers, dates and times, the value's bytes for text) and folds them into
the sketch every ``_FLUSH_ROWS`` values (HLL) or once at the end (t-digest,
whose bytes must not depend on row order: it is built from the sorted
values, so a group's state costs 8 bytes per non-NULL value). The final
function builds the result and drops the builder.

In parallel plans, a worker's builder is serialized (:func:`serialize`:
the HLL sketch, or the t-digest builder's values) and the leader makes
builders of them (:func:`deserialize`) and folds them together
(:func:`combine`); the result is the serial one, byte for byte.

As window functions the aggregates use their moving-aggregate form
(``MSFUNC``, ``MINVFUNC``, ``MFINALFUNC``): a *window* builder keeps the
values (or sketches) of the frame in the order they came, the inverse
transition takes the oldest out (a frame's rows leave in the order they
entered), and the final function, which may run once per row, computes the
result from the frame without consuming it: the same bytes as the plain
aggregate over the frame's rows. A running frame (rows only added) updates
an HLL sketch incrementally; after a row left, or for a t-digest, the result
is rebuilt from the frame's values.

Every builder is tied to the memory context that holds its aggregate's
state (``spi.agg_state_watch``): when the group, window partition or
statement is over, or failed, Postgres resets that context and the builder
is dropped at the next builder's creation. ``_MAX_PENDING`` bounds how many
live at once.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from array import array
from typing import Any

import numpy as np

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.faults import fault_point
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.errors import OrochiError
from orochi_fdw.kernels import sketches as K
from orochi_fdw.sketches import sampling
from orochi_fdw.sketches.errors import CorruptSketchError
from orochi_fdw.sketches.hashing import (canonical, canonical_float_bits, hash_bytes_list,
                                         hash_values)
from orochi_fdw.sketches.hll import DEFAULT_PRECISION, Hll, check_precision
from orochi_fdw.sketches.tdigest import (DEFAULT_COMPRESSION, TDigest, check_compression,
                                         check_quantile, check_sorted_finite, merge_sorted,
                                         sort_finite)

_FLUSH_ROWS = 65536
_MAX_PENDING = 1_000_000
_TOKEN = b"OSK\x01"
_counter = itertools.count(1)
_builders: dict[bytes, Any] = {}

# A state buffered by orochi_sketch_trans (pgext/sketch_agg.c, struct
# SketchBuf): magic, kind, count, capacity, value type, token, then the values.
_BUF_MAGIC = b"OSB\x01"
_BUF_HEADER = struct.Struct("<4siiiI16s")
_KIND_INT64, _KIND_FLOAT64 = 1, 2
_KIND_MASK = 0xFF  # above: SKETCH_KIND_KEEP, the state keeps every value

# A state serialized for parallel aggregation (sketch_serialize): magic, kind,
# then the HLL sketch's bytes, or a t-digest builder's parameters and values.
_SER_MAGIC = b"OSS\x01"
_SER_HLL, _SER_TDIGEST = 1, 2
# A t-digest state whose values repeat (at most one distinct value in two):
# the distinct values (float64) and how many times each comes (uint32), a
# fraction of the bytes through the tuple queue
_SER_TDIGEST_RUNS = 3
_RUNS_MIN_VALUES = 1024
# Most values a t-digest state ships as values (8 bytes each, under the 1 GB
# limit of a bytea); a larger state ships its digest, and the merged digest is
# then close to, not the same as, the serial one.
_SHIP_VALUES_MAX = 1 << 26
# Room (float64 slots) a run sorted from a C buffer keeps before it for the
# serialized state's header (magic, kind, compression, up to 5 quantiles,
# count: at most 62 bytes)
_SER_ROOM = 8


def _buffered(state: Any) -> tuple[bytes, Any]:
    """(token, buffered values as (kind, bytes) or None) of a state."""
    state = bytes(state)
    if state[:4] != _BUF_MAGIC:
        return state, None
    _, kind, count, _, _, token = _BUF_HEADER.unpack_from(state)
    start = _BUF_HEADER.size
    return token, (kind & _KIND_MASK, state[start:start + 8 * count])


class _HllBuilder:
    #: whether the C transition function should keep every value in the
    #: state (in the aggregate's memory context) instead of flushing batches
    keeps_values = False

    def __init__(self, precision: int):
        self.sketch = Hll(check_precision(precision))
        self.ints = array("q")
        self.blobs: list[bytes] = []

    def add(self, value: Any) -> None:
        c = canonical(value)
        if isinstance(c, int):
            self.ints.append(c)
        else:
            self.blobs.append(c)
        if len(self.ints) + len(self.blobs) >= _FLUSH_ROWS:
            self.flush()

    def add_packed(self, kind: int, data: Any) -> None:
        """Values packed by the C transition: int64 canonical forms, or
        float8 values (canonicalized here as :func:`canonical` does), folded
        into the sketch at once (a batch is _FLUSH_ROWS values or fewer)."""
        if kind == _KIND_FLOAT64:
            values = canonical_float_bits(np.frombuffer(data, dtype=np.float64))
        elif kind == _KIND_INT64:
            values = np.frombuffer(data, dtype=np.int64)
        else:
            raise OrochiError(f"sketch aggregate state has an unknown value kind {kind}")
        self.sketch.add_int64(values)

    def add_sketch(self, data: bytes) -> None:
        self.sketch.merge(Hll.from_bytes(_raw(data)))

    def flush(self) -> None:
        if self.ints:
            self.sketch.add_int64(np.frombuffer(self.ints, dtype=np.int64))
            self.ints = array("q")
        if self.blobs:
            self.sketch.add_hashes(hash_bytes_list(self.blobs))
            self.blobs = []

    def result(self) -> Hll:
        self.flush()
        return self.sketch

    def merge(self, other: "_HllBuilder") -> None:
        """Fold another builder of the same aggregate in (parallel
        aggregation): the sketch of the union of their values, exactly."""
        self.sketch.merge(other.result())

    def serialize(self) -> bytes:
        return _SER_MAGIC + bytes([_SER_HLL]) + self.result().to_bytes()


class _TDigestBuilder:
    """The values of a t-digest aggregate: those this backend was given,
    kept as they came (``pending``: the batches the C transition function
    hands over and the values added one at a time) and sorted once, when
    the state is serialized or finished, and sorted runs (a worker's values,
    sorted there). The digest is built from the runs merged
    (:meth:`TDigest.from_sorted_runs`): the one :meth:`TDigest.from_values`
    builds of all the values."""

    keeps_values = True

    def __init__(self, compression: int, quantiles: Any = None):
        self.compression = check_compression(compression)
        self.quantiles = quantiles
        self.runs: list[np.ndarray] = []
        # sorted runs shipped as their distinct values (strictly increasing)
        # and counts, folded together at the distinct values (:meth:`_fold_counted`)
        self.counted: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending = array("d")  # values as they came, not sorted yet
        self.digest: TDigest | None = None
        self.keeping = False  # whether the C transition function keeps the values (after the first batch)

    def add(self, value: float) -> None:
        self.pending.append(value)

    def add_packed(self, kind: int, data: Any) -> None:
        if kind != _KIND_FLOAT64:
            raise OrochiError(f"sketch aggregate state has an unknown value kind {kind}")
        self.pending.frombytes(data)

    def add_batch(self, kind: int, data: Any) -> bool:
        """A batch of the C transition function (:func:`buffer_add`; ``data``
        lives only for the call). The first is kept as it came, and the
        answer tells the C side to keep the next values in the state; a
        later one is what it kept, handed over when the state is serialized,
        combined or finished (or full): sorted at once with the values
        pending, straight from the C buffer (no copy of it first)."""
        if kind != _KIND_FLOAT64:
            raise OrochiError(f"sketch aggregate state has an unknown value kind {kind}")
        if not self.keeping:
            self.pending.frombytes(data)
            self.keeping = True
        else:
            self._sort_pending(np.frombuffer(data, dtype=np.float64))
        return True

    def add_sketch(self, data: bytes) -> None:
        other = TDigest.from_bytes(_raw(data))
        if self.digest is None:
            self.digest = other
        else:
            self.digest.merge(other)

    def count(self) -> int:
        return (sum(len(r) for r in self.runs) + len(self.pending)
                + sum(int(c.sum(dtype=np.int64)) for _d, c in self.counted))

    def _fold_counted(self) -> None:
        """The counted runs as one sorted run: their distinct values merged,
        each one's counts added up, then expanded once (not each run
        expanded and the whole merged value by value)."""
        if not self.counted:
            return
        if len(self.counted) == 1:
            distinct, total = self.counted[0]
        else:
            merged = merge_sorted([d for d, _c in self.counted])
            first = np.empty(len(merged), dtype=bool)
            first[:1] = True
            np.not_equal(merged[1:], merged[:-1], out=first[1:])
            distinct = merged[first]
            total = np.zeros(len(distinct), dtype=np.int64)
            for d, c in self.counted:
                total[np.searchsorted(distinct, d)] += c  # d strictly increasing: no index twice
        self.runs.append(np.repeat(distinct, total))
        self.counted = []

    def _sort_pending(self, more: np.ndarray | None = None) -> None:
        """The values pending (and ``more``) sorted into a run; with
        ``more`` (values handed over by the C side, most of a state's), in
        an array with room for the serialized state's header before the run
        and its end after (:meth:`serialize` then writes them there, not
        copying the values into new bytes)."""
        if more is None:
            if len(self.pending):
                self.runs.append(sort_finite(np.frombuffer(self.pending, dtype=np.float64)))
                self.pending = array("d")
            return
        pending = np.frombuffer(self.pending, dtype=np.float64)
        n = len(pending) + len(more)
        if not n:
            return
        out = np.empty(_SER_ROOM + n + 1, dtype=np.float64)
        k = K.sort_finite_float64(pending, out[_SER_ROOM:_SER_ROOM + n], np.ascontiguousarray(more))
        self.runs.append(out[_SER_ROOM:_SER_ROOM + k])
        self.pending = array("d")

    def sorted_values(self) -> np.ndarray:
        """Every value kept, sorted (and kept so, as one run)."""
        self._sort_pending()
        self._fold_counted()
        self.runs = [merge_sorted(self.runs)]
        return self.runs[0]

    def result(self) -> TDigest:
        self._sort_pending()
        self._fold_counted()
        values = TDigest.from_sorted_runs(self.runs, self.compression)
        self.runs = []
        if self.digest is not None:
            return self.digest.merge(values) if len(values.means) else self.digest
        return values

    def merge(self, other: "_TDigestBuilder") -> None:
        """Fold another builder of the same aggregate in (parallel
        aggregation): its values join these (the digest is built from the
        sorted values at the end, so it is the serial one); a digest it
        shipped instead of its values is merged."""
        self.runs.extend(other.runs)
        self.counted.extend(other.counted)
        self.pending.extend(other.pending)
        if other.digest is not None:
            self.digest = other.digest if self.digest is None else self.digest.merge(other.digest)
        if self.quantiles is None:
            self.quantiles = other.quantiles

    def serialize(self) -> bytes:
        """Compression, quantiles, the values (up to _SHIP_VALUES_MAX: more
        travel as their digest) and a digest."""
        values = self.sorted_values()  # sorted here, in the worker
        if len(values) > _SHIP_VALUES_MAX:
            digest = TDigest.from_sorted(values, self.compression)
            self.digest = digest if self.digest is None else self.digest.merge(digest)
            values = np.zeros(0, dtype=np.float64)
        digest = b"" if self.digest is None else self.digest.to_bytes()
        q = self.quantiles
        if q is None:
            quant = b"\x00"
        elif isinstance(q, list):
            quant = b"\x02" + struct.pack(f"<I{len(q)}d", len(q),
                                           *[math.nan if x is None else x for x in q])
        else:
            quant = b"\x01" + struct.pack("<d", q)
        tail = struct.pack("<I", len(digest)) + digest
        distinct = _distinct_counts(values)
        if distinct is not None:
            head = b"".join((_SER_MAGIC, bytes([_SER_TDIGEST_RUNS]), struct.pack("<i", self.compression),
                             quant, struct.pack("<Q", len(distinct[0]))))
            return b"".join((head, memoryview(distinct[0]), memoryview(distinct[1]), tail))
        head = b"".join((_SER_MAGIC, bytes([_SER_TDIGEST]), struct.pack("<i", self.compression),
                         quant, struct.pack("<Q", len(values))))
        base = values.base
        if not digest and isinstance(base, np.ndarray) and base.dtype == np.float64 and base.ndim == 1 \
                and base.flags.c_contiguous and len(values):
            # a run sorted with room around it (_sort_pending): the header and
            # the end written there, the bytes handed over as a view
            raw = base.view(np.uint8)
            start = values.ctypes.data - base.ctypes.data - len(head)
            end = start + len(head) + values.nbytes + 4
            if start >= 0 and end <= len(raw):
                raw[start:start + len(head)] = np.frombuffer(head, dtype=np.uint8)
                raw[end - 4:end] = 0  # no digest
                return memoryview(raw[start:end])
        return b"".join((head, memoryview(values), tail))


def _distinct_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Sorted values as their distinct values and how many times each comes
    (uint32), when there is at most one distinct value in two; else None."""
    n = len(values)
    if n < _RUNS_MIN_VALUES:
        return None
    distinct, counts = np.empty(n // 2, dtype=np.float64), np.empty(n // 2, dtype="<u4")
    d = K.distinct_counts_float64(values, distinct, counts)
    if d < 0:
        return None
    return distinct[:d], counts[:d]


def _token(state_id: int) -> bytes:
    return _TOKEN + struct.pack("<iQ", os.getpid(), state_id)


def _drop_released() -> None:
    """Drop the builders whose aggregate's memory context went."""
    if not spi.available():
        return
    for state_id in spi.released_agg_states():
        _builders.pop(_token(state_id), None)


class _Frame:
    """The rows of a window frame in the order they came (rows leave from
    the front): what each row brought (a value, or a sketch), its parameter
    (precision, compression, quantile), and a slot its builder may fill
    (a value's hash)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.params: list[Any] = []
        self.slots: list[Any] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.items) - self.head

    def add(self, item: Any, param: Any = None) -> None:
        self.items.append(item)
        self.params.append(param)
        self.slots.append(None)

    def remove(self, item: Any) -> None:
        """Take out the oldest row (which is ``item``; should a frame ever
        remove another row, the first equal one goes)."""
        if self.head < len(self.items) and self.items[self.head] == item:
            self.items[self.head] = self.params[self.head] = self.slots[self.head] = None
            self.head += 1
        else:
            for i in range(self.head, len(self.items)):
                if self.items[i] == item:
                    del self.items[i], self.params[i], self.slots[i]
                    break
            else:
                raise OrochiError("sketch window state lost track of its frame")
        if self.head > 1024 and self.head * 2 > len(self.items):
            del self.items[:self.head], self.params[:self.head], self.slots[:self.head]
            self.head = 0

    def live(self) -> list[Any]:
        return self.items[self.head:]

    def first_param(self) -> Any:
        return self.params[self.head]


class _HllWindow:
    """hll_agg / approx_count_distinct over a window frame: the frame's
    canonical values with their hashes, and the sketch of them, kept up to
    date while rows only come and rebuilt from the hashes after one left."""

    def __init__(self) -> None:
        self.frame = _Frame()
        self.sketch: Hll | None = None
        self.built = 0          # rows of the frame (from its start) in the sketch
        self.precision = None   # the precision the sketch was built at
        self.hashed = 0         # rows of self.frame.items with their hash in slots
        self.count: int | None = None

    def add(self, value: Any, precision: int) -> None:
        self.frame.add(canonical(value), precision)

    def remove(self, value: Any) -> None:
        before = len(self.frame.items)
        self.frame.remove(canonical(value))
        self.hashed = min(self.hashed, len(self.frame.items)) if len(self.frame.items) == before \
            else self.hashed - (before - len(self.frame.items))
        self.sketch = None

    def _hashes(self, start: int) -> np.ndarray:
        """The hashes of the frame's live rows from ``start`` on (hashing the
        rows new since the last call)."""
        frame = self.frame
        self.hashed = max(self.hashed, frame.head)
        if self.hashed < len(frame.items):
            frame.slots[self.hashed:] = hash_values(frame.items[self.hashed:]).tolist()
            self.hashed = len(frame.items)
        return np.array(frame.slots[frame.head + start:], dtype=np.uint64)

    def result(self) -> Hll | None:
        if not len(self.frame):
            return None
        precision = check_precision(self.frame.first_param())
        if self.sketch is None or precision != self.precision:
            self.sketch, self.built, self.precision = Hll(precision), 0, precision
            self.count = None
        if self.built < len(self.frame):
            if self._add(self._hashes(self.built)):
                self.count = None
            self.built = len(self.frame)
        return self.sketch

    def _add(self, hashes: np.ndarray) -> bool:
        """Fold hashes into the sketch; whether it changed."""
        sketch = self.sketch
        if sketch.registers is None:
            n = len(sketch.hashes)
            sketch.add_hashes(hashes)
            return sketch.registers is not None or len(sketch.hashes) != n
        index = (hashes >> np.uint64(64 - sketch.p)).astype(np.intp)
        before = sketch.registers[index]
        sketch.add_hashes(hashes)
        return bool((sketch.registers[index] != before).any())

    def cardinality(self) -> int:
        sketch = self.result()
        if sketch is None:
            return 0
        if self.count is None:
            self.count = sketch.cardinality()
        return self.count


class _HllUnionWindow:
    """hll_union_agg over a window frame: the frame's sketches, and their
    union (at the lowest precision), kept up to date while rows only come."""

    def __init__(self) -> None:
        self.frame = _Frame()
        self.sketch: Hll | None = None
        self.built = 0

    def add(self, data: bytes) -> None:
        self.frame.add(_raw(data))

    def remove(self, data: bytes) -> None:
        self.frame.remove(_raw(data))
        self.sketch = None

    def result(self) -> Hll | None:
        live = self.frame.live()
        if not live:
            return None
        if self.sketch is None:
            self.sketch, self.built = Hll(Hll.from_bytes(live[0]).p), 0
        for data in live[self.built:]:
            self.sketch.merge(Hll.from_bytes(data))
        self.built = len(live)
        return self.sketch


class _TDigestWindow:
    """tdigest_agg / approx_percentile over a window frame: the frame's
    finite values kept sorted (the digest of a set of values is built from
    them sorted), rebuilt into a digest for each result; the compression (and
    quantile) of the frame's first row are used."""

    def __init__(self) -> None:
        self.frame = _Frame()
        self.sorted = np.zeros(0, dtype=np.float64)
        self.added: list[float] = []
        self.removed: list[float] = []

    def add(self, value: float, param: Any) -> None:
        self.frame.add(canonical(float(value)), param)   # comparable, NaN included
        if math.isfinite(value):
            self.added.append(float(value) + 0.0)         # -0.0 is 0.0, as in TDigest.from_values

    def remove(self, value: float) -> None:
        self.frame.remove(canonical(float(value)))
        if math.isfinite(value):
            self.removed.append(float(value) + 0.0)

    def _values(self) -> np.ndarray:
        if self.added:
            new = np.sort(np.array(self.added, dtype=np.float64))
            self.sorted = np.insert(self.sorted, np.searchsorted(self.sorted, new), new)
            self.added = []
        if self.removed:
            gone = np.sort(np.array(self.removed, dtype=np.float64))
            at = np.searchsorted(self.sorted, gone)
            # equal values removed: take successive positions of the run
            at += np.arange(len(gone)) - np.searchsorted(gone, gone)
            self.sorted = np.delete(self.sorted, at)
            self.removed = []
        return self.sorted

    def result(self) -> tuple[TDigest, Any] | None:
        if not len(self.frame):
            return None
        compression, quantiles = self.frame.first_param()
        return TDigest.from_sorted(self._values(), check_compression(compression)), quantiles


class _TDigestUnionWindow:
    """tdigest_union_agg over a window frame: the frame's digests, merged in
    frame order (as the plain aggregate merges the rows it is given), kept up
    to date while rows only come."""

    def __init__(self) -> None:
        self.frame = _Frame()
        self.digest: TDigest | None = None
        self.built = 0

    def add(self, data: bytes) -> None:
        self.frame.add(_raw(data))

    def remove(self, data: bytes) -> None:
        self.frame.remove(_raw(data))
        self.digest = None

    def result(self) -> TDigest | None:
        live = self.frame.live()
        if not live:
            return None
        if self.digest is None:
            self.digest, self.built = TDigest.from_bytes(live[0]), 1
        for data in live[self.built:]:
            self.digest.merge(TDigest.from_bytes(data))
        self.built = len(live)
        return self.digest


def _trans(state: bytes | None, make, add) -> bytes:
    """Fold one row into the builder the state names (a new one when the
    state is still empty) and return the state."""
    if state:
        builder = _builders.get(_buffered(state)[0])
        if builder is None:
            raise OrochiError("sketch aggregate state is no longer available")
        add(builder)
        return state
    _drop_released()
    if len(_builders) >= _MAX_PENDING:
        raise OrochiError("too many sketch aggregate states are open in this backend")
    builder = make()
    state_id = next(_counter)
    token = _token(state_id)
    add(builder)
    _builders[token] = builder
    if spi.available():
        spi.agg_state_watch(state_id)
    return token


def _window(state: bytes | None) -> Any:
    """The window builder a moving state names."""
    builder = _builders.get(bytes(state)) if state else None
    if builder is None:
        raise OrochiError("sketch aggregate state is no longer available")
    return builder


def _take_builder(state: bytes) -> Any:
    """The state's builder, taken out of the backend's table, with the values
    still buffered in the state added."""
    token, pending = _buffered(state)
    builder = _builders.pop(token, None)
    if builder is None:
        raise OrochiError("sketch aggregate state is no longer available")
    if pending is not None:
        builder.add_packed(*pending)
    return builder


def _final(state: bytes | None) -> Any:
    if not state:
        return None
    return _take_builder(state).result()


def _raw(value: Any) -> bytes:
    """A sketch argument as bytes (a domain value may arrive in its text form)."""
    if isinstance(value, str):
        if value.startswith("\\x"):
            try:
                return bytes.fromhex(value[2:])
            except ValueError:
                pass
        raise CorruptSketchError("invalid sketch value: not a bytea")
    return bytes(value)


def _check_quantiles(qs: Any) -> Any:
    if isinstance(qs, (list, tuple)):
        for q in qs:
            if q is not None:
                check_quantile(q)
        return list(qs)
    return check_quantile(qs)


# ------------------------------------------------------------- transitions


@sql_function("sketch_hll_trans")
def hll_trans(state: bytes, value: Any, precision: int = DEFAULT_PRECISION) -> bytes:
    return _trans(state, lambda: _HllBuilder(precision), lambda b: b.add(value))


@sql_function("sketch_hll_union_trans")
def hll_union_trans(state: bytes, sketch: bytes) -> bytes:
    def make():
        return _HllBuilder(Hll.from_bytes(_raw(sketch)).p)
    return _trans(state, make, lambda b: b.add_sketch(sketch))


@sql_function("sketch_tdigest_trans")
def tdigest_trans(state: bytes, value: float, compression: int = DEFAULT_COMPRESSION) -> bytes:
    return _trans(state, lambda: _TDigestBuilder(compression), lambda b: b.add(value))


@sql_function("sketch_percentile_trans")
def percentile_trans(state: bytes, value: float, q: Any,
                     compression: int = DEFAULT_COMPRESSION) -> bytes:
    """approx_percentile: the quantile(s) of the group's first row are used."""
    return _trans(state, lambda: _TDigestBuilder(compression, _check_quantiles(q)),
                  lambda b: b.add(value))


@sql_function("sketch_tdigest_union_trans")
def tdigest_union_trans(state: bytes, sketch: bytes) -> bytes:
    def make():
        return _TDigestBuilder(TDigest.from_bytes(_raw(sketch)).compression)
    return _trans(state, make, lambda b: b.add_sketch(sketch))


@sql_function("sketch_buffer_add")
def buffer_add(token: bytes, kind: int, data: Any) -> bool:
    """A batch of values buffered by the C transition function (no SQL
    function: pgext/sketch_agg.c calls it); ``data`` lives only for the call.
    True tells the C side to keep the next values in the state (a t-digest
    keeps them all until the end anyway)."""
    fault_point("sketch:flush")
    builder = _builders.get(bytes(token))
    if builder is None:
        raise OrochiError("sketch aggregate state is no longer available")
    if isinstance(builder, _TDigestBuilder):
        return builder.add_batch(kind, data)
    builder.add_packed(kind, data)
    return builder.keeps_values


# ------------------------------------------------- parallel aggregation


def _deserialize_builder(data: bytes) -> Any:
    """The builder a serialized state describes; CorruptSketchError when
    the bytes are not one."""
    data = bytes(data)
    if len(data) < 5 or data[:4] != _SER_MAGIC:
        raise CorruptSketchError("invalid sketch aggregate state: wrong magic")
    kind, pos = data[4], 5
    if kind == _SER_HLL:
        sketch = Hll.from_bytes(data[pos:])
        builder = _HllBuilder(sketch.p)
        builder.sketch = sketch
        return builder
    if kind not in (_SER_TDIGEST, _SER_TDIGEST_RUNS):
        raise CorruptSketchError(f"invalid sketch aggregate state: unknown kind {kind}")
    try:
        (compression,) = struct.unpack_from("<i", data, pos)
        pos += 4
        mode = data[pos]
        pos += 1
        if mode == 0:
            quantiles = None
        elif mode == 1:
            (quantiles,) = struct.unpack_from("<d", data, pos)
            pos += 8
        elif mode == 2:
            (n,) = struct.unpack_from("<I", data, pos)
            quantiles = [None if math.isnan(x) else x
                         for x in struct.unpack_from(f"<{n}d", data, pos + 4)]
            pos += 4 + 8 * n
        else:
            raise CorruptSketchError("invalid sketch aggregate state: bad quantiles")
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        width = 8 if kind == _SER_TDIGEST else 12  # a value, or a distinct value and its count
        if n > (len(data) - pos) // width:
            raise CorruptSketchError("invalid sketch aggregate state: truncated values")
        values = np.frombuffer(data, dtype=np.float64, count=n, offset=pos)
        pos += 8 * n
        if kind == _SER_TDIGEST_RUNS:
            counts = np.frombuffer(data, dtype="<u4", count=n, offset=pos)
            pos += 4 * n
            if int(counts.sum(dtype=np.uint64)) > _SHIP_VALUES_MAX:
                raise CorruptSketchError("invalid sketch aggregate state: too many values")
            counted = len(values) < 2 or bool((values[1:] > values[:-1]).all())
            if not (counted and check_sorted_finite(values)):
                counted = False
                values = sort_finite(np.repeat(values, counts))  # not as shipped: not trusted
            n = len(values)
        (m,) = struct.unpack_from("<I", data, pos)
        pos += 4
    except (struct.error, IndexError):
        raise CorruptSketchError("invalid sketch aggregate state: truncated") from None
    if len(data) != pos + m:
        raise CorruptSketchError("invalid sketch aggregate state: wrong length")
    builder = _TDigestBuilder(compression, quantiles)
    if n:
        # a worker's values, sorted there: taken as one run once checked (a
        # view of the bytes, which it keeps)
        if kind == _SER_TDIGEST_RUNS:
            if counted:  # kept as they came (views of the bytes), expanded when folded
                builder.counted.append((values, counts))
            else:
                builder.runs.append(values)
        else:
            builder.runs.append(values if check_sorted_finite(values) else sort_finite(values))
    if m:
        builder.digest = TDigest.from_bytes(data[pos:])
    return builder


@sql_function("sketch_serialize")
def serialize(state: bytes) -> bytes:
    """A partial aggregate's state as bytes for the leader (consumes the
    builder): the HLL sketch, or the t-digest builder's values."""
    return _take_builder(state).serialize()


@sql_function("sketch_deserialize")
def deserialize(data: bytes, _unused: Any = None) -> bytes:
    """A state serialized by :func:`serialize` as a new builder's token."""
    builder = _deserialize_builder(data)
    return _trans(None, lambda: builder, lambda b: None)


@sql_function("sketch_combine")
def combine(state: bytes, other: bytes) -> bytes:
    """Fold the second state's builder into the first's (and drop it); the
    first state's values still buffered in C stay there."""
    token = _buffered(state)[0]
    other_token, pending = _buffered(other)
    builder = _builders.get(token)
    theirs = _builders.pop(other_token, None)
    if builder is None or theirs is None:
        raise OrochiError("sketch aggregate state is no longer available")
    if type(builder) is not type(theirs):
        raise OrochiError("sketch aggregate states of different kinds cannot be combined")
    if pending is not None:
        theirs.add_packed(*pending)
    builder.merge(theirs)
    return state


# ------------------------------------------------------------------ finals


@sql_function("sketch_hll_final")
def hll_final(state: bytes) -> bytes | None:
    sketch = _final(state)
    return None if sketch is None else sketch.to_bytes()


@sql_function("sketch_hll_count_final")
def hll_count_final(state: bytes) -> int:
    sketch = _final(state)
    return 0 if sketch is None else sketch.cardinality()


@sql_function("sketch_tdigest_final")
def tdigest_final(state: bytes) -> bytes | None:
    digest = _final(state)
    return None if digest is None or not len(digest.means) else digest.to_bytes()


@sql_function("sketch_percentiles_final")
def percentiles_final(state: bytes) -> Any:
    return percentile_final(state)


@sql_function("sketch_percentile_final")
def percentile_final(state: bytes) -> Any:
    builder = _builders.get(_buffered(state)[0]) if state else None
    quantiles = builder.quantiles if builder is not None else None
    digest = _final(state)
    if digest is None:
        return None
    if isinstance(quantiles, list):
        return [None if q is None else digest.quantile(q) for q in quantiles]
    return digest.quantile(quantiles)


# ------------------------------------------------- moving (window) forms


@sql_function("sketch_hll_mtrans")
def hll_mtrans(state: bytes, value: Any, precision: int = DEFAULT_PRECISION) -> bytes:
    return _trans(state, _HllWindow, lambda b: b.add(value, precision))


@sql_function("sketch_hll_minv")
def hll_minv(state: bytes, value: Any, precision: int = DEFAULT_PRECISION) -> bytes:
    _window(state).remove(value)
    return state


@sql_function("sketch_hll_union_mtrans")
def hll_union_mtrans(state: bytes, sketch: bytes) -> bytes:
    return _trans(state, _HllUnionWindow, lambda b: b.add(sketch))


@sql_function("sketch_hll_union_minv")
def hll_union_minv(state: bytes, sketch: bytes) -> bytes:
    _window(state).remove(sketch)
    return state


@sql_function("sketch_tdigest_mtrans")
def tdigest_mtrans(state: bytes, value: float, compression: int = DEFAULT_COMPRESSION) -> bytes:
    return _trans(state, _TDigestWindow, lambda b: b.add(value, (compression, None)))


@sql_function("sketch_tdigest_minv")
def tdigest_minv(state: bytes, value: float, compression: int = DEFAULT_COMPRESSION) -> bytes:
    _window(state).remove(value)
    return state


@sql_function("sketch_percentile_mtrans")
def percentile_mtrans(state: bytes, value: float, q: Any, compression: int = DEFAULT_COMPRESSION) -> bytes:
    return _trans(state, _TDigestWindow, lambda b: b.add(value, (compression, q)))


@sql_function("sketch_percentile_minv")
def percentile_minv(state: bytes, value: float, q: Any, compression: int = DEFAULT_COMPRESSION) -> bytes:
    _window(state).remove(value)
    return state


@sql_function("sketch_tdigest_union_mtrans")
def tdigest_union_mtrans(state: bytes, sketch: bytes) -> bytes:
    return _trans(state, _TDigestUnionWindow, lambda b: b.add(sketch))


@sql_function("sketch_tdigest_union_minv")
def tdigest_union_minv(state: bytes, sketch: bytes) -> bytes:
    _window(state).remove(sketch)
    return state


@sql_function("sketch_hll_mfinal")
def hll_mfinal(state: bytes) -> bytes | None:
    sketch = _window(state).result() if state else None
    return None if sketch is None else sketch.to_bytes()


@sql_function("sketch_hll_count_mfinal")
def hll_count_mfinal(state: bytes) -> int:
    return _window(state).cardinality() if state else 0


@sql_function("sketch_tdigest_mfinal")
def tdigest_mfinal(state: bytes) -> bytes | None:
    builder = _window(state) if state else None
    result = None if builder is None else builder.result()
    digest = result[0] if isinstance(result, tuple) else result
    return None if digest is None or not len(digest.means) else digest.to_bytes()


@sql_function("sketch_percentiles_mfinal")
def percentiles_mfinal(state: bytes) -> Any:
    return percentile_mfinal(state)


@sql_function("sketch_percentile_mfinal")
def percentile_mfinal(state: bytes) -> Any:
    result = _window(state).result() if state else None
    if result is None:
        return None
    digest, quantiles = result
    quantiles = _check_quantiles(quantiles)
    if isinstance(quantiles, list):
        return [None if q is None else digest.quantile(q) for q in quantiles]
    return digest.quantile(quantiles)


@sql_function("sketch_open_states")
def open_states() -> int:
    """How many aggregate states this backend keeps (after dropping those
    whose aggregate is over): a leak check for tests and operators."""
    _drop_released()
    return len(_builders)


# -------------------------------------------------------- scalar functions


@sql_function("sketch_hll_cardinality")
def hll_cardinality(sketch: bytes) -> int:
    return Hll.from_bytes(_raw(sketch)).cardinality()


@sql_function("sketch_hll_union")
def hll_union(a: bytes, b: bytes) -> bytes:
    return Hll.from_bytes(_raw(a)).merge(Hll.from_bytes(_raw(b))).to_bytes()


@sql_function("sketch_tdigest_percentile")
def tdigest_percentile(sketch: bytes, q: Any) -> Any:
    digest = TDigest.from_bytes(_raw(sketch))
    qs = _check_quantiles(q)
    if isinstance(qs, list):
        return [None if x is None else digest.quantile(x) for x in qs]
    return digest.quantile(qs)


@sql_function("sketch_tdigest_count")
def tdigest_count(sketch: bytes) -> float:
    return TDigest.from_bytes(_raw(sketch)).count


@sql_function("sketch_check_hll")
def check_hll(sketch: bytes) -> bool:
    Hll.from_bytes(_raw(sketch))
    return True


@sql_function("sketch_check_tdigest")
def check_tdigest(sketch: bytes) -> bool:
    TDigest.from_bytes(_raw(sketch))
    return True



# ---------------------------------------------------------------- sampling


@sql_function("sample_request")
def sample_request(relid: int, fraction: float, seed: int) -> bool:
    """Make the next unfiltered scan of a columnar table a sample (see
    :mod:`orochi_fdw.sketches.sampling`); returns true."""
    sampling.request_sample(relid, fraction, seed)
    return True


@sql_function("sample_cancel")
def sample_cancel(relid: int) -> bool:
    """Forget a sample request for a columnar table; returns true."""
    sampling.cancel_sample(relid)
    return True


@sql_function("sampled_final")
def sampled_final(kind: str, state: list[float] | None, from_regression: bool) -> list[float] | None:
    """A sampled aggregate's result as an array (estimate, lower, upper,
    standard error, sampled values); see :func:`sampling.final_estimate`."""
    return sampling.final_estimate(kind, state, from_regression)
