"""catalog.snapshots.SnapshotReads: a value serves again only under the
snapshot key it was read under; nothing is kept without a key; the least
recently used go first."""

from __future__ import annotations

from orochi_fdw.catalog.snapshots import SnapshotReads


def test_a_value_serves_only_under_its_snapshot():
    reads = SnapshotReads(2)
    assert reads.put("a", b"s1", None) is None
    assert reads.get("a", b"s1", "missing") is None  # a None read is kept too
    assert reads.put("b", b"s1", [1]) == [1]
    assert reads.get("b", b"s1") == [1]
    assert reads.get("b", b"s2", "missing") == "missing"
    assert reads.get("b", None, "missing") == "missing"
    reads.put("c", None, 3)  # no snapshot key: not kept
    assert reads.get("c", None, "missing") == "missing"


def test_the_least_recently_used_go_first():
    reads = SnapshotReads(2)
    reads.put("a", b"s", 1)
    reads.put("b", b"s", 2)
    assert reads.get("a", b"s") == 1  # "b" is now the least recently used
    reads.put("c", b"s", 3)
    assert [reads.get(k, b"s") for k in "abc"] == [1, None, 3]
