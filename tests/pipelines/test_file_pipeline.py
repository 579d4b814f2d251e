"""File pipelines: followed logs (partial lines, rotation, truncation),
whole files (CSV with a header, compressed), positions in bytes, and the
sidecar killed in the middle."""

from __future__ import annotations

import gzip
import json
import os

import pytest
import zstandard

from pipeline_harness import (create_pipeline, dead_letters, pipeline_row, positions, run_batches, sidecar_once,
                              wait_until)


def _lines(lo: int, hi: int) -> str:
    return "".join(json.dumps({"id": i, "msg": f"line {i}"}) + "\n" for i in range(lo, hi))


def _ids(db) -> list[int]:
    return db.execute("SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM m").fetchone()[0]


def test_followed_log_with_partial_lines_rotation_and_truncation(db, db_dsn, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    os.chmod(tmp_path, 0o755)
    db.execute("CREATE TABLE m (id int, msg text)")
    app = logs / "app.log"
    app.write_text(_lines(0, 10) + '{"id": 10, "msg": "li')  # the last line is not complete yet
    pid = create_pipeline(db, "logs", "file", "m", "jsonl", {"directory": str(logs), "glob": "app.log*"})
    run_batches(db_dsn, pid)
    assert _ids(db) == list(range(10))
    size_done = len(_lines(0, 10))
    assert list(positions(db, pid).values()) == [size_done]
    with open(app, "a") as f:
        f.write('ne 10"}\n' + _lines(11, 15))
    run_batches(db_dsn, pid)
    assert _ids(db) == list(range(15))

    os.rename(app, logs / "app.log.1")  # rotation: the old file keeps its position
    with open(logs / "app.log.1", "a") as f:
        f.write(_lines(15, 17))  # written by the old handle after the rename
    app.write_text(_lines(17, 20))
    run_batches(db_dsn, pid)
    assert _ids(db) == list(range(20))
    assert len(positions(db, pid)) == 2

    (logs / "app.log.1").unlink()  # gone: its position is forgotten
    os.truncate(app, 0)  # copy-and-truncate: read again from the start
    app.write_text(_lines(20, 22))
    run_batches(db_dsn, pid)
    assert _ids(db) == list(range(22))
    assert list(positions(db, pid).values()) == [len(_lines(20, 22))]
    view = pipeline_row(db, pid)
    assert view["rows_loaded"] == 22 and view["lag"] == 0 and view["lag_unit"] == "bytes"


def test_whole_csv_files_with_headers_and_compression(db, db_dsn, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    db.execute("CREATE FOREIGN TABLE m (id int, name text, score numeric, day date) SERVER orochi")
    (data / "a.csv").write_text('id,name,score,day\n1,"Smith, J",1.5,2024-01-02\n2,"multi\nline",2.25,2024-01-03\n'
                                "3,x,NaN,2024-01-04")  # last line without a line break: read too (not followed)
    (data / "b.csv.gz").write_bytes(gzip.compress(b"day,score,id,name\n2024-02-01,10,4,gz\n2024-02-02,11,5,gz2\n"))
    (data / "c.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(b"id,name,score,day\n6,zst,0.1,2024-03-01\n"
                                                                         b"7,bad,notanumber,2024-03-02\n"))
    (data / "skip.txt").write_text("not matched")
    pid = create_pipeline(db, "csvs", "file", "m", "csv", {"directory": str(data), "glob": "*.csv*",
                                                          "follow": False, "batch_size": 2})
    run_batches(db_dsn, pid)
    rows = db.execute("SELECT id, name, score::text, day::text FROM m ORDER BY id").fetchall()
    assert rows == [(1, "Smith, J", "1.5", "2024-01-02"), (2, "multi\nline", "2.25", "2024-01-03"),
                    (3, "x", "NaN", "2024-01-04"), (4, "gz", "10", "2024-02-01"), (5, "gz2", "11", "2024-02-02"),
                    (6, "zst", "0.1", "2024-03-01")]
    letters = dead_letters(db, pid)
    assert [(d["name"].rsplit("/", 1)[1], d["error"]) for d in letters] == [
        ("c.csv.zst", 'column "score": invalid input syntax for type numeric: "notanumber"')]
    assert letters[0]["position"] == len(b"id,name,score,day\n6,zst,0.1,2024-03-01\n")
    view = pipeline_row(db, pid)
    assert all(p["done"] for p in view["positions"]) and len(view["positions"]) == 3
    (data / "a.csv").write_text("id,name,score,day\n99,late,1,2024-01-01\n")  # done files are not read again
    run_batches(db_dsn, pid)
    assert db.execute("SELECT count(*) FROM m").fetchone()[0] == 6


def test_json_documents(db, db_dsn, tmp_path):
    data = tmp_path / "docs"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    db.execute("CREATE TABLE m (id int, msg text)")
    (data / "one.json").write_text(json.dumps([{"id": 1, "msg": "a"}, {"id": 2, "msg": "b"}, {"id": "x"}]))
    (data / "two.json").write_text(json.dumps({"id": 3, "msg": "c"}))
    (data / "three.json").write_text('[{"id": 4},')
    pid = create_pipeline(db, "docs", "file", "m", "json", {"directory": str(data), "follow": False})
    run_batches(db_dsn, pid)
    assert _ids(db) == [1, 2, 3]
    errors = sorted((d["name"].rsplit("/", 1)[1], d["error"].split(":")[0]) for d in dead_letters(db, pid))
    assert errors == [("one.json", "item 2"), ("three.json", "invalid JSON")]


def test_file_pipeline_survives_the_sidecar_killed(db, db_dsn, tmp_path, start_sidecar):
    data = tmp_path / "feed"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    db.execute("CREATE TABLE m (id int, msg text)")
    for k in range(3):
        (data / f"part{k}.jsonl").write_text(_lines(k * 500, (k + 1) * 500))
    pid = create_pipeline(db, "feed", "file", "m", "jsonl", {"directory": str(data), "batch_size": 120,
                                                            "max_latency": 0.05})
    for spec in ("copied:2", "positioned:3", "committed:2"):
        sidecar = start_sidecar(db_dsn, env={"OROCHI_PIPELINE_FAULT": spec})
        sidecar.wait_for_log("fault point")
        sidecar.kill9()
        ids = _ids(db)
        assert len(ids) == len(set(ids))
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: len(_ids(db)) == 1500, what="every line")
    sidecar.terminate()
    assert _ids(db) == list(range(1500))
    assert db.execute("SELECT count(*) FROM m WHERE msg = 'line ' || id").fetchone()[0] == 1500


def test_watching_wakes_the_worker(db, db_dsn, tmp_path, start_sidecar):
    data = tmp_path / "watched"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    db.execute("CREATE TABLE m (id int, msg text)")
    pid = create_pipeline(db, "w", "file", "m", "jsonl", {"directory": str(data), "poll_interval": 3600,
                                                         "max_latency": 0.05})
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: pipeline_row(db, pid)["status"] == "running", what="the worker")
    (data / "x.jsonl").write_text(_lines(0, 5))  # found by inotify: no hour-long poll
    try:
        wait_until(lambda: len(_ids(db)) == 5, what="the new file", timeout=10)
    except AssertionError:
        print(sidecar.log()[-6000:])
        raise
    sidecar.terminate()
