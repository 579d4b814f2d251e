"""Filter kernel benchmark: rows per second of typical scan filters, against
the numpy expression a Python wrapper would write for the same answer.

Columns (10M rows by default) of a device-metrics table: a timestamp per
second, 1,000 device ids, a float metric with 1% NULLs and a few NaNs, and a
4-value status text (also dictionary-encoded). Each filter runs through the
kernel (``orochi_fdw.kernels.filters``) and through numpy; both answers are
checked equal. "query layer" rows go through
``orochi_fdw.query.predicates`` (bind + evaluate), as a scan would.

Figures are Mrows/s on one core, best of --repeat runs; the numpy versions
include what Postgres semantics need (NULLs, NaN above every number) so the
answers match.

    python bench/filter_kernel_bench.py [--rows 10000000] [--repeat 5]

Prints the table and writes bench/results/filter_kernels.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np

from orochi_fdw.bridge.api import ColumnDefinition, Qual
from orochi_fdw.bridge.batch import Column, WireKind
from orochi_fdw.kernels import filters as F
from orochi_fdw.query import predicates as P

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "filter_kernels.md")
START = 757_382_400_000_000  # 2024-01-01 00:00:00 UTC, µs since 2000-01-01
STATUS = [b"ok", b"warning", b"error", b"maintenance"]


def make_table(n: int, seed: int = 11) -> dict:
    rng = np.random.default_rng(seed)
    ts = START + np.arange(n, dtype=np.int64) * 1_000_000
    device = rng.integers(0, 1_000, n).astype(np.int32)
    cpu = np.round(rng.normal(50, 20, n), 2)
    cpu[rng.random(n) < 0.0005] = np.nan
    cpu_valid = (rng.random(n) >= 0.01).astype(np.uint8)
    codes = rng.choice(4, size=n, p=[0.90, 0.07, 0.02, 0.01]).astype(np.int32)
    lengths = np.array([len(s) for s in STATUS], dtype=np.int64)[codes]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    pool = np.frombuffer(b"".join(STATUS), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum([len(s) for s in STATUS])[:-1]])
    # gather the status bytes without a Python loop over rows
    idx = np.repeat(starts[codes] - offsets[:-1], lengths) + np.arange(offsets[-1])
    data = pool[idx]
    entry_offsets = np.concatenate([[0], np.cumsum([len(s) for s in STATUS])]).astype(np.int64)
    return {"ts": ts, "device": device, "cpu": cpu, "cpu_valid": cpu_valid, "codes": codes,
            "offsets": offsets, "data": data, "entry_offsets": entry_offsets, "entry_data": pool}


# ----------------------------------------------------------- numpy versions

def np_text_eq(offsets, data, value: bytes) -> np.ndarray:
    """Byte equality on offsets + bytes, vectorized: lengths first, then the
    candidate rows' bytes."""
    lengths = np.diff(offsets)
    cand = np.flatnonzero(lengths == len(value))
    ok = np.ones(len(cand), dtype=bool)
    for k, b in enumerate(value):
        ok &= data[offsets[cand] + k] == b
    out = np.zeros(len(lengths), dtype=bool)
    out[cand[ok]] = True
    return out


def np_text_prefix(offsets, data, prefix: bytes) -> np.ndarray:
    lengths = np.diff(offsets)
    cand = np.flatnonzero(lengths >= len(prefix))
    ok = np.ones(len(cand), dtype=bool)
    for k, b in enumerate(prefix):
        ok &= data[offsets[cand] + k] == b
    out = np.zeros(len(lengths), dtype=bool)
    out[cand[ok]] = True
    return out


# ------------------------------------------------------------------ timing

def best(fn, repeat: int) -> tuple[float, object]:
    result, t_best = None, float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        t_best = min(t_best, time.perf_counter() - t0)
    return t_best, result


