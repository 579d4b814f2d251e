"""Types: the same rows in a heap table and in an orochi table give the
same events (the heap table is the oracle), in both formats, for inserts,
updates (old and new rows) and the initial snapshot; Debezium's mapping is
pinned value by value; the json format's values read back into the same
rows."""

from __future__ import annotations

import base64
import datetime
import json
import random
import uuid

import pytest

from cdc_harness import apply_events, assert_same_rows, cdc_once, create_subscription, dedupe, file_events, make_copy

COLUMNS = """
    id int PRIMARY KEY, b boolean, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
    n numeric, n2 numeric(10,2), t text, vc varchar(20), c char(4), by bytea, d date, tm time, tm3 time(3),
    ttz timetz, ts timestamp, ts3 timestamp(3), tstz timestamptz, iv interval, u uuid, j jsonb,
    ai int[], at text[], inet_ inet, mood mood, pos posint, vec orochi.vector(2)
"""

PINNED_ROW = ("(1, true, 1, 2, 3, 1.5, 'NaN', 1.5, 12.34, 'x', 'vc', 'ab', '\\x0102', '2024-03-01', '10:00:00.5', "
              "'10:00:00.1234', '10:00:00+02', '2024-03-01 10:00:00.123456', '2024-03-01 10:00:00.123', "
              "'2024-03-01 10:00:00+00', '1 mon 2 days 03:00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
              "'{\"a\": [1, 2]}', '{1,2,NULL}', '{\"a b\",\"c\\\"d\",NULL}', '10.0.0.1/32', 'happy', 7, "
              "'[1,2.5]')")

EDGE_ROWS = [
    "(2, false, -32768, -2147483648, -9223372036854775808, '-Infinity', 'Infinity', 'NaN', -0.01, '', "
    "'', '', '\\x', 'infinity', '24:00:00', '00:00:00', '23:59:59.999999-14', '-infinity', 'infinity', "
    "'infinity', '-1 years -2 mons +3 days -04:05:06.7', '00000000-0000-0000-0000-000000000000', '[]', "
    "'{}', '{}', '::1', 'sad', 1, '[0,-0.1]')",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(4, true, 32767, 2147483647, 9223372036854775807, 3.4028235e38, 1e-308, 123456789012345678901234567890.123, "
    "99999999.99, 'unicode ✓ ünï', 'tab\tnewline\n', 'é', '\\xdeadbeef', '0044-03-15 BC', '00:00:00.000001', "
    "'23:59:59.999', '12:00:00+05:30', '0001-01-01 00:00:00 BC', '1999-12-31 23:59:59.999', "
    "'2000-01-01 00:00:00.000001+00', 'P1Y2M3DT4H5M6.5S', 'ffffffff-ffff-ffff-ffff-ffffffffffff', "
    "'[1, \"two\", {\"three\": 3.0}, null, true]', '{{1,2},{3,4}}', '{\"{}\",\"NULL\",\",\"}', '192.168.0.0/16', "
    "'ok', 2147483647, '[3.4e38,1e-45]')",
]


def _random_rows(n: int, seed: int, first_id: int) -> list[str]:
    rng = random.Random(seed)

    def maybe(v: str) -> str:
        return "NULL" if rng.random() < 0.1 else v

    rows = []
    for k in range(n):
        day = datetime.date(1900, 1, 1) + datetime.timedelta(days=rng.randrange(0, 60000))
        us = rng.randrange(0, 86_400_000_000)
        tm = (datetime.datetime.min + datetime.timedelta(microseconds=us)).time()
        text = "".join(rng.choice("ab ,{}\"\\'x✓\n") for _ in range(rng.randrange(0, 12))).replace("'", "''")
        rows.append("(" + ", ".join([
            str(first_id + k), maybe(rng.choice(["true", "false"])), maybe(str(rng.randrange(-32768, 32768))),
            maybe(str(rng.randrange(-2**31, 2**31))), maybe(str(rng.randrange(-2**63, 2**63))),
            maybe(repr(rng.uniform(-1e6, 1e6))), maybe(repr(rng.uniform(-1e300, 1e300) * rng.random())),
            maybe(f"{rng.randrange(-10**12, 10**12)}.{rng.randrange(0, 10**6):06d}"),
            maybe(f"{rng.randrange(-10**7, 10**7)}.{rng.randrange(0, 100):02d}"),
            maybe(f"'{text}'"), maybe("'v'"), maybe("'c'"),
            maybe("'\\x" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 8))).hex() + "'"),
            maybe(f"'{day.isoformat()}'"), maybe(f"'{tm.isoformat()}'"), maybe(f"'{tm.isoformat()}'"),
            maybe(f"'{tm.isoformat()}{rng.choice(['+00', '-07', '+05:45'])}'"),
            maybe(f"'{day.isoformat()} {tm.isoformat()}'"), maybe(f"'{day.isoformat()} {tm.isoformat()}'"),
            maybe(f"'{day.isoformat()} {tm.isoformat()}{rng.choice(['+00', '-03', '+09:30'])}'"),
            maybe(f"'{rng.randrange(-30, 30)} mons {rng.randrange(-40, 40)} days {rng.randrange(-10**11, 10**11)} microseconds'"),
            maybe(f"'{uuid.UUID(int=rng.getrandbits(128))}'"),
            maybe("'" + json.dumps({"k": rng.randrange(100), "s": "x\"y", "l": [1.5, None]}) + "'"),
            maybe("'{" + ",".join(rng.choice(["NULL", str(rng.randrange(-9, 9))]) for _ in range(3)) + "}'"),
            maybe("'{\"" + "\",\"".join(rng.choice(["a", "b c", "d,e"]) for _ in range(2)) + "\"}'"),
            maybe(f"'10.{rng.randrange(256)}.{rng.randrange(256)}.0/24'"), maybe(f"'{rng.choice(['sad', 'ok', 'happy'])}'"),
            maybe(str(rng.randrange(1, 1000))), maybe(f"'[{rng.uniform(-5, 5)},{rng.uniform(-5, 5)}]'"),
        ]) + ")")
    return rows


