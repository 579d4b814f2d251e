"""Objects of an S3 bucket (or any S3-compatible store), read with boto3.

- The objects are those under ``prefix`` whose rest of the key matches
  ``pattern`` (a glob), read in key order, each from the byte where the
  catalog says it stands (a ranged GET), to its end.
- Objects are taken as immutable: each is read with ``If-Match`` on the ETag
  seen when it was listed; one replaced while being read is reported in
  ``orochi.pipeline_errors`` and the rest of it skipped.
- ``.gz`` and ``.zst`` objects (or the ``compression`` option) are
  decompressed; their positions count decompressed bytes, so resuming one
  reads it again from its start up to the position.
- Every object listed gets a position row at once (position 0, its size as
  the end), so ``orochi.pipelines.lag`` counts the bytes not read yet.
- The options name the store as tiered storage's targets do (``endpoint``,
  ``bucket``, ``prefix``, ``region``, credentials); without credentials,
  boto3's own chain (environment, configuration files, instance role) of
  the sidecar is used.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from typing import Any, Mapping

from orochi_fdw.pipelines.errors import RecordError
from orochi_fdw.pipelines.options import PipelineOptions
from orochi_fdw.pipelines.records import Fetch, Record, StreamState, compression_of, decompressing, skip
from orochi_fdw.pipelines.sources.base import Source, SourceUnavailable
from orochi_fdw.pipelines.sources.streams import StreamReader, first_record

logger = logging.getLogger("orochi.sidecar.pipelines")

IDLE_WAIT = 1.0


def s3_client(options: Mapping[str, Any]) -> Any:
    """A boto3 S3 client for the options (endpoint, region, credentials)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=options.get("endpoint") or None, region_name=options.get("region") or "us-east-1",
        aws_access_key_id=options.get("access_key_id"), aws_secret_access_key=options.get("secret_access_key"),
        aws_session_token=options.get("session_token"),
        config=Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=30,
                      s3={"addressing_style": "path"}))


def _unavailable(exc: Exception) -> SourceUnavailable:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SourceUnavailable(f"s3: {text}")


