"""Row ids of columnar tables and the per-stripe delete bitmaps.

Row ids cross the bridge in the tuple's ctid (``rowid_column = "ctid"``), so
they lie in [0, 2^47):

- a stripe row is ``stripe_id << 20 | offset`` (offset: the row's position in
  the stripe, below 2^20 > 1,000,000, the largest stripe); stripe ids must
  stay below 2^26;
- a delta row is ``2^46 + id``, ``id`` the row's ``_rowid`` in the table's
  delta store (from ``orochi.columnar_delta_rowid_seq``).

A stripe's deleted rows are a roaring bitmap of offsets (pyroaring's
portable serialization) in ``orochi.columnar_stripes.delete_bitmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pyroaring import BitMap

from orochi_fdw.errors import OrochiError

STRIPE_OFFSET_BITS = 20
MAX_STRIPE_ID = (1 << 26) - 1
DELTA_ROWID_BASE = 1 << 46
MAX_DELTA_ID = (1 << 46) - 1


class RowId(NamedTuple):
    """What a row id points at: a stripe row (``delta`` False: ``ident`` is the
    stripe id, ``offset`` the row) or a delta row (``ident`` its ``_rowid``)."""

    delta: bool
    ident: int
    offset: int = 0


def stripe_rowids(stripe_id: int, offsets: np.ndarray) -> np.ndarray:
    """Row ids of rows of a stripe at ``offsets`` (int64)."""
    if stripe_id > MAX_STRIPE_ID:
        raise OrochiError(f"stripe id {stripe_id} is beyond the row id range ({MAX_STRIPE_ID})")
    return (np.int64(stripe_id) << np.int64(STRIPE_OFFSET_BITS)) + offsets.astype(np.int64, copy=False)


def delta_rowids(ids: np.ndarray) -> np.ndarray:
    return ids.astype(np.int64, copy=False) + np.int64(DELTA_ROWID_BASE)


def decode(rowid: int) -> RowId:
    rowid = int(rowid)
    if rowid >= DELTA_ROWID_BASE:
        return RowId(True, rowid - DELTA_ROWID_BASE)
    return RowId(False, rowid >> STRIPE_OFFSET_BITS, rowid & ((1 << STRIPE_OFFSET_BITS) - 1))


def load(raw: bytes | memoryview | None) -> BitMap:
    """A stripe's delete bitmap (empty when none is stored)."""
    if raw is None:
        return BitMap()
    return BitMap.deserialize(bytes(raw))


def dump(bitmap: BitMap) -> bytes | None:
    if not bitmap:
        return None
    bitmap.run_optimize()
    return bitmap.serialize()


class DeletedOffsets:
    """A stripe's deleted offsets, sorted, for cutting per chunk group masks."""

    __slots__ = ("offsets",)

    def __init__(self, raw: bytes | memoryview | None):
        if raw is None:
            self.offsets = np.zeros(0, dtype=np.int64)
        else:
            self.offsets = np.frombuffer(load(raw).to_array(), dtype=np.uint32).astype(np.int64)

    def __len__(self) -> int:
        return len(self.offsets)

    def count_in(self, start: int, stop: int) -> int:
        if not len(self.offsets):
            return 0  # no deletions (most stripes): no search
        return int(np.searchsorted(self.offsets, stop) - np.searchsorted(self.offsets, start))

    def live_mask(self, start: int, nrows: int) -> np.ndarray | None:
        """Boolean mask of the live rows among offsets [start, start + nrows),
        or None when none of them is deleted."""
        if not len(self.offsets):
            return None
        lo = int(np.searchsorted(self.offsets, start))
        hi = int(np.searchsorted(self.offsets, start + nrows))
        if lo == hi:
            return None
        mask = np.ones(nrows, dtype=bool)
        mask[self.offsets[lo:hi] - start] = False
        return mask
