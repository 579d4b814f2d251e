"""Hypertables: orochi columnar tables whose rows are cut into chunks by a
time column (catalog ``orochi.hypertables``, sql/50_hypertables.sql)."""

from __future__ import annotations

from dataclasses import dataclass

from orochi_fdw.bridge import spi


@dataclass(frozen=True)
class Hypertable:
    """One row of ``orochi.hypertables``.

    ``time_type`` is the regtype's text (``timestamp with time zone``,
    ``timestamp without time zone``, ``date``, ``smallint``, ``integer``,
    ``bigint``); ``chunk_interval`` is in time keys
    (:mod:`~orochi_fdw.timeseries.timekeys`).
    """

    relid: int
    time_column: str
    time_attnum: int
    time_type: str
    chunk_interval: int
    track_invalidations: bool


_GET = """
SELECT relid::oid, time_column::text, time_attnum, time_type::text, chunk_interval, track_invalidations
  FROM orochi.hypertables
 WHERE relid = $1
"""


# Writers hold this lock shared until they end; drop_chunks takes it
# exclusively, so it waits for open writers (and drops what they wrote) and
# no writer adds rows to a chunk being dropped.
_WRITE_LOCK = "pg_advisory_xact_lock_shared(hashtext('orochi.hypertable_write'), relid::int)"
_DROP_LOCK = "SELECT pg_advisory_xact_lock(hashtext('orochi.hypertable_write'), $1::oid::int)"


def get_for_write(relid: int) -> Hypertable | None:
    """:func:`get` for a statement that writes into the table: a hypertable
    is then locked against drop_chunks until the transaction ends."""
    rows = spi.prepared(_GET.replace("SELECT relid::oid,", f"SELECT {_WRITE_LOCK}, relid::oid,"), ["oid"], internal=True).execute(
        [int(relid)]).rows
    if not rows:
        return None
    r = rows[0][1:]
    return Hypertable(int(r[0]), r[1], int(r[2]), r[3], int(r[4]), bool(r[5]))


_write_lock_key: int | None = None


def write_lock_key() -> int:
    """The first key of the writers' advisory lock (the second is the
    table's oid as int4), read once per backend."""
    global _write_lock_key
    if _write_lock_key is None:
        _write_lock_key = int(spi.execute("SELECT hashtext('orochi.hypertable_write')", internal=True).scalar())
    return _write_lock_key


def lock_for_drop(relid: int) -> None:
    """Wait for the open writers of a hypertable and keep new ones out until
    the transaction ends (drop_chunks)."""
    spi.prepared(_DROP_LOCK, ["oid"], internal=True).execute([int(relid)])


def get(relid: int, read_only: bool = False) -> Hypertable | None:
    """The hypertable ``relid``, or None if it is not one, read through SPI
    in the current transaction.

    Args:
        relid: the foreign table's oid.
        read_only: read under the running statement's snapshot (scans) rather
            than a new one.

    Returns:
        The catalog row as a :class:`Hypertable`, or None.
    """
    rows = spi.prepared(_GET, ["oid"], internal=True).execute([int(relid)], read_only=read_only).rows
    if not rows:
        return None
    r = rows[0]
    return Hypertable(int(r[0]), r[1], int(r[2]), r[3], int(r[4]), bool(r[5]))
