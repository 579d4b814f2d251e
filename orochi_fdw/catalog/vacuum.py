"""Orphan stripe files and their collection (``orochi.vacuum()``).

A stripe file is live while a catalog row names it. A file without one is
an orphan once its writer (the transaction id in its name) has finished:

- the writer aborted (ROLLBACK that could not clean up, a crash, a backend
  killed): its rows never became visible to anyone;
- the writer committed before this transaction's snapshot, yet no row names
  the file: a later DROP or TRUNCATE deleted the row and did not get to
  remove the file (a crash between its commit and the unlink), or a
  ROLLBACK TO SAVEPOINT undid the row;
- the writer's id is beyond any id handed out yet, or is this very
  transaction's id but this transaction did not write the file: the id was
  assigned before a crash and never reached the WAL, so it is handed out
  again after restart, and the file's writer is gone.

Files of transactions still in progress (including prepared ones) are kept,
whatever their age, as are files whose writer committed after this
transaction's snapshot was taken. Folders of databases that no longer exist
are removed whole.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from orochi_fdw.bridge import spi
from orochi_fdw.catalog import files, store
from orochi_fdw.catalog.ledger import ledger
from orochi_fdw.errors import SPIError

_DECIDE = """
SELECT f.path,
       pg_xact_status(f.xid) AS status,
       pg_visible_in_snapshot(f.xid, pg_current_snapshot()) AS visible,
       EXISTS (SELECT 1 FROM orochi.columnar_stripes s WHERE s.file_path = f.path)
       OR EXISTS (SELECT 1 FROM orochi.columnar_retired_files r WHERE r.file_path = f.path)
       OR EXISTS (SELECT 1 FROM orochi.columnar_vector_index_files v WHERE v.file_path = f.path) AS referenced
  FROM unnest($1::text[], $2::text[]::xid8[]) AS f(path, xid)
"""

_SERVER_DATA_DIRS = """
SELECT opt.option_value
  FROM pg_catalog.pg_foreign_server s
  JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
  CROSS JOIN LATERAL pg_options_to_table(s.srvoptions) AS opt
 WHERE w.fdwhandler = 'orochi.orochi_fdw_handler'::regproc
   AND opt.option_name = 'data_dir'
"""


@dataclass
class VacuumResult:
    removed_files: int = 0
    removed_bytes: int = 0

    def add(self, nbytes: int) -> None:
        self.removed_files += 1
        self.removed_bytes += nbytes


def known_data_dirs() -> list[str]:
    """Every data directory that may hold this database's stripe files: the
    default one, each orochi server's ``data_dir``, and those the catalog's
    file paths point into."""
    dirs = {os.path.normpath(files.default_data_dir())}
    for (value,) in spi.execute(_SERVER_DATA_DIRS).rows:
        if value and os.path.isabs(value):
            dirs.add(os.path.normpath(value))
    dirs |= store.data_dirs_in_use()
    return sorted(dirs)


def _is_orphan(status: str | None, visible: bool, referenced: bool) -> bool:
    if referenced:
        return False
    if status == "aborted":
        return True
    # committed, or so old that its status is gone: an orphan once this
    # snapshot sees the writer as finished (so it sees the writer's rows).
    return status in ("committed", None) and bool(visible)


def _decide(candidates: list[tuple[str, int]], own_xid: int) -> list[str]:
    """The orphans among (path, writer xid) pairs."""
    # A file named with this very transaction's id that this transaction did
    # not create was written under the same id before a crash (an id that
    # never reached the WAL is handed out again after restart).
    own = set(ledger.created.values())
    orphans = [p for p, x in candidates if x == own_xid and p not in own]
    candidates = [(p, x) for p, x in candidates if x != own_xid]
    if not candidates:
        return orphans
    plan = spi.prepared(_DECIDE, ["text[]", "text[]"])
    try:
        rows = plan.execute([[p for p, _ in candidates], [str(x) for _, x in candidates]]).rows
    except SPIError:
        # an id from the future (see the module docstring): decide one by one
        rows = []
        for path, xid in candidates:
            try:
                rows += plan.execute([[path], [str(xid)]]).rows
            except SPIError as exc:
                if "in the future" not in exc.message:
                    raise
                rows.append((path, "aborted", False, False))
    return orphans + [path for path, status, visible, referenced in rows
                      if _is_orphan(status, visible, referenced)]


def _tree_size(path: str) -> tuple[int, int]:
    nfiles = nbytes = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                nbytes += os.lstat(os.path.join(dirpath, name)).st_size
                nfiles += 1
            except OSError:
                pass
    return nfiles, nbytes


def collect_orphans() -> VacuumResult:
    """Remove orphan stripe files of this database, and the folders of
    dropped databases, under every known data directory."""
    result = VacuumResult()
    # stripe files replaced by orochi.vacuum(regclass) that no snapshot reads any more
    for path in store.purge_retired(None):
        result.add(files.remove_file(path))
    dboid = files.database_oid()
    own_xid = ledger.transaction_id()  # everything older is decidable below
    databases = {int(r[0]) for r in spi.execute("SELECT oid FROM pg_catalog.pg_database").rows}
    relations = None
    for root in known_data_dirs():
        if not os.path.isdir(root):
            continue
        for entry in os.listdir(root):
            if entry.isdigit() and int(entry) not in databases:
                path = os.path.join(root, entry)
                nfiles, nbytes = _tree_size(path)
                shutil.rmtree(path, ignore_errors=True)
                result.removed_files += nfiles
                result.removed_bytes += nbytes
        dbdir = files.database_dir(root, dboid)
        if not os.path.isdir(dbdir):
            continue
        candidates = []
        table_dirs = []
        for entry in os.listdir(dbdir):
            tdir = os.path.join(dbdir, entry)
            if not entry.isdigit() or not os.path.isdir(tdir):
                continue
            table_dirs.append((int(entry), tdir))
            for name in os.listdir(tdir):
                parsed = files.parse_file_name(name)
                if parsed is not None:
                    candidates.append((os.path.join(tdir, name), parsed.xid))
        for path in _decide(candidates, own_xid):
            try:
                result.add(files.remove_file(path))
            except OSError as exc:
                spi.log("warning", f'could not remove orphan stripe file "{path}": {exc.strerror}')
        if relations is None:
            relations = {int(r[0]) for r in spi.execute("SELECT oid FROM pg_catalog.pg_class").rows}
        for relid, tdir in table_dirs:
            if relid not in relations:
                try:
                    files.remove_dir_if_empty(tdir)
                except OSError as exc:
                    spi.log("warning", f'could not remove folder "{tdir}": {exc.strerror}')
    return result
