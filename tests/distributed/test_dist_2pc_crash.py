"""Two-phase commit under kill -9: a worker between PREPARE and COMMIT
PREPARED, the coordinator after its local commit and before the COMMIT
PREPAREDs, the coordinator before its local commit.  After restart and
recovery every transaction is all-or-nothing on every node and nothing
stays prepared.

The coordinator pauses at a named protocol step (``orochi.fault_points``)
until a file the test creates exists; the test waits for the log line
saying it got there, so the kill always lands at that step.
"""

from __future__ import annotations

import os
import tempfile
import threading

import psycopg
import pytest

from orochi_fdw.testing.distributed import LocalCluster


@pytest.fixture(scope="module")
def crash_cluster():
    lc = LocalCluster(workers=2, name="crash")
    try:
        lc.start()
        yield lc
    finally:
        lc.cleanup()


@pytest.fixture
def setup(crash_cluster):
    lc = crash_cluster
    for c in lc.all():
        c.ensure_running()
    name = lc.new_database()
    with lc.connect(name) as conn:
        conn.execute("CREATE TABLE d (k int, v text)")
        conn.execute("SELECT orochi.create_distributed_table('d', 'k', 4)")
    release_dir = tempfile.mkdtemp(prefix="orochi-fault-")
    os.chmod(release_dir, 0o777)
    yield lc, name, os.path.join(release_dir, "release")
    for c in lc.all():
        c.ensure_running()
    lc.drop_database(name)


class Paused:
    """A statement run in a thread with a fault point set; ``reached()``
    waits for the coordinator's log line."""

    def __init__(self, lc, dbname, step, release, statements):
        self.lc = lc
        self.offset = lc.coordinator.log_offset()
        self.step = step
        self.error = None
        self.release = release

        def run():
            try:
                with lc.connect(dbname) as conn:
                    conn.execute(f"SET orochi.fault_points = '{step}={release}'")
                    for s in statements:
                        conn.execute(s)
            except Exception as exc:  # noqa: BLE001 - inspected by the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def reached(self):
        self.lc.coordinator.wait_for_log(f"orochi fault point {self.step} reached", since=self.offset, timeout=60)

    def go_on(self):
        open(self.release, "w").close()
        self.thread.join(60)
        assert not self.thread.is_alive()


def _counts(lc, dbname):
    with lc.connect(dbname) as conn:
        return conn.execute("SELECT count(*) FROM d").fetchone()[0]


def _recover(lc, dbname):
    with lc.connect(dbname) as conn:
        return conn.execute("SELECT orochi.recover_prepared_transactions()").fetchone()[0]


@pytest.mark.parametrize("step", ["after_prepare", "before_commit_prepared"])
def test_worker_killed_between_prepare_and_commit_prepared(setup, step):
    """Killed once every writer prepared: before the coordinator's local
    commit (which still commits: every PREPARE succeeded) or after it."""
    lc, dbname, release = setup
    p = Paused(lc, dbname, step, release, ["INSERT INTO d SELECT generate_series(1, 100), 'x'"])
    p.reached()
    lc.workers[0].kill9()
    p.go_on()
    assert p.error is None  # the coordinator committed: the client hears so
    lc.workers[0].start()
    prepared = lc.prepared_transactions(dbname)
    assert [i for i, _ in prepared] == [0]  # worker 1 still holds its prepared transaction
    assert _recover(lc, dbname) == 1
    assert lc.prepared_transactions(dbname) == []
    assert _counts(lc, dbname) == 100


def test_coordinator_killed_after_local_commit(setup):
    lc, dbname, release = setup
    p = Paused(lc, dbname, "before_commit_prepared", release,
               ["INSERT INTO d SELECT generate_series(1, 100), 'x'"])
    p.reached()
    lc.coordinator.kill9()
    p.go_on()
    assert p.error is not None  # the connection died with the coordinator
    assert len(lc.prepared_transactions(dbname)) == 2
    lc.coordinator.start()
    # the first use of distributed tables after the restart recovers
    assert _counts(lc, dbname) == 100
    assert lc.prepared_transactions(dbname) == []
    with lc.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM orochi.dist_transaction").fetchone()[0] == 0


def test_coordinator_killed_before_local_commit(setup):
    lc, dbname, release = setup
    with lc.connect(dbname) as conn:
        conn.execute("INSERT INTO d SELECT generate_series(1000, 1010), 'before'")
    p = Paused(lc, dbname, "after_prepare", release,
               ["BEGIN", "INSERT INTO d SELECT generate_series(1, 100), 'x'", "DELETE FROM d WHERE k >= 1000",
                "COMMIT"])
    p.reached()
    lc.coordinator.kill9()
    p.go_on()
    assert len(lc.prepared_transactions(dbname)) == 2
    lc.coordinator.start()
    assert _recover(lc, dbname) == 2
    assert lc.prepared_transactions(dbname) == []
    with lc.connect(dbname) as conn:
        assert conn.execute("SELECT count(*), min(v), max(v) FROM d").fetchone() == (11, "before", "before")


