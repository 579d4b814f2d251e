"""Orphan stripe files and their collection (``orochi.vacuum()``).

The decision rests on two facts the writers guarantee:

1. A file is named after the top-level transaction that writes it (``W``,
   its id ``X``), and ``X`` is made durable (a WAL record carrying it is
   flushed) before the file is created
   (:meth:`~orochi_fdw.catalog.ledger.FileLedger.writer_transaction_id`).
   After a crash recovery moves the next transaction id past ``X``, so ``X``
   is never handed out again: the status of ``X`` is the status of ``W``
   alone (in progress, committed, or aborted; a crash counts as aborted).
2. Only ``W`` inserts the catalog rows that name its files (stripe rows);
   another transaction may later delete such a row, either for good (DROP,
   TRUNCATE, which remove the file when they commit) or by moving the file
   to ``orochi.columnar_retired_files`` in the same statement (vacuum of a
   table, drop_chunks, compression), which names it too until no snapshot
   can read it.

Vacuum takes a snapshot ``S`` and, for each file it lists, reads under
``S`` whether a row names it, and ``X``'s status and visibility in ``S``.
It removes the file only if no row names it in ``S`` and

- ``X`` aborted: ``W`` never commits, so no row naming the file is ever
  visible to anyone; or
- ``X`` committed and ``S`` sees that commit: ``S`` sees every row ``W``
  inserted and every later change to them that committed before ``S``; no
  row names the file, so its row was rolled back to a savepoint or deleted
  for good, and the file can never be read again.

It keeps every other file: ``W`` in progress (running or prepared: its rows
may still commit), or committed after ``S`` was taken (its rows exist but
``S`` cannot see them). So a live file is never removed, whatever runs
concurrently, and an orphan goes at the first vacuum after its writer ended.
Files a writer creates after vacuum listed the folder are not looked at.

Files written before ids were made durable may carry an id that a crash
lost: such an id may be beyond any id handed out yet (an orphan), or be this
vacuum's own id with the file not its own (an orphan too). Folders of
databases that no longer exist are removed whole.
"""

from __future__ import annotations

import os
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
    """Every data directory that may hold this database's stripe files and
    that Orochi owns (:func:`~orochi_fdw.catalog.files.owns_data_dir`): the
    default one, each orochi server's ``data_dir``, and those the catalog's
    file paths point into."""
    dirs = {os.path.normpath(files.default_data_dir())}
    for (value,) in spi.execute(_SERVER_DATA_DIRS, internal=True).rows:
        if value and os.path.isabs(value):
            dirs.add(os.path.normpath(value))
    dirs |= store.data_dirs_in_use()
    return sorted(d for d in dirs if files.owns_data_dir(d))


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
    # never reached the WAL is handed out again after restart; only files
    # written before ids were made durable can carry one).
    own = set(ledger.created.values())
    orphans = [p for p, x in candidates if x == own_xid and p not in own]
    candidates = [(p, x) for p, x in candidates if x != own_xid]
    if not candidates:
        return orphans
    plan = spi.prepared(_DECIDE, ["text[]", "text[]"], internal=True)
    # the catalog names files relative to the database's folder (files.catalog_path)
    named = {files.catalog_path(p): p for p, _ in candidates}
    try:
        rows = plan.execute([list(named), [str(x) for _, x in candidates]]).rows
    except SPIError:
        # an id from the future (see the module docstring): decide one by one
        rows = []
        for name, (path, xid) in zip(named, candidates):
            try:
                rows += plan.execute([[name], [str(xid)]]).rows
            except SPIError as exc:
                if "in the future" not in exc.message:
                    raise
                rows.append((name, "aborted", False, False))
    return orphans + [named[name] for name, status, visible, referenced in rows
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
    for path, freed in files.remove_files(store.purge_retired(None)):
        if not isinstance(freed, OSError):
            result.add(freed)
    dboid = files.database_oid()
    own_xid = ledger.transaction_id()  # everything older is decidable below
    databases = {int(r[0]) for r in spi.execute("SELECT oid FROM pg_catalog.pg_database", internal=True).rows}
    relations = None
    for root in known_data_dirs():
        if not os.path.isdir(root):
            continue
        for entry in os.listdir(root):
            if entry.isdigit() and int(entry) not in databases:
                path = os.path.join(root, entry)
                nfiles, nbytes = _tree_size(path)
                files.remove_tree(path)
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
        for path, freed in files.remove_files(_decide(candidates, own_xid)):
            if isinstance(freed, OSError):
                spi.log("warning", f'could not remove orphan stripe file "{path}": {freed.strerror}')
            else:
                result.add(freed)
        if relations is None:
            relations = {int(r[0]) for r in spi.execute("SELECT oid FROM pg_catalog.pg_class", internal=True).rows}
        for relid, tdir in table_dirs:
            if relid not in relations:
                try:
                    files.remove_dir_if_empty(tdir)
                except OSError as exc:
                    spi.log("warning", f'could not remove folder "{tdir}": {exc.strerror}')
    # objects of storage targets (tiered chunks): the same rule (orochi_fdw.tiering.move)
    from orochi_fdw.tiering.move import collect_orphan_objects

    nobjects, nbytes = collect_orphan_objects(own_xid)
    result.removed_files += nobjects
    result.removed_bytes += nbytes
    return result
