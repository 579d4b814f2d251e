"""Reference implementation of every column codec, in plain Python and numpy.

This module is deliberately simple and independent of the Cython kernels and
of :mod:`orochi_fdw.storage.codecs`: it re-derives every byte layout of
``docs/FORMAT.md`` from the specification with Python integers and lists,
so that tests can check that the kernels produce *identical bytes* and that
each implementation decodes what the other wrote. It is slow and it trusts its
input; never use it outside tests.

Values are given as numpy arrays for fixed-width kinds and as lists of
``bytes`` for variable-width kinds; NULLs (for the chunk-level functions) as a
validity list/array (True = present) or ``None``.
"""

from __future__ import annotations

import numpy as np

# Codec ids, restated from docs/FORMAT.md.
PLAIN, BITPACK, DELTA, DELTA_DELTA, RLE, DICTIONARY, GORILLA, BITMAP, DECIMAL = range(9)
DECIMAL_MAX_EXPONENT = 18


class NotDecimal(ValueError):
    """DECIMAL does not apply: some value is not an exact decimal."""

# kind -> (physical class, numpy dtype string or None for variable width)
KINDS = {
    "bool": ("bool", "?"),
    "int16": ("int", "<i2"),
    "int32": ("int", "<i4"),
    "int64": ("int", "<i8"),
    "float32": ("float", "<f4"),
    "float64": ("float", "<f8"),
    "date": ("int", "<i4"),
    "timestamp": ("int", "<i8"),
    "timestamptz": ("int", "<i8"),
    "time": ("int", "<i8"),
    "interval": ("fixed", [("time", "<i8"), ("day", "<i4"), ("month", "<i4")]),
    "uuid": ("fixed", "V16"),
    "text": ("var", None),
    "bytea": ("var", None),
    "varchar": ("var", None),
    "bpchar": ("var", None),
    "numeric": ("var", None),
    "jsonb": ("var", None),
    "vector": ("var", None),
    **{f"decimal64_{s}": ("int", "<i8") for s in range(19)},  # numeric(p, s) times 10^s
    "char": ("var", None),  # char(n) without its trailing spaces
}

_M64 = (1 << 64) - 1


def _wrap(x: int) -> int:
    """Signed 64-bit two's complement value of x modulo 2**64."""
    x &= _M64
    return x - (1 << 64) if x >= (1 << 63) else x


def _le(value: int, nbytes: int, signed: bool = False) -> bytes:
    return value.to_bytes(nbytes, "little", signed=signed)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def read(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, nbytes: int, signed: bool = False) -> int:
        return int.from_bytes(self.read(nbytes), "little", signed=signed)

    def rest(self) -> bytes:
        return self.read(len(self.data) - self.pos)


# -------------------------------------------------------------- bit fields

def pack_fields(fields: list[int], width: int) -> bytes:
    """LSB-first packing of non-negative fields of `width` bits, byte by byte."""
    out = bytearray()
    acc = 0
    nacc = 0
    for v in fields:
        assert 0 <= v < (1 << width) or (width == 0 and v == 0)
        acc |= v << nacc
        nacc += width
        while nacc >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nacc -= 8
    if nacc:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_fields(data: bytes, count: int, width: int) -> list[int]:
    fields = []
    acc = 0
    nacc = 0
    it = iter(data)
    mask = (1 << width) - 1
    for _ in range(count):
        while nacc < width:
            acc |= next(it) << nacc
            nacc += 8
        fields.append(acc & mask)
        acc >>= width
        nacc -= width
    return fields


def packed_block(ints: list[int]) -> bytes:
    """base (int64) + width (uint8) + packed (v - base) with base = min."""
    if not ints:
        return _le(0, 8, True) + bytes([0])
    base = min(ints)
    width = (max(ints) - base).bit_length()
    return _le(base, 8, True) + bytes([width]) + pack_fields([v - base for v in ints], width)


