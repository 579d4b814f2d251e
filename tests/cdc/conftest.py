"""Fixtures of the CDC tests: a Kafka-protocol broker (noida-db), an HTTP
receiver for webhooks on 127.0.0.1, orochi-sidecar as a subprocess, and a
``db`` that drops its database's replication slots at teardown (a slot left
behind keeps WAL forever, and its database cannot be dropped)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

from orochi_fdw.testing.services import KafkaBroker

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pipelines"))

from cdc_harness import SIDECAR_SETTINGS, Receiver, drop_slots  # noqa: E402
from pipeline_harness import Sidecar  # noqa: E402


@pytest.fixture
def db(new_connection, pg_cluster, db_name):
    """The test's database (autocommit); its replication slots are dropped
    afterwards."""
    conn = new_connection()
    yield conn
    pg_cluster.ensure_running()
    with pg_cluster.connect(db_name, autocommit=True) as admin:
        drop_slots(admin)


@pytest.fixture(scope="session")
def kafka_broker():
    broker = KafkaBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def kafka(kafka_broker):
    if not kafka_broker.is_running():
        kafka_broker.start()
    return kafka_broker


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.1 (see cdc_harness.Receiver)."""
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def out_dir():
    """A directory the server and the sidecar may both write (file sinks)."""
    path = tempfile.mkdtemp(prefix="orochi-cdc-", dir="/tmp")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_sidecar(tmp_path):
    """Factory: ``start_sidecar(dsn, *args, env=None, settings="")`` -> a
    running orochi-sidecar with the cdc duty (killed after the test)."""
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
