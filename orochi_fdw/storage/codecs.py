"""Column chunk codecs: choosing, encoding and decoding one column chunk.

A *column chunk* is the values of one column in one chunk group. It is stored
as a *raw payload*, optionally compressed by a general-purpose layer (lz4 or
zstd)::

    raw payload = [validity bitmap]  values section
    stored      = raw payload, or lz4/zstd(raw payload)

The validity bitmap (``ceil(rows / 8)`` bytes, LSB-first, 1 = not NULL) is
present only when the chunk has some but not all NULLs. The values section
holds the ``rows - nulls`` non-NULL values, in row order, encoded by one of the
light-weight codecs of :class:`Codec`; NULL rows are not stored at all. The
byte layouts are specified in ``docs/FORMAT.md``; :mod:`orochi_fdw.storage.reference`
is an independent implementation of the same layouts used by the tests.

Everything that reads bytes here treats them as untrusted: every count,
length, bit width and index is checked before use, and any inconsistency
raises :class:`~orochi_fdw.errors.CorruptDataError`.

Public API:
    :func:`encode_chunk`, :func:`decode_chunk`, :func:`choose_codec`,
    :func:`encode_values`, :func:`decode_values`, :func:`resolve_compression`,
    and the registry :data:`CODECS`.
"""

from __future__ import annotations

import struct
import sys
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, NamedTuple

import lz4.block
import numpy as np
import zstandard

from orochi_fdw.errors import CorruptDataError, InvalidParameterError
from orochi_fdw.kernels import codecs_bytes as _cb
from orochi_fdw.kernels import codecs_float as _cf
from orochi_fdw.kernels import codecs_int as _ci
from orochi_fdw.storage.kinds import ColumnData, Kind, VarBytes, get_kind, normalize_column

if sys.byteorder != "little":  # pragma: no cover - every supported platform is LE
    raise ImportError("Orochi's storage format requires a little-endian host")

__all__ = [
    "Codec",
    "Compression",
    "CodecSpec",
    "CODECS",
    "ChunkStats",
    "ChunkHeader",
    "CodecChoice",
    "COMPRESSION_SETTINGS",
    "MAX_CHUNK_ROWS",
    "MAX_RAW_CHUNK_BYTES",
    "STATS_MAX_BYTES",
    "resolve_compression",
    "choose_codec",
    "encode_chunk",
    "decode_chunk",
    "encode_values",
    "decode_values",
    "chunk_stats",
    "codec_valid_for",
]


class Codec(IntEnum):
    """Light-weight codec ids (stable: they are written to stripe files)."""

    PLAIN = 0
    BITPACK = 1        # frame of reference + bit-packing
    DELTA = 2          # first value + bit-packed deltas
    DELTA_DELTA = 3    # first value, first delta + bit-packed delta-of-deltas
    RLE = 4            # run values + bit-packed run lengths
    DICTIONARY = 5     # distinct values + bit-packed or run-length codes
    GORILLA = 6        # XOR floating-point compression
    BITMAP = 7         # booleans, one bit each
    DECIMAL = 8        # floats scaled by 10**e to integers, then an integer codec
    VECTOR = 9         # kind vector: the dimension, then the float32 rows back to back


class Compression(IntEnum):
    """General-purpose compression layer ids (stable)."""

    NONE = 0
    LZ4 = 1            # lz4 block format, no size prefix
    ZSTD = 2           # one zstd frame with its content size


#: Valid values of the per-table / per-column ``compression`` setting.
COMPRESSION_SETTINGS = ("auto", "none", "lz4", "zstd")

#: Largest number of rows in one column chunk a decoder accepts.
MAX_CHUNK_ROWS = 1 << 22
#: Largest raw (uncompressed) column chunk a decoder accepts.
MAX_RAW_CHUNK_BYTES = (1 << 31) - 1
#: Variable-width min/max statistics are cut to this many bytes.
STATS_MAX_BYTES = 64

_ZSTD_DEFAULT_LEVEL = 3
_AUTO_MIN_BYTES = 64          # 'auto' does not try lz4 below this raw size

_PACK = struct.Struct("<qB")  # packed-int block header: base, bit width
_Q = struct.Struct("<q")
_I = struct.Struct("<I")
_UINT_FOR_WIDTH = {1: np.dtype(np.uint8), 2: np.dtype("<u2"),
                   4: np.dtype("<u4"), 8: np.dtype("<u8")}


# ----------------------------------------------------------------- results

@dataclass(frozen=True, slots=True)
class ChunkStats:
    """Statistics of one column chunk, for skipping chunk groups.

    ``min``/``max`` are ``None`` when unknown: every value NULL (or NaN), an
    interval column (no total order recorded), or a variable-width max whose
    truncation could not produce an upper bound. Values are Python ``int``,
    ``float``, ``bool`` or ``bytes`` (uuid and variable-width kinds, compared
    bytewise). Floats ignore NaN; ``has_nan`` says whether any value is NaN
    (PostgreSQL sorts NaN above every number). ``min_exact``/``max_exact`` are
    False when a variable-width bound was truncated: it is then a strict
    lower/upper bound rather than a value of the chunk.
    """

    row_count: int
    null_count: int
    min: Any = None
    max: Any = None
    min_exact: bool = True
    max_exact: bool = True
    has_nan: bool = False


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """What a reader needs to decode a column chunk (and its statistics)."""

    codec: int
    compression: int
    row_count: int
    null_count: int
    raw_length: int
    stored_length: int
    stats: ChunkStats | None = None


@dataclass(frozen=True, slots=True)
class CodecChoice:
    """The codec and compression layer :func:`choose_codec` picked."""

    codec: Codec
    compression: Compression
    level: int | None


# ----------------------------------------------------------------- helpers

