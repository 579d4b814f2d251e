"""Failover of a real PostgreSQL primary with two streaming standbys, driven
by three orochi-sidecar subprocesses forming a Raft group (docs/ha.md).

Every wait polls the sidecars' state or the servers; nothing asserts on
time.  The tests share one group (module scope) and each starts from a
ready group whichever member is primary.
"""

from __future__ import annotations

import math
import re
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg import sql

from orochi_fdw.testing.ha import HaGroup, wait_until


class InsertStream:
    """A client inserting rows one at a time through a libpq multi-host
    string with target_session_attrs=read-write, retrying on any error with
    the next id; ``acked`` holds the ids whose COMMIT was acknowledged."""

    def __init__(self, dsn: str, table: str = "acked"):
        self.dsn = dsn
        self.table = table
        self.acked: list[int] = []
        self.ports: list[int] = []  # the server that acknowledged each
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "InsertStream":
        self._thread.start()
        return self

    def _run(self) -> None:
        conn = None
        next_id = 1
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                n = next_id
                next_id += 1
                port = conn.execute(sql.SQL("INSERT INTO {} (id) VALUES (%s) RETURNING inet_server_port()")
                                    .format(sql.Identifier(self.table)), (n,)).fetchone()[0]
                self.ports.append(port)
                self.acked.append(n)
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def _check_rows(group: HaGroup, acked: list[int]) -> None:
    primary = group.primary()
    with psycopg.connect(group.clusters[primary].dsn("postgres"), autocommit=True) as conn:
        present = [r[0] for r in conn.execute("SELECT id FROM acked").fetchall()]
    twice = sorted({i for i in present if present.count(i) > 1}) if len(present) != len(set(present)) else []
    assert not twice, f"rows present twice: {twice[:20]}"
    missing = sorted(set(acked) - set(present))
    assert not missing, f"{len(missing)} acknowledged rows lost: {missing[:20]}"


