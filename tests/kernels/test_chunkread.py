"""The native column chunk reader (``kernels.chunkread.read_column``) against
its reference, :func:`orochi_fdw.storage.codecs.decode_chunk` chunk by chunk:
a chunk it decodes must come out bit for bit as the reference decodes it, and
a chunk the reference refuses (bad bytes, bad header, bad checksum, short
file) must be declined, never decoded, never crash. Bounded: fixed example
counts, a few seconds in total."""

from __future__ import annotations

import dataclasses
import os
import zlib

import lz4.block
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec_fuzz_helpers import mutate
from orochi_fdw.errors import CorruptDataError
from orochi_fdw.kernels import chunkread as CR
from orochi_fdw.storage import codecs as C
from orochi_fdw.storage.kinds import INTERVAL_DTYPE, KINDS, UUID_DTYPE

FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

KINDS_READ = ["bool", "int16", "int32", "int64", "timestamptz", "date", "float32", "float64",
              "uuid", "interval", "decimal64_2"]
#: (codec, compression) pairs the native reader decodes itself (others it declines)
NATIVE_CODECS = {C.Codec.PLAIN, C.Codec.BITPACK, C.Codec.DELTA, C.Codec.DELTA_DELTA, C.Codec.RLE,
                 C.Codec.DECIMAL}
NATIVE_COMPRESSIONS = {C.Compression.NONE, C.Compression.LZ4}


