"""Files in a directory, watched with watchdog (inotify, else polling).

- The files are those of ``directory`` whose name matches ``glob``, read
  oldest first (by modification time, then name).
- A file is known by its device and inode (the stream ``'device:inode'``),
  not by its name: a log renamed by rotation (``app.log`` → ``app.log.1``)
  keeps its position, and the new file at the old name is a new stream. A
  rotated file is only read to its end if its new name still matches
  ``glob``.
- ``follow`` (default): files grow; only complete lines are read, a last
  line without its line break waits for it.  Not following: each file is
  read to its end (the last line too) once, then left alone (``done``).
- A file shorter than its position was truncated (copy-and-truncate
  rotation): it is read again from the start.
- A file that disappears is forgotten (its position row is deleted with the
  next batch).
- ``.gz`` and ``.zst`` files are decompressed and read whole, never followed;
  their positions count decompressed bytes.
- Watching only makes the pipeline notice changes sooner: the directory is
  scanned again at least every ``poll_interval`` seconds anyway.
"""

from __future__ import annotations

import glob as globbing
import logging
import os
import threading
import time
from typing import Any, Mapping

from orochi_fdw.pipelines.options import PipelineOptions
from orochi_fdw.pipelines.records import Fetch, Record, StreamState, compression_of, decompressing, skip
from orochi_fdw.pipelines.sources.base import Source, SourceUnavailable
from orochi_fdw.pipelines.sources.streams import StreamReader, first_record

logger = logging.getLogger("orochi.sidecar.pipelines")

#: seconds an idle fetch waits for changes before the worker looks at its state again
IDLE_WAIT = 1.0


