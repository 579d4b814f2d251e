"""Fixtures of the tiering tests: a real S3 server (moto's, in this process,
on 127.0.0.1) for the session, a bucket per test, and a storage target
pointing at it."""

from __future__ import annotations

import itertools

import pytest

from orochi_fdw.testing.services import S3Server, SeaweedS3

_names = itertools.count(1)


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def seaweed():
    """SeaweedFS (weed mini) in its own process, for the session."""
    server = SeaweedS3()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def s3(s3_server):
    if not s3_server.is_running():
        s3_server.start()
    return s3_server


@pytest.fixture
def bucket(s3) -> str:
    name = f"orochi-tier-{next(_names)}"
    s3.client().create_bucket(Bucket=name)
    return name


def create_target(conn, s3: S3Server, bucket: str, name: str = "cold", prefix: str = "pg", **options) -> None:
    import json

    opts = {"access_key_id": s3.access_key_id, "secret_access_key": s3.secret_access_key,
            "max_attempts": 2, "connect_timeout": 2, "read_timeout": 5, **options}
    conn.execute("SELECT orochi.create_storage_target(%s, %s, %s, %s, %s, %s::jsonb)",
                 (name, s3.endpoint, bucket, prefix, s3.region, json.dumps(opts)))


@pytest.fixture
def target(db, s3, bucket) -> str:
    create_target(db, s3, bucket)
    return "cold"
