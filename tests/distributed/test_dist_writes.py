"""Writing distributed tables: routed INSERT, INSERT ... SELECT, COPY,
UPDATE and DELETE, TRUNCATE, DDL carried to the shards, and the
transactions around them (one-phase, two-phase, savepoints, rollback)."""

from __future__ import annotations

import datetime
import decimal

import psycopg
import pytest
from psycopg import sql

from dist_oracle import make_pair, same_result

ALL = "SELECT * FROM {t}"


def _row(i: int) -> tuple:
    return (i, i % 5, i * 1.5, decimal.Decimal(i) / 4, f"s{i}",
            datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(minutes=i), i % 2 == 0)


def both(dist, stmt: str, params=None) -> None:
    """Run a statement on the heap (h) and the distributed table (d)."""
    dist.q(stmt.replace("{t}", "h"), params)
    dist.q(stmt.replace("{t}", "d"), params)


@pytest.fixture(params=["columnar", "heap"])
def pair(dist, request):
    make_pair(dist, shard_count=4, storage=request.param)
    return dist


def test_insert_single_and_multi_row(pair):
    both(pair, "INSERT INTO {t} VALUES (1, 1, 1.5, 2.25, 'a', '2024-01-01', true)")
    both(pair, "INSERT INTO {t} (k, s) VALUES (2, 'b'), (3, NULL), (4, 'd'), (5, 'e')")
    both(pair, "INSERT INTO {t} (k) SELECT generate_series(10, 500)")
    same_result(pair, ALL)
    assert pair.worker_rows("d") == 496


def test_insert_returning(pair):
    got = pair.q("INSERT INTO d (k, s) VALUES (7, 'x'), (8, 'y') RETURNING k, s")
    assert sorted(got) == [(7, "x"), (8, "y")]


def test_copy_from(pair):
    rows = [_row(i) for i in range(3000)]
    for table in ("h", "d"):
        with pair.conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as copy:
                for r in rows:
                    copy.write_row(r)
    same_result(pair, ALL)
    same_result(pair, "SELECT g, count(*), sum(n) FROM {t} GROUP BY g")


def test_text_values_with_specials_round_trip(pair):
    texts = ["tab\there", "new\nline", "back\\slash", "cr\rx", "\\N", "", "ünïcødé ✓", "quote'\"", "  spaces  "]
    for i, text in enumerate(texts):
        both(pair, "INSERT INTO {t} (k, s) VALUES (%s, %s)", (i, text))
    same_result(pair, "SELECT k, s FROM {t}", exact=True)
    same_result(pair, "SELECT k FROM {t} WHERE s = %s", params=("new\nline",))


def test_special_values_round_trip(pair):
    both(pair, "INSERT INTO {t} (k, v, n, ts) VALUES (1, 'NaN', 'NaN', 'infinity'), (2, 'Infinity', '-0.000', "
               "'-infinity'), (3, '-Infinity', 1e-20, '0044-03-15 01:02:03.456789+00 BC'), (4, -0.0, 123456789.123456789,"
               " '10000-01-01 00:00:00+00'), (5, 1e308, 0, '2000-01-01')")
    same_result(pair, "SELECT k, v::text, n::text, ts::text FROM {t}", exact=True)


def test_update_and_delete_routed_and_broadcast(pair):
    both(pair, "INSERT INTO {t} SELECT i, i % 5, i * 1.5, i / 4.0, 's' || i, '2024-01-01'::timestamptz"
               " + i * interval '1 minute', i % 2 = 0 FROM generate_series(1, 800) i")
    both(pair, "UPDATE {t} SET s = 'one' WHERE k = 17")
    both(pair, "UPDATE {t} SET v = v * 2, b = NOT b WHERE g = 3")
    both(pair, "UPDATE {t} SET n = NULL WHERE k IN (1, 2, 3)")
    both(pair, "DELETE FROM {t} WHERE k = 500")
    both(pair, "DELETE FROM {t} WHERE s LIKE 's1%'")
    same_result(pair, ALL)
    assert pair.q("UPDATE d SET g = 99 WHERE k = 20 RETURNING k, g") == [(20, 99)]
    both(pair, "UPDATE {t} SET g = 99 WHERE k = 20")
    same_result(pair, ALL)


def test_update_of_the_distribution_column_is_refused(pair):
    both(pair, "INSERT INTO {t} (k, s) VALUES (1, 'a'), (2, 'b')")
    with pytest.raises(psycopg.Error) as info:
        pair.q("UPDATE d SET k = k + 1000 WHERE k = 1")
    assert info.value.sqlstate == "0A000"
    assert 'distribution column "k"' in str(info.value)
    pair.q("UPDATE d SET k = k WHERE k = 1")  # unchanged: fine
    with pytest.raises(psycopg.Error) as info:
        pair.q("UPDATE d SET k = NULL WHERE k = 2")
    assert info.value.sqlstate == "23502"
    same_result(pair, ALL)


