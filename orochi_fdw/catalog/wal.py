"""Columnar files in the WAL.

Every file Orochi writes under a data directory (stripe files, vector index
files) and every removal of one goes through PostgreSQL's WAL, with the
records of Orochi's custom WAL resource manager (``pgext/wal.c``), so that
crash recovery, streaming standbys, base backups and point-in-time recovery
carry columnar data like any table:

- a new file is logged whole (:func:`log_new_file`) once it is complete,
  fsynced and linked into place, before the catalog row that names it is
  inserted: the records come before the commit record, so a replica has the
  file before it sees the row;
- removals (:func:`remove_logged`) are logged and flushed first, then done.

The resource manager exists only when ``orochi`` is in
``shared_preload_libraries``; without it every write of a file is refused
(:func:`require`), never done without the WAL.

Paths in records are relative to the PostgreSQL data directory (the working
directory of every server process) when the file lies under it, else
absolute (a server's ``data_dir`` outside it: a standby then needs the same
folder, as with tablespaces).
"""

from __future__ import annotations

import os
import shutil

from orochi_fdw.bridge import spi
from orochi_fdw.errors import OrochiError

try:
    import _orochi_wal
except ImportError:  # outside a backend
    _orochi_wal = None

REMOVE_FILE = 0
REMOVE_EMPTY_DIR = 1
REMOVE_TREE = 2


class WalNotAvailableError(OrochiError):
    """Columnar files cannot be WAL-logged: orochi is not preloaded
    (SQLSTATE 55000, object_not_in_prerequisite_state)."""

    sqlstate = "55000"

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.hint = hint
        self.detail = detail


def available() -> bool:
    """Whether files can be WAL-logged (orochi is in shared_preload_libraries)."""
    return _orochi_wal is not None and bool(_orochi_wal.available())


def require(what: str = "write columnar data") -> None:
    """Refuse to go on unless files can be WAL-logged.

    Raises:
        WalNotAvailableError: orochi is not in ``shared_preload_libraries``.
    """
    if not available():
        raise WalNotAvailableError(
            f"cannot {what}: orochi is not in shared_preload_libraries",
            detail="Columnar files are written through the WAL, by a resource manager that "
                   "PostgreSQL registers only for preloaded libraries; without it they would "
                   "not reach standbys, backups or crash recovery.",
            hint="Add orochi to shared_preload_libraries in postgresql.conf and restart the server.")


_data_dir: str | None = None


def _data_directory() -> str:
    global _data_dir
    if _data_dir is None:
        _data_dir = os.path.normpath(spi.backend_info()["data_directory"])
    return _data_dir


def wal_path(path: str) -> str:
    """The name of ``path`` in WAL records: relative to the data directory
    when the file lies under it, else absolute."""
    path = os.path.normpath(path)
    root = _data_directory()
    if path.startswith(root + os.sep):
        return path[len(root) + 1:]
    return path


def log_new_file(path: str) -> int:
    """Log a complete file (written, fsynced, linked into place); returns its
    size. Must come before the catalog row naming it is inserted."""
    require()
    return int(_orochi_wal.log_file(path, wal_path(path)))


def log_removals(items: list[tuple[str, int]]) -> None:
    """Log removals (path, kind) and flush them; the caller removes after."""
    if not items:
        return
    if not available():
        return  # nothing was ever logged without the resource manager
    _orochi_wal.log_removals([(wal_path(p), int(k)) for p, k in items])


def remove_logged(items: list[tuple[str, int]]) -> list[tuple[str, int, int | OSError]]:
    """Log, then do, the removals ``(path, kind)``; returns (path, kind,
    bytes freed or the OSError) per item. What is already gone frees 0."""
    present = [(p, k) for p, k in items if os.path.lexists(p)]
    log_removals(present)
    out: list[tuple[str, int, int | OSError]] = []
    for path, kind in items:
        try:
            if kind == REMOVE_FILE:
                size = os.stat(path).st_size
                os.unlink(path)
                out.append((path, kind, size))
            elif kind == REMOVE_EMPTY_DIR:
                os.rmdir(path)
                out.append((path, kind, 0))
            else:
                shutil.rmtree(path)
                out.append((path, kind, 0))
        except FileNotFoundError:
            out.append((path, kind, 0))
        except OSError as exc:
            out.append((path, kind, exc))
    return out
