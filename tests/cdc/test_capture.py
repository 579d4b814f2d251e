"""What the columnar write path emits: inserts into the delta store and
into stripes, updates and deletes of stripe and delta rows, truncate,
hypertables, schema changes; nothing for rolled-back work, compaction or
vacuum, or tables no subscription covers.  Heap and orochi changes of one
transaction arrive together, in the order they were made, with its id."""

from __future__ import annotations

import psycopg
import pytest

from cdc_harness import (apply_events, assert_same_rows, cdc_once, create_subscription, dedupe, file_events,
                         make_copy)


def _events(out_dir):
    return dedupe(file_events(out_dir))


def _ops(events):
    return [(e["table"], e["op"]) for e in events]


def test_inserts_updates_deletes_of_stripes_and_delta(db, db_dsn, out_dir):
    db.execute("CREATE FOREIGN TABLE o (id int8, v text, x float8) SERVER orochi OPTIONS (delta_row_limit '100')")
    create_subscription(db, "s", ["o"], "file", "json", {"directory": out_dir, "key_columns": {"o": ["id"]}})
    assert cdc_once(db_dsn) == "cdc: s: 0 events"
    db.execute("INSERT INTO o SELECT g, 'v' || g, g / 2.0 FROM generate_series(1, 1000) g")   # stripes
    db.execute("INSERT INTO o VALUES (1001, 'small', 0.5), (1002, NULL, NULL)")                 # delta
    db.execute("UPDATE o SET v = v || '!' WHERE id IN (5, 1001)")     # a stripe row and a delta row
    db.execute("UPDATE o SET id = id + 10000 WHERE id = 7")          # a key change
    db.execute("DELETE FROM o WHERE id BETWEEN 10 AND 12 OR id = 1002")
    assert cdc_once(db_dsn) == "cdc: s: 1010 events"
    events = _events(out_dir)
    assert len([e for e in events if e["op"] == "c"]) == 1003
    updates = [e for e in events if e["op"] == "u"]
    assert sorted((e["before"]["v"], e["after"]["v"]) for e in updates) == [("small", "small!"), ("v5", "v5!")]
    assert all(e["key"] == {"id": e["after"]["id"]} for e in updates)
    key_change = [e for e in events if e["key"] in ({"id": 7}, {"id": 10007}) and e["op"] != "c" or
                  (e["op"] == "c" and e["key"] == {"id": 10007})]
    assert [(e["op"], e["key"]) for e in key_change] == [("d", {"id": 7}), ("c", {"id": 10007})]
    assert key_change[0]["lsn"] == key_change[1]["lsn"]  # one transaction
    deletes = sorted(e["before"]["id"] for e in events if e["op"] == "d" and e["key"] != {"id": 7})
    assert deletes == [10, 11, 12, 1002]
    make_copy(db, "o", "o_copy")
    apply_events(db, events, {"public.o": "o_copy"})
    assert assert_same_rows(db, "o", "o_copy") == 998


