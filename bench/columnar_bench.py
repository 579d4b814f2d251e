"""Columnar storage benchmark: size, COPY FROM speed and decode speed of orochi tables.

Two datasets, generated once per run with a fixed seed:

- ``timeseries``: device metrics, 10M rows by default, in arrival order: ``ts
  timestamptz`` one reading a second with +-50 ms jitter, ``device_id int4``
  (1,000 devices, each row from a random one), five ``float8`` metrics (cpu and
  mem percentages and power as per-device random walks rounded to 2 decimals,
  temperature as a per-device gauge with a daily cycle and noise, voltage as a
  gauge around 230 V rounded to 1 decimal), ``status text`` (6 values, 92% 'ok')
  and ``note text`` (98% NULL, otherwise a short sentence).
- ``lineitem``: TPC-H's lineitem with its 16 columns and types (int8 / int4
  keys, numeric(15,2) amounts, char(1) flags, dates, char(25) / char(10)
  codes, a varchar(44) comment) and dbgen's distributions, sorted by order key
  as dbgen writes it (the comment text from a smaller dbgen-like grammar); 3M
  rows by default (scale factor 0.5).

Each dataset is written once as a CSV file (server-side, in a private folder
under /tmp readable by the server) and as Parquet with zstd (pyarrow; level 3,
zstd's own default and orochi's; 1M-row row groups, dictionaries on), then:

- ``COPY ... FROM '<file>' (FORMAT csv)`` into a heap table and into an orochi
  table (``SERVER orochi``, default options), --runs times each, alternating
  which goes first, each after a TRUNCATE and a CHECKPOINT; rows/s from the
  median wall-clock time, with the backend's own CPU time alongside;
- the same file once more into an orochi table with ``compression 'zstd'``,
  for its size only;
- sizes: ``pg_total_relation_size`` of the heap table (after VACUUM ANALYZE),
  ``orochi.table_size`` of the orochi tables, the Parquet file's size; per
  column, orochi's compressed bytes (``orochi.stripes``) and Parquet's column
  chunk bytes;
- both tables are checked to hold the same rows (counts, sums, lengths);
- a scan sanity row: ``SELECT count(*), sum(<metric>)`` on each (median of
  --scan-runs, warm); query acceleration is another issue, this only reports;
- decode GB/s of every applicable codec on the first 1M rows of some columns,
  against lz4 and zstd alone on the plain bytes (``bench/codec_bench.py``'s
  functions; best of --repeat, one core).

The machine may be shared: the load average is recorded at the start, at the
end and before each timed COPY, and the backend's CPU time is reported next to
the wall-clock time.

Server: fsync on (orochi always fsyncs its stripe files; the heap's COPY is
made durable by its WAL flush at commit), max_wal_size large enough that no
checkpoint falls inside a timed COPY, shared_buffers 2GB, no parallel workers,
jit off.

Targets (issue 3): the time series at least 10x smaller than the heap table and
no larger than Parquet + zstd; COPY FROM into orochi at least as fast as into
the heap table; delta / bit-packed integer decode at least 1 GB/s on one core.

Prints the tables, writes bench/results/columnar.md (keeping the previous run's
figures for comparison) and the chart bench/results/columnar.png.

    python bench/columnar_bench.py [--ts-rows N] [--lineitem-rows N] [--runs N] [--no-write]

Needs pyarrow and matplotlib (requirements-bench.txt).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - a bench-only dependency
    raise SystemExit("columnar_bench needs pyarrow: pip install -r requirements-bench.txt") from None

import codec_bench  # noqa: E402  (bench/codec_bench.py: per-codec encode / decode timing)
from bridge_bench import backend_cpu_seconds, git_commit, load_average, log, read_previous  # noqa: E402

from orochi_fdw.errors import InvalidParameterError  # noqa: E402
from orochi_fdw.storage import codecs as C  # noqa: E402
from orochi_fdw.storage.kinds import KINDS, VarBytes  # noqa: E402
from orochi_fdw.testing.cluster import PostgresCluster  # noqa: E402

RESULTS_MD = os.path.join(HERE, "results", "columnar.md")
RESULTS_PNG = os.path.join(HERE, "results", "columnar.png")
DATA_MARKER = "bench-data:"

SETTINGS = {
    "shared_buffers": "2GB",
    "max_parallel_workers_per_gather": 0,
    "jit": "off",
    "work_mem": "64MB",
    "fsync": True,
    "full_page_writes": True,
    "max_wal_size": "32GB",
    "checkpoint_timeout": "1h",
}

PARQUET_ZSTD_LEVEL = 3
PARQUET_ROW_GROUP = 1_000_000
CODEC_ROWS = 1_000_000

PG_EPOCH_US = 946_684_800 * 1_000_000        # 2000-01-01 in µs since 1970
PG_EPOCH_DAYS = 10_957                       # 2000-01-01 in days since 1970


# ====================================================================== data

TS_COLUMNS = [
    ("ts", "timestamptz"), ("device_id", "int4"), ("cpu", "float8"), ("mem", "float8"),
    ("temperature", "float8"), ("voltage", "float8"), ("power", "float8"),
    ("status", "text"), ("note", "text"),
]

LI_COLUMNS = [
    ("l_orderkey", "int8"), ("l_partkey", "int4"), ("l_suppkey", "int4"), ("l_linenumber", "int4"),
    ("l_quantity", "numeric(15,2)"), ("l_extendedprice", "numeric(15,2)"),
    ("l_discount", "numeric(15,2)"), ("l_tax", "numeric(15,2)"),
    ("l_returnflag", "char(1)"), ("l_linestatus", "char(1)"),
    ("l_shipdate", "date"), ("l_commitdate", "date"), ("l_receiptdate", "date"),
    ("l_shipinstruct", "char(25)"), ("l_shipmode", "char(10)"), ("l_comment", "varchar(44)"),
]

STATUSES = ["ok", "warning", "error", "offline", "maintenance", "rebooting"]
STATUS_P = [0.92, 0.04, 0.015, 0.01, 0.01, 0.005]

NOTE_TEMPLATES = [
    "firmware updated to {a}.{b}.{c}",
    "threshold exceeded: cpu above {p}% for {m} minutes",
    "manual reset by operator {o}",
    "sensor recalibrated, offset {d} degrees",
    "connection lost, reconnected after {s} s",
    "fan speed anomaly detected on unit {b}",
    "scheduled maintenance window {m} minutes",
    "battery replaced",
    "packet loss {p}% on uplink",
    "configuration pushed by deploy {o}",
]

# dbgen's word lists (a subset), used to build its comment text pool.
_NOUNS = ("foxes ideas theodolites pinto beans instructions dependencies excuses platelets asymptotes "
          "courts dolphins multipliers sauternes warthogs frets dinos attainments somas Tiresias patterns "
          "forges braids hockey players frays warhorses dugouts notornis epitaphs pearls tithes waters "
          "orbits gifts sheaves depths sentiments decoys realms pains grouches escapades").split()
_VERBS = ("sleep wake are cajole haggle nag use boost affix detect integrate maintain nod was lose sublate "
          "solve thrash promise engage hinder print x-ray breach eat grow impress mold poach serve run "
          "dazzle snooze doze unwind kindle play hang believe doubt").split()
_ADJECTIVES = ("furious sly careful blithe quick fluffy slow quiet ruthless thin close dogged daring brave "
               "stealthy permanent enticing idle busy regular final ironic even bold silent").split()
_ADVERBS = ("sometimes always never furiously slyly carefully blithely quickly fluffily slowly quietly "
            "ruthlessly thinly closely doggedly daringly bravely stealthily permanently enticingly idly "
            "busily regularly finally ironically evenly boldly silently").split()
_PREPOSITIONS = ("about above according to across after against along alongside of among around at "
                 "atop before behind beneath beside besides between beyond by despite during except "
                 "for from in place of inside instead of into near of on outside over past since "
                 "through throughout to toward under until up upon without with within").split()

SHIPINSTRUCT = ["DELIVER IN PERSON", "COLLECT COD", "NONE", "TAKE BACK RETURN"]
SHIPMODE = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"]


def _string_array(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray | None = None) -> pa.Array:
    """An Arrow large_string array from int64 offsets and UTF-8 bytes (no copy of the data)."""
    n = len(offsets) - 1
    buffers = [None if validity is None else pa.py_buffer(np.packbits(validity, bitorder="little")),
               pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(data)]
    null_count = 0 if validity is None else int(n - validity.sum())
    return pa.Array.from_buffers(pa.large_string(), n, buffers, null_count=null_count)


def _gather_strings(labels: list[str], idx: np.ndarray, pad: int | None = None) -> pa.Array:
    """labels[idx] as a string array (labels padded with spaces to ``pad``, as char(n))."""
    if pad is not None:
        labels = [s.ljust(pad) for s in labels]
    return pa.array(labels, pa.large_string()).take(pa.array(idx.astype(np.int32)))


def _substrings(pool: bytes, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of pool[starts[i]:starts[i] + lengths[i]] for each i."""
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    src = np.frombuffer(pool, dtype=np.uint8)
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return offsets, src[index]