def cases(t: dict, n: int):
    """(name, kernel fn, numpy fn) of each filter; each returns a bool/uint8 mask."""
    out = np.empty(n, dtype=np.uint8)
    lo, hi = START + n // 10 * 4 * 1_000_000, START + n // 10 * 5 * 1_000_000  # 10% of the range
    ts, device, cpu, valid = t["ts"], t["device"], t["cpu"], t["cpu_valid"]
    offsets, data, codes = t["offsets"], t["data"], t["codes"]
    few = np.array(sorted([3, 17, 42, 99, 123, 256, 400, 512, 777, 999]), dtype=np.int32)
    many = np.unique(np.random.default_rng(1).integers(0, 10**12, 1000)).astype(np.int64)
    ts_many = np.sort(np.concatenate([many + START, ts[:: max(n // 500, 1)][:500]]))
    entry_mask = np.empty(4, dtype=np.uint8)

    def k_dict():
        F.text_prefix(t["entry_offsets"], t["entry_data"], None, b"warn", False, entry_mask)
        F.dict_filter(codes, entry_mask, None, out)
        return out

    cols = {"ts": ColumnDefinition("ts", 1184), "device": ColumnDefinition("device", 23),
            "cpu": ColumnDefinition("cpu", 701), "status": ColumnDefinition("status", 25)}
    batch = {"ts": Column(WireKind.TIMESTAMP, ts), "device": Column(WireKind.INT32, device),
             "cpu": Column(WireKind.FLOAT64, cpu, valid),
             "status": Column(WireKind.TEXT, data, None, offsets)}
    aware_lo = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(microseconds=int(lo))
    aware_hi = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(microseconds=int(hi))
    q3 = [Qual("ts", ">=", aware_lo), Qual("ts", "<", aware_hi), Qual("cpu", ">", 80.0),
          Qual("status", "<>", "ok", "C")]

    def layer(quals):
        def run():
            return P.evaluate(P.bind_quals(quals, cols).filter, batch, n, out=out)
        return run

    def layer_chunks(quals, rows=65_536):
        flt = P.bind_quals(quals, cols).filter

        def run():
            for s in range(0, n, rows):
                e = min(s + rows, n)
                part = {"ts": Column(WireKind.TIMESTAMP, ts[s:e]),
                        "cpu": Column(WireKind.FLOAT64, cpu[s:e], valid[s:e]),
                        "status": Column(WireKind.TEXT, data, None, offsets[s:e + 1])}
                P.evaluate(flt, part, e - s, out=out[s:e])
            return out
        return run

    with np.errstate(invalid="ignore"):
        yield ("ts >= a AND ts < b (int64, 10%)",
               lambda: (F.compare_range(ts, None, F.OP_GE, lo, F.OP_LT, hi, out), out)[1],
               lambda: (ts >= lo) & (ts < hi))
        yield ("device = 42 (int32)",
               lambda: (F.compare(device, None, F.OP_EQ, 42, out), out)[1],
               lambda: device == 42)
        yield ("cpu > 80 (float64, NULLs, NaN)",
               lambda: (F.compare(cpu, valid, F.OP_GT, 80.0, out), out)[1],
               lambda: ((cpu > 80.0) | np.isnan(cpu)) & (valid != 0))
        yield ("device IN (10 ids) (int32)",
               lambda: (F.in_list(device, None, few, False, out), out)[1],
               lambda: np.isin(device, few))
        yield ("ts IN (1,500 values) (int64)",
               lambda: (F.in_list(ts, None, ts_many, False, out), out)[1],
               lambda: np.isin(ts, ts_many))
        yield ("status = 'error' (text)",
               lambda: (F.text_compare(offsets, data, None, F.OP_EQ, b"error", out), out)[1],
               lambda: np_text_eq(offsets, data, b"error"))
        yield ("status LIKE 'warn%' (text)",
               lambda: (F.text_prefix(offsets, data, None, b"warn", False, out), out)[1],
               lambda: np_text_prefix(offsets, data, b"warn"))
        yield ("status LIKE 'warn%' (dictionary codes)",
               k_dict,
               lambda: np_text_prefix(t["entry_offsets"], t["entry_data"], b"warn")[codes])
        yield ("query layer: 4 quals, one batch",
               layer(q3),
               lambda: (ts >= lo) & (ts < hi) & (((cpu > 80.0) | np.isnan(cpu)) & (valid != 0))
               & ~np_text_eq(offsets, data, b"ok"))
        yield ("query layer: 4 quals, 64k-row batches",
               layer_chunks(q3),
               lambda: (ts >= lo) & (ts < hi) & (((cpu > 80.0) | np.isnan(cpu)) & (valid != 0))
               & ~np_text_eq(offsets, data, b"ok"))


def selection_cases(t: dict, n: int):
    mask = ((t["ts"] - START) // 1_000_000 % 100 < 3).astype(np.uint8)  # 3% selected
    idx = np.empty(n, dtype=np.int32)
    yield ("mask -> indices (3% selected)",
           lambda: idx[:F.mask_to_indices(mask, idx)], lambda: np.flatnonzero(mask))
    yield ("count selected", lambda: F.count_selected(mask), lambda: np.count_nonzero(mask))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--results", default=RESULTS, help="where to write the markdown results")
    args = parser.parse_args()
    n = args.rows
    t = make_table(n)
    rows = []
    for name, kernel, reference in list(cases(t, n)) + list(selection_cases(t, n)):
        tk, rk = best(kernel, args.repeat)
        rk = rk.copy() if isinstance(rk, np.ndarray) else rk
        tn, rn = best(reference, args.repeat)
        if isinstance(rk, np.ndarray):
            same = np.array_equal(rk.astype(bool) if rk.dtype == np.uint8 and rn.dtype == bool else rk, rn)
            sel = f"{np.count_nonzero(rk) / n:.1%}" if rk.dtype != np.int32 else f"{len(rk) / n:.1%}"
        else:
            same, sel = rk == rn, f"{rk / n:.1%}"
        if not same:
            raise SystemExit(f"{name}: kernel and numpy disagree")
        rows.append((name, sel, n / tk / 1e6, n / tn / 1e6))
    header = f"{'filter':<40} {'selected':>8} {'orochi Mrows/s':>15} {'numpy Mrows/s':>14} {'ratio':>6}"
    lines = [header, "-" * len(header)]
    for name, sel, k, r in rows:
        lines.append(f"{name:<40} {sel:>8} {k:>15,.0f} {r:>14,.0f} {k / r:>5.1f}x")
    print(f"{n:,} rows, best of {args.repeat}, one core ({platform.processor() or platform.machine()})")
    print("\n".join(lines))
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        f.write("# Filter kernels\n\n")
        f.write(f"`python bench/filter_kernel_bench.py --rows {n} --repeat {args.repeat}`, "
                f"{datetime.date.today().isoformat()}, one core.\n\n")
        f.write("| filter | selected | orochi Mrows/s | numpy Mrows/s | ratio |\n|---|---:|---:|---:|---:|\n")
        for name, sel, k, r in rows:
            f.write(f"| {name} | {sel} | {k:,.0f} | {r:,.0f} | {k / r:.1f}x |\n")
    print(f"written to {os.path.relpath(args.results)}")


if __name__ == "__main__":
    main()