def _kill_primaries(group: HaGroup, kills: int) -> None:
    primary = group.wait_ready()
    with psycopg.connect(group.clusters[primary].dsn("postgres"), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS acked")
        conn.execute("CREATE TABLE acked (id bigint NOT NULL)")
    stream = InsertStream(group.multihost_dsn()).start()
    try:
        wait_until(lambda: len(stream.acked) >= 20, 60, "the first inserts")
        for _ in range(kills):
            old = group.wait_ready()
            generation = group.generation()
            group.kill_postmaster(old)
            acked_at_kill = len(stream.acked)
            new = group.wait_failover(generation)
            assert new != old
            # the stream goes on through the multi-host string, on the new primary (the old
            # primary's backends may still acknowledge a few commits its standbys confirmed
            # before its walsenders noticed the postmaster's death)
            new_port = group.clusters[new].port
            wait_until(lambda: new_port in stream.ports[acked_at_kill:], 60, "inserts on the new primary")
            assert group.in_recovery(new) is False
            # the old primary comes back as a standby of the new one, never as a primary
            wait_until(lambda: group.in_recovery(old) is True and old in group.streaming(new), 120,
                       f"{old} to rejoin as a standby of {new}")
    finally:
        stream.stop()
    _check_rows(group, stream.acked)
    assert len(group.state()["history"]) >= kills


def test_kill_primary_under_inserts_fails_over_and_loses_nothing(ha):
    """kill -9 of the primary's postmaster, twice, under a retrying insert
    stream: a new primary takes writes, every acknowledged row is there once,
    the old primary rejoins as a standby (pg_rewind)."""
    _kill_primaries(ha, kills=2)


@pytest.mark.slow
def test_kill_primary_ten_times(ha):
    _kill_primaries(ha, kills=10)


def test_killing_the_leader_sidecar_elects_a_leader_and_keeps_the_primary(ha):
    primary = ha.wait_ready()
    generation = ha.generation()
    failovers = len(ha.state()["history"])
    leader = ha.wait_leader()
    ha.kill_sidecar(leader)
    new_leader = ha.wait_leader(exclude=(leader,))
    assert new_leader != leader
    ha.restart_sidecar(leader)
    wait_until(lambda: ha.sidecars[leader].get("/raft/status")["leader"] is not None, 60,
               f"{leader} to rejoin the Raft group")
    # a whole lease term twice over, counted in committed renewals of the
    # primary's lease, passes under the new leader without a failover
    status = ha.sidecars[new_leader].get("/raft/status")
    start = status["commit_index"]
    renewals = math.ceil(2 * ha.lease_ttl / 0.25) * len(ha.groups())  # each group's primary renews
    wait_until(lambda: ha.sidecars[new_leader].get("/raft/status")["commit_index"] >= start + renewals, 120,
               "renewals of the primary's lease")
    g = ha.group_state()
    assert (g["primary"], g["generation"]) == (primary, generation)
    assert len(ha.state()["history"]) == failovers
    assert ha.writable(primary)


def test_all_sidecars_killed_and_restarted_keep_the_state_from_their_journals(ha):
    primary = ha.wait_ready()
    before = ha.state()
    for member in ha.members:
        ha.kill_sidecar(member)
    for member in ha.members:
        ha.restart_sidecar(member)
    ha.wait_leader()
    # every member was killed: whatever state comes back comes from the journals
    wait_until(lambda: ha.state()["groups"] == before["groups"], 60, "the groups as they were")
    after = ha.state()
    assert after["groups"] == before["groups"]
    assert after["history"] == before["history"]

    def without_api(members):
        return {m: {k: v for k, v in info.items() if k != "api"} for m, info in members.items()}
    assert without_api(after["members"]) == without_api(before["members"])
    assert ha.wait_ready() == primary


def test_partitioned_primary_fences_itself_before_another_is_promoted(ha):
    """The primary's sidecar drops every Raft message (a partition that
    leaves it in the minority): it fences its PostgreSQL; the majority
    promotes a standby only after that; at no time do two servers take a
    write (each round writes through both); after the partition heals the
    old primary rejoins as a standby."""
    _partition_primary(ha)


@pytest.mark.slow
def test_partitioned_primary_with_fence_mode_stop(ha):
    """The same with ha.fence_mode = stop: the primary's sidecar stops its
    PostgreSQL."""
    primary = ha.wait_ready()
    ha.kill_sidecar(primary)
    ha.write_config(primary, fence_mode="stop")
    ha.restart_sidecar(primary)
    try:
        _partition_primary(ha, fenced_log=r"fencing its PostgreSQL \(stop\)")
    finally:
        ha.kill_sidecar(primary)
        ha.write_config(primary)
        ha.restart_sidecar(primary)


def _partition_primary(ha: HaGroup, fenced_log: str = r"fencing its PostgreSQL") -> None:
    old = ha.wait_ready()
    generation = ha.generation()
    others = [m for m in ha.group_members() if m != old]
    log_start = len(ha.sidecars[old].lines)
    rounds: list[tuple[bool, str | None]] = []
    ha.partition(old)
    try:
        def promoted() -> bool:
            old_ok = ha.writable(old)
            new_ok = next((m for m in others if ha.writable(m)), None)
            rounds.append((old_ok, new_ok))
            return new_ok is not None
        new = wait_until(promoted, 120, "a standby to be promoted")
        for _ in range(5):
            promoted()
        both = [r for r in rounds if r[0] and r[1]]
        assert not both, f"two primaries took writes in the same round: {both}"
        assert rounds[0][0], "the old primary was not writable before the partition took effect"
        ha.sidecars[old].wait_for_log(fenced_log, start=log_start)
        new_primary = ha.primary(exclude=(old,))
        assert ha.generation(exclude=(old,)) > generation
        assert new_primary in others
    finally:
        ha.heal(old)
    wait_until(lambda: ha.in_recovery(old) is True and old in ha.streaming(new_primary), 120,
               f"{old} to rejoin as a standby")


def _query(group: HaGroup, member: str, query: str, role: str | None = None) -> list[tuple]:
    with psycopg.connect(group.clusters[member].dsn("app"), autocommit=True) as conn:
        if role:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        cur = conn.execute(query)
        return cur.fetchall() if cur.description is not None else []


def test_sql_functions_answer_from_the_local_sidecar(ha):
    primary = ha.wait_ready()
    standby = next(m for m in ha.group_members() if m != primary)
    leader = ha.wait_leader()
    for member in (primary, standby):
        [(member_id, state, term, commit_index, last_applied, raft_leader, has_quorum, peers)] = _query(
            ha, member, "SELECT * FROM orochi.raft_status()")
        assert member_id == member  # the server's own sidecar
        assert state in ("leader", "follower") and term >= 1 and has_quorum
        assert commit_index >= last_applied - 1 >= 0
        assert sorted(p["member_id"] for p in peers) == sorted(set(ha.members) - {member})
    assert _query(ha, standby, "SELECT orochi.raft_leader()") == [(ha.leader(),)]
    state = ha.state()

    def role(m: str) -> str:
        return "primary" if state["groups"][ha.member_group[m]]["primary"] == m else "standby"
    info = _query(ha, primary, "SELECT member_id, role, port, generation FROM orochi.raft_cluster_info()")
    assert sorted(info) == sorted((m, role(m), ha.clusters[m].port,
                                   state["groups"][ha.member_group[m]]["generation"]) for m in ha.members)
    health = _query(ha, primary, "SELECT member_id, role, reachable, fenced, sidecar FROM orochi.cluster_health()")
    assert sorted(health) == sorted((m, role(m), True, False if role(m) == "primary" else None, "up")
                                    for m in ha.members)
    # a standby that reconnects shows 'startup' for a moment: wait for the settled view
    expected = sorted((m, "streaming", "quorum") for m in ha.group_members() if m != primary)
    wait_until(lambda: sorted(_query(ha, primary, "SELECT standby, state, sync_state "
                                     "FROM orochi.replication_status()")) == expected,
               60, "orochi.replication_status() to show every standby streaming")
    assert leader in ha.members


def test_sql_functions_are_for_pg_monitor(ha):
    primary = ha.wait_ready()
    with psycopg.connect(ha.clusters[primary].dsn("app"), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS ha_watcher")
        conn.execute("CREATE ROLE ha_watcher")
    try:
        for fn in ("raft_status()", "raft_leader()", "raft_cluster_info()", "cluster_health()",
                   "replication_status()", "executor_counters()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                _query(ha, primary, f"SELECT * FROM orochi.{fn}", role="ha_watcher")  # constant names
        _query(ha, primary, "GRANT pg_monitor TO ha_watcher")
        for fn in ("raft_status()", "raft_leader()", "raft_cluster_info()", "cluster_health()",
                   "replication_status()", "executor_counters()"):
            assert _query(ha, primary, f"SELECT count(*) FROM orochi.{fn}", role="ha_watcher")[0][0] >= 1
    finally:
        _query(ha, primary, "DROP ROLE ha_watcher")


def test_metrics_and_once_status(ha):
    primary = ha.wait_ready()
    leader = ha.wait_leader()
    sidecar = ha.sidecars[leader]
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "orochi_raft_is_leader 1" in text
    assert "# TYPE orochi_failovers_total counter" in text and "orochi_raft_term " in text
    import subprocess
    from orochi_fdw.testing.ha import SIDECAR
    proc = subprocess.run([SIDECAR, "--config", ha.sidecars[primary].config_path, "--once", "status"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"member {primary}: raft ")
    rows = {line.split()[1]: line.split() for line in lines[2:] if line.startswith(ha.group + " ")}
    assert set(rows) == set(ha.group_members())
    assert rows[primary][2] == "primary"


def _coordinator(ha: HaGroup) -> psycopg.Connection:
    return psycopg.connect(ha.clusters[ha.primary(group="coordinator")].dsn("app"), autocommit=True)


def _use_worker_primary(ha: HaGroup, conn: psycopg.Connection) -> None:
    """Make the worker group's current primary the coordinator's only node."""
    worker = ha.clusters[ha.primary()]
    for (host, port) in conn.execute("SELECT host, port FROM orochi.nodes").fetchall():
        conn.execute("SELECT orochi.remove_node(%s, %s)", (host, port))
    conn.execute("SELECT orochi.add_node(%s, %s)", (worker.host, worker.port))


def _scraped(ha: HaGroup, member: str) -> dict[str, float]:
    """The executor counters on the /metrics of ``member``'s sidecar."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{ha.sidecars[member].port}/metrics", timeout=30) as response:
        text = response.read().decode()
    out = {}
    for name in ("distributed_queries", "shards_accessed", "executor_failures"):
        assert f"# TYPE orochi_{name}_total counter" in text
        [value] = re.findall(rf"^orochi_{name}_total (\S+)$", text, re.M)
        out[name] = float(value)
    assert re.search(r"^orochi_executor_counters_up 1$", text, re.M)
    return out


def test_executor_counters_on_sql_and_metrics(ha):
    """Distributed queries on the coordinator add to its executor counters
    in shared memory (every backend's), by execution, shard and failure;
    its sidecar's /metrics shows the same totals."""
    ha.wait_ready()
    coordinator = ha.primary(group="coordinator")

    def counters(conn: psycopg.Connection) -> dict[str, int]:
        row = conn.execute("SELECT distributed_queries, shards_accessed, executor_failures "
                           "FROM orochi.executor_counters()").fetchone()
        return dict(zip(("distributed_queries", "shards_accessed", "executor_failures"), row))
    with _coordinator(ha) as conn:
        _use_worker_primary(ha, conn)
        conn.execute("CREATE TABLE counted (id int, v int)")
        conn.execute("SELECT orochi.create_distributed_table('counted', 'id', 4)")
        conn.execute("INSERT INTO counted SELECT g, g % 5 FROM generate_series(1, 200) g")
        before = counters(conn)
    try:
        # each statement in a session of its own: the counters are the server's
        with _coordinator(ha) as conn:
            assert conn.execute("SELECT count(*) FROM counted").fetchone() == (200,)    # 4 shards
        with _coordinator(ha) as conn:
            assert conn.execute("SELECT v FROM counted WHERE id = 7").fetchone() == (2,)  # 1 shard
        # a shard the worker does not have: the execution fails there
        with psycopg.connect(ha.clusters[ha.primary()].dsn("app"), autocommit=True) as worker:
            schema, name, kind = worker.execute(
                "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname LIKE 'counted%' AND c.relkind IN ('r', 'f') ORDER BY c.relname LIMIT 1").fetchone()
            alter = sql.SQL("ALTER FOREIGN TABLE" if kind == "f" else "ALTER TABLE")
            worker.execute(sql.SQL("{} {} RENAME TO {}").format(alter, sql.Identifier(schema, name),
                                                                 sql.Identifier(name + "_away")))
            try:
                with _coordinator(ha) as conn, pytest.raises(psycopg.errors.UndefinedTable):
                    conn.execute("SELECT count(*) FROM counted")
            finally:
                worker.execute(sql.SQL("{} {} RENAME TO {}").format(alter, sql.Identifier(schema, name + "_away"),
                                                                     sql.Identifier(name)))
        with _coordinator(ha) as conn:
            after = counters(conn)
            assert {k: after[k] - before[k] for k in after} == {
                "distributed_queries": 3, "shards_accessed": 4 + 1 + 4, "executor_failures": 1}
            assert _scraped(ha, coordinator) == {k: float(v) for k, v in after.items()}
    finally:
        with _coordinator(ha) as conn:
            conn.execute("SELECT orochi.undistribute_table('counted')")
            conn.execute("DROP TABLE counted")


def test_orochi_nodes_follows_a_worker_failover(ha):
    """The coordinator's metadata follows the worker group's failover: after
    kill -9 of the worker's primary, orochi.nodes names its new primary and
    distributed queries and writes on the coordinator reach it, with every
    row (columnar shards, WAL-logged, are on the standbys)."""
    old = ha.wait_ready()
    worker = ha.clusters[old]

    def coordinator() -> psycopg.Connection:
        return psycopg.connect(ha.clusters[ha.primary(group="coordinator")].dsn("app"), autocommit=True)
    with coordinator() as conn:
        for (host, port) in conn.execute("SELECT host, port FROM orochi.nodes").fetchall():
            conn.execute("SELECT orochi.remove_node(%s, %s)", (host, port))
        conn.execute("SELECT orochi.add_node(%s, %s)", (worker.host, worker.port))
        conn.execute("CREATE TABLE metrics (id int, v int)")
        conn.execute("SELECT orochi.create_distributed_table('metrics', 'id', 4)")
        conn.execute("INSERT INTO metrics SELECT g, g % 7 FROM generate_series(1, 2000) g")
        expected = conn.execute("SELECT count(*), sum(v) FROM metrics").fetchone()
    assert expected == (2000, sum(g % 7 for g in range(1, 2001)))
    generation = ha.generation()
    ha.kill_postmaster(old)
    new = ha.wait_failover(generation)
    assert new != old
    new_port = ha.clusters[new].port

    def moved() -> bool:
        with coordinator() as conn:
            return conn.execute("SELECT array_agg(port) FROM orochi.nodes").fetchone()[0] == [new_port]
    wait_until(moved, 60, "orochi.nodes to name the new primary")
    with coordinator() as conn:
        assert conn.execute("SELECT count(*), sum(v) FROM metrics").fetchone() == expected
        conn.execute("INSERT INTO metrics VALUES (5001, 3), (5002, 4)")
        assert conn.execute("SELECT count(*), sum(v) FROM metrics WHERE id > 5000").fetchone() == (2, 7)
        assert conn.execute("SELECT v FROM metrics WHERE id = 1234").fetchone() == (1234 % 7,)
        conn.execute("SELECT orochi.undistribute_table('metrics')")
        conn.execute("DROP TABLE metrics")
    wait_until(lambda: ha.in_recovery(old) is True and old in ha.streaming(new), 120,
               f"{old} to rejoin as a standby")


def _once(ha: HaGroup, member: str, *command: str) -> subprocess.CompletedProcess:
    from orochi_fdw.testing.ha import SIDECAR
    return subprocess.run([SIDECAR, "--config", ha.sidecars[member].config_path, "--once", *command],
                          capture_output=True, text=True, timeout=120)


def test_member_added_and_removed_at_run_time(ha):
    """A new standby of the worker group and its sidecar join the running
    Raft group (``--once member-add``): the state lists it, the primary
    counts it as a synchronous standby, a sidecar restarted with its old
    ha.peers knows it from its journal, and it takes part in a failover.
    ``--once member-remove`` retires it (refused while it is a primary)."""
    old = ha.wait_ready()
    new = f"{ha.group}-9"
    coordinator = ha.primary(group="coordinator")
    ha.add_standby(new)
    address = f"127.0.0.1:{ha.raft_ports[new]}"
    try:
        bad = _once(ha, coordinator, "member-add", f"{old}=127.0.0.1:1")
        assert bad.returncode == 1 and f"member id '{old}' is already in the Raft group" in bad.stderr
        done = _once(ha, coordinator, "member-add", f"{new}={address}")
        assert done.returncode == 0, done.stderr
        ha.sidecars[new].start()
        ha.wait_ready()  # the new member registered, streaming as a synchronous candidate
        info = _query(ha, old, "SELECT member_id, role, port FROM orochi.raft_cluster_info()")
        assert (new, "standby", ha.clusters[new].port) in info
        peers = _query(ha, coordinator, "SELECT peers FROM orochi.raft_status()")[0][0]
        assert new in [p["member_id"] for p in peers]
        # a sidecar restarted with its configuration of before (no new member in
        # ha.peers) has the new member from its journal
        other = next(m for m in ha.group_members() if m not in (old, new))
        ha.kill_sidecar(other)
        ha.restart_sidecar(other)
        wait_until(lambda: new in [p["member_id"] for p in ha.sidecars[other].get("/raft/status")["peers"]]
                   and ha.sidecars[other].get("/raft/status")["leader"] is not None, 60,
                   f"{other} to know {new} from its journal")
        # a failover: the new member is a candidate like the others, and
        # follows the new primary when it is not the one promoted
        generation = ha.generation()
        ha.kill_postmaster(old)
        promoted = ha.wait_failover(generation)
        assert promoted != old
        if promoted == new:
            refused = _once(ha, coordinator, "member-remove", new)
            # refused as the group's primary, or first as the Raft leader when it is that too
            assert refused.returncode == 1 and ("is the primary of node group" in refused.stderr
                                                or "is the Raft leader" in refused.stderr), refused.stderr
            generation = ha.generation()
            ha.kill_postmaster(new)
            assert ha.wait_failover(generation) != new
        else:
            wait_until(lambda: ha.in_recovery(new) is True and new in ha.streaming(promoted), 120,
                       f"{new} to follow {promoted}")
        # retiring it: its sidecar stops first, then another member removes it
        ha.kill_sidecar(new)
        ha.wait_leader(exclude=(new,))
        done = _once(ha, coordinator, "member-remove", new)
        assert done.returncode == 0, done.stderr
        assert new not in [r[0] for r in _query(ha, coordinator, "SELECT member_id FROM orochi.raft_cluster_info()")]
        assert new not in [p["member_id"] for p in ha.sidecars[coordinator].get("/raft/status")["peers"]]
        primary = ha.primary()
        wait_until(lambda: new not in _query(ha, primary, "SHOW synchronous_standby_names")[0][0], 60,
                   f"{new} out of synchronous_standby_names")
    finally:
        if new in ha.sidecars:
            ha.forget_member(new)
