"""Options checked at CREATE time, data directories, DROP / TRUNCATE /
DROP EXTENSION removing files, ALTER keeping data readable, table_size and
the stripes view."""

from __future__ import annotations

import os
import shutil
import tempfile

import psycopg
import pytest

from columnar_helpers import stripes_only, catalog_files, data_dir, files_on_disk


# ------------------------------------------------------------------ options

@pytest.mark.parametrize("ddl, error, message", [
    ("CREATE FOREIGN TABLE x (a int) SERVER orochi OPTIONS (foo 'bar')",
     psycopg.errors.FdwInvalidOptionName, 'invalid option "foo" for a columnar table'),
    ("CREATE FOREIGN TABLE x (a int) SERVER orochi OPTIONS (compression 'snappy')",
     psycopg.errors.FdwInvalidAttributeValue, 'invalid value for option "compression": "snappy"'),
    ("CREATE FOREIGN TABLE x (a int) SERVER orochi OPTIONS (compression 'lz4', compression_level '99')",
     psycopg.errors.FdwInvalidAttributeValue, "lz4 compression_level must be in 1..12"),
    ("CREATE FOREIGN TABLE x (a int) SERVER orochi OPTIONS (compression 'none', compression_level '3')",
     psycopg.errors.FdwInvalidAttributeValue, "compression_level needs compression lz4 or zstd"),
    ("CREATE FOREIGN TABLE x (a int) SERVER orochi OPTIONS (stripe_row_limit 'lots')",
     psycopg.errors.FdwInvalidAttributeValue, '"stripe_row_limit": "lots" (not an integer)'),
    ("CREATE FOREIGN TABLE x (a int) SERVER orochi OPTIONS (chunk_group_size '0')",
     psycopg.errors.FdwInvalidAttributeValue, "must be between 1 and 1000000"),
    ("CREATE FOREIGN TABLE x (a int OPTIONS (compresion 'lz4')) SERVER orochi",
     psycopg.errors.FdwInvalidOptionName, 'invalid option "compresion" for column "a"'),
    ("CREATE FOREIGN TABLE x (a int OPTIONS (compression 'gzip')) SERVER orochi",
     psycopg.errors.FdwInvalidAttributeValue, '"compression" of column "a": "gzip"'),
    ("CREATE FOREIGN TABLE x (a int OPTIONS (compression 'zstd', compression_level '30')) SERVER orochi",
     psycopg.errors.FdwInvalidAttributeValue, "zstd compression_level must be in -7..22"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER orochi OPTIONS (data_dir 'relative/dir')",
     psycopg.errors.FdwInvalidAttributeValue, "must be an absolute path"),
    ("CREATE FOREIGN TABLE x (a int) SERVER orochi OPTIONS (data_dir '/tmp')",
     psycopg.errors.FdwInvalidOptionName, 'invalid option "data_dir" for a columnar table'),
])
def test_bad_options_are_rejected_at_create(mconn, ddl, error, message):
    with pytest.raises(error) as exc:
        mconn.execute(ddl)
    assert message in str(exc.value)
    assert mconn.execute("SELECT count(*) FROM pg_class WHERE relname = 'x'").fetchone()[0] == 0


def test_bad_options_are_rejected_at_alter(db):
    db.execute("CREATE FOREIGN TABLE t (a int, b text) SERVER orochi")
    db.execute("INSERT INTO t VALUES (1, 'one')")
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue):
        db.execute("ALTER FOREIGN TABLE t OPTIONS (ADD compression 'brotli')")
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue):
        db.execute("ALTER FOREIGN TABLE t ALTER COLUMN b OPTIONS (ADD compression_level '50')")
    db.execute("ALTER FOREIGN TABLE t OPTIONS (ADD compression 'zstd', ADD compression_level '19')")
    db.execute("ALTER FOREIGN TABLE t ALTER COLUMN b OPTIONS (ADD compression 'lz4')")
    db.execute("INSERT INTO t VALUES (2, 'two')")
    assert db.execute("SELECT array_agg(b ORDER BY a) FROM t").fetchone()[0] == ["one", "two"]
    assert db.execute("SELECT compression, compression_level FROM orochi.columnar_stripes "
                      "ORDER BY stripe_id").fetchall() == [("auto", None), ("zstd", 19)]


def test_compression_settings_are_used(db):
    db.execute("""CREATE FOREIGN TABLE t (
                      a int8,
                      b text OPTIONS (compression 'zstd', compression_level '5'),
                      c text OPTIONS (compression 'none'))
                  SERVER orochi OPTIONS (compression 'lz4')""")
    db.execute("INSERT INTO t SELECT g, repeat('abc', 20), repeat('xyz', 20) FROM generate_series(1, 5000) g")
    codecs = dict(db.execute("SELECT column_name, codecs FROM orochi.stripes").fetchall())
    assert all(c in ("plain+zstd", "dictionary+zstd", "rle+zstd") or c.endswith("+zstd") for c in codecs["b"])
    assert codecs["c"] == ["plain"], "compression 'none' should store plain values"
    assert db.execute("SELECT count(*), sum(a) FROM t").fetchone() == (5000, 12502500)


