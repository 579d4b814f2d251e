"""Bernoulli row sampling (``orochi.sample``) and the normal quantile of the
sampled aggregates' confidence intervals (sql/45_sampling.sql,
docs/sketches.md).

A row is in the sample of seed ``s`` and fraction ``f`` when the 64-bit hash
``hashint8extended(n, s)`` of its ordinal ``n`` (1, 2, ... in the order a
plain scan of the table returns its rows) has its low 32 bits, read as a
fraction of 2**32, below ``f``. (The high 32 bits are too regular over
consecutive ordinals: sample sizes would vary less than a Bernoulli
sample's; the low ones vary as they should.) Postgres computes that hash for heap tables
(in SQL, over ``row_number() OVER ()``); a columnar scan computes the same
hash here, vectorized, and drops the rows not sampled before they are
converted to Postgres tuples. The same rows in the same order therefore give
the same sample on both kinds of table.

The columnar scan learns that it is sampled from a *request* that
``orochi.sample`` registers for the relation just before running
``SELECT * FROM <relation>`` and removes right after: the next scan of that
relation in this backend without quals or sort takes (consumes) it.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Iterator

import numpy as np

from orochi_fdw.bridge.batch import Batch, Column
from orochi_fdw.errors import InvalidParameterError

#: low 32 bits of a hash, compared with fraction * 2**32
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO32 = float(1 << 32)
_GOLDEN = 0x9E3779B9 + 4 + 3923095  # Jenkins hash initial value for a 4-byte key

_requests: dict[int, tuple[float, int]] = {}


def check_fraction(fraction: float | None) -> float:
    """The sampling fraction as a float in (0, 1].

    Args:
        fraction: the requested fraction.

    Returns:
        The fraction.

    Raises:
        InvalidParameterError: NULL, NaN or outside (0, 1] (SQLSTATE 22023).
    """
    if fraction is None or not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) <= 1.0:
        raise InvalidParameterError(f"sampling fraction must be greater than 0 and at most 1, got {fraction}")
    return float(fraction)


def check_confidence(confidence: float | None) -> float:
    """A confidence level as a float in (0, 1).

    Raises:
        InvalidParameterError: NULL, NaN or outside (0, 1) (SQLSTATE 22023).
    """
    if confidence is None or not 0.0 < float(confidence) < 1.0:
        raise InvalidParameterError(f"confidence level must be between 0 and 1 (exclusive), got {confidence}")
    return float(confidence)


def normal_quantile(confidence: float) -> float:
    """z such that a standard normal variable lies in [-z, z] with
    probability ``confidence`` (1.96 for 0.95).

    Raises:
        InvalidParameterError: confidence outside (0, 1).
    """
    return NormalDist().inv_cdf(0.5 + check_confidence(confidence) / 2.0)


def _rotl32(x: np.ndarray, k: int) -> np.ndarray:
    return (x << np.uint32(k)) | (x >> np.uint32(32 - k))


def hash_ordinals(ordinals: np.ndarray, seed: int) -> np.ndarray:
    """Postgres's ``hashint8extended(ordinal, seed)`` of each ordinal, as
    uint64 (Bob Jenkins' lookup3 of the folded 4-byte value, seeded).

    Args:
        ordinals: int64 values.
        seed: the 64-bit seed (an int4 sample seed, sign-extended).

    Returns:
        uint64 hashes, one per ordinal.
    """
    v = np.asarray(ordinals, dtype=np.int64)
    lo = v.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    hi = (v >> np.int64(32)).astype(np.uint64) & np.uint64(0xFFFFFFFF)
    key = np.where(v >= 0, lo ^ hi, lo ^ (~hi & np.uint64(0xFFFFFFFF))).astype(np.uint32)
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    a = b = c = _GOLDEN & 0xFFFFFFFF
    with np.errstate(over="ignore"):
        if s != 0:
            a, b, c = _mix_scalar((a + (s >> 32)) & 0xFFFFFFFF, (b + s) & 0xFFFFFFFF, c)
        a = key + np.uint32(a)
        b = np.full(len(key), b, dtype=np.uint32)
        c = np.full(len(key), c, dtype=np.uint32)
        c ^= b; c -= _rotl32(b, 14)  # noqa: E702  (lookup3's final(a, b, c))
        a ^= c; a -= _rotl32(c, 11)  # noqa: E702
        b ^= a; b -= _rotl32(a, 25)  # noqa: E702
        c ^= b; c -= _rotl32(b, 16)  # noqa: E702
        a ^= c; a -= _rotl32(c, 4)  # noqa: E702
        b ^= a; b -= _rotl32(a, 14)  # noqa: E702
        c ^= b; c -= _rotl32(b, 24)  # noqa: E702
    return (b.astype(np.uint64) << np.uint64(32)) | c.astype(np.uint64)


def _mix_scalar(a: int, b: int, c: int) -> tuple[int, int, int]:
    """lookup3's mix(a, b, c) on Python ints (the seed's part, once)."""
    m = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & m

    a = (a - c) & m; a ^= rot(c, 4); c = (c + b) & m  # noqa: E702
    b = (b - a) & m; b ^= rot(a, 6); a = (a + c) & m  # noqa: E702
    c = (c - b) & m; c ^= rot(b, 8); b = (b + a) & m  # noqa: E702
    a = (a - c) & m; a ^= rot(c, 16); c = (c + b) & m  # noqa: E702
    b = (b - a) & m; b ^= rot(a, 19); a = (a + c) & m  # noqa: E702
    c = (c - b) & m; c ^= rot(b, 4); b = (b + a) & m  # noqa: E702
    return a, b, c


def sampled_mask(first_ordinal: int, nrows: int, fraction: float, seed: int) -> np.ndarray:
    """Which of the rows with ordinals first_ordinal .. first_ordinal + nrows - 1
    are in the sample (bool array).

    The low 32 bits of the hash are ``c`` of lookup3's final(a, b, c); for
    ordinals below 2**32 the key is the ordinal itself, ``b`` and ``c``
    start as constants, and only ``c`` is needed, so this computes it in
    place on uint32 arrays (about 10x faster than :func:`hash_ordinals`).
    ``c < fraction * 2**32`` is ``c < ceil(fraction * 2**32)`` on integers.
    """
    threshold = math.ceil(fraction * _TWO32)
    if threshold > 0xFFFFFFFF:  # every 32-bit value is below it
        return np.ones(nrows, dtype=bool)
    last = first_ordinal + nrows - 1
    if first_ordinal < 0 or last >= 1 << 32:
        hashes = hash_ordinals(np.arange(first_ordinal, last + 1, dtype=np.int64), seed)
        return (hashes & _LOW32).astype(np.float64) < fraction * _TWO32
    m = 0xFFFFFFFF
    a0 = b0 = c0 = _GOLDEN & m
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    if s != 0:
        a0, b0, c0 = _mix_scalar((a0 + (s >> 32)) & m, (b0 + s) & m, c0)

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & m

    c0 = ((c0 ^ b0) - rot(b0, 14)) & m  # final's first line: constants only
    a = np.arange(first_ordinal, last + 1, dtype=np.uint32)
    a += np.uint32(a0)
    tmp = np.empty_like(a)
    b = np.empty_like(a)
    # a ^= c; a -= rot(c, 11)  (c still a constant)
    a ^= np.uint32(c0)
    a -= np.uint32(rot(c0, 11))

    def sub_rot(dst: np.ndarray, src: np.ndarray, k: int) -> None:
        """dst -= rot(src, k), with tmp as scratch."""
        np.left_shift(src, np.uint32(k), out=tmp)
        dst -= tmp
        np.right_shift(src, np.uint32(32 - k), out=tmp)
        dst -= tmp  # the two rotated parts share no bits: subtracting both subtracts their OR

    b[...] = np.uint32(b0)
    b ^= a; sub_rot(b, a, 25)  # noqa: E702
    c = np.full_like(a, np.uint32(c0))
    c ^= b; sub_rot(c, b, 16)  # noqa: E702
    a ^= c; sub_rot(a, c, 4)  # noqa: E702
    b ^= a; sub_rot(b, a, 14)  # noqa: E702
    c ^= b; sub_rot(c, b, 24)  # noqa: E702
    return c < np.uint32(threshold)


# ------------------------------------------------------------ scan requests


def request_sample(relid: int, fraction: float, seed: int) -> None:
    """Make the next unfiltered scan of ``relid`` in this backend a sample.

    Raises:
        InvalidParameterError: fraction outside (0, 1].
    """
    _requests[int(relid)] = (check_fraction(fraction), int(seed))


def cancel_sample(relid: int) -> None:
    """Forget a sample request for ``relid`` (taken or not)."""
    _requests.pop(int(relid), None)


def sample_requested(relid: int, quals: list[Any]) -> bool:
    """Whether :func:`sampled_scan_if_requested` would sample a scan of
    ``relid`` with ``quals`` (without taking the request)."""
    return not quals and int(relid) in _requests


def sampled_scan_if_requested(relid: int, quals: list[Any], scan: Any) -> Any:
    """``scan`` itself, or, when a sample of ``relid`` was requested and the
    scan has no quals, a :class:`SampledScan` of it (the request is taken)."""
    if quals or int(relid) not in _requests:
        return scan
    fraction, seed = _requests.pop(int(relid))
    return SampledScan(scan, fraction, seed)


class SampledScan:
    """The batches of a columnar scan reduced to the sampled rows (see the
    module docstring); other attributes are the scan's.

    Args:
        scan: an iterator of :class:`Batch` in the table's scan order.
        fraction: the sampling fraction, (0, 1].
        seed: the sample's seed.
    """

    def __init__(self, scan: Any, fraction: float, seed: int):
        self.scan = scan
        self.fraction = fraction
        self.seed = seed
        self.next_ordinal = 1
        self._iter = self._batches()

    def __iter__(self) -> "SampledScan":
        return self

    def __next__(self) -> Batch:
        return next(self._iter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scan, name)

    def _batches(self) -> Iterator[Batch]:
        for batch in self.scan:
            n = batch.nrows
            if n == 0:
                continue
            mask = sampled_mask(self.next_ordinal, n, self.fraction, self.seed)
            self.next_ordinal += n
            indices = np.flatnonzero(mask)
            if len(indices) == 0:
                continue
            rowids = getattr(batch, "rowids", None)
            columns = {name: _select(col, mask, indices) for name, col in batch.columns.items()}
            yield Batch(len(indices), columns, None if rowids is None else np.asarray(rowids)[indices])


def _select(col: Any, mask: np.ndarray, indices: np.ndarray) -> Any:
    from orochi_fdw.columnar.scan import select_rows

    if isinstance(col, Column):
        return select_rows(col, mask, indices)
    if isinstance(col, np.ndarray):
        return col[indices]
    return [col[i] for i in indices]


# ------------------------------------------------------------- estimators


def estimate(kind: str, n: float, total: float, squares: float, fraction: float,
             confidence: float) -> list[float] | None:
    """A Horvitz-Thompson estimate from a Bernoulli sample's non-NULL values,
    with its normal-approximation interval (docs/sketches.md has the
    formulas).

    Args:
        kind: "sum", "count" or "avg".
        n: sampled non-NULL values.
        total: their sum.
        squares: the sum of their squared deviations from their mean.
        fraction: the sampling fraction, (0, 1].
        confidence: the interval's confidence level, (0, 1).

    Returns:
        [estimate, lower, upper, standard error, n], or None for the sum
        and avg of no values.

    Raises:
        InvalidParameterError: fraction or confidence out of range.
    """
    f = check_fraction(fraction)
    z = normal_quantile(confidence)
    if kind == "count":
        est, se = n / f, math.sqrt((1 - f) * n) / f
    elif n == 0:
        return None
    elif kind == "sum":
        sum_sq = squares + total * (total / n)
        est, se = total / f, math.sqrt(max((1 - f) * sum_sq, 0.0)) / f
    elif kind == "avg":
        est, se = total / n, math.sqrt(max((1 - f) * squares, 0.0)) / n
    else:
        raise InvalidParameterError(f"unknown sampled estimate {kind}")
    return [est, est - z * se, est + z * se, se, n]


def final_estimate(kind: str, state: list[float] | None, from_regression: bool) -> list[float] | None:
    """The result of a sampled aggregate from its transition state.

    Args:
        kind: "sum", "count" or "avg".
        state: the aggregate's state: from ``float8_regr_accum(state, x,
            fraction)`` (two-argument forms) {n, sum of fraction, squared
            deviations of fraction, sum of x, squared deviations of x,
            cross term}, or from ``orochi.sampled_accum`` {n, sum of x,
            squared deviations of x, fraction, confidence}; None when no
            row was seen.
        from_regression: which of the two.

    Returns:
        See :func:`estimate`; a count of no rows is all zeros.

    Raises:
        InvalidParameterError: the fraction is not the same in every row,
            or out of range.
    """
    if state is None or not state[0]:
        return [0.0, 0.0, 0.0, 0.0, 0] if kind == "count" else None
    if not from_regression:
        n, total, squares, fraction, confidence = state
        return estimate(kind, n, total, squares, fraction, confidence)
    n, fraction_sum, fraction_squares, total, squares = state[:5]
    fraction = fraction_sum / n
    if fraction_squares > 1e-12 * fraction * fraction * n:
        error = InvalidParameterError("sampling fraction must be the same in every row")
        error.hint = "Pass the fraction the rows were sampled with, as a constant."
        raise error
    # the mean of n copies of the fraction carries the sum's rounding:
    # 12 significant digits give back the value that was passed
    fraction = float(f"{fraction:.12g}")
    return estimate(kind, n, total, squares, fraction, 0.95)
