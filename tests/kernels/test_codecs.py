"""Codec kernels and glue against the pure-Python reference implementation.

Every codec must (1) round-trip bit for bit, (2) produce exactly the bytes the
reference produces, and (3) decode what the reference wrote. Values are
compared as raw bytes, so NaN payloads and -0.0 count.
"""

from __future__ import annotations

import dataclasses
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orochi_fdw.errors import CorruptDataError, InvalidParameterError
from orochi_fdw.kernels import codecs_bytes as cb
from orochi_fdw.kernels import codecs_float as cf
from orochi_fdw.kernels import codecs_int as ci
from orochi_fdw.storage import codecs as C
from orochi_fdw.storage import reference as R
from orochi_fdw.storage.kinds import INTERVAL_DTYPE, KINDS, UUID_DTYPE, VarBytes

Codec = C.Codec
HYPO = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INT_KINDS = ["int16", "int32", "int64", "date", "timestamp", "timestamptz", "time"]
FLOAT_KINDS = ["float32", "float64"]
VAR_KINDS = ["text", "bytea", "varchar", "bpchar", "numeric", "jsonb"]
# the scaled-numeric kinds share one layout (int64) whatever their scale: two of them
ALL_KINDS = [k for k in KINDS if not k.startswith("decimal64_") or k in ("decimal64_0", "decimal64_18")]

EXPECTED_CODECS = {
    "bool": {Codec.PLAIN, Codec.RLE, Codec.BITMAP},
    "int": {Codec.PLAIN, Codec.BITPACK, Codec.DELTA, Codec.DELTA_DELTA, Codec.RLE},
    "float": {Codec.PLAIN, Codec.RLE, Codec.GORILLA, Codec.DECIMAL},
    "fixed": {Codec.PLAIN, Codec.RLE},
    "var": {Codec.PLAIN, Codec.DICTIONARY},
}


def codecs_for(kind: str) -> list[Codec]:
    phys = KINDS[kind].physical
    return sorted(c for c, spec in C.CODECS.items() if phys in spec.physicals)


KIND_CODECS = [(k, c) for k in ALL_KINDS for c in codecs_for(k)]


def same(a, b) -> bool:
    """Bit-exact equality of decoded values (arrays or lists of bytes)."""
    if isinstance(a, VarBytes):
        a = a.to_list()
    if isinstance(b, VarBytes):
        b = b.to_list()
    if isinstance(a, list) or isinstance(b, list):
        return [bytes(x) for x in a] == [bytes(x) for x in b]
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def to_var(values: list[bytes]) -> VarBytes:
    vb, _ = VarBytes.from_values(values)
    return vb


# ------------------------------------------------------------------- data

