"""Codec benchmark: encode / decode throughput and compression ratio.

Prints one table per realistic column (regular timestamps with jitter, device
ids, float metrics, low-cardinality status text, booleans): every applicable
light-weight codec alone, the automatic choice, the automatic choice cut into
10,000-row chunks as the stripe writer does, and lz4 / zstd alone on the plain
bytes for comparison; then the same columns written as one stripe file and
read back.

GB/s is uncompressed in-memory bytes (values, plus int64 offsets for text)
per second on one core, best of --repeat runs; ratio is uncompressed bytes /
stored bytes.

    python bench/codec_bench.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import lz4.block
import numpy as np
import zstandard

from orochi_fdw.errors import InvalidParameterError
from orochi_fdw.storage import codecs as C
from orochi_fdw.storage.kinds import KINDS, VarBytes
from orochi_fdw.storage.stripe_format import StripeReader, write_stripe


def make_columns(n: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    start = 757_382_400_000_000                      # 2024-01-01 in µs since 2000-01-01
    ts = start + np.arange(n, dtype=np.int64) * 1_000_000 + rng.integers(-50_000, 50_000, n)
    devices = rng.integers(0, 5_000, n).astype(np.int32)
    metric = np.round(50 + np.cumsum(rng.normal(0, 0.05, n)), 2)
    labels = np.array([b"ok", b"warning", b"error", b"maintenance"], dtype=object)
    status_idx = rng.choice(4, size=n, p=[0.90, 0.07, 0.02, 0.01])
    lengths = np.array([len(x) for x in labels], dtype=np.int64)[status_idx]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(labels[status_idx]), dtype=np.uint8)
    flags = rng.random(n) < 0.03
    return {
        "ts (timestamptz, 1 s + jitter)": ("timestamptz", ts),
        "device_id (int32, 5k ids)": ("int32", devices),
        "cpu (float64, 2 decimals)": ("float64", metric),
        "status (text, 4 values)": ("text", VarBytes(offsets, data)),
        "alert (bool, 3% true)": ("bool", flags),
    }


def nbytes(values) -> int:
    if isinstance(values, VarBytes):
        return values.offsets.nbytes + values.data.nbytes
    return values.nbytes


def plain_bytes(values) -> bytes:
    if isinstance(values, VarBytes):
        return values.offsets.tobytes() + values.data.tobytes()
    return values.tobytes()


def best(fn, repeat: int) -> tuple[float, object]:
    out = None
    t_best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t0)
    return t_best, out


def bench_chunk(kind, values, repeat, *, codec=None, compression="none", level=None,
                chunk_rows=None):
    n = values.count if isinstance(values, VarBytes) else len(values)
    step = chunk_rows or n
    pieces = []
    for s in range(0, n, step):
        e = min(s + step, n)
        pieces.append(VarBytes(values.offsets[s:e + 1], values.data)
                      if isinstance(values, VarBytes) else values[s:e])

    def enc():
        return [C.encode_chunk(p, None, kind, codec=codec, compression=compression,
                               compression_level=level) for p in pieces]

    t_enc, chunks = best(enc, repeat)

    def dec():
        return [C.decode_chunk(h, b, kind) for h, b in chunks]

    t_dec, decoded = best(dec, repeat)
    if len(decoded) == 1:
        got = decoded[0].values
        if isinstance(values, VarBytes):
            assert got.data.tobytes() == values.data[values.offsets[0]:values.offsets[-1]].tobytes()
        else:
            assert got.tobytes() == values.tobytes()
    stored = sum(len(b) for _, b in chunks)
    used = {C.Codec(h.codec).name for h, _ in chunks}
    comp = {C.Compression(h.compression).name for h, _ in chunks}
    return t_enc, t_dec, stored, "/".join(sorted(used)), "/".join(sorted(comp))


def bench_general(raw: bytes, which: str, repeat: int):
    if which == "lz4":
        t_enc, c = best(lambda: lz4.block.compress(raw, store_size=False), repeat)
        t_dec, _ = best(lambda: lz4.block.decompress(c, uncompressed_size=len(raw)), repeat)
    else:
        cctx = zstandard.ZstdCompressor(level=3)
        dctx = zstandard.ZstdDecompressor()
        t_enc, c = best(lambda: cctx.compress(raw), repeat)
        t_dec, _ = best(lambda: dctx.decompress(c), repeat)
    return t_enc, t_dec, len(c)


def bench_stripe(cols: dict, repeat: int) -> None:
    """Write all columns as one stripe (10k-row chunk groups), read it back."""
    schema = {f"c{i}": kind for i, (kind, _) in enumerate(cols.values())}
    batch = {f"c{i}": (values, None) for i, (_, values) in enumerate(cols.values())}
    size = sum(nbytes(v) for _, v in cols.values())
    with tempfile.TemporaryDirectory() as d:
        paths = iter(os.path.join(d, f"s{i}") for i in range(repeat))
        t_write, meta = best(lambda: write_stripe(next(paths), schema, batch), repeat)
        path = meta.path
        file_size = os.path.getsize(path)

        def read_all():
            with StripeReader(path) as r:
                return r.read()

        def read_one():
            with StripeReader(path) as r:
                return r.read(["c0"])

        t_read, _ = best(read_all, repeat)
        t_one, _ = best(read_one, repeat)
    print(f"== stripe file: {meta.row_count:,} rows x {len(schema)} columns, "
          f"{len(meta.chunk_groups)} chunk groups, {size / 1e6:.1f} MB in memory, "
          f"{file_size / 1e6:.2f} MB on disk ({size / file_size:.1f}x)")
    print(f"write (encode, checksum, fsync, link)  {t_write * 1e3:8.1f} ms  "
          f"{size / t_write / 1e9:.2f} GB/s")
    print(f"read all columns (verify + decode)     {t_read * 1e3:8.1f} ms  "
          f"{size / t_read / 1e9:.2f} GB/s")
    print(f"read one column (ts)                   {t_one * 1e3:8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cols = make_columns(args.rows)
    print(f"{args.rows:,} rows per column, one core, best of {args.repeat}\n")
    header = f"{'method':<34}{'encode GB/s':>12}{'decode GB/s':>12}{'ratio':>9}  chosen"
    for title, (kind, values) in cols.items():
        size = nbytes(values)
        print(f"== {title}: {size / 1e6:.1f} MB in memory")
        print(header)
        print("-" * len(header))
        rows = []
        phys = KINDS[kind].physical
        for codec in sorted(c for c, s in C.CODECS.items() if phys in s.physicals):
            try:
                result = bench_chunk(kind, values, args.repeat, codec=codec)
            except InvalidParameterError:      # e.g. DECIMAL on non-decimal data
                continue
            rows.append((f"{C.Codec(codec).name.lower()}", result))
        rows.append(("auto (1 chunk)", bench_chunk(kind, values, args.repeat,
                                                   compression="auto")))
        rows.append(("auto, 10k-row chunks", bench_chunk(kind, values, args.repeat,
                                                         compression="auto",
                                                         chunk_rows=10_000)))
        rows.append(("auto codec + zstd(3), 10k chunks",
                     bench_chunk(kind, values, args.repeat, compression="zstd",
                                 chunk_rows=10_000)))
        raw = plain_bytes(values)
        for which in ("lz4", "zstd"):
            t_enc, t_dec, stored = bench_general(raw, which, args.repeat)
            rows.append((f"{which} alone on plain bytes",
                         (t_enc, t_dec, stored, "-", "-")))
        for name, (t_enc, t_dec, stored, used, comp) in rows:
            chosen = "" if used == "-" else f"{used}+{comp}".lower()
            print(f"{name:<34}{size / t_enc / 1e9:>12.2f}{size / t_dec / 1e9:>12.2f}"
                  f"{size / stored:>9.1f}  {chosen}")
        print()
    bench_stripe(cols, args.repeat)


if __name__ == "__main__":
    main()