def read_packed_block(r: _Reader, count: int) -> list[int]:
    base = r.int(8, signed=True)
    width = r.int(1)
    raw = r.read((count * width + 7) // 8)
    return [_wrap(base + f) for f in unpack_fields(raw, count, width)]


# ------------------------------------------------------------------ codecs

def _dtype(kind: str) -> np.dtype:
    return np.dtype(KINDS[kind][1])


def _items(values: np.ndarray, kind: str) -> list[bytes]:
    """Each value's raw little-endian bytes."""
    raw = np.ascontiguousarray(values, dtype=_dtype(kind)).tobytes()
    w = _dtype(kind).itemsize
    return [raw[i:i + w] for i in range(0, len(raw), w)]


def _to_array(items: list[bytes], kind: str) -> np.ndarray:
    return np.frombuffer(b"".join(items), dtype=_dtype(kind)).copy()


def encode_values(values, kind: str, codec: int) -> bytes:
    """Encode non-NULL values (ndarray, or list of bytes for var kinds)."""
    physical = KINDS[kind][0]
    if physical == "var":
        values = [bytes(v) for v in values]
        if codec == PLAIN:
            return packed_block([len(v) for v in values]) + b"".join(values)
        if codec == DICTIONARY:
            return _dictionary_encode(values)
        raise ValueError(f"codec {codec} not valid for {kind}")
    if codec == PLAIN:
        return b"".join(_items(values, kind))
    if codec == RLE:
        return _rle_encode(_items(values, kind))
    if codec == BITMAP:
        bits = np.array([bool(v) for v in values], dtype=bool)
        return np.packbits(bits, bitorder="little").tobytes()
    if codec == GORILLA:
        w = _dtype(kind).itemsize * 8
        ints = [int.from_bytes(b, "little") for b in _items(values, kind)]
        return _gorilla_encode(ints, w)
    if codec == DECIMAL:
        return _decimal_encode(values, kind)
    ints = [int(v) for v in values.tolist()]
    if codec == BITPACK:
        return packed_block(ints)
    if codec == DELTA:
        if not ints:
            return b""
        deltas = [_wrap(b - a) for a, b in zip(ints, ints[1:])]
        return _le(ints[0], 8, True) + packed_block(deltas)
    if codec == DELTA_DELTA:
        if not ints:
            return b""
        deltas = [_wrap(b - a) for a, b in zip(ints, ints[1:])]
        dods = [_wrap(b - a) for a, b in zip(deltas, deltas[1:])]
        first_delta = deltas[0] if deltas else 0
        return _le(ints[0], 8, True) + _le(first_delta, 8, True) + packed_block(dods)
    raise ValueError(f"codec {codec} not valid for {kind}")


def decode_values(data: bytes, count: int, kind: str, codec: int):
    """Decode ``count`` values; ndarray, or list of bytes for var kinds."""
    r = _Reader(data)
    physical = KINDS[kind][0]
    if physical == "var":
        if codec == PLAIN:
            lengths = read_packed_block(r, count)
            out = [r.read(n) for n in lengths]
        else:
            out = _dictionary_decode(r, count)
        assert r.pos == len(r.data), "trailing bytes"
        return out
    w = _dtype(kind).itemsize
    if codec == PLAIN:
        out = _to_array([r.read(w) for _ in range(count)], kind)
    elif codec == RLE:
        out = _to_array(_rle_decode(r, count, w), kind)
    elif codec == BITMAP:
        raw = np.frombuffer(r.read((count + 7) // 8), dtype=np.uint8)
        out = np.unpackbits(raw, bitorder="little")[:count].astype(bool)
    elif codec == GORILLA:
        ints = _gorilla_decode(r, count, w * 8)
        out = _to_array([v.to_bytes(w, "little") for v in ints], kind)
    elif codec == DECIMAL:
        e = r.int(1)
        sub = r.int(1)
        nx = r.int(4)
        positions = read_packed_block(r, nx) if nx else []
        raw = [r.read(w) for _ in range(nx)]
        ints = decode_values(r.rest(), count, "int64", sub).tolist()
        items = _items(np.array([i / 10.0 ** e for i in ints]), kind)
        for pos, b in zip(positions, raw):
            items[pos] = b
        out = _to_array(items, kind)
    else:
        if codec == BITPACK:
            ints = read_packed_block(r, count)
        elif count == 0:
            ints = []
        elif codec == DELTA:
            ints = [r.int(8, signed=True)]
            for d in read_packed_block(r, count - 1):
                ints.append(_wrap(ints[-1] + d))
        elif codec == DELTA_DELTA:
            ints = [r.int(8, signed=True)]
            delta = r.int(8, signed=True)
            if count > 1:
                ints.append(_wrap(ints[0] + delta))
            for dd in read_packed_block(r, max(count - 2, 0)):
                delta = _wrap(delta + dd)
                ints.append(_wrap(ints[-1] + delta))
        else:
            raise ValueError(f"codec {codec} not valid for {kind}")
        out = np.array(ints, dtype=_dtype(kind))
    assert r.pos == len(r.data), "trailing bytes"
    return out


def _decimal_ints(values: np.ndarray, kind: str, e: int) -> tuple[list[int], list[int]]:
    """Scaled integers and exception positions at exponent e; an exception's
    integer repeats the previous integer (0 at the start)."""
    scale = 10.0 ** e
    ints: list[int] = []
    exceptions: list[int] = []
    last = 0
    for pos, (v, raw) in enumerate(zip(values.tolist(), _items(values, kind))):
        x = float(v) * scale
        ok = x == x and abs(x) != float("inf")
        if ok:
            i = round(x)                            # ties to even, like rint
            back = np.array([i / scale]).astype(_dtype(kind)).tobytes()
            ok = abs(i) <= 2 ** 53 and back == raw
        if ok:
            ints.append(i)
            last = i
        else:
            ints.append(last)
            exceptions.append(pos)
    return ints, exceptions


def _int_choice(ints: list[int]) -> int:
    """The integer codec with the smallest size (ties: lowest id)."""
    m = len(ints)
    if m == 0:
        return PLAIN

    def bits(count: int, span: int) -> int:
        return (count * span.bit_length() + 7) // 8

    deltas = [_wrap(b - a) for a, b in zip(ints, ints[1:])]
    dods = [_wrap(b - a) for a, b in zip(deltas, deltas[1:])]
    runs = []
    for v in ints:
        if runs and runs[-1][0] == v:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    lengths = [n for _, n in runs]
    sizes = {
        PLAIN: 8 * m,
        BITPACK: 9 + bits(m, max(ints) - min(ints)),
        DELTA: 17 + bits(m - 1, (max(deltas) - min(deltas)) if deltas else 0),
        DELTA_DELTA: 25 + bits(max(m - 2, 0), (max(dods) - min(dods)) if dods else 0),
        RLE: 4 + 8 * len(runs) + 9 + bits(len(runs), max(lengths) - min(lengths)),
    }
    return min(sizes, key=lambda c: (sizes[c], c))


def _decimal_encode(values: np.ndarray, kind: str) -> bytes:
    items = _items(values, kind)
    for e in range(DECIMAL_MAX_EXPONENT + 1):
        ints, exceptions = _decimal_ints(values, kind, e)
        if len(exceptions) <= len(ints) // 16:
            sub = _int_choice(ints)
            body = encode_values(np.array(ints, dtype=np.int64), "int64", sub) if ints else b""
            head = bytes([e, sub]) + _le(len(exceptions), 4)
            if exceptions:
                head += packed_block(exceptions) + b"".join(items[p] for p in exceptions)
            return head + body
    raise NotDecimal("too many values are not exact decimals")


def _rle_encode(items: list[bytes]) -> bytes:
    runs: list[list] = []
    for it in items:
        if runs and runs[-1][0] == it:
            runs[-1][1] += 1
        else:
            runs.append([it, 1])
    return (_le(len(runs), 4) + b"".join(v for v, _ in runs)
            + packed_block([n for _, n in runs]))


def _rle_decode(r: _Reader, count: int, w: int) -> list[bytes]:
    nruns = r.int(4)
    values = [r.read(w) for _ in range(nruns)]
    lengths = read_packed_block(r, nruns)
    out = []
    for v, n in zip(values, lengths):
        out.extend([v] * n)
    assert len(out) == count
    return out


def _dictionary_encode(values: list[bytes]) -> bytes:
    codes_of: dict[bytes, int] = {}
    codes = []
    for v in values:
        if v not in codes_of:
            codes_of[v] = len(codes_of)
        codes.append(codes_of[v])
    entries = list(codes_of)          # in order of first appearance
    packed = bytes([BITPACK]) + packed_block(codes)
    rle = bytes([RLE]) + _rle_encode([c.to_bytes(4, "little") for c in codes])
    section = rle if len(rle) < len(packed) else packed
    return (_le(len(entries), 4) + packed_block([len(e) for e in entries])
            + b"".join(entries) + section)


def _dictionary_decode(r: _Reader, count: int) -> list[bytes]:
    d = r.int(4)
    lengths = read_packed_block(r, d)
    entries = [r.read(n) for n in lengths]
    sub = r.int(1)
    if sub == BITPACK:
        codes = read_packed_block(r, count)
    else:
        codes = [int.from_bytes(c, "little") for c in _rle_decode(r, count, 4)]
    return [entries[c] for c in codes]


def _gorilla_encode(ints: list[int], w: int) -> bytes:
    lbits = 5 if w == 32 else 6
    bits: list[int] = []

    def put(value: int, n: int) -> None:
        bits.extend((value >> j) & 1 for j in range(n))

    if not ints:
        return b""
    put(ints[0], w)
    window = None
    for prev, cur in zip(ints, ints[1:]):
        x = prev ^ cur
        if x == 0:
            put(0, 1)
            continue
        lead = w - x.bit_length()
        trail = (x & -x).bit_length() - 1
        if window is not None and lead >= window[0] and trail >= window[1]:
            put(1, 1)
            put(0, 1)
            put(x >> window[1], w - window[0] - window[1])
        else:
            sig = w - lead - trail
            put(1, 1)
            put(1, 1)
            put(lead, lbits)
            put(sig - 1, lbits)
            put(x >> trail, sig)
            window = (lead, trail)
    return np.packbits(np.array(bits, dtype=np.uint8), bitorder="little").tobytes()


def _gorilla_decode(r: _Reader, count: int, w: int) -> list[int]:
    lbits = 5 if w == 32 else 6
    raw = r.rest()
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little").tolist()
    pos = 0

    def get(n: int) -> int:
        nonlocal pos
        v = 0
        for j in range(n):
            v |= bits[pos + j] << j
        pos += n
        return v

    if count == 0:
        return []
    out = [get(w)]
    window = None
    for _ in range(count - 1):
        if get(1) == 0:
            out.append(out[-1])
            continue
        if get(1) == 0:
            lead, trail = window
        else:
            lead = get(lbits)
            sig = get(lbits) + 1
            trail = w - lead - sig
            window = (lead, trail)
        out.append(out[-1] ^ (get(w - lead - trail) << trail))
    assert (pos + 7) // 8 == len(raw)
    return out


# ---------------------------------------------------------- chunk payloads

def encode_raw_chunk(values, validity, kind: str, codec: int) -> bytes:
    """Raw (uncompressed) payload: validity bitmap if some but not all rows
    are NULL, then the values section of the non-NULL values."""
    n = len(values)
    valid = [True] * n if validity is None else [bool(v) for v in validity]
    present = [i for i in range(n) if valid[i]]
    if KINDS[kind][0] == "var":
        kept = [values[i] for i in present]
    else:
        kept = np.asarray(values)[present] if present else np.asarray(values)[:0]
    head = b""
    if 0 < len(present) < n:
        head = np.packbits(np.array(valid, dtype=bool), bitorder="little").tobytes()
    if not present:
        return b""
    return head + encode_values(kept, kind, codec)


def decode_raw_chunk(raw: bytes, rows: int, nulls: int, kind: str, codec: int):
    """Inverse of encode_raw_chunk: (values with zero/empty at NULLs, validity)."""
    physical = KINDS[kind][0]
    if 0 < nulls < rows:
        nb = (rows + 7) // 8
        valid = np.unpackbits(np.frombuffer(raw[:nb], dtype=np.uint8),
                              bitorder="little")[:rows].astype(bool)
        raw = raw[nb:]
    else:
        valid = np.full(rows, nulls == 0, dtype=bool)
    kept = decode_values(raw, rows - nulls, kind, codec)
    if physical == "var":
        it = iter(kept)
        values = [next(it) if v else b"" for v in valid]
    else:
        values = np.zeros(rows, dtype=_dtype(kind))
        values[valid] = kept
    return values, (None if nulls == 0 else valid)