def test_worker_killed_before_commit_rolls_back_everywhere(setup):
    lc, dbname, _ = setup
    with lc.connect(dbname, autocommit=False) as conn:
        conn.execute("INSERT INTO d SELECT generate_series(1, 100), 'x'")
        lc.workers[1].kill9()
        with pytest.raises(psycopg.Error) as info:
            conn.execute("COMMIT")
        assert info.value.sqlstate.startswith("08")
    lc.workers[1].start()
    assert _recover(lc, dbname) == 0
    assert lc.prepared_transactions(dbname) == []
    assert _counts(lc, dbname) == 0


def test_unreachable_worker_fails_queries_naming_it_and_pruned_queries_still_run(setup):
    lc, dbname, _ = setup
    with lc.connect(dbname) as conn:
        conn.execute("INSERT INTO d SELECT generate_series(1, 100), 'x'")
        node_of = dict(conn.execute("SELECT k, (SELECT node_id FROM orochi.shards s WHERE s.table_name = 'd'::regclass"
                                    " AND (hashint4extended(k, 0) & 4294967295)::bigint - CASE WHEN"
                                    " (hashint4extended(k, 0) & 4294967295)::bigint >= 2147483648 THEN 4294967296"
                                    " ELSE 0 END BETWEEN s.hash_min AND s.hash_max) FROM d").fetchall())
    dead = lc.workers[0]
    dead.kill9()
    with lc.connect(dbname) as conn:
        conn.execute("SET orochi.node_connect_timeout = '1s'")
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT count(*) FROM d")
        assert f"{dead.host}:{dead.port}" in str(info.value)
        alive_key = next(k for k, n in node_of.items() if n == 2)
        assert conn.execute("SELECT k FROM d WHERE k = %s", (alive_key,)).fetchall() == [(alive_key,)]
    dead.start()
    assert _counts(lc, dbname) == 100


def test_sidecar_recovery_duty_resolves_leftovers(setup):
    """The sidecar's recovery duty rolls back a prepared transaction whose
    coordinator transaction never committed (a gid of this coordinator with
    no record)."""
    from orochi_fdw.sidecar import config as sidecar_config
    from orochi_fdw.sidecar.duties import DaemonContext
    from orochi_fdw.sidecar.metrics import Registry
    from orochi_fdw.sidecar.recovery import RecoveryDuty

    lc, dbname, _ = setup
    with lc.connect(dbname) as conn:
        coord = conn.execute("SELECT coordinator_id FROM orochi.dist_coordinator").fetchone()[0]
        xid = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]  # its own, now committed
        node_id = conn.execute("SELECT node_id FROM orochi.nodes ORDER BY node_id LIMIT 1").fetchone()[0]
        shard = conn.execute("SELECT t.shard_schema || '.' || t.shard_base || '_' || s.shard_id"
                             " FROM orochi.dist_table t JOIN orochi.dist_shard s USING (relid)"
                             " JOIN orochi.dist_placement p USING (shard_id) WHERE p.node_id = %s LIMIT 1",
                             (node_id,)).fetchone()[0]
    gid = f"orochi_{coord}_{xid + 1000000}_{node_id}"  # an xid not assigned yet: never committed
    with lc.worker_connect(node_id - 1, dbname) as w:
        w.execute("BEGIN")
        w.execute(f"INSERT INTO {shard} VALUES (424242, 'orphan')")
        w.execute(f"PREPARE TRANSACTION '{gid}'")
    assert lc.prepared_transactions(dbname) == [(node_id - 1, gid)]
    config = sidecar_config.load(environ={}, overrides={"dsn": lc.coordinator.dsn(dbname), "duties": ["recovery"]})
    duty = RecoveryDuty(DaemonContext(config=config, metrics=Registry()))
    try:
        assert duty.run_cycle() == "recovered 1 prepared transaction"
        assert duty.run_cycle() == "nothing to recover"
    finally:
        duty.close()
    assert lc.prepared_transactions(dbname) == []
    with lc.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM d WHERE k = 424242").fetchone()[0] == 0


