"""Moving a chunk's stripes to object storage and back, deleting objects,
and collecting orphan objects.

``tier_chunk`` (in the caller's transaction):

1. take the table's maintenance lock (no compaction, vacuum or compression
   of the table meanwhile) and lock the chunk's stripe rows (a concurrent
   DELETE, which writes the delete bitmap, waits, and vice versa);
2. upload each local stripe file under a new, unique key
   (``<prefix><db>/<table>/<stripe>.<xid>.<random>.stripe``; ``<xid>`` is
   this transaction's id, made durable first as for local files), then
   check the object's size and MD5 (its ETag) against the bytes sent;
3. point the stripe rows at the objects (``tier:<target id>/<key>``) and
   retire the local files (removed once no snapshot can read them, by
   ``orochi.vacuum()``, as for stripes a vacuum replaced).

A rollback or a crash anywhere leaves the catalog as it was (the chunk is
local and complete) and at most objects that no row names: their
uploader's transaction aborted, so ``orochi.vacuum()`` deletes them.

``untier_chunk`` does the reverse: download, check size, MD5 and every
column chunk's and the footer's CRC-32, write a new local file (logged to
the WAL, so standbys get it), point the rows at it and retire the objects.

Deleting an object is a removal of a file for :mod:`orochi_fdw.catalog.files`
(:func:`delete_objects`): retired objects go at the vacuum that removes
retired files, objects of dropped tables at the DROP's commit.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
from dataclasses import dataclass

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.faults import fault_point
from orochi_fdw.catalog import files, store
from orochi_fdw.catalog.ledger import ledger
from orochi_fdw.errors import CorruptDataError, OrochiError
from orochi_fdw.storage import stripe_format as sf
from orochi_fdw.tiering import targets
from orochi_fdw.tiering.targets import is_object_path, object_path, parse_object_path

_KEY_RE = re.compile(r"(?:^|/)(\d+)/(\d+)/(\d+)\.(\d+)\.[0-9a-f]+\.stripe$")


class TierStateError(OrochiError):
    """A chunk already in the state asked for (SQLSTATE 55000)."""

    sqlstate = "55000"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


@dataclass
class MoveResult:
    chunk: str
    stripes: int = 0
    bytes: int = 0


def object_key(target: targets.Target, relid: int, stripe_id: int, xid: int) -> str:
    return (f"{target.key_prefix()}{files.database_oid()}/{int(relid)}/"
            f"{int(stripe_id)}.{int(xid)}.{uuid.uuid4().hex[:16]}.stripe")


def parse_key(key: str) -> tuple[int, int, int, int] | None:
    """(database oid, table oid, stripe id, writer xid) of an object key."""
    m = _KEY_RE.search(key)
    return None if m is None else tuple(int(m.group(i)) for i in range(1, 5))  # type: ignore[return-value]


_LOCK_CHUNK = """
SELECT stripe_id, file_path, file_bytes
  FROM orochi.columnar_stripes
 WHERE chunk_id = $1
 ORDER BY stripe_id
   FOR NO KEY UPDATE