def test_rolled_back_work_never_appears(db, db_dsn, out_dir):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v text)")
    db.execute("CREATE FOREIGN TABLE o (id int, v text) SERVER orochi OPTIONS (delta_row_limit '5')")
    create_subscription(db, "s", ["h", "o"], "file", "json", {"directory": out_dir})
    cdc_once(db_dsn)
    with db.transaction():
        db.execute("INSERT INTO o VALUES (1, 'kept')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            with db.transaction():  # a savepoint, rolled back by the error
                db.execute("INSERT INTO o SELECT g, 'sp' FROM generate_series(100, 120) g")  # stripes
                db.execute("INSERT INTO h VALUES (1, 'a'), (1, 'dup')")
        db.execute("INSERT INTO h VALUES (2, 'kept')")
        db.execute("SAVEPOINT a")
        db.execute("UPDATE o SET v = 'gone' WHERE id = 1")
        db.execute("DELETE FROM h WHERE id = 2")
        db.execute("ROLLBACK TO SAVEPOINT a")
        db.execute("SAVEPOINT b")
        db.execute("INSERT INTO o VALUES (3, 'kept too')")
        db.execute("RELEASE SAVEPOINT b")
    db.execute("BEGIN")
    db.execute("INSERT INTO o SELECT g, 'rolled back' FROM generate_series(1, 50) g")
    db.execute("INSERT INTO h VALUES (50, 'rolled back')")
    db.execute("ROLLBACK")
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("INSERT INTO o SELECT g, 'failed' FROM generate_series(1, 50) g WHERE 1 / (g - 50) > -10")
    assert cdc_once(db_dsn) == "cdc: s: 3 events"
    events = _events(out_dir)
    assert [(e["table"], e["op"], e["after"]["v"]) for e in events] == \
        [("o", "c", "kept"), ("h", "c", "kept"), ("o", "c", "kept too")]
    assert len({e["txid"] for e in events}) == 1 and [e["index"] for e in events] == [0, 1, 2]


def test_heap_and_orochi_changes_keep_their_order(db, db_dsn, out_dir):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v int)")
    db.execute("CREATE FOREIGN TABLE o (id int, v int) SERVER orochi")
    create_subscription(db, "s", ["h", "o"], "file", "json", {"directory": out_dir})
    cdc_once(db_dsn)
    a = psycopg.connect(db_dsn, autocommit=False)
    b = psycopg.connect(db_dsn, autocommit=False)
    try:
        a.execute("INSERT INTO h VALUES (1, 1)")
        b.execute("INSERT INTO o VALUES (2, 2)")
        a.execute("INSERT INTO o VALUES (1, 1)")
        b.execute("INSERT INTO h VALUES (2, 2)")
        b.commit()  # b commits first: its changes come first
        a.execute("UPDATE h SET v = 10 WHERE id = 1")
        a.commit()
    finally:
        a.close()
        b.close()
    cdc_once(db_dsn)
    events = _events(out_dir)
    assert [(e["table"], e["op"], e["after"]["id"]) for e in events] == \
        [("o", "c", 2), ("h", "c", 2), ("h", "c", 1), ("o", "c", 1), ("h", "u", 1)]
    assert events[0]["lsn"] < events[2]["lsn"] and events[0]["txid"] != events[2]["txid"]


def test_truncate_and_hypertables(db, db_dsn, out_dir):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz NOT NULL, dev int, t float8) SERVER orochi")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute("CREATE TABLE h (id int PRIMARY KEY)")
    create_subscription(db, "s", ["m", "h"], "file", "json", {"directory": out_dir})
    cdc_once(db_dsn)
    db.execute("INSERT INTO m SELECT timestamptz '2024-01-01' + g * interval '1 hour', g % 3, g "
               "FROM generate_series(0, 71) g")
    db.execute("UPDATE m SET t = -t WHERE dev = 1 AND ts < '2024-01-02'")
    db.execute("DELETE FROM m WHERE dev = 2 AND ts < '2024-01-02'")
    db.execute("INSERT INTO h VALUES (1)")
    make_copy(db, "m", "m_copy")
    make_copy(db, "h", "h_copy")
    cdc_once(db_dsn)
    events = _events(out_dir)
    apply_events(db, events, {"public.m": "m_copy", "public.h": "h_copy"})
    assert assert_same_rows(db, "m", "m_copy") == 64
    db.execute("TRUNCATE h, m")
    db.execute("INSERT INTO m VALUES ('2024-02-01', 1, 1)")
    cdc_once(db_dsn)
    events = _events(out_dir)
    ops = [(e["table"], e["op"]) for e in events]
    assert ops.count(("m", "c")) == 72 + 8 + 1  # the update's key changes are a delete and a create each
    assert ops.count(("m", "d")) == 8 + 8
    assert ("h", "t") in ops and ("m", "t") in ops
    db.execute("TRUNCATE m_copy, h_copy")
    apply_events(db, events, {"public.m": "m_copy", "public.h": "h_copy"})
    assert assert_same_rows(db, "m", "m_copy") == 1
    assert assert_same_rows(db, "h", "h_copy") == 0


