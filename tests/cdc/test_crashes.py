"""At-least-once with stable ids: the sidecar and the postmaster killed
(kill -9) at the fault points of a cycle, again and again, while heap and
orochi tables change; afterwards every change has arrived, in order, and
an event arrived twice only with an id already seen; applied to empty
copies, the events give back every table.

Each kill happens while the worker waits at a named phase (see
orochi_fdw/cdc/faults.py): the test waits for the worker to say it is
there, then kills.  Nothing races a clock."""

from __future__ import annotations

import random

import pytest

from cdc_harness import (apply_events, assert_same_rows, cdc_once, create_subscription, dedupe, file_events,
                         kafka_events, make_copy, stats)
from pipeline_harness import wait_until

PHASES = ("fetched", "delivered", "recorded", "advanced")
#: a round's transactions come in several cycles, so that every phase is met several times
FEW_CHANGES = {"OROCHI_SIDECAR_CDC_PEEK_CHANGES": "5"}


def _make_tables(db) -> None:
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v text, n numeric)")
    db.execute("CREATE FOREIGN TABLE o (id int, v text, ts timestamptz) SERVER orochi "
               "OPTIONS (delta_row_limit '40')")
    db.execute("INSERT INTO h SELECT g, 'h' || g, g FROM generate_series(1, 50) g")
    db.execute("INSERT INTO o SELECT g, 'o' || g, timestamptz '2024-01-01' + g * interval '1 min' "
               "FROM generate_series(1, 50) g")


def _write_round(db, rng: random.Random, round_no: int) -> None:
    """Some transactions over both tables (small and big writes, updates,
    deletes, a rolled-back savepoint)."""
    base = 1000 * (round_no + 1)
    for t in range(4):
        with db.transaction():
            db.execute("INSERT INTO h SELECT g, 'r' || g, g FROM generate_series(%s::int, %s::int) g",
                       [base + 100 * t, base + 100 * t + rng.randrange(1, 8)])
            n = rng.choice([3, 60])  # delta store or stripes
            db.execute("INSERT INTO o SELECT g, 'r' || g, now() FROM generate_series(%s::int, %s::int) g",
                       [base + 100 * t, base + 100 * t + n])
            db.execute("UPDATE h SET v = v || '+' WHERE id %% 7 = %s", [rng.randrange(7)])
            db.execute("UPDATE o SET v = v || '+' WHERE id %% 11 = %s", [rng.randrange(11)])
            db.execute("SAVEPOINT s")
            db.execute("DELETE FROM o WHERE id %% 5 = %s", [rng.randrange(5)])
            if rng.random() < 0.5:
                db.execute("ROLLBACK TO SAVEPOINT s")
            db.execute("DELETE FROM h WHERE id %% 13 = %s", [rng.randrange(13)])


def _check(db, events: list[dict]) -> None:
    events = dedupe(events)  # asserts: a repeat only with an id seen before, ids increasing otherwise
    make_copy(db, "h", "h_copy")
    make_copy(db, "o", "o_copy")
    apply_events(db, events, {"public.h": "h_copy", "public.o": "o_copy"})
    assert_same_rows(db, "h", "h_copy")
    assert_same_rows(db, "o", "o_copy")


def _marker_delivered(events_of, marker: int):
    return lambda: any(e.get("after") and e["after"].get("id") == marker and e["table"] == "h"
                       for e in events_of())


def _kafka_json(kafka):
    def read():
        return [v for _, _, v in kafka_events(kafka, ["crashy.public.h", "crashy.public.o"]) if v is not None]
    return read


def _merge_by_id(events: list[dict]) -> list[dict]:
    """Events of several topics (partitions) back in stream order: by id,
    each topic's own order kept (a repeat stays where it arrived)."""
    return sorted(events, key=lambda e: (e["lsn"], e["index"]))


def _kill_sidecar_rounds(db, db_dsn, kafka, start_sidecar, rounds: int, seed: int) -> None:
    _make_tables(db)
    create_subscription(db, "crashy", ["h", "o"], "kafka", "json",
                        {"bootstrap_servers": kafka.bootstrap, "batch_size": 40, "tombstones": False})
    read = _kafka_json(kafka)
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: db.execute("SELECT snapshot_done FROM orochi.cdc_subscription").fetchone()[0],
               what="the initial snapshot")
    sidecar.terminate()
    rng = random.Random(seed)
    for round_no in range(rounds):
        _write_round(db, rng, round_no)
        phase, nth = rng.choice(PHASES), rng.randint(1, 3)
        sidecar = start_sidecar(db_dsn, env={"OROCHI_CDC_FAULT": f"{phase}:{nth}", **FEW_CHANGES})
        sidecar.wait_for_log(rf"fault point {phase} reached \(subscription \d+, batch \d+\)")
        sidecar.kill9()
    db.execute("INSERT INTO h VALUES (999999, 'marker', 0)")
    sidecar = start_sidecar(db_dsn)
    wait_until(_marker_delivered(read, 999999), what="every change to arrive")
    sidecar.terminate()
    events = read()
    # per topic the order is the stream's; across topics, the ids say it
    for topic_events in ([e for e in events if e["table"] == "h"], [e for e in events if e["table"] == "o"]):
        dedupe(topic_events)
    _check(db, _dedupe_keep_first(_merge_by_id(events)))
    assert stats(db, "crashy")["errors"] == 0