# --------------------------------------------------------------- data_dir

def test_unwritable_data_dir_gives_a_clear_error_and_loses_nothing(db):
    db.execute("CREATE FOREIGN TABLE ok (a int) SERVER orochi")
    db.execute("INSERT INTO ok VALUES (1), (2)")
    locked = tempfile.mkdtemp(prefix="orochi-ro-")
    os.chmod(locked, 0o555)  # the server's OS user cannot create anything here
    try:
        target = os.path.join(locked, "data")
        db.execute(f"CREATE SERVER ro FOREIGN DATA WRAPPER orochi OPTIONS (data_dir '{target}', delta_row_limit '0')")
        db.execute("CREATE FOREIGN TABLE bad (a int) SERVER ro")
        with pytest.raises(psycopg.errors.IoError) as exc:
            db.execute("INSERT INTO bad VALUES (1)")
        assert f'could not create directory "{target}"' in str(exc.value)
        assert "data_dir" in exc.value.diag.message_hint
        with pytest.raises(psycopg.errors.IoError):
            with db.cursor().copy("COPY bad FROM STDIN") as cp:
                cp.write("1\n2\n")
        assert db.execute("SELECT count(*) FROM bad").fetchone()[0] == 0
        assert db.execute("SELECT array_agg(a ORDER BY a) FROM ok").fetchone()[0] == [1, 2]
    finally:
        os.chmod(locked, 0o755)
        shutil.rmtree(locked, ignore_errors=True)


def test_server_data_dir(db, pg_cluster):
    root = tempfile.mkdtemp(prefix="orochi-dd-")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    try:
        db.execute(f"CREATE SERVER elsewhere FOREIGN DATA WRAPPER orochi OPTIONS (data_dir '{root}', delta_row_limit '0')")
        db.execute("CREATE FOREIGN TABLE t (a int) SERVER elsewhere")
        db.execute("INSERT INTO t SELECT generate_series(1, 10)")
        (path,) = catalog_files(db)
        assert path.startswith(root + os.sep)
        assert db.execute("SELECT sum(a) FROM t").fetchone()[0] == 55
        db.execute("DROP FOREIGN TABLE t")
        assert not os.path.exists(path)
        # an orphan there is found by vacuum too
        dboid = db.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        orphan = os.path.join(root, str(dboid), "424242", "1.3.stripe")
        os.makedirs(os.path.dirname(orphan))
        open(orphan, "wb").close()
        if os.geteuid() == 0:
            for p in (os.path.dirname(orphan), orphan):
                shutil.chown(p, "postgres", "postgres")
        db.execute("SELECT orochi.vacuum()")
        assert not os.path.exists(orphan)
        assert not os.path.exists(os.path.dirname(orphan)), "should remove the folder of a dropped table"
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------- DROP, TRUNCATE, ...

def test_drop_table_removes_rows_and_files_at_commit(db):
    db.execute("CREATE FOREIGN TABLE t (a int) SERVER orochi")
    db.execute("CREATE FOREIGN TABLE keep (a int) SERVER orochi")
    db.execute("INSERT INTO t SELECT generate_series(1, 100)")
    db.execute("INSERT INTO keep VALUES (7)")
    t_files = catalog_files(db, "t")
    relid = db.execute("SELECT 't'::regclass::oid").fetchone()[0]
    with db.transaction(force_rollback=True):
        db.execute("DROP FOREIGN TABLE t")
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    assert all(os.path.exists(p) for p in t_files), "a rolled back DROP keeps the files"
    db.execute("DROP FOREIGN TABLE t")
    assert not any(os.path.exists(p) for p in t_files)
    assert not os.path.exists(os.path.dirname(next(iter(t_files))))
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE relid = %s", (relid,)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripe_columns WHERE relid = %s",
                      (relid,)).fetchone()[0] == 0
    assert db.execute("SELECT a FROM keep").fetchall() == [(7,)]
    assert files_on_disk(db) == catalog_files(db)


def test_drop_schema_cascade(db):
    db.execute("CREATE SCHEMA s")
    db.execute("CREATE FOREIGN TABLE s.t (a int) SERVER orochi")
    db.execute("INSERT INTO s.t VALUES (1)")
    db.execute("DROP SCHEMA s CASCADE")
    assert files_on_disk(db) == set()
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripes").fetchone()[0] == 0