def test_columns_added_and_dropped(db, db_dsn, out_dir):
    db.execute("CREATE FOREIGN TABLE o (id int, t float8) SERVER orochi OPTIONS (delta_row_limit '5')")
    db.execute("INSERT INTO o SELECT g, g FROM generate_series(1, 20) g")   # a stripe
    db.execute("INSERT INTO o VALUES (21, 21)")                              # the delta store
    create_subscription(db, "s", ["o"], "file", "json", {"directory": out_dir, "key_columns": {"o": ["id"]}})
    cdc_once(db_dsn)
    db.execute("ALTER FOREIGN TABLE o ADD COLUMN note text DEFAULT 'n/a'")
    db.execute("DELETE FROM o WHERE id IN (1, 21)")  # rows stored before the column: its missing value
    db.execute("INSERT INTO o VALUES (22, 22, 'new')")
    db.execute("ALTER FOREIGN TABLE o DROP COLUMN t")
    db.execute("UPDATE o SET note = 'u' WHERE id = 2")
    cdc_once(db_dsn)
    events = _events(out_dir)[21:]
    assert [(e["op"], e["key"], e["before"], e["after"]) for e in events] == [
        ("d", {"id": 1}, {"id": 1, "t": 1.0, "note": "n/a"}, None),
        ("d", {"id": 21}, {"id": 21, "t": 21.0, "note": "n/a"}, None),
        ("c", {"id": 22}, None, {"id": 22, "t": 22.0, "note": "new"}),
        ("u", {"id": 2}, {"id": 2, "note": "n/a"}, {"id": 2, "note": "u"})]


def test_two_subscriptions_on_one_table(db, db_dsn, out_dir, receiver):
    db.execute("CREATE FOREIGN TABLE o (id int) SERVER orochi")
    create_subscription(db, "a", ["o"], "file", "json", {"directory": out_dir})
    create_subscription(db, "b", ["o"], "webhook", "json", {"url": receiver.url})
    cdc_once(db_dsn)
    db.execute("INSERT INTO o VALUES (1), (2)")
    db.execute("SELECT orochi.drop_cdc_subscription('a')")
    db.execute("INSERT INTO o VALUES (3)")
    cdc_once(db_dsn)
    assert [e["after"]["id"] for e in file_events(out_dir)] == []  # dropped before it delivered
    assert [e["after"]["id"] for e in receiver.events()] == [1, 2, 3]


def test_compaction_vacuum_and_uncovered_tables_emit_nothing(db, db_dsn, out_dir):
    db.execute("CREATE FOREIGN TABLE o (id int, v text) SERVER orochi OPTIONS (delta_row_limit '100')")
    db.execute("CREATE FOREIGN TABLE other (id int) SERVER orochi OPTIONS (delta_row_limit '100')")
    create_subscription(db, "s", ["o"], "file", "json", {"directory": out_dir})
    cdc_once(db_dsn)
    db.execute("INSERT INTO o SELECT g, 'x' FROM generate_series(1, 20) g")
    db.execute("INSERT INTO o SELECT g, 'y' FROM generate_series(21, 2000) g")
    db.execute("DELETE FROM o WHERE id % 2 = 0 AND id > 20")
    assert cdc_once(db_dsn) == "cdc: s: 2990 events"
    # a slot of our own sees every logical message from here on
    db.execute("SELECT pg_create_logical_replication_slot('probe', 'test_decoding')")
    db.execute("SELECT * FROM orochi.compact('o')")
    db.execute("SELECT * FROM orochi.vacuum('o', 0.1)")
    db.execute("INSERT INTO other SELECT generate_series(1, 2000)")
    db.execute("INSERT INTO other VALUES (1)")
    db.execute("DELETE FROM other WHERE id < 10")
    messages = db.execute("SELECT count(*) FROM pg_logical_slot_get_changes('probe', NULL, NULL) "
                          "WHERE data LIKE 'message:%'").fetchone()[0]
    assert messages == 0
    assert cdc_once(db_dsn) == "cdc: s: 0 events"
    make_copy(db, "o", "o_copy")
    apply_events(db, _events(out_dir), {"public.o": "o_copy"})
    assert assert_same_rows(db, "o", "o_copy") == 1010


