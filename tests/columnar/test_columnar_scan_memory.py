"""A columnar scan without a server, over a stripe file written here: the
chunk groups it has passed keep none of their decoded columns (a stripe's
plan lives until the stripe is read; its columns must not pile up), and
its batches of several groups hold no more than their rows."""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest

from orochi_fdw.bridge.api import ColumnDefinition
from orochi_fdw.catalog.store import ColumnRecord, StripeRecord
from orochi_fdw.columnar.deletes import stripe_rowids
from orochi_fdw.columnar.scan import WHOLE_GROUP_ROWS, ColumnarScan
from orochi_fdw.storage.stripe_format import write_stripe

ROWS, GROUP = 5_000, 500

COLUMNS = {
    "id": ColumnDefinition("id", 23, type_name="integer", attnum=1),
    "x": ColumnDefinition("x", 701, type_name="double precision", attnum=2),
}


def write(path: str, rows: int, group: int) -> tuple:
    ids = np.arange(rows, dtype=np.int32)
    x = np.round(np.sin(ids) * 100, 2)
    meta = write_stripe(path, {"id": "int32", "x": "float64"}, {"id": (ids, None), "x": (x, None)},
                        chunk_group_rows=group)
    cols = {1: ColumnRecord(1, "id", "int32", "integer", 0), 2: ColumnRecord(2, "x", "float64", "double precision", 0)}
    record = StripeRecord(1, 1, path, rows, len(meta.chunk_groups), group, os.path.getsize(path), 0, "auto", None, 1,
                          cols)
    return record, ids, x


@pytest.fixture
def stripe(tmp_path):
    return write(str(tmp_path / "1.1.stripe"), ROWS, GROUP)


@pytest.mark.parametrize("rowids", [False, True])
def test_scan_frees_the_columns_of_chunk_groups_it_passed(stripe, rowids):
    record, ids, x = stripe
    scan = ColumnarScan("t", COLUMNS, [record], ["id", "x"], [], rowids=rowids)
    alive = []
    got_ids, got_x = [], []
    for batch in scan:
        got_ids.append(batch.columns["id"].values.copy())
        got_x.append(batch.columns["x"].values.copy())
        alive.append(weakref.ref(batch.columns["x"].values))
        del batch
        gc.collect()
        # the decoded columns of earlier chunk groups are gone while the stripe is still read
        assert sum(r() is not None for r in alive[:-1]) == 0
    # one group's rows first, then twice as many as the batch before (the rest of the stripe last)
    assert [len(i) for i in got_ids] == [GROUP, 2 * GROUP, 4 * GROUP, ROWS - 7 * GROUP]
    assert np.array_equal(np.concatenate(got_ids), ids)
    assert np.concatenate(got_x).tobytes() == x.tobytes()


def test_large_groups_all_kept_are_batches_of_their_own(tmp_path):
    """A chunk group of WHOLE_GROUP_ROWS rows or more all kept goes on as
    its own batch (not copied into a larger one); a smaller one joins the
    next batch."""
    group = WHOLE_GROUP_ROWS
    record, ids, x = write(str(tmp_path / "1.1.stripe"), 2 * group + 100, group)
    got = list(ColumnarScan("t", COLUMNS, [record], ["id", "x"], [], rowids=True))
    assert [b.nrows for b in got] == [group, group, 100]
    assert np.array_equal(np.concatenate([b.columns["id"].values for b in got]), ids)
    assert np.concatenate([b.columns["x"].values for b in got]).tobytes() == x.tobytes()
    assert np.array_equal(np.concatenate([b.rowids for b in got]), stripe_rowids(1, ids))
