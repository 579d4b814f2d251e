"""Reading stripes that live in object storage.

:func:`open_stripe` is where every reader of a stripe file (scans,
compaction, change capture, vector search) opens it: a local path gets a
:class:`~orochi_fdw.storage.stripe_format.StripeReader`, an object
(``tier:<target id>/<key>``) an :class:`ObjectStripeReader`, which has the
same surface (``metadata``, ``read_chunk``, ``close``).

An object reader fetches the footer once per backend (objects never change:
their keys are unique, so the parsed footer is cached by key), then only the
byte ranges of the column chunks asked for: :meth:`ObjectStripeReader.prefetch`
takes the whole list a scan will read from the stripe (the chunk groups that
survived pruning × the needed columns), merges adjacent ranges, and fetches
them with HTTP range requests in parallel (a thread pool; the threads only
talk to the object store, never to PostgreSQL).  Fetched ranges go through
a backend-local LRU cache of at most ``orochi.tier_cache_size`` bytes; a
stripe's prefetched ranges are also pinned in the reader until it closes, so
a cache smaller than one stripe's ranges still returns complete data.  Every
column chunk's CRC-32 is checked before decoding, as for local files.

Failures (after boto3's retries) raise
:class:`~orochi_fdw.tiering.targets.ObjectStoreError`: the statement ends
with an ERROR, never with partial rows.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from dataclasses import dataclass
from typing import Any, Iterable

from orochi_fdw.bridge.faults import fault_point
from orochi_fdw.errors import CorruptDataError, InvalidParameterError
from orochi_fdw.storage import stripe_format as sf
from orochi_fdw.storage.codecs import decode_chunk
from orochi_fdw.storage.kinds import get_kind
from orochi_fdw.tiering import targets
from orochi_fdw.tiering.targets import ObjectStoreError, is_object_path, parse_object_path

#: bytes of an object's tail fetched for its footer when its size is not
#: estimated (see footer_estimate): one request for most stripes
FOOTER_TAIL_BYTES = 64 << 10


def footer_estimate(chunk_groups: int, columns: int) -> int:
    """Bytes of tail to fetch for a stripe's footer: its chunk table (72
    bytes per column chunk) and group counts, plus room for the schema and
    text statistics; a footer beyond it costs one more request."""
    return 4096 + chunk_groups * (4 + columns * 96)
#: ranges closer than this are fetched as one request (the gap is read too)
COALESCE_GAP = 4 << 10
#: no merged request grows beyond this
MAX_REQUEST_BYTES = 16 << 20
DEFAULT_CACHE_BYTES = 256 << 20
DEFAULT_PARALLEL = 8


@dataclass
class TierCounters:
    """What reads from object storage cost, for EXPLAIN ANALYZE."""

    objects: int = 0
    requests: int = 0
    bytes_fetched: int = 0
    footer_cache_hits: int = 0
    cache_hits: int = 0
    cache_hit_bytes: int = 0

    def add(self, other: "TierCounters") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def explain(self) -> str:
        return (f"{self.objects} objects, {self.requests} requests, {self.bytes_fetched} bytes fetched, "
                f"cache hits {self.cache_hits} ({self.cache_hit_bytes} bytes), "
                f"footers cached {self.footer_cache_hits}")


# ---------------------------------------------------------------- the read cache

class RangeCache:
    """Byte ranges of objects, least recently used dropped first, at most
    ``limit`` bytes; thread-safe (fetch threads insert)."""

    def __init__(self, limit: int = DEFAULT_CACHE_BYTES):
        self.limit = limit
        self.size = 0
        self._items: "collections.OrderedDict[tuple[str, int, int], bytes]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, int, int], data: bytes) -> None:
        if len(data) > self.limit:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._items[key] = data
            self.size += len(data)
            while self.size > self.limit and self._items:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)

    def discard(self, key: tuple[str, int, int]) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old)

    def resize(self, limit: int) -> None:
        with self._lock:
            self.limit = limit
            while self.size > self.limit and self._items:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.size = 0


cache = RangeCache()
_footers: "collections.OrderedDict[str, sf.StripeMetadata]" = collections.OrderedDict()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_size = 0


def _settings() -> tuple[int, int]:
    """(cache bytes, parallel requests) from the settings, applied to the cache."""
    from orochi_fdw.bridge import spi

    limit, parallel = DEFAULT_CACHE_BYTES, DEFAULT_PARALLEL
    try:
        raw = spi.setting("orochi.tier_cache_size")
        if raw is not None:
            limit = _size_bytes(raw)
        raw = spi.setting("orochi.tier_parallel_requests")
        if raw is not None:
            parallel = max(1, int(raw))
    except Exception:  # noqa: BLE001 - outside a backend (tools): defaults
        pass
    cache.resize(limit)
    return limit, parallel


def _size_bytes(text: str) -> int:
    text = text.strip()
    units = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "B": 1}
    for unit, mult in units.items():
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * mult)
    return int(text) << 10  # the setting's unit: kB


def _block_signals() -> None:
    """Fetch threads take no signal: PostgreSQL's handlers (cancel,
    terminate, latches) run in the backend's own thread only."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


