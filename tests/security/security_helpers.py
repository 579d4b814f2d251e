"""Actors of the privilege tests (see conftest.py): a database, three roles
that are not superusers and a connection per actor."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

ACTORS = ("owner", "granted", "ungranted", "superuser")

_counter = itertools.count(1)


@dataclass
class Actors:
    """A database and a connection per actor (autocommit)."""

    db: str
    roles: dict[str, str]
    conns: dict[str, psycopg.Connection] = field(default_factory=dict)

    def role(self, actor: str) -> str:
        return self.roles[actor]

    def ident(self, actor: str) -> sql.Identifier:
        return sql.Identifier(self.roles[actor])


def make_actors(pg_cluster, stem: str) -> Actors:
    name = re.sub(r"[^a-z0-9_]", "_", f"sec{next(_counter)}_{stem}".lower())[:40]
    pg_cluster.ensure_running()
    pg_cluster.drop_database(name)
    pg_cluster.create_database(name)
    roles = {actor: f"{name}_{actor}" for actor in ACTORS if actor != "superuser"}
    roles["superuser"] = "postgres"
    actors = Actors(name, roles)
    admin = pg_cluster.connect(name, autocommit=True)
    actors.conns["superuser"] = admin
    for actor in ("owner", "granted", "ungranted"):
        ident = sql.Identifier(roles[actor])
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(ident))
        actors.conns[actor] = pg_cluster.connect(name, autocommit=True, user=roles[actor])
    return actors


def drop_actors(pg_cluster, actors: Actors) -> None:
    for actor, conn in actors.conns.items():
        if actor != "superuser":
            conn.close()
    admin = actors.conns["superuser"]
    admin.close()
    pg_cluster.ensure_running()
    pg_cluster.drop_database(actors.db)
    with pg_cluster.connect(autocommit=True) as conn:
        for actor in ("owner", "granted", "ungranted"):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(actors.roles[actor])))