def test_null_distribution_value_is_refused(pair):
    with pytest.raises(psycopg.Error) as info:
        pair.q("INSERT INTO d (k) VALUES (NULL)")
    assert info.value.sqlstate == "23502"
    pair.q("ALTER FOREIGN TABLE d ALTER COLUMN k DROP NOT NULL")
    with pytest.raises(psycopg.Error) as info:
        pair.q("INSERT INTO d (k, s) VALUES (1, 'x'), (NULL, 'y')")
    assert info.value.sqlstate == "23502"
    assert pair.q("SELECT count(*) FROM d") == [(0,)]


def test_truncate(pair):
    both(pair, "INSERT INTO {t} (k) SELECT generate_series(1, 100)")
    pair.q("TRUNCATE d")
    assert pair.q("SELECT count(*) FROM d") == [(0,)]
    assert pair.worker_rows("d") == 0


def test_alter_table_add_drop_rename_column(pair):
    both(pair, "INSERT INTO {t} (k, s) SELECT i, 's' || i FROM generate_series(1, 50) i")
    both(pair, "ALTER TABLE {t} ADD COLUMN extra int")
    both(pair, "ALTER TABLE {t} ADD COLUMN flag text DEFAULT 'yes'")
    both(pair, "UPDATE {t} SET extra = k * 2 WHERE k < 10")
    both(pair, "INSERT INTO {t} (k, extra) VALUES (100, 7)")
    same_result(pair, ALL)
    both(pair, "ALTER TABLE {t} RENAME COLUMN s TO label")
    both(pair, "ALTER TABLE {t} DROP COLUMN g")
    both(pair, "INSERT INTO {t} (k, label, extra) VALUES (101, 'new', 1)")
    same_result(pair, ALL)
    same_result(pair, "SELECT label, count(*), sum(extra) FROM {t} GROUP BY label")
    with pytest.raises(psycopg.Error) as info:
        pair.q("ALTER TABLE d DROP COLUMN k")
    assert info.value.sqlstate == "0A000" and "distribution column" in str(info.value)
    with pytest.raises(psycopg.Error) as info:
        pair.q("ALTER TABLE d ADD COLUMN r float8 DEFAULT random()")
    assert info.value.sqlstate == "0A000"
    with pytest.raises(psycopg.Error) as info:
        pair.q("ALTER TABLE d ALTER COLUMN extra TYPE bigint")
    assert info.value.sqlstate == "0A000"
    same_result(pair, ALL)


def test_rename_distribution_column_keeps_routing(pair):
    both(pair, "INSERT INTO {t} (k, s) SELECT i, 's' || i FROM generate_series(1, 60) i")
    both(pair, "ALTER TABLE {t} RENAME COLUMN k TO key")
    both(pair, "INSERT INTO {t} (key, s) VALUES (61, 'x')")
    same_result(pair, "SELECT key, s FROM {t} WHERE key = 61")
    plan = "\n".join(r[0] for r in pair.q("EXPLAIN SELECT * FROM d WHERE key = 61"))
    assert "Shards: 1 of 4" in plan
    same_result(pair, "SELECT * FROM {t}")


# ------------------------------------------------------------------ transactions


def _records(dist) -> int:
    return dist.one("SELECT count(*) FROM orochi.dist_transaction")


def test_one_node_write_commits_in_one_phase(dist):
    make_pair(dist, shard_count=4)
    dist.q("SELECT orochi.recover_prepared_transactions()")
    before = _records(dist)
    dist.q("INSERT INTO d (k) VALUES (1)")
    assert _records(dist) == before
    dist.q("INSERT INTO d (k) SELECT generate_series(1, 100)")  # every node
    assert _records(dist) == before + 2
    dist.q("SELECT orochi.recover_prepared_transactions()")
    assert _records(dist) == before
    assert dist.lc.prepared_transactions(dist.dbname) == []


def test_transaction_block_rollback_and_commit(dist):
    make_pair(dist, shard_count=4)
    with dist.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO d (k) SELECT generate_series(1, 100)")
        assert conn.execute("SELECT count(*) FROM d").fetchone()[0] == 100  # reads its own writes
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM d").fetchone()[0] == 0
        conn.execute("INSERT INTO d (k) SELECT generate_series(1, 100)")
        conn.execute("UPDATE d SET s = 'x' WHERE k < 50")
        conn.execute("DELETE FROM d WHERE k > 90")
        conn.commit()
    assert dist.q("SELECT count(*), count(s) FROM d") == [(90, 49)]
    assert dist.lc.prepared_transactions(dist.dbname) == []


