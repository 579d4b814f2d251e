"""Exactly once: the sidecar and the postmaster killed (kill -9) at fault
points of a batch, again and again; after the restarts the target holds
every produced record once, field by field.

Each kill happens while the worker waits at a named phase (see
orochi_fdw/pipelines/faults.py): the test waits for the worker to say it is
there, then kills. Nothing races a clock."""

from __future__ import annotations

import datetime
import json
import random

import pytest

from pipeline_harness import create_pipeline, positions, sidecar_once, wait_until

UTC = datetime.timezone.utc
BASE = datetime.datetime(2024, 3, 1, tzinfo=UTC)
PARTITIONS = 3
PHASES = ("fetched", "copied", "positioned", "committed")


def _record(i: int) -> dict:
    return {"id": i, "ts": (BASE + datetime.timedelta(minutes=i)).isoformat(), "device": f"d{i % 11}",
            "reading": round(i * 1.25, 2), "tags": {"n": i, "even": i % 2 == 0}}


def _row(i: int) -> tuple:
    r = _record(i)
    return (r["id"], datetime.datetime.fromisoformat(r["ts"]), r["device"], r["reading"], r["tags"])


def _make_target(db) -> None:
    db.execute("CREATE FOREIGN TABLE m (id int8, ts timestamptz NOT NULL, device text, reading float8, "
               "tags jsonb) SERVER orochi")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '6 hours')")


def _check_consistent(db, pid: int, n: int) -> int:
    """The rows are exactly the records before the committed positions (no
    duplicate, no gap); returns how many."""
    pos = {int(k): v for k, v in positions(db, pid).items()}
    ids = [r[0] for r in db.execute("SELECT id FROM m ORDER BY id").fetchall()]
    expected = [i for i in range(n) if i // PARTITIONS < pos.get(i % PARTITIONS, 0)]
    assert ids == expected, f"rows do not match the positions {pos}"
    return len(ids)


def _assert_all_loaded(db, n: int) -> None:
    rows = db.execute("SELECT id, ts, device, reading, tags FROM m ORDER BY id").fetchall()
    assert len(rows) == n
    assert rows == [_row(i) for i in range(n)]


def _produce(kafka, topic: str, n: int) -> None:
    kafka.create_topic(topic, partitions=PARTITIONS)
    kafka.produce(topic, [json.dumps(_record(i)) for i in range(n)], partitions=PARTITIONS)


def _kill_sidecar_rounds(db, db_dsn, kafka, topic, start_sidecar, n: int, rounds: int, seed: int) -> None:
    _make_target(db)
    _produce(kafka, topic, n)
    pid = create_pipeline(db, "crashy", "kafka", "m", "json",
                          {"bootstrap_servers": kafka.bootstrap, "topic": topic, "batch_size": 150,
                           "max_latency": 0.05})
    rng = random.Random(seed)
    loaded = 0
    for _ in range(rounds):
        phase, nth = rng.choice(PHASES), rng.randint(1, 3)
        sidecar = start_sidecar(db_dsn, env={"OROCHI_PIPELINE_FAULT": f"{phase}:{nth}"})
        sidecar.wait_for_log(rf"fault point {phase} reached \(pipeline {pid}, batch \d+\)")
        sidecar.kill9()
        now = _check_consistent(db, pid, n)
        assert now >= loaded  # committed batches stay
        loaded = now
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: sum(positions(db, pid).values()) == n, what="the pipeline to load every record")
    sidecar.terminate()
    _assert_all_loaded(db, n)
    assert sidecar_once(db_dsn) == "pipelines: crashy (1): 0 rows"  # nothing left, nothing twice


def test_sidecar_killed_at_every_phase(db, db_dsn, kafka, topic, start_sidecar):
    _kill_sidecar_rounds(db, db_dsn, kafka, topic, start_sidecar, n=1800, rounds=6, seed=17)


@pytest.mark.slow
def test_sidecar_killed_at_random_points_soak(db, db_dsn, kafka, topic, start_sidecar):
    _kill_sidecar_rounds(db, db_dsn, kafka, topic, start_sidecar, n=20000, rounds=40, seed=2024)


def _kill_postmaster_rounds(make_cluster, kafka, topic, start_sidecar, tmp_path, phases, n: int) -> None:
    pg = make_cluster("crash")
    pg.create_database("app")
    dsn = pg.dsn("app")
    with pg.connect("app", autocommit=True) as db:
        _make_target(db)
        _produce(kafka, topic, n)
        pid = create_pipeline(db, "crashy", "kafka", "m", "json",
                              {"bootstrap_servers": kafka.bootstrap, "topic": topic, "batch_size": 150})
    for round_no, phase in enumerate(phases):
        release = tmp_path / f"release{round_no}"
        sidecar = start_sidecar(dsn, env={"OROCHI_PIPELINE_FAULT": f"{phase}:2",
                                          "OROCHI_PIPELINE_FAULT_RELEASE": str(release)})
        sidecar.wait_for_log(rf"fault point {phase} reached")
        pg.kill9()
        pg.start()  # crash recovery
        release.touch()  # the worker goes on with a dead connection: it must start over from the catalog
        mark = len(sidecar.lines)
        sidecar.wait_for_log(r"pipeline \d+: postgres unreachable|batch failed", start=0)
        sidecar.wait_for_log(r"worker started|cycle: pipelines: 1 worker", start=mark)
        with pg.connect("app", autocommit=True) as db:
            wait_until(lambda: sum(positions(db, pid).values()) > 0, what="progress")
        sidecar.kill9()
        with pg.connect("app", autocommit=True) as db:
            _check_consistent(db, pid, n)
    sidecar = start_sidecar(dsn)
    with pg.connect("app", autocommit=True) as db:
        wait_until(lambda: sum(positions(db, pid).values()) == n, what="the pipeline to load every record")
        sidecar.terminate()
        _assert_all_loaded(db, n)


def test_postmaster_killed_during_loading(make_cluster, kafka, topic, start_sidecar, tmp_path):
    # enough records (40 batches) that every round still finds a second batch to
    # stop at, however far the rounds before it loaded
    _kill_postmaster_rounds(make_cluster, kafka, topic, start_sidecar, tmp_path, PHASES, n=6000)


@pytest.mark.slow
def test_postmaster_killed_soak(make_cluster, kafka, topic, start_sidecar, tmp_path):
    rng = random.Random(99)
    _kill_postmaster_rounds(make_cluster, kafka, topic, start_sidecar, tmp_path,
                            [rng.choice(PHASES) for _ in range(15)], n=12000)