class _Buf:
    """Bounds-checked cursor over untrusted bytes."""

    __slots__ = ("mv", "pos")

    def __init__(self, data) -> None:
        self.mv = _byte_view(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.mv) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > len(self.mv) - self.pos:
            raise CorruptDataError(
                f"truncated data: need {n} bytes at offset {self.pos}, "
                f"{len(self.mv) - self.pos} left")
        out = self.mv[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def done(self) -> None:
        if self.pos != len(self.mv):
            raise CorruptDataError(f"{len(self.mv) - self.pos} unexpected trailing bytes")


def _byte_view(data) -> memoryview:
    mv = data if isinstance(data, memoryview) else memoryview(data)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


def _wrap64(x: int) -> int:
    """x modulo 2**64, read as a signed 64-bit number."""
    return ((x + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63)


def _packed_len(count: int, width: int) -> int:
    return (count * width + 7) >> 3


def _pack_block(kernel: Callable, values: np.ndarray, count: int, base: int, width: int) -> bytes:
    out = np.zeros(_packed_len(count, width), dtype=np.uint8)
    kernel(values, base, width, out)
    return _PACK.pack(base, width) + out.tobytes()


def _packed_ints(values: np.ndarray) -> bytes:
    """Frame-of-reference block: base = min, width = bits of (max - min)."""
    if len(values) == 0:
        return _PACK.pack(0, 0)
    lo = int(values.min())
    hi = int(values.max())
    return _pack_block(_ci.for_pack, values, len(values), lo, (hi - lo).bit_length())


def _read_packed_ints(buf: _Buf, count: int, dtype) -> np.ndarray:
    base, width = buf.unpack(_PACK)
    if width > 64:
        raise CorruptDataError(f"bit width {width} out of range 0..64")
    block = buf.take(_packed_len(count, width))
    out = np.empty(count, dtype=dtype)
    _ci.for_unpack(block, base, width, out)
    return out


def _uint_view(values: np.ndarray, k: Kind) -> np.ndarray:
    """Bit patterns of fixed-width values: uint array, or uint8[n, w] for 16 bytes."""
    w = k.width
    if w in _UINT_FOR_WIDTH:
        return values.view(_UINT_FOR_WIDTH[w])
    return values.view(np.uint8).reshape(-1, w)


def _from_uint(raw: np.ndarray, k: Kind) -> np.ndarray:
    if raw.ndim == 2:
        return raw.view(k.dtype).reshape(-1)
    return raw.view(k.dtype)


def _check_lengths(lengths: np.ndarray, available: int) -> np.ndarray:
    """Offsets from untrusted lengths whose total must equal ``available``."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    if len(lengths):
        if int(lengths.min()) < 0 or int(lengths.max()) > available:
            raise CorruptDataError("value length out of range")
        np.cumsum(lengths, out=offsets[1:])
    if int(offsets[-1]) != available:
        raise CorruptDataError(
            f"value lengths add up to {int(offsets[-1])} bytes, data has {available}")
    return offsets


def _var_slice(values: VarBytes) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and the contiguous data of a VarBytes."""
    offsets, data = values
    lengths = np.diff(offsets)
    return lengths, data[int(offsets[0]):int(offsets[-1])]


# ------------------------------------------------------------- the codecs

def _plain_encode(values, k: Kind, ctx: dict) -> bytes:
    if k.physical == "var":
        lengths, data = _var_slice(values)
        return _packed_ints(lengths) + data.tobytes()
    return values.tobytes()


def _plain_decode(buf: _Buf, count: int, k: Kind):
    if k.physical == "var":
        lengths = _read_packed_ints(buf, count, np.int64)
        data = buf.take(buf.remaining())
        offsets = _check_lengths(lengths, len(data))
        return VarBytes(offsets, np.frombuffer(data, dtype=np.uint8).copy())
    raw = np.frombuffer(buf.take(count * k.width), dtype=np.uint8)
    if k.physical == "bool" and count and int(raw.max()) > 1:
        raise CorruptDataError("boolean byte other than 0 or 1")
    return raw.view(k.dtype).copy()


def _bitpack_encode(values, k: Kind, ctx: dict) -> bytes:
    return _packed_ints(values)


def _bitpack_decode(buf: _Buf, count: int, k: Kind):
    return _read_packed_ints(buf, count, k.dtype)


def _int_stats(values: np.ndarray, ctx: dict) -> tuple:
    st = ctx.get("int_stats")
    if st is None:
        st = ctx["int_stats"] = _ci.int_stats(values)
    return st


def _delta_encode(values, k: Kind, ctx: dict) -> bytes:
    m = len(values)
    if m == 0:
        return b""
    st = _int_stats(values, ctx)
    dmin, dmax = st[2], st[3]
    return _Q.pack(int(values[0])) + _pack_block(
        _ci.delta_pack, values, m - 1, dmin, (dmax - dmin).bit_length())


def _delta_decode(buf: _Buf, count: int, k: Kind):
    out = np.empty(count, dtype=k.dtype)
    if count == 0:
        return out
    (first,) = buf.unpack(_Q)
    base, width = buf.unpack(_PACK)
    if width > 64:
        raise CorruptDataError(f"bit width {width} out of range 0..64")
    block = buf.take(_packed_len(count - 1, width))
    _ci.delta_unpack(block, first, base, width, out)
    return out


def _dod_encode(values, k: Kind, ctx: dict) -> bytes:
    m = len(values)
    if m == 0:
        return b""
    st = _int_stats(values, ctx)
    first_delta = _wrap64(int(values[1]) - int(values[0])) if m > 1 else 0
    base, width = (st[4], (st[5] - st[4]).bit_length()) if m > 2 else (0, 0)
    return _Q.pack(int(values[0])) + _Q.pack(first_delta) + _pack_block(
        _ci.dod_pack, values, max(m - 2, 0), base, width)


def _dod_decode(buf: _Buf, count: int, k: Kind):
    out = np.empty(count, dtype=k.dtype)
    if count == 0:
        return out
    (first,) = buf.unpack(_Q)
    (first_delta,) = buf.unpack(_Q)
    base, width = buf.unpack(_PACK)
    if width > 64:
        raise CorruptDataError(f"bit width {width} out of range 0..64")
    block = buf.take(_packed_len(max(count - 2, 0), width))
    _ci.dod_unpack(block, first, first_delta, base, width, out)
    return out


def _rle_runs(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if u.ndim == 2:
        r = _ci.rle_count_wide(u)
        run_values = np.empty((r, u.shape[1]), dtype=np.uint8)
        lengths = np.empty(r, dtype=np.int64)
        _ci.rle_encode_wide(u, run_values, lengths)
    else:
        r = _ci.rle_count(u)
        run_values = np.empty(r, dtype=u.dtype)
        lengths = np.empty(r, dtype=np.int64)
        _ci.rle_encode(u, run_values, lengths)
    return run_values, lengths


def _rle_encode(values, k: Kind, ctx: dict) -> bytes:
    run_values, lengths = _rle_runs(_uint_view(values, k))
    return _I.pack(len(lengths)) + run_values.tobytes() + _packed_ints(lengths)


def _rle_decode_uint(buf: _Buf, count: int, width: int) -> np.ndarray:
    (r,) = buf.unpack(_I)
    if r > count or (r == 0) != (count == 0):
        raise CorruptDataError(f"{r} runs cannot hold {count} values")
    raw = np.frombuffer(buf.take(r * width), dtype=np.uint8)
    lengths = _read_packed_ints(buf, r, np.int64)
    if width in _UINT_FOR_WIDTH:
        out = np.empty(count, dtype=_UINT_FOR_WIDTH[width])
        _ci.rle_decode(raw.view(out.dtype), lengths, out)
    else:
        out = np.empty((count, width), dtype=np.uint8)
        _ci.rle_decode_wide(raw.reshape(r, width), lengths, out)
    return out


def _rle_decode(buf: _Buf, count: int, k: Kind):
    out = _rle_decode_uint(buf, count, k.width)
    if k.physical == "bool" and count and int(out.max()) > 1:
        raise CorruptDataError("boolean run value other than 0 or 1")
    return _from_uint(out, k)


def _gorilla_encode(values, k: Kind, ctx: dict) -> bytes:
    bits = _uint_view(values, k)
    out = np.empty(_cf.gorilla_max_size(len(bits), 8 * k.width), dtype=np.uint8)
    used = _cf.gorilla_encode(bits, out)
    return out[:used].tobytes()


def _gorilla_decode(buf: _Buf, count: int, k: Kind):
    raw = buf.take(buf.remaining())
    out = np.empty(count, dtype=_UINT_FOR_WIDTH[k.width])
    used = _cf.gorilla_decode(raw, out)
    if used != len(raw):
        raise CorruptDataError(f"{len(raw) - used} unexpected bytes after gorilla stream")
    return out.view(k.dtype)


_INT64 = get_kind("int64")
_DECIMAL_HEAD = struct.Struct("<BBI")   # exponent, integer codec, exception count


def _decimal_scale(values: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Smallest exponent e (0..18) at which all but at most 1/16 of the values
    are exact decimals; returns (e, scaled integers, exception positions)."""
    m = len(values)
    ints = np.empty(m, dtype=np.int64)
    exceptions = np.empty(m // 16, dtype=np.int64)
    for e in range(_cf.DECIMAL_MAX_EXPONENT + 1):
        nx = _cf.decimal_encode(values, e, ints, exceptions)
        if nx >= 0:
            return e, ints, exceptions[:nx].copy()
    return None


def _decimal_encode(values, k: Kind, ctx: dict) -> bytes:
    scaled = ctx.get("decimal", False)
    if scaled is False:
        scaled = _decimal_scale(values)
    if scaled is None:
        raise InvalidParameterError(
            "too many values are not exact decimals; DECIMAL does not apply")
    e, ints, exceptions = scaled
    if len(ints) == 0:
        return _DECIMAL_HEAD.pack(e, Codec.PLAIN, 0)
    sub, body = _select_int(ints, _INT64, {})
    head = _DECIMAL_HEAD.pack(e, sub, len(exceptions))
    if len(exceptions):
        head += _packed_ints(exceptions) + values[exceptions].tobytes()
    return head + body


def _decimal_decode(buf: _Buf, count: int, k: Kind):
    e, sub, nx = buf.unpack(_DECIMAL_HEAD)
    if e > _cf.DECIMAL_MAX_EXPONENT or sub not in _INT_CODECS or nx > count:
        raise CorruptDataError(
            f"invalid decimal header (exponent {e}, codec {sub}, {nx} exceptions)")
    if nx:
        positions = _read_packed_ints(buf, nx, np.int64)
        if (int(positions[0]) < 0 or int(positions[-1]) >= count
                or (nx > 1 and not (np.diff(positions) > 0).all())):
            raise CorruptDataError("decimal exception positions out of order or range")
        raw = np.frombuffer(buf.take(nx * k.width), dtype=k.dtype)
    out = np.empty(count, dtype=k.dtype)
    if sub == Codec.BITPACK:
        # the usual case: unpacked, offset and scaled in one pass
        base, width = buf.unpack(_PACK)
        if width > 64:
            raise CorruptDataError(f"bit width {width} out of range 0..64")
        _cf.decimal_unpack(buf.take(_packed_len(count, width)), base, width, e, out)
    else:
        _cf.decimal_decode(CODECS[sub].decode(buf, count, _INT64), e, out)
    if nx:
        out[positions] = raw
    return out


def _bitmap_encode(values, k: Kind, ctx: dict) -> bytes:
    out = np.empty((len(values) + 7) // 8, dtype=np.uint8)
    _ci.bitmap_pack(values.view(np.uint8), out)
    return out.tobytes()


def _bitmap_decode(buf: _Buf, count: int, k: Kind):
    raw = buf.take((count + 7) // 8)
    out = np.empty(count, dtype=np.uint8)
    _ci.bitmap_unpack(raw, out)
    return out.view(np.bool_)


def _dictionary_build(values: VarBytes, max_entries: int):
    offsets, data = values
    m = len(offsets) - 1
    codes = np.empty(m, dtype=np.int32)
    first_rows = np.empty(max(min(max_entries, m), 1), dtype=np.int32)
    d = _cb.dict_build(offsets, data, codes, first_rows, max_entries)
    return d, codes, first_rows


def _gather(values: VarBytes, idx: np.ndarray) -> VarBytes:
    offsets, data = values
    total = _cb.var_gather_size(offsets, idx)
    if total > MAX_RAW_CHUNK_BYTES:
        raise CorruptDataError(f"decoded values would take {total} bytes")
    out_offsets = np.empty(len(idx) + 1, dtype=np.int64)
    out_data = np.empty(total, dtype=np.uint8)
    _cb.var_gather(offsets, data, idx, out_offsets, out_data)
    return VarBytes(out_offsets, out_data)


def _codes_section(codes: np.ndarray) -> bytes:
    """Codes as a BITPACK or RLE section, whichever is smaller (ties: BITPACK)."""
    packed = _packed_ints(codes)
    run_values, lengths = _rle_runs(codes.view(np.uint32))
    rle = _I.pack(len(lengths)) + run_values.tobytes() + _packed_ints(lengths)
    if len(rle) < len(packed):
        return bytes([Codec.RLE]) + rle
    return bytes([Codec.BITPACK]) + packed


def _dictionary_encode(values, k: Kind, ctx: dict) -> bytes:
    built = ctx.get("dictionary")
    if built is None:
        built = _dictionary_build(values, len(values.offsets) - 1)
    d, codes, first_rows = built
    entries = _gather(values, first_rows[:d])
    lengths, data = _var_slice(entries)
    return (_I.pack(d) + _packed_ints(lengths) + data.tobytes()
            + _codes_section(codes))


#: up to this many dictionary entries, their lengths are unpacked without arrays
_FEW_ENTRIES = 16


def _dictionary_parts(buf: _Buf, count: int) -> tuple[VarBytes, np.ndarray]:
    """The entries and the ``count`` codes of a DICTIONARY section (codes
    not checked against the entries)."""
    (d,) = buf.unpack(_I)
    if d > count or (d == 0) != (count == 0):
        raise CorruptDataError(f"dictionary of {d} entries for {count} values")
    if d <= _FEW_ENTRIES:
        # a few entries (a status, a kind): their lengths unpacked with
        # Python ints, which for so few is several times quicker than arrays
        base, width = buf.unpack(_PACK)
        if width > 64:
            raise CorruptDataError(f"bit width {width} out of range 0..64")
        bits = int.from_bytes(buf.take(_packed_len(d, width)), "little")
        mask = (1 << width) - 1
        ends, total, room = [0], 0, buf.remaining()
        for i in range(d):
            length = (base + ((bits >> (i * width)) & mask) + (1 << 63)) % (1 << 64) - (1 << 63)  # int64, as unpacked
            if not 0 <= length <= room:
                raise CorruptDataError("dictionary entry length out of range")
            total += length
            ends.append(total)
        entry_data = np.frombuffer(buf.take(total), dtype=np.uint8)
        entry_offsets = np.array(ends, dtype=np.int64)
    else:
        lengths = _read_packed_ints(buf, d, np.int64)
        if d and (int(lengths.min()) < 0 or int(lengths.max()) > buf.remaining()):
            raise CorruptDataError("dictionary entry length out of range")
        total = int(lengths.sum()) if d else 0
        entry_data = np.frombuffer(buf.take(total), dtype=np.uint8)
        entry_offsets = _check_lengths(lengths, total)
    (codes_codec,) = buf.unpack(struct.Struct("<B"))
    if codes_codec == Codec.BITPACK:
        codes = _read_packed_ints(buf, count, np.int32)
    elif codes_codec == Codec.RLE:
        codes = _rle_decode_uint(buf, count, 4).view(np.int32)
    else:
        raise CorruptDataError(f"invalid dictionary code codec {codes_codec}")
    return VarBytes(entry_offsets, entry_data), codes


def _dictionary_decode(buf: _Buf, count: int, k: Kind):
    entries, codes = _dictionary_parts(buf, count)
    return _gather(entries, codes)


_VECTOR_HEAD = struct.Struct("<I")
#: the largest dimension of a vector (pgvector's)
VECTOR_MAX_DIM = 16_000


def _vector_encode(values, k: Kind, ctx: dict) -> bytes:
    """Vectors of one dimension d: ``u32 d``, then the values' 4d bytes each."""
    lengths, data = _var_slice(values)
    width = int(lengths[0]) if len(lengths) else 4
    if (len(lengths) and (int(lengths.min()) != width or int(lengths.max()) != width)) or width % 4 \
            or not 1 <= width // 4 <= VECTOR_MAX_DIM:
        raise InvalidParameterError(
            "the values of a vector column chunk must all hold the same number (1 to "
            f"{VECTOR_MAX_DIM}) of float32 values")
    return _VECTOR_HEAD.pack(width // 4) + data.tobytes()


def _vector_decode(buf: _Buf, count: int, k: Kind):
    (dim,) = buf.unpack(_VECTOR_HEAD)
    if not 1 <= dim <= VECTOR_MAX_DIM:
        raise CorruptDataError(f"vector dimension {dim} out of range 1..{VECTOR_MAX_DIM}")
    width = 4 * dim
    data = np.frombuffer(buf.take(count * width), dtype=np.uint8).copy()
    return VarBytes(np.arange(count + 1, dtype=np.int64) * width, data)


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """A registered codec: its id, the physical kinds it applies to, and its
    value-section encoder and decoder."""

    codec: Codec
    physicals: frozenset[str]
    encode: Callable[[Any, Kind, dict], bytes]
    decode: Callable[[_Buf, int, Kind], Any]


#: Registry of codecs by id.
CODECS: dict[int, CodecSpec] = {
    spec.codec: spec for spec in (
        CodecSpec(Codec.PLAIN, frozenset({"bool", "int", "float", "fixed", "var"}),
                  _plain_encode, _plain_decode),
        CodecSpec(Codec.BITPACK, frozenset({"int"}), _bitpack_encode, _bitpack_decode),
        CodecSpec(Codec.DELTA, frozenset({"int"}), _delta_encode, _delta_decode),
        CodecSpec(Codec.DELTA_DELTA, frozenset({"int"}), _dod_encode, _dod_decode),
        CodecSpec(Codec.RLE, frozenset({"bool", "int", "float", "fixed"}),
                  _rle_encode, _rle_decode),
        CodecSpec(Codec.DICTIONARY, frozenset({"var"}), _dictionary_encode, _dictionary_decode),
        CodecSpec(Codec.GORILLA, frozenset({"float"}), _gorilla_encode, _gorilla_decode),
        CodecSpec(Codec.BITMAP, frozenset({"bool"}), _bitmap_encode, _bitmap_decode),
        CodecSpec(Codec.DECIMAL, frozenset({"float"}), _decimal_encode, _decimal_decode),
        # only kind vector (whose values are variable-width bytes to the rest)
        CodecSpec(Codec.VECTOR, frozenset({"vector"}), _vector_encode, _vector_decode),
    )
}

_INT_CODECS = (Codec.PLAIN, Codec.BITPACK, Codec.DELTA, Codec.DELTA_DELTA, Codec.RLE)


def codec_valid_for(codec: int, k: Kind) -> bool:
    """Whether a chunk of kind ``k`` may use ``codec``."""
    spec = CODECS.get(codec)
    if spec is None:
        return False
    return k.physical in spec.physicals or (spec.codec == Codec.VECTOR and k.name == "vector")


def _spec_for(codec: int, k: Kind, error=CorruptDataError) -> CodecSpec:
    spec = CODECS.get(codec)
    if spec is not None and spec.codec == Codec.VECTOR and k.name == "vector":
        return spec
    if spec is None or k.physical not in spec.physicals:
        raise error(f"codec {codec} is not valid for kind {k.name}")
    return spec


def encode_values(values, kind: str | Kind, codec: int) -> bytes:
    """Encode non-NULL values with one codec (no validity, no compression).

    Args:
        values: ndarray of the kind's dtype, or VarBytes / (offsets, data).
        kind: Logical kind.
        codec: A :class:`Codec` valid for the kind.

    Returns:
        The values section bytes.

    Raises:
        InvalidParameterError: bad values or a codec not valid for the kind.
    """
    k = get_kind(kind)
    spec = _spec_for(codec, k, InvalidParameterError)
    values, validity, _n = normalize_column(values, None, k)
    return spec.encode(_compact_start(values, k), k, {})


def decode_values(data, count: int, kind: str | Kind, codec: int):
    """Decode a values section holding exactly ``count`` values.

    Raises:
        CorruptDataError: the bytes are not a valid encoding of ``count`` values.
    """
    k = get_kind(kind)
    if not 0 <= count <= MAX_CHUNK_ROWS:
        raise CorruptDataError(f"value count {count} out of range")
    spec = _spec_for(codec, k)
    buf = _Buf(data)
    out = spec.decode(buf, count, k)
    buf.done()
    return out


# ------------------------------------------------------ chunk-level glue

def resolve_compression(compression: str | None = "auto",
                        compression_level: int | None = None) -> tuple[str, int | None]:
    """Validate a ``compression`` / ``compression_level`` setting.

    ``compression`` is one of :data:`COMPRESSION_SETTINGS`:

    * ``auto``: light-weight codec chosen from the data, then lz4 when it
      saves at least 1/8 of the bytes;
    * ``none``: plain values, no compression at all;
    * ``lz4`` / ``zstd``: light-weight codec chosen from the data, then that
      layer whenever it makes the chunk smaller.

    ``compression_level`` applies to lz4 (``None`` = fast mode, 1..12 = high
    compression mode of that level) and zstd (``None`` = 3, -7..22).

    Returns:
        ``(setting, level)``.

    Raises:
        InvalidParameterError: unknown setting or level out of range.
    """
    setting = "auto" if compression is None else str(compression).lower()
    if setting not in COMPRESSION_SETTINGS:
        raise InvalidParameterError(
            f"invalid compression {compression!r}; valid values: "
            + ", ".join(COMPRESSION_SETTINGS))
    if compression_level is not None:
        if isinstance(compression_level, bool) or not isinstance(compression_level, (int, np.integer)):
            raise InvalidParameterError("compression_level must be an integer")
        level = int(compression_level)
        if setting == "zstd" and not (-7 <= level <= 22 and level != 0):
            raise InvalidParameterError("zstd compression_level must be in -7..22 (not 0)")
        if setting in ("lz4", "auto") and not 1 <= level <= 12:
            raise InvalidParameterError("lz4 compression_level must be in 1..12")
        if setting == "none":
            raise InvalidParameterError("compression_level needs compression lz4 or zstd")
        return setting, level
    return setting, None


_tls = threading.local()


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_tls, "zc", None)
    if cache is None:
        cache = _tls.zc = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return c


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "zd", None)
    if d is None:
        d = _tls.zd = zstandard.ZstdDecompressor()
    return d


def _lz4(raw: bytes, level: int | None) -> bytes:
    if level is None:
        return lz4.block.compress(raw, mode="default", store_size=False)
    return lz4.block.compress(raw, mode="high_compression", compression=level, store_size=False)


def _compress(raw: bytes, setting: str, level: int | None) -> tuple[Compression, bytes]:
    if not raw or setting == "none":
        return Compression.NONE, raw
    if setting == "auto":
        if len(raw) < _AUTO_MIN_BYTES:
            return Compression.NONE, raw
        c = _lz4(raw, level)
        if len(c) <= len(raw) - len(raw) // 8:
            return Compression.LZ4, c
        return Compression.NONE, raw
    if setting == "lz4":
        comp, c = Compression.LZ4, _lz4(raw, level)
    else:
        comp = Compression.ZSTD
        c = _zstd_compressor(_ZSTD_DEFAULT_LEVEL if level is None else level).compress(raw)
    if len(c) < len(raw):
        return comp, c
    return Compression.NONE, raw


def _decompress(payload: memoryview, compression: int, raw_length: int):
    if compression == Compression.NONE:
        if len(payload) != raw_length:
            raise CorruptDataError(
                f"uncompressed chunk is {len(payload)} bytes, header says {raw_length}")
        return payload
    if compression == Compression.LZ4:
        # An lz4 block expands at most ~255x; refuse sizes it cannot reach.
        if raw_length > 255 * len(payload) + 16:
            raise CorruptDataError("lz4 raw length larger than the block can hold")
        try:
            out = lz4.block.decompress(payload, uncompressed_size=raw_length)
        except Exception as exc:  # lz4 raises LZ4BlockError, ValueError, ...
            raise CorruptDataError(f"lz4 block does not decompress: {exc}") from None
    elif compression == Compression.ZSTD:
        try:
            size = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise CorruptDataError(f"zstd frame header invalid: {exc}") from None
        if size != raw_length:
            raise CorruptDataError(f"zstd frame holds {size} bytes, header says {raw_length}")
        try:
            out = _zstd_decompressor().decompress(payload, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise CorruptDataError(f"zstd frame does not decompress: {exc}") from None
    else:
        raise CorruptDataError(f"unknown compression {compression}")
    if len(out) != raw_length:
        raise CorruptDataError(f"chunk decompressed to {len(out)} bytes, expected {raw_length}")
    return out


def _max_raw_length(k: Kind, rows: int) -> int:
    """Upper bound of any valid raw payload of ``rows`` rows of kind ``k``."""
    if k.physical == "var":
        return MAX_RAW_CHUNK_BYTES
    # Validity + worst codec: RLE of all-distinct runs (value + 64-bit length),
    # or a 78-bit Gorilla record; plus fixed headers.
    return (rows + 7) // 8 + 64 + rows * (k.width + 10)


def _compact(values, validity: np.ndarray | None, k: Kind):
    if validity is None:
        return _compact_start(values, k)
    if k.physical == "var":
        offsets, data = values
        valid = validity.view(np.uint8)
        count, total = _cb.var_compact_size(offsets, valid)
        out_offsets = np.empty(count + 1, dtype=np.int64)
        out_data = np.empty(total, dtype=np.uint8)
        _cb.var_compact(offsets, data, valid, out_offsets, out_data)
        return VarBytes(out_offsets, out_data)
    return values[validity]


def _compact_start(values, k: Kind):
    if k.physical == "var" and int(values.offsets[0]) != 0:
        lengths, data = _var_slice(values)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return VarBytes(offsets, data)
    return values


def _expand(compact, validity: np.ndarray | None, k: Kind, rows: int):
    if validity is None:
        return compact
    if k.physical == "var":
        offsets = np.empty(rows + 1, dtype=np.int64)
        _cb.var_expand_offsets(compact.offsets, validity.view(np.uint8), offsets)
        return VarBytes(offsets, compact.data)
    out = np.zeros(rows, dtype=k.dtype)
    out[validity] = compact
    return out


def _truncate_min(b: bytes) -> tuple[bytes, bool]:
    if len(b) <= STATS_MAX_BYTES:
        return b, True
    return b[:STATS_MAX_BYTES], False


def _truncate_max(b: bytes) -> tuple[bytes | None, bool]:
    if len(b) <= STATS_MAX_BYTES:
        return b, True
    p = bytearray(b[:STATS_MAX_BYTES])
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None, False        # no byte string of that length bounds it
    p[-1] += 1
    return bytes(p), False


def _stats(compact, k: Kind, rows: int, nulls: int, ctx: dict) -> ChunkStats:
    m = rows - nulls
    if m == 0 or k.name in ("interval", "vector"):
        return ChunkStats(rows, nulls)
    if k.physical == "int":
        st = _int_stats(compact, ctx)
        return ChunkStats(rows, nulls, st[0], st[1])
    if k.physical == "bool":
        return ChunkStats(rows, nulls, bool(compact.all()), bool(compact.any()))
    if k.physical == "float":
        nan = np.isnan(compact)
        has_nan = bool(nan.any())
        finite = compact[~nan] if has_nan else compact
        if len(finite) == 0:
            return ChunkStats(rows, nulls, has_nan=True)
        return ChunkStats(rows, nulls, float(finite.min()), float(finite.max()),
                          has_nan=has_nan)
    if k.physical == "fixed":                       # uuid: bytewise order
        u = compact.view(np.uint8).reshape(-1, 16)
        hi = u[:, :8].copy().view(">u8").reshape(-1)
        lo = u[:, 8:].copy().view(">u8").reshape(-1)
        hmin, hmax = hi.min(), hi.max()
        mn = int(hmin).to_bytes(8, "big") + int(lo[hi == hmin].min()).to_bytes(8, "big")
        mx = int(hmax).to_bytes(8, "big") + int(lo[hi == hmax].max()).to_bytes(8, "big")
        return ChunkStats(rows, nulls, mn, mx)
    offsets, data = compact                         # variable width: bytewise
    imin, imax = _cb.var_minmax(offsets, data)
    cut = STATS_MAX_BYTES + 1

    def head(i: int) -> bytes:
        start = int(offsets[i])
        return data[start:min(int(offsets[i + 1]), start + cut)].tobytes()

    mn, mn_exact = _truncate_min(head(imin))
    mx, mx_exact = _truncate_max(head(imax))
    return ChunkStats(rows, nulls, mn, mx, mn_exact, mx_exact)


def chunk_stats(values, validity, kind: str | Kind) -> ChunkStats:
    """Min, max, NULL and NaN statistics of one column chunk (see :class:`ChunkStats`)."""
    k = get_kind(kind)
    values, validity, n = normalize_column(values, validity, k)
    nulls = 0 if validity is None else n - int(np.count_nonzero(validity))
    return _stats(_compact(values, validity, k), k, n, nulls, {})


def _bitwidth_size(count: int, span: int) -> int:
    return _packed_len(count, span.bit_length())


def _select_int(values: np.ndarray, k: Kind, ctx: dict) -> tuple[Codec, bytes]:
    """Smallest integer codec for non-empty values, sized exactly from one
    statistics pass (ties go to the lower codec id)."""
    m = len(values)
    vmin, vmax, dmin, dmax, ddmin, ddmax, runs, rmin, rmax = _int_stats(values, ctx)
    w = k.width
    sizes = {
        Codec.PLAIN: m * w,
        Codec.BITPACK: 9 + _bitwidth_size(m, vmax - vmin),
        Codec.DELTA: 8 + 9 + _bitwidth_size(m - 1, dmax - dmin),
        Codec.DELTA_DELTA: 16 + 9 + _bitwidth_size(max(m - 2, 0), ddmax - ddmin),
        Codec.RLE: 4 + runs * w + 9 + _bitwidth_size(runs, rmax - rmin),
    }
    best = min(sizes, key=lambda c: (sizes[c], c))
    return best, CODECS[best].encode(values, k, ctx)


def _select(compact, k: Kind, ctx: dict) -> tuple[Codec, bytes]:
    """Pick the smallest light-weight encoding of non-empty compacted values."""
    m = len(compact.offsets) - 1 if k.physical == "var" else len(compact)
    if k.name == "vector":
        return Codec.VECTOR, _vector_encode(compact, k, ctx)
    if k.physical == "int":
        return _select_int(compact, k, ctx)
    if k.physical == "var":
        plain = _plain_encode(compact, k, ctx)
        if m >= 2:
            built = _dictionary_build(compact, m // 2)
            if built[0] >= 0:
                ctx["dictionary"] = built
                enc = _dictionary_encode(compact, k, ctx)
                if len(enc) < len(plain):
                    return Codec.DICTIONARY, enc
        return Codec.PLAIN, plain
    # bool, float, fixed: compare actual sizes of the candidates.
    if k.physical == "bool":
        best, body = Codec.BITMAP, _bitmap_encode(compact, k, ctx)
    else:
        best, body = Codec.PLAIN, _plain_encode(compact, k, ctx)
        if k.physical == "float":
            scaled = ctx["decimal"] = _decimal_scale(compact)
            if scaled is not None:
                d = _decimal_encode(compact, k, ctx)
                if len(d) < len(body):
                    best, body = Codec.DECIMAL, d
            if m > 1:
                g = _gorilla_encode(compact, k, ctx)
                if len(g) < len(body):
                    best, body = Codec.GORILLA, g
    u = _uint_view(compact, k)
    runs = _ci.rle_count_wide(u) if u.ndim == 2 else _ci.rle_count(u)
    if 4 + runs * k.width + 9 < len(body):
        r = _rle_encode(compact, k, ctx)
        if len(r) < len(body):
            best, body = Codec.RLE, r
    return best, body


def encode_chunk(values, validity, kind: str | Kind, *, compression: str | None = "auto",
                 compression_level: int | None = None,
                 codec: int | None = None) -> tuple[ChunkHeader, bytes]:
    """Encode one column chunk.

    Args:
        values: ndarray of the kind's dtype, or ``(offsets, data)`` for
            variable-width kinds. Values at NULL positions are ignored.
        validity: ``None`` (no NULLs) or a bool array, True = not NULL.
        kind: Logical kind of the column.
        compression: ``auto``, ``none``, ``lz4`` or ``zstd`` (see
            :func:`resolve_compression`).
        compression_level: Level for the lz4 / zstd layer.
        codec: Force a light-weight codec instead of choosing from the data.

    Returns:
        ``(header, stored bytes)``; the header carries the codec, compression
        layer, row and NULL counts, lengths and :class:`ChunkStats`.

    Raises:
        InvalidParameterError: values, validity, kind or settings are invalid,
            or the chunk exceeds :data:`MAX_CHUNK_ROWS` / :data:`MAX_RAW_CHUNK_BYTES`.
    """
    k = get_kind(kind)
    setting, level = resolve_compression(compression, compression_level)
    values, validity, n = normalize_column(values, validity, k)
    if n > MAX_CHUNK_ROWS:
        raise InvalidParameterError(f"a chunk holds at most {MAX_CHUNK_ROWS} rows, got {n}")
    if validity is None:
        nulls, bitmap = 0, b""
    else:
        bm = np.empty((n + 7) // 8, dtype=np.uint8)
        nulls = n - _ci.bitmap_pack(validity.view(np.uint8), bm)
        bitmap = bm.tobytes() if nulls < n else b""
    compact = _compact(values, validity, k)
    ctx: dict = {}
    stats = _stats(compact, k, n, nulls, ctx)
    if codec is not None:
        chosen = _spec_for(codec, k, InvalidParameterError).codec
    if n == nulls:
        # Nothing to encode: every chunk without values is PLAIN and empty.
        chosen, body = Codec.PLAIN, b""
    elif codec is not None:
        body = CODECS[chosen].encode(compact, k, ctx)
    elif setting == "none":
        chosen, body = (Codec.VECTOR, _vector_encode(compact, k, ctx)) if k.name == "vector" \
            else (Codec.PLAIN, _plain_encode(compact, k, ctx))
    else:
        chosen, body = _select(compact, k, ctx)
    raw = bitmap + body if bitmap else body
    if len(raw) > MAX_RAW_CHUNK_BYTES:
        raise InvalidParameterError(
            f"column chunk of {len(raw)} bytes exceeds {MAX_RAW_CHUNK_BYTES}; use fewer rows")
    comp, stored = _compress(raw, setting, level)
    if (codec is None and setting != "none" and chosen != Codec.PLAIN
            and k.physical not in ("var", "bool")
            and 10 * len(body) >= 4 * (n - nulls) * k.width):
        # The light codec saved little: a general layer over plain values may
        # beat it (decimal-looking floats under zstd, for example). Keep
        # whichever stored form is smaller.
        plain_raw = bitmap + _plain_encode(compact, k, ctx)
        plain_comp, plain_stored = _compress(plain_raw, setting, level)
        if len(plain_stored) < len(stored):
            chosen, raw, comp, stored = Codec.PLAIN, plain_raw, plain_comp, plain_stored
    header = ChunkHeader(int(chosen), int(comp), n, nulls, len(raw), len(stored), stats)
    return header, stored


def choose_codec(values, validity, kind: str | Kind, *, compression: str | None = "auto",
                 compression_level: int | None = None) -> CodecChoice:
    """The codec and compression layer :func:`encode_chunk` would use.

    Selection, per column chunk, from the data (NULLs excluded):

    * integers, dates, times, timestamps: the smallest of plain, bit-packing
      (frame of reference), delta, delta-of-delta (regular timestamps) and
      run-length, computed exactly from one statistics pass;
    * floats: the smallest of plain, decimal scaling (when every value is an
      exact decimal), Gorilla XOR and run-length;
    * booleans: bitmap, or run-length when runs are long;
    * uuid and interval: plain or run-length;
    * variable width: dictionary when the distinct count is at most half the
      values and the dictionary encoding is smaller, else plain;
    * then the general layer per ``compression``; for fixed-width kinds where
      the light codec saved less than 60%, plain values under the general
      layer are tried as well and the smaller stored form wins.
    """
    setting, level = resolve_compression(compression, compression_level)
    header, _ = encode_chunk(values, validity, kind, compression=setting,
                             compression_level=level)
    return CodecChoice(Codec(header.codec), Compression(header.compression), level)


def decode_chunk(header, payload, kind: str | Kind) -> ColumnData:
    """Decode one stored column chunk.

    Args:
        header: A :class:`ChunkHeader`, or any object with ``codec``,
            ``compression``, ``row_count``, ``null_count`` and ``raw_length``
            attributes (``stored_length`` is checked when present).
        payload: The stored bytes (bytes, bytearray, memoryview or uint8 array).
        kind: Logical kind of the column.

    Returns:
        :class:`ColumnData` of ``row_count`` rows; NULL rows hold zero / empty
        values and validity is ``None`` when there are no NULLs.

    Raises:
        CorruptDataError: the header or the bytes are invalid.
    """
    k = get_kind(kind)
    rows, nulls, spec, buf, validity = _open_chunk(header, payload, k)
    if nulls == rows:
        # No values: the values section is empty whatever the codec.
        buf.done()
        compact = (VarBytes(np.zeros(1, np.int64), np.zeros(0, np.uint8))
                   if k.physical == "var" else np.zeros(0, dtype=k.dtype))
    else:
        compact = spec.decode(buf, rows - nulls, k)
        buf.done()
    return ColumnData(_expand(compact, validity, k, rows), validity)


class DictionaryChunk(NamedTuple):
    """A DICTIONARY-coded chunk as stored: ``entries`` (the distinct values),
    ``codes`` (int32, one per row, each an index into ``entries``; 0 for a
    NULL row) and ``validity`` (as :class:`ColumnData`'s)."""

    entries: VarBytes
    codes: np.ndarray
    validity: np.ndarray | None


def decode_dictionary_chunk(header, payload, kind: str | Kind) -> DictionaryChunk | None:
    """A DICTIONARY-coded chunk (see :func:`decode_chunk`) left in its
    dictionary form, its values not gathered; None when the chunk is coded
    otherwise or holds only NULLs.

    Raises:
        CorruptDataError: the header or the bytes are invalid.
    """
    k = get_kind(kind)
    if int(header.codec) != Codec.DICTIONARY or k.physical != "var":
        return None
    rows, nulls, _spec, buf, validity = _open_chunk(header, payload, k)
    count = rows - nulls
    if count == 0:
        return None
    entries, codes = _dictionary_parts(buf, count)
    buf.done()
    if int(codes.view(np.uint32).max()) >= len(entries.offsets) - 1:  # negative ones too
        raise CorruptDataError(f"dictionary code out of range 0..{len(entries.offsets) - 2}")
    if validity is not None:
        per_row = np.zeros(rows, dtype=np.int32)
        per_row[validity] = codes
        codes = per_row
    return DictionaryChunk(entries, codes, validity)


def _open_chunk(header, payload, k: Kind) -> tuple:
    """The checks of a chunk's header, then (rows, NULLs, codec spec, its
    decompressed bytes past the validity bitmap, validity)."""
    try:
        codec = int(header.codec)
        comp = int(header.compression)
        rows = int(header.row_count)
        nulls = int(header.null_count)
        raw_length = int(header.raw_length)
    except (AttributeError, TypeError, ValueError) as exc:
        raise CorruptDataError(f"invalid chunk header: {exc}") from None
    if not 0 <= rows <= MAX_CHUNK_ROWS:
        raise CorruptDataError(f"row count {rows} out of range 0..{MAX_CHUNK_ROWS}")
    if not 0 <= nulls <= rows:
        raise CorruptDataError(f"null count {nulls} out of range 0..{rows}")
    if not 0 <= raw_length <= _max_raw_length(k, rows):
        raise CorruptDataError(f"raw length {raw_length} out of range for {rows} rows")
    spec = _spec_for(codec, k)
    view = _byte_view(payload)
    stored_length = getattr(header, "stored_length", None)
    if stored_length is not None and int(stored_length) != len(view):
        raise CorruptDataError(
            f"chunk is {len(view)} bytes, header says {int(stored_length)}")
    buf = _Buf(_decompress(view, comp, raw_length))
    validity = None
    if nulls == rows and rows > 0:
        validity = np.zeros(rows, dtype=bool)
    elif nulls:
        valid = np.empty(rows, dtype=np.uint8)
        ones = _ci.bitmap_unpack(buf.take((rows + 7) // 8), valid)
        if ones != rows - nulls:
            raise CorruptDataError(
                f"validity bitmap has {rows - ones} NULLs, header says {nulls}")
        validity = valid.view(np.bool_)
    return rows, nulls, spec, buf, validity