def test_savepoints_roll_back_remote_writes(dist):
    make_pair(dist, shard_count=4)
    with dist.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO d (k) VALUES (1), (2)")
        conn.execute("SAVEPOINT a")
        conn.execute("INSERT INTO d (k) SELECT generate_series(10, 60)")
        conn.execute("SAVEPOINT b")
        conn.execute("DELETE FROM d WHERE k < 30")
        conn.execute("ROLLBACK TO SAVEPOINT b")
        assert conn.execute("SELECT count(*) FROM d").fetchone()[0] == 53
        conn.execute("ROLLBACK TO SAVEPOINT a")
        assert conn.execute("SELECT count(*) FROM d").fetchone()[0] == 2
        conn.execute("INSERT INTO d (k) VALUES (3)")
        conn.execute("RELEASE SAVEPOINT a")
        conn.commit()
    assert sorted(r[0] for r in dist.q("SELECT k FROM d")) == [1, 2, 3]


def test_a_released_savepoint_keeps_what_it_began(dist):
    """The remote transactions begin inside a savepoint that is released; a
    rollback to a later savepoint of the same depth undoes only what came
    after it, not the remote transactions whole."""
    make_pair(dist, shard_count=4)
    with dist.connect(autocommit=False) as conn:
        conn.execute("SAVEPOINT a")
        conn.execute("INSERT INTO d (k) SELECT generate_series(1, 40)")
        conn.execute("RELEASE SAVEPOINT a")
        conn.execute("SAVEPOINT b")
        conn.execute("UPDATE d SET g = 1")
        conn.execute("ROLLBACK TO SAVEPOINT b")
        assert conn.execute("SELECT count(*), count(g) FROM d").fetchone() == (40, 0)
        conn.commit()
    assert dist.q("SELECT count(*), count(g) FROM d") == [(40, 0)]
    assert dist.lc.prepared_transactions(dist.dbname) == []


def test_error_on_a_worker_inside_a_savepoint(dist):
    """A worker's own error (here a CHECK constraint put on its shards) reaches
    the client with its SQLSTATE and the node named; ROLLBACK TO SAVEPOINT
    undoes the statement on every node and the transaction goes on."""
    dist.q("CREATE TABLE d (k int, v text)")
    dist.distribute("d", "k", 4, shard_storage="heap")
    for node_id, name in dist.q("SELECT node_id, shard_name FROM orochi.shards WHERE table_name = 'd'::regclass"):
        dist.lc.workers[node_id - 1].execute(
            sql.SQL("ALTER TABLE {} ADD CHECK (k < 100)").format(sql.SQL(name)), dbname=dist.dbname)
    with dist.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO d VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        conn.execute("SAVEPOINT s")
        conn.execute("UPDATE d SET v = 'zz'")
        with pytest.raises(psycopg.Error) as info:
            conn.execute("INSERT INTO d SELECT i, 'x' FROM generate_series(90, 110) i")
        assert info.value.sqlstate == "23514"
        assert "on node 127.0.0.1:" in str(info.value)
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.execute("INSERT INTO d VALUES (5, 'e')")
        conn.commit()
    assert sorted(dist.q("SELECT k, v FROM d")) == [(1, "a"), (2, "b"), (3, "c"), (5, "e")]
    assert dist.lc.prepared_transactions(dist.dbname) == []


def test_reference_table_writes_everywhere_in_two_phase(dist):
    make_pair(dist, reference=True)
    dist.q("SELECT orochi.recover_prepared_transactions()")
    before = _records(dist)
    both(dist, "INSERT INTO {t} (k, s) VALUES (1, 'a'), (2, 'b')")
    assert _records(dist) == before + 2
    both(dist, "UPDATE {t} SET s = 'B' WHERE k = 2")
    both(dist, "DELETE FROM {t} WHERE k = 1")
    same_result(dist, ALL)
    status = dist.q("SELECT rows FROM orochi.shard_status('d')")
    assert status == [(1,), (1,)]


def test_insert_select_between_distributed_tables(dist):
    make_pair(dist, shard_count=4)
    dist.q("CREATE TABLE d2 (LIKE h)")
    dist.distribute("d2", "g", 3)
    both(dist, "INSERT INTO {t} SELECT i, i % 5, i, i, 's', now(), true FROM generate_series(1, 300) i")
    dist.q("INSERT INTO d2 SELECT * FROM d WHERE g IS NOT NULL")
    assert dist.q("SELECT count(*), sum(k) FROM d2") == dist.q("SELECT count(*), sum(k) FROM h")


