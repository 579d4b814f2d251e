"""Mergeable sketches: HyperLogLog distinct counts and t-digest quantiles.

:class:`Hll` and :class:`TDigest` are values that can be built from data,
merged, serialized (versioned formats of docs/sketches.md) and queried.
Their kernels live in :mod:`orochi_fdw.kernels.sketches`; plain Python /
numpy equivalents for tests are in :mod:`orochi_fdw.sketches.reference`.
"""

from orochi_fdw.sketches.errors import CorruptSketchError
from orochi_fdw.sketches.hll import DEFAULT_PRECISION, Hll
from orochi_fdw.sketches.tdigest import DEFAULT_COMPRESSION, TDigest

__all__ = ["CorruptSketchError", "DEFAULT_COMPRESSION", "DEFAULT_PRECISION", "Hll", "TDigest"]
