"""Per-stripe vector index files: building, writing, opening.

Stripes never change, so each gets its own index of each vector index of its
table, built when the stripe's catalog row is inserted (INSERT, COPY,
compaction, vacuum, chunk compression: every writer goes through
``store.insert_stripe``) or by ``orochi.create_vector_index`` for the
stripes already there. The file lies beside the stripe's::

    <table folder>/<stripe id>.<xid>.<index id>.vindex

``<xid>`` is the writing transaction's, so that ``orochi.vacuum()`` can tell
an orphan (its writer finished and no catalog row names it) from a file of a
transaction still running. It is written like a stripe file: a temporary
name, fsync, linked to its final name, the folder fsynced, and only then its
catalog row inserted; the transaction's end removes files whose rows did not
commit (:class:`IndexFileLedger`).

HNSW graphs come from usearch (a kept library: measured against hnswlib and
faiss in docs/vector.md) and are opened as memory maps, so every backend
shares one copy through the page cache. The row keys are the rows' offsets in
the stripe; the graph stores the float32 vectors it was given, which the
search re-ranks by the exact distance.

Each file records the ``ef`` at which a build-time check found recall@10 of
at least :data:`TARGET_RECALL` on queries made like the data (a stored
vector moved by about its nearest-neighbour distance), or 0 when no ``ef``
worth using reached it: the stripe is then searched exactly (uniform random
data in many dimensions is such a case).
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from orochi_fdw.bridge import runtime, spi
from orochi_fdw.bridge.faults import fault_point
from orochi_fdw.catalog import files
from orochi_fdw.columnar.deletes import STRIPE_OFFSET_BITS, stripe_rowids
from orochi_fdw.kernels import vector as kernels
from orochi_fdw.storage.stripe_format import StripeReader
from orochi_fdw.vector import catalog
from orochi_fdw.vector.errors import VectorError
from orochi_fdw.vector.reference import METRICS
from orochi_fdw.vector.types import payload_matrix

if TYPE_CHECKING:  # pragma: no cover
    from orochi_fdw.catalog.store import StripeRecord
    from orochi_fdw.columnar.maintenance import Progress

#: build options and their defaults: twice pgvector's (16, 64). Measured on
#: 128-dimension vectors (docs/vector.md, *Defaults*): a graph of M 16 over
#: 1M clustered rows needed ef ~400 for recall@10 0.95; M 32 and
#: ef_construction 128 cost about 1.7 times the build CPU (as much as
#: M 16 with ef_construction 128) for a better graph: on 200k rows of the
#: same data, recall@10 at ef 64 went from 0.978 to 0.999
HNSW_DEFAULTS = {"m": 32, "ef_construction": 128}
IVFFLAT_DEFAULTS = {"lists": 0}           # 0: rows / 1000, at least 1
#: recall@10 the build-time check asks of the ef it records
TARGET_RECALL = 0.97
#: the ef values (HNSW) tried by the check, smallest first: steps of about
#: a quarter below 256, since the recorded ef is the one found (no margin:
#: see EF_MARGIN) and each step above the needed ef is search time spent
#: on every query
EF_LADDER = (16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 384, 512, 768, 1024)
#: queries of the build-time check (128 x 10 neighbours measure recall
#: near 0.97 to about +-0.005)
CHECK_QUERIES = 128
#: recall@10 below the target that still makes the graph worth searching: a
#: graph that never reaches TARGET_RECALL (large graphs of pgvector's default
#: M and ef_construction sit near 0.97 at ef 1024) but reaches this records
#: the most the ladder allows instead of falling back to an exact search
FALLBACK_RECALL = 0.95
#: the ef recorded is this multiple of the one the check found enough
#: (rounded up to an integer). The check does not count the stored vector a
#: query was made from (found by every search, it gave the check a tenth of
#: its recall for free), which makes its queries harder than held-out ones
#: of the data's distribution: on 1M clustered 128-dimension rows (M 32,
#: ef_construction 128) the check needed ef 96 for 0.97 where held-out
#: queries got 0.981 at ef 64 and 0.993 at 100. The target of 0.97 is the
#: margin over the 0.95 asked for; a multiple on top of it (1.5 before)
#: bought recall 1.000 at two thirds of the throughput (docs/vector.md,
#: *Default ef*)
EF_MARGIN = 1.0
#: the margin when only FALLBACK_RECALL is reached
FALLBACK_MARGIN = 2
#: the most vectors one file indexes: ``create_vector_index`` builds a file
#: per run of stripes holding up to this many (a segment; 2**20 x 128
#: float32 is 512 MB in memory while it is built)
SEGMENT_MAX_VECTORS = 1 << 20
#: stripes with fewer vectors are searched exactly (no index file)
MIN_INDEXED_ROWS = 2_000

INDEX_SUFFIX = ".vindex"
_USEARCH_METRIC = {"l2": "l2sq", "cosine": "cos", "inner_product": "ip"}
#: the metric of the kernels for each distance type's operator
KERNEL_METRIC = {"l2": METRICS["l2"], "cosine": METRICS["cosine"],
                 "inner_product": METRICS["negative_inner_product"]}


def index_file_name(stripe_id: int, xid: int, index_id: int) -> str:
    return f"{int(stripe_id)}.{int(xid)}.{int(index_id)}{INDEX_SUFFIX}"


# ---------------------------------------------------------------------- ledger

class IndexFileLedger:
    """Index files this transaction created or whose rows it deleted; joined
    to the transaction at first use (as the stripe files' ledger)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.created: set[str] = set()
        self.doomed: set[str] = set()
        self.remove_at_commit: list[str] = []
        self.joined = False

    def _join(self) -> None:
        if not self.joined:
            runtime.join_transaction(self)
            self.joined = True

    def file_created(self, path: str) -> None:
        self._join()
        self.created.add(path)

    def row_deleted(self, path: str) -> None:
        self._join()
        self.doomed.add(path)

    def pre_commit(self) -> None:
        paths = sorted(self.created | self.doomed)
        live = set()
        if paths:
            live = {files.resolve(r[0]) for r in spi.prepared(
                "SELECT file_path FROM orochi.columnar_vector_index_files WHERE file_path = ANY ($1)",
                ["text[]"], internal=True).execute([[files.catalog_path(p) for p in paths]]).rows}
        files.remove_files(sorted(self.created - live))       # rolled back to a savepoint
        self.remove_at_commit = sorted(self.doomed - live - self.created)

    def pre_prepare(self) -> None:
        """A prepared transaction owns its files; orphans go to orochi.vacuum()."""

    def commit(self) -> None:
        try:
            files.remove_files(self.remove_at_commit)
        except Exception:  # noqa: BLE001 - the commit has happened: orphans go to orochi.vacuum()
            pass
        finally:
            self._reset()

    def prepare(self) -> None:
        self._reset()

    def rollback(self) -> None:
        try:
            files.remove_files(sorted(self.created))
        except Exception:  # noqa: BLE001 - orphans go to orochi.vacuum()
            pass
        finally:
            self._reset()


ledger = IndexFileLedger()


# ---------------------------------------------------------------------- reading vectors

def stripe_vectors(stripe: "StripeRecord", attnum: int, dimensions: int,
                   chunk_groups: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The non-NULL vectors of a stripe's column: (m x d float32, their row
    offsets in the stripe), chunk group by chunk group (all, or those
    listed)."""
    rec = stripe.columns.get(attnum)
    if rec is None or rec.kind != "vector":
        return np.zeros((0, dimensions), np.float32), np.zeros(0, np.int64)
    reader = StripeReader(stripe.file_path)
    try:
        parts, rows = [], []
        groups = reader.metadata.chunk_groups
        for g in (groups if chunk_groups is None else [groups[i] for i in chunk_groups]):
            data = reader.read_chunk(rec.column_name, g.index)
            offsets, raw = data.values
            X = payload_matrix(raw[int(offsets[0]):int(offsets[-1])], dimensions)
            if data.validity is None:
                r = np.arange(g.first_row, g.first_row + g.row_count, dtype=np.int64)
            else:
                r = g.first_row + np.flatnonzero(data.validity).astype(np.int64)
            if len(r) != len(X):
                from orochi_fdw.errors import CorruptDataError

                raise CorruptDataError(f'{stripe.file_path}: vector column "{rec.column_name}" holds '
                                       f"{len(X)} vectors for {len(r)} rows in chunk group {g.index}")
            parts.append(X)
            rows.append(r)
    finally:
        reader.close()
    if not parts:
        return np.zeros((0, dimensions), np.float32), np.zeros(0, np.int64)
    return np.concatenate(parts), np.concatenate(rows)


# ---------------------------------------------------------------------- building

def _usearch():
    try:
        from usearch.index import Index
    except ImportError:  # pragma: no cover - a requirement of the package
        raise VectorError("vector indexes need the usearch package", "0A000",
                          hint="Install the orochi package's requirements into its virtualenv.") from None
    return Index


def _exact_topk(X: np.ndarray, q: np.ndarray, metric: int, k: int) -> np.ndarray:
    out = np.empty(len(X), dtype=np.float64)
    kernels.distances(X, q, metric, out)
    out = np.where(np.isnan(out), np.inf, out)
    k = min(k, len(X))
    return np.argpartition(out, k - 1)[:k]


def calibrate_ef(graph, X: np.ndarray, keys: np.ndarray, distance_type: str, m: int, seed: int = 0) -> int:
    """:data:`EF_MARGIN` times the smallest ef of :data:`EF_LADDER` at
    which the graph finds at least :data:`TARGET_RECALL` of the true 10
    nearest neighbours of queries made like the data (a stored vector moved
    by about its nearest-neighbour distance; that stored vector itself is
    not counted, neither in the truth nor in the answer: a held-out query
    has no such neighbour to find for free); when none does but one reaches
    :data:`FALLBACK_RECALL`, :data:`FALLBACK_MARGIN` times that one within
    the largest ef tried; 0 (search exactly) when no ef below the cost of
    an exact search reaches even that."""
    n, d = X.shape
    rng = np.random.default_rng(seed)
    nq = min(CHECK_QUERIES, n)
    sample = rng.choice(n, nq, replace=False)
    metric = KERNEL_METRIC[distance_type]
    dist = np.empty(n, dtype=np.float64)
    queries, truth = [], []
    k = min(10, n - 1)
    for a in sample:
        kernels.distances(X, X[a], METRICS["l2"], dist)
        dist[a] = np.inf
        radius = float(np.min(dist)) if n > 1 else 1.0
        q = (X[a] + rng.normal(0.0, max(radius, 1e-6) / np.sqrt(d), d)).astype(np.float32)
        queries.append(q)
        near = keys[_exact_topk(X, q, metric, k + 1)].tolist()
        truth.append(set(_without(near, int(keys[a]), k)))
    if k < 1:
        return 0
    Q = np.vstack(queries)
    fallback = tried = 0
    for ef in EF_LADDER:
        if ef * m * 4 >= n:
            break                   # as dear as reading every vector: search exactly
        graph.expansion_search = ef
        try:
            found = graph.search(Q, k + 1, threads=1)
        except RuntimeError as exc:
            raise _cancelled(exc) from None
        got = np.asarray(found.keys).reshape(nq, -1)
        recall = np.mean([len(truth[i] & set(_without(got[i].tolist(), int(keys[a]), k))) / len(truth[i])
                          for i, a in enumerate(sample)])
        if recall >= TARGET_RECALL:
            return int(math.ceil(ef * EF_MARGIN))
        if recall >= FALLBACK_RECALL and not fallback:
            fallback = ef
        tried = ef
    return min(fallback * FALLBACK_MARGIN, tried)


def _without(keys: list[int], source: int, k: int) -> list[int]:
    """The first k of ``keys`` but ``source`` (the stored vector a check
    query was made from)."""
    return [x for x in keys if x != source][:k]


def _write_atomically(directory: str, name: str, save) -> tuple[str, int]:
    """Write a file through ``save(tmp_path)`` under a temporary name, fsync,
    link it to its final name, fsync the folder; returns (path, bytes)."""
    files.ensure_dir(directory)
    path = os.path.join(directory, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    files.log_new_file(path)  # to the WAL before its catalog row
    return path, os.stat(path).st_size


def build_stripe_index(index: catalog.IndexDef, stripe: "StripeRecord") -> bool:
    """Build, write and register the stripe's file of ``index`` (in the
    current transaction); False when the stripe has too few vectors to be
    worth one (it is then searched exactly)."""
    return build_segment_index(index, [stripe])


def segments(stripes: list["StripeRecord"], max_vectors: int = SEGMENT_MAX_VECTORS) -> list[list["StripeRecord"]]:
    """Stripes (in id order) cut into runs of at most ``max_vectors`` rows
    in one folder (a hypertable's chunk has its own, removed with it), each
    to be indexed by one file."""
    out: list[list["StripeRecord"]] = []
    rows = 0
    for stripe in sorted(stripes, key=lambda s: s.stripe_id):
        if not out or rows + stripe.row_count > max_vectors \
                or os.path.dirname(stripe.file_path) != os.path.dirname(out[-1][0].file_path):
            out.append([])
            rows = 0
        out[-1].append(stripe)
        rows += stripe.row_count
    return out


#: vectors given to the HNSW graph per call: between calls the build shows
#: its progress (a callback inside usearch's loop must never raise, and a
#: cancel raises in whatever Python runs)
ADD_SLICE_VECTORS = 10_000


def build_segment_index(index: catalog.IndexDef, stripes: list["StripeRecord"],
                        progress: "Progress | None" = None) -> bool:
    """Build, write and register one file of ``index`` over ``stripes`` (a
    segment; one stripe when a writer has just made it), in the current
    transaction: a catalog row per stripe that holds vectors, all naming the
    file. The graph's keys are the rows' row ids (stripe id and offset), so
    a search tells the stripes apart and leaves out every row of a stripe
    its snapshot does not see. False when the stripes hold too few vectors
    to be worth a file (they are then searched exactly). ``progress``
    (orochi.vacuum_progress) counts the vectors added in ``rows_done``."""
    _phase(progress, "reading vectors")
    parts, keys, members = [], [], []
    for stripe in stripes:
        X, rows = stripe_vectors(stripe, index.attnum, index.dimensions)
        if len(X):
            parts.append(X)
            keys.append(stripe_rowids(stripe.stripe_id, rows))
            members.append((stripe, len(X)))
    if not parts or sum(n for _, n in members) < MIN_INDEXED_ROWS:
        return False
    X = parts[0] if len(parts) == 1 else np.concatenate(parts)
    keys = keys[0] if len(keys) == 1 else np.concatenate(keys)
    del parts
    files.require_wal("build a vector index")
    started = time.monotonic()
    xid = int(spi.prepared("SELECT pg_current_xact_id()::text").execute().scalar())
    first = members[0][0]
    name = index_file_name(first.stripe_id, xid, index.index_id)
    directory = os.path.dirname(first.file_path)
    if index.index_type == "hnsw":
        opts = {**HNSW_DEFAULTS, **index.options}
        Index = _usearch()
        graph = Index(ndim=index.dimensions, metric=_USEARCH_METRIC[index.distance_type], dtype="f32",
                      connectivity=int(opts["m"]), expansion_add=int(opts["ef_construction"]))
        _phase(progress, "building graph")
        done = progress.state["rows_done"] if progress is not None else 0
        for start in range(0, len(keys), ADD_SLICE_VECTORS):
            end = min(start + ADD_SLICE_VECTORS, len(keys))
            try:
                graph.add(keys[start:end], X[start:end], threads=0)
            except RuntimeError as exc:
                raise _cancelled(exc) from None
            if progress is not None:
                progress.update(rows_done=done + end)
        _phase(progress, "checking recall")
        search_ef = calibrate_ef(graph, X, keys, index.distance_type, int(opts["m"]), seed=first.stripe_id)

        def save(tmp: str, graph=graph, X=X, keys=keys) -> None:
            graph.save(tmp)
            _append_slot_keys(tmp, X, keys)
    else:
        from orochi_fdw.vector import ivfflat

        _phase(progress, "building lists")
        ivf = ivfflat.build(X, keys, index.distance_type, int(index.options.get("lists") or 0),
                            seed=first.stripe_id)
        if progress is not None:
            progress.update(rows_done=progress.state["rows_done"] + len(keys))
        _phase(progress, "checking recall")
        search_ef = ivfflat.calibrate_probes(ivf, X, index.distance_type, seed=first.stripe_id)
        save = ivf.save
    _phase(progress, "writing file")
    ledger.file_created(os.path.join(directory, name))
    path, nbytes = _write_atomically(directory, name, save)
    fault_point("vector_index:after_file")
    build_ms = int((time.monotonic() - started) * 1000)
    for i, (stripe, count) in enumerate(members):
        catalog.insert_file(index, stripe.stripe_id, path, nbytes if i == 0 else 0, count, search_ef,
                            build_ms, xid)
    return True


def _phase(progress: "Progress | None", phase: str) -> None:
    if progress is not None:
        progress.update(force=True, phase=phase)


def stripe_inserted(stripe: "StripeRecord") -> None:
    """A stripe's catalog rows were just inserted: build its index files."""
    indexes = catalog.table_indexes(stripe.relid, read_only=False)
    for index in indexes:
        build_stripe_index(index, stripe)


# ---------------------------------------------------------------------- opening

#: opened index files per backend (files never change: a path is a version)
OPEN_CACHE_ENTRIES = 256
_open: "OrderedDict[str, object]" = OrderedDict()


def open_index(index: catalog.IndexDef, path: str):
    """The graph (or IVF lists) of an index file, memory-mapped; None if the
    file is gone (a stripe rewritten or dropped since this snapshot: it is
    then searched exactly)."""
    found = _open.get(path)
    if found is not None:
        _open.move_to_end(path)
        return found
    if not os.path.exists(path):
        return None
    if index.index_type == "hnsw":
        found = _usearch().restore(path, view=True)
        if found is None:
            return None
    else:
        from orochi_fdw.vector import ivfflat

        found = ivfflat.IvfLists.open(path)
    _open[path] = found
    if len(_open) > OPEN_CACHE_ENTRIES:
        _open.popitem(last=False)
    return found


def indexed_count(graph) -> int:
    """How many vectors an opened index file holds."""
    rows = getattr(graph, "rows", None)
    return len(rows) if rows is not None else len(graph)


#: what usearch raises when it sees a signal while it adds or searches: it
#: runs Python's handler, which takes the cancel the bridge raised for it
_USEARCH_TERMINATED = "Operation has been terminated"


def _cancelled(exc: RuntimeError) -> BaseException:
    """A cancel (or statement_timeout) usearch turned into its RuntimeError
    as the KeyboardInterrupt the bridge reports with the cancel's reason;
    any other error as it is."""
    return KeyboardInterrupt() if str(exc) == _USEARCH_TERMINATED else exc


def hnsw_search(graph, q: np.ndarray, count: int, ef: int) -> np.ndarray:
    """The keys (int64) of the ``count`` nearest stored vectors to ``q``
    (one float32 vector, contiguous) an HNSW graph finds at expansion
    ``ef``, nearest first, on the calling thread.

    Straight to the compiled index: usearch's Python ``Index.search`` costs
    tens of microseconds a call around the search (argument checks, a
    batch of results made and then cut to one). The expansion is set only
    when it changes (a graph is shared by the queries of this backend)."""
    compiled = getattr(graph, "_compiled", None)
    if compiled is None:                       # pragma: no cover - another usearch layout
        graph.expansion_search = ef
        return np.asarray(graph.search(q, count, threads=1).keys, dtype=np.int64).reshape(-1)
    if compiled.expansion_search != ef:
        compiled.expansion_search = ef
    try:
        keys, _, counts, _, _ = compiled.search_many(q.reshape(1, -1), count=count, exact=False, threads=1)
    except RuntimeError as exc:
        raise _cancelled(exc) from None
    return keys[0, :int(counts[0])].view(np.int64)


def hnsw_vectors(graph, keys: np.ndarray, dimensions: int) -> np.ndarray:
    """The float32 vectors (len(keys) x dimensions) an HNSW graph stores
    for ``keys`` (keys it returned)."""
    if len(keys) == 0:
        return np.zeros((0, dimensions), dtype=np.float32)
    compiled = getattr(graph, "_compiled", None)
    if compiled is None:                       # pragma: no cover - another usearch layout
        found = graph.get(keys)
    else:
        found = compiled.get_many(keys.view(np.uint64), _f32())
    if any(v is None for v in found):
        raise VectorError("an index file returned a key it does not store")
    return np.concatenate(found).view(np.float32).reshape(len(keys), dimensions)


_F32 = []


def _f32():
    """usearch's scalar kind of float32 (looked up once)."""
    if not _F32:
        from usearch.index import ScalarKind

        _F32.append(ScalarKind.F32)
    return _F32[0]


# ---------------------------------------------------------------------- the stored vectors

#: files whose stored vectors this backend has mapped (the vectors of a
#: 2**20-row file need 16 MB of keys beside the mapping)
VECTORS_CACHE_ENTRIES = 16
_vectors: "OrderedDict[str, FileVectors | None]" = OrderedDict()


class FileVectors:
    """The float32 vectors an index file stores, read in place (a memory map
    shared through the page cache, nothing decoded), with their row ids.

    ``matrix[i]`` is the vector of row ``keys[i]``; ``sorted_keys`` and
    ``slots`` (``keys[slots] == sorted_keys``) find the slots of a stripe's
    rows, which are contiguous in row id order."""

    def __init__(self, matrix: np.ndarray, keys: np.ndarray) -> None:
        self.matrix = matrix
        self.keys = keys
        self.slots = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[self.slots]

    def stripe_slots(self, stripe_id: int, row_count: int) -> tuple[np.ndarray, np.ndarray]:
        """(the slots of the stripe's rows, the rows' offsets in the stripe)."""
        base = int(stripe_rowids(stripe_id, np.zeros(1, np.int64))[0])
        lo, hi = np.searchsorted(self.sorted_keys, [base, base + row_count])
        return self.slots[lo:hi], self.sorted_keys[lo:hi] - base


_SLOT_KEYS_MAGIC = b"OROVKEYS"
_SLOT_KEYS_FOOT = struct.Struct("<8sQQ")      # magic, vectors, where the keys begin


def _append_slot_keys(path: str, X: np.ndarray, keys: np.ndarray) -> None:
    """After usearch's own bytes (which it reads without looking further):
    the row id of each slot's vector, then a footer. usearch's file begins
    with the vectors (u32 count, u32 bytes per vector, each slot's vector),
    but in the order its threads gave out slots, not the order added: each
    slot's key is found by matching its vector's bytes to the rows added
    (rows of equal vectors are interchangeable). Nothing is appended when
    the layout is not that one (the file then serves the graph only)."""
    n, d = X.shape
    head = np.fromfile(path, dtype="<u4", count=2)
    if len(head) != 2 or int(head[0]) != n or int(head[1]) != 4 * d:
        return
    end = os.path.getsize(path)
    stored = np.fromfile(path, dtype="<f4", count=n * d, offset=8).reshape(n, d)
    as_bytes = np.dtype((np.void, 4 * d))
    given = np.argsort(np.ascontiguousarray(X, dtype="<f4").view(as_bytes).ravel(), kind="stable")
    slots = np.argsort(stored.view(as_bytes).ravel(), kind="stable")
    slot_keys = np.empty(n, dtype="<i8")
    slot_keys[slots] = keys[given]
    if not np.array_equal(stored[slots], X[given]):
        return
    del stored
    with open(path, "ab") as f:
        f.write(slot_keys.tobytes())
        f.write(_SLOT_KEYS_FOOT.pack(_SLOT_KEYS_MAGIC, n, end))


def _usearch_vectors(graph, path: str, dimensions: int) -> FileVectors | None:
    """The vectors at the head of a usearch file and the slots' row ids
    appended after it (:func:`_append_slot_keys`), checked against the
    graph (count, width, and the vectors of three slots); None when
    anything differs (the stripes are then decoded)."""
    n = len(graph)
    size = os.path.getsize(path)
    head = np.fromfile(path, dtype="<u4", count=2)
    if n == 0 or len(head) != 2 or int(head[0]) != n or int(head[1]) != 4 * dimensions \
            or size < 8 + n * 4 * dimensions + _SLOT_KEYS_FOOT.size:
        return None
    with open(path, "rb") as f:
        f.seek(size - _SLOT_KEYS_FOOT.size)
        magic, count, start = _SLOT_KEYS_FOOT.unpack(f.read(_SLOT_KEYS_FOOT.size))
    if magic != _SLOT_KEYS_MAGIC or count != n or start + 8 * n + _SLOT_KEYS_FOOT.size != size:
        return None
    matrix = np.memmap(path, dtype="<f4", mode="r", offset=8, shape=(n, dimensions))
    keys = np.fromfile(path, dtype="<i8", count=n, offset=start).astype(np.int64)
    for slot in {0, n // 2, n - 1}:
        if not np.array_equal(np.asarray(graph.get(int(keys[slot])), dtype=np.float32).reshape(-1),
                              matrix[slot]):
            return None
    return FileVectors(matrix, keys)


def file_vectors(index: catalog.IndexDef, path: str) -> FileVectors | None:
    """The vectors an index file stores, for an exact search that reads no
    stripe; None if the file is gone or its layout is not the one expected."""
    if path in _vectors:
        _vectors.move_to_end(path)
        return _vectors[path]
    graph = open_index(index, path)
    if graph is None:
        return None
    if index.index_type == "hnsw":
        found = _usearch_vectors(graph, path, index.dimensions)
    else:
        rows = np.asarray(graph.rows, dtype=np.int64)
        found = FileVectors(np.asarray(graph.vectors), rows) \
            if len(rows) and int(rows.max()) >= (1 << STRIPE_OFFSET_BITS) else None
    _vectors[path] = found
    if len(_vectors) > VECTORS_CACHE_ENTRIES:
        _vectors.popitem(last=False)
    return found
