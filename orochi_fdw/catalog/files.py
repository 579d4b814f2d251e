"""Where stripe files live, what they are called, and how they are removed.

Layout under a data directory (the ``data_dir`` server option, by default
``orochi/`` inside the PostgreSQL data directory)::

    <data_dir>/<database oid>/<table oid>/<stripe id>.<xid>.stripe

``<xid>`` is the full (64-bit) id of the top-level transaction that wrote the
file, made durable before the file is created (written to the WAL and
flushed: :meth:`~orochi_fdw.catalog.ledger.FileLedger.writer_transaction_id`),
so that no other transaction ever has it, even after a crash. It lets
:mod:`orochi_fdw.catalog.vacuum` decide whether a file without a catalog row
is an orphan (its writer has finished) or belongs to a writer that is still
running. The stripe writer first writes
``.<stripe id>.<xid>.stripe.<random>.tmp`` in the same directory and links
it into place once it is complete and fsynced; a temporary file that is left
behind (a crash) carries the same name and is collected the same way.

A data directory Orochi writes into holds the marker file
``OROCHI_DATA_DIR`` (written with the first stripe).  Orphan collection
(``orochi.vacuum()``) and DROP EXTENSION remove files only under data
directories that carry it (and the default one), so a ``data_dir`` pointing
at a folder Orochi never wrote into is never cleaned up by it.

The catalog names a file relative to its database's folder under the
default data directory (``<table oid>/<file>``, :func:`catalog_path`), so
that a copy of the data directory (a standby, a base backup) or of the
database (``CREATE DATABASE ... TEMPLATE``, which copies the folder) finds
its own files, never another cluster's or database's; a file under a
server's ``data_dir`` is named by its absolute path. :func:`resolve` turns
the catalog's form back into a path.

Every file written and every removal goes through the WAL
(:mod:`orochi_fdw.catalog.wal`).
"""

from __future__ import annotations

import errno
import os
import re
from typing import NamedTuple

from orochi_fdw.bridge import spi
from orochi_fdw.catalog import wal
from orochi_fdw.catalog.errors import StorageIOError

#: the folder, inside the PostgreSQL data directory, used when no data_dir is set
DEFAULT_FOLDER = "orochi"

#: the file marking a data directory as Orochi's
MARKER = "OROCHI_DATA_DIR"

STRIPE_SUFFIX = ".stripe"

_NAME_RE = re.compile(r"^(\d+)\.(\d+)\.stripe$")
_TMP_RE = re.compile(r"^\.(\d+)\.(\d+)\.stripe\..*\.tmp$")
# a stripe's vector index file: <stripe id>.<xid>.<index id>.vindex (orochi_fdw.vector.indexes)
_INDEX_RE = re.compile(r"^(\.?)(\d+)\.(\d+)\.\d+\.vindex(\..*\.tmp)?$")


class StripeFileName(NamedTuple):
    """What a stripe file's name says about it."""

    stripe_id: int
    xid: int
    temporary: bool


_backend: dict[str, str | int] = {}


def _info(key: str):
    """A fact about this backend that does not change during its life."""
    if key not in _backend:
        info = spi.backend_info()
        _backend["data_directory"] = os.path.normpath(info["data_directory"])
        _backend["database_oid"] = int(info["database_oid"])
    return _backend[key]


def default_data_dir() -> str:
    """``orochi`` inside this cluster's data directory."""
    return os.path.join(_info("data_directory"), DEFAULT_FOLDER)


def database_oid() -> int:
    return int(_info("database_oid"))


#: how the catalog names an object of a storage target (orochi_fdw.tiering)
OBJECT_SCHEME = "tier:"


def is_object(path: str) -> bool:
    """Whether the catalog's name is an object in a storage target
    (``tier:<target id>/<key>``, docs/tiering.md), not a file."""
    return path.startswith(OBJECT_SCHEME)


def catalog_path(path: str) -> str:
    """How the catalog names the file ``path``: relative to this database's
    folder under the default data directory when it lies there, else its
    absolute path (a server's ``data_dir``); an object keeps its name."""
    if is_object(path):
        return path
    path = os.path.normpath(path)
    base = database_dir(default_data_dir())
    if path.startswith(base + os.sep):
        return path[len(base) + 1:]
    return path


def resolve(stored: str) -> str:
    """The path of a file as the catalog names it (see :func:`catalog_path`)."""
    if os.path.isabs(stored) or is_object(stored):
        return stored
    return os.path.join(database_dir(default_data_dir()), stored)


def database_dir(data_dir: str, dboid: int | None = None) -> str:
    """The folder of one database's tables under ``data_dir``."""
    return os.path.join(data_dir, str(database_oid() if dboid is None else dboid))


