"""What happens to stripe files when the transaction ends.

A writer registers each stripe file *before* it exists (so a failure in the
middle of writing still finds it), then inserts the stripe's catalog rows.
DROP and TRUNCATE delete catalog rows and register the files those rows
named. When the transaction ends:

- ROLLBACK (or a failed commit): every file it created is removed; the files
  of deleted rows stay, since the rows are back.
- COMMIT: just before, the catalog says which created files still have their
  row (a ROLLBACK TO SAVEPOINT may have undone some) and which deleted rows
  are still gone; created files without a row are removed then, the files of
  deleted rows right after the commit.
- PREPARE TRANSACTION: nothing is removed; whichever way the prepared
  transaction ends, the files left without a row are orphans that
  ``orochi.vacuum()`` collects, as are files left by a crash.

Removals are WAL-logged (and flushed) before they are done
(:mod:`orochi_fdw.catalog.wal`), so standbys remove the same files.
"""

from __future__ import annotations

import os

from orochi_fdw.bridge import runtime, spi
from orochi_fdw.catalog import files, store
from orochi_fdw.errors import SPIError


class FileLedger:
    """The stripe files the current transaction created or doomed; one per
    backend, joined to the transaction on first use."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.created: dict[int, str] = {}
        self.doomed: dict[int, str] = {}
        self.doomed_dirs: set[str] = set()
        self.remove_at_commit: list[str] = []
        self.drop_extension_dirs: list[str] | None = None
        self.xid: int | None = None
        self.xid_durable = False
        self.joined = False

    def _join(self) -> None:
        if not self.joined:
            runtime.join_transaction(self)
            self.joined = True

    # -- what writers and DDL register ------------------------------------

    def transaction_id(self) -> int:
        """The top-level transaction's full id (cached for the transaction)."""
        self._join()
        if self.xid is None:
            self.xid = store.current_xid()
        return self.xid

    def writer_transaction_id(self) -> int:
        """The id to name the files this transaction writes with: the
        top-level transaction's full id, made durable (written to the WAL and
        flushed) the first time in the transaction, before any file carries
        it. An id that never reached the disk is handed out again after a
        crash; a durable one is not, so a file's name names its writer alone
        (see :mod:`orochi_fdw.catalog.vacuum`)."""
        self._join()
        if not self.xid_durable:
            self.xid = spi.durable_transaction_id()
            self.xid_durable = True
        return self.xid

    def file_created(self, stripe_id: int, path: str) -> None:
        """A stripe file is about to be written by this transaction."""
        self._join()
        self.created[stripe_id] = path

    def rows_deleted(self, stripes: list[tuple[int, str]], table_dirs: list[str] = ()) -> None:
        """Catalog rows of these stripes were deleted: remove their files
        (and the emptied table folders) if that commits."""
        self._join()
        mine = str(files.database_oid())
        if any(files.is_object(p) for _, p in stripes):
            from orochi_fdw.tiering.move import remember_targets

            remember_targets([p for _, p in stripes])  # deleted in the commit hook, where SPI cannot run
        for stripe_id, path in stripes:
            if _database_of(path) == mine:
                self.doomed[stripe_id] = path
        self.doomed_dirs.update(d for d in table_dirs if _database_of(os.path.join(d, "x")) == mine)

    def extension_dropping(self, dirs: list[str]) -> None:
        """DROP EXTENSION is starting: if the extension is gone at commit,
        remove the database's folders under each data directory."""
        self._join()
        self.drop_extension_dirs = list(dirs)

    # -- transaction hooks (called by the bridge's runtime) ----------------

    def pre_commit(self) -> None:
        remove_now: list[str] = []
        remove_later: list[str] = []
        if self.drop_extension_dirs is not None and not _extension_exists():
            remove_now = list(self.created.values())
            remove_later = list(self.doomed.values())
            self.remove_at_commit = remove_later + [("dir", d) for d in self.drop_extension_dirs]
            files.remove_files(remove_now)
            return
        ids = list(self.created) + list(self.doomed)
        if ids:
            visible = store.visible_stripe_ids(ids)
            # undone by ROLLBACK TO SAVEPOINT
            files.remove_files([path for stripe_id, path in self.created.items() if stripe_id not in visible])
            for stripe_id, path in self.doomed.items():
                if stripe_id not in visible and stripe_id not in self.created:
                    remove_later.append(path)
        self.remove_at_commit = remove_later + [("rmdir", d) for d in self.doomed_dirs]

    def pre_prepare(self) -> None:
        """Keep everything: the prepared transaction owns its files now."""

    def commit(self) -> None:
        try:
            paths = [item for item in self.remove_at_commit if not isinstance(item, tuple)]
            try:
                for path, result in files.remove_files(paths):
                    if isinstance(result, OSError):
                        _warn(f'could not remove stripe file "{path}": {result}')
            except Exception as exc:  # noqa: BLE001 - the commit has happened: only warn
                _warn(f"could not remove stripe files: {exc}")
            for item in self.remove_at_commit:
                if not isinstance(item, tuple):
                    continue
                try:
                    action, path = item
                    if action == "dir":
                        files.remove_tree(path)
                    else:
                        files.remove_dir_if_empty(path)
                except Exception as exc:  # noqa: BLE001 - the commit has happened: only warn
                    _warn(f"could not remove {item!r}: {exc}")
        finally:
            self._reset()

    def prepare(self) -> None:
        self._reset()

    def rollback(self) -> None:
        try:
            for path, result in files.remove_files(list(self.created.values())):
                if isinstance(result, OSError):
                    _warn(f'could not remove stripe file "{path}": {result}')
        except Exception as exc:  # noqa: BLE001 - left for orochi.vacuum()
            _warn(f"could not remove stripe files: {exc}")
        finally:
            self._reset()


def _database_of(path: str) -> str:
    """The database folder a stripe file is in (``<data_dir>/<db>/<table>/<file>``).
    A database made from a template shares the template's files: only files
    of this database's own folder are ever removed by it."""
    return os.path.basename(os.path.dirname(os.path.dirname(path)))


def _extension_exists() -> bool:
    try:
        return bool(spi.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'orochi'").rows)
    except SPIError:
        return True


def _warn(message: str) -> None:
    try:
        spi.log("warning", message)
    except Exception:  # noqa: BLE001 - logging must never fail a commit
        pass


#: the backend's ledger
ledger = FileLedger()

