"""Fault points: named phases at which an operation can be made to pause, so
that a test kills the server (or lets the operation go on) at a moment it
chooses, not at a moment it races for.

The superuser-only setting ``orochi.fault_injection`` lists the points to
pause at, comma-separated: ``name`` pauses the first time this session
reaches the point, ``name@N`` the N-th time (counted since the setting last
changed). A paused operation waits for a shared advisory lock on the key
pair ``(hashtext('orochi.fault_point'), hashtext(name))``; the test holds
that lock exclusively before it starts the operation, sees the backend wait
for it in ``pg_locks``, then kills the server or releases the lock
(:mod:`orochi_fdw.testing.faults` does this). Waiting for a lock can be
cancelled like any lock wait. With the setting empty (the default) a fault
point costs one call into C.

The points:

=================================  ===========================================
``write_stripe:after_file``        a stripe file is complete (written, fsynced,
                                   linked), its catalog rows not yet inserted
``compact:after_write``            compaction wrote a batch of stripes
``compact:after_move``             compaction deleted the delta rows it moved
``compact:before_commit``          compaction inserted its stripes' rows
``vacuum:after_write``             vacuum rewrote one stripe
``vacuum:before_commit``           vacuum swapped the stripes' rows
``compress:after_read``            chunk compression read the chunk's rows
``compress:after_write``           chunk compression wrote the new stripes
``compress:before_commit``         chunk compression swapped the stripes
``refresh:before_commit``          a continuous aggregate refresh wrote its rows
``tier:before_upload``             tier_chunk locked the chunk's stripes, nothing
                                   uploaded yet
``tier:after_upload``              tier_chunk uploaded and verified the objects,
                                   the catalog not yet changed
``tier:before_commit``             tier_chunk pointed the stripes at the objects
``untier:after_download``          untier_chunk wrote the local files back
``tier:before_fetch``              a scan is about to fetch a cold stripe's
                                   column chunks (ranged requests)
``cdc:after_emit``                 a write to a captured orochi table emitted
                                   its change message, its transaction not
                                   committed
``sketch:flush``                   a sketch aggregate hands the values its state
                                   buffered to Python (a full batch, or before
                                   its final, serialize or combine function)
``vector_index:after_file``        a vector index file is complete (written,
                                   fsynced, linked, logged), its catalog rows
                                   not yet inserted
=================================  ===========================================
"""

from __future__ import annotations

from orochi_fdw.bridge import spi

_LOCK = "SELECT pg_advisory_lock_shared(hashtext('orochi.fault_point'), hashtext($1))"
_UNLOCK = "SELECT pg_advisory_unlock_shared(hashtext('orochi.fault_point'), hashtext($1))"

_setting = ""
_wanted: dict[str, int] = {}
_counts: dict[str, int] = {}


def _parse(setting: str) -> dict[str, int]:
    wanted = {}
    for item in setting.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, nth = item.partition("@")
        try:
            wanted[name.strip()] = max(1, int(nth)) if nth else 1
        except ValueError:
            wanted[name.strip()] = 1
    return wanted


def fault_point(name: str) -> None:
    """Pause here if ``orochi.fault_injection`` names this point (and this is
    the time it names), until the test releases the point's lock."""
    global _setting, _wanted
    setting = spi.fault_injection()
    if not setting:
        return
    if setting != _setting:
        _setting, _wanted = setting, _parse(setting)
        _counts.clear()
    nth = _wanted.get(name)
    if nth is None:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] != nth:
        return
    spi.log("log", f"orochi: fault point {name} reached, waiting")
    spi.execute(_LOCK, [name], types=["text"])
    spi.execute(_UNLOCK, [name], types=["text"])
