"""Random hypertable data, random tiering of its chunks (to a real S3
server, and back), random time-range queries (rows, pushed-down aggregates,
top-N), with the read cache on or off: every answer equals the heap
table's.  (Byte-for-byte restoration: test_tiering_basic.py.)"""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiering_helpers import create_target

COLUMNS = "ts timestamptz NOT NULL, device int, v bigint, f float8, tag text"
T0 = datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc)
DAYS = 6

_queries = st.sampled_from([
    "SELECT ts, device, v, f, tag FROM {t} WHERE ts >= %(lo)s AND ts < %(hi)s ORDER BY ts, device, v, f, tag",
    "SELECT count(*), sum(v), min(f), max(f), count(tag) FROM {t} WHERE ts >= %(lo)s AND ts < %(hi)s",
    "SELECT device, count(*), sum(v), max(ts), min(tag) FROM {t} WHERE ts BETWEEN %(lo)s AND %(hi)s"
    " GROUP BY device ORDER BY device",
    "SELECT orochi.time_bucket('6 hours', ts) AS b, count(*), sum(v) FROM {t}"
    " WHERE ts >= %(lo)s GROUP BY b ORDER BY b",
    "SELECT ts, v FROM {t} WHERE ts < %(hi)s ORDER BY v DESC, ts LIMIT 5",
    "SELECT ts, v, device FROM {t} WHERE ts >= %(lo)s ORDER BY ts DESC, v, device LIMIT 9",
])


def _load(db, rows) -> None:
    db.execute(f"CREATE FOREIGN TABLE r ({COLUMNS}) SERVER orochi"
               " OPTIONS (stripe_row_limit '300', chunk_group_size '60')")
    db.execute("SELECT orochi.create_hypertable('r', 'ts', chunk_time_interval => interval '1 day')")
    db.execute(f"CREATE TABLE r_heap ({COLUMNS})")
    values = [(T0 + datetime.timedelta(minutes=m), d, v, f, t) for m, d, v, f, t in rows]
    for t in ("r", "r_heap"):
        with db.cursor().copy(f"COPY {t} FROM STDIN") as copy:
            for row in values:
                copy.write_row(row)
    db.execute("SELECT orochi.compact('r')")


@pytest.fixture
def loaded(db, s3, bucket):
    import random

    rnd = random.Random(20240301)
    rows = [(rnd.randrange(DAYS * 24 * 60), rnd.randrange(7), rnd.randrange(-10**6, 10**6),
             None if rnd.random() < 0.1 else rnd.randrange(-1000, 1000) / 4,
             None if rnd.random() < 0.1 else rnd.choice(["a", "bb", "ccc", "dddd", "é"])) for _ in range(6000)]
    _load(db, rows)
    create_target(db, s3, bucket)
    return db


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_random_tiering_matches_heap(loaded, data):
    db = loaded
    chunks = [r[0] for r in db.execute("SELECT chunk_name FROM orochi.chunks WHERE hypertable_name = 'r'::regclass"
                                       " ORDER BY range_start").fetchall()]
    cold = data.draw(st.sets(st.sampled_from(chunks)), label="cold chunks")
    for c in chunks:
        if c in cold:
            db.execute("SELECT orochi.tier_chunk(%s, 'cold')", (c,))
        else:
            db.execute("SELECT orochi.untier_chunk(%s)", (c,))
    if data.draw(st.booleans(), label="empty cache"):
        db.execute("SET orochi.tier_cache_size = 0")
    else:
        db.execute("RESET orochi.tier_cache_size")
    for _ in range(4):
        q = data.draw(_queries, label="query")
        a, b = sorted(data.draw(st.integers(-60, DAYS * 24 * 60 + 60)) for _ in range(2))
        params = {"lo": T0 + datetime.timedelta(minutes=a), "hi": T0 + datetime.timedelta(minutes=b)}
        got = db.execute(q.format(t="r"), params).fetchall()
        want = db.execute(q.format(t="r_heap"), params).fetchall()
        assert got == want, (q, params, sorted(cold))