def test_reference_table_write_killed_coordinator_after_local_commit(setup):
    """A reference table is written on every worker in two phases: the
    coordinator killed after its local commit, the copies agree after
    recovery."""
    lc, dbname, release = setup
    with lc.connect(dbname) as conn:
        conn.execute("CREATE TABLE r (k int, v text)")
        conn.execute("SELECT orochi.create_reference_table('r')")
        conn.execute("INSERT INTO r VALUES (0, 'old')")
    p = Paused(lc, dbname, "before_commit_prepared", release,
               ["BEGIN", "INSERT INTO r SELECT generate_series(1, 30), 'x'", "UPDATE r SET v = 'new' WHERE k = 0",
                "COMMIT"])
    p.reached()
    lc.coordinator.kill9(kill_children=True)  # every process at once, as a machine crash
    p.go_on()
    assert len(lc.prepared_transactions(dbname)) == 2  # both copies prepared
    lc.coordinator.start()
    assert _recover(lc, dbname) == 2
    assert lc.prepared_transactions(dbname) == []
    with lc.connect(dbname) as conn:
        status = conn.execute("SELECT rows FROM orochi.shard_status('r') ORDER BY node_id").fetchall()
        assert status == [(31,), (31,)]
        assert conn.execute("SELECT v FROM r WHERE k = 0").fetchall() == [("new",)]


def test_reference_table_write_killed_before_local_commit_rolls_back_every_copy(setup):
    lc, dbname, release = setup
    with lc.connect(dbname) as conn:
        conn.execute("CREATE TABLE r (k int, v text)")
        conn.execute("SELECT orochi.create_reference_table('r')")
        conn.execute("INSERT INTO r VALUES (0, 'old')")
    p = Paused(lc, dbname, "after_prepare", release, ["DELETE FROM r"])
    p.reached()
    lc.coordinator.kill9(kill_children=True)  # every process at once, as a machine crash
    p.go_on()
    lc.coordinator.start()
    # the first use after the restart resolves (rolls back) both
    with lc.connect(dbname) as conn:
        assert conn.execute("SELECT k, v FROM r").fetchall() == [(0, "old")]
        assert conn.execute("SELECT rows FROM orochi.shard_status('r') ORDER BY node_id").fetchall() == [(1,), (1,)]
    assert lc.prepared_transactions(dbname) == []


def test_prepared_transaction_of_a_committed_xid_without_record_rolls_back(setup):
    """The record alone is the commit decision: after a crash that lost the
    tail of the coordinator's WAL, the xid in a prepared transaction's gid
    can belong to a later, unrelated transaction that committed.  Recovery
    must roll such a transaction back."""
    lc, dbname, _ = setup
    with lc.connect(dbname) as conn:
        coord = conn.execute("SELECT coordinator_id FROM orochi.dist_coordinator").fetchone()[0]
        xid = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]  # committed (autocommit)
        assert conn.execute("SELECT pg_xact_status(%s::text::xid8)", (xid,)).fetchone()[0] == "committed"
        node_id = conn.execute("SELECT node_id FROM orochi.nodes ORDER BY node_id LIMIT 1").fetchone()[0]
        shard = conn.execute("SELECT quote_ident(t.shard_schema) || '.' || quote_ident(t.shard_base || '_' || s.shard_id)"
                             " FROM orochi.dist_table t JOIN orochi.dist_shard s USING (relid)"
                             " JOIN orochi.dist_placement p USING (shard_id) WHERE p.node_id = %s LIMIT 1",
                             (node_id,)).fetchone()[0]
    gid = f"orochi_{coord}_{xid}_{node_id}"
    with lc.worker_connect(node_id - 1, dbname) as w:
        w.execute("BEGIN")
        w.execute(f"INSERT INTO {shard} VALUES (515151, 'orphan')")
        w.execute(f"PREPARE TRANSACTION '{gid}'")
    assert _recover(lc, dbname) == 1
    assert lc.prepared_transactions(dbname) == []
    with lc.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM d WHERE k = 515151").fetchone()[0] == 0


def test_recovery_in_a_repeatable_read_transaction_leaves_a_later_commit_alone(setup):
    """A transaction that commits after the snapshot recovery reads the
    records with is not rolled back for want of a record it cannot see."""
    lc, dbname, release = setup
    with lc.connect(dbname) as rr:
        rr.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        rr.execute("SELECT count(*) FROM orochi.dist_transaction")  # the snapshot is taken
        p = Paused(lc, dbname, "before_commit_prepared", release, ["INSERT INTO d SELECT generate_series(1, 50), 'x'"])
        p.reached()  # committed locally, prepared on both workers
        assert rr.execute("SELECT orochi.recover_prepared_transactions()").fetchone()[0] == 0
        rr.execute("COMMIT")
    p.go_on()
    assert p.error is None
    assert lc.prepared_transactions(dbname) == []
    assert _counts(lc, dbname) == 50
