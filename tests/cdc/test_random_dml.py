"""Concurrent transactions of random DML over heap and orochi tables, with
savepoints rolled back, whole transactions rolled back and statements
failing, while the sidecar streams: the events, applied in order to empty
copies, give back every table exactly, and no event comes from work that
was rolled back."""

from __future__ import annotations

import random
import threading

import psycopg
import pytest

from cdc_harness import apply_events, assert_same_rows, create_subscription, dedupe, file_events, make_copy
from pipeline_harness import wait_until

TABLES = ("h", "o", "ok")
_RETRY = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected, psycopg.errors.UniqueViolation,
          psycopg.errors.DivisionByZero)


class Writer(threading.Thread):
    """One connection running random transactions."""

    def __init__(self, dsn: str, seed: int, number: int, transactions: int, ids):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.rng = random.Random(seed * 100 + number)
        self.number = number
        self.transactions = transactions
        self.ids = ids
        self.rolled_back_xids: set[int] = set()
        self.rolled_back_tags: set[str] = set()
        self.committed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for t in range(self.transactions):
                    self.transaction(conn, f"w{self.number}t{t}")
        except BaseException as exc:  # reported by the test
            self.error = exc

    def statement(self, conn, tag: str) -> None:
        rng = self.rng
        table = rng.choice(TABLES)
        op = rng.choices(["insert", "big", "update", "delete", "fail"], [5, 1, 3, 2, 1])[0]
        if op in ("insert", "big"):
            n = rng.randrange(1, 5) if op == "insert" else rng.randrange(25, 90)
            first = next(self.ids)
            for _ in range(n - 1):
                next(self.ids)
            if table == "h" and rng.random() < 0.1:
                first = rng.randrange(1, 50)  # maybe taken: a unique violation
            conn.execute(f"INSERT INTO {table} SELECT g, g %% 17, %s, g * 1.25, "
                         "timestamptz '2024-01-01' + g * interval '1 s' FROM generate_series(%s::int, %s::int) g",
                         [tag, first, first + n - 1])
        elif op == "update":
            k, r = rng.randrange(5, 40), rng.randrange(40)
            conn.execute(f"UPDATE {table} SET b = %s, a = a + 1, c = c * 2 WHERE id %% %s = %s", [tag, k, r % k])
        elif op == "delete":
            k, r = rng.randrange(7, 60), rng.randrange(60)
            conn.execute(f"DELETE FROM {table} WHERE id %% %s = %s", [k, r % k])
        else:  # a statement that fails after writing some rows
            conn.execute(f"INSERT INTO {table} SELECT g, 1 / (g - %s), %s, 0, now() "
                         "FROM generate_series(%s::int, %s::int) g", [next(self.ids) + 3, tag, next(self.ids),
                                                                     next(self.ids) + 5])

    def transaction(self, conn, tag: str) -> None:
        rng = self.rng
        used = [tag]  # the tags this transaction's rows carry
        xid = None
        try:
            with conn.transaction() as txn:
                xid = int(conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
                rollback = rng.random() < 0.2
                for s in range(rng.randrange(1, 6)):
                    if rng.random() < 0.35:
                        sp_tag = f"{tag}s{s}"
                        used.append(sp_tag)
                        try:
                            with conn.transaction():
                                self.statement(conn, sp_tag)
                                if rng.random() < 0.5:
                                    raise _RollBack()
                        except (_RollBack,) + _RETRY:
                            self.rolled_back_tags.add(sp_tag)
                    else:
                        self.statement(conn, tag)
                if rollback:
                    raise psycopg.Rollback(txn)
            if not rollback:
                self.committed += 1
                return
        except _RETRY:
            pass
        self.rolled_back_tags.update(used)
        if xid is not None:
            self.rolled_back_xids.add(xid)


class _RollBack(Exception):
    pass


def _counter(start: int):
    lock = threading.Lock()
    value = [start]

    class Ids:
        def __iter__(self):
            return self

        def __next__(self):
            with lock:
                value[0] += 1
                return value[0]
    return Ids()


@pytest.mark.parametrize("seed", [1, 2])
def test_concurrent_random_dml_is_reproduced_exactly(db, db_dsn, out_dir, start_sidecar, seed):
    run_random_dml(db, db_dsn, out_dir, start_sidecar, seed, writers=3, transactions=25)


@pytest.mark.slow
def test_concurrent_random_dml_soak(db, db_dsn, out_dir, start_sidecar):
    run_random_dml(db, db_dsn, out_dir, start_sidecar, 99, writers=4, transactions=300)


def run_random_dml(db, db_dsn, out_dir, start_sidecar, seed: int, writers: int, transactions: int) -> None:
    columns = "id int, a int, b text, c numeric, d timestamptz"
    db.execute(f"CREATE TABLE h ({columns.replace('id int', 'id int PRIMARY KEY')})")
    db.execute(f"CREATE FOREIGN TABLE o ({columns}) SERVER orochi OPTIONS (delta_row_limit '20')")
    db.execute(f"CREATE FOREIGN TABLE ok ({columns}) SERVER orochi OPTIONS (delta_row_limit '20')")
    for t in TABLES:
        db.execute(f"INSERT INTO {t} SELECT g, g % 17, 'initial', g, now() FROM generate_series(1, 60) g")
    create_subscription(db, "s", list(TABLES), "file", "json",
                        {"directory": out_dir, "batch_size": 50, "key_columns": {"ok": ["id"]},
                         "poll_interval": 0.05})
    sidecar = start_sidecar(db_dsn)
    wait_until(lambda: db.execute("SELECT snapshot_done FROM orochi.cdc_subscription").fetchone()[0],
               what="the initial snapshot")
    ids = _counter(1000)
    threads = [Writer(db_dsn, seed, n, transactions, ids) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for t in threads:
        assert t.error is None, f"writer {t.number}: {t.error!r}"
    assert sum(t.committed for t in threads) > 0
    db.execute("INSERT INTO h VALUES (-1, 0, 'marker', 0, now())")
    wait_until(lambda: any(e["after"] and e["after"]["b"] == "marker" for e in file_events(out_dir)),
               what="every change to arrive")
    sidecar.terminate()
    events = dedupe(file_events(out_dir))
    rolled_back_xids = set().union(*(t.rolled_back_xids for t in threads))
    rolled_back_tags = set().union(*(t.rolled_back_tags for t in threads))
    assert not [e for e in events if e["txid"] in rolled_back_xids], "an event of a rolled-back transaction"
    assert not [e for e in events if e["after"] and e["after"]["b"] in rolled_back_tags], \
        "an event of rolled-back work"
    for t in TABLES:
        make_copy(db, t, f"{t}_copy")
    apply_events(db, events, {f"public.{t}": f"{t}_copy" for t in TABLES})
    for t in TABLES:
        assert_same_rows(db, t, f"{t}_copy")
