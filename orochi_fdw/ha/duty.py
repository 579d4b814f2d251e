"""The ``ha`` duty: this member's part of the Raft group, and its loop.

A thread of its own (the daemon's loop may be busy with a long job) looks,
every ``ha.loop_interval`` seconds or as soon as the Raft state changes, at
the state and at the local PostgreSQL:

- as the primary of its node group: renews the lease; reports its
  postmaster dead (never restarts it: the leader fails over); fences its
  PostgreSQL (read-only, sessions ended) once ``lease_ttl / 2`` passed
  without a committed renewal, and lifts the fence when renewals succeed
  again; promotes its PostgreSQL if the leader chose it and has not yet;
- as a standby: follows the group's primary (``primary_conninfo`` with its
  member id as ``application_name``); a PostgreSQL that is not in recovery
  while another member is primary is fenced at once and rejoins as a
  standby with pg_rewind; a stopped standby is started;
- every member keeps ``synchronous_standby_names`` at
  ``ANY 1 (<the group's other members>)`` (``ha.synchronous_mode = quorum``);
- as the Raft leader: fails a group over when its primary was reported dead
  or its lease expired: the old primary, if it answers, must be fenced
  (a writable primary whose sidecar is silent is left alone: no failover
  of a healthy primary), the standby with the most WAL received is
  recorded as primary with the next generation (compare-and-set in the
  Raft log), then promoted (``pg_promote``), and the coordinator's
  ``orochi.dist_node`` row of a worker group is pointed at it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from orochi_fdw.ha import postgres as pg
from orochi_fdw.ha.settings import journal_path, parse_peers, read_raft_password
from orochi_fdw.ha.state import RAFT_STATES, HaState, make_raft, wait_result
from orochi_fdw.sidecar.config import ConfigError
from orochi_fdw.sidecar.duties import DaemonContext, Duty

logger = logging.getLogger("orochi.sidecar.ha")

#: the file in the data directory that tells the backends where the sidecar's REST API is
SIDECAR_FILE = "orochi_sidecar.json"


_FAIL_REASONS = {1: "queue full", 2: "no Raft leader", 3: "discarded", 4: "not the leader",
                 5: "the leader changed", 6: "denied (another membership change is not committed yet)",
                 7: "unknown outcome"}


def _fail_reason(error: Any) -> str:
    return _FAIL_REASONS.get(error, str(error))


class HaDuty(Duty):
    """The member's Raft node and its HA loop (see the module docstring)."""

    name = "ha"

    def __init__(self, context: DaemonContext):
        super().__init__(context)
        cfg = context.config
        self.cfg = cfg
        self.member = cfg["ha.member_id"]
        self.group = cfg["ha.node_group"]
        self.peers = parse_peers(cfg["ha.peers"])
        self.dsn = cfg["dsn"]
        params = conninfo_to_dict(self.dsn)
        self.pg_host = params.get("host") or "127.0.0.1"
        self.pg_port = int(params.get("port") or 5432)
        self.ttl = cfg["ha.lease_ttl"]
        self.fence_after = self.ttl / 2
        self.renew_interval = cfg["ha.renew_interval"]
        self.server = pg.LocalServer(cfg["ha.data_dir"], cfg["ha.pg_bindir"], cfg["ha.pg_os_user"],
                                     cfg["ha.pg_log"])
        self.fresh = not os.path.exists(journal_path(cfg["ha.journal_dir"]))

        metrics = context.metrics
        self.m_term = metrics.gauge("orochi_raft_term", "The Raft term this member is in.")
        self.m_leader = metrics.gauge("orochi_raft_is_leader", "1 when this member is the Raft leader.")
        self.m_failovers = metrics.counter("orochi_failovers_total",
                                           "Failovers this member carried out as the Raft leader.", ["group"])
        self.m_fences = metrics.counter("orochi_ha_fences_total", "Times this member fenced its PostgreSQL.")
        self.m_generation = metrics.gauge("orochi_ha_generation", "The generation of each node group.",
                                          ["group"])
        self.m_lag = metrics.gauge("orochi_replication_lag_bytes",
                                   "Bytes of WAL a standby has not replayed yet (on the primary).", ["standby"])
        self.m_is_primary = metrics.gauge("orochi_ha_is_primary", "1 when this member is its group's primary.")

        self.wake = threading.Event()
        self.state = HaState()
        self.state.on_change = lambda kind, group: self.wake.set()
        me = self.peers[self.member]
        others = [p.address for m, p in self.peers.items() if m != self.member]
        self.raft = make_raft(me.address, others, self.state, cfg["ha.journal_dir"],
                              min_timeout=cfg["ha.raft_min_timeout"], max_timeout=cfg["ha.raft_max_timeout"],
                              on_state_changed=lambda old, new: self.wake.set(),
                              password=read_raft_password(cfg["ha.raft_password_file"]))

        self._lock = threading.Lock()
        self._local: psycopg.Connection | None = None
        self._renew_sent = 0.0
        self._renew_inflight = False
        self._renew_ok = 0.0
        self._primary_gen = 0
        self._fenced = False
        self._down_reported = 0
        self._was_leader = False
        self._next_start = 0.0
        self._next_rejoin = 0.0
        self._next_sync = 0.0
        self._next_claim = 0.0
        self._next_register = 0.0
        self._next_coordinator_check = 0.0
        self._next_probe: dict[str, float] = {}
        self._last_note: dict[str, str] = {}
        self._registered: dict[str, Any] | None = None
        self.pg_up = False
        self.status_line = "starting"
        self._thread = threading.Thread(target=self._loop, name="ha-loop", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the daemon's side

    def run_cycle(self) -> str:
        self.context.postgres_up[self.name] = self.pg_up
        self.schedule_in(1.0)
        return self.status_line

    def close(self) -> None:
        self.context.stopping.set()
        self.wake.set()
        self._thread.join(10)
        try:
            self.raft.destroy()
        except Exception:  # noqa: BLE001 - shutting down
            pass
        self._close_local()

    # ------------------------------------------------------------------ helpers

    def _note(self, key: str, message: str, level: int = logging.INFO) -> None:
        """Log ``message`` when it differs from the last one under ``key``."""
        if self._last_note.get(key) != message:
            self._last_note[key] = message
            logger.log(level, "%s", message)

    def _close_local(self) -> None:
        if self._local is not None:
            try:
                self._local.close()
            except Exception:  # noqa: BLE001 - a broken connection
                pass
            self._local = None

    def _local_status(self) -> dict[str, Any] | None:
        try:
            if self._local is None or self._local.closed:
                self._local = pg.connect(self.dsn, timeout=2)
            return pg.status(self._local)
        except psycopg.Error as exc:
            self._close_local()
            self._note("local", f"postgres unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}",
                       logging.WARNING)
            return None

    def conninfo(self, member: str, **extra: Any) -> str | None:
        info = self.state.members.get(member)
        if info is None:
            return None
        return pg.member_conninfo(self.dsn, info["pg_host"], info["pg_port"], **extra)

    def _probe(self, member: str) -> dict[str, Any] | None:
        conninfo = self.conninfo(member)
        if conninfo is None:
            return None
        try:
            with pg.connect(conninfo, timeout=1) as conn:
                return pg.status(conn)
        except psycopg.Error:
            return None

    def _group_members(self, group: str) -> list[str]:
        return sorted(m for m, info in self.state.members.items() if info.get("group") == group)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        interval = self.cfg["ha.loop_interval"]
        while not self.context.stopping.is_set():
            self.wake.clear()
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the loop must go on
                logger.exception("ha loop")
            self.wake.wait(interval)

    def _tick(self) -> None:
        now = time.monotonic()
        leader = self.raft._getLeader()
        is_leader = self.raft._isLeader()
        self.m_term.set(self.raft.raftCurrentTerm)
        self.m_leader.set(1 if is_leader else 0)
        self._register(now, leader)
        alive = self.server.postmaster_alive()
        st = self._local_status() if alive else None
        self.pg_up = st is not None
        self._write_sidecar_file()
        g = self.state.groups.get(self.group)
        if g is None:
            self.m_is_primary.set(0)
            self._claim(now, leader, st)
            self.status_line = f"ha: group {self.group} has no primary yet (raft leader {leader})"
        elif g["primary"] == self.member:
            self.m_is_primary.set(1)
            self._as_primary(now, g, alive, st)
        else:
            self.m_is_primary.set(0)
            self._as_standby(now, g, alive, st)
        if st is not None and now >= self._next_sync:
            self._next_sync = now + 1.0
            self._ensure_sync_names(st)
        for group, info in self.state.groups.items():
            self.m_generation.set(info["generation"], group=group)
        if is_leader:
            if not self._was_leader:
                # a new leader gives every lease a full term: it cannot know
                # when the last renewal was sent
                for group in self.state.groups:
                    self.state.renewed_at[group] = now
                logger.info("%s is the Raft leader (term %d)", self.member, self.raft.raftCurrentTerm)
            self._lead(now)
        self._was_leader = is_leader

    def _register(self, now: float, leader: Any) -> None:
        info = {"group": self.group, "pg_host": self.pg_host, "pg_port": self.pg_port,
                "raft": self.peers[self.member].address, "api": self.context.api_url}
        if leader is None or self.state.members.get(self.member) == info or now < self._next_register:
            return
        self._next_register = now + 1.0
        self.state.register(self.member, info, callback=lambda r, e: self.wake.set())

    def _claim(self, now: float, leader: Any, st: dict[str, Any] | None) -> None:
        if (self.cfg["ha.initial_role"] != "primary" or leader is None or st is None or st["in_recovery"]
                or now < self._next_claim or self.member not in self.state.members):
            return
        self._next_claim = now + 1.0
        self.state.claim_primary(self.group, self.member, time.time(), callback=lambda r, e: self.wake.set())

    def _write_sidecar_file(self) -> None:
        if not self.context.api_url:
            return
        body = {"api": self.context.api_url, "member_id": self.member, "node_group": self.group}
        path = os.path.join(self.server.data_dir, SIDECAR_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                if json.load(f) == body:
                    return
        except (OSError, ValueError):
            pass
        try:
            tmp = path + ".tmp"
            self.server._write(tmp, json.dumps(body))
            os.replace(tmp, path)
        except OSError as exc:
            self._note("sidecar-file", f"cannot write {path}: {exc.strerror}", logging.WARNING)

    # ------------------------------------------------------------------ primary

    def _renewed(self, result: Any, error: Any, sent: float) -> None:
        with self._lock:
            self._renew_inflight = False
            if error == 0 and result:
                self._renew_ok = max(self._renew_ok, sent)
        if error == 0 and not result:
            self.wake.set()

    def _as_primary(self, now: float, g: dict[str, Any], alive: bool, st: dict[str, Any] | None) -> None:
        gen = g["generation"]
        if self._primary_gen != gen:
            # newly primary: a short grace for the first renewal (the leader
            # started this lease when it applied the failover, before now)
            self._primary_gen = gen
            self._renew_ok = max(self._renew_ok, now - self.fence_after + 2 * self.renew_interval)
            self._fenced = False
        if not alive:
            if self._down_reported != gen:
                self._down_reported = gen
                logger.warning("the postmaster of primary %s is dead; reporting it to the Raft group", self.member)
                self.state.report_down(self.group, self.member, gen, callback=lambda r, e: None)
            self.status_line = f"ha: primary {self.member} (generation {gen}): postgres down"
            return
        with self._lock:
            stale = self._renew_inflight and now - self._renew_sent > 4 * self.renew_interval
            if (not self._renew_inflight or stale) and now - self._renew_sent >= self.renew_interval:
                self._renew_inflight = True
                self._renew_sent = now
                sent = now
                self.state.renew(self.group, self.member, gen,
                                 callback=lambda r, e, s=sent: self._renewed(r, e, s))
            lease_ok = now - self._renew_ok < self.fence_after
        if not lease_ok:
            if not self._fenced:
                mode = self.cfg["ha.fence_mode"]
                logger.warning("primary %s: no lease renewal committed for %.1fs; fencing its PostgreSQL "
                               "(%s)", self.member, now - self._renew_ok, mode)
                try:
                    if mode == "stop":
                        self.server.stop("immediate")
                        self._down_reported = gen  # stopped on purpose: no report, the lease expires
                    else:
                        pg.fence(self.dsn)
                    self._fenced = True
                    self.m_fences.inc()
                except (psycopg.Error, RuntimeError) as exc:
                    logger.error("fencing failed: %s", exc)
            self.status_line = f"ha: primary {self.member} (generation {gen}): fenced, lease not renewed"
            return
        if st is not None and st["in_recovery"]:
            logger.info("%s was chosen as primary (generation %d); promoting", self.member, gen)
            try:
                pg.promote(self.dsn)
            except psycopg.Error as exc:
                logger.warning("promotion: %s", exc)
            return
        if st is not None and (self._fenced or st["read_only"]):
            logger.info("primary %s: lease renewed; lifting the fence", self.member)
            try:
                pg.unfence(self.dsn)
                self._fenced = False
            except psycopg.Error as exc:
                logger.error("lifting the fence failed: %s", exc)
        self.status_line = f"ha: primary {self.member} (generation {gen})"

    # ------------------------------------------------------------------ standby

    def _as_standby(self, now: float, g: dict[str, Any], alive: bool, st: dict[str, Any] | None) -> None:
        primary = g["primary"]
        self._primary_gen = 0
        source = self.conninfo(primary)
        if source is None:
            self.status_line = f"ha: standby {self.member}: primary {primary} not registered yet"
            return
        follow = self.conninfo(primary, application_name=self.member)
        if alive and st is None:
            self.status_line = f"ha: standby {self.member}: postgres not answering"
            return
        if alive and not st["in_recovery"]:
            # a former primary: it must not take writes while another member is primary
            if not st["read_only"]:
                logger.warning("%s is not in recovery but %s is the primary (generation %d); fencing",
                               self.member, primary, g["generation"])
                try:
                    pg.fence(self.dsn)
                    self.m_fences.inc()
                except psycopg.Error as exc:
                    logger.error("fencing failed: %s", exc)
            self._rejoin(now, primary, source, follow)
            return
        if not alive:
            if self.server.is_standby():
                if now >= self._next_start:
                    self._next_start = now + 5.0
                    logger.info("starting standby %s", self.member)
                    try:
                        self.server.start()
                    except RuntimeError as exc:
                        logger.error("%s", exc)
                self.status_line = f"ha: standby {self.member}: starting postgres"
            else:
                self._rejoin(now, primary, source, follow)
            return
        if st["primary_conninfo"] != follow:
            logger.info("standby %s follows %s (generation %d)", self.member, primary, g["generation"])
            try:
                pg.ensure_setting(self.dsn, "primary_conninfo", follow)
            except psycopg.Error as exc:
                logger.error("repointing failed: %s", exc)
        self.status_line = f"ha: standby {self.member} of {primary} (generation {g['generation']})"

    def _rejoin(self, now: float, primary: str, source: str, follow: str) -> None:
        if now < self._next_rejoin:
            return
        self._next_rejoin = now + 1.0
        target = self._probe(primary)
        # a fenced primary is no source either: the state this member has may be
        # behind (the leader fences the old primary, commits the failover and
        # promotes the new one, which may be this member's server before this
        # member applied the failover); a rightful primary takes writes
        if target is None or target["in_recovery"] or target["read_only"]:
            self.status_line = f"ha: {self.member} waits for primary {primary} to take writes before rejoining"
            return
        logger.info("%s rejoins as a standby of %s (pg_rewind)", self.member, primary)
        self._close_local()
        try:
            line = self.server.rejoin(source, follow)
            self._next_start = time.monotonic() + 30.0  # it is starting: give it time before starting it again
            logger.info("%s rejoined: %s", self.member, line)
        except (RuntimeError, psycopg.Error, OSError) as exc:
            logger.error("rejoining as a standby of %s failed: %s", primary, exc)
            self._next_rejoin = time.monotonic() + 3.0

    def _ensure_sync_names(self, st: dict[str, Any]) -> None:
        others = [m for m in self._group_members(self.group) if m != self.member]
        if self.cfg["ha.synchronous_mode"] == "off" or not others:
            wanted = ""
        else:
            wanted = "ANY 1 (" + ", ".join(f'"{m}"' for m in others) + ")"
        if st["synchronous_standby_names"] != wanted:
            try:
                pg.ensure_setting(self.dsn, "synchronous_standby_names", wanted)
                logger.info("synchronous_standby_names = %r", wanted)
            except psycopg.Error as exc:
                logger.error("setting synchronous_standby_names: %s", exc)

    # ------------------------------------------------------------------ leader

    def _lead(self, now: float) -> None:
        if not self.raft.hasQuorum:
            return
        if now >= self._next_coordinator_check:
            self._next_coordinator_check = now + 2.0
            self._update_coordinator()
        for group, g in list(self.state.groups.items()):
            down = g.get("down") == g["generation"]
            expired = now - self.state.renewed_at.get(group, now) > self.ttl
            if (down or expired) and now >= self._next_probe.get(group, 0.0):
                if not self._try_failover(group, dict(g), "primary down" if down else "lease expired"):
                    self._next_probe[group] = now + 0.5

    def _try_failover(self, group: str, g: dict[str, Any], reason: str) -> bool:
        """Fail ``group`` over if its old primary is dead or fenced; whether it did."""
        old = g["primary"]
        old_state = self._probe(old)
        if old_state is not None and not old_state["in_recovery"] and not old_state["read_only"]:
            self._note(f"healthy:{group}", f"group {group}: {reason} but primary {old} takes writes; "
                                           "no failover", logging.WARNING)
            return False
        self._last_note.pop(f"healthy:{group}", None)
        if old_state is not None:
            try:
                pg.fence(self.conninfo(old))
            except psycopg.Error:
                pass
        candidates = []
        for member in self._group_members(group):
            if member == old:
                continue
            st = self._probe(member)
            if st is not None and st["in_recovery"]:
                candidates.append((max(pg.lsn_value(st["receive_lsn"]), pg.lsn_value(st["replay_lsn"])),
                                   member))
        if not candidates:
            self._note(f"nocand:{group}", f"group {group}: {reason}, but no standby answers", logging.ERROR)
            return False
        self._last_note.pop(f"nocand:{group}", None)
        _, best = max(candidates)
        ok, err = wait_result(self.state.failover, group, g["generation"], best, reason, time.time(),
                              timeout=self.ttl)
        if err is not None or not ok:
            logger.warning("group %s: failover to %s not committed (%s)", group, best, err or "generation moved")
            return False
        logger.warning("group %s: %s (%s); %s is the primary, generation %d", group, reason, old, best,
                       g["generation"] + 1)
        self.m_failovers.inc(group=group)
        try:
            pg.promote(self.conninfo(best))
        except psycopg.Error as exc:
            logger.warning("promoting %s: %s (its sidecar will)", best, exc)
        self._update_coordinator()
        return True

    def _update_coordinator(self) -> None:
        """Point the coordinator's orochi.dist_node rows that name a standby
        (a former primary) of a worker group at that group's primary.
        Idempotent: run after each failover and every few seconds, so that a
        coordinator unreachable at the failover is caught up later."""
        coordinator = self.cfg["ha.coordinator_group"]
        cg = self.state.groups.get(coordinator)
        if cg is None:
            return
        moves = []
        for group, g in self.state.groups.items():
            if group == coordinator or g["primary"] not in self.state.members:
                continue
            p = self.state.members[g["primary"]]
            for member in self._group_members(group):
                if member != g["primary"]:
                    o = self.state.members[member]
                    moves.append((p["pg_host"], p["pg_port"], o["pg_host"], o["pg_port"]))
        if not moves:
            return
        params = conninfo_to_dict(self.dsn)
        databases = self.cfg["ha.metadata_databases"] or [params.get("dbname") or params.get("user") or "postgres"]
        info = self.state.members.get(cg["primary"])
        if info is None:
            return
        for db in databases:
            conninfo = pg.member_conninfo(self.dsn, info["pg_host"], info["pg_port"], dbname=db)
            try:
                with pg.connect(conninfo, timeout=2) as conn:
                    if conn.execute("SELECT to_regclass('orochi.dist_node') IS NULL").fetchone()[0]:
                        continue
                    for host, port, old_host, old_port in moves:
                        cur = conn.execute("UPDATE orochi.dist_node SET host = %s, port = %s "
                                           "WHERE host = %s AND port = %s", (host, port, old_host, old_port))
                        if cur.rowcount:
                            logger.info("coordinator (database %s): node %s:%s is now %s:%s", db, old_host,
                                        old_port, host, port)
                self._last_note.pop(f"coord:{db}", None)
            except psycopg.Error as exc:
                self._note(f"coord:{db}", f"updating orochi.dist_node on the coordinator (database {db}): "
                                          f"{str(exc).strip()}", logging.ERROR)

    # ------------------------------------------------------------------ membership

    def _member_addresses(self) -> dict[str, str]:
        """Raft address -> member id, of every member this sidecar knows of."""
        out = {p.address: m for m, p in self.peers.items()}
        out.update({a: m for m, a in self.state.admitted.items()})
        out.update({i["raft"]: m for m, i in self.state.members.items() if i.get("raft")})
        return out

    def add_member(self, member: str, address: str) -> tuple[int, dict[str, Any]]:
        """Add a member to the Raft group at run time (``POST /raft/members``):
        noted in the replicated state, then pysyncobj's membership change;
        both in the journal.  Returns the HTTP status and the answer."""
        try:
            peer = parse_peers([f"{member}={address}"])[member]
        except ConfigError as exc:
            return 400, {"error": str(exc).replace('"ha.peers"', "the new member")}
        current = {n.address for n in self.raft.otherNodes} | {self.raft.selfNode.address}
        known = self.state.raft_address(peer.member_id) or (
            self.peers[peer.member_id].address if peer.member_id in self.peers else None)
        if peer.address in current:
            who = self._member_addresses().get(peer.address, "another member")
            return 409, {"error": f"{peer.address} is already in the Raft group (member {who})"}
        if peer.member_id in self.state.members or (known is not None and known in current):
            return 409, {"error": f"member id {peer.member_id!r} is already in the Raft group (at {known})"}
        ok, err = wait_result(self.state.welcome_member, peer.member_id, peer.address, timeout=self.ttl * 2)
        if err is not None or not ok:
            return 503, {"error": f"the Raft group did not commit the new member ({_fail_reason(err)})"}
        ok, err = wait_result(self.raft.addNodeToCluster, peer.address, timeout=self.ttl * 2)
        if err is not None:
            return 503, {"error": f"the Raft group did not add {peer.address} ({_fail_reason(err)}); retry"}
        logger.warning("member %s (%s) added to the Raft group", peer.member_id, peer.address)
        return 200, {"added": peer.member_id, "address": peer.address}

    def remove_member(self, member: str) -> tuple[int, dict[str, Any]]:
        """Remove a member from the Raft group at run time (``DELETE
        /raft/members/<id>``): forgotten by the replicated state (refused for
        a group's primary), then pysyncobj's membership change."""
        if member == self.member:
            return 409, {"error": f"member {member!r} is this sidecar's own: stop its sidecar and ask another member"}
        address = self.state.raft_address(member) or (self.peers[member].address if member in self.peers else None)
        current = {n.address for n in self.raft.otherNodes}
        if address is None or (address not in current and member not in self.state.members):
            return 404, {"error": f"no member {member!r} in the Raft group"}
        if address == str(self.raft._getLeader() or ""):
            return 409, {"error": f"member {member!r} is the Raft leader: stop its sidecar first "
                                  "(another member is elected), then remove it"}
        reason, err = wait_result(self.state.retire_member, member, time.time(), timeout=self.ttl * 2)
        if err is not None:
            return 503, {"error": f"the Raft group did not commit the removal ({_fail_reason(err)}); retry"}
        if reason is not None:
            return 409, {"error": f"{reason}: fail it over first (stop its PostgreSQL), then remove it"}
        if address in current:
            ok, err = wait_result(self.raft.removeNodeFromCluster, address, timeout=self.ttl * 2)
            if err is not None:
                return 503, {"error": f"the Raft group did not remove {address} ({_fail_reason(err)}); retry"}
        logger.warning("member %s (%s) removed from the Raft group", member, address)
        return 200, {"removed": member, "address": address}

    # ------------------------------------------------------------------ what the REST API shows

    def raft_status(self) -> dict[str, Any]:
        s = self.raft.getStatus()
        leader = s.get("leader")
        by_address = self._member_addresses()
        peers = []
        # the Raft group's members as pysyncobj has them (ha.peers, changed by member-add / -remove)
        for address in sorted(n.address for n in self.raft.otherNodes):
            peers.append({"member_id": by_address.get(address, address), "address": address,
                          "connected": s.get(f"partner_node_status_server_{address}") == 2,
                          "match_index": s.get(f"match_idx_server_{address}"),
                          "next_index": s.get(f"next_node_idx_server_{address}")})
        peers.sort(key=lambda p: p["member_id"])
        return {"member_id": self.member, "address": self.peers[self.member].address,
                "state": RAFT_STATES.get(s.get("state"), str(s.get("state"))),
                "term": s.get("raft_term"), "commit_index": s.get("commit_idx"),
                "last_applied": s.get("last_applied"), "has_quorum": s.get("has_quorum"),
                "leader": by_address.get(str(leader)) if leader is not None else None,
                "leader_address": str(leader) if leader is not None else None,
                "log_length": s.get("log_len"), "peers": peers}

    def raft_leader(self) -> dict[str, Any]:
        s = self.raft_status()
        return {"leader": s["leader"], "address": s["leader_address"], "term": s["term"]}

    def cluster_info(self) -> dict[str, Any]:
        snap = self.state.snapshot()
        snap["member_id"] = self.member
        snap["lease_ttl"] = self.ttl
        return snap

    def health(self) -> list[dict[str, Any]]:
        """Per member: role, reachable, lag, sidecar connected, last failover of its group."""
        snap = self.state.snapshot()
        status = self.raft.getStatus()
        rows = []
        for group, g in sorted(snap["groups"].items()):
            primary_st = self._probe(g["primary"])
            last = next((h for h in reversed(snap["history"]) if h["group"] == group), None)
            for member in self._group_members(group):
                info = snap["members"][member]
                st = primary_st if member == g["primary"] else self._probe(member)
                lag = None
                if st is not None and primary_st is not None and member != g["primary"]:
                    lag = max(0, pg.lsn_value(primary_st["replay_lsn"]) - pg.lsn_value(st["replay_lsn"]))
                address = info.get("raft")
                if member == self.member:
                    sidecar = "up"
                else:
                    sidecar = "up" if status.get(f"partner_node_status_server_{address}") == 2 else "unreachable"
                rows.append({
                    "node_group": group, "member_id": member,
                    "role": "primary" if member == g["primary"] else "standby",
                    "host": info["pg_host"], "port": info["pg_port"], "reachable": st is not None,
                    "in_recovery": None if st is None else st["in_recovery"],
                    "fenced": None if st is None or st["in_recovery"] else st["read_only"],
                    "lag_bytes": lag, "sidecar": sidecar, "generation": g["generation"],
                    "last_failover_at": None if last is None else last["at"],
                })
        return rows

    def replication(self) -> list[dict[str, Any]]:
        """pg_stat_replication of the local PostgreSQL (the primary's standbys)."""
        try:
            with pg.connect(self.dsn, timeout=2) as conn:
                cur = conn.execute(
                    "SELECT application_name, client_addr::text, state, sent_lsn::text, write_lsn::text,"
                    " flush_lsn::text, replay_lsn::text,"
                    " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
                    " extract(epoch FROM replay_lag)::float8, sync_state"
                    " FROM pg_stat_replication ORDER BY application_name")
                names = ["standby", "client_addr", "state", "sent_lsn", "write_lsn", "flush_lsn", "replay_lsn",
                         "lag_bytes", "lag_seconds", "sync_state"]
                rows = [dict(zip(names, r)) for r in cur.fetchall()]
        except psycopg.Error:
            return []
        for r in rows:
            if r["lag_bytes"] is not None:
                self.m_lag.set(r["lag_bytes"], standby=r["standby"])
        return rows

    def snapshot(self) -> Any:
        return {"raft": self.raft_status(), "cluster": self.cluster_info()}