def table_dir(data_dir: str, relid: int, dboid: int | None = None) -> str:
    """The folder of one table's stripe files."""
    return os.path.join(database_dir(data_dir, dboid), str(relid))


def stripe_file_name(stripe_id: int, xid: int) -> str:
    return f"{stripe_id}.{xid}{STRIPE_SUFFIX}"


def parse_file_name(name: str) -> StripeFileName | None:
    """The stripe id and writer xid in a stripe file's (or its temporary
    file's) name, or None for a name Orochi does not write."""
    m = _NAME_RE.match(name)
    if m:
        return StripeFileName(int(m.group(1)), int(m.group(2)), False)
    m = _TMP_RE.match(name)
    if m:
        return StripeFileName(int(m.group(1)), int(m.group(2)), True)
    m = _INDEX_RE.match(name)
    if m and bool(m.group(1)) == bool(m.group(4)):
        return StripeFileName(int(m.group(2)), int(m.group(3)), bool(m.group(4)))
    return None


def ensure_dir(path: str) -> None:
    """Create ``path`` (and its parents, mode 0700) if missing.

    Raises:
        StorageIOError: the folder cannot be created or written, with the
            reason and a hint naming the ``data_dir`` option.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StorageIOError(
            f'could not create directory "{exc.filename or path}": {exc.strerror or exc}',
            hint="Columnar data lives under the data_dir option of the table's server; "
                 "it must be writable by the operating system user running PostgreSQL.",
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StorageIOError(
            f'directory "{path}" is not writable',
            hint="Columnar data lives under the data_dir option of the table's server; "
                 "it must be writable by the operating system user running PostgreSQL.",
        )


def owns_data_dir(data_dir: str) -> bool:
    """Whether Orochi may remove files under ``data_dir``: the default data
    directory, or one holding the marker (see the module docstring)."""
    if os.path.normpath(data_dir) == os.path.normpath(default_data_dir()):
        return True
    return os.path.isfile(os.path.join(data_dir, MARKER))


def ensure_table_dir(data_dir: str, relid: int) -> str:
    """Create (if missing) a table's folder under ``data_dir``, marking the
    data directory as Orochi's; returns the folder.

    Raises:
        StorageIOError: as :func:`ensure_dir`.
    """
    ensure_dir(data_dir)
    marker = os.path.join(data_dir, MARKER)
    if not os.path.exists(marker):
        try:
            with open(marker, "a", encoding="utf-8") as f:
                f.write("Stripe files of Orochi columnar tables: <database oid>/<table oid>/<files>.\n")
        except OSError as exc:
            raise StorageIOError(
                f'could not write "{marker}": {exc.strerror or exc}',
                hint="Columnar data lives under the data_dir option of the table's server; "
                     "it must be writable by the operating system user running PostgreSQL.") from None
    directory = table_dir(data_dir, relid)
    ensure_dir(directory)
    return directory


def require_wal(what: str = "write columnar data") -> None:
    """Refuse to write files that the WAL cannot carry (orochi not preloaded)."""
    wal.require(what)


def log_new_file(path: str) -> None:
    """A file is complete (written, fsynced, linked into place): log it to
    the WAL before any catalog row names it."""
    wal.log_new_file(path)


def remove_file(path: str) -> int:
    """Remove a file (logged to the WAL first); returns the bytes freed (0
    if it was already gone).

    Raises:
        OSError: it could not be removed.
    """
    for _, freed in remove_files([path]):
        if isinstance(freed, OSError):
            raise freed
        return freed
    return 0


def remove_files(paths: list[str]) -> list[tuple[str, int | OSError]]:
    """Remove files, logged to the WAL first (one flush for all): (path,
    bytes freed or the OSError) per file (0 for one already gone). Objects
    of storage targets are deleted from their object store (nothing to log:
    no standby holds a copy)."""
    objects = [p for p in paths if is_object(p)]
    out = [(p, freed) for p, _, freed in wal.remove_logged([(p, wal.REMOVE_FILE) for p in paths
                                                                if not is_object(p)])] if len(objects) < len(paths) else []
    if objects:
        from orochi_fdw.tiering.move import delete_objects

        out += delete_objects(objects)
    return out


def remove_dir_if_empty(path: str) -> bool:
    """Remove an empty folder (logged to the WAL first); False if it is not
    empty or gone."""
    try:
        if os.listdir(path):
            return False
    except FileNotFoundError:
        return False
    for _, _, result in wal.remove_logged([(path, wal.REMOVE_EMPTY_DIR)]):
        if isinstance(result, OSError):
            if result.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise result
        return True
    return False


def remove_tree(path: str) -> None:
    """Remove a folder and everything in it (logged to the WAL first)."""
    wal.remove_logged([(path, wal.REMOVE_TREE)])