def test_a_big_update_is_read_and_sent_in_parts(db, db_dsn, out_dir):
    db.execute("CREATE FOREIGN TABLE o (id int, v int) SERVER orochi")
    db.execute("INSERT INTO o SELECT g, 0 FROM generate_series(1, 6000) g")
    create_subscription(db, "s", ["o"], "file", "json", {"directory": out_dir, "key_columns": {"o": ["id"]},
                                                         "batch_size": 2500})
    cdc_once(db_dsn)
    db.execute("UPDATE o SET v = 1")  # more rows than capture.PENDING_UPDATES
    db.execute("DELETE FROM o WHERE id <= 3000")
    cdc_once(db_dsn)
    events = _events(out_dir)
    assert [e["op"] for e in events].count("r") == 6000
    updates = [e for e in events if e["op"] == "u"]
    assert len(updates) == 6000 and all(e["before"]["v"] == 0 and e["after"]["v"] == 1 for e in updates)
    assert sorted(e["key"]["id"] for e in updates) == list(range(1, 6001))
    assert len(set(e["lsn"] for e in updates)) == 1
    make_copy(db, "o", "o_copy")
    apply_events(db, events, {"public.o": "o_copy"})
    assert assert_same_rows(db, "o", "o_copy") == 3000


def test_every_way_of_writing_is_captured(db, db_dsn, out_dir):
    """COPY FROM (text and binary), INSERT ... RETURNING, UPDATE ... FROM,
    DELETE ... USING, a writable CTE, a trigger's writes and a PL/pgSQL
    loop: each reaches the orochi table's events, and the events give the
    table back."""
    db.execute("CREATE FOREIGN TABLE o (id int, v text, n numeric) SERVER orochi OPTIONS (delta_row_limit '20')")
    db.execute("CREATE TABLE src (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO src SELECT g, 's' || g FROM generate_series(1, 40) g")
    db.execute("CREATE TABLE audit (id int PRIMARY KEY, v text)")
    db.execute("""CREATE FUNCTION audit_to_o() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN INSERT INTO o VALUES (NEW.id, 'from trigger', NULL); RETURN NEW; END $$""")
    db.execute("CREATE TRIGGER audit_to_o AFTER INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_to_o()")
    create_subscription(db, "s", ["o"], "file", "json", {"directory": out_dir, "key_columns": {"o": ["id"]}})
    assert cdc_once(db_dsn) == "cdc: s: 0 events"
    with db.cursor().copy("COPY o FROM STDIN") as copy:
        for i in range(1, 61):
            copy.write_row((i, f"copied {i}", i * 1.5))
    with db.cursor() as cur:
        cur.execute("SELECT 1000 + g, 'binary', g FROM generate_series(1, 30) g")
        rows = cur.fetchall()
    with db.cursor().copy("COPY o (id, v, n) FROM STDIN (FORMAT binary)") as copy:
        copy.set_types(["int4", "text", "numeric"])
        for row in rows:
            copy.write_row(row)
    assert db.execute("INSERT INTO o VALUES (2000, 'returned', 1) RETURNING id").fetchone() == (2000,)
    db.execute("UPDATE o SET v = src.v FROM src WHERE o.id = src.id AND src.id % 3 = 0")
    db.execute("DELETE FROM o USING src WHERE o.id = src.id AND src.id % 7 = 0")
    db.execute("WITH changed AS (UPDATE o SET v = 'cte' WHERE id BETWEEN 1001 AND 1005 RETURNING id, v, n) "
               "INSERT INTO o SELECT id + 5000, v, n FROM changed")
    db.execute("INSERT INTO audit VALUES (3000, 'x'), (3001, 'y')")
    db.execute("DO $$ BEGIN FOR i IN 1..5 LOOP UPDATE o SET n = coalesce(n, 0) + i WHERE id = 2000; END LOOP; END $$")
    assert cdc_once(db_dsn) == f"cdc: s: {98 + 23 + 5} events"
    events = _events(out_dir)
    ops = {op: sum(1 for e in events if e["op"] == op) for op in "cud"}
    # src holds ids 1..40: 13 rows updated from it, 5 deleted
    assert ops == {"c": 60 + 30 + 1 + 5 + 2, "u": 13 + 5 + 5, "d": 5}, ops
    assert [e["after"]["v"] for e in events if e["after"] and e["after"]["id"] in (3000, 3001)] == ["from trigger"] * 2
    make_copy(db, "o", "o_copy")
    apply_events(db, events, {"public.o": "o_copy"})
    assert assert_same_rows(db, "o", "o_copy") == 60 + 30 + 1 - 5 + 5 + 2
