"""Bad records go to orochi.pipeline_errors with their position, and the
pipeline goes on, until max_errors."""

from __future__ import annotations

import json

import pytest

from pipeline_harness import create_pipeline, dead_letters, pipeline_row, positions, run_batches


def _kafka_pipeline(db, kafka, topic, fmt="json", **options):
    return create_pipeline(db, "p", "kafka", "m", fmt,
                           {"bootstrap_servers": kafka.bootstrap, "topic": topic, **options})


@pytest.mark.parametrize("kind", ["heap", "orochi"])
def test_each_kind_of_bad_json_record_is_a_dead_letter(db, db_dsn, kafka, topic, kind):
    table = "TABLE" if kind == "heap" else "FOREIGN TABLE"
    server = "" if kind == "heap" else "SERVER orochi"
    db.execute(f"CREATE {table} m (id int4, price numeric(5,2), note varchar(5)) {server}")
    kafka.create_topic(topic, partitions=1)
    values = [
        json.dumps({"id": 1, "price": 1.5, "note": "a"}),
        '{"id": 2, "price": ',                                   # malformed JSON
        json.dumps({"id": "three", "price": 1}),                 # a value that does not convert
        json.dumps({"id": 4, "note": "x" * 300}),                # larger than max_record_bytes
        json.dumps({"id": 5, "colour": "red"}),                  # a field that names no column
        json.dumps({"id": 6, "price": 12345.678}),               # numeric(5,2) overflow: refused by PostgreSQL
        json.dumps({"id": 7, "note": "toolong"}),                # varchar(5)
        json.dumps({"id": 8, "price": "2.25", "note": "ok"}),
        json.dumps([1, 2]),                                      # not an object
        json.dumps({"id": 2 ** 40}),                             # out of range for integer
    ]
    kafka.produce(topic, values, partition=0)
    pid = _kafka_pipeline(db, kafka, topic, max_record_bytes=200)
    results = run_batches(db_dsn, pid)
    assert sum(r.rows for r in results) == 2 and sum(r.errors for r in results) == 8
    assert db.execute("SELECT id, price::text, note FROM m ORDER BY id").fetchall() == [(1, "1.50", "a"),
                                                                                      (8, "2.25", "ok")]
    letters = dead_letters(db, pid)
    by_offset = {d["position"]: d for d in letters}
    assert sorted(by_offset) == [1, 2, 3, 4, 5, 6, 8, 9]
    assert all(d["stream"] == "0" for d in letters)
    assert by_offset[1]["error"].startswith("invalid JSON") and by_offset[1]["raw_text"] == values[1]
    assert by_offset[2]["error"] == 'column "id": invalid input syntax for type integer: "three"'
    assert by_offset[2]["column_name"] == "id" and by_offset[2]["sqlstate"] == "22P02"
    assert "larger than max_record_bytes (200)" in by_offset[3]["error"]
    assert by_offset[3]["raw_size"] == len(values[3]) and len(by_offset[3]["raw_record"]) == 200
    assert by_offset[4]["error"].startswith('unknown column "colour"')
    assert by_offset[5]["sqlstate"] == "22003" and by_offset[5]["column_name"] == "price"
    assert by_offset[6]["error"] == 'column "note": value too long for type character varying(5)'
    assert "must be a JSON object" in by_offset[8]["error"]
    assert by_offset[9]["sqlstate"] == "22003"
    view = pipeline_row(db, pid)
    assert view["errors"] == 8 and view["rows_loaded"] == 2 and view["status"] != "failed"
    assert positions(db, pid) == {"0": 10}


def test_csv_errors_too_many_and_too_few_fields(db, db_dsn, kafka, topic):
    db.execute("CREATE TABLE m (a int, b text, c float8)")
    kafka.create_topic(topic, partitions=1)
    values = ["1,x,1.5", "2,y,2.5,extra", "3,z", "4,w,abc", "5,\"q,uoted\",5.5\n6,six,6.5"]
    kafka.produce(topic, values, partition=0)
    pid = _kafka_pipeline(db, kafka, topic, fmt="csv")
    run_batches(db_dsn, pid)
    assert db.execute("SELECT a, b, c FROM m ORDER BY a").fetchall() == [(1, "x", 1.5), (5, "q,uoted", 5.5),
                                                                        (6, "six", 6.5)]
    letters = {d["position"]: d for d in dead_letters(db, pid)}
    assert letters[1]["error"] == "extra data after last expected column: 4 fields, expected 3"
    assert letters[2]["error"] == 'missing data for column "c": 2 fields, expected 3'
    assert letters[3]["error"] == 'column "c": invalid input syntax for type double precision: "abc"'
    assert all(d["sqlstate"] in ("22P04", "22P02") for d in letters.values())


def test_max_errors_stops_the_pipeline_at_the_record_that_crosses_it(db, db_dsn, kafka, topic):
    db.execute("CREATE TABLE m (id int)")
    kafka.create_topic(topic, partitions=1)
    values = [json.dumps({"id": i}) if i % 4 else "not json" for i in range(1, 41)]  # bad: 4, 8, 12 ...
    kafka.produce(topic, values, partition=0)
    pid = _kafka_pipeline(db, kafka, topic, max_errors=2)
    results = run_batches(db_dsn, pid)
    assert results[-1].failed
    # the third bad record (offset 11, the 12th record) stops it: everything before it is loaded
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM m").fetchone()[0] == [i for i in range(1, 12) if i % 4]
    assert positions(db, pid) == {"0": 12}
    view = pipeline_row(db, pid)
    assert view["status"] == "failed" and view["errors"] == 3
    assert "stopped after 3 bad records (max_errors 2)" in view["last_error"]
    assert view["current_error"] == view["last_error"]

    db.execute("SELECT orochi.resume_pipeline(%s)", [pid])  # max_errors counts again from here
    results = run_batches(db_dsn, pid)
    assert results[-1].failed  # records 16, 20, 24 are bad again: stops after 24
    assert positions(db, pid) == {"0": 24}
    db.execute("SELECT orochi.resume_pipeline(%s)", [pid])
    run_batches(db_dsn, pid)
    db.execute("SELECT orochi.resume_pipeline(%s)", [pid])
    run_batches(db_dsn, pid)
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM m").fetchone()[0] == [i for i in range(1, 41) if i % 4]
    assert pipeline_row(db, pid)["errors"] == 10


def test_unknown_fields_ignored_when_asked_and_paths_map_nested_values(db, db_dsn, kafka, topic):
    db.execute("CREATE TABLE m (id int, city text, first_tag text, at timestamptz)")
    kafka.create_topic(topic, partitions=1)
    doc = {"id": 1, "where": {"city": "Oslo", "tags": ["a", "b"]}, "ts_ms": 1704067200123, "extra": True}
    kafka.produce(topic, [json.dumps(doc)], partition=0)
    pid = _kafka_pipeline(db, kafka, topic, epoch_unit="ms",
                          columns={"id": "$.id", "city": "$.where.city", "first_tag": "$.where.tags[0]",
                                   "at": "ts_ms"})
    run_batches(db_dsn, pid)
    assert db.execute("SELECT id, city, first_tag, at::text FROM m").fetchall() == [
        (1, "Oslo", "a", "2024-01-01 00:00:00.123+00")]
    assert dead_letters(db, pid) == []
