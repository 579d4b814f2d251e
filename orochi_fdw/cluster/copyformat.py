"""Batches in PostgreSQL's COPY text format, and back.

Rows bound for a shard go as ``COPY ... FROM STDIN`` in text format: each
value in the text form its type's input function reads back exactly, tab
between values, a newline after each row, ``\\N`` for NULL, and backslash,
tab, newline and carriage return escaped.  Everything here works on whole
columns with numpy; only values Python cannot format in bulk (dates outside
years 1-9999, infinities, time 24:00) take a per-value path.

:func:`column_text_fields` turns a wire column into (UTF-8 bytes, offsets,
NULL mask); :func:`encode_rows` lays several such columns out as COPY
text.
"""

from __future__ import annotations

import numpy as np

from orochi_fdw.bridge.batch import INTERVAL_DTYPE, WIRE_DTYPES, Column, WireKind

_SPECIAL = np.array([92, 10, 13, 9], dtype=np.uint8)  # \ \n \r \t
_ESCAPED = {92: 92, 10: ord("n"), 13: ord("r"), 9: ord("t")}
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_DAY_US = 86_400_000_000
#: days since 2000-01-01 of 0001-01-01 and 9999-12-31
_FIRST_DAY, _LAST_DAY = -730119, 2921939


def _from_fixed(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes and offsets of a numpy 'S' array."""
    n = len(strings)
    width = strings.dtype.itemsize
    if n == 0 or width == 0:
        return np.zeros(0, np.uint8), np.zeros(n + 1, np.int64)
    lens = np.char.str_len(strings).astype(np.int64)
    mat = np.ascontiguousarray(strings).view(np.uint8).reshape(n, width)
    data = mat[np.arange(width)[None, :] < lens[:, None]]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return data, offsets


def _from_list(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(texts) + 1, np.int64)
    if texts:
        np.cumsum([len(t) for t in texts], out=offsets[1:])
    return np.frombuffer(b"".join(texts), dtype=np.uint8), offsets


def _splice(base: tuple[np.ndarray, np.ndarray], rows: np.ndarray, texts: list[bytes]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Replace the values of ``rows`` in (data, offsets) by ``texts``."""
    if len(rows) == 0:
        return base
    data, offsets = base
    n = len(offsets) - 1
    pieces = [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(n)]
    for r, t in zip(rows.tolist(), texts):
        pieces[r] = t
    return _from_list(pieces)


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) in the proleptic Gregorian calendar of a day
    count since 2000-01-01 (any range; year 0 is 1 BC)."""
    z = days + 10957 + 719468  # days since 0000-03-01
    era = z // 146097  # floor division (the C original adjusts truncation)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y, m, d)


def _date_text(days: int) -> str:
    if days == _INT32_MIN:
        return "-infinity"
    if days == _INT32_MAX:
        return "infinity"
    y, m, d = _civil(days)
    if y <= 0:
        return f"{1 - y:04d}-{m:02d}-{d:02d} BC"
    return f"{y:04d}-{m:02d}-{d:02d}"


def _timestamp_text(us: int) -> str:
    if us == _INT64_MIN:
        return "-infinity"
    if us == _INT64_MAX:
        return "infinity"
    days, rest = divmod(us, _DAY_US)
    y, m, d = _civil(days)
    h, rest = divmod(rest, 3_600_000_000)
    mi, rest = divmod(rest, 60_000_000)
    s, frac = divmod(rest, 1_000_000)
    text = f"{abs(y) if y > 0 else 1 - y:04d}-{m:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}.{frac:06d}+00"
    return text + (" BC" if y <= 0 else "")


def column_text_fields(column: Column, nrows: int, type_name: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A wire column's values in text form: (UTF-8 bytes, offsets, NULL mask
    or None).  NULL rows have empty text."""
    kind = column.kind
    nulls = None
    if column.validity is not None:
        valid = np.asarray(column.validity).astype(bool, copy=False)
        if not valid.all():
            nulls = ~valid
    if kind.is_variable_width:
        offsets = np.asarray(column.offsets, dtype=np.int64)
        data = np.asarray(column.values, dtype=np.uint8)
        if offsets[0] != 0:
            data = data[offsets[0]:offsets[-1]]
            offsets = offsets - offsets[0]
        if kind == WireKind.BYTEA:
            data, offsets = _hex_bytea(data, offsets)
        fields = (data, offsets)
    else:
        values = np.asarray(column.values)
        if values.dtype != WIRE_DTYPES[kind]:
            values = values.view(WIRE_DTYPES[kind]) if values.dtype == np.uint8 else values.astype(WIRE_DTYPES[kind])
        values = values[:nrows]
        fields = _fixed_text(kind, values)
    if nulls is not None:
        data, offsets = fields
        lens = np.diff(offsets)
        if lens[nulls].any():  # drop whatever NULL rows carry
            keep = np.repeat(~nulls, lens)
            lens = np.where(nulls, 0, lens)
            offsets = np.zeros(len(lens) + 1, np.int64)
            np.cumsum(lens, out=offsets[1:])
            data = data[keep]
        fields = (data, offsets)
    return fields[0], fields[1], nulls


