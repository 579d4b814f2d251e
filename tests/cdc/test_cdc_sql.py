"""The SQL surface: creating subscriptions (and the errors of bad ones),
their states, listing, statistics, dropping (with the slot), privileges."""

from __future__ import annotations

import json

import pytest
from psycopg import errors

from cdc_harness import cdc_once, create_subscription, file_events, stats


def _create(db, tables, sink="file", fmt="json", options=None, name="s"):
    return db.execute("SELECT orochi.create_cdc_subscription(%s, %s::regclass[], %s, %s, %s::jsonb)",
                      [name, tables, sink, fmt, json.dumps(options or {})]).fetchone()[0]


def _slots(db):
    return [r[0] for r in db.execute("SELECT slot_name FROM pg_replication_slots "
                                     "WHERE database = current_database() ORDER BY 1").fetchall()]


def test_bad_subscriptions_are_refused_at_creation(db, out_dir, receiver):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v text)")
    db.execute("CREATE TABLE nokey (a int, b text)")
    db.execute("CREATE TEMP TABLE tmp (id int PRIMARY KEY)")
    db.execute("CREATE UNLOGGED TABLE unl (id int PRIMARY KEY)")
    db.execute("CREATE VIEW v AS SELECT * FROM h")
    db.execute("CREATE FOREIGN TABLE o (a int, b text) SERVER orochi")
    db.execute("CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id)")
    files = {"directory": out_dir}
    cases = [
        (["nokey"], "file", "json", files, errors.ObjectNotInPrerequisiteState,
         'table "nokey" has no usable key: no primary key or replica identity'),
        (["tmp"], "file", "json", files, errors.FeatureNotSupported, 'table "tmp" is temporary'),
        (["unl"], "file", "json", files, errors.FeatureNotSupported, 'table "unl" is unlogged'),
        (["v"], "file", "json", files, errors.WrongObjectType, '"v" is not a table'),
        (["parted"], "file", "json", files, errors.FeatureNotSupported, '"parted" is a partitioned table'),
        (["h", "h"], "file", "json", files, errors.InvalidParameterValue, 'table "h" is listed twice'),
        ([], "file", "json", files, errors.InvalidParameterValue, "needs at least one table"),
        (["h"], "ftp", "json", files, errors.InvalidParameterValue, 'unknown CDC sink "ftp"'),
        (["h"], "file", "avro", files, errors.InvalidParameterValue, 'unknown CDC format "avro"'),
        (["h"], "file", "json", {}, errors.InvalidParameterValue, 'option "directory" is required'),
        (["h"], "file", "json", {**files, "batchsize": 3}, errors.InvalidParameterValue, 'unknown option "batchsize"'),
        (["h"], "file", "json", {**files, "max_lag": "lots"}, errors.InvalidParameterValue, 'option "max_lag"'),
        (["h"], "file", "json", {"directory": "relative"}, errors.InvalidParameterValue, "must be an absolute path"),
        (["h"], "file", "json", {"directory": out_dir + "/missing"}, errors.SqlclientUnableToEstablishSqlconnection,
         "does not exist"),
        (["h"], "webhook", "json", {"url": "ftp://x"}, errors.InvalidParameterValue, "http:// or https:// URL"),
        (["h"], "webhook", "json", {"url": f"http://127.0.0.1:{receiver.port + 1}/x"},
         errors.SqlclientUnableToEstablishSqlconnection, "does not answer"),
        (["h"], "kafka", "json", {"bootstrap_servers": f"127.0.0.1:{receiver.port + 1}"},
         errors.SqlclientUnableToEstablishSqlconnection, "no Kafka broker of the subscription answers"),
        (["h"], "kafka", "json", {"bootstrap_servers": "127.0.0.1:1", "librdkafka": {"acks": "1"}},
         errors.InvalidParameterValue, "set by the sink itself"),
        (["h"], "file", "json", {**files, "key_columns": {"h": ["v"]}}, errors.InvalidParameterValue,
         "must be among its replica identity columns"),
        (["o"], "file", "json", {**files, "key_columns": {"o": ["zz"]}}, errors.UndefinedColumn,
         'column "zz" of table "o" does not exist'),
        (["o"], "file", "json", {**files, "key_columns": {"h": ["id"]}}, errors.InvalidParameterValue,
         "which the subscription does not capture"),
    ]
    for tables, sink, fmt, options, error, text in cases:
        with pytest.raises(error, match=text):
            _create(db, tables, sink, fmt, options)
    with pytest.raises(errors.UndefinedTable, match='relation "nope" does not exist'):
        _create(db, ["nope"], options=files)
    with pytest.raises(errors.InvalidParameterValue, match="name cannot be NULL"):
        _create(db, ["h"], options=files, name=None)
    # a table without a primary key is fine with REPLICA IDENTITY FULL; an orochi table always
    db.execute("ALTER TABLE nokey REPLICA IDENTITY FULL")
    _create(db, ["h", "nokey", "o"], options=files)
    with pytest.raises(errors.DuplicateObject, match='CDC subscription "s" already exists'):
        _create(db, ["h"], options=files)
    # nothing half-made by the refusals
    assert db.execute("SELECT count(*) FROM orochi.list_cdc_subscriptions()").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM pg_publication WHERE pubname LIKE 'orochi_cdc_%'").fetchone()[0] == 1
    assert _slots(db) == []


