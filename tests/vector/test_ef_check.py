"""The build-time check that records an index file's default ef
(orochi_fdw/vector/indexes.py, calibrate_ef), over a graph whose recall at
each ef is given: the target reached, only the fallback reached, neither,
and the bound of an exact search's cost."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from orochi_fdw.vector import indexes
from vector_helpers import clustered_vectors


class LadderGraph:
    """Answers every query with its true nearest neighbours, or all but
    one: at ef e, ``perfect(e)`` of the check's 128 queries get all 10, so
    recall is 0.9 + perfect / 1280."""

    def __init__(self, X: np.ndarray, keys: np.ndarray, perfect):
        self.X, self.keys, self.perfect = X, keys, perfect
        self.expansion_search = 0
        self._nearest: dict[bytes, np.ndarray] = {}  # the check asks the same queries at every ef

    def search(self, Q: np.ndarray, k: int, threads: int = 1):
        out = []
        good = self.perfect(self.expansion_search)
        for i, q in enumerate(Q):
            nearest = self._nearest.get(q.tobytes())
            if nearest is None:
                d = ((self.X - q) ** 2).sum(axis=1)
                nearest = self._nearest[q.tobytes()] = self.keys[np.argpartition(d, k)[:k]]
            # a miss: the second nearest (the first but the stored vector
            # the check made the query from, whichever of the two that is)
            out.append(list(nearest) if i < good else [nearest[0], -1] + list(nearest[2:]))
        return SimpleNamespace(keys=np.asarray(out))


def _check(perfect, n: int = 20_000) -> int:
    X = clustered_vectors(n, 8, seed=3)
    keys = np.arange(n, dtype=np.int64)
    return indexes.calibrate_ef(LadderGraph(X, keys, perfect), X, keys, "l2", m=2)


def _at(table: dict[int, int]):
    """perfect(ef) from {ef: perfect queries from that ef on}."""
    return lambda ef: max([p for e, p in table.items() if ef >= e] or [0])


@pytest.mark.parametrize("table, expected", [
    ({64: 90}, 64),                        # the target (0.97) at 64: that one (no margin on top)
    ({40: 90}, 40),                        # steps of about a quarter: 40 between 32 and 48
    ({16: 64, 256: 88}, 32),               # 0.95 at 16, never 0.97: twice 16
    ({256: 64, 1024: 80}, 512),            # 0.95 at 256: twice, within the ladder
    ({1024: 66}, 1024),                    # 0.95 only at the last ef: that one
    ({16: 63, 1024: 63}, 0),               # never 0.95: search exactly
])
def test_recorded_ef(table, expected):
    assert indexes.TARGET_RECALL == 0.97 and indexes.EF_MARGIN == 1.0 and indexes.FALLBACK_RECALL == 0.95 and indexes.CHECK_QUERIES == 128
    assert _check(_at(table)) == expected


def test_no_ef_dearer_than_an_exact_search():
    # m 2: an ef of e costs about e * 8 distances; at 1,500 rows the ladder
    # stops before 192, so 0.95 first reached at 96 is recorded as 160, the
    # largest ef tried (not 192)
    assert _check(_at({96: 64}), n=1500) == 160
    assert _check(_at({192: 90}), n=1500) == 0