def _hex_bytea(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bytea's text form: \\x and two hex digits per byte."""
    n = len(offsets) - 1
    lens = np.diff(offsets)
    new_lens = lens * 2 + 2
    new_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(new_lens, out=new_offsets[1:])
    out = np.empty(int(new_offsets[-1]), np.uint8)
    out[new_offsets[:-1]] = 92
    out[new_offsets[:-1] + 1] = ord("x")
    if len(data):
        row = np.repeat(np.arange(n), lens)
        k = np.arange(len(data)) - offsets[row]
        pos = new_offsets[row] + 2 + 2 * k
        out[pos] = _HEX[data >> 4]
        out[pos + 1] = _HEX[data & 15]
    return out, new_offsets


def _fixed_text(kind: WireKind, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(values)
    if kind == WireKind.BOOL:
        return _from_fixed(np.where(values.astype(bool), b"t", b"f").astype("S1"))
    if kind in (WireKind.INT16, WireKind.INT32, WireKind.INT64):
        return _format_int(values)
    if kind in (WireKind.FLOAT32, WireKind.FLOAT64):
        return _format_float(values)
    if kind == WireKind.DATE:
        days = values.astype(np.int64)
        normal = (days >= _FIRST_DAY) & (days <= _LAST_DAY)
        kernel = _kernel()
        if kernel is not None and normal.all():
            out = np.empty(n * 10, np.uint8)
            offsets = np.empty(n + 1, np.int64)
            used = kernel.format_date(np.ascontiguousarray(values, dtype=np.int32), out, offsets)
            return out[:used], offsets
        dates = (np.datetime64("2000-01-01", "D") + np.where(normal, days, 0).astype("timedelta64[D]"))
        fields = _from_fixed(dates.astype("S10"))
        odd = np.flatnonzero(~normal)
        return _splice(fields, odd, [_date_text(int(days[i])).encode() for i in odd])
    if kind == WireKind.TIMESTAMP:
        us = values.astype(np.int64)
        lo, hi = _FIRST_DAY * _DAY_US, (_LAST_DAY + 1) * _DAY_US - 1
        normal = (us >= lo) & (us <= hi)
        kernel = _kernel()
        if kernel is not None and normal.all():
            out = np.empty(n * 29, np.uint8)
            offsets = np.empty(n + 1, np.int64)
            used = kernel.format_timestamp(np.ascontiguousarray(us), out, offsets, True)
            return out[:used], offsets
        stamps = np.datetime64("2000-01-01T00:00:00", "us") + np.where(normal, us, 0).astype("timedelta64[us]")
        text = np.char.add(stamps.astype("S26"), b"+00")
        fields = _from_fixed(text)
        odd = np.flatnonzero(~normal)
        return _splice(fields, odd, [_timestamp_text(int(us[i])).encode() for i in odd])
    if kind == WireKind.TIME:
        us = values.astype(np.int64)
        normal = (us >= 0) & (us < _DAY_US)
        stamps = np.datetime64("2000-01-01T00:00:00", "us") + np.where(normal, us, 0).astype("timedelta64[us]")
        text = stamps.astype("S26").view("S1").reshape(n, 26)[:, 11:].copy().view("S15").reshape(n)
        fields = _from_fixed(text)
        odd = np.flatnonzero(~normal)
        return _splice(fields, odd, [_time_text(int(us[i])).encode() for i in odd])
    if kind == WireKind.INTERVAL:
        iv = values.view(INTERVAL_DTYPE) if values.dtype != INTERVAL_DTYPE else values
        text = np.char.add(np.char.add(np.char.add(iv["month"].astype("S"), b" mons "),
                                       np.char.add(iv["day"].astype("S"), b" days ")),
                           np.char.add(iv["time"].astype("S"), b" microseconds"))
        return _from_fixed(text)
    if kind == WireKind.UUID:
        raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, 16)
        hexed = np.empty((n, 32), np.uint8)
        hexed[:, 0::2] = _HEX[raw >> 4]
        hexed[:, 1::2] = _HEX[raw & 15]
        out = np.full((n, 36), ord("-"), np.uint8)
        for src, dst in ((slice(0, 8), slice(0, 8)), (slice(8, 12), slice(9, 13)),
                         (slice(12, 16), slice(14, 18)), (slice(16, 20), slice(19, 23)),
                         (slice(20, 32), slice(24, 36))):
            out[:, dst] = hexed[:, src]
        offsets = np.arange(n + 1, dtype=np.int64) * 36
        return out.reshape(-1), offsets
    raise TypeError(f"no text form for wire kind {kind!r}")


def _kernel():
    """The Cython kernels' module, or None when they are not built (the
    numpy path then formats)."""
    try:
        from orochi_fdw.kernels import copytext
    except ImportError:  # pragma: no cover - kernels not built
        return None
    return copytext


def _format_int(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal text (the kernel; numpy's astype as the reference)."""
    copytext = _kernel()
    if copytext is None:
        return _from_fixed(values.astype("S"))
    n = len(values)
    out = np.empty(n * 21, np.uint8)
    offsets = np.empty(n + 1, np.int64)
    used = copytext.format_int(np.ascontiguousarray(values), out, offsets)
    return out[:used], offsets


def _format_float(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shortest text that reads back exactly (a float32 as the double
    it is: float4in rounds it back to the same float32)."""
    copytext = _kernel()
    if copytext is None:
        return _from_fixed(values.astype("S"))
    n = len(values)
    out = np.empty(n * 32, np.uint8)
    offsets = np.empty(n + 1, np.int64)
    used = copytext.format_float64(np.ascontiguousarray(values, dtype=np.float64), out, offsets)
    return out[:used], offsets


def _time_text(us: int) -> str:
    h, rest = divmod(us, 3_600_000_000)
    m, rest = divmod(rest, 60_000_000)
    s, frac = divmod(rest, 1_000_000)
    return f"{h:02d}:{m:02d}:{s:02d}.{frac:06d}"


def escape(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COPY text escaping of backslash, newline, carriage return and tab."""
    special = np.isin(data, _SPECIAL)
    if not special.any():
        return data, offsets
    widths = special.astype(np.int64) + 1
    ends = np.cumsum(widths)
    starts = ends - widths
    out = np.empty(int(ends[-1]) if len(ends) else 0, np.uint8)
    out[starts] = np.where(special, 92, data)
    sp = np.flatnonzero(special)
    mapped = np.zeros(256, np.uint8)
    for k, v in _ESCAPED.items():
        mapped[k] = v
    out[starts[sp] + 1] = mapped[data[sp]]
    pos = np.concatenate(([0], ends))
    return out, pos[offsets]


#: rows laid out per call of the interleaving (bounds its index arrays)
_ROWS_PER_PIECE = 32_768


def prepare(fields: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> list:
    """Columns from :func:`column_text_fields`, escaped once for
    :func:`encode_prepared`."""
    out = []
    for data, offsets, nulls in fields:
        data, offsets = escape(data, offsets)
        out.append((data, offsets, nulls))
    return out


def encode_prepared(prepared: list, nrows: int, rows: np.ndarray | None = None) -> bytes:
    """COPY text of ``rows`` (indices, ascending; all when None) of
    prepared columns."""
    indices = np.arange(nrows) if rows is None else np.asarray(rows, dtype=np.int64)
    out = []
    for start in range(0, len(indices), _ROWS_PER_PIECE):
        out.append(_interleave(prepared, indices[start:start + _ROWS_PER_PIECE]))
    return b"".join(out)


def encode_rows(fields: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], nrows: int,
                rows: np.ndarray | None = None) -> bytes:
    """COPY text of ``rows`` of columns as :func:`column_text_fields` returns
    them."""
    return encode_prepared(prepare(fields), nrows, rows)


def _interleave(columns, rows: np.ndarray) -> bytes:
    n = len(rows)
    if n == 0:
        return b""
    ncols = len(columns)
    lens = []
    for data, offsets, nulls in columns:
        ln = offsets[rows + 1] - offsets[rows]
        if nulls is not None:
            ln = np.where(nulls[rows], 2, ln)
        lens.append(ln)
    rowlen = np.sum(lens, axis=0) + ncols if ncols else np.ones(n, np.int64)
    row_start = np.zeros(n, np.int64)
    np.cumsum(rowlen[:-1], out=row_start[1:])
    out = np.empty(int(row_start[-1] + rowlen[-1]), np.uint8)
    pos = row_start.copy()
    for c, (data, offsets, nulls) in enumerate(columns):
        src = offsets[rows]
        datalen = offsets[rows + 1] - src
        isnull = nulls[rows] if nulls is not None else None
        if isnull is not None:
            datalen = np.where(isnull, 0, datalen)
        total = int(datalen.sum())
        if total:
            rep = np.repeat(pos - np.cumsum(datalen) + datalen, datalen)
            srcidx = np.repeat(src - np.cumsum(datalen) + datalen, datalen)
            k = np.arange(total)
            out[rep + k] = data[srcidx + k]
        if isnull is not None and isnull.any():
            npos = pos[isnull]
            out[npos] = 92
            out[npos + 1] = ord("N")
        pos = pos + lens[c]
        out[pos] = 9 if c < ncols - 1 else 10
        pos = pos + 1
    if ncols == 0:
        out[pos] = 10
    return out.tobytes()