def _setup(db):
    db.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    db.execute("CREATE DOMAIN posint AS integer CHECK (VALUE > 0)")
    db.execute(f"CREATE TABLE h ({COLUMNS})")
    db.execute("ALTER TABLE h REPLICA IDENTITY FULL")
    db.execute(f"CREATE FOREIGN TABLE o ({COLUMNS.replace(' PRIMARY KEY', '')}) SERVER orochi "
               "OPTIONS (delta_row_limit '50')")


def _by_table(events, op):
    out: dict[str, dict] = {"h": {}, "o": {}}
    for e in events:
        if e["op"] == op:
            out[e["source"]["table"] if "source" in e else e["table"]][(e.get("after") or e["before"])["id"]] = e
    return out


@pytest.mark.parametrize("fmt", ["debezium", "json"])
def test_heap_and_orochi_rows_give_the_same_events(db, db_dsn, out_dir, fmt):
    _setup(db)
    rows = [PINNED_ROW] + EDGE_ROWS
    db.execute(f"INSERT INTO h VALUES {', '.join(rows)}")
    db.execute(f"INSERT INTO o VALUES {', '.join(rows)}")
    create_subscription(db, "s", ["h", "o"], "file", fmt, {"directory": out_dir, "key_columns": {"o": ["id"]},
                                                          "decimal_handling": "precise"})
    cdc_once(db_dsn)
    random_rows = _random_rows(120, seed=7, first_id=100)
    db.execute(f"INSERT INTO h VALUES {', '.join(random_rows)}")
    db.execute(f"INSERT INTO o VALUES {', '.join(random_rows)}")           # stripes (above delta_row_limit)
    more = _random_rows(20, seed=8, first_id=500) + [
        "(" + str(1000 + int(r[1:r.index(",")])) + r[r.index(","):] for r in rows]  # the edges again, as changes
    db.execute(f"INSERT INTO h VALUES {', '.join(more)}")
    db.execute(f"INSERT INTO o VALUES {', '.join(more)}")                  # the delta store
    for table in ("h", "o"):
        db.execute(f"UPDATE {table} SET t = coalesce(t, '') || '+', ts = ts + interval '1 day' "
                   "WHERE id % 3 = 0 OR id = 1")                          # stripe rows and delta rows
    cdc_once(db_dsn)
    events = dedupe(file_events(out_dir))
    for op in ("r", "c", "u"):
        got = _by_table(events, op)
        assert got["h"].keys() == got["o"].keys() and got["h"], op
        for key, heap_event in got["h"].items():
            orochi_event = got["o"][key]
            assert orochi_event["after"] == heap_event["after"], (op, key)
            if op == "u":
                assert orochi_event["before"] == heap_event["before"], (op, key)
    if fmt == "json":  # the values read back into the same rows
        make_copy(db, "h", "h_copy")
        apply_events(db, [e for e in events if e["table"] == "h"], {"public.h": "h_copy"})
        assert assert_same_rows(db, "h", "h_copy") == 2 * len(rows) + 140