class FileSource(Source):
    """The matching files of one directory."""

    def __init__(self, pipeline_id: int, options: PipelineOptions, format: str):
        super().__init__(pipeline_id, options, format)
        self.directory: str = options["directory"]
        self.pattern: str = options["glob"]
        self.follow: bool = bool(options["follow"])
        self.changed = threading.Event()
        self._observer: Any = None
        self.watching = "none"
        self.cursors: dict[str, StreamState] = {}
        self.readers: dict[str, StreamReader] = {}   # open readers of compressed files
        self.headers: dict[str, tuple[str, ...]] = {}
        self._scanned_at = 0.0
        self._more = False

    # ------------------------------------------------------------ watching
    def _start_watching(self) -> None:
        from watchdog.events import FileSystemEventHandler
        mode = self.options["watch"]
        wake = self.changed

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                wake.set()

        if mode in ("auto", "inotify"):
            try:
                from watchdog.observers import Observer
                observer = Observer()
                observer.schedule(Handler(), self.directory, recursive=False)
                observer.start()
                self._observer, self.watching = observer, type(observer).__name__
                return
            except Exception as exc:  # no inotify (limits, file system): poll instead
                if mode == "inotify":
                    raise SourceUnavailable(f"cannot watch {self.directory}: {exc}") from None
                logger.info("pipeline %d: cannot watch %s with inotify (%s); polling", self.pipeline_id,
                            self.directory, exc)
        from watchdog.observers.polling import PollingObserver
        observer = PollingObserver(timeout=self.options["poll_interval"])
        observer.schedule(Handler(), self.directory, recursive=False)
        observer.start()
        self._observer, self.watching = observer, "PollingObserver"

    def open(self, positions: Mapping[str, StreamState]) -> Fetch:
        if not os.path.isdir(self.directory):
            raise SourceUnavailable(f'directory "{self.directory}" does not exist')
        self.close()
        self.committed_streams = {k: v.copy() for k, v in positions.items()}
        self.cursors = {k: v.copy() for k, v in positions.items()}
        try:
            self._start_watching()
        except SourceUnavailable:
            raise
        except Exception as exc:
            raise SourceUnavailable(f"cannot watch {self.directory}: {exc}") from None
        logger.info("pipeline %d: watching %s with %s", self.pipeline_id, self.directory, self.watching)
        self.current_error = None
        return Fetch()

    # ------------------------------------------------------------ reading
    def _scan(self) -> list[tuple[str, os.stat_result]]:
        try:
            paths = globbing.glob(os.path.join(globbing.escape(self.directory), self.pattern))
        except OSError as exc:
            raise SourceUnavailable(f"cannot list {self.directory}: {exc.strerror}") from None
        if not os.path.isdir(self.directory):
            raise SourceUnavailable(f'directory "{self.directory}" does not exist')
        found = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone since listed
            if os.path.isfile(path):
                found.append((path, st))
        found.sort(key=lambda item: (item[1].st_mtime_ns, item[0]))
        return found

    def _header_of(self, path: str, compression: str) -> tuple[str, ...] | None:
        try:
            with open(path, "rb") as raw:
                return first_record(decompressing(raw, compression), self.options)
        except OSError:
            return None

    def _read_file(self, key: str, path: str, st: os.stat_result, max_records: int, out: list[Record],
                   fetch: Fetch) -> None:
        compression = compression_of(path, self.options["compression"])
        state = self.cursors.get(key)
        if state is None:
            state = StreamState(key, 0, name=path)
        if state.done:
            return
        plain = compression == "none"
        if plain and st.st_size < state.position:
            logger.warning("pipeline %d: %s is shorter than its position %d: truncated; reading it again "
                           "from the start", self.pipeline_id, path, state.position)
            self.headers.pop(key, None)
            state = StreamState(key, 0, name=path)
        elif plain and st.st_size == state.position and self.follow and state.name == path:
            return
        final = not self.follow or not plain
        reader = self.readers.get(key)
        try:
            if reader is None:
                raw = open(path, "rb")
                if plain:
                    raw.seek(state.position)
                    stream = raw
                else:
                    stream = decompressing(raw, compression)
                    if skip(stream, state.position) < state.position:
                        logger.warning("pipeline %d: %s holds less than its position", self.pipeline_id, path)
                reader = StreamReader(key, path, stream, state.position, self.format, self.options, final,
                                      self.headers.get(key), lambda: self._header_of(path, compression))
            reader.name = path
            reader.read(max_records, out)
        except OSError as exc:
            logger.warning("pipeline %d: cannot read %s: %s", self.pipeline_id, path, exc.strerror)
            return
        if reader.header is not None:
            self.headers[key] = reader.header
        done = reader.finished
        new_state = StreamState(key, reader.position, st.st_size if plain else None, done, path)
        if plain or done:
            reader.raw.close()
            self.readers.pop(key, None)
        else:
            self.readers[key] = reader
        if (new_state.position, new_state.done, new_state.name, new_state.end) != (
                state.position, state.done, state.name, state.end) or key not in self.committed_streams:
            self.cursors[key] = new_state
            fetch.streams[key] = new_state

    def fetch(self, max_records: int, max_wait: float, stop: threading.Event,
              until_caught_up: bool = False) -> Fetch:
        fetch = Fetch()
        records = fetch.records
        deadline: float | None = None
        started = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if not (until_caught_up or self._more or self.changed.is_set()
                    or now - self._scanned_at >= self.options["poll_interval"]):
                limit = deadline if deadline is not None else started + IDLE_WAIT
                if now >= limit:
                    break
                self.changed.wait(min(limit - now, self.options["poll_interval"]))
                continue
            self.changed.clear()
            self._scanned_at = now
            files = self._scan()
            seen = set()
            for path, st in files:
                key = f"{st.st_dev}:{st.st_ino}"
                seen.add(key)
                if len(records) < max_records:
                    self._read_file(key, path, st, max_records - len(records), records, fetch)
            for key in list(self.cursors):
                if key not in seen:
                    self.cursors.pop(key)
                    reader = self.readers.pop(key, None)
                    if reader is not None:
                        reader.raw.close()
                    if key in self.committed_streams and key not in fetch.forget:
                        fetch.forget.append(key)
            self.current_error = None
            full = len(records) >= max_records
            self._more = full
            now = time.monotonic()
            if records and deadline is None:
                deadline = started + max_wait
            if full or until_caught_up:
                fetch.caught_up = not full
                break
            if deadline is not None and now >= deadline:
                break
            if deadline is None and (fetch.streams or fetch.forget) and now - started >= max_wait:
                break
            if deadline is None and now - started >= IDLE_WAIT:
                break
        return fetch

    def refresh_ends(self) -> dict[str, StreamState]:
        return {}

    def rewind(self) -> None:
        for reader in self.readers.values():
            reader.raw.close()
        self.readers.clear()
        self.cursors = {k: v.copy() for k, v in self.committed_streams.items()}
        self._more = True

    def close(self) -> None:
        for reader in self.readers.values():
            try:
                reader.raw.close()
            except OSError:
                pass
        self.readers.clear()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(5)
            except Exception:
                pass
            self._observer = None
