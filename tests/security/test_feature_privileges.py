"""The privilege model around vector search, ADD COLUMN defaults and the
function manager hook: user code runs as the role that wrote it, never with
the extension owner's rights or a SECURITY DEFINER function's; each view
shows a role its own.  Heap tables are the oracle where there is one (COPY
TO: test_column_privileges.py)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql


def _outcome(action):
    try:
        return ("ok", action())
    except psycopg.Error as exc:
        return ("error", exc.sqlstate)


def test_add_column_default_runs_as_the_altering_role(fresh_actors):
    """ALTER TABLE ... ADD COLUMN ... DEFAULT evaluates the default once for
    the rows already stored, with the rights of the role running the ALTER,
    as on a heap table: it neither becomes the extension owner (the DDL event
    trigger) nor reaches what that owner may read."""
    a = fresh_actors
    owner = a.conns["owner"]
    owner.execute("CREATE FUNCTION whoami() RETURNS text STABLE LANGUAGE sql AS 'SELECT current_user::text'")
    owner.execute("CREATE FUNCTION peek() RETURNS text STABLE LANGUAGE sql"
                  " AS 'SELECT count(*)::text FROM orochi.columnar_stripes'")
    results = {}
    for table, foreign in (("c", True), ("h", False)):
        t = sql.Identifier(table).as_string(owner)
        owner.execute(f"CREATE {'FOREIGN ' if foreign else ''}TABLE {t} (id int)"
                      + (" SERVER orochi OPTIONS (delta_row_limit '5')" if foreign else ""))
        owner.execute(f"INSERT INTO {t} SELECT generate_series(1, 20)")  # stripes
        owner.execute(f"INSERT INTO {t} VALUES (100)")                  # the delta store
        owner.execute(f"ALTER TABLE {t} ADD COLUMN who text DEFAULT whoami()")
        peeked = _outcome(lambda: owner.execute(f"ALTER TABLE {t} ADD COLUMN seen text DEFAULT peek()"))
        results[table] = (owner.execute(f"SELECT DISTINCT who FROM {t}").fetchall(), peeked[0],
                          peeked[1] if peeked[0] == "error" else None)
    assert results["c"] == results["h"]
    assert results["c"] == ([(a.role("owner"),)], "error", "42501")


def test_column_default_is_for_the_owner(fresh_actors):
    a = fresh_actors
    owner = a.conns["owner"]
    owner.execute("CREATE FOREIGN TABLE t (id int, n int DEFAULT 7) SERVER orochi")
    owner.execute(sql.SQL("GRANT ALL ON t TO {}").format(a.ident("granted")))
    assert owner.execute("SELECT * FROM orochi.column_default('t', 2::smallint)").fetchone() == ("constant", "7")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner of foreign table t"):
        a.conns["granted"].execute("SELECT * FROM orochi.column_default('t', 2::smallint)")


def test_flush_before_a_security_definer_function_runs_as_the_writer(fresh_actors):
    """A volatile function called by an INSERT sees the rows written before
    it: the bridge hands the buffered rows over before the function runs.
    When the function is SECURITY DEFINER, that hand-over still runs as the
    role writing them (the wrapper's SQL here: the target's DEFAULT
    current_user says who), never as the function's owner."""
    a = fresh_actors
    owner, admin = a.conns["owner"], a.conns["superuser"]
    owner.execute("CREATE TABLE target (id bigserial, v int, who text DEFAULT current_user)")
    owner.execute(sql.SQL("GRANT SELECT, INSERT ON target TO {}").format(a.ident("granted")))
    owner.execute(sql.SQL("GRANT USAGE ON SEQUENCE target_id_seq TO {}").format(a.ident("granted")))
    # a test wrapper (superuser only), given to the owner
    admin.execute("CREATE FOREIGN TABLE ft (id bigint, v int) SERVER orochi"
                  " OPTIONS (wrapper 'SpiTableWrapper', target 'public.target', batch 'true')")
    admin.execute(sql.SQL("ALTER FOREIGN TABLE ft OWNER TO {}").format(a.ident("owner")))
    a.conns["granted"].execute("CREATE FUNCTION definer_id(i int) RETURNS int LANGUAGE plpgsql SECURITY DEFINER"
                               " AS $$ BEGIN RETURN i; END $$")
    owner.execute("INSERT INTO ft (v) SELECT definer_id(g) FROM generate_series(1, 5) g")
    assert owner.execute("SELECT count(*) FROM target").fetchone()[0] == 5
    assert owner.execute("SELECT DISTINCT who FROM target").fetchall() == [(a.role("owner"),)]


def test_vector_indexes_show_a_role_the_tables_it_may_read(fresh_actors):
    a = fresh_actors
    owner = a.conns["owner"]
    owner.execute("CREATE FOREIGN TABLE v (id int, e orochi.vector(2)) SERVER orochi")
    owner.execute("INSERT INTO v SELECT g, ARRAY[g, g % 7]::real[] FROM generate_series(1, 100) g")
    owner.execute("SELECT orochi.create_vector_index('v', 'e')")
    owner.execute(sql.SQL("GRANT SELECT ON v TO {}").format(a.ident("granted")))
    for actor, seen in (("owner", 1), ("granted", 1), ("ungranted", 0), ("superuser", 1)):
        assert a.conns[actor].execute("SELECT count(*) FROM orochi.vector_indexes").fetchone()[0] == seen, actor
    # a reader searches through the index's catalog without any right on it
    rows = a.conns["granted"].execute("SELECT id FROM v ORDER BY e OPERATOR(orochi.<->) '[3,3]' LIMIT 1").fetchall()
    assert rows == [(3,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.conns["granted"].execute("SELECT * FROM orochi.columnar_vector_indexes")
