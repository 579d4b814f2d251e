"""Decoders fed truncated, bit-flipped or random bytes must raise
CorruptDataError (or decode to some well-formed column), never crash or raise
anything else. Bounded: fixed example counts, a few seconds in total."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec_fuzz_helpers import mutate
from orochi_fdw.errors import CorruptDataError
from orochi_fdw.storage import codecs as C
from orochi_fdw.storage.kinds import INTERVAL_DTYPE, KINDS, UUID_DTYPE, VarBytes

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

FUZZ_KINDS = ["bool", "int16", "int32", "int64", "timestamptz", "float32", "float64",
              "uuid", "interval", "text", "decimal64_2", "char"]


def _values(kind: str, n: int):
    rng = np.random.default_rng(len(kind))
    k = KINDS[kind]
    if k.physical == "var":
        words = [b"alpha", b"beta", "gämma".encode(), b"", b"x" * 90]
        vb, _ = VarBytes.from_values(words[i] for i in (np.arange(n) // 7) % len(words))
        return vb
    if kind == "bool":
        return (np.arange(n) // 9) % 3 == 0
    if kind == "uuid":
        return np.repeat(rng.integers(0, 256, (n // 5 + 1, 16), dtype=np.uint8), 5,
                         axis=0)[:n].copy().view(UUID_DTYPE).reshape(-1)
    if kind == "interval":
        v = np.zeros(n, INTERVAL_DTYPE)
        v["time"] = np.arange(n) // 4
        return v
    if k.physical == "float":
        return np.round(np.cumsum(rng.normal(0, 1, n)), 1).astype(k.dtype)
    return (np.cumsum(rng.integers(-3, 40, n)) // 2).astype(k.dtype)


def _corpus():
    items = []
    for kind in FUZZ_KINDS:
        n = 120
        values = _values(kind, n)
        validity = np.arange(n) % 11 != 5
        phys = KINDS[kind].physical
        for codec in sorted(c for c, s in C.CODECS.items() if phys in s.physicals):
            for comp in ("none", "lz4", "zstd"):
                header, stored = C.encode_chunk(values, validity, kind, codec=codec,
                                                compression=comp)
                items.append((kind, header, stored))
    # DECIMAL over BITPACK (decoded in one fused pass), near and beyond the
    # range that pass converts exactly (then the scalar path)
    rng = np.random.default_rng(3)
    for kind in ("float32", "float64"):
        for values in (np.round(rng.uniform(0, 100, 120), 2),
                       np.round(rng.uniform(2.0**50, 2.0**51, 120)), np.round(rng.uniform(-4e15, 4e15, 120))):
            values = values.astype(KINDS[kind].dtype)
            for comp in ("none", "lz4"):
                header, stored = C.encode_chunk(values, None, kind, codec=C.Codec.DECIMAL, compression=comp)
                items.append((kind, header, stored))
    return items


CORPUS = _corpus()


def _decode_or_corrupt(header, payload, kind):
    """Decode; a successful decode must still be a well-formed column."""
    try:
        out = C.decode_chunk(header, payload, kind)
    except CorruptDataError:
        return None
    n = header.row_count
    if isinstance(out.values, VarBytes):
        assert out.values.count == n
        assert out.values.offsets[0] >= 0 and out.values.offsets[-1] <= len(out.values.data)
        assert (np.diff(out.values.offsets) >= 0).all()
    else:
        assert len(out.values) == n and out.values.dtype == KINDS[kind].dtype
    assert out.validity is None or len(out.validity) == n
    return out


def test_corpus_decodes_cleanly():
    assert len(CORPUS) > 60
    for kind, header, stored in CORPUS:
        assert _decode_or_corrupt(header, stored, kind) is not None, (kind, header)


def test_every_truncation_is_detected():
    for kind, header, stored in CORPUS:
        for cut in range(len(stored)):
            with pytest.raises(CorruptDataError):
                C.decode_chunk(header, stored[:cut], kind)
            # Even when the header is adjusted to the shorter length.
            h = dataclasses.replace(header, stored_length=cut, raw_length=cut)
            _decode_or_corrupt(h, stored[:cut], kind)


def test_single_bit_flips_never_crash():
    for kind, header, stored in CORPUS:
        if len(stored) > 600:
            positions = np.random.default_rng(0).integers(0, 8 * len(stored), 1500)
        else:
            positions = range(8 * len(stored))
        buf = bytearray(stored)
        for bit in positions:
            buf[bit >> 3] ^= 1 << (bit & 7)
            _decode_or_corrupt(header, bytes(buf), kind)
            buf[bit >> 3] ^= 1 << (bit & 7)


@FUZZ
@given(item=st.sampled_from(CORPUS), data=st.data())
def test_mutated_payloads(item, data):
    kind, header, stored = item
    buf = mutate(stored, data)
    h = header
    if data.draw(st.booleans()):
        h = dataclasses.replace(header, stored_length=len(buf))
    _decode_or_corrupt(h, buf, kind)


@FUZZ
@given(item=st.sampled_from(CORPUS), data=st.data())
def test_mutated_headers(item, data):
    kind, header, stored = item
    big = st.one_of(st.integers(0, 300), st.integers(0, 2**63), st.just(C.MAX_CHUNK_ROWS + 1),
                    st.integers(-5, -1))
    field = data.draw(st.sampled_from(
        ["codec", "compression", "row_count", "null_count", "raw_length"]))
    h = dataclasses.replace(header, **{field: data.draw(big)})
    _decode_or_corrupt(h, stored, kind)


@FUZZ
@given(kind=st.sampled_from(FUZZ_KINDS), codec=st.sampled_from(list(C.Codec)),
       count=st.integers(0, 400), data=st.binary(max_size=600))
def test_random_bytes_into_every_decoder(kind, codec, count, data):
    phys = KINDS[kind].physical
    if phys not in C.CODECS[codec].physicals:
        with pytest.raises(CorruptDataError):
            C.decode_values(data, count, kind, codec)
        return
    try:
        out = C.decode_values(data, count, kind, codec)
    except CorruptDataError:
        return
    assert (out.count if isinstance(out, VarBytes) else len(out)) == count


def test_hostile_sizes_are_refused_before_allocating():
    # A dictionary whose codes would expand one huge entry many times.
    entry = b"z" * 4096
    vb, _ = VarBytes.from_values([entry] * 2)
    enc = bytearray(C.encode_values(vb, "text", C.Codec.DICTIONARY))
    with pytest.raises(CorruptDataError):
        C.decode_values(bytes(enc), C.MAX_CHUNK_ROWS + 1, "text", C.Codec.DICTIONARY)
    # A packed block claiming a 200-bit width.
    with pytest.raises(CorruptDataError):
        C.decode_values(b"\0" * 8 + bytes([200]), 10, "int64", C.Codec.BITPACK)
    # An lz4 chunk claiming a 2 GiB raw size.
    header, stored = C.encode_chunk(vb, None, "text", compression="lz4")
    with pytest.raises(CorruptDataError):
        C.decode_chunk(dataclasses.replace(header, raw_length=2**31 - 1), stored, "text")
