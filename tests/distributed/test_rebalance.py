"""The shard rebalancer (docs/rebalancer.md): moves under concurrent
writers and readers against a heap oracle (3 → 4 workers, then draining
one), kill -9 of each party at fault points of a move with recovery
checks, stopping a move, the plans, and bad input.

One cluster for the module: a coordinator and four workers; each test has
a database of its own with the first three workers added.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import psycopg
import pytest

from orochi_fdw.cluster.mover import Runner
from orochi_fdw.testing.distributed import LocalCluster


@pytest.fixture(scope="module")
def rcluster():
    lc = LocalCluster(workers=4, name="rebal")
    try:
        lc.start()
        yield lc
    finally:
        lc.cleanup()


@dataclass
class Db:
    lc: LocalCluster
    name: str
    node_ids: list[int] = field(default_factory=list)

    def connect(self, **kw) -> psycopg.Connection:
        return self.lc.connect(self.name, **kw)

    def q(self, query, params=None):
        with self.connect() as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []

    def one(self, query, params=None):
        rows = self.q(query, params)
        return rows[0][0] if rows else None

    @property
    def dsn(self) -> str:
        return self.lc.coordinator.dsn(self.name)

    def add_node(self, index: int) -> int:
        w = self.lc.workers[index]
        node_id = int(self.one("SELECT orochi.add_node(%s, %s)", (w.host, w.port)))
        self.node_ids.append(node_id)
        return node_id

    def worker_for(self, node_id: int):
        host, port = self.q("SELECT host, port FROM orochi.dist_node WHERE node_id = %s", (node_id,))[0]
        return next(w for w in self.lc.workers if w.port == port)

    def placements(self, table: str) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for shard_id, node_id in self.q(
                "SELECT p.shard_id, p.node_id FROM orochi.dist_placement p JOIN orochi.dist_shard s USING (shard_id)"
                " WHERE s.relid = %s::regclass ORDER BY 1, 2", (table,)):
            out.setdefault(int(shard_id), []).append(int(node_id))
        return out


@pytest.fixture
def rdb(rcluster):
    for c in rcluster.all():
        c.ensure_running()
    name = rcluster.new_database(add_nodes=False)
    db = Db(rcluster, name)
    for i in range(3):
        db.add_node(i)
    yield db
    for c in rcluster.all():
        c.ensure_running()
    left = rcluster.prepared_transactions(name)
    rcluster.drop_database(name)
    assert not left, f"prepared transactions left on the workers: {left}"


def make_table(db: Db, name: str, storage: str, rows: int, shards: int = 8) -> None:
    with db.connect() as c:
        c.execute(f"CREATE TABLE {name} (k int NOT NULL, v bigint, note text, ts timestamptz, f float8)")
        c.execute("SELECT orochi.create_distributed_table(%s, 'k', %s, shard_storage => %s, colocate_with => 'none')",
                  (name, shards, storage))
        c.execute(f"CREATE TABLE {name}_oracle (k int NOT NULL, v bigint, note text, ts timestamptz, f float8)")
        for target in (name, f"{name}_oracle"):
            c.execute(f"INSERT INTO {target} SELECT g, g * 10, 'row ' || g,"
                      " timestamptz '2026-01-01 00:00+00' + g * interval '1 minute', g / 7.0"
                      " FROM generate_series(1, %s) g", (rows,))


def assert_equal_to_oracle(db: Db, name: str) -> None:
    cols = "k, v, note, ts, f"
    got = db.q(f"SELECT {cols} FROM {name} ORDER BY {cols}")
    want = db.q(f"SELECT {cols} FROM {name}_oracle ORDER BY {cols}")
    assert len(got) == len(want)
    assert got == want


def assert_one_placement_each(db: Db, name: str) -> None:
    """Every shard: one placement in the metadata, its table on that node
    only, no trigger, log row or prepared move left."""
    placements = db.placements(name)
    assert placements and all(len(nodes) == 1 for nodes in placements.values()), placements
    schema, base = db.q("SELECT shard_schema::text, shard_base::text FROM orochi.dist_table"
                        " WHERE relid = %s::regclass", (name,))[0]
    for shard_id, (node_id,) in placements.items():
        rel = f"{schema}.{base}_{shard_id}"
        for nid in db.node_ids:
            w = db.worker_for(nid)
            exists = w.execute("SELECT to_regclass(%s) IS NOT NULL", (rel,), dbname=db.name)[0][0]
            assert exists == (nid == node_id), (rel, nid, node_id)
            if nid == node_id:
                trig = w.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass", (rel,), dbname=db.name)
                assert trig == [], (rel, trig)
    for nid in db.node_ids:
        w = db.worker_for(nid)
        assert w.execute("SELECT count(*) FROM orochi.dist_move_log", dbname=db.name)[0][0] == 0
        assert w.execute("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'orochi\\_move\\_%%'",
                         dbname=db.name) == []


# ------------------------------------------------------------------ writers


class Writers:
    """Threads writing the distributed table and its heap oracle in the same
    coordinator transaction (INSERT, UPDATE, DELETE of keys of their own),
    each reading its keys back after every write (read-your-writes through
    whatever placement is current), and a reader checking rows no writer
    touches (count, sum, no duplicates)."""

    def __init__(self, db: Db, name: str, static_rows: int, threads: int = 2, seed: int = 7):
        self.db = db
        self.name = name
        self.static_rows = static_rows
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.commits = 0
        self.reads = 0
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self.threads = [threading.Thread(target=self._write, args=(i, seed + i), daemon=True) for i in range(threads)]
        self.threads.append(threading.Thread(target=self._read, daemon=True))

    def start(self) -> "Writers":
        for t in self.threads:
            t.start()
        return self

    def wait_commits(self, more: int) -> None:
        """Until ``more`` further writes have committed (or a writer failed)."""
        with self._progress:
            goal = self.commits + more
            while self.commits < goal and not self.errors and not self.stop.is_set():
                self._progress.wait(1.0)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
        assert not any(t.is_alive() for t in self.threads)
        assert not self.errors, self.errors[:5]

    def _write(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        base = 1_000_000 * (index + 1)
        model: dict[int, list[int]] = {}
        next_key = base
        try:
            with self.db.connect() as c:
                while not self.stop.is_set():
                    op = rng.random()
                    if op < 0.5 or not model:
                        k = next_key if rng.random() < 0.7 or not model else rng.choice(list(model))
                        next_key += 1
                        v = rng.randrange(1000)
                        with c.transaction():
                            for t in (self.name, f"{self.name}_oracle"):
                                c.execute(f"INSERT INTO {t} (k, v, note) VALUES (%s, %s, 'w')", (k, v))
                        model.setdefault(k, []).append(v)
                    elif op < 0.8:
                        k = rng.choice(list(model))
                        with c.transaction():
                            for t in (self.name, f"{self.name}_oracle"):
                                c.execute(f"UPDATE {t} SET v = v + 1 WHERE k = %s", (k,))
                        model[k] = [v + 1 for v in model[k]]
                    else:
                        k = rng.choice(list(model))
                        with c.transaction():
                            for t in (self.name, f"{self.name}_oracle"):
                                c.execute(f"DELETE FROM {t} WHERE k = %s", (k,))
                        del model[k]
                    got = sorted(r[0] for r in c.execute(f"SELECT v FROM {self.name} WHERE k = %s", (k,)))
                    if got != sorted(model.get(k, [])):
                        self.errors.append(f"key {k}: read {got}, wrote {sorted(model.get(k, []))}")
                    with self._progress:
                        self.commits += 1
                        self._progress.notify_all()
        except Exception as exc:  # noqa: BLE001 - reported by finish()
            self.errors.append(f"writer {index}: {type(exc).__name__}: {exc}")
            with self._progress:
                self._progress.notify_all()

    def _read(self) -> None:
        n = self.static_rows
        want = (n, n * (n + 1) // 2 * 10)
        try:
            with self.db.connect() as c:
                while not self.stop.is_set():
                    got = c.execute(f"SELECT count(*), sum(v) FROM {self.name} WHERE k <= %s", (n,)).fetchone()
                    if tuple(int(x) for x in got) != want:
                        self.errors.append(f"static rows read as {got}, not {want}")
                    dup = c.execute(f"SELECT k FROM {self.name} WHERE k <= %s GROUP BY k HAVING count(*) > 1 LIMIT 1",
                                    (n,)).fetchall()
                    if dup:
                        self.errors.append(f"key {dup[0][0]} read twice")
                    self.reads += 1
        except Exception as exc:  # noqa: BLE001 - reported by finish()
            self.errors.append(f"reader: {type(exc).__name__}: {exc}")


def _during(writers: Writers, phases=("copying", "copied", "caught_up"), commits: int = 15):
    """A runner hook: at each of these phases, let the writers commit more
    changes before the move goes on (so every copy and catch-up has
    concurrent writes to carry)."""

    def hook(phase: str, move_id: int) -> None:
        if phase in phases:
            writers.wait_commits(commits)

    return hook


def run_moves(db: Db, **kw) -> list[tuple[int, str]]:
    runner = Runner(db.dsn, **kw)
    try:
        return runner.run_pending()
    finally:
        runner.close()


@pytest.mark.parametrize("storage", ["columnar", pytest.param("heap", marks=pytest.mark.slow)])
def test_rebalance_and_drain_under_writes(rdb, storage):
    """3 → 4 workers, then draining one, while writers insert, update and
    delete and a reader reads: no row lost or duplicated, every read right."""
    make_table(rdb, "t", storage, rows=3000)
    writers = Writers(rdb, "t", static_rows=3000).start()
    try:
        writers.wait_commits(20)
        new = rdb.add_node(3)
        job = rdb.one("SELECT orochi.rebalance_table_shards('t')")
        assert job is not None
        results = run_moves(rdb, on_phase=_during(writers))
        assert results and all(o == "done" for _, o in results), results
        counts = {n: len(v) for n, v in _by_node(rdb.placements("t")).items()}
        assert counts.get(new) == 2 and max(counts.values()) - min(counts.values()) <= 1, counts
        drained = rdb.node_ids[0]
        assert rdb.one("SELECT orochi.drain_node(%s)", (drained,)) is not None
        results = run_moves(rdb, on_phase=_during(writers))
        assert results and all(o == "done" for _, o in results), results
        assert drained not in _by_node(rdb.placements("t"))
        writers.wait_commits(20)
    finally:
        writers.finish()
    applied = rdb.one("SELECT sum(changes_applied) FROM orochi.rebalance_progress")
    assert applied > 0  # the catch-up carried concurrent changes
    assert writers.reads > 0
    assert rdb.q("SELECT DISTINCT phase FROM orochi.rebalance_progress") == [("done",)]
    assert_equal_to_oracle(rdb, "t")
    assert_one_placement_each(rdb, "t")
    # the drained node can now be removed
    w = rdb.worker_for(drained)
    rdb.q("SELECT orochi.remove_node(%s, %s)", (w.host, w.port))


def _by_node(placements: dict[int, list[int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for shard, nodes in placements.items():
        for n in nodes:
            out.setdefault(n, []).append(shard)
    return out


def test_colocated_shards_move_together(rdb):
    with rdb.connect() as c:
        c.execute("CREATE TABLE a (k int, x text)")
        c.execute("CREATE TABLE b (k int, y text)")
        c.execute("SELECT orochi.create_distributed_table('a', 'k', 4)")
        c.execute("SELECT orochi.create_distributed_table('b', 'k', 4, colocate_with => 'a')")
        c.execute("INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 500) g")
        c.execute("INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 500) g")
        shard_a = min(rdb.placements("a"))
        src = rdb.placements("a")[shard_a][0]
        target = next(n for n in rdb.node_ids if n != src)
        job = c.execute("SELECT orochi.move_shard(%s, %s)", (shard_a, target)).fetchone()[0]
        row = c.execute("SELECT shard_ids, source_node, target_node, phase FROM orochi.rebalance_progress"
                        " WHERE job_id = %s", (job,)).fetchone()
        assert row[0][0] == shard_a and len(row[0]) == 2 and row[1:] == (src, target, "queued")
    assert run_moves(rdb) == [(rdb.one("SELECT move_id FROM orochi.dist_move WHERE job_id = %s", (job,)), "done")]
    index = rdb.one("SELECT shard_index FROM orochi.dist_shard WHERE shard_id = %s", (shard_a,))
    for t in ("a", "b"):
        sid = rdb.one("SELECT shard_id FROM orochi.dist_shard WHERE relid = %s::regclass AND shard_index = %s",
                      (t, index))
        assert rdb.placements(t)[sid] == [target]
    # the co-located join still runs shard by shard, and right
    assert rdb.one("SELECT count(*) FROM a JOIN b USING (k) WHERE a.x = 'a' || b.k") == 500
    assert rdb.one("SELECT count(*) FROM b") == 500


def test_stop_rolls_back(rdb):
    make_table(rdb, "t", "columnar", rows=1000, shards=4)
    shard = min(rdb.placements("t"))
    src = rdb.placements("t")[shard][0]
    target = next(n for n in rdb.node_ids if n != src)
    job = rdb.one("SELECT orochi.move_shard(%s, %s)", (shard, target))

    def hook(phase, move_id):
        if phase == "copied":
            assert rdb.one("SELECT orochi.rebalance_stop(%s)", (job,)) == 1

    assert [o for _, o in run_moves(rdb, on_phase=hook)] == ["stopped"]
    assert rdb.placements("t")[shard] == [src]
    assert_one_placement_each(rdb, "t")
    assert_equal_to_oracle(rdb, "t")
    # a stopped queued move is not run
    rdb.one("SELECT orochi.move_shard(%s, %s)", (shard, target))
    assert rdb.one("SELECT orochi.rebalance_stop()") == 1
    assert run_moves(rdb) == []


def test_repeatable_read_writer_meets_the_fence(rdb):
    """A REPEATABLE READ transaction whose snapshot predates a switch and
    then writes the moved shard gets a serialization failure (and the
    cleanup waits for it before dropping the source)."""
    make_table(rdb, "t", "heap", rows=100, shards=2)
    shard = min(rdb.placements("t"))
    src = rdb.placements("t")[shard][0]
    target = next(n for n in rdb.node_ids if n != src)
    key = next(k for k in range(1, 101) if rdb.one(
        "SELECT count(*) FROM orochi.dist_shard s WHERE s.shard_id = %s AND"
        " hashint4(%s) BETWEEN s.hash_min AND s.hash_max", (shard, k)))
    rr = rdb.connect(autocommit=False)
    rr.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    rr.execute("SELECT 1 FROM t_oracle LIMIT 1")  # the snapshot is taken
    rdb.one("SELECT orochi.move_shard(%s, %s)", (shard, target))
    outcome: list = []
    cleanup = threading.Event()
    mover = threading.Thread(target=lambda: outcome.extend(run_moves(
        rdb, on_phase=lambda p, m: cleanup.set() if p == "cleanup" else None)), daemon=True)
    mover.start()
    assert cleanup.wait(60)
    with pytest.raises(psycopg.errors.SerializationFailure, match="was moved"):
        rr.execute("INSERT INTO t (k, v) VALUES (%s, -1)", (key,))
    rr.rollback()
    rr.close()
    mover.join(60)
    assert [o for _, o in outcome] == ["done"]
    assert rdb.q("SELECT v FROM t WHERE k = %s", (key,)) == [(key * 10,)]
    assert_one_placement_each(rdb, "t")


def test_plans(rdb):
    make_table(rdb, "t", "columnar", rows=2000, shards=6)
    with rdb.connect() as c:
        c.execute("CREATE TABLE big (k int, pad text)")
        c.execute("SELECT orochi.create_distributed_table('big', 'k', 3, colocate_with => 'none', shard_storage => 'heap')")
        c.execute("INSERT INTO big SELECT g, repeat('x', 500) FROM generate_series(1, 3000) g")
    assert rdb.q("SELECT * FROM orochi.get_rebalance_plan()") == []  # balanced already
    new = rdb.add_node(3)
    plan = rdb.q("SELECT table_name::text, shard_id, source_node, target_node FROM orochi.get_rebalance_plan('t')")
    assert [p[3] for p in plan] == [new] and len(plan) == 1  # 2,2,2,0 → 2,2,1,1 (6 groups)
    assert rdb.q("SELECT count(*) FROM orochi.get_rebalance_plan()")[0][0] == 2  # 9 groups: 3,3,3,0 → ..,2,2
    assert rdb.q("SELECT count(*) FROM orochi.get_rebalance_plan(max_shard_moves => 1)")[0][0] == 1
    by_size = rdb.q("SELECT table_name::text, shard_size, target_node FROM orochi.get_rebalance_plan("
                    "strategy => 'by_disk_size')")
    assert by_size and by_size[0][0] == "big" and by_size[0][2] == new  # the largest group first
    drain = rdb.q("SELECT source_node, target_node FROM orochi.get_rebalance_plan(drain_node => %s)", (new,))
    assert drain == []  # nothing on it
    drain = rdb.q("SELECT source_node, target_node FROM orochi.get_rebalance_plan(drain_node => %s)",
                  (rdb.node_ids[0],))
    assert drain and all(s == rdb.node_ids[0] and t != s for s, t in drain)
    assert rdb.q("SELECT * FROM orochi.rebalance_progress") == []  # plans queue nothing


def test_bad_input(rdb):
    make_table(rdb, "t", "columnar", rows=10, shards=4)
    with rdb.connect() as c:
        c.execute("CREATE TABLE r (id int)")
        c.execute("SELECT orochi.create_reference_table('r')")
        c.execute("CREATE TABLE plain (id int)")
    shard = min(rdb.placements("t"))
    src = rdb.placements("t")[shard][0]
    ref_shard = min(rdb.placements("r"))
    before = rdb.placements("t")
    cases = [
        ("SELECT orochi.move_shard(1, %s)" % src, "42704", "shard 1 does not exist"),
        (f"SELECT orochi.move_shard({shard}, 999)", "42704", "node 999 does not exist"),
        (f"SELECT orochi.move_shard({shard}, {src})", "55000", f"shard {shard} is already on node {src}"),
        (f"SELECT orochi.move_shard({ref_shard}, {src})", "0A000", "reference table"),
        ("SELECT orochi.drain_node(999)", "42704", "node 999 does not exist"),
        ("SELECT orochi.rebalance_table_shards(strategy => 'by_luck')", "22023", "unknown rebalance strategy"),
        ("SELECT orochi.rebalance_table_shards('plain')", "42809", "not a hash-distributed table"),
        ("SELECT orochi.rebalance_table_shards('r')", "42809", "not a hash-distributed table"),
        ("SELECT orochi.get_rebalance_plan(max_shard_moves => -1)", "22023", "max_shard_moves"),
    ]
    for query, state, message in cases:
        with rdb.connect() as c, pytest.raises(psycopg.Error) as exc:
            c.execute(query)
        assert exc.value.sqlstate == state, (query, exc.value)
        assert message in str(exc.value), (query, exc.value)
    # a second move of a group already queued
    target = next(n for n in rdb.node_ids if n != src)
    job = rdb.one("SELECT orochi.move_shard(%s, %s)", (shard, target))
    with rdb.connect() as c, pytest.raises(psycopg.Error) as exc:
        c.execute("SELECT orochi.move_shard(%s, %s)", (shard, target))
    assert exc.value.sqlstate == "55006" and f"job {job}" in str(exc.value)
    rdb.q("SELECT orochi.rebalance_stop()")
    # only superusers
    with rdb.connect() as c:
        c.execute("DROP ROLE IF EXISTS rebal_user")
        c.execute("CREATE ROLE rebal_user")
        c.execute("SET ROLE rebal_user")
        for query in (f"SELECT orochi.move_shard({shard}, {target})", "SELECT orochi.rebalance_table_shards()",
                      f"SELECT orochi.drain_node({src})", "SELECT orochi.rebalance_stop()",
                      "SELECT * FROM orochi.get_rebalance_plan()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(query)
        c.execute("RESET ROLE")
        c.execute("DROP ROLE rebal_user")
    assert rdb.placements("t") == before
    assert rdb.one("SELECT count(*) FROM orochi.rebalance_progress WHERE phase <> 'stopped'") == 0
    assert_equal_to_oracle(rdb, "t")


def test_drain_last_node(rcluster):
    name = rcluster.new_database(add_nodes=False)
    try:
        db = Db(rcluster, name)
        only = db.add_node(0)
        make_table(db, "t", "heap", rows=10, shards=2)
        with db.connect() as c, pytest.raises(psycopg.Error) as exc:
            c.execute("SELECT orochi.drain_node(%s)", (only,))
        assert exc.value.sqlstate == "55000" and "last active node" in str(exc.value)
        assert db.q("SELECT * FROM orochi.rebalance_progress") == []
        assert_equal_to_oracle(db, "t")
    finally:
        rcluster.drop_database(name)


# ------------------------------------------------------------------ kill -9

#: (party, phase) in the default suite: a rollback after catch-up, a rollback
#: of the source's prepared fence, a finish whose source died holding it
CRASH_CASES = [("runner", "caught_up"), ("coordinator", "prepared"), ("source", "switched")]

#: every party at every fault point (slow)
ALL_CRASH_CASES = [(party, phase) for party in ("runner", "coordinator", "source", "target")
                   for phase in ("setup", "copying", "copied", "caught_up", "switch_locked", "prepared",
                                 "switched", "cleanup")
                   if (party, phase) not in CRASH_CASES]

#: phases at which writers are not held (the switch holds them from switch_locked to switched)
WRITABLE = ("setup", "copying", "copied", "caught_up", "cleanup")


class RunnerProcess:
    """``python -m orochi_fdw.cluster.mover`` stopped at a fault point."""

    def __init__(self, dsn: str, phase: str):
        env = dict(os.environ, OROCHI_REBALANCE_FAULT=phase)
        env.pop("OROCHI_REBALANCE_FAULT_RELEASE", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "orochi_fdw.cluster.mover", "--dsn", dsn],
                                     stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=os.path.dirname(os.path.abspath(__file__)))  # not the source tree
        self.lines: list[str] = []
        self.reached = threading.Event()
        self.phase = phase
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if f"fault point {self.phase} reached" in line:
                self.reached.set()

    def wait(self):
        while not self.reached.wait(1.0):
            assert self.proc.poll() is None, "runner ended before its fault point:\n" + "".join(self.lines[-30:])

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def crash_case(db: Db, party: str, phase: str, storage: str = "columnar") -> None:
    make_table(db, "t", storage, rows=2000, shards=4)
    shard = min(db.placements("t"))
    source = db.placements("t")[shard][0]
    target = next(n for n in db.node_ids if n != source)
    db.one("SELECT orochi.move_shard(%s, %s)", (shard, target))
    runner = RunnerProcess(db.dsn, phase)
    try:
        runner.wait()
        if phase in WRITABLE:
            with db.connect() as c:  # changes the move has to carry (or roll back with)
                for t in ("t", "t_oracle"):
                    c.execute(f"INSERT INTO {t} (k, v) SELECT g, g FROM generate_series(5001, 5200) g")
                    c.execute(f"UPDATE {t} SET v = v + 1 WHERE k BETWEEN 1 AND 300")
                    c.execute(f"DELETE FROM {t} WHERE k BETWEEN 301 AND 400")
        victim = {"coordinator": db.lc.coordinator, "source": db.worker_for(source),
                  "target": db.worker_for(target)}.get(party)
        if victim is not None:
            victim.kill9()
    finally:
        runner.kill()
    for c in db.lc.all():
        c.ensure_running()
    # a coordinator transaction interrupted by a killed worker may leave a
    # prepared transaction of the distributed commit: its own recovery
    db.q("SELECT orochi.recover_prepared_transactions()")
    r = Runner(db.dsn)
    try:
        assert r.recover() == 1
    finally:
        r.close()
    switched = db.one("SELECT switched FROM orochi.dist_move")
    assert switched == (phase in ("switched", "cleanup")), db.q("SELECT * FROM orochi.rebalance_progress")
    assert db.one("SELECT phase FROM orochi.dist_move") == ("done" if switched else "failed")
    assert db.placements("t")[shard] == [target if switched else source]
    assert_one_placement_each(db, "t")
    assert_equal_to_oracle(db, "t")
    # the table is usable and the shard can move (again)
    with db.connect() as c:
        for t in ("t", "t_oracle"):
            c.execute(f"INSERT INTO {t} (k, v) VALUES (7777, 1)")
    back = source if switched else target
    db.one("SELECT orochi.move_shard(%s, %s)", (shard, back))
    assert [o for _, o in run_moves(db)] == ["done"]
    assert db.placements("t")[shard] == [back]
    assert_equal_to_oracle(db, "t")
    assert_one_placement_each(db, "t")


@pytest.mark.parametrize("party,phase", CRASH_CASES, ids=[f"{p}-{f}" for p, f in CRASH_CASES])
def test_kill9_during_move(rdb, party, phase):
    crash_case(rdb, party, phase)


@pytest.mark.slow
@pytest.mark.parametrize("party,phase", ALL_CRASH_CASES, ids=[f"{p}-{f}" for p, f in ALL_CRASH_CASES])
def test_kill9_during_move_all(rdb, party, phase):
    crash_case(rdb, party, phase)


@pytest.mark.slow
@pytest.mark.parametrize("party,phase", [("runner", "copied"), ("source", "prepared"), ("target", "switched")])
def test_kill9_during_move_heap(rdb, party, phase):
    crash_case(rdb, party, phase, storage="heap")


def test_sidecar_duty_runs_the_queue(rdb):
    """orochi-sidecar's rebalance duty (--once) runs a queued move."""
    make_table(rdb, "t", "heap", rows=500, shards=4)
    shard = min(rdb.placements("t"))
    src = rdb.placements("t")[shard][0]
    target = next(n for n in rdb.node_ids if n != src)
    rdb.one("SELECT orochi.move_shard(%s, %s)", (shard, target))
    env = dict(os.environ, OROCHI_SIDECAR_DUTIES="rebalance", OROCHI_SIDECAR_HTTP_ENABLED="false")
    out = subprocess.run([sys.executable, "-m", "orochi_fdw.sidecar", "--dsn", rdb.dsn, "--once"],
                         capture_output=True, text=True, env=env, timeout=300,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "done" in out.stdout, out.stdout
    assert rdb.placements("t")[shard] == [target]
    assert_equal_to_oracle(rdb, "t")
    assert_one_placement_each(rdb, "t")


@pytest.mark.slow
def test_rebalance_and_drain_under_writes_soak(rdb):
    """The longer version: more rows, more writers, more changes per phase,
    every strategy, both kinds of shard."""
    make_table(rdb, "t", "columnar", rows=30000, shards=12)
    with rdb.connect() as c:
        c.execute("CREATE TABLE h (k int NOT NULL, v bigint, note text, ts timestamptz, f float8)")
        c.execute("SELECT orochi.create_distributed_table('h', 'k', 6, shard_storage => 'heap', colocate_with => 'none')")
        c.execute("CREATE TABLE h_oracle (LIKE h)")
        for t in ("h", "h_oracle"):
            c.execute(f"INSERT INTO {t} SELECT g, g * 10, 'h', timestamptz '2026-01-01 00:00+00', g FROM generate_series(1, 5000) g")
    writers = Writers(rdb, "t", static_rows=30000, threads=4, seed=11).start()
    others = Writers(rdb, "h", static_rows=5000, threads=1, seed=99).start()
    try:
        rdb.add_node(3)
        assert rdb.one("SELECT orochi.rebalance_table_shards(strategy => 'by_disk_size')") is not None
        assert all(o == "done" for _, o in run_moves(rdb, on_phase=_during(writers, commits=60)))
        assert rdb.one("SELECT orochi.rebalance_table_shards()") is None or \
            all(o == "done" for _, o in run_moves(rdb, on_phase=_during(writers, commits=30)))
        for node in rdb.node_ids[:2]:
            assert rdb.one("SELECT orochi.drain_node(%s)", (node,)) is not None
            assert all(o == "done" for _, o in run_moves(rdb, on_phase=_during(writers, commits=60)))
        writers.wait_commits(50)
    finally:
        writers.finish()
        others.finish()
    assert_equal_to_oracle(rdb, "t")
    assert_equal_to_oracle(rdb, "h")
    assert_one_placement_each(rdb, "t")
    assert_one_placement_each(rdb, "h")
