"""Who may do what with storage targets and tiered chunks: any role may
create a target (it owns it); the credentials are readable by no one but
superusers (the catalog table is granted to no one, the view has no
credentials); tier_chunk needs the rights of the hypertable's owner and of
the target's owner; untier_chunk and the tiering policy the table's owner;
dropping a target its owner."""

from __future__ import annotations

import itertools
import json

import psycopg
import pytest
from psycopg import sql

from test_tiering_basic import chunk_names, setup_tables

_n = itertools.count(1)


@pytest.fixture
def roles(pg_cluster, db_name, db):
    stem = f"tierpriv{next(_n)}"
    names = {a: f"{stem}_{a}" for a in ("owner", "granted", "ungranted")}
    conns = {}
    for role in names.values():
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    for actor, role in names.items():
        conns[actor] = pg_cluster.connect(db_name, autocommit=True, user=role)
    conns["superuser"] = db
    yield names, conns
    for actor, conn in conns.items():
        if actor != "superuser":
            conn.close()
    db.execute("DROP OWNED BY " + ", ".join(sql.Identifier(r).as_string(db) for r in names.values()) + " CASCADE")
    for role in names.values():
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_tiering_privileges(roles, s3, bucket):
    names, conns = roles
    owner, granted, ungranted, su = (conns[a] for a in ("owner", "granted", "ungranted", "superuser"))
    secret = "very-secret-key"
    opts = json.dumps({"access_key_id": s3.access_key_id, "secret_access_key": secret})
    owner.execute("SELECT orochi.create_storage_target('o_target', %s, %s, 'p', %s, %s::jsonb)",
                  (s3.endpoint, bucket, s3.region, opts))
    # the credentials: not in the view, the catalog table refused to everyone but superusers
    for actor, conn in conns.items():
        row = conn.execute("SELECT * FROM orochi.storage_targets WHERE name = 'o_target'").fetchone()
        assert row is not None and secret not in repr(row) and s3.access_key_id not in repr(row), actor
        if actor == "superuser":
            assert conn.execute("SELECT secret_access_key FROM orochi.storage_target").fetchone()[0] == secret
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT secret_access_key FROM orochi.storage_target")
    assert su.execute("SELECT has_credentials, options FROM orochi.storage_targets").fetchone() == (True, {})
    # the hypertable is owner's; granted may read and write it
    setup_tables(owner, days=2)
    owner.execute("SELECT orochi.compact('m')")
    owner.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON m TO {}").format(sql.Identifier(names["granted"])))
    chunk = chunk_names(owner)[0]
    for conn in (granted, ungranted):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT orochi.tier_chunk(%s, 'o_target')", (chunk,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT orochi.add_tiering_policy('m', interval '1 day', 'o_target')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT orochi.drop_storage_target('o_target')")
    # a target of another role cannot be used by the table's owner
    granted.execute("SELECT orochi.create_storage_target('g_target', %s, %s, 'g', %s, %s::jsonb)",
                    (s3.endpoint, bucket, s3.region, opts))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        owner.execute("SELECT orochi.tier_chunk(%s, 'g_target')", (chunk,))
    owner.execute("SELECT orochi.tier_chunk(%s, 'o_target')", (chunk,))
    assert granted.execute("SELECT count(*) FROM m").fetchone()[0] == \
        owner.execute("SELECT count(*) FROM m_heap").fetchone()[0]
    for conn in (granted, ungranted):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT orochi.untier_chunk(%s)", (chunk,))
    # ungranted sees no chunk of m, and cannot read it
    assert ungranted.execute("SELECT count(*) FROM orochi.chunks").fetchone()[0] == 0
    assert ungranted.execute("SELECT count(*) FROM orochi.tiering_stats").fetchone()[0] == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        ungranted.execute("SELECT count(*) FROM m")
    job = owner.execute("SELECT orochi.add_tiering_policy('m', interval '1 day', 'o_target')").fetchone()[0]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        granted.execute("SELECT orochi.remove_tiering_policy('m')")
    owner.execute("SELECT orochi.remove_tiering_policy('m')")
    assert job
    su.execute("SELECT orochi.untier_chunk(%s)", (chunk,))  # superusers may
    su.execute("SELECT * FROM orochi.vacuum()")  # the retired objects go (superuser only)
    su.execute("SELECT orochi.drop_storage_target('g_target')")  # superusers may
    owner.execute("SELECT orochi.drop_storage_target('o_target')")
    # bad input: clear errors
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        owner.execute("SELECT orochi.create_storage_target('x', 'ftp://nowhere', 'b')")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        owner.execute("SELECT orochi.create_storage_target('x', %s, 'b', '', NULL, '{\"colour\": 1}')", (s3.endpoint,))
    owner.execute("SELECT orochi.create_storage_target('x', %s, 'b')", (s3.endpoint,))
    with pytest.raises(psycopg.errors.DuplicateObject):
        owner.execute("SELECT orochi.create_storage_target('x', %s, 'b')", (s3.endpoint,))
