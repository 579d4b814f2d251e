"""A scan's batches of several chunk groups, without a server: the kept
rows of each group written into one batch (:class:`orochi_fdw.columnar.scan._Run`)
are those of each group taken apart and put one after the other."""

from __future__ import annotations

import numpy as np
import pytest

from orochi_fdw.bridge.batch import Batch, Column, INTERVAL_DTYPE, WireKind
from orochi_fdw.columnar.scan import _join_dictionaries, _Run, compress_rows
from orochi_fdw.columnar.topn import take
from orochi_fdw.query.predicates import DictionaryColumn


def text(items: list[bytes]) -> Column:
    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(v) for v in items], out=offsets[1:])
    return Column(WireKind.TEXT, np.frombuffer(b"".join(items), np.uint8).copy(), None, offsets)


def rows(col) -> list:
    if isinstance(col, DictionaryColumn):
        entries = col.entries.to_pylist()
        codes = range(len(entries)) if col.codes is None else col.codes
        valid = [True] * len(codes) if col.validity is None else col.validity
        return [entries[c] if v else None for c, v in zip(codes, valid)]
    return col.to_pylist()


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float64, INTERVAL_DTYPE], ids=str)
def test_compress_rows_matches_boolean_indexing(dtype):
    rng = np.random.default_rng(3)
    values = np.frombuffer(rng.bytes(1000 * np.dtype(dtype).itemsize), dtype).copy()
    mask = (rng.random(1000) < 0.3).astype(np.uint8)
    out = np.empty(int(mask.sum()), dtype)
    compress_rows(mask, values, out)
    assert out.tobytes() == values[mask.view(bool)].tobytes()


def test_groups_joined_into_one_batch():
    rng = np.random.default_rng(7)
    small = text([b"AIR", b"MAIL", b"SHIP"])  # one entries object, as a scan keeps small dictionaries
    groups = []
    for g in range(5):
        n = 50 + g
        ints = Column(WireKind.INT64, rng.integers(-9, 9, n),
                      None if g % 2 else (rng.random(n) < 0.8).astype(np.uint8))
        dates = Column(WireKind.DATE, rng.integers(0, 9000, n).astype(np.int32))
        words = text([bytes(rng.integers(97, 123, int(k)).astype(np.uint8)) for k in rng.integers(0, 6, n)])
        entries = small if g < 3 else text([b"x%d" % i for i in range(g)])
        modes = DictionaryColumn(entries, rng.integers(0, len(entries.offsets) - 1, n).astype(np.int32),
                                 None if g != 1 else (rng.random(n) < 0.5).astype(np.uint8))
        mask = None if g == 2 else (rng.random(n) < 0.4).astype(np.uint8)
        groups.append(({"i": ints, "d": dates}, {"w": words, "m": modes}, mask))
    run = _Run(1000)
    expected: dict[str, list] = {"i": [], "d": [], "w": [], "m": []}
    for full, other, mask in groups:
        idx = np.arange(len(full["d"])) if mask is None else np.flatnonzero(mask)
        k = len(idx)
        picked = {"w": take(other["w"], idx), "m": other["m"].take(idx)}
        assert run.accepts(full, picked, k)
        run.add(full, picked, mask, k)
        for name in ("i", "d"):
            expected[name] += take(full[name], idx).to_pylist()
        expected["w"] += rows(picked["w"])
        expected["m"] += rows(picked["m"])
    batch = run.batch(Batch)
    assert batch.nrows == len(expected["i"])
    for name, want in expected.items():
        assert rows(batch.columns[name]) == want, name
    # another layout, or more rows than the batch holds, starts another batch
    assert not run.accepts({"i": Column(WireKind.INT32, np.zeros(1, np.int32))}, {}, 1)
    assert not run.accepts({}, {}, 1000)


def test_dictionaries_sharing_entries_keep_them():
    entries = text([b"a", b"b"])
    parts = [DictionaryColumn(entries, np.array([1, 0], np.int32)), DictionaryColumn(entries, np.array([1], np.int32))]
    joined = _join_dictionaries(parts)
    assert joined.entries is entries and joined.codes.tolist() == [1, 0, 1] and joined.validity is None
