"""A vector index build shows its progress in orochi.vacuum_progress while it
runs (command, phase, stripes and vectors done), to the roles that may read
the table; nothing is left there once it ends."""

from __future__ import annotations

import psycopg
import pytest

from orochi_fdw.testing.faults import FaultGate
from vector_helpers import clustered_vectors, text

D = 8
PER_STRIPE = 2500          # above the 2,000 vectors a segment needs for a file
PROGRESS = ("SELECT command, table_name::text, phase, stripes_done, stripes_total, rows_done"
            "  FROM orochi.vacuum_progress")


def _table(db, stripes: int) -> None:
    db.execute("SET search_path = public, orochi")
    db.execute(f"CREATE FOREIGN TABLE t (id int, e vector({D})) SERVER orochi"
               f" OPTIONS (delta_row_limit '0', stripe_row_limit '{PER_STRIPE}')")
    X = clustered_vectors(stripes * PER_STRIPE, D, seed=4, clusters=10)
    for s in range(stripes):
        with db.cursor().copy("COPY t (id, e) FROM STDIN") as cp:
            for i in range(s * PER_STRIPE, (s + 1) * PER_STRIPE):
                cp.write_row((i, text(X[i])))


def test_create_vector_index_shows_its_progress(db, db_dsn, new_connection):
    _table(db, 2)
    db.execute("CREATE ROLE progress_reader LOGIN")
    try:
        reader = new_connection(user="progress_reader")
        with FaultGate(db_dsn, "vector_index:after_file") as gate:
            op = gate.run("SELECT orochi.create_vector_index('t', 'e')")
            gate.wait_reached()
            # both stripes in one segment: its file is written, its rows not yet registered
            assert db.execute(PROGRESS).fetchall() == [
                ("create vector index", "t", "writing file", 0, 2, 2 * PER_STRIPE)]
            assert reader.execute(PROGRESS).fetchall() == []     # no SELECT on t
            db.execute("GRANT SELECT ON t TO progress_reader")
            assert [r[0] for r in reader.execute(PROGRESS).fetchall()] == ["create vector index"]
            gate.open()
            op.join()
        assert op.error is None
        assert db.execute(PROGRESS).fetchall() == []
        # one file for both stripes, registered once the build committed
        assert db.execute("SELECT count(*), count(DISTINCT file_path) FROM orochi.columnar_vector_index_files"
                          " WHERE relid = 't'::regclass").fetchone() == (2, 1)
    finally:
        db.execute("DROP OWNED BY progress_reader")
        db.execute("DROP ROLE progress_reader")


def test_merge_shows_its_progress(db, db_dsn):
    _table(db, 1)
    db.execute("SELECT orochi.create_vector_index('t', 'e')")
    X = clustered_vectors(PER_STRIPE, D, seed=5, clusters=10)
    with db.cursor().copy("COPY t (id, e) FROM STDIN") as cp:
        for i, v in enumerate(X):
            cp.write_row((PER_STRIPE + i, text(v)))
    with FaultGate(db_dsn, "vector_index:after_file") as gate:
        op = gate.run("SELECT orochi.vector_index_merge('t')")
        gate.wait_reached()
        assert db.execute(PROGRESS).fetchall() == [
            ("merge vector index files", "t", "writing file", 0, 2, 2 * PER_STRIPE)]
        gate.open()
        op.join()
    assert op.error is None
    assert db.execute(PROGRESS).fetchall() == []


def test_a_build_stops_at_statement_timeout_as_a_cancel(db):
    """Most of a build is inside usearch, which sees the signal itself: the
    statement ends as a cancel (57014), not as an error of the library, and
    leaves no index behind."""
    db.execute("SET search_path = public, orochi")
    db.execute("CREATE FOREIGN TABLE t (id int, e vector(32)) SERVER orochi OPTIONS (delta_row_limit '0')")
    X = clustered_vectors(30_000, 32, seed=6)
    with db.cursor().copy("COPY t (id, e) FROM STDIN") as cp:
        for i, v in enumerate(X):
            cp.write_row((i, text(v)))
    db.execute("SET statement_timeout = '200ms'")
    with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
        db.execute("SELECT orochi.create_vector_index('t', 'e')")
    db.execute("RESET statement_timeout")
    assert db.execute("SELECT count(*) FROM orochi.columnar_vector_indexes WHERE relid = 't'::regclass"
                      ).fetchone() == (0,)
