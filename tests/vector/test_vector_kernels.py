"""The vector kernels against the numpy reference (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orochi_fdw.kernels import vector as kernels
from orochi_fdw.vector import reference

METRICS = ["l2", "negative_inner_product", "cosine", "inner_product"]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", [1, 3, 8, 13, 128])
def test_distances_equal_reference_bit_for_bit(metric, d):
    rng = np.random.default_rng(d)
    X = rng.normal(size=(257, d)).astype(np.float32)
    q = rng.normal(size=d).astype(np.float32)
    out = np.empty(len(X))
    kernels.distances(X, q, reference.METRICS[metric], out)
    ref = reference.distances(X, q, metric)
    assert out.tobytes() == ref.tobytes(), "kernel and reference must agree bit for bit"


@pytest.mark.parametrize("metric", METRICS)
def test_rows_subset_equals_full(metric):
    rng = np.random.default_rng(1)
    X = rng.random((100, 17), dtype=np.float32)
    q = rng.random(17, dtype=np.float32)
    rows = np.array([99, 0, 5, 5, 42], dtype=np.int64)
    full = np.empty(100)
    part = np.empty(len(rows))
    kernels.distances(X, q, reference.METRICS[metric], full)
    kernels.distances_rows(X, rows, q, reference.METRICS[metric], part)
    assert part.tobytes() == full[rows].tobytes()


def test_cosine_of_zero_vector_is_nan():
    X = np.array([[0, 0, 0], [1, 0, 0]], dtype=np.float32)
    out = np.empty(2)
    kernels.distances(X, np.array([1, 1, 0], np.float32), reference.METRICS["cosine"], out)
    assert np.isnan(out[0]) and not np.isnan(out[1])


def test_bad_shapes_and_rows_are_refused():
    X = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError):
        kernels.distances(X, np.zeros(2, np.float32), 0, np.empty(4))
    with pytest.raises(IndexError):
        kernels.distances_rows(X, np.array([4], np.int64), np.zeros(3, np.float32), 0, np.empty(1))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 40), d=st.integers(1, 40), metric=st.sampled_from(METRICS), seed=st.integers(0, 2**32 - 1))
def test_random_shapes(n, d, metric, seed):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    q = rng.normal(size=d).astype(np.float32)
    out = np.empty(n)
    kernels.distances(X, q, reference.METRICS[metric], out)
    assert out.tobytes() == reference.distances(X, q, metric).tobytes()


def test_knn_reference_orders_ties_by_position_and_nan_last():
    X = np.array([[1, 0], [0, 0], [1, 0], [0, 1]], np.float32)
    assert reference.knn(X, np.array([1, 0], np.float32), 4, "cosine").tolist() == [0, 2, 3, 1]
