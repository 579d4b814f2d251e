"""The Raft-replicated state of the HA group (pysyncobj).

Every change goes through the Raft log (``@replicated`` methods, applied in
log order on every member and kept in the journal on disk):

- ``members``: member id -> its node group, PostgreSQL address and REST API;
- ``groups``: node group -> ``primary`` (member id), ``generation`` (bumped
  by every failover), ``down`` (the generation whose primary's sidecar saw
  its postmaster dead), ``since`` (wall time of the last change);
- ``history``: the failovers, newest last (at most 100);
- ``admitted``: member id -> Raft address of the members added at run time
  (``orochi-sidecar --once member-add``), ``retired``: member id -> when it
  was removed and its Raft address (its sidecar may not register again
  until it is added back).

Raft membership itself (which addresses take part in elections and
commits) is pysyncobj's, changed with ``addNodeToCluster`` /
``removeNodeFromCluster``: entries of the same log, so the journal keeps
them too.

pysyncobj numbers replicated methods by their sorted names, and the journal
holds the numbers: a new replicated method must sort after every existing
one (or a journal written before it would replay the wrong methods).

A lease is not a wall-clock time in the state: every member notes, on its
own monotonic clock, when it applied the primary's last renewal
(:attr:`HaState.renewed_at`, not replicated).  The leader lets a lease
expire ``lease_ttl`` after the renewal it applied last; the primary's
sidecar fences its PostgreSQL ``lease_ttl / 2`` after the renewal it *sent*
last that was committed.  A renewal is applied after it is sent, and a new
leader starts every lease afresh, so the primary fences before any leader
lets its lease expire.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.transport import TCPTransport

#: test-only: while the file this variable names exists, the member drops
#: every Raft message it sends or receives (a network partition)
PARTITION_ENV = "OROCHI_HA_FAULT_PARTITION"

_HISTORY = 100


class HaState(SyncObjConsumer):
    """The replicated state; see the module docstring."""

    def __init__(self) -> None:
        # attributes set before SyncObjConsumer.__init__ are not replicated
        self.renewed_at: dict[str, float] = {}
        self.on_change: Callable[[str, str], None] | None = None
        super().__init__()
        self.members: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.admitted: dict[str, str] = {}
        self.retired: dict[str, dict[str, Any]] = {}

    def _changed(self, kind: str, group: str) -> None:
        hook = self.on_change
        if hook is not None:
            hook(kind, group)

    @replicated
    def register(self, member: str, info: dict[str, Any]) -> bool:
        if member in self.retired:
            return False  # removed from the group; its sidecar should have stopped
        self.members[member] = dict(info)
        self._changed("register", info.get("group", ""))
        return True

    @replicated
    def claim_primary(self, group: str, member: str, at: float) -> bool:
        """Make ``member`` the group's first primary, unless it has one."""
        current = self.groups.get(group)
        if current is not None and current.get("primary"):
            return current["primary"] == member
        self.groups[group] = {"primary": member, "generation": 1, "down": 0, "since": at}
        self.renewed_at[group] = time.monotonic()
        self._changed("claim", group)
        return True

    @replicated
    def renew(self, group: str, member: str, generation: int) -> bool:
        """Renew the lease; False when ``member`` is not that generation's primary."""
        g = self.groups.get(group)
        if g is None or g["primary"] != member or g["generation"] != generation:
            return False
        if g.get("down") == generation:
            g["down"] = 0  # its postmaster is back (restarted before any failover)
        self.renewed_at[group] = time.monotonic()
        return True

    @replicated
    def report_down(self, group: str, member: str, generation: int) -> bool:
        """The primary's sidecar saw its postmaster dead."""
        g = self.groups.get(group)
        if g is None or g["primary"] != member or g["generation"] != generation:
            return False
        g["down"] = generation
        self._changed("down", group)
        return True

    @replicated
    def failover(self, group: str, generation: int, new_primary: str, reason: str, at: float) -> bool:
        """Compare-and-set: the group's primary becomes ``new_primary`` if the
        group is still at ``generation``."""
        g = self.groups.get(group)
        if g is None or g["generation"] != generation:
            return False
        old = g["primary"]
        g.update(primary=new_primary, generation=generation + 1, down=0, since=at)
        self.history.append({"group": group, "generation": generation + 1, "old_primary": old,
                             "new_primary": new_primary, "reason": reason, "at": at})
        del self.history[:-_HISTORY]
        self.renewed_at[group] = time.monotonic()
        self._changed("failover", group)
        return True

    @replicated
    def retire_member(self, member: str, at: float) -> str | None:
        """Forget ``member`` (before its Raft node is removed); None when
        done, else why not (a group's primary is never retired)."""
        for group, g in self.groups.items():
            if g.get("primary") == member:
                return f"member {member!r} is the primary of node group {group!r}"
        info = self.members.pop(member, None)
        address = (info or {}).get("raft") or self.admitted.pop(member, None) or self.raft_address(member)
        self.admitted.pop(member, None)
        self.retired[member] = {"at": at, "raft": address}
        self._changed("retire", (info or {}).get("group", ""))
        return None

    @replicated
    def welcome_member(self, member: str, address: str) -> bool:
        """Note a member added at run time (before its Raft node is added)."""
        self.retired.pop(member, None)
        self.admitted[member] = address
        return True

    def raft_address(self, member: str) -> str | None:
        """The Raft address the state knows for ``member``."""
        info = self.members.get(member)
        if info:
            return info.get("raft")
        return self.admitted.get(member) or (self.retired.get(member) or {}).get("raft")

    def snapshot(self) -> dict[str, Any]:
        """A copy of the replicated state (JSON-serializable)."""
        return {"members": {k: dict(v) for k, v in self.members.items()},
                "groups": {k: dict(v) for k, v in self.groups.items()},
                "history": [dict(h) for h in self.history]}


