"""Fixtures of the pipeline tests: a Kafka-protocol broker and an S3 server
on 127.0.0.1 (orochi_fdw/testing/services.py), started once per session,
and orochi-sidecar as a subprocess."""

from __future__ import annotations

import itertools

import pytest

from orochi_fdw.testing.services import KafkaBroker, S3Server
from pipeline_harness import SIDECAR_SETTINGS, Sidecar

_names = itertools.count(1)


@pytest.fixture(scope="session")
def kafka_broker():
    """One broker for the session (tests use topics of their own)."""
    broker = KafkaBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def kafka(kafka_broker):
    """The session's broker, started again if a test left it stopped."""
    if not kafka_broker.is_running():
        kafka_broker.start()
    return kafka_broker


@pytest.fixture
def topic(kafka, request):
    """A fresh topic name (not created)."""
    return f"t{next(_names)}_{request.node.name[:40]}".replace("[", "_").replace("]", "_")


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
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
def bucket(s3, request):
    """A fresh bucket."""
    name = f"b{next(_names)}-{request.node.name[:30]}".lower().replace("_", "-").replace("[", "-").replace("]", "")
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def start_sidecar(tmp_path):
    """Factory: ``start_sidecar(dsn, *args, env=None, settings=None)`` -> a
    running :class:`Sidecar` (killed after the test if still running)."""
    started: list[Sidecar] = []

    def factory(dsn: str, *args: str, env: dict[str, str] | None = None, settings: str = "") -> Sidecar:
        path = tmp_path / f"sidecar{len(started)}.toml"
        path.write_text(SIDECAR_SETTINGS + settings)
        sidecar = Sidecar(dsn, str(path), list(args), env)
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        if sidecar.proc.poll() is None:
            sidecar.kill9()
