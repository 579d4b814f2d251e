"""SQL functions behind the sketch types and aggregates (sql/40_sketches.sql).

Aggregates over heap tables call a transition function per row through the
bridge. Their state is a small bytea *token* naming a builder kept in this
backend's Python (a Postgres ``internal`` state is not available to Python,
and copying a growing bytea state on every row would be quadratic). A
builder buffers the canonical values of its group (8 bytes per value for
numbers, dates and times, the value's bytes for text) and folds them into
the sketch every ``_FLUSH_ROWS`` values (HLL) or once at the end (t-digest,
whose bytes must not depend on row order: it is built from the sorted
values, so a group's state costs 8 bytes per non-NULL value). The final
function builds the result and drops the builder. A statement that fails
leaves its builders behind until the backend exits; ``_MAX_PENDING`` bounds
how many live at once.
"""

from __future__ import annotations

import itertools
import os
import struct
from array import array
from typing import Any

import numpy as np

from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.errors import OrochiError
from orochi_fdw.sketches import sampling
from orochi_fdw.sketches.errors import CorruptSketchError
from orochi_fdw.sketches.hashing import canonical, hash_bytes_list, hash_ints
from orochi_fdw.sketches.hll import DEFAULT_PRECISION, Hll, check_precision
from orochi_fdw.sketches.tdigest import (DEFAULT_COMPRESSION, TDigest, check_compression,
                                         check_quantile)

_FLUSH_ROWS = 65536
_MAX_PENDING = 1_000_000
_TOKEN = b"OSK\x01"
_counter = itertools.count(1)
_builders: dict[bytes, Any] = {}


class _HllBuilder:
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

    def add_sketch(self, data: bytes) -> None:
        self.sketch.merge(Hll.from_bytes(_raw(data)))

    def flush(self) -> None:
        if self.ints:
            self.sketch.add_hashes(hash_ints(np.frombuffer(self.ints, dtype=np.int64)))
            self.ints = array("q")
        if self.blobs:
            self.sketch.add_hashes(hash_bytes_list(self.blobs))
            self.blobs = []

    def result(self) -> Hll:
        self.flush()
        return self.sketch


class _TDigestBuilder:
    def __init__(self, compression: int, quantiles: Any = None):
        self.compression = check_compression(compression)
        self.quantiles = quantiles
        self.values = array("d")
        self.digest: TDigest | None = None

    def add(self, value: float) -> None:
        self.values.append(value)

    def add_sketch(self, data: bytes) -> None:
        other = TDigest.from_bytes(_raw(data))
        if self.digest is None:
            self.digest = other
        else:
            self.digest.merge(other)

    def result(self) -> TDigest:
        if self.digest is not None:
            return self.digest
        return TDigest.from_values(np.frombuffer(self.values, dtype=np.float64), self.compression)


def _trans(state: bytes | None, make, add) -> bytes:
    """Fold one row into the builder the state names (a new one when the
    state is still empty) and return the state."""
    if state:
        builder = _builders.get(bytes(state))
        if builder is None:
            raise OrochiError("sketch aggregate state is no longer available")
        add(builder)
        return state
    if len(_builders) >= _MAX_PENDING:
        raise OrochiError("too many sketch aggregate states are open in this backend")
    builder = make()
    token = _TOKEN + struct.pack("<iQ", os.getpid(), next(_counter))
    add(builder)
    _builders[token] = builder
    return token


def _final(state: bytes | None) -> Any:
    if not state:
        return None
    builder = _builders.pop(bytes(state), None)
    if builder is None:
        raise OrochiError("sketch aggregate state is no longer available")
    return builder.result()


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
    builder = _builders.get(bytes(state)) if state else None
    quantiles = builder.quantiles if builder is not None else None
    digest = _final(state)
    if digest is None:
        return None
    if isinstance(quantiles, list):
        return [None if q is None else digest.quantile(q) for q in quantiles]
    return digest.quantile(quantiles)


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