class PartitionableTransport(TCPTransport):
    """pysyncobj's TCP transport, which drops every message while the file
    :data:`PARTITION_ENV` names exists (test-only)."""

    _checked_at = 0.0
    _partitioned = False

    def _cut(self) -> bool:
        path = os.environ.get(PARTITION_ENV)
        if not path:
            return False
        now = time.monotonic()
        if now - self._checked_at > 0.02:
            self._partitioned = os.path.exists(path)
            self._checked_at = now
        return self._partitioned

    def send(self, node, message):  # noqa: ANN001 - pysyncobj's signature
        if self._cut():
            return False
        return super().send(node, message)

    def _onMessageReceived(self, node, message):  # noqa: ANN001, N802
        if self._cut():
            return
        super()._onMessageReceived(node, message)


def make_raft(self_address: str, partner_addresses: list[str], state: HaState, journal_dir: str, *,
              min_timeout: float, max_timeout: float, on_state_changed: Callable | None = None,
              password: str | None = None) -> SyncObj:
    """The member's Raft node, its journal and snapshot in ``journal_dir``.

    With ``password`` every message between members (and from pysyncobj's
    utility clients) is encrypted and authenticated with a key derived from
    it; a peer without it cannot take part or send membership commands."""
    os.makedirs(journal_dir, mode=0o700, exist_ok=True)
    conf = SyncObjConf(
        journalFile=os.path.join(journal_dir, "raft.journal"),
        fullDumpFile=os.path.join(journal_dir, "raft.dump"),
        dynamicMembershipChange=True,
        useFork=False,                 # the sidecar has threads and connections
        raftMinTimeout=min_timeout,
        raftMaxTimeout=max_timeout,
        appendEntriesPeriod=min(0.05, min_timeout / 4),
        connectionRetryTime=0.3,
        connectionTimeout=max(1.0, max_timeout),
        leaderFallbackTimeout=max(2.0, 2 * max_timeout),
        logCompactionMinTime=60,
        logCompactionMinEntries=2000,
        onStateChanged=on_state_changed,
        password=password,
    )
    return SyncObj(self_address, partner_addresses, conf=conf, consumers=[state],
                   transportClass=PartitionableTransport)


RAFT_STATES = {0: "follower", 1: "candidate", 2: "leader"}


def wait_result(method: Callable, *args: Any, timeout: float) -> tuple[Any, Any]:
    """Call a replicated method and wait for its result: (result, error) where
    error is None on success, else pysyncobj's failure reason (or 'timeout')."""
    done = threading.Event()
    box: list[Any] = [None, "timeout"]

    def callback(result: Any, error: Any) -> None:
        box[0], box[1] = result, (None if error == 0 else error)
        done.set()

    method(*args, callback=callback)
    done.wait(timeout)
    return box[0], box[1]