def test_truncate(db):
    db.execute("CREATE FOREIGN TABLE t (a int) SERVER orochi")
    db.execute("CREATE FOREIGN TABLE u (a int) SERVER orochi")
    db.execute("INSERT INTO t SELECT generate_series(1, 100)")
    db.execute("INSERT INTO u VALUES (1)")
    with db.transaction(force_rollback=True):
        db.execute("TRUNCATE t")
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    assert files_on_disk(db) == catalog_files(db)
    db.execute("BEGIN")
    db.execute("TRUNCATE t, u")
    db.execute("INSERT INTO t VALUES (42)")
    db.execute("COMMIT")
    assert db.execute("SELECT array_agg(a) FROM t").fetchone()[0] == [42]
    assert db.execute("SELECT count(*) FROM u").fetchone()[0] == 0
    assert files_on_disk(db) == catalog_files(db)
    assert len(catalog_files(db)) == 1


def test_drop_extension_removes_everything(pg_cluster, make_database):
    name = make_database()
    stripes_only(pg_cluster, name)
    with pg_cluster.connect(name, autocommit=True) as conn:
        conn.execute("CREATE FOREIGN TABLE t (a int) SERVER orochi")
        conn.execute("INSERT INTO t SELECT generate_series(1, 10)")
        folder = data_dir(conn)
        assert os.listdir(folder)
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("DROP EXTENSION orochi")
        assert os.path.isdir(folder)
        conn.execute("DROP EXTENSION orochi CASCADE")
        assert not os.path.exists(folder)
        conn.execute("CREATE EXTENSION orochi")
        conn.execute("CREATE FOREIGN TABLE t (a int) SERVER orochi")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_vacuum_removes_folders_of_dropped_databases(pg_cluster, make_database, db):
    other = make_database()
    stripes_only(pg_cluster, other)
    with pg_cluster.connect(other, autocommit=True) as conn:
        conn.execute("CREATE FOREIGN TABLE t (a int) SERVER orochi")
        conn.execute("INSERT INTO t VALUES (1)")
        folder = data_dir(conn)
    assert os.path.isdir(folder)
    pg_cluster.drop_database(other)
    assert not os.path.exists(folder), "DROP DATABASE removes the database's folder"
    # a folder left behind by a database that no longer exists: vacuum removes it
    owner = os.stat(os.path.dirname(folder))
    os.makedirs(os.path.join(folder, "1234"))
    with open(os.path.join(folder, "1234", "1.1.stripe"), "wb") as f:
        f.write(b"x")
    for path in (folder, os.path.join(folder, "1234"), os.path.join(folder, "1234", "1.1.stripe")):
        os.chown(path, owner.st_uid, owner.st_gid)
    db.execute("SELECT orochi.vacuum()")
    assert not os.path.exists(folder)


# ------------------------------------------------------------------ ALTER

def test_alter_add_drop_rename_columns_keep_data_readable(db):
    db.execute("CREATE FOREIGN TABLE t (a int, b text, c float8) SERVER orochi OPTIONS (chunk_group_size '10')")
    db.execute("INSERT INTO t SELECT g, 'b' || g, g * 0.5 FROM generate_series(1, 30) g")
    db.execute("ALTER FOREIGN TABLE t ADD COLUMN d date")
    db.execute("INSERT INTO t VALUES (31, 'b31', 15.5, '2024-01-31')")
    assert db.execute("SELECT count(d), count(*) FROM t").fetchone() == (1, 31)
    assert db.execute("SELECT a FROM t WHERE d IS NOT NULL").fetchall() == [(31,)]
    assert db.execute("SELECT count(*) FROM t WHERE d IS NULL").fetchone()[0] == 30
    db.execute("ALTER FOREIGN TABLE t DROP COLUMN b")
    db.execute("ALTER FOREIGN TABLE t RENAME COLUMN c TO half")
    assert db.execute("SELECT sum(half), sum(a) FROM t").fetchone() == (248.0, 496)
    db.execute("ALTER FOREIGN TABLE t ADD COLUMN b text")  # same name, new column: NULL in old stripes
    assert db.execute("SELECT count(b) FROM t").fetchone()[0] == 0
    db.execute("INSERT INTO t (a, b) VALUES (32, 'new b')")
    assert db.execute("SELECT a, b FROM t WHERE b IS NOT NULL").fetchall() == [(32, "new b")]
    db.execute("ALTER FOREIGN TABLE t ALTER COLUMN a TYPE bigint")
    assert db.execute("SELECT sum(a), max(a) FROM t WHERE a > 30").fetchone() == (63, 32)
    db.execute("ALTER FOREIGN TABLE t ALTER COLUMN a TYPE text")
    assert db.execute("SELECT a FROM t WHERE a = '7'").fetchall() == [("7",)]