def _values(kind: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed + len(kind))
    k = KINDS[kind]
    if kind == "bool":
        return rng.random(n) < 0.4
    if kind == "uuid":
        return rng.integers(0, 256, (n, 16), dtype=np.uint8).view(UUID_DTYPE).reshape(-1)
    if kind == "interval":
        v = np.zeros(n, INTERVAL_DTYPE)
        v["time"] = np.arange(n) // 4
        return v
    if k.physical == "float":
        return np.round(np.cumsum(rng.normal(0, 1, n)), 2).astype(k.dtype)
    if kind == "int16":
        return rng.integers(-30000, 30000, n).astype(k.dtype)
    return (np.cumsum(rng.integers(-3, 40, n)) // 2).astype(k.dtype)


def _corpus():
    items = []
    for kind in KINDS_READ:
        phys = KINDS[kind].physical
        for n, validity in ((97, None), (120, np.arange(120) % 11 != 5), (40, np.zeros(40, bool))):
            values = _values(kind, n)
            for codec in sorted(c for c, s in C.CODECS.items() if phys in s.physicals):
                for comp in ("none", "lz4", "zstd"):
                    try:
                        header, stored = C.encode_chunk(values, validity, kind, codec=codec, compression=comp)
                    except Exception:  # noqa: BLE001 - a codec that does not apply to these values
                        continue
                    items.append((kind, header, stored))
    rng = np.random.default_rng(3)
    for kind in ("float32", "float64"):
        dtype = KINDS[kind].dtype
        specials = np.round(rng.uniform(0, 100, 300), 2)
        specials[[3, 50, 51, 299]] = [np.nan, -0.0, np.inf, 1e-300]   # DECIMAL's exceptions
        for values in (np.round(rng.uniform(0, 100, 300), 2), specials,
                       np.round(rng.uniform(2.0**50, 2.0**51, 120)), np.round(rng.uniform(-4e15, 4e15, 120)),
                       np.full(64, 12.5), np.repeat([1.25, 9e6, 3.5, -7e7], [100, 90, 1, 50])):
            for comp in ("none", "lz4"):
                header, stored = C.encode_chunk(values.astype(dtype), None, kind, codec=C.Codec.DECIMAL,
                                                compression=comp)
                items.append((kind, header, stored))
    # runs (RLE's values: each width, booleans, runs of one row, one run)
    for kind in KINDS_READ:
        values = _values(kind, 150, seed=5)
        for picks in (np.repeat(np.arange(15), 10), np.repeat([0, 3, 3, 7], [1, 100, 48, 1]), np.zeros(150, int),
                      np.repeat(np.arange(60), [1, 2, 3, 4, 5] * 12)[:150]):
            for validity in (None, np.arange(150) % 13 != 1):
                items.append((kind, *C.encode_chunk(values[picks], validity, kind, codec=C.Codec.RLE,
                                                    compression="none")))
    # narrow integers whose frame of reference needs the per-value range check
    for kind in ("int16", "int32"):
        values = np.array([KINDS[kind].dtype.type(np.iinfo(KINDS[kind].dtype).min), 0,
                           np.iinfo(KINDS[kind].dtype).max] * 30, dtype=KINDS[kind].dtype)
        for codec in (C.Codec.BITPACK, C.Codec.DELTA, C.Codec.DELTA_DELTA):
            items.append((kind, *C.encode_chunk(values, None, kind, codec=codec, compression="none")))
    return items


CORPUS = _corpus()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    fd = os.open(tmp_path_factory.mktemp("chunkread") / "chunks", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def _native(fd, kind, chunks, verify=True, crcs=None):
    """read_column over ``chunks`` ((header, stored bytes) each) written one
    after the other to ``fd``: (status, values, validity as uint8)."""
    k = KINDS[kind]
    os.ftruncate(fd, 0)
    offsets, pos = [], 7   # an odd start: nothing assumes alignment in the file
    for _h, stored in chunks:
        offsets.append(pos)
        os.pwrite(fd, stored, pos)
        pos += len(stored)
    rows = np.array([h.row_count for h, _s in chunks], dtype=np.uint32)
    starts = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(rows, out=starts[1:])
    values = np.full(int(starts[-1]), 0x5A, dtype=np.uint8).view(k.dtype) if k.width == 1 else \
        np.frombuffer(b"\x5a" * (int(starts[-1]) * k.width), dtype=k.dtype).copy()
    valid = np.full(int(starts[-1]), 7, dtype=np.uint8)
    status = np.empty(len(chunks), dtype=np.uint8)
    crc = [zlib.crc32(s) for _h, s in chunks] if crcs is None else crcs
    left = CR.read_column(
        fd, zlib.crc32, verify, lz4.block.decompress,
        np.array(offsets, dtype=np.uint64), np.array([len(s) for _h, s in chunks], dtype=np.uint64),
        np.array([h.raw_length for h, _s in chunks], dtype=np.uint64), np.array(crc, dtype=np.uint32),
        np.array([h.codec for h, _s in chunks], dtype=np.uint8),
        np.array([h.compression for h, _s in chunks], dtype=np.uint8), rows,
        np.array([h.null_count for h, _s in chunks], dtype=np.uint32), starts[:-1],
        CR.PHYSICALS[k.physical], k.width, values.view(np.uint8), valid, status)
    assert left == int(np.count_nonzero(status))
    return status, values, valid, starts


def _reference(header, stored, kind):
    try:
        return C.decode_chunk(header, stored, kind)
    except CorruptDataError:
        return None


def _same(ref, values, valid):
    assert values.tobytes() == ref.values.tobytes()
    if ref.validity is None:
        assert (valid == 1).all()
    else:
        assert (valid == ref.validity.view(np.uint8)).all()


def _native_one(fd, kind, header, stored, verify=True):
    """read_chunk of ``stored`` written to ``fd``: (decoded, values, validity)."""
    k = KINDS[kind]
    os.ftruncate(fd, 0)
    os.pwrite(fd, stored, 3)
    values = np.empty(header.row_count, dtype=k.dtype)
    valid = np.empty(header.row_count, dtype=np.uint8)
    done = CR.read_chunk(fd, zlib.crc32, verify, lz4.block.decompress, 3, len(stored), header.raw_length,
                         zlib.crc32(stored), header.codec, header.compression, header.row_count,
                         header.null_count, CR.PHYSICALS[k.physical], k.width, values.view(np.uint8), valid)
    return done, values, valid


def _check(fd, kind, header, stored, verify=False):
    """One chunk through both native entry points and the reference: they
    decode only what the reference decodes, to the same column."""
    if not (0 <= header.row_count < 2**32 and 0 <= header.null_count < 2**32
            and 0 <= header.raw_length < 2**64 and 0 <= header.codec < 256 and 0 <= header.compression < 256):
        return None  # not representable in a footer entry
    if header.row_count > 5000:
        return None  # (the output would be as large)
    status, values, valid, _starts = _native(fd, kind, [(header, stored)], verify=verify)
    ref = _reference(header, stored, kind)
    if status[0] == 0:
        assert ref is not None, (kind, header)
        _same(ref, values, valid)
    done, values, valid = _native_one(fd, kind, header, stored, verify=verify)
    assert done == (status[0] == 0), (kind, header)
    if done:
        _same(ref, values, valid)
    return status[0]


def test_corpus_matches_the_reference(scratch):
    assert len(CORPUS) > 100
    declined = 0
    decimal_subs = set()
    for kind, header, stored in CORPUS:
        status = _check(scratch, kind, header, stored, verify=True)
        native = header.compression in NATIVE_COMPRESSIONS and (
            header.null_count == header.row_count  # no values section, whatever the codec
            or header.codec in NATIVE_CODECS)
        assert status == (0 if native else 1), (kind, header)
        declined += int(status)
        if header.codec == C.Codec.DECIMAL:
            decimal_subs.add(_decimal_sub(header, stored))
    assert declined < len(CORPUS)
    assert C.Codec.RLE in decimal_subs and C.Codec.BITPACK in decimal_subs


def _decimal_sub(header, stored) -> int:
    raw = stored if header.compression == C.Compression.NONE else \
        lz4.block.decompress(stored, uncompressed_size=header.raw_length)
    skip = (header.row_count + 7) // 8 if header.null_count else 0
    return raw[skip + 1]


def test_many_chunks_in_one_call_a_bad_one_declined_alone(scratch):
    kind = "float64"
    chunks = [C.encode_chunk(_values(kind, n, seed=n), validity, kind, codec=C.Codec.DECIMAL, compression=comp)
              for n, validity, comp in ((500, None, "none"), (333, np.arange(333) % 3 != 0, "lz4"),
                                        (10, None, "none"), (1000, None, "auto"))]
    status, values, valid, starts = _native(scratch, kind, chunks)
    assert not status.any()
    for i, (h, s) in enumerate(chunks):
        _same(C.decode_chunk(h, s, kind), values[starts[i]:starts[i + 1]], valid[starts[i]:starts[i + 1]])
    # a wrong checksum: only that chunk is declined (and checked only when asked)
    crcs = [zlib.crc32(s) for _h, s in chunks]
    crcs[1] ^= 1
    status, values, valid, starts = _native(scratch, kind, chunks, crcs=crcs)
    assert status.tolist() == [0, 1, 0, 0]
    assert (valid[starts[1]:starts[2]] == 7).all()   # not read: the checksum comes first
    assert not _native(scratch, kind, chunks, verify=False, crcs=crcs)[0].any()


def test_short_file_is_declined(scratch):
    kind = "int64"
    h, s = C.encode_chunk(_values(kind, 300), None, kind, codec=C.Codec.BITPACK, compression="none")
    os.ftruncate(scratch, 0)
    status = _native(scratch, kind, [(h, s)])[0]
    assert status[0] == 0
    # the file cut inside the chunk: the read comes back short
    k = KINDS[kind]
    valid = np.empty(h.row_count, np.uint8)
    out = np.empty(h.row_count, k.dtype)
    st_ = np.empty(1, np.uint8)
    os.ftruncate(scratch, 7 + len(s) // 2)
    assert CR.read_column(scratch, zlib.crc32, False, lz4.block.decompress,
                          np.array([7], np.uint64), np.array([len(s)], np.uint64),
                          np.array([h.raw_length], np.uint64), np.array([0], np.uint32),
                          np.array([h.codec], np.uint8), np.array([0], np.uint8),
                          np.array([h.row_count], np.uint32), np.array([0], np.uint32), np.array([0], np.int64),
                          CR.PHYSICALS[k.physical], 8, out.view(np.uint8), valid, st_) == 1


def test_read_chunk_checks_the_checksum(scratch):
    kind = "float64"
    h, s = C.encode_chunk(_values(kind, 300), None, kind, compression="none")
    os.ftruncate(scratch, 0)
    os.pwrite(scratch, s, 0)
    out, valid = np.empty(300), np.empty(300, np.uint8)
    args = (scratch, zlib.crc32, True, lz4.block.decompress, 0, len(s), h.raw_length)
    rest = (h.codec, h.compression, 300, 0, CR.PHYSICALS["float"], 8, out.view(np.uint8), valid)
    assert CR.read_chunk(*args, zlib.crc32(s), *rest)
    assert not CR.read_chunk(*args, zlib.crc32(s) ^ 4, *rest)
    assert CR.read_chunk(scratch, zlib.crc32, False, lz4.block.decompress, 0, len(s), h.raw_length,
                         zlib.crc32(s) ^ 4, *rest)
    with pytest.raises(ValueError):  # an output of another size
        CR.read_chunk(*args, zlib.crc32(s), h.codec, h.compression, 301, 0, CR.PHYSICALS["float"], 8,
                      out.view(np.uint8), valid)


def test_inconsistent_arguments_are_refused(scratch):
    one64, one32, one8 = np.ones(1, np.uint64), np.ones(1, np.uint32), np.zeros(1, np.uint8)
    with pytest.raises(ValueError):  # rows past the output
        CR.read_column(scratch, zlib.crc32, False, lz4.block.decompress, one64, one64, one64, one32, one8, one8,
                       np.array([5], np.uint32), one32, np.array([0], np.int64), 2, 8,
                       np.zeros(32, np.uint8), np.zeros(4, np.uint8), np.zeros(1, np.uint8))
    with pytest.raises(ValueError):  # an unknown physical kind
        CR.read_column(scratch, zlib.crc32, False, lz4.block.decompress, one64, one64, one64, one32, one8, one8,
                       one32, one32, np.array([0], np.int64), 9, 8,
                       np.zeros(8, np.uint8), np.zeros(1, np.uint8), np.zeros(1, np.uint8))


def test_every_truncation_is_declined(scratch):
    for kind, header, stored in CORPUS[::7]:
        for cut in range(0, len(stored), max(1, len(stored) // 40)):
            _check(scratch, kind, header, stored[:cut])
            _check(scratch, kind, dataclasses.replace(header, stored_length=cut, raw_length=cut), stored[:cut])


@FUZZ
@given(item=st.sampled_from(CORPUS), data=st.data())
def test_mutated_payloads(scratch, item, data):
    kind, header, stored = item
    buf = mutate(stored, data)
    h = header
    if data.draw(st.booleans()):
        h = dataclasses.replace(header, stored_length=len(buf), raw_length=len(buf))
    _check(scratch, kind, h, buf)


@FUZZ
@given(item=st.sampled_from(CORPUS), data=st.data())
def test_mutated_headers(scratch, item, data):
    kind, header, stored = item
    big = st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1), st.just(C.MAX_CHUNK_ROWS + 1))
    field = data.draw(st.sampled_from(["codec", "compression", "row_count", "null_count", "raw_length"]))
    value = data.draw(big)
    if field in ("codec", "compression"):
        value &= 0xFF
    _check(scratch, kind, dataclasses.replace(header, **{field: value}), stored)


# ------------------------------------------------------------ dictionary chunks

def _text_values(n: int, distinct: int, seed: int = 0):
    """n text values drawn from ``distinct`` words (one empty), as (offsets, data)."""
    rng = np.random.default_rng(seed)
    words = [b""] + [("w%d\u00e9" % i).encode() * (1 + i % 3) for i in range(1, distinct)]
    picks = rng.integers(0, distinct, n)
    if seed % 2:
        picks = np.sort(picks)   # long runs: codes coded RLE
    lengths = np.array([len(words[i]) for i in picks], dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.frombuffer(b"".join(words[i] for i in picks), dtype=np.uint8).copy()


def _dictionary_corpus():
    items = []
    for seed, (n, distinct) in enumerate(((200, 4), (200, 4), (300, 40), (301, 40), (9, 1), (64, 17))):
        values = _text_values(n, distinct, seed)
        for validity in (None, np.arange(n) % 7 != 3):
            for comp in ("none", "lz4", "zstd"):
                items.append(C.encode_chunk(values, validity, "text", codec=C.Codec.DICTIONARY, compression=comp))
    return items


DICTIONARY_CORPUS = _dictionary_corpus()


def _native_dictionary(fd, header, stored, verify=True, crc=None):
    os.ftruncate(fd, 0)
    os.pwrite(fd, stored, 5)
    return CR.read_dictionary(fd, zlib.crc32, verify, lz4.block.decompress, 5, len(stored), header.raw_length,
                              zlib.crc32(stored) if crc is None else crc, header.codec, header.compression,
                              header.row_count, header.null_count)


def _check_dictionary(fd, header, stored):
    """The native dictionary reader decodes only what the reference
    (decode_dictionary_chunk) decodes, to the same dictionary form."""
    if not (0 <= header.row_count < 2**32 and 0 <= header.null_count < 2**32 and 0 <= header.raw_length < 2**64
            and 0 <= header.codec < 256 and 0 <= header.compression < 256) or header.row_count > 5000:
        return None
    got = _native_dictionary(fd, header, stored, verify=False)
    try:
        ref = C.decode_dictionary_chunk(header, stored, "text")
    except CorruptDataError:
        ref = None
    if got is not None:
        assert ref is not None, header
        offsets, data, codes, validity = got
        assert offsets.tolist() == ref.entries.offsets.tolist()
        assert data.tobytes() == ref.entries.data.tobytes()
        assert codes.dtype == np.int32 and codes.tolist() == ref.codes.tolist()
        assert (validity is None) == (ref.validity is None)
        if validity is not None:
            assert validity.dtype == np.bool_ and validity.tolist() == ref.validity.tolist()
    return got


def _codes_codec(header, stored, d: int, entry_bytes: int) -> int:
    """The codec of a DICTIONARY chunk's codes (its byte after the entries)."""
    raw = stored if header.compression == C.Compression.NONE else \
        lz4.block.decompress(stored, uncompressed_size=header.raw_length)
    at = (header.row_count + 7) // 8 if header.null_count else 0
    width = raw[at + 4 + 8]
    return raw[at + 4 + 9 + (d * width + 7) // 8 + entry_bytes]


def test_dictionary_corpus_matches_the_reference(scratch):
    """Every DICTIONARY chunk of none / lz4 compression read natively, to the
    dictionary form of decode_dictionary_chunk and the values of
    decode_chunk; zstd and other codecs declined without being read."""
    codes_codecs = set()
    for header, stored in DICTIONARY_CORPUS:
        got = _check_dictionary(scratch, header, stored)
        assert (got is None) == (header.compression == C.Compression.ZSTD), header
        if got is None:
            continue
        offsets, data, codes, validity = got
        plain = C.decode_chunk(header, stored, "text").values.to_list()
        entries = [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
        assert [entries[c] if validity is None or validity[i] else b"" for i, c in enumerate(codes)] == plain
        codes_codecs.add(_codes_codec(header, stored, len(entries), len(data)))
    assert codes_codecs == {C.Codec.BITPACK, C.Codec.RLE}
    plain_header, plain = C.encode_chunk(_text_values(50, 4), None, "text", codec=C.Codec.PLAIN, compression="none")
    os.ftruncate(scratch, 0)   # (nothing in the file: declined before any read)
    assert CR.read_dictionary(scratch, zlib.crc32, True, lz4.block.decompress, 0, len(plain), plain_header.raw_length,
                              0, plain_header.codec, 0, 50, 0) is None


def test_dictionary_checksum_and_short_reads(scratch):
    header, stored = DICTIONARY_CORPUS[1]
    assert _native_dictionary(scratch, header, stored) is not None
    assert _native_dictionary(scratch, header, stored, crc=zlib.crc32(stored) ^ 1) is None
    assert _native_dictionary(scratch, header, stored, verify=False, crc=zlib.crc32(stored) ^ 1) is not None
    os.ftruncate(scratch, 5 + len(stored) - 1)
    assert CR.read_dictionary(scratch, zlib.crc32, False, lz4.block.decompress, 5, len(stored), header.raw_length,
                              0, header.codec, header.compression, header.row_count, header.null_count) is None


def test_dictionary_every_truncation_is_declined(scratch):
    for header, stored in DICTIONARY_CORPUS[::5]:
        for cut in range(0, len(stored), max(1, len(stored) // 30)):
            _check_dictionary(scratch, header, stored[:cut])
            _check_dictionary(scratch, dataclasses.replace(header, stored_length=cut, raw_length=cut), stored[:cut])


@FUZZ
@given(item=st.sampled_from(DICTIONARY_CORPUS), data=st.data())
def test_dictionary_mutated_payloads(scratch, item, data):
    header, stored = item
    buf = mutate(stored, data)
    if data.draw(st.booleans()):
        header = dataclasses.replace(header, stored_length=len(buf), raw_length=len(buf))
    _check_dictionary(scratch, header, buf)


@FUZZ
@given(item=st.sampled_from(DICTIONARY_CORPUS), data=st.data())
def test_dictionary_mutated_headers(scratch, item, data):
    header, stored = item
    field = data.draw(st.sampled_from(["codec", "compression", "row_count", "null_count", "raw_length"]))
    value = data.draw(st.one_of(st.integers(0, 400), st.integers(0, 2**32 - 1), st.just(C.MAX_CHUNK_ROWS + 1)))
    if field in ("codec", "compression"):
        value &= 0xFF
    _check_dictionary(scratch, dataclasses.replace(header, **{field: value}), stored)


def test_chunks_of_other_codecs_are_declined_unread(scratch):
    """A chunk whose codec (or compression) the native reader does not
    decode is declined before it is read or checksummed: the caller reads it
    once, through the Python decoder."""
    calls = []

    def checksum(buf):
        calls.append(len(buf))
        return zlib.crc32(buf)

    kind = "float64"
    gorilla = C.encode_chunk(_values(kind, 300), None, kind, codec=C.Codec.GORILLA, compression="none")
    zstd = C.encode_chunk(np.tile(np.arange(10.0), 30), None, kind, codec=C.Codec.PLAIN, compression="zstd")
    assert gorilla[0].codec == C.Codec.GORILLA and zstd[0].compression == C.Compression.ZSTD
    plain = C.encode_chunk(_values(kind, 300), None, kind, codec=C.Codec.PLAIN, compression="none")
    rle = C.encode_chunk(np.repeat(np.arange(5.0), 60), None, kind, codec=C.Codec.RLE, compression="none")
    for (h, s), read in ((gorilla, False), (zstd, False), (plain, True), (rle, True)):
        calls.clear()
        os.ftruncate(scratch, 0)
        os.pwrite(scratch, s, 0)
        out, valid = np.empty(h.row_count, np.float64), np.empty(h.row_count, np.uint8)
        done = CR.read_chunk(scratch, checksum, True, lz4.block.decompress, 0, len(s), h.raw_length, zlib.crc32(s),
                             h.codec, h.compression, h.row_count, 0, CR.PHYSICALS["float"], 8, out.view(np.uint8),
                             valid)
        assert done == read and bool(calls) == read
    header, stored = DICTIONARY_CORPUS[2]   # zstd
    calls.clear()
    assert CR.read_dictionary(scratch, checksum, True, lz4.block.decompress, 0, len(stored), header.raw_length, 0,
                              header.codec, header.compression, header.row_count, header.null_count) is None
    assert not calls
