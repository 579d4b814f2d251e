"""The file sink: JSON lines, one file per subscription or per table,
rotated by size.

Files live in ``directory``: ``<subscription>.jsonl`` (``per`` =
``subscription``) or ``<subscription>.<schema>.<table>.jsonl`` (``per`` =
``table``).  A file that would pass ``max_file_bytes`` is first renamed
``<name>.<n>.jsonl`` (n = 1, 2 ...: the order they were written in) and a
new one started.  A batch is delivered once its lines are written and (with
``fsync``, the default) fsynced.

When it opens a file again (a restart), the sink drops a last line that a
crash left unfinished and reads the id of the last complete one; events up
to that id are not written again.  Files thus hold every event once, in
order, even after kill -9 of the sidecar or the server.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from orochi_fdw.cdc.events import Event, render_value
from orochi_fdw.cdc.sinks.base import Delivery, Sink, SinkUnavailable

try:
    import orjson as _json

    def _loads(data: bytes) -> Any:
        return _json.loads(data)
except ImportError:  # pragma: no cover
    import json as _json

    def _loads(data: bytes) -> Any:
        return _json.loads(data)

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
#: bytes read from a file's end to find its last line
_TAIL = 1 << 20


def line_id(line: bytes) -> tuple[int, int] | None:
    """(lsn, index) of an event line of either format, None if it is not one."""
    try:
        event = _loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if "lsn" in event and "index" in event:
        return int(event["lsn"]), int(event["index"])
    source, txn = event.get("source"), event.get("transaction")
    if isinstance(source, dict) and isinstance(txn, dict) and "lsn" in source:
        return int(source["lsn"]), int(txn["total_order"]) - 1
    return None


def safe_name(text: str) -> str:
    """A file name part: anything but letters, digits, ``.``, ``_``, ``-`` as ``_``."""
    return _SAFE.sub("_", text) or "_"


class _OpenFile:
    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None
        self.size = 0
        self.last: tuple[int, int] | None = None  # id of the last event in it (or in the one rotated before)


class FileSink(Sink):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.directory = self.options["directory"]
        self.max_bytes = self.options.max_file_bytes
        self.fsync = bool(self.options["fsync"])
        self.files: dict[str, _OpenFile] = {}
        self._paths: dict[tuple[str, str] | None, str] = {}

    def path_for(self, event: Event) -> str:
        per_table = self.options["per"] == "table"
        key = (event.schema, event.table) if per_table else None
        path = self._paths.get(key)
        if path is None:
            name = safe_name(self.name)
            if per_table:
                name += f".{safe_name(event.schema)}.{safe_name(event.table)}"
            path = self._paths[key] = os.path.join(self.directory, name + ".jsonl")
        return path

    def _rotated(self, path: str) -> list[tuple[int, str]]:
        stem = os.path.basename(path)[:-len(".jsonl")]
        pattern = re.compile(re.escape(stem) + r"\.(\d+)\.jsonl$")
        out = []
        for entry in os.listdir(os.path.dirname(path)):
            m = pattern.match(entry)
            if m:
                out.append((int(m.group(1)), os.path.join(os.path.dirname(path), entry)))
        return sorted(out)

    def _open(self, path: str) -> _OpenFile:
        f = self.files.get(path)
        if f is not None and f.fd is not None:
            return f
        f = _OpenFile(path)
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise SinkUnavailable(f'cannot open "{path}": {exc.strerror}') from None
        f.fd = fd
        size = os.fstat(fd).st_size
        size = self._cut_partial_line(fd, size)
        f.size = size
        f.last = self._last_id(fd, size)
        if f.last is None:
            rotated = self._rotated(path)
            if rotated:
                with open(rotated[-1][1], "rb") as old:
                    f.last = self._last_id(old.fileno(), os.fstat(old.fileno()).st_size)
        self.files[path] = f
        return f

    @staticmethod
    def _cut_partial_line(fd: int, size: int) -> int:
        """Drop what follows the last newline (a line a crash cut short)."""
        if size == 0:
            return 0
        start = max(0, size - _TAIL)
        tail = os.pread(fd, size - start, start)
        if tail.endswith(b"\n"):
            return size
        cut = tail.rfind(b"\n")
        new_size = start + cut + 1 if cut >= 0 else (0 if start == 0 else size)
        if new_size != size:
            os.ftruncate(fd, new_size)
            os.fsync(fd)
        return new_size

    @staticmethod
    def _last_id(fd: int, size: int) -> tuple[int, int] | None:
        if size == 0:
            return None
        start = max(0, size - _TAIL)
        tail = os.pread(fd, size - start, start).rstrip(b"\n")
        line = tail[tail.rfind(b"\n") + 1:]
        return line_id(line)

    def _rotate(self, f: _OpenFile) -> None:
        rotated = self._rotated(f.path)
        n = rotated[-1][0] + 1 if rotated else 1
        target = f.path[:-len(".jsonl")] + f".{n}.jsonl"
        if self.fsync:
            os.fsync(f.fd)
        os.close(f.fd)
        os.rename(f.path, target)
        fd = os.open(f.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if self.fsync:
            _fsync_dir(self.directory)
        f.fd, f.size = fd, 0

    def deliver(self, events: list[Event]) -> Delivery:
        now_ms = int(time.time() * 1000)
        result = Delivery()
        touched: list[_OpenFile] = []
        pending: dict[str, list[bytes]] = {}
        order: list[str] = []
        for event in events:
            path = self.path_for(event)
            f = self._open(path)
            if f.last is not None and (event.lsn, event.index) <= f.last:
                result.skipped += 1
                continue
            if path not in pending:
                pending[path] = []
                order.append(path)
            pending[path].append(render_value(event, self.ctx, now_ms) + b"\n")
            f.last = (event.lsn, event.index)
        try:
            for path in order:
                f = self.files[path]
                chunk: list[bytes] = []
                size = 0
                for line in pending[path]:
                    if f.size + size + len(line) > self.max_bytes and f.size + size:
                        if chunk:
                            _write_all(f.fd, b"".join(chunk))
                            f.size += size
                            chunk, size = [], 0
                        self._rotate(f)
                    chunk.append(line)
                    size += len(line)
                    result.bytes += len(line)
                    result.delivered += 1
                if chunk:
                    _write_all(f.fd, b"".join(chunk))
                    f.size += size
                touched.append(f)
            if self.fsync:
                for f in touched:
                    os.fsync(f.fd)
        except OSError as exc:
            self.close()  # opened again (and checked) at the next try
            raise SinkUnavailable(f"cannot write to {self.directory}: {exc.strerror}") from None
        return result

    def close(self) -> None:
        for f in self.files.values():
            if f.fd is not None:
                try:
                    os.close(f.fd)
                except OSError:
                    pass
                f.fd = None
        self.files.clear()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