def test_wal_level_must_be_logical(make_cluster, out_dir):
    pg = make_cluster("replica", settings={"wal_level": "replica", "max_wal_senders": 2})
    pg.create_database("app")
    with pg.connect("app", autocommit=True) as db:
        db.execute("CREATE TABLE h (id int PRIMARY KEY)")
        with pytest.raises(errors.ObjectNotInPrerequisiteState,
                           match='logical decoding requires wal_level "logical"') as info:
            _create(db, ["h"], options={"directory": out_dir})
        assert "wal_level = logical" in info.value.diag.message_hint


def test_states_list_stats_and_drop(db, db_dsn, out_dir):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v text)")
    db.execute("CREATE FOREIGN TABLE o (a int, b text) SERVER orochi")
    db.execute("INSERT INTO h VALUES (1, 'a')")
    sid = _create(db, ["h", "o"], options={"directory": out_dir})
    listed = db.execute("SELECT subscription_id, name, sink, format, tables::text[], status, snapshot_done "
                        "FROM orochi.list_cdc_subscriptions()").fetchall()
    assert listed == [(sid, "s", "file", "json", ["h", "o"], "created", False)]
    assert stats(db, "s")["status"] == "created" and stats(db, "s")["retained_wal_bytes"] is None
    assert db.execute("SELECT orochi.stop_cdc_subscription('s')").fetchone()[0] == "created"
    assert db.execute("SELECT orochi.start_cdc_subscription('s')").fetchone()[0] == "running"
    assert db.execute("SELECT orochi.start_cdc_subscription('s')").fetchone()[0] == "running"  # a NOTICE
    assert stats(db, "s")["status"] == "starting"  # no worker yet
    assert cdc_once(db_dsn) == "cdc: s: 0 events and 1 snapshot event"
    st = stats(db, "s")
    assert st["snapshot_events"] == 1 and st["retained_wal_bytes"] is not None
    assert _slots(db) == [f"orochi_cdc_{db.execute('SELECT oid FROM pg_database WHERE datname = current_database()').fetchone()[0]}_{sid}"]
    db.execute("INSERT INTO h VALUES (2, 'b')")
    db.execute("INSERT INTO o VALUES (1, 'x')")
    assert cdc_once(db_dsn) == "cdc: s: 2 events"
    st = stats(db, "s")
    assert (st["events_sent"], st["transactions"], st["errors"]) == (2, 2, 0)
    assert st["last_committed_lsn"] is not None and st["last_commit_time"] is not None
    assert db.execute("SELECT orochi.stop_cdc_subscription('s')").fetchone()[0] == "stopped"
    db.execute("INSERT INTO h VALUES (3, 'c')")
    assert cdc_once(db_dsn) == "cdc: no subscription running"  # stopped: the slot keeps the change
    db.execute("SELECT orochi.start_cdc_subscription('s')")
    assert cdc_once(db_dsn) == "cdc: s: 1 event"
    assert [e["op"] for e in file_events(out_dir)] == ["r", "c", "c", "c"]
    db.execute("SELECT orochi.drop_cdc_subscription('s')")
    assert _slots(db) == []
    assert db.execute("SELECT count(*) FROM pg_publication WHERE pubname LIKE 'orochi_cdc_%'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM orochi.cdc_stats").fetchone()[0] == 0
    with pytest.raises(errors.UndefinedObject, match='CDC subscription "s" does not exist'):
        db.execute("SELECT orochi.drop_cdc_subscription('s')")
    db.execute("SELECT orochi.drop_cdc_subscription('s', if_exists => true)")
    with pytest.raises(errors.UndefinedObject):
        db.execute("SELECT orochi.start_cdc_subscription('s')")