def sample(kind: str, pattern: str, n: int, seed: int = 0):
    """Deterministic test columns: ndarray, or list of bytes for var kinds."""
    rng = np.random.default_rng(seed)
    k = KINDS[kind]
    if kind == "vector":  # every value the same number of float32
        vecs = rng.normal(size=(n, 3)).astype("<f4")
        if pattern in ("constant", "runs"):
            vecs[:] = vecs[0]
        return [v.tobytes() for v in vecs]
    if k.physical == "var":
        words = ["ok", "warn", "error", "ünïcödé ✓", "", "日本語", "x" * 70]
        if pattern == "random":
            return [rng.bytes(int(rng.integers(0, 40))) for _ in range(n)]
        if pattern == "constant":
            return [b"same"] * n
        if pattern == "runs":
            return [words[(i // 50) % len(words)].encode() for i in range(n)]
        return [words[int(i)].encode() for i in rng.integers(0, len(words), n)]
    if kind == "bool":
        if pattern == "runs":
            return (np.arange(n) // 97) % 2 == 0
        if pattern == "constant":
            return np.ones(n, dtype=bool)
        return rng.random(n) < 0.3
    if kind == "uuid":
        u = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        if pattern in ("constant", "runs"):
            u[:] = u[0] if pattern == "constant" else u[(np.arange(n) // 40) * 0]
        return u.view(UUID_DTYPE).reshape(-1)
    if kind == "interval":
        v = np.zeros(n, dtype=INTERVAL_DTYPE)
        v["time"] = rng.integers(-2**62, 2**62, n)
        v["day"] = rng.integers(-1000, 1000, n)
        v["month"] = rng.integers(-100, 100, n)
        if pattern in ("constant", "runs"):
            v[:] = v[0]
        return v
    dt = k.dtype
    if k.physical == "float":
        if pattern == "random":
            return rng.normal(0, 1e6, n).astype(dt)
        if pattern == "extremes":
            specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -5e-324,
                                 np.finfo(dt).max, np.finfo(dt).min, np.finfo(dt).tiny],
                                dtype=dt)
            out = specials[rng.integers(0, len(specials), n)]
            bits = out.view(np.uint32 if dt.itemsize == 4 else np.uint64)
            # NaNs with distinct payloads and signs.
            bits[::7] = (0x7FC00001 if dt.itemsize == 4 else 0x7FF8000000000123) + \
                np.arange(len(bits[::7]), dtype=bits.dtype)
            bits[3::11] |= np.array(1 << (8 * dt.itemsize - 1), dtype=bits.dtype)
            return out
        if pattern == "constant":
            return np.full(n, 21.5, dtype=dt)
        return np.round(20 + np.cumsum(rng.normal(0, 0.1, n)), 1).astype(dt)
    info = np.iinfo(dt)
    if pattern == "random":
        return rng.integers(info.min, info.max, n, endpoint=True, dtype=dt)
    if pattern == "extremes":
        return np.array([info.min, info.max, 0, -1, info.min, info.max] * (n // 6 + 1),
                        dtype=dt)[:n]
    if pattern == "constant":
        return np.full(n, info.max, dtype=dt)
    if pattern == "runs":
        return ((np.arange(n) // 33) % 5).astype(dt)
    # "regular": a time-series-like ramp with jitter
    base = np.arange(n, dtype=np.int64) * 7 + rng.integers(-2, 3, n)
    return np.clip(base, info.min, info.max).astype(dt)


PATTERNS = ["random", "extremes", "constant", "runs", "regular"]


def to_glue(values, kind):
    return to_var(values) if KINDS[kind].physical == "var" else values


def encode_both(values, kind, codec):
    """(kernel bytes, reference bytes), or (None, None) when DECIMAL does not
    apply to these values (both implementations must then refuse)."""
    try:
        ref = R.encode_values(values, kind, codec)
    except R.NotDecimal:
        with pytest.raises(InvalidParameterError):
            C.encode_values(to_glue(values, kind), kind, codec)
        return None, None
    return C.encode_values(to_glue(values, kind), kind, codec), ref


# -------------------------------------------------------- registry & basics

def test_registry_lists_codecs_per_physical_kind():
    for phys, expected in EXPECTED_CODECS.items():
        got = {c for c, spec in C.CODECS.items() if phys in spec.physicals}
        assert got == expected, f"codecs for {phys}"
    assert [int(c) for c in Codec] == list(range(10)), "codec ids are part of the format"
    assert [int(c) for c in C.Compression] == [0, 1, 2]


@pytest.mark.parametrize("kind,codec", KIND_CODECS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_codec_matches_reference(kind, codec, pattern):
    values = sample(kind, pattern, 517, seed=hash((kind, pattern)) & 0xFFFF)
    enc, ref = encode_both(values, kind, codec)
    if enc is None:
        assert codec == Codec.DECIMAL and pattern in ("random", "extremes")
        return
    assert enc == ref, "kernel bytes should equal reference bytes"
    assert same(C.decode_values(enc, len(values), kind, codec), values)
    assert same(R.decode_values(enc, len(values), kind, codec), values)


@pytest.mark.parametrize("kind,codec", KIND_CODECS)
@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_tiny_inputs(kind, codec, n):
    values = sample(kind, "regular", n, seed=n)
    enc, ref = encode_both(values, kind, codec)
    assert enc == ref
    assert same(C.decode_values(enc, n, kind, codec), values)


@pytest.mark.parametrize("kind,codec", KIND_CODECS)
@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_chunk_roundtrip_with_nulls(kind, codec, compression):
    n = 300
    values = sample(kind, "runs", n, seed=3)
    validity = np.random.default_rng(4).random(n) > 0.25
    header, stored = C.encode_chunk(to_glue(values, kind), validity, kind, codec=codec,
                                    compression=compression)
    assert header.codec == codec and header.row_count == n
    assert header.null_count == int((~validity).sum())
    out = C.decode_chunk(header, stored, kind)
    assert same(out.validity, validity)
    if KINDS[kind].physical == "var":
        assert out.values.to_list(out.validity) == [
            v if ok else None for v, ok in zip(values, validity)]
        assert all(out.values.value(i) == b"" for i in range(n) if not validity[i]), \
            "NULL rows decode as empty values"
    else:
        expect = np.zeros(n, dtype=KINDS[kind].dtype)
        expect[validity] = np.asarray(values)[validity]
        assert same(out.values, expect), "NULL rows decode as zero"
    if compression == "none":
        assert stored == R.encode_raw_chunk(values, validity, kind, codec)
        rv, rvalid = R.decode_raw_chunk(stored, n, header.null_count, kind, codec)
        assert same(rvalid, validity)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_all_null_and_empty_chunks(kind):
    n = 50
    values = sample(kind, "random", n)
    header, stored = C.encode_chunk(to_glue(values, kind), np.zeros(n, bool), kind)
    assert (header.codec, header.null_count, stored) == (Codec.PLAIN, n, b"")
    assert header.stats.min is None and header.stats.max is None
    out = C.decode_chunk(header, stored, kind)
    assert not out.validity.any() and len(out.validity) == n
    empty = sample(kind, "random", 0)
    header, stored = C.encode_chunk(to_glue(empty, kind), None, kind)
    out = C.decode_chunk(header, stored, kind)
    assert header.row_count == 0 and out.validity is None
    assert (out.values.count if isinstance(out.values, VarBytes) else len(out.values)) == 0


# --------------------------------------------------------------- hypothesis

def _int_strategy(kind):
    info = np.iinfo(KINDS[kind].dtype)
    edge = st.sampled_from([info.min, info.max, 0, -1, 1, info.min + 1, info.max - 1])
    return st.lists(st.one_of(st.integers(info.min, info.max), edge), max_size=120)


@pytest.mark.parametrize("kind", INT_KINDS)
@HYPO
@given(data=st.data())
def test_int_codecs_hypothesis(kind, data):
    ints = data.draw(_int_strategy(kind))
    if data.draw(st.booleans()):
        ints.sort()
    values = np.array(ints, dtype=KINDS[kind].dtype)
    for codec in codecs_for(kind):
        enc = C.encode_values(values, kind, codec)
        assert enc == R.encode_values(values, kind, codec)
        assert same(C.decode_values(enc, len(values), kind, codec), values)
    header, stored = C.encode_chunk(values, None, kind)   # auto choice
    assert same(C.decode_chunk(header, stored, kind).values, values)


_SPECIAL_F64 = [0x0, 0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
                0x7FF8000000000000, 0x7FF0000000000001, 0xFFFFFFFFFFFFFFFF,
                0x7FF4000000000BAD, 0x0000000000000001, 0x3FF0000000000000]
_SPECIAL_F32 = [0x0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
                0xFFFFFFFF, 0x7FA00BAD, 0x00000001, 0x3F800000]


@pytest.mark.parametrize("kind", FLOAT_KINDS)
@HYPO
@given(data=st.data())
def test_float_codecs_hypothesis(kind, data):
    wide = kind == "float64"
    bits = st.integers(0, 2**64 - 1 if wide else 2**32 - 1)
    special = st.sampled_from(_SPECIAL_F64 if wide else _SPECIAL_F32)
    raw = data.draw(st.lists(st.one_of(bits, special), max_size=120))
    udt = np.uint64 if wide else np.uint32
    values = np.array(raw, dtype=udt).view(KINDS[kind].dtype)
    validity = data.draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=len(raw),
                                                          max_size=len(raw))))
    for codec in codecs_for(kind):
        enc, ref = encode_both(values, kind, codec)
        if enc is None:
            continue
        assert enc == ref
        assert same(C.decode_values(enc, len(values), kind, codec), values)
    valid = None if validity is None else np.array(validity, dtype=bool)
    header, stored = C.encode_chunk(values, valid, kind)
    out = C.decode_chunk(header, stored, kind)
    keep = slice(None) if valid is None else valid
    assert same(out.values[keep], values[keep])


@pytest.mark.parametrize("kind", ["text", "bytea"])
@HYPO
@given(data=st.data())
def test_var_codecs_hypothesis(kind, data):
    item = st.one_of(st.text(max_size=30).map(lambda s: s.encode("utf-8")),
                     st.binary(max_size=30), st.sampled_from([b"", b"a", b"\x00\xff"]))
    values = data.draw(st.lists(item, max_size=100))
    nulls = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    for codec in codecs_for(kind):
        enc = C.encode_values(to_var(values), kind, codec)
        assert enc == R.encode_values(values, kind, codec)
        assert same(C.decode_values(enc, len(values), kind, codec), values)
    validity = ~np.array(nulls, dtype=bool)
    header, stored = C.encode_chunk(to_var(values), validity, kind)
    out = C.decode_chunk(header, stored, kind)
    assert out.values.to_list(out.validity) == [
        v if ok else None for v, ok in zip(values, validity)]


@pytest.mark.parametrize("kind", ["bool", "uuid", "interval"])
@HYPO
@given(data=st.data())
def test_fixed_codecs_hypothesis(kind, data):
    n = data.draw(st.integers(0, 150))
    if kind == "bool":
        values = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    elif kind == "uuid":
        pool = data.draw(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=4))
        raw = data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
        values = np.frombuffer(b"".join(raw), dtype=UUID_DTYPE).copy()
    else:
        tup = st.tuples(st.integers(-2**63, 2**63 - 1), st.integers(-2**31, 2**31 - 1),
                        st.integers(-2**31, 2**31 - 1))
        pool = data.draw(st.lists(tup, min_size=1, max_size=4))
        values = np.array(data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)),
                          dtype=INTERVAL_DTYPE)
    for codec in codecs_for(kind):
        enc = C.encode_values(values, kind, codec)
        assert enc == R.encode_values(values, kind, codec)
        assert same(C.decode_values(enc, n, kind, codec), values)


# ------------------------------------------------------------ large values

@pytest.mark.parametrize("codec", [Codec.PLAIN, Codec.DICTIONARY])
def test_one_megabyte_strings(codec):
    big = bytes(range(256)) * 4096                        # 1 MiB
    values = [big, "ü".encode() * (1 << 19), big, b"", big[:-1] + b"\xff"]
    enc = C.encode_values(to_var(values), "text", codec)
    assert enc == R.encode_values(values, "text", codec)
    assert same(C.decode_values(enc, len(values), "text", codec), values)
    header, stored = C.encode_chunk(to_var(values), None, "text", compression="zstd")
    assert header.stats.min == b"" and header.stats.min_exact
    assert not header.stats.max_exact and header.stats.max > values[4][:C.STATS_MAX_BYTES]
    assert same(C.decode_chunk(header, stored, "text").values, values)


def test_large_chunk_roundtrip_all_kinds():
    n = 60_000
    for kind in ALL_KINDS:
        values = to_glue(sample(kind, "regular", n, seed=9), kind)
        validity = np.arange(n) % 10 != 3
        header, stored = C.encode_chunk(values, validity, kind)
        out = C.decode_chunk(header, stored, kind)
        assert same(out.validity, validity), kind


# ------------------------------------------------------------ codec choice

def test_choice_regular_timestamps_use_delta_codecs():
    rng = np.random.default_rng(1)
    ts = (np.arange(10_000, dtype=np.int64) * 1_000_000 + rng.integers(-500, 500, 10_000))
    header, stored = C.encode_chunk(ts, None, "timestamptz")
    assert header.codec in (Codec.DELTA, Codec.DELTA_DELTA)
    assert len(stored) < ts.nbytes / 4
    # Steadily growing intervals: only delta-of-delta reaches zero bits.
    accel = np.cumsum(np.arange(10_000, dtype=np.int64))
    assert C.choose_codec(accel, None, "int64").codec == Codec.DELTA_DELTA


def test_choice_per_data_shape():
    n = 10_000
    rng = np.random.default_rng(2)
    assert C.choose_codec(rng.integers(0, 5000, n).astype(np.int32), None,
                          "int32").codec == Codec.BITPACK
    assert C.choose_codec(np.repeat(np.arange(10, dtype=np.int64), n // 10), None,
                          "int64").codec == Codec.RLE
    status = to_var([b"ok", b"degraded", b"failed"][i % 3] for i in rng.integers(0, 3, n))
    assert C.choose_codec(status, None, "text").codec == Codec.DICTIONARY
    unique = to_var([str(i).encode() * 3 for i in range(n)])
    assert C.choose_codec(unique, None, "text").codec == Codec.PLAIN
    smooth = np.full(n, 21.5) + np.repeat(np.arange(n // 20), 20) * 0.5
    assert C.choose_codec(smooth, None, "float64").codec in (
        Codec.GORILLA, Codec.RLE, Codec.DECIMAL)
    noisy = rng.normal(0, 1, n)
    assert C.choose_codec(np.repeat(noisy[:50], 200), None,
                          "float64").codec in (Codec.GORILLA, Codec.RLE)
    assert C.choose_codec(np.round(rng.normal(20, 1, n), 2), None,
                          "float64", compression="none").codec == Codec.PLAIN
    assert C.choose_codec(rng.random(n) < 0.5, None, "bool").codec == Codec.BITMAP
    assert C.choose_codec(np.arange(n) < n // 2, None, "bool").codec == Codec.RLE


def test_compression_settings():
    values = np.tile(np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64) << 40, 2000)
    none = C.choose_codec(values, None, "int64", compression="none")
    assert (none.codec, none.compression) == (Codec.PLAIN, C.Compression.NONE)
    assert C.choose_codec(values, None, "int64", compression="zstd",
                          compression_level=19).compression == C.Compression.ZSTD
    assert C.choose_codec(values, None, "int64", compression="lz4").compression == \
        C.Compression.LZ4
    for bad in [("brotli", None), ("zstd", 23), ("lz4", 13), ("none", 3), ("zstd", "9")]:
        with pytest.raises(InvalidParameterError):
            C.resolve_compression(*bad)
    assert C.resolve_compression("ZSTD", 1) == ("zstd", 1)


def test_forced_codec_must_fit_kind():
    with pytest.raises(InvalidParameterError):
        C.encode_chunk(np.zeros(3, np.float64), None, "float64", codec=Codec.DELTA)
    with pytest.raises(InvalidParameterError):
        C.encode_values(to_var([b"a"]), "text", Codec.GORILLA)


def test_invalid_inputs_are_rejected():
    with pytest.raises(InvalidParameterError):
        C.encode_chunk(np.zeros(3, np.int64), None, "int32")        # narrowing
    with pytest.raises(InvalidParameterError):
        C.encode_chunk(np.zeros(3, np.int32), np.ones(2, bool), "int32")
    with pytest.raises(InvalidParameterError):
        C.encode_chunk((np.array([0, 5, 2]), np.zeros(5, np.uint8)), None, "text")
    with pytest.raises(InvalidParameterError):
        C.encode_chunk(np.zeros(3), None, "money")
    header, stored = C.encode_chunk(np.arange(5, dtype=np.int16), None, "int32")  # widening
    assert same(C.decode_chunk(header, stored, "int32").values, np.arange(5, dtype=np.int32))


def test_var_offsets_need_not_start_at_zero():
    data = np.frombuffer(b"xxhelloworld", dtype=np.uint8)
    values = (np.array([2, 7, 12]), data)
    for codec in (Codec.PLAIN, Codec.DICTIONARY):
        header, stored = C.encode_chunk(values, None, "text", codec=codec)
        assert C.decode_chunk(header, stored, "text").values.to_list() == [b"hello", b"world"]


def test_dictionary_chunk_left_in_dictionary_form():
    """decode_dictionary_chunk: the entries and one code per row (0 for a
    NULL one), which pick the values decode_chunk gives; None for another codec or a
    chunk of NULLs only; codes outside the entries are refused."""
    words = [b"ok", b"", "\u00e9t\u00e9".encode(), b"ok", b"warn", b"", b"ok"]
    validity = np.array([True, True, False, True, True, True, False])
    for compression in ("none", "lz4", "zstd"):
        header, stored = C.encode_chunk(to_var(words), validity, "text", codec=Codec.DICTIONARY,
                                        compression=compression)
        chunk = C.decode_dictionary_chunk(header, stored, "text")
        assert same(chunk.validity, validity)
        entries = chunk.entries.to_list()
        assert len(set(entries)) == len(entries)
        assert len(chunk.codes) == len(words) and not chunk.codes[~validity].any()
        assert [entries[c] for c in chunk.codes[validity]] == [w for w, v in zip(words, validity) if v]
        plain = C.decode_chunk(header, stored, "text").values.to_list()
        assert [p for p, v in zip(plain, validity) if v] == [entries[c] for c in chunk.codes[validity]]
    header, stored = C.encode_chunk(to_var(words), None, "text", codec=Codec.PLAIN, compression="none")
    assert C.decode_dictionary_chunk(header, stored, "text") is None
    header, stored = C.encode_chunk(to_var([b"a", b"b"]), np.zeros(2, bool), "text")
    assert C.decode_dictionary_chunk(header, stored, "text") is None
    # one entry, codes 0 and 1: the second is out of range
    bad = (C._I.pack(1) + C._packed_ints(np.array([1], np.int64)) + b"a" + bytes([Codec.BITPACK])
           + C._packed_ints(np.array([0, 1], np.int32)))
    header, _ = C.encode_chunk(to_var([b"a", b"a"]), None, "text", codec=Codec.DICTIONARY, compression="none")
    header = dataclasses.replace(header, stored_length=len(bad), raw_length=len(bad))
    with pytest.raises(CorruptDataError):
        C.decode_dictionary_chunk(header, bad, "text")


def test_dictionary_entry_lengths_few_and_many_alike():
    """A DICTIONARY section's entry lengths, unpacked with Python ints for a
    few entries and with arrays for more: the same entries, and the same
    refusal of lengths out of range (negative, past the data, too wide a
    bit width), either way."""
    rng = np.random.default_rng(7)
    few = C._FEW_ENTRIES
    for d in (1, 2, few - 1, few, few + 1, 40):
        words = [bytes(rng.integers(97, 123, int(rng.integers(0, 9))).astype(np.uint8)) for _ in range(d)]
        words = list(dict.fromkeys(words))
        lengths = np.array([len(w) for w in words], np.int64)
        codes = np.arange(len(words), dtype=np.int32)
        section = (C._I.pack(len(words)) + C._packed_ints(lengths) + b"".join(words) + bytes([Codec.BITPACK])
                   + C._packed_ints(codes))
        entries, got = C._dictionary_parts(C._Buf(section), len(words))
        assert entries.to_list() == words and same(got, codes)
        for wrong in (lengths - 100, lengths + 1000):
            bad = (C._I.pack(len(words)) + C._packed_ints(wrong) + b"".join(words) + bytes([Codec.BITPACK])
                   + C._packed_ints(codes))
            with pytest.raises(CorruptDataError):
                C._dictionary_parts(C._Buf(bad), len(words))
        wide = C._I.pack(len(words)) + C._PACK.pack(0, 65) + b"\0" * 64
        with pytest.raises(CorruptDataError):
            C._dictionary_parts(C._Buf(wide), len(words))


# ------------------------------------------------------------------ stats

def test_stats_numeric():
    ints = np.array([5, -3, 7, 0], dtype=np.int32)
    s = C.chunk_stats(ints, np.array([True, True, False, True]), "int32")
    assert (s.min, s.max, s.null_count, s.row_count) == (-3, 5, 1, 4), "NULL 7 ignored"
    f = np.array([np.nan, 1.5, -np.inf, 2.0], dtype=np.float32)
    s = C.chunk_stats(f, None, "float32")
    assert (s.min, s.max, s.has_nan) == (-math.inf, 2.0, True)
    s = C.chunk_stats(np.array([np.nan, np.nan]), None, "float64")
    assert s.min is None and s.max is None and s.has_nan, "all-NaN chunk has no bounds"
    s = C.chunk_stats(np.array([True, True]), None, "bool")
    assert (s.min, s.max) == (True, True)
    u = np.frombuffer(bytes([1] * 16 + [0] * 15 + [9] + [1] * 15 + [0]), UUID_DTYPE)
    s = C.chunk_stats(u, None, "uuid")
    assert s.min == bytes([0] * 15 + [9]) and s.max == bytes([1] * 16)
    s = C.chunk_stats(np.zeros(2, INTERVAL_DTYPE), None, "interval")
    assert s.min is None and s.max is None, "interval bounds are not recorded"


def test_stats_var_truncation_keeps_bounds():
    long_hi = b"\xff" * 100
    values = [b"b" * 100, b"a" * 65 + b"\xff" * 10, b"abc"]
    s = C.chunk_stats(to_var(values), None, "text")
    assert s.min == b"a" * 64 and not s.min_exact, "truncated min is a prefix"
    assert s.max == b"b" * 63 + b"c" and not s.max_exact
    assert all(s.min <= v <= s.max for v in values), "bounds must enclose every value"
    s = C.chunk_stats(to_var([long_hi]), None, "bytea")
    assert s.max is None, "no upper bound exists for a long all-0xff prefix"
    s = C.chunk_stats(to_var([b"\x00" * 5, "é".encode()]), None, "text")
    assert (s.min, s.max, s.min_exact, s.max_exact) == (b"\x00" * 5, "é".encode(), True, True)


# --------------------------------------------------------- kernels vs numpy

@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 4099])
def test_bitmap_kernels_match_numpy(n):
    flags = np.random.default_rng(n).integers(0, 3, n).astype(np.uint8)  # 2 counts as set
    out = np.empty((n + 7) // 8, np.uint8)
    ones = ci.bitmap_pack(flags, out)
    assert out.tobytes() == np.packbits(flags != 0, bitorder="little").tobytes()
    assert ones == int(np.count_nonzero(flags))
    back = np.empty(n, np.uint8)
    assert ci.bitmap_unpack(out, back) == ones
    assert (back == (flags != 0)).all()


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64])
@pytest.mark.parametrize("width", [0, 1, 7, 13, 31, 56, 57, 63, 64])
def test_for_pack_all_widths(dtype, width):
    info = np.iinfo(dtype)
    span = min((1 << width) - 1, int(info.max) - int(info.min))
    rng = np.random.default_rng(width)
    base = int(info.min) if width else 5
    values = (base + rng.integers(0, span, 999, endpoint=True, dtype=np.uint64).astype(object)
              ).astype(dtype) if width else np.full(999, base, dtype)
    need = (int(values.max()) - int(values.min())).bit_length() if len(values) else 0
    if need > width:
        pytest.skip("dtype too narrow for this width")
    out = np.zeros(ci.packed_size(len(values), width), np.uint8)
    ci.for_pack(values, int(values.min()), width, out)
    assert out.tobytes() == R.pack_fields([int(v) - int(values.min()) for v in values], width)
    back = np.empty(len(values), dtype)
    ci.for_unpack(out, int(values.min()), width, back)
    assert (back == values).all()


def test_for_unpack_narrow_outputs_match_numpy_reference():
    """for_unpack into int16 / int32 (blocks unpacked at once when every value
    of base .. base + mask fits, checked value by value otherwise) equals the
    numpy reference: the fields plus base modulo 2**64, or CorruptDataError
    when one does not fit."""
    rng = np.random.default_rng(31)
    for trial in range(1500):
        width = int(rng.integers(0, 65))
        count = int(rng.integers(0, 1300))
        packed = rng.integers(0, 256, (count * width + 7) // 8 + int(rng.integers(0, 9)), dtype=np.uint8).tobytes()
        dtype = (np.int16, np.int32)[trial % 2]
        info = np.iinfo(dtype)
        mask = (1 << width) - 1
        base = [int(rng.integers(-2**63, 2**63 - 1)), int(info.min) + int(rng.integers(-2, 3)),
                int(info.max) - mask + int(rng.integers(-2, 3)), int(rng.integers(-1000, 1000))][trial % 4]
        base = min(max(base, -2**63), 2**63 - 1)
        fields = np.array(R.unpack_fields(packed, count, width), dtype=np.uint64) if count else np.zeros(0, np.uint64)
        want = (fields + np.uint64(base & (2**64 - 1))).view(np.int64)
        out = np.empty(count, dtype)
        if ((want >= info.min) & (want <= info.max)).all():
            ci.for_unpack(packed, base, width, out)
            assert np.array_equal(out.astype(np.int64), want), (width, count, base)
        else:
            with pytest.raises(CorruptDataError):
                ci.for_unpack(packed, base, width, out)


def test_for_pack_rejects_values_that_do_not_fit():
    with pytest.raises(ValueError):
        ci.for_pack(np.array([0, 8], np.int32), 0, 3, np.zeros(1, np.uint8))


def test_int_stats_matches_numpy():
    rng = np.random.default_rng(5)
    v = rng.integers(-2**63, 2**63 - 1, 1000, dtype=np.int64)
    with np.errstate(over="ignore"):
        d = np.diff(v.view(np.uint64)).view(np.int64)
        dd = np.diff(d.view(np.uint64)).view(np.int64)
    st_ = ci.int_stats(v)
    assert st_[:6] == (v.min(), v.max(), d.min(), d.max(), dd.min(), dd.max())
    assert st_[6] == 1000, "all runs have length 1"


def test_rle_kernels_match_numpy():
    v = np.repeat(np.array([3, 3, 9, 1, 1, 1], np.uint16), [2, 1, 5, 1, 1, 7])
    change = np.flatnonzero(np.diff(v)) + 1
    starts = np.concatenate([[0], change])
    r = ci.rle_count(v)
    assert r == len(starts)
    vals = np.empty(r, np.uint16)
    lens = np.empty(r, np.int64)
    ci.rle_encode(v, vals, lens)
    assert (vals == v[starts]).all() and (lens == np.diff(np.append(starts, len(v)))).all()
    out = np.empty(len(v), np.uint16)
    ci.rle_decode(vals, lens, out)
    assert (out == v).all()
    with pytest.raises(CorruptDataError):
        ci.rle_decode(vals, lens + 1, out)
    with pytest.raises(CorruptDataError):
        ci.rle_decode(vals, lens * 0, out)


def test_dictionary_and_minmax_kernels_match_python():
    words = [b"b", b"a", b"", b"b", b"ab", b"a", b"\xff", b""]
    vb = to_var(words)
    codes = np.empty(len(words), np.int32)
    first = np.empty(len(words), np.int32)
    d = cb.dict_build(vb.offsets, vb.data, codes, first, len(words))
    order = list(dict.fromkeys(words))
    assert d == len(order) and [order[c] for c in codes] == words
    assert [words[i] for i in first[:d]] == order
    assert cb.dict_build(vb.offsets, vb.data, codes, first, 2) == -1, "cap exceeded"
    imin, imax = cb.var_minmax(vb.offsets, vb.data)
    assert words[imin] == min(words) and words[imax] == max(words)


def test_gorilla_windows_and_sizes():
    # First value, an identical value, a new window, a reused window.
    values = np.array([1.0, 1.0, 1.5, 1.75, -0.0, np.nan], dtype=np.float64)
    enc = C.encode_values(values, "float64", Codec.GORILLA)
    assert enc == R.encode_values(values, "float64", Codec.GORILLA)
    assert len(enc) <= cf.gorilla_max_size(len(values), 64)
    assert cf.gorilla_max_size(0, 32) == 0


def test_narrow_int_decoders_reject_out_of_range_values():
    enc = bytearray(C.encode_values(np.array([32767, 32767], np.int16), "int16", Codec.DELTA))
    enc[0:8] = struct.pack("<q", 40000)             # first value beyond int16
    with pytest.raises(CorruptDataError):
        C.decode_values(bytes(enc), 2, "int16", Codec.DELTA)


# ---------------------------------------------------------------- decimals

@pytest.mark.parametrize("kind", FLOAT_KINDS)
@HYPO
@given(data=st.data())
def test_decimal_codec_hypothesis(kind, data):
    digits = data.draw(st.integers(0, 6))
    ints = data.draw(st.lists(st.integers(-10**9, 10**9), max_size=120))
    values = (np.array(ints, dtype=np.float64) / 10.0 ** digits).astype(KINDS[kind].dtype)
    enc, ref = encode_both(values, kind, Codec.DECIMAL)
    if enc is None:
        return          # float32 cannot hold every such decimal exactly
    assert enc == ref
    assert enc[0] <= digits, "smallest exponent that works"
    assert same(C.decode_values(enc, len(values), kind, Codec.DECIMAL), values)


def test_decimal_codec_rejects_what_it_cannot_restore():
    for bad in ([0.1, -0.0], [1.0, np.nan], [np.inf], [2.0 ** 60]):
        with pytest.raises(InvalidParameterError):
            C.encode_values(np.array(bad), "float64", Codec.DECIMAL)
    third = np.array([1 / 3, 0.25])             # exact at 16 digits, within 2**53
    enc = C.encode_values(third, "float64", Codec.DECIMAL)
    assert enc[0] == 16 and same(C.decode_values(enc, 2, "float64", Codec.DECIMAL), third)


def test_decimal_metrics_choose_decimal():
    rng = np.random.default_rng(8)
    metric = np.round(50 + np.cumsum(rng.normal(0, 0.05, 10_000)), 2)
    header, stored = C.encode_chunk(metric, None, "float64")
    assert header.codec == Codec.DECIMAL
    assert len(stored) < metric.nbytes / 6
    assert same(C.decode_chunk(header, stored, "float64").values, metric)
    f32 = np.round(rng.normal(20, 3, 10_000), 1).astype(np.float32)
    assert C.choose_codec(f32, None, "float32").codec == Codec.DECIMAL
    gappy = metric.copy()
    gappy[5], gappy[77], gappy[78] = np.nan, -0.0, np.inf       # kept as exceptions
    header, stored = C.encode_chunk(gappy, None, "float64")
    assert header.codec == Codec.DECIMAL and len(stored) < metric.nbytes / 6
    assert same(C.decode_chunk(header, stored, "float64").values, gappy)
    noise = rng.normal(0, 1, 10_000)
    assert C.choose_codec(noise, None, "float64").codec != Codec.DECIMAL


def _decimal_unpack_reference(packed: bytes, count: int, base: int, width: int, e: int, dtype) -> np.ndarray:
    """numpy reference of codecs_float.decimal_unpack: the fields, plus base
    modulo 2**64, divided by 10**e as doubles, then cast."""
    fields = np.array(R.unpack_fields(packed, count, width), dtype=np.uint64) if count else np.zeros(0, np.uint64)
    ints = (fields + np.uint64(base & (2**64 - 1))).view(np.int64)
    return (ints.astype(np.float64) / np.float64(10.0 ** e)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decimal_unpack_matches_numpy_reference(dtype):
    """The fused BITPACK + DECIMAL decode equals unpacking then dividing, bit
    for bit: every width, bases at the edges of its exact conversion range
    (+-2**51), blocks with spare bytes or without (the scalar tail)."""
    rng = np.random.default_rng(21)
    limit = 1 << 51
    for trial in range(600):
        width = int(rng.integers(0, 65)) if trial % 3 else int(rng.integers(1, 20))
        count = int(rng.integers(0, 1500))
        spare = int(rng.integers(0, 9))
        packed = rng.integers(0, 256, (count * width + 7) // 8 + spare, dtype=np.uint8).tobytes()
        mask = (1 << width) - 1
        base = [int(rng.integers(-2**63, 2**63 - 1)), -limit + int(rng.integers(-2, 3)),
                limit - 1 - mask + int(rng.integers(-2, 3)), int(rng.integers(-10**6, 10**6))][trial % 4]
        base = max(base, -2**63)
        e = int(rng.integers(0, cf.DECIMAL_MAX_EXPONENT + 1))
        out = np.empty(count, dtype)
        cf.decimal_unpack(packed, base, width, e, out)
        want = _decimal_unpack_reference(packed, count, base, width, e, dtype)
        assert out.tobytes() == want.tobytes(), (width, count, base, e)
        # and the two-step kernels it replaces
        ints = np.empty(count, np.int64)
        ci.for_unpack(packed, base, width, ints)
        two_step = np.empty(count, dtype)
        cf.decimal_decode(ints, e, two_step)
        assert out.tobytes() == two_step.tobytes()


def test_decimal_unpack_rejects_bad_blocks():
    out = np.empty(10, np.float64)
    with pytest.raises(CorruptDataError):
        cf.decimal_unpack(b"\0" * 12, 0, 10, 2, out)         # 10 x 10 bits need 13 bytes
    with pytest.raises(CorruptDataError):
        cf.decimal_unpack(b"\0" * 200, 0, 65, 2, out)
    with pytest.raises(CorruptDataError):
        cf.decimal_unpack(b"\0" * 13, 0, 10, cf.DECIMAL_MAX_EXPONENT + 1, out)


@pytest.mark.parametrize("kind", FLOAT_KINDS)
def test_decimal_over_bitpack_decodes_as_the_reference(kind):
    """Two-decimal metrics take DECIMAL over BITPACK (the fused decode)."""
    rng = np.random.default_rng(4)
    values = np.round(rng.uniform(-20, 100, 5000), 2).astype(KINDS[kind].dtype)
    values[[7, 900]] = np.nan
    enc = C.encode_values(values, kind, Codec.DECIMAL)
    assert enc[1] == Codec.BITPACK, "sub-codec"
    assert same(C.decode_values(enc, len(values), kind, Codec.DECIMAL), values)
    assert same(R.decode_values(enc, len(values), kind, Codec.DECIMAL), values)


@pytest.mark.parametrize("kind", FLOAT_KINDS)
def test_decimal_exceptions_match_reference(kind):
    values = np.round(np.linspace(-3, 3, 200), 2).astype(KINDS[kind].dtype)
    bits = values.view(np.uint32 if kind == "float32" else np.uint64)
    values[0] = np.nan
    values[50] = np.nan
    bits[50] = bits[50] | np.array(1, dtype=bits.dtype)         # a NaN with a payload
    values[51] = -0.0
    values[199] = -np.inf
    enc, ref = encode_both(values, kind, Codec.DECIMAL)
    assert enc == ref
    assert int.from_bytes(enc[2:6], "little") == 4, "four exceptions"
    assert same(C.decode_values(enc, len(values), kind, Codec.DECIMAL), values)
    assert same(R.decode_values(enc, len(values), kind, Codec.DECIMAL), values)
    too_many = values.copy()
    too_many[::10] = np.nan                                      # 1/10 > 1/16
    assert encode_both(too_many, kind, Codec.DECIMAL) == (None, None)


@pytest.mark.parametrize("kind,codec", KIND_CODECS)
def test_decoded_arrays_are_owned_and_writable(kind, codec):
    values = sample(kind, "regular", 64, seed=1)
    validity = np.arange(64) % 5 != 0
    header, stored = C.encode_chunk(to_glue(values, kind), validity, kind, codec=codec,
                                    compression="none")
    out = C.decode_chunk(header, stored, kind)
    arrays = [out.validity] + (list(out.values) if isinstance(out.values, VarBytes)
                               else [out.values])
    for a in arrays:
        assert a.flags.writeable, "callers may modify decoded columns in place"
        assert not np.shares_memory(a, np.frombuffer(stored, np.uint8))


def test_regression_random_walk_rounding_to_negative_zero():
    # np.round of a value just below zero gives -0.0, which no scaled integer
    # restores; it once made DECIMAL refuse a whole million-row metric column.
    walk = np.round(np.cumsum(np.r_[0.004, -0.008, np.full(98, 0.01)]), 2)
    assert np.signbit(walk[1]) and walk[1] == 0
    header, stored = C.encode_chunk(walk, None, "float64")
    assert header.codec == Codec.DECIMAL
    assert same(C.decode_chunk(header, stored, "float64").values, walk)
