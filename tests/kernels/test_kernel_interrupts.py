"""Kernels that run without the GIL stop on a query cancel.

Inside a backend the bridge sets an interrupt flag when it forwards a cancel
to Python; the kernels poll it (every 65,536 rows, or per block) and raise
KeyboardInterrupt. Outside a backend they poll the flag of
orochi_fdw.kernels.interrupts, set here. Each case runs the kernel with the
flag set (it must raise, whatever the input size) and then clear (it must
give the same answer as the numpy reference: stopping left nothing behind
that changes a later call).
"""

from __future__ import annotations

import numpy as np
import pytest

from orochi_fdw.kernels import aggregate as KA
from orochi_fdw.kernels import filters as KF
from orochi_fdw.kernels import interrupts
from orochi_fdw.kernels import sketches as KS

N = 200_000


@pytest.fixture
def flag():
    assert not interrupts.in_backend()
    yield interrupts
    interrupts.set_flag(False)


def _ints():
    return np.random.default_rng(7).integers(0, 1000, N).astype(np.int64)


def _text():
    words = [b"alpha", b"beta", b"gamma", b"", b"\xc3\xa9t\xc3\xa9"]
    vals = [words[i % len(words)] for i in range(N)]
    offsets = np.zeros(N + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(v) for v in vals])
    return offsets, np.frombuffer(b"".join(vals), dtype=np.uint8)


def _case_hash_int64():
    v = _ints()
    out = np.empty(N, dtype=np.uint64)
    KS.hash_int64(v, out)
    return out


def _case_hash_varlen():
    offsets, data = _text()
    out = np.empty(N, dtype=np.uint64)
    KS.hash_varlen(offsets, data, out)
    return out


def _case_hll_update():
    regs = np.zeros(1 << 12, dtype=np.uint8)
    KS.hll_update(regs, _ints().view(np.uint64) * np.uint64(0x9E3779B97F4A7C15), 12)
    return regs


def _case_hll_update_int64():
    regs = np.zeros(1 << 12, dtype=np.uint8)
    KS.hll_update_int64(regs, _ints(), 12)
    return regs


def _case_compare():
    out = np.empty(N, dtype=np.uint8)
    KF.compare(_ints(), None, KF.OP_LT, 500, out)
    return out


def _case_text_compare():
    offsets, data = _text()
    out = np.empty(N, dtype=np.uint8)
    KF.text_compare(offsets, data, None, KF.OP_EQ, np.frombuffer(b"beta", dtype=np.uint8), out)
    return out


def _case_group_table():
    gids, first = KA.GroupTable(["int"]).assign([("fixed", _ints(), None)])
    return gids


def _case_group_table_two_keys():
    v = _ints()
    gids, first = KA.GroupTable(["int", "int"]).assign([("fixed", v, None), ("fixed", v % 3, None)])
    return gids


def _case_group_table_text():
    offsets, data = _text()
    gids, first = KA.GroupTable(["bytes"]).assign([("text", offsets, data, None)])
    return gids


def _case_group_count():
    counts = np.zeros(1000, dtype=np.int64)
    KA.group_count(counts, _ints())
    return counts


def _case_group_sum_int():
    v = _ints()
    sums = np.zeros(1000, dtype=np.int64)
    carries = np.zeros(1000, dtype=np.int64)
    counts = np.zeros(1000, dtype=np.int64)
    KA.group_sum_int(sums, carries, counts, v, v)
    return sums


def _case_distinct():
    v = _ints()
    counts = np.zeros(1000, dtype=np.int64)
    KA.DistinctCounter("int").update(counts, v % 1000, ("fixed", v, None))
    return counts


CASES = {name[len("_case_"):]: fn for name, fn in globals().items() if name.startswith("_case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_stops_when_interrupted(flag, name):
    run = CASES[name]
    expected = run()
    flag.set_flag(True)
    with pytest.raises(KeyboardInterrupt):
        run()
    flag.set_flag(False)
    assert np.array_equal(run(), expected)


def test_results_against_numpy():
    """The polled loops still compute what numpy computes."""
    v = _ints()
    assert np.array_equal(_case_compare(), (v < 500).astype(np.uint8))
    assert np.array_equal(_case_group_count(), np.bincount(v, minlength=1000))
    assert np.array_equal(_case_group_sum_int(), np.bincount(v, weights=v, minlength=1000).astype(np.int64))
