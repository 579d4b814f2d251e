"""Fixtures of the tiering tests: a real S3 server (moto's, in this process,
on 127.0.0.1) for the session, a bucket per test, and a storage target
pointing at it."""

from __future__ import annotations

import itertools

import pytest

from orochi_fdw.testing.services import S3Server, SeaweedS3

from tiering_helpers import create_target

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


@pytest.fixture
def target(db, s3, bucket) -> str:
    create_target(db, s3, bucket)
    return "cold"