def _executor(parallel: int) -> concurrent.futures.ThreadPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size != parallel:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="orochi-tier",
                                                      initializer=_block_signals)
        _pool_size = parallel
    return _pool


def _get_range(client: Any, target: targets.Target, key: str, start: int, length: int) -> bytes:
    """One ranged GET (runs in fetch threads: no PostgreSQL here)."""
    resp = client.get_object(Bucket=target.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
    data = resp["Body"].read()
    if len(data) != length:
        raise CorruptDataError(f"object {key}: wanted {length} bytes at {start}, got {len(data)}")
    return data


#: merged requests read at most this fraction of bytes nobody asked for
COALESCE_WASTE = 0.1


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Merge (offset, length) ranges that touch or nearly touch: a list of
    (start, length, [parts]). A gap is read along only while it is small
    (``COALESCE_GAP``) and the request's unwanted bytes stay under
    ``COALESCE_WASTE`` of its wanted ones, so bytes fetched stay close to
    bytes needed."""
    out: list[tuple[int, int, list[tuple[int, int]]]] = []
    useful: list[int] = []
    for off, length in sorted(set(ranges)):
        if out:
            start, total, parts = out[-1]
            end = start + total
            gap = max(0, off - end)
            wanted = useful[-1] + length
            new_total = max(end, off + length) - start
            if gap <= COALESCE_GAP and new_total <= MAX_REQUEST_BYTES \
                    and new_total - wanted <= COALESCE_WASTE * wanted:
                out[-1] = (start, new_total, parts + [(off, length)])
                useful[-1] = wanted
                continue
        out.append((off, length, [(off, length)]))
        useful.append(length)
    return out


class ObjectStripeReader:
    """A stripe that lives in object storage (see the module docstring)."""

    def __init__(self, path: str, file_bytes: int | None = None, counters: TierCounters | None = None,
                 verify_checksums: bool = True, tail_bytes: int = FOOTER_TAIL_BYTES):
        self.path = path
        self.target_id, self.key = parse_object_path(path)
        self.target = targets.by_id(self.target_id)
        self.client = targets.client(self.target)
        self.verify_checksums = verify_checksums
        self.counters = counters if counters is not None else TierCounters()
        self._limit, self._parallel = _settings()
        self._pinned: dict[tuple[int, int], bytes] = {}
        self._pending: list = []  # (future, start, [(offset, length)]) of fetches in flight
        self.counters.objects += 1
        meta = _footers.get(path)
        if meta is not None:
            _footers.move_to_end(path)
            self.counters.footer_cache_hits += 1
        else:
            meta = self._fetch_footer(file_bytes, tail_bytes)
            _footers[path] = meta
            if len(_footers) > sf.FOOTER_CACHE_ENTRIES:
                _footers.popitem(last=False)
        self.metadata = meta
        self._kinds = [get_kind(c.kind) for c in meta.columns]

    def __enter__(self) -> "ObjectStripeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for f, _, _ in self._pending:
            f.cancel()
        self._pending = []
        self._pinned = {}

    # ------------------------------------------------------------ fetching

    def _fetch(self, start: int, length: int) -> bytes:
        try:
            data = _get_range(self.client, self.target, self.key, start, length)
        except CorruptDataError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's errors, after its retries
            raise targets.describe_error(self.target, f'read object "{self.key}"', exc) from None
        self.counters.requests += 1
        self.counters.bytes_fetched += len(data)
        return data

    def _fetch_footer(self, size: int | None, tail_bytes: int = FOOTER_TAIL_BYTES) -> sf.StripeMetadata:
        path = self.path
        tail = _prefetched_tails.pop(path, None)
        if tail is not None and size is not None:
            self.counters.requests += 1
            self.counters.bytes_fetched += len(tail)
            return self._parse_tail(size, tail)
        if size is None:
            try:
                size = int(self.client.head_object(Bucket=self.target.bucket, Key=self.key)["ContentLength"])
            except Exception as exc:  # noqa: BLE001
                raise targets.describe_error(self.target, f'read object "{self.key}"', exc) from None
            self.counters.requests += 1
        if size < sf.HEADER.size + sf.TRAILER.size:
            raise CorruptDataError(f"{path}: object too short for a stripe ({size} bytes)")
        tail_len = min(size, tail_bytes)
        return self._parse_tail(size, self._fetch(size - tail_len, tail_len))

    def _parse_tail(self, size: int, tail: bytes) -> sf.StripeMetadata:
        path = self.path
        tail_len = len(tail)
        flen, fcrc, tversion, tflags, treserved, tmagic = sf.TRAILER.unpack(tail[-sf.TRAILER.size:])
        if tmagic != sf.MAGIC:
            raise CorruptDataError(f"{path}: bad trailer magic (truncated or not a stripe)")
        if tversion != sf.FORMAT_VERSION or tflags != 0 or treserved != 0:
            raise CorruptDataError(f"{path}: unsupported stripe format version {tversion}")
        footer_start = size - sf.TRAILER.size - flen
        if flen > sf.MAX_FOOTER_BYTES or footer_start < sf.HEADER.size:
            raise CorruptDataError(f"{path}: footer length {flen} out of bounds")
        if flen + sf.TRAILER.size <= tail_len:
            footer = tail[tail_len - sf.TRAILER.size - flen:tail_len - sf.TRAILER.size]
        else:
            footer = self._fetch(footer_start, flen)
        if sf.crc32(footer) != fcrc:
            raise CorruptDataError(f"{path}: footer checksum mismatch")
        if tail_len == size:  # the whole object came: check the header too
            magic, version, flags, reserved = sf.HEADER.unpack(tail[:sf.HEADER.size])
            if magic != sf.MAGIC or version != sf.FORMAT_VERSION:
                raise CorruptDataError(f"{path}: not a stripe file (bad magic {magic!r})")
        return sf._parse_footer(footer, path, size, footer_start)

    def prefetch(self, wanted: Iterable[tuple[str, int]]) -> None:
        """Fetch the column chunks ``(column, chunk group)`` a scan is about
        to read, those not cached, merged and in parallel; they stay pinned
        in this reader until it closes."""
        self.start_prefetch(wanted)
        self._complete()

    def start_prefetch(self, wanted: Iterable[tuple[str, int]]) -> None:
        """Start fetching (as :meth:`prefetch`) without waiting: the first
        read of this reader waits for them. A scan starts the next stripe's
        fetches before it decodes the current one."""
        ranges = []
        for column, g in wanted:
            m = self.metadata.chunk(column, g)
            r = (m.offset, m.length)
            if r in self._pinned or m.length == 0:
                continue
            data = cache.get((self.path, m.offset, m.length))
            if data is not None:
                self.counters.cache_hits += 1
                self.counters.cache_hit_bytes += len(data)
                self._pinned[r] = data
                continue
            ranges.append(r)
        if not ranges:
            return
        fault_point("tier:before_fetch")
        pool = _executor(self._parallel)
        client, target, key = self.client, self.target, self.key
        for start, length, parts in _merge(ranges):
            self._pending.append((pool.submit(_get_range, client, target, key, start, length), start, parts))

    def _complete(self) -> None:
        """Wait for the fetches started, pin (and cache) what they read."""
        pending, self._pending = self._pending, []
        try:
            for i, (f, start, parts) in enumerate(pending):
                try:
                    data = f.result()
                except CorruptDataError:
                    raise
                except Exception as exc:  # noqa: BLE001 - after boto3's retries
                    raise targets.describe_error(self.target, f'read object "{self.key}"', exc) from None
                self.counters.requests += 1
                self.counters.bytes_fetched += len(data)
                for off, length in parts:
                    piece = data[off - start:off - start + length]
                    self._pinned[(off, length)] = piece
                    cache.put((self.path, off, length), piece)
        except BaseException:
            for f, _, _ in pending:
                f.cancel()
            raise

    def _chunk_bytes(self, offset: int, length: int) -> bytes:
        if self._pending:
            self._complete()
        data = self._pinned.get((offset, length))
        if data is not None:
            return data
        data = cache.get((self.path, offset, length))
        if data is not None:
            self.counters.cache_hits += 1
            self.counters.cache_hit_bytes += len(data)
            return data
        data = self._fetch(offset, length) if length else b""
        cache.put((self.path, offset, length), data)
        return data

    def read_chunk(self, column: str, chunk_group: int):
        """Read, verify and decode one column chunk (as StripeReader.read_chunk).

        Raises:
            CorruptDataError: checksum mismatch or undecodable chunk.
            ObjectStoreError: the object store did not answer.
        """
        meta = self.metadata.chunk(column, chunk_group)
        k = self._kinds[self.metadata.column_index(column)]
        data = self._chunk_bytes(meta.offset, meta.length)
        if self.verify_checksums and sf.crc32(data) != meta.crc32:
            cache.discard((self.path, meta.offset, meta.length))  # fetched again next time
            raise CorruptDataError(
                f"{self.path}: checksum mismatch in column {column!r}, chunk group {chunk_group}",
            )
        try:
            return decode_chunk(meta, data, k)
        except CorruptDataError as exc:
            raise CorruptDataError(f"{self.path}: column {column!r}, chunk group {chunk_group}: {exc}") from exc

    # StripeReader's conveniences, for the readers that use them
    @property
    def row_count(self) -> int:
        return self.metadata.row_count

    @property
    def columns(self):
        return self.metadata.columns

    @property
    def chunk_groups(self):
        return self.metadata.chunk_groups

    def read(self, columns=None, chunk_groups=None):
        from orochi_fdw.storage.kinds import concat_columns

        names = [c.name for c in self.columns] if columns is None else list(columns)
        groups = list(range(len(self.chunk_groups))) if chunk_groups is None else [int(g) for g in chunk_groups]
        for g in groups:
            if not 0 <= g < len(self.chunk_groups):
                raise InvalidParameterError(f"chunk group {g} out of range")
        self.prefetch((n, g) for n in names for g in groups)
        return {n: concat_columns([self.read_chunk(n, g) for g in groups],
                                  self._kinds[self.metadata.column_index(n)]) for n in names}

    def iter_chunk_groups(self, columns=None, chunk_groups=None):
        names = [c.name for c in self.columns] if columns is None else list(columns)
        groups = list(range(len(self.chunk_groups))) if chunk_groups is None else [int(g) for g in chunk_groups]
        self.prefetch((n, g) for n in names for g in groups)
        for g in groups:
            yield self.chunk_groups[g], {n: self.read_chunk(n, g) for n in names}


#: object tails fetched ahead by prefetch_footers, consumed by the reader's first open
_prefetched_tails: dict[str, bytes] = {}


def prefetch_footers(items: Iterable[tuple[str, int, int]]) -> None:
    """Fetch, in parallel, the tails (footers) of the objects ``(path,
    bytes, tail bytes)`` a scan will open whose footers are not cached: a
    scan over many cold stripes then waits for one round trip, not one per
    stripe."""
    wanted = [(p, n, t) for p, n, t in items
              if is_object_path(p) and p not in _footers and p not in _prefetched_tails and n > 0]
    if len(wanted) < 2:
        return
    _, parallel = _settings()
    jobs = []
    for path, size, tail in wanted:
        target_id, key = parse_object_path(path)
        target = targets.by_id(target_id)
        length = min(size, tail)
        jobs.append((path, target, key, size - length, length))
    pool = _executor(parallel)
    futures = [(path, pool.submit(_get_range, targets.client(t), t, key, start, length))
               for path, t, key, start, length in jobs]
    for path, f in futures:
        try:
            _prefetched_tails[path] = f.result()
        except Exception:  # noqa: BLE001 - the reader fetches it again and reports the error
            pass


def open_stripe(path: str, file_bytes: int | None = None, counters: TierCounters | None = None,
                tail_bytes: int = FOOTER_TAIL_BYTES):
    """A reader of a stripe, wherever it lives (see the module docstring)."""
    if is_object_path(path):
        return ObjectStripeReader(path, file_bytes, counters, tail_bytes=tail_bytes)
    return sf.StripeReader(path)


def reset_caches() -> None:
    """Forget cached footers and ranges (tests, benchmarks)."""
    cache.clear()
    _footers.clear()
