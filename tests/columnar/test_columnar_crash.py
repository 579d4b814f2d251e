"""kill -9 of the postmaster during a long COPY, paused at a fault point
once it has written three stripe files: committed data survives, nothing of
the COPY is visible after restart, its files are orphans that
orochi.vacuum() collects."""

from __future__ import annotations

from columnar_helpers import stripes_only, catalog_files, files_on_disk
from orochi_fdw.testing.faults import run_until


def test_kill9_during_long_copy(make_cluster):
    pg = make_cluster("crash")
    pg.create_database("c")
    stripes_only(pg, "c")
    conn = pg.connect("c", autocommit=True)
    conn.execute("CREATE FOREIGN TABLE t (id int8, v text) SERVER orochi OPTIONS (stripe_row_limit '20000')")
    conn.execute("CREATE FOREIGN TABLE other (id int8) SERVER orochi")
    conn.execute("INSERT INTO t SELECT g, 'committed' FROM generate_series(1, 50000) g")
    conn.execute("INSERT INTO other SELECT generate_series(1, 10)")
    committed = files_on_disk(conn)
    assert committed == catalog_files(conn) and len(committed) == 4

    def copy_forever(c2) -> None:
        with c2.cursor().copy("COPY t FROM STDIN") as cp:
            i = 0
            while True:  # until the server goes away: the COPY waits at its third stripe
                cp.write("".join(f"{j}\tcopied\n" for j in range(i, i + 5000)))
                i += 5000

    conn.close()
    run_until(pg.dsn("c"), "write_stripe:after_file@3", body=copy_forever,
              kill=lambda: pg.kill9(kill_children=True))
    pg.start()
    with pg.connect("c", autocommit=True) as conn:
        assert conn.execute("SELECT count(*), min(id), max(id), count(DISTINCT v) FROM t").fetchone() == \
            (50000, 1, 50000, 1), "committed data intact, nothing of the interrupted COPY"
        assert conn.execute("SELECT sum(id) FROM other").fetchone()[0] == 55
        leftovers = files_on_disk(conn) - catalog_files(conn)
        assert len(leftovers) == 3  # the COPY's three stripe files
        removed_files, removed_bytes = conn.execute("SELECT * FROM orochi.vacuum()").fetchone()
        assert removed_files == len(leftovers) and removed_bytes > 0
        assert files_on_disk(conn) == catalog_files(conn) == committed
        # the table takes writes again
        conn.execute("INSERT INTO t VALUES (0, 'after')")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 50001