def _days(d: datetime.date) -> int:
    return (d - datetime.date(1970, 1, 1)).days


def _us(dt: datetime.datetime) -> int:
    delta = dt - datetime.datetime(1970, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _b64_int(n: int) -> str:
    return base64.b64encode(n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)).decode()


def test_debezium_mapping(db, db_dsn, out_dir):
    _setup(db)
    db.execute(f"INSERT INTO o VALUES {PINNED_ROW}, {EDGE_ROWS[0]}")
    create_subscription(db, "s", ["o"], "file", "debezium", {"directory": out_dir, "topic_prefix": "srv"})
    cdc_once(db_dsn)
    db.execute("UPDATE o SET i4 = 20 WHERE id = 1")
    cdc_once(db_dsn)
    events = file_events(out_dir)
    snap = {e["after"]["id"]: e for e in events if e["op"] == "r"}
    after = snap[1]["after"]
    assert after == {
        "id": 1, "b": True, "i2": 1, "i4": 2, "i8": 3, "f4": 1.5, "f8": "NaN",
        "n": {"scale": 1, "value": _b64_int(15)}, "n2": _b64_int(1234), "t": "x", "vc": "vc", "c": "ab  ",
        "by": base64.b64encode(b"\x01\x02").decode(), "d": _days(datetime.date(2024, 3, 1)),
        "tm": 36_000_500_000, "tm3": 36_000_123, "ttz": "08:00:00Z",
        "ts": _us(datetime.datetime(2024, 3, 1, 10, 0, 0, 123456)),
        "ts3": _us(datetime.datetime(2024, 3, 1, 10, 0, 0, 123000)) // 1000,
        "tstz": "2024-03-01T10:00:00Z", "iv": int((365.25 / 12 + 2) * 86_400_000_000) + 3 * 3_600_000_000,
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "j": '{"a": [1, 2]}', "ai": [1, 2, None],
        "at": ["a b", 'c"d', None], "inet_": "10.0.0.1", "mood": "happy", "pos": 7, "vec": [1.0, 2.5]}
    edge = snap[2]["after"]
    assert (edge["f4"], edge["f8"], edge["n"], edge["d"], edge["tm"]) == \
        ("-Infinity", "Infinity", None, 2**31 - 1, 86_400_000_000)
    assert (edge["ts"], edge["ts3"], edge["tstz"]) == (-9223372036825200000, 9223372036825200000, "infinity")
    assert edge["ttz"] == "13:59:59.999999Z" and edge["vec"] == [0.0, -0.1]
    first, second = sorted(snap.values(), key=lambda e: e["transaction"]["total_order"])
    assert (first["source"]["snapshot"], second["source"]["snapshot"]) == ("first", "last")
    update = [e for e in events if e["op"] in ("d", "c")]
    assert [e["op"] for e in update] == ["d", "c"]  # every column is the key: a changed row is a new key
    d, c = update
    assert d["before"]["i4"] == 2 and d["after"] is None and c["after"]["i4"] == 20 and c["before"] is None
    source = c["source"]
    assert list(source) == ["version", "connector", "name", "ts_ms", "snapshot", "db", "sequence", "schema",
                            "table", "txId", "lsn", "xmin"]
    assert (source["connector"], source["name"], source["snapshot"], source["schema"], source["table"]) == \
        ("orochi", "srv", "false", "public", "o")
    assert source["db"] == db.execute("SELECT current_database()").fetchone()[0]
    assert c["transaction"] == {"id": f"{source['txId']}:{source['lsn']}", "total_order": 2,
                                "data_collection_order": 2}
    assert list(c) == ["before", "after", "source", "op", "ts_ms", "transaction"]


@pytest.mark.parametrize("mode, expected", [("double", 12.34), ("string", "12.34")])
def test_decimal_handling(db, db_dsn, out_dir, mode, expected):
    db.execute("CREATE TABLE h (id int PRIMARY KEY, n2 numeric(10,2), n numeric)")
    db.execute("INSERT INTO h VALUES (1, 12.34, 'NaN')")
    create_subscription(db, "s", ["h"], "file", "debezium", {"directory": out_dir, "decimal_handling": mode})
    cdc_once(db_dsn)
    after = file_events(out_dir)[0]["after"]
    assert after["n2"] == expected and after["n"] == "NaN"
