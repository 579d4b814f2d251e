"""Stripe files: round trips over every kind, projection, chunk group
statistics, atomic writes, and detection of corrupted files."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orochi_fdw.errors import CorruptDataError, InvalidParameterError
from orochi_fdw.storage.codecs import Codec, Compression
from orochi_fdw.storage.kinds import INTERVAL_DTYPE, KINDS, UUID_DTYPE, VarBytes
from orochi_fdw.storage.stripe_format import (
    MAGIC,
    ColumnSpec,
    StripeReader,
    StripeWriter,
    read_stripe_metadata,
    write_stripe,
)

ALL_KINDS = list(KINDS)


def make_column(kind: str, n: int, seed: int = 0):
    """(values, validity) for a column of `kind` with some NULLs."""
    rng = np.random.default_rng(seed)
    validity = rng.random(n) > 0.15
    k = KINDS[kind]
    if kind == "vector":  # every value the same number of float32
        vb, _ = VarBytes.from_values(v.tobytes() for v in rng.normal(size=(n, 4)).astype("<f4"))
        return vb, validity
    if k.physical == "var":
        pool = ["ok", "warn", "error", "ünïcödé", "", '{"a": 1}', "12345.678"]
        vb, _ = VarBytes.from_values(pool[i] for i in rng.integers(0, len(pool), n))
        return vb, validity
    if kind == "bool":
        return rng.random(n) < 0.5, validity
    if kind == "uuid":
        return rng.integers(0, 256, (n, 16), dtype=np.uint8).view(UUID_DTYPE).reshape(-1), validity
    if kind == "interval":
        v = np.zeros(n, INTERVAL_DTYPE)
        v["time"] = rng.integers(0, 10**10, n)
        v["day"] = rng.integers(0, 30, n)
        v["month"] = rng.integers(0, 12, n)
        return v, validity
    if k.physical == "float":
        v = rng.normal(20, 5, n).astype(k.dtype)
        v[::97] = np.nan
        return v, validity
    info = np.iinfo(k.dtype)
    v = np.sort(rng.integers(max(info.min, -10**9), min(info.max, 10**9), n)).astype(k.dtype)
    return v, validity


def assert_column_equal(got, values, validity, kind):
    assert (got.validity is None and validity is None) or (
        got.validity is not None and (got.validity == validity).all())
    keep = np.ones(len(validity), bool) if validity is None else validity
    if KINDS[kind].physical == "var":
        assert got.values.to_list(got.validity) == values.to_list(validity)
    else:
        assert got.values[keep].tobytes() == values[keep].tobytes()


@pytest.fixture
def stripe(tmp_path):
    """A three-chunk-group stripe holding every kind."""
    n = 2500
    columns = {f"c_{kind}": make_column(kind, n, seed=i) for i, kind in enumerate(ALL_KINDS)}
    schema = [ColumnSpec(f"c_{kind}", kind, pg_type=kind) for kind in ALL_KINDS]
    path = tmp_path / "stripe-1.orc"
    meta = write_stripe(path, schema, columns, chunk_group_rows=1000,
                        properties={"table": "metrics", "stripe_id": "1"})
    return path, columns, meta


# ---------------------------------------------------------------- round trips

def test_roundtrip_every_kind(stripe):
    path, columns, meta = stripe
    assert meta.row_count == 2500
    assert [(g.first_row, g.row_count) for g in meta.chunk_groups] == [
        (0, 1000), (1000, 1000), (2000, 500)]
    with StripeReader(path) as r:
        assert r.row_count == 2500
        assert r.schema == {f"c_{k}": k for k in ALL_KINDS}
        assert [c.pg_type for c in r.columns] == ALL_KINDS
        assert r.properties == {"table": "metrics", "stripe_id": "1"}
        out = r.read()
        for kind in ALL_KINDS:
            values, validity = columns[f"c_{kind}"]
            assert_column_equal(out[f"c_{kind}"], values, validity, kind)
        assert r.metadata.chunks == meta.chunks, "reader parses what the writer recorded"


def test_batches_are_regrouped(tmp_path):
    n = 3456
    ts = np.arange(n, dtype=np.int64) * 1_000_000
    words, valid = VarBytes.from_values(f"dev-{i % 17}" if i % 5 else None for i in range(n))
    with StripeWriter(tmp_path / "s", {"ts": "timestamptz", "dev": "text"},
                      chunk_group_rows=1000) as w:
        start = 0
        for size in (1, 999, 1500, 0, 956):
            end = start + size
            w.write_batch({"ts": (ts[start:end], None),
                           "dev": (VarBytes(words.offsets[start:end + 1], words.data),
                                   valid[start:end])})
            start = end
    assert [g.row_count for g in w.metadata.chunk_groups] == [1000, 1000, 1000, 456]
    with StripeReader(tmp_path / "s") as r:
        out = r.read()
    assert (out["ts"].values == ts).all() and out["ts"].validity is None
    assert out["dev"].values.to_list(out["dev"].validity) == words.to_list(valid)


def test_empty_stripe(tmp_path):
    meta = write_stripe(tmp_path / "e", {"a": "int32", "b": "text"},
                        {"a": (np.zeros(0, np.int32), None),
                         "b": ((np.zeros(1, np.int64), b""), None)})
    assert meta.row_count == 0 and meta.chunk_groups == ()
    with StripeReader(tmp_path / "e") as r:
        out = r.read()
    assert len(out["a"].values) == 0 and out["b"].values.count == 0


def test_large_values_cut_chunk_groups_by_bytes(tmp_path):
    big = b"q" * 3000
    vb, _ = VarBytes.from_values([big] * 10 + [b"s"] * 10)
    meta = write_stripe(tmp_path / "b", {"i": "int16", "t": "bytea"},
                        {"i": (np.arange(20, dtype=np.int16), None), "t": (vb, None)},
                        chunk_group_rows=100, max_chunk_bytes=7000)
    assert [g.row_count for g in meta.chunk_groups] == [2, 2, 2, 2, 12]
    meta = write_stripe(tmp_path / "b2", {"t": "bytea"}, {"t": (vb, None)},
                        chunk_group_rows=100, max_chunk_bytes=10)
    assert [g.row_count for g in meta.chunk_groups][:10] == [1] * 10, \
        "a value larger than the limit still gets a chunk group of its own"
    with StripeReader(tmp_path / "b2") as r:
        assert r.read()["t"].values.to_list() == vb.to_list()


# ------------------------------------------------------- projection & stats

def test_projection_reads_only_requested_chunks(stripe):
    path, columns, meta = stripe
    # Corrupt every chunk of one column: reading the others must not notice.
    victim = meta.chunk("c_float64", 1)
    with open(path, "r+b") as f:
        for group in meta.chunks:
            m = group[meta.column_index("c_text")]
            f.seek(m.offset)
            f.write(bytes(b ^ 0xFF for b in f.read(1)))
    with StripeReader(path) as r:
        out = r.read(["c_int64", "c_float64"], chunk_groups=[2, 0])
        assert set(out) == {"c_int64", "c_float64"}
        values, validity = columns["c_int64"]
        order = np.r_[2000:2500, 0:1000]
        assert (out["c_int64"].values[validity[order]]
                == values[order][validity[order]]).all(), "chunk groups in the order asked"
        assert r.read_chunk("c_float64", 1).values.dtype == np.float64
        with pytest.raises(CorruptDataError, match=r"column 'c_text', chunk group 0"):
            r.read(["c_text"])
        groups = [g for g, d in r.iter_chunk_groups(["c_bool"], [1])]
        assert [g.index for g in groups] == [1]
    assert victim.row_count == 1000


def test_chunk_group_stats_allow_skipping(tmp_path):
    n = 3000
    ts = np.arange(n, dtype=np.int64) * 10
    temp = np.linspace(-5, 5, n)
    temp[1000:2000] = np.nan                                 # group 1 has only NaN
    valid = np.ones(n, bool)
    valid[2000:] = False                                     # group 2 has only NULLs
    long_text, _ = VarBytes.from_values(["m" * 80 + str(i % 3) for i in range(n)])
    write_stripe(tmp_path / "s", {"ts": "timestamp", "temp": "float32", "note": "text"},
                 {"ts": (ts, None), "temp": (temp.astype(np.float32), valid),
                  "note": (long_text, None)}, chunk_group_rows=1000)
    with StripeReader(tmp_path / "s") as r:
        ts_stats = r.column_stats("ts")
        assert [(s.min, s.max) for s in ts_stats] == [(0, 9990), (10000, 19990), (20000, 29990)]
        skip = [g.index for g, s in zip(r.chunk_groups, ts_stats) if s.max < 15000]
        assert skip == [0], "should skip: chunk group 0 ends before ts >= 15000"
        t = r.column_stats("temp")
        assert t[0].min == pytest.approx(-5) and not t[0].has_nan
        assert t[1].min is None and t[1].has_nan, "all-NaN group: no bounds, NaN flagged"
        assert t[2].null_count == 1000 and t[2].min is None, "all-NULL group: no bounds"
        note = r.column_stats("note")[0]
        assert not note.min_exact and not note.max_exact
        assert note.min == b"m" * 64 and note.max == b"m" * 63 + b"n"
        assert all(isinstance(s.min, int) for s in ts_stats)


def test_per_column_compression(tmp_path):
    n = 5000
    v = np.tile(np.arange(50, dtype=np.float64), n // 50) * 1.1
    schema = [ColumnSpec("a", "float64"), ColumnSpec("b", "float64", compression="none"),
              ColumnSpec("c", "float64", compression="zstd", compression_level=9)]
    meta = write_stripe(tmp_path / "c", schema, {x: (v, None) for x in "abc"},
                        compression="lz4", chunk_group_rows=n)
    a, b, c = meta.chunks[0]
    assert a.compression == Compression.LZ4
    assert (b.codec, b.compression) == (Codec.PLAIN, Compression.NONE)
    assert c.compression == Compression.ZSTD
    with StripeReader(tmp_path / "c") as r:
        assert all((r.read([x])[x].values == v).all() for x in "abc")


# ------------------------------------------------------------ atomic writes

def test_write_is_atomic_and_never_clobbers(tmp_path):
    path = tmp_path / "s"
    w = StripeWriter(path, {"a": "int32"})
    w.write_batch({"a": (np.arange(10, dtype=np.int32), None)})
    assert not path.exists(), "invisible until closed"
    w.close()
    assert path.exists() and sorted(os.listdir(tmp_path)) == ["s"], "no temp file left"
    with pytest.raises(FileExistsError):
        StripeWriter(path, {"a": "int32"})
    with pytest.raises(ZeroDivisionError):
        with StripeWriter(tmp_path / "t", {"a": "int32"}) as w2:
            w2.write_batch({"a": (np.arange(3, dtype=np.int32), None)})
            1 / 0
    assert sorted(os.listdir(tmp_path)) == ["s"], "aborted writes leave nothing behind"


def test_writer_validates_input(tmp_path):
    with pytest.raises(InvalidParameterError):
        StripeWriter(tmp_path / "x", {"a": "nope"})
    with pytest.raises(InvalidParameterError):
        StripeWriter(tmp_path / "x", [("a", "int32"), ("a", "int64")])
    with pytest.raises(InvalidParameterError):
        StripeWriter(tmp_path / "x", {"a": "int32"}, compression="snappy")
    with StripeWriter(tmp_path / "x", {"a": "int32", "b": "int64"}) as w:
        with pytest.raises(InvalidParameterError, match="missing"):
            w.write_batch({"a": (np.zeros(2, np.int32), None)})
        with pytest.raises(InvalidParameterError, match="rows"):
            w.write_batch({"a": (np.zeros(2, np.int32), None), "b": (np.zeros(3, np.int64), None)})
    assert read_stripe_metadata(tmp_path / "x").row_count == 0


# --------------------------------------------------------------- corruption

def test_chunk_checksum_mismatch_names_file_column_and_group(stripe):
    path, _, meta = stripe
    m = meta.chunk("c_int32", 2)
    with open(path, "r+b") as f:
        f.seek(m.offset + m.length // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    with StripeReader(path) as r:
        with pytest.raises(CorruptDataError) as exc:
            r.read_chunk("c_int32", 2)
        assert str(path) in str(exc.value)
        assert "checksum mismatch in column 'c_int32', chunk group 2" in str(exc.value)
        r.read_chunk("c_int32", 1)


def test_native_and_python_decoding_agree(stripe):
    """Fixed-width chunks are read by one native call (kernels.chunkread);
    what it gives is what decode_chunk gives, chunk by chunk and in bulk."""
    from orochi_fdw.storage.codecs import decode_chunk

    path, _, meta = stripe
    with StripeReader(path) as r:
        for c in meta.columns:
            k = KINDS[c.kind]
            parts = []
            for g in range(len(meta.chunk_groups)):
                m = meta.chunk(c.name, g)
                with open(path, "rb") as f:
                    f.seek(m.offset)
                    ref = decode_chunk(m, f.read(m.length), k)
                got = r.read_chunk(c.name, g)
                parts.append(got)
                assert (got.validity is None) == (ref.validity is None)
                if got.validity is not None:
                    assert (got.validity == ref.validity).all()
                if k.physical != "var":
                    assert got.values.dtype == ref.values.dtype
                    assert got.values.tobytes() == ref.values.tobytes()
            whole = r.read([c.name], chunk_groups=[2, 0])[c.name]
            if k.physical != "var":
                assert whole.values.tobytes() == parts[2].values.tobytes() + parts[0].values.tobytes()


def test_native_reader_decodes_its_layouts_itself(stripe, monkeypatch):
    """The fixed-width chunks coded PLAIN, BITPACK, DELTA, DELTA_DELTA or
    RLE, uncompressed or lz4, are decoded by the native call alone: with the
    Python decoder made to fail, they still read (chunk by chunk and in
    bulk), so the comparison above is not of decode_chunk with itself."""
    from orochi_fdw.storage import stripe_format
    from orochi_fdw.storage.codecs import Codec, Compression

    def refuse(*_args, **_kwargs):
        raise AssertionError("decode_chunk called for a layout the native reader decodes")

    path, _, meta = stripe
    native = [(c.name, g) for c in meta.columns if KINDS[c.kind].physical != "var"
              for g in range(len(meta.chunk_groups))
              if meta.chunk(c.name, g).codec in (Codec.PLAIN, Codec.BITPACK, Codec.DELTA, Codec.DELTA_DELTA, Codec.RLE)
              and meta.chunk(c.name, g).compression in (Compression.NONE, Compression.LZ4)]
    assert native, "the fixture has no chunk of the native reader's layouts"
    monkeypatch.setattr(stripe_format, "decode_chunk", refuse)
    with StripeReader(path) as r:
        for name, g in native:
            assert len(r.read_chunk(name, g).values) == meta.chunk_groups[g].row_count
        for name in sorted({name for name, _g in native}):
            groups = [g for n, g in native if n == name]
            assert len(r.read([name], chunk_groups=groups)[name].values) == \
                sum(meta.chunk_groups[g].row_count for g in groups)


def test_dictionary_chunks_read_natively(stripe, monkeypatch):
    """read_dictionary of the DICTIONARY-coded text chunks: the native
    reader's dictionary form, with the Python decoder made to fail, is the
    values decode_chunk gives; a damaged one is refused with the decoder's
    error (naming file, column and chunk group), never read wrong."""
    from orochi_fdw.storage import stripe_format
    from orochi_fdw.storage.codecs import Codec

    path, columns, meta = stripe
    coded = [(c.name, g) for c in meta.columns if c.kind in ("text", "varchar", "bytea")
             for g in range(len(meta.chunk_groups)) if meta.chunk(c.name, g).codec == Codec.DICTIONARY]
    assert coded, "the fixture has no DICTIONARY chunk"
    with StripeReader(path) as r:
        want = {(name, g): r.read_chunk(name, g) for name, g in coded}

    def refuse(*_args, **_kwargs):
        raise AssertionError("decode_dictionary_chunk called for a chunk the native reader decodes")

    with monkeypatch.context() as m:
        m.setattr(stripe_format, "decode_dictionary_chunk", refuse)
        with StripeReader(path) as r:
            for (name, g), plain in want.items():
                chunk = r.read_dictionary(name, g)
                entries = chunk.entries.to_list()
                valid = np.ones(len(chunk.codes), bool) if chunk.validity is None else chunk.validity
                assert [entries[c] if v else None for c, v in zip(chunk.codes, valid)] == \
                    plain.values.to_list(plain.validity)
    name, g = coded[0]
    chunk_meta = meta.chunk(name, g)
    data = bytearray(open(path, "rb").read())
    data[chunk_meta.offset + chunk_meta.length // 2] ^= 0x5A
    open(path, "wb").write(bytes(data))
    with StripeReader(path, verify_checksums=False) as r:
        try:
            chunk = r.read_dictionary(name, g)
        except CorruptDataError as exc:
            assert f"column {name!r}, chunk group {g}" in str(exc)
        else:  # the damage decodes (a byte of an entry): to what the Python decoder gives
            monkeypatch.setattr(stripe_format._cr, "read_dictionary", lambda *a: None)
            ref = r.read_dictionary(name, g)
            assert chunk.entries.to_list() == ref.entries.to_list() and (chunk.codes == ref.codes).all()
    with StripeReader(path) as r, pytest.raises(CorruptDataError, match="checksum mismatch"):
        r.read_dictionary(name, g)


@pytest.mark.parametrize("column", ["c_float64", "c_int32", "c_timestamptz", "c_bool"])
def test_undecodable_chunk_reports_the_decoders_error(stripe, column):
    """A chunk whose checksum matches but whose bytes do not decode: the
    native reader declines it and the error is decode_chunk's, naming the
    file, column and chunk group (here the checksum is not verified)."""
    path, _, meta = stripe
    m = meta.chunk(column, 1)
    with open(path, "r+b") as f:
        f.seek(m.offset)
        f.write(b"\xff" * min(m.length, 40))
    with StripeReader(path, verify_checksums=False) as r:
        with pytest.raises(CorruptDataError) as exc:
            r.read_chunk(column, 1)
        assert f"{path}: column {column!r}, chunk group 1: " in str(exc.value)
        r.read_chunk(column, 0)
        with pytest.raises(CorruptDataError, match="file ends early"):
            os.truncate(path, m.offset + m.length // 2)
            r.read_chunk(column, 2)


@pytest.mark.parametrize("damage", ["magic", "version", "trailer", "footer", "truncate",
                                    "footer_length", "short"])
def test_damaged_files_are_rejected(stripe, damage):
    path, _, _ = stripe
    data = bytearray(path.read_bytes())
    if damage == "magic":
        data[0:8] = b"PAR1PAR1"
    elif damage == "version":
        data[8:10] = struct.pack("<H", 99)
    elif damage == "trailer":
        data[-8:] = b"XXXXXXXX"
    elif damage == "footer":
        data[-30] ^= 0x01
    elif damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "footer_length":
        data[-24:-20] = struct.pack("<I", len(data))
    else:
        data = data[:20]
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=str(path)):
        StripeReader(path)


def test_not_a_stripe(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello world" * 10)
    with pytest.raises(CorruptDataError):
        read_stripe_metadata(tmp_path / "junk")


@pytest.fixture(scope="module")
def small_stripe(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    n = 300
    cols = {"t": make_column("timestamptz", n, 1), "f": make_column("float64", n, 2),
            "s": make_column("text", n, 3), "b": make_column("bool", n, 4)}
    write_stripe(d / "s", {"t": "timestamptz", "f": "float64", "s": "text", "b": "bool"},
                 cols, chunk_group_rows=100, compression="none")
    return d / "s"


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_is_detected(tmp_path, small_stripe, data):
    buf = bytearray(small_stripe.read_bytes())
    for pos in data.draw(st.lists(st.integers(0, 8 * len(buf) - 1), min_size=1, max_size=4,
                                  unique=True)):
        buf[pos >> 3] ^= 1 << (pos & 7)
    path = tmp_path / f"d{data.draw(st.integers(0, 10**9))}"
    path.write_bytes(bytes(buf))
    try:
        with StripeReader(path) as r:
            r.read()
    except CorruptDataError:
        return
    pytest.fail("a flipped bit went unnoticed")


# ------------------------------------------------- the documented layout

def test_file_matches_documented_layout(stripe):
    """Parse the file with nothing but struct and docs/FORMAT.md."""
    path, columns, meta = stripe
    data = path.read_bytes()
    magic, version, flags, reserved = struct.unpack_from("<8sHHI", data, 0)
    assert (magic, version, flags, reserved) == (MAGIC, 1, 0, 0)
    flen, fcrc, tver, tflags, tres, tmagic = struct.unpack_from("<IIHHI8s", data, len(data) - 24)
    assert (tver, tflags, tres, tmagic) == (1, 0, 0, MAGIC)
    footer = data[len(data) - 24 - flen:len(data) - 24]
    assert zlib.crc32(footer) == fcrc
    rows, ncols, ngroups, group_rows, nprops = struct.unpack_from("<QIIII", footer, 0)
    assert (rows, ncols, ngroups, group_rows, nprops) == (2500, len(ALL_KINDS), 3, 1000, 2)
    pos = 24
    names = []
    for _ in range(ncols):
        kind_id, cflags, nlen = struct.unpack_from("<BBH", footer, pos)
        pos += 4
        names.append(footer[pos:pos + nlen].decode())
        pos += nlen
        (tlen,) = struct.unpack_from("<H", footer, pos)
        pos += 2 + tlen
        assert kind_id == KINDS[names[-1][2:]].id
    for _ in range(nprops):
        (klen,) = struct.unpack_from("<H", footer, pos)
        pos += 2 + klen
        (vlen,) = struct.unpack_from("<I", footer, pos)
        pos += 4 + vlen
    group_counts = struct.unpack_from(f"<{ngroups}I", footer, pos)
    assert group_counts == (1000, 1000, 500)
    pos += 4 * ngroups
    for g in range(ngroups):
        for c in range(ncols):
            (offset, length, raw_length, crow, nulls, crc, codec, comp, cflags,
             res) = struct.unpack_from("<QQQIIIBBBB", footer, pos)
            mn, mx = footer[pos + 40:pos + 56], footer[pos + 56:pos + 72]
            pos += 72
            assert zlib.crc32(data[offset:offset + length]) == crc
            assert crow == group_counts[g] and res == 0
            if names[c] == "c_int64" and cflags & 1:
                assert struct.unpack("<q", mn[:8])[0] == meta.chunks[g][c].stats.min
    (blob_len,) = struct.unpack_from("<I", footer, pos)
    assert pos + 4 + blob_len == len(footer)


def test_regression_reserved_header_field_is_checked(stripe):
    # A flipped bit in the header's reserved word once went unnoticed.
    path, _, _ = stripe
    data = bytearray(path.read_bytes())
    data[12] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="header flags"):
        StripeReader(path)


def test_checksum_is_zlibs_crc32():
    """The checksum the reader and writer use (ISA-L's when installed) is
    zlib's CRC-32, the format's, on every length and buffer type."""
    from orochi_fdw.storage import stripe_format as sf

    rng = np.random.default_rng(9)
    for n in list(range(0, 70)) + [255, 256, 4095, 4096, 17_515, 100_003]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert sf.crc32(data) == zlib.crc32(data)
        assert sf.crc32(memoryview(data)[1:]) == zlib.crc32(data[1:])
        assert sf.crc32(bytearray(data), 12345) == zlib.crc32(data, 12345)