"""


def _chunk_and_rights(name: str):
    from orochi_fdw.columnar.maintenance import lock_table_maintenance
    from orochi_fdw.timeseries.policies import find_chunk
    from orochi_fdw.timeseries.sqlapi import check_owner

    chunk = find_chunk(name)
    check_owner(chunk.relid)
    lock_table_maintenance(chunk.relid)
    rows = spi.prepared(_LOCK_CHUNK, ["bigint"], internal=True).execute([chunk.chunk_id]).rows
    return chunk, [(int(r[0]), r[1], int(r[2])) for r in rows]


def _md5_etag(etag: str | None) -> str | None:
    if not etag:
        return None
    etag = etag.strip('"')
    return etag if re.fullmatch(r"[0-9a-f]{32}", etag) else None


def tier_chunk(name: str, target_name: str, if_not_tiered: bool = True) -> MoveResult | None:
    target = targets.by_name(target_name)
    targets.require_target_rights(target)
    chunk, stripes = _chunk_and_rights(name)
    local = [s for s in stripes if not is_object_path(s[1])]
    if not local:
        if stripes and if_not_tiered:
            spi.log("notice", f'chunk "{chunk.name}" is already in object storage')
            return None
        if not stripes:
            if if_not_tiered:
                spi.log("notice", f'chunk "{chunk.name}" has no stripes to move')
                return None
            raise TierStateError(f'chunk "{chunk.name}" has no stripes to move',
                                 hint="Rows in the delta store are moved once compacted: orochi.compact(table).")
        raise TierStateError(f'chunk "{chunk.name}" is already in object storage')
    client = targets.client(target)
    xid = ledger.writer_transaction_id()
    result = MoveResult(chunk.name)
    fault_point("tier:before_upload")
    moved = []
    for stripe_id, stored, nbytes in local:
        path = files.resolve(stored)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            from orochi_fdw.catalog.errors import StorageIOError
            raise StorageIOError(f'could not read stripe file "{path}": {exc.strerror}') from None
        if len(data) != nbytes:
            raise CorruptDataError(f'stripe file "{path}" has {len(data)} bytes, the catalog says {nbytes}')
        digest = hashlib.md5(data)
        key = object_key(target, chunk.relid, stripe_id, xid)
        try:
            resp = client.put_object(Bucket=target.bucket, Key=key, Body=data,
                                     ContentMD5=base64.b64encode(digest.digest()).decode())
            head = client.head_object(Bucket=target.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - after boto3's retries
            raise targets.describe_error(target, f'upload "{key}"', exc) from None
        etag = _md5_etag(head.get("ETag") or resp.get("ETag"))
        if int(head.get("ContentLength", -1)) != len(data) or (etag is not None and etag != digest.hexdigest()):
            raise CorruptDataError(
                f'object "{key}" in {target.describe()} does not match the stripe file uploaded',
                detail=f"size {head.get('ContentLength')} (sent {len(data)}), ETag {head.get('ETag')} "
                       f"(MD5 sent {digest.hexdigest()})")
        moved.append((stripe_id, path, nbytes, object_path(target.target_id, key)))
        result.stripes += 1
        result.bytes += nbytes
    fault_point("tier:after_upload")
    _repoint_stripes(chunk.relid, moved)
    spi.prepared("UPDATE orochi.hypertable_chunks SET tier_target_id = $2, tiered_at = now(), tiered_bytes = $3"
                 " WHERE chunk_id = $1", ["bigint", "integer", "bigint"], internal=True).execute(
        [chunk.chunk_id, target.target_id, result.bytes])
    fault_point("tier:before_commit")
    return result


def _repoint_stripes(relid: int, moved: list[tuple[int, str, int, str]]) -> None:
    """Point each moved stripe (stripe id, old path, bytes, new catalog path)
    at its new place, and retire the old one at commit."""
    plan = spi.prepared("UPDATE orochi.columnar_stripes SET file_path = $2 WHERE stripe_id = $1",
                        ["bigint", "text"], internal=True)
    for stripe_id, _, _, new_path in moved:
        plan.execute([stripe_id, new_path])
    store.retire_files(relid, [(s, old, b) for s, old, b, _ in moved], ledger.transaction_id())


def untier_chunk(name: str, if_tiered: bool = True) -> MoveResult | None:
    from orochi_fdw.columnar.maintenance import open_table

    chunk, stripes = _chunk_and_rights(name)
    cold = [s for s in stripes if is_object_path(s[1])]
    if not cold:
        if if_tiered:
            spi.log("notice", f'chunk "{chunk.name}" is not in object storage')
            return None
        raise TierStateError(f'chunk "{chunk.name}" is not in object storage')
    files.require_wal("move a chunk out of object storage")
    table = open_table(chunk.relid)
    directory = files.ensure_table_dir(table._data_dir(), chunk.relid)
    xid = ledger.writer_transaction_id()
    result = MoveResult(chunk.name)
    moved = []
    for stripe_id, uri, nbytes in cold:
        target_id, key = parse_object_path(uri)
        target = targets.by_id(target_id)
        try:
            resp = targets.client(target).get_object(Bucket=target.bucket, Key=key)
            data = resp["Body"].read()
        except Exception as exc:  # noqa: BLE001 - after boto3's retries
            raise targets.describe_error(target, f'download "{key}"', exc) from None
        verify_stripe_bytes(uri, data, nbytes, _md5_etag(resp.get("ETag")))
        path = os.path.join(directory, files.stripe_file_name(stripe_id, xid))
        ledger.file_created(stripe_id, path)
        _write_file(path, data)
        files.log_new_file(path)
        moved.append((stripe_id, uri, nbytes, path))
        result.stripes += 1
        result.bytes += nbytes
    fault_point("untier:after_download")
    _repoint_stripes(chunk.relid, [(s, u, b, files.catalog_path(p)) for s, u, b, p in moved])
    spi.prepared("UPDATE orochi.hypertable_chunks SET tiered_at = NULL WHERE chunk_id = $1",
                 ["bigint"], internal=True).execute([chunk.chunk_id])
    return result


def verify_stripe_bytes(where: str, data: bytes, nbytes: int, md5: str | None) -> None:
    """A downloaded stripe is the one uploaded: its size, its MD5 (when the
    store gave one), the footer's and every column chunk's CRC-32.

    Raises:
        CorruptDataError: naming what differs.
    """
    if len(data) != nbytes:
        raise CorruptDataError(f"{where}: object has {len(data)} bytes, the catalog says {nbytes}")
    if md5 is not None and hashlib.md5(data).hexdigest() != md5:
        raise CorruptDataError(f"{where}: object's MD5 differs from its ETag")
    size = len(data)
    flen, fcrc, *_rest, tmagic = sf.TRAILER.unpack(data[-sf.TRAILER.size:])
    if data[:8] != sf.MAGIC or tmagic != sf.MAGIC:
        raise CorruptDataError(f"{where}: not a stripe file")
    footer_start = size - sf.TRAILER.size - flen
    if footer_start < sf.HEADER.size:
        raise CorruptDataError(f"{where}: footer length {flen} out of bounds")
    footer = data[footer_start:footer_start + flen]
    if sf.crc32(footer) != fcrc:
        raise CorruptDataError(f"{where}: footer checksum mismatch")
    meta = sf._parse_footer(footer, where, size, footer_start)
    for group in meta.chunks:
        for m in group:
            if sf.crc32(data[m.offset:m.offset + m.length]) != m.crc32:
                raise CorruptDataError(f"{where}: checksum mismatch in column {m.column!r}, "
                                       f"chunk group {m.chunk_group}")


def _write_file(path: str, data: bytes) -> None:
    """Write a complete file under its final name: temporary file, fsync,
    link into place (never replacing one), fsync of the folder."""
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".{base}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    sf._fsync_dir(directory)


# ---------------------------------------------------------------- deleting objects

_known_targets: dict[int, targets.Target] = {}


def _target_for(target_id: int) -> targets.Target | None:
    try:
        t = targets.by_id(target_id)
        _known_targets[target_id] = t
        return t
    except Exception:  # noqa: BLE001 - outside a transaction (commit hooks): what this backend knows
        return _known_targets.get(target_id)


def remember_targets(paths) -> None:
    """Look up (while SPI works) the targets of objects to be deleted later
    in a commit hook."""
    for p in paths:
        if is_object_path(p):
            _target_for(parse_object_path(p)[0])


def delete_objects(paths: list[str]) -> list[tuple[str, int | OSError]]:
    """Delete objects named as the catalog names them: (path, bytes freed or
    the error) per object."""
    out: list[tuple[str, int | OSError]] = []
    for p in paths:
        target_id, key = parse_object_path(p)
        target = _known_targets.get(target_id) or _target_for(target_id)
        if target is None:
            out.append((p, OSError(f"storage target {target_id} is unknown")))
            continue
        c = targets.client(target)
        try:
            try:
                size = int(c.head_object(Bucket=target.bucket, Key=key)["ContentLength"])
            except Exception as exc:  # noqa: BLE001
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in ("404", "NoSuchKey", "NotFound"):
                    out.append((p, 0))
                    continue
                raise
            c.delete_object(Bucket=target.bucket, Key=key)
            out.append((p, size))
        except Exception as exc:  # noqa: BLE001
            out.append((p, OSError(str(targets.describe_error(target, f'delete "{key}"', exc)))))
    return out


# ---------------------------------------------------------------- orphans

def collect_orphan_objects(own_xid: int) -> tuple[int, int]:
    """Delete the objects of this database that no catalog row names and
    whose uploader has ended (the rule of :mod:`orochi_fdw.catalog.vacuum`);
    returns (objects, bytes)."""
    from orochi_fdw.catalog.vacuum import _decide

    removed = freed = 0
    dboid = files.database_oid()
    for target in targets.all_targets():
        _known_targets[target.target_id] = target
        c = targets.client(target)
        candidates = []
        try:
            paginator = c.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=target.bucket, Prefix=f"{target.key_prefix()}{dboid}/"):
                for obj in page.get("Contents", []):
                    parsed = parse_key(obj["Key"])
                    if parsed is not None and parsed[0] == dboid:
                        candidates.append((object_path(target.target_id, obj["Key"]), parsed[3]))
        except Exception as exc:  # noqa: BLE001 - one unreachable target must not stop the vacuum
            spi.log("warning", str(targets.describe_error(target, "list objects", exc)))
            continue
        if not candidates:
            continue
        for path, result in delete_objects(_decide(candidates, own_xid)):
            if isinstance(result, OSError):
                spi.log("warning", f'could not delete orphan object "{path}": {result}')
            else:
                removed += 1
                freed += result
    return removed, freed
