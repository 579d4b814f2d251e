"""Hypertables under concurrent writers: two writers of one new chunk, a
writer rolled back, and drop_chunks against a writer still open."""

from __future__ import annotations

import threading
import time

import pytest


def _setup(db) -> None:
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")


def _in_thread(fn):
    out: list = []

    def run():
        try:
            out.append(fn())
        except Exception as exc:  # reported by the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _waiting(db, pattern: str) -> bool:
    return bool(db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           " AND query LIKE %s", (pattern,)).fetchone()[0])


def _wait_until_blocked(db, pattern: str) -> None:
    deadline = time.monotonic() + 30
    while not _waiting(db, pattern):
        assert time.monotonic() < deadline, "the second session never waited"
        time.sleep(0.02)


@pytest.mark.parametrize("first_commits", [True, False])
def test_two_writers_of_one_new_chunk(db, new_connection, first_commits):
    _setup(db)
    a = new_connection()
    b = new_connection()
    a.execute("BEGIN")
    a.execute("INSERT INTO m VALUES ('2024-05-01 10:00+00', 1)")
    t, out = _in_thread(lambda: b.execute("INSERT INTO m VALUES ('2024-05-01 11:00+00', 2)"))
    _wait_until_blocked(db, "INSERT INTO m%")
    a.execute("COMMIT" if first_commits else "ROLLBACK")
    t.join(30)
    assert not isinstance(out[0], Exception), out
    want = [(1,), (2,)] if first_commits else [(2,)]
    assert db.execute("SELECT v FROM m ORDER BY v").fetchall() == want
    assert db.execute("SELECT count(*) FROM orochi.hypertable_chunks").fetchone() == (1,)


def test_drop_chunks_waits_for_writers(db, new_connection):
    _setup(db)
    db.execute("INSERT INTO m SELECT timestamptz '2024-05-01 00:00+00' + i * interval '1 hour', i"
               " FROM generate_series(0, 71) i")
    a = new_connection()
    b = new_connection()
    a.execute("BEGIN")
    a.execute("INSERT INTO m VALUES ('2024-05-01 10:30+00', 1000)")
    t, out = _in_thread(lambda: b.execute(
        "SELECT orochi.drop_chunks('m', older_than => timestamptz '2024-05-02 00:00+00')").fetchall())
    _wait_until_blocked(db, "SELECT orochi.drop_chunks%")
    a.execute("COMMIT")
    t.join(30)
    assert not isinstance(out[0], Exception), out
    assert len(out[0]) == 1
    # the writer's row went with its chunk
    assert db.execute("SELECT count(*), min(ts) >= '2024-05-02 00:00+00' FROM m").fetchone() == (48, True)
    # a new writer of that time range makes the chunk again
    db.execute("INSERT INTO m VALUES ('2024-05-01 10:30+00', 2000)")
    assert db.execute("SELECT count(*) FROM orochi.hypertable_chunks").fetchone() == (3,)