def test_dropping_a_table_removes_it_from_its_subscriptions(db, db_dsn, out_dir):
    db.execute("CREATE TABLE h (id int PRIMARY KEY)")
    db.execute("CREATE FOREIGN TABLE o (a int) SERVER orochi")
    create_subscription(db, "s", ["h", "o"], "file", "json", {"directory": out_dir})
    cdc_once(db_dsn)
    db.execute("DROP FOREIGN TABLE o")
    db.execute("INSERT INTO h VALUES (1)")
    assert cdc_once(db_dsn) == "cdc: s: 1 event"
    assert db.execute("SELECT tables::text[] FROM orochi.list_cdc_subscriptions()").fetchone()[0] == ["h"]


def test_privileges(db, db_dsn, pg_cluster, db_name, out_dir, receiver):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v text)")
    db.execute("CREATE TABLE secret (id int PRIMARY KEY)")
    db.execute("CREATE TABLE guarded (id int PRIMARY KEY)")
    db.execute("ALTER TABLE guarded ENABLE ROW LEVEL SECURITY")
    db.execute("CREATE ROLE alice LOGIN")
    db.execute("CREATE ROLE bob LOGIN")
    db.execute("GRANT SELECT ON h, guarded TO alice")
    hook = {"url": receiver.url, "secret": "s3cr3t"}
    with pg_cluster.connect(db_name, user="alice", autocommit=True) as alice:
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table secret"):
            _create(alice, ["secret"], "webhook", "json", hook)
        with pytest.raises(errors.InsufficientPrivilege, match='table "guarded" has row-level security'):
            _create(alice, ["guarded"], "webhook", "json", hook)
        with pytest.raises(errors.InsufficientPrivilege, match="writes files on the server"):
            _create(alice, ["h"], "file", "json", {"directory": out_dir})
        _create(alice, ["h"], "webhook", "json", hook, name="mine")
        with pytest.raises(errors.InsufficientPrivilege, match="read the change message key"):
            alice.execute("SELECT orochi.cdc_message_key()")
        alice.execute("SELECT orochi.start_cdc_subscription('mine')")
    db.execute("CREATE TABLE h2 (id int PRIMARY KEY)")
    db.execute("GRANT SELECT ON h2 TO bob")
    with pg_cluster.connect(db_name, user="bob", autocommit=True) as bob:
        with pytest.raises(errors.InsufficientPrivilege, match='must be owner of CDC subscription "mine"'):
            bob.execute("SELECT orochi.stop_cdc_subscription('mine')")
        with pytest.raises(errors.InsufficientPrivilege):
            bob.execute("SELECT orochi.drop_cdc_subscription('mine')")
        with pytest.raises(errors.InsufficientPrivilege, match='must be owner of CDC subscription "mine"'):
            bob.execute("SELECT * FROM orochi.cdc_subscription_stats('mine')")
        with pytest.raises(errors.DuplicateObject, match='CDC subscription "mine" already exists'):
            _create(bob, ["h2"], "webhook", "json", hook, name="mine")  # names are shared, owners not told
        assert bob.execute("SELECT count(*) FROM orochi.list_cdc_subscriptions()").fetchone()[0] == 0
        assert bob.execute("SELECT count(*) FROM orochi.cdc_errors").fetchone()[0] == 0
        for table in ("cdc_subscription", "cdc_subscription_table", "cdc_stats", "cdc_error_log"):
            with pytest.raises(errors.InsufficientPrivilege):
                bob.execute(f"SELECT * FROM orochi.{table}")
        with pytest.raises(errors.InsufficientPrivilege):
            bob.execute("SELECT orochi.cdc_sync_publication(1)")
    # a member of the owner role manages it; so does a superuser
    db.execute("CREATE ROLE carol LOGIN IN ROLE alice")
    with pg_cluster.connect(db_name, user="carol", autocommit=True) as carol:
        assert carol.execute("SELECT orochi.stop_cdc_subscription('mine')").fetchone()[0] == "stopped"
        assert carol.execute("SELECT status FROM orochi.cdc_subscription_stats('mine')").fetchone()[0] == "stopped"
    assert db.execute("SELECT orochi.start_cdc_subscription('mine')").fetchone()[0] == "running"
    listed = db.execute("SELECT owner::text, options FROM orochi.list_cdc_subscriptions()").fetchone()
    assert listed == ("alice", {"url": receiver.url, "secret": "********"})
    # the snapshot reads as alice; the stream goes on while she may read the table
    db.execute("INSERT INTO h VALUES (1, 'a')")
    assert cdc_once(db_dsn) == "cdc: mine: 0 events and 1 snapshot event"
    db.execute("REVOKE SELECT ON h FROM alice")
    db.execute("INSERT INTO h VALUES (2, 'b')")
    assert cdc_once(db_dsn).startswith("cdc: mine: failed: permission denied for table h")
    assert stats(db, "mine")["status"] == "failed"
    assert [e["after"]["id"] for e in receiver.events()] == [1]


