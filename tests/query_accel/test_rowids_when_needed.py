"""Row ids are built only for plans that read ctid (UPDATE, DELETE,
SELECT ctid): plain selects and aggregates scan without them, and what
needs them still finds the right rows, against the heap table."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _plan(db, sql: str) -> str:
    return "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql).fetchall())


def test_row_ids_only_where_read(db):
    db.execute("CREATE FOREIGN TABLE c (a int4, b text) SERVER orochi "
               "OPTIONS (chunk_group_size '100', delta_row_limit '0')")
    db.execute("INSERT INTO c SELECT i, 'b' || i FROM generate_series(1, 1000) i")
    db.execute("DELETE FROM c WHERE a % 10 = 0")
    for sql in ("SELECT a, b FROM c", "SELECT a FROM c WHERE a > 500", "SELECT count(*), sum(a) FROM c",
                "SELECT b, count(*) FROM c WHERE a < 100 GROUP BY b", "SELECT count(*) FROM c",
                "SELECT a FROM c ORDER BY a DESC LIMIT 3", "SELECT a FROM c ORDER BY a DESC"):
        assert "Row Ids Built" not in _plan(db, sql), sql
    assert "Row Ids Built: 900" in _plan(db, "SELECT ctid, a FROM c"), _plan(db, "SELECT ctid, a FROM c")
    assert "Row Ids Built: 450" in _plan(db, "SELECT ctid FROM c WHERE a > 500")
    db.execute("BEGIN")
    try:
        assert "Row Ids Built: 45" in _plan(db, "UPDATE c SET b = 'x' WHERE a > 950")
        assert "Row Ids Built: 9" in _plan(db, "DELETE FROM c WHERE a < 11")
    finally:
        db.execute("ROLLBACK")


rows = st.lists(st.tuples(st.integers(-5, 5), st.one_of(st.none(), st.integers(0, 3))), min_size=0, max_size=80)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(bulk=rows, delta=st.lists(st.tuples(st.integers(-5, 5), st.integers(0, 3)), max_size=4),
       chunk=st.sampled_from([4, 32]), cut=st.integers(-6, 6), value=st.integers(-6, 6))
def test_writes_and_ctid_equal_heap(db, bulk, delta, chunk, cut, value):
    db.execute("DROP FOREIGN TABLE IF EXISTS c; DROP TABLE IF EXISTS h")
    db.execute(f"CREATE FOREIGN TABLE c (id int4, a int4, b int4) SERVER orochi "
               f"OPTIONS (chunk_group_size '{chunk}', delta_row_limit '3')")
    db.execute("CREATE TABLE h (id int4, a int4, b int4)")
    for t in ("c", "h"):
        if bulk:
            with db.cursor().copy(f"COPY {t} FROM STDIN") as copy:
                for i, row in enumerate(bulk):
                    copy.write_row((i,) + row)
        for i, row in enumerate(delta):
            db.execute(f"INSERT INTO {t} VALUES (%s, %s, %s)", (1000 + i,) + row)
        db.execute(f"DELETE FROM {t} WHERE a = %s", [cut])
        db.execute(f"UPDATE {t} SET b = coalesce(b, 0) + 10 WHERE a > %s", [value])
        # rows found by their ctid, read by another scan of the table
        db.execute(f"DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t} WHERE b = %s)", [value % 4])
    for q in ("SELECT * FROM {} ORDER BY id", "SELECT count(*), count(DISTINCT b), sum(a) FROM {}",
              "SELECT id FROM {} WHERE a = %s ORDER BY id" % value):
        assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall(), q
    ids = db.execute("SELECT ctid, id FROM c").fetchall()
    assert len({r[0] for r in ids}) == len(ids)  # distinct row ids
    for tid, i in ids[:5]:
        assert db.execute("SELECT id FROM c WHERE ctid = %s::tid", [str(tid)]).fetchall() == [(i,)]