class S3Source(Source):
    """The matching objects under one prefix."""

    def __init__(self, pipeline_id: int, options: PipelineOptions, format: str):
        super().__init__(pipeline_id, options, format)
        self.bucket: str = options["bucket"]
        self.prefix: str = options["prefix"] or ""
        self.pattern: str = options["pattern"]
        self.client: Any = None
        self.objects: dict[str, tuple[int, str]] = {}   # key -> (size, etag), as last listed
        self.cursors: dict[str, StreamState] = {}
        self.readers: dict[str, StreamReader] = {}
        self.headers: dict[str, tuple[str, ...]] = {}
        self._listed_at = 0.0

    def open(self, positions: Mapping[str, StreamState]) -> Fetch:
        self.close()
        try:
            self.client = s3_client(self.options)
        except Exception as exc:
            raise _unavailable(exc) from None
        self.committed_streams = {k: v.copy() for k, v in positions.items()}
        self.cursors = {k: v.copy() for k, v in positions.items()}
        self._listed_at = 0.0
        self.current_error = None
        return Fetch()

    # ------------------------------------------------------------ listing
    def _list(self) -> dict[str, tuple[int, str]]:
        from botocore.exceptions import BotoCoreError, ClientError
        found: dict[str, tuple[int, str]] = {}
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    if key.endswith("/") or not fnmatch.fnmatchcase(key[len(self.prefix):], self.pattern):
                        continue
                    found[key] = (int(item["Size"]), item.get("ETag", ""))
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from None
        self._listed_at = time.monotonic()
        self.current_error = None
        return found

    # ------------------------------------------------------------ reading
    def _get(self, key: str, etag: str, start: int, end: int | None = None) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if etag:
            kwargs["IfMatch"] = etag
        if start > 0 or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end))
        return self.client.get_object(**kwargs)["Body"]

    def _header_of(self, key: str, etag: str, compression: str) -> tuple[str, ...] | None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            if compression == "none":
                body = self._get(key, etag, 0, int(self.options["max_record_bytes"]))
            else:
                body = decompressing(self._get(key, etag, 0), compression)
            return first_record(body, self.options)
        except (BotoCoreError, ClientError, OSError):
            return None

    def _read_object(self, key: str, size: int, etag: str, max_records: int, out: list[Record],
                     fetch: Fetch) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        state = self.cursors.get(key)
        compression = compression_of(key, self.options["compression"])
        plain = compression == "none"
        if state is None:
            state = StreamState(key, 0, size if plain else None, name=key, identity=etag)
        if state.done:
            return
        if state.identity and etag and state.identity != etag:
            self._changed(key, state, etag, out, fetch)
            return
        reader = self.readers.get(key)
        try:
            if reader is None:
                if plain and state.position >= size:
                    reader = None
                else:
                    body = self._get(key, etag, state.position if plain else 0)
                    stream = body if plain else decompressing(body, compression)
                    if not plain:
                        skip(stream, state.position)
                    reader = StreamReader(key, key, stream, state.position, self.format, self.options, True,
                                          self.headers.get(key),
                                          lambda: self._header_of(key, etag, compression))
            if reader is not None:
                reader.read(max_records, out)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412"):
                self._changed(key, state, etag, out, fetch)
                return
            if code in ("NoSuchKey", "404"):
                return  # deleted since listed: forgotten at the next listing
            raise _unavailable(exc) from None
        except (BotoCoreError, OSError) as exc:
            raise _unavailable(exc) from None
        if reader is None:
            new_state = StreamState(key, state.position, size if plain else None, True, key, etag)
        else:
            if reader.header is not None:
                self.headers[key] = reader.header
            new_state = StreamState(key, reader.position, size if plain else None, reader.finished, key, etag)
            if reader.finished:
                self.readers.pop(key, None)
                reader.raw.close()
            else:
                self.readers[key] = reader
        if new_state != state or key not in self.committed_streams:
            self.cursors[key] = new_state
            fetch.streams[key] = new_state

    def _changed(self, key: str, state: StreamState, etag: str, out: list[Record], fetch: Fetch) -> None:
        """An object replaced while it was being read: a dead letter says so, the rest is skipped."""
        out.append(Record(key, state.position, state.position, b"", 0, name=key,
                          error=RecordError(f'object "{key}" changed while it was being read (ETag '
                                            f"{state.identity} became {etag}); the rest of it is skipped",
                                            "55000")))
        reader = self.readers.pop(key, None)
        if reader is not None:
            reader.raw.close()
        new_state = StreamState(key, state.position, state.end, True, key, state.identity)
        self.cursors[key] = new_state
        fetch.streams[key] = new_state

    def fetch(self, max_records: int, max_wait: float, stop: threading.Event,
              until_caught_up: bool = False) -> Fetch:
        fetch = Fetch()
        records = fetch.records
        started = time.monotonic()
        while not stop.is_set():
            if until_caught_up or time.monotonic() - self._listed_at >= self.options["poll_interval"]:
                listed = self._list()
                for key in list(self.cursors):
                    if key not in listed:
                        self.cursors.pop(key)
                        reader = self.readers.pop(key, None)
                        if reader is not None:
                            reader.raw.close()
                        if key in self.committed_streams:
                            fetch.forget.append(key)
                for key, (size, etag) in listed.items():
                    if key not in self.cursors:
                        plain = compression_of(key, self.options["compression"]) == "none"
                        state = StreamState(key, 0, size if plain else None, False, key, etag)
                        self.cursors[key] = state
                        fetch.streams[key] = state
                self.objects = listed
            for key in sorted(self.objects):
                if len(records) >= max_records:
                    break
                size, etag = self.objects[key]
                self._read_object(key, size, etag, max_records - len(records), records, fetch)
            full = len(records) >= max_records
            if full or until_caught_up or records or fetch.streams or fetch.forget:
                fetch.caught_up = not full and until_caught_up
                break
            if time.monotonic() - started >= IDLE_WAIT:
                break
            stop.wait(min(IDLE_WAIT, self.options["poll_interval"]))
        return fetch

    def rewind(self) -> None:
        for reader in self.readers.values():
            reader.raw.close()
        self.readers.clear()
        self.cursors = {k: v.copy() for k, v in self.committed_streams.items()}
        self._listed_at = 0.0

    def close(self) -> None:
        for reader in self.readers.values():
            try:
                reader.raw.close()
            except Exception:
                pass
        self.readers.clear()
        self.client = None
