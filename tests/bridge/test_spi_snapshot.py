"""SPI in read-only mode sees the running statement's snapshot: two queries
of one scan agree even when another session commits in between (READ
COMMITTED); without it the second query sees the new row."""

from __future__ import annotations

import threading
import time

import pytest


@pytest.mark.parametrize("read_only", [True, False])
def test_read_only_spi_uses_the_statement_snapshot(db, new_connection, foreign_table, read_only):
    db.execute("CREATE TABLE x (a int)")
    db.execute("INSERT INTO x VALUES (1)")
    foreign_table("probe", "first int, second int", "SnapshotProbeWrapper",
                  target="x", read_only=str(read_only).lower(), pause=1.0)
    other = new_connection()

    def insert_soon() -> None:
        time.sleep(0.4)
        other.execute("INSERT INTO x VALUES (2)")

    thread = threading.Thread(target=insert_soon)
    thread.start()
    first, second = db.execute("SELECT first, second FROM probe").fetchone()
    thread.join()
    assert first == 1
    assert second == (1 if read_only else 2)
