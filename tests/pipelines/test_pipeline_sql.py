"""The SQL surface: creating pipelines (and the errors of bad ones), their
states, privileges, dropping the target, and the commit's fencing."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import errors

from pipeline_harness import (create_pipeline, dead_letters, pipeline_row, positions, run_batches, sidecar_once,
                              wait_until)


def _opts(kafka, topic, **more):
    return {"bootstrap_servers": kafka.bootstrap, "topic": topic, **more}


def _create(db, source, fmt, options, target="m", name="p"):
    return db.execute("SELECT orochi.create_pipeline(%s, %s, %s::regclass, %s, %s::jsonb)",
                      [name, source, target, fmt, json.dumps(options)]).fetchone()[0]


def test_bad_pipelines_are_refused_at_creation(db, kafka, topic):
    db.execute("CREATE TABLE m (a int, b text)")
    db.execute("CREATE VIEW v AS SELECT * FROM m")
    cases = [
        ("kafka", "json", {"topic": topic}, errors.InvalidParameterValue, 'option "bootstrap_servers" is required'),
        ("kafka", "json", _opts(kafka, topic, batchsize=5), errors.InvalidParameterValue, 'unknown option "batchsize"'),
        ("kafka", "json", _opts(kafka, topic, batch_size="5"), errors.InvalidParameterValue, "must be an integer"),
        ("kafka", "json", _opts(kafka, topic, batch_size=0), errors.InvalidParameterValue, "must be between"),
        ("kafka", "json", _opts(kafka, topic, columns={"nope": "$.x"}), errors.UndefinedColumn,
         'column "nope" of the mapping does not exist'),
        ("kafka", "json", _opts(kafka, topic, columns={"a": "$.x..y"}), errors.InvalidParameterValue,
         "invalid JSON path"),
        ("kafka", "csv", _opts(kafka, topic, header=True), errors.InvalidParameterValue, "cannot read a csv header"),
        ("kafka", "json", _opts(kafka, topic, librdkafka={"enable.auto.commit": True}),
         errors.InvalidParameterValue, "set by the pipeline itself"),
        ("kafka", "xml", _opts(kafka, topic), errors.InvalidParameterValue, 'unknown pipeline format "xml"'),
        ("ftp", "json", {}, errors.InvalidParameterValue, 'unknown pipeline source "ftp"'),
        ("file", "json", {"directory": "relative/dir"}, errors.InvalidParameterValue, "must be an absolute path"),
        ("s3", "json", {"bucket": "b", "storage_target": "cold"}, errors.FeatureNotSupported, "not supported yet"),
    ]
    for source, fmt, options, error, text in cases:
        with pytest.raises(error, match=text):
            _create(db, source, fmt, options)
    with pytest.raises(errors.WrongObjectType, match='"v" is not a table'):
        _create(db, "kafka", "json", _opts(kafka, topic), target="v")
    _create(db, "kafka", "json", _opts(kafka, topic))
    with pytest.raises(errors.DuplicateObject, match='pipeline "p" already exists'):
        _create(db, "kafka", "json", _opts(kafka, topic))
    assert db.execute("SELECT count(*) FROM orochi.pipelines").fetchone()[0] == 1


def test_states_and_their_transitions(db, kafka, topic):
    db.execute("CREATE TABLE m (a int)")
    pid = _create(db, "kafka", "json", _opts(kafka, topic))
    status = lambda: pipeline_row(db, pid)["status"]  # noqa: E731
    assert status() == "created"
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="cannot pause pipeline \"p\": it is created"):
        db.execute("SELECT orochi.pause_pipeline(%s)", [pid])
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="cannot resume"):
        db.execute("SELECT orochi.resume_pipeline(%s)", [pid])
    assert db.execute("SELECT orochi.start_pipeline(%s)", [pid]).fetchone()[0] == "running"
    assert status() == "starting"  # no sidecar has picked it up
    assert db.execute("SELECT orochi.pause_pipeline(%s)", [pid]).fetchone()[0] == "paused"
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="Use orochi.resume_pipeline"):
        db.execute("SELECT orochi.start_pipeline(%s)", [pid])
    assert db.execute("SELECT orochi.resume_pipeline(%s)", [pid]).fetchone()[0] == "running"
    assert db.execute("SELECT orochi.stop_pipeline(%s)", [pid]).fetchone()[0] == "stopped"
    assert db.execute("SELECT orochi.stop_pipeline(%s)", [pid]).fetchone()[0] == "stopped"  # a NOTICE
    assert db.execute("SELECT orochi.start_pipeline(%s)", [pid]).fetchone()[0] == "running"
    with pytest.raises(errors.UndefinedObject, match="pipeline 999 does not exist"):
        db.execute("SELECT orochi.start_pipeline(999)")
    db.execute("SELECT orochi.drop_pipeline(%s)", [pid])
    db.execute("SELECT orochi.drop_pipeline(%s, if_exists => true)", [pid])
    assert db.execute("SELECT count(*) FROM orochi.pipeline_stats").fetchone()[0] == 0


def test_pause_resume_and_stop_start_keep_the_position(db, db_dsn, kafka, topic):
    db.execute("CREATE FOREIGN TABLE m (id int) SERVER orochi")
    kafka.create_topic(topic, partitions=2)
    produce = lambda lo, hi: kafka.produce(topic, [json.dumps({"id": i}) for i in range(lo, hi)],  # noqa: E731
                                           partitions=2)
    ids = lambda: db.execute("SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM m").fetchone()[0]  # noqa: E731
    produce(0, 100)
    pid = create_pipeline(db, "p", "kafka", "m", "json", _opts(kafka, topic))
    assert sidecar_once(db_dsn) == "pipelines: p (1): 100 rows"
    db.execute("SELECT orochi.pause_pipeline(%s)", [pid])
    produce(100, 150)
    assert sidecar_once(db_dsn) == "pipelines: no pipeline running"  # paused: nothing loaded
    assert ids() == list(range(100))
    db.execute("SELECT orochi.resume_pipeline(%s)", [pid])
    assert sidecar_once(db_dsn) == "pipelines: p (1): 50 rows"
    db.execute("SELECT orochi.stop_pipeline(%s)", [pid])
    produce(150, 230)
    assert sidecar_once(db_dsn) == "pipelines: no pipeline running"
    assert pipeline_row(db, pid)["status"] == "stopped"
    db.execute("SELECT orochi.start_pipeline(%s)", [pid])
    assert sidecar_once(db_dsn) == "pipelines: p (1): 80 rows"
    assert ids() == list(range(230))
    assert sum(positions(db, pid).values()) == 230


def test_dropping_the_target_drops_its_pipelines(db, db_dsn, kafka, topic):
    db.execute("CREATE TABLE m (id int)")
    db.execute("CREATE TABLE other (id int)")
    kafka.create_topic(topic, partitions=1)
    kafka.produce(topic, ['{"id": 1}', "bad"], partition=0)
    pid = create_pipeline(db, "p", "kafka", "m", "json", _opts(kafka, topic))
    keep = create_pipeline(db, "q", "kafka", "other", "json", _opts(kafka, topic))
    run_batches(db_dsn, pid)
    assert len(dead_letters(db, pid)) == 1
    db.execute("DROP TABLE m")
    assert [r[0] for r in db.execute("SELECT pipeline_id FROM orochi.pipelines").fetchall()] == [keep]
    for table in ("pipeline_positions", "pipeline_stats", "pipeline_error_log"):
        assert db.execute(f"SELECT count(*) FROM orochi.{table} WHERE pipeline_id = %s", [pid]).fetchone()[0] == 0


def test_the_commit_refuses_positions_that_moved(db, db_dsn, kafka, topic):
    """The fencing that keeps two workers from loading a record twice: a batch
    whose starting position is not the committed one rolls back whole."""
    db.execute("CREATE TABLE m (id int)")
    kafka.create_topic(topic, partitions=1)
    kafka.produce(topic, ['{"id": 1}', '{"id": 2}'], partition=0)
    pid = create_pipeline(db, "p", "kafka", "m", "json", _opts(kafka, topic))
    run_batches(db_dsn, pid)
    assert positions(db, pid) == {"0": 2}
    stale = json.dumps([{"stream": "0", "from": 0, "to": 2}])
    with db.transaction():
        with pytest.raises(errors.SerializationFailure, match="moved under this batch"):
            db.execute("INSERT INTO m VALUES (1), (2)")
            db.execute("SELECT orochi.pipeline_commit_batch(%s, %s::jsonb, 2, 20)", [pid, stale])
    assert db.execute("SELECT count(*) FROM m").fetchone()[0] == 2
    new = json.dumps([{"stream": "0", "from": None, "to": 0}])  # a "new" stream that exists
    with pytest.raises(errors.SerializationFailure):
        db.execute("SELECT orochi.pipeline_commit_batch(%s, %s::jsonb, 0, 0)", [pid, new])


def test_one_worker_per_pipeline(db, db_dsn, kafka, topic):
    from orochi_fdw.pipelines.worker import PipelineBusy, PipelineWorker
    from pipeline_harness import definition

    db.execute("CREATE TABLE m (id int)")
    kafka.create_topic(topic, partitions=1)
    pid = create_pipeline(db, "p", "kafka", "m", "json", _opts(kafka, topic))
    first = PipelineWorker(definition(db_dsn, pid), db_dsn)
    first.start()
    try:
        assert pipeline_row(db, pid)["status"] == "running"
        assert sidecar_once(db_dsn) == "pipelines: no pipeline running"  # claimed: skipped
        second = PipelineWorker(definition(db_dsn, pid), db_dsn)
        with pytest.raises(PipelineBusy):
            second.start()
        second.close()
    finally:
        first.close()
    # the lock goes with the session, which ends just after the connection closes
    wait_until(lambda: pipeline_row(db, pid)["status"] == "starting", what="the claim to be released")


@pytest.fixture
def loader_role(db, db_name):
    role = f"loader_{db_name}"[:60]
    other = f"other_{db_name}"[:60]
    for r in (role, other):
        db.execute(f'CREATE ROLE "{r}" LOGIN')
        db.execute(f'GRANT CREATE ON SCHEMA public TO "{r}"')
    yield role, other
    for r in (role, other):
        db.execute(f'DROP OWNED BY "{r}"')
        db.execute(f'DROP ROLE "{r}"')


def test_privileges(db, db_dsn, pg_cluster, db_name, kafka, topic, loader_role):
    role, other = loader_role
    db.execute("CREATE TABLE m (id int, who text DEFAULT current_user)")
    db.execute("CREATE TABLE locked (id int)")
    db.execute(f'GRANT INSERT ON m TO "{role}"')
    kafka.create_topic(topic, partitions=1)
    kafka.produce(topic, ['{"id": 1}', '{"id": 2}'], partition=0)
    with pg_cluster.connect(db_name, autocommit=True, user=role) as mine, \
            pg_cluster.connect(db_name, autocommit=True, user=other) as theirs:
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table locked"):
            _create(mine, "kafka", "json", _opts(kafka, topic), target="locked")
        with pytest.raises(errors.InsufficientPrivilege, match="read files on the server"):
            _create(mine, "file", "jsonl", {"directory": "/etc", "glob": "passwd"})
        with pytest.raises(errors.InsufficientPrivilege, match="sidecar's own credentials"):
            _create(mine, "s3", "jsonl", {"bucket": "b"})
        pid = _create(mine, "kafka", "json", _opts(kafka, topic, librdkafka={"sasl.password": "hunter2"},
                                                   columns={"id": "$.id"}))  # "who" keeps its default
        mine.execute("SELECT orochi.start_pipeline(%s)", [pid])
        with pytest.raises(errors.InsufficientPrivilege, match='must be owner of pipeline "p"'):
            theirs.execute("SELECT orochi.pause_pipeline(%s)", [pid])
        # the catalog is granted to no one, not even the owner: the functions and views check
        for who in (mine, theirs):
            for table in ("pipeline", "pipeline_positions", "pipeline_stats", "pipeline_error_log"):
                with pytest.raises(errors.InsufficientPrivilege):
                    who.execute(f"SELECT count(*) FROM orochi.{table}")
        # the views show a role the pipelines it has the owner's rights of; secrets masked even then
        masked = mine.execute("SELECT options FROM orochi.pipelines WHERE pipeline_id = %s", [pid]).fetchone()[0]
        assert masked["librdkafka"] == {"sasl.password": "********"} and masked["topic"] == topic
        assert theirs.execute("SELECT count(*) FROM orochi.pipelines").fetchone()[0] == 0
        # what the worker calls is for the owner's rights too
        for call in ("SELECT * FROM orochi.pipeline_state(%s)", "SELECT * FROM orochi.pipeline_stream_positions(%s)",
                     "SELECT orochi.pipeline_report_worker(%s, 'w')", "SELECT orochi.pipeline_report_error(%s, 'e')",
                     "SELECT orochi.pipeline_fail(%s, 'e')", "SELECT orochi.pipeline_commit_batch(%s, '[]', 0, 0)"):
            with pytest.raises(errors.InsufficientPrivilege, match='must be owner of pipeline "p"'):
                theirs.execute(call, [pid])
        assert mine.execute("SELECT * FROM orochi.pipeline_state(%s)", [pid]).fetchone() == ("running", 0)
        # the sidecar loads as the owner: the DEFAULT current_user says who wrote the rows
        assert sidecar_once(db_dsn) == "pipelines: p (1): 2 rows"
        assert db.execute("SELECT DISTINCT who FROM m").fetchall() == [(role,)]
        assert mine.execute("SELECT jsonb_array_length(positions) FROM orochi.pipelines").fetchone()[0] == 1
        assert mine.execute("SELECT stream, position FROM orochi.pipeline_stream_positions(%s)",
                            [pid]).fetchall() == [("0", 2)]
        assert db.execute("SELECT owner::text FROM orochi.pipeline WHERE pipeline_id = %s",
                          [pid]).fetchone()[0] == role
        # losing INSERT on the target fails the pipeline at its next batch, with the reason
        db.execute(f'REVOKE INSERT ON m FROM "{role}"')
        kafka.produce(topic, ['{"id": 3}'], partition=0)
        assert "permission denied for table m" in sidecar_once(db_dsn)
        view = pipeline_row(db, pid)
        assert view["status"] == "failed" and "permission denied for table m" in view["last_error"]
        assert positions(db, pid) == {"0": 2}