def _dedupe_keep_first(events: list[dict]) -> list[dict]:
    seen = set()
    out = []
    for e in events:
        if (e["lsn"], e["index"]) not in seen:
            seen.add((e["lsn"], e["index"]))
            out.append(e)
    return out


def test_sidecar_killed_at_every_phase(db, db_dsn, kafka, start_sidecar):
    _kill_sidecar_rounds(db, db_dsn, kafka, start_sidecar, rounds=6, seed=11)


@pytest.mark.slow
def test_sidecar_killed_soak(db, db_dsn, kafka, start_sidecar):
    _kill_sidecar_rounds(db, db_dsn, kafka, start_sidecar, rounds=30, seed=2024)


def _kill_postmaster_rounds(make_cluster, receiver, start_sidecar, tmp_path, phases, seed: int) -> None:
    pg = make_cluster("crash")
    pg.create_database("app")
    dsn = pg.dsn("app")
    with pg.connect("app", autocommit=True) as db:
        _make_tables(db)
        create_subscription(db, "crashy", ["h", "o"], "webhook", "json",
                            {"url": receiver.url, "batch_size": 40, "retry_min_delay": 0.05,
                             "retry_max_delay": 0.2})
        sidecar = start_sidecar(dsn)
        wait_until(lambda: db.execute("SELECT snapshot_done FROM orochi.cdc_subscription").fetchone()[0],
                   what="the initial snapshot")
        sidecar.terminate()
    rng = random.Random(seed)
    for round_no, phase in enumerate(phases):
        with pg.connect("app", autocommit=True) as db:
            _write_round(db, rng, round_no)
        release = tmp_path / f"release{round_no}"
        sidecar = start_sidecar(dsn, env={"OROCHI_CDC_FAULT": f"{phase}:2",
                                          "OROCHI_CDC_FAULT_RELEASE": str(release), **FEW_CHANGES})
        sidecar.wait_for_log(rf"fault point {phase} reached")
        pg.kill9()
        pg.start()  # crash recovery
        release.touch()  # the worker goes on with a dead connection: it starts again from the slot
        mark = len(sidecar.lines)
        sidecar.wait_for_log(r"postgres unreachable|cycle failed|unexpected error|sink unavailable", start=0)
        sidecar.wait_for_log(r"worker started|cdc: 1 worker", start=mark)
        sidecar.kill9()
    with pg.connect("app", autocommit=True) as db:
        db.execute("INSERT INTO h VALUES (999999, 'marker', 0)")
        sidecar = start_sidecar(dsn)
        wait_until(_marker_delivered(receiver.events, 999999), what="every change to arrive")
        sidecar.terminate()
        _check(db, receiver.events())


def test_postmaster_killed_mid_stream(make_cluster, receiver, start_sidecar, tmp_path):
    _kill_postmaster_rounds(make_cluster, receiver, start_sidecar, tmp_path, PHASES, seed=5)


@pytest.mark.slow
def test_postmaster_killed_soak(make_cluster, receiver, start_sidecar, tmp_path):
    rng = random.Random(77)
    _kill_postmaster_rounds(make_cluster, receiver, start_sidecar, tmp_path, [rng.choice(PHASES) for _ in range(12)],
                            seed=78)


def test_postmaster_killed_while_a_writer_has_emitted_its_changes(make_cluster, out_dir):
    """The server killed while a transaction that wrote to a heap and an
    orochi table waits after emitting its orochi change messages (the
    ``cdc:after_emit`` fault point), before its commit: after recovery,
    neither its rows nor its events exist; what committed before and after
    arrives, and the events give back both tables."""
    from orochi_fdw.testing.faults import run_until

    pg = make_cluster("writer-crash")
    pg.create_database("app")
    dsn = pg.dsn("app")
    with pg.connect("app", autocommit=True) as db:
        _make_tables(db)
        create_subscription(db, "crashy", ["h", "o"], "file", "json", {"directory": out_dir, "batch_size": 40})
        assert cdc_once(dsn) == "cdc: crashy: 0 events and 100 snapshot events"
        db.execute("INSERT INTO o SELECT g, 'before', now() FROM generate_series(101, 160) g")
    run_until(dsn, "cdc:after_emit@2",
              "INSERT INTO h VALUES (5000, 'lost', 0)",
              "INSERT INTO o SELECT g, 'lost', now() FROM generate_series(5000, 5070) g",  # stripes: message 1
              "UPDATE o SET v = 'lost' WHERE id <= 10",  # message 2: waits there
              autocommit=False, kill=lambda: pg.kill9(kill_children=True))
    pg.start()
    with pg.connect("app", autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM o WHERE v = 'lost'").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM h WHERE v = 'lost'").fetchone()[0] == 0
        db.execute("INSERT INTO h VALUES (6000, 'after', 1)")
        db.execute("UPDATE o SET v = 'after' WHERE id <= 5")
        assert cdc_once(dsn) == "cdc: crashy: 71 events"  # 60 inserted before, 1 after, 5 updates (d + c)
        events = file_events(out_dir)
        assert not [e for e in events if (e["after"] or {}).get("v") == "lost"], "an event of the lost transaction"
        _check(db, events)
