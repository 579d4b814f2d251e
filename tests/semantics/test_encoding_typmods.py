"""Values from Python keep their column's type modifier (varchar(n), numeric(p,
s), timestamp(p), interval(p)) as an assignment to a heap table would; SQL
text, identifiers, data and errors cross the bridge in the server encoding
(a LATIN1 database)."""

from __future__ import annotations

import decimal

import psycopg
import pytest

WRAPPERS = "orochi_fdw.testing.wrappers."


def _error(conn, statement: str):
    try:
        return conn.execute(statement).fetchall()
    except psycopg.Error as exc:
        return (exc.diag.sqlstate, exc.diag.message_primary)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_values_from_python_keep_type_modifiers(db, mode):
    """The wrapper stores what it was given under wide types; read back under
    narrower ones, the values are brought to the modifier (rounded), or
    refused (too long), with the heap's error."""
    db.execute(f"CREATE FOREIGN TABLE e (v varchar(10), n numeric, ts timestamp, i interval, c varchar(10))"
               f" SERVER orochi OPTIONS (wrapper '{WRAPPERS}EchoTypesWrapper', mode '{mode}')")
    db.execute("INSERT INTO e VALUES ('abc', 1.005, '2024-01-01 10:00:00.6', '1 day 00:00:01.26', 'abc  ')")
    db.execute("ALTER FOREIGN TABLE e ALTER COLUMN n TYPE numeric(5, 2),"
               " ALTER COLUMN ts TYPE timestamp(0), ALTER COLUMN i TYPE interval(1),"
               " ALTER COLUMN c TYPE varchar(3)")
    db.execute("CREATE TABLE h (v varchar(10), n numeric(5, 2), ts timestamp(0), i interval(1), c varchar(3))")
    db.execute("INSERT INTO h VALUES ('abc', 1.005, '2024-01-01 10:00:00.6', '1 day 00:00:01.26', 'abc  ')")
    assert db.execute("SELECT * FROM e").fetchall() == db.execute("SELECT * FROM h").fetchall()
    assert db.execute("SELECT n FROM e").fetchone() == (decimal.Decimal("1.01"),)

    # too long for varchar(2): the heap's error, 22001
    db.execute("ALTER FOREIGN TABLE e ALTER COLUMN v TYPE varchar(2)")
    got = _error(db, "SELECT v FROM e")
    db.execute("CREATE TABLE h2 (v varchar(2))")
    want = _error(db, "INSERT INTO h2 (v) VALUES ('abc'::varchar(10))")
    assert got == want == ("22001", "value too long for type character varying(2)")


def test_columnar_table_altered_to_a_narrower_type(db):
    """Rows in stripes read under a narrower type are brought to it (or
    refused, 22001); delta rows are converted by the ALTER itself, which
    fails as a heap table's ALTER does."""
    db.execute("CREATE FOREIGN TABLE t (v varchar(10), n numeric) SERVER orochi OPTIONS (delta_row_limit '0')")
    db.execute("INSERT INTO t VALUES ('abcdef', 123.456)")
    db.execute("ALTER FOREIGN TABLE t ALTER COLUMN n TYPE numeric(5, 1)")
    assert db.execute("SELECT n FROM t").fetchone() == (decimal.Decimal("123.5"),)
    db.execute("ALTER FOREIGN TABLE t ALTER COLUMN v TYPE varchar(3)")
    with pytest.raises(psycopg.errors.StringDataRightTruncation,
                       match=r"value too long for type character varying\(3\)"):
        db.execute("SELECT v FROM t")
    assert db.execute("SELECT count(*) FROM t").fetchone() == (1,)

    db.execute("CREATE FOREIGN TABLE d (v varchar(10)) SERVER orochi")
    db.execute("INSERT INTO d VALUES ('abcdef')")  # the delta store
    db.execute("CREATE TABLE dh (v varchar(10))")
    db.execute("INSERT INTO dh VALUES ('abcdef')")
    for table, alter in (("d", "ALTER FOREIGN TABLE"), ("dh", "ALTER TABLE")):
        with pytest.raises(psycopg.errors.StringDataRightTruncation):
            db.execute(f"{alter} {table} ALTER COLUMN v TYPE varchar(3)")


# ---------------------------------------------------------------- a LATIN1 database


@pytest.fixture
def latin1(pg_cluster, make_database):
    name = make_database(encoding="LATIN1")
    conn = pg_cluster.connect(name, autocommit=True)
    conn.execute("SET client_encoding = 'UTF8'")
    yield conn
    conn.close()


def _both(conn, statement: str, **tables):
    """The statement's rows (or error) on the orochi table and on the heap one."""
    out = []
    for names in ({k: v[0] for k, v in tables.items()}, {k: v[1] for k, v in tables.items()}):
        try:
            cur = conn.execute(statement.format(**names))
            out.append(sorted(cur.fetchall(), key=repr) if cur.description else cur.rowcount)
        except psycopg.Error as exc:
            msg = exc.diag.message_primary
            for o, h in tables.values():
                msg = msg.replace(h, o)
            out.append((exc.diag.sqlstate, msg))
    return out


