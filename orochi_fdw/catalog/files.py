"""Where stripe files live, what they are called, and how they are removed.

Layout under a data directory (the ``data_dir`` server option, by default
``orochi/`` inside the PostgreSQL data directory)::

    <data_dir>/<database oid>/<table oid>/<stripe id>.<xid>.stripe

``<xid>`` is the full (64-bit) id of the top-level transaction that wrote the
file. It lets :mod:`orochi_fdw.catalog.vacuum` decide whether a file without
a catalog row is an orphan (its writer has finished) or belongs to a writer
that is still running. The stripe writer first writes
``.<stripe id>.<xid>.stripe.<random>.tmp`` in the same directory and links
it into place once it is complete and fsynced; a temporary file that is left
behind (a crash) carries the same name and is collected the same way.

Files are not WAL-logged: a physical standby does not receive them, and a
data directory must not be shared by two clusters.
"""

from __future__ import annotations

import errno
import os
import re
from typing import NamedTuple

from orochi_fdw.bridge import spi
from orochi_fdw.catalog.errors import StorageIOError

#: the folder, inside the PostgreSQL data directory, used when no data_dir is set
DEFAULT_FOLDER = "orochi"

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


def default_data_dir() -> str:
    """``orochi`` inside this cluster's data directory."""
    return os.path.join(spi.backend_info()["data_directory"], DEFAULT_FOLDER)


def database_oid() -> int:
    return int(spi.backend_info()["database_oid"])


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


def remove_file(path: str) -> int:
    """Remove a file; returns the bytes freed (0 if it was already gone)."""
    try:
        size = os.stat(path).st_size
        os.unlink(path)
        return size
    except FileNotFoundError:
        return 0


def remove_dir_if_empty(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
