"""A columnar scan reads a stripe's fixed-width columns a run of chunk
groups at a time (``StripeRuns``), without a server: every batch holds its
own rows even while the scan goes on (a run's buffer is reused only once
nothing views it), the buffers stay few when batches are dropped, and a
damaged chunk is reported when its chunk group is reached, naming the file,
column and chunk group."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from orochi_fdw.bridge.api import ColumnDefinition
from orochi_fdw.catalog.store import ColumnRecord, StripeRecord
from orochi_fdw.columnar import scan as scan_mod
from orochi_fdw.columnar.scan import ColumnarScan
from orochi_fdw.errors import CorruptDataError
from orochi_fdw.storage.stripe_format import RunBuffers, write_stripe

ROWS, GROUP = 6_000, 200

COLUMNS = {
    "id": ColumnDefinition("id", 20, type_name="bigint", attnum=1),
    "x": ColumnDefinition("x", 701, type_name="double precision", attnum=2),
    "d": ColumnDefinition("d", 1082, type_name="date", attnum=3),
}


@pytest.fixture
def stripe(tmp_path):
    path = str(tmp_path / "1.1.stripe")
    ids = np.arange(ROWS, dtype=np.int64) * 3
    x = np.round(np.cos(ids) * 100, 2)
    valid = (np.arange(ROWS) // GROUP % 3 != 0) | (ids % 7 != 1)   # NULLs in one group of three
    d = (np.arange(ROWS) // 450).astype(np.int32)   # runs: coded RLE
    meta = write_stripe(path, {"id": "int64", "x": "float64", "d": "date"},
                        {"id": (ids, None), "x": (np.where(valid, x, 0), valid), "d": (d, None)},
                        chunk_group_rows=GROUP)
    cols = {1: ColumnRecord(1, "id", "int64", "bigint", 0),
            2: ColumnRecord(2, "x", "float64", "double precision", int(np.count_nonzero(~valid))),
            3: ColumnRecord(3, "d", "date", "date", 0)}
    record = StripeRecord(1, 1, path, ROWS, len(meta.chunk_groups), GROUP, os.path.getsize(path), 0, "auto", None, 1,
                          cols)
    return record, meta, ids, np.where(valid, x, 0), valid, d


def test_batches_held_keep_their_rows(stripe):
    record, _meta, ids, x, valid, d = stripe
    batches = list(ColumnarScan("t", COLUMNS, [record], ["id", "x", "d"], [], rowids=False))
    assert len(batches) == ROWS // GROUP
    assert np.concatenate([b.columns["id"].values for b in batches]).tolist() == ids.tolist()
    assert np.concatenate([b.columns["d"].values for b in batches]).tolist() == d.tolist()
    got_valid = np.concatenate([np.ones(b.nrows, bool) if b.columns["x"].validity is None
                                else b.columns["x"].validity.astype(bool) for b in batches])
    assert got_valid.tolist() == valid.tolist()
    got_x = np.concatenate([b.columns["x"].values for b in batches])
    assert got_x[valid].tobytes() == x[valid].tobytes()
    # a chunk group without NULLs has no validity, as read group by group
    assert [b.columns["x"].validity is None for b in batches] == [g % 3 != 0 for g in range(len(batches))]


def test_run_buffers_are_reused_when_batches_are_dropped(stripe, monkeypatch):
    record, *_ = stripe
    taken = []
    take = RunBuffers.take

    def counting(self, nbytes, room=0):
        buf = take(self, nbytes, room)
        taken.append(id(buf))
        return buf

    monkeypatch.setattr(RunBuffers, "take", counting)
    first = None
    for i, batch in enumerate(ColumnarScan("t", COLUMNS, [record, record], ["id", "d"], [], rowids=False)):
        del batch
        gc.collect()
        if i == ROWS // GROUP - 1:
            first = list(taken)
    # a few runs per column and stripe (the longer ones in buffers read into
    # before); the second stripe's in the buffers of the first (but those of
    # its last runs, still held by its plan when the next stripe starts)
    assert 2 * ROWS // GROUP // scan_mod.RUN_GROUPS <= len(first) // 2 < ROWS // GROUP
    assert len(taken) == 2 * len(first) and len(set(taken) - set(first)) <= 4


def test_damaged_chunk_is_reported_at_its_chunk_group(stripe):
    record, meta, ids, *_ = stripe
    bad = 9
    m = meta.chunk("id", bad)
    with open(record.file_path, "r+b") as f:
        f.seek(m.offset + m.length // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x40]))
    scan = ColumnarScan("t", COLUMNS, [record], ["id", "x"], [], rowids=False)
    seen = []
    with pytest.raises(CorruptDataError) as exc:
        for batch in scan:
            seen.append(batch.columns["id"].values.copy())
    assert len(seen) == bad   # the groups before it came out whole
    assert np.concatenate(seen).tolist() == ids[:bad * GROUP].tolist()
    assert record.file_path in str(exc.value) and f"column 'id', chunk group {bad}" in str(exc.value)
