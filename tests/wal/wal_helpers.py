"""Helpers of the WAL tests: the columnar files of a database on disk, and
queries compared between clusters and against heap tables."""

from __future__ import annotations

import hashlib
import os

import psycopg

from orochi_fdw.testing.cluster import PostgresCluster


def database_folder(cluster: PostgresCluster, dbname: str) -> str:
    """``<data directory>/orochi/<database oid>`` of a database."""
    dboid = cluster.execute("SELECT oid FROM pg_database WHERE datname = %s", (dbname,))[0][0]
    return os.path.join(cluster.datadir, "orochi", str(dboid))


def files_of(cluster: PostgresCluster, dbname: str, folder: str | None = None) -> dict[str, str]:
    """Every finished file under a database's columnar folder (temporary
    files of writers left out): relative path -> sha256 of its bytes."""
    base = folder or database_folder(cluster, dbname)
    out = {}
    for dirpath, _, names in os.walk(base):
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, base)] = hashlib.sha256(f.read()).hexdigest()
    return out


def catalog_files(conn: psycopg.Connection) -> set[str]:
    """The files the catalog names, relative to the database's folder."""
    rows = conn.execute("SELECT file_path FROM orochi.columnar_stripes"
                        " UNION ALL SELECT file_path FROM orochi.columnar_retired_files"
                        " UNION ALL SELECT file_path FROM orochi.columnar_vector_index_files").fetchall()
    return {r[0] for r in rows}


def answers(cluster: PostgresCluster, dbname: str, queries: list[str]) -> list[list[tuple]]:
    with cluster.connect(dbname, autocommit=True) as conn:
        return [conn.execute(q).fetchall() for q in queries]


def table_queries(table: str, heap: str | None = None) -> list[str]:
    """Queries over an orochi table (``{t}``) that a heap twin answers alike."""
    qs = [
        "SELECT count(*), sum(id), sum(k), count(v), min(ts), max(ts) FROM {t}",
        "SELECT k, count(*), sum(id), max(v) FROM {t} GROUP BY k ORDER BY k",
        "SELECT x::text FROM {t} x ORDER BY 1",
        "SELECT id, v FROM {t} WHERE id BETWEEN 100 AND 160 ORDER BY id, v",
        "SELECT id FROM {t} ORDER BY id DESC, v LIMIT 5",
    ]
    return [q.format(t=table) for q in qs]