def test_alter_column_type_that_cannot_be_read(db):
    db.execute("CREATE FOREIGN TABLE t (d date) SERVER orochi")
    db.execute("INSERT INTO t VALUES ('2024-01-01')")
    db.execute("ALTER FOREIGN TABLE t ALTER COLUMN d TYPE timestamp")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as exc:
        db.execute("SELECT * FROM t")
    assert 'column "d" is now of type timestamp without time zone' in str(exc.value)


# ------------------------------------------------- table_size and the view

def test_table_size_and_stripes_view(db):
    db.execute("CREATE FOREIGN TABLE t (ts timestamptz, device int, status text) SERVER orochi "
               "OPTIONS (stripe_row_limit '20000', chunk_group_size '5000')")
    db.execute("CREATE TABLE h AS SELECT '2024-01-01'::timestamptz + g * interval '1 s' AS ts, g % 10 AS device, "
               "(ARRAY['ok', 'warn', 'error'])[1 + g % 3] AS status FROM generate_series(1, 50000) g")
    db.execute("INSERT INTO t SELECT * FROM h")
    size = db.execute("SELECT orochi.table_size('t')").fetchone()[0]
    files = catalog_files(db, "t")
    delta = db.execute("SELECT pg_total_relation_size(('orochi.columnar_delta_' || 't'::regclass::oid)::regclass)"
                       ).fetchone()[0]
    assert size == sum(os.path.getsize(p) for p in files) + delta  # the (empty) delta store counts too
    assert size < db.execute("SELECT pg_total_relation_size('h')").fetchone()[0] / 10
    assert db.execute("SELECT orochi.table_size('h')").fetchone()[0] == \
        db.execute("SELECT pg_total_relation_size('h')").fetchone()[0]
    rows = db.execute("SELECT stripe_id, row_count, chunk_group_count, column_name, compressed_bytes, raw_bytes,"
                      " codecs FROM orochi.stripes WHERE table_name = 't'::regclass "
                      "ORDER BY stripe_id, attnum").fetchall()
    assert [r[1] for r in rows[::3]] == [20000, 20000, 10000]
    assert [r[2] for r in rows[::3]] == [4, 4, 2]
    assert [r[3] for r in rows[:3]] == ["ts", "device", "status"]
    for *_, column, compressed, raw, codecs in rows:
        assert 0 < compressed < raw and codecs
    assert any("delta" in c for r in rows if r[3] == "ts" for c in r[6])
    assert any("dictionary" in c or "rle" in c for r in rows if r[3] == "status" for c in r[6])


def test_update_and_delete_work_and_unique_constraints_are_refused_clearly(db):
    """UPDATE and DELETE work since the HTAP writes (tests/htap has the rest);
    what foreign tables cannot have is refused with Postgres's own errors."""
    db.execute("CREATE FOREIGN TABLE t (a int) SERVER orochi")
    db.execute("INSERT INTO t VALUES (1), (3)")
    assert db.execute("UPDATE t SET a = 2 WHERE a = 1 RETURNING a").fetchall() == [(2,)]
    assert db.execute("DELETE FROM t WHERE a = 3").rowcount == 1
    assert db.execute("SELECT a FROM t").fetchall() == [(2,)]
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="SELECT FOR UPDATE/SHARE"):
        db.execute("SELECT a FROM t FOR UPDATE")
    with pytest.raises(psycopg.errors.WrongObjectType):
        db.execute("CREATE UNIQUE INDEX ON t (a)")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="primary key constraints are not supported"):
        db.execute("ALTER FOREIGN TABLE t ADD PRIMARY KEY (a)")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="unique constraints are not supported"):
        db.execute("ALTER FOREIGN TABLE t ADD CONSTRAINT u UNIQUE (a)")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="ON CONFLICT"):
        db.execute("INSERT INTO t VALUES (2) ON CONFLICT DO NOTHING")
    assert db.execute("SELECT a FROM t").fetchall() == [(2,)]
    assert db.execute("INSERT INTO t VALUES (5) RETURNING a * 2").fetchall() == [(10,)]


def test_database_copied_from_a_template_never_removes_the_templates_files(pg_cluster, make_database):
    template = make_database()
    with pg_cluster.connect(template, autocommit=True) as conn:
        conn.execute("CREATE FOREIGN TABLE t (a int) SERVER orochi")
        conn.execute("INSERT INTO t SELECT generate_series(1, 10)")
        files = catalog_files(conn)
    copy = make_database(template=template, extension=False)
    with pg_cluster.connect(copy, autocommit=True) as conn:
        assert conn.execute("SELECT sum(a) FROM t").fetchone()[0] == 55  # shares the files
        conn.execute("TRUNCATE t")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("DROP FOREIGN TABLE t")
    assert all(os.path.exists(p) for p in files)
    with pg_cluster.connect(template, autocommit=True) as conn:
        assert conn.execute("SELECT sum(a) FROM t").fetchone()[0] == 55