def test_forged_change_messages_are_ignored(db, db_dsn, pg_cluster, db_name, out_dir):
    from orochi_fdw.cdc import payload
    from orochi_fdw.bridge.batch import Column, WireKind

    db.execute("CREATE FOREIGN TABLE o (a int) SERVER orochi")
    db.execute("CREATE ROLE mallory LOGIN")
    create_subscription(db, "s", ["o"], "file", "json", {"directory": out_dir})
    cdc_once(db_dsn)
    relid = db.execute("SELECT 'o'::regclass::oid").fetchone()[0]
    meta = [payload.ColumnMeta("a", 23, -1, WireKind.INT32)]
    content = payload.encode("c", relid, "public", "o", meta, 1, after={"a": Column.from_pylist(WireKind.INT32, [666])})
    with pg_cluster.connect(db_name, user="mallory", autocommit=True) as mallory:
        for forged in (content, b"\0" * 32 + content):
            mallory.execute("SELECT pg_logical_emit_message(true, %s, %s)", [payload.PREFIX, forged])
    db.execute("INSERT INTO o VALUES (1)")
    assert cdc_once(db_dsn) == "cdc: s: 1 event"
    assert [e["after"] for e in file_events(out_dir)] == [{"a": 1}]


def test_a_lost_slot_fails_the_subscription_and_a_start_takes_a_new_snapshot(db, db_dsn, out_dir):
    db.execute("CREATE TABLE h (id int PRIMARY KEY)")
    db.execute("INSERT INTO h VALUES (1)")
    create_subscription(db, "s", ["h"], "file", "json", {"directory": out_dir})
    assert cdc_once(db_dsn) == "cdc: s: 0 events and 1 snapshot event"
    db.execute("SELECT pg_drop_replication_slot(slot_name) FROM orochi.cdc_subscription")
    db.execute("INSERT INTO h VALUES (2)")
    assert "its replication slot" in cdc_once(db_dsn)
    assert stats(db, "s")["status"] == "failed" and "is gone" in stats(db, "s")["current_error"]
    db.execute("SELECT orochi.start_cdc_subscription('s')")
    assert cdc_once(db_dsn) == "cdc: s: 0 events and 2 snapshot events"
    assert [(e["op"], e["after"]["id"]) for e in file_events(out_dir)] == [("r", 1), ("r", 1), ("r", 2)]