def test_latin1_identifiers_data_and_errors(latin1):
    """Non-ASCII table and column names, text values, SQL the bridge runs,
    errors from Postgres through Python and from Python to the client."""
    db = latin1
    cols = '("naïve" text, "größe" int, "prix" numeric(6, 2), "été" varchar(4) CHECK ("été" <> \'hélas\'))'
    db.execute(f'CREATE FOREIGN TABLE "tàble" {cols} SERVER orochi OPTIONS (delta_row_limit \'3\','
               f" stripe_row_limit '4', chunk_group_size '2')")
    db.execute(f'CREATE TABLE "tàble_h" {cols}')
    T = {"T": ('"tàble"', '"tàble_h"')}
    rows = "VALUES ('café', 1, 1.5, 'é'), ('crème', 2, 2.25, 'àè'), ('café', 3, NULL, NULL), ('déjà', 4, 9.99, 'ü'), " \
           "('Ærø', 5, 0, 'ÿ'), ('naïf', 6, 1, 'ß')"
    for statement in (
        f"INSERT INTO {{T}} {rows}",  # stripes
        "INSERT INTO {T} VALUES ('öl', 7, 3, 'ô')",  # the delta store
        "SELECT * FROM {T}",
        "SELECT * FROM {T} WHERE \"naïve\" = 'café'",
        "SELECT * FROM {T} WHERE \"naïve\" IN ('crème', 'Ærø') OR \"été\" = 'ß'",
        "SELECT \"naïve\", count(*), sum(\"größe\"), max(\"été\") FROM {T} GROUP BY 1",
        "SELECT count(*), min(\"naïve\"), max(\"naïve\") FROM {T} WHERE \"größe\" > 1",
        "UPDATE {T} SET \"été\" = 'äö' WHERE \"naïve\" = 'déjà'",
        "DELETE FROM {T} WHERE \"naïve\" = 'Ærø'",
        "INSERT INTO {T} VALUES ('x', 8, 1, 'hélas')",  # a CHECK constraint's error
        "INSERT INTO {T} VALUES ('x', 8, 1, 'ééééé')",  # too long
        "SELECT * FROM {T}",
    ):
        got, want = _both(db, statement, **T)
        assert got == want, statement
    # ADD COLUMN with a non-ASCII default, then refused with a non-ASCII name in the message
    for name in T["T"]:
        db.execute(f"ALTER TABLE {name} ADD COLUMN \"où\" text DEFAULT 'là-bas'")
    assert _both(db, "SELECT * FROM {T}", **T)[0] == _both(db, "SELECT * FROM {T}", **T)[1]
    with pytest.raises(psycopg.errors.FeatureNotSupported, match='cannot add column "hivér".*"tàble"'):
        db.execute('ALTER TABLE "tàble" ADD COLUMN "hivér" float8 DEFAULT random()')
    # an error of SQL the bridge runs (the delta store's column cast), through Python and back
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match='"là-bas"'):
        db.execute('ALTER FOREIGN TABLE "tàble" ALTER COLUMN "où" DROP DEFAULT, ALTER COLUMN "où" TYPE int')
    # COPY TO and EXPLAIN
    with db.cursor().copy('COPY "tàble" TO STDOUT (FORMAT csv, HEADER)') as cp:
        out = b"".join(bytes(c) for c in cp).decode("utf-8")
    assert out.startswith("naïve,größe,prix,été,où\n") and "crème" in out
    plan = "\n".join(r[0] for r in db.execute(
        'EXPLAIN (VERBOSE, COSTS OFF) SELECT count(*) FROM "tàble" WHERE "naïve" = \'café\''))
    assert "Orochi Filter: naïve = 'café'" in plan


def test_latin1_hypertable_and_spi_from_python(latin1):
    db = latin1
    db.execute('CREATE FOREIGN TABLE "mésure" ("heure" timestamptz, "lieu" text, v int) SERVER orochi')
    db.execute("SELECT orochi.create_hypertable('mésure', 'heure', chunk_time_interval => interval '1 day')")
    db.execute("""INSERT INTO "mésure" SELECT timestamptz '2024-01-01' + i * interval '5 hours',
                  CASE WHEN i % 2 = 0 THEN 'Besançon' ELSE 'Hérault' END, i FROM generate_series(1, 30) i""")
    rows = db.execute('SELECT "lieu", count(*) FROM "mésure" GROUP BY 1 ORDER BY 1').fetchall()
    assert rows == [("Besançon", 15), ("Hérault", 15)]
    assert db.execute("SELECT count(*) FROM orochi.show_chunks('mésure')").fetchone()[0] > 1
    # a statement Python builds with the non-ASCII name (delta store, compaction)
    db.execute("""INSERT INTO "mésure" VALUES ('2024-01-02', 'Orléans', -1)""")
    db.execute("SELECT * FROM orochi.compact('mésure')")
    assert db.execute("""SELECT v FROM "mésure" WHERE "lieu" = 'Orléans'""").fetchall() == [(-1,)]