def test_awkward_names_and_values_are_quoted(dist):
    """Identifiers are quoted and values are parameters in everything sent
    to the workers: schema, table and column names with spaces, quotes,
    capitals and keywords, and values that look like SQL."""
    schema = '"Odd ""Schema"""'
    table = schema + '."My Table"'
    heap = schema + ".heap"
    dist.q("CREATE SCHEMA " + schema)
    try:
        dist.q(f'CREATE TABLE {table} ("select" int NOT NULL, "a""b" text, "Ünï" float8)')
        dist.q(f'CREATE TABLE {heap} ("select" int NOT NULL, "a""b" text, "Ünï" float8)')
        dist.q("SELECT orochi.create_distributed_table(%s, 'select', 3)", (table,))
        evil = "x'); DROP TABLE pg_class; --"
        for t in (table, heap):
            dist.q(f"INSERT INTO {t} VALUES (1, %s, 1.5), (2, %s, NULL), (3, NULL, 2.5)", (evil, 'a"b\\c'))
            dist.q(f'UPDATE {t} SET "Ünï" = "Ünï" * 2 WHERE "a""b" = %s', (evil,))
            dist.q(f'DELETE FROM {t} WHERE "a""b" = %s', ('a"b\\c',))
        same_result(dist, 'SELECT "select", "a""b", "Ünï" FROM {t} WHERE "a""b" IN (%s, \'zz\')',
                    heap=heap, table=table, params=(evil,))
        same_result(dist, 'SELECT "a""b", count(*), sum("Ünï") FROM {t} GROUP BY 1', heap=heap, table=table)
        dist.q(f'ALTER TABLE {table} RENAME COLUMN "a""b" TO "from"')
        assert dist.q(f'SELECT "from" FROM {table} WHERE "select" = 1') == [(evil,)]
    finally:
        dist.q(f"DROP SCHEMA {schema} CASCADE")
        for w in dist.lc.workers:
            w.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE", dbname=dist.dbname)


def test_ddl_after_an_abandoned_scan_in_the_same_transaction(dist):
    """A fan-out scan reads through cursors; one left unfinished (a LIMIT the
    shards did not see) must not keep TRUNCATE, ALTER or DROP from running
    later in the transaction."""
    make_pair(dist, shard_count=4)
    both(dist, "INSERT INTO {t} (k, g) SELECT i, i % 3 FROM generate_series(1, 5000) i")
    with dist.connect(autocommit=False) as conn:
        assert len(conn.execute("SELECT k FROM d WHERE g + 0 = 1 LIMIT 3").fetchall()) == 3
        conn.execute("ALTER TABLE d ADD COLUMN extra int")
        assert len(conn.execute("SELECT k FROM d WHERE g + 0 = 2 LIMIT 3").fetchall()) == 3
        conn.execute("TRUNCATE d")
        conn.execute("INSERT INTO d (k) VALUES (1)")
        conn.commit()
    assert dist.q("SELECT count(*) FROM d") == [(1,)]
    dist.q("SELECT k FROM d LIMIT 1")
    with dist.connect(autocommit=False) as conn:
        conn.execute("SELECT k FROM d WHERE g + 0 IS NULL LIMIT 1").fetchall()
        conn.execute("DROP FOREIGN TABLE d")
        conn.commit()


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_first_statement_of_a_snapshot_isolation_transaction(dist, isolation):
    """Any distributed statement may come first in a REPEATABLE READ or
    SERIALIZABLE transaction (the remote BEGIN precedes the session's
    TimeZone), and the coordinator's TimeZone holds on the workers."""
    make_pair(dist, shard_count=4, rows=[(k, k % 3, None, None, None,
                                          datetime.datetime(2024, 3, 1, k % 24, tzinfo=datetime.timezone.utc),
                                          None) for k in range(1, 41)])
    for first in ("SELECT count(*), sum(g) FROM {t}", "UPDATE {t} SET g = g + 1 WHERE k % 2 = 0",
                  "DELETE FROM {t} WHERE k % 5 = 0", "INSERT INTO {t} (k, g) VALUES (100, 7)"):
        for table in ("h", "d"):
            with dist.connect(autocommit=True) as conn:
                conn.execute(f"BEGIN ISOLATION LEVEL {isolation}")
                conn.execute("SET LOCAL TimeZone = 'Asia/Kolkata'")
                conn.execute(first.format(t=table))
                conn.execute("COMMIT")
        same_result(dist, "SELECT k, g FROM {t}")
    with dist.connect(autocommit=True) as conn:
        conn.execute(f"BEGIN ISOLATION LEVEL {isolation}")
        conn.execute("SET LOCAL TimeZone = 'Asia/Kolkata'")
        query = "SELECT k, ts::text, date_trunc('day', ts)::text FROM {} ORDER BY k"
        assert conn.execute(query.format("d")).fetchall() == conn.execute(query.format("h")).fetchall()
        conn.execute("COMMIT")