def make_timeseries(n: int, seed: int = 11) -> pa.Table:
    rng = np.random.default_rng(seed)
    ndev = 1_000
    start = 1_704_067_200 * 1_000_000                           # 2024-01-01 00:00 UTC, µs since 1970
    ts = start + np.arange(n, dtype=np.int64) * 1_000_000 + rng.integers(-50_000, 50_001, n)
    device = rng.integers(1, ndev + 1, n).astype(np.int32)

    # Per-device random walks: cumulative sums within each device's rows, in time order.
    order = np.argsort(device, kind="stable")
    dev_sorted = device[order]
    first = np.r_[True, dev_sorted[1:] != dev_sorted[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))

    def walk(step: float, low: float, high: float, decimals: int = 2) -> np.ndarray:
        steps = rng.normal(0.0, step, n)[order]
        c = np.cumsum(steps)
        c -= c[group_start] - steps[group_start]               # restart the sum at each device
        v = rng.uniform(low, high, ndev + 1)[dev_sorted] + c
        span = high - low
        v = high - np.abs(np.mod(v - low, 2 * span) - span)      # reflect into [low, high]
        out = np.empty(n)
        out[order] = v
        return np.round(out, decimals)

    cpu = walk(1.5, 0.0, 100.0)
    mem = walk(0.2, 10.0, 95.0)
    power = walk(4.0, 50.0, 1_500.0)
    day = ((ts // 1_000_000) % 86_400) / 86_400
    temperature = np.round(rng.uniform(18, 32, ndev + 1)[device] + 3.0 * np.sin(2 * np.pi * day)
                           + rng.normal(0, 0.3, n), 2)
    voltage = np.round(230.0 + rng.normal(0, 1.2, n), 1)
    status = rng.choice(len(STATUSES), size=n, p=STATUS_P)

    has_note = rng.random(n) < 0.02
    k = int(has_note.sum())
    tmpl = rng.integers(0, len(NOTE_TEMPLATES), k)
    nums = rng.integers(1, 100, (k, 6))
    texts = [NOTE_TEMPLATES[t].format(a=x[0] % 5, b=x[1], c=x[2], p=50 + x[3] // 2, m=x[4], o=x[5] * 37,
                                      d=f"{x[3] / 40:.2f}", s=x[4] * 3)
             for t, x in zip(tmpl.tolist(), nums.tolist())]
    note_values = [None] * n
    for i, t in zip(np.flatnonzero(has_note).tolist(), texts):
        note_values[i] = t

    return pa.table({
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "device_id": pa.array(device),
        "cpu": pa.array(cpu),
        "mem": pa.array(mem),
        "temperature": pa.array(temperature),
        "voltage": pa.array(voltage),
        "power": pa.array(power),
        "status": _gather_strings(STATUSES, status),
        "note": pa.array(note_values, pa.large_string()),
    })


def _text_pool(rng, size: int) -> bytes:
    """dbgen-like text: sentences of adjectives, nouns, adverbs, verbs and prepositions."""
    count = size // 40 + 1
    pick = {name: (words, rng.integers(0, len(words), count)) for name, words in (
        ("adj", _ADJECTIVES), ("noun", _NOUNS), ("adv", _ADVERBS), ("verb", _VERBS), ("prep", _PREPOSITIONS),
        ("adj2", _ADJECTIVES), ("noun2", _NOUNS))}
    longer = rng.random(count) < 0.5
    ends = rng.choice([".", ".", ";", "!", "?", "--"], count)
    sentences = []
    for i in range(count):
        w = [pick[k][0][pick[k][1][i]] for k in ("adj", "noun", "adv", "verb")]
        if longer[i]:
            w += [pick["prep"][0][pick["prep"][1][i]], "the", pick["adj2"][0][pick["adj2"][1][i]],
                  pick["noun2"][0][pick["noun2"][1][i]]]
        sentences.append(" ".join(w) + ends[i])
    return " ".join(sentences).encode()


def make_lineitem(n: int, seed: int = 12) -> pa.Table:
    """``n`` lineitem rows with dbgen's distributions (scale factor n / 6M)."""
    rng = np.random.default_rng(seed)
    sf = max(n / 6_000_000, 0.01)
    lines_per_order = rng.integers(1, 8, n // 3 + 16)
    ends = np.cumsum(lines_per_order)
    norders = int(np.searchsorted(ends, n)) + 1
    lines_per_order = lines_per_order[:norders]
    lines_per_order[-1] -= int(ends[norders - 1] - n)
    order_index = np.repeat(np.arange(norders, dtype=np.int64), lines_per_order)
    order_first = np.r_[0, np.cumsum(lines_per_order)[:-1]]
    linenumber = (np.arange(n) - np.repeat(order_first, lines_per_order) + 1).astype(np.int32)
    orderkey = (order_index // 8) * 32 + order_index % 8 + 1   # dbgen's sparse keys

    start_date = (datetime.date(1992, 1, 1) - datetime.date(1970, 1, 1)).days
    end_date = (datetime.date(1998, 12, 31) - datetime.date(1970, 1, 1)).days
    current = (datetime.date(1995, 6, 17) - datetime.date(1970, 1, 1)).days
    orderdate = rng.integers(start_date, end_date - 151 + 1, norders)[order_index]

    nparts = int(200_000 * sf)
    partkey = rng.integers(1, nparts + 1, n)
    nsupp = int(10_000 * sf)
    supp_i = rng.integers(0, 4, n)
    suppkey = (partkey + supp_i * (nsupp // 4 + (partkey - 1) // nsupp)) % nsupp + 1
    quantity = rng.integers(1, 51, n)
    retail_cents = 90_000 + (partkey // 10) % 20_001 + 100 * (partkey % 1_000)
    price_cents = quantity * retail_cents
    discount = rng.integers(0, 11, n)
    tax = rng.integers(0, 9, n)
    shipdate = orderdate + rng.integers(1, 122, n)
    commitdate = orderdate + rng.integers(30, 91, n)
    receiptdate = shipdate + rng.integers(1, 31, n)
    returned = receiptdate <= current
    returnflag = np.where(returned, rng.integers(0, 2, n), 2)          # R, A / N
    linestatus = (shipdate <= current).astype(np.int64)                # O / F

    pool = _text_pool(rng, 4_000_000)
    lengths = rng.integers(10, 44, n)
    starts = rng.integers(0, len(pool) - 44, n)
    offsets, data = _substrings(pool, starts, lengths)

    def dec(cents):
        return pa.Array.from_buffers(pa.decimal128(15, 2), n, [None, pa.py_buffer(_int128(cents))])

    def dates(days):
        return pa.array(days.astype(np.int32), pa.int32()).cast(pa.date32())

    return pa.table({
        "l_orderkey": pa.array(orderkey.astype(np.int64)),
        "l_partkey": pa.array(partkey.astype(np.int32)),
        "l_suppkey": pa.array(suppkey.astype(np.int32)),
        "l_linenumber": pa.array(linenumber),
        "l_quantity": dec(quantity * 100),
        "l_extendedprice": dec(price_cents),
        "l_discount": dec(discount),
        "l_tax": dec(tax),
        "l_returnflag": _gather_strings(["R", "A", "N"], returnflag),
        "l_linestatus": _gather_strings(["O", "F"], linestatus),
        "l_shipdate": dates(shipdate),
        "l_commitdate": dates(commitdate),
        "l_receiptdate": dates(receiptdate),
        "l_shipinstruct": _gather_strings(SHIPINSTRUCT, rng.integers(0, 4, n), pad=25),
        "l_shipmode": _gather_strings(SHIPMODE, rng.integers(0, 7, n), pad=10),
        "l_comment": _string_array(offsets, data),
    })


def _int128(values: np.ndarray) -> np.ndarray:
    """Little-endian two's complement 128-bit integers (Arrow's decimal128 layout)."""
    v = values.astype(np.int64)
    out = np.empty((len(v), 2), dtype=np.int64)
    out[:, 0] = v
    out[:, 1] = v >> 63
    return out


# ================================================================ columns for the codec bench

def storage_columns(table: pa.Table, names: list[str], rows: int) -> dict:
    """The first ``rows`` non-NULL values of some columns, as the stripe writer
    receives them: {label: (kind, values)}."""
    out = {}
    part = table.slice(0, rows)
    for name in names:
        arr = part.column(name).combine_chunks()
        typ = arr.type
        if pa.types.is_timestamp(typ):
            values = arr.cast(pa.int64()).to_numpy() - PG_EPOCH_US
            kind = "timestamptz"
        elif pa.types.is_date32(typ):
            values = arr.cast(pa.int32()).to_numpy() - np.int32(PG_EPOCH_DAYS)
            kind = "date"
        elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
            values = arr.to_numpy()
            kind = {np.dtype(np.int32): "int32", np.dtype(np.int64): "int64",
                    np.dtype(np.float64): "float64"}[values.dtype]
        else:
            arr = arr.drop_null().cast(pa.large_string())
            _v, off, data = arr.buffers()
            offsets = np.frombuffer(off, dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1].copy()
            data = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]].copy()
            offsets -= offsets[0]
            values = VarBytes(offsets, data)
            kind = "text"
        out[name] = (kind, values)
    return out


def codec_figures(cols: dict, repeat: int) -> list[dict]:
    """Per column: each applicable codec alone (one chunk), the automatic choice in
    10k-row chunks (as the stripe writer stores it), lz4 and zstd alone on the plain
    bytes; decode and encode GB/s of the in-memory bytes and the ratio."""
    rows = []
    for name, (kind, values) in cols.items():
        size = codec_bench.nbytes(values)
        phys = KINDS[kind].physical
        methods = []
        for codec in sorted(c for c, s in C.CODECS.items() if phys in s.physicals):
            try:
                r = codec_bench.bench_chunk(kind, values, repeat, codec=codec)
            except InvalidParameterError:                  # e.g. DECIMAL on non-decimal floats
                continue
            methods.append((C.Codec(codec).name.lower(), r[:3], "-"))
        r = codec_bench.bench_chunk(kind, values, repeat, compression="auto", chunk_rows=10_000)
        methods.append(("auto, 10k-row chunks", r[:3], f"{r[3]}+{r[4]}".lower()))
        raw = codec_bench.plain_bytes(values)
        for which in ("lz4", "zstd"):
            methods.append((f"{which} alone", codec_bench.bench_general(raw, which, repeat), "-"))
        for method, (t_enc, t_dec, stored), chosen in methods:
            rows.append({"column": name, "kind": kind, "method": method, "mb": size / 1e6,
                         "decode": size / t_dec / 1e9, "encode": size / t_enc / 1e9,
                         "ratio": size / stored, "chosen": chosen})
        log(f"  codecs of {name}: done")
    return rows


# ================================================================ Postgres side

def csv_view(table: pa.Table) -> pa.Table:
    """The table with timestamptz columns as text ('2024-01-01 00:00:00.123456+00'):
    Arrow formats time-zone-aware timestamps about 20x slower than naive ones."""
    import pyarrow.compute as pc

    cols = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type) and col.type.tz is not None:
            naive = col.cast(pa.int64()).cast(pa.timestamp(col.type.unit))
            col = pc.binary_join_element_wise(naive.cast(pa.string()), pa.scalar("+00"), "")
        cols.append(col)
    return pa.table(cols, names=table.column_names)


LOAD_SAMPLES: list[float] = []


def sample_load() -> None:
    """Note the 1-minute load average (taken before each timed COPY)."""
    try:
        LOAD_SAMPLES.append(os.getloadavg()[0])
    except OSError:
        pass


def timed(conn, sql: str, params=None):
    """(wall seconds, backend CPU seconds or None, rows or row count)."""
    pid = conn.info.backend_pid
    cpu0 = backend_cpu_seconds(pid)
    t0 = time.perf_counter()
    cur = conn.execute(sql, params)
    result = cur.fetchall() if cur.description else cur.rowcount
    wall = time.perf_counter() - t0
    cpu1 = backend_cpu_seconds(pid)
    return wall, (cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None), result


def create_tables(conn, name: str, columns: list[tuple[str, str]]) -> tuple[str, str, str]:
    """A heap table, an orochi table with default options, and one with
    ``compression 'zstd'`` (loaded once, for its size)."""
    cols = ", ".join(f"{c} {t}" for c, t in columns)
    heap, oro, zstd = f"{name}_heap", f"{name}_orochi", f"{name}_orochi_zstd"
    conn.execute(f"CREATE TABLE {heap} ({cols})")
    conn.execute(f"CREATE FOREIGN TABLE {oro} ({cols}) SERVER orochi")
    conn.execute(f"CREATE FOREIGN TABLE {zstd} ({cols}) SERVER orochi OPTIONS (compression 'zstd')")
    return heap, oro, zstd


def copy_runs(conn, heap: str, oro: str, path: str, nrows: int, runs: int) -> dict:
    """COPY the file into each table ``runs`` times; median rows/s (wall and CPU)."""
    times = {"heap": [], "orochi": []}
    cpus = {"heap": [], "orochi": []}
    for run in range(runs):
        order = [("heap", heap), ("orochi", oro)]
        if run % 2:
            order.reverse()
        for key, table in order:
            conn.execute(f"TRUNCATE {table}")
            conn.execute("CHECKPOINT")
            sample_load()
            wall, cpu, count = timed(conn, f"COPY {table} FROM '{path}' (FORMAT csv)")
            if count != nrows:
                raise SystemExit(f"COPY into {table} loaded {count} rows, expected {nrows}")
            times[key].append(wall)
            cpus[key].append(cpu)
            log(f"  COPY {table}: {wall:.1f} s (backend CPU {cpu:.1f} s), {nrows / wall:,.0f} rows/s")
    out = {}
    for key in times:
        wall = statistics.median(times[key])
        cpu = statistics.median(cpus[key]) if None not in cpus[key] else None
        out[key] = {"seconds": wall, "rows_s": nrows / wall, "cpu_seconds": cpu,
                    "rows_s_cpu": nrows / cpu if cpu else None, "runs": [round(t, 2) for t in times[key]]}
    return out


def check_same(conn, heap: str, oro: str, sql: str) -> None:
    a = conn.execute(sql.format(t=heap)).fetchone()
    b = conn.execute(sql.format(t=oro)).fetchone()
    for x, y in zip(a, b):
        same = (abs(x - y) <= 1e-9 * max(1.0, abs(x))) if isinstance(x, float) and isinstance(y, float) else x == y
        if not same:
            raise SystemExit(f"{oro} differs from {heap}: {b} vs {a} for {sql}")


def scan_runs(conn, table: str, sql: str, runs: int) -> dict:
    q = sql.format(t=table)
    timed(conn, q)                                          # warm
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, _ = timed(conn, q)
        walls.append(wall)
        cpus.append(cpu)
    return {"ms": statistics.median(walls) * 1000,
            "cpu_ms": statistics.median(cpus) * 1000 if None not in cpus else None}


def orochi_columns(conn, oro: str) -> dict:
    rows = conn.execute(
        "SELECT column_name, sum(compressed_bytes)::int8, sum(raw_bytes)::int8,"
        " (SELECT string_agg(DISTINCT c, ', ') FROM orochi.stripes s2, unnest(s2.codecs) c"
        "   WHERE s2.table_name = %s::regclass AND s2.attnum = s.attnum)"
        " FROM orochi.stripes s WHERE table_name = %s::regclass"
        " GROUP BY attnum, column_name ORDER BY attnum", (oro, oro)).fetchall()
    return {name: {"bytes": comp, "raw": raw, "codecs": codecs} for name, comp, raw, codecs in rows}


def parquet_columns(path: str) -> dict:
    meta = pq.ParquetFile(path).metadata
    out: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            out[col.path_in_schema] = out.get(col.path_in_schema, 0) + col.total_compressed_size
    return out


DATASETS = {
    "timeseries": {
        "columns": TS_COLUMNS,
        "make": make_timeseries,
        "checks": [
            "SELECT count(*), count(note), sum(device_id::int8), min(ts), max(ts), sum(length(status)),"
            " sum(length(note)) FROM {t}",
            "SELECT sum(cpu), sum(mem), sum(temperature), sum(voltage), sum(power) FROM {t}",
        ],
        "scan": ("count(*), sum(cpu)", "SELECT count(*), sum(cpu) FROM {t}"),
        "codec_columns": ["ts", "device_id", "cpu", "temperature", "status", "note"],
    },
    "lineitem": {
        "columns": LI_COLUMNS,
        "make": make_lineitem,
        "checks": [
            "SELECT count(*), sum(l_orderkey), sum(l_partkey), sum(l_quantity), sum(l_extendedprice),"
            " sum(l_discount), sum(l_tax), min(l_shipdate), max(l_receiptdate) FROM {t}",
            "SELECT sum(length(l_comment)), sum(length(l_shipinstruct)), sum(length(l_shipmode)),"
            " count(*) FILTER (WHERE l_returnflag = 'R'), count(*) FILTER (WHERE l_linestatus = 'O'),"
            " sum(l_commitdate - l_shipdate) FROM {t}",
        ],
        "scan": ("count(*), sum(l_extendedprice)", "SELECT count(*), sum(l_extendedprice) FROM {t}"),
        "codec_columns": ["l_orderkey", "l_partkey", "l_shipdate", "l_comment"],
    },
}


def run_dataset(conn, name: str, nrows: int, tmpdir: str, runs: int, scan_runs_n: int,
                repeat: int) -> dict:
    spec = DATASETS[name]
    log(f"{name}: generating {nrows:,} rows ...")
    t0 = time.perf_counter()
    table = spec["make"](nrows)
    csv_path = os.path.join(tmpdir, f"{name}.csv")
    pa_csv.write_csv(csv_view(table), csv_path, pa_csv.WriteOptions(include_header=False))
    os.chmod(csv_path, 0o644)
    parquet_path = os.path.join(tmpdir, f"{name}.parquet")
    pq.write_table(table, parquet_path, compression="zstd", compression_level=PARQUET_ZSTD_LEVEL,
                   row_group_size=PARQUET_ROW_GROUP)
    log(f"  generated, CSV ({os.path.getsize(csv_path) / 1e6:,.0f} MB) and Parquet written"
        f" in {time.perf_counter() - t0:.0f} s")
    codec_cols = storage_columns(table, spec["codec_columns"], min(CODEC_ROWS, nrows))
    del table

    heap, oro, zstd = create_tables(conn, name, spec["columns"])
    conn.execute(f"SELECT count(*) FROM {oro}")            # starts Python in the backend
    copy = copy_runs(conn, heap, oro, csv_path, nrows, runs)
    conn.execute("CHECKPOINT")
    zstd_seconds, _cpu, _n = timed(conn, f"COPY {zstd} FROM '{csv_path}' (FORMAT csv)")
    log(f"  COPY {zstd}: {zstd_seconds:.1f} s")
    os.unlink(csv_path)

    for sql in spec["checks"]:
        check_same(conn, heap, oro, sql)
    log("  heap and orochi tables hold the same rows")
    conn.execute(f"VACUUM ANALYZE {heap}")
    sizes = {
        "heap": conn.execute("SELECT pg_total_relation_size(%s::regclass)", (heap,)).fetchone()[0],
        "orochi": conn.execute("SELECT orochi.table_size(%s::regclass)", (oro,)).fetchone()[0],
        "orochi_zstd": conn.execute("SELECT orochi.table_size(%s::regclass)", (zstd,)).fetchone()[0],
        "parquet": os.path.getsize(parquet_path),
    }
    stripes = conn.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE relid = %s::regclass",
                           (oro,)).fetchone()[0]
    per_column = orochi_columns(conn, oro)
    zstd_columns = orochi_columns(conn, zstd)
    pq_cols = parquet_columns(parquet_path)
    for col in per_column:
        per_column[col]["parquet"] = pq_cols.get(col)
        per_column[col]["zstd"] = zstd_columns.get(col, {}).get("bytes")

    label, sql = spec["scan"]
    scan = {"query": label, "heap": scan_runs(conn, heap, sql, scan_runs_n),
            "orochi": scan_runs(conn, oro, sql, scan_runs_n)}
    log(f"  scan {label}: heap {scan['heap']['ms']:.0f} ms, orochi {scan['orochi']['ms']:.0f} ms")

    log(f"  decode speed of {', '.join(codec_cols)} ...")
    codecs = codec_figures(codec_cols, repeat)
    conn.execute(f"DROP TABLE {heap}")
    conn.execute(f"DROP FOREIGN TABLE {oro}, {zstd}")
    return {"rows": nrows, "sizes": sizes, "stripes": stripes, "copy": copy, "scan": scan,
            "zstd_copy_rows_s": nrows / zstd_seconds,
            "columns": per_column, "codecs": codecs}


# ================================================================ reporting

def mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def format_table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    lines = []
    for n, r in enumerate([headers] + rows):
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(headers: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join(["---"] * left + ["---:"] * (len(headers) - left)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


SIZE_HEADERS = ["dataset", "rows", "heap MB", "orochi MB", "parquet+zstd MB", "heap/orochi",
                "orochi/parquet", "orochi B/row", "orochi zstd MB", "heap/zstd", "zstd/parquet"]


def size_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, r in results.items():
        s = r["sizes"]
        rows.append([name, f"{r['rows']:,}", mb(s["heap"]), mb(s["orochi"]), mb(s["parquet"]),
                     f"{s['heap'] / s['orochi']:.1f}x", f"{s['orochi'] / s['parquet']:.2f}",
                     f"{s['orochi'] / r['rows']:.1f}", mb(s["orochi_zstd"]),
                     f"{s['heap'] / s['orochi_zstd']:.1f}x", f"{s['orochi_zstd'] / s['parquet']:.2f}"])
    return rows


COPY_HEADERS = ["dataset", "heap rows/s", "orochi rows/s", "orochi/heap", "heap CPU s", "orochi CPU s",
                "orochi/heap (CPU)"]


def copy_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, r in results.items():
        h, o = r["copy"]["heap"], r["copy"]["orochi"]
        cpu_ratio = f"{h['cpu_seconds'] / o['cpu_seconds']:.2f}x" if h["cpu_seconds"] and o["cpu_seconds"] else "-"
        rows.append([name, f"{h['rows_s']:,.0f}", f"{o['rows_s']:,.0f}", f"{o['rows_s'] / h['rows_s']:.2f}x",
                     f"{h['cpu_seconds']:.1f}" if h["cpu_seconds"] else "-",
                     f"{o['cpu_seconds']:.1f}" if o["cpu_seconds"] else "-", cpu_ratio])
    return rows


SCAN_HEADERS = ["dataset", "query", "heap ms", "orochi ms", "heap/orochi", "heap CPU ms", "orochi CPU ms"]


def scan_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, r in results.items():
        s = r["scan"]
        h, o = s["heap"], s["orochi"]
        rows.append([name, s["query"], f"{h['ms']:.0f}", f"{o['ms']:.0f}", f"{h['ms'] / o['ms']:.2f}x",
                     f"{h['cpu_ms']:.0f}" if h["cpu_ms"] else "-", f"{o['cpu_ms']:.0f}" if o["cpu_ms"] else "-"])
    return rows


CODEC_HEADERS = ["column", "MB", "method", "decode GB/s", "encode GB/s", "ratio", "chosen"]


def codec_rows(results: dict) -> list[list[str]]:
    rows = []
    for r in results.values():
        last = None
        for c in r["codecs"]:
            first = c["column"] != last
            last = c["column"]
            rows.append([f"{c['column']} ({c['kind']})" if first else "", f"{c['mb']:.1f}" if first else "",
                         c["method"], f"{c['decode']:.2f}", f"{c['encode']:.2f}", f"{c['ratio']:.1f}",
                         "" if c["chosen"] == "-" else c["chosen"]])
    return rows


COLUMN_HEADERS = ["column", "raw MB", "orochi MB", "orochi zstd MB", "parquet MB", "orochi/parquet",
                  "orochi B/row", "codecs chosen (default options)"]


def column_rows(r: dict) -> list[list[str]]:
    rows = []
    for name, c in r["columns"].items():
        p, z = c.get("parquet"), c.get("zstd")
        rows.append([name, f"{c['raw'] / 1e6:,.1f}", f"{c['bytes'] / 1e6:,.2f}", f"{z / 1e6:,.2f}" if z else "-",
                     f"{p / 1e6:,.2f}" if p else "-", f"{c['bytes'] / p:.2f}" if p else "-",
                     f"{c['bytes'] / r['rows']:.2f}", c["codecs"] or ""])
    return rows


INT_TARGET_CODECS = ("delta", "bitpack")
INT_KINDS = ("int32", "int64", "date", "timestamptz")


def int_decode_figures(results: dict) -> list[tuple[str, str, float]]:
    return [(c["column"], c["method"], c["decode"]) for r in results.values() for c in r["codecs"]
            if c["kind"] in INT_KINDS and c["method"] in INT_TARGET_CODECS]


def targets(results: dict) -> list[str]:
    out = []
    ts = results.get("timeseries")
    if ts:
        s = ts["sizes"]
        ratio = s["heap"] / s["orochi"]
        out.append(f"time series at least 10x smaller than the heap table: {'MET' if ratio >= 10 else 'NOT MET'} "
                   f"({ratio:.1f}x)")
        rel = s["orochi"] / s["parquet"]
        out.append(f"time series no larger than Parquet + zstd: {'MET' if rel <= 1.0 else 'NOT MET'} "
                   f"(orochi {mb(s['orochi'])} MB, Parquet {mb(s['parquet'])} MB: {rel:.2f}x)")
    for name, r in results.items():
        h, o = r["copy"]["heap"], r["copy"]["orochi"]
        ratio = o["rows_s"] / h["rows_s"]
        line = (f"COPY FROM at least as fast as into the heap table ({name}): by wall-clock "
                f"{'MET' if ratio >= 1.0 else 'NOT MET'} ({ratio:.2f}x)")
        if h["cpu_seconds"] and o["cpu_seconds"]:
            cpu = h["cpu_seconds"] / o["cpu_seconds"]
            line += f"; by backend CPU {'MET' if cpu >= 1.0 else 'NOT MET'} ({cpu:.2f}x)"
        out.append(line)
    figs = int_decode_figures(results)
    if figs:
        worst = min(figs, key=lambda f: f[2])
        out.append(f"delta / bit-packed integer decode at least 1 GB/s on one core: "
                   f"{'MET' if worst[2] >= 1.0 else 'NOT MET'} (slowest: {worst[1]} on {worst[0]}, "
                   f"{worst[2]:.2f} GB/s; {len(figs)} column/codec pairs)")
    return out


def print_report(data: dict) -> None:
    results = data["results"]
    print()
    print("Columnar benchmark: " + ", ".join(f"{k} {v['rows']:,} rows" for k, v in results.items()) + "; "
          f"COPY median of {data['runs']} runs; load average {data['load']}")
    print()
    print("Size on disk")
    print(format_table(SIZE_HEADERS, size_rows(results)))
    print()
    print("COPY FROM a CSV file (server-side), median wall-clock; CPU = the backend's own time")
    print(format_table(COPY_HEADERS, copy_rows(results)))
    print()
    print(f"Scan sanity (median of {data['scan_runs']}, warm)")
    print(format_table(SCAN_HEADERS, scan_rows(results), left=2))
    print()
    print(f"Decode / encode speed on one core, first {CODEC_ROWS:,} rows (NULLs left out), best of "
          f"{data['repeat']}; GB/s of in-memory bytes; ratio = in-memory / stored")
    print(format_table(CODEC_HEADERS, codec_rows(results), left=3))
    for name, r in results.items():
        print()
        print(f"Per column: {name} ({r['stripes']} stripe{'s' if r['stripes'] != 1 else ''})")
        print(format_table(COLUMN_HEADERS, column_rows(r)))
    print()
    print("Targets:")
    for line in targets(results):
        print("  " + line)


def _change(now: float, before: float | None, fmt: str) -> list[str]:
    if not before:
        return [fmt.format(now), "-", "-"]
    return [fmt.format(now), fmt.format(before), f"{(now / before - 1) * 100:+.0f}%"]


def comparison(results: dict, prev: dict) -> list[str]:
    presults = prev.get("results", {})
    rows = []
    for name, r in results.items():
        p = presults.get(name, {})
        for key in ("heap", "orochi", "parquet"):
            rows.append([name, f"size {key} MB", *_change(r["sizes"][key] / 1e6,
                                                          (p.get("sizes", {}).get(key) or 0) / 1e6, "{:,.1f}")])
        for key in ("heap", "orochi"):
            rows.append([name, f"COPY {key} rows/s",
                         *_change(r["copy"][key]["rows_s"], p.get("copy", {}).get(key, {}).get("rows_s"),
                                  "{:,.0f}")])
        for key in ("heap", "orochi"):
            rows.append([name, f"COPY {key} backend CPU s",
                         *_change(r["copy"][key]["cpu_seconds"] or 0,
                                  p.get("copy", {}).get(key, {}).get("cpu_seconds"), "{:,.1f}")])
        for key in ("heap", "orochi"):
            rows.append([name, f"scan {key} ms",
                         *_change(r["scan"][key]["ms"], p.get("scan", {}).get(key, {}).get("ms"), "{:,.0f}")])
        pcodecs = {(c["column"], c["method"]): c["decode"] for c in p.get("codecs", [])}
        for c in r["codecs"]:
            if c["method"] in INT_TARGET_CODECS + ("auto, 10k-row chunks",):
                rows.append([name, f"decode GB/s {c['column']} {c['method']}",
                             *_change(c["decode"], pcodecs.get((c["column"], c["method"])), "{:.2f}")])
    return md_table(["dataset", "figure", "now", "previous", "change"], rows, left=2)


def write_markdown(path: str, data: dict, previous: dict | None) -> None:
    results = data["results"]
    out = [
        "# Columnar storage benchmark",
        "",
        "Written by `bench/columnar_bench.py` (`make bench`); do not edit by hand. Chart: "
        "[columnar.png](columnar.png).",
        "",
        f"- run: {data['date']}, commit {data['commit']}; load average {data['load']}; "
        f"{data['cpus']} cores; total {data['total_seconds']:.0f} s",
        "- datasets: " + "; ".join(f"{k} {v['rows']:,} rows" for k, v in results.items())
        + " (see the script's docstring for their shapes)",
        f"- server: PostgreSQL {data['server_version']}, "
        + ", ".join(f"{k}={v}" for k, v in data["settings"].items()),
        f"- Parquet: pyarrow {data['pyarrow']}, zstd level {PARQUET_ZSTD_LEVEL}, "
        f"{PARQUET_ROW_GROUP:,}-row row groups, dictionaries on",
        f"- COPY: `COPY t FROM '<file>' (FORMAT csv)` from the same server-side CSV file, median of "
        f"{data['runs']} runs each, after TRUNCATE and CHECKPOINT; orochi table with default options",
        "",
        "## Size on disk",
        "",
        "heap: `pg_total_relation_size` after VACUUM ANALYZE; orochi: `orochi.table_size`; "
        "parquet: the file.",
        "",
    ]
    out += md_table(SIZE_HEADERS, size_rows(results))
    out += ["", "## COPY FROM", "",
            "rows/s from the median wall-clock time; CPU: the backend's own CPU time (`/proc/<pid>/schedstat`),",
            "which other work on the machine does not inflate.", ""]
    out += md_table(COPY_HEADERS, copy_rows(results))
    out += ["", f"Runs (s): " + "; ".join(
        f"{name} heap {r['copy']['heap']['runs']}, orochi {r['copy']['orochi']['runs']}"
        for name, r in results.items()), ""]
    out += ["## Scan sanity", "",
            f"Median of {data['scan_runs']}, warm, one session, no parallel workers. "
            "Query acceleration is another issue; this only reports.", ""]
    out += md_table(SCAN_HEADERS, scan_rows(results), left=2)
    out += ["", "## Decode speed per codec", "",
            f"First {CODEC_ROWS:,} rows of each column (NULLs left out), one core, best of {data['repeat']} "
            "(`bench/codec_bench.py`'s functions). GB/s of in-memory bytes (values, plus int64 offsets",
            "for text); ratio = in-memory / stored bytes. A codec alone encodes the whole column as one chunk;",
            "'auto, 10k-row chunks' is what the stripe writer stores; lz4 / zstd alone compress the plain bytes.",
            ""]
    out += md_table(CODEC_HEADERS, codec_rows(results), left=3)
    for name, r in results.items():
        out += ["", f"## Per column: {name}", "",
                f"{r['stripes']} stripe{'s' if r['stripes'] != 1 else ''}. orochi: compressed bytes from `orochi.stripes` (stripe footers and "
                "headers not included); parquet: column chunk bytes.", ""]
        out += md_table(COLUMN_HEADERS, column_rows(r))
    out += ["", "## Targets", ""] + [f"- {t}" for t in targets(results)]
    out += ["", "## Against the previous run", ""]
    if previous and previous.get("results"):
        prows = "; ".join(f"{k} {v.get('rows', 0):,} rows" for k, v in previous["results"].items())
        out.append(f"Previous run: {previous.get('date', '?')}, commit {previous.get('commit', '?')}, {prows}; "
                   f"load average {previous.get('load', '?')}.")
        out.append("")
        out += comparison(results, previous)
    else:
        out.append("No previous run recorded.")
    out += ["", f"<!-- {DATA_MARKER} {json.dumps(data, sort_keys=True)} -->", ""]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)


def _fmt_mb(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def write_chart(path: str, data: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    names = list(results)
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6.2), gridspec_kw={"width_ratios": [1, 1]})

    bars_spec = [("heap", "heap table", "#8c8c8c", None), ("orochi", "orochi (default options)", "#d62728", None),
                 ("orochi_zstd", "orochi, compression 'zstd'", "#f4a3a3", "//"),
                 ("parquet", "Parquet + zstd(3)", "#1f77b4", None)]
    width = 0.2
    top = max(r["sizes"]["heap"] for r in results.values()) / 1e6
    for i, (key, label, color, hatch) in enumerate(bars_spec):
        vals = [results[n]["sizes"][key] / 1e6 for n in names]
        bars = ax1.bar(x + (i - 1.5) * width, vals, width, label=label, color=color, hatch=hatch,
                       edgecolor="white" if hatch is None else "#d62728")
        for b, v in zip(bars, vals):
            ax1.annotate(_fmt_mb(v), (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                         fontsize=9, xytext=(0, 2), textcoords="offset points")
    for j, n in enumerate(names):
        s = results[n]["sizes"]
        ax1.annotate(f"orochi: {s['heap'] / s['orochi']:.1f}x smaller than heap,\n"
                     f"{s['orochi'] / s['parquet']:.2f}x the Parquet file",
                     (x[j], top * 1.08), ha="center", va="bottom", fontsize=9)
    ax1.set_ylim(0, top * 1.3)
    ax1.set_xticks(x, [f"{n}\n{results[n]['rows']:,} rows" for n in names])
    ax1.set_ylabel("MB on disk")
    ax1.set_title("Size on disk (lower is better)")
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=9, frameon=False)

    width = 0.2
    copy_bars = [("heap", "rows_s", "heap, wall-clock", "#8c8c8c", None),
                 ("orochi", "rows_s", "orochi, wall-clock", "#d62728", None),
                 ("heap", "rows_s_cpu", "heap, per backend CPU second", "#d9d9d9", "//"),
                 ("orochi", "rows_s_cpu", "orochi, per backend CPU second", "#f4a3a3", "//")]
    if any(not results[n]["copy"][k]["rows_s_cpu"] for n in names for k in ("heap", "orochi")):
        copy_bars = copy_bars[:2]
    ctop = max(results[n]["copy"][k][f] for n in names for k, f, *_ in copy_bars) / 1e3
    for i, (key, field, label, color, hatch) in enumerate(copy_bars):
        vals = [results[n]["copy"][key][field] / 1e3 for n in names]
        offset = (i - (len(copy_bars) - 1) / 2) * width
        bars = ax2.bar(x + offset, vals, width, label=label, color=color, hatch=hatch,
                       edgecolor="white" if hatch is None else ("#d62728" if key == "orochi" else "#8c8c8c"))
        for b, v in zip(bars, vals):
            ax2.annotate(f"{v:,.0f}k", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                         fontsize=8, xytext=(0, 2), textcoords="offset points")
    for j, n in enumerate(names):
        c = results[n]["copy"]
        text = f"orochi / heap: {c['orochi']['rows_s'] / c['heap']['rows_s']:.2f}x wall-clock"
        if len(copy_bars) == 4:
            text += f",\n{c['orochi']['rows_s_cpu'] / c['heap']['rows_s_cpu']:.2f}x by CPU"
        ax2.annotate(text, (x[j], ctop * 1.08), ha="center", va="bottom", fontsize=9)
    ax2.set_ylim(0, ctop * 1.3)
    ax2.set_xticks(x, names)
    ax2.set_ylabel("thousand rows / s")
    ax2.set_title(f"COPY FROM a CSV file, median of {data['runs']} (higher is better)")
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=9, frameon=False)

    fig.suptitle(f"Orochi columnar storage: commit {data['commit']}, {data['date']}, {data['cpus']} cores, "
                 f"1-min load average {data['load_short']}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ================================================================ main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ts-rows", type=int, default=10_000_000, help="rows of the time series")
    parser.add_argument("--lineitem-rows", type=int, default=3_000_000, help="rows of the lineitem table")
    parser.add_argument("--runs", type=int, default=3, help="timed COPY runs per table")
    parser.add_argument("--scan-runs", type=int, default=5, help="timed runs of the scan sanity query")
    parser.add_argument("--repeat", type=int, default=3, help="runs per codec measurement (best is kept)")
    parser.add_argument("--only", choices=sorted(DATASETS), action="append", help="run only this dataset")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/columnar.*")
    parser.add_argument("--results", default=RESULTS_MD, help="where to write the markdown results")
    parser.add_argument("--chart", default=RESULTS_PNG, help="where to write the chart")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_before = load_average()
    commit = git_commit()
    sizes = {"timeseries": args.ts_rows, "lineitem": args.lineitem_rows}
    wanted = args.only or list(DATASETS)
    results = {}
    tmpdir = tempfile.mkdtemp(prefix="orochi-columnar-bench-")
    os.chmod(tmpdir, 0o777)
    try:
        with PostgresCluster("bench-columnar", settings=SETTINGS) as pg:
            pg.create_database("bench")
            with pg.connect("bench", autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
                for name in DATASETS:
                    if name in wanted:
                        results[name] = run_dataset(conn, name, sizes[name], tmpdir, args.runs,
                                                    args.scan_runs, args.repeat)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    load_after = load_average()

    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "load": f"{load_before} at the start, {load_after} at the end (1, 5, 15 min); 1-min load before the "
                f"timed COPYs {min(LOAD_SAMPLES, default=0):.1f} to {max(LOAD_SAMPLES, default=0):.1f}",
        "load_short": f"{load_before.split()[0]} at the start, {load_after.split()[0]} at the end, "
                      f"{min(LOAD_SAMPLES, default=0):.1f}-{max(LOAD_SAMPLES, default=0):.1f} before the COPYs",
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "scan_runs": args.scan_runs,
        "repeat": args.repeat,
        "settings": {k: ("on" if v is True else v) for k, v in SETTINGS.items()},
        "server_version": version,
        "pyarrow": pa.__version__,
        "total_seconds": time.perf_counter() - started,
        "results": results,
    }
    print_report(data)
    print(f"total {data['total_seconds']:.0f} s")
    if not args.no_write:
        previous = read_previous(args.results)
        write_markdown(args.results, data, previous)
        write_chart(args.chart, data)
        print(f"written to {os.path.relpath(args.results)} and {os.path.relpath(args.chart)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
